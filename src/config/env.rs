//! Environment overrides, applied after the files validate: `ASTRA_REDIS_URL`,
//! `ASTRA_REDIS_PASSWORD_FILE`, `ASTRA_REDIS_CA_FILE`, `ASTRA_INSTANCE`,
//! `ASTRA_HTTP_LISTEN`, `ASTRA_EDGE_AUTH`, `ASTRA_EDGE_OPS`, `ASTRA_EDGE_KEYS_FILE`. An empty variable
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
    Ok(())
}
