//! What happens in the daemon, as named events (Vector's `internal_events` style): one
//! small struct per thing that happens, whose [`emit`](EventCommitted::emit) updates its
//! metric and writes its log line together, so the two cannot drift apart. Nothing else
//! updates a metric: the delivery path (consume, reader, reclaim), the HTTP edge and the
//! daemon's health loop all emit these.
//!
//! Metric names and labels are those of [`crate::metrics`] (fixed label sets, never ids:
//! streams and groups of the topology, route templates, the limits' names as `'static`
//! strings); each log line keeps the level, target (the module that emits it) and fields
//! it had where it happens.

use std::time::Duration;

use crate::metrics::{
    BreakerLabels, DeadLetterLabels, DropLabel, GroupLabel, HttpLabels, LimitLabel, Metrics,
    RouteLabel, StreamGroup, StreamLabel, TransitionLabels, UpstreamLabels,
};

const CONSUME: &str = "astra_bus::bus::consume";
const READER: &str = "astra_bus::bus::reader";
const RECLAIM: &str = "astra_bus::bus::reclaim";
const DAEMON: &str = "astra_bus::daemon";
const EDGE: &str = "astra_bus::edge";
const UPSTREAM: &str = "astra_bus::upstream";
const TELEMETRY: &str = "astra_bus::telemetry";

/// A batch of entries was read by a group (`astra_consumed_total`).
pub struct EntriesConsumed<'a> {
    pub labels: &'a StreamGroup,
    pub count: usize,
}

impl EntriesConsumed<'_> {
    pub fn emit(self, m: &Metrics) {
        m.consumed
            .get_or_create(self.labels)
            .inc_by(self.count as u64);
    }
}

/// A commit round of `size` events is about to be sent (`astra_bus_commit_batch_size`).
pub struct CommitBatch<'a> {
    pub group: &'a str,
    pub size: usize,
}

impl CommitBatch<'_> {
    pub fn emit(self, m: &Metrics) {
        m.commit_batch_size
            .get_or_create(&GroupLabel {
                group: self.group.to_string(),
            })
            .observe(self.size as f64);
    }
}

/// Events the handler asked to retry, retried within the batch (`astra_retried_total`).
pub struct EventsRetried<'a> {
    pub labels: &'a StreamGroup,
    pub count: usize,
}

impl EventsRetried<'_> {
    pub fn emit(self, m: &Metrics) {
        m.retried
            .get_or_create(self.labels)
            .inc_by(self.count as u64);
    }
}

/// A commit failed for good: its events stay pending (counted as retried).
pub struct CommitAbandoned<'a, E: std::fmt::Display> {
    pub labels: &'a StreamGroup,
    pub group: &'a str,
    pub stream: &'a str,
    pub error: &'a E,
    pub count: usize,
}

impl<E: std::fmt::Display> CommitAbandoned<'_, E> {
    pub fn emit(self, m: &Metrics) {
        tracing::error!(target: CONSUME, group = %self.group, stream = self.stream, error = %self.error, "commit failed; entries stay pending");
        m.retried
            .get_or_create(self.labels)
            .inc_by(self.count as u64);
    }
}

/// Entries found already applied, acknowledged without running again
/// (`astra_duplicates_total`).
pub struct DuplicatesSkipped<'a> {
    pub labels: &'a StreamGroup,
    pub count: usize,
}

impl DuplicatesSkipped<'_> {
    pub fn emit(self, m: &Metrics) {
        m.duplicates
            .get_or_create(self.labels)
            .inc_by(self.count as u64);
    }
}

/// A round lost a hash-chain race and runs again (`astra_chain_conflicts_total`).
pub struct ChainConflict<'a> {
    pub labels: &'a StreamGroup,
}

impl ChainConflict<'_> {
    pub fn emit(self, m: &Metrics) {
        m.chain_conflicts.get_or_create(self.labels).inc();
    }
}

/// An event's final round committed: acknowledged, with its handler time and end-to-end
/// latency.
pub struct EventCommitted<'a> {
    pub labels: &'a StreamGroup,
    pub group: &'a GroupLabel,
    pub handler_time: Duration,
    /// Seconds from the event's timestamp to its commit.
    pub end_to_end: f64,
}

impl EventCommitted<'_> {
    pub fn emit(self, m: &Metrics) {
        m.acked.get_or_create(self.labels).inc();
        m.handler_seconds
            .get_or_create(self.group)
            .observe(self.handler_time.as_secs_f64());
        m.end_to_end_seconds
            .get_or_create(self.group)
            .observe(self.end_to_end);
    }
}

/// One entry was dead-lettered (`astra_dead_lettered_total`, one debug line).
pub struct EntryDeadLettered<'a> {
    pub stream: &'a str,
    pub group: &'a str,
    pub entry: &'a str,
    pub cid: Option<&'a str>,
    pub reason: &'a str,
    pub error: &'a str,
}

impl EntryDeadLettered<'_> {
    pub fn emit(self, m: &Metrics) {
        tracing::debug!(target: CONSUME, group = %self.group, stream = %self.stream, entry = %self.entry, cid = self.cid, reason = self.reason, error = %self.error, "dead-lettered");
        m.dead_lettered
            .get_or_create(&DeadLetterLabels {
                stream: self.stream.to_string(),
                group: self.group.to_string(),
                reason: self.reason.to_string(),
            })
            .inc();
    }
}

/// The one warning per batch and reason summing up its dead letters (counted one by one
/// by [`EntryDeadLettered`]).
pub struct EntriesDeadLettered<'a> {
    pub stream: &'a str,
    pub group: &'a str,
    pub reason: &'a str,
    pub count: usize,
    pub first_error: &'a str,
}

impl EntriesDeadLettered<'_> {
    pub fn emit(self, _m: &Metrics) {
        let (group, stream, reason, count, first_error) = (
            self.group,
            self.stream,
            self.reason,
            self.count,
            self.first_error,
        );
        tracing::warn!(target: CONSUME, group = %group, stream, reason, count, first_error, "entries dead-lettered");
    }
}

/// Entries left pending after losing hash-chain races too often.
pub struct EntriesLeftPending<'a> {
    pub group: &'a str,
    pub stream: &'a str,
    pub count: usize,
}

impl EntriesLeftPending<'_> {
    pub fn emit(self, _m: &Metrics) {
        tracing::warn!(target: CONSUME, group = %self.group, stream = self.stream, count = self.count, "hash-chain contention: entries left pending");
    }
}

/// Idle pending entries claimed from other consumers.
pub struct ReclaimedEntries<'a, O: std::fmt::Debug> {
    pub group: &'a str,
    pub stream: &'a str,
    pub count: usize,
    pub from: &'a O,
}

impl<O: std::fmt::Debug> ReclaimedEntries<'_, O> {
    pub fn emit(self, _m: &Metrics) {
        tracing::info!(target: RECLAIM, group = %self.group, stream = self.stream, claimed = self.count, from = ?self.from, "reclaimed idle pending entries");
    }
}

/// A pending entry the reclaimer found deleted from the stream (`astra_lost_total`).
pub struct LostEntry<'a> {
    pub group: &'a str,
    pub stream: &'a str,
    pub entry: &'a str,
}

impl LostEntry<'_> {
    pub fn emit(self, m: &Metrics) {
        m.lost
            .get_or_create(&Metrics::sg(self.stream, self.group))
            .inc();
        tracing::error!(target: RECLAIM, group = %self.group, stream = self.stream, entry = %self.entry, "a pending entry was deleted from the stream before processing: lost");
    }
}

/// Pending entries the start-up recovery found gone from the stream (`astra_lost_total`).
pub struct LostEntries<'a> {
    pub group: &'a str,
    pub stream: &'a str,
    pub count: usize,
}

impl LostEntries<'_> {
    pub fn emit(self, m: &Metrics) {
        m.lost
            .get_or_create(&Metrics::sg(self.stream, self.group))
            .inc_by(self.count as u64);
        tracing::error!(target: READER, group = %self.group, stream = self.stream, count = self.count, "pending entries were gone from the stream before processing (deleted or trimmed): lost");
    }
}

/// The reader found its consumer group gone and re-creates it
/// (`astra_nogroup_recoveries_total`).
pub struct NogroupRecovery<'a> {
    pub labels: &'a StreamGroup,
}

impl NogroupRecovery<'_> {
    pub fn emit(self, m: &Metrics) {
        m.nogroup_recoveries.get_or_create(self.labels).inc();
    }
}

/// Events were published to `stream` (`astra_bus_published_total`): derived events
/// committed by a group, or events the HTTP edge stored.
pub struct EventsPublished<'a> {
    pub stream: &'a str,
    pub count: usize,
}

impl EventsPublished<'_> {
    pub fn emit(self, m: &Metrics) {
        m.published
            .get_or_create(&StreamLabel {
                stream: self.stream.to_string(),
            })
            .inc_by(self.count as u64);
    }
}

/// The health loop read a snapshot from Redis: the gauges (lengths, lag, pending, KPIs),
/// the business counters and `astra_bus_redis_up` 1.
pub struct HealthRefreshed<'a> {
    pub snapshot: &'a crate::health::Snapshot,
}

impl HealthRefreshed<'_> {
    pub fn emit(self, m: &Metrics) {
        m.record_health(self.snapshot);
    }
}

/// The health loop could not read its snapshot: `astra_bus_redis_up` 0, one warning.
pub struct HealthRefreshFailed<'a, E: std::fmt::Display> {
    pub error: &'a E,
}

impl<E: std::fmt::Display> HealthRefreshFailed<'_, E> {
    pub fn emit(self, m: &Metrics) {
        m.redis_up.set(0);
        tracing::warn!(target: DAEMON, error = %self.error, "health refresh failed");
    }
}

/// The Redis client reconnected (`astra_bus_reconnects_total`).
pub struct RedisReconnected;

impl RedisReconnected {
    pub fn emit(self, m: &Metrics) {
        m.reconnects.inc();
    }
}

/// The HTTP edge answered a request (`astra_bus_http_requests_total`,
/// `astra_bus_http_request_seconds`); `route` is the matched route template (or
/// `unmatched`), never the path.
pub struct HttpRequestAnswered<'a> {
    pub route: &'a str,
    pub method: &'static str,
    pub status: u16,
    pub took: Duration,
}

impl HttpRequestAnswered<'_> {
    pub fn emit(self, m: &Metrics) {
        m.http_requests
            .get_or_create(&HttpLabels {
                route: self.route.to_string(),
                method: self.method.to_string(),
                status: self.status.to_string(),
            })
            .inc();
        m.http_request_seconds
            .get_or_create(&RouteLabel {
                route: self.route.to_string(),
            })
            .observe(self.took.as_secs_f64());
    }
}

/// The HTTP edge refused a request or connection over `limit` (`user`, `route`, `key`,
/// `client`, `connections`, `auth_failures`): `astra_bus_edge_rate_limited_total`.
pub struct RequestRateLimited {
    pub limit: &'static str,
}

impl RequestRateLimited {
    pub fn emit(self, m: &Metrics) {
        m.edge_rate_limited
            .get_or_create(&LimitLabel {
                limit: self.limit.to_string(),
            })
            .inc();
    }
}

/// A publish with an `Idempotency-Key` already used was answered from its record, nothing
/// stored again (`astra_bus_edge_idempotent_replays_total`).
pub struct IdempotentReplay;

impl IdempotentReplay {
    pub fn emit(self, m: &Metrics) {
        m.edge_idempotent_replays.inc();
    }
}

/// A request handler panicked; the edge answered 500 (`astra_bus_http_panics_total`,
/// one error line).
pub struct HandlerPanicked;

impl HandlerPanicked {
    pub fn emit(self, m: &Metrics) {
        m.http_panics.inc();
        tracing::error!(target: EDGE, "edge: a request handler panicked (answered 500)");
    }
}

/// How many of a service's instances are in each breaker state, as `[closed, open,
/// half_open]` (`astra_bus_breaker_state`).
pub struct BreakerStates<'a> {
    pub service: &'a str,
    pub counts: [i64; 3],
}

impl BreakerStates<'_> {
    pub fn emit(self, m: &Metrics) {
        for (state, n) in ["closed", "open", "half_open"].iter().zip(self.counts) {
            m.breaker_state
                .get_or_create(&BreakerLabels {
                    service: self.service.to_string(),
                    state: state.to_string(),
                })
                .set(n);
        }
    }
}

/// An instance's circuit breaker changed state (`astra_bus_breaker_transitions_total`;
/// a warning when it opens, an info line otherwise).
pub struct BreakerTransitioned<'a> {
    pub service: &'a str,
    pub instance: &'a str,
    pub from: &'static str,
    pub to: &'static str,
    pub failures: u32,
    pub open_for: Duration,
}

impl BreakerTransitioned<'_> {
    pub fn emit(self, m: &Metrics) {
        m.breaker_transitions
            .get_or_create(&TransitionLabels {
                service: self.service.to_string(),
                to: self.to.to_string(),
            })
            .inc();
        let open_for = humantime::format_duration(self.open_for).to_string();
        if self.to == "open" {
            tracing::warn!(target: UPSTREAM, service = self.service, instance = self.instance, from = self.from, to = self.to, failures = self.failures, open_for = %open_for, "upstream: circuit breaker opened; the instance gets no requests until a probe succeeds");
        } else {
            tracing::info!(target: UPSTREAM, service = self.service, instance = self.instance, from = self.from, to = self.to, "upstream: circuit breaker changed state");
        }
    }
}

/// One attempt at an instance ended (`astra_bus_upstream_requests_total`): `ok`,
/// `error_status` (a 5xx answer), or a failure's name.
pub struct UpstreamAttempted<'a> {
    pub service: &'a str,
    pub outcome: &'static str,
}

impl UpstreamAttempted<'_> {
    pub fn emit(self, m: &Metrics) {
        m.upstream_requests
            .get_or_create(&UpstreamLabels {
                service: self.service.to_string(),
                outcome: self.outcome.to_string(),
            })
            .inc();
    }
}

/// Finished spans that never reached the OTLP collector
/// (`astra_bus_trace_spans_dropped_total{reason}`; `reason` is `queue_full` or
/// `export_failed`). Delivery goes on regardless; the warning comes at most once a minute
/// so a collector that is down does not flood the log.
pub struct SpansDropped {
    pub reason: &'static str,
    pub count: u64,
}

impl SpansDropped {
    pub fn emit(self, m: &Metrics) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static LAST_WARNED: AtomicU64 = AtomicU64::new(0);
        m.trace_spans_dropped
            .get_or_create(&DropLabel {
                reason: self.reason.to_string(),
            })
            .inc_by(self.count);
        let now = crate::envelope::now_ms().max(0) as u64 / 1000;
        let last = LAST_WARNED.load(Ordering::Relaxed);
        if now >= last + 60
            && LAST_WARNED
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(target: TELEMETRY, reason = self.reason, count = self.count, "spans dropped: the OTLP collector is down or too slow (delivery is not affected; astra_bus_trace_spans_dropped_total counts them)");
        } else {
            tracing::debug!(target: TELEMETRY, reason = self.reason, count = self.count, "spans dropped");
        }
    }
}
