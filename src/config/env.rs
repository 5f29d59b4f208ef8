//! Environment overrides, applied after the files validate: `ASTRA_REDIS_URL`,
//! `ASTRA_REDIS_PASSWORD_FILE`, `ASTRA_REDIS_CA_FILE`, `ASTRA_INSTANCE`,
//! `ASTRA_HTTP_LISTEN`, `ASTRA_EDGE_AUTH`, `ASTRA_EDGE_OPS`, `ASTRA_EDGE_KEYS_FILE`, and the
//! standard OpenTelemetry variables of `[tracing]` ([`apply_otel`]). An empty variable
//! counts as unset; a bad value is a diagnostic naming the variable.

use std::path::{Path, PathBuf};

use super::edge::AuthMode;
use super::error::ConfigError;
use super::model::{Config, RedisMode};
use super::url::parse_redis_url;

/// Applies every override `env` sets to `cfg` (paths relative to `dir`).
pub(super) fn apply(
    cfg: &mut Config,
    dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let env = |k: &str| env(k).filter(|s| !s.is_empty());
    if let Some(url) = env("ASTRA_REDIS_URL") {
        const VAR: &str = "ASTRA_REDIS_URL (environment)";
        let (mode, _) =
            parse_redis_url(&url).map_err(|message| ConfigError::at_start(VAR, message))?;
        cfg.redis.url = url;
        cfg.redis.mode = mode;
        if mode == RedisMode::Cluster && cfg.redis.min_replicas_ack > 0 {
            return Err(ConfigError::at_start(
                VAR,
                "redis.min_replicas_ack is not supported with redis-cluster:// (set it to 0)"
                    .into(),
            ));
        }
    }
    if let Some(f) = env("ASTRA_REDIS_PASSWORD_FILE") {
        cfg.redis.password_file = Some(dir.join(f));
    }
    if let Some(f) = env("ASTRA_REDIS_CA_FILE") {
        cfg.redis.tls_ca_file = Some(dir.join(f));
    }
    if let Some(i) = env("ASTRA_INSTANCE") {
        cfg.daemon.instance = i;
    }
    if let Some(l) = env("ASTRA_HTTP_LISTEN") {
        cfg.edge.listen = l.parse().map_err(|e| {
            ConfigError::at_start("ASTRA_HTTP_LISTEN", format!("{l:?} is not host:port ({e})"))
        })?;
    }
    if let Some(a) = env("ASTRA_EDGE_AUTH") {
        cfg.edge.auth = match a.as_str() {
            "off" => AuthMode::Off,
            "keys" => AuthMode::Keys,
            _ => {
                return Err(ConfigError::at_start(
                    "ASTRA_EDGE_AUTH",
                    format!("must be \"off\" or \"keys\", got {a:?}"),
                ));
            }
        };
        cfg.edge.auth_origin = ("ASTRA_EDGE_AUTH".into(), 1, 1);
    }
    if let Some(o) = env("ASTRA_EDGE_OPS") {
        cfg.edge.ops = match o.as_str() {
            "open" => Some(false),
            "keys" => Some(true),
            _ => {
                return Err(ConfigError::at_start(
                    "ASTRA_EDGE_OPS",
                    format!("must be \"open\" or \"keys\", got {o:?}"),
                ));
            }
        };
    }
    if let Some(f) = env("ASTRA_EDGE_KEYS_FILE") {
        cfg.edge.keys_file = Some(PathBuf::from(f));
    }
    apply_otel(&mut cfg.tracing, env)
}

/// The `OTEL_*` variables over `[tracing]`: each one set wins over the TOML, as the
/// OpenTelemetry SDK specification has it. `OTEL_SDK_DISABLED=true` turns tracing off
/// whatever the TOML says; nothing here turns it on (`tracing.enabled` does), and while
/// it is off the other variables are not read (another program's settings on the host
/// cannot stop the daemon). `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is used as given;
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is a base to which HTTP appends `/v1/traces`; the
/// traces-specific one wins over the base, and either over `tracing.endpoint`.
pub(super) fn apply_otel(
    t: &mut crate::telemetry::TracingConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    use super::validate::tracing::{check_endpoint, check_ratio};
    use crate::telemetry::Protocol;
    let env = |k: &str| {
        env(k)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        t.enabled = false;
    }
    if !t.enabled {
        return Ok(());
    }
    let bad = |var: &str, message: String| {
        ConfigError::at_start(&format!("{var} (environment)"), message)
    };
    if let Some(p) = env("OTEL_EXPORTER_OTLP_PROTOCOL") {
        t.protocol = Protocol::parse(&p).ok_or_else(|| {
            bad(
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                format!(
                    "must be \"http/protobuf\" or \"grpc\" (http/json is not supported), got {p:?}"
                ),
            )
        })?;
    }
    let endpoint = if let Some(e) = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        Some(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", e))
    } else if let Some(base) = env("OTEL_EXPORTER_OTLP_ENDPOINT") {
        let e = match t.protocol {
            Protocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
            Protocol::Grpc => base,
        };
        Some(("OTEL_EXPORTER_OTLP_ENDPOINT", e))
    } else {
        None
    };
    if let Some((var, e)) = endpoint {
        check_endpoint(&e).map_err(|m| bad(var, m))?;
        t.endpoint = Some(e);
    }
    if let Some(s) = env("OTEL_TRACES_SAMPLER") {
        let ratio = || match env("OTEL_TRACES_SAMPLER_ARG") {
            None => Ok(1.0),
            Some(a) => a
                .parse::<f64>()
                .map_err(|_| format!("{a:?} is not a number"))
                .and_then(check_ratio)
                .map_err(|m| bad("OTEL_TRACES_SAMPLER_ARG", m)),
        };
        let (parent_based, ratio) = match s.as_str() {
            "always_on" => (false, 1.0),
            "always_off" => (false, 0.0),
            "traceidratio" => (false, ratio()?),
            "parentbased_always_on" => (true, 1.0),
            "parentbased_always_off" => (true, 0.0),
            "parentbased_traceidratio" => (true, ratio()?),
            _ => {
                return Err(bad(
                    "OTEL_TRACES_SAMPLER",
                    format!(
                        "must be always_on, always_off, traceidratio, parentbased_always_on, \
                         parentbased_always_off or parentbased_traceidratio, got {s:?}"
                    ),
                ));
            }
        };
        t.sampling = crate::telemetry::Sampling {
            parent_based,
            ratio,
        };
    }
    if let Some(n) = env("OTEL_SERVICE_NAME") {
        t.service_name = n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::apply_otel;
    use crate::telemetry::{Protocol, Sampling, TracingConfig};

    fn with(toml: TracingConfig, vars: &[(&str, &str)]) -> Result<TracingConfig, String> {
        let mut t = toml;
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        apply_otel(&mut t, |k| {
            vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
        .map_err(|e| e.to_string())?;
        Ok(t)
    }

    fn on() -> TracingConfig {
        TracingConfig {
            enabled: true,
            endpoint: Some("http://toml:4318/v1/traces".into()),
            ..TracingConfig::default()
        }
    }

    #[test]
    fn the_environment_wins_over_the_toml() {
        // Nothing set: the TOML stands.
        assert_eq!(with(on(), &[]).unwrap(), on());
        // The base endpoint gets the traces path for HTTP...
        let t = with(
            on(),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")],
        )
        .unwrap();
        assert_eq!(t.endpoint(), "http://collector:4318/v1/traces");
        // ...and the traces endpoint wins over the base, used as given.
        let t = with(
            on(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://traces:9999/custom",
                ),
            ],
        )
        .unwrap();
        assert_eq!(t.endpoint(), "http://traces:9999/custom");
        // gRPC takes the base as it is.
        let t = with(
            on(),
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ],
        )
        .unwrap();
        assert_eq!(
            (t.protocol, t.endpoint()),
            (Protocol::Grpc, "http://collector:4317")
        );
        // A protocol switch alone keeps the TOML endpoint; with none, the new default.
        let t = with(
            TracingConfig {
                endpoint: None,
                ..on()
            },
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
        )
        .unwrap();
        assert_eq!(t.endpoint(), "http://localhost:4317");
        let t = with(on(), &[("OTEL_SERVICE_NAME", "bus-eu")]).unwrap();
        assert_eq!(t.service_name, "bus-eu");
    }

    #[test]
    fn samplers() {
        let s = |name: &str, arg: Option<&str>| {
            let mut v = vec![("OTEL_TRACES_SAMPLER", name)];
            if let Some(a) = arg {
                v.push(("OTEL_TRACES_SAMPLER_ARG", a));
            }
            with(on(), &v).map(|t| t.sampling)
        };
        let sm = |parent_based, ratio| Sampling {
            parent_based,
            ratio,
        };
        assert_eq!(s("always_on", None), Ok(sm(false, 1.0)));
        assert_eq!(s("always_off", None), Ok(sm(false, 0.0)));
        assert_eq!(s("traceidratio", Some("0.1")), Ok(sm(false, 0.1)));
        assert_eq!(s("parentbased_always_on", None), Ok(sm(true, 1.0)));
        assert_eq!(s("parentbased_always_off", None), Ok(sm(true, 0.0)));
        assert_eq!(
            s("parentbased_traceidratio", Some("0.5")),
            Ok(sm(true, 0.5))
        );
        assert_eq!(s("parentbased_traceidratio", None), Ok(sm(true, 1.0)));
        let e = s("traceidratio", Some("2")).unwrap_err();
        assert_eq!(
            e,
            "OTEL_TRACES_SAMPLER_ARG (environment):1:1: must be between 0.0 and 1.0, got 2"
        );
        assert!(
            s("jaeger_remote", None)
                .unwrap_err()
                .starts_with("OTEL_TRACES_SAMPLER (environment):1:1: must be")
        );
    }

    #[test]
    fn bad_variables_are_named() {
        let e = with(on(), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err();
        assert!(
            e.starts_with("OTEL_EXPORTER_OTLP_PROTOCOL (environment):1:1: must be"),
            "{e}"
        );
        let e = with(
            on(),
            &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318")],
        )
        .unwrap_err();
        assert!(e.starts_with("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (environment):1:1: \"collector:4318\" must start with http://"), "{e}");
    }

    #[test]
    fn sdk_disabled_wins_and_off_reads_nothing_else() {
        let t = with(on(), &[("OTEL_SDK_DISABLED", "TRUE")]).unwrap();
        assert!(!t.enabled);
        // Only "true" disables (the specification's rule).
        assert!(with(on(), &[("OTEL_SDK_DISABLED", "1")]).unwrap().enabled);
        // Off (by the TOML or by OTEL_SDK_DISABLED), another program's variables are not
        // ours to refuse; nothing turns tracing on but tracing.enabled.
        let off = TracingConfig::default();
        let t = with(
            off.clone(),
            &[
                ("OTEL_TRACES_SAMPLER", "nonsense"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ],
        )
        .unwrap();
        assert_eq!(t, off);
        assert!(
            with(
                on(),
                &[
                    ("OTEL_SDK_DISABLED", "true"),
                    ("OTEL_TRACES_SAMPLER", "nonsense")
                ]
            )
            .is_ok()
        );
    }
}
