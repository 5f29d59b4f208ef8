//! Retention: each stream is trimmed to its `max_len` and/or `max_age` with `XTRIM MINID ~`,
//! but never past the oldest entry any group on the stream still needs: its oldest pending
//! entry, or the first entry after its last-delivered id. An entry some group has not
//! processed is never trimmed. Every group Redis knows on the stream counts, including
//! groups missing from the config.

use std::time::Duration;

use super::client::{
    BusError, Redis, arg, as_array, as_int, as_pairs, as_string, id_ms, parse_entries,
};
use crate::config::StreamConfig;
use crate::envelope::now_ms;
use crate::shutdown::Shutdown;

/// Most entries one pass removes by length from one stream (keeps each pass short).
const MAX_TRIM_PER_PASS: i64 = 10_000;

/// An entry id as (ms, seq) for comparisons.
fn parse_id(id: &str) -> (u64, u64) {
    let mut it = id.split('-');
    let ms = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let seq = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (ms, seq)
}

fn fmt_id((ms, seq): (u64, u64)) -> String {
    format!("{ms}-{seq}")
}

fn next_id(id: &str) -> (u64, u64) {
    let (ms, seq) = parse_id(id);
    if seq == u64::MAX {
        (ms + 1, 0)
    } else {
        (ms, seq + 1)
    }
}

/// The first entry id some group still needs (`None`: no group constrains the stream).
pub async fn needed_floor(redis: &Redis, stream: &str) -> Result<Option<(u64, u64)>, BusError> {
    needed_floor_for(redis, stream, &[]).await
}

/// [`needed_floor`], also counting the configured groups `expected` that Redis does not
/// have right now (destroyed, or lost): each needs the entries after the position the
/// daemon last recorded for it (it is re-created there), or everything when none was.
pub async fn needed_floor_for(
    redis: &Redis,
    stream: &str,
    expected: &[String],
) -> Result<Option<(u64, u64)>, BusError> {
    let mut floor = groups_floor(redis, stream).await?;
    if expected.is_empty() {
        return Ok(floor);
    }
    let present: Vec<String> = match redis.cmd("XINFO", vec![arg("GROUPS"), arg(stream)]).await {
        Ok(v) => super::declare::group_names(v),
        Err(BusError::Command(m)) if m.contains("no such key") => vec![],
        Err(e) => return Err(e),
    };
    for g in expected.iter().filter(|g| !present.contains(g)) {
        let need = match super::status::recorded_position(redis, stream, g).await? {
            Some(p) => next_id(&p),
            None => (0, 0),
        };
        floor = Some(floor.map_or(need, |f| f.min(need)));
    }
    Ok(floor)
}

/// The first entry id a group Redis has on `stream` still needs.
async fn groups_floor(redis: &Redis, stream: &str) -> Result<Option<(u64, u64)>, BusError> {
    let groups = match redis.cmd("XINFO", vec![arg("GROUPS"), arg(stream)]).await {
        Ok(v) => as_array(v).unwrap_or_default(),
        Err(BusError::Command(m)) if m.contains("no such key") => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut floor: Option<(u64, u64)> = None;
    for g in groups {
        let info: std::collections::HashMap<String, _> = as_pairs(g).into_iter().collect();
        let name = info.get("name").and_then(as_string).unwrap_or_default();
        let last = info
            .get("last-delivered-id")
            .and_then(as_string)
            .unwrap_or_else(|| "0-0".into());
        let mut need = next_id(&last);
        if info.get("pending").and_then(as_int).unwrap_or(0) > 0 {
            let summary = redis
                .cmd("XPENDING", vec![arg(stream), arg(name.as_str())])
                .await?;
            if let Some(min) = as_array(summary)
                .unwrap_or_default()
                .get(1)
                .and_then(as_string)
            {
                need = need.min(parse_id(&min));
            }
        }
        floor = Some(floor.map_or(need, |f| f.min(need)));
    }
    Ok(floor)
}

/// Trims one stream according to its retention; returns how many entries were removed.
pub async fn trim_stream(redis: &Redis, s: &StreamConfig) -> Result<u64, BusError> {
    trim_stream_for(redis, s, &[]).await
}

/// [`trim_stream`], never past what the configured groups `expected` of the stream still
/// need, even while one of them is missing from Redis (see [`needed_floor_for`]).
pub async fn trim_stream_for(
    redis: &Redis,
    s: &StreamConfig,
    expected: &[String],
) -> Result<u64, BusError> {
    if s.max_len.is_none() && s.max_age.is_none() {
        return Ok(0);
    }
    let mut cut: Option<(u64, u64)> = None;
    if let Some(age) = s.max_age {
        let ms = (now_ms() as u64).saturating_sub(age.as_millis() as u64);
        cut = Some((ms, 0));
    }
    if let Some(max_len) = s.max_len {
        let len = as_int(&redis.cmd("XLEN", vec![arg(s.name.as_str())]).await?).unwrap_or(0);
        let excess = len - max_len as i64;
        if excess > 0 {
            let v = redis
                .cmd(
                    "XRANGE",
                    vec![
                        arg(s.name.as_str()),
                        arg("-"),
                        arg("+"),
                        arg("COUNT"),
                        arg(excess.min(MAX_TRIM_PER_PASS)),
                    ],
                )
                .await?;
            if let Some(last) = parse_entries(v).last() {
                let c = next_id(&last.id);
                cut = Some(cut.map_or(c, |a| a.max(c)));
            }
        }
    }
    let Some(mut cut) = cut else { return Ok(0) };
    if let Some(floor) = needed_floor_for(redis, &s.name, expected).await? {
        cut = cut.min(floor);
    }
    if cut <= (0, 1) {
        return Ok(0);
    }
    let v = redis
        .cmd(
            "XTRIM",
            vec![
                arg(s.name.as_str()),
                arg("MINID"),
                arg("~"),
                arg(fmt_id(cut)),
            ],
        )
        .await?;
    Ok(as_int(&v).unwrap_or(0).max(0) as u64)
}

/// Trims `stream` up to the first entry some group still needs (for a stream only its own
/// groups read, such as a replay stream). Returns how many entries were removed.
pub async fn trim_to_floor(redis: &Redis, stream: &str) -> Result<u64, BusError> {
    let Some(floor) = needed_floor(redis, stream).await? else {
        return Ok(0);
    };
    if floor <= (0, 1) {
        return Ok(0);
    }
    let v = redis
        .cmd("XTRIM", vec![arg(stream), arg("MINID"), arg(fmt_id(floor))])
        .await?;
    Ok(as_int(&v).unwrap_or(0).max(0) as u64)
}

/// Applies retention to every stream every `interval`, until shutdown. `readers` names the
/// configured groups of each stream (kept safe even while one is missing from Redis).
pub async fn retention_loop(
    redis: Redis,
    streams: Vec<StreamConfig>,
    readers: std::collections::HashMap<String, Vec<String>>,
    interval: Duration,
    mut shutdown: Shutdown,
) {
    loop {
        if !super::consume::sleep_or_shutdown(interval, &mut shutdown).await {
            break;
        }
        for s in &streams {
            let expected = readers.get(&s.name).map(Vec::as_slice).unwrap_or_default();
            match trim_stream_for(&redis, s, expected).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(stream = %s.name, removed = n, "retention trimmed"),
                Err(e) => tracing::warn!(stream = %s.name, error = %e, "retention failed"),
            }
        }
    }
}

/// Age of an entry id in milliseconds.
pub fn age_ms(id: &str) -> i64 {
    (now_ms() - id_ms(id)).max(0)
}
