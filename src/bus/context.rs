//! What a group's readers share ([`GroupContext`]) and the entries this process holds
//! while it works on them ([`Hold`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::client::Redis;
use super::commit::Target;
use super::replay::replay_stream;
use crate::config::{GroupConfig, StreamConfig};
use crate::events::custom::CustomSchema;
use crate::handlers::{Decide, Handler};
use crate::metrics::Metrics;

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
    /// How long completed event ids are remembered (at least).
    pub dedup_ttl: Duration,
    /// In-flight events of the group (read, not yet committed), bounded by `concurrency`.
    pub inflight: Arc<Semaphore>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Streams the handler may publish to.
    pub publishes: HashSet<String>,
    /// Entries this process holds right now (`<stream> <entry id>`): read and not yet
    /// finished by a reader, or being redelivered. The reclaimer and the start-up recovery
    /// skip them, so this process never works on one entry twice at once (which would also
    /// count a second delivery against `max_deliveries`).
    pub held: Arc<std::sync::Mutex<HashSet<String>>>,
    /// The JSON Schemas of the streams it reads that declare one (`schema` in
    /// `streams.toml`): a payload breaking its stream's is dead-lettered as malformed
    /// before the handler sees it (a producer that skipped the edge cannot slip one in).
    pub schemas: HashMap<String, Arc<CustomSchema>>,
    /// A remote handler's service, which decides the group's events instead of
    /// [`GroupContext::handler`] ([`super::remote`]).
    pub remote: Option<Arc<dyn Decide>>,
}

/// Entries held by this process while they are processed; released on drop.
pub struct Hold {
    held: Arc<std::sync::Mutex<HashSet<String>>>,
    keys: Vec<String>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut held = self.held.lock().expect("held lock");
        for k in &self.keys {
            held.remove(k);
        }
    }
}

impl GroupContext {
    /// Takes hold of those of `ids` (entries of `stream`) not held already; returns the
    /// hold (released on drop) and which ids it took, in order.
    pub fn hold<I: IntoIterator<Item = String>>(
        &self,
        stream: &str,
        ids: I,
    ) -> (Hold, Vec<String>) {
        let mut held = self.held.lock().expect("held lock");
        let mut keys = vec![];
        let mut taken = vec![];
        for id in ids {
            let k = format!("{stream} {id}");
            if held.insert(k.clone()) {
                keys.push(k);
                taken.push(id);
            }
        }
        (
            Hold {
                held: self.held.clone(),
                keys,
            },
            taken,
        )
    }

    /// A context for `group` with its in-flight bound and publish list from the config.
    pub fn new(
        redis: Redis,
        group: GroupConfig,
        handler: Arc<dyn Handler>,
        consumer: &str,
        dedup_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> GroupContext {
        GroupContext {
            redis,
            inflight: Arc::new(Semaphore::new(group.concurrency)),
            publishes: group.publishes.iter().cloned().collect(),
            group: Arc::new(group),
            handler,
            consumer: consumer.to_string(),
            dedup_ttl,
            metrics,
            held: Default::default(),
            schemas: HashMap::new(),
            remote: None,
        }
    }

    /// The same context, checking payloads against the schemas `streams` declare for the
    /// streams the group reads.
    pub fn with_schemas(mut self, streams: &[StreamConfig]) -> GroupContext {
        self.schemas = streams
            .iter()
            .filter(|s| self.group.reads.contains(&s.name))
            .filter_map(|s| Some((s.name.clone(), Arc::clone(s.schema.as_ref()?))))
            .collect();
        self
    }

    /// The same context, its events decided by `remote` (a remote handler's service).
    pub fn with_remote(mut self, remote: Option<Arc<dyn Decide>>) -> GroupContext {
        self.remote = remote;
        self
    }

    /// The group's replay stream: dead letters an operator replays come back to this group
    /// alone through it (siblings that applied the event never see it again).
    pub fn replay_stream(&self) -> String {
        replay_stream(&self.group.name)
    }

    pub(super) fn target<'a>(&'a self, stream: &'a str) -> Target<'a> {
        Target {
            group: &self.group.name,
            stream,
            consumer: &self.consumer,
            dedup_ttl: self.dedup_ttl,
        }
    }
}
