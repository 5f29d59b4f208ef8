//! Readers: per (group, stream) a loop that reads entries and hands each batch to
//! [`process_batch`].
//!
//! A declared stream gets a blocking XREADGROUP (COUNT, BLOCK) on a connection of its own
//! (a blocked read would stall every command queued behind it on a shared one); a group's
//! replay stream, where operators send dead letters back, is polled on the shared
//! connection. At start a reader first processes what this consumer still has pending
//! there (left by a previous run), with Redis's delivery counts, so an entry that made the
//! process crash reaches `max_deliveries` and is dead-lettered instead of crashing it
//! forever. When Redis says the group is gone (NOGROUP), the group is re-created where it
//! was: at the position the daemon last recorded for it ([`super::status::recorded_position`]), or
//! at its configured `start_id` when none was ever recorded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::client::{BusError, RawEntry, Value, arg, parse_read_reply};
use super::consume::{
    GroupContext, RedeliverReport, is_replay_stream, own_pending, process_batch, redeliver,
    redis_backoff, sleep_or_shutdown,
};
use super::declare::declare_group_at;
use crate::internal_events::{LostEntries, NogroupRecovery};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::watchdog::Heartbeat;

/// How often an idle replay stream is polled.
pub const REPLAY_POLL: Duration = Duration::from_millis(500);

/// The XREADGROUP arguments for `consumer` of `group` reading `stream` after `after`
/// (`>` for new entries), with `block` when given.
pub fn read_group_args(
    group: &str,
    consumer: &str,
    count: usize,
    block: Option<Duration>,
    stream: &str,
    after: &str,
) -> Vec<Value> {
    let mut a = vec![
        arg("GROUP"),
        arg(group),
        arg(consumer),
        arg("COUNT"),
        arg(count as i64),
    ];
    if let Some(b) = block {
        a.push(arg("BLOCK"));
        a.push(arg(b.as_millis().max(1) as i64));
    }
    a.push(arg("STREAMS"));
    a.push(arg(stream));
    a.push(arg(after));
    a
}

fn entries_of(v: Value) -> Vec<RawEntry> {
    parse_read_reply(v)
        .into_iter()
        .flat_map(|(_, e)| e)
        .collect()
}

/// Processes this consumer's own pending entries on `stream` (left by a previous run of
/// this instance) before it reads new ones: one at a time, counting each attempt
/// ([`redeliver`]).
async fn recover_own_pending(
    ctx: &Arc<GroupContext>,
    stream: &str,
    shutdown: &Shutdown,
    beat: &Heartbeat,
) -> Result<(), BusError> {
    let g = &ctx.group;
    let mut after = "-".to_string();
    let mut total = RedeliverReport::default();
    loop {
        beat.beat();
        let page = own_pending(ctx, stream, &after, g.batch_size).await?;
        if page.is_empty() || shutdown.is_shutdown() {
            break;
        }
        after = page.last().map(|(id, _)| id.clone()).unwrap_or(after);
        // Those the reclaimer of this process already took are left to it.
        let (_hold, taken) = ctx.hold(stream, page.iter().map(|(id, _)| id.clone()));
        let page: Vec<(String, u64)> = page
            .into_iter()
            .filter(|(id, _)| taken.contains(id))
            .collect();
        let r = redeliver(ctx, stream, &page, shutdown).await?;
        total.processed += r.processed;
        total.gone += r.gone;
    }
    if total.gone > 0 {
        LostEntries {
            group: &g.name,
            stream,
            count: total.gone,
        }
        .emit(&ctx.metrics);
    }
    let p = &total.processed;
    if p.committed + p.duplicates + p.dead_lettered + p.left_pending > 0 {
        tracing::info!(group = %g.name, stream, committed = p.committed, duplicates = p.duplicates, dead_lettered = p.dead_lettered, left_pending = p.left_pending, "processed entries this consumer left pending");
    }
    Ok(())
}

/// Re-creates a vanished group on `stream` where it was: the last position recorded for
/// it, else its configured `start_id`. Entries between that position and where the group
/// really was are read again and skipped as done (the position is at most one health
/// refresh old, far inside the de-duplication window).
pub async fn recreate_group(ctx: &GroupContext, stream: &str) -> Result<String, BusError> {
    let g = &ctx.group;
    let at = match super::status::recorded_position(&ctx.redis, stream, &g.name).await? {
        Some(id) => id,
        None if is_replay_stream(stream) => "0".to_string(),
        None => g.start_id.as_redis().to_string(),
    };
    declare_group_at(&ctx.redis, stream, &g.name, &at).await?;
    Ok(at)
}

/// The reader of one (group, stream): runs until shutdown, then waits for its in-flight
/// batches to finish (the daemon bounds that wait with the drain deadline). `beat` is
/// touched once per iteration: the watchdog's proof that this reader is not stuck.
pub async fn read_loop(
    ctx: Arc<GroupContext>,
    stream: String,
    mut shutdown: Shutdown,
    beat: Heartbeat,
) {
    let g = ctx.group.clone();
    let labels = Metrics::sg(&stream, &g.name);
    let mut backoff = redis_backoff();
    let poll = is_replay_stream(&stream);
    // Own connection for a blocking read; the replay stream is polled on the shared one.
    let conn = if poll {
        ctx.redis.clone()
    } else {
        loop {
            beat.beat();
            match ctx.redis.dedicated().await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(group = %g.name, %stream, error = %e, "cannot open reader connection");
                    let d = backoff.next().unwrap_or(Duration::from_secs(5));
                    if !sleep_or_shutdown(d, &mut shutdown).await {
                        return;
                    }
                }
            }
        }
    };
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut recovered = false;
    let mut nogroup_logged = false;
    while !shutdown.is_shutdown() {
        beat.beat();
        if !recovered {
            match recover_own_pending(&ctx, &stream, &shutdown, &beat).await {
                Ok(()) | Err(BusError::NoGroup(_)) => recovered = true,
                Err(e) => {
                    tracing::warn!(group = %g.name, %stream, error = %e, "recovering own pending entries failed");
                    let d = backoff.next().unwrap_or(Duration::from_secs(5));
                    if !sleep_or_shutdown(d, &mut shutdown).await {
                        break;
                    }
                    continue;
                }
            }
        }
        let args = read_group_args(
            &g.name,
            &ctx.consumer,
            g.batch_size,
            (!poll).then_some(g.block),
            &stream,
            ">",
        );
        let reply = if poll {
            tokio::select! {
                r = conn.cmd("XREADGROUP", args) => r,
                _ = shutdown.recv() => break,
            }
        } else {
            tokio::select! {
                r = conn.blocking_cmd("XREADGROUP", 8, args) => r,
                _ = shutdown.recv() => break,
            }
        };
        // Reap finished batches so the JoinSet does not grow.
        while let Some(r) = tasks.try_join_next() {
            if let Err(e) = r {
                tracing::error!(group = %g.name, %stream, error = %e, "batch task failed");
            }
        }
        match reply {
            Ok(v) => {
                backoff = redis_backoff();
                nogroup_logged = false;
                let entries = entries_of(v);
                if entries.is_empty() {
                    if poll && !sleep_or_shutdown(REPLAY_POLL, &mut shutdown).await {
                        break;
                    }
                    continue;
                }
                // Held from the moment they are read, so this process's own reclaimer
                // leaves them alone however long they wait for room.
                let (hold, _) = ctx.hold(&stream, entries.iter().map(|e| e.id.clone()));
                // Bounded in-flight work: room for what was read is taken *after* the read,
                // so a reader blocked on an idle stream never holds room that the group's
                // busy streams need. While the group is full this reader stops reading.
                let permits = tokio::select! {
                    p = ctx.inflight.clone().acquire_many_owned(entries.len() as u32) => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    // Entries read but not started stay pending: recovered or reclaimed.
                    _ = shutdown.recv() => break,
                };
                let ctx2 = ctx.clone();
                let stream2 = stream.clone();
                let sd = shutdown.clone();
                tasks.spawn(async move {
                    let _permits = permits;
                    let _hold = hold;
                    let report = process_batch(&ctx2, &stream2, entries, &HashMap::new(), &sd).await;
                    if is_replay_stream(&stream2) && report.committed + report.duplicates > 0 {
                        tracing::info!(group = %ctx2.group.name, committed = report.committed, duplicates = report.duplicates, dead_lettered = report.dead_lettered, "replayed dead letters processed");
                    }
                });
            }
            Err(BusError::NoGroup(msg)) => {
                NogroupRecovery { labels: &labels }.emit(&ctx.metrics);
                match recreate_group(&ctx, &stream).await {
                    Ok(at) => {
                        if !nogroup_logged {
                            tracing::error!(group = %g.name, %stream, %msg, at = %at, "consumer group was gone (destroyed, or Redis lost it); re-created where it was");
                            nogroup_logged = true;
                        }
                        // Whatever this consumer had pending went with the old group.
                        recovered = false;
                    }
                    Err(e) => {
                        tracing::warn!(group = %g.name, %stream, error = %e, "re-creating the group failed");
                        let d = backoff.next().unwrap_or(Duration::from_secs(5));
                        if !sleep_or_shutdown(d, &mut shutdown).await {
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                let d = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(group = %g.name, %stream, error = %e, "read failed, retrying in {d:?}");
                if !sleep_or_shutdown(d, &mut shutdown).await {
                    break;
                }
            }
        }
    }
    // Stop reading; finish what is in flight.
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            tracing::error!(group = %g.name, %stream, error = %e, "batch task failed");
        }
    }
    if !poll {
        conn.quit().await;
    }
}
