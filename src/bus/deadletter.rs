//! Dead letters: entries that cannot be processed are copied, with the reason, to the
//! group's dead-letter stream, and acknowledged only once the copy is stored, in one
//! atomic script on one node: an entry is always either pending in its group or in the
//! dead-letter stream, never lost, and never both once the script returns. (In Redis
//! Cluster the streams are in different slots: XADD first, XACK last, so a crash in
//! between can leave a second copy, never a loss.)
//!
//! A dead-letter entry holds `dlq_*` fields — `dlq_reason` (`malformed`, `poison`,
//! `max_deliveries`, `failed`), `dlq_error`, `dlq_group`, `dlq_stream`, `dlq_entry_id`,
//! `dlq_attempts`, `dlq_ts` — followed by the original entry's fields unchanged. An
//! original with more than [`MAX_PLAIN_FIELDS`] fields (anyone who can XADD can write
//! one) is kept whole instead as one `dlq_fields` field: a MessagePack array of
//! `[name, value]` byte-string pairs, so no entry is too wide to dead-letter.

use super::client::{BusError, Fields, Redis, Value, arg, as_array, as_int};
use super::script::Script;
use crate::envelope::now_ms;

pub(crate) static DEAD_LETTER: Script = Script::new(
    "dead_letter",
    r#"#!lua
-- KEYS[1] source stream, KEYS[2] dead-letter stream, KEYS[3] per-group dead-letter counts.
-- ARGV: group, consumer, n, then per entry: entry_id, n_args, field, value, ...
-- Only entries still pending for this consumer are moved: one another consumer has
-- claimed meanwhile is its to finish (it may commit it), and one finished is gone. Each
-- is acknowledged only after its copy is stored.
local group, consumer = ARGV[1], ARGV[2]
local n = tonumber(ARGV[3])
local pos = 4
local moved = 0
for i = 1, n do
  local id = ARGV[pos]
  local na = tonumber(ARGV[pos + 1])
  if #redis.call('XPENDING', KEYS[1], group, id, id, 1, consumer) > 0 then
    local r = redis.pcall('XADD', KEYS[2], '*', unpack(ARGV, pos + 2, pos + 1 + na))
    if type(r) == 'table' and r['err'] then
      return redis.error_reply('dead-letter copy of ' .. id .. ' to ' .. KEYS[2] .. ': ' .. r['err'])
    end
    redis.call('XACK', KEYS[1], group, id)
    redis.pcall('HINCRBY', KEYS[3], group, 1)
    moved = moved + 1
  end
  pos = pos + 2 + na
end
return moved
"#,
);

/// Redis Cluster, after the copies are stored: acknowledges each entry still pending for
/// this consumer, atomically with that check (one key, one slot); returns one flag per
/// entry (1 acknowledged, 0 no longer ours: its copy is to be withdrawn).
pub(crate) static ACK_IF_OURS: Script = Script::new(
    "ack_if_ours",
    r#"#!lua
-- KEYS[1] source stream. ARGV: group, consumer, entry ids...
local group, consumer = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if #redis.call('XPENDING', KEYS[1], group, id, id, 1, consumer) > 0 then
    redis.call('XACK', KEYS[1], group, id)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"#,
);

/// Key of the hash counting dead letters per group (read by `status` and metrics).
pub const DEAD_LETTER_COUNTS: &str = "astra:dlq:counts";

/// Originals with more fields than this are stored packed in one `dlq_fields` field.
pub const MAX_PLAIN_FIELDS: usize = 256;

pub use crate::health::Reason;

/// One entry to dead-letter.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Entry id in the stream it was read from.
    pub entry_id: String,
    /// The stream the event belongs to (for a replayed entry: the stream it was first
    /// read from, not the replay stream).
    pub stream: String,
    /// The entry's original fields.
    pub fields: Fields,
    /// Why.
    pub reason: Reason,
    /// The last error, precise (field, cause).
    pub error: String,
    /// Deliveries so far.
    pub attempts: u64,
}

/// The fields of the dead-letter copy of `e`, read by `group` (see the module docs).
fn copy_fields(group: &str, e: &DeadLetter, now: &str) -> Fields {
    let mut fields: Fields = vec![
        (
            b"dlq_reason".to_vec(),
            e.reason.as_str().as_bytes().to_vec(),
        ),
        (b"dlq_error".to_vec(), e.error.as_bytes().to_vec()),
        (b"dlq_group".to_vec(), group.as_bytes().to_vec()),
        (b"dlq_stream".to_vec(), e.stream.as_bytes().to_vec()),
        (b"dlq_entry_id".to_vec(), e.entry_id.as_bytes().to_vec()),
        (
            b"dlq_attempts".to_vec(),
            e.attempts.to_string().into_bytes(),
        ),
        (b"dlq_ts".to_vec(), now.as_bytes().to_vec()),
    ];
    let original = e.fields.iter().filter(|(k, _)| !k.starts_with(b"dlq_"));
    if e.fields.len() > MAX_PLAIN_FIELDS {
        let pairs: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)> = original
            .map(|(k, v)| {
                (
                    serde_bytes::ByteBuf::from(k.clone()),
                    serde_bytes::ByteBuf::from(v.clone()),
                )
            })
            .collect();
        let packed = rmp_serde::to_vec(&pairs).expect("msgpack of byte pairs");
        fields.push((b"dlq_fields".to_vec(), packed));
    } else {
        fields.extend(original.cloned());
    }
    fields
}

/// Splits a stored dead letter (or a replayed copy) into its `dlq_*` metadata (without the
/// prefix) and the original fields, unpacking `dlq_fields` when the original was wide.
pub fn unpack_dead_letter(fields: Fields) -> (Vec<(String, String)>, Fields) {
    let mut meta = vec![];
    let mut original = vec![];
    for (k, v) in fields {
        if k == b"dlq_fields" {
            let pairs: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)> =
                rmp_serde::from_slice(&v).unwrap_or_default();
            original.extend(pairs.into_iter().map(|(k, v)| (k.into_vec(), v.into_vec())));
        } else if let Some(name) = k.strip_prefix(b"dlq_") {
            meta.push((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            ));
        } else {
            original.push((k, v));
        }
    }
    (meta, original)
}

/// Moves `entries` that `consumer` of `group` read from `stream` to `dead_letter_stream`,
/// acknowledging each once its copy is stored, in one script call. Returns how many were
/// moved: entries no longer pending for `consumer` (another consumer finished them, or
/// claimed them and may still commit them) are left to whoever has them.
pub async fn dead_letter(
    redis: &Redis,
    group: &str,
    consumer: &str,
    stream: &str,
    dead_letter_stream: &str,
    entries: &[DeadLetter],
) -> Result<usize, BusError> {
    if entries.is_empty() {
        return Ok(0);
    }
    let now = now_ms().to_string();
    let copies: Vec<(&str, Fields)> = entries
        .iter()
        .map(|e| (e.entry_id.as_str(), copy_fields(group, e, &now)))
        .collect();
    if redis.is_cluster() {
        return dead_letter_cluster(redis, group, consumer, stream, dead_letter_stream, copies)
            .await;
    }
    let mut args: Vec<Value> = vec![arg(group), arg(consumer), arg(copies.len() as i64)];
    for (id, fields) in copies {
        args.push(arg(id));
        args.push(arg((fields.len() * 2) as i64));
        for (k, v) in fields {
            args.push(Value::Bytes(k.into()));
            args.push(Value::Bytes(v.into()));
        }
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
/// different slots, so no script can hold them together. Entries still pending for this
/// consumer are copied first (XADD), then [`ACK_IF_OURS`] acknowledges, in one step with
/// the check, those still pending for it; the copy of an entry another consumer claimed
/// in between is withdrawn (marked resolved in [`super::dlq::RESOLVED`], so no longer
/// listed), since that consumer may commit it. A crash between the
/// copy and the acknowledgement leaves the entry pending (dead-lettered again later: a
/// second copy with the same `dlq_entry_id`), never lost, never both applied and listed.
async fn dead_letter_cluster(
    redis: &Redis,
    group: &str,
    consumer: &str,
    stream: &str,
    dead_letter_stream: &str,
    copies: Vec<(&str, Fields)>,
) -> Result<usize, BusError> {
    let still_ours = |id: &str| {
        (
            "XPENDING",
            vec![
                arg(stream),
                arg(group),
                arg(id),
                arg(id),
                arg(1),
                arg(consumer),
            ],
        )
    };
    let checks = redis
        .pipeline(copies.iter().map(|(id, _)| still_ours(id)).collect())
        .await?;
    let mut moving = vec![];
    for ((id, fields), r) in copies.into_iter().zip(checks) {
        if as_array(r?).is_some_and(|a| !a.is_empty()) {
            moving.push((id, fields));
        }
    }
    if moving.is_empty() {
        return Ok(0);
    }
    let mut cmds = vec![];
    for (_, fields) in &moving {
        let mut a = vec![arg(dead_letter_stream), arg("*")];
        for (k, v) in fields {
            a.push(Value::Bytes(k.clone().into()));
            a.push(Value::Bytes(v.clone().into()));
        }
        cmds.push(("XADD", a));
    }
    let mut copy_ids = vec![];
    for r in redis.pipeline(cmds).await? {
        copy_ids.push(super::client::as_string(&r?).unwrap_or_default());
    }
    let mut a = vec![arg(group), arg(consumer)];
    a.extend(moving.iter().map(|(id, _)| arg(*id)));
    let flags = as_array(ACK_IF_OURS.call(redis, vec![arg(stream)], a).await?).unwrap_or_default();
    let acked = flags.iter().filter(|f| as_int(f) == Some(1)).count();
    // The dead-letter stream is append-only (no user needs XDEL): a withdrawn copy is
    // marked resolved, as a replayed or purged one is, and no longer listed.
    let now = now_ms();
    let mut withdrawn = vec![arg(super::dlq::RESOLVED)];
    for (f, c) in flags.iter().zip(&copy_ids) {
        if as_int(f) != Some(1) {
            withdrawn.push(arg(c.as_str()));
            withdrawn.push(arg(format!("withdrawn {now}")));
        }
    }
    if withdrawn.len() > 1 {
        redis.cmd("HSET", withdrawn).await?;
    }
    if acked > 0 {
        redis
            .cmd(
                "HINCRBY",
                vec![arg(DEAD_LETTER_COUNTS), arg(group), arg(acked as i64)],
            )
            .await?;
    }
    Ok(acked)
}
