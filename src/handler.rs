//! The handler interface: what the runtime and the handlers share, and nothing else.
//!
//! A handler *decides*; the runtime *commits*. For one event a handler runs in rounds:
//!
//! 1. [`Handler::step`] is called with the event and the replies of the rounds so far
//!    (none at first).
//! 2. It returns [`Step::More`] with [`Op`]s (atomic Redis operations such as
//!    `HINCRBY`, `ZINCRBY`, `SADD`, reads such as `HGET`) whose replies it needs to decide
//!    further, or [`Step::Done`] with the final ops and the events to publish ([`Emit`]).
//! 3. The runtime applies each round's ops for a whole batch of events in one atomic
//!    script, together with a de-duplication marker that records the round's replies. The
//!    last round also publishes the derived events and acknowledges the entry.
//!
//! Because every decision is a pure function of the event and the *recorded* replies, a
//! redelivered event replays the same decisions without applying anything twice, and
//! "did this cross a threshold" is derived from the atomic result (`HINCRBY` returns the new
//! total), never from an earlier, racy read.
//!
//! Handlers never touch Redis themselves, so their rules are unit-testable without it:
//! feed `step` an event and fake replies, assert on the ops and emits.
//!
//! This module sits at the bottom of the crate (it imports only the envelope, the calendar
//! and the group settings a handler is built from): `bus` commits what it describes, the
//! domain handlers implement it, and neither has to know the other. `handlers` re-exports
//! it, so `handlers::{Event, Op, ...}` name the same types.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::{self, Deserialize, Deserializer, Visitor};
use sha2::{Digest, Sha256};

use crate::calendar::utc_day;
use crate::envelope::{Envelope, EnvelopeError, encode_msgpack, parse_stream_name};
use crate::group::GroupConfig;

/// One consumed event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Stream it was read from.
    pub stream: String,
    /// Redis entry id.
    pub entry_id: String,
    /// Decoded envelope.
    pub env: Envelope,
}

impl Event {
    /// Decodes the payload; a payload that does not fit is poison (dead-lettered at once).
    /// A public input must also fit its bounds (`events::schema`), whoever wrote it.
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, HandlerError> {
        crate::events::check_consumed(&self.stream, || {
            self.env.data_as_json().map_err(|e| e.to_string())
        })
        .map_err(HandlerError::Poison)?;
        self.env
            .payload()
            .map_err(|e: EnvelopeError| HandlerError::Poison(e.to_string()))
    }

    /// UTC day of the event's `ts`, `YYYY-MM-DD`.
    pub fn utc_day(&self) -> String {
        utc_day(self.env.ts)
    }
}

/// What a handler's failure means for the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Transient: the entry stays pending and is retried (with backoff, then by reclaim)
    /// until `max_deliveries`, after which it is dead-lettered.
    #[error("retry later: {0}")]
    Retry(String),
    /// The event can never succeed (bad payload, broken invariant): dead-letter it now.
    #[error("poison: {0}")]
    Poison(String),
}

/// A reply to an [`Op`], as recorded in the de-duplication marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Nil (missing key, field or member).
    Nil,
    /// Integer reply.
    Int(i64),
    /// Bulk or status string.
    Bytes(Vec<u8>),
    /// Array reply.
    Array(Vec<Reply>),
}

impl Reply {
    /// Integer value (integer replies and numeric strings).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            Reply::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
            _ => None,
        }
    }

    /// Floating value (ZINCRBY / ZSCORE return decimal strings).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Reply::Int(i) => Some(*i as f64),
            Reply::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
            _ => None,
        }
    }

    /// Text value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Reply::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Array items (empty for anything else).
    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(a) => a,
            _ => &[],
        }
    }

    /// True for nil.
    pub fn is_nil(&self) -> bool {
        matches!(self, Reply::Nil)
    }
}

impl<'de> Deserialize<'de> for Reply {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Reply, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Reply;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Redis reply encoded by cmsgpack")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Reply, E> {
                // Lua turns a nil reply into `false`; `true` only comes from status replies.
                Ok(if b { Reply::Int(1) } else { Reply::Nil })
            }
            fn visit_i64<E>(self, v: i64) -> Result<Reply, E> {
                Ok(Reply::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Reply, E> {
                i64::try_from(v)
                    .map(Reply::Int)
                    .map_err(|_| E::custom("integer reply out of range"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Reply, E> {
                Ok(Reply::Bytes(v.to_string().into_bytes()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Reply, E> {
                Ok(Reply::Bytes(v.as_bytes().to_vec()))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Reply, E> {
                Ok(Reply::Bytes(v.to_vec()))
            }
            fn visit_unit<E>(self) -> Result<Reply, E> {
                Ok(Reply::Nil)
            }
            fn visit_none<E>(self) -> Result<Reply, E> {
                Ok(Reply::Nil)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Reply, A::Error> {
                let mut v = vec![];
                while let Some(x) = a.next_element::<Reply>()? {
                    v.push(x);
                }
                Ok(Reply::Array(v))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut a: A) -> Result<Reply, A::Error> {
                // Status replies ({ok = "OK"}) arrive as maps: keep the value.
                let mut out = Reply::Nil;
                while let Some((_, v)) = a.next_entry::<Reply, Reply>()? {
                    out = v;
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

/// Which Redis type an op's key must have (checked before anything is written, because
/// Redis does not roll a script back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// A hash.
    Hash,
    /// A sorted set.
    ZSet,
    /// A set.
    Set,
    /// A string (also HyperLogLogs).
    String,
    /// A list.
    List,
    /// Any type (EXPIRE, DEL, EXISTS).
    Any,
}

impl KeyType {
    /// The name Redis's `TYPE` returns.
    pub fn redis_name(&self) -> &'static str {
        match self {
            KeyType::Hash => "hash",
            KeyType::ZSet => "zset",
            KeyType::Set => "set",
            KeyType::String => "string",
            KeyType::List => "list",
            KeyType::Any => "any",
        }
    }
}

/// The commands a handler may use, with the key type each needs.
pub(crate) const COMMANDS: &[(&str, KeyType)] = &[
    ("HSET", KeyType::Hash),
    ("HSETNX", KeyType::Hash),
    ("HINCRBY", KeyType::Hash),
    ("HGET", KeyType::Hash),
    ("HMGET", KeyType::Hash),
    ("HGETALL", KeyType::Hash),
    ("HDEL", KeyType::Hash),
    ("HEXISTS", KeyType::Hash),
    ("ZADD", KeyType::ZSet),
    ("ZINCRBY", KeyType::ZSet),
    ("ZREM", KeyType::ZSet),
    ("ZSCORE", KeyType::ZSet),
    ("ZRANK", KeyType::ZSet),
    ("ZREVRANK", KeyType::ZSet),
    ("ZRANGE", KeyType::ZSet),
    ("ZREVRANGE", KeyType::ZSet),
    ("ZRANGEBYSCORE", KeyType::ZSet),
    ("ZREMRANGEBYSCORE", KeyType::ZSet),
    ("ZREMRANGEBYRANK", KeyType::ZSet),
    ("ZCARD", KeyType::ZSet),
    ("ZCOUNT", KeyType::ZSet),
    ("SADD", KeyType::Set),
    ("SREM", KeyType::Set),
    ("SISMEMBER", KeyType::Set),
    ("SCARD", KeyType::Set),
    ("SMEMBERS", KeyType::Set),
    ("GET", KeyType::String),
    ("SET", KeyType::String),
    ("INCRBY", KeyType::String),
    ("DECRBY", KeyType::String),
    ("PFADD", KeyType::String),
    ("PFCOUNT", KeyType::String),
    ("LPUSH", KeyType::List),
    ("RPUSH", KeyType::List),
    ("LTRIM", KeyType::List),
    ("LRANGE", KeyType::List),
    ("LLEN", KeyType::List),
    ("EXPIRE", KeyType::Any),
    ("PEXPIRE", KeyType::Any),
    ("DEL", KeyType::Any),
    ("EXISTS", KeyType::Any),
    // Script-side op, see `Op::chain_append`.
    ("CHAINAPPEND", KeyType::String),
];

/// The names of the commands a handler op may use (the commit scripts refuse any other).
pub fn allowed_commands() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().map(|(c, _)| *c)
}

/// One atomic Redis operation on one key. Built with the constructors below; anything else
/// is rejected, so a handler cannot reach outside the allowed command set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub(crate) cmd: &'static str,
    pub(crate) key: String,
    pub(crate) args: Vec<Vec<u8>>,
    /// Second key (CHAINAPPEND's list), declared to the script like every key.
    pub(crate) key2: Option<String>,
}

fn b(v: impl ToString) -> Vec<u8> {
    v.to_string().into_bytes()
}

impl Op {
    /// Any allowed command with the key first and string arguments after it.
    /// Panics on a command outside the allowed set: that is a bug in the handler.
    pub fn new(cmd: &'static str, key: impl Into<String>, args: Vec<Vec<u8>>) -> Op {
        assert!(
            COMMANDS.iter().any(|(c, _)| *c == cmd) && cmd != "CHAINAPPEND",
            "command {cmd} is not allowed in a handler op"
        );
        Op {
            cmd,
            key: key.into(),
            args,
            key2: None,
        }
    }
    /// The command name.
    pub fn cmd(&self) -> &'static str {
        self.cmd
    }
    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }
    /// The arguments after the key.
    pub fn args(&self) -> &[Vec<u8>] {
        &self.args
    }
    /// The Redis type the key must have.
    pub fn key_type(&self) -> KeyType {
        COMMANDS
            .iter()
            .find(|(c, _)| *c == self.cmd)
            .map(|(_, t)| *t)
            .unwrap_or(KeyType::Any)
    }
    /// True for the commands that only read (HGET, ZSCORE, …): they change nothing.
    pub fn is_read(&self) -> bool {
        matches!(
            self.cmd,
            "HGET"
                | "HMGET"
                | "HGETALL"
                | "HEXISTS"
                | "ZSCORE"
                | "ZRANK"
                | "ZREVRANK"
                | "ZRANGE"
                | "ZREVRANGE"
                | "ZRANGEBYSCORE"
                | "ZCARD"
                | "ZCOUNT"
                | "SISMEMBER"
                | "SCARD"
                | "SMEMBERS"
                | "GET"
                | "PFCOUNT"
                | "LRANGE"
                | "LLEN"
                | "EXISTS"
        )
    }

    /// Every key this op touches.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.key.as_str()).chain(self.key2.as_deref())
    }

    /// An op named at run time (a remote handler's answer): `cmd` must be one of the
    /// allowed commands that write; the error says why not.
    pub fn parse(cmd: &str, key: &str, args: Vec<Vec<u8>>) -> Result<Op, String> {
        let upper = cmd.to_ascii_uppercase();
        let Some((name, _)) = COMMANDS
            .iter()
            .find(|(c, _)| *c == upper && *c != "CHAINAPPEND")
        else {
            return Err(format!("command {cmd:?} is not one an op may use"));
        };
        let op = Op::new(name, key, args);
        if op.is_read() {
            return Err(format!(
                "command {name} only reads, and a remote handler's ops get no replies back"
            ));
        }
        if key.is_empty() {
            return Err("an op needs a key".into());
        }
        Ok(op)
    }

    /// `HINCRBY key field by` → new value.
    pub fn hincrby(key: impl Into<String>, field: impl ToString, by: i64) -> Op {
        Op::new("HINCRBY", key, vec![b(field), b(by)])
    }
    /// `HSET key field value` (one pair) → 1 if new field.
    pub fn hset(key: impl Into<String>, field: impl ToString, value: impl AsRef<[u8]>) -> Op {
        Op::new("HSET", key, vec![b(field), value.as_ref().to_vec()])
    }
    /// `HSET key f1 v1 f2 v2 …`.
    pub fn hset_many<F: ToString, V: AsRef<[u8]>>(key: impl Into<String>, pairs: &[(F, V)]) -> Op {
        let mut args = vec![];
        for (f, v) in pairs {
            args.push(f.to_string().into_bytes());
            args.push(v.as_ref().to_vec());
        }
        Op::new("HSET", key, args)
    }
    /// `HSETNX key field value` → 1 if set.
    pub fn hsetnx(key: impl Into<String>, field: impl ToString, value: impl AsRef<[u8]>) -> Op {
        Op::new("HSETNX", key, vec![b(field), value.as_ref().to_vec()])
    }
    /// `HGET key field`.
    pub fn hget(key: impl Into<String>, field: impl ToString) -> Op {
        Op::new("HGET", key, vec![b(field)])
    }
    /// `HGETALL key`.
    pub fn hgetall(key: impl Into<String>) -> Op {
        Op::new("HGETALL", key, vec![])
    }
    /// `ZINCRBY key by member` → new score (decimal string).
    pub fn zincrby(key: impl Into<String>, by: i64, member: impl ToString) -> Op {
        Op::new("ZINCRBY", key, vec![b(by), b(member)])
    }
    /// `ZADD key score member`.
    pub fn zadd(key: impl Into<String>, score: i64, member: impl ToString) -> Op {
        Op::new("ZADD", key, vec![b(score), b(member)])
    }
    /// `ZREVRANK key member` → 0-based rank from the top, nil if absent.
    pub fn zrevrank(key: impl Into<String>, member: impl ToString) -> Op {
        Op::new("ZREVRANK", key, vec![b(member)])
    }
    /// `ZREVRANGE key start stop WITHSCORES`.
    pub fn zrevrange_withscores(key: impl Into<String>, start: i64, stop: i64) -> Op {
        Op::new("ZREVRANGE", key, vec![b(start), b(stop), b("WITHSCORES")])
    }
    /// `ZSCORE key member`.
    pub fn zscore(key: impl Into<String>, member: impl ToString) -> Op {
        Op::new("ZSCORE", key, vec![b(member)])
    }
    /// `ZRANGEBYSCORE key min max` (inclusive bounds as given, e.g. `"(123"`).
    pub fn zrangebyscore(key: impl Into<String>, min: impl ToString, max: impl ToString) -> Op {
        Op::new("ZRANGEBYSCORE", key, vec![b(min), b(max)])
    }
    /// `ZREMRANGEBYSCORE key min max`.
    pub fn zremrangebyscore(key: impl Into<String>, min: impl ToString, max: impl ToString) -> Op {
        Op::new("ZREMRANGEBYSCORE", key, vec![b(min), b(max)])
    }
    /// `SADD key member` → 1 if new.
    pub fn sadd(key: impl Into<String>, member: impl ToString) -> Op {
        Op::new("SADD", key, vec![b(member)])
    }
    /// `SISMEMBER key member`.
    pub fn sismember(key: impl Into<String>, member: impl ToString) -> Op {
        Op::new("SISMEMBER", key, vec![b(member)])
    }
    /// `INCRBY key by` → new value.
    pub fn incrby(key: impl Into<String>, by: i64) -> Op {
        Op::new("INCRBY", key, vec![b(by)])
    }
    /// `GET key`.
    pub fn get(key: impl Into<String>) -> Op {
        Op::new("GET", key, vec![])
    }
    /// `SET key value`.
    pub fn set(key: impl Into<String>, value: impl AsRef<[u8]>) -> Op {
        Op::new("SET", key, vec![value.as_ref().to_vec()])
    }
    /// `PFADD key element` (HyperLogLog).
    pub fn pfadd(key: impl Into<String>, element: impl ToString) -> Op {
        Op::new("PFADD", key, vec![b(element)])
    }
    /// `LPUSH key value`.
    pub fn lpush(key: impl Into<String>, value: impl AsRef<[u8]>) -> Op {
        Op::new("LPUSH", key, vec![value.as_ref().to_vec()])
    }
    /// `LTRIM key start stop`.
    pub fn ltrim(key: impl Into<String>, start: i64, stop: i64) -> Op {
        Op::new("LTRIM", key, vec![b(start), b(stop)])
    }
    /// `EXPIRE key seconds`.
    pub fn expire(key: impl Into<String>, seconds: i64) -> Op {
        Op::new("EXPIRE", key, vec![b(seconds)])
    }
    /// Appends `record` to the hash chain whose head hash lives at `head` and whose records
    /// live in the list `log`: `hash = SHA-256(prev_hash_hex ‖ record)` (prev is `""` for
    /// the first record), the head moves to `hash`, and the MessagePack array
    /// `[prev_hex, hash_hex, record]` is RPUSHed. Replies `[seq (1-based position),
    /// prev_hex, hash_hex]`. The runtime computes the link from the head it read and the
    /// commit script appends only if the head has not moved since (otherwise the round is
    /// committed again), so concurrent appenders can never fork the chain.
    pub fn chain_append(
        head: impl Into<String>,
        log: impl Into<String>,
        record: impl AsRef<[u8]>,
    ) -> Op {
        Op {
            cmd: "CHAINAPPEND",
            key: head.into(),
            key2: Some(log.into()),
            args: vec![record.as_ref().to_vec()],
        }
    }
}

/// An event a handler wants published.
#[derive(Debug, Clone, PartialEq)]
pub struct Emit {
    /// Target stream (must be in the group's `publishes`).
    pub stream: String,
    /// `<domain>.<event>`, from the stream name.
    pub event_type: String,
    /// Schema version, from the stream name.
    pub v: u32,
    /// MessagePack payload.
    pub data: Vec<u8>,
}

impl Emit {
    /// Publishes `payload` (MessagePack, named fields) to `stream`.
    pub fn new<T: Serialize + ?Sized>(stream: &str, payload: &T) -> Emit {
        Emit::raw(stream, encode_msgpack(payload))
    }

    /// Publishes already-encoded MessagePack.
    pub fn raw(stream: &str, data: Vec<u8>) -> Emit {
        let (domain, event, v) =
            parse_stream_name(stream).unwrap_or_else(|| ("invalid".into(), stream.into(), 1));
        Emit {
            stream: stream.to_string(),
            event_type: format!("{domain}.{event}"),
            v,
            data,
        }
    }
}

/// What a handler wants next for one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Apply these ops atomically and call `step` again with their replies.
    More(Vec<Op>),
    /// Apply these ops, publish these events, acknowledge the entry.
    Done { ops: Vec<Op>, emit: Vec<Emit> },
}

impl Step {
    /// Nothing to change, nothing to publish.
    pub fn nothing() -> Step {
        Step::Done {
            ops: vec![],
            emit: vec![],
        }
    }
}

/// Builds a handler for a group from its options; errors say which option is wrong.
/// Any closure or function of that shape: an embedder's constructor may capture what its
/// handlers share (a lookup table, a client's settings), see [`crate::handlers::Registry`].
pub type Constructor =
    Arc<dyn Fn(&GroupConfig) -> Result<Arc<dyn Handler>, String> + Send + Sync + 'static>;

/// A constructor that is a plain function (each built-in handler's `build`).
pub type BuildFn = fn(&GroupConfig) -> Result<Arc<dyn Handler>, String>;

/// Most rounds one event may take; a handler that needs more has a bug (or a livelock).
pub const MAX_ROUNDS: usize = 16;

/// Domain logic for one consumer group.
pub trait Handler: Send + Sync + 'static {
    /// Decides the next step for `ev`, given the replies of the rounds already applied
    /// (`rounds[i]` holds the replies to the ops of round `i`, in order). Must be a pure
    /// function of its inputs: it is re-run on redelivery and must decide the same again.
    fn step(&self, ev: &Event, rounds: &[Vec<Reply>]) -> Result<Step, HandlerError>;

    /// For a remote handler (`handler = "remote"`): where its decisions come from. The
    /// daemon then asks that service ([`Decide`]) instead of calling [`Handler::step`].
    fn remote(&self) -> Option<&RemoteSpec> {
        None
    }
}

/// The handler name of remote handlers (`handler = "remote"`).
pub const REMOTE_HANDLER: &str = "remote";

/// Where a remote handler's group sends its events: a `[services.<name>]` and a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    /// The service (declared in `[services.<name>]`, instances in the registry).
    pub service: String,
    /// The path events are POSTed to on an instance (`/events`).
    pub path: String,
    /// How long one delivery may take, answer included.
    pub timeout: std::time::Duration,
    /// Every op key of the answers must start with this (a service keeps to its own keys).
    pub key_prefix: String,
    /// The first wait after a failed request; it doubles (with jitter) up to `max_backoff`.
    pub backoff: std::time::Duration,
    /// The longest wait between failed requests.
    pub max_backoff: std::time::Duration,
}

/// What asking a remote handler's service gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Asked {
    /// One decision per event, in the order asked (only [`Step::Done`] steps).
    Decided(Vec<Result<Step, HandlerError>>),
    /// The request reached an instance and failed (timeout, 5xx, an answer off the
    /// contract): counted against every event asked, which is dead-lettered after
    /// `max_deliveries` such failures.
    Failed(String),
    /// No instance could take it (none healthy, every breaker open, every connection
    /// refused): nothing is counted; the group waits about this long and asks again.
    Wait {
        /// When to ask again.
        retry_in: std::time::Duration,
        /// Why, for the log.
        why: String,
    },
}

/// A boxed future (what [`Decide::decide`] returns, so the trait stays object-safe).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Decides a batch of events by asking outside the process (a remote handler's service).
pub trait Decide: Send + Sync + 'static {
    /// Decides `events`; `attempts[i]` is how often `events[i]` was delivered before.
    fn decide<'a>(&'a self, events: &'a [&'a Event], attempts: &'a [u64]) -> BoxFuture<'a, Asked>;
}

/// One link of a hash chain: SHA-256(`prev_hex` ‖ `record`) as lowercase hex, where
/// `prev_hex` is the previous link (`""` for the first record). What [`Op::chain_append`]
/// appends; the commit runtime computes it and the audit trail verifies with it.
pub fn chain_link(prev_hex: &str, record: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev_hex.as_bytes());
    h.update(record);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_decode_from_cmsgpack_shapes() {
        // [[12, "7", false, [1, "a"]]] as cmsgpack would pack it.
        let v = rmp_serde::to_vec(&vec![(12i64, "7", false, (1i64, "a"))]).unwrap();
        let r: Reply = rmp_serde::from_slice(&v).unwrap();
        let round = &r.items()[0];
        assert_eq!(round.items()[0].as_int(), Some(12));
        assert_eq!(round.items()[1].as_int(), Some(7));
        assert!(round.items()[2].is_nil());
        assert_eq!(round.items()[3].items()[1].as_str(), Some("a"));
    }

    #[test]
    #[should_panic(expected = "not allowed")]
    fn ops_outside_the_allowed_set_are_bugs() {
        let _ = Op::new("FLUSHALL", "x", vec![]);
    }
}
