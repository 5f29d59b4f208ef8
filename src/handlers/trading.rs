//! trading domain handlers: per-user trade statistics and net positions
//! (`trading.internal_processing`), and rolling exposure limits (`trading.risk_management`).
//!
//! Both read `astra.trading.trade_executed.v1`. [`validate_trade`] is the one place that
//! turns that public payload into checked integer amounts (the financial handlers use it
//! too), so every consumer of the stream rejects the same inputs with the same reasons.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    Constructor, Emit, Event, Handler, HandlerError, Op, Reply, Step, deny_unknown_options,
    non_empty, option, poison,
};
use crate::events::{
    PositionUpdated, RiskAlert, Side, TradeExecuted, notional_cents, streams, usd_to_cents,
};
use crate::group::GroupConfig;

/// The handlers of this domain, by name.
pub fn handlers() -> Vec<(&'static str, Constructor)> {
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

/// Decodes and checks a `astra.trading.trade_executed.v1` event. Poison (with the field
/// named) when: the stream is another one; `trade_id`, `user_id` or `symbol` is empty;
/// `quantity` is not a finite number > 0 or is finer than 10^-8 or above 9×10^10;
/// `price_usd` is not a finite number ≥ 0; `fee_usd` is present but not a finite number
/// ≥ 0; or the notional exceeds 10^13 USD.
pub fn validate_trade(ev: &Event) -> Result<ValidTrade, HandlerError> {
    if ev.stream != streams::TRADE_EXECUTED {
        return Err(unexpected_stream(ev, &[streams::TRADE_EXECUTED]));
    }
    let t: TradeExecuted = ev.payload()?;
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

// ---------------------------------------------------------------------------------------
// Small helpers shared with `financial.rs` (candidates for `handlers/mod.rs`)
// ---------------------------------------------------------------------------------------

/// Poison for an event on a stream the group does not read.
pub(super) fn unexpected_stream(ev: &Event, expected: &[&str]) -> HandlerError {
    poison(format!(
        "unexpected stream {} (this group reads {})",
        ev.stream,
        expected.join(", ")
    ))
}

/// The replies of round `i`, or a poison error naming what is missing (a runtime bug).
pub(super) fn round(rounds: &[Vec<Reply>], i: usize, len: usize) -> Result<&[Reply], HandlerError> {
    match rounds.get(i) {
        Some(r) if r.len() == len => Ok(r),
        Some(r) => Err(poison(format!(
            "round {i}: expected {len} replies, got {}",
            r.len()
        ))),
        None => Err(poison(format!("round {i}: replies missing"))),
    }
}

/// An integer reply, or poison naming the op (a reply of the wrong shape is a bug).
pub(super) fn int_reply(r: &Reply, what: &str) -> Result<i64, HandlerError> {
    r.as_int()
        .ok_or_else(|| poison(format!("unexpected reply to {what}: {r:?}")))
}

/// Constructor check: the group must be allowed to publish `stream`.
pub(super) fn require_publishes(g: &GroupConfig, stream: &str) -> Result<(), String> {
    if g.publishes.iter().any(|s| s == stream) {
        Ok(())
    } else {
        Err(format!(
            "group must publish to `{stream}` (add it to `publishes`)"
        ))
    }
}

/// A humantime duration option (e.g. `"1h"`), 1ms to 366 days.
pub(super) fn duration_option(
    g: &GroupConfig,
    name: &str,
    default: &str,
) -> Result<Duration, String> {
    let s: String = option(g, name, default.to_string())?;
    let d =
        humantime::parse_duration(&s).map_err(|e| format!("option `{name}`: {e} (got {s:?})"))?;
    if d < Duration::from_millis(1) {
        return Err(format!("option `{name}`: must be at least 1ms, got {s:?}"));
    }
    if d > Duration::from_secs(366 * 86_400) {
        return Err(format!(
            "option `{name}`: must be at most 366 days, got {s:?}"
        ));
    }
    Ok(d)
}

// ---------------------------------------------------------------------------------------
// trading.internal_processing
// ---------------------------------------------------------------------------------------

/// `trading.internal_processing`: per-user trade statistics and net positions.
///
/// Reads `astra.trading.trade_executed.v1`. For every trade, in one atomic round:
///
/// - [`stats_key`]`(user)` (hash): `HINCRBY trades 1`, `HINCRBY volume_cents <notional>`
///   where notional = `quantity × price_usd` in cents;
/// - [`positions_key`]`(user)` (hash): `HINCRBY <symbol> ±units`: a buy adds the quantity,
///   a sell subtracts it, as an integer of 10^-8 units (so sums are exact);
/// - [`last_trade_key`]`(user)` (sorted set): `ZADD <ts> {"trade_id","symbol"}` then
///   `ZREMRANGEBYRANK 0 -2`, so it keeps exactly the trade with the greatest `ts`, whatever
///   order concurrent consumers apply trades in (ties broken by member).
///
/// Then it emits `astra.trading.position_updated.v1` ([`PositionUpdated`]) with the new net
/// position (`net_quantity` = units / 10^8), `trade_count` and `volume_cents`, all three
/// taken from the `HINCRBY` replies of that round (never from a separate read).
///
/// Options: none. Poison: see [`validate_trade`].
pub struct InternalProcessing;

impl InternalProcessing {
    /// Builds from the group config (no options; must publish `position_updated`).
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(g, &[])?;
        require_publishes(g, streams::POSITION_UPDATED)?;
        Ok(Arc::new(InternalProcessing))
    }
}

impl Handler for InternalProcessing {
    fn step(&self, ev: &Event, rounds: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        let v = validate_trade(ev)?;
        let t = &v.trade;
        let signed_units = match t.side {
            Side::Buy => v.units,
            Side::Sell => -v.units,
        };
        if rounds.is_empty() {
            let stats = stats_key(&t.user_id);
            let last = last_trade_key(&t.user_id);
            return Ok(Step::More(vec![
                Op::hincrby(&stats, STATS_TRADES, 1),
                Op::hincrby(&stats, STATS_VOLUME_CENTS, v.notional_cents),
                Op::hincrby(positions_key(&t.user_id), &t.symbol, signed_units),
                Op::zadd(&last, ev.env.ts, last_trade_member(&t.trade_id, &t.symbol)),
                Op::new(
                    "ZREMRANGEBYRANK",
                    &last,
                    vec![b"0".to_vec(), b"-2".to_vec()],
                ),
            ]));
        }
        let r = round(rounds, 0, 5)?;
        let trade_count = int_reply(&r[0], "HINCRBY trades")?;
        let volume_cents = int_reply(&r[1], "HINCRBY volume_cents")?;
        let net_units = int_reply(&r[2], "HINCRBY position")?;
        let payload = PositionUpdated {
            user_id: t.user_id.clone(),
            symbol: t.symbol.clone(),
            net_quantity: net_units as f64 / UNITS_PER_QUANTITY,
            trade_count,
            volume_cents,
        };
        Ok(Step::Done {
            ops: vec![],
            emit: vec![Emit::new(streams::POSITION_UPDATED, &payload)],
        })
    }
}

// ---------------------------------------------------------------------------------------
// trading.risk_management
// ---------------------------------------------------------------------------------------

/// `trading.risk_management`: rolling per-user gross exposure with a limit.
///
/// Reads `astra.trading.trade_executed.v1`. Exposure = the sum of the notionals (cents) of
/// the user's trades whose `ts` lies in the window `(T − window, T]`, where `T` is the
/// newest trade `ts` of the user seen so far (for trades that arrive in order, `T` is this
/// trade's own `ts`: "the last `window` up to and including this trade").
///
/// One atomic round on [`exposure_key`]`(user)` (sorted set scored by `ts`, member
/// `<cents>:<trade_id>`): `ZADD ts member`; `ZREMRANGEBYSCORE -inf (ts − window)` (prunes
/// trades that no window from this `ts` on can contain); `ZRANGEBYSCORE (ts − window) +inf
/// WITHSCORES` (everything that can still count); `EXPIRE window + 1 day` (an idle user's
/// window disappears). From that one snapshot the handler computes `T` (the greatest
/// score), the exposure after this trade, and the exposure just before it (the same sum
/// without this trade's notional; a trade already in the set, `ZADD` reply 0, adds
/// nothing; a late trade older than `T − window` adds nothing either).
///
/// Alert rule: emit `astra.trading.risk_alert.v1` ([`RiskAlert`]) iff
/// `before ≤ limit < after`. So the alert fires once per crossing: a user who stays above
/// the limit gets none (their "before" is already above); once old trades have left the
/// window and the exposure is back at or below the limit, the next trade that pushes it
/// above alerts again. Because the whole decision comes from one atomic snapshot that
/// includes this trade, two consumers handling two trades of one user concurrently are
/// linearised by Redis: the second one's "before" already contains the first trade, so
/// they cannot both report the same crossing. A late (out-of-order) trade is judged
/// against the user's current window ending at `T`, so it can neither re-alert a user who
/// is already above nor alert about a moment that has already passed.
///
/// Options: `limit_usd` (integer USD, default 100000; alert when exposure is strictly
/// above), `window` (humantime, default `"1h"`, 1ms to 366 days).
/// Poison: see [`validate_trade`].
pub struct RiskManagement {
    limit_cents: i64,
    window_ms: i64,
    window_secs: u64,
    ttl_secs: i64,
}

impl RiskManagement {
    /// Builds from the group config; options `limit_usd`, `window`.
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(g, &["limit_usd", "window"])?;
        require_publishes(g, streams::RISK_ALERT)?;
        let limit_usd: u64 = option(g, "limit_usd", 100_000u64)?;
        let limit_cents = limit_usd
            .checked_mul(100)
            .and_then(|c| i64::try_from(c).ok())
            .filter(|c| *c <= 1_000_000_000_000_000)
            .ok_or_else(|| format!("option `limit_usd`: at most 1e13, got {limit_usd}"))?;
        let window = duration_option(g, "window", "1h")?;
        let window_ms = window.as_millis() as i64;
        Ok(Arc::new(RiskManagement {
            limit_cents,
            window_ms,
            window_secs: window.as_secs(),
            ttl_secs: window.as_secs() as i64 + 1 + 86_400,
        }))
    }
}

impl Handler for RiskManagement {
    fn step(&self, ev: &Event, rounds: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        let v = validate_trade(ev)?;
        let t = &v.trade;
        let ts = ev.env.ts;
        let key = exposure_key(&t.user_id);
        let member = exposure_member(v.notional_cents, &t.trade_id);
        let cutoff = ts.saturating_sub(self.window_ms);
        if rounds.is_empty() {
            return Ok(Step::More(vec![
                Op::zadd(&key, ts, &member),
                Op::zremrangebyscore(&key, "-inf", cutoff),
                Op::new(
                    "ZRANGEBYSCORE",
                    &key,
                    vec![
                        format!("({cutoff}").into_bytes(),
                        b"+inf".to_vec(),
                        b"WITHSCORES".to_vec(),
                    ],
                ),
                Op::expire(&key, self.ttl_secs),
            ]));
        }
        let r = round(rounds, 0, 4)?;
        let added = int_reply(&r[0], "ZADD")? == 1;
        let entries = parse_window(&r[2], &key)?;
        // Newest ts of the user; our own trade is in the snapshot, so T ≥ ts.
        let newest = entries.iter().map(|(s, _)| *s).max().unwrap_or(ts).max(ts);
        let start = newest.saturating_sub(self.window_ms);
        let after: i64 = entries
            .iter()
            .filter(|(s, _)| *s > start)
            .fold(0i64, |acc, (_, c)| acc.saturating_add(*c));
        let own = if added && ts > start {
            v.notional_cents
        } else {
            0
        };
        let before = after - own;
        let mut emit = vec![];
        if before <= self.limit_cents && after > self.limit_cents {
            emit.push(Emit::new(
                streams::RISK_ALERT,
                &RiskAlert {
                    user_id: t.user_id.clone(),
                    exposure_cents: after,
                    limit_cents: self.limit_cents,
                    window_secs: self.window_secs,
                    trade_id: t.trade_id.clone(),
                },
            ));
        }
        Ok(Step::Done { ops: vec![], emit })
    }
}

/// `ZRANGEBYSCORE … WITHSCORES` reply → `(ts, cents)` per member.
fn parse_window(reply: &Reply, key: &str) -> Result<Vec<(i64, i64)>, HandlerError> {
    let Reply::Array(items) = reply else {
        return Err(poison(format!(
            "unexpected reply to ZRANGEBYSCORE {key}: {reply:?}"
        )));
    };
    if items.len() % 2 != 0 {
        return Err(poison(format!(
            "unexpected reply to ZRANGEBYSCORE {key}: odd length {}",
            items.len()
        )));
    }
    items
        .chunks(2)
        .map(|pair| {
            let member = pair[0].as_str().unwrap_or("");
            let cents = member
                .split_once(':')
                .and_then(|(c, _)| c.parse::<i64>().ok())
                .ok_or_else(|| poison(format!("malformed member {member:?} in {key}")))?;
            let score = pair[1]
                .as_f64()
                .ok_or_else(|| poison(format!("malformed score {:?} in {key}", pair[1])))?;
            Ok((score as i64, cents))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::SubscriptionChanged;
    use crate::handlers::testing::{args, done, more, poison_of};
    use crate::handlers::testing::{decode, event, event_at, group, int, json_event, text};

    const T0: i64 = 1_795_262_400_000;
    const HOUR: i64 = 3_600_000;

    fn trade(id: &str, side: Side, quantity: f64, price_usd: f64) -> TradeExecuted {
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

    fn internal() -> Arc<dyn Handler> {
        InternalProcessing::build(&group(
            "trading.internal_processing",
            "trading.internal_processing",
            &[streams::POSITION_UPDATED],
            "",
        ))
        .unwrap()
    }

    fn risk(options: &str) -> Result<Arc<dyn Handler>, String> {
        RiskManagement::build(&group(
            "trading.risk_management",
            "trading.risk_management",
            &[streams::RISK_ALERT],
            options,
        ))
    }

    // ----- validation -----

    #[test]
    fn validation_converts_amounts_to_integers() {
        let mut t = trade("t1", Side::Buy, 0.5, 101.01);
        t.fee_usd = Some(0.125);
        let v = validate_trade(&event(streams::TRADE_EXECUTED, &t)).unwrap();
        assert_eq!(v.notional_cents, 5051);
        assert_eq!(v.units, 50_000_000);
        assert_eq!(v.fee_cents, Some(13));
        let v = validate_trade(&event(
            streams::TRADE_EXECUTED,
            &trade("t", Side::Sell, 1e-8, 1.0),
        ))
        .unwrap();
        assert_eq!(v.units, 1);
        assert_eq!(v.fee_cents, None);
    }

    #[test]
    fn invalid_trades_are_poison_naming_the_field() {
        let h = internal();
        let cases: Vec<(TradeExecuted, &str)> = vec![
            (trade("t", Side::Buy, 0.0, 1.0), "field `quantity`"),
            (trade("t", Side::Buy, -1.0, 1.0), "field `quantity`"),
            (
                trade("t", Side::Buy, f64::INFINITY, 1.0),
                "field `quantity`",
            ),
            (
                trade("t", Side::Buy, 1e-9, 1.0),
                "field `quantity`: below the 1e-8",
            ),
            (
                trade("t", Side::Buy, 1e11, 1.0),
                "field `quantity`: must be at most",
            ),
            (trade("t", Side::Buy, 1.0, -0.01), "field `price_usd`"),
            (
                trade("t", Side::Buy, 1e6, 1e8),
                "field `price_usd`: notional",
            ),
            (trade("", Side::Buy, 1.0, 1.0), "field `trade_id`"),
            (
                TradeExecuted {
                    user_id: " ".into(),
                    ..trade("t", Side::Buy, 1.0, 1.0)
                },
                "field `user_id`",
            ),
            (
                TradeExecuted {
                    symbol: "".into(),
                    ..trade("t", Side::Buy, 1.0, 1.0)
                },
                "field `symbol`",
            ),
            (
                TradeExecuted {
                    fee_usd: Some(-1.0),
                    ..trade("t", Side::Buy, 1.0, 1.0)
                },
                "field `fee_usd`",
            ),
        ];
        for (t, want) in cases {
            let m = poison_of(h.step(&event(streams::TRADE_EXECUTED, &t), &[]));
            assert!(m.contains(want), "{m:?} should contain {want:?}");
        }
        // NaN only reaches us through JSON-less encodings; msgpack carries it.
        let m = poison_of(h.step(
            &event(
                streams::TRADE_EXECUTED,
                &trade("t", Side::Buy, 1.0, f64::NAN),
            ),
            &[],
        ));
        assert!(m.contains("field `price_usd`"), "{m}");
    }

    #[test]
    fn missing_fields_and_foreign_streams_are_poison() {
        let h = internal();
        let e = json_event(
            streams::TRADE_EXECUTED,
            r#"{"trade_id":"t","symbol":"BTC","side":"buy","quantity":1,"price_usd":1}"#,
        );
        assert!(poison_of(h.step(&e, &[])).contains("user_id"));
        let e = json_event(
            streams::TRADE_EXECUTED,
            r#"{"trade_id":"t","user_id":"u","symbol":"BTC","side":"hold","quantity":1,"price_usd":1}"#,
        );
        poison_of(h.step(&e, &[]));
        let sub = SubscriptionChanged {
            user_id: "u1".into(),
            plan: "pro".into(),
            action: crate::events::SubscriptionAction::Started,
            price_usd: 10.0,
        };
        let m = poison_of(h.step(&event(streams::SUBSCRIPTION_CHANGED, &sub), &[]));
        assert!(
            m.contains("unexpected stream astra.financial.subscription_changed.v1"),
            "{m}"
        );
        let m = poison_of(
            risk("")
                .unwrap()
                .step(&event(streams::SUBSCRIPTION_CHANGED, &sub), &[]),
        );
        assert!(m.contains("unexpected stream"), "{m}");
    }

    #[test]
    fn json_trades_from_foreign_publishers_are_accepted() {
        let e = json_event(
            streams::TRADE_EXECUTED,
            r#"{"trade_id":"t9","user_id":"u1","symbol":"ETH","side":"sell","quantity":2,"price_usd":1500.5,"fee_usd":3}"#,
        );
        let v = validate_trade(&e).unwrap();
        assert_eq!(v.notional_cents, 300_100);
        assert_eq!(v.units, 200_000_000);
        assert_eq!(v.fee_cents, Some(300));
        assert_eq!(v.trade.side, Side::Sell);
    }

    // ----- internal_processing -----

    #[test]
    fn internal_processing_asks_for_atomic_increments() {
        let h = internal();
        let e = event(
            streams::TRADE_EXECUTED,
            &trade("t1", Side::Buy, 0.5, 101.01),
        );
        let ops = more(h.step(&e, &[]).unwrap());
        assert_eq!(ops.len(), 5);
        assert_eq!(
            (ops[0].cmd(), ops[0].key()),
            ("HINCRBY", "astra:trading:stats:u1")
        );
        assert_eq!(args(&ops[0]), ["trades", "1"]);
        assert_eq!(
            (ops[1].cmd(), ops[1].key()),
            ("HINCRBY", "astra:trading:stats:u1")
        );
        assert_eq!(args(&ops[1]), ["volume_cents", "5051"]);
        assert_eq!(
            (ops[2].cmd(), ops[2].key()),
            ("HINCRBY", "astra:trading:positions:u1")
        );
        assert_eq!(args(&ops[2]), ["BTC", "50000000"]);
        assert_eq!(
            (ops[3].cmd(), ops[3].key()),
            ("ZADD", "astra:trading:last_trade:u1")
        );
        assert_eq!(
            args(&ops[3]),
            ["1795262400000", r#"{"trade_id":"t1","symbol":"BTC"}"#]
        );
        assert_eq!(
            (ops[4].cmd(), ops[4].key()),
            ("ZREMRANGEBYRANK", "astra:trading:last_trade:u1")
        );
        assert_eq!(args(&ops[4]), ["0", "-2"]);
    }

    #[test]
    fn sells_subtract_and_the_emit_uses_the_replies() {
        let h = internal();
        let e = event(
            streams::TRADE_EXECUTED,
            &trade("t2", Side::Sell, 0.25, 100.0),
        );
        let ops = more(h.step(&e, &[]).unwrap());
        assert_eq!(args(&ops[2]), ["BTC", "-25000000"]);
        let replies = vec![vec![int(7), int(123_456), int(25_000_001), int(1), int(1)]];
        let (ops, emit) = done(h.step(&e, &replies).unwrap());
        assert!(ops.is_empty());
        assert_eq!(emit.len(), 1);
        assert_eq!(emit[0].stream, streams::POSITION_UPDATED);
        assert_eq!(emit[0].event_type, "trading.position_updated");
        let p: PositionUpdated = decode(&emit[0]);
        assert_eq!(
            p,
            PositionUpdated {
                user_id: "u1".into(),
                symbol: "BTC".into(),
                net_quantity: 0.25000001,
                trade_count: 7,
                volume_cents: 123_456,
            }
        );
        // Negative net positions (short) come through as negative quantities.
        let (_, emit) = done(
            h.step(
                &e,
                &[vec![int(1), int(2500), int(-25_000_000), int(1), int(0)]],
            )
            .unwrap(),
        );
        let p: PositionUpdated = decode(&emit[0]);
        assert_eq!(p.net_quantity, -0.25);
        // Replay with the recorded replies decides the same.
        assert_eq!(h.step(&e, &replies).unwrap(), h.step(&e, &replies).unwrap());
    }

    #[test]
    fn internal_processing_rejects_malformed_replies() {
        let h = internal();
        let e = event(
            streams::TRADE_EXECUTED,
            &trade("t2", Side::Sell, 0.25, 100.0),
        );
        let m = poison_of(h.step(&e, &[vec![int(1)]]));
        assert!(m.contains("expected 5 replies"), "{m}");
        let m = poison_of(h.step(&e, &[vec![Reply::Nil, int(1), int(1), int(1), int(1)]]));
        assert!(m.contains("HINCRBY trades"), "{m}");
    }

    #[test]
    fn last_trade_members_round_trip() {
        let m = last_trade_member("t:1", "BTC/USD");
        assert_eq!(
            decode_last_trade(&m, 1_795_262_400_000.0),
            Some(LastTrade {
                trade_id: "t:1".into(),
                symbol: "BTC/USD".into(),
                ts: 1_795_262_400_000
            })
        );
        assert_eq!(decode_last_trade("garbage", 1.0), None);
    }

    #[test]
    fn internal_processing_options() {
        let g = group(
            "trading.internal_processing",
            "trading.internal_processing",
            &[streams::POSITION_UPDATED],
            "x = 1",
        );
        assert!(
            InternalProcessing::build(&g)
                .err()
                .unwrap()
                .contains("unknown option `x`")
        );
        let g = group(
            "trading.internal_processing",
            "trading.internal_processing",
            &[],
            "",
        );
        assert!(
            InternalProcessing::build(&g)
                .err()
                .unwrap()
                .contains(streams::POSITION_UPDATED)
        );
        let names: Vec<_> = handlers().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["trading.internal_processing", "trading.risk_management"]
        );
    }

    // ----- risk_management -----

    /// Window reply: (member, score) pairs as Redis returns them (scores as strings).
    fn window(entries: &[(i64, &str, i64)]) -> Reply {
        let mut v = vec![];
        for (cents, id, ts) in entries {
            v.push(text(&exposure_member(*cents, id)));
            v.push(text(&ts.to_string()));
        }
        Reply::Array(v)
    }

    fn risk_step(h: &Arc<dyn Handler>, e: &Event, added: i64, w: Reply) -> Vec<RiskAlert> {
        let (ops, emit) = done(h.step(e, &[vec![int(added), int(0), w, int(1)]]).unwrap());
        assert!(ops.is_empty());
        emit.iter()
            .map(|x| {
                assert_eq!(x.stream, streams::RISK_ALERT);
                decode(x)
            })
            .collect()
    }

    #[test]
    fn risk_asks_to_add_prune_and_read_in_one_round() {
        let h = risk("").unwrap();
        // 2 × 25,000.50 = 50,001.00 USD
        let e = event_at(
            streams::TRADE_EXECUTED,
            &trade("t1", Side::Sell, 2.0, 25_000.5),
            T0,
        );
        let ops = more(h.step(&e, &[]).unwrap());
        assert_eq!(ops.len(), 4);
        let key = "astra:trading:exposure:u1";
        assert!(ops.iter().all(|o| o.key() == key));
        assert_eq!(ops[0].cmd(), "ZADD");
        assert_eq!(args(&ops[0]), ["1795262400000", "5000100:t1"]);
        assert_eq!(ops[1].cmd(), "ZREMRANGEBYSCORE");
        assert_eq!(args(&ops[1]), ["-inf", "1795258800000"]);
        assert_eq!(ops[2].cmd(), "ZRANGEBYSCORE");
        assert_eq!(args(&ops[2]), ["(1795258800000", "+inf", "WITHSCORES"]);
        assert_eq!(ops[3].cmd(), "EXPIRE");
        assert_eq!(args(&ops[3]), ["90001"]);
    }

    #[test]
    fn risk_alerts_only_strictly_above_the_limit() {
        let h = risk("").unwrap();
        // Exactly at the limit: 40,000 + 60,000 = 100,000 USD → no alert.
        let e = event_at(
            streams::TRADE_EXECUTED,
            &trade("t2", Side::Buy, 1.0, 60_000.0),
            T0,
        );
        let w = window(&[(4_000_000, "t1", T0 - 1000), (6_000_000, "t2", T0)]);
        assert!(risk_step(&h, &e, 1, w).is_empty());
        // One cent more crosses.
        let e = event_at(
            streams::TRADE_EXECUTED,
            &trade("t2", Side::Buy, 1.0, 60_000.01),
            T0,
        );
        let w = window(&[(4_000_000, "t1", T0 - 1000), (6_000_001, "t2", T0)]);
        let a = risk_step(&h, &e, 1, w);
        assert_eq!(
            a,
            vec![RiskAlert {
                user_id: "u1".into(),
                exposure_cents: 10_000_001,
                limit_cents: 10_000_000,
                window_secs: 3600,
                trade_id: "t2".into(),
            }]
        );
    }

    #[test]
    fn risk_alerts_once_per_crossing() {
        let h = risk("").unwrap();
        // t1 crosses (60k + 50k), t2 follows while still above: only t1 alerts.
        let e1 = event_at(
            streams::TRADE_EXECUTED,
            &trade("t1", Side::Buy, 1.0, 50_000.0),
            T0,
        );
        let w1 = window(&[(6_000_000, "t0", T0 - 10), (5_000_000, "t1", T0)]);
        assert_eq!(risk_step(&h, &e1, 1, w1).len(), 1);
        let e2 = event_at(
            streams::TRADE_EXECUTED,
            &trade("t2", Side::Buy, 1.0, 1_000.0),
            T0 + 5,
        );
        let w2 = window(&[
            (6_000_000, "t0", T0 - 10),
            (5_000_000, "t1", T0),
            (100_000, "t2", T0 + 5),
        ]);
        assert!(risk_step(&h, &e2, 1, w2).is_empty());
        // An hour later t0 and t1 have left; t3 at 99,000 stays at the limit or below...
        let e3 = event_at(
            streams::TRADE_EXECUTED,
            &trade("t3", Side::Buy, 1.0, 99_000.0),
            T0 + HOUR + 5,
        );
        let w3 = window(&[(9_900_000, "t3", T0 + HOUR + 5)]);
        assert!(risk_step(&h, &e3, 1, w3).is_empty());
        // ...and t4 pushes it above again: a new crossing alerts.
        let e4 = event_at(
            streams::TRADE_EXECUTED,
            &trade("t4", Side::Buy, 1.0, 2_000.0),
            T0 + HOUR + 6,
        );
        let w4 = window(&[
            (9_900_000, "t3", T0 + HOUR + 5),
            (200_000, "t4", T0 + HOUR + 6),
        ]);
        let a = risk_step(&h, &e4, 1, w4);
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].trade_id.as_str(), a[0].exposure_cents),
            ("t4", 10_100_000)
        );
    }

    #[test]
    fn risk_window_edges() {
        let h = risk("").unwrap();
        // A trade exactly one window older has left it: (T - 1h, T].
        let e = event_at(
            streams::TRADE_EXECUTED,
            &trade("t2", Side::Buy, 1.0, 60_000.0),
            T0,
        );
        let w = window(&[(5_000_000, "t1", T0 - HOUR + 1), (6_000_000, "t2", T0)]);
        assert_eq!(
            risk_step(&h, &e, 1, w).len(),
            1,
            "1 ms inside the window counts"
        );
        // (The range op already excludes score T0 - HOUR, so a reply containing it would be
        // from a concurrent newer trade; see the out-of-order test.)
        let w = window(&[(6_000_000, "t2", T0)]);
        assert!(risk_step(&h, &e, 1, w).is_empty());
        // A single trade above the limit alerts on its own.
        let e = event_at(
            streams::TRADE_EXECUTED,
            &trade("big", Side::Buy, 2.0, 60_000.0),
            T0,
        );
        let a = risk_step(&h, &e, 1, window(&[(12_000_000, "big", T0)]));
        assert_eq!(a[0].exposure_cents, 12_000_000);
    }

    #[test]
    fn concurrent_trades_of_one_user_cannot_both_alert() {
        let h = risk("").unwrap();
        // Prior exposure 90k; tA (+20k) and tB (+30k) are handled by two consumers. Redis
        // applies the two rounds one after the other; whichever runs second sees the other.
        let ea = event_at(
            streams::TRADE_EXECUTED,
            &trade("tA", Side::Buy, 1.0, 20_000.0),
            T0,
        );
        let eb = event_at(
            streams::TRADE_EXECUTED,
            &trade("tB", Side::Buy, 1.0, 30_000.0),
            T0 + 1,
        );
        let base = (9_000_000, "t0", T0 - 60_000);
        // Order A then B.
        let a1 = risk_step(&h, &ea, 1, window(&[base, (2_000_000, "tA", T0)]));
        let b1 = risk_step(
            &h,
            &eb,
            1,
            window(&[base, (2_000_000, "tA", T0), (3_000_000, "tB", T0 + 1)]),
        );
        assert_eq!((a1.len(), b1.len()), (1, 0));
        // Order B then A (A is now late relative to B, still within the window).
        let b2 = risk_step(&h, &eb, 1, window(&[base, (3_000_000, "tB", T0 + 1)]));
        let a2 = risk_step(
            &h,
            &ea,
            1,
            window(&[base, (2_000_000, "tA", T0), (3_000_000, "tB", T0 + 1)]),
        );
        assert_eq!((a2.len(), b2.len()), (0, 1));
    }

    #[test]
    fn late_trades_are_judged_against_the_current_window() {
        let h = risk("").unwrap();
        // The user is above (t9 at T0 crossed). A late trade at T0 - 30min whose own
        // window would have been below must not alert again.
        let late = event_at(
            streams::TRADE_EXECUTED,
            &trade("late", Side::Buy, 1.0, 50_000.0),
            T0 - HOUR / 2,
        );
        let w = window(&[
            (6_000_000, "t8", T0 - HOUR / 2 - 1),
            (5_000_000, "late", T0 - HOUR / 2),
            (5_000_000, "t9", T0),
        ]);
        assert!(risk_step(&h, &late, 1, w).is_empty());
        // A late trade that pushes the current window over alerts, with T as window end:
        // t8 (T0 - 30min - 1) is still inside (T0 - 1h, T0].
        let w = window(&[
            (4_000_000, "t8", T0 - HOUR / 2 - 1),
            (5_000_000, "late", T0 - HOUR / 2),
            (5_000_000, "t9", T0),
        ]);
        let a = risk_step(&h, &late, 1, w);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].exposure_cents, 14_000_000);
        // A trade older than the current window adds nothing to it: no alert even though
        // the current exposure is above.
        let old = event_at(
            streams::TRADE_EXECUTED,
            &trade("old", Side::Buy, 1.0, 50_000.0),
            T0 - 2 * HOUR,
        );
        let w = window(&[(5_000_000, "old", T0 - 2 * HOUR), (11_000_000, "t9", T0)]);
        assert!(risk_step(&h, &old, 1, w).is_empty());
    }

    #[test]
    fn a_trade_already_in_the_window_adds_nothing() {
        let h = risk("").unwrap();
        let e = event_at(
            streams::TRADE_EXECUTED,
            &trade("t1", Side::Buy, 1.0, 60_000.0),
            T0,
        );
        let w = window(&[(5_000_000, "t0", T0 - 1), (6_000_000, "t1", T0)]);
        assert_eq!(risk_step(&h, &e, 1, w.clone()).len(), 1);
        // ZADD replied 0: the same trade was published twice; no second crossing.
        assert!(risk_step(&h, &e, 0, w).is_empty());
    }

    #[test]
    fn risk_rejects_malformed_state() {
        let h = risk("").unwrap();
        let e = event_at(
            streams::TRADE_EXECUTED,
            &trade("t1", Side::Buy, 1.0, 1.0),
            T0,
        );
        let bad = Reply::Array(vec![text("nocents"), text("1")]);
        let m = poison_of(h.step(&e, &[vec![int(1), int(0), bad, int(1)]]));
        assert!(
            m.contains("malformed member \"nocents\" in astra:trading:exposure:u1"),
            "{m}"
        );
        let odd = Reply::Array(vec![text("1:t1")]);
        assert!(poison_of(h.step(&e, &[vec![int(1), int(0), odd, int(1)]])).contains("odd length"));
    }

    #[test]
    fn risk_options() {
        let h = risk("limit_usd = 500\nwindow = \"10m\"").unwrap();
        let e = event_at(
            streams::TRADE_EXECUTED,
            &trade("t1", Side::Buy, 1.0, 500.01),
            T0,
        );
        let ops = more(h.step(&e, &[]).unwrap());
        assert_eq!(args(&ops[1]), ["-inf", (T0 - 600_000).to_string().as_str()]);
        assert_eq!(args(&ops[3]), ["87001"]);
        let a = risk_step(&h, &e, 1, window(&[(50_001, "t1", T0)]));
        assert_eq!((a[0].limit_cents, a[0].window_secs), (50_000, 600));
        assert!(
            risk("limit_usd = -1")
                .err()
                .unwrap()
                .contains("option `limit_usd`")
        );
        assert!(
            risk("window = \"soon\"")
                .err()
                .unwrap()
                .contains("option `window`")
        );
        assert!(
            risk("window = \"0s\"")
                .err()
                .unwrap()
                .contains("at least 1ms")
        );
        assert!(
            risk("window = 60")
                .err()
                .unwrap()
                .contains("option `window`")
        );
        assert!(
            risk("limit = 5")
                .err()
                .unwrap()
                .contains("unknown option `limit`")
        );
        let g = group(
            "trading.risk_management",
            "trading.risk_management",
            &[],
            "",
        );
        assert!(
            RiskManagement::build(&g)
                .err()
                .unwrap()
                .contains(streams::RISK_ALERT)
        );
    }
}
