//! Typed payloads of every event in the shipped topology.
//!
//! The five outside inputs are a public contract written by other applications (JSON or
//! MessagePack, money in USD as numbers). Derived events are written by the handlers
//! (MessagePack, named fields) and read by other applications too; the README's event
//! catalog documents each. Readers tolerate fields they do not know (producers may add
//! optional fields within a version); a missing or mistyped field is poison. Money inside the daemon is integer cents ([`usd_to_cents`]);
//! sums are never taken over `f64`.

use serde::{Deserialize, Serialize};

pub mod compat;
pub mod custom;
pub mod schema;

/// Stream names of the shipped topology.
pub mod streams {
    pub const TRADE_EXECUTED: &str = "astra.trading.trade_executed.v1";
    pub const POSITION_UPDATED: &str = "astra.trading.position_updated.v1";
    pub const RISK_ALERT: &str = "astra.trading.risk_alert.v1";
    pub const XP_AWARDED: &str = "astra.gamification.xp_awarded.v1";
    pub const LEVEL_UP: &str = "astra.gamification.level_up.v1";
    pub const LEADERBOARD_UPDATED: &str = "astra.gamification.leaderboard_updated.v1";
    pub const ACHIEVEMENT_UNLOCKED: &str = "astra.gamification.achievement_unlocked.v1";
    pub const INTERACTION: &str = "astra.social.interaction.v1";
    pub const FEED_ITEM_POSTED: &str = "astra.social.feed_item_posted.v1";
    pub const CLAN_SCORE_UPDATED: &str = "astra.social.clan_score_updated.v1";
    pub const INFLUENCE_UPDATED: &str = "astra.social.influence_updated.v1";
    pub const SUBSCRIPTION_CHANGED: &str = "astra.financial.subscription_changed.v1";
    pub const REVENUE_RECORDED: &str = "astra.financial.revenue_recorded.v1";
    pub const COMPLIANCE_FLAGGED: &str = "astra.financial.compliance_flagged.v1";
    pub const SALE_COMPLETED: &str = "astra.nft.sale_completed.v1";
    pub const REWARD_ISSUED: &str = "astra.nft.reward_issued.v1";
    pub const REGISTERED: &str = "astra.user.registered.v1";
    pub const PROFILE_UPDATED: &str = "astra.user.profile_updated.v1";
    pub const NOTIFICATION_REQUESTED: &str = "astra.user.notification_requested.v1";
    pub const DEAD_LETTER: &str = "astra.bus.dead_letter.v1";

    /// Every stream whose payload this binary knows (a contract, a struct, or the
    /// dead-letter entry).
    pub const ALL: [&str; 20] = [
        TRADE_EXECUTED,
        POSITION_UPDATED,
        RISK_ALERT,
        XP_AWARDED,
        LEVEL_UP,
        LEADERBOARD_UPDATED,
        ACHIEVEMENT_UNLOCKED,
        INTERACTION,
        FEED_ITEM_POSTED,
        CLAN_SCORE_UPDATED,
        INFLUENCE_UPDATED,
        SUBSCRIPTION_CHANGED,
        REVENUE_RECORDED,
        COMPLIANCE_FLAGGED,
        SALE_COMPLETED,
        REWARD_ISSUED,
        REGISTERED,
        PROFILE_UPDATED,
        NOTIFICATION_REQUESTED,
        DEAD_LETTER,
    ];
}

/// USD (a JSON number) to integer cents, rounded half away from zero. Rejects NaN,
/// infinities, negatives and amounts beyond 10^13 USD.
pub fn usd_to_cents(usd: f64) -> Option<i64> {
    if !usd.is_finite() || !(0.0..=1e13).contains(&usd) {
        return None;
    }
    Some((usd * 100.0).round() as i64)
}

/// Integer cents to USD for display in derived payloads.
pub fn cents_to_usd(cents: i64) -> f64 {
    cents as f64 / 100.0
}

/// Notional of a trade in cents: `quantity × price_usd`, one product rounded once.
pub fn notional_cents(quantity: f64, price_usd: f64) -> Option<i64> {
    if !quantity.is_finite() || quantity <= 0.0 {
        return None;
    }
    usd_to_cents(quantity * price_usd)
}

/// Checks a JSON payload against the schema of `stream` (known streams only; any JSON
/// object is accepted on streams this binary has no schema for). The five public inputs
/// are checked against their bounds ([`schema`], unknown fields tolerated as consumers
/// tolerate them); derived payloads against their types. The error names the field and
/// the reason. Cost is linear in the payload.
pub fn validate_json(stream: &str, v: &serde_json::Value) -> Result<(), String> {
    fn check<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<(), String> {
        T::deserialize(v)
            .map(|_| ())
            .map_err(|e| locate::<T>(v, e.to_string()))
    }
    // serde's type errors do not name the field ("invalid type: string, expected f64").
    // Find it: the field whose removal makes the error go away, or turn into "missing
    // field `that one`", is the culprit. Derived payloads have a handful of fields; on a
    // larger object this would cost (keys x size), so it is not attempted there.
    fn locate<T: serde::de::DeserializeOwned>(v: &serde_json::Value, msg: String) -> String {
        if msg.starts_with("missing field") || msg.starts_with("unknown field") {
            return msg;
        }
        let Some(obj) = v.as_object().filter(|o| o.len() <= 32) else {
            return msg;
        };
        for k in obj.keys() {
            let mut o = obj.clone();
            o.remove(k);
            match T::deserialize(&serde_json::Value::Object(o)) {
                Ok(_) => return format!("{k}: {msg}"),
                Err(e) if e.to_string() == format!("missing field `{k}`") => {
                    return format!("{k}: {msg}");
                }
                Err(_) => {}
            }
        }
        msg
    }
    if !v.is_object() {
        return Err("payload must be a JSON object".into());
    }
    if let Some(p) = schema::payload(stream) {
        return p.check_lenient(v).map_err(|e| e.to_string());
    }
    use streams::*;
    match stream {
        POSITION_UPDATED => check::<PositionUpdated>(v),
        RISK_ALERT => check::<RiskAlert>(v),
        XP_AWARDED => check::<XpAwarded>(v),
        LEVEL_UP => check::<LevelUp>(v),
        LEADERBOARD_UPDATED => check::<LeaderboardUpdated>(v),
        ACHIEVEMENT_UNLOCKED => check::<AchievementUnlocked>(v),
        FEED_ITEM_POSTED => check::<FeedItemPosted>(v),
        CLAN_SCORE_UPDATED => check::<ClanScoreUpdated>(v),
        INFLUENCE_UPDATED => check::<InfluenceUpdated>(v),
        REVENUE_RECORDED => check::<RevenueRecorded>(v),
        COMPLIANCE_FLAGGED => check::<ComplianceFlagged>(v),
        REWARD_ISSUED => check::<RewardIssued>(v),
        PROFILE_UPDATED => check::<ProfileUpdated>(v),
        NOTIFICATION_REQUESTED => check::<NotificationRequested>(v),
        _ => Ok(()),
    }
}

/// Checks a consumed entry's payload against its public contract (the five inputs): what
/// a producer wrote straight into Redis (bypassing the edge) must fit the same bounds, or
/// the event is poison. `Ok` for every other stream.
pub fn check_consumed(
    stream: &str,
    data: impl FnOnce() -> Result<serde_json::Value, String>,
) -> Result<(), String> {
    let Some(p) = schema::payload(stream) else {
        return Ok(());
    };
    let v = data()?;
    p.check_consumed(&v).map_err(|e| breaks_contract(stream, e))
}

/// Checks what a remote handler's service will receive: every field the stream's contract
/// knows must fit it, required ones present (others are passed through), since a service
/// in another language decodes without the built-in handlers' typed structs. Streams
/// without a built-in contract pass.
pub fn check_for_service(
    stream: &str,
    data: impl FnOnce() -> Result<serde_json::Value, String>,
) -> Result<(), String> {
    let Some(p) = schema::payload(stream) else {
        return Ok(());
    };
    let v = data()?;
    p.check_lenient(&v).map_err(|e| breaks_contract(stream, e))
}

/// A contract problem as consumers word it: the field, what is wrong, whose contract.
fn breaks_contract(stream: &str, e: schema::Problem) -> String {
    match e.field {
        Some(f) => format!("field `{f}`: {} (the contract of {stream})", e.message),
        None => format!("{} (the contract of {stream})", e.message),
    }
}

// ---------------------------------------------------------------------------------------
// Outside inputs (public contract)
// ---------------------------------------------------------------------------------------

/// Buy or sell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

/// `astra.trading.trade_executed.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TradeExecuted {
    pub trade_id: String,
    pub user_id: String,
    pub symbol: String,
    pub side: Side,
    pub quantity: f64,
    pub price_usd: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_usd: Option<f64>,
}

/// Kind of social interaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InteractionKind {
    Like,
    Comment,
    Share,
    Follow,
}

impl InteractionKind {
    /// Lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            InteractionKind::Like => "like",
            InteractionKind::Comment => "comment",
            InteractionKind::Share => "share",
            InteractionKind::Follow => "follow",
        }
    }
}

/// `astra.social.interaction.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interaction {
    /// Actor.
    pub user_id: String,
    pub target_user_id: String,
    pub kind: InteractionKind,
}

/// `astra.user.registered.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: String,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clan: Option<String>,
}

/// What happened to a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionAction {
    Started,
    Renewed,
    Cancelled,
}

/// `astra.financial.subscription_changed.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionChanged {
    pub user_id: String,
    pub plan: String,
    pub action: SubscriptionAction,
    pub price_usd: f64,
}

/// `astra.nft.sale_completed.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaleCompleted {
    pub sale_id: String,
    pub collection: String,
    pub token_id: String,
    pub seller_id: String,
    pub buyer_id: String,
    pub price_usd: f64,
}

// ---------------------------------------------------------------------------------------
// Derived events
// ---------------------------------------------------------------------------------------

/// `astra.trading.position_updated.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionUpdated {
    pub user_id: String,
    pub symbol: String,
    /// Net position after the trade (buys minus sells), in units of the symbol.
    pub net_quantity: f64,
    /// The user's total trade count after this trade.
    pub trade_count: i64,
    /// The user's total traded notional after this trade, in cents.
    pub volume_cents: i64,
}

/// `astra.trading.risk_alert.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskAlert {
    pub user_id: String,
    /// Gross exposure over the window, in cents, when the limit was crossed.
    pub exposure_cents: i64,
    pub limit_cents: i64,
    pub window_secs: u64,
    /// The trade that crossed the limit.
    pub trade_id: String,
}

/// `astra.gamification.xp_awarded.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XpAwarded {
    pub user_id: String,
    /// XP added by this event.
    pub amount: i64,
    /// The user's XP total after this award.
    pub total: i64,
    /// The user's level after this award.
    pub level: u32,
    /// `trade`, `like`, `comment`, `share` or `follow`.
    pub reason: String,
}

/// `astra.gamification.level_up.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelUp {
    pub user_id: String,
    pub from: u32,
    pub to: u32,
    pub total_xp: i64,
}

/// `astra.gamification.leaderboard_updated.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderboardUpdated {
    /// `daily`, `weekly` or `all_time`.
    pub board: String,
    /// `2026-11-21`, `2026-W47` or `all`.
    pub period: String,
    pub user_id: String,
    /// 1-based rank after the update.
    pub rank: u32,
    /// 1-based rank before (None: was not in the top N).
    pub previous_rank: Option<u32>,
    pub score: i64,
}

/// `astra.gamification.achievement_unlocked.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AchievementUnlocked {
    pub user_id: String,
    /// `first_trade`, `trades_10`, `trades_100`, `volume_100k`, `level_5`, `level_10`, `xp_10k`.
    pub achievement: String,
}

/// `astra.social.feed_item_posted.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedItemPosted {
    pub user_id: String,
    /// `achievement`, `level_up` or `large_trade`.
    pub kind: String,
    /// Human-readable line.
    pub text: String,
    /// Id of the event the item is about.
    pub source_event_id: String,
}

/// `astra.social.clan_score_updated.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClanScoreUpdated {
    pub clan: String,
    /// ISO week, `2026-W47`.
    pub week: String,
    /// Weekly score after the update.
    pub score: i64,
    pub delta: i64,
    /// Member whose XP moved the score.
    pub user_id: String,
}

/// `astra.social.influence_updated.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfluenceUpdated {
    /// User whose influence changed (the interaction's target).
    pub user_id: String,
    pub score: i64,
    pub delta: i64,
    pub from_user_id: String,
    pub kind: String,
}

/// `astra.financial.revenue_recorded.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevenueRecorded {
    /// `trade_fee`, `subscription` or `nft_fee`.
    pub source: String,
    /// Amount in USD (display; exact value is `amount_cents`).
    pub amount_usd: f64,
    pub amount_cents: i64,
    pub user_id: String,
    /// UTC day the revenue is booked on.
    pub day: String,
}

/// `astra.financial.compliance_flagged.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComplianceFlagged {
    pub user_id: String,
    /// `large_trade` or `velocity`.
    pub reason: String,
    pub trade_id: String,
    pub notional_cents: i64,
    /// Trades by the user in the velocity window (velocity flags).
    pub trades_in_window: Option<i64>,
}

/// `astra.nft.reward_issued.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewardIssued {
    pub user_id: String,
    /// `bronze_badge`, `silver_badge`, `gold_badge`, or `<achievement>_badge`.
    pub reward: String,
    /// What earned it: `level_5`, an achievement name, …
    pub reason: String,
}

/// `astra.user.profile_updated.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileUpdated {
    pub user_id: String,
    pub display_name: Option<String>,
    pub clan: Option<String>,
    pub xp: i64,
    pub level: u32,
    pub achievements: i64,
    pub trades: i64,
}

/// `astra.user.notification_requested.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRequested {
    pub user_id: String,
    /// `achievement_unlocked`, `reward_issued` or `level_up`.
    pub template: String,
    pub params: std::collections::BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_cents() {
        assert_eq!(usd_to_cents(0.1 + 0.2), Some(30));
        assert_eq!(usd_to_cents(19.999), Some(2000));
        assert_eq!(usd_to_cents(-1.0), None);
        assert_eq!(usd_to_cents(f64::NAN), None);
        assert_eq!(notional_cents(0.5, 101.01), Some(5051));
        assert_eq!(notional_cents(0.0, 1.0), None);
    }

    #[test]
    fn inputs_tolerate_new_fields_but_not_missing_or_mistyped_ones() {
        // Readers are tolerant of additions (producers may add optional fields in v1).
        let extra = r#"{"trade_id":"t","user_id":"u","symbol":"BTC","side":"buy","quantity":1,"price_usd":1,"extra":1}"#;
        assert!(serde_json::from_str::<TradeExecuted>(extra).is_ok());
        let missing = r#"{"trade_id":"t","symbol":"BTC","side":"buy","quantity":1,"price_usd":1}"#;
        let e = serde_json::from_str::<TradeExecuted>(missing).unwrap_err();
        assert!(e.to_string().contains("user_id"));
        let side = r#"{"trade_id":"t","user_id":"u","symbol":"BTC","side":"hold","quantity":1,"price_usd":1}"#;
        assert!(serde_json::from_str::<TradeExecuted>(side).is_err());
    }
}
