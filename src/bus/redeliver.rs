//! Entries delivered before: this consumer's own pending entries (after a crash or a
//! restart) and reclaimed ones, claimed again one at a time and processed through
//! [`process_batch`] (beside [`super::consume`], whose hot path they share).

use std::collections::HashMap;

use super::client::{BusError, arg, as_array, as_int, as_string};
use super::consume::{BatchReport, GroupContext, process_batch};
use crate::shutdown::Shutdown;

/// This consumer's pending entries of `group` on `stream` after `after` (exclusive; `-`
/// for the start), at most `count`, with Redis's delivery count of each.
pub async fn own_pending(
    ctx: &GroupContext,
    stream: &str,
    after: &str,
    count: usize,
) -> Result<Vec<(String, u64)>, BusError> {
    let start = if after == "-" {
        "-".to_string()
    } else {
        format!("({after}")
    };
    let v = ctx
        .redis
        .cmd(
            "XPENDING",
            vec![
                arg(stream),
                arg(ctx.group.name.as_str()),
                arg(start),
                arg("+"),
                arg(count as i64),
                arg(ctx.consumer.as_str()),
            ],
        )
        .await?;
    Ok(as_array(v)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|row| {
            let cols = as_array(row)?;
            Some((
                cols.first().and_then(as_string)?,
                cols.get(3).and_then(as_int).unwrap_or(1).max(0) as u64,
            ))
        })
        .collect())
}

/// What [`redeliver`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RedeliverReport {
    /// What processing them did.
    pub processed: BatchReport,
    /// Entries that were gone when claimed again (deleted from the stream while pending,
    /// or finished by another consumer meanwhile).
    pub gone: usize,
}

/// Processes entries of `stream` this consumer already owns but that were delivered before
/// (left pending by a crash or a restart, or just reclaimed from another consumer), given
/// as (entry id, delivery count). One at a time, each claimed again first: XCLAIM counts
/// the delivery and returns the body, so only an attempt that really happens is counted.
/// An entry that kills the process therefore reaches `max_deliveries` after that many
/// attempts and is dead-lettered without running again, while the entries queued behind
/// it are not counted at all. The caller holds the entries ([`GroupContext::hold`]).
pub async fn redeliver(
    ctx: &GroupContext,
    stream: &str,
    entries: &[(String, u64)],
    shutdown: &Shutdown,
) -> Result<RedeliverReport, BusError> {
    let mut report = RedeliverReport::default();
    for (id, count) in entries {
        if shutdown.is_shutdown() {
            break;
        }
        let v = ctx
            .redis
            .cmd(
                "XCLAIM",
                vec![
                    arg(stream),
                    arg(ctx.group.name.as_str()),
                    arg(ctx.consumer.as_str()),
                    arg(0),
                    arg(id.as_str()),
                ],
            )
            .await?;
        let claimed = super::client::parse_entries(v);
        let Some(entry) = claimed.into_iter().next() else {
            report.gone += 1;
            continue;
        };
        let deliveries = HashMap::from([(id.clone(), count + 1)]);
        report.processed += process_batch(ctx, stream, vec![entry], &deliveries, shutdown).await;
    }
    Ok(report)
}
