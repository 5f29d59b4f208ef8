//! trading domain handlers: per-user trade statistics and net positions
//! (`trading.internal_processing`), and rolling exposure limits (`trading.risk_management`).
//!
//! Both read `astra.trading.trade_executed.v1`. [`validate_trade`] is the one place that
//! turns that public payload into checked integer amounts (the financial handlers use it
//! too), so every consumer of the stream rejects the same inputs with the same reasons.

use serde::{Deserialize, Serialize};

use crate::events::{TradeExecuted, notional_cents, usd_to_cents};
use crate::handler::BuildFn;
use crate::handler::{Event, HandlerError};
use crate::handlers::support::{non_empty, poison};
use crate::handlers::typed::Input;

pub mod internal_processing;
pub mod risk_management;

pub use internal_processing::InternalProcessing;
pub use risk_management::RiskManagement;

/// The handlers of this domain, by name.
pub fn handlers() -> Vec<(&'static str, BuildFn)> {
    vec![
        ("trading.internal_processing", InternalProcessing::build),
        ("trading.risk_management", RiskManagement::build),
    ]
}

// ---------------------------------------------------------------------------------------
// Key layouts (read by the HTTP edge and the metrics too)
// ---------------------------------------------------------------------------------------

/// Per-user trading statistics, a hash: `astra:trading:stats:<user>` with fields
/// [`STATS_TRADES`] (trade count) and [`STATS_VOLUME_CENTS`] (traded notional, cents).
pub fn stats_key(user: &str) -> String {
    format!("astra:trading:stats:{user}")
}

/// Field of [`stats_key`]: number of trades the user executed.
pub const STATS_TRADES: &str = "trades";
/// Field of [`stats_key`]: total traded notional (`quantity × price_usd`) in cents.
pub const STATS_VOLUME_CENTS: &str = "volume_cents";

/// Net position per symbol of one user, a hash: `astra:trading:positions:<user>`, field
/// = symbol, value = net quantity (buys minus sells) in integer units of 10^-8
/// ([`UNITS_PER_QUANTITY`]). A position that returns to zero keeps its field (value `0`).
pub fn positions_key(user: &str) -> String {
    format!("astra:trading:positions:{user}")
}

/// The user's most recent trade by occurred-at time, a sorted set holding exactly one
/// member: `astra:trading:last_trade:<user>`, score = the trade's `ts` (Unix ms), member =
/// JSON `{"trade_id":…,"symbol":…}`. Decode with [`decode_last_trade`].
pub fn last_trade_key(user: &str) -> String {
    format!("astra:trading:last_trade:{user}")
}

/// Rolling exposure window of one user, a sorted set: `astra:trading:exposure:<user>`,
/// score = trade `ts` (Unix ms), member = `<notional cents>:<trade_id>` (see
/// [`exposure_member`]). Holds the trades of (about) the last `window`.
pub fn exposure_key(user: &str) -> String {
    format!("astra:trading:exposure:{user}")
}

/// The running sum (cents) of the notionals in [`exposure_key`] of one user:
/// `astra:trading:exposure_sum:<user>`, a string moved by INCRBY only.
pub fn exposure_sum_key(user: &str) -> String {
    format!("astra:trading:exposure_sum:{user}")
}

/// Member of [`exposure_key`] for one trade: `<notional cents>:<trade_id>`.
pub fn exposure_member(notional_cents: i64, trade_id: &str) -> String {
    format!("{notional_cents}:{trade_id}")
}

/// Quantities are kept as integers of this many units per 1.0 of the symbol (10^-8 units).
pub const UNITS_PER_QUANTITY: f64 = 100_000_000.0;

/// The user's last trade, as kept in [`last_trade_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastTrade {
    pub trade_id: String,
    pub symbol: String,
    /// Occurred-at of the trade (Unix ms); the member's score, not part of the member.
    #[serde(skip)]
    pub ts: i64,
}

/// Member of [`last_trade_key`] for a trade.
pub fn last_trade_member(trade_id: &str, symbol: &str) -> String {
    let t = LastTrade {
        trade_id: trade_id.to_string(),
        symbol: symbol.to_string(),
        ts: 0,
    };
    serde_json::to_string(&t).expect("two strings serialise")
}

/// Decodes a member and score of [`last_trade_key`] (e.g. from `ZRANGE … WITHSCORES`).
pub fn decode_last_trade(member: &str, score: f64) -> Option<LastTrade> {
    let mut t: LastTrade = serde_json::from_str(member).ok()?;
    t.ts = score as i64;
    Some(t)
}

// ---------------------------------------------------------------------------------------
// Trade validation (shared with the financial handlers)
// ---------------------------------------------------------------------------------------

/// A `trade_executed` payload whose values were checked, with its amounts as integers.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidTrade {
    /// The payload as published.
    pub trade: TradeExecuted,
    /// `quantity × price_usd` in cents (one product, rounded half away from zero once).
    pub notional_cents: i64,
    /// `quantity` in 10^-8 units, rounded to the nearest unit (always > 0).
    pub units: i64,
    /// `fee_usd` in cents when the producer sent one.
    pub fee_cents: Option<i64>,
}

/// What the trade handlers read: a trade from `astra.trading.trade_executed.v1`, decoded
/// and [`validate_trade`]d (so an invalid one is poison naming the field, before the
/// handler runs).
impl Input for ValidTrade {
    const STREAMS: &'static [&'static str] = TradeExecuted::STREAMS;

    fn decode(ev: &Event) -> Option<Result<Self, HandlerError>> {
        TradeExecuted::decode(ev).map(|t| t.and_then(validate_trade))
    }
}

/// Checks a decoded `astra.trading.trade_executed.v1` payload. Poison (with the field
/// named) when: `trade_id`, `user_id` or `symbol` is empty;
/// `quantity` is not a finite number > 0 or is finer than 10^-8 or above 9×10^10;
/// `price_usd` is not a finite number ≥ 0; `fee_usd` is present but not a finite number
/// ≥ 0; or the notional exceeds 10^13 USD.
pub fn validate_trade(t: TradeExecuted) -> Result<ValidTrade, HandlerError> {
    non_empty("trade_id", &t.trade_id)?;
    non_empty("user_id", &t.user_id)?;
    non_empty("symbol", &t.symbol)?;
    let q = t.quantity;
    if !q.is_finite() || q <= 0.0 {
        return Err(poison(format!(
            "field `quantity`: must be a finite number > 0, got {q}"
        )));
    }
    if q > 9e10 {
        return Err(poison(format!(
            "field `quantity`: must be at most 9e10, got {q}"
        )));
    }
    let units = (q * UNITS_PER_QUANTITY).round() as i64;
    if units == 0 {
        return Err(poison(format!(
            "field `quantity`: below the 1e-8 precision positions are kept in, got {q}"
        )));
    }
    let p = t.price_usd;
    if !p.is_finite() || p < 0.0 {
        return Err(poison(format!(
            "field `price_usd`: must be a finite number >= 0, got {p}"
        )));
    }
    let notional = notional_cents(q, p).ok_or_else(|| {
        poison(format!(
            "field `price_usd`: notional quantity × price_usd = {} exceeds 1e13 USD",
            q * p
        ))
    })?;
    let fee_cents = match t.fee_usd {
        None => None,
        Some(f) => Some(usd_to_cents(f).ok_or_else(|| {
            poison(format!(
                "field `fee_usd`: must be a finite number >= 0 (and <= 1e13), got {f}"
            ))
        })?),
    };
    Ok(ValidTrade {
        trade: t,
        notional_cents: notional,
        units,
        fee_cents,
    })
}

/// Trades and handlers the tests of this domain build.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::sync::Arc;

    use super::{InternalProcessing, RiskManagement};
    use crate::events::{Side, TradeExecuted, streams};
    use crate::handler::Handler;
    use crate::handlers::testing::group;

    pub(crate) const T0: i64 = 1_795_262_400_000;
    pub(crate) const HOUR: i64 = 3_600_000;

    pub(crate) fn trade(id: &str, side: Side, quantity: f64, price_usd: f64) -> TradeExecuted {
        TradeExecuted {
            trade_id: id.into(),
            user_id: "u1".into(),
            symbol: "BTC".into(),
            side,
            quantity,
            price_usd,
            fee_usd: None,
        }
    }

    pub(crate) fn internal() -> Arc<dyn Handler> {
        InternalProcessing::build(&group(
            "trading.internal_processing",
            "trading.internal_processing",
            &[streams::POSITION_UPDATED],
            "",
        ))
        .unwrap()
    }

    pub(crate) fn risk(options: &str) -> Result<Arc<dyn Handler>, String> {
        RiskManagement::build(&group(
            "trading.risk_management",
            "trading.risk_management",
            &[streams::RISK_ALERT],
            options,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Side;
    use crate::events::streams;
    use crate::handlers::testing::json_event;
    use fixtures::trade;

    // ----- validation -----

    #[test]
    fn validation_converts_amounts_to_integers() {
        let mut t = trade("t1", Side::Buy, 0.5, 101.01);
        t.fee_usd = Some(0.125);
        let v = validate_trade(t).unwrap();
        assert_eq!(v.notional_cents, 5051);
        assert_eq!(v.units, 50_000_000);
        assert_eq!(v.fee_cents, Some(13));
        let v = validate_trade(trade("t", Side::Sell, 1e-8, 1.0)).unwrap();
        assert_eq!(v.units, 1);
        assert_eq!(v.fee_cents, None);
    }

    #[test]
    fn json_trades_from_foreign_publishers_are_accepted() {
        let e = json_event(
            streams::TRADE_EXECUTED,
            r#"{"trade_id":"t9","user_id":"u1","symbol":"ETH","side":"sell","quantity":2,"price_usd":1500.5,"fee_usd":3}"#,
        );
        let v = validate_trade(e.payload().unwrap()).unwrap();
        assert_eq!(v.notional_cents, 300_100);
        assert_eq!(v.units, 200_000_000);
        assert_eq!(v.fee_cents, Some(300));
        assert_eq!(v.trade.side, Side::Sell);
    }
}
