//! `[tracing]`: OTLP export of spans. The `OTEL_*` environment is applied afterwards
//! (`config::env`), with the same checks ([`check_endpoint`], [`check_ratio`]).

use std::time::Duration;

use super::Validator;
use crate::config::raw::RawTracing;
use crate::telemetry::{Protocol, TracingConfig};

/// What is wrong with `url` as an OTLP endpoint, if anything.
///
/// `https://` is refused: the exporter is built without TLS (a rustls stack for the
/// gRPC and the HTTP client each), and an endpoint it cannot reach would only show up as
/// dropped spans. Send to a collector on the host or the pod (the OpenTelemetry
/// Collector's usual place), which forwards over TLS.
pub(in crate::config) fn check_endpoint(url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Err(format!(
            "{url:?}: https:// is not supported (no TLS in the exporter); send to a \
             collector over http://, e.g. an OpenTelemetry Collector on the host"
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} must start with http://"))?;
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::telemetry::{Protocol, Sampling, TracingConfig};

    const STREAMS: &str = r#"[redis]
url = "redis://127.0.0.1:6379"

[[stream]]
name = "astra.bus.dead_letter.v1"
description = "dead letters"
"#;

    fn load(tracing: &str) -> Result<Config, crate::config::ConfigError> {
        let text = format!("{STREAMS}\n[tracing]\n{tracing}\n");
        Config::from_sources(Path::new("."), &[("streams.toml".into(), text)])
    }

    #[test]
    fn off_by_default_with_documented_defaults() {
        let cfg = Config::from_sources(Path::new("."), &[("streams.toml".into(), STREAMS.into())])
            .unwrap();
        let t = &cfg.tracing;
        assert_eq!(t, &TracingConfig::default());
        assert!(!t.enabled);
        assert_eq!(t.protocol, Protocol::HttpProtobuf);
        assert_eq!(t.endpoint(), "http://localhost:4318/v1/traces");
        assert_eq!(
            t.sampling,
            Sampling {
                parent_based: true,
                ratio: 1.0
            }
        );
        assert_eq!(t.service_name, "astra-bus");
        assert_eq!(t.queue_size, 8192);
        assert_eq!(t.export_timeout, std::time::Duration::from_secs(5));
        // The gRPC default is the collector's gRPC port.
        let g = TracingConfig {
            protocol: Protocol::Grpc,
            ..TracingConfig::default()
        };
        assert_eq!(g.endpoint(), "http://localhost:4317");
    }

    #[test]
    fn every_key_is_read() {
        let cfg = load(
            "enabled = true\nendpoint = \"http://otel.example:4317\"\nprotocol = \"grpc\"\n\
             sampling_ratio = 0.25\nservice_name = \"bus-eu\"\nqueue_size = 100\nexport_timeout = \"2s\"",
        )
        .unwrap();
        let t = cfg.tracing;
        assert!(t.enabled);
        assert_eq!(t.endpoint(), "http://otel.example:4317");
        assert_eq!(t.protocol, Protocol::Grpc);
        assert_eq!(t.sampling.ratio, 0.25);
        assert_eq!(t.service_name, "bus-eu");
        assert_eq!(t.queue_size, 100);
        assert_eq!(t.export_timeout, std::time::Duration::from_secs(2));
    }

    #[test]
    fn bad_values_name_file_line_and_field() {
        let e = load(
            "protocol = \"http/json\"\nendpoint = \"otel:4318\"\nsampling_ratio = 1.5\n\
             service_name = \" \"\nqueue_size = 0\nexport_timeout = \"soon\"",
        )
        .unwrap_err();
        let got: Vec<String> = e.diagnostics().iter().map(|d| d.to_string()).collect();
        // [tracing] is line 8 of the file, its keys follow.
        let expected = [
            "streams.toml:9:12: tracing.protocol must be \"http/protobuf\" or \"grpc\", got \"http/json\"",
            "streams.toml:10:12: tracing.endpoint: \"otel:4318\" must start with http://",
            "streams.toml:11:18: tracing.sampling_ratio must be between 0.0 and 1.0, got 1.5",
            "streams.toml:12:16: tracing.service_name must not be empty",
            "streams.toml:13:14: tracing.queue_size must be between 1 and 1000000, got 0",
        ];
        for (g, want) in got.iter().zip(expected) {
            assert_eq!(g, want);
        }
        assert!(
            got[5].starts_with(
                "streams.toml:14:18: tracing.export_timeout: \"soon\" is not a duration"
            ),
            "{got:#?}"
        );
        assert_eq!(got.len(), 6, "{got:#?}");
        assert!(
            load("endpoint = \"https://otel.example:4318/v1/traces\"")
                .unwrap_err()
                .to_string()
                .contains("https:// is not supported")
        );
        assert!(
            load("endpoint = \"http://:4318\"")
                .unwrap_err()
                .to_string()
                .contains("names no host")
        );
    }

    #[test]
    fn unknown_keys_are_refused_where_they_are() {
        let e = load("enabled = true\nsample_ratio = 0.5").unwrap_err();
        let d = &e.diagnostics()[0];
        assert_eq!((d.file.as_str(), d.line), ("streams.toml", 10));
        assert!(d.message.contains("unknown field `sample_ratio`"), "{d}");
    }
}
