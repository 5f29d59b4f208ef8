//! financial domain handlers: revenue per UTC day and source (`financial.revenue_tracking`),
//! active subscribers and MRR (`financial.subscriptions`), large-trade and velocity flags
//! (`financial.compliance`).
//!
//! Money is integer cents throughout. Basis-point fees are computed on the integer-cent
//! base and rounded half up to a whole cent ([`bps_of`]): 10 bps of 5 cents (0.005 cent)
//! is 0 cents, 10 bps of 50 cents (0.05 cent) is 0, 10 bps of 500 cents (0.5 cent) is 1.

use std::sync::Arc;

use super::trading::{
    duration_option, int_reply, require_publishes, round, unexpected_stream, validate_trade,
};
use super::{
    Constructor, Emit, Event, Handler, HandlerError, Op, Reply, Step, deny_unknown_options,
    non_empty, option, poison,
};
use crate::events::{
    ComplianceFlagged, RevenueRecorded, SaleCompleted, SubscriptionAction, SubscriptionChanged,
    cents_to_usd, streams, usd_to_cents,
};
use crate::group::GroupConfig;

/// The handlers of this domain, by name.
pub fn handlers() -> Vec<(&'static str, Constructor)> {
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

/// Decodes and checks a `subscription_changed` payload.
fn subscription(ev: &Event) -> Result<(SubscriptionChanged, i64), HandlerError> {
    let s: SubscriptionChanged = ev.payload()?;
    non_empty("user_id", &s.user_id)?;
    non_empty("plan", &s.plan)?;
    let cents = price_cents("price_usd", s.price_usd)?;
    Ok((s, cents))
}

/// Decodes and checks a `sale_completed` payload (the fields revenue uses).
fn sale(ev: &Event) -> Result<(SaleCompleted, i64), HandlerError> {
    let s: SaleCompleted = ev.payload()?;
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

// ---------------------------------------------------------------------------------------
// financial.revenue_tracking
// ---------------------------------------------------------------------------------------

/// `financial.revenue_tracking`: revenue per UTC day and source.
///
/// Reads three streams:
///
/// - `astra.trading.trade_executed.v1` → source `trade_fee`, booked to the trader: the
///   trade's `fee_usd` when present (in cents), else `default_fee_bps` of the notional
///   (`quantity × price_usd` in cents);
/// - `astra.financial.subscription_changed.v1` → source `subscription`: `started` and
///   `renewed` book the plan's `price_usd`; `cancelled` books nothing;
/// - `astra.nft.sale_completed.v1` → source `nft_fee`, booked to the seller:
///   `nft_fee_bps` of the sale price.
///
/// Basis-point fees are taken of the integer-cent amount and rounded half up to a cent
/// ([`bps_of`]). The day is the UTC day of the event's `ts`. One atomic round on
/// [`revenue_day_key`]`(day)`: `HINCRBY <source> <cents>`, `HINCRBY total <cents>`,
/// `EXPIRE retain_days`. Then it emits `astra.financial.revenue_recorded.v1`
/// ([`RevenueRecorded`] `{source, amount_usd, amount_cents, user_id, day}`). A zero amount
/// (zero fee, free plan, cancellation) changes nothing and emits nothing.
///
/// Options: `default_fee_bps` (default 10 = 0.1%), `nft_fee_bps` (default 250 = 2.5%),
/// both 0..=10000; `retain_days` (default 400, 1..=36500).
/// Poison: invalid trades (see [`super::trading::validate_trade`]); empty `user_id`,
/// `plan`, `sale_id` or `seller_id`; a price that is not a finite number ≥ 0; another stream.
pub struct RevenueTracking {
    default_fee_bps: u32,
    nft_fee_bps: u32,
    retain_secs: i64,
}

const REVENUE_STREAMS: &[&str] = &[
    streams::TRADE_EXECUTED,
    streams::SUBSCRIPTION_CHANGED,
    streams::SALE_COMPLETED,
];

impl RevenueTracking {
    /// Builds from the group config; options `default_fee_bps`, `nft_fee_bps`, `retain_days`.
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(g, &["default_fee_bps", "nft_fee_bps", "retain_days"])?;
        require_publishes(g, streams::REVENUE_RECORDED)?;
        let default_fee_bps = bps_option(g, "default_fee_bps", 10)?;
        let nft_fee_bps = bps_option(g, "nft_fee_bps", 250)?;
        let retain_days: u32 = option(g, "retain_days", 400u32)?;
        if !(1..=36_500).contains(&retain_days) {
            return Err(format!(
                "option `retain_days`: must be 1..=36500, got {retain_days}"
            ));
        }
        Ok(Arc::new(RevenueTracking {
            default_fee_bps,
            nft_fee_bps,
            retain_secs: retain_days as i64 * 86_400,
        }))
    }

    /// (source, cents, user) of an event; cents may be 0.
    fn revenue(&self, ev: &Event) -> Result<Option<(&'static str, i64, String)>, HandlerError> {
        match ev.stream.as_str() {
            streams::TRADE_EXECUTED => {
                let v = validate_trade(ev)?;
                let fee = v
                    .fee_cents
                    .unwrap_or_else(|| bps_of(v.notional_cents, self.default_fee_bps));
                Ok(Some((SOURCE_TRADE_FEE, fee, v.trade.user_id)))
            }
            streams::SUBSCRIPTION_CHANGED => {
                let (s, cents) = subscription(ev)?;
                Ok(match s.action {
                    SubscriptionAction::Started | SubscriptionAction::Renewed => {
                        Some((SOURCE_SUBSCRIPTION, cents, s.user_id))
                    }
                    SubscriptionAction::Cancelled => None,
                })
            }
            streams::SALE_COMPLETED => {
                let (s, cents) = sale(ev)?;
                Ok(Some((
                    SOURCE_NFT_FEE,
                    bps_of(cents, self.nft_fee_bps),
                    s.seller_id,
                )))
            }
            _ => Err(unexpected_stream(ev, REVENUE_STREAMS)),
        }
    }
}

impl Handler for RevenueTracking {
    fn step(&self, ev: &Event, _: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        let Some((source, cents, user_id)) = self.revenue(ev)? else {
            return Ok(Step::nothing());
        };
        if cents == 0 {
            return Ok(Step::nothing());
        }
        let day = ev.utc_day();
        let key = revenue_day_key(&day);
        let payload = RevenueRecorded {
            source: source.to_string(),
            amount_usd: cents_to_usd(cents),
            amount_cents: cents,
            user_id,
            day,
        };
        Ok(Step::Done {
            ops: vec![
                Op::hincrby(&key, source, cents),
                Op::hincrby(&key, REVENUE_TOTAL, cents),
                Op::expire(&key, self.retain_secs),
            ],
            emit: vec![Emit::new(streams::REVENUE_RECORDED, &payload)],
        })
    }
}

// ---------------------------------------------------------------------------------------
// financial.subscriptions
// ---------------------------------------------------------------------------------------

/// `financial.subscriptions`: active subscribers and monthly recurring revenue (MRR).
///
/// Reads `astra.financial.subscription_changed.v1` (`price_usd` is the plan's monthly
/// price); publishes nothing. Rules: `started` → the user is active with that plan and
/// price (a `started` while already active is a plan change); `renewed` → the user stays
/// active (or becomes active, e.g. when the start was missed) at the renewal's price;
/// `cancelled` → inactive. Events of one user are applied in the order they are processed.
///
/// Keys (hash tag `{subs}`, one slot): [`subscribers_key`] (set of active users),
/// [`subscription_price_key`] and [`subscription_plan_key`] (hashes user → price cents /
/// plan name, only for active users), [`mrr_key`] (string, cents).
///
/// How MRR stays exact: MRR is by definition the sum of the price hash. Redis has no
/// allowed single command that swaps a hash field and returns the old value, but the ops
/// of one round are applied atomically in order, so round 1 is the swap:
/// `SADD/SREM active u`, `HGET price u` (old price, nil = inactive = 0), `HSET price u p`
/// (or `HDEL` on cancel), `HSET/HDEL plan u`. No other event can touch the user between
/// that `HGET` and that `HSET`, so `delta = new − old` is exactly this event's change to
/// the sum. Round 2 (final) applies `INCRBY mrr delta` (skipped when 0). Another event of
/// the same user may run between the two rounds, but it then reads *our* new price as
/// its old one, so the deltas telescope (`(p1 − p0) + (p2 − p1) = p2 − p0`) and `INCRBY`
/// commutes: whatever the interleaving, once both events finish `mrr` = sum of prices.
/// Redelivery replays the recorded `HGET` reply, so a replay computes the same delta and
/// the runtime's per-round markers keep either round from applying twice. Cancelling an
/// inactive user or renewing at the same price yields delta 0 and changes nothing.
///
/// Options: none. Poison: empty `user_id` or `plan`, a `price_usd` that is not a finite
/// number ≥ 0, another stream.
pub struct Subscriptions;

impl Subscriptions {
    /// Builds from the group config (no options).
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(g, &[])?;
        Ok(Arc::new(Subscriptions))
    }
}

impl Handler for Subscriptions {
    fn step(&self, ev: &Event, rounds: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        if ev.stream != streams::SUBSCRIPTION_CHANGED {
            return Err(unexpected_stream(ev, &[streams::SUBSCRIPTION_CHANGED]));
        }
        let (s, cents) = subscription(ev)?;
        let u = &s.user_id;
        let active = s.action != SubscriptionAction::Cancelled;
        if rounds.is_empty() {
            let ops = if active {
                vec![
                    Op::sadd(subscribers_key(), u),
                    Op::hget(subscription_price_key(), u),
                    Op::hset(subscription_price_key(), u, cents.to_string()),
                    Op::hset(subscription_plan_key(), u, &s.plan),
                ]
            } else {
                vec![
                    Op::new("SREM", subscribers_key(), vec![u.as_bytes().to_vec()]),
                    Op::hget(subscription_price_key(), u),
                    Op::new(
                        "HDEL",
                        subscription_price_key(),
                        vec![u.as_bytes().to_vec()],
                    ),
                    Op::new("HDEL", subscription_plan_key(), vec![u.as_bytes().to_vec()]),
                ]
            };
            return Ok(Step::More(ops));
        }
        let r = round(rounds, 0, 4)?;
        let old = if r[1].is_nil() {
            0
        } else {
            int_reply(&r[1], "HGET price")?
        };
        let new = if active { cents } else { 0 };
        let delta = new - old;
        let ops = if delta != 0 {
            vec![Op::incrby(mrr_key(), delta)]
        } else {
            vec![]
        };
        Ok(Step::Done { ops, emit: vec![] })
    }
}

// ---------------------------------------------------------------------------------------
// financial.compliance
// ---------------------------------------------------------------------------------------

/// `financial.compliance`: flags large trades and high trading velocity.
///
/// Reads `astra.trading.trade_executed.v1`. Two rules, and one trade can raise both:
///
/// - `large_trade`: the trade's notional (`quantity × price_usd`, cents) is at or above
///   `large_trade_usd`;
/// - `velocity`: the user's `velocity_trades`-th trade inside one fixed window of length
///   `velocity_window`, windows aligned to the Unix epoch (bucket = `ts` div window). Round
///   1 is `INCRBY` [`velocity_key`]`(user, bucket) 1` + `EXPIRE` (window + 1 hour); the
///   flag fires when that reply equals `velocity_trades` exactly, which happens for one
///   trade per window however many consumers run (later trades of the window see a
///   larger count and do not re-flag).
///
/// Each flag increments its field in [`compliance_flags_key`]`(user)` (`HINCRBY
/// large_trade|velocity 1`) and emits `astra.financial.compliance_flagged.v1`
/// ([`ComplianceFlagged`]: `reason`, `trade_id`, `notional_cents`, and
/// `trades_in_window` = the counter for velocity flags, none for large trades).
///
/// Options: `large_trade_usd` (integer USD, default 50000), `velocity_trades` (default
/// 20, ≥ 1), `velocity_window` (humantime, default `"60s"`, 1ms to 366 days).
/// Poison: see [`super::trading::validate_trade`].
pub struct Compliance {
    large_cents: i64,
    velocity_trades: i64,
    window_ms: i64,
    ttl_secs: i64,
}

impl Compliance {
    /// Builds from the group config; options `large_trade_usd`, `velocity_trades`,
    /// `velocity_window`.
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(
            g,
            &["large_trade_usd", "velocity_trades", "velocity_window"],
        )?;
        require_publishes(g, streams::COMPLIANCE_FLAGGED)?;
        let large_usd: u64 = option(g, "large_trade_usd", 50_000u64)?;
        let large_cents = large_usd
            .checked_mul(100)
            .and_then(|c| i64::try_from(c).ok())
            .filter(|c| *c <= 1_000_000_000_000_000)
            .ok_or_else(|| format!("option `large_trade_usd`: at most 1e13, got {large_usd}"))?;
        let velocity_trades: u32 = option(g, "velocity_trades", 20u32)?;
        if velocity_trades == 0 {
            return Err("option `velocity_trades`: must be at least 1".into());
        }
        let window = duration_option(g, "velocity_window", "60s")?;
        let window_ms = window.as_millis() as i64;
        Ok(Arc::new(Compliance {
            large_cents,
            velocity_trades: velocity_trades as i64,
            window_ms,
            // Whole seconds covering the window, plus an hour for late trades.
            ttl_secs: (window_ms + 999) / 1000 + 3_600,
        }))
    }
}

impl Handler for Compliance {
    fn step(&self, ev: &Event, rounds: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        let v = validate_trade(ev)?;
        let t = &v.trade;
        let vkey = velocity_key(&t.user_id, velocity_bucket(ev.env.ts, self.window_ms));
        if rounds.is_empty() {
            return Ok(Step::More(vec![
                Op::incrby(&vkey, 1),
                Op::expire(&vkey, self.ttl_secs),
            ]));
        }
        let r = round(rounds, 0, 2)?;
        let count = int_reply(&r[0], "INCRBY velocity")?;
        let mut flags: Vec<(&str, Option<i64>)> = vec![];
        if v.notional_cents >= self.large_cents {
            flags.push((FLAG_LARGE_TRADE, None));
        }
        if count == self.velocity_trades {
            flags.push((FLAG_VELOCITY, Some(count)));
        }
        let fkey = compliance_flags_key(&t.user_id);
        let ops = flags
            .iter()
            .map(|(f, _)| Op::hincrby(&fkey, f, 1))
            .collect();
        let emit = flags
            .iter()
            .map(|(reason, in_window)| {
                Emit::new(
                    streams::COMPLIANCE_FLAGGED,
                    &ComplianceFlagged {
                        user_id: t.user_id.clone(),
                        reason: reason.to_string(),
                        trade_id: t.trade_id.clone(),
                        notional_cents: v.notional_cents,
                        trades_in_window: *in_window,
                    },
                )
            })
            .collect();
        Ok(Step::Done { ops, emit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Side, TradeExecuted};
    use crate::handlers::testing::{args, done, more, poison_of};
    use crate::handlers::testing::{decode, event, event_at, group, int, json_event, text};

    const T0: i64 = 1_795_262_400_000; // 2026-11-21T12:00:00Z

    fn trade(id: &str, quantity: f64, price_usd: f64, fee_usd: Option<f64>) -> TradeExecuted {
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

    fn sub(action: SubscriptionAction, price_usd: f64) -> SubscriptionChanged {
        SubscriptionChanged {
            user_id: "u1".into(),
            plan: "pro".into(),
            action,
            price_usd,
        }
    }

    fn nft_sale(price_usd: f64) -> SaleCompleted {
        SaleCompleted {
            sale_id: "s1".into(),
            collection: "apes".into(),
            token_id: "7".into(),
            seller_id: "seller".into(),
            buyer_id: "buyer".into(),
            price_usd,
        }
    }

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

    // ----- revenue_tracking -----

    fn revenue(options: &str) -> Result<Arc<dyn Handler>, String> {
        RevenueTracking::build(&group(
            "financial.revenue_tracking",
            "financial.revenue_tracking",
            &[streams::REVENUE_RECORDED],
            options,
        ))
    }

    fn recorded(h: &Arc<dyn Handler>, e: &Event) -> (Vec<Op>, Option<RevenueRecorded>) {
        let (ops, emit) = done(h.step(e, &[]).unwrap());
        assert!(emit.len() <= 1);
        let r = emit.first().map(|x| {
            assert_eq!(x.stream, streams::REVENUE_RECORDED);
            decode(x)
        });
        (ops, r)
    }

    #[test]
    fn trade_fee_defaults_to_ten_bps_of_notional() {
        let h = revenue("").unwrap();
        // Notional 2 × 1,234.56 = 2,469.12 USD = 246,912 cents; 0.1% = 246.912 → 247 cents.
        let e = event(streams::TRADE_EXECUTED, &trade("t1", 2.0, 1_234.56, None));
        let (ops, r) = recorded(&h, &e);
        assert_eq!(ops.len(), 3);
        let key = "astra:financial:revenue:2026-11-21";
        assert!(ops.iter().all(|o| o.key() == key));
        assert_eq!(
            (ops[0].cmd(), args(&ops[0])),
            ("HINCRBY", vec!["trade_fee".into(), "247".into()])
        );
        assert_eq!(
            (ops[1].cmd(), args(&ops[1])),
            ("HINCRBY", vec!["total".into(), "247".into()])
        );
        assert_eq!(
            (ops[2].cmd(), args(&ops[2])),
            ("EXPIRE", vec!["34560000".to_string()])
        );
        assert_eq!(
            r.unwrap(),
            RevenueRecorded {
                source: "trade_fee".into(),
                amount_usd: 2.47,
                amount_cents: 247,
                user_id: "u1".into(),
                day: "2026-11-21".into(),
            }
        );
    }

    #[test]
    fn an_explicit_trade_fee_wins_and_zero_records_nothing() {
        let h = revenue("").unwrap();
        let e = event(
            streams::TRADE_EXECUTED,
            &trade("t1", 2.0, 1_234.56, Some(1.01)),
        );
        let (ops, r) = recorded(&h, &e);
        assert_eq!(args(&ops[0]), ["trade_fee", "101"]);
        assert_eq!(r.unwrap().amount_cents, 101);
        // fee_usd = 0: a free trade.
        let e = event(
            streams::TRADE_EXECUTED,
            &trade("t2", 2.0, 1_234.56, Some(0.0)),
        );
        assert_eq!(h.step(&e, &[]).unwrap(), Step::nothing());
        // Default fee rounding to zero: 4.99 USD × 0.1% = 0.499 cent.
        let e = event(streams::TRADE_EXECUTED, &trade("t3", 1.0, 4.99, None));
        assert_eq!(h.step(&e, &[]).unwrap(), Step::nothing());
        // 5.00 USD × 0.1% = 0.5 cent → rounds half up to 1 cent.
        let e = event(streams::TRADE_EXECUTED, &trade("t4", 1.0, 5.0, None));
        assert_eq!(recorded(&h, &e).1.unwrap().amount_cents, 1);
    }

    #[test]
    fn subscriptions_book_the_plan_price_except_cancellations() {
        let h = revenue("").unwrap();
        for action in [SubscriptionAction::Started, SubscriptionAction::Renewed] {
            let e = event(streams::SUBSCRIPTION_CHANGED, &sub(action, 19.99));
            let (ops, r) = recorded(&h, &e);
            assert_eq!(args(&ops[0]), ["subscription", "1999"]);
            assert_eq!(args(&ops[1]), ["total", "1999"]);
            let r = r.unwrap();
            assert_eq!(
                (r.source.as_str(), r.amount_cents, r.amount_usd),
                ("subscription", 1999, 19.99)
            );
        }
        let e = event(
            streams::SUBSCRIPTION_CHANGED,
            &sub(SubscriptionAction::Cancelled, 19.99),
        );
        assert_eq!(h.step(&e, &[]).unwrap(), Step::nothing());
        // A free plan records nothing either.
        let e = event(
            streams::SUBSCRIPTION_CHANGED,
            &sub(SubscriptionAction::Started, 0.0),
        );
        assert_eq!(h.step(&e, &[]).unwrap(), Step::nothing());
    }

    #[test]
    fn nft_sales_book_the_fee_to_the_seller() {
        let h = revenue("").unwrap();
        // 2.5% of 1,000.10 USD = 25.0025 USD → 2,500.25 cents → 2,500 cents.
        let e = event(streams::SALE_COMPLETED, &nft_sale(1_000.10));
        let (ops, r) = recorded(&h, &e);
        assert_eq!(args(&ops[0]), ["nft_fee", "2500"]);
        let r = r.unwrap();
        assert_eq!(
            (r.source.as_str(), r.user_id.as_str(), r.amount_cents),
            ("nft_fee", "seller", 2500)
        );
        // 2.5% of 0.20 USD = 0.5 cent → 1 cent (half up).
        let e = event(streams::SALE_COMPLETED, &nft_sale(0.20));
        assert_eq!(recorded(&h, &e).1.unwrap().amount_cents, 1);
        // 2.5% of 0.19 USD = 0.475 cent → nothing.
        let e = event(streams::SALE_COMPLETED, &nft_sale(0.19));
        assert_eq!(h.step(&e, &[]).unwrap(), Step::nothing());
    }

    #[test]
    fn revenue_is_booked_on_the_utc_day_of_the_event() {
        let h = revenue("").unwrap();
        // 2026-11-21T23:59:59.999Z and one ms later.
        let last_ms = 1_795_305_599_999;
        let e = event_at(streams::SALE_COMPLETED, &nft_sale(100.0), last_ms);
        let (ops, r) = recorded(&h, &e);
        assert_eq!(ops[0].key(), "astra:financial:revenue:2026-11-21");
        assert_eq!(r.unwrap().day, "2026-11-21");
        let e = event_at(streams::SALE_COMPLETED, &nft_sale(100.0), last_ms + 1);
        let (ops, r) = recorded(&h, &e);
        assert_eq!(ops[0].key(), "astra:financial:revenue:2026-11-22");
        assert_eq!(r.unwrap().day, "2026-11-22");
    }

    #[test]
    fn revenue_poison_names_the_field() {
        let h = revenue("").unwrap();
        let m = poison_of(h.step(&event(streams::SALE_COMPLETED, &nft_sale(-1.0)), &[]));
        assert!(m.contains("field `price_usd`"), "{m}");
        let s = SaleCompleted {
            seller_id: "".into(),
            ..nft_sale(1.0)
        };
        assert!(
            poison_of(h.step(&event(streams::SALE_COMPLETED, &s), &[]))
                .contains("field `seller_id`")
        );
        let s = SubscriptionChanged {
            plan: "".into(),
            ..sub(SubscriptionAction::Started, 1.0)
        };
        assert!(
            poison_of(h.step(&event(streams::SUBSCRIPTION_CHANGED, &s), &[]))
                .contains("field `plan`")
        );
        let m = poison_of(h.step(
            &event(
                streams::SUBSCRIPTION_CHANGED,
                &sub(SubscriptionAction::Renewed, f64::NAN),
            ),
            &[],
        ));
        assert!(m.contains("field `price_usd`"), "{m}");
        let m = poison_of(h.step(
            &event(
                streams::TRADE_EXECUTED,
                &trade("t", 1.0, 1.0, Some(f64::INFINITY)),
            ),
            &[],
        ));
        assert!(m.contains("field `fee_usd`"), "{m}");
        let e = json_event(
            streams::SUBSCRIPTION_CHANGED,
            r#"{"user_id":"u1","plan":"pro","action":"paused","price_usd":1}"#,
        );
        poison_of(h.step(&e, &[]));
        let e = json_event(
            streams::SALE_COMPLETED,
            r#"{"sale_id":"s","seller_id":"x","price_usd":1}"#,
        );
        assert!(poison_of(h.step(&e, &[])).contains("collection"));
        let m = poison_of(h.step(&json_event(streams::INTERACTION, "{}"), &[]));
        assert!(
            m.contains("unexpected stream astra.social.interaction.v1"),
            "{m}"
        );
    }

    #[test]
    fn revenue_options() {
        let h = revenue("default_fee_bps = 25\nnft_fee_bps = 500\nretain_days = 30").unwrap();
        // 0.25% of 1,000 USD = 250 cents.
        let (ops, _) = recorded(
            &h,
            &event(streams::TRADE_EXECUTED, &trade("t", 1.0, 1_000.0, None)),
        );
        assert_eq!(args(&ops[0]), ["trade_fee", "250"]);
        assert_eq!(args(&ops[2]), ["2592000"]);
        let (ops, _) = recorded(&h, &event(streams::SALE_COMPLETED, &nft_sale(10.0)));
        assert_eq!(args(&ops[0]), ["nft_fee", "50"]);
        // 0 bps: trades without fee_usd earn nothing.
        let h = revenue("default_fee_bps = 0").unwrap();
        let e = event(streams::TRADE_EXECUTED, &trade("t", 1.0, 1_000.0, None));
        assert_eq!(h.step(&e, &[]).unwrap(), Step::nothing());
        assert!(
            revenue("default_fee_bps = 10001")
                .err()
                .unwrap()
                .contains("option `default_fee_bps`")
        );
        assert!(
            revenue("nft_fee_bps = -1")
                .err()
                .unwrap()
                .contains("option `nft_fee_bps`")
        );
        assert!(
            revenue("retain_days = 0")
                .err()
                .unwrap()
                .contains("option `retain_days`")
        );
        assert!(
            revenue("retain_days = \"1y\"")
                .err()
                .unwrap()
                .contains("option `retain_days`")
        );
        assert!(
            revenue("fee_bps = 3")
                .err()
                .unwrap()
                .contains("unknown option `fee_bps`")
        );
        let g = group(
            "financial.revenue_tracking",
            "financial.revenue_tracking",
            &[],
            "",
        );
        assert!(
            RevenueTracking::build(&g)
                .err()
                .unwrap()
                .contains(streams::REVENUE_RECORDED)
        );
    }

    // ----- subscriptions -----

    fn subs() -> Arc<dyn Handler> {
        Subscriptions::build(&group(
            "financial.subscriptions",
            "financial.subscriptions",
            &[],
            "",
        ))
        .unwrap()
    }

    fn mrr_delta(h: &Arc<dyn Handler>, e: &Event, old_price: Reply) -> Option<i64> {
        let (ops, emit) = done(
            h.step(e, &[vec![int(1), old_price, int(1), int(1)]])
                .unwrap(),
        );
        assert!(emit.is_empty());
        assert!(ops.len() <= 1);
        ops.first().map(|o| {
            assert_eq!((o.cmd(), o.key()), ("INCRBY", "astra:financial:{subs}:mrr"));
            args(o)[0].parse().unwrap()
        })
    }

    #[test]
    fn started_swaps_the_price_in_one_round() {
        let h = subs();
        let e = event(
            streams::SUBSCRIPTION_CHANGED,
            &sub(SubscriptionAction::Started, 19.99),
        );
        let ops = more(h.step(&e, &[]).unwrap());
        let shape: Vec<_> = ops.iter().map(|o| (o.cmd(), o.key(), args(o))).collect();
        assert_eq!(
            shape,
            vec![
                (
                    "SADD",
                    "astra:financial:{subs}:active",
                    vec!["u1".to_string()]
                ),
                ("HGET", "astra:financial:{subs}:price", vec!["u1".into()]),
                (
                    "HSET",
                    "astra:financial:{subs}:price",
                    vec!["u1".into(), "1999".into()]
                ),
                (
                    "HSET",
                    "astra:financial:{subs}:plan",
                    vec!["u1".into(), "pro".into()]
                ),
            ]
        );
        // New subscriber: MRR += price.
        assert_eq!(mrr_delta(&h, &e, Reply::Nil), Some(1999));
        // Plan change while active (was 9.99): MRR += difference.
        assert_eq!(mrr_delta(&h, &e, text("999")), Some(1000));
        // Downgrade from 29.99.
        assert_eq!(mrr_delta(&h, &e, text("2999")), Some(-1000));
        // Same price again (replayed start, or a duplicate): nothing.
        assert_eq!(mrr_delta(&h, &e, text("1999")), None);
    }

    #[test]
    fn renewal_keeps_or_makes_the_user_active() {
        let h = subs();
        let e = event(
            streams::SUBSCRIPTION_CHANGED,
            &sub(SubscriptionAction::Renewed, 19.99),
        );
        let ops = more(h.step(&e, &[]).unwrap());
        assert_eq!((ops[0].cmd(), ops[2].cmd()), ("SADD", "HSET"));
        assert_eq!(mrr_delta(&h, &e, text("1999")), None);
        // Renewal after a missed start: becomes active, MRR += price.
        assert_eq!(mrr_delta(&h, &e, Reply::Nil), Some(1999));
    }

    #[test]
    fn cancellation_removes_the_price_it_reads() {
        let h = subs();
        let e = event(
            streams::SUBSCRIPTION_CHANGED,
            &sub(SubscriptionAction::Cancelled, 19.99),
        );
        let ops = more(h.step(&e, &[]).unwrap());
        let shape: Vec<_> = ops.iter().map(|o| (o.cmd(), o.key(), args(o))).collect();
        assert_eq!(
            shape,
            vec![
                (
                    "SREM",
                    "astra:financial:{subs}:active",
                    vec!["u1".to_string()]
                ),
                ("HGET", "astra:financial:{subs}:price", vec!["u1".into()]),
                ("HDEL", "astra:financial:{subs}:price", vec!["u1".into()]),
                ("HDEL", "astra:financial:{subs}:plan", vec!["u1".into()]),
            ]
        );
        // The stored price is what leaves MRR, not the event's price.
        assert_eq!(mrr_delta(&h, &e, text("2499")), Some(-2499));
        // Cancelling someone not active: nothing.
        assert_eq!(mrr_delta(&h, &e, Reply::Nil), None);
    }

    #[test]
    fn mrr_deltas_telescope_under_interleaving() {
        // u1 active at 10.00; a plan change to 20.00 (A) and a cancellation (B) are handled
        // by two consumers. Round 1s are atomic; round 2s land in any order.
        let h = subs();
        let a = event(
            streams::SUBSCRIPTION_CHANGED,
            &sub(SubscriptionAction::Started, 20.0),
        );
        let b = event(
            streams::SUBSCRIPTION_CHANGED,
            &sub(SubscriptionAction::Cancelled, 20.0),
        );
        let mut mrr = 1000i64;
        // A's round 1 first (reads 1000, writes 2000), then B's (reads 2000, deletes).
        mrr += mrr_delta(&h, &b, text("2000")).unwrap_or(0);
        mrr += mrr_delta(&h, &a, text("1000")).unwrap_or(0);
        assert_eq!(mrr, 0, "cancelled last: no MRR left");
        // B's round 1 first (reads 1000, deletes), then A's (reads nil, writes 2000).
        let mut mrr = 1000i64;
        mrr += mrr_delta(&h, &a, Reply::Nil).unwrap_or(0);
        mrr += mrr_delta(&h, &b, text("1000")).unwrap_or(0);
        assert_eq!(mrr, 2000, "started last: active at the new price");
    }

    #[test]
    fn subscriptions_poison_and_options() {
        let h = subs();
        let s = SubscriptionChanged {
            user_id: "".into(),
            ..sub(SubscriptionAction::Started, 1.0)
        };
        assert!(
            poison_of(h.step(&event(streams::SUBSCRIPTION_CHANGED, &s), &[]))
                .contains("field `user_id`")
        );
        let m = poison_of(h.step(
            &event(
                streams::SUBSCRIPTION_CHANGED,
                &sub(SubscriptionAction::Started, -5.0),
            ),
            &[],
        ));
        assert!(m.contains("field `price_usd`"), "{m}");
        let m = poison_of(h.step(
            &event(streams::TRADE_EXECUTED, &trade("t", 1.0, 1.0, None)),
            &[],
        ));
        assert!(m.contains("unexpected stream"), "{m}");
        let e = event(
            streams::SUBSCRIPTION_CHANGED,
            &sub(SubscriptionAction::Started, 1.0),
        );
        let m = poison_of(h.step(&e, &[vec![int(1), text("abc"), int(1), int(1)]]));
        assert!(m.contains("HGET price"), "{m}");
        let g = group(
            "financial.subscriptions",
            "financial.subscriptions",
            &[],
            "x = 1",
        );
        assert!(
            Subscriptions::build(&g)
                .err()
                .unwrap()
                .contains("unknown option `x`")
        );
    }

    // ----- compliance -----

    fn compliance(options: &str) -> Result<Arc<dyn Handler>, String> {
        Compliance::build(&group(
            "financial.compliance",
            "financial.compliance",
            &[streams::COMPLIANCE_FLAGGED],
            options,
        ))
    }

    fn flags(h: &Arc<dyn Handler>, e: &Event, count: i64) -> (Vec<Op>, Vec<ComplianceFlagged>) {
        let (ops, emit) = done(h.step(e, &[vec![int(count), int(1)]]).unwrap());
        let f = emit
            .iter()
            .map(|x| {
                assert_eq!(x.stream, streams::COMPLIANCE_FLAGGED);
                decode(x)
            })
            .collect();
        (ops, f)
    }

    #[test]
    fn compliance_counts_trades_per_fixed_window() {
        let h = compliance("").unwrap();
        let e = event_at(
            streams::TRADE_EXECUTED,
            &trade("t1", 1.0, 10.0, None),
            T0 + 59_999,
        );
        let ops = more(h.step(&e, &[]).unwrap());
        let bucket = (T0 + 59_999) / 60_000;
        let key = format!("astra:financial:compliance:velocity:u1:{bucket}");
        assert_eq!(
            (ops[0].cmd(), ops[0].key(), args(&ops[0])),
            ("INCRBY", key.as_str(), vec!["1".to_string()])
        );
        assert_eq!(
            (ops[1].cmd(), ops[1].key(), args(&ops[1])),
            ("EXPIRE", key.as_str(), vec!["3660".to_string()])
        );
        // The next ms starts a new window (T0 is a multiple of 60s).
        let e = event_at(
            streams::TRADE_EXECUTED,
            &trade("t2", 1.0, 10.0, None),
            T0 + 60_000,
        );
        let ops = more(h.step(&e, &[]).unwrap());
        assert_eq!(
            ops[0].key(),
            format!("astra:financial:compliance:velocity:u1:{}", bucket + 1)
        );
        assert_eq!(velocity_bucket(-1, 60_000), -1);
    }

    #[test]
    fn velocity_flags_once_at_the_threshold() {
        let h = compliance("").unwrap();
        let e = event(streams::TRADE_EXECUTED, &trade("t20", 1.0, 10.0, None));
        assert_eq!(flags(&h, &e, 19), (vec![], vec![]));
        let (ops, f) = flags(&h, &e, 20);
        assert_eq!(ops.len(), 1);
        assert_eq!(
            (ops[0].cmd(), ops[0].key()),
            ("HINCRBY", "astra:financial:compliance:flags:u1")
        );
        assert_eq!(args(&ops[0]), ["velocity", "1"]);
        assert_eq!(
            f,
            vec![ComplianceFlagged {
                user_id: "u1".into(),
                reason: "velocity".into(),
                trade_id: "t20".into(),
                notional_cents: 1000,
                trades_in_window: Some(20),
            }]
        );
        // The 21st trade of the window (another consumer's, say) does not re-flag.
        assert_eq!(flags(&h, &e, 21), (vec![], vec![]));
    }

    #[test]
    fn large_trades_flag_at_the_threshold() {
        let h = compliance("").unwrap();
        let below = event(streams::TRADE_EXECUTED, &trade("t1", 1.0, 49_999.99, None));
        assert_eq!(flags(&h, &below, 1), (vec![], vec![]));
        let at = event(streams::TRADE_EXECUTED, &trade("t2", 2.0, 25_000.0, None));
        let (ops, f) = flags(&h, &at, 1);
        assert_eq!(args(&ops[0]), ["large_trade", "1"]);
        assert_eq!(
            f,
            vec![ComplianceFlagged {
                user_id: "u1".into(),
                reason: "large_trade".into(),
                trade_id: "t2".into(),
                notional_cents: 5_000_000,
                trades_in_window: None,
            }]
        );
    }

    #[test]
    fn one_trade_can_raise_both_flags() {
        let h = compliance("").unwrap();
        let e = event(streams::TRADE_EXECUTED, &trade("t", 1.0, 60_000.0, None));
        let (ops, f) = flags(&h, &e, 20);
        let fields: Vec<_> = ops.iter().map(|o| args(o)[0].clone()).collect();
        assert_eq!(fields, ["large_trade", "velocity"]);
        let reasons: Vec<_> = f
            .iter()
            .map(|x| (x.reason.as_str(), x.trades_in_window))
            .collect();
        assert_eq!(reasons, [("large_trade", None), ("velocity", Some(20))]);
    }

    #[test]
    fn compliance_options_and_poison() {
        let h = compliance("large_trade_usd = 1000\nvelocity_trades = 3\nvelocity_window = \"5m\"")
            .unwrap();
        let e = event(streams::TRADE_EXECUTED, &trade("t", 1.0, 1_000.0, None));
        let ops = more(h.step(&e, &[]).unwrap());
        assert_eq!(
            ops[0].key(),
            format!("astra:financial:compliance:velocity:u1:{}", T0 / 300_000)
        );
        assert_eq!(args(&ops[1]), ["3900"]);
        let (_, f) = flags(&h, &e, 3);
        assert_eq!(f.len(), 2);
        assert_eq!(flags(&h, &e, 2).1.len(), 1);
        // Sub-second windows expire after whole seconds.
        let h2 = compliance("velocity_window = \"1500ms\"").unwrap();
        assert_eq!(args(&more(h2.step(&e, &[]).unwrap())[1]), ["3602"]);
        assert!(
            compliance("velocity_trades = 0")
                .err()
                .unwrap()
                .contains("option `velocity_trades`")
        );
        assert!(
            compliance("velocity_window = \"fast\"")
                .err()
                .unwrap()
                .contains("option `velocity_window`")
        );
        assert!(
            compliance("large_trade_usd = 1.5")
                .err()
                .unwrap()
                .contains("option `large_trade_usd`")
        );
        assert!(
            compliance("window = \"1m\"")
                .err()
                .unwrap()
                .contains("unknown option `window`")
        );
        let g = group("financial.compliance", "financial.compliance", &[], "");
        assert!(
            Compliance::build(&g)
                .err()
                .unwrap()
                .contains(streams::COMPLIANCE_FLAGGED)
        );
        let h = compliance("").unwrap();
        let m = poison_of(h.step(
            &event(streams::TRADE_EXECUTED, &trade("t", 0.0, 1.0, None)),
            &[],
        ));
        assert!(m.contains("field `quantity`"), "{m}");
        let m = poison_of(h.step(&event(streams::SALE_COMPLETED, &nft_sale(1.0)), &[]));
        assert!(m.contains("unexpected stream"), "{m}");
        let m = poison_of(h.step(&e, &[vec![Reply::Nil, int(1)]]));
        assert!(m.contains("INCRBY velocity"), "{m}");
        let names: Vec<_> = handlers().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "financial.revenue_tracking",
                "financial.subscriptions",
                "financial.compliance"
            ]
        );
    }
}
