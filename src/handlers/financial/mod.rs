//! financial domain handlers: revenue per UTC day and source (`financial.revenue_tracking`),
//! active subscribers and MRR (`financial.subscriptions`), large-trade and velocity flags
//! (`financial.compliance`).
//!
//! Money is integer cents throughout. Basis-point fees are computed on the integer-cent
//! base and rounded half up to a whole cent ([`bps_of`]): 10 bps of 5 cents (0.005 cent)
//! is 0 cents, 10 bps of 50 cents (0.05 cent) is 0, 10 bps of 500 cents (0.5 cent) is 1.
use crate::events::{SaleCompleted, SubscriptionChanged, usd_to_cents};
use crate::group::GroupConfig;
use crate::handler::BuildFn;
use crate::handler::HandlerError;
use crate::handlers::support::{non_empty, option, poison};

pub mod compliance;
pub mod revenue_tracking;
pub mod subscriptions;

pub use compliance::Compliance;
pub use revenue_tracking::RevenueTracking;
pub use subscriptions::Subscriptions;

/// The handlers of this domain, by name.
pub fn handlers() -> Vec<(&'static str, BuildFn)> {
    vec![
        ("financial.revenue_tracking", RevenueTracking::build),
        ("financial.subscriptions", Subscriptions::build),
        ("financial.compliance", Compliance::build),
    ]
}

// ---------------------------------------------------------------------------------------
// Key layouts (read by the HTTP edge and the metrics too)
// ---------------------------------------------------------------------------------------

/// Revenue of one UTC day, a hash: `astra:financial:revenue:<YYYY-MM-DD>`, fields
/// [`SOURCE_TRADE_FEE`], [`SOURCE_SUBSCRIPTION`], [`SOURCE_NFT_FEE`] (cents per source)
/// and [`REVENUE_TOTAL`] (cents, all sources: do not add it to the others). Expires
/// `retain_days` after its last write.
pub fn revenue_day_key(day: &str) -> String {
    format!("astra:financial:revenue:{day}")
}

/// Revenue source: trading fees.
pub const SOURCE_TRADE_FEE: &str = "trade_fee";
/// Revenue source: subscription payments (`started` and `renewed`).
pub const SOURCE_SUBSCRIPTION: &str = "subscription";
/// Revenue source: NFT marketplace fees.
pub const SOURCE_NFT_FEE: &str = "nft_fee";
/// Field of [`revenue_day_key`] holding the day's total over all sources, in cents.
pub const REVENUE_TOTAL: &str = "total";

/// Active subscribers, a set of user ids: `astra:financial:{subs}:active`. All
/// subscription keys share the hash tag `{subs}` so one round's ops on them stay atomic
/// in Redis Cluster.
pub fn subscribers_key() -> String {
    "astra:financial:{subs}:active".to_string()
}

/// Monthly recurring revenue in cents, a string (integer): `astra:financial:{subs}:mrr`.
/// Always equals the sum of [`subscription_price_key`]'s values once the in-flight events
/// have finished their second round.
pub fn mrr_key() -> String {
    "astra:financial:{subs}:mrr".to_string()
}

/// Monthly price in cents of each active subscriber's plan, a hash:
/// `astra:financial:{subs}:price`, field = user id (absent when not active).
pub fn subscription_price_key() -> String {
    "astra:financial:{subs}:price".to_string()
}

/// Plan name of each active subscriber, a hash: `astra:financial:{subs}:plan`, field =
/// user id (absent when not active).
pub fn subscription_plan_key() -> String {
    "astra:financial:{subs}:plan".to_string()
}

/// Compliance flags raised per user, a hash: `astra:financial:compliance:flags:<user>`,
/// fields `large_trade` and `velocity` = number of flags of that kind.
pub fn compliance_flags_key(user: &str) -> String {
    format!("astra:financial:compliance:flags:{user}")
}

/// Trade counter of one user in one fixed velocity window, a string (integer):
/// `astra:financial:compliance:velocity:<user>:<bucket>` where `bucket` =
/// [`velocity_bucket`] (`ts` div window length, windows aligned to the Unix epoch).
/// Expires one hour after its window ends.
pub fn velocity_key(user: &str, bucket: i64) -> String {
    format!("astra:financial:compliance:velocity:{user}:{bucket}")
}

/// Index of the fixed, epoch-aligned window of length `window_ms` holding `ts_ms`.
pub fn velocity_bucket(ts_ms: i64, window_ms: i64) -> i64 {
    ts_ms.div_euclid(window_ms)
}

/// Compliance flag reason: a single trade at or above `large_trade_usd`.
pub const FLAG_LARGE_TRADE: &str = "large_trade";
/// Compliance flag reason: `velocity_trades` trades in one velocity window.
pub const FLAG_VELOCITY: &str = "velocity";

/// `bps` basis points of `cents`, rounded half up to a whole cent (`cents` ≥ 0).
pub fn bps_of(cents: i64, bps: u32) -> i64 {
    ((cents as i128 * bps as i128 + 5_000) / 10_000) as i64
}

fn price_cents(field: &str, usd: f64) -> Result<i64, HandlerError> {
    usd_to_cents(usd).ok_or_else(|| {
        poison(format!(
            "field `{field}`: must be a finite number >= 0 (and <= 1e13), got {usd}"
        ))
    })
}

/// Checks a `subscription_changed` payload; its price in cents.
fn subscription(s: SubscriptionChanged) -> Result<(SubscriptionChanged, i64), HandlerError> {
    non_empty("user_id", &s.user_id)?;
    non_empty("plan", &s.plan)?;
    let cents = price_cents("price_usd", s.price_usd)?;
    Ok((s, cents))
}

/// Checks a `sale_completed` payload (the fields revenue uses); its price in cents.
fn sale(s: SaleCompleted) -> Result<(SaleCompleted, i64), HandlerError> {
    non_empty("sale_id", &s.sale_id)?;
    non_empty("seller_id", &s.seller_id)?;
    let cents = price_cents("price_usd", s.price_usd)?;
    Ok((s, cents))
}

fn bps_option(g: &GroupConfig, name: &str, default: u32) -> Result<u32, String> {
    let v: u32 = option(g, name, default)?;
    if v > 10_000 {
        return Err(format!("option `{name}`: at most 10000 (100%), got {v}"));
    }
    Ok(v)
}

/// Payloads the tests of this domain's handlers build.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::events::{
        SaleCompleted, Side, SubscriptionAction, SubscriptionChanged, TradeExecuted,
    };

    pub(crate) const T0: i64 = 1_795_262_400_000; // 2026-11-21T12:00:00Z

    pub(crate) fn trade(
        id: &str,
        quantity: f64,
        price_usd: f64,
        fee_usd: Option<f64>,
    ) -> TradeExecuted {
        TradeExecuted {
            trade_id: id.into(),
            user_id: "u1".into(),
            symbol: "ETH".into(),
            side: Side::Buy,
            quantity,
            price_usd,
            fee_usd,
        }
    }

    pub(crate) fn sub(action: SubscriptionAction, price_usd: f64) -> SubscriptionChanged {
        SubscriptionChanged {
            user_id: "u1".into(),
            plan: "pro".into(),
            action,
            price_usd,
        }
    }

    pub(crate) fn nft_sale(price_usd: f64) -> SaleCompleted {
        SaleCompleted {
            sale_id: "s1".into(),
            collection: "apes".into(),
            token_id: "7".into(),
            seller_id: "seller".into(),
            buyer_id: "buyer".into(),
            price_usd,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bps_rounds_half_up_on_cents() {
        assert_eq!(bps_of(500, 10), 1); // 0.5 cent → 1
        assert_eq!(bps_of(499, 10), 0); // 0.499 cent → 0
        assert_eq!(bps_of(1_500, 10), 2); // 1.5 → 2
        assert_eq!(bps_of(1_000_000, 250), 25_000);
        assert_eq!(bps_of(2, 2_500), 1); // 0.5 → 1
        assert_eq!(bps_of(0, 250), 0);
        assert_eq!(bps_of(1_000_000_000_000_000, 10_000), 1_000_000_000_000_000);
    }
}
