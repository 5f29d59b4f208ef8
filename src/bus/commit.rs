//! The commit protocol (SPEC "Commit protocol"), single-node form: one script call per
//! batch per handler round applies every event's ops with its de-duplication marker, and
//! in the final round also publishes the derived events and acknowledges the entries
//! (one XACK for the whole batch). See `commit.lua` for the exact semantics.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::client::{BusError, Redis, Value, arg, as_array, as_bytes, as_int, as_string};
use super::script::Script;
use crate::envelope::Envelope;
use crate::handlers::{Op, Reply};

static COMMIT: Script = Script::new("commit", include_str!("commit.lua"));

/// One event's part of a round.
pub struct RoundItem<'a> {
    /// The event's id (de-duplication is by event id, not entry id).
    pub event_id: &'a str,
    /// Occurred-at, to pick the marker bucket (stable across duplicates of the event).
    pub event_ts: i64,
    /// Redis entry id, acknowledged when the final round commits.
    pub entry_id: &'a str,
    /// 0-based round index.
    pub round: usize,
    /// True for the handler's `Step::Done` round.
    pub is_final: bool,
    /// Ops of this round.
    pub ops: &'a [Op],
    /// Derived events to publish (final round only): (stream, envelope).
    pub emits: Vec<(String, Envelope)>,
}

/// What the script did with one event's round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundOutcome {
    /// Applied now; the replies.
    Applied(Vec<Reply>),
    /// Applied by an earlier delivery; the recorded replies (nothing written now).
    Replayed(Vec<Reply>),
    /// The event was completed before (duplicate entry or zombie): acknowledged only.
    AlreadyDone,
    /// An op failed or a key had the wrong type: poison, with the reason.
    Failed(String),
    /// A hash-chain head moved between reading it and committing (another appender won):
    /// nothing was written; commit the round again.
    Conflict,
}

/// One link of a hash chain: SHA-256(`prev_hex` ‖ `record`) as lowercase hex, where
/// `prev_hex` is the previous link (`""` for the first record).
pub fn chain_link(prev_hex: &str, record: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev_hex.as_bytes());
    h.update(record);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Serialises this process's hash-chain appends (read head → commit), so its own readers
/// never conflict with each other; other processes are kept out by the script's
/// compare-and-set on the head.
static CHAIN_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Key of the de-duplication marker hash for `group` and an event occurred at `ts`.
/// Bucketed by hour of the event's own timestamp so every copy of one event maps to the
/// same bucket, and whole buckets expire `dedup_ttl` after their last write.
pub fn dedup_key(group: &str, ts: i64) -> String {
    format!("astra:dedup:{group}:{}", ts.div_euclid(3_600_000))
}

#[derive(Default)]
struct Keys {
    list: Vec<String>,
    index: HashMap<String, usize>,
}

impl Keys {
    fn idx(&mut self, k: &str) -> usize {
        if let Some(i) = self.index.get(k) {
            return *i;
        }
        self.list.push(k.to_string());
        let i = self.list.len();
        self.index.insert(k.to_string(), i);
        i
    }
}

/// Commits one round for a batch of events of `group` read from `stream`.
pub async fn commit_round(
    redis: &Redis,
    group: &str,
    stream: &str,
    dedup_ttl_secs: u64,
    items: &[RoundItem<'_>],
) -> Result<Vec<RoundOutcome>, BusError> {
    let has_chain = items
        .iter()
        .any(|it| it.ops.iter().any(|o| o.cmd == "CHAINAPPEND"));
    let _chain_guard = if has_chain {
        Some(CHAIN_LOCK.lock().await)
    } else {
        None
    };
    // Current head of every chain appended to in this round (one pipelined read).
    let mut heads: HashMap<String, String> = HashMap::new();
    if has_chain {
        let mut names: Vec<String> = items
            .iter()
            .flat_map(|it| it.ops.iter())
            .filter(|o| o.cmd == "CHAINAPPEND")
            .map(|o| o.key.clone())
            .collect();
        names.sort();
        names.dedup();
        let cmds = names
            .iter()
            .map(|k| ("GET", vec![arg(k.as_str())]))
            .collect();
        for (k, r) in names.into_iter().zip(redis.pipeline(cmds).await?) {
            heads.insert(k, as_string(&r?).unwrap_or_default());
        }
    }
    let mut keys = Keys::default();
    keys.idx(stream);
    let mut args: Vec<Value> = Vec::with_capacity(8 + items.len() * 16);
    args.push(arg(group));
    args.push(arg(dedup_ttl_secs.max(1) as i64));
    args.push(arg(items.len() as i64));
    for it in items {
        args.push(arg(keys.idx(&dedup_key(group, it.event_ts)) as i64));
        args.push(arg(it.event_id));
        args.push(arg(it.entry_id));
        args.push(arg(it.round as i64));
        args.push(arg(if it.is_final { "1" } else { "0" }));
        args.push(arg(it.ops.len() as i64));
        args.push(arg(if it.is_final { it.emits.len() } else { 0 } as i64));
        for op in it.ops {
            if op.cmd == "CHAINAPPEND" {
                // Link computed here from the head as read; the script appends only if the
                // head has not moved meanwhile.
                let record = op.args.first().map(Vec::as_slice).unwrap_or_default();
                let prev = heads.get(&op.key).cloned().unwrap_or_default();
                let hash = chain_link(&prev, record);
                let entry = rmp_serde::to_vec(&(
                    prev.as_str(),
                    hash.as_str(),
                    serde_bytes::Bytes::new(record),
                ))
                .map_err(|e| BusError::protocol("chain entry", e.to_string()))?;
                args.push(arg("CHAINCAS"));
                args.push(arg(keys.idx(&op.key) as i64));
                args.push(arg(op.key2.as_deref().map_or(0, |k| keys.idx(k)) as i64));
                args.push(arg(3));
                args.push(arg(prev.as_str()));
                args.push(arg(hash.as_str()));
                args.push(Value::Bytes(entry.into()));
                heads.insert(op.key.clone(), hash);
                continue;
            }
            args.push(arg(op.cmd));
            args.push(arg(keys.idx(&op.key) as i64));
            args.push(arg(op.key2.as_deref().map_or(0, |k| keys.idx(k)) as i64));
            args.push(arg(op.args.len() as i64));
            for a in &op.args {
                args.push(Value::Bytes(a.clone().into()));
            }
        }
        if it.is_final {
            for (s, env) in &it.emits {
                args.push(arg(keys.idx(s) as i64));
                let fields = env.to_fields();
                args.push(arg(fields.len() as i64));
                for (k, v) in fields {
                    args.push(arg(k));
                    args.push(Value::Bytes(v.into()));
                }
            }
        }
    }
    let key_values: Vec<Value> = keys.list.iter().map(|k| arg(k.as_str())).collect();
    let reply = COMMIT.call(redis, key_values, args).await?;
    let rows = as_array(reply).ok_or_else(|| BusError::protocol("commit", "not an array"))?;
    if rows.len() != items.len() {
        return Err(BusError::protocol(
            "commit",
            format!("{} results for {} events", rows.len(), items.len()),
        ));
    }
    rows.into_iter().map(parse_row).collect()
}

fn parse_row(row: Value) -> Result<RoundOutcome, BusError> {
    let cols = as_array(row).ok_or_else(|| BusError::protocol("commit", "row not an array"))?;
    let status = cols
        .first()
        .and_then(as_int)
        .ok_or_else(|| BusError::protocol("commit", "row without status"))?;
    let payload = cols.get(1).and_then(as_bytes).unwrap_or_default();
    let replies = |p: &[u8]| -> Result<Vec<Reply>, BusError> {
        let r: Reply = rmp_serde::from_slice(p)
            .map_err(|e| BusError::protocol("commit", format!("replies: {e}")))?;
        Ok(match r {
            Reply::Array(a) => a,
            Reply::Nil => vec![],
            other => vec![other],
        })
    };
    Ok(match status {
        0 => RoundOutcome::Applied(replies(&payload)?),
        1 => RoundOutcome::Replayed(replies(&payload)?),
        2 => RoundOutcome::AlreadyDone,
        5 => RoundOutcome::Conflict,
        _ => RoundOutcome::Failed(String::from_utf8_lossy(&payload).into_owned()),
    })
}
