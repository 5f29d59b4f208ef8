//! One consumer group with every setting resolved: what `config` produces from the TOML,
//! what the `bus` runs and what a handler is built from.
//!
//! It sits at the bottom of the crate (it imports only the stream names) so that `config`,
//! `handlers` and `bus` can all name it without knowing each other; `config` re-exports
//! it with the rest of the validated model.

use std::time::Duration;

use crate::events::streams;

/// Where a newly created group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartId {
    /// `0`: the whole history of the stream.
    Beginning,
    /// `$`: only entries added after creation.
    End,
}

impl StartId {
    /// The XGROUP CREATE id argument.
    pub fn as_redis(&self) -> &'static str {
        match self {
            StartId::Beginning => "0",
            StartId::End => "$",
        }
    }
}

/// One consumer group with every setting resolved.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `<domain>.<name>`, also the Redis group name.
    pub name: String,
    /// Domain (from the file name).
    pub domain: String,
    /// Handler name.
    pub handler: String,
    /// What the group does.
    pub description: String,
    /// Streams read.
    pub reads: Vec<String>,
    /// Streams it may publish to.
    pub publishes: Vec<String>,
    /// XREADGROUP COUNT.
    pub batch_size: usize,
    /// XREADGROUP BLOCK.
    pub block: Duration,
    /// Max events in flight.
    pub concurrency: usize,
    /// Min idle time before an entry is reclaimed.
    pub claim_idle: Duration,
    /// Deliveries before dead-lettering.
    pub max_deliveries: u32,
    /// Dead-letter stream.
    pub dead_letter_stream: String,
    /// Start position for a new group.
    pub start_id: StartId,
    /// Handler tunables.
    pub options: toml::Table,
    /// Where `options` starts, for the handler's error messages (`file:line:col`).
    pub options_origin: String,
}

impl Default for GroupConfig {
    /// The settings a group has when neither it nor `[defaults]` sets them (the one place
    /// these defaults are declared); name, handler, streams and options empty.
    fn default() -> Self {
        GroupConfig {
            name: String::new(),
            domain: String::new(),
            handler: String::new(),
            description: String::new(),
            reads: vec![],
            publishes: vec![],
            batch_size: 100,
            block: Duration::from_secs(2),
            concurrency: 256,
            claim_idle: Duration::from_secs(30),
            max_deliveries: 5,
            dead_letter_stream: streams::DEAD_LETTER.to_string(),
            start_id: StartId::Beginning,
            options: toml::Table::new(),
            options_origin: String::new(),
        }
    }
}

/// Whether `s` names a service of the registry: 1-64 of `[a-z0-9_-]`, as the
/// `/api/v1/<service>/…` path segment (`config::SERVICE_NAME_RULE` says it in words).
pub fn valid_service_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
