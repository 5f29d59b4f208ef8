//! The validated model: what [`Config::load`](super::Config::load) returns, every value
//! checked and every default applied. Each default is declared once, in the `Default`
//! (or constructor) beside its struct; validation starts from it, so an absent key and
//! the documented default can never disagree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::group::{GroupConfig, StartId};

use super::edge::EdgeConfig;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory the files were read from.
    pub dir: PathBuf,
    /// Connection settings.
    pub redis: RedisConfig,
    /// Retention settings.
    pub retention: RetentionConfig,
    /// Daemon-wide settings.
    pub daemon: DaemonConfig,
    /// The HTTP edge.
    pub edge: EdgeConfig,
    /// Metrics collection.
    pub metrics: MetricsConfig,
    /// Distributed tracing (`[tracing]`, then the `OTEL_*` environment).
    pub tracing: crate::telemetry::TracingConfig,
    /// The stream catalog, in file order.
    pub streams: Vec<StreamConfig>,
    /// Every consumer group, resolved against the defaults, ordered by file then position.
    pub groups: Vec<GroupConfig>,
    /// The services of the registry the daemon talks to, by name.
    pub services: Vec<ServiceConfig>,
}

impl Config {
    /// Looks a stream up by name.
    pub fn stream(&self, name: &str) -> Option<&StreamConfig> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// Looks a declared service up by name.
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Looks a group up by name.
    pub fn group(&self, name: &str) -> Option<&GroupConfig> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Domains that own at least one group, sorted.
    pub fn domains(&self) -> Vec<String> {
        let set: BTreeSet<_> = self.groups.iter().map(|g| g.domain.clone()).collect();
        set.into_iter().collect()
    }

    /// For each stream, the groups that read it.
    pub fn readers(&self) -> BTreeMap<&str, Vec<&GroupConfig>> {
        let mut m: BTreeMap<&str, Vec<&GroupConfig>> = BTreeMap::new();
        for g in &self.groups {
            for s in &g.reads {
                m.entry(s.as_str()).or_default().push(g);
            }
        }
        m
    }

    /// Every dead-letter stream in use.
    pub fn dead_letter_streams(&self) -> Vec<String> {
        let set: BTreeSet<_> = self
            .groups
            .iter()
            .map(|g| g.dead_letter_stream.clone())
            .collect();
        set.into_iter().collect()
    }
}

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Connection URL.
    pub url: String,
    /// Single node, cluster or sentinel (from the URL's scheme).
    pub mode: RedisMode,
    /// Per-command timeout.
    pub command_timeout: Duration,
    /// File whose content (trailing newline removed) is the password, read at each
    /// connect: keeps the secret out of the config and the process environment
    /// (systemd `LoadCredential`, Docker secrets). Relative to the config directory.
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA certificates trusted for `rediss://` instead of the system's.
    /// Relative to the config directory.
    pub tls_ca_file: Option<PathBuf>,
    /// Replicas that must acknowledge every publish (`WAIT n timeout`); 0 = do not wait.
    pub min_replicas_ack: u32,
    /// How long a publish waits for `min_replicas_ack` replicas.
    pub replica_ack_timeout: Duration,
}

impl RedisConfig {
    /// A connection to `url` (whose scheme says `mode`) with every other setting at its
    /// default: 10s per command, no password or CA file, no replica acknowledgements
    /// (and 1s to wait for them once asked for).
    pub fn new(url: String, mode: RedisMode) -> RedisConfig {
        RedisConfig {
            url,
            mode,
            command_timeout: Duration::from_secs(10),
            password_file: None,
            tls_ca_file: None,
            min_replicas_ack: 0,
            replica_ack_timeout: Duration::from_secs(1),
        }
    }
}

/// The kind of Redis deployment `redis.url` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    /// `redis://` or `rediss://`: one server (or whatever a proxy presents as one).
    Single,
    /// `redis-cluster://` or `rediss-cluster://`: a Redis Cluster, found from seed nodes.
    Cluster,
    /// `redis-sentinel://` or `rediss-sentinel://`: the primary that Sentinels name.
    Sentinel,
}

/// Retention loop settings.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// How often streams are trimmed.
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            interval: Duration::from_secs(30),
        }
    }
}

/// Daemon-wide settings.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Consumer-name prefix (host name unless configured).
    pub instance: String,
    /// SIGTERM drain deadline.
    pub shutdown_deadline: Duration,
    /// Idle consumers with nothing pending are removed after this long.
    pub consumer_idle_limit: Duration,
    /// How long a completed event id is remembered, at least (its done marker costs
    /// about 90 bytes per group for up to 1.5 times this long).
    pub dedup_ttl: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            instance: default_instance(),
            shutdown_deadline: Duration::from_secs(10),
            consumer_idle_limit: Duration::from_secs(3600),
            dedup_ttl: Duration::from_secs(3600),
        }
    }
}

/// Host name, used as the default consumer-name prefix so names are stable across restarts.
pub fn default_instance() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "astra-bus".to_string())
}

/// Metrics collection.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// How often health is read from Redis.
    pub refresh_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            refresh_interval: Duration::from_secs(5),
        }
    }
}

/// One declared stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Redis key.
    pub name: String,
    /// `<domain>` segment.
    pub domain: String,
    /// `<event>` segment.
    pub event: String,
    /// Schema version.
    pub version: u32,
    /// What it carries.
    pub description: String,
    /// Written by other applications.
    pub external: bool,
    /// Approximate maximum length, if bounded by length (none unless `max_len` or
    /// `retention.max_len` is set).
    pub max_len: Option<u64>,
    /// Maximum entry age, if bounded by age (none unless `max_age` or `retention.max_age`
    /// is set).
    pub max_age: Option<Duration>,
    /// The payload's JSON Schema from the stream's `schema` file (streams this binary has
    /// no contract for), enforced by the edge and `publish`, exported by the catalog.
    pub schema: Option<std::sync::Arc<crate::events::custom::CustomSchema>>,
}

impl StreamConfig {
    /// The event type carried: `<domain>.<event>`.
    pub fn event_type(&self) -> String {
        format!("{}.{}", self.domain, self.event)
    }
}

/// One `[services.<name>]`: a service of the registry the daemon talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Its name in the registry and in `/api/v1/<name>/…`.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Whether the edge proxies `/api/v1/<name>/…` to it.
    pub proxy: bool,
    /// How long one attempt at an instance may take, answer included.
    pub timeout: Duration,
    /// Largest answer body relayed from an instance (a larger one is a failure).
    pub max_response_bytes: usize,
    /// How long a list of instances read from the registry is reused.
    pub registry_refresh: Duration,
    /// Each instance's circuit breaker.
    pub breaker: BreakerConfig,
}

impl ServiceConfig {
    /// `name` with every setting at its default: no proxy, 10s per attempt, 8 MiB
    /// answers, the registry re-read every second, the seeds' breaker.
    pub fn new(name: &str) -> ServiceConfig {
        ServiceConfig {
            name: name.to_string(),
            description: String::new(),
            proxy: false,
            timeout: Duration::from_secs(10),
            max_response_bytes: 8 << 20,
            registry_refresh: Duration::from_secs(1),
            breaker: BreakerConfig::default(),
        }
    }
}

/// A circuit breaker's thresholds (one breaker per instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures (connection refused or lost, timeout, a 5xx answer) that open
    /// the breaker.
    pub failures: u32,
    /// How long an open breaker refuses before it lets one probe through (half-open).
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    /// The seeds' gateway: open after 5 failures, probe after 30 s.
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            open_for: Duration::from_secs(30),
        }
    }
}
