//! Idempotent declaration of the topology: every stream exists, every group exists on every
//! stream it reads. Groups that Redis has but the config does not know are reported and
//! left alone: deleting a group would destroy its pending entries.

use std::collections::BTreeSet;

use super::client::{BusError, Redis, Value, arg, as_array, as_pairs, as_string};
use super::script::Script;
use crate::config::{Config, GroupConfig};

/// Creates an empty stream if it does not exist, atomically (no window where a concurrent
/// publisher's entry could be removed).
pub(crate) static ENSURE_STREAM: Script = Script::new(
    "ensure_stream",
    r#"#!lua
-- KEYS[1]: stream. Creates it empty if missing; returns 1 if created, 0 if it existed.
-- (XTRIM, not XDEL: the worker's ACL needs XTRIM for retention anyway, and nothing else
-- can write to the stream between these two calls.)
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('XADD', KEYS[1], '*', 'astra_bus', 'declare')
redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)
return 1
"#,
);

/// What happened to one (stream, group) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// XGROUP CREATE succeeded.
    Created,
    /// The group was already there (BUSYGROUP).
    Exists,
}

/// Outcome of [`declare`].
#[derive(Debug, Default, Clone)]
pub struct DeclareReport {
    /// Streams that did not exist and were created.
    pub streams_created: Vec<String>,
    /// Streams that already existed.
    pub streams_existing: Vec<String>,
    /// (group, stream, state) for every configured pair.
    pub groups: Vec<(String, String, GroupState)>,
    /// (stream, group) found in Redis on a declared stream but absent from the config.
    pub unknown_groups: Vec<(String, String)>,
}

impl DeclareReport {
    /// Number of distinct groups created on at least one stream.
    pub fn created(&self) -> usize {
        self.groups
            .iter()
            .filter(|g| g.2 == GroupState::Created)
            .count()
    }
}

/// Creates one group on one stream (MKSTREAM), treating BUSYGROUP as success.
pub async fn declare_group(
    redis: &Redis,
    stream: &str,
    group: &GroupConfig,
) -> Result<GroupState, BusError> {
    declare_group_at(redis, stream, &group.name, group.start_id.as_redis()).await
}

/// Creates `group` on `stream` starting at `start` (`0` or `$`).
pub async fn declare_group_at(
    redis: &Redis,
    stream: &str,
    group: &str,
    start: &str,
) -> Result<GroupState, BusError> {
    let r = redis
        .cmd(
            "XGROUP",
            vec![
                arg("CREATE"),
                arg(stream),
                arg(group),
                arg(start),
                arg("MKSTREAM"),
            ],
        )
        .await;
    match r {
        Ok(_) => Ok(GroupState::Created),
        Err(BusError::Command(m)) if m.starts_with("BUSYGROUP") => Ok(GroupState::Exists),
        Err(e) => Err(e),
    }
}

/// Group names Redis knows on `stream` (empty if the stream does not exist).
pub async fn groups_on(redis: &Redis, stream: &str) -> Result<Vec<String>, BusError> {
    let v = match redis.cmd("XINFO", vec![arg("GROUPS"), arg(stream)]).await {
        Ok(v) => v,
        Err(BusError::Command(m)) if m.contains("no such key") => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    Ok(group_names(v))
}

/// The group names in an XINFO GROUPS reply.
pub fn group_names(v: Value) -> Vec<String> {
    let mut out = vec![];
    for g in as_array(v).unwrap_or_default() {
        for (k, v) in as_pairs(g) {
            if k == "name"
                && let Some(n) = as_string(&v)
            {
                out.push(n);
            }
        }
    }
    out
}

/// Declares every stream and group of `config`. Safe to run any number of times, from any
/// number of processes at once.
pub async fn declare(redis: &Redis, config: &Config) -> Result<DeclareReport, BusError> {
    let mut report = DeclareReport::default();
    for s in &config.streams {
        let created = ENSURE_STREAM
            .call(redis, vec![arg(s.name.as_str())], vec![])
            .await?;
        if super::client::as_int(&created) == Some(1) {
            report.streams_created.push(s.name.clone());
        } else {
            report.streams_existing.push(s.name.clone());
        }
    }
    for g in &config.groups {
        for s in &g.reads {
            let state = declare_group(redis, s, g).await?;
            report.groups.push((g.name.clone(), s.clone(), state));
        }
        // The group's replay stream (dead letters handed back to it): from its start.
        declare_group_at(redis, &super::consume::replay_stream(&g.name), &g.name, "0").await?;
    }
    let readers = config.readers();
    for s in &config.streams {
        let known: BTreeSet<&str> = readers
            .get(s.name.as_str())
            .map(|gs| gs.iter().map(|g| g.name.as_str()).collect())
            .unwrap_or_default();
        for name in groups_on(redis, &s.name).await? {
            if !known.contains(name.as_str()) {
                report.unknown_groups.push((s.name.clone(), name));
            }
        }
    }
    Ok(report)
}
