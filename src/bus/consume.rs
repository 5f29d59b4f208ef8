//! Consuming: per (group, stream) a reader on its own connection runs XREADGROUP with COUNT
//! and BLOCK, and hands each batch to [`process_batch`], which decodes the entries, runs the
//! handler's rounds through the one wrapping layer ([`run_step`]: timing, panic catching),
//! commits each round for the whole batch in one script call, and dead-letters what can
//! never succeed. Round trips per batch: one read, one commit per handler round (one for
//! most handlers), plus one dead-letter call when there is something to dead-letter.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::client::{BusError, Fields, RawEntry, Redis, arg, parse_read_reply};
use super::commit::{RoundItem, RoundOutcome, commit_round};
use super::deadletter::{DeadLetter, Reason, dead_letter};
use super::declare::declare_group_at;
use crate::config::{GroupConfig, parse_stream_name};
use crate::envelope::{Envelope, now_ms};
use crate::handlers::{Event, Handler, HandlerError, MAX_ROUNDS, Op, Reply, Step};
use crate::metrics::{DeadLetterLabels, GroupLabel, Metrics};
use crate::shutdown::Shutdown;
use crate::watchdog::Heartbeat;

/// Everything a group's readers share.
pub struct GroupContext {
    /// Shared, auto-pipelined connection for commits, claims and dead letters.
    pub redis: Redis,
    /// The group's settings.
    pub group: Arc<GroupConfig>,
    /// The group's handler.
    pub handler: Arc<dyn Handler>,
    /// This daemon's consumer name in the group.
    pub consumer: String,
    /// How long event ids are remembered.
    pub dedup_ttl: Duration,
    /// In-flight events of the group (read, not yet committed), bounded by `concurrency`.
    pub inflight: Arc<Semaphore>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Streams the handler may publish to.
    pub publishes: HashSet<String>,
}

/// Exponential backoff used for Redis trouble: 50 ms doubling to 5 s, with jitter.
pub fn redis_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Sleeps for `d` unless shutdown comes first; returns false on shutdown.
pub async fn sleep_or_shutdown(d: Duration, shutdown: &mut Shutdown) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shutdown.recv() => false,
    }
}

/// What [`process_batch`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    /// Entries whose effects committed (now acknowledged).
    pub committed: usize,
    /// Entries skipped as already applied (acknowledged).
    pub duplicates: usize,
    /// Entries dead-lettered.
    pub dead_lettered: usize,
    /// Entries left pending for a later retry.
    pub left_pending: usize,
}

/// Runs one handler step inside the layer every handler call goes through: it catches a
/// panic (turning it into poison, so one bad event cannot kill the daemon) and times it.
pub fn run_step(
    handler: &dyn Handler,
    ev: &Event,
    rounds: &[Vec<Reply>],
) -> (Result<Step, HandlerError>, Duration) {
    let start = Instant::now();
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| handler.step(ev, rounds)));
    let r = match r {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            Err(HandlerError::Poison(format!("handler panicked: {msg}")))
        }
    };
    (r, start.elapsed())
}

/// Decodes an entry, checking that its type and version match the stream it is on.
pub fn decode_entry(stream: &str, fields: &[(Vec<u8>, Vec<u8>)]) -> Result<Envelope, String> {
    let env = Envelope::from_fields(fields).map_err(|e| e.to_string())?;
    if let Some((domain, event, v)) = parse_stream_name(stream) {
        let expected = format!("{domain}.{event}");
        if env.event_type != expected {
            return Err(format!(
                "field `type`: {:?} does not match stream {stream} (expected {expected:?})",
                env.event_type
            ));
        }
        if env.v != v {
            return Err(format!(
                "field `v`: {} does not match stream {stream} (version {v})",
                env.v
            ));
        }
    }
    Ok(env)
}

struct Work {
    ev: Event,
    rounds: Vec<Vec<Reply>>,
    handler_time: Duration,
    /// Times this event's round lost a hash-chain race and was committed again.
    conflicts: u32,
}

/// A round that keeps losing hash-chain races this often is left pending (reclaimed later).
const MAX_CHAIN_CONFLICTS: u32 = 100;

/// Processes entries of `stream` for the group: decode, handle, commit, dead-letter.
///
/// `deliveries` gives Redis's delivery count per entry when known (reclaimed entries);
/// entries over `max_deliveries` are dead-lettered without being handled again.
/// Transient failures (Redis trouble, `HandlerError::Retry`) are retried with backoff a
/// few times; what still fails stays pending, to be reclaimed later. Never loses an entry:
/// each one ends committed, dead-lettered, or pending.
pub async fn process_batch(
    ctx: &GroupContext,
    stream: &str,
    entries: Vec<RawEntry>,
    deliveries: &HashMap<String, u64>,
    shutdown: &Shutdown,
) -> BatchReport {
    let g = &ctx.group;
    let m = &ctx.metrics;
    let labels = Metrics::sg(stream, &g.name);
    let mut report = BatchReport::default();
    let mut dead: Vec<DeadLetter> = vec![];
    let mut work: Vec<Work> = vec![];
    let mut raw_fields: HashMap<String, Fields> = HashMap::new();
    m.consumed
        .get_or_create(&labels)
        .inc_by(entries.len() as u64);
    for e in entries {
        let attempts = deliveries.get(&e.id).copied().unwrap_or(1);
        let Some(fields) = e.fields else {
            // Body trimmed while pending: nothing left to process or to dead-letter.
            continue;
        };
        if attempts > u64::from(g.max_deliveries) {
            dead.push(DeadLetter {
                entry_id: e.id.clone(),
                fields,
                reason: Reason::MaxDeliveries,
                error: format!(
                    "delivered {attempts} times, max_deliveries is {}",
                    g.max_deliveries
                ),
                attempts,
            });
            continue;
        }
        match decode_entry(stream, &fields) {
            Ok(env) => {
                raw_fields.insert(e.id.clone(), fields);
                work.push(Work {
                    ev: Event {
                        stream: stream.to_string(),
                        entry_id: e.id,
                        env,
                    },
                    rounds: vec![],
                    handler_time: Duration::ZERO,
                    conflicts: 0,
                });
            }
            Err(reason) => dead.push(DeadLetter {
                entry_id: e.id,
                fields,
                reason: Reason::Malformed,
                error: reason,
                attempts,
            }),
        }
    }

    let mut backoff = redis_backoff();
    let mut sd = shutdown.clone();
    let mut retry_budget = 3u32;
    let mut chain_gave_up = 0usize;
    let mut active = work;
    while !active.is_empty() {
        // One round for every active event.
        let mut steps: Vec<(usize, Step)> = vec![];
        let mut retry_later: Vec<Work> = vec![];
        let mut keep: Vec<Work> = vec![];
        for w in active.drain(..) {
            let (r, took) = run_step(ctx.handler.as_ref(), &w.ev, &w.rounds);
            let mut w = w;
            w.handler_time += took;
            match r {
                Ok(step) => {
                    if let Err(reason) = check_step(ctx, &step, w.rounds.len()) {
                        dead.push(dl(&w, &mut raw_fields, deliveries, Reason::Poison, reason));
                    } else {
                        steps.push((keep.len(), step));
                        keep.push(w);
                    }
                }
                Err(HandlerError::Poison(reason)) => {
                    dead.push(dl(&w, &mut raw_fields, deliveries, Reason::Poison, reason));
                }
                Err(HandlerError::Retry(reason)) => {
                    tracing::debug!(group = %g.name, stream, entry = %w.ev.entry_id, cid = %w.ev.env.cid, %reason, "handler asked to retry");
                    retry_later.push(w);
                }
            }
        }
        // Build the script call for this round.
        let mut items: Vec<RoundItem> = Vec::with_capacity(steps.len());
        for (i, step) in &steps {
            let w = &keep[*i];
            let (ops, is_final, emits): (&[Op], bool, Vec<(String, Envelope)>) = match step {
                Step::More(ops) => (ops, false, vec![]),
                Step::Done { ops, emit } => (
                    ops,
                    true,
                    emit.iter()
                        .enumerate()
                        .map(|(n, e)| {
                            (
                                e.stream.clone(),
                                w.ev.env.derive(
                                    &g.name,
                                    n as u32,
                                    &e.event_type,
                                    e.v,
                                    e.data.clone(),
                                ),
                            )
                        })
                        .collect(),
                ),
            };
            items.push(RoundItem {
                event_id: &w.ev.env.id,
                event_ts: w.ev.env.ts,
                entry_id: &w.ev.entry_id,
                round: w.rounds.len(),
                is_final,
                ops,
                emits,
            });
        }
        let outcomes = if items.is_empty() {
            vec![]
        } else {
            m.commit_batch_size
                .get_or_create(&GroupLabel {
                    group: g.name.clone(),
                })
                .observe(items.len() as f64);
            loop {
                match commit_round(&ctx.redis, &g.name, stream, ctx.dedup_ttl.as_secs(), &items)
                    .await
                {
                    Ok(o) => break o,
                    Err(BusError::NoGroup(msg)) => {
                        // The group vanished (Redis restarted without persistence): the
                        // reader re-creates it; these entries are gone with the old group.
                        tracing::warn!(group = %g.name, stream, %msg, "commit hit NOGROUP; the reader re-creates the group");
                        report.left_pending += items.len();
                        return report;
                    }
                    Err(e) if e.is_transient() && !shutdown.is_shutdown() => {
                        let d = backoff.next().unwrap_or(Duration::from_secs(5));
                        tracing::warn!(group = %g.name, stream, error = %e, "commit failed, retrying in {d:?}");
                        sleep_or_shutdown(d, &mut sd).await;
                    }
                    Err(e) => {
                        tracing::error!(group = %g.name, stream, error = %e, "commit failed; entries stay pending");
                        m.retried.get_or_create(&labels).inc_by(items.len() as u64);
                        report.left_pending += items.len();
                        return report;
                    }
                }
            }
        };
        drop(items);
        // Apply outcomes.
        let mut next: Vec<Work> = vec![];
        let finals: Vec<bool> = steps
            .iter()
            .map(|(_, s)| matches!(s, Step::Done { .. }))
            .collect();
        for (((w, outcome), is_final), (_, step)) in
            keep.into_iter().zip(outcomes).zip(finals).zip(&steps)
        {
            if let (RoundOutcome::Applied(_), Step::Done { emit, .. }) = (&outcome, step) {
                for e in emit {
                    m.published
                        .get_or_create(&crate::metrics::StreamLabel {
                            stream: e.stream.clone(),
                        })
                        .inc();
                }
            }
            match outcome {
                RoundOutcome::Applied(replies) | RoundOutcome::Replayed(replies) => {
                    if is_final {
                        report.committed += 1;
                        m.acked.get_or_create(&labels).inc();
                        let gl = GroupLabel {
                            group: g.name.clone(),
                        };
                        m.handler_seconds
                            .get_or_create(&gl)
                            .observe(w.handler_time.as_secs_f64());
                        let e2e = (now_ms() - w.ev.env.ts).max(0) as f64 / 1000.0;
                        m.end_to_end_seconds.get_or_create(&gl).observe(e2e);
                    } else {
                        let mut w = w;
                        w.rounds.push(replies);
                        if w.rounds.len() >= MAX_ROUNDS {
                            let reason = format!("handler needed more than {MAX_ROUNDS} rounds");
                            dead.push(dl(&w, &mut raw_fields, deliveries, Reason::Poison, reason));
                        } else {
                            next.push(w);
                        }
                    }
                }
                RoundOutcome::AlreadyDone => {
                    report.duplicates += 1;
                    m.duplicates.get_or_create(&labels).inc();
                }
                RoundOutcome::Failed(reason) => {
                    dead.push(dl(&w, &mut raw_fields, deliveries, Reason::Failed, reason));
                }
                RoundOutcome::Conflict => {
                    // Another appender moved a chain head: redo this round (nothing was
                    // written), deciding again from the same recorded replies.
                    let mut w = w;
                    w.conflicts += 1;
                    m.chain_conflicts.get_or_create(&labels).inc();
                    if w.conflicts > MAX_CHAIN_CONFLICTS {
                        tracing::debug!(group = %g.name, stream, entry = %w.ev.entry_id, cid = %w.ev.env.cid, "hash-chain contention: entry left pending");
                        chain_gave_up += 1;
                        report.left_pending += 1;
                    } else {
                        next.push(w);
                    }
                }
            }
        }
        active = next;
        if !retry_later.is_empty() {
            if retry_budget > 0 && !shutdown.is_shutdown() {
                retry_budget -= 1;
                m.retried
                    .get_or_create(&labels)
                    .inc_by(retry_later.len() as u64);
                let d = backoff.next().unwrap_or(Duration::from_secs(1));
                sleep_or_shutdown(d, &mut sd).await;
                // Restart those events from their current round.
                active.extend(retry_later);
            } else {
                // Leave them pending: reclaim redelivers them after claim_idle, and
                // Redis's delivery count sends them to dead letters eventually.
                report.left_pending += retry_later.len();
            }
        }
    }

    if chain_gave_up > 0 {
        tracing::warn!(group = %g.name, stream, count = chain_gave_up, "hash-chain contention: entries left pending");
    }
    if !dead.is_empty() {
        let mut backoff = redis_backoff();
        loop {
            match dead_letter(&ctx.redis, &g.name, stream, &g.dead_letter_stream, &dead).await {
                Ok(n) => {
                    report.dead_lettered += n;
                    // Each entry at debug; one warning per batch and reason, so a flood of
                    // bad input cannot flood the log.
                    let mut by_reason: std::collections::BTreeMap<&str, (usize, &str)> =
                        Default::default();
                    for d in &dead {
                        let cid = d
                            .fields
                            .iter()
                            .find(|(k, _)| k == b"cid")
                            .map(|(_, v)| String::from_utf8_lossy(v));
                        tracing::debug!(group = %g.name, stream, entry = %d.entry_id, cid = cid.as_deref(), reason = d.reason.as_str(), error = %d.error, "dead-lettered");
                        by_reason
                            .entry(d.reason.as_str())
                            .or_insert((0, &d.error))
                            .0 += 1;
                        m.dead_lettered
                            .get_or_create(&DeadLetterLabels {
                                stream: stream.to_string(),
                                group: g.name.clone(),
                                reason: d.reason.as_str().to_string(),
                            })
                            .inc();
                    }
                    for (reason, (count, first_error)) in by_reason {
                        tracing::warn!(group = %g.name, stream, reason, count, first_error, "entries dead-lettered");
                    }
                    break;
                }
                Err(e) if e.is_transient() && !shutdown.is_shutdown() => {
                    let d = backoff.next().unwrap_or(Duration::from_secs(5));
                    sleep_or_shutdown(d, &mut sd).await;
                }
                Err(e) => {
                    tracing::error!(group = %g.name, stream, error = %e, "dead-lettering failed; entries stay pending");
                    report.left_pending += dead.len();
                    break;
                }
            }
        }
    }
    report
}

fn dl(
    w: &Work,
    raw: &mut HashMap<String, Fields>,
    deliveries: &HashMap<String, u64>,
    reason: Reason,
    error: String,
) -> DeadLetter {
    DeadLetter {
        entry_id: w.ev.entry_id.clone(),
        fields: raw.remove(&w.ev.entry_id).unwrap_or_default(),
        reason,
        error,
        attempts: deliveries.get(&w.ev.entry_id).copied().unwrap_or(1),
    }
}

/// A handler may only publish to the streams its group declares.
fn check_step(ctx: &GroupContext, step: &Step, _round: usize) -> Result<(), String> {
    if let Step::Done { emit, .. } = step {
        for e in emit {
            if !ctx.publishes.contains(&e.stream) {
                return Err(format!(
                    "handler emitted to {} which group {} does not list in `publishes`",
                    e.stream, ctx.group.name
                ));
            }
        }
    }
    Ok(())
}

/// Reads this consumer's own pending entries on `stream` (left by a previous run of this
/// instance) and processes them before reading new ones.
async fn recover_own_pending(
    ctx: &Arc<GroupContext>,
    conn: &Redis,
    stream: &str,
    shutdown: &Shutdown,
    beat: &Heartbeat,
) -> Result<(), BusError> {
    let g = &ctx.group;
    let mut after = "0-0".to_string();
    loop {
        beat.beat();
        let v = conn
            .cmd(
                "XREADGROUP",
                vec![
                    arg("GROUP"),
                    arg(g.name.as_str()),
                    arg(ctx.consumer.as_str()),
                    arg("COUNT"),
                    arg(g.batch_size as i64),
                    arg("STREAMS"),
                    arg(stream),
                    arg(after.as_str()),
                ],
            )
            .await?;
        let entries: Vec<RawEntry> = parse_read_reply(v)
            .into_iter()
            .flat_map(|(_, e)| e)
            .collect();
        if entries.is_empty() || shutdown.is_shutdown() {
            return Ok(());
        }
        after = entries.last().map(|e| e.id.clone()).unwrap_or(after);
        let gone: Vec<&RawEntry> = entries.iter().filter(|e| e.fields.is_none()).collect();
        if !gone.is_empty() {
            // Pending entries whose body was trimmed away: acknowledge, count as lost.
            ctx.metrics
                .lost
                .get_or_create(&Metrics::sg(stream, &g.name))
                .inc_by(gone.len() as u64);
            tracing::error!(group = %g.name, stream, count = gone.len(), "pending entries were trimmed before processing: lost");
            let mut args = vec![arg(stream), arg(g.name.as_str())];
            args.extend(gone.iter().map(|e| arg(e.id.as_str())));
            ctx.redis.cmd("XACK", args).await?;
        }
        process_batch(ctx, stream, entries, &HashMap::new(), shutdown).await;
    }
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
    // Own connection: a blocked XREADGROUP would stall every command queued behind it.
    let conn = loop {
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
    };
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut recovered = false;
    let mut nogroup_logged = false;
    let block_ms = g.block.as_millis().max(1) as i64;
    while !shutdown.is_shutdown() {
        beat.beat();
        if !recovered {
            match recover_own_pending(&ctx, &conn, &stream, &shutdown, &beat).await {
                Ok(()) => recovered = true,
                Err(BusError::NoGroup(_)) => recovered = true,
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
        let read = conn.blocking_cmd(
            "XREADGROUP",
            8,
            vec![
                arg("GROUP"),
                arg(g.name.as_str()),
                arg(ctx.consumer.as_str()),
                arg("COUNT"),
                arg(g.batch_size as i64),
                arg("BLOCK"),
                arg(block_ms),
                arg("STREAMS"),
                arg(stream.as_str()),
                arg(">"),
            ],
        );
        let reply = tokio::select! {
            r = read => r,
            _ = shutdown.recv() => break,
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
                let entries: Vec<RawEntry> = parse_read_reply(v)
                    .into_iter()
                    .flat_map(|(_, e)| e)
                    .collect();
                if entries.is_empty() {
                    continue;
                }
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
                    process_batch(&ctx2, &stream2, entries, &HashMap::new(), &sd).await;
                });
            }
            Err(BusError::NoGroup(msg)) => {
                if !nogroup_logged {
                    tracing::error!(group = %g.name, %stream, %msg, "consumer group is gone (Redis restarted or failed over?); re-creating it at 0");
                    nogroup_logged = true;
                }
                ctx.metrics.nogroup_recoveries.get_or_create(&labels).inc();
                if let Err(e) = declare_group_at(&ctx.redis, &stream, &g.name, "0").await {
                    tracing::warn!(group = %g.name, %stream, error = %e, "re-creating the group failed");
                    let d = backoff.next().unwrap_or(Duration::from_secs(5));
                    if !sleep_or_shutdown(d, &mut shutdown).await {
                        break;
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
    conn.quit().await;
}
