//! Operating on dead letters: list, replay, purge.
//!
//! A dead letter belongs to the one group that dead-lettered it. Replaying it hands it back
//! to that group alone: the entry goes, with its original event id and fields, onto the
//! group's replay stream ([`replay_stream`]), which only that group reads. Its siblings,
//! which applied the event when it first came, never see it again, and the group resumes a
//! partly applied event from its recorded progress instead of applying it from the start
//! (de-duplication is by group and event id). Nothing is re-published on the shared stream.

use super::client::{BusError, RawEntry, Redis, Value, arg, as_int, as_string, parse_entries};
use super::consume::replay_stream;
use super::deadletter::{DEAD_LETTER_COUNTS, unpack_dead_letter};

/// A dead letter as stored.
#[derive(Debug, Clone)]
pub struct DeadEntry {
    /// Id in the dead-letter stream.
    pub dlq_id: String,
    /// `dlq_*` metadata, without the prefix.
    pub meta: Vec<(String, String)>,
    /// The original entry's fields.
    pub original: Vec<(Vec<u8>, Vec<u8>)>,
}

impl DeadEntry {
    fn from_raw(e: RawEntry) -> DeadEntry {
        let (meta, original) = unpack_dead_letter(e.fields.unwrap_or_default());
        DeadEntry {
            dlq_id: e.id,
            meta,
            original,
        }
    }

    /// A metadata value (`reason`, `error`, `group`, `stream`, `entry_id`, `attempts`, `ts`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.meta
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The event id of the original entry, if it had one.
    pub fn event_id(&self) -> Option<String> {
        self.original
            .iter()
            .find(|(k, _)| k.as_slice() == b"id")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Dead letters in `dlq_stream`, oldest first, optionally only those of `group`.
pub async fn list(
    redis: &Redis,
    dlq_stream: &str,
    group: Option<&str>,
    count: usize,
) -> Result<Vec<DeadEntry>, BusError> {
    let mut out = vec![];
    let mut start = "-".to_string();
    loop {
        let v = redis
            .cmd(
                "XRANGE",
                vec![
                    arg(dlq_stream),
                    arg(start.as_str()),
                    arg("+"),
                    arg("COUNT"),
                    arg(500),
                ],
            )
            .await?;
        let page = parse_entries(v);
        let n = page.len();
        let last = page.last().map(|e| e.id.clone());
        for e in page {
            let d = DeadEntry::from_raw(e);
            if group.is_none_or(|g| d.get("group") == Some(g)) {
                out.push(d);
                if out.len() >= count {
                    return Ok(out);
                }
            }
        }
        match last {
            Some(l) if n == 500 => start = format!("({l}"),
            _ => return Ok(out),
        }
    }
}

async fn forget(redis: &Redis, dlq_stream: &str, d: &DeadEntry) -> Result<bool, BusError> {
    let removed = redis
        .cmd("XDEL", vec![arg(dlq_stream), arg(d.dlq_id.as_str())])
        .await?;
    let removed = as_int(&removed) == Some(1);
    if removed && let Some(g) = d.get("group") {
        redis
            .cmd("HINCRBY", vec![arg(DEAD_LETTER_COUNTS), arg(g), arg(-1)])
            .await?;
    }
    Ok(removed)
}

/// Where a replayed dead letter went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The group it went back to.
    pub group: String,
    /// The stream it was first read from.
    pub stream: String,
    /// Its event id (unchanged; `None` when the original had none: it was malformed).
    pub event_id: Option<String>,
    /// The entry id on the group's replay stream.
    pub entry_id: String,
}

/// Hands a dead letter back to the group that dead-lettered it (see the module docs) and
/// removes it from the dead-letter stream. The copy is stored before the dead letter is
/// removed: a crash in between leaves both, and replaying again is harmless (the second
/// copy carries the same event id, which the group then skips or resumes).
pub async fn replay(redis: &Redis, dlq_stream: &str, d: &DeadEntry) -> Result<Replayed, BusError> {
    let missing = |what: &str| {
        BusError::protocol(
            "dlq replay",
            format!("dead letter {} has no dlq_{what}", d.dlq_id),
        )
    };
    let group = d.get("group").ok_or_else(|| missing("group"))?.to_string();
    let stream = d
        .get("stream")
        .ok_or_else(|| missing("stream"))?
        .to_string();
    let target = replay_stream(&group);
    let mut args = vec![arg(target.as_str()), arg("*")];
    let meta = [
        ("dlq_group", group.as_str()),
        ("dlq_stream", stream.as_str()),
        ("dlq_entry_id", d.get("entry_id").unwrap_or("")),
        ("dlq_id", d.dlq_id.as_str()),
        ("dlq_reason", d.get("reason").unwrap_or("")),
    ];
    for (k, v) in meta {
        args.push(arg(k));
        args.push(arg(v));
    }
    if d.original.len() > super::deadletter::MAX_PLAIN_FIELDS {
        let pairs: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)> = d
            .original
            .iter()
            .map(|(k, v)| {
                (
                    serde_bytes::ByteBuf::from(k.clone()),
                    serde_bytes::ByteBuf::from(v.clone()),
                )
            })
            .collect();
        args.push(arg("dlq_fields"));
        args.push(Value::Bytes(
            rmp_serde::to_vec(&pairs)
                .expect("msgpack of byte pairs")
                .into(),
        ));
    } else {
        for (k, v) in &d.original {
            args.push(Value::Bytes(k.clone().into()));
            args.push(Value::Bytes(v.clone().into()));
        }
    }
    let entry_id = as_string(&redis.cmd("XADD", args).await?).unwrap_or_default();
    forget(redis, dlq_stream, d).await?;
    Ok(Replayed {
        group,
        stream,
        event_id: d.event_id(),
        entry_id,
    })
}

/// Deletes dead letters (of `group`, or all); returns how many. The progress a partly
/// applied event recorded stays: a later copy of that event resumes rather than applies
/// again.
pub async fn purge(
    redis: &Redis,
    dlq_stream: &str,
    group: Option<&str>,
) -> Result<usize, BusError> {
    let all = list(redis, dlq_stream, group, usize::MAX).await?;
    let mut n = 0;
    for d in &all {
        if forget(redis, dlq_stream, d).await? {
            n += 1;
        }
    }
    Ok(n)
}
