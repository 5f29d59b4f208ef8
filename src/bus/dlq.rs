//! Operating on dead letters: list, replay (re-publish to the original stream with a new
//! event id and the same correlation id), purge.

use super::client::{BusError, RawEntry, Redis, arg, as_int, parse_entries};
use super::deadletter::DEAD_LETTER_COUNTS;
use super::publish::publish;
use crate::envelope::new_id;

/// A dead letter as stored.
#[derive(Debug, Clone)]
pub struct DeadEntry {
    /// Id in the dead-letter stream.
    pub dlq_id: String,
    /// `dlq_*` metadata (without the prefix) and the original fields.
    pub meta: Vec<(String, String)>,
    /// The original entry's fields.
    pub original: Vec<(Vec<u8>, Vec<u8>)>,
}

impl DeadEntry {
    fn from_raw(e: RawEntry) -> DeadEntry {
        let mut meta = vec![];
        let mut original = vec![];
        for (k, v) in e.fields.unwrap_or_default() {
            if let Some(name) = k.strip_prefix(b"dlq_") {
                meta.push((
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                ));
            } else {
                original.push((k, v));
            }
        }
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

async fn forget(redis: &Redis, dlq_stream: &str, d: &DeadEntry) -> Result<(), BusError> {
    let removed = redis
        .cmd("XDEL", vec![arg(dlq_stream), arg(d.dlq_id.as_str())])
        .await?;
    if as_int(&removed) == Some(1)
        && let Some(g) = d.get("group")
    {
        redis
            .cmd("HINCRBY", vec![arg(DEAD_LETTER_COUNTS), arg(g), arg(-1)])
            .await?;
    }
    Ok(())
}

/// Re-publishes a dead letter to its original stream with a new event id (same `cid`,
/// `caus`, payload) and removes it from the dead-letter stream. Returns
/// (original stream, new event id, new entry id).
pub async fn replay(
    redis: &Redis,
    dlq_stream: &str,
    d: &DeadEntry,
) -> Result<(String, String, String), BusError> {
    let stream = d
        .get("stream")
        .ok_or_else(|| BusError::protocol("dlq replay", format!("{} has no dlq_stream", d.dlq_id)))?
        .to_string();
    let new_event_id = new_id();
    let mut fields: Vec<(Vec<u8>, Vec<u8>)> = d
        .original
        .iter()
        .filter(|(k, _)| k.as_slice() != b"id")
        .cloned()
        .collect();
    fields.insert(0, (b"id".to_vec(), new_event_id.clone().into_bytes()));
    if !fields.iter().any(|(k, _)| k.as_slice() == b"cid")
        && let Some((_, old)) = d.original.iter().find(|(k, _)| k.as_slice() == b"id")
    {
        // The original had no cid: its id was its correlation id; keep that.
        fields.push((b"cid".to_vec(), old.clone()));
    }
    let entry_id = match crate::envelope::Envelope::from_fields(&fields) {
        Ok(env) => publish(redis, &stream, &env).await?,
        Err(_) => {
            // Still malformed: re-publish the fields as they are so it can be inspected
            // (it will be dead-lettered again with the same reason).
            let mut args = vec![arg(stream.as_str()), arg("*")];
            for (k, v) in &fields {
                args.push(super::client::Value::Bytes(k.clone().into()));
                args.push(super::client::Value::Bytes(v.clone().into()));
            }
            super::client::as_string(&redis.cmd("XADD", args).await?).unwrap_or_default()
        }
    };
    forget(redis, dlq_stream, d).await?;
    Ok((stream, new_event_id, entry_id))
}

/// Deletes dead letters (of `group`, or all); returns how many.
pub async fn purge(
    redis: &Redis,
    dlq_stream: &str,
    group: Option<&str>,
) -> Result<usize, BusError> {
    let all = list(redis, dlq_stream, group, usize::MAX).await?;
    for d in &all {
        forget(redis, dlq_stream, d).await?;
    }
    Ok(all.len())
}
