//! The topology as configuration: `streams.toml` plus `consumer-groups/<domain>.toml`.
//!
//! Parsing happens in two layers. The *raw* structs (`raw`) mirror the TOML one to one,
//! reject unknown fields and keep the byte span of every value we may have to complain
//! about. [`Config::load`] (`load`) then validates the whole set at once (`validate`,
//! one file per section) into the validated model (`model`, where every default is
//! declared), applies the environment (`env`) and returns *every* problem as a
//! [`Diagnostic`] that names the file, line, column and field, so an operator fixes a
//! broken topology in one pass instead of one error per restart.
//!
//! - `error`: [`Diagnostic`], [`ConfigError`].
//! - `raw`: the TOML as written.
//! - `model`: [`Config`] and its sections, with their defaults.
//! - `validate`: raw → model, per section (`redis`, `delivery`, `streams`, `daemon`,
//!   `groups`, `services`, `tracing`; `[edge]` is validated in `edge`).
//! - `scope`: API key scopes and the service-name rule.
//! - `env`: the `ASTRA_*` overrides, and the standard `OTEL_*` variables of `[tracing]`.
//! - `url`: `redis.url`'s three forms.
//! - `load`: reading the files and putting the steps together.

mod edge;
mod env;
mod error;
mod load;
mod model;
mod raw;
mod scope;
mod url;
mod validate;

pub use crate::envelope::parse_stream_name;
pub use edge::{
    ApiKey, AuthMode, EdgeConfig, RateLimitConfig, hex, key_sha256, valid_user_id, visible_ascii,
};
pub use error::{ConfigError, Diagnostic};
pub use model::{
    BreakerConfig, Config, DaemonConfig, GroupConfig, MetricsConfig, RedisConfig, RedisMode,
    RetentionConfig, ServiceConfig, StartId, StreamConfig, default_instance,
};
pub use scope::{SERVICE_NAME_RULE, Scope, scope_syntax, valid_service};
pub use url::parse_redis_url;
// The `[edge]` section validates with the shared validator (`super::Validator`).
use validate::{Validator, line_col};

/// Name of the file that holds the connection, defaults and stream catalog.
pub const STREAMS_FILE: &str = "streams.toml";
/// Directory (under the config dir) holding one `<domain>.toml` per domain.
pub const GROUPS_DIR: &str = "consumer-groups";
