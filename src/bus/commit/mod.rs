//! The commit protocol (SPEC "Commit protocol"): the runtime applies what handlers decided.
//!
//! One Redis node (or a Sentinel-managed primary): one `commit.lua` call per batch per
//! handler round applies every event's ops, publishes the final round's derived events and
//! acknowledges the entries, atomically, after checking every precondition of every write
//! (key types, the entry still pending in the group, increments that stay integers). Redis
//! Cluster: [`cluster::commit_round_cluster`], atomic per hash slot, XACK last.
//!
//! De-duplication is by (group, event id), never by a producer-supplied field:
//! - an event's progress over rounds lives in `astra:dedup:<group>:progress` until it
//!   completes (no TTL: a paused consumer or a dead letter replayed weeks later resumes
//!   where it stopped, it never re-applies a round);
//! - a completed event is remembered in done-marker generations
//!   (`astra:dedup:<group>:<generation>`, a generation being `dedup_ttl` of the daemon's
//!   clock, kept until the next one ends): every commit reads the newest two, so a
//!   completed event is recognised for at least `dedup_ttl` after it completed, whatever
//!   its `ts` says.
//!
//! Files: this one (types, markers, the single-node round), [`encode`] (a round as a
//! script call and back), [`cluster`] (the round in Redis Cluster), and the scripts
//! `commit.lua`, `commit_slot.lua` with their shared prelude `commit_common.lua`.

mod cluster;
mod encode;

pub use encode::MAX_OP_ARGS;
pub(crate) use encode::{COMMIT, COMMIT_SLOT};

use std::collections::HashMap;
use std::time::Duration;

use super::client::{BusError, Redis, arg, as_array, as_string};
use crate::envelope::{Envelope, now_ms};
use crate::handlers::{Op, Reply};
use encode::{Answer, encode_call, letter_name, parse_reply, unsendable, wants};

/// Who commits: the group, the stream the entries were read from (where they are
/// acknowledged), this daemon's consumer name in the group, and the de-duplication window.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Group name (the de-duplication identity is this group and the event id).
    pub group: &'a str,
    /// Stream the entries were read from.
    pub stream: &'a str,
    /// This daemon's consumer in the group.
    pub consumer: &'a str,
    /// How long a completed event is remembered (at least).
    pub dedup_ttl: Duration,
}

/// One event's part of a round.
pub struct RoundItem<'a> {
    /// The event's id (de-duplication is by event id, not entry id).
    pub event_id: &'a str,
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

/// What a commit did with one event's round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundOutcome {
    /// Applied now; the replies (of a non-final round; empty for a final one).
    Applied(Vec<Reply>),
    /// Applied by an earlier delivery; the recorded replies (nothing written now).
    Replayed(Vec<Reply>),
    /// The event was completed before (a duplicate entry): acknowledged only.
    AlreadyDone,
    /// The entry is no longer pending in the group (another consumer finished or
    /// dead-lettered it while this one held it): nothing written, nothing acknowledged.
    NotOurs,
    /// A precondition failed (key type, increment) or an op failed: dead-letter it. What
    /// it applied before failing, if anything, is recorded and never applied again.
    Failed(String),
    /// A hash-chain head moved between reading it and committing (another appender won):
    /// nothing was written; commit the round again.
    Conflict,
}

/// The hash-chain link function lives with the handler interface (the audit trail
/// verifies with it too).
pub use crate::handler::chain_link;

/// Serialises this process's hash-chain appends (read head → commit), so its own readers
/// never conflict with each other; other processes are kept out by the script's
/// compare-and-set on the head.
static CHAIN_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Length of a done-marker (and cluster progress) generation: the de-duplication window,
/// at least 1 s.
fn generation_ms(dedup_ttl: Duration) -> i64 {
    (dedup_ttl.as_millis() as i64).max(1000)
}

/// The two done-marker generations a commit at `now_ms` reads, newest first (the first
/// is the one it writes). `tag` puts them in one cluster slot (`None`: untagged).
fn done_keys(group: &str, tag: Option<&str>, dedup_ttl: Duration, now_ms: i64) -> [String; 2] {
    let g = now_ms.div_euclid(generation_ms(dedup_ttl));
    let prefix = match tag {
        Some(t) => format!("astra:dedup:{{{t}}}:{group}"),
        None => format!("astra:dedup:{group}"),
    };
    [format!("{prefix}:{g}"), format!("{prefix}:{}", g - 1)]
}

/// Seconds the newest generation must live after a write at `now_ms`: until the end of
/// the next generation, the last one that reads it.
fn done_ttl_secs(dedup_ttl: Duration, now_ms: i64) -> i64 {
    let len = generation_ms(dedup_ttl);
    let end = (now_ms.div_euclid(len) + 2) * len;
    ((end - now_ms) + 999) / 1000 + 1
}

/// The done-marker generations of `group` read now (newest first).
pub fn done_marker_keys(group: &str, dedup_ttl: Duration) -> [String; 2] {
    done_keys(group, None, dedup_ttl, now_ms())
}

/// The hash holding `group`'s per-event progress (single node).
pub fn progress_key(group: &str) -> String {
    format!("astra:dedup:{group}:progress")
}

/// The progress generations of `group`'s ops in one cluster slot, newest first (the keys
/// live in that slot).
pub fn slot_progress_keys(group: &str, slot: u16, dedup_ttl: Duration) -> [String; 2] {
    done_keys(
        &format!("{group}:p"),
        Some(cluster::slot_tag(slot)),
        dedup_ttl,
        now_ms(),
    )
}

/// The generations of `group`'s "started" markers in a Redis Cluster (newest first): an
/// event is marked when a delivery of it reaches the commit, i.e. its handler ran to the
/// end at least once. Kept like the done markers.
pub(crate) fn started_keys(group: &str, dedup_ttl: Duration, now_ms: i64) -> [String; 2] {
    done_keys(&format!("{group}:s"), None, dedup_ttl, now_ms)
}

/// What the commit protocol remembers of an event (asked for an entry that reached
/// `max_deliveries`, before it is dead-lettered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    /// Completed: its effects are applied and its derived events published; the entry
    /// only needs acknowledging (a crash came between the done marker and the XACK, or
    /// the entry is a second copy of a completed event).
    Done,
    /// A delivery reached the commit and may have applied part of it (an earlier round on
    /// one node; some hash slots in a cluster): the handler ran to the end before, so it
    /// is finished, not dead-lettered half applied.
    Started,
    /// Nothing recorded: no delivery ever got as far as committing.
    Nothing,
}

/// What is remembered of each of `event_ids` in `target.group` (one pipelined read of
/// single-key HMGETs: the done-marker generations, and the progress hash on one node or
/// the started-marker generations in a cluster). Only entries over `max_deliveries` ask,
/// so this costs nothing on the hot path.
pub async fn recall(
    redis: &Redis,
    target: Target<'_>,
    event_ids: &[&str],
) -> Result<Vec<Memory>, BusError> {
    if event_ids.is_empty() {
        return Ok(vec![]);
    }
    let now = now_ms();
    let done = done_keys(target.group, None, target.dedup_ttl, now);
    let started: Vec<String> = if redis.is_cluster() {
        started_keys(target.group, target.dedup_ttl, now).to_vec()
    } else {
        vec![progress_key(target.group)]
    };
    let hmget = |k: &str| {
        let mut a = vec![arg(k)];
        a.extend(event_ids.iter().map(|id| arg(*id)));
        ("HMGET", a)
    };
    let cmds = done
        .iter()
        .chain(started.iter())
        .map(|k| hmget(k))
        .collect();
    let mut out = vec![Memory::Nothing; event_ids.len()];
    for (n, r) in redis.pipeline(cmds).await?.into_iter().enumerate() {
        for (i, v) in as_array(r?).unwrap_or_default().iter().enumerate() {
            let Some(v) = as_string(v) else { continue };
            if i >= out.len() {
                break;
            }
            if n < done.len() && v == "D" {
                out[i] = Memory::Done;
            } else if n >= done.len() && out[i] == Memory::Nothing {
                out[i] = Memory::Started;
            }
        }
    }
    Ok(out)
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

/// Commits one round for a batch of events that `target.group` read from `target.stream`.
///
/// On one node (or a Sentinel-managed primary): one atomic script call, or a few when
/// events of the batch need one key as two different types or a key has the wrong type
/// (the events concerned fail, the others are committed). In a Redis Cluster: see
/// [`cluster::commit_round_cluster`].
pub async fn commit_round(
    redis: &Redis,
    target: Target<'_>,
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
    let heads = if has_chain {
        read_heads(redis, items).await?
    } else {
        HashMap::new()
    };
    if redis.is_cluster() {
        return cluster::commit_round_cluster(redis, target, items, heads).await;
    }
    let mut out: Vec<Option<RoundOutcome>> = vec![None; items.len()];
    for (i, it) in items.iter().enumerate() {
        if let Some(why) = unsendable(it) {
            out[i] = Some(RoundOutcome::Failed(why));
        }
    }
    let mut todo: Vec<usize> = (0..items.len()).filter(|i| out[*i].is_none()).collect();
    while !todo.is_empty() {
        let mut heads = heads.clone();
        let call = encode_call(target, items, &todo, &mut heads)?;
        let reply = COMMIT.call(redis, call.keys, call.args).await?;
        let finals: Vec<bool> = call.events.iter().map(|i| items[*i].is_final).collect();
        match parse_reply(reply, call.events.len(), |k| !finals[k])? {
            Answer::BadKey { index, actual } => {
                // Nothing was written: the events needing that key fail, the rest go again.
                let key = &call.key_names[index - 1];
                let want = call.need[index - 1];
                for &i in &call.events {
                    let it = &items[i];
                    let ops: Vec<&Op> = it.ops.iter().collect();
                    let emits = it.is_final.then_some(it.emits.as_slice());
                    if let Some((_, t)) = wants(&ops, emits)
                        .into_iter()
                        .find(|(k, t)| *k == key.as_str() && *t == want)
                    {
                        out[i] = Some(RoundOutcome::Failed(type_reason(it, key, t, &actual)));
                    }
                }
                // Defensive: if no event claimed the key, fail them all rather than loop.
                if call.events.iter().all(|i| out[*i].is_none()) {
                    for &i in &call.events {
                        out[i] = Some(RoundOutcome::Failed(format!(
                            "{key} holds a {actual}, not a {}",
                            letter_name(want)
                        )));
                    }
                }
            }
            Answer::Rows(rows) => {
                for (&i, row) in call.events.iter().zip(rows) {
                    out[i] = Some(row.into_outcome(items[i].round)?);
                }
            }
        }
        // What has no outcome yet goes again: the rest of a call refused for one key, and
        // the events deferred for needing a key as another type.
        todo = call.events;
        todo.extend(call.deferred);
        todo.retain(|i| out[*i].is_none());
    }
    Ok(out
        .into_iter()
        .map(|o| o.expect("every event has an outcome"))
        .collect())
}

/// "HSET needs a hash at k but it holds a zset" for the first op or emit of `it` on `key`.
fn type_reason(it: &RoundItem<'_>, key: &str, t: u8, actual: &str) -> String {
    let what = it
        .ops
        .iter()
        .find(|o| o.key == key || o.key2.as_deref() == Some(key))
        .map(|o| {
            if o.cmd == "CHAINAPPEND" {
                "CHAINAPPEND"
            } else {
                o.cmd
            }
        })
        .unwrap_or("XADD");
    format!(
        "{what} needs a {} at {key} but it holds a {actual}",
        letter_name(t)
    )
}
