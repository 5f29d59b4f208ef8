//! The hot path: what happens to a batch of entries one group read from one stream.
//!
//! [`process_batch`] is a short driver over named steps, read top to bottom:
//!
//! 1. [`decode`]: every entry becomes work, or a dead letter (malformed, or delivered more
//!    than `max_deliveries` times);
//! 2. [`decide`]: the handler runs one round for every active event, inside the one layer
//!    every handler call goes through ([`run_step`]: timing, panic catching); for a
//!    remote handler, its service decides the batch first ([`super::remote::ask`]);
//! 3. [`commit`]: the round is committed for the whole batch ([`commit_round`]: one script
//!    call on one node), retrying transient Redis trouble with backoff;
//! 4. [`Batch::apply`]: per event, the outcome: done, another round, a duplicate, not ours
//!    any more, failed, or a hash-chain race to run again;
//! 5. [`Batch::dead_letter`]: what can never succeed goes to the dead-letter stream (and
//!    only then is acknowledged).
//!
//! Round trips per batch: one read (by the reader), one commit per handler round (one for
//! most handlers), plus one dead-letter call when there is something to dead-letter.
//!
//! Entries that were delivered before (a crash, a reclaim, a restart) are processed one at
//! a time after the fresh ones: if one of them kills the process, only its own delivery
//! count grows, it reaches `max_deliveries` and is dead-lettered without running again,
//! and its batch neighbours are not dragged along.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};

use super::client::{BusError, Fields, RawEntry, arg};
use super::commit::{Memory, RoundItem, RoundOutcome, commit_round, recall};
pub use super::context::{GroupContext, Hold};
use super::deadletter::{DeadLetter, Reason, dead_letter, unpack_dead_letter};
pub use super::redeliver::{RedeliverReport, own_pending, redeliver};
use super::replay::resolve_replays;
pub use super::replay::{is_replay_stream, replay_stream};
use crate::config::parse_stream_name;
use crate::envelope::{Envelope, now_ms};
use crate::events::custom::CustomSchema;
use crate::handlers::{Event, Handler, HandlerError, MAX_ROUNDS, Op, Reply, Step};
use crate::internal_events::{
    ChainConflict, CommitAbandoned, CommitBatch, DuplicatesSkipped, EntriesConsumed,
    EntriesDeadLettered, EntriesLeftPending, EntryDeadLettered, EventCommitted, EventsPublished,
    EventsRetried,
};
use crate::metrics::{GroupLabel, Metrics};
use crate::shutdown::Shutdown;
use crate::telemetry::spans::{self, Traced};

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
    /// Entries another consumer finished or dead-lettered while this one held them
    /// (nothing written for them here).
    pub not_ours: usize,
}

impl std::ops::AddAssign for BatchReport {
    fn add_assign(&mut self, o: BatchReport) {
        self.committed += o.committed;
        self.duplicates += o.duplicates;
        self.dead_lettered += o.dead_lettered;
        self.left_pending += o.left_pending;
        self.not_ours += o.not_ours;
    }
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

/// Checks an entry's payload against its stream's declared schema; the error names the
/// field, as the edge's 422 does.
fn check_schema(schema: &CustomSchema, stream: &str, env: &Envelope) -> Result<(), String> {
    let v = env
        .data_as_json()
        .map_err(|e| format!("field `data`: not a payload ({e})"))?;
    schema
        .check(&v)
        .map_err(|p| format!("payload breaks the schema of {stream}: {p}"))
}

/// One event being handled.
pub(super) struct Work {
    pub(super) ev: Event,
    /// The entry's fields as read, kept for its dead letter.
    pub(super) fields: Fields,
    pub(super) attempts: u64,
    rounds: Vec<Vec<Reply>>,
    handler_time: Duration,
    /// Times this event's round lost a hash-chain race and was committed again.
    conflicts: u32,
    /// A remote handler's decision, taken instead of calling the handler.
    pub(super) decided: Option<Result<Step, HandlerError>>,
    /// Requests about this event that reached a remote handler's service and failed.
    pub(super) remote_failures: u32,
    /// Its `process` span (off unless tracing is on): its context is the `tp` of what it
    /// derives (and of what a remote handler's service is asked).
    pub(super) trace: Traced,
}

impl Work {
    /// Whether a remote handler's service still has to decide this event.
    pub(super) fn undecided(&self) -> bool {
        self.decided.is_none() && self.rounds.is_empty()
    }
}

/// A round that keeps losing hash-chain races this often is left pending (reclaimed later).
const MAX_CHAIN_CONFLICTS: u32 = 100;

/// Transient trouble (Redis, `HandlerError::Retry`) is retried this many times within a
/// batch; what still fails stays pending for the reclaimer.
const RETRY_BUDGET: u32 = 3;

/// Processes entries that `ctx`'s group read from `from` (one of its streams, or its replay
/// stream): decode, handle, commit, dead-letter. `deliveries` gives Redis's delivery count
/// per entry where known; entries over `max_deliveries` are dead-lettered without being
/// handled again. Never loses an entry: each one ends committed, dead-lettered, pending,
/// or found to be someone else's.
pub async fn process_batch(
    ctx: &GroupContext,
    from: &str,
    entries: Vec<RawEntry>,
    deliveries: &HashMap<String, u64>,
    shutdown: &Shutdown,
) -> BatchReport {
    let (fresh, again): (Vec<RawEntry>, Vec<RawEntry>) = entries
        .into_iter()
        .partition(|e| deliveries.get(&e.id).copied().unwrap_or(1) < 2);
    let mut report = BatchReport::default();
    if !fresh.is_empty() {
        report += run_batch(ctx, from, fresh, deliveries, shutdown).await;
    }
    // Delivered before: one at a time, so an entry that kills the process takes only its
    // own delivery count up.
    for e in again {
        report += run_batch(ctx, from, vec![e], deliveries, shutdown).await;
    }
    report
}

async fn run_batch(
    ctx: &GroupContext,
    from: &str,
    entries: Vec<RawEntry>,
    deliveries: &HashMap<String, u64>,
    shutdown: &Shutdown,
) -> BatchReport {
    let entries = if is_replay_stream(from) {
        match resolve_replays(ctx, from, entries).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(group = %ctx.group.name, stream = from, error = %e, "reading replayed dead letters failed; they stay pending");
                return BatchReport::default();
            }
        }
    } else {
        entries
    };
    let mut batch = decode(ctx, from, entries, deliveries);
    triage_over_limit(ctx, from, &mut batch).await;
    let mut backoff = redis_backoff();
    let mut sd = shutdown.clone();
    let mut retry_budget = RETRY_BUDGET;
    while !batch.active.is_empty() {
        // Step 2a, remote handlers: the service decides; while none can, the group waits.
        if let Some(remote) = &ctx.remote
            && !super::remote::ask(ctx, remote.as_ref(), from, &mut batch, shutdown).await
        {
            batch.report.left_pending += batch.active.len();
            batch.active.clear();
            break;
        }
        let (steps, retry_later) = decide(ctx, &mut batch);
        match commit(ctx, from, &batch, &steps, shutdown).await {
            Ok(outcomes) => batch.apply(ctx, &steps, outcomes),
            Err(left) => {
                batch
                    .active
                    .iter()
                    .for_each(|w| w.trace.outcome("left_pending", None));
                batch.report.left_pending += left;
                batch.active.clear();
                return batch.report;
            }
        }
        if !retry_later.is_empty() {
            if retry_budget > 0 && !shutdown.is_shutdown() {
                retry_budget -= 1;
                EventsRetried {
                    labels: &batch.labels,
                    count: retry_later.len(),
                }
                .emit(&ctx.metrics);
                let d = backoff.next().unwrap_or(Duration::from_secs(1));
                sleep_or_shutdown(d, &mut sd).await;
                // Those events start again from their current round.
                batch.active.extend(retry_later);
            } else {
                // Left pending: the reclaimer redelivers them after claim_idle, and Redis's
                // delivery count sends them to the dead letters eventually.
                retry_later
                    .iter()
                    .for_each(|w| w.trace.outcome("left_pending", None));
                batch.report.left_pending += retry_later.len();
            }
        }
    }
    batch.dead_letter(ctx, from, shutdown).await;
    batch.report
}

/// A batch in progress.
pub(super) struct Batch {
    labels: crate::metrics::StreamGroup,
    pub(super) active: Vec<Work>,
    /// Over `max_deliveries`, each with its dead letter: [`triage_over_limit`] decides.
    over_limit: Vec<(Work, DeadLetter)>,
    pub(super) dead: Vec<DeadLetter>,
    report: BatchReport,
    chain_gave_up: usize,
}

/// Step 1: entries → work or dead letters. Entries of the replay stream carry the stream
/// they were first read from and the fields they had there.
fn decode(
    ctx: &GroupContext,
    from: &str,
    entries: Vec<RawEntry>,
    deliveries: &HashMap<String, u64>,
) -> Batch {
    let g = &ctx.group;
    let labels = Metrics::sg(from, &g.name);
    EntriesConsumed {
        labels: &labels,
        count: entries.len(),
    }
    .emit(&ctx.metrics);
    let mut batch = Batch {
        labels,
        active: vec![],
        over_limit: vec![],
        dead: vec![],
        report: BatchReport::default(),
        chain_gave_up: 0,
    };
    let replay = is_replay_stream(from);
    for e in entries {
        let attempts = deliveries.get(&e.id).copied().unwrap_or(1);
        // Body trimmed while pending: nothing left to process or to dead-letter (the
        // reader and the reclaimer count these as lost).
        let Some(raw) = e.fields else { continue };
        let (stream, fields) = if replay {
            let (meta, original) = unpack_dead_letter(raw);
            let stream = meta
                .iter()
                .find(|(k, _)| k == "stream")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            (stream, original)
        } else {
            (from.to_string(), raw)
        };
        let dead = |reason, error| DeadLetter {
            entry_id: e.id.clone(),
            stream: stream.clone(),
            fields: fields.clone(),
            reason,
            error,
            attempts,
        };
        let over_limit = attempts > u64::from(g.max_deliveries);
        let too_many = || {
            dead(
                Reason::MaxDeliveries,
                format!(
                    "delivered {attempts} times, max_deliveries is {}",
                    g.max_deliveries
                ),
            )
        };
        let decoded = if replay && !g.reads.contains(&stream) {
            Err(format!(
                "replayed from stream {stream:?}, which group {} does not read",
                g.name
            ))
        } else {
            decode_entry(&stream, &fields).and_then(|env| match ctx.schemas.get(&stream) {
                Some(schema) => check_schema(schema, &stream, &env).map(|()| env),
                None => Ok(env),
            })
        };
        match decoded {
            Ok(env) => {
                let letter = over_limit.then(too_many);
                let trace = spans::process(
                    &g.name,
                    &stream,
                    &env.id,
                    &e.id,
                    &env.cid,
                    env.tp.as_deref(),
                    replay,
                );
                let w = Work {
                    ev: Event {
                        stream,
                        entry_id: e.id,
                        env,
                    },
                    fields,
                    attempts,
                    rounds: vec![],
                    handler_time: Duration::ZERO,
                    conflicts: 0,
                    decided: None,
                    remote_failures: 0,
                    trace,
                };
                match letter {
                    Some(d) => batch.over_limit.push((w, d)),
                    None => batch.active.push(w),
                }
            }
            // Over the limit it says so, whatever else is wrong with it (as before).
            Err(_) if over_limit => batch.dead.push(too_many()),
            Err(reason) => batch.dead.push(dead(Reason::Malformed, reason)),
        }
    }
    batch
}

/// A delivery that reached the commit before may have applied part of the event (a
/// round on one node, some hash slots in a cluster), so an entry over `max_deliveries`
/// is dead-lettered only if nothing of it is recorded: a completed one is acknowledged,
/// a started one runs again (its handler finished before; the commit resumes from what
/// was recorded) until twice `max_deliveries`. Without this, a crash between a
/// commit's first write and its XACK, then crashes during the redeliveries, ends with
/// the event both applied and dead-lettered.
async fn triage_over_limit(ctx: &GroupContext, from: &str, batch: &mut Batch) {
    if batch.over_limit.is_empty() {
        return;
    }
    let over = std::mem::take(&mut batch.over_limit);
    let ids: Vec<&str> = over.iter().map(|(w, _)| w.ev.env.id.as_str()).collect();
    let memory = match recall(&ctx.redis, ctx.target(from), &ids).await {
        Ok(m) => m,
        Err(e) => {
            // Unknown: leave them pending rather than guess (redelivered later).
            tracing::warn!(group = %ctx.group.name, stream = from, error = %e, "reading the commit record of entries over max_deliveries failed; they stay pending");
            batch.report.left_pending += over.len();
            return;
        }
    };
    let mut acks = vec![];
    for ((w, letter), m) in over.into_iter().zip(memory) {
        let limit = 2 * u64::from(ctx.group.max_deliveries);
        match m {
            Memory::Done => {
                w.trace.outcome("duplicate", None);
                acks.push(w.ev.entry_id)
            }
            Memory::Started if w.attempts <= limit => {
                tracing::info!(group = %ctx.group.name, stream = from, entry = %w.ev.entry_id, attempts = w.attempts, "entry over max_deliveries was committed in part before: finishing it");
                batch.active.push(w);
            }
            _ => {
                w.trace.dead_lettered(letter.reason.as_str(), &letter.error);
                batch.dead.push(letter)
            }
        }
    }
    if !acks.is_empty() {
        let mut a = vec![arg(from), arg(ctx.group.name.as_str())];
        a.extend(acks.iter().map(|i| arg(i.as_str())));
        match ctx.redis.cmd("XACK", a).await {
            Ok(_) => {
                batch.report.duplicates += acks.len();
                DuplicatesSkipped {
                    labels: &batch.labels,
                    count: acks.len(),
                }
                .emit(&ctx.metrics);
            }
            Err(e) => {
                tracing::warn!(group = %ctx.group.name, stream = from, error = %e, "acknowledging completed entries failed; they stay pending");
                batch.report.left_pending += acks.len();
            }
        }
    }
}

/// Step 2: one handler round for every active event. Returns the steps (in the order of
/// `batch.active`, which keeps only the events that have a step) and the events the
/// handler wants retried later.
fn decide(ctx: &GroupContext, batch: &mut Batch) -> (Vec<Step>, Vec<Work>) {
    let mut steps = vec![];
    let mut keep = vec![];
    let mut retry_later = vec![];
    for mut w in batch.active.drain(..) {
        let (r, took) = match w.decided.take() {
            Some(d) => (d, Duration::ZERO),
            None => run_step(ctx.handler.as_ref(), &w.ev, &w.rounds),
        };
        w.handler_time += took;
        match r.and_then(|s| check_step(ctx, s)) {
            Ok(step) => {
                steps.push(step);
                keep.push(w);
            }
            Err(HandlerError::Poison(reason)) => {
                batch.dead.push(w.into_dead(Reason::Poison, reason))
            }
            Err(HandlerError::Retry(reason)) => {
                w.trace.outcome("retry", None);
                tracing::debug!(group = %ctx.group.name, stream = %w.ev.stream, entry = %w.ev.entry_id, cid = %w.ev.env.cid, %reason, "handler asked to retry");
                retry_later.push(w);
            }
        }
    }
    batch.active = keep;
    (steps, retry_later)
}

/// A handler may only publish to the streams its group declares.
fn check_step(ctx: &GroupContext, step: Step) -> Result<Step, HandlerError> {
    if let Step::Done { emit, .. } = &step {
        for e in emit {
            if !ctx.publishes.contains(&e.stream) {
                return Err(HandlerError::Poison(format!(
                    "handler emitted to {} which group {} does not list in `publishes`",
                    e.stream, ctx.group.name
                )));
            }
        }
    }
    Ok(step)
}

/// Step 3: commits the round for the whole batch, retrying transient trouble with backoff.
/// `Err(n)`: gave up; the `n` events stay pending (redelivered later).
async fn commit(
    ctx: &GroupContext,
    from: &str,
    batch: &Batch,
    steps: &[Step],
    shutdown: &Shutdown,
) -> Result<Vec<RoundOutcome>, usize> {
    if steps.is_empty() {
        return Ok(vec![]);
    }
    let g = &ctx.group;
    let items: Vec<RoundItem> = batch
        .active
        .iter()
        .zip(steps)
        .map(|(w, step)| round_item(&g.name, w, step))
        .collect();
    CommitBatch {
        group: &g.name,
        size: items.len(),
    }
    .emit(&ctx.metrics);
    let mut backoff = redis_backoff();
    let mut sd = shutdown.clone();
    loop {
        match commit_round(&ctx.redis, ctx.target(from), &items).await {
            Ok(o) => return Ok(o),
            Err(BusError::NoGroup(msg)) => {
                // The group vanished: the reader re-creates it where it was, and these
                // entries come again from there.
                tracing::warn!(group = %g.name, stream = from, %msg, "commit hit NOGROUP; the reader re-creates the group");
                return Err(items.len());
            }
            Err(e) if e.is_transient() && !shutdown.is_shutdown() => {
                let d = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(group = %g.name, stream = from, error = %e, "commit failed, retrying in {d:?}");
                sleep_or_shutdown(d, &mut sd).await;
            }
            Err(e) => {
                CommitAbandoned {
                    labels: &batch.labels,
                    group: &g.name,
                    stream: from,
                    error: &e,
                    count: items.len(),
                }
                .emit(&ctx.metrics);
                return Err(items.len());
            }
        }
    }
}

/// The commit's view of one event's step. Derived events get their deterministic ids here.
fn round_item<'a>(group: &str, w: &'a Work, step: &'a Step) -> RoundItem<'a> {
    let (ops, is_final, emits): (&[Op], bool, Vec<(String, Envelope)>) = match step {
        Step::More(ops) => (ops, false, vec![]),
        Step::Done { ops, emit } => (
            ops,
            true,
            emit.iter()
                .enumerate()
                .map(|(n, e)| {
                    let mut d =
                        w.ev.env
                            .derive(group, n as u32, &e.event_type, e.v, e.data.clone());
                    // Traced: the derived event continues the trace from this event's span.
                    if w.trace.tp.is_some() {
                        d.tp.clone_from(&w.trace.tp);
                    }
                    (e.stream.clone(), d)
                })
                .collect(),
        ),
    };
    RoundItem {
        event_id: &w.ev.env.id,
        entry_id: &w.ev.entry_id,
        round: w.rounds.len(),
        is_final,
        ops,
        emits,
    }
}

impl Work {
    pub(super) fn into_dead(self, reason: Reason, error: String) -> DeadLetter {
        self.trace.dead_lettered(reason.as_str(), &error);
        DeadLetter {
            entry_id: self.ev.entry_id,
            stream: self.ev.stream,
            fields: self.fields,
            reason,
            error,
            attempts: self.attempts,
        }
    }
}

impl Batch {
    /// Step 4: what each event's outcome means.
    fn apply(&mut self, ctx: &GroupContext, steps: &[Step], outcomes: Vec<RoundOutcome>) {
        let g = &ctx.group;
        let m = &ctx.metrics;
        let gl = GroupLabel {
            group: g.name.clone(),
        };
        let mut next = vec![];
        for ((mut w, outcome), step) in self.active.drain(..).zip(outcomes).zip(steps) {
            let is_final = matches!(step, Step::Done { .. });
            match outcome {
                RoundOutcome::Applied(replies) | RoundOutcome::Replayed(replies) => {
                    if is_final {
                        if let Step::Done { emit, .. } = step {
                            for e in emit {
                                EventsPublished {
                                    stream: &e.stream,
                                    count: 1,
                                }
                                .emit(m);
                            }
                        }
                        self.report.committed += 1;
                        w.trace.outcome("ok", None);
                        EventCommitted {
                            labels: &self.labels,
                            group: &gl,
                            handler_time: w.handler_time,
                            end_to_end: (now_ms() - w.ev.env.ts).max(0) as f64 / 1000.0,
                        }
                        .emit(m);
                    } else {
                        w.rounds.push(replies);
                        if w.rounds.len() >= MAX_ROUNDS {
                            let reason = format!("handler needed more than {MAX_ROUNDS} rounds");
                            self.dead.push(w.into_dead(Reason::Poison, reason));
                        } else {
                            next.push(w);
                        }
                    }
                }
                RoundOutcome::AlreadyDone => {
                    w.trace.outcome("duplicate", None);
                    self.report.duplicates += 1;
                    DuplicatesSkipped {
                        labels: &self.labels,
                        count: 1,
                    }
                    .emit(m);
                }
                RoundOutcome::NotOurs => {
                    w.trace.outcome("not_ours", None);
                    tracing::debug!(group = %g.name, stream = %w.ev.stream, entry = %w.ev.entry_id, "entry no longer pending for us (finished or dead-lettered elsewhere)");
                    self.report.not_ours += 1;
                }
                RoundOutcome::Failed(reason) => {
                    self.dead.push(w.into_dead(Reason::Failed, reason));
                }
                RoundOutcome::Conflict => {
                    // Another appender moved a chain head: redo this round (nothing was
                    // written), deciding again from the same recorded replies.
                    w.conflicts += 1;
                    ChainConflict {
                        labels: &self.labels,
                    }
                    .emit(m);
                    if w.conflicts > MAX_CHAIN_CONFLICTS {
                        w.trace.outcome("left_pending", None);
                        self.chain_gave_up += 1;
                        self.report.left_pending += 1;
                    } else {
                        next.push(w);
                    }
                }
            }
        }
        self.active = next;
    }

    /// Step 5: moves what can never succeed to the dead-letter stream, acknowledging each
    /// entry only once its dead letter is stored.
    async fn dead_letter(&mut self, ctx: &GroupContext, from: &str, shutdown: &Shutdown) {
        let g = &ctx.group;
        if self.chain_gave_up > 0 {
            EntriesLeftPending {
                group: &g.name,
                stream: from,
                count: self.chain_gave_up,
            }
            .emit(&ctx.metrics);
        }
        if self.dead.is_empty() {
            return;
        }
        let mut backoff = redis_backoff();
        let mut sd = shutdown.clone();
        loop {
            match dead_letter(
                &ctx.redis,
                &g.name,
                &ctx.consumer,
                from,
                &g.dead_letter_stream,
                &self.dead,
            )
            .await
            {
                Ok(n) => {
                    self.report.dead_lettered += n;
                    self.log_dead_letters(ctx);
                    return;
                }
                Err(e) if e.is_transient() && !shutdown.is_shutdown() => {
                    let d = backoff.next().unwrap_or(Duration::from_secs(5));
                    sleep_or_shutdown(d, &mut sd).await;
                }
                Err(e) => {
                    tracing::error!(group = %g.name, stream = from, error = %e, "dead-lettering failed; entries stay pending");
                    self.report.left_pending += self.dead.len();
                    return;
                }
            }
        }
    }

    /// Each dead letter at debug; one warning per batch and reason, so a flood of bad input
    /// cannot flood the log.
    fn log_dead_letters(&self, ctx: &GroupContext) {
        let g = &ctx.group;
        let mut by_reason: BTreeMap<&str, (usize, &str, &str)> = Default::default();
        for d in &self.dead {
            let cid = d
                .fields
                .iter()
                .find(|(k, _)| k == b"cid")
                .map(|(_, v)| String::from_utf8_lossy(v));
            EntryDeadLettered {
                stream: &d.stream,
                group: &g.name,
                entry: &d.entry_id,
                cid: cid.as_deref(),
                reason: d.reason.as_str(),
                error: &d.error,
            }
            .emit(&ctx.metrics);
            by_reason
                .entry(d.reason.as_str())
                .or_insert((0, &d.error, &d.stream))
                .0 += 1;
        }
        for (reason, (count, first_error, stream)) in by_reason {
            EntriesDeadLettered {
                stream,
                group: &g.name,
                reason,
                count,
                first_error,
            }
            .emit(&ctx.metrics);
        }
    }
}
