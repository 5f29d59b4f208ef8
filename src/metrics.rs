//! Every metric astra-bus exports, registered in this one place: the bus's own
//! (`astra_bus_*`), the business KPIs (`astra_kpi_*`) and business counters
//! (`astra_business_*`). Label sets are fixed (stream, group, reason, kpi, source): never
//! ids, so cardinality is bounded by the topology.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels of per-(stream, group) counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamGroup {
    pub stream: String,
    pub group: String,
}

/// Labels of dead-letter counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    pub stream: String,
    pub group: String,
    pub reason: String,
}

/// Labels of per-stream counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    pub stream: String,
}

/// Labels of KPI gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KpiLabel {
    pub kpi: String,
}

/// Labels of per-revenue-source metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

/// Labels of per-group histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    pub group: String,
}

/// Labels of HTTP request counters: the route template (a fixed set), method, status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: String,
}

/// Labels of per-route histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

/// Labels of rate-limit refusals: which limit (`user`, `route`, `key`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: String,
}

/// Labels of breaker-state gauges: a declared service and one of three states.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabels {
    pub service: String,
    pub state: String,
}

/// Labels of breaker transitions: a declared service and the state entered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub service: String,
    pub to: String,
}

/// Labels of upstream attempts: a declared service and how the attempt ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub service: String,
    pub outcome: String,
}

/// Labels of dropped spans: why (`queue_full`, `export_failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabel {
    pub reason: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A gauge holding fractional values.
pub type FloatGauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    // 50µs .. ~52s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 21))
}

fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

/// The bus's own metrics.
pub struct Metrics {
    registry: Registry,
    /// Entries delivered to a group's handler.
    pub consumed: Family<StreamGroup, Counter>,
    /// Entries acknowledged after their effects committed.
    pub acked: Family<StreamGroup, Counter>,
    /// Transient failures that left an entry pending for a retry.
    pub retried: Family<StreamGroup, Counter>,
    /// Entries moved to the dead-letter stream.
    pub dead_lettered: Family<DeadLetterLabels, Counter>,
    /// Entries redelivered for an event already applied (skipped, acknowledged).
    pub duplicates: Family<StreamGroup, Counter>,
    /// Events published (by handlers, the CLI or the edge).
    pub published: Family<StreamLabel, Counter>,
    /// Pending entries whose body had been trimmed when reclaimed: lost.
    pub lost: Family<StreamGroup, Counter>,
    /// Groups re-created after NOGROUP.
    pub nogroup_recoveries: Family<StreamGroup, Counter>,
    /// Reconnections to Redis.
    pub reconnects: Counter,
    /// Hash-chain appends committed again because another appender moved the head.
    pub chain_conflicts: Family<StreamGroup, Counter>,
    /// Handler decision time per event, all rounds.
    pub handler_seconds: HistogramFamily<GroupLabel>,
    /// Event `ts` to commit.
    pub end_to_end_seconds: HistogramFamily<GroupLabel>,
    /// Events per commit script call.
    pub commit_batch_size: HistogramFamily<GroupLabel>,
    /// Entries in each stream (read from Redis every `metrics.refresh_interval`).
    pub stream_length: Family<StreamLabel, Gauge>,
    /// Entries not yet delivered to the group.
    pub group_lag: Family<StreamGroup, Gauge>,
    /// 1 when Redis cannot tell the group's lag (after deletions mid-stream).
    pub group_lag_unknown: Family<StreamGroup, Gauge>,
    /// Entries delivered but not acknowledged.
    pub group_pending: Family<StreamGroup, Gauge>,
    /// Age of the group's oldest pending entry (0 when nothing is pending).
    pub group_oldest_pending_age_seconds: Family<StreamGroup, FloatGauge>,
    /// Consumers in the group.
    pub group_consumers: Family<StreamGroup, Gauge>,
    /// Entries of the group in its dead-letter stream.
    pub group_dead_letters: Family<GroupLabel, Gauge>,
    /// 1 when the last health refresh reached Redis, 0 otherwise.
    pub redis_up: Gauge,
    /// Business KPIs (see `kpi`), same value on every instance.
    pub kpi_value: Family<KpiLabel, FloatGauge>,
    /// The KPIs' targets.
    pub kpi_target: Family<KpiLabel, FloatGauge>,
    /// Today's revenue by source.
    pub daily_revenue_by_source_usd: Family<SourceLabel, FloatGauge>,
    /// All-time business counters, read from `astra:analytics:total`.
    pub business: BusinessCounters,
    /// HTTP requests answered, by route template, method and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// HTTP request duration by route template.
    pub http_request_seconds: HistogramFamily<RouteLabel>,
    /// Request handlers that panicked (answered 500).
    pub http_panics: Counter,
    /// Requests refused by a rate limit, by limit.
    pub edge_rate_limited: Family<LimitLabel, Counter>,
    /// Publishes answered from an idempotency record (nothing published).
    pub edge_idempotent_replays: Counter,
    /// Instances of a declared service whose breaker is in each state.
    pub breaker_state: Family<BreakerLabels, Gauge>,
    /// Breaker transitions by service and state entered.
    pub breaker_transitions: Family<TransitionLabels, Counter>,
    /// Attempts at a service's instances by outcome.
    pub upstream_requests: Family<UpstreamLabels, Counter>,
    /// Finished spans that never reached the OTLP collector, by reason.
    pub trace_spans_dropped: Family<DropLabel, Counter>,
    /// Last totals seen, so counters advance by the difference.
    last_totals: std::sync::Mutex<std::collections::BTreeMap<String, i64>>,
}

/// Monotonic business counters mirrored from the all-time totals in Redis.
#[derive(Default)]
pub struct BusinessCounters {
    pub trades: Counter,
    pub volume_usd: Counter<f64, AtomicU64>,
    pub revenue_usd: Family<SourceLabel, Counter<f64, AtomicU64>>,
    pub xp: Counter,
    pub level_ups: Counter,
    pub achievements: Counter,
    pub rewards: Counter,
    pub registrations: Counter,
}

impl Metrics {
    /// A fresh set of metrics with its own registry.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let m = Metrics {
            consumed: Family::default(),
            acked: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            duplicates: Family::default(),
            published: Family::default(),
            lost: Family::default(),
            nogroup_recoveries: Family::default(),
            reconnects: Counter::default(),
            chain_conflicts: Family::default(),
            handler_seconds: Family::new_with_constructor(latency_histogram),
            end_to_end_seconds: Family::new_with_constructor(latency_histogram),
            commit_batch_size: Family::new_with_constructor(batch_histogram),
            stream_length: Family::default(),
            group_lag: Family::default(),
            group_lag_unknown: Family::default(),
            group_pending: Family::default(),
            group_oldest_pending_age_seconds: Family::default(),
            group_consumers: Family::default(),
            group_dead_letters: Family::default(),
            redis_up: Gauge::default(),
            kpi_value: Family::default(),
            kpi_target: Family::default(),
            daily_revenue_by_source_usd: Family::default(),
            business: BusinessCounters::default(),
            http_requests: Family::default(),
            http_request_seconds: Family::new_with_constructor(latency_histogram),
            http_panics: Counter::default(),
            edge_rate_limited: Family::default(),
            edge_idempotent_replays: Counter::default(),
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            upstream_requests: Family::default(),
            trace_spans_dropped: Family::default(),
            last_totals: Default::default(),
            registry: Registry::default(),
        };
        registry.register(
            "astra_bus_consumed",
            "Entries delivered to a handler",
            m.consumed.clone(),
        );
        registry.register(
            "astra_bus_acked",
            "Entries acknowledged after commit",
            m.acked.clone(),
        );
        registry.register(
            "astra_bus_retried",
            "Transient failures leaving an entry pending for retry",
            m.retried.clone(),
        );
        registry.register(
            "astra_bus_dead_lettered",
            "Entries moved to the dead-letter stream",
            m.dead_lettered.clone(),
        );
        registry.register(
            "astra_bus_duplicates",
            "Deliveries of events already applied (skipped)",
            m.duplicates.clone(),
        );
        registry.register(
            "astra_bus_published",
            "Events published",
            m.published.clone(),
        );
        registry.register(
            "astra_bus_lost",
            "Pending entries whose body was trimmed before processing",
            m.lost.clone(),
        );
        registry.register(
            "astra_bus_nogroup_recoveries",
            "Consumer groups re-created after NOGROUP",
            m.nogroup_recoveries.clone(),
        );
        registry.register(
            "astra_bus_reconnects",
            "Reconnections to Redis",
            m.reconnects.clone(),
        );
        registry.register(
            "astra_bus_chain_conflicts",
            "Hash-chain appends redone because another appender moved the head",
            m.chain_conflicts.clone(),
        );
        registry.register(
            "astra_bus_handler_duration_seconds",
            "Handler decision time per event",
            m.handler_seconds.clone(),
        );
        registry.register(
            "astra_bus_end_to_end_latency_seconds",
            "From the event's ts to the commit of its effects",
            m.end_to_end_seconds.clone(),
        );
        registry.register(
            "astra_bus_commit_batch_size",
            "Events per commit script call",
            m.commit_batch_size.clone(),
        );
        registry.register(
            "astra_bus_stream_length",
            "Entries in the stream",
            m.stream_length.clone(),
        );
        registry.register(
            "astra_bus_group_lag",
            "Entries not yet delivered to the group",
            m.group_lag.clone(),
        );
        registry.register(
            "astra_bus_group_lag_unknown",
            "1 when Redis cannot tell the group's lag",
            m.group_lag_unknown.clone(),
        );
        registry.register(
            "astra_bus_group_pending",
            "Entries delivered to the group but not acknowledged",
            m.group_pending.clone(),
        );
        registry.register(
            "astra_bus_group_oldest_pending_age_seconds",
            "Age of the group's oldest pending entry",
            m.group_oldest_pending_age_seconds.clone(),
        );
        registry.register(
            "astra_bus_group_consumers",
            "Consumers in the group",
            m.group_consumers.clone(),
        );
        registry.register(
            "astra_bus_group_dead_letters",
            "Entries of the group in its dead-letter stream",
            m.group_dead_letters.clone(),
        );
        registry.register(
            "astra_bus_redis_up",
            "1 when the last health refresh reached Redis",
            m.redis_up.clone(),
        );
        // Business KPIs and counters: `astra_kpi_*`, `astra_business_*`.
        registry.register(
            "astra_kpi_value",
            "Business KPI (same on every instance)",
            m.kpi_value.clone(),
        );
        registry.register(
            "astra_kpi_target",
            "Target of the business KPI",
            m.kpi_target.clone(),
        );
        registry.register(
            "astra_kpi_daily_revenue_by_source_usd",
            "Today's revenue by source (UTC day)",
            m.daily_revenue_by_source_usd.clone(),
        );
        let b = &m.business;
        registry.register("astra_business_trades", "Trades executed", b.trades.clone());
        registry.register(
            "astra_business_volume_usd",
            "Traded notional, USD",
            b.volume_usd.clone(),
        );
        registry.register(
            "astra_business_revenue_usd",
            "Revenue by source, USD",
            b.revenue_usd.clone(),
        );
        registry.register("astra_business_xp", "XP awarded", b.xp.clone());
        registry.register("astra_business_level_ups", "Level-ups", b.level_ups.clone());
        registry.register(
            "astra_business_achievements",
            "Achievements unlocked",
            b.achievements.clone(),
        );
        registry.register(
            "astra_business_rewards",
            "NFT rewards issued",
            b.rewards.clone(),
        );
        registry.register(
            "astra_business_registrations",
            "Users registered",
            b.registrations.clone(),
        );
        registry.register(
            "astra_bus_http_requests",
            "HTTP requests answered, by route template, method and status",
            m.http_requests.clone(),
        );
        registry.register(
            "astra_bus_http_request_seconds",
            "HTTP request duration by route template",
            m.http_request_seconds.clone(),
        );
        registry.register(
            "astra_bus_http_panics",
            "HTTP request handlers that panicked (answered 500)",
            m.http_panics.clone(),
        );
        registry.register(
            "astra_bus_edge_rate_limited",
            "Requests refused by a rate limit, by limit (user, route, key)",
            m.edge_rate_limited.clone(),
        );
        registry.register(
            "astra_bus_edge_idempotent_replays",
            "Publishes answered from an idempotency record (nothing published)",
            m.edge_idempotent_replays.clone(),
        );
        registry.register(
            "astra_bus_breaker_state",
            "Instances of the service whose circuit breaker is in this state (this daemon's view)",
            m.breaker_state.clone(),
        );
        registry.register(
            "astra_bus_breaker_transitions",
            "Circuit-breaker transitions by service and the state entered",
            m.breaker_transitions.clone(),
        );
        registry.register(
            "astra_bus_upstream_requests",
            "Attempts at a service's instances by outcome (ok, error_status, refused, timeout, lost, too_large)",
            m.upstream_requests.clone(),
        );
        registry.register(
            "astra_bus_trace_spans_dropped",
            "Finished spans that never reached the OTLP collector, by reason (queue_full: the \
             export queue was full; export_failed: the collector failed or timed out)",
            m.trace_spans_dropped.clone(),
        );
        // Both series from the start, at zero: a dashboard sees "none dropped", not "no data".
        for reason in ["queue_full", "export_failed"] {
            let _ = m.trace_spans_dropped.get_or_create(&DropLabel {
                reason: reason.to_string(),
            });
        }
        for (kpi, target) in crate::kpi::TARGETS {
            m.kpi_target
                .get_or_create(&KpiLabel {
                    kpi: kpi.to_string(),
                })
                .set(target);
        }
        Arc::new(Metrics { registry, ..m })
    }

    /// Records a health snapshot read from Redis (through
    /// [`crate::internal_events::HealthRefreshed`]).
    pub(crate) fn record_health(&self, snap: &crate::health::Snapshot) {
        for (stream, len) in &snap.streams {
            self.stream_length
                .get_or_create(&StreamLabel {
                    stream: stream.clone(),
                })
                .set(*len);
        }
        for g in &snap.groups {
            let l = Self::sg(&g.stream, &g.group);
            self.group_lag.get_or_create(&l).set(g.lag.unwrap_or(0));
            self.group_lag_unknown
                .get_or_create(&l)
                .set(i64::from(g.lag.is_none()));
            self.group_pending.get_or_create(&l).set(g.pending);
            self.group_oldest_pending_age_seconds
                .get_or_create(&l)
                .set(g.oldest_pending_age_ms.unwrap_or(0) as f64 / 1000.0);
            self.group_consumers.get_or_create(&l).set(g.consumers);
            self.group_dead_letters
                .get_or_create(&GroupLabel {
                    group: g.group.clone(),
                })
                .set(g.dead_letters);
        }
        let kpis = crate::kpi::compute(&snap.kpi);
        for (kpi, v) in &kpis.values {
            self.kpi_value
                .get_or_create(&KpiLabel {
                    kpi: kpi.to_string(),
                })
                .set(*v);
        }
        for (source, v) in &kpis.revenue_by_source_usd {
            self.daily_revenue_by_source_usd
                .get_or_create(&SourceLabel {
                    source: source.to_string(),
                })
                .set(*v);
        }
        self.advance_business(&snap.totals);
        self.redis_up.set(1);
    }

    /// Advances the business counters to the all-time totals read from Redis (by the
    /// difference since the last refresh; a total that went down, e.g. after Redis lost
    /// data, is remembered but never decrements a counter).
    fn advance_business(&self, totals: &std::collections::BTreeMap<String, i64>) {
        use crate::handlers::analytics::field;
        let mut last = self.last_totals.lock().expect("totals lock");
        let mut delta = |f: &str| -> i64 {
            let now = totals.get(f).copied().unwrap_or(0);
            let before = last.insert(f.to_string(), now).unwrap_or(0);
            (now - before).max(0)
        };
        let b = &self.business;
        b.trades.inc_by(delta(field::TRADES) as u64);
        b.volume_usd
            .inc_by(delta(field::VOLUME_CENTS) as f64 / 100.0);
        for source in crate::kpi::SOURCES {
            let d = delta(&format!("revenue_cents:{source}"));
            b.revenue_usd
                .get_or_create(&SourceLabel {
                    source: source.to_string(),
                })
                .inc_by(d as f64 / 100.0);
        }
        b.xp.inc_by(delta(field::XP) as u64);
        b.level_ups.inc_by(delta(field::LEVEL_UPS) as u64);
        b.achievements.inc_by(delta(field::ACHIEVEMENTS) as u64);
        b.rewards.inc_by(delta(field::REWARDS) as u64);
        b.registrations.inc_by(delta(field::REGISTRATIONS) as u64);
    }

    /// Creates every (stream, group) series at 0, so alerts on `increase()` see the very
    /// first event of a counter (a series born at 1 has no increase to show).
    pub fn init_series(&self, stream: &str, group: &str) {
        let l = Self::sg(stream, group);
        for f in [
            &self.consumed,
            &self.acked,
            &self.retried,
            &self.duplicates,
            &self.lost,
            &self.nogroup_recoveries,
            &self.chain_conflicts,
        ] {
            drop(f.get_or_create(&l));
        }
        use crate::health::Reason;
        for reason in [
            Reason::Malformed,
            Reason::Poison,
            Reason::MaxDeliveries,
            Reason::Failed,
        ] {
            drop(self.dead_lettered.get_or_create(&DeadLetterLabels {
                stream: stream.to_string(),
                group: group.to_string(),
                reason: reason.as_str().to_string(),
            }));
        }
    }

    /// Labels for a (stream, group) pair.
    pub fn sg(stream: &str, group: &str) -> StreamGroup {
        StreamGroup {
            stream: stream.to_string(),
            group: group.to_string(),
        }
    }

    /// The registry, for extra collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
