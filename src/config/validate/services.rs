//! `[services.<name>]`: the services of the registry the daemon talks to (the gateway
//! proxy's upstreams), their timeouts and circuit breakers.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Spanned;

use super::Validator;
use crate::config::model::{BreakerConfig, ServiceConfig};
use crate::config::raw::RawService;
use crate::config::scope::{SERVICE_NAME_RULE, valid_service};

impl Validator {
    pub(super) fn services(
        &mut self,
        file: &str,
        text: &str,
        raw: &BTreeMap<Spanned<String>, RawService>,
    ) -> Vec<ServiceConfig> {
        let mut out = vec![];
        for (name, r) in raw {
            let n = name.get_ref();
            if !valid_service(n) {
                self.at(
                    file,
                    text,
                    name.span(),
                    format!("services.{n}: {SERVICE_NAME_RULE} (it is the /api/v1/<service>/ path segment)"),
                );
                continue;
            }
            let d = ServiceConfig::new(n);
            let at = |k: &str| format!("services.{n}.{k}");
            let timeout = self
                .dur(
                    file,
                    text,
                    &at("timeout"),
                    &r.timeout,
                    Duration::from_millis(10),
                    Duration::from_secs(3600),
                )
                .unwrap_or(d.timeout);
            let max_response_bytes = self
                .int(
                    file,
                    text,
                    &at("max_response_bytes"),
                    &r.max_response_bytes,
                    1..(1 << 30) + 1,
                )
                .map_or(d.max_response_bytes, |v| v as usize);
            let registry_refresh = self
                .dur(
                    file,
                    text,
                    &at("registry_refresh"),
                    &r.registry_refresh,
                    Duration::from_millis(10),
                    Duration::from_secs(600),
                )
                .unwrap_or(d.registry_refresh);
            let db = BreakerConfig::default();
            let breaker = BreakerConfig {
                failures: self
                    .int(
                        file,
                        text,
                        &at("breaker.failures"),
                        &r.breaker.failures,
                        1..1_001,
                    )
                    .map_or(db.failures, |v| v as u32),
                open_for: self
                    .dur(
                        file,
                        text,
                        &at("breaker.open_for"),
                        &r.breaker.open_for,
                        Duration::from_millis(10),
                        Duration::from_secs(86_400),
                    )
                    .unwrap_or(db.open_for),
            };
            out.push(ServiceConfig {
                name: n.clone(),
                description: r.description.clone().unwrap_or_default(),
                proxy: r.proxy.unwrap_or(d.proxy),
                timeout,
                max_response_bytes,
                registry_refresh,
                breaker,
            });
        }
        out
    }
}
