//! The one place that talks to the Redis client library. Everything else in the crate goes
//! through [`Redis`], so the client could be swapped without touching the engine, and the
//! client's pitfalls (retries after reconnect, blocking reads stalling a shared connection)
//! are handled once, here.

use std::time::Duration;

use fred::prelude::{
    ClientLike, Config as FredConfig, ConnectionConfig, EventInterface, PerformanceConfig,
    ReconnectPolicy, TcpConfig,
};
use fred::types::{ClusterHash, CustomCommand};

pub use fred::types::Value;

/// A Redis error, classified so callers can decide what happens next.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The consumer group (or its stream) does not exist: re-declare it.
    #[error("NOGROUP: {0}")]
    NoGroup(String),
    /// Redis refused a write because it is at `maxmemory` with `noeviction`.
    #[error("redis is out of memory: {0}")]
    OutOfMemory(String),
    /// Connection-level trouble: retry later.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Any other error reply from Redis.
    #[error("redis error: {0}")]
    Command(String),
    /// The reply did not have the shape we expected.
    #[error("unexpected reply to {what}: {detail}")]
    Protocol { what: &'static str, detail: String },
    /// A publish reached the primary but fewer replicas than `redis.min_replicas_ack`
    /// confirmed it within `redis.replica_ack_timeout` (WAIT): it could be lost in a
    /// failover. The event may still be delivered (it is in the stream): retry with the
    /// same event id, consumers de-duplicate it.
    #[error("only {acked} of {wanted} replicas acknowledged the write within {timeout_ms} ms")]
    NotReplicated {
        wanted: u32,
        acked: i64,
        timeout_ms: u64,
    },
    /// The connection settings cannot work (unreadable password or CA file, a CA for a
    /// non-TLS URL): retrying will not help.
    #[error("redis connection settings: {0}")]
    Settings(String),
    /// The function library this binary needs is not loaded and this user may not load
    /// it (the message names the library and the admin step).
    #[error("{0}")]
    Functions(String),
}

impl BusError {
    /// True when retrying later can succeed (connection trouble, OOM, timeouts).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BusError::Unavailable(_) | BusError::OutOfMemory(_) | BusError::NotReplicated { .. }
        )
    }

    pub(crate) fn protocol(what: &'static str, detail: impl Into<String>) -> Self {
        BusError::Protocol {
            what,
            detail: detail.into(),
        }
    }
}

impl From<fred::error::Error> for BusError {
    fn from(e: fred::error::Error) -> Self {
        use fred::error::ErrorKind as K;
        let details = e.details().to_string();
        if details.starts_with("NOGROUP") || details.contains("NOGROUP") {
            return BusError::NoGroup(details);
        }
        if details.starts_with("OOM") {
            return BusError::OutOfMemory(details);
        }
        match e.kind() {
            // Routing: no connection to send the command on (Redis down, fail-fast).
            K::IO | K::Timeout | K::Canceled | K::Backpressure | K::Cluster | K::Routing => {
                BusError::Unavailable(format!("{:?}: {details}", e.kind()))
            }
            // No connection to send it on (fred reports this one as Unknown).
            _ if details.starts_with("Failed to route command")
                || details.starts_with("LOADING")
                // "BUSY " (a script is running), not BUSYGROUP (group exists).
                || details.starts_with("BUSY ")
                || details.starts_with("TRYAGAIN")
                || details.starts_with("CLUSTERDOWN")
                || details.starts_with("MASTERDOWN")
                || details.starts_with("READONLY") =>
            {
                BusError::Unavailable(details)
            }
            _ => BusError::Command(details),
        }
    }
}

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}://{masked}{}", &rest[at..])
        }
        None => url.to_string(),
    }
}

/// The password in `path`, without its trailing newline (files written by `echo` have one).
fn read_password(path: &std::path::Path) -> Result<String, BusError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        BusError::Settings(format!(
            "redis.password_file {}: cannot read: {e}",
            path.display()
        ))
    })?;
    let pw = text.trim_end_matches(['\n', '\r']);
    if pw.is_empty() {
        return Err(BusError::Settings(format!(
            "redis.password_file {}: the file is empty",
            path.display()
        )));
    }
    Ok(pw.to_string())
}

/// A rustls client configuration that trusts exactly the CA certificates in `path` (PEM).
fn tls_trusting(path: &std::path::Path) -> Result<fred::rustls::ClientConfig, BusError> {
    use fred::rustls::pki_types::CertificateDer;
    use fred::rustls::pki_types::pem::PemObject as _;
    let bad =
        |what: String| BusError::Settings(format!("redis.tls_ca_file {}: {what}", path.display()));
    let mut roots = fred::rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(format!("{e}")))?;
    for cert in certs {
        let cert = cert.map_err(|e| bad(format!("{e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok(fred::rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The client configuration for `url` (cluster and sentinel URLs rewritten for the client).
fn fred_config(url: &str) -> Result<FredConfig, BusError> {
    let (_, client_url) = crate::config::parse_redis_url(url).map_err(BusError::Command)?;
    FredConfig::from_url(&client_url)
        .map_err(|e| BusError::Command(format!("invalid redis url {}: {e}", redact_url(url))))
}

/// A connection (or auto-pipelined set of connections) to Redis: one server, a Redis
/// Cluster (one connection per master, commands routed by hash slot) or the primary that
/// Sentinels name (followed across failovers).
#[derive(Clone)]
pub struct Redis {
    client: fred::clients::Client,
    url: String,
    timeout: Duration,
    /// Per-command options of a fail-fast handle (see [`Redis::fail_fast`]).
    fast: Option<fred::types::config::Options>,
    cluster: bool,
    /// `redis.min_replicas_ack` and its timeout, when publishes must be replicated.
    replica_ack: Option<(u32, Duration)>,
    /// Connections that publish when `replica_ack` is set: WAIT blocks the connection it
    /// runs on, so it never runs on the shared one (opened on first use).
    publishers: std::sync::Arc<tokio::sync::OnceCell<Vec<Redis>>>,
    next_publisher: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Publisher connections used when publishes wait for replicas.
const PUBLISHERS: usize = 4;

/// The Redis Cluster hash slot of a key (CRC16 of the key or of its `{hash tag}`).
pub fn keyslot(key: &[u8]) -> u16 {
    fred::util::redis_keyslot(key)
}

/// Where in `args` the key of command `name` is, for routing in a cluster (a wrong guess
/// still works, through a MOVED redirect, but costs a round trip).
fn cluster_hash(name: &str, args: &[Value]) -> ClusterHash {
    match name {
        "FCALL" | "FCALL_RO" | "EVALSHA" | "EVAL" => match args.get(1).and_then(as_int) {
            Some(n) if n > 0 => ClusterHash::Offset(2),
            _ => ClusterHash::Random,
        },
        "XINFO" | "XGROUP" => ClusterHash::Offset(1),
        "XREADGROUP" | "XREAD" => args
            .iter()
            .position(|a| as_string(a).is_some_and(|s| s.eq_ignore_ascii_case("STREAMS")))
            .map_or(ClusterHash::FirstKey, |i| ClusterHash::Offset(i + 1)),
        "SCRIPT" | "FUNCTION" | "PING" | "INFO" | "CLIENT" | "WAIT" | "CONFIG" | "TIME" => {
            ClusterHash::Random
        }
        _ => ClusterHash::Offset(0),
    }
}

impl Redis {
    /// Builds a client for `url` and connects it, failing if Redis does not answer within
    /// `timeout`. The client reconnects on its own afterwards (exponential backoff, forever);
    /// commands get at most two attempts so a write is repeated at most once after a
    /// reconnect, which the consumers' de-duplication by event id absorbs.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Redis, BusError> {
        Self::connect_fred(fred_config(url)?, url, timeout).await
    }

    async fn connect_fred(
        config: FredConfig,
        url: &str,
        timeout: Duration,
    ) -> Result<Redis, BusError> {
        let cluster = config.server.is_clustered();
        let client = fred::types::Builder::from_config(config)
            .with_connection_config(|c: &mut ConnectionConfig| {
                c.connection_timeout = timeout;
                c.internal_command_timeout = timeout;
                c.max_command_attempts = 2;
                c.tcp = TcpConfig {
                    nodelay: Some(true),
                    ..Default::default()
                };
            })
            .with_performance_config(|p: &mut PerformanceConfig| {
                // Concurrent commands on one client are auto-pipelined (fred's default).
                p.default_command_timeout = timeout;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
            .build()
            .map_err(BusError::from)?;
        let redis = Redis {
            client,
            url: url.to_string(),
            timeout,
            fast: None,
            cluster,
            replica_ack: None,
            publishers: Default::default(),
            next_publisher: Default::default(),
        };
        redis.client.init().await.map_err(BusError::from)?;
        Ok(redis)
    }

    /// A new, independent connection with the same settings. Every blocking reader gets its
    /// own: a blocked XREADGROUP would otherwise stall every command queued behind it.
    pub async fn dedicated(&self) -> Result<Redis, BusError> {
        let client = self.client.clone_new();
        client.init().await.map_err(BusError::from)?;
        Ok(Redis {
            client,
            url: self.url.clone(),
            timeout: self.timeout,
            fast: self.fast.clone(),
            cluster: self.cluster,
            replica_ack: self.replica_ack,
            publishers: self.publishers.clone(),
            next_publisher: self.next_publisher.clone(),
        })
    }

    /// [`Redis::connect`] with every `[redis]` setting applied: URL, timeout, the password
    /// read from `password_file` (at each call, so a rotated secret is picked up on
    /// reload), for `rediss://` the CAs of `tls_ca_file` trusted instead of the system's,
    /// and `min_replicas_ack` for publishes.
    pub async fn connect_config(cfg: &crate::config::RedisConfig) -> Result<Redis, BusError> {
        let mut config = fred_config(&cfg.url)?;
        if let Some(path) = &cfg.password_file {
            config.password = Some(read_password(path)?);
        }
        if let Some(path) = &cfg.tls_ca_file {
            if config.tls.is_none() {
                return Err(BusError::Settings(format!(
                    "redis.tls_ca_file {} is set but redis.url is not rediss://",
                    path.display()
                )));
            }
            config.tls = Some(tls_trusting(path)?.into());
        }
        let redis = Self::connect_fred(config, &cfg.url, cfg.command_timeout).await?;
        Ok(redis.with_replica_ack(cfg.min_replicas_ack, cfg.replica_ack_timeout))
    }

    /// Makes every publish through this client wait until `n` replicas acknowledged it
    /// (WAIT `n` `timeout`) and fail with [`BusError::NotReplicated`] otherwise; 0 = off.
    pub fn with_replica_ack(mut self, n: u32, timeout: Duration) -> Redis {
        self.replica_ack = (n > 0).then_some((n, timeout));
        self
    }

    /// `(min_replicas_ack, timeout)` when publishes wait for replicas.
    pub fn replica_ack(&self) -> Option<(u32, Duration)> {
        self.replica_ack
    }

    /// One of the publisher connections (round robin), opened on first use.
    pub(crate) async fn publisher(&self) -> Result<Redis, BusError> {
        let pool = self
            .publishers
            .get_or_try_init(|| async {
                let mut pool = Vec::with_capacity(PUBLISHERS);
                for _ in 0..PUBLISHERS {
                    pool.push(self.dedicated().await?);
                }
                Ok::<_, BusError>(pool)
            })
            .await?;
        let i = self
            .next_publisher
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(pool[i % pool.len()].clone())
    }

    /// `WAIT n timeout` on this connection: how many replicas acknowledged every write
    /// this connection sent so far. Blocks the connection meanwhile.
    pub(crate) async fn wait_replicas(&self, n: u32, timeout: Duration) -> Result<i64, BusError> {
        let cmd = CustomCommand::new_static("WAIT", ClusterHash::Random, false);
        let opts = fred::types::config::Options {
            timeout: Some(timeout + self.timeout),
            ..Default::default()
        };
        use fred::interfaces::ClientLike as _;
        let v = self
            .client
            .with_options(&opts)
            .custom::<Value, Value>(cmd, vec![arg(n as i64), arg(timeout.as_millis() as i64)])
            .await
            .map_err(BusError::from)?;
        as_int(&v).ok_or_else(|| BusError::protocol("WAIT", format!("{v:?}")))
    }

    /// True when connected to a Redis Cluster: no command, script or transaction may then
    /// carry keys of two hash slots.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The URL this client was built from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Closes the connection.
    pub async fn quit(&self) {
        let _ = self.client.quit().await;
    }

    /// Calls `f` each time the client reconnects (metrics, logs).
    pub fn on_reconnect(&self, f: impl Fn() + Send + 'static) {
        // The listener task lives as long as the client; its handle is not needed.
        drop(self.client.on_reconnect(move |_| {
            f();
            async { Ok(()) }
        }));
    }

    /// The same connection, but every command fails at once while it is down, is sent at
    /// most once (never repeated after a reconnect) and gives up after `timeout`. For
    /// request/response paths (the HTTP edge) that must answer 503 rather than wait, and
    /// must not store an event after having answered that it was not stored.
    pub fn fail_fast(&self, timeout: Duration) -> Redis {
        Redis {
            fast: Some(fred::types::config::Options {
                fail_fast: true,
                // In a cluster a command may need a second attempt to follow a slot move
                // (MOVED/ASK); one attempt fails those outright.
                max_attempts: Some(if self.cluster { 2 } else { 1 }),
                timeout: Some(timeout),
                ..Default::default()
            }),
            ..self.clone()
        }
    }

    /// Sends one command with arbitrary arguments and returns the raw reply.
    pub async fn cmd(&self, name: &'static str, args: Vec<Value>) -> Result<Value, BusError> {
        let cmd = CustomCommand::new_static(name, cluster_hash(name, &args), false);
        if let Some(opts) = &self.fast {
            return self
                .client
                .with_options(opts)
                .custom::<Value, Value>(cmd, args)
                .await
                .map_err(BusError::from);
        }
        self.client
            .custom::<Value, Value>(cmd, args)
            .await
            .map_err(BusError::from)
    }

    /// Sends `name args` to every master (the one server outside a cluster) and returns each
    /// node's reply, e.g. FUNCTION LOAD, which a cluster does not propagate between masters.
    pub(crate) async fn on_every_primary(
        &self,
        name: &'static str,
        args: Vec<Value>,
    ) -> Result<Vec<(String, Result<Value, BusError>)>, BusError> {
        if !self.cluster {
            let node = redact_url(&self.url);
            return Ok(vec![(node, self.cmd(name, args).await)]);
        }
        use fred::interfaces::ClusterInterface as _;
        let nodes = match self.client.cached_cluster_state() {
            Some(state) => state.unique_primary_nodes(),
            None => {
                return Err(BusError::Unavailable(
                    "the cluster's slot map is not known yet".into(),
                ));
            }
        };
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            let cmd = CustomCommand::new_static(name, ClusterHash::Random, false);
            let r = self
                .client
                .with_cluster_node(node.clone())
                .custom::<Value, Value>(cmd, args.clone())
                .await
                .map_err(BusError::from);
            out.push((node.to_string(), r));
        }
        Ok(out)
    }

    /// Sends a blocking command (XREADGROUP … BLOCK); the caller owns this connection.
    pub async fn blocking_cmd(
        &self,
        name: &'static str,
        key_offset: usize,
        args: Vec<Value>,
    ) -> Result<Value, BusError> {
        let cmd = CustomCommand::new_static(name, ClusterHash::Offset(key_offset), true);
        // A blocked read must not be cut short by the default command timeout.
        let opts = fred::types::config::Options {
            timeout: Some(Duration::from_secs(3600)),
            ..Default::default()
        };
        use fred::interfaces::ClientLike as _;
        self.client
            .with_options(&opts)
            .custom::<Value, Value>(cmd, args)
            .await
            .map_err(BusError::from)
    }

    /// Sends several commands in one round trip and returns every reply (errors included,
    /// per command) in order.
    pub async fn pipeline(
        &self,
        cmds: Vec<(&'static str, Vec<Value>)>,
    ) -> Result<Vec<Result<Value, BusError>>, BusError> {
        match &self.fast {
            Some(opts) => {
                run_pipeline(
                    fred::clients::Pipeline::from(self.client.with_options(opts)),
                    cmds,
                )
                .await
            }
            None => run_pipeline(self.client.pipeline(), cmds).await,
        }
    }
}

async fn run_pipeline<C: ClientLike>(
    pipe: fred::clients::Pipeline<C>,
    cmds: Vec<(&'static str, Vec<Value>)>,
) -> Result<Vec<Result<Value, BusError>>, BusError> {
    for (name, args) in cmds {
        let cmd = CustomCommand::new_static(name, cluster_hash(name, &args), false);
        let _: () = pipe.custom(cmd, args).await.map_err(BusError::from)?;
    }
    let replies = pipe.try_all::<Value>().await;
    Ok(replies
        .into_iter()
        .map(|r| r.map_err(BusError::from))
        .collect())
}

/// Converts anything string-like or numeric into a command argument.
pub fn arg(v: impl Into<Value>) -> Value {
    v.into()
}

/// Reads a reply as text (bulk or simple string); `None` for nil.
pub fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_string()),
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Integer(i) => Some(i.to_string()),
        Value::Double(d) => Some(d.to_string()),
        _ => None,
    }
}

/// Reads a reply as raw bytes.
pub fn as_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Bytes(b) => Some(b.to_vec()),
        Value::Integer(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

/// Reads a reply as an integer.
pub fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        Value::String(s) => s.parse().ok(),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// Reads a reply as an array (RESP3 maps are flattened into key, value, key, value).
pub fn as_array(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) => Some(a),
        Value::Map(m) => {
            let mut out = vec![];
            for (k, v) in m.inner() {
                out.push(Value::from(k));
                out.push(v);
            }
            Some(out)
        }
        _ => None,
    }
}

/// Reads a flat `[k1, v1, k2, v2, …]` reply into pairs of strings.
pub fn as_pairs(v: Value) -> Vec<(String, Value)> {
    let mut out = vec![];
    if let Some(a) = as_array(v) {
        let mut it = a.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            if let Some(k) = as_string(&k) {
                out.push((k, v));
            }
        }
    }
    out
}

/// A stream entry's field/value pairs, in order.
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// One stream entry as Redis returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// Entry id (`<ms>-<seq>`).
    pub id: String,
    /// Field/value pairs; `None` when the entry's body was deleted (trimmed) while it was
    /// still pending.
    pub fields: Option<Fields>,
}

impl RawEntry {
    /// Milliseconds part of the id.
    pub fn id_ms(&self) -> i64 {
        id_ms(&self.id)
    }
}

/// Milliseconds part of an entry id.
pub fn id_ms(id: &str) -> i64 {
    id.split('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Parses `[[id, [f, v, …]], …]` (XRANGE, XCLAIM, one stream of XREADGROUP).
pub fn parse_entries(v: Value) -> Vec<RawEntry> {
    let mut out = vec![];
    for e in as_array(v).unwrap_or_default() {
        let mut parts = as_array(e).unwrap_or_default().into_iter();
        let Some(id) = parts.next().as_ref().and_then(as_string) else {
            continue;
        };
        let fields = match parts.next() {
            None | Some(Value::Null) => None,
            Some(fv) => {
                let flat = as_array(fv).unwrap_or_default();
                let mut pairs = Vec::with_capacity(flat.len() / 2);
                let mut it = flat.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((
                        as_bytes(&k).unwrap_or_default(),
                        as_bytes(&v).unwrap_or_default(),
                    ));
                }
                Some(pairs)
            }
        };
        out.push(RawEntry { id, fields });
    }
    out
}

/// Parses an XREAD/XREADGROUP reply (`nil` on timeout) into entries per stream.
pub fn parse_read_reply(v: Value) -> Vec<(String, Vec<RawEntry>)> {
    match v {
        Value::Null => vec![],
        Value::Map(m) => m
            .inner()
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .filter_map(|(k, v)| Some((as_string(&k)?, parse_entries(v))))
            .collect(),
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| {
                let mut it = as_array(s)?.into_iter();
                let name = as_string(&it.next()?)?;
                Some((name, parse_entries(it.next()?)))
            })
            .collect(),
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_only_the_password() {
        assert_eq!(
            redact_url("redis://astra-worker:s3cret@host:6379/0"),
            "redis://astra-worker:***@host:6379/0"
        );
        assert_eq!(redact_url("rediss://:pw@h:1"), "rediss://:***@h:1");
        assert_eq!(
            redact_url("redis://astra-worker@h:1"),
            "redis://astra-worker@h:1"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn password_file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("astra-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing");
        let e = read_password(&missing).unwrap_err().to_string();
        assert!(
            e.contains("redis.password_file") && e.contains("missing"),
            "{e}"
        );
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = read_password(&empty).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let ok = dir.join("ok");
        std::fs::write(&ok, "s3 cret\n").unwrap();
        assert_eq!(read_password(&ok).unwrap(), "s3 cret");
        let not_pem = dir.join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let e = tls_trusting(&not_pem).unwrap_err().to_string();
        assert!(
            e.contains("redis.tls_ca_file") && e.contains("no PEM"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
