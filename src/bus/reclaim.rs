//! Reclaiming: entries pending on any consumer for longer than `claim_idle` (a crashed or
//! paused daemon, a retry left pending) are taken over with XAUTOCLAIM, looping on its
//! cursor, and processed again; Redis's delivery counter (read with XPENDING) sends an
//! entry to the dead letters after `max_deliveries`. Entries whose body was trimmed while
//! pending are counted and reported as lost. Also removes consumers that are idle and own
//! nothing: a consumer with pending entries is never deleted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{BusError, arg, as_array, as_int, as_pairs, as_string, parse_entries};
use super::consume::{BatchReport, GroupContext, process_batch, sleep_or_shutdown};
use super::script::Script;
use crate::metrics::Metrics;
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

/// Delivery counts of this consumer's pending entries between `first` and `last`.
async fn delivery_counts(
    ctx: &GroupContext,
    stream: &str,
    first: &str,
    last: &str,
    count: usize,
) -> Result<HashMap<String, u64>, BusError> {
    let v = ctx
        .redis
        .cmd(
            "XPENDING",
            vec![
                arg(stream),
                arg(ctx.group.name.as_str()),
                arg(first),
                arg(last),
                arg((count * 2 + 16) as i64),
                arg(ctx.consumer.as_str()),
            ],
        )
        .await?;
    let mut out = HashMap::new();
    for row in as_array(v).unwrap_or_default() {
        let cols = as_array(row).unwrap_or_default();
        if let (Some(id), Some(n)) = (
            cols.first().and_then(as_string),
            cols.get(3).and_then(as_int),
        ) {
            out.insert(id, n.max(0) as u64);
        }
    }
    Ok(out)
}

/// One full XAUTOCLAIM pass over the group's pending entries of `stream`.
pub async fn reclaim_once(
    ctx: &Arc<GroupContext>,
    stream: &str,
    shutdown: &Shutdown,
) -> Result<ReclaimReport, BusError> {
    let g = &ctx.group;
    let mut report = ReclaimReport::default();
    let mut cursor = "0-0".to_string();
    let min_idle = g.claim_idle.as_millis() as i64;
    loop {
        if shutdown.is_shutdown() {
            break;
        }
        let v = ctx
            .redis
            .cmd(
                "XAUTOCLAIM",
                vec![
                    arg(stream),
                    arg(g.name.as_str()),
                    arg(ctx.consumer.as_str()),
                    arg(min_idle),
                    arg(cursor.as_str()),
                    arg("COUNT"),
                    arg(g.batch_size as i64),
                ],
            )
            .await?;
        let mut parts = as_array(v).unwrap_or_default().into_iter();
        let next = parts
            .next()
            .as_ref()
            .and_then(as_string)
            .unwrap_or_else(|| "0-0".into());
        let entries = parts.next().map(parse_entries).unwrap_or_default();
        let deleted = parts.next().and_then(as_array).unwrap_or_default();
        if !deleted.is_empty() {
            // Redis already dropped these from the pending list; their bodies were trimmed.
            report.lost += deleted.len();
            ctx.metrics
                .lost
                .get_or_create(&Metrics::sg(stream, &g.name))
                .inc_by(deleted.len() as u64);
            tracing::error!(group = %g.name, stream, count = deleted.len(),
                ids = ?deleted.iter().filter_map(as_string).collect::<Vec<_>>(),
                "pending entries were trimmed from the stream before processing: lost");
        }
        if !entries.is_empty() {
            // Claimed entries count against the group's in-flight bound like read ones.
            let permits = ctx
                .inflight
                .clone()
                .acquire_many_owned(entries.len() as u32)
                .await
                .map_err(|_| BusError::Unavailable("shutting down".into()))?;
            report.claimed += entries.len();
            let first = entries.first().map(|e| e.id.clone()).unwrap_or_default();
            let last = entries.last().map(|e| e.id.clone()).unwrap_or_default();
            let counts = delivery_counts(ctx, stream, &first, &last, entries.len()).await?;
            tracing::info!(group = %g.name, stream, claimed = entries.len(), "reclaimed idle pending entries");
            let r = process_batch(ctx, stream, entries, &counts, shutdown).await;
            report.processed.committed += r.committed;
            report.processed.duplicates += r.duplicates;
            report.processed.dead_lettered += r.dead_lettered;
            report.processed.left_pending += r.left_pending;
            drop(permits);
        }
        if next == "0-0" {
            break;
        }
        cursor = next;
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
