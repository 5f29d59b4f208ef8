//! Step 2a of the hot path for remote handlers: the group's service decides the batch
//! ([`crate::handler::Decide`]), and while no instance can, the group waits without
//! burning deliveries.
//!
//! - First, a payload that breaks its stream's built-in contract is poison without asking
//!   anyone (a service sees only what a built-in handler would accept).
//! - **Decided**: each event takes its decision into the round (committed like any
//!   handler's: ops, derived events and the ack in one script; a `retry` stays pending,
//!   a `poison` is dead-lettered).
//! - **Failed** (the request reached an instance: timeout, 5xx, an answer off the
//!   contract): counted against every event asked; after `max_deliveries` such failures
//!   an event is dead-lettered (`max_deliveries`, with the last failure); otherwise it is
//!   asked again after a backoff.
//! - **Wait** (no healthy instance, every breaker open, connections refused): nothing is
//!   counted. The batch keeps its entries: this process holds them (its reclaimer skips
//!   them) and, so another daemon's reclaimer does not take them either, resets their
//!   idle time with `XCLAIM … JUSTID` (which does not count a delivery) every half
//!   `claim_idle`. An outage therefore never sends events to the dead-letter stream.

use std::time::{Duration, Instant};

use super::client::arg;
use backon::{BackoffBuilder, ExponentialBuilder};

use super::consume::{Batch, GroupContext, sleep_or_shutdown};
use super::deadletter::Reason;
use crate::handler::{Asked, Decide};
use crate::shutdown::Shutdown;

/// Waits between asks while no instance can take the batch, at most.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// Asks the service about every active event it has not decided yet. `false`: shutdown
/// came while waiting (the events stay pending).
pub(super) async fn ask(
    ctx: &GroupContext,
    remote: &dyn Decide,
    from: &str,
    batch: &mut Batch,
    shutdown: &Shutdown,
) -> bool {
    let mut sd = shutdown.clone();
    // The group's own backoff between failed requests (`backoff`, `max_backoff`).
    let mut backoff = match ctx.handler.remote() {
        Some(spec) => ExponentialBuilder::default()
            .with_min_delay(spec.backoff)
            .with_max_delay(spec.max_backoff)
            .with_jitter()
            .without_max_times()
            .build(),
        None => ExponentialBuilder::default().without_max_times().build(),
    };
    let mut waiting_since: Option<Instant> = None;
    let mut touched = Instant::now();
    // A service only sees payloads that keep their stream's contract: the others are
    // poison before anyone is asked (as a built-in handler's payload decoding does).
    for w in batch.active.iter_mut().filter(|w| w.undecided()) {
        let ev = &w.ev;
        if let Err(e) = crate::events::check_for_service(&ev.stream, || {
            ev.env.data_as_json().map_err(|e| e.to_string())
        }) {
            w.decided = Some(Err(crate::handler::HandlerError::Poison(e)));
        }
    }
    loop {
        let idx: Vec<usize> = (0..batch.active.len())
            .filter(|&i| batch.active[i].undecided())
            .collect();
        if idx.is_empty() {
            return true;
        }
        // Traced: the service is asked within the event's process span, so its own spans
        // join the trade's trace (a copy of the event only when tracing is on).
        let traced: Vec<Option<crate::handler::Event>> = idx
            .iter()
            .map(|&i| {
                let w = &batch.active[i];
                w.trace.tp.as_ref().map(|tp| {
                    let mut e = w.ev.clone();
                    e.env.tp = Some(tp.clone());
                    e
                })
            })
            .collect();
        let events: Vec<&crate::handler::Event> = idx
            .iter()
            .zip(&traced)
            .map(|(&i, t)| t.as_ref().unwrap_or(&batch.active[i].ev))
            .collect();
        let attempts: Vec<u64> = idx.iter().map(|&i| batch.active[i].attempts).collect();
        let asked = remote.decide(&events, &attempts).await;
        drop(events);
        drop(traced);
        match asked {
            Asked::Decided(decisions) => {
                if let Some(since) = waiting_since {
                    tracing::info!(group = %ctx.group.name, stream = from, waited = ?since.elapsed(), "remote handler's service is back; the group goes on");
                }
                for (i, d) in idx.into_iter().zip(decisions) {
                    batch.active[i].decided = Some(d);
                }
                return true;
            }
            Asked::Failed(why) => {
                let limit = ctx.group.max_deliveries;
                let mut gave_up = vec![];
                for &i in &idx {
                    let w = &mut batch.active[i];
                    w.remote_failures += 1;
                    if w.remote_failures >= limit {
                        gave_up.push(i);
                    }
                }
                tracing::warn!(group = %ctx.group.name, stream = from, events = idx.len(), error = %why, "remote handler's service failed on a batch; asking again after a backoff");
                // Highest index first, so the others keep their places.
                for i in gave_up.into_iter().rev() {
                    let w = batch.active.remove(i);
                    let n = w.remote_failures;
                    batch.dead.push(w.into_dead(
                        Reason::MaxDeliveries,
                        format!("remote handler's service failed {n} times (max_deliveries is {limit}); last: {why}"),
                    ));
                }
                let d = backoff.next().unwrap_or(MAX_WAIT);
                if !sleep_or_shutdown(d, &mut sd).await {
                    return false;
                }
            }
            Asked::Wait { retry_in, why } => {
                if waiting_since.is_none() {
                    tracing::warn!(group = %ctx.group.name, stream = from, events = idx.len(), reason = %why, "no instance of the remote handler's service can take events; the group waits (nothing is dead-lettered for it)");
                    waiting_since = Some(Instant::now());
                }
                if touched.elapsed() >= ctx.group.claim_idle / 2 {
                    keep(ctx, from, batch).await;
                    touched = Instant::now();
                }
                let d = retry_in.clamp(Duration::from_millis(50), MAX_WAIT);
                if !sleep_or_shutdown(d, &mut sd).await {
                    return false;
                }
            }
        }
    }
}

/// Resets the idle time of the batch's entries (XCLAIM to ourselves with JUSTID, which
/// leaves the delivery count alone), so no reclaimer takes them while the group waits.
async fn keep(ctx: &GroupContext, from: &str, batch: &Batch) {
    let mut a = vec![
        arg(from),
        arg(ctx.group.name.as_str()),
        arg(ctx.consumer.as_str()),
        arg(0),
    ];
    a.extend(batch.active.iter().map(|w| arg(w.ev.entry_id.as_str())));
    a.push(arg("JUSTID"));
    if let Err(e) = ctx.redis.cmd("XCLAIM", a).await {
        tracing::warn!(group = %ctx.group.name, stream = from, error = %e, "keeping waiting entries claimed failed; another daemon may reclaim them");
    }
}
