//! The topology as configuration: `streams.toml` plus `consumer-groups/<domain>.toml`.
//!
//! Parsing happens in two layers. The *raw* structs mirror the TOML one to one, reject
//! unknown fields and keep the byte span of every value we may have to complain about.
//! [`Config::load`] then validates the whole set at once and returns *every* problem as a
//! [`Diagnostic`] that names the file, line, column and field, so an operator fixes a
//! broken topology in one pass instead of one error per restart.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

mod edge;
pub use edge::{
    ApiKey, AuthMode, EdgeConfig, RateLimitConfig, Scope, hex, key_sha256, valid_user_id,
    visible_ascii,
};

/// Name of the file that holds the connection, defaults and stream catalog.
pub const STREAMS_FILE: &str = "streams.toml";
/// Directory (under the config dir) holding one `<domain>.toml` per domain.
pub const GROUPS_DIR: &str = "consumer-groups";

/// One problem found in the configuration, located precisely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// File, relative to the config directory (e.g. `consumer-groups/social.toml`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong, naming the field.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The files were read but are invalid; every problem found is listed.
    #[error("{}", display_all(.0))]
    Invalid(Vec<Diagnostic>),
}

fn display_all(d: &[Diagnostic]) -> String {
    d.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// The diagnostics, if this is a validation error.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Invalid(d) => d,
            ConfigError::Io { .. } => &[],
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw TOML model
// ---------------------------------------------------------------------------------------

/// `streams.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStreamsFile {
    /// How to reach Redis.
    redis: RawRedis,
    /// Delivery defaults every group inherits.
    #[serde(default)]
    defaults: RawGroupSettings,
    /// Retention defaults every stream inherits, and how often retention runs.
    #[serde(default)]
    retention: RawRetention,
    /// Daemon-wide settings.
    #[serde(default)]
    daemon: RawDaemon,
    /// The HTTP edge (publish API, projection reads, `/metrics`, `/health`, `/ready`).
    #[serde(default)]
    edge: edge::RawEdge,
    /// Metrics collection.
    #[serde(default)]
    metrics: RawMetrics,
    /// The stream catalog.
    #[serde(default)]
    stream: Vec<RawStream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    /// `redis://[user:pass@]host:port[/db]`, `redis-cluster://host:port,host:port,…` or
    /// `redis-sentinel://host:port,…/db?sentinelServiceName=name`. Overridden by
    /// `ASTRA_REDIS_URL`.
    url: Spanned<String>,
    /// Per-command timeout.
    command_timeout: Option<Spanned<String>>,
    /// File holding the password (overrides one in the URL). `ASTRA_REDIS_PASSWORD_FILE`.
    password_file: Option<String>,
    /// PEM file of the CA(s) that sign the server's TLS certificate. `ASTRA_REDIS_CA_FILE`.
    tls_ca_file: Option<String>,
    /// Replicas that must acknowledge a publish (WAIT) before it counts as done.
    min_replicas_ack: Option<Spanned<i64>>,
    /// How long a publish waits for those replicas.
    replica_ack_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroupSettings {
    /// Entries fetched per XREADGROUP (COUNT).
    batch_size: Option<Spanned<i64>>,
    /// How long one XREADGROUP blocks waiting for entries (BLOCK).
    block: Option<Spanned<String>>,
    /// Maximum events of one group in flight (read but not yet committed) at once.
    concurrency: Option<Spanned<i64>>,
    /// Entries pending longer than this are reclaimed from their consumer (XAUTOCLAIM).
    claim_idle: Option<Spanned<String>>,
    /// Deliveries (Redis's delivery counter) after which an entry is dead-lettered.
    max_deliveries: Option<Spanned<i64>>,
    /// Stream that receives dead letters.
    dead_letter_stream: Option<Spanned<String>>,
    /// Where a newly created group starts: `"0"` (whole history) or `"$"` (new entries only).
    start_id: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    /// How often retention trims streams.
    interval: Option<Spanned<String>>,
    /// Default approximate maximum length of a stream.
    max_len: Option<Spanned<i64>>,
    /// Default maximum age of an entry (humantime, e.g. `"7d"`).
    max_age: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    /// Consumer name prefix; defaults to the host name. Overridden by `ASTRA_INSTANCE`.
    instance: Option<Spanned<String>>,
    /// How long SIGTERM waits for in-flight work before exiting.
    shutdown_deadline: Option<Spanned<String>>,
    /// Consumers idle this long with nothing pending are deleted.
    consumer_idle_limit: Option<Spanned<String>>,
    /// How long a processed event id is remembered for de-duplication.
    dedup_ttl: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// How often stream and group health is read from Redis (one pipelined round).
    refresh_interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    /// Literal Redis key, `astra.<domain>.<event>.v<n>`.
    name: Spanned<String>,
    /// One line on what the stream carries.
    description: Spanned<String>,
    /// Published by other applications (a public contract), not by a handler.
    #[serde(default)]
    external: bool,
    /// Approximate maximum length (overrides the retention default).
    max_len: Option<Spanned<i64>>,
    /// Maximum entry age (overrides the retention default).
    max_age: Option<Spanned<String>>,
}

/// `consumer-groups/<domain>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroupsFile {
    #[serde(default)]
    group: Vec<RawGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    /// `<domain>.<name>`; also the Redis consumer-group name.
    name: Spanned<String>,
    /// Registered handler that processes the events.
    handler: Spanned<String>,
    /// One line on what the group does.
    description: Option<String>,
    /// Streams the group consumes.
    reads: Spanned<Vec<Spanned<String>>>,
    /// Streams the group may publish to.
    #[serde(default)]
    publishes: Vec<Spanned<String>>,
    /// Override of `defaults.batch_size`.
    batch_size: Option<Spanned<i64>>,
    /// Override of `defaults.block`.
    block: Option<Spanned<String>>,
    /// Override of `defaults.concurrency`.
    concurrency: Option<Spanned<i64>>,
    /// Override of `defaults.claim_idle`.
    claim_idle: Option<Spanned<String>>,
    /// Override of `defaults.max_deliveries`.
    max_deliveries: Option<Spanned<i64>>,
    /// Override of `defaults.dead_letter_stream`.
    dead_letter_stream: Option<Spanned<String>>,
    /// Override of `defaults.start_id`.
    start_id: Option<Spanned<String>>,
    /// Handler tunables, checked by the handler when it is built.
    #[serde(default)]
    options: Option<Spanned<toml::Table>>,
}

// ---------------------------------------------------------------------------------------
// Validated model
// ---------------------------------------------------------------------------------------

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
    /// The stream catalog, in file order.
    pub streams: Vec<StreamConfig>,
    /// Every consumer group, resolved against the defaults, ordered by file then position.
    pub groups: Vec<GroupConfig>,
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

/// Splits `[userinfo@]hosts[/path][?query]` into (userinfo, hosts, path).
fn split_hosts(rest: &str) -> (Option<&str>, &str, &str) {
    let before_query = rest.split_once('?').map_or(rest, |(b, _)| b);
    let (userinfo, hosts_path) = match before_query.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, before_query),
    };
    let (hosts, path) = hosts_path.split_once('/').unwrap_or((hosts_path, ""));
    (userinfo, hosts, path)
}

/// Checks `redis.url` and returns its mode plus the URL in the form the client takes.
///
/// Accepted: `redis[s]://[user:pass@]host:port[/db]`;
/// `redis[s]-cluster://[user:pass@]host:port,host:port,…` (seed nodes; any one is enough,
/// the rest of the cluster is discovered); `redis[s]-sentinel://[user:pass@]host:port,
/// host:port,…[/db]?sentinelServiceName=<name>` (Sentinel addresses; the name of the
/// monitored primary is required). `?node=host:port` parameters are accepted as well as
/// the comma list.
pub fn parse_redis_url(url: &str) -> Result<(RedisMode, String), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("redis.url must look like redis://host:port, got {url:?}"))?;
    let mode = match scheme {
        "redis" | "rediss" => return Ok((RedisMode::Single, url.to_string())),
        "redis-cluster" | "rediss-cluster" => RedisMode::Cluster,
        "redis-sentinel" | "rediss-sentinel" => RedisMode::Sentinel,
        _ => {
            return Err(format!(
                "redis.url must start with redis://, rediss://, redis-cluster:// or redis-sentinel://, got {url:?}"
            ));
        }
    };
    let example = match mode {
        RedisMode::Cluster => "redis-cluster://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000",
        _ => "redis-sentinel://10.0.0.1:26379,10.0.0.2:26379/0?sentinelServiceName=astra",
    };
    let (userinfo, hosts, path) = split_hosts(rest);
    let list: Vec<&str> = hosts.split(',').collect();
    for h in &list {
        let ok = h.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            return Err(format!(
                "redis.url: every node must be host:port (comma-separated), got {h:?} in {url:?}; e.g. {example}"
            ));
        }
    }
    let query = rest.split_once('?').map(|(_, q)| q).unwrap_or("");
    if mode == RedisMode::Sentinel
        && !query.split('&').any(|kv| {
            kv.strip_prefix("sentinelServiceName=")
                .is_some_and(|v| !v.is_empty())
        })
    {
        return Err(format!(
            "redis.url: a sentinel URL needs ?sentinelServiceName=<primary name>, got {url:?}; e.g. {example}"
        ));
    }
    if mode == RedisMode::Cluster && !path.is_empty() && path != "0" {
        return Err(format!(
            "redis.url: Redis Cluster has only database 0, got /{path} in {url:?}"
        ));
    }
    // The client's form: first node as the authority, the others as `node=` parameters.
    let mut out = format!("{scheme}://");
    if let Some(u) = userinfo {
        out.push_str(u);
        out.push('@');
    }
    out.push_str(list[0]);
    if !path.is_empty() {
        out.push('/');
        out.push_str(path);
    }
    let mut params: Vec<String> = list[1..].iter().map(|h| format!("node={h}")).collect();
    params.extend(
        query
            .split('&')
            .filter(|q| !q.is_empty())
            .map(str::to_string),
    );
    if !params.is_empty() {
        out.push('?');
        out.push_str(&params.join("&"));
    }
    Ok((mode, out))
}

/// Retention loop settings.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// How often streams are trimmed.
    pub interval: Duration,
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
    /// How long processed event ids are remembered.
    pub dedup_ttl: Duration,
}

/// Metrics collection.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// How often health is read from Redis.
    pub refresh_interval: Duration,
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
    /// Approximate maximum length, if bounded by length.
    pub max_len: Option<u64>,
    /// Maximum entry age, if bounded by age.
    pub max_age: Option<Duration>,
}

impl StreamConfig {
    /// The event type carried: `<domain>.<event>`.
    pub fn event_type(&self) -> String {
        format!("{}.{}", self.domain, self.event)
    }
}

/// Where a newly created group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartId {
    /// `0`: the whole history of the stream.
    Beginning,
    /// `$`: only entries added after creation.
    End,
}

impl StartId {
    /// The XGROUP CREATE id argument.
    pub fn as_redis(&self) -> &'static str {
        match self {
            StartId::Beginning => "0",
            StartId::End => "$",
        }
    }
}

/// One consumer group with every setting resolved.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `<domain>.<name>`, also the Redis group name.
    pub name: String,
    /// Domain (from the file name).
    pub domain: String,
    /// Handler name.
    pub handler: String,
    /// What the group does.
    pub description: String,
    /// Streams read.
    pub reads: Vec<String>,
    /// Streams it may publish to.
    pub publishes: Vec<String>,
    /// XREADGROUP COUNT.
    pub batch_size: usize,
    /// XREADGROUP BLOCK.
    pub block: Duration,
    /// Max events in flight.
    pub concurrency: usize,
    /// XAUTOCLAIM min idle time.
    pub claim_idle: Duration,
    /// Deliveries before dead-lettering.
    pub max_deliveries: u32,
    /// Dead-letter stream.
    pub dead_letter_stream: String,
    /// Start position for a new group.
    pub start_id: StartId,
    /// Handler tunables.
    pub options: toml::Table,
    /// Where `options` starts, for the handler's error messages (`file:line:col`).
    pub options_origin: String,
}

impl Config {
    /// Loads and validates `dir/streams.toml` and `dir/consumer-groups/*.toml`, then applies
    /// environment overrides (`ASTRA_REDIS_URL`, `ASTRA_INSTANCE`).
    pub fn load(dir: impl AsRef<Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(dir, |k| std::env::var(k).ok())
    }

    /// [`Config::load`] with an explicit environment (tests use this).
    pub fn load_with_env(
        dir: impl AsRef<Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Self::load_for(dir, env, &crate::handlers::Registry::builtin())
    }

    /// [`Config::load_with_env`] validating handler names against `registry` (embedders
    /// and tests that register their own handlers).
    pub fn load_for(
        dir: impl AsRef<Path>,
        env: impl Fn(&str) -> Option<String>,
        registry: &crate::handlers::Registry,
    ) -> Result<Config, ConfigError> {
        let dir = dir.as_ref();
        let mut sources = vec![];
        let streams_path = dir.join(STREAMS_FILE);
        let text = read(&streams_path)?;
        sources.push((STREAMS_FILE.to_string(), text));
        let groups_dir = dir.join(GROUPS_DIR);
        let mut names = vec![];
        let rd = std::fs::read_dir(&groups_dir).map_err(|source| ConfigError::Io {
            path: groups_dir.clone(),
            source,
        })?;
        for entry in rd {
            let entry = entry.map_err(|source| ConfigError::Io {
                path: groups_dir.clone(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".toml") {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let text = read(&groups_dir.join(&name))?;
            sources.push((format!("{GROUPS_DIR}/{name}"), text));
        }
        let mut cfg = Self::from_sources_for(dir, &sources, registry)?;
        if let Some(url) = env("ASTRA_REDIS_URL").filter(|s| !s.is_empty()) {
            let (mode, _) = parse_redis_url(&url).map_err(|message| {
                ConfigError::Invalid(vec![Diagnostic {
                    file: "ASTRA_REDIS_URL (environment)".into(),
                    line: 1,
                    col: 1,
                    message,
                }])
            })?;
            cfg.redis.url = url;
            cfg.redis.mode = mode;
            if mode == RedisMode::Cluster && cfg.redis.min_replicas_ack > 0 {
                return Err(ConfigError::Invalid(vec![Diagnostic {
                    file: "ASTRA_REDIS_URL (environment)".into(),
                    line: 1,
                    col: 1,
                    message: "redis.min_replicas_ack is not supported with redis-cluster:// (set it to 0)".into(),
                }]));
            }
        }
        if let Some(f) = env("ASTRA_REDIS_PASSWORD_FILE").filter(|s| !s.is_empty()) {
            cfg.redis.password_file = Some(dir.join(f));
        }
        if let Some(f) = env("ASTRA_REDIS_CA_FILE").filter(|s| !s.is_empty()) {
            cfg.redis.tls_ca_file = Some(dir.join(f));
        }
        if let Some(i) = env("ASTRA_INSTANCE").filter(|s| !s.is_empty()) {
            cfg.daemon.instance = i;
        }
        let env_diag = |var: &str, message: String| {
            ConfigError::Invalid(vec![Diagnostic {
                file: var.into(),
                line: 1,
                col: 1,
                message,
            }])
        };
        if let Some(l) = env("ASTRA_HTTP_LISTEN").filter(|s| !s.is_empty()) {
            cfg.edge.listen = l.parse().map_err(|e| {
                env_diag("ASTRA_HTTP_LISTEN", format!("{l:?} is not host:port ({e})"))
            })?;
        }
        if let Some(a) = env("ASTRA_EDGE_AUTH").filter(|s| !s.is_empty()) {
            cfg.edge.auth = match a.as_str() {
                "off" => AuthMode::Off,
                "keys" => AuthMode::Keys,
                _ => {
                    return Err(env_diag(
                        "ASTRA_EDGE_AUTH",
                        format!("must be \"off\" or \"keys\", got {a:?}"),
                    ));
                }
            };
            cfg.edge.auth_origin = ("ASTRA_EDGE_AUTH".into(), 1, 1);
        }
        if let Some(o) = env("ASTRA_EDGE_OPS").filter(|s| !s.is_empty()) {
            cfg.edge.ops = match o.as_str() {
                "open" => Some(false),
                "keys" => Some(true),
                _ => {
                    return Err(env_diag(
                        "ASTRA_EDGE_OPS",
                        format!("must be \"open\" or \"keys\", got {o:?}"),
                    ));
                }
            };
        }
        if let Some(f) = env("ASTRA_EDGE_KEYS_FILE").filter(|s| !s.is_empty()) {
            cfg.edge.keys_file = Some(PathBuf::from(f));
        }
        if let Some(f) = cfg.edge.keys_file.clone() {
            let path = dir.join(&f);
            let text = read(&path)?;
            let mut v = Validator {
                diags: vec![],
                known: vec![],
            };
            let keys = v.keys_file(&path.display().to_string(), &text, &cfg.streams);
            if !v.diags.is_empty() {
                return Err(ConfigError::Invalid(v.diags));
            }
            for k in keys {
                if cfg
                    .edge
                    .keys
                    .iter()
                    .any(|o| o.name == k.name || o.sha256 == k.sha256)
                {
                    return Err(env_diag(
                        &path.display().to_string(),
                        format!(
                            "edge key {:?} is also configured inline (same name or sha256)",
                            k.name
                        ),
                    ));
                }
                cfg.edge.keys.push(k);
            }
        }
        if let Some(d) = cfg.edge.exposure_problem() {
            return Err(ConfigError::Invalid(vec![d]));
        }
        if cfg.edge.auth == AuthMode::Keys && cfg.edge.keys.is_empty() {
            let (file, line, col) = cfg.edge.auth_origin.clone();
            return Err(ConfigError::Invalid(vec![Diagnostic {
                file,
                line,
                col,
                message: "edge.auth = \"keys\" but no keys are configured: add [[edge.key]] \
                          entries or an edge.keys_file (`astra-bus key new` prints one)"
                    .into(),
            }]));
        }
        Ok(cfg)
    }

    /// Validates already-read sources: the first is `streams.toml`, the rest are group
    /// files named `consumer-groups/<domain>.toml`.
    pub fn from_sources(dir: &Path, sources: &[(String, String)]) -> Result<Config, ConfigError> {
        Self::from_sources_for(dir, sources, &crate::handlers::Registry::builtin())
    }

    fn from_sources_for(
        dir: &Path,
        sources: &[(String, String)],
        registry: &crate::handlers::Registry,
    ) -> Result<Config, ConfigError> {
        let mut v = Validator {
            diags: vec![],
            known: registry.names(),
        };
        let (sfile, stext) = &sources[0];
        let raw_streams: Option<RawStreamsFile> = v.parse(sfile, stext);
        let mut raw_groups = vec![];
        for (file, text) in &sources[1..] {
            if let Some(g) = v.parse::<RawGroupsFile>(file, text) {
                raw_groups.push((file.clone(), text.clone(), g));
            }
        }
        let Some(raw_streams) = raw_streams else {
            return Err(ConfigError::Invalid(v.diags));
        };
        let cfg = v.build(dir, sfile, stext, raw_streams, raw_groups);
        if v.diags.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid(v.diags))
        }
    }

    /// Looks a stream up by name.
    pub fn stream(&self, name: &str) -> Option<&StreamConfig> {
        self.streams.iter().find(|s| s.name == name)
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

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses `astra.<domain>.<event>.v<n>`; returns (domain, event, n).
pub fn parse_stream_name(name: &str) -> Option<(String, String, u32)> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() != 4 || parts[0] != "astra" {
        return None;
    }
    let seg_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    if !seg_ok(parts[1]) || !seg_ok(parts[2]) {
        return None;
    }
    let v = parts[3].strip_prefix('v')?;
    if v.is_empty() || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u32 = v.parse().ok()?;
    Some((parts[1].to_string(), parts[2].to_string(), n))
}

/// Converts a byte offset into 1-based (line, column); columns count characters.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before, |i| &before[i + 1..])
        .chars()
        .count()
        + 1;
    (line, col)
}

struct Validator {
    diags: Vec<Diagnostic>,
    /// Handler names that exist.
    known: Vec<&'static str>,
}

/// Handler settings resolved for one group.
struct Settings {
    batch_size: usize,
    block: Duration,
    concurrency: usize,
    claim_idle: Duration,
    max_deliveries: u32,
    dead_letter_stream: String,
    dead_letter_span: Option<Range<usize>>,
    start_id: StartId,
}

impl Validator {
    fn at(&mut self, file: &str, text: &str, span: Range<usize>, message: String) {
        let (line, col) = line_col(text, span.start);
        self.diags.push(Diagnostic {
            file: file.to_string(),
            line,
            col,
            message,
        });
    }

    fn parse<T: serde::de::DeserializeOwned>(&mut self, file: &str, text: &str) -> Option<T> {
        match toml::from_str::<T>(text) {
            Ok(v) => Some(v),
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let msg = e.message().trim().replace('\n', " ");
                self.at(file, text, span, msg);
                None
            }
        }
    }

    fn int(
        &mut self,
        file: &str,
        text: &str,
        what: &str,
        v: &Option<Spanned<i64>>,
        range: Range<i64>,
    ) -> Option<i64> {
        let s = v.as_ref()?;
        let n = *s.get_ref();
        if !range.contains(&n) {
            self.at(
                file,
                text,
                s.span(),
                format!(
                    "{what} must be between {} and {}, got {n}",
                    range.start,
                    range.end - 1
                ),
            );
            return None;
        }
        Some(n)
    }

    fn dur(
        &mut self,
        file: &str,
        text: &str,
        what: &str,
        v: &Option<Spanned<String>>,
        min: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let s = v.as_ref()?;
        match humantime::parse_duration(s.get_ref()) {
            Ok(d) if d >= min && d <= max => Some(d),
            Ok(_) => {
                self.at(
                    file,
                    text,
                    s.span(),
                    format!(
                        "{what} must be between {} and {}, got {:?}",
                        humantime::format_duration(min),
                        humantime::format_duration(max),
                        s.get_ref()
                    ),
                );
                None
            }
            Err(e) => {
                self.at(
                    file,
                    text,
                    s.span(),
                    format!(
                        "{what}: {:?} is not a duration ({e}); write e.g. \"500ms\", \"30s\", \"7d\"",
                        s.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn settings(
        &mut self,
        file: &str,
        text: &str,
        prefix: &str,
        raw: &RawGroupSettings,
        base: Option<&Settings>,
    ) -> Settings {
        let d = Settings {
            batch_size: 100,
            block: Duration::from_secs(2),
            concurrency: 256,
            claim_idle: Duration::from_secs(30),
            max_deliveries: 5,
            dead_letter_stream: "astra.bus.dead_letter.v1".into(),
            dead_letter_span: None,
            start_id: StartId::Beginning,
        };
        let base = base.unwrap_or(&d);
        let ms = Duration::from_millis;
        let batch_size = self
            .int(
                file,
                text,
                &format!("{prefix}batch_size"),
                &raw.batch_size,
                1..10_001,
            )
            .map_or(base.batch_size, |n| n as usize);
        let block = self
            .dur(
                file,
                text,
                &format!("{prefix}block"),
                &raw.block,
                ms(1),
                ms(300_000),
            )
            .unwrap_or(base.block);
        let concurrency = self
            .int(
                file,
                text,
                &format!("{prefix}concurrency"),
                &raw.concurrency,
                1..100_001,
            )
            .map_or(base.concurrency, |n| n as usize);
        let claim_idle = self
            .dur(
                file,
                text,
                &format!("{prefix}claim_idle"),
                &raw.claim_idle,
                ms(10),
                Duration::from_secs(86_400),
            )
            .unwrap_or(base.claim_idle);
        let max_deliveries = self
            .int(
                file,
                text,
                &format!("{prefix}max_deliveries"),
                &raw.max_deliveries,
                1..1001,
            )
            .map_or(base.max_deliveries, |n| n as u32);
        let (dead_letter_stream, dead_letter_span) = match &raw.dead_letter_stream {
            Some(s) => (s.get_ref().clone(), Some(s.span())),
            None => (
                base.dead_letter_stream.clone(),
                base.dead_letter_span.clone(),
            ),
        };
        let start_id = match &raw.start_id {
            None => base.start_id,
            Some(s) => match s.get_ref().as_str() {
                "0" => StartId::Beginning,
                "$" => StartId::End,
                other => {
                    self.at(
                        file,
                        text,
                        s.span(),
                        format!("{prefix}start_id must be \"0\" (whole history) or \"$\" (new entries only), got {other:?}"),
                    );
                    base.start_id
                }
            },
        };
        Settings {
            batch_size,
            block,
            concurrency,
            claim_idle,
            max_deliveries,
            dead_letter_stream,
            dead_letter_span,
            start_id,
        }
    }

    fn build(
        &mut self,
        dir: &Path,
        sfile: &str,
        stext: &str,
        raw: RawStreamsFile,
        raw_groups: Vec<(String, String, RawGroupsFile)>,
    ) -> Config {
        let ms = Duration::from_millis;
        let day = Duration::from_secs(86_400);
        // Connection.
        let url = raw.redis.url.get_ref().clone();
        let mode = match parse_redis_url(&url) {
            Ok((mode, _)) => mode,
            Err(message) => {
                self.at(sfile, stext, raw.redis.url.span(), message);
                RedisMode::Single
            }
        };
        let min_replicas_ack = self
            .int(
                sfile,
                stext,
                "redis.min_replicas_ack",
                &raw.redis.min_replicas_ack,
                0..17,
            )
            .unwrap_or(0) as u32;
        if min_replicas_ack > 0
            && mode == RedisMode::Cluster
            && let Some(v) = &raw.redis.min_replicas_ack
        {
            self.at(
                sfile,
                stext,
                v.span(),
                "redis.min_replicas_ack is not supported with redis-cluster:// (set it to 0)"
                    .into(),
            );
        }
        let replica_ack_timeout = self
            .dur(
                sfile,
                stext,
                "redis.replica_ack_timeout",
                &raw.redis.replica_ack_timeout,
                ms(1),
                ms(60_000),
            )
            .unwrap_or(Duration::from_secs(1));
        let command_timeout = self
            .dur(
                sfile,
                stext,
                "redis.command_timeout",
                &raw.redis.command_timeout,
                ms(10),
                ms(600_000),
            )
            .unwrap_or(Duration::from_secs(10));

        // Defaults, retention, daemon.
        let defaults = self.settings(sfile, stext, "defaults.", &raw.defaults, None);
        let interval = self
            .dur(
                sfile,
                stext,
                "retention.interval",
                &raw.retention.interval,
                ms(100),
                day,
            )
            .unwrap_or(Duration::from_secs(30));
        let default_max_len = self
            .int(
                sfile,
                stext,
                "retention.max_len",
                &raw.retention.max_len,
                1..10_000_000_001,
            )
            .map(|n| n as u64);
        let default_max_age = self.dur(
            sfile,
            stext,
            "retention.max_age",
            &raw.retention.max_age,
            Duration::from_secs(1),
            day * 3650,
        );
        let instance = match &raw.daemon.instance {
            Some(s) => {
                let v = s.get_ref();
                if v.is_empty() || v.contains(char::is_whitespace) {
                    self.at(
                        sfile,
                        stext,
                        s.span(),
                        format!(
                            "daemon.instance must be a non-empty name without spaces, got {v:?}"
                        ),
                    );
                }
                v.clone()
            }
            None => default_instance(),
        };
        let daemon = DaemonConfig {
            instance,
            shutdown_deadline: self
                .dur(
                    sfile,
                    stext,
                    "daemon.shutdown_deadline",
                    &raw.daemon.shutdown_deadline,
                    ms(100),
                    Duration::from_secs(3600),
                )
                .unwrap_or(Duration::from_secs(10)),
            consumer_idle_limit: self
                .dur(
                    sfile,
                    stext,
                    "daemon.consumer_idle_limit",
                    &raw.daemon.consumer_idle_limit,
                    Duration::from_secs(1),
                    day * 365,
                )
                .unwrap_or(Duration::from_secs(3600)),
            dedup_ttl: self
                .dur(
                    sfile,
                    stext,
                    "daemon.dedup_ttl",
                    &raw.daemon.dedup_ttl,
                    Duration::from_secs(1),
                    day * 365,
                )
                .unwrap_or(day),
        };

        let metrics = MetricsConfig {
            refresh_interval: self
                .dur(
                    sfile,
                    stext,
                    "metrics.refresh_interval",
                    &raw.metrics.refresh_interval,
                    ms(100),
                    Duration::from_secs(3600),
                )
                .unwrap_or(Duration::from_secs(5)),
        };

        // Streams.
        let mut streams: Vec<StreamConfig> = vec![];
        let mut seen: HashMap<String, usize> = HashMap::new();
        for s in &raw.stream {
            let name = s.name.get_ref();
            let Some((domain, event, version)) = parse_stream_name(name) else {
                self.at(
                    sfile,
                    stext,
                    s.name.span(),
                    format!(
                        "stream.name {name:?} does not match astra.<domain>.<event>.v<n> (lower-case [a-z0-9_] segments, n >= 1)"
                    ),
                );
                continue;
            };
            if let Some(first) = seen.get(name) {
                let (line, _) = line_col(stext, *first);
                self.at(
                    sfile,
                    stext,
                    s.name.span(),
                    format!("stream.name: duplicate stream {name} (first declared on line {line})"),
                );
                continue;
            }
            seen.insert(name.clone(), s.name.span().start);
            if s.description.get_ref().trim().is_empty() {
                self.at(
                    sfile,
                    stext,
                    s.description.span(),
                    format!("stream {name}: description must not be empty"),
                );
            }
            let max_len = self
                .int(
                    sfile,
                    stext,
                    &format!("stream {name}: max_len"),
                    &s.max_len,
                    1..10_000_000_001,
                )
                .map(|n| n as u64)
                .or(default_max_len);
            let max_age = self
                .dur(
                    sfile,
                    stext,
                    &format!("stream {name}: max_age"),
                    &s.max_age,
                    Duration::from_secs(1),
                    day * 3650,
                )
                .or(default_max_age);
            streams.push(StreamConfig {
                name: name.clone(),
                domain,
                event,
                version,
                description: s.description.get_ref().clone(),
                external: s.external,
                max_len,
                max_age,
            });
        }
        let declared: BTreeSet<&str> = streams.iter().map(|s| s.name.as_str()).collect();
        if let Some(span) = &defaults.dead_letter_span
            && !declared.contains(defaults.dead_letter_stream.as_str())
        {
            self.at(
                sfile,
                stext,
                span.clone(),
                format!(
                    "defaults.dead_letter_stream: undeclared stream {}",
                    defaults.dead_letter_stream
                ),
            );
        }

        // Groups.
        let mut groups = vec![];
        let mut group_seen: HashMap<String, String> = HashMap::new();
        for (file, text, gf) in &raw_groups {
            let domain = file
                .rsplit('/')
                .next()
                .unwrap_or(file)
                .trim_end_matches(".toml")
                .to_string();
            for g in &gf.group {
                let name = g.name.get_ref().clone();
                let gspan = g.name.span();
                match name.split_once('.') {
                    Some((d, rest))
                        if d == domain
                            && !rest.is_empty()
                            && rest
                                .bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') => {}
                    _ => self.at(
                        file,
                        text,
                        gspan.clone(),
                        format!(
                            "group.name {name:?} must be {domain}.<name> (the file's domain, then lower-case [a-z0-9_])"
                        ),
                    ),
                }
                if let Some(first) = group_seen.get(&name) {
                    self.at(
                        file,
                        text,
                        gspan.clone(),
                        format!("group.name: duplicate group {name} (first declared in {first})"),
                    );
                    continue;
                }
                let (l, c) = line_col(text, gspan.start);
                group_seen.insert(name.clone(), format!("{file}:{l}:{c}"));
                let handler = g.handler.get_ref().clone();
                if !self.known.contains(&handler.as_str()) {
                    self.at(
                        file,
                        text,
                        g.handler.span(),
                        format!(
                            "group {name}: unknown handler {handler:?} (known: {})",
                            self.known.join(", ")
                        ),
                    );
                }
                if g.reads.get_ref().is_empty() {
                    self.at(
                        file,
                        text,
                        g.reads.span(),
                        format!("group {name}: reads must name at least one stream"),
                    );
                }
                let mut reads = vec![];
                for s in g.reads.get_ref() {
                    if !declared.contains(s.get_ref().as_str()) {
                        self.at(
                            file,
                            text,
                            s.span(),
                            format!("group {name} reads undeclared stream {}", s.get_ref()),
                        );
                    } else if reads.contains(s.get_ref()) {
                        self.at(
                            file,
                            text,
                            s.span(),
                            format!("group {name} reads stream {} twice", s.get_ref()),
                        );
                    } else {
                        reads.push(s.get_ref().clone());
                    }
                }
                let mut publishes = vec![];
                for s in &g.publishes {
                    if !declared.contains(s.get_ref().as_str()) {
                        self.at(
                            file,
                            text,
                            s.span(),
                            format!("group {name} publishes undeclared stream {}", s.get_ref()),
                        );
                    } else if !publishes.contains(s.get_ref()) {
                        publishes.push(s.get_ref().clone());
                    }
                }
                // Spans do not survive serde(flatten), so the overrides are listed in RawGroup
                // and gathered here.
                let overrides = RawGroupSettings {
                    batch_size: g.batch_size.clone(),
                    block: g.block.clone(),
                    concurrency: g.concurrency.clone(),
                    claim_idle: g.claim_idle.clone(),
                    max_deliveries: g.max_deliveries.clone(),
                    dead_letter_stream: g.dead_letter_stream.clone(),
                    start_id: g.start_id.clone(),
                };
                let st = self.settings(file, text, "", &overrides, Some(&defaults));
                if let Some(span) = &g.dead_letter_stream.as_ref().map(|s| s.span())
                    && !declared.contains(st.dead_letter_stream.as_str())
                {
                    self.at(
                        file,
                        text,
                        span.clone(),
                        format!(
                            "group {name} dead_letter_stream: undeclared stream {}",
                            st.dead_letter_stream
                        ),
                    );
                }
                if reads.contains(&st.dead_letter_stream) {
                    self.at(
                        file,
                        text,
                        g.reads.span(),
                        format!(
                            "group {name} reads its own dead-letter stream {}",
                            st.dead_letter_stream
                        ),
                    );
                }
                let (options, options_origin) = match &g.options {
                    Some(o) => {
                        let (l, c) = line_col(text, o.span().start);
                        (o.get_ref().clone(), format!("{file}:{l}:{c}"))
                    }
                    None => (
                        toml::Table::new(),
                        format!("{file}:{}:{}", line_col(text, gspan.start).0, 1),
                    ),
                };
                groups.push(GroupConfig {
                    name: name.clone(),
                    domain: domain.clone(),
                    handler,
                    description: g.description.clone().unwrap_or_default(),
                    reads,
                    publishes,
                    batch_size: st.batch_size,
                    block: st.block,
                    concurrency: st.concurrency.max(st.batch_size),
                    claim_idle: st.claim_idle,
                    max_deliveries: st.max_deliveries,
                    dead_letter_stream: st.dead_letter_stream,
                    start_id: st.start_id,
                    options,
                    options_origin,
                });
            }
        }
        let domains: Vec<String> = streams
            .iter()
            .map(|s| s.domain.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let edge = self.edge(sfile, stext, &raw.edge, &streams, &domains);
        Config {
            dir: dir.to_path_buf(),
            redis: RedisConfig {
                url,
                mode,
                command_timeout,
                // `dir.join` keeps an absolute path as it is.
                password_file: raw.redis.password_file.map(|f| dir.join(f)),
                tls_ca_file: raw.redis.tls_ca_file.map(|f| dir.join(f)),
                min_replicas_ack,
                replica_ack_timeout,
            },
            retention: RetentionConfig { interval },
            daemon,
            edge,
            metrics,
            streams,
            groups,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names() {
        assert_eq!(
            parse_stream_name("astra.trading.trade_executed.v1"),
            Some(("trading".into(), "trade_executed".into(), 1))
        );
        assert!(parse_stream_name("astra.trading.trade_executed.v12").is_some());
        for bad in [
            "astra.Trading.trade.v1",
            "astra.trading.trade.v0",
            "astra.trading.trade.v01",
            "astra.trading.trade",
            "astra.trading.trade.1",
            "bus.trading.trade.v1",
            "astra..trade.v1",
            "astra.trading.trade-x.v1",
            "astra.a.b.c.v1",
        ] {
            assert_eq!(parse_stream_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn line_col_counts_from_one() {
        let t = "a = 1\nbb = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, 9), (2, 4));
    }
}
