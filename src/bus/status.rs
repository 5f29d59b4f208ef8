//! What `astra-bus status` prints and the health metrics export: per group and stream, read
//! from Redis in one pipelined round trip.

use std::collections::HashMap;

use super::client::{BusError, Redis, Value, arg, as_array, as_int, as_pairs, as_string};
use super::deadletter::DEAD_LETTER_COUNTS;
use super::retention::age_ms;
use crate::config::Config;

pub use crate::health::{GroupStatus, Snapshot};

/// Where the daemon records each group's [`GroupStatus::safe_point`] (field
/// `<stream> <group>`), refreshed with every health snapshot.
pub const POSITIONS: &str = "astra:groups:positions";

fn position_field(stream: &str, group: &str) -> String {
    format!("{stream} {group}")
}

/// Records the safe point of every existing (group, stream) of `snap` (one HSET).
pub async fn record_positions(redis: &Redis, snap: &Snapshot) -> Result<(), BusError> {
    let mut args = vec![arg(POSITIONS)];
    for g in &snap.groups {
        if let Some(p) = g.safe_point() {
            args.push(arg(position_field(&g.stream, &g.group)));
            args.push(arg(p));
        }
    }
    if args.len() > 1 {
        redis.cmd("HSET", args).await?;
    }
    Ok(())
}

/// The last recorded safe point of `group` on `stream`.
pub async fn recorded_position(
    redis: &Redis,
    stream: &str,
    group: &str,
) -> Result<Option<String>, BusError> {
    let v = redis
        .cmd(
            "HGET",
            vec![arg(POSITIONS), arg(position_field(stream, group))],
        )
        .await?;
    Ok(as_string(&v))
}

/// Reads the status of every configured (group, stream).
pub async fn status(redis: &Redis, cfg: &Config) -> Result<Vec<GroupStatus>, BusError> {
    Ok(snapshot(redis, cfg).await?.groups)
}

/// One pipelined round: XLEN and XINFO GROUPS of every stream, XPENDING (summary) of every
/// configured (group, stream), and the dead-letter counts.
pub async fn snapshot(redis: &Redis, cfg: &Config) -> Result<Snapshot, BusError> {
    let readers = cfg.readers();
    let mut cmds: Vec<(&'static str, Vec<Value>)> =
        vec![("HGETALL", vec![arg(DEAD_LETTER_COUNTS)])];
    for s in &cfg.streams {
        cmds.push(("XLEN", vec![arg(s.name.as_str())]));
        cmds.push(("XINFO", vec![arg("GROUPS"), arg(s.name.as_str())]));
    }
    let pairs: Vec<(&str, &str)> = readers
        .iter()
        .flat_map(|(s, gs)| gs.iter().map(move |g| (*s, g.name.as_str())))
        .collect();
    for (s, g) in &pairs {
        cmds.push(("XPENDING", vec![arg(*s), arg(*g)]));
    }
    // KPI inputs: today's counters and active users, the last complete minute's trades,
    // and the all-time totals.
    use crate::handlers::analytics as an;
    let now = crate::envelope::now_ms();
    let today = crate::handlers::utc_day(now);
    cmds.push(("HGETALL", vec![arg(an::day_key(&today))]));
    cmds.push(("PFCOUNT", vec![arg(an::dau_key(&today))]));
    cmds.push((
        "GET",
        vec![arg(an::trades_minute_key(an::unix_minute(now) - 1))],
    ));
    cmds.push(("HGETALL", vec![arg(an::total_key())]));
    let mut replies = redis.pipeline(cmds).await?.into_iter();
    let dlq: HashMap<String, i64> = replies
        .next()
        .and_then(|r| r.ok())
        .map(as_pairs)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, as_int(&v).unwrap_or(0)))
        .collect();
    let mut lengths: HashMap<&str, i64> = HashMap::new();
    let mut infos: HashMap<(&str, String), HashMap<String, Value>> = HashMap::new();
    let mut out = Snapshot::default();
    for s in &cfg.streams {
        let len = match replies.next() {
            Some(Ok(v)) => as_int(&v).unwrap_or(0),
            Some(Err(e)) if e.is_transient() => return Err(e),
            _ => 0,
        };
        lengths.insert(s.name.as_str(), len);
        out.streams.push((s.name.clone(), len));
        if let Some(Ok(v)) = replies.next() {
            for g in as_array(v).unwrap_or_default() {
                let m: HashMap<String, Value> = as_pairs(g).into_iter().collect();
                let name = m.get("name").and_then(as_string).unwrap_or_default();
                infos.insert((s.name.as_str(), name), m);
            }
        }
    }
    for (s, g) in pairs {
        let info = infos.get(&(s, g.to_string()));
        let oldest_id = replies
            .next()
            .and_then(|r| r.ok())
            .and_then(as_array)
            .and_then(|a| a.get(1).and_then(as_string));
        let oldest = oldest_id.as_deref().map(age_ms);
        out.groups.push(GroupStatus {
            group: g.to_string(),
            stream: s.to_string(),
            length: lengths.get(s).copied().unwrap_or(0),
            lag: info.and_then(|i| i.get("lag")).and_then(as_int),
            pending: info
                .and_then(|i| i.get("pending"))
                .and_then(as_int)
                .unwrap_or(0),
            oldest_pending_age_ms: oldest,
            consumers: info
                .and_then(|i| i.get("consumers"))
                .and_then(as_int)
                .unwrap_or(0),
            exists: info.is_some(),
            dead_letters: dlq.get(g).copied().unwrap_or(0),
            last_delivered_id: info
                .and_then(|i| i.get("last-delivered-id"))
                .and_then(as_string),
            oldest_pending_id: oldest_id,
            entries_read: info.and_then(|i| i.get("entries-read")).and_then(as_int),
        });
    }
    let ints = |v: Option<Result<Value, BusError>>| -> std::collections::BTreeMap<String, i64> {
        v.and_then(|r| r.ok())
            .map(as_pairs)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, as_int(&v).unwrap_or(0)))
            .collect()
    };
    out.kpi.day = ints(replies.next());
    out.kpi.dau = replies
        .next()
        .and_then(|r| r.ok())
        .as_ref()
        .and_then(as_int)
        .unwrap_or(0);
    out.kpi.trades_last_minute = replies
        .next()
        .and_then(|r| r.ok())
        .as_ref()
        .and_then(as_int)
        .unwrap_or(0);
    out.totals = ints(replies.next());
    Ok(out)
}
