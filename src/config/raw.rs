//! The raw TOML model: structs that mirror `streams.toml` and `consumer-groups/*.toml`
//! one to one, reject unknown fields and keep the byte span of every value validation may
//! have to complain about. Defaults are not applied here: an absent value stays `None` so
//! a group can inherit `[defaults]`; the defaults live on the validated model
//! ([`super::model`], [`crate::group::GroupConfig`]).

use serde::Deserialize;
use toml::Spanned;

use super::edge::RawEdge;

/// `streams.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStreamsFile {
    /// How to reach Redis.
    pub(super) redis: RawRedis,
    /// Delivery defaults every group inherits.
    #[serde(default)]
    pub(super) defaults: RawGroupSettings,
    /// Retention defaults every stream inherits, and how often retention runs.
    #[serde(default)]
    pub(super) retention: RawRetention,
    /// Daemon-wide settings.
    #[serde(default)]
    pub(super) daemon: RawDaemon,
    /// The HTTP edge (publish API, projection reads, `/metrics`, `/health`, `/ready`).
    #[serde(default)]
    pub(super) edge: RawEdge,
    /// Metrics collection.
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    /// Distributed tracing over OTLP (off by default).
    #[serde(default)]
    pub(super) tracing: RawTracing,
    /// The stream catalog.
    #[serde(default)]
    pub(super) stream: Vec<RawStream>,
    /// Services of the registry the daemon talks to (`[services.<name>]`): the gateway
    /// proxy's upstreams, with their timeouts and circuit breakers.
    #[serde(default)]
    pub(super) services: std::collections::BTreeMap<Spanned<String>, RawService>,
}

/// `[services.<name>]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    /// One line on what the service does.
    pub(super) description: Option<String>,
    /// Route `/api/v1/<name>/…` (what the edge does not serve itself) to the service's
    /// healthy instances.
    pub(super) proxy: Option<bool>,
    /// How long one attempt at an instance may take, answer included.
    pub(super) timeout: Option<Spanned<String>>,
    /// Largest answer body relayed from an instance.
    pub(super) max_response_bytes: Option<Spanned<i64>>,
    /// How long the list of instances read from the registry is reused.
    pub(super) registry_refresh: Option<Spanned<String>>,
    /// The circuit breaker of each instance.
    #[serde(default)]
    pub(super) breaker: RawBreaker,
}

/// `[services.<name>.breaker]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreaker {
    /// Consecutive failures that open an instance's breaker.
    pub(super) failures: Option<Spanned<i64>>,
    /// How long an open breaker refuses before it lets one probe through.
    pub(super) open_for: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedis {
    /// `redis://[user:pass@]host:port[/db]`, `redis-cluster://host:port,host:port,…` or
    /// `redis-sentinel://host:port,…/db?sentinelServiceName=name`. Overridden by
    /// `ASTRA_REDIS_URL`.
    pub(super) url: Spanned<String>,
    /// Per-command timeout.
    pub(super) command_timeout: Option<Spanned<String>>,
    /// File holding the password (overrides one in the URL). `ASTRA_REDIS_PASSWORD_FILE`.
    pub(super) password_file: Option<String>,
    /// PEM file of the CA(s) that sign the server's TLS certificate. `ASTRA_REDIS_CA_FILE`.
    pub(super) tls_ca_file: Option<String>,
    /// Replicas that must acknowledge a publish (WAIT) before it counts as done.
    pub(super) min_replicas_ack: Option<Spanned<i64>>,
    /// How long a publish waits for those replicas.
    pub(super) replica_ack_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroupSettings {
    /// Entries fetched per XREADGROUP (COUNT).
    pub(super) batch_size: Option<Spanned<i64>>,
    /// How long one XREADGROUP blocks waiting for entries (BLOCK).
    pub(super) block: Option<Spanned<String>>,
    /// Maximum events of one group in flight (read but not yet committed) at once.
    pub(super) concurrency: Option<Spanned<i64>>,
    /// Entries pending longer than this are reclaimed from their consumer (XPENDING IDLE + XCLAIM).
    pub(super) claim_idle: Option<Spanned<String>>,
    /// Deliveries (Redis's delivery counter) after which an entry is dead-lettered.
    pub(super) max_deliveries: Option<Spanned<i64>>,
    /// Stream that receives dead letters.
    pub(super) dead_letter_stream: Option<Spanned<String>>,
    /// Where a newly created group starts: `"0"` (whole history) or `"$"` (new entries only).
    pub(super) start_id: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    /// How often retention trims streams.
    pub(super) interval: Option<Spanned<String>>,
    /// Default approximate maximum length of a stream.
    pub(super) max_len: Option<Spanned<i64>>,
    /// Default maximum age of an entry (humantime, e.g. `"7d"`).
    pub(super) max_age: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    /// Consumer name prefix; defaults to the host name. Overridden by `ASTRA_INSTANCE`.
    pub(super) instance: Option<Spanned<String>>,
    /// How long SIGTERM waits for in-flight work before exiting.
    pub(super) shutdown_deadline: Option<Spanned<String>>,
    /// Consumers idle this long with nothing pending are deleted.
    pub(super) consumer_idle_limit: Option<Spanned<String>>,
    /// How long a processed event id is remembered for de-duplication.
    pub(super) dedup_ttl: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    /// How often stream and group health is read from Redis (one pipelined round).
    pub(super) refresh_interval: Option<Spanned<String>>,
}

/// `[tracing]`: every field is optional; the defaults are those of
/// [`crate::telemetry::TracingConfig`], and the `OTEL_*` environment overrides them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTracing {
    /// Export spans over OTLP. Default `false`.
    #[serde(default)]
    pub(super) enabled: Option<Spanned<bool>>,
    /// The traces endpoint: for `http/protobuf` the full URL (default
    /// `http://localhost:4318/v1/traces`), for `grpc` `http://host:port` (default
    /// `http://localhost:4317`).
    #[serde(default)]
    pub(super) endpoint: Option<Spanned<String>>,
    /// `"http/protobuf"` (default) or `"grpc"`.
    #[serde(default)]
    pub(super) protocol: Option<Spanned<String>>,
    /// Fraction of new traces kept, 0.0 to 1.0 (default 1.0); an event that arrives with
    /// a `traceparent` follows its sampled flag.
    #[serde(default)]
    pub(super) sampling_ratio: Option<Spanned<f64>>,
    /// `service.name` of the exported spans. Default `"astra-bus"`.
    #[serde(default)]
    pub(super) service_name: Option<Spanned<String>>,
    /// Finished spans waiting for export at most (default 8192); beyond, spans are
    /// dropped and counted, never waited for.
    #[serde(default)]
    pub(super) queue_size: Option<Spanned<i64>>,
    /// How long one export may take before its spans count as dropped. Default `"5s"`.
    #[serde(default)]
    pub(super) export_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStream {
    /// Literal Redis key, `astra.<domain>.<event>.v<n>`.
    pub(super) name: Spanned<String>,
    /// One line on what the stream carries.
    pub(super) description: Spanned<String>,
    /// Published by other applications (a public contract), not by a handler.
    #[serde(default)]
    pub(super) external: bool,
    /// Approximate maximum length (overrides the retention default).
    pub(super) max_len: Option<Spanned<i64>>,
    /// Maximum entry age (overrides the retention default).
    pub(super) max_age: Option<Spanned<String>>,
    /// A JSON Schema file for the payload (relative to the config dir).
    pub(super) schema: Option<Spanned<String>>,
    /// For `….v<n>` with n >= 2: `"forward"` (the default) checks that every payload this
    /// version's schema accepts is one the previous version's accepts, so v1's readers are
    /// safe; `"none"` declares the break on purpose and skips the check.
    pub(super) compatibility: Option<Spanned<String>>,
}

/// `consumer-groups/<domain>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroupsFile {
    #[serde(default)]
    pub(super) group: Vec<RawGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    /// `<domain>.<name>`; also the Redis consumer-group name.
    pub(super) name: Spanned<String>,
    /// Registered handler that processes the events.
    pub(super) handler: Spanned<String>,
    /// One line on what the group does.
    pub(super) description: Option<String>,
    /// Streams the group consumes.
    pub(super) reads: Spanned<Vec<Spanned<String>>>,
    /// Streams the group may publish to.
    #[serde(default)]
    pub(super) publishes: Vec<Spanned<String>>,
    /// Override of `defaults.batch_size`.
    pub(super) batch_size: Option<Spanned<i64>>,
    /// Override of `defaults.block`.
    pub(super) block: Option<Spanned<String>>,
    /// Override of `defaults.concurrency`.
    pub(super) concurrency: Option<Spanned<i64>>,
    /// Override of `defaults.claim_idle`.
    pub(super) claim_idle: Option<Spanned<String>>,
    /// Override of `defaults.max_deliveries`.
    pub(super) max_deliveries: Option<Spanned<i64>>,
    /// Override of `defaults.dead_letter_stream`.
    pub(super) dead_letter_stream: Option<Spanned<String>>,
    /// Override of `defaults.start_id`.
    pub(super) start_id: Option<Spanned<String>>,
    /// Handler tunables, checked by the handler when it is built.
    #[serde(default)]
    pub(super) options: Option<Spanned<toml::Table>>,
}
