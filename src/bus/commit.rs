//! The commit protocol (SPEC "Commit protocol"), single-node form: one script call per
//! batch per handler round applies every event's ops with its de-duplication marker, and
//! in the final round also publishes the derived events and acknowledges the entries
//! (one XACK for the whole batch). See `commit.lua` for the exact semantics.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::client::{BusError, Redis, Value, arg, as_array, as_bytes, as_int, as_string, keyslot};
use super::script::Script;
use crate::envelope::Envelope;
use crate::handlers::{Op, Reply};

pub(crate) static COMMIT: Script = Script::new("commit", include_str!("commit.lua"));

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

/// One event's share of one script call: its marker bucket and the ops (all of the
/// round's, on one node; one hash slot's, in a cluster).
struct CallEvent<'a> {
    dkey: String,
    item: &'a RoundItem<'a>,
    /// Whether the script finalises the event (publishes, marks done, acknowledges).
    finalise: bool,
    ops: Vec<&'a Op>,
}

/// Encodes one commit-script call (see `commit.lua` for the layout). `first_key` is
/// KEYS[1]: the source stream, or in per-slot mode that slot's marker key. Chain links are
/// computed from `heads` (and `heads` advanced) in call order.
fn encode_call(
    group: &str,
    dedup_ttl_secs: u64,
    per_slot: bool,
    first_key: &str,
    events: &[CallEvent<'_>],
    heads: &mut HashMap<String, String>,
) -> Result<(Vec<Value>, Vec<Value>), BusError> {
    let mut keys = Keys::default();
    keys.idx(first_key);
    let mut args: Vec<Value> = Vec::with_capacity(8 + events.len() * 16);
    args.push(arg(group));
    args.push(arg(dedup_ttl_secs.max(1) as i64));
    args.push(arg(events.len() as i64));
    args.push(arg(if per_slot { "1" } else { "0" }));
    for ce in events {
        let it = ce.item;
        args.push(arg(keys.idx(&ce.dkey) as i64));
        args.push(arg(it.event_id));
        args.push(arg(it.entry_id));
        args.push(arg(it.round as i64));
        args.push(arg(if ce.finalise { "1" } else { "0" }));
        args.push(arg(ce.ops.len() as i64));
        args.push(arg(if ce.finalise { it.emits.len() } else { 0 } as i64));
        for op in &ce.ops {
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
        if ce.finalise {
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
    Ok((key_values, args))
}

/// Reads the current head of every hash chain appended to in this round (one pipelined
/// read; each GET is a single key, so this works in a cluster too).
async fn read_heads(
    redis: &Redis,
    items: &[RoundItem<'_>],
) -> Result<HashMap<String, String>, BusError> {
    let mut heads = HashMap::new();
    let mut names: Vec<String> = items
        .iter()
        .flat_map(|it| it.ops.iter())
        .filter(|o| o.cmd == "CHAINAPPEND")
        .map(|o| o.key.clone())
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Ok(heads);
    }
    let cmds = names
        .iter()
        .map(|k| ("GET", vec![arg(k.as_str())]))
        .collect();
    for (k, r) in names.into_iter().zip(redis.pipeline(cmds).await?) {
        heads.insert(k, as_string(&r?).unwrap_or_default());
    }
    Ok(heads)
}

/// Commits one round for a batch of events of `group` read from `stream`.
///
/// On one node (or a Sentinel-managed primary): one atomic script call. In a Redis
/// Cluster: see [`commit_round_cluster`].
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
    let mut heads = if has_chain {
        read_heads(redis, items).await?
    } else {
        HashMap::new()
    };
    if redis.is_cluster() {
        return commit_round_cluster(redis, group, stream, dedup_ttl_secs, items, heads).await;
    }
    let events: Vec<CallEvent> = items
        .iter()
        .map(|it| CallEvent {
            dkey: dedup_key(group, it.event_ts),
            item: it,
            finalise: it.is_final,
            ops: it.ops.iter().collect(),
        })
        .collect();
    let (keys, args) = encode_call(group, dedup_ttl_secs, false, stream, &events, &mut heads)?;
    let reply = COMMIT.call(redis, keys, args).await?;
    parse_rows(reply, items.len())
}

fn parse_rows(reply: Value, n: usize) -> Result<Vec<RoundOutcome>, BusError> {
    let rows = as_array(reply).ok_or_else(|| BusError::protocol("commit", "not an array"))?;
    if rows.len() != n {
        return Err(BusError::protocol(
            "commit",
            format!("{} results for {n} events", rows.len()),
        ));
    }
    rows.into_iter().map(parse_row).collect()
}

/// A hash tag for every cluster slot: `SLOT_TAGS[s]` hashes to slot `s`, so a key
/// containing `{SLOT_TAGS[s]}` lives in slot `s`.
fn slot_tag(slot: u16) -> &'static str {
    static TAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags: Vec<Option<String>> = vec![None; 16384];
        let mut left = tags.len();
        let mut i = 0u64;
        while left > 0 {
            let t = format!("{i:x}");
            let s = keyslot(t.as_bytes()) as usize;
            if tags[s].is_none() {
                tags[s] = Some(t);
                left -= 1;
            }
            i += 1;
        }
        tags.into_iter().map(Option::unwrap_or_default).collect()
    });
    &tags[slot as usize % tags.len()]
}

/// The de-duplication marker of `group`'s events (bucketed like [`dedup_key`]) for the
/// ops in cluster slot `slot`; the key itself lives in that slot.
pub fn slot_dedup_key(group: &str, ts: i64, slot: u16) -> String {
    format!(
        "astra:dedup:{{{}}}:{group}:{}",
        slot_tag(slot),
        ts.div_euclid(3_600_000)
    )
}

/// One hash slot's share of a round: (event index, indices of its ops in that slot).
type SlotShare = Vec<(usize, Vec<usize>)>;

/// The round in Redis Cluster (SPEC "Commit protocol": effectively-once across slots).
///
/// 1. Events at their first or final round whose completion marker (`dedup_key`, one key per group and hour)
///    says done are only acknowledged (duplicate entry, zombie, lost acknowledgement).
/// 2. Every event's ops are split by hash slot; each slot touched gets one script call
///    (concurrent, auto-pipelined) that applies that slot's ops with that slot's marker
///    (`slot_dedup_key`), atomically per slot. A slot already applied for this round (an
///    earlier delivery, or a retry after a failure elsewhere) replays its recorded
///    replies, so a state change never applies twice. Replies are put back in op order.
/// 3. Final round: the derived events are XADDed (deterministic event ids: a crash before
///    step 4 may leave a second entry with the same id, which consumers skip), the
///    completion markers set, and XACK comes last, once for the batch.
async fn commit_round_cluster(
    redis: &Redis,
    group: &str,
    stream: &str,
    dedup_ttl_secs: u64,
    items: &[RoundItem<'_>],
    mut heads: HashMap<String, String>,
) -> Result<Vec<RoundOutcome>, BusError> {
    let ttl = dedup_ttl_secs.max(1) as i64;
    let mut out: Vec<Option<RoundOutcome>> = vec![None; items.len()];
    // 1. Completed before? (Checked where it matters: a first round, before anything is
    // applied, and a final round, before anything is published.)
    let firsts: Vec<usize> = (0..items.len())
        .filter(|i| items[*i].round == 0 || items[*i].is_final)
        .collect();
    if !firsts.is_empty() {
        let cmds = firsts
            .iter()
            .map(|i| {
                let it = &items[*i];
                (
                    "HGET",
                    vec![arg(dedup_key(group, it.event_ts)), arg(it.event_id)],
                )
            })
            .collect();
        for (i, r) in firsts.iter().zip(redis.pipeline(cmds).await?) {
            if as_string(&r?).as_deref() == Some("D") {
                out[*i] = Some(RoundOutcome::AlreadyDone);
            }
        }
    }
    // 2. One call per hash slot touched.
    let mut slots: std::collections::BTreeMap<u16, SlotShare> = Default::default();
    for (i, it) in items.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        let mut by_slot: std::collections::BTreeMap<u16, Vec<usize>> = Default::default();
        for (j, op) in it.ops.iter().enumerate() {
            let slot = keyslot(op.key.as_bytes());
            if let Some(k2) = &op.key2
                && keyslot(k2.as_bytes()) != slot
            {
                out[i] = Some(RoundOutcome::Failed(format!(
                    "{} {} {}: keys in two hash slots (give them one hash tag)",
                    op.cmd, op.key, k2
                )));
                break;
            }
            by_slot.entry(slot).or_default().push(j);
        }
        if out[i].is_some() {
            continue;
        }
        for (slot, ops) in by_slot {
            slots.entry(slot).or_default().push((i, ops));
        }
    }
    let mut calls = vec![];
    let mut layout: Vec<SlotShare> = vec![];
    for (slot, evs) in slots {
        let first_key = slot_dedup_key(group, 0, slot);
        let events: Vec<CallEvent> = evs
            .iter()
            .map(|(i, ops)| CallEvent {
                dkey: slot_dedup_key(group, items[*i].event_ts, slot),
                item: &items[*i],
                finalise: false,
                ops: ops.iter().map(|j| &items[*i].ops[*j]).collect(),
            })
            .collect();
        let (keys, args) =
            encode_call(group, dedup_ttl_secs, true, &first_key, &events, &mut heads)?;
        // Spawned so every slot's call goes out at once (one auto-pipelined client).
        let r = redis.clone();
        calls.push(tokio::spawn(
            async move { COMMIT.call(&r, keys, args).await },
        ));
        layout.push(evs);
    }
    let mut replies = Vec::with_capacity(calls.len());
    for c in calls {
        replies.push(
            c.await
                .map_err(|e| BusError::Unavailable(format!("commit task: {e}")))?,
        );
    }
    // Per event: replies in op order, and how its slots went.
    let mut merged: Vec<Vec<Reply>> = items
        .iter()
        .map(|it| vec![Reply::Nil; it.ops.len()])
        .collect();
    let mut applied = vec![false; items.len()];
    let mut conflict = vec![false; items.len()];
    let mut failed: Vec<Option<String>> = vec![None; items.len()];
    for (evs, reply) in layout.into_iter().zip(replies) {
        let rows = parse_rows(reply?, evs.len())?;
        for ((i, ops), row) in evs.into_iter().zip(rows) {
            let replies = match row {
                RoundOutcome::Applied(r) => {
                    applied[i] = true;
                    r
                }
                RoundOutcome::Replayed(r) => r,
                RoundOutcome::Conflict => {
                    conflict[i] = true;
                    continue;
                }
                RoundOutcome::Failed(reason) => {
                    failed[i].get_or_insert(reason);
                    continue;
                }
                RoundOutcome::AlreadyDone => {
                    return Err(BusError::protocol(
                        "commit",
                        "per-slot call finalised an event",
                    ));
                }
            };
            for (j, r) in ops.into_iter().zip(replies) {
                merged[i][j] = r;
            }
        }
    }
    // 3. Publish what the final round derived, mark completion, acknowledge.
    let mut xadds = vec![];
    let mut done_marks = vec![];
    let mut acks = vec![];
    for (i, it) in items.iter().enumerate() {
        if let Some(o) = &out[i] {
            if *o == RoundOutcome::AlreadyDone {
                acks.push(it.entry_id);
            }
            continue;
        }
        let o = if let Some(reason) = failed[i].take() {
            RoundOutcome::Failed(reason)
        } else if conflict[i] {
            RoundOutcome::Conflict
        } else {
            let replies = std::mem::take(&mut merged[i]);
            if it.is_final {
                for (s, env) in &it.emits {
                    let mut a = vec![arg(s.as_str()), arg("*")];
                    for (k, v) in env.to_fields() {
                        a.push(arg(k));
                        a.push(Value::Bytes(v.into()));
                    }
                    xadds.push(("XADD", a));
                }
                done_marks.push(i);
                acks.push(it.entry_id);
            }
            if applied[i] || it.ops.is_empty() {
                RoundOutcome::Applied(replies)
            } else {
                RoundOutcome::Replayed(replies)
            }
        };
        out[i] = Some(o);
    }
    if !xadds.is_empty() {
        for r in redis.pipeline(xadds).await? {
            r?;
        }
    }
    if !done_marks.is_empty() {
        let mut by_key: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
        for i in &done_marks {
            let a = by_key
                .entry(dedup_key(group, items[*i].event_ts))
                .or_default();
            a.push(arg(items[*i].event_id));
            a.push(arg("D"));
        }
        let mut cmds = vec![];
        for (k, mut a) in by_key {
            a.insert(0, arg(k.as_str()));
            cmds.push(("HSET", a));
            cmds.push(("EXPIRE", vec![arg(k.as_str()), arg(ttl)]));
        }
        for r in redis.pipeline(cmds).await? {
            r?;
        }
    }
    for chunk in acks.chunks(1000) {
        let mut a = vec![arg(stream), arg(group)];
        a.extend(chunk.iter().map(|id| arg(*id)));
        redis.cmd("XACK", a).await?;
    }
    Ok(out
        .into_iter()
        .map(|o| o.expect("every event has an outcome"))
        .collect())
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
