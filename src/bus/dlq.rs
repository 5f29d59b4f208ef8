//! Operating on dead letters: list, replay, purge.
//!
//! A dead letter belongs to the one group that dead-lettered it. Replaying it hands it back
//! to that group alone: a reference to it (`dlq_stream`, `dlq_id`) goes onto the group's
//! replay stream ([`replay_stream`]), which only that group reads; the group fetches the
//! dead letter itself and processes its original event (same event id, same fields). Its
//! siblings, which applied the event when it first came, never see it again, and the group
//! resumes a partly applied event from its recorded progress instead of applying it from
//! the start (de-duplication is by group and event id). Nothing is re-published on the
//! shared stream, and since the replay stream carries only references, whoever may write
//! it can replay existing dead letters but cannot inject events.
//!
//! The dead-letter stream itself is append-only (no user needs XDEL on a stream it appends
//! to): replayed and purged dead letters are marked in [`RESOLVED`] and no longer listed;
//! the stream's own retention trims them.

use super::client::{BusError, Fields, RawEntry, Redis, arg, as_array, as_string, parse_entries};
use super::consume::replay_stream;
use super::deadletter::{DEAD_LETTER_COUNTS, unpack_dead_letter};

/// Dead letters that were replayed or purged (field: dead-letter id, value: `replayed
/// <ms>` or `purged <ms>`), so they are no longer listed.
pub const RESOLVED: &str = "astra:dlq:resolved";

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
        let resolved = resolved_of(redis, &page).await?;
        for (e, gone) in page.into_iter().zip(resolved) {
            if gone {
                continue;
            }
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

/// Which of `page` are resolved already (one HMGET).
async fn resolved_of(redis: &Redis, page: &[RawEntry]) -> Result<Vec<bool>, BusError> {
    if page.is_empty() {
        return Ok(vec![]);
    }
    let mut a = vec![arg(RESOLVED)];
    a.extend(page.iter().map(|e| arg(e.id.as_str())));
    let v = redis.cmd("HMGET", a).await?;
    Ok(as_array(v)
        .unwrap_or_default()
        .iter()
        .map(|r| as_string(r).is_some())
        .collect())
}

/// Marks `d` resolved (`how`: replayed, purged) and lowers its group's count; false when it
/// was resolved already.
async fn resolve(redis: &Redis, d: &DeadEntry, how: &str) -> Result<bool, BusError> {
    let now = crate::envelope::now_ms();
    let v = redis
        .cmd(
            "HSETNX",
            vec![
                arg(RESOLVED),
                arg(d.dlq_id.as_str()),
                arg(format!("{how} {now}")),
            ],
        )
        .await?;
    let fresh = super::client::as_int(&v) == Some(1);
    if fresh && let Some(g) = d.get("group") {
        redis
            .cmd("HINCRBY", vec![arg(DEAD_LETTER_COUNTS), arg(g), arg(-1)])
            .await?;
    }
    Ok(fresh)
}

/// The dead letter a replay reference points to: (its id, its fields), or `None` when it
/// is gone (trimmed by the dead-letter stream's retention).
pub async fn fetch(
    redis: &Redis,
    dlq_stream: &str,
    dlq_id: &str,
) -> Result<Option<Fields>, BusError> {
    let v = redis
        .cmd("XRANGE", vec![arg(dlq_stream), arg(dlq_id), arg(dlq_id)])
        .await?;
    Ok(parse_entries(v).into_iter().next().and_then(|e| e.fields))
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
/// marks it resolved. The reference is stored first: a crash in between leaves the dead
/// letter listed, and replaying it again is harmless (the group finds the same event id,
/// which it then skips or resumes).
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
    let v = redis
        .cmd(
            "XADD",
            vec![
                arg(target.as_str()),
                arg("*"),
                arg("dlq_stream"),
                arg(dlq_stream),
                arg("dlq_id"),
                arg(d.dlq_id.as_str()),
            ],
        )
        .await?;
    let entry_id = as_string(&v).unwrap_or_default();
    resolve(redis, d, "replayed").await?;
    Ok(Replayed {
        group,
        stream,
        event_id: d.event_id(),
        entry_id,
    })
}

/// Purges dead letters (of `group`, or all): they are no longer listed or replayable;
/// returns how many. The progress a partly applied event recorded stays: a later copy of
/// that event resumes rather than applies again.
pub async fn purge(
    redis: &Redis,
    dlq_stream: &str,
    group: Option<&str>,
) -> Result<usize, BusError> {
    let all = list(redis, dlq_stream, group, usize::MAX).await?;
    let mut n = 0;
    for d in &all {
        if resolve(redis, d, "purged").await? {
            n += 1;
        }
    }
    Ok(n)
}
