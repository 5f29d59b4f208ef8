//! Every metric astra-bus exports, registered in this one place. Label sets are fixed
//! (stream, group, outcome, reason): never ids, so cardinality is bounded by the topology.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

/// Labels of per-group histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    pub group: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

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
}

impl Metrics {
    /// A fresh set of metrics with its own registry.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("astra_bus");
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
            registry: Registry::default(),
        };
        registry.register(
            "consumed",
            "Entries delivered to a handler",
            m.consumed.clone(),
        );
        registry.register(
            "acked",
            "Entries acknowledged after commit",
            m.acked.clone(),
        );
        registry.register(
            "retried",
            "Transient failures leaving an entry pending for retry",
            m.retried.clone(),
        );
        registry.register(
            "dead_lettered",
            "Entries moved to the dead-letter stream",
            m.dead_lettered.clone(),
        );
        registry.register(
            "duplicates",
            "Deliveries of events already applied (skipped)",
            m.duplicates.clone(),
        );
        registry.register("published", "Events published", m.published.clone());
        registry.register(
            "lost",
            "Pending entries whose body was trimmed before processing",
            m.lost.clone(),
        );
        registry.register(
            "nogroup_recoveries",
            "Consumer groups re-created after NOGROUP",
            m.nogroup_recoveries.clone(),
        );
        registry.register("reconnects", "Reconnections to Redis", m.reconnects.clone());
        registry.register(
            "chain_conflicts",
            "Hash-chain appends redone because another appender moved the head",
            m.chain_conflicts.clone(),
        );
        registry.register(
            "handler_duration_seconds",
            "Handler decision time per event",
            m.handler_seconds.clone(),
        );
        registry.register(
            "end_to_end_latency_seconds",
            "From the event's ts to the commit of its effects",
            m.end_to_end_seconds.clone(),
        );
        registry.register(
            "commit_batch_size",
            "Events per commit script call",
            m.commit_batch_size.clone(),
        );
        Arc::new(Metrics { registry, ..m })
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
