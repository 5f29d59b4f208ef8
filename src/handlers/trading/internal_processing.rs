//! `trading.internal_processing`: per-user trade statistics and net positions.

use std::sync::Arc;

use super::{
    STATS_TRADES, STATS_VOLUME_CENTS, UNITS_PER_QUANTITY, ValidTrade, last_trade_key,
    last_trade_member, positions_key, stats_key,
};
use crate::events::{PositionUpdated, Side, streams};
use crate::group::GroupConfig;
use crate::handler::{Emit, Event, Handler, HandlerError, Op, Reply, Step};
use crate::handlers::support::{deny_unknown_options, int_reply, require_publishes, round};
use crate::handlers::typed::{Reject, TypedHandler};

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
/// Options: none. Poison: see [`validate_trade`](super::validate_trade).
pub struct InternalProcessing;

impl InternalProcessing {
    /// Builds from the group config (no options; must publish `position_updated`).
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(g, &[])?;
        require_publishes(g, streams::POSITION_UPDATED)?;
        Ok(Arc::new(InternalProcessing))
    }
}

impl TypedHandler for InternalProcessing {
    type Input = ValidTrade;

    const REJECT: Reject = Reject::Listing;

    fn decide(
        &self,
        v: ValidTrade,
        ev: &Event,
        rounds: &[Vec<Reply>],
    ) -> Result<Step, HandlerError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::SubscriptionChanged;
    use crate::events::TradeExecuted;
    use crate::handlers::testing::{args, done, more, poison_of};
    use crate::handlers::testing::{decode, event, group, int, json_event};
    use crate::handlers::trading::fixtures::*;
    use crate::handlers::trading::{LastTrade, decode_last_trade, handlers};

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
}
