//! Dead letters: entries that cannot be processed are moved, with the reason, to the
//! group's dead-letter stream and acknowledged in the same atomic script, so an entry is
//! always either pending in its group or in the dead-letter stream, never lost. (In Redis
//! Cluster the streams are in different slots: XADD to the dead-letter stream first, XACK
//! last, so a crash in between can leave a second copy, never a loss.)
//!
//! A dead-letter entry holds the original entry's fields unchanged plus `dlq_*` fields:
//! `dlq_reason` (`malformed`, `poison`, `max_deliveries`, `failed`), `dlq_error`,
//! `dlq_group`, `dlq_stream`, `dlq_entry_id`, `dlq_attempts`, `dlq_ts`.

use super::client::{BusError, Redis, Value, arg, as_int};
use super::script::Script;
use crate::envelope::now_ms;

pub(crate) static DEAD_LETTER: Script = Script::new(
    "dead_letter",
    r#"#!lua
-- KEYS[1] source stream, KEYS[2] dead-letter stream, KEYS[3] per-group dead-letter counts.
-- ARGV: group, n, then per entry: entry_id, n_fields, field, value, ...
-- Only entries still pending in the group are moved (a concurrent consumer may have
-- finished one meanwhile): XACK's reply tells, and the copy is written only then.
local group = ARGV[1]
local n = tonumber(ARGV[2])
local pos = 3
local moved = 0
for i = 1, n do
  local id = ARGV[pos]
  local nf = tonumber(ARGV[pos + 1])
  local fields = {}
  for j = 1, nf * 2 do fields[j] = ARGV[pos + 1 + j] end
  pos = pos + 2 + nf * 2
  if redis.call('XACK', KEYS[1], group, id) == 1 then
    redis.call('XADD', KEYS[2], '*', unpack(fields))
    redis.call('HINCRBY', KEYS[3], group, 1)
    moved = moved + 1
  end
end
return moved
"#,
);

/// Key of the hash counting dead letters per group (read by `status` and metrics).
pub const DEAD_LETTER_COUNTS: &str = "astra:dlq:counts";

/// Why an entry was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The entry is not a valid envelope.
    Malformed,
    /// The handler declared the event poison.
    Poison,
    /// Delivered `max_deliveries` times without success.
    MaxDeliveries,
    /// An op failed while being applied.
    Failed,
}

impl Reason {
    /// The `dlq_reason` value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::Poison => "poison",
            Reason::MaxDeliveries => "max_deliveries",
            Reason::Failed => "failed",
        }
    }
}

/// One entry to dead-letter.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Entry id in the source stream.
    pub entry_id: String,
    /// The entry's original fields.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// Why.
    pub reason: Reason,
    /// The last error, precise (field, cause).
    pub error: String,
    /// Deliveries so far.
    pub attempts: u64,
}

/// Moves `entries` of `stream` (read by `group`) to `dead_letter_stream` and acknowledges
/// them, in one script call. Returns how many were moved (entries another consumer
/// finished in the meantime are skipped).
pub async fn dead_letter(
    redis: &Redis,
    group: &str,
    stream: &str,
    dead_letter_stream: &str,
    entries: &[DeadLetter],
) -> Result<usize, BusError> {
    if entries.is_empty() {
        return Ok(0);
    }
    let mut args: Vec<Value> = vec![arg(group), arg(entries.len() as i64)];
    let now = now_ms().to_string();
    for e in entries {
        args.push(arg(e.entry_id.as_str()));
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (
                b"dlq_reason".to_vec(),
                e.reason.as_str().as_bytes().to_vec(),
            ),
            (b"dlq_error".to_vec(), e.error.as_bytes().to_vec()),
            (b"dlq_group".to_vec(), group.as_bytes().to_vec()),
            (b"dlq_stream".to_vec(), stream.as_bytes().to_vec()),
            (b"dlq_entry_id".to_vec(), e.entry_id.as_bytes().to_vec()),
            (
                b"dlq_attempts".to_vec(),
                e.attempts.to_string().into_bytes(),
            ),
            (b"dlq_ts".to_vec(), now.clone().into_bytes()),
        ];
        fields.extend(
            e.fields
                .iter()
                .filter(|(k, _)| !k.starts_with(b"dlq_"))
                .cloned(),
        );
        args.push(arg(fields.len() as i64));
        for (k, v) in fields {
            args.push(Value::Bytes(k.into()));
            args.push(Value::Bytes(v.into()));
        }
    }
    if redis.is_cluster() {
        return dead_letter_cluster(redis, group, stream, dead_letter_stream, entries, args).await;
    }
    let keys = vec![
        arg(stream),
        arg(dead_letter_stream),
        arg(DEAD_LETTER_COUNTS),
    ];
    let v = DEAD_LETTER.call(redis, keys, args).await?;
    Ok(as_int(&v).unwrap_or(0) as usize)
}

/// Redis Cluster: the source stream, the dead-letter stream and the counts live in
/// different slots, so no script can hold them together. Only entries still pending in the
/// group are moved (checked with XPENDING first); then the copies are XADDed, the counts
/// raised, and XACK comes last — a crash in between leaves the entry pending (it is
/// dead-lettered again later: a second copy with the same `dlq_entry_id`), never lost.
async fn dead_letter_cluster(
    redis: &Redis,
    group: &str,
    stream: &str,
    dead_letter_stream: &str,
    entries: &[DeadLetter],
    args: Vec<Value>,
) -> Result<usize, BusError> {
    // args = group, n, then per entry: entry_id, n_fields, fields… (as for the script).
    let mut per_entry: Vec<(String, Vec<Value>)> = vec![];
    let mut it = args.into_iter().skip(2);
    for _ in entries {
        let id = it
            .next()
            .as_ref()
            .and_then(super::client::as_string)
            .unwrap_or_default();
        let nf = it.next().as_ref().and_then(as_int).unwrap_or(0) as usize;
        let fields: Vec<Value> = it.by_ref().take(nf * 2).collect();
        per_entry.push((id, fields));
    }
    let still_pending = |id: &str| {
        (
            "XPENDING",
            vec![arg(stream), arg(group), arg(id), arg(id), arg(1)],
        )
    };
    let checks = redis
        .pipeline(per_entry.iter().map(|(id, _)| still_pending(id)).collect())
        .await?;
    let mut moving = vec![];
    for ((id, fields), r) in per_entry.into_iter().zip(checks) {
        if super::client::as_array(r?).is_some_and(|a| !a.is_empty()) {
            moving.push((id, fields));
        }
    }
    if moving.is_empty() {
        return Ok(0);
    }
    let mut cmds = vec![];
    for (_, fields) in &moving {
        let mut a = vec![arg(dead_letter_stream), arg("*")];
        a.extend(fields.iter().cloned());
        cmds.push(("XADD", a));
    }
    cmds.push((
        "HINCRBY",
        vec![
            arg(DEAD_LETTER_COUNTS),
            arg(group),
            arg(moving.len() as i64),
        ],
    ));
    for r in redis.pipeline(cmds).await? {
        r?;
    }
    let mut a = vec![arg(stream), arg(group)];
    a.extend(moving.iter().map(|(id, _)| arg(id.as_str())));
    redis.cmd("XACK", a).await?;
    Ok(moving.len())
}
