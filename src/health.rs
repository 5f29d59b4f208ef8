//! The daemon's health as plain data: the per-(group, stream) status and the snapshot
//! that [`crate::bus::status`] reads from Redis in one round, `astra-bus status` prints,
//! `/dashboard` and the console serve and [`crate::metrics`] exports; and why an entry is
//! dead-lettered (the `dlq_reason` field and the `reason` label). These types live below
//! `bus` so that `metrics` names them without depending on the bus; `bus::status` and
//! `bus::deadletter` re-export them.

/// Health of one (group, stream) pair.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupStatus {
    /// Group name.
    pub group: String,
    /// Stream name.
    pub stream: String,
    /// Entries in the stream.
    pub length: i64,
    /// Entries not yet delivered to the group (`None`: Redis cannot tell, e.g. after
    /// deletions or trimming in the middle of the stream).
    pub lag: Option<i64>,
    /// Delivered but not acknowledged.
    pub pending: i64,
    /// Age of the oldest pending entry (from its id), milliseconds.
    pub oldest_pending_age_ms: Option<i64>,
    /// Consumers in the group.
    pub consumers: i64,
    /// Whether the group exists in Redis.
    pub exists: bool,
    /// Entries of this group in its dead-letter stream (all streams of the group).
    pub dead_letters: i64,
    /// The last entry id delivered to the group (`None` when the group does not exist).
    pub last_delivered_id: Option<String>,
    /// The oldest entry still pending in the group.
    pub oldest_pending_id: Option<String>,
    /// Entries the group has read from the stream so far (`entries-read`, Redis 7.0+;
    /// `None` when Redis cannot tell). Its growth is the group's throughput.
    pub entries_read: Option<i64>,
}

impl GroupStatus {
    /// An entry id at or before which everything is acknowledged: where the group can be
    /// re-created if it vanishes, without skipping anything it had not finished.
    pub fn safe_point(&self) -> Option<String> {
        let last = parse_id(self.last_delivered_id.as_deref()?)?;
        let point = match self.oldest_pending_id.as_deref().and_then(parse_id) {
            Some(oldest) => last.min(before(oldest)),
            None => last,
        };
        Some(format!("{}-{}", point.0, point.1))
    }
}

fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn before((ms, seq): (u64, u64)) -> (u64, u64) {
    if seq > 0 {
        (ms, seq - 1)
    } else if ms > 0 {
        (ms - 1, u64::MAX)
    } else {
        (0, 0)
    }
}

/// Everything the health metrics and `status` need, read in one pipelined round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    /// Per configured (group, stream).
    pub groups: Vec<GroupStatus>,
    /// Length of every declared stream.
    pub streams: Vec<(String, i64)>,
    /// What the business KPIs are computed from (today, UTC).
    pub kpi: crate::kpi::Inputs,
    /// All-time business totals (`astra:analytics:total`).
    pub totals: std::collections::BTreeMap<String, i64>,
}

/// Why an entry was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The entry is not a valid envelope.
    Malformed,
    /// The handler declared the event poison.
    Poison,
    /// Delivered `max_deliveries` times without success.
    MaxDeliveries,
    /// A precondition or an op failed while being applied.
    Failed,
}

impl Reason {
    /// The `dlq_reason` value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::Poison => "poison",
            Reason::MaxDeliveries => "max_deliveries",
            Reason::Failed => "failed",
        }
    }
}
