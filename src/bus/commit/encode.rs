//! How a round becomes a script call, and how the script's answer becomes outcomes. The
//! layout itself is documented in `commit_common.lua` and each script's header: the many
//! small numbers of a batch travel packed in three binary strings, and a derived event
//! sends only what differs from its template, so Redis converts as few arguments as it can
//! (each argument of a script call costs Redis a Lua string, each field of an XADD from Lua
//! another object).

use std::collections::HashMap;
use std::sync::LazyLock;

use super::{RoundItem, RoundOutcome, Target, done_keys, done_ttl_secs, progress_key};
use crate::bus::client::{BusError, Value, arg, as_array, as_bytes, as_int, as_string};
use crate::bus::script::Script;
use crate::envelope::Envelope;
use crate::handlers::{KeyType, Op, Reply};

/// The commands a script op may be, in the order of their codes (1-based): the handler
/// ops' allowed list, then the script-side CHAINCAS.
fn command_codes() -> &'static [&'static str] {
    static CODES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
        let mut v: Vec<&'static str> = crate::handlers::allowed_commands()
            .filter(|c| *c != "CHAINAPPEND")
            .collect();
        v.push("CHAINCAS");
        v
    });
    &CODES
}

fn command_code(cmd: &str) -> u8 {
    command_codes()
        .iter()
        .position(|c| *c == cmd)
        .map_or(0, |i| (i + 1) as u8)
}

/// A commit script's source: its shebang, the shared prelude (`commit_common.lua`) with the
/// command table filled in from the one list ([`crate::handlers::allowed_commands`]), then
/// its body.
fn with_prelude(source: &str) -> &'static str {
    let table = format!(
        "{{ {} }}",
        command_codes()
            .iter()
            .map(|c| format!("'{c}'"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let common = include_str!("commit_common.lua").replacen("{} -- @CMDS@", &table, 1);
    let body = source
        .strip_prefix("#!lua\n")
        .expect("a commit script starts with #!lua");
    Box::leak(format!("#!lua\n{common}\n{body}").into_boxed_str())
}

pub(crate) static COMMIT: LazyLock<Script> =
    LazyLock::new(|| Script::new("commit", with_prelude(include_str!("commit.lua"))));
pub(crate) static COMMIT_SLOT: LazyLock<Script> =
    LazyLock::new(|| Script::new("commit_slot", with_prelude(include_str!("commit_slot.lua"))));

/// Most arguments one op or one derived event may carry (Lua's unpack has a stack limit
/// of about 8,000; the scripts unpack one op or event at a time).
pub const MAX_OP_ARGS: usize = 4000;

/// Most ops, or derived events, one event's round may have (their counts travel in two
/// bytes).
const MAX_PER_EVENT: usize = 65_535;

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

pub(super) fn letter_name(t: u8) -> &'static str {
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

/// The keys of one script call with the type each must have.
#[derive(Default)]
pub(super) struct Keys {
    pub(super) list: Vec<String>,
    pub(super) need: Vec<u8>,
    index: HashMap<String, usize>,
}

impl Keys {
    /// 1-based index of `k`, added with need `t` ('-' = unchecked). `Err` when the call
    /// already needs `k` with another type (the event goes to a later call).
    pub(super) fn add(&mut self, k: &str, t: u8) -> Result<usize, ()> {
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
    pub(super) fn fits<'k>(&self, wants: impl IntoIterator<Item = (&'k str, u8)>) -> bool {
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

    fn values(&self) -> Vec<Value> {
        self.list.iter().map(|k| arg(k.as_str())).collect()
    }
}

/// The (key, type letter) pairs one event's round needs.
pub(super) fn wants<'a>(
    ops: &[&'a Op],
    emits: Option<&'a [(String, Envelope)]>,
) -> Vec<(&'a str, u8)> {
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

/// Why an event's round can never be committed as it is: an op or derived event too large
/// to pass, too many of them, or one key used as two types by the event itself.
pub(super) fn unsendable(it: &RoundItem<'_>) -> Option<String> {
    if it.ops.len() > MAX_PER_EVENT || it.emits.len() > MAX_PER_EVENT {
        return Some(format!(
            "{} ops and {} derived events in one round, at most {MAX_PER_EVENT} each",
            it.ops.len(),
            it.emits.len()
        ));
    }
    for op in it.ops {
        if op.args.len() > MAX_OP_ARGS {
            return Some(format!(
                "{} {}: {} arguments, at most {MAX_OP_ARGS}",
                op.cmd,
                op.key,
                op.args.len()
            ));
        }
    }
    let ops: Vec<&Op> = it.ops.iter().collect();
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

/// An entry id as (ms, seq), for the batch's range.
fn id_pair(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// The packed headers and arguments of one call (see `commit_common.lua`).
struct Packed {
    /// H: the check-increments byte, then 10 bytes per event.
    events: Vec<u8>,
    /// O: 6 bytes per op.
    ops: Vec<u8>,
    /// E: 5 bytes per derived event.
    emits: Vec<u8>,
    /// Op arguments and derived events' values, event after event.
    args: Vec<Value>,
}

fn push24(v: &mut Vec<u8>, n: usize) {
    v.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
}

fn push16(v: &mut Vec<u8>, n: usize) {
    v.extend_from_slice(&[(n >> 8) as u8, n as u8]);
}

impl Packed {
    fn new() -> Packed {
        Packed {
            events: vec![0],
            ops: vec![],
            emits: vec![],
            args: vec![],
        }
    }

    /// Events of `items` whose rounds have an increment after another write make the
    /// script check every increment before the writes.
    fn check_increments<'a>(&mut self, rounds: impl IntoIterator<Item = Vec<&'a Op>>) {
        let late_increment = rounds.into_iter().any(|ops| {
            let mut wrote = false;
            ops.iter().any(|op| {
                let incr = matches!(op.cmd, "HINCRBY" | "INCRBY" | "DECRBY");
                let late = incr && wrote;
                if !op.is_read() {
                    wrote = true;
                }
                late
            })
        });
        self.events[0] = late_increment as u8;
    }

    /// One op: its header in O, its arguments in ARGV. CHAINAPPEND becomes CHAINCAS with
    /// its link computed here from the head as read (`heads`); the script appends only if
    /// the head has not moved meanwhile.
    fn op(
        &mut self,
        keys: &mut Keys,
        op: &Op,
        heads: &mut HashMap<String, String>,
    ) -> Result<usize, BusError> {
        let before = self.args.len();
        let (code, key) = if op.cmd == "CHAINAPPEND" {
            let record = op.args.first().map(Vec::as_slice).unwrap_or_default();
            let prev = heads.get(&op.key).cloned().unwrap_or_default();
            let hash = crate::handler::chain_link(&prev, record);
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
            self.args.extend([
                arg(log as i64),
                arg(prev.as_str()),
                arg(hash.as_str()),
                Value::Bytes(entry.into()),
            ]);
            heads.insert(op.key.clone(), hash);
            (command_code("CHAINCAS"), head)
        } else {
            let k = keys.add(&op.key, type_letter(op.key_type())).unwrap_or(0);
            for a in &op.args {
                self.args.push(Value::Bytes(a.clone().into()));
            }
            (command_code(op.cmd), k)
        };
        self.ops.push(code);
        push24(&mut self.ops, key);
        push16(&mut self.ops, self.args.len() - before);
        Ok(self.args.len() - before)
    }

    /// One event's header.
    fn event(
        &mut self,
        argc: usize,
        round: usize,
        is_final: bool,
        chain: bool,
        ops: usize,
        emits: usize,
    ) {
        push24(&mut self.events, argc);
        self.events
            .extend_from_slice(&[round as u8, is_final as u8, chain as u8]);
        push16(&mut self.events, ops);
        push16(&mut self.events, emits);
    }
}

/// Templates of derived events: the field names in order, with the fields that are the
/// same for every event of the call (type, version, producer, content type) as constants,
/// the source event id left to the script, and the rest sent per event.
#[derive(Default)]
struct Templates {
    index: HashMap<Vec<u8>, usize>,
    /// Per template: k, names, kinds, constants.
    encoded: Vec<Value>,
}

impl Templates {
    /// The template of `fields` (an envelope derived from `event_id`), added if new, and
    /// the per-event values it leaves out, in order.
    fn of(
        &mut self,
        fields: Vec<(&'static str, Vec<u8>)>,
        event_id: &str,
    ) -> (usize, Vec<Vec<u8>>) {
        let mut kinds = Vec::with_capacity(fields.len());
        let mut field_names = Vec::with_capacity(fields.len());
        let mut key = Vec::with_capacity(64);
        let mut consts = vec![];
        let mut values = vec![];
        for (name, v) in fields {
            let kind = match name {
                "caus" if v == event_id.as_bytes() => b'e',
                "type" | "v" | "src" | "ct" => b'c',
                _ => b's',
            };
            kinds.push(kind);
            field_names.push(name);
            key.extend_from_slice(name.as_bytes());
            key.push(0);
            key.push(kind);
            match kind {
                b'c' => {
                    key.extend_from_slice(&v);
                    key.push(0);
                    consts.push(v);
                }
                b's' => values.push(v),
                _ => {}
            }
        }
        if let Some(&t) = self.index.get(&key) {
            return (t, values);
        }
        self.encoded.push(arg(field_names.len() as i64));
        for n in field_names {
            self.encoded.push(arg(n));
        }
        self.encoded.push(Value::Bytes(kinds.into()));
        for c in consts {
            self.encoded.push(Value::Bytes(c.into()));
        }
        let t = self.index.len() + 1;
        self.index.insert(key, t);
        (t, values)
    }
}

/// One encoded `commit.lua` call.
pub(super) struct Call {
    pub(super) keys: Vec<Value>,
    pub(super) args: Vec<Value>,
    pub(super) key_names: Vec<String>,
    pub(super) need: Vec<u8>,
    /// Item indices in the call, in order.
    pub(super) events: Vec<usize>,
    /// Item indices left for a later call (they need a key as another type).
    pub(super) deferred: Vec<usize>,
}

/// Encodes one `commit.lua` call for the items `todo`.
pub(super) fn encode_call(
    target: Target<'_>,
    items: &[RoundItem<'_>],
    todo: &[usize],
    heads: &mut HashMap<String, String>,
) -> Result<Call, BusError> {
    let mut keys = Keys::default();
    let _ = keys.add(target.stream, b'-');
    let _ = keys.add(&progress_key(target.group), b'-');
    let now = crate::envelope::now_ms();
    for k in done_keys(target.group, None, target.dedup_ttl, now) {
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
    let mut packed = Packed::new();
    packed.check_increments(events.iter().map(|i| items[*i].ops.iter().collect()));
    let mut templates = Templates::default();
    let mut emits_e: Vec<u8> = vec![];
    for &i in &events {
        let it = &items[i];
        let mut argc = 0;
        for op in it.ops {
            argc += packed.op(&mut keys, op, heads)?;
        }
        let n_emits = if it.is_final { it.emits.len() } else { 0 };
        if it.is_final {
            for (s, env) in &it.emits {
                let k = keys.add(s, b'x').unwrap_or(0);
                let (t, values) = templates.of(env.to_fields(), it.event_id);
                push16(&mut emits_e, t);
                push24(&mut emits_e, k);
                argc += values.len();
                packed
                    .args
                    .extend(values.into_iter().map(|v| Value::Bytes(v.into())));
            }
        }
        let chain = it.ops.iter().any(|o| o.cmd == "CHAINAPPEND");
        packed.event(argc, it.round, it.is_final, chain, it.ops.len(), n_emits);
    }
    packed.emits = emits_e;
    let (lo, hi) = events.iter().map(|i| items[*i].entry_id).fold(
        (None::<&str>, None::<&str>),
        |(lo, hi), id| {
            let lo = match lo {
                Some(l) if id_pair(l) <= id_pair(id) => Some(l),
                _ => Some(id),
            };
            let hi = match hi {
                Some(h) if id_pair(h) >= id_pair(id) => Some(h),
                _ => Some(id),
            };
            (lo, hi)
        },
    );
    let mut args: Vec<Value> =
        Vec::with_capacity(12 + templates.encoded.len() + 2 * n + packed.args.len());
    args.push(arg(target.group));
    args.push(arg(target.consumer));
    args.push(arg(n as i64));
    args.push(Value::Bytes(keys.need.clone().into()));
    args.push(arg(done_ttl_secs(target.dedup_ttl, now)));
    args.push(Value::Bytes(packed.events.into()));
    args.push(Value::Bytes(packed.ops.into()));
    args.push(Value::Bytes(packed.emits.into()));
    args.push(arg(lo.unwrap_or("0-0")));
    args.push(arg(hi.unwrap_or("0-0")));
    args.push(arg(templates.index.len() as i64));
    args.extend(templates.encoded);
    for &i in &events {
        args.push(arg(items[i].event_id));
    }
    for &i in &events {
        args.push(arg(items[i].entry_id));
    }
    args.extend(packed.args);
    Ok(Call {
        keys: keys.values(),
        args,
        key_names: keys.list,
        need: keys.need,
        events,
        deferred,
    })
}

/// One hash slot's share of a round: (event index, indices of its ops in that slot).
pub(super) type SlotShare = Vec<(usize, Vec<usize>)>;

/// Encodes one `commit_slot.lua` call: ((keys, args), the share sent, and the events left
/// out because they need a key of the call as another type than an earlier event).
#[allow(clippy::type_complexity)]
pub(super) fn encode_slot_call(
    target: Target<'_>,
    slot: u16,
    items: &[RoundItem<'_>],
    share: SlotShare,
    heads: &mut HashMap<String, String>,
) -> Result<((Vec<Value>, Vec<Value>), SlotShare, Vec<usize>), BusError> {
    let mut keys = Keys::default();
    let now = crate::envelope::now_ms();
    for k in super::slot_progress_keys(target.group, slot, target.dedup_ttl) {
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
    let mut packed = Packed::new();
    packed.check_increments(
        share
            .iter()
            .map(|(i, ops)| ops.iter().map(|j| &items[*i].ops[*j]).collect()),
    );
    for (i, ops) in &share {
        let it = &items[*i];
        let mut argc = 0;
        for j in ops {
            argc += packed.op(&mut keys, &it.ops[*j], heads)?;
        }
        let chain = ops.iter().any(|j| it.ops[*j].cmd == "CHAINAPPEND");
        packed.event(argc, it.round, false, chain, ops.len(), 0);
    }
    let mut args: Vec<Value> = Vec::with_capacity(5 + share.len() + packed.args.len());
    args.push(arg(share.len() as i64));
    args.push(Value::Bytes(keys.need.clone().into()));
    args.push(arg(done_ttl_secs(target.dedup_ttl, now)));
    args.push(Value::Bytes(packed.events.into()));
    args.push(Value::Bytes(packed.ops.into()));
    for (i, _) in &share {
        args.push(arg(items[*i].event_id));
    }
    args.extend(packed.args);
    Ok(((keys.values(), args), share, clashing))
}

/// A script reply: a key of the wrong type, or one row per event.
pub(super) enum Answer {
    BadKey { index: usize, actual: String },
    Rows(Vec<Row>),
}

/// One event's row: its status digit, and its payload when the status carries one.
pub(super) struct Row {
    pub(super) status: u8,
    pub(super) payload: Vec<u8>,
}

impl Row {
    pub(super) fn into_outcome(self, round: usize) -> Result<RoundOutcome, BusError> {
        Ok(match self.status {
            b'0' if self.payload.is_empty() => RoundOutcome::Applied(vec![]),
            b'0' => RoundOutcome::Applied(decode_replies(&self.payload)?),
            b'1' => RoundOutcome::Replayed(progress_round(&self.payload, round)?),
            b'2' => RoundOutcome::AlreadyDone,
            b'5' => RoundOutcome::Conflict,
            b'6' => RoundOutcome::NotOurs,
            _ => RoundOutcome::Failed(String::from_utf8_lossy(&self.payload).into_owned()),
        })
    }
}

/// Parses `{statuses, payloads...}` for `n` events; `applied_has_payload(i)` says whether
/// an applied event `i` carries its replies (a non-final round).
pub(super) fn parse_reply(
    reply: Value,
    n: usize,
    applied_has_payload: impl Fn(usize) -> bool,
) -> Result<Answer, BusError> {
    let flat = as_array(reply).ok_or_else(|| BusError::protocol("commit", "not an array"))?;
    if flat.first().and_then(as_int) == Some(-1) {
        return Ok(Answer::BadKey {
            index: flat.get(1).and_then(as_int).unwrap_or(0).max(1) as usize,
            actual: flat.get(2).and_then(as_string).unwrap_or_default(),
        });
    }
    let mut it = flat.into_iter();
    let statuses = it
        .next()
        .as_ref()
        .and_then(as_bytes)
        .ok_or_else(|| BusError::protocol("commit", "no statuses"))?;
    if statuses.len() != n {
        return Err(BusError::protocol(
            "commit",
            format!("{} statuses for {n} events", statuses.len()),
        ));
    }
    let mut rows = Vec::with_capacity(n);
    for (i, s) in statuses.into_iter().enumerate() {
        let carries = match s {
            b'0' => applied_has_payload(i),
            b'1' | b'3' | b'4' => true,
            _ => false,
        };
        let payload = if carries {
            it.next()
                .as_ref()
                .and_then(as_bytes)
                .ok_or_else(|| BusError::protocol("commit", "missing payload"))?
        } else {
            vec![]
        };
        rows.push(Row { status: s, payload });
    }
    Ok(Answer::Rows(rows))
}

/// The replies of one round, as cmsgpack packed them.
pub(super) fn decode_replies(p: &[u8]) -> Result<Vec<Reply>, BusError> {
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
pub(super) fn progress_round(p: &[u8], round: usize) -> Result<Vec<Reply>, BusError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_command_table_is_generated_from_the_rust_one() {
        let mut want: Vec<&str> = crate::handlers::allowed_commands()
            .filter(|c| *c != "CHAINAPPEND")
            .collect();
        want.push("CHAINCAS");
        for body in [include_str!("commit.lua"), include_str!("commit_slot.lua")] {
            let src = with_prelude(body);
            assert!(!src.contains("@CMDS@"), "the placeholder is left unfilled");
            let table = src
                .lines()
                .find_map(|l| l.strip_prefix("local CMDS = "))
                .expect("the prelude's CMDS table");
            let got: Vec<&str> = table
                .trim_start_matches("{ ")
                .trim_end_matches(" }")
                .split(", ")
                .map(|c| c.trim_matches('\''))
                .collect();
            // Every command, in code order: the script reads CMDS[code].
            assert_eq!(got, want);
            for (i, c) in want.iter().enumerate() {
                assert_eq!(command_code(c) as usize, i + 1, "{c}");
            }
        }
    }

    #[test]
    fn derived_events_of_one_kind_share_a_template() {
        let src = Envelope::root(
            "test.a",
            1,
            "t",
            None,
            crate::envelope::ContentType::Json,
            b"{}".to_vec(),
        );
        let a = src.derive("g", 0, "test.b", 1, b"x".to_vec());
        let b = src.derive("g", 1, "test.b", 1, b"y".to_vec());
        let mut t = Templates::default();
        let (ta, va) = t.of(a.to_fields(), &src.id);
        let (tb, vb) = t.of(b.to_fields(), &src.id);
        assert_eq!((ta, tb), (1, 1));
        // id, cid, ts, data travel per event; type, v, src, ct are constants; caus is
        // the source id the script already has.
        assert_eq!(va.len(), 4);
        assert_eq!(vb[3], b"y");
        assert_eq!(t.index.len(), 1);
        let c = src.derive("g", 0, "test.c", 1, b"z".to_vec());
        assert_eq!(t.of(c.to_fields(), &src.id).0, 2);
    }

    #[test]
    fn headers_pack_big_endian() {
        let mut p = Packed::new();
        p.event(70_000, 2, true, false, 300, 1);
        assert_eq!(p.events, vec![0, 1, 17, 112, 2, 1, 0, 1, 44, 0, 1]);
    }
}
