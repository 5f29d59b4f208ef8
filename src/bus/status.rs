//! What `astra-bus status` prints (and the HTTP edge's `/v1/groups`): per group and stream,
//! read from Redis in two pipelined round trips.

use std::collections::HashMap;

use super::client::{BusError, Redis, Value, arg, as_array, as_int, as_pairs, as_string};
use super::deadletter::DEAD_LETTER_COUNTS;
use super::retention::age_ms;
use crate::config::Config;

/// Health of one (group, stream) pair.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupStatus {
    /// Group name.
    pub group: String,
    /// Stream name.
    pub stream: String,
    /// Entries in the stream.
    pub length: i64,
    /// Entries not yet delivered to the group (`None`: Redis cannot tell, e.g. after
    /// deletions or trimming in the middle of the stream).
    pub lag: Option<i64>,
    /// Delivered but not acknowledged.
    pub pending: i64,
    /// Age of the oldest pending entry (from its id), milliseconds.
    pub oldest_pending_age_ms: Option<i64>,
    /// Consumers in the group.
    pub consumers: i64,
    /// Whether the group exists in Redis.
    pub exists: bool,
    /// Entries of this group in its dead-letter stream (all streams of the group).
    pub dead_letters: i64,
}

/// Reads the status of every configured (group, stream).
pub async fn status(redis: &Redis, cfg: &Config) -> Result<Vec<GroupStatus>, BusError> {
    let readers = cfg.readers();
    let streams: Vec<&str> = readers.keys().copied().collect();
    let mut cmds: Vec<(&'static str, Vec<Value>)> =
        vec![("HGETALL", vec![arg(DEAD_LETTER_COUNTS)])];
    for s in &streams {
        cmds.push(("XLEN", vec![arg(*s)]));
        cmds.push(("XINFO", vec![arg("GROUPS"), arg(*s)]));
    }
    let mut replies = redis.pipeline(cmds).await?.into_iter();
    let dlq: HashMap<String, i64> = replies
        .next()
        .and_then(|r| r.ok())
        .map(as_pairs)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, as_int(&v).unwrap_or(0)))
        .collect();
    let mut out = vec![];
    let mut need_pending: Vec<usize> = vec![];
    for s in &streams {
        let len = replies
            .next()
            .and_then(|r| r.ok())
            .as_ref()
            .and_then(as_int)
            .unwrap_or(0);
        let groups: HashMap<String, HashMap<String, Value>> = match replies.next() {
            Some(Ok(v)) => as_array(v)
                .unwrap_or_default()
                .into_iter()
                .map(|g| {
                    let m: HashMap<String, Value> = as_pairs(g).into_iter().collect();
                    (m.get("name").and_then(as_string).unwrap_or_default(), m)
                })
                .collect(),
            _ => HashMap::new(),
        };
        for g in &readers[s] {
            let info = groups.get(&g.name);
            let pending = info
                .and_then(|i| i.get("pending"))
                .and_then(as_int)
                .unwrap_or(0);
            if pending > 0 {
                need_pending.push(out.len());
            }
            out.push(GroupStatus {
                group: g.name.clone(),
                stream: s.to_string(),
                length: len,
                lag: info.and_then(|i| i.get("lag")).and_then(as_int),
                pending,
                oldest_pending_age_ms: None,
                consumers: info
                    .and_then(|i| i.get("consumers"))
                    .and_then(as_int)
                    .unwrap_or(0),
                exists: info.is_some(),
                dead_letters: dlq.get(&g.name).copied().unwrap_or(0),
            });
        }
    }
    if !need_pending.is_empty() {
        let cmds = need_pending
            .iter()
            .map(|i| {
                (
                    "XPENDING",
                    vec![arg(out[*i].stream.as_str()), arg(out[*i].group.as_str())],
                )
            })
            .collect();
        for (i, r) in need_pending.iter().zip(redis.pipeline(cmds).await?) {
            if let Some(min) = r
                .ok()
                .and_then(as_array)
                .and_then(|a| a.get(1).and_then(as_string))
            {
                out[*i].oldest_pending_age_ms = Some(age_ms(&min));
            }
        }
    }
    Ok(out)
}
