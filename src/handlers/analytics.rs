//! analytics domain handlers: KPI counters ([`MetricsCollection`]) and the tamper-evident
//! audit trail ([`AuditTrail`]).

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

use super::{
    Constructor, Event, Handler, HandlerError, Op, Reply, Step, deny_unknown_options, non_empty,
    option, poison,
};
use crate::events::{
    Interaction, RevenueRecorded, SaleCompleted, SubscriptionAction, SubscriptionChanged,
    TradeExecuted, UserRegistered, XpAwarded, notional_cents, streams, usd_to_cents,
};
use crate::group::GroupConfig;

/// The handlers of this domain, by name.
pub fn handlers() -> Vec<(&'static str, Constructor)> {
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

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// True for a plausible `YYYY-MM-DD`.
fn is_day(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && digits(5..7) && digits(8..10)) {
        return false;
    }
    let month: u32 = s[5..7].parse().unwrap_or(0);
    let day: u32 = s[8..10].parse().unwrap_or(0);
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

// ---------------------------------------------------------------------------------------
// analytics.metrics_collection
// ---------------------------------------------------------------------------------------

/// `analytics.metrics_collection`: business KPI counters per UTC day and a daily-active-
/// users HyperLogLog, which the metrics endpoint reads (so several daemons agree).
///
/// Rules, per input (the day is the UTC day of the event's `ts`, except revenue, which
/// is booked on `RevenueRecorded.day` so it matches the financial domain's own books):
///
/// | stream | day-hash fields (`HINCRBY`) | active users (`PFADD`) |
/// |---|---|---|
/// | `trading.trade_executed` | `trades` +1, `volume_cents` +notional; also `INCRBY astra:analytics:trades:min:<minute> 1` | `user_id` |
/// | `social.interaction` | `interactions` +1 | `user_id` (the actor) |
/// | `user.registered` | `registrations` +1 | `user_id` |
/// | `gamification.xp_awarded` | `xp` +amount | `user_id` |
/// | `gamification.level_up` | `level_ups` +1 | — |
/// | `gamification.achievement_unlocked` | `achievements` +1 | — |
/// | `nft.reward_issued` | `rewards` +1 | — |
/// | `financial.subscription_changed` | `subscriptions_started` / `subscriptions_cancelled` +1 (`renewed`: nothing) | `user_id` (started, cancelled) |
/// | `nft.sale_completed` | `nft_sales` +1, `nft_volume_cents` +price | `buyer_id`, `seller_id` |
/// | `financial.revenue_recorded` | `revenue_cents:<source>` +`amount_cents` | — |
/// | any other business stream | — | — |
///
/// "Active" means the user *did* something: the actor of an interaction, not its target
/// (being liked is not activity); a renewal is the billing system acting, not the user.
/// Level-ups, achievements and rewards follow from the user's own trades or interactions,
/// which already count them. Revenue is taken from `financial.revenue_recorded`, never
/// recomputed here. Every written day key gets `EXPIRE` `retain_days` in the same round;
/// the minute counter gets `EXPIRE 3600`. One round, no emits; streams with nothing to
/// count (`position_updated`, `leaderboard_updated`, …) succeed with no ops.
///
/// Poison: an empty user id that would be counted; a trade with `quantity` or
/// `price_usd` not finite or ≤ 0; an NFT sale with `price_usd` not finite or ≤ 0; a
/// negative XP `amount` or `amount_cents`; a revenue `source` other than `trade_fee`,
/// `subscription`, `nft_fee`; a revenue `day` that is not `YYYY-MM-DD`; a stream the
/// handler does not know.
///
/// Keys: [`day_key`], [`dau_key`], [`trades_minute_key`].
/// Emits: nothing.
/// Options: `retain_days` (400): TTL of the day keys, 1 to 36 500.
pub struct MetricsCollection {
    ttl_secs: i64,
}

impl MetricsCollection {
    /// Builds from the group config.
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(g, &["retain_days"])?;
        let days: u64 = option(g, "retain_days", 400)?;
        if !(1..=36_500).contains(&days) {
            return Err(format!(
                "option `retain_days`: must be between 1 and 36500, got {days}"
            ));
        }
        Ok(Arc::new(MetricsCollection {
            ttl_secs: days as i64 * 86_400,
        }))
    }
}

/// Collects one event's ops: counters first, then the DAU `PFADD`s, then one `EXPIRE`
/// per key written.
struct Plan {
    ttl_secs: i64,
    ops: Vec<Op>,
    expire: Vec<(String, i64)>,
    /// (field, delta) also added to the all-time totals.
    totals: Vec<(String, i64)>,
}

impl Plan {
    fn touch(&mut self, key: String, ttl: i64) {
        if !self.expire.iter().any(|(k, _)| *k == key) {
            self.expire.push((key, ttl));
        }
    }

    fn incr(&mut self, day: &str, field: &str, by: i64) {
        if by == 0 {
            return;
        }
        let key = day_key(day);
        self.ops.push(Op::hincrby(&key, field, by));
        self.touch(key, self.ttl_secs);
        self.totals.push((field.to_string(), by));
    }

    fn active(&mut self, day: &str, users: &[&str]) {
        let mut args: Vec<Vec<u8>> = vec![];
        for u in users {
            if !args.iter().any(|a| a == u.as_bytes()) {
                args.push(u.as_bytes().to_vec());
            }
        }
        let key = dau_key(day);
        self.ops.push(Op::new("PFADD", &key, args));
        self.touch(key, self.ttl_secs);
    }

    fn trade_minute(&mut self, ts_ms: i64) {
        let key = trades_minute_key(unix_minute(ts_ms));
        self.ops.push(Op::incrby(&key, 1));
        self.touch(key, TRADES_MINUTE_TTL_SECS);
    }

    fn finish(mut self) -> Step {
        if self.ops.is_empty() {
            return Step::nothing();
        }
        for (k, ttl) in self.expire {
            self.ops.push(Op::expire(k, ttl));
        }
        for (field, by) in self.totals {
            self.ops.push(Op::hincrby(total_key(), field, by));
        }
        Step::Done {
            ops: self.ops,
            emit: vec![],
        }
    }
}

/// Validates a USD price that must be positive and returns it in cents.
fn positive_cents(field: &str, usd: f64) -> Result<i64, HandlerError> {
    if !usd.is_finite() || usd <= 0.0 {
        return Err(poison(format!(
            "field `{field}`: must be a finite number > 0, got {usd}"
        )));
    }
    usd_to_cents(usd).ok_or_else(|| poison(format!("field `{field}`: {usd} is out of range")))
}

impl Handler for MetricsCollection {
    fn step(&self, ev: &Event, _rounds: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        let day = ev.utc_day();
        let mut plan = Plan {
            ttl_secs: self.ttl_secs,
            ops: vec![],
            expire: vec![],
            totals: vec![],
        };
        match ev.stream.as_str() {
            streams::TRADE_EXECUTED => {
                let t: TradeExecuted = ev.payload()?;
                non_empty("user_id", &t.user_id)?;
                if !t.quantity.is_finite() || t.quantity <= 0.0 {
                    return Err(poison(format!(
                        "field `quantity`: must be a finite number > 0, got {}",
                        t.quantity
                    )));
                }
                positive_cents("price_usd", t.price_usd)?;
                let notional = notional_cents(t.quantity, t.price_usd).ok_or_else(|| {
                    poison(format!(
                        "field `quantity`: notional {} × {} is out of range",
                        t.quantity, t.price_usd
                    ))
                })?;
                plan.incr(&day, field::TRADES, 1);
                plan.incr(&day, field::VOLUME_CENTS, notional);
                plan.active(&day, &[&t.user_id]);
                plan.trade_minute(ev.env.ts);
            }
            streams::INTERACTION => {
                let i: Interaction = ev.payload()?;
                non_empty("user_id", &i.user_id)?;
                plan.incr(&day, field::INTERACTIONS, 1);
                plan.active(&day, &[&i.user_id]);
            }
            streams::REGISTERED => {
                let r: UserRegistered = ev.payload()?;
                non_empty("user_id", &r.user_id)?;
                plan.incr(&day, field::REGISTRATIONS, 1);
                plan.active(&day, &[&r.user_id]);
            }
            streams::XP_AWARDED => {
                let x: XpAwarded = ev.payload()?;
                non_empty("user_id", &x.user_id)?;
                if x.amount < 0 {
                    return Err(poison(format!(
                        "field `amount`: must be >= 0, got {}",
                        x.amount
                    )));
                }
                plan.incr(&day, field::XP, x.amount);
                plan.active(&day, &[&x.user_id]);
            }
            streams::LEVEL_UP => plan.incr(&day, field::LEVEL_UPS, 1),
            streams::ACHIEVEMENT_UNLOCKED => plan.incr(&day, field::ACHIEVEMENTS, 1),
            streams::REWARD_ISSUED => plan.incr(&day, field::REWARDS, 1),
            streams::SUBSCRIPTION_CHANGED => {
                let s: SubscriptionChanged = ev.payload()?;
                non_empty("user_id", &s.user_id)?;
                let f = match s.action {
                    SubscriptionAction::Started => field::SUBSCRIPTIONS_STARTED,
                    SubscriptionAction::Cancelled => field::SUBSCRIPTIONS_CANCELLED,
                    SubscriptionAction::Renewed => return Ok(Step::nothing()),
                };
                plan.incr(&day, f, 1);
                plan.active(&day, &[&s.user_id]);
            }
            streams::SALE_COMPLETED => {
                let s: SaleCompleted = ev.payload()?;
                non_empty("buyer_id", &s.buyer_id)?;
                non_empty("seller_id", &s.seller_id)?;
                let cents = positive_cents("price_usd", s.price_usd)?;
                plan.incr(&day, field::NFT_SALES, 1);
                plan.incr(&day, field::NFT_VOLUME_CENTS, cents);
                plan.active(&day, &[&s.buyer_id, &s.seller_id]);
            }
            streams::REVENUE_RECORDED => {
                let r: RevenueRecorded = ev.payload()?;
                let f = REVENUE_FIELDS
                    .iter()
                    .find(|(src, _)| *src == r.source)
                    .map(|(_, f)| *f)
                    .ok_or_else(|| {
                        poison(format!(
                            "field `source`: {:?} is not trade_fee, subscription or nft_fee",
                            r.source
                        ))
                    })?;
                if r.amount_cents < 0 {
                    return Err(poison(format!(
                        "field `amount_cents`: must be >= 0, got {}",
                        r.amount_cents
                    )));
                }
                if !is_day(&r.day) {
                    return Err(poison(format!(
                        "field `day`: {:?} is not YYYY-MM-DD",
                        r.day
                    )));
                }
                plan.incr(&r.day, f, r.amount_cents);
            }
            streams::POSITION_UPDATED
            | streams::RISK_ALERT
            | streams::LEADERBOARD_UPDATED
            | streams::FEED_ITEM_POSTED
            | streams::CLAN_SCORE_UPDATED
            | streams::INFLUENCE_UPDATED
            | streams::COMPLIANCE_FLAGGED
            | streams::PROFILE_UPDATED
            | streams::NOTIFICATION_REQUESTED => {}
            _ => {
                return Err(poison(format!(
                    "stream `{}` is not read by this handler",
                    ev.stream
                )));
            }
        }
        Ok(plan.finish())
    }
}

// ---------------------------------------------------------------------------------------
// analytics.audit_trail
// ---------------------------------------------------------------------------------------

/// `analytics.audit_trail`: appends every event it reads to a tamper-evident SHA-256
/// hash chain.
///
/// One op per event, `CHAINAPPEND astra:analytics:{audit}:head astra:analytics:{audit}:log
/// <record>` ([`Op::chain_append`]), with `record` = [`canonical_bytes`] of the event. The
/// script computes `hash = SHA-256(prev_hash_hex ‖ record)` where `prev_hash_hex` is the
/// previous record's hash as 64 lowercase hex ASCII characters (empty for the first
/// record), stores `hash_hex` at the head and `RPUSH`es the MessagePack array
/// `[prev_hex, hash_hex, record]` to the log. Because the link is computed where the head
/// is read, two consumers appending at once can never fork the chain. Changing, removing
/// or reordering any record breaks [`verify_chain`] at that point; removing records at
/// the end is caught by comparing the last hash with the head
/// ([`verify_chain_with_head`]).
///
/// Every stream the group reads is recorded (the config decides which); nothing is
/// poison, since the record needs only the envelope, never the payload.
///
/// Keys: [`audit_head_key`], [`audit_log_key`].
/// Emits: nothing.
/// Options: none.
pub struct AuditTrail;

impl AuditTrail {
    /// Builds from the group config.
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(g, &[])?;
        Ok(Arc::new(AuditTrail))
    }
}

impl Handler for AuditTrail {
    fn step(&self, ev: &Event, _rounds: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        Ok(Step::Done {
            ops: vec![Op::chain_append(
                audit_head_key(),
                audit_log_key(),
                canonical_bytes(ev),
            )],
            emit: vec![],
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

fn json_str(out: &mut String, s: &str) {
    // serde_json's escaping of a &str cannot fail.
    out.push_str(&serde_json::to_string(s).expect("JSON string escaping"));
}

/// The audit record of an event: canonical JSON of its envelope, UTF-8, no whitespace,
/// keys in this fixed order:
///
/// ```text
/// {"stream":S,"id":S,"type":S,"v":N,"cid":S,"caus":S|null,"ts":N,"src":S,"ct":S,"data":H}
/// ```
///
/// - `stream`: the stream the event was read from; `id`, `type`, `cid`, `src`: envelope
///   fields; `caus`: the causation id, `null` on root events; `v`, `ts`: decimal integers
///   (`ts` in Unix ms, may be negative); `ct`: `application/msgpack` or
///   `application/json`; `data`: the payload bytes exactly as published, lowercase hex
///   (so the record does not depend on how the payload is encoded).
/// - Strings use JSON's minimal escaping (serde_json): `"` → `\"`, `\` → `\\`, `\b \f
///   \n \r \t` as such, other control characters as `\u00xx` (lowercase hex); everything
///   else, including non-ASCII and `/`, is written as is.
/// - The traceparent (`tp`) and the Redis entry id are not part of the record: they are
///   transport details, not facts about the business event.
pub fn canonical_bytes(ev: &Event) -> Vec<u8> {
    let e = &ev.env;
    let mut out = String::with_capacity(256 + 2 * e.data.len());
    out.push_str("{\"stream\":");
    json_str(&mut out, &ev.stream);
    out.push_str(",\"id\":");
    json_str(&mut out, &e.id);
    out.push_str(",\"type\":");
    json_str(&mut out, &e.event_type);
    out.push_str(",\"v\":");
    out.push_str(&e.v.to_string());
    out.push_str(",\"cid\":");
    json_str(&mut out, &e.cid);
    out.push_str(",\"caus\":");
    match &e.caus {
        Some(c) => json_str(&mut out, c),
        None => out.push_str("null"),
    }
    out.push_str(",\"ts\":");
    out.push_str(&e.ts.to_string());
    out.push_str(",\"src\":");
    json_str(&mut out, &e.src);
    out.push_str(",\"ct\":");
    json_str(&mut out, e.ct.as_str());
    out.push_str(",\"data\":\"");
    out.push_str(&hex(&e.data));
    out.push_str("\"}");
    out.into_bytes()
}

/// `SHA-256(prev_hex ‖ record)` as 64 lowercase hex characters: the link the script
/// computes for a record appended after the record whose hash is `prev_hex` (`""` for
/// the first record).
pub fn chain_hash(prev_hex: &str, record: &[u8]) -> String {
    crate::handler::chain_link(prev_hex, record)
}

/// Which part of an audit record failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainField {
    /// The record's `prev_hex` is not the previous record's hash (a record was removed,
    /// inserted or reordered before it, or its `prev_hex` was edited).
    Prev,
    /// The record's `hash_hex` is not `SHA-256(prev_hex ‖ record)` (the record or its
    /// hash was edited).
    Hash,
    /// The last record's hash is not the stored head (records were removed at the end,
    /// or the head was edited).
    Head,
}

impl fmt::Display for ChainField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChainField::Prev => "prev_hash",
            ChainField::Hash => "hash",
            ChainField::Head => "head",
        })
    }
}

/// The first broken link of an audit chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at record {index}: {field} expected {expected:?}, found {found:?}")]
pub struct ChainBreak {
    /// 0-based position of the record in the log (its `LINDEX`); for [`ChainField::Head`],
    /// the number of records.
    pub index: u64,
    /// What did not match.
    pub field: ChainField,
    /// The value the chain requires there.
    pub expected: String,
    /// The value found.
    pub found: String,
}

/// Verifies an audit chain given its records `(prev_hex, hash_hex, record)` in log
/// order: the first record's `prev_hex` must be `""`, each next one's must equal the
/// previous `hash_hex`, and each `hash_hex` must equal [`chain_hash`]`(prev_hex,
/// record)`. Returns the number of records, or the first broken link.
pub fn verify_chain<I: IntoIterator<Item = (String, String, Vec<u8>)>>(
    records: I,
) -> Result<u64, ChainBreak> {
    verify_links(records).map(|(n, _)| n)
}

/// [`verify_chain`], then checks that the last record's hash is `head` (the value of
/// [`audit_head_key`]; `None` or `""` when the chain is empty), which also catches
/// records removed from the end.
pub fn verify_chain_with_head<I: IntoIterator<Item = (String, String, Vec<u8>)>>(
    records: I,
    head: Option<&str>,
) -> Result<u64, ChainBreak> {
    let (n, last) = verify_links(records)?;
    let head = head.unwrap_or("");
    if head != last {
        return Err(ChainBreak {
            index: n,
            field: ChainField::Head,
            expected: head.to_string(),
            found: last,
        });
    }
    Ok(n)
}

fn verify_links<I: IntoIterator<Item = (String, String, Vec<u8>)>>(
    records: I,
) -> Result<(u64, String), ChainBreak> {
    let mut prev = String::new();
    let mut n = 0u64;
    for (prev_hex, hash_hex, record) in records {
        if prev_hex != prev {
            return Err(ChainBreak {
                index: n,
                field: ChainField::Prev,
                expected: prev,
                found: prev_hex,
            });
        }
        let computed = chain_hash(&prev_hex, &record);
        if hash_hex != computed {
            return Err(ChainBreak {
                index: n,
                field: ChainField::Hash,
                expected: computed,
                found: hash_hex,
            });
        }
        prev = hash_hex;
        n += 1;
    }
    Ok((n, prev))
}

/// A MessagePack str or bin, as bytes.
struct StrOrBin(Vec<u8>);

impl<'de> Deserialize<'de> for StrOrBin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StrOrBin, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrOrBin;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a MessagePack str or bin")
            }
            fn visit_str<E>(self, v: &str) -> Result<StrOrBin, E> {
                Ok(StrOrBin(v.as_bytes().to_vec()))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<StrOrBin, E> {
                Ok(StrOrBin(v.to_vec()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The elements of a MessagePack array of str/bin.
struct Items(Vec<Vec<u8>>);

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Items, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Items;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a MessagePack array [prev_hex, hash_hex, record]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Items, A::Error> {
                let mut v = vec![];
                while let Some(StrOrBin(x)) = a.next_element()? {
                    if v.len() == 3 {
                        return Err(de::Error::invalid_length(4, &self));
                    }
                    v.push(x);
                }
                Ok(Items(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Decodes one element of [`audit_log_key`]: the MessagePack array
/// `[prev_hex, hash_hex, record]`, each element a str or a bin (Lua's cmsgpack writes
/// strings as str; other writers may use bin). The two hashes must be UTF-8; nothing may
/// follow the array.
pub fn decode_log_entry(bytes: &[u8]) -> Result<(String, String, Vec<u8>), String> {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    let Items(items) = Items::deserialize(&mut de).map_err(|e| format!("audit log entry: {e}"))?;
    let used = de.position();
    if used != bytes.len() as u64 {
        return Err(format!(
            "audit log entry: {} trailing bytes after the array",
            bytes.len() as u64 - used
        ));
    }
    let [prev, hash, record]: [Vec<u8>; 3] = items.try_into().map_err(|v: Vec<Vec<u8>>| {
        format!(
            "audit log entry: array of {} elements, expected 3 [prev_hex, hash_hex, record]",
            v.len()
        )
    })?;
    let text = |name: &str, b: Vec<u8>| {
        String::from_utf8(b).map_err(|_| format!("audit log entry: {name} is not UTF-8"))
    };
    Ok((text("prev_hex", prev)?, text("hash_hex", hash)?, record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{ContentType, Envelope};
    use crate::events::{LevelUp, PositionUpdated, Side};
    use crate::handlers::testing::{event, event_at, group, json_event};

    fn metrics(options: &str) -> Arc<dyn Handler> {
        MetricsCollection::build(&group(
            "analytics.metrics_collection",
            "analytics.metrics_collection",
            &[],
            options,
        ))
        .unwrap()
    }

    type OpView = (&'static str, String, Vec<String>);

    fn ops_of(step: &Step) -> Vec<OpView> {
        let Step::Done { ops, emit } = step else {
            panic!("expected Done, got {step:?}")
        };
        assert!(emit.is_empty());
        // The all-time totals mirror the day hash; `totals_mirror_the_day_counters` checks them.
        ops.iter()
            .filter(|o| o.key() != total_key())
            .map(|o| {
                (
                    o.cmd(),
                    o.key().to_string(),
                    o.args()
                        .iter()
                        .map(|a| String::from_utf8(a.clone()).unwrap())
                        .collect(),
                )
            })
            .collect()
    }

    fn op(cmd: &'static str, key: &str, args: &[&str]) -> OpView {
        (
            cmd,
            key.to_string(),
            args.iter().map(|s| s.to_string()).collect(),
        )
    }

    const TTL: &str = "34560000"; // 400 days
    const DAY: &str = "astra:analytics:day:2026-11-21";
    const DAU: &str = "astra:analytics:dau:2026-11-21";
    // 2026-11-21T12:00:00Z
    const T: i64 = 1_795_262_400_000;

    fn trade(quantity: f64, price: f64) -> TradeExecuted {
        TradeExecuted {
            trade_id: "t1".into(),
            user_id: "u1".into(),
            symbol: "BTC".into(),
            side: Side::Buy,
            quantity,
            price_usd: price,
            fee_usd: None,
        }
    }

    #[test]
    fn totals_mirror_the_day_counters() {
        let h = metrics("");
        let ev = event_at(streams::TRADE_EXECUTED, &trade(0.5, 101.01), T);
        let Step::Done { ops, .. } = h.step(&ev, &[]).unwrap() else {
            panic!()
        };
        let totals: Vec<(String, Vec<String>)> = ops
            .iter()
            .filter(|o| o.key() == total_key())
            .map(|o| {
                (
                    o.cmd().to_string(),
                    o.args()
                        .iter()
                        .map(|a| String::from_utf8(a.clone()).unwrap())
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            totals,
            vec![
                (
                    "HINCRBY".to_string(),
                    vec!["trades".to_string(), "1".to_string()]
                ),
                (
                    "HINCRBY".to_string(),
                    vec!["volume_cents".to_string(), "5051".to_string()]
                ),
            ]
        );
    }

    #[test]
    fn trades_count_volume_dau_and_the_minute() {
        let h = metrics("");
        let ev = event_at(streams::TRADE_EXECUTED, &trade(0.5, 101.01), T + 59_999);
        let minute = format!("astra:analytics:trades:min:{}", T / 60_000);
        assert_eq!(
            ops_of(&h.step(&ev, &[]).unwrap()),
            vec![
                op("HINCRBY", DAY, &["trades", "1"]),
                op("HINCRBY", DAY, &["volume_cents", "5051"]),
                op("PFADD", DAU, &["u1"]),
                op("INCRBY", &minute, &["1"]),
                op("EXPIRE", DAY, &[TTL]),
                op("EXPIRE", DAU, &[TTL]),
                op("EXPIRE", &minute, &["3600"]),
            ]
        );
        // One ms later is the next minute.
        let ev = event_at(streams::TRADE_EXECUTED, &trade(1.0, 1.0), T + 60_000);
        let ops = ops_of(&h.step(&ev, &[]).unwrap());
        assert_eq!(
            ops[3].1,
            format!("astra:analytics:trades:min:{}", T / 60_000 + 1)
        );
        assert_eq!(unix_minute(-1), -1);
        assert_eq!(unix_minute(59_999), 0);
    }

    #[test]
    fn the_day_is_the_utc_day_of_the_event() {
        let h = metrics("");
        // 2026-11-21T23:59:59.999Z and 2026-11-22T00:00:00Z.
        let midnight = 1_795_305_600_000;
        let ev = event_at(streams::TRADE_EXECUTED, &trade(1.0, 1.0), midnight - 1);
        assert_eq!(ops_of(&h.step(&ev, &[]).unwrap())[0].1, DAY);
        let ev = event_at(streams::TRADE_EXECUTED, &trade(1.0, 1.0), midnight);
        assert_eq!(
            ops_of(&h.step(&ev, &[]).unwrap())[0].1,
            "astra:analytics:day:2026-11-22"
        );
    }

    #[test]
    fn interactions_count_the_actor_only() {
        let h = metrics("");
        let ev = json_event(
            streams::INTERACTION,
            r#"{"user_id":"a","target_user_id":"b","kind":"like"}"#,
        );
        assert_eq!(
            ops_of(&h.step(&ev, &[]).unwrap()),
            vec![
                op("HINCRBY", DAY, &["interactions", "1"]),
                op("PFADD", DAU, &["a"]),
                op("EXPIRE", DAY, &[TTL]),
                op("EXPIRE", DAU, &[TTL]),
            ]
        );
    }

    #[test]
    fn nft_sales_count_buyer_and_seller() {
        let h = metrics("");
        let sale = |buyer: &str, seller: &str| {
            event(
                streams::SALE_COMPLETED,
                &SaleCompleted {
                    sale_id: "s".into(),
                    collection: "c".into(),
                    token_id: "1".into(),
                    seller_id: seller.into(),
                    buyer_id: buyer.into(),
                    price_usd: 19.999,
                },
            )
        };
        assert_eq!(
            ops_of(&h.step(&sale("b", "s"), &[]).unwrap()),
            vec![
                op("HINCRBY", DAY, &["nft_sales", "1"]),
                op("HINCRBY", DAY, &["nft_volume_cents", "2000"]),
                op("PFADD", DAU, &["b", "s"]),
                op("EXPIRE", DAY, &[TTL]),
                op("EXPIRE", DAU, &[TTL]),
            ]
        );
        // Buying from oneself: one element.
        assert_eq!(
            ops_of(&h.step(&sale("x", "x"), &[]).unwrap())[2],
            op("PFADD", DAU, &["x"])
        );
    }

    #[test]
    fn simple_counters() {
        let h = metrics("");
        let cases: Vec<(Event, Vec<OpView>)> = vec![
            (
                json_event(streams::REGISTERED, r#"{"user_id":"n","display_name":"N"}"#),
                vec![
                    op("HINCRBY", DAY, &["registrations", "1"]),
                    op("PFADD", DAU, &["n"]),
                ],
            ),
            (
                json_event(
                    streams::XP_AWARDED,
                    r#"{"user_id":"u","amount":25,"total":100,"level":2,"reason":"trade"}"#,
                ),
                vec![op("HINCRBY", DAY, &["xp", "25"]), op("PFADD", DAU, &["u"])],
            ),
            (
                event(
                    streams::LEVEL_UP,
                    &LevelUp {
                        user_id: "u".into(),
                        from: 1,
                        to: 2,
                        total_xp: 100,
                    },
                ),
                vec![op("HINCRBY", DAY, &["level_ups", "1"])],
            ),
            (
                json_event(
                    streams::ACHIEVEMENT_UNLOCKED,
                    r#"{"user_id":"u","achievement":"first_trade"}"#,
                ),
                vec![op("HINCRBY", DAY, &["achievements", "1"])],
            ),
            (
                json_event(
                    streams::REWARD_ISSUED,
                    r#"{"user_id":"u","reward":"bronze_badge","reason":"level_5"}"#,
                ),
                vec![op("HINCRBY", DAY, &["rewards", "1"])],
            ),
            (
                json_event(
                    streams::SUBSCRIPTION_CHANGED,
                    r#"{"user_id":"s","plan":"pro","action":"started","price_usd":9.99}"#,
                ),
                vec![
                    op("HINCRBY", DAY, &["subscriptions_started", "1"]),
                    op("PFADD", DAU, &["s"]),
                ],
            ),
            (
                json_event(
                    streams::SUBSCRIPTION_CHANGED,
                    r#"{"user_id":"s","plan":"pro","action":"cancelled","price_usd":9.99}"#,
                ),
                vec![
                    op("HINCRBY", DAY, &["subscriptions_cancelled", "1"]),
                    op("PFADD", DAU, &["s"]),
                ],
            ),
        ];
        for (ev, want) in cases {
            let got = ops_of(&h.step(&ev, &[]).unwrap());
            let n = want.len();
            assert_eq!(got[..n], want[..], "{}", ev.stream);
            // Then one EXPIRE per key written, with the retention.
            assert!(
                got[n..]
                    .iter()
                    .all(|(c, _, a)| *c == "EXPIRE" && a[0] == TTL)
            );
            assert_eq!(got.len() - n, if want.len() == 2 { 2 } else { 1 });
        }
        // Zero XP changes no counter but the user is still active.
        let ev = json_event(
            streams::XP_AWARDED,
            r#"{"user_id":"u","amount":0,"total":0,"level":1,"reason":"like"}"#,
        );
        assert_eq!(
            ops_of(&h.step(&ev, &[]).unwrap()),
            vec![op("PFADD", DAU, &["u"]), op("EXPIRE", DAU, &[TTL])]
        );
    }

    #[test]
    fn revenue_is_taken_from_revenue_recorded_on_its_booked_day() {
        let h = metrics("");
        for (source, f) in REVENUE_FIELDS {
            let ev = event(
                streams::REVENUE_RECORDED,
                &RevenueRecorded {
                    source: source.to_string(),
                    amount_usd: 12.34,
                    amount_cents: 1234,
                    user_id: "u".into(),
                    day: "2026-11-20".into(),
                },
            );
            let day = "astra:analytics:day:2026-11-20";
            assert_eq!(
                ops_of(&h.step(&ev, &[]).unwrap()),
                vec![op("HINCRBY", day, &[f, "1234"]), op("EXPIRE", day, &[TTL])]
            );
        }
        assert!(REVENUE_FIELDS.iter().all(|(_, f)| DAY_FIELDS.contains(f)));
        assert_eq!(DAY_FIELDS.len(), 15);
    }

    #[test]
    fn streams_with_nothing_to_count_succeed_without_ops() {
        let h = metrics("");
        let ev = event(
            streams::POSITION_UPDATED,
            &PositionUpdated {
                user_id: "u".into(),
                symbol: "BTC".into(),
                net_quantity: 1.0,
                trade_count: 1,
                volume_cents: 1,
            },
        );
        assert_eq!(h.step(&ev, &[]).unwrap(), Step::nothing());
        // Not even decoded: a payload this handler does not need cannot poison it.
        for s in [
            streams::RISK_ALERT,
            streams::LEADERBOARD_UPDATED,
            streams::FEED_ITEM_POSTED,
            streams::CLAN_SCORE_UPDATED,
            streams::INFLUENCE_UPDATED,
            streams::COMPLIANCE_FLAGGED,
            streams::PROFILE_UPDATED,
            streams::NOTIFICATION_REQUESTED,
        ] {
            assert_eq!(
                h.step(&json_event(s, "{}"), &[]).unwrap(),
                Step::nothing(),
                "{s}"
            );
        }
        let renewed = json_event(
            streams::SUBSCRIPTION_CHANGED,
            r#"{"user_id":"s","plan":"pro","action":"renewed","price_usd":9.99}"#,
        );
        assert_eq!(h.step(&renewed, &[]).unwrap(), Step::nothing());
    }

    #[test]
    fn metrics_poison_names_the_field() {
        let h = metrics("");
        let check = |ev: Event, needle: &str| {
            let err = h.step(&ev, &[]).unwrap_err();
            assert!(
                matches!(&err, HandlerError::Poison(m) if m.contains(needle)),
                "{needle}: {err}"
            );
        };
        check(
            event(streams::TRADE_EXECUTED, &trade(0.0, 1.0)),
            "`quantity`",
        );
        check(
            event(streams::TRADE_EXECUTED, &trade(f64::NAN, 1.0)),
            "`quantity`",
        );
        check(
            event(streams::TRADE_EXECUTED, &trade(1.0, -1.0)),
            "`price_usd`",
        );
        check(
            event(streams::TRADE_EXECUTED, &trade(1.0, 0.0)),
            "`price_usd`",
        );
        check(
            event(streams::TRADE_EXECUTED, &trade(1e7, 1e7)),
            "out of range",
        );
        check(
            json_event(
                streams::TRADE_EXECUTED,
                r#"{"trade_id":"t","symbol":"B","side":"buy","quantity":1,"price_usd":1}"#,
            ),
            "user_id",
        );
        check(
            json_event(
                streams::INTERACTION,
                r#"{"user_id":"","target_user_id":"b","kind":"like"}"#,
            ),
            "`user_id`",
        );
        check(
            json_event(
                streams::XP_AWARDED,
                r#"{"user_id":"u","amount":-3,"total":0,"level":1,"reason":"x"}"#,
            ),
            "`amount`",
        );
        check(
            json_event(
                streams::SALE_COMPLETED,
                r#"{"sale_id":"s","collection":"c","token_id":"t","seller_id":"a","buyer_id":"b","price_usd":0}"#,
            ),
            "`price_usd`",
        );
        check(
            json_event(
                streams::SALE_COMPLETED,
                r#"{"sale_id":"s","collection":"c","token_id":"t","seller_id":"","buyer_id":"b","price_usd":1}"#,
            ),
            "`seller_id`",
        );
        let rev = |source: &str, cents: i64, day: &str| {
            event(
                streams::REVENUE_RECORDED,
                &RevenueRecorded {
                    source: source.into(),
                    amount_usd: 0.0,
                    amount_cents: cents,
                    user_id: "u".into(),
                    day: day.into(),
                },
            )
        };
        check(rev("tips", 1, "2026-11-21"), "`source`");
        check(rev("trade_fee", -1, "2026-11-21"), "`amount_cents`");
        check(rev("trade_fee", 1, "2026-13-01"), "`day`");
        check(rev("trade_fee", 1, "21/11/2026"), "`day`");
        check(json_event("astra.other.thing.v1", "{}"), "not read");
    }

    #[test]
    fn metrics_options() {
        let h = metrics("retain_days = 2");
        let ev = event(streams::TRADE_EXECUTED, &trade(1.0, 1.0));
        let ops = ops_of(&h.step(&ev, &[]).unwrap());
        assert_eq!(ops[4], op("EXPIRE", DAY, &["172800"]));
        let g = |o: &str| {
            MetricsCollection::build(&group("a", "analytics.metrics_collection", &[], o)).err()
        };
        assert!(g("").is_none());
        assert!(g("retain_days = 0").unwrap().contains("retain_days"));
        assert!(g("retain_days = 40000").unwrap().contains("retain_days"));
        assert!(g("retain_days = \"long\"").unwrap().contains("retain_days"));
        assert!(
            g("retention = 3")
                .unwrap()
                .contains("unknown option `retention`")
        );
        assert!(
            AuditTrail::build(&group("a", "analytics.audit_trail", &[], "x = 1"))
                .err()
                .unwrap()
                .contains("unknown option `x`")
        );
    }

    fn envelope_event() -> Event {
        Event {
            stream: "astra.trading.trade_executed.v1".into(),
            entry_id: "1-0".into(),
            env: Envelope {
                id: "0190a0b0-0000-7000-8000-000000000001".into(),
                event_type: "trading.trade_executed".into(),
                v: 1,
                cid: "c\"1\n".into(),
                caus: None,
                ts: 1_795_262_400_000,
                src: "héllo/x".into(),
                tp: Some("00-abc-def-01".into()),
                ct: ContentType::MsgPack,
                data: vec![0x81, 0xa1, b'a', 0x0f],
            },
        }
    }

    #[test]
    fn canonical_bytes_are_exact() {
        let mut ev = envelope_event();
        assert_eq!(
            String::from_utf8(canonical_bytes(&ev)).unwrap(),
            concat!(
                r#"{"stream":"astra.trading.trade_executed.v1","#,
                r#""id":"0190a0b0-0000-7000-8000-000000000001","#,
                r#""type":"trading.trade_executed","v":1,"cid":"c\"1\n","caus":null,"#,
                r#""ts":1795262400000,"src":"héllo/x","ct":"application/msgpack","#,
                r#""data":"81a1610f"}"#
            )
        );
        ev.env.caus = Some("p".into());
        ev.env.ct = ContentType::Json;
        ev.env.tp = None; // not part of the record
        let s = String::from_utf8(canonical_bytes(&ev)).unwrap();
        assert!(s.contains(r#""caus":"p","ts""#), "{s}");
        assert!(s.contains(r#""ct":"application/json""#), "{s}");
        // The record is valid JSON with the fields in that order.
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["data"], "81a1610f");
    }

    #[test]
    fn audit_appends_one_chain_op_per_event() {
        let h = AuditTrail::build(&group(
            "analytics.audit_trail",
            "analytics.audit_trail",
            &[],
            "",
        ))
        .unwrap();
        let ev = envelope_event();
        let Step::Done { ops, emit } = h.step(&ev, &[]).unwrap() else {
            panic!("expected Done")
        };
        assert!(emit.is_empty());
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].cmd(), "CHAINAPPEND");
        assert_eq!(ops[0].key(), "astra:analytics:{audit}:head");
        assert_eq!(
            ops[0].keys().collect::<Vec<_>>(),
            [
                "astra:analytics:{audit}:head",
                "astra:analytics:{audit}:log"
            ]
        );
        assert_eq!(ops[0].args(), [canonical_bytes(&ev)]);
        // Any payload, even one no other handler would accept, is recorded.
        let odd = json_event(streams::TRADE_EXECUTED, "not json");
        assert!(matches!(h.step(&odd, &[]).unwrap(), Step::Done { ops, .. } if ops.len() == 1));
    }

    /// A valid chain of `n` records.
    fn chain(n: usize) -> Vec<(String, String, Vec<u8>)> {
        let mut out = vec![];
        let mut prev = String::new();
        for i in 0..n {
            let record = format!("{{\"n\":{i}}}").into_bytes();
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update(prev.as_bytes());
            h.update(&record);
            let hash: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            out.push((prev.clone(), hash.clone(), record));
            prev = hash;
        }
        out
    }

    #[test]
    fn chain_hash_is_sha256_of_prev_hex_then_record() {
        // FIPS 180-2 test vector: SHA-256("abc").
        assert_eq!(
            chain_hash("", b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // "ab" ‖ "c" hashes the same bytes.
        assert_eq!(chain_hash("ab", b"c"), chain_hash("", b"abc"));
    }

    #[test]
    fn a_good_chain_verifies() {
        assert_eq!(verify_chain(chain(5)), Ok(5));
        assert_eq!(verify_chain(Vec::new()), Ok(0));
        let c = chain(5);
        let head = c[4].1.clone();
        assert_eq!(verify_chain_with_head(c, Some(&head)), Ok(5));
        assert_eq!(verify_chain_with_head(Vec::new(), None), Ok(0));
    }

    #[test]
    fn a_tampered_record_breaks_its_own_link() {
        let mut c = chain(5);
        c[2].2 = b"{\"n\":99}".to_vec();
        let err = verify_chain(c.clone()).unwrap_err();
        assert_eq!(err.index, 2);
        assert_eq!(err.field, ChainField::Hash);
        assert_eq!(err.found, c[2].1);
        assert_eq!(err.expected, chain_hash(&c[2].0, b"{\"n\":99}"));
        assert!(err.to_string().contains("record 2: hash"), "{err}");
    }

    #[test]
    fn a_tampered_hash_is_caught_there_or_at_the_next_link() {
        let good = chain(5);
        let mut c = good.clone();
        c[1].1 = "0".repeat(64);
        let err = verify_chain(c).unwrap_err();
        assert_eq!((err.index, err.field), (1, ChainField::Hash));
        assert_eq!(err.expected, good[1].1);
        assert_eq!(err.found, "0".repeat(64));
        // A forger who recomputes record 1's hash after editing it is caught by record 2.
        let mut c = good.clone();
        c[1].2 = b"forged".to_vec();
        c[1].1 = chain_hash(&c[1].0, b"forged");
        let err = verify_chain(c.clone()).unwrap_err();
        assert_eq!((err.index, err.field), (2, ChainField::Prev));
        assert_eq!(err.expected, c[1].1);
        assert_eq!(err.found, good[1].1);
        // Upper-case hex is not the canonical form.
        let mut c = good.clone();
        c[0].1 = c[0].1.to_uppercase();
        assert_eq!(verify_chain(c).unwrap_err().field, ChainField::Hash);
        // The first record must start from "".
        let mut c = good;
        c[0].0 = "x".into();
        let err = verify_chain(c).unwrap_err();
        assert_eq!(
            (err.index, err.field, err.expected.as_str()),
            (0, ChainField::Prev, "")
        );
    }

    #[test]
    fn a_deleted_record_breaks_the_next_link() {
        let good = chain(5);
        let mut c = good.clone();
        c.remove(2);
        let err = verify_chain(c).unwrap_err();
        assert_eq!(err.index, 2);
        assert_eq!(err.field, ChainField::Prev);
        assert_eq!(err.expected, good[1].1);
        assert_eq!(err.found, good[2].1);
        // Deleting the first record.
        let mut c = good.clone();
        c.remove(0);
        assert_eq!(verify_chain(c).unwrap_err().index, 0);
        // Deleting the last record is only visible against the head.
        let mut c = good.clone();
        c.pop();
        assert_eq!(verify_chain(c.clone()), Ok(4));
        let err = verify_chain_with_head(c, Some(&good[4].1)).unwrap_err();
        assert_eq!((err.index, err.field), (4, ChainField::Head));
        assert_eq!(err.expected, good[4].1);
        assert_eq!(err.found, good[3].1);
        // Swapping two records.
        let mut c = good;
        c.swap(1, 2);
        assert_eq!(verify_chain(c).unwrap_err().index, 1);
    }

    #[test]
    fn log_entries_decode_from_str_or_bin() {
        let (prev, hash) = ("", "ab".repeat(32));
        let record = b"{\"n\":0}".to_vec();
        // As Lua's cmsgpack writes it: three str.
        let strs = rmp_serde::to_vec(&(prev, &hash, "{\"n\":0}")).unwrap();
        assert_eq!(
            decode_log_entry(&strs),
            Ok((prev.to_string(), hash.clone(), record.clone()))
        );
        // Three bin.
        let bins = rmp_serde::to_vec(&(
            serde_bytes::Bytes::new(b""),
            serde_bytes::Bytes::new(hash.as_bytes()),
            serde_bytes::Bytes::new(&record),
        ))
        .unwrap();
        assert_eq!(bins[1], 0xc4, "bin 8 marker");
        assert_eq!(
            decode_log_entry(&bins),
            Ok((String::new(), hash.clone(), record.clone()))
        );
        // A record that is not UTF-8, in a str (Lua strings are bytes).
        let raw = [0x93, 0xa0, 0xa1, b'x', 0xa2, 0xff, 0xfe];
        assert_eq!(
            decode_log_entry(&raw),
            Ok((String::new(), "x".to_string(), vec![0xff, 0xfe]))
        );
        // Decoded entries feed the verifier.
        let entries: Vec<Vec<u8>> = chain(3)
            .into_iter()
            .map(|(p, h, r)| rmp_serde::to_vec(&(p, h, serde_bytes::ByteBuf::from(r))).unwrap())
            .collect();
        let decoded: Result<Vec<_>, _> = entries.iter().map(|e| decode_log_entry(e)).collect();
        assert_eq!(verify_chain(decoded.unwrap()), Ok(3));
    }

    #[test]
    fn malformed_log_entries_are_errors() {
        let two = rmp_serde::to_vec(&("a", "b")).unwrap();
        assert!(decode_log_entry(&two).unwrap_err().contains("2 elements"));
        let four = rmp_serde::to_vec(&("a", "b", "c", "d")).unwrap();
        assert!(decode_log_entry(&four).is_err());
        let int = rmp_serde::to_vec(&("a", 1, "c")).unwrap();
        assert!(decode_log_entry(&int).is_err());
        let mut trailing = rmp_serde::to_vec(&("a", "b", "c")).unwrap();
        trailing.push(0xc0);
        assert!(
            decode_log_entry(&trailing)
                .unwrap_err()
                .contains("trailing")
        );
        assert!(decode_log_entry(&[0xc1]).is_err());
        assert!(decode_log_entry(&[]).is_err());
        let bad_hash = [0x93, 0xa0, 0xc4, 0x01, 0xff, 0xa0];
        assert!(
            decode_log_entry(&bad_hash)
                .unwrap_err()
                .contains("hash_hex")
        );
    }
}
