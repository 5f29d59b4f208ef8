//! The commit protocol (SPEC "Commit protocol"): the runtime applies what handlers decided.
//!
//! One Redis node (or a Sentinel-managed primary): one `commit.lua` call per batch per
//! handler round applies every event's ops, publishes the final round's derived events and
//! acknowledges the entries, atomically, after checking every precondition of every write
//! (key types, the entry still pending in the group, increments that stay integers). Redis
//! Cluster: [`commit_round_cluster`], atomic per hash slot, XACK last.
//!
//! De-duplication is by (group, event id), never by a producer-supplied field:
//! - an event's progress over rounds lives in `astra:dedup:<group>:progress` until it
//!   completes (no TTL: a paused consumer or a dead letter replayed weeks later resumes
//!   where it stopped, it never re-applies a round);
//! - a completed event is remembered in done-marker generations
//!   (`astra:dedup:<group>:<generation>`, a generation being `dedup_ttl / 2` of the
//!   daemon's clock): every commit reads the newest three, so a completed event is
//!   recognised for at least `dedup_ttl` after it completed, whatever its `ts` says.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use super::client::{BusError, Redis, Value, arg, as_array, as_bytes, as_int, as_string, keyslot};
use super::script::Script;
use crate::envelope::{Envelope, now_ms};
use crate::handlers::{KeyType, Op, Reply};

/// A commit script's source: its shebang, the shared prelude (`commit_common.lua`) with the
/// allowed command table filled in from the one list
/// ([`crate::handlers::allowed_commands`], plus the script-side `CHAINCAS`), then its body.
fn with_allowed(source: &str) -> &'static str {
    let mut table = String::from("{ CHAINCAS = true");
    for c in crate::handlers::allowed_commands().filter(|c| *c != "CHAINAPPEND") {
        table.push_str(&format!(", {c} = true"));
    }
    table.push_str(" }");
    let common = include_str!("commit_common.lua").replacen("{} -- @ALLOWED@", &table, 1);
    let body = source
        .strip_prefix("#!lua\n")
        .expect("a commit script starts with #!lua");
    Box::leak(format!("#!lua\n{common}\n{body}").into_boxed_str())
}

pub(crate) static COMMIT: LazyLock<Script> =
    LazyLock::new(|| Script::new("commit", with_allowed(include_str!("commit.lua"))));
pub(crate) static COMMIT_SLOT: LazyLock<Script> =
    LazyLock::new(|| Script::new("commit_slot", with_allowed(include_str!("commit_slot.lua"))));

/// Most arguments one op or one derived event may carry (Lua's unpack has a stack limit
/// of about 8,000; the scripts unpack one op or event at a time).
pub const MAX_OP_ARGS: usize = 4000;

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

/// Length of a done-marker generation: half the de-duplication window (at least 1 s).
fn generation_ms(dedup_ttl: Duration) -> i64 {
    (dedup_ttl.as_millis() as i64 / 2).max(1000)
}

/// The three done-marker generations a commit at `now_ms` reads, newest first (the first
/// is the one it writes). `tag` puts them in one cluster slot (`None`: untagged).
fn done_keys(group: &str, tag: Option<&str>, dedup_ttl: Duration, now_ms: i64) -> [String; 3] {
    let g = now_ms.div_euclid(generation_ms(dedup_ttl));
    let prefix = match tag {
        Some(t) => format!("astra:dedup:{{{t}}}:{group}"),
        None => format!("astra:dedup:{group}"),
    };
    [
        format!("{prefix}:{g}"),
        format!("{prefix}:{}", g - 1),
        format!("{prefix}:{}", g - 2),
    ]
}

/// Seconds the newest done-marker generation must live after a write: until the end of
/// the generation two after it (so 3 generations, ≥ `dedup_ttl`, see every mark).
fn done_ttl_secs(dedup_ttl: Duration) -> i64 {
    (3 * generation_ms(dedup_ttl) + 999) / 1000
}

/// The done-marker generations of `group` read now (newest first).
pub fn done_marker_keys(group: &str, dedup_ttl: Duration) -> [String; 3] {
    done_keys(group, None, dedup_ttl, now_ms())
}

/// The hash holding `group`'s per-event progress (single node).
pub fn progress_key(group: &str) -> String {
    format!("astra:dedup:{group}:progress")
}

/// The progress generations of `group`'s ops in one cluster slot, newest first (the keys
/// live in that slot).
pub fn slot_progress_keys(group: &str, slot: u16, dedup_ttl: Duration) -> [String; 3] {
    done_keys(
        &format!("{group}:p"),
        Some(slot_tag(slot)),
        dedup_ttl,
        now_ms(),
    )
}

/// The letter the scripts use for a key type.
fn type_letter(t: KeyType) -> u8 {
    match t {
        KeyType::Hash => b'h',
        KeyType::ZSet => b'z',
        KeyType::Set => b's',
        KeyType::String => b't',
        KeyType::List => b'l',
        KeyType::Any => b'-',
    }
}

/// The keys of one script call with the type each must have.
#[derive(Default)]
struct Keys {
    list: Vec<String>,
    need: Vec<u8>,
    index: HashMap<String, usize>,
}

impl Keys {
    /// 1-based index of `k`, added with need `t` ('-' = unchecked). `Err` when the call
    /// already needs `k` with another type (the event goes to a later call).
    fn add(&mut self, k: &str, t: u8) -> Result<usize, ()> {
        if let Some(&i) = self.index.get(k) {
            let have = &mut self.need[i - 1];
            if t == b'-' || *have == t {
                return Ok(i);
            }
            if *have == b'-' {
                *have = t;
                return Ok(i);
            }
            return Err(());
        }
        self.list.push(k.to_string());
        self.need.push(t);
        let i = self.list.len();
        self.index.insert(k.to_string(), i);
        Ok(i)
    }

    /// Whether adding these (key, type) pairs would conflict with what the call needs.
    fn fits<'k>(&self, wants: impl IntoIterator<Item = (&'k str, u8)>) -> bool {
        let mut local: HashMap<&str, u8> = HashMap::new();
        for (k, t) in wants {
            if t == b'-' {
                continue;
            }
            let have = self
                .index
                .get(k)
                .map(|i| self.need[i - 1])
                .filter(|h| *h != b'-')
                .or_else(|| local.get(k).copied());
            match have {
                Some(h) if h != t => return false,
                _ => {
                    local.insert(k, t);
                }
            }
        }
        true
    }
}

/// The (key, type letter) pairs one event's round needs.
fn wants<'a>(ops: &[&'a Op], emits: Option<&'a [(String, Envelope)]>) -> Vec<(&'a str, u8)> {
    let mut w = vec![];
    for op in ops {
        if op.cmd == "CHAINAPPEND" {
            w.push((op.key.as_str(), b't'));
            if let Some(k2) = &op.key2 {
                w.push((k2.as_str(), b'l'));
            }
        } else {
            w.push((op.key.as_str(), type_letter(op.key_type())));
        }
    }
    for (s, _) in emits.unwrap_or_default() {
        w.push((s.as_str(), b'x'));
    }
    w
}

/// Why an op or a derived event cannot be sent at all (too many arguments).
fn too_large(ops: &[&Op], emits: &[(String, Envelope)]) -> Option<String> {
    for op in ops {
        if op.args.len() > MAX_OP_ARGS {
            return Some(format!(
                "{} {}: {} arguments, at most {MAX_OP_ARGS}",
                op.cmd,
                op.key,
                op.args.len()
            ));
        }
    }
    None.or_else(|| {
        emits.iter().find_map(|(s, e)| {
            let n = e.to_fields().len() * 2;
            (n > MAX_OP_ARGS).then(|| format!("derived event to {s}: {n} arguments"))
        })
    })
}

/// Why an event's round can never be committed as it is: an op or derived event too large
/// to pass, or one key used as two types by the event itself.
fn unsendable(it: &RoundItem<'_>) -> Option<String> {
    let ops: Vec<&Op> = it.ops.iter().collect();
    if let Some(why) = too_large(&ops, &it.emits) {
        return Some(why);
    }
    let emits = it.is_final.then_some(it.emits.as_slice());
    let w = wants(&ops, emits);
    if !Keys::default().fits(w.iter().copied()) {
        let mut seen: HashMap<&str, u8> = HashMap::new();
        for (k, t) in w {
            if t == b'-' {
                continue;
            }
            if let Some(h) = seen.insert(k, t)
                && h != t
            {
                return Some(format!(
                    "the round uses {k} both as a {} and as a {}",
                    letter_name(h),
                    letter_name(t)
                ));
            }
        }
    }
    None
}

/// Appends one op as `[cmd, key index, n_args, args...]` (CHAINAPPEND becomes CHAINCAS
/// with its link computed from `heads`).
fn push_op(
    args: &mut Vec<Value>,
    keys: &mut Keys,
    op: &Op,
    heads: &mut HashMap<String, String>,
) -> Result<(), BusError> {
    if op.cmd == "CHAINAPPEND" {
        // The link is computed here from the head as read; the script appends only if the
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
        let head = keys.add(&op.key, b't').unwrap_or(0);
        let log = op
            .key2
            .as_deref()
            .map_or(0, |k| keys.add(k, b'l').unwrap_or(0));
        args.extend([
            arg("CHAINCAS"),
            arg(head as i64),
            arg(4),
            arg(log as i64),
            arg(prev.as_str()),
            arg(hash.as_str()),
            Value::Bytes(entry.into()),
        ]);
        heads.insert(op.key.clone(), hash);
        return Ok(());
    }
    let k = keys.add(&op.key, type_letter(op.key_type())).unwrap_or(0);
    args.push(arg(op.cmd));
    args.push(arg(k as i64));
    args.push(arg(op.args.len() as i64));
    for a in &op.args {
        args.push(Value::Bytes(a.clone().into()));
    }
    Ok(())
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
/// [`commit_round_cluster`].
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
        return commit_round_cluster(redis, target, items, heads).await;
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
        match parse_reply(reply, call.events.len())? {
            Reply_::BadKey { index, actual } => {
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
            Reply_::Rows(rows) => {
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

fn letter_name(t: u8) -> &'static str {
    match t {
        b'h' => "hash",
        b'z' => "zset",
        b's' => "set",
        b't' => "string",
        b'l' => "list",
        b'x' => "stream",
        _ => "key",
    }
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

/// One encoded script call.
struct Call {
    keys: Vec<Value>,
    args: Vec<Value>,
    key_names: Vec<String>,
    need: Vec<u8>,
    /// Item indices in the call, in order.
    events: Vec<usize>,
    /// Item indices left for a later call (they need a key as another type).
    deferred: Vec<usize>,
}

/// Encodes one `commit.lua` call for the items `todo` (see the script for the layout).
fn encode_call(
    target: Target<'_>,
    items: &[RoundItem<'_>],
    todo: &[usize],
    heads: &mut HashMap<String, String>,
) -> Result<Call, BusError> {
    let mut keys = Keys::default();
    let _ = keys.add(target.stream, b'-');
    let _ = keys.add(&progress_key(target.group), b'-');
    for k in done_keys(target.group, None, target.dedup_ttl, now_ms()) {
        let _ = keys.add(&k, b'-');
    }
    let mut events = vec![];
    let mut deferred = vec![];
    for &i in todo {
        let it = &items[i];
        let ops: Vec<&Op> = it.ops.iter().collect();
        let emits = it.is_final.then_some(it.emits.as_slice());
        let w = wants(&ops, emits);
        if keys.fits(w.iter().copied()) {
            for (k, t) in w {
                let _ = keys.add(k, t);
            }
            events.push(i);
        } else {
            deferred.push(i);
        }
    }
    let n = events.len();
    let mut args: Vec<Value> = Vec::with_capacity(8 + n * 24);
    args.push(arg(target.group));
    args.push(arg(target.consumer));
    args.push(arg(n as i64));
    args.push(arg("")); // key types, filled in once every key is known
    args.push(arg(done_ttl_secs(target.dedup_ttl)));
    for &i in &events {
        args.push(arg(items[i].event_id));
    }
    for &i in &events {
        args.push(arg(items[i].entry_id));
    }
    args.push(arg("JUSTID"));
    for &i in &events {
        let it = &items[i];
        let start = args.len();
        args.push(arg(0)); // record length, below
        args.push(arg(it.round as i64));
        args.push(arg(if it.is_final { "1" } else { "0" }));
        let chain = it.ops.iter().any(|o| o.cmd == "CHAINAPPEND");
        args.push(arg(if chain { "1" } else { "0" }));
        args.push(arg(it.ops.len() as i64));
        args.push(arg(if it.is_final { it.emits.len() } else { 0 } as i64));
        for op in it.ops {
            push_op(&mut args, &mut keys, op, heads)?;
        }
        if it.is_final {
            for (s, env) in &it.emits {
                let k = keys.add(s, b'x').unwrap_or(0);
                let fields = env.to_fields();
                args.push(arg(k as i64));
                args.push(arg((fields.len() * 2) as i64));
                for (f, v) in fields {
                    args.push(arg(f));
                    args.push(Value::Bytes(v.into()));
                }
            }
        }
        args[start] = arg((args.len() - start) as i64);
    }
    args[3] = Value::Bytes(keys.need.clone().into());
    Ok(Call {
        keys: keys.list.iter().map(|k| arg(k.as_str())).collect(),
        args,
        key_names: keys.list,
        need: keys.need,
        events,
        deferred,
    })
}

/// A script reply: a key of the wrong type, or one row per event.
enum Reply_ {
    BadKey { index: usize, actual: String },
    Rows(Vec<Row>),
}

/// One event's row: status, payload, extra.
struct Row {
    status: i64,
    payload: Vec<u8>,
}

impl Row {
    fn into_outcome(self, round: usize) -> Result<RoundOutcome, BusError> {
        Ok(match self.status {
            0 if self.payload.is_empty() => RoundOutcome::Applied(vec![]),
            0 => RoundOutcome::Applied(decode_replies(&self.payload)?),
            1 => RoundOutcome::Replayed(progress_round(&self.payload, round)?),
            2 => RoundOutcome::AlreadyDone,
            5 => RoundOutcome::Conflict,
            6 => RoundOutcome::NotOurs,
            _ => RoundOutcome::Failed(String::from_utf8_lossy(&self.payload).into_owned()),
        })
    }
}

fn parse_reply(reply: Value, n: usize) -> Result<Reply_, BusError> {
    let flat = as_array(reply).ok_or_else(|| BusError::protocol("commit", "not an array"))?;
    if flat.first().and_then(as_int) == Some(-1) {
        return Ok(Reply_::BadKey {
            index: flat.get(1).and_then(as_int).unwrap_or(0).max(1) as usize,
            actual: flat.get(2).and_then(as_string).unwrap_or_default(),
        });
    }
    if flat.len() != 3 * n {
        return Err(BusError::protocol(
            "commit",
            format!("{} values for {n} events", flat.len()),
        ));
    }
    let mut rows = Vec::with_capacity(n);
    let mut it = flat.into_iter();
    while let (Some(s), Some(p), Some(_extra)) = (it.next(), it.next(), it.next()) {
        rows.push(Row {
            status: as_int(&s).ok_or_else(|| BusError::protocol("commit", "row without status"))?,
            payload: as_bytes(&p).unwrap_or_default(),
        });
    }
    Ok(Reply_::Rows(rows))
}

/// The replies of one round, as cmsgpack packed them.
fn decode_replies(p: &[u8]) -> Result<Vec<Reply>, BusError> {
    let r: Reply = rmp_serde::from_slice(p)
        .map_err(|e| BusError::protocol("commit", format!("replies: {e}")))?;
    Ok(match r {
        Reply::Array(a) => a,
        Reply::Nil => vec![],
        other => vec![other],
    })
}

/// Round `round` of a stored progress value (3 header bytes, then one packed array per
/// round; a slot's record may hold empty rounds it was not touched in).
fn progress_round(p: &[u8], round: usize) -> Result<Vec<Reply>, BusError> {
    let bad = |d: String| BusError::protocol("commit", d);
    if p.len() < 3 {
        return Err(bad(format!("progress of {} bytes", p.len())));
    }
    let mut de = rmp_serde::Deserializer::new(&p[3..]);
    for i in 0..=round {
        let r: Reply = serde::Deserialize::deserialize(&mut de)
            .map_err(|e| bad(format!("progress round {i}: {e}")))?;
        if i == round {
            return Ok(match r {
                Reply::Array(a) => a,
                Reply::Nil => vec![],
                other => vec![other],
            });
        }
    }
    unreachable!("the loop returns at i == round")
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

/// One hash slot's share of a round: (event index, indices of its ops in that slot).
type SlotShare = Vec<(usize, Vec<usize>)>;

/// The round in Redis Cluster (SPEC "Commit protocol": effectively-once across slots).
///
/// 1. One pipelined read: which entries are still pending for the group (XCLAIM JUSTID,
///    so a zombie skips what others finished) and which events are done (the group's
///    done markers, one key per generation). Done events are only acknowledged.
/// 2. Every event's ops are split by hash slot; each slot touched gets one
///    `commit_slot.lua` call (all at once) that checks and applies that slot's ops with
///    that slot's progress record, atomically per slot. A slot already applied for a round
///    (an earlier delivery) replays its recorded replies, so nothing applies twice.
/// 3. Final round: the derived events are XADDed (deterministic ids: a crash before step
///    4 may leave a second entry with the same id, which consumers skip).
/// 4. The done markers are set and the entries acknowledged, XACK last.
///
/// A slot's progress is kept in generations like the done markers (not removed when the
/// event completes): a second, slower commit of the same entry may have passed step 1
/// before the first one finished, and must still find the slot applied.
async fn commit_round_cluster(
    redis: &Redis,
    target: Target<'_>,
    items: &[RoundItem<'_>],
    heads: HashMap<String, String>,
) -> Result<Vec<RoundOutcome>, BusError> {
    let mut out: Vec<Option<RoundOutcome>> = vec![None; items.len()];
    // 1. Ours? Done?
    let done_keys = done_keys(target.group, None, target.dedup_ttl, now_ms());
    let mut cmds = vec![];
    let mut claim = vec![
        arg(target.stream),
        arg(target.group),
        arg(target.consumer),
        arg(0),
    ];
    claim.extend(items.iter().map(|it| arg(it.entry_id)));
    claim.push(arg("JUSTID"));
    cmds.push(("XCLAIM", claim));
    for k in &done_keys {
        let mut a = vec![arg(k.as_str())];
        a.extend(items.iter().map(|it| arg(it.event_id)));
        cmds.push(("HMGET", a));
    }
    let mut replies = redis.pipeline(cmds).await?.into_iter();
    let ours: std::collections::HashSet<String> = replies
        .next()
        .transpose()?
        .and_then(as_array)
        .unwrap_or_default()
        .iter()
        .filter_map(as_string)
        .collect();
    let mut done = vec![false; items.len()];
    for r in replies {
        for (i, v) in as_array(r?).unwrap_or_default().iter().enumerate() {
            if as_string(v).as_deref() == Some("D") && i < done.len() {
                done[i] = true;
            }
        }
    }
    let mut acks: Vec<&str> = vec![];
    let mut seen_final: std::collections::HashSet<&str> = Default::default();
    for (i, it) in items.iter().enumerate() {
        if !ours.contains(it.entry_id) {
            out[i] = Some(RoundOutcome::NotOurs);
        } else if done[i] {
            out[i] = Some(RoundOutcome::AlreadyDone);
            acks.push(it.entry_id);
        } else if it.is_final && !seen_final.insert(it.event_id) {
            // A second copy of an event finishing in this batch: the first one publishes.
            out[i] = Some(RoundOutcome::AlreadyDone);
            acks.push(it.entry_id);
        } else {
            if let Some(why) = unsendable(it) {
                out[i] = Some(RoundOutcome::Failed(why));
            }
            for op in it.ops {
                if let Some(k2) = &op.key2
                    && keyslot(k2.as_bytes()) != keyslot(op.key.as_bytes())
                {
                    out[i] = Some(RoundOutcome::Failed(format!(
                        "{} {} {}: keys in two hash slots (give them one hash tag)",
                        op.cmd, op.key, k2
                    )));
                }
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
            by_slot
                .entry(keyslot(op.key.as_bytes()))
                .or_default()
                .push(j);
        }
        for (slot, ops) in by_slot {
            slots.entry(slot).or_default().push((i, ops));
        }
    }
    let mut merged: Vec<Vec<Reply>> = items
        .iter()
        .map(|it| vec![Reply::Nil; it.ops.len()])
        .collect();
    let mut applied = vec![false; items.len()];
    let mut conflict = vec![false; items.len()];
    let mut failed: Vec<Option<String>> = vec![None; items.len()];
    let mut calls = vec![];
    for (slot, share) in slots {
        let r = redis.clone();
        let mut heads = heads.clone();
        let (call, share, clashing) = encode_slot_call(target, slot, items, share, &mut heads)?;
        for i in clashing {
            failed[i].get_or_insert_with(|| {
                "uses a key as another type than an earlier event of this batch".to_string()
            });
        }
        // Spawned so every slot's call goes out at once (one auto-pipelined client).
        calls.push((
            share,
            tokio::spawn(async move { COMMIT_SLOT.call(&r, call.0, call.1).await }),
        ));
    }
    for (share, c) in calls {
        let reply = c
            .await
            .map_err(|e| BusError::Unavailable(format!("commit task: {e}")))??;
        match parse_reply(reply, share.len())? {
            Reply_::BadKey { actual, .. } => {
                // Nothing of this slot was written; its events fail (a key in it has the
                // wrong type). Their other slots may have applied: that is recorded there.
                for (i, _) in &share {
                    failed[*i].get_or_insert_with(|| {
                        format!("a key of this event holds a {actual} (wrong type)")
                    });
                }
            }
            Reply_::Rows(rows) => {
                for ((i, ops), row) in share.into_iter().zip(rows) {
                    let replies = match row.status {
                        0 => {
                            applied[i] = true;
                            decode_replies(&row.payload)?
                        }
                        1 => progress_round(&row.payload, items[i].round)?,
                        5 => {
                            conflict[i] = true;
                            continue;
                        }
                        _ => {
                            failed[i]
                                .get_or_insert(String::from_utf8_lossy(&row.payload).into_owned());
                            continue;
                        }
                    };
                    for (j, r) in ops.into_iter().zip(replies) {
                        merged[i][j] = r;
                    }
                }
            }
        }
    }
    // 3. Publish what the final round derived.
    let mut xadds = vec![];
    let mut finishing = vec![];
    for (i, it) in items.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        if let Some(reason) = failed[i].take() {
            out[i] = Some(RoundOutcome::Failed(reason));
        } else if conflict[i] {
            out[i] = Some(RoundOutcome::Conflict);
        } else if it.is_final {
            for (s, env) in &it.emits {
                let mut a = vec![arg(s.as_str()), arg("*")];
                for (k, v) in env.to_fields() {
                    a.push(arg(k));
                    a.push(Value::Bytes(v.into()));
                }
                xadds.push((i, ("XADD", a)));
            }
            finishing.push(i);
        } else {
            let replies = std::mem::take(&mut merged[i]);
            out[i] = Some(if applied[i] || it.ops.is_empty() {
                RoundOutcome::Applied(replies)
            } else {
                RoundOutcome::Replayed(replies)
            });
        }
    }
    if !xadds.is_empty() {
        let (who, cmds): (Vec<usize>, Vec<_>) = xadds.into_iter().unzip();
        for (i, r) in who.into_iter().zip(redis.pipeline(cmds).await?) {
            if let Err(e) = r {
                // Not published, so not done: dead-letter it (its slots' work is recorded
                // and a replay resumes from there).
                out[i].get_or_insert(RoundOutcome::Failed(format!("XADD: {e}")));
            }
        }
    }
    // 4. Done markers, then acknowledgements.
    let finished: Vec<usize> = finishing
        .into_iter()
        .filter(|i| out[*i].is_none())
        .collect();
    if !finished.is_empty() {
        let mut a = vec![arg(done_keys[0].as_str())];
        for &i in &finished {
            a.push(arg(items[i].event_id));
            a.push(arg("D"));
        }
        let cmds = vec![
            ("HSET", a),
            (
                "EXPIRE",
                vec![
                    arg(done_keys[0].as_str()),
                    arg(done_ttl_secs(target.dedup_ttl)),
                ],
            ),
        ];
        for r in redis.pipeline(cmds).await? {
            r?;
        }
    }
    for &i in &finished {
        acks.push(items[i].entry_id);
        out[i] = Some(RoundOutcome::Applied(vec![]));
    }
    for chunk in acks.chunks(1000) {
        let mut a = vec![arg(target.stream), arg(target.group)];
        a.extend(chunk.iter().map(|id| arg(*id)));
        redis.cmd("XACK", a).await?;
    }
    Ok(out
        .into_iter()
        .map(|o| o.expect("every event has an outcome"))
        .collect())
}

/// Encodes one `commit_slot.lua` call: ((keys, args), the share sent, and the events left
/// out because they need a key of the call as another type than an earlier event).
#[allow(clippy::type_complexity)]
fn encode_slot_call(
    target: Target<'_>,
    slot: u16,
    items: &[RoundItem<'_>],
    share: SlotShare,
    heads: &mut HashMap<String, String>,
) -> Result<((Vec<Value>, Vec<Value>), SlotShare, Vec<usize>), BusError> {
    let mut keys = Keys::default();
    for k in slot_progress_keys(target.group, slot, target.dedup_ttl) {
        let _ = keys.add(&k, b'-');
    }
    let mut clashing = vec![];
    let share: SlotShare = share
        .into_iter()
        .filter(|(i, ops)| {
            let it = &items[*i];
            let ops: Vec<&Op> = ops.iter().map(|j| &it.ops[*j]).collect();
            let w = wants(&ops, None);
            let ok = keys.fits(w.iter().copied());
            if ok {
                for (k, t) in w {
                    let _ = keys.add(k, t);
                }
            } else {
                clashing.push(*i);
            }
            ok
        })
        .collect();
    let mut args: Vec<Value> = vec![
        arg(share.len() as i64),
        arg(""),
        arg(done_ttl_secs(target.dedup_ttl)),
    ];
    for (i, _) in &share {
        args.push(arg(items[*i].event_id));
    }
    for (i, ops) in &share {
        let it = &items[*i];
        let start = args.len();
        args.push(arg(0));
        args.push(arg(it.round as i64));
        let chain = ops.iter().any(|j| it.ops[*j].cmd == "CHAINAPPEND");
        args.push(arg(if chain { "1" } else { "0" }));
        args.push(arg(ops.len() as i64));
        for j in ops {
            push_op(&mut args, &mut keys, &it.ops[*j], heads)?;
        }
        args[start] = arg((args.len() - start) as i64);
    }
    args[1] = Value::Bytes(keys.need.clone().into());
    let keys = keys.list.iter().map(|k| arg(k.as_str())).collect();
    Ok(((keys, args), share, clashing))
}
