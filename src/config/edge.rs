//! The `[edge]` section: the HTTP edge's listener, API keys, limits and rate limits.
//!
//! API keys are configured by their SHA-256 (hex), never in plain text, either inline as
//! `[[edge.key]]` or in a separate file named by `edge.keys_file` / `ASTRA_EDGE_KEYS_FILE`
//! (so key hashes can live outside the git-tracked topology, e.g. in a systemd credential
//! or a docker secret).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::scope::{Scope, parse_scope};
use super::{Diagnostic, StreamConfig, Validator};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEdge {
    /// Serve HTTP at all.
    enabled: Option<bool>,
    /// `host:port` to listen on. Overridden by `ASTRA_HTTP_LISTEN`.
    listen: Option<Spanned<String>>,
    /// `"off"` (no API keys; only allowed on a loopback address) or `"keys"`.
    /// Overridden by `ASTRA_EDGE_AUTH`.
    auth: Option<Spanned<String>>,
    /// Operations routes (`/ready`, `/metrics`, `/dashboard`, `/v1/streams`,
    /// `/v1/groups`): `"open"` or `"keys"` (a key with the `ops` scope). Default: `"keys"`
    /// on a non-loopback listener, else `"open"`. Overridden by `ASTRA_EDGE_OPS`.
    ops: Option<Spanned<String>>,
    /// A TOML file of `[[key]]` entries (relative to the config dir), merged with
    /// `[[edge.key]]`. Overridden by `ASTRA_EDGE_KEYS_FILE`.
    keys_file: Option<Spanned<String>>,
    /// Largest accepted request body, bytes (413 beyond).
    max_body_bytes: Option<Spanned<i64>>,
    /// Most events in one `POST /v1/events` batch.
    max_batch: Option<Spanned<i64>>,
    /// Whole-request deadline (the request is answered 503 when it passes).
    request_timeout: Option<Spanned<String>>,
    /// Deadline of the edge's Redis calls (503 with `Retry-After` when it passes).
    redis_timeout: Option<Spanned<String>>,
    /// Requests served at once; more are answered 503 at once (load shedding).
    max_concurrency: Option<Spanned<i64>>,
    /// How long an `Idempotency-Key` is remembered.
    idempotency_ttl: Option<Spanned<String>>,
    /// Open connections at most; more wait in the kernel's accept queue.
    max_connections: Option<Spanned<i64>>,
    /// Open connections from one client address at most; more are closed at once.
    max_connections_per_client: Option<Spanned<i64>>,
    /// A request's headers must arrive within this (slow clients are disconnected).
    header_timeout: Option<Spanned<String>>,
    /// A kept-alive connection with no request for this long is closed.
    idle_timeout: Option<Spanned<String>>,
    /// Request bodies buffered at once, bytes, across all requests (a request waits for
    /// room; memory bound under load).
    body_memory: Option<Spanned<i64>>,
    /// How far an envelope's `ts` may be from the edge's clock, either way.
    envelope_skew: Option<Spanned<String>>,
    /// Rate limits, enforced in Redis so every edge instance shares them.
    #[serde(default)]
    rate_limit: RawRateLimit,
    /// API keys.
    #[serde(default)]
    key: Vec<RawKey>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    /// Enforce rate limits at all.
    enabled: Option<bool>,
    /// The sliding window the limits count over.
    window: Option<Spanned<String>>,
    /// Requests per window per user (`X-User-ID`, the key's `user`, or the client address).
    per_user: Option<Spanned<i64>>,
    /// Requests per window per API key (service).
    per_key: Option<Spanned<i64>>,
    /// Requests per window per client address (the service limit that always applies).
    per_client: Option<Spanned<i64>>,
    /// Failed authentications per window per client address; beyond, every keyed request
    /// from that address is refused (429) until the window passes.
    auth_failures: Option<Spanned<i64>>,
    /// Requests per window per user to one domain's routes, by domain
    /// (e.g. `trading = 100`). Absent: trading 100, gamification 200, social 50.
    route: Option<BTreeMap<String, Spanned<i64>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    /// Who holds the key (logs, metrics-free; never the key itself).
    name: Spanned<String>,
    /// SHA-256 of the key, 64 hex digits (`astra-bus key new` prints one).
    sha256: Spanned<String>,
    /// What the key may do: `publish:<stream>` or `publish:<prefix>*`, `read`, `ops`, `*`.
    scopes: Spanned<Vec<String>>,
    /// The user the key acts as: its rate limits, and the only `user_id` it may publish for.
    user: Option<Spanned<String>>,
    /// The key may name the user it acts for in `X-User-ID` (a backend that authenticated
    /// its own users); that user gets its own buckets under this key.
    act_for_users: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeysFile {
    /// API keys.
    #[serde(default)]
    key: Vec<RawKey>,
}

/// Whether the edge requires API keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// No keys: anyone who reaches the address may call every route (loopback only).
    Off,
    /// Every route but the open ops routes needs `Authorization: Bearer <key>`.
    Keys,
}

/// One API key.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// Holder's name.
    pub name: String,
    /// SHA-256 of the key.
    pub sha256: [u8; 32],
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// The user it acts as, if fixed.
    pub user: Option<String>,
    /// May name the user in `X-User-ID`.
    pub act_for_users: bool,
}

/// Rate limits.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Enforced at all.
    pub enabled: bool,
    /// Sliding window.
    pub window: Duration,
    /// Per user per window.
    pub per_user: u32,
    /// Per API key per window.
    pub per_key: u32,
    /// Per client address per window.
    pub per_client: u32,
    /// Failed authentications per client address per window.
    pub auth_failures: u32,
    /// Per user per window, by domain.
    pub route: BTreeMap<String, u32>,
}

/// The HTTP edge.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Serve HTTP.
    pub enabled: bool,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Whether API keys are required.
    pub auth: AuthMode,
    /// `edge.ops`: Some(true) keys, Some(false) open, None: keys unless on loopback.
    pub ops: Option<bool>,
    /// The keys file, if any (resolved against the config dir).
    pub keys_file: Option<PathBuf>,
    /// API keys.
    pub keys: Vec<ApiKey>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most events per batch.
    pub max_batch: usize,
    /// Whole-request deadline.
    pub request_timeout: Duration,
    /// Deadline of each Redis call.
    pub redis_timeout: Duration,
    /// Requests served at once.
    pub max_concurrency: usize,
    /// How long idempotency keys are remembered.
    pub idempotency_ttl: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections per client address at most.
    pub max_connections_per_client: usize,
    /// Deadline for a request's headers.
    pub header_timeout: Duration,
    /// Keep-alive idle limit.
    pub idle_timeout: Duration,
    /// Request bodies buffered at once, bytes.
    pub body_memory: usize,
    /// Allowed envelope `ts` skew.
    pub envelope_skew: Duration,
    /// Rate limits.
    pub rate_limit: RateLimitConfig,
    /// Where `auth` was decided (file:line:col or an environment variable), for errors.
    pub(crate) auth_origin: (String, usize, usize),
}

impl EdgeConfig {
    /// Whether the ops routes need a key with the `ops` scope: as configured, else when
    /// the listener is not loopback (anyone who can reach it would read revenue and
    /// group status).
    pub fn ops_keyed(&self) -> bool {
        self.ops.unwrap_or(!self.listen.ip().is_loopback())
    }

    /// Refuses `auth = "off"` on an address other hosts can reach: anyone could publish.
    pub(crate) fn exposure_problem(&self) -> Option<Diagnostic> {
        if !self.enabled || self.auth == AuthMode::Keys || self.listen.ip().is_loopback() {
            return None;
        }
        let (file, line, col) = self.auth_origin.clone();
        Some(Diagnostic {
            file,
            line,
            col,
            message: format!(
                "edge.auth = \"off\" but edge.listen is {} (not loopback): anyone who can reach \
                 it could publish events. Set edge.auth = \"keys\" (or ASTRA_EDGE_AUTH=keys) and \
                 add keys as [[edge.key]] name/sha256/scopes (`astra-bus key new` prints one), \
                 or listen on 127.0.0.1",
                self.listen
            ),
        })
    }
}

/// Per-user limits per domain when `[edge.rate_limit.route]` is absent (the seeds' values).
pub const DEFAULT_ROUTE_LIMITS: [(&str, u32); 3] =
    [("trading", 100), ("gamification", 200), ("social", 50)];

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

/// 1 to `max` visible ASCII characters: what the edge accepts where a client's string
/// becomes part of a Redis key, a stream field or a response header (user ids,
/// correlation ids, idempotency keys, envelope ids).
pub fn visible_ascii(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Checks a user id as the edge accepts it (`X-User-ID`, a key's `user`, paths): the
/// payloads' id set, 1–128 of `A–Z a–z 0–9 . _ : @ -` (safe inside Redis keys).
pub fn valid_user_id(u: &str) -> bool {
    crate::events::schema::valid_id(u)
}

impl Validator {
    fn keys(
        &mut self,
        file: &str,
        text: &str,
        raw: &[RawKey],
        streams: &[StreamConfig],
    ) -> Vec<ApiKey> {
        let mut out: Vec<ApiKey> = vec![];
        for k in raw {
            let name = k.name.get_ref().clone();
            if name.is_empty() {
                self.at(
                    file,
                    text,
                    k.name.span(),
                    "edge key name must not be empty".into(),
                );
            }
            if out.iter().any(|o| o.name == name) {
                self.at(
                    file,
                    text,
                    k.name.span(),
                    format!("duplicate edge key {name:?}"),
                );
            }
            let hex = k.sha256.get_ref().to_ascii_lowercase();
            let Some(sha) = parse_hex32(&hex) else {
                self.at(
                    file,
                    text,
                    k.sha256.span(),
                    format!(
                        "edge key {name:?}: sha256 must be 64 hex digits (the SHA-256 of the key, \
                         e.g. `printf %s \"$KEY\" | sha256sum`), got {} characters",
                        hex.len()
                    ),
                );
                continue;
            };
            if out.iter().any(|o| o.sha256 == sha) {
                self.at(
                    file,
                    text,
                    k.sha256.span(),
                    format!("edge key {name:?} has the same sha256 as another key"),
                );
            }
            let mut scopes = vec![];
            for s in k.scopes.get_ref() {
                match parse_scope(s, streams) {
                    Ok(sc) => scopes.push(sc),
                    Err(e) => self.at(
                        file,
                        text,
                        k.scopes.span(),
                        format!("edge key {name:?}: {e}"),
                    ),
                }
            }
            if k.scopes.get_ref().is_empty() {
                self.at(
                    file,
                    text,
                    k.scopes.span(),
                    format!("edge key {name:?}: scopes must not be empty"),
                );
            }
            let user = k.user.as_ref().map(|u| u.get_ref().clone());
            if let (Some(u), Some(span)) = (&user, k.user.as_ref().map(|u| u.span()))
                && !valid_user_id(u)
            {
                {
                    self.at(
                        file,
                        text,
                        span,
                        format!("edge key {name:?}: user must be 1-128 of A-Z a-z 0-9 . _ : @ -"),
                    );
                }
            }
            if user.is_some() && k.act_for_users == Some(true) {
                self.at(
                    file,
                    text,
                    k.name.span(),
                    format!("edge key {name:?}: a key with a fixed user cannot act_for_users"),
                );
            }
            out.push(ApiKey {
                name,
                sha256: sha,
                scopes,
                user,
                act_for_users: k.act_for_users.unwrap_or(false),
            });
        }
        out
    }

    fn limit(
        &mut self,
        file: &str,
        text: &str,
        what: &str,
        v: &Option<Spanned<i64>>,
        default: u32,
    ) -> u32 {
        self.int(file, text, what, v, 1..1_000_000_001)
            .map(|n| n as u32)
            .unwrap_or(default)
    }

    /// Resolves `[edge]` against the declared streams and domains.
    pub(super) fn edge(
        &mut self,
        file: &str,
        text: &str,
        raw: &RawEdge,
        streams: &[StreamConfig],
        domains: &[String],
    ) -> EdgeConfig {
        let default_listen = SocketAddr::from(([127, 0, 0, 1], 8000));
        let listen = match &raw.listen {
            None => default_listen,
            Some(l) => match l.get_ref().parse() {
                Ok(a) => a,
                Err(e) => {
                    self.at(
                        file,
                        text,
                        l.span(),
                        format!("edge.listen: {:?} is not host:port ({e})", l.get_ref()),
                    );
                    default_listen
                }
            },
        };
        let origin = |span: Option<Range<usize>>| {
            let (line, col) = span
                .map(|s| super::line_col(text, s.start))
                .unwrap_or((1, 1));
            (file.to_string(), line, col)
        };
        let (auth, auth_origin) = match &raw.auth {
            None => (AuthMode::Off, origin(raw.listen.as_ref().map(|l| l.span()))),
            Some(a) => {
                let mode = match a.get_ref().as_str() {
                    "off" => AuthMode::Off,
                    "keys" => AuthMode::Keys,
                    other => {
                        self.at(
                            file,
                            text,
                            a.span(),
                            format!("edge.auth must be \"off\" or \"keys\", got {other:?}"),
                        );
                        AuthMode::Off
                    }
                };
                (mode, origin(Some(a.span())))
            }
        };
        let ops = match &raw.ops {
            None => None,
            Some(o) => match o.get_ref().as_str() {
                "open" => Some(false),
                "keys" => Some(true),
                other => {
                    self.at(
                        file,
                        text,
                        o.span(),
                        format!("edge.ops must be \"open\" or \"keys\", got {other:?}"),
                    );
                    None
                }
            },
        };
        let keys = self.keys(file, text, &raw.key, streams);
        let rl = &raw.rate_limit;
        let mut route = BTreeMap::new();
        if rl.route.is_none() {
            for (d, n) in DEFAULT_ROUTE_LIMITS {
                if domains.iter().any(|x| x == d) {
                    route.insert(d.to_string(), n);
                }
            }
        }
        for (domain, limit) in rl.route.iter().flatten() {
            if !domains.contains(domain) {
                self.at(
                    file,
                    text,
                    limit.span(),
                    format!(
                        "edge.rate_limit.route.{domain}: no such domain (known: {})",
                        domains.join(", ")
                    ),
                );
                continue;
            }
            let n = self.limit(
                file,
                text,
                &format!("edge.rate_limit.route.{domain}"),
                &Some(limit.clone()),
                1,
            );
            route.insert(domain.clone(), n);
        }
        let rate_limit = RateLimitConfig {
            enabled: rl.enabled.unwrap_or(true),
            window: self
                .dur(
                    file,
                    text,
                    "edge.rate_limit.window",
                    &rl.window,
                    Duration::from_secs(1),
                    Duration::from_secs(86_400),
                )
                .unwrap_or(Duration::from_secs(60)),
            per_user: self.limit(file, text, "edge.rate_limit.per_user", &rl.per_user, 200),
            per_key: self.limit(file, text, "edge.rate_limit.per_key", &rl.per_key, 1_000),
            per_client: self.limit(
                file,
                text,
                "edge.rate_limit.per_client",
                &rl.per_client,
                1_000,
            ),
            auth_failures: self.limit(
                file,
                text,
                "edge.rate_limit.auth_failures",
                &rl.auth_failures,
                20,
            ),
            route,
        };
        let ms = Duration::from_millis;
        EdgeConfig {
            enabled: raw.enabled.unwrap_or(true),
            listen,
            auth,
            ops,
            keys_file: raw.keys_file.as_ref().map(|f| PathBuf::from(f.get_ref())),
            keys,
            max_body_bytes: self
                .int(
                    file,
                    text,
                    "edge.max_body_bytes",
                    &raw.max_body_bytes,
                    64..(64 << 20),
                )
                .unwrap_or(1 << 20) as usize,
            max_batch: self
                .int(file, text, "edge.max_batch", &raw.max_batch, 1..10_001)
                .unwrap_or(500) as usize,
            request_timeout: self
                .dur(
                    file,
                    text,
                    "edge.request_timeout",
                    &raw.request_timeout,
                    ms(10),
                    ms(600_000),
                )
                .unwrap_or(Duration::from_secs(10)),
            redis_timeout: self
                .dur(
                    file,
                    text,
                    "edge.redis_timeout",
                    &raw.redis_timeout,
                    ms(10),
                    ms(600_000),
                )
                .unwrap_or(Duration::from_secs(2)),
            max_concurrency: self
                .int(
                    file,
                    text,
                    "edge.max_concurrency",
                    &raw.max_concurrency,
                    1..1_000_001,
                )
                .unwrap_or(1024) as usize,
            idempotency_ttl: self
                .dur(
                    file,
                    text,
                    "edge.idempotency_ttl",
                    &raw.idempotency_ttl,
                    Duration::from_secs(1),
                    Duration::from_secs(30 * 86_400),
                )
                .unwrap_or(Duration::from_secs(86_400)),
            max_connections: self
                .int(
                    file,
                    text,
                    "edge.max_connections",
                    &raw.max_connections,
                    1..1_000_001,
                )
                .unwrap_or(8192) as usize,
            max_connections_per_client: self
                .int(
                    file,
                    text,
                    "edge.max_connections_per_client",
                    &raw.max_connections_per_client,
                    1..1_000_001,
                )
                .unwrap_or(1024) as usize,
            header_timeout: self
                .dur(
                    file,
                    text,
                    "edge.header_timeout",
                    &raw.header_timeout,
                    ms(10),
                    ms(600_000),
                )
                .unwrap_or(Duration::from_secs(5)),
            idle_timeout: self
                .dur(
                    file,
                    text,
                    "edge.idle_timeout",
                    &raw.idle_timeout,
                    ms(10),
                    ms(3_600_000),
                )
                .unwrap_or(Duration::from_secs(60)),
            body_memory: self
                .int(
                    file,
                    text,
                    "edge.body_memory",
                    &raw.body_memory,
                    1024..(16 << 30),
                )
                .unwrap_or(64 << 20) as usize,
            envelope_skew: self
                .dur(
                    file,
                    text,
                    "edge.envelope_skew",
                    &raw.envelope_skew,
                    Duration::from_secs(1),
                    Duration::from_secs(7 * 86_400),
                )
                .unwrap_or(Duration::from_secs(300)),
            rate_limit,
            auth_origin,
        }
    }

    /// Parses a keys file (`[[key]]` entries).
    pub(super) fn keys_file(
        &mut self,
        file: &str,
        text: &str,
        streams: &[StreamConfig],
    ) -> Vec<ApiKey> {
        match self.parse::<RawKeysFile>(file, text) {
            Some(raw) => self.keys(file, text, &raw.key, streams),
            None => vec![],
        }
    }
}

/// SHA-256 of a key, as configured.
pub fn key_sha256(key: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes()).into()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let h = key_sha256("secret");
        assert_eq!(parse_hex32(&hex(&h)), Some(h));
        assert_eq!(parse_hex32("zz"), None);
    }

    #[test]
    fn user_ids() {
        assert!(valid_user_id("u-1"));
        assert!(!valid_user_id(""));
        assert!(!valid_user_id("a b"));
        assert!(!valid_user_id(&"x".repeat(129)));
    }
}
