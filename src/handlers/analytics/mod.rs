//! analytics domain: KPI counters ([`metrics_collection`]) and the tamper-evident audit
//! trail ([`audit_trail`], verified with [`chain`]).

use crate::handler::BuildFn;

pub mod audit_trail;
pub mod chain;
pub mod metrics_collection;

pub use audit_trail::{AuditTrail, canonical_bytes};
pub use chain::{
    ChainBreak, ChainField, chain_hash, check_link, decode_log_entry, verify_chain,
    verify_chain_with_head,
};
pub use metrics_collection::MetricsCollection;

/// The handlers of this domain, by name.
pub fn handlers() -> Vec<(&'static str, BuildFn)> {
    vec![
        ("analytics.metrics_collection", MetricsCollection::build),
        ("analytics.audit_trail", AuditTrail::build),
    ]
}

// ---------------------------------------------------------------------------------------
// Keys and fields
// ---------------------------------------------------------------------------------------

/// `astra:analytics:day:<YYYY-MM-DD>`: hash of the UTC day's KPI counters, fields
/// [`DAY_FIELDS`]. Expires `retain_days` after its last write.
pub fn day_key(day: &str) -> String {
    format!("astra:analytics:day:{day}")
}

/// `astra:analytics:dau:<YYYY-MM-DD>`: HyperLogLog of the users active on that UTC day
/// (`PFCOUNT` = daily active users). Expires `retain_days` after its last write.
pub fn dau_key(day: &str) -> String {
    format!("astra:analytics:dau:{day}")
}

/// `astra:analytics:total`: all-time totals with the same fields as [`day_key`] (never
/// expires); the metrics refresh exports them as monotonic business counters.
pub fn total_key() -> String {
    "astra:analytics:total".to_string()
}

/// `astra:analytics:trades:min:<unix_minute>`: number of trades that occurred in that
/// minute (`unix_minute` = `ts_ms` div 60 000, see [`unix_minute`]). Expires
/// [`TRADES_MINUTE_TTL_SECS`] after its last write. Trades per second = the last complete
/// minute's count / 60.
pub fn trades_minute_key(unix_minute: i64) -> String {
    format!("astra:analytics:trades:min:{unix_minute}")
}

/// The Unix minute of a Unix-ms timestamp (floor division, also for negative times).
pub fn unix_minute(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(60_000)
}

/// TTL of the per-minute trade counters.
pub const TRADES_MINUTE_TTL_SECS: i64 = 3600;

/// `astra:analytics:{audit}:head`: string, the hash (64 lowercase hex) of the last
/// audit record. `{audit}` is a Redis Cluster hash tag shared with [`audit_log_key`], so
/// `CHAINAPPEND` touches a single slot.
pub fn audit_head_key() -> String {
    "astra:analytics:{audit}:head".to_string()
}

/// `astra:analytics:{audit}:log`: list of the audit records, oldest first; each element
/// is the MessagePack array `[prev_hex, hash_hex, record]` ([`decode_log_entry`]), where
/// `record` is [`canonical_bytes`] of the event. Check it with [`verify_chain`].
pub fn audit_log_key() -> String {
    "astra:analytics:{audit}:log".to_string()
}

/// Field names of the [`day_key`] hash.
pub mod field {
    /// `trade_executed` count.
    pub const TRADES: &str = "trades";
    /// Traded notional (`quantity × price_usd`), cents.
    pub const VOLUME_CENTS: &str = "volume_cents";
    /// `social.interaction` count.
    pub const INTERACTIONS: &str = "interactions";
    /// `user.registered` count.
    pub const REGISTRATIONS: &str = "registrations";
    /// XP awarded (sum of `xp_awarded.amount`).
    pub const XP: &str = "xp";
    /// `level_up` count.
    pub const LEVEL_UPS: &str = "level_ups";
    /// `achievement_unlocked` count.
    pub const ACHIEVEMENTS: &str = "achievements";
    /// `nft.reward_issued` count.
    pub const REWARDS: &str = "rewards";
    /// Subscriptions started.
    pub const SUBSCRIPTIONS_STARTED: &str = "subscriptions_started";
    /// Subscriptions cancelled.
    pub const SUBSCRIPTIONS_CANCELLED: &str = "subscriptions_cancelled";
    /// `nft.sale_completed` count.
    pub const NFT_SALES: &str = "nft_sales";
    /// NFT sale volume, cents.
    pub const NFT_VOLUME_CENTS: &str = "nft_volume_cents";
    /// Revenue from trade fees, cents (from `financial.revenue_recorded`).
    pub const REVENUE_TRADE_FEE: &str = "revenue_cents:trade_fee";
    /// Revenue from subscriptions, cents.
    pub const REVENUE_SUBSCRIPTION: &str = "revenue_cents:subscription";
    /// Revenue from NFT sale fees, cents.
    pub const REVENUE_NFT_FEE: &str = "revenue_cents:nft_fee";
}

/// Every field of the [`day_key`] hash (absent fields read as 0).
pub const DAY_FIELDS: &[&str] = &[
    field::TRADES,
    field::VOLUME_CENTS,
    field::INTERACTIONS,
    field::REGISTRATIONS,
    field::XP,
    field::LEVEL_UPS,
    field::ACHIEVEMENTS,
    field::REWARDS,
    field::SUBSCRIPTIONS_STARTED,
    field::SUBSCRIPTIONS_CANCELLED,
    field::NFT_SALES,
    field::NFT_VOLUME_CENTS,
    field::REVENUE_TRADE_FEE,
    field::REVENUE_SUBSCRIPTION,
    field::REVENUE_NFT_FEE,
];

/// The revenue fields, by `RevenueRecorded.source`.
pub const REVENUE_FIELDS: &[(&str, &str)] = &[
    ("trade_fee", field::REVENUE_TRADE_FEE),
    ("subscription", field::REVENUE_SUBSCRIPTION),
    ("nft_fee", field::REVENUE_NFT_FEE),
];
