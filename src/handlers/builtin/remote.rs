//! `remote`: the group's events are decided by a service in any language, over HTTP/JSON
//! (the daemon's runtime delivers them and commits the answers; see `upstream::remote`).
//! This file reads the group's options into a [`RemoteSpec`]; the handler itself never
//! decides anything.
//!
//! ```toml
//! [[group]]
//! name = "scoring.trade_scorer"
//! handler = "remote"
//! reads = ["astra.trading.trade_executed.v1"]
//! publishes = ["astra.scoring.trade_scored.v1"]
//! options = { service = "scorer", path = "/events", timeout = "10s" }
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::group::GroupConfig;
use crate::handler::{Event, Handler, HandlerError, RemoteSpec, Reply, Step};
use crate::handlers::support::{deny_unknown_options, duration_option, option};

/// A remote handler's group: where to send its events.
pub struct Remote {
    spec: RemoteSpec,
}

/// The name configs use.
pub const NAME: &str = crate::handler::REMOTE_HANDLER;

impl Remote {
    /// Reads `service` (required: a `[services.<name>]`), `path` (default `/events`),
    /// `timeout` (default 10s, 10ms to 10min), `key_prefix` (default `svc:<service>:`;
    /// every op key of the answers must start with it), and the backoff between failed
    /// requests: `backoff` (default 100ms) doubling up to `max_backoff` (default 10s).
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(
            g,
            &[
                "service",
                "path",
                "timeout",
                "key_prefix",
                "backoff",
                "max_backoff",
            ],
        )?;
        let service: String = option(g, "service", String::new())?;
        if service.is_empty() {
            return Err("option `service` is required: the [services.<name>] whose instances decide this group's events".into());
        }
        if !crate::group::valid_service_name(&service) {
            return Err(format!(
                "option `service`: {service:?} is not a service name (1-64 characters of a-z, 0-9, _ and -)"
            ));
        }
        let path: String = option(g, "path", "/events".to_string())?;
        if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "option `path`: {path:?} must start with / and be printable ASCII without spaces"
            ));
        }
        let timeout = duration_option(
            g,
            "timeout",
            "10s",
            Duration::from_millis(10)..=Duration::from_secs(600),
        )?;
        let backoff_range = Duration::from_millis(1)..=Duration::from_secs(3600);
        let backoff = duration_option(g, "backoff", "100ms", backoff_range.clone())?;
        let max_backoff = duration_option(g, "max_backoff", "10s", backoff_range)?;
        if max_backoff < backoff {
            return Err(format!(
                "option `max_backoff`: must be at least `backoff` ({})",
                humantime::format_duration(backoff)
            ));
        }
        let key_prefix: String = option(g, "key_prefix", format!("svc:{service}:"))?;
        if key_prefix.is_empty() {
            return Err("option `key_prefix`: must not be empty (it confines the service's ops to its own keys)".into());
        }
        Ok(Arc::new(Remote {
            spec: RemoteSpec {
                service,
                path,
                timeout,
                key_prefix,
                backoff,
                max_backoff,
            },
        }))
    }
}

impl Handler for Remote {
    fn step(&self, _: &Event, _: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        // Only reached if a runtime runs the group without binding it to its service:
        // leave the event pending rather than decide anything here.
        Err(HandlerError::Retry(format!(
            "remote handler for service {} is not bound to a runtime",
            self.spec.service
        )))
    }

    fn remote(&self) -> Option<&RemoteSpec> {
        Some(&self.spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::testing::group;

    fn spec(options: &str) -> Result<RemoteSpec, String> {
        let g = group("scoring.s", NAME, &[], options);
        Remote::build(&g).map(|h| h.remote().unwrap().clone())
    }

    #[test]
    fn options_have_defaults_and_are_checked() {
        let s = spec(r#"service = "scorer""#).unwrap();
        assert_eq!(s.path, "/events");
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert_eq!(s.key_prefix, "svc:scorer:");
        assert_eq!(
            (s.backoff, s.max_backoff),
            (Duration::from_millis(100), Duration::from_secs(10))
        );
        let e = spec(
            r#"service = "s"
backoff = "2s"
max_backoff = "1s""#,
        )
        .unwrap_err();
        assert!(e.contains("at least `backoff`"), "{e}");
        let e = spec("").unwrap_err();
        assert!(e.contains("`service` is required"), "{e}");
        let e = spec(r#"service = "Scorer""#).unwrap_err();
        assert!(e.contains("not a service name"), "{e}");
        let e = spec(
            r#"service = "s"
path = "events""#,
        )
        .unwrap_err();
        assert!(e.contains("must start with /"), "{e}");
        let e = spec(
            r#"service = "s"
timeout = "1h""#,
        )
        .unwrap_err();
        assert!(e.contains("at most"), "{e}");
        let e = spec(
            r#"service = "s"
bogus = 1"#,
        )
        .unwrap_err();
        assert!(e.contains("unknown option `bogus`"), "{e}");
    }
}
