//! Reclaiming: entries pending on any consumer for longer than `claim_idle` (a crashed or
//! paused daemon, a retry left pending) are taken over (XPENDING IDLE, then XCLAIM JUSTID)
//! and processed again one at a time; Redis's delivery counter sends an entry to the dead
//! letters after `max_deliveries`. Entries whose body was trimmed while
//! pending are counted and reported as lost. Also removes consumers that are idle and own
//! nothing: a consumer with pending entries is never deleted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{BusError, arg, as_array, as_int, as_pairs, as_string};
use super::consume::{BatchReport, GroupContext, is_replay_stream, redeliver, sleep_or_shutdown};
use super::script::Script;
use crate::internal_events::{LostEntry, ReclaimedEntries};
use crate::shutdown::Shutdown;

pub(crate) static DELETE_IDLE_CONSUMER: Script = Script::new(
    "delete_idle_consumer",
    r#"#!lua
-- KEYS[1] stream; ARGV group, consumer. Deletes the consumer only if it owns no pending
-- entry, checked and done atomically (DELCONSUMER would drop its pending entries).
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) and 1 or 0
"#,
);

/// What one reclaim pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReclaimReport {
    /// Entries claimed.
    pub claimed: usize,
    /// Pending entries whose body was gone (trimmed): lost.
    pub lost: usize,
    /// What processing the claimed entries did.
    pub processed: BatchReport,
}

/// One full pass over the group's entries of `stream` pending for longer than
/// `claim_idle` on any consumer (XPENDING IDLE, looping on the id). Entries this process
/// itself holds are left alone (they are being worked on, and touching them would make
/// them look alive to other daemons); the others are taken over with XCLAIM JUSTID (which
/// does not count a delivery, and only takes an entry still idle that long), then processed
/// one at a time by [`redeliver`], which counts each attempt as it happens.
pub async fn reclaim_once(
    ctx: &Arc<GroupContext>,
    stream: &str,
    shutdown: &Shutdown,
) -> Result<ReclaimReport, BusError> {
    let g = &ctx.group;
    let mut report = ReclaimReport::default();
    let mut after = "-".to_string();
    let min_idle = g.claim_idle.as_millis() as i64;
    loop {
        if shutdown.is_shutdown() {
            break;
        }
        let start = if after == "-" {
            after.clone()
        } else {
            format!("({after}")
        };
        let v = ctx
            .redis
            .cmd(
                "XPENDING",
                vec![
                    arg(stream),
                    arg(g.name.as_str()),
                    arg("IDLE"),
                    arg(min_idle),
                    arg(start),
                    arg("+"),
                    arg(g.batch_size as i64),
                ],
            )
            .await?;
        // (id, consumer, idle ms, deliveries)
        let rows: Vec<(String, String, u64)> = as_array(v)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| {
                let c = as_array(r)?;
                Some((
                    c.first().and_then(as_string)?,
                    c.get(1).and_then(as_string).unwrap_or_default(),
                    c.get(3).and_then(as_int).unwrap_or(1).max(0) as u64,
                ))
            })
            .collect();
        let Some(last) = rows.last().map(|r| r.0.clone()) else {
            break;
        };
        let full_page = rows.len() >= g.batch_size;
        after = last;
        let (hold, taken) = ctx.hold(stream, rows.iter().map(|r| r.0.clone()));
        if !taken.is_empty() {
            let mut a = vec![
                arg(stream),
                arg(g.name.as_str()),
                arg(ctx.consumer.as_str()),
                arg(min_idle),
            ];
            a.extend(taken.iter().map(|id| arg(id.as_str())));
            a.push(arg("JUSTID"));
            let claimed: std::collections::HashSet<String> =
                as_array(ctx.redis.cmd("XCLAIM", a).await?)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(as_string)
                    .collect();
            // Not claimed: touched by another consumer meanwhile, or deleted from the
            // stream (XCLAIM drops those from the pending list). Only the latter is a loss.
            for id in taken.iter().filter(|id| !claimed.contains(*id)) {
                let body = ctx
                    .redis
                    .cmd(
                        "XRANGE",
                        vec![arg(stream), arg(id.as_str()), arg(id.as_str())],
                    )
                    .await?;
                if as_array(body).is_none_or(|a| a.is_empty()) {
                    report.lost += 1;
                    LostEntry {
                        group: &g.name,
                        stream,
                        entry: id,
                    }
                    .emit(&ctx.metrics);
                }
            }
            let entries: Vec<(String, u64)> = rows
                .iter()
                .filter(|r| claimed.contains(&r.0))
                .map(|r| (r.0.clone(), r.2))
                .collect();
            if !entries.is_empty() {
                // Claimed entries count against the group's in-flight bound like read ones.
                let permits = ctx
                    .inflight
                    .clone()
                    .acquire_many_owned(entries.len() as u32)
                    .await
                    .map_err(|_| BusError::Unavailable("shutting down".into()))?;
                report.claimed += entries.len();
                let owners: std::collections::BTreeSet<&str> = rows
                    .iter()
                    .filter(|r| claimed.contains(&r.0))
                    .map(|r| r.1.as_str())
                    .collect();
                ReclaimedEntries {
                    group: &g.name,
                    stream,
                    count: entries.len(),
                    from: &owners,
                }
                .emit(&ctx.metrics);
                let r = redeliver(ctx, stream, &entries, shutdown).await?;
                report.processed += r.processed;
                drop(permits);
            }
        }
        drop(hold);
        if !full_page {
            break;
        }
    }
    Ok(report)
}

/// Deletes consumers of the group on `stream` that own no pending entries and have been
/// idle for at least `idle_limit`. Never this daemon's own consumer. Returns their names.
pub async fn remove_idle_consumers(
    ctx: &GroupContext,
    stream: &str,
    idle_limit: Duration,
) -> Result<Vec<String>, BusError> {
    let v = ctx
        .redis
        .cmd(
            "XINFO",
            vec![arg("CONSUMERS"), arg(stream), arg(ctx.group.name.as_str())],
        )
        .await?;
    let mut removed = vec![];
    for c in as_array(v).unwrap_or_default() {
        let info: HashMap<String, _> = as_pairs(c).into_iter().collect();
        let name = info.get("name").and_then(as_string).unwrap_or_default();
        let pending = info.get("pending").and_then(as_int).unwrap_or(1);
        // Redis 7.2+ reports `inactive` (since last successful read); 7.0 only `idle`.
        let idle = info
            .get("inactive")
            .and_then(as_int)
            .filter(|v| *v >= 0)
            .or_else(|| info.get("idle").and_then(as_int))
            .unwrap_or(0);
        if name.is_empty()
            || name == ctx.consumer
            || pending > 0
            || (idle as u128) < idle_limit.as_millis()
        {
            continue;
        }
        let r = DELETE_IDLE_CONSUMER
            .call(
                &ctx.redis,
                vec![arg(stream)],
                vec![arg(ctx.group.name.as_str()), arg(name.as_str())],
            )
            .await?;
        if as_int(&r) == Some(1) {
            tracing::info!(group = %ctx.group.name, stream, consumer = %name, "removed idle consumer with nothing pending");
            removed.push(name);
        }
    }
    Ok(removed)
}

/// Reclaims idle entries every `claim_idle / 2` and prunes idle consumers, until shutdown.
pub async fn reclaim_loop(
    ctx: Arc<GroupContext>,
    stream: String,
    consumer_idle_limit: Duration,
    mut shutdown: Shutdown,
) {
    let interval =
        (ctx.group.claim_idle / 2).clamp(Duration::from_millis(20), Duration::from_secs(10));
    let prune_every =
        (consumer_idle_limit / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut last_prune = Instant::now();
    loop {
        if !sleep_or_shutdown(interval, &mut shutdown).await {
            break;
        }
        if is_replay_stream(&stream) {
            // Only this group reads its replay stream: what it finished can go.
            if let Err(e) = super::retention::trim_to_floor(&ctx.redis, &stream).await {
                tracing::debug!(group = %ctx.group.name, %stream, error = %e, "trimming the replay stream failed");
            }
        }
        match reclaim_once(&ctx, &stream, &shutdown).await {
            Ok(_) | Err(BusError::NoGroup(_)) => {}
            Err(e) => {
                tracing::warn!(group = %ctx.group.name, %stream, error = %e, "reclaim pass failed")
            }
        }
        if last_prune.elapsed() >= prune_every {
            last_prune = Instant::now();
            if let Err(e) = remove_idle_consumers(&ctx, &stream, consumer_idle_limit).await
                && !matches!(e, BusError::NoGroup(_))
            {
                tracing::warn!(group = %ctx.group.name, %stream, error = %e, "pruning idle consumers failed");
            }
        }
    }
}
