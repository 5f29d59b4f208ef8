//! `[tracing]`: OTLP export of spans. The `OTEL_*` environment is applied afterwards
//! (`config::env`), with the same checks ([`check_endpoint`], [`check_ratio`]).

use std::time::Duration;

use super::Validator;
use crate::config::raw::RawTracing;
use crate::telemetry::{Protocol, TracingConfig};

/// What is wrong with `url` as an OTLP endpoint, if anything.
pub(in crate::config) fn check_endpoint(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} must start with http:// or https://"))?;
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("{url:?} names no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} must be a URL without spaces"));
    }
    Ok(())
}

/// What is wrong with `r` as a sampling ratio, if anything.
pub(in crate::config) fn check_ratio(r: f64) -> Result<f64, String> {
    if r.is_finite() && (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(format!("must be between 0.0 and 1.0, got {r}"))
    }
}

impl Validator {
    pub(super) fn tracing(&mut self, file: &str, text: &str, raw: &RawTracing) -> TracingConfig {
        let d = TracingConfig::default();
        let protocol = match &raw.protocol {
            Some(p) => match Protocol::parse(p.get_ref()) {
                Some(p) => p,
                None => {
                    self.at(
                        file,
                        text,
                        p.span(),
                        format!(
                            "tracing.protocol must be \"http/protobuf\" or \"grpc\", got {:?}",
                            p.get_ref()
                        ),
                    );
                    d.protocol
                }
            },
            None => d.protocol,
        };
        let endpoint = match &raw.endpoint {
            Some(e) => match check_endpoint(e.get_ref()) {
                Ok(()) => Some(e.get_ref().clone()),
                Err(m) => {
                    self.at(file, text, e.span(), format!("tracing.endpoint: {m}"));
                    None
                }
            },
            None => None,
        };
        let mut sampling = d.sampling;
        if let Some(r) = &raw.sampling_ratio {
            match check_ratio(*r.get_ref()) {
                Ok(r) => sampling.ratio = r,
                Err(m) => self.at(file, text, r.span(), format!("tracing.sampling_ratio {m}")),
            }
        }
        let service_name = match &raw.service_name {
            Some(n) if n.get_ref().trim().is_empty() => {
                self.at(
                    file,
                    text,
                    n.span(),
                    "tracing.service_name must not be empty".into(),
                );
                d.service_name.clone()
            }
            Some(n) => n.get_ref().clone(),
            None => d.service_name.clone(),
        };
        TracingConfig {
            enabled: raw.enabled.as_ref().map_or(d.enabled, |e| *e.get_ref()),
            endpoint,
            protocol,
            sampling,
            service_name,
            queue_size: self
                .int(
                    file,
                    text,
                    "tracing.queue_size",
                    &raw.queue_size,
                    1..1_000_001,
                )
                .map_or(d.queue_size, |n| n as usize),
            export_timeout: self
                .dur(
                    file,
                    text,
                    "tracing.export_timeout",
                    &raw.export_timeout,
                    Duration::from_millis(100),
                    Duration::from_secs(60),
                )
                .unwrap_or(d.export_timeout),
        }
    }
}
