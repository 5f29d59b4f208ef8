//! `financial.revenue_tracking`: revenue per UTC day and source.

use std::sync::Arc;

use super::*;
use crate::events::{
    RevenueRecorded, SaleCompleted, SubscriptionAction, SubscriptionChanged, TradeExecuted,
    cents_to_usd, streams,
};
use crate::group::GroupConfig;
use crate::handler::{Emit, Event, Handler, HandlerError, Op, Reply, Step};
use crate::handlers::support::{deny_unknown_options, option, require_publishes};
use crate::handlers::trading::validate_trade;
use crate::handlers::typed::{Reject, TypedHandler, input};

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
/// Poison: invalid trades (see [`validate_trade`]); empty `user_id`,
/// `plan`, `sale_id` or `seller_id`; a price that is not a finite number ≥ 0; another stream.
pub struct RevenueTracking {
    default_fee_bps: u32,
    nft_fee_bps: u32,
    retain_secs: i64,
}

input! {
    /// What `financial.revenue_tracking` reads.
    pub enum RevenueInput {
        streams::TRADE_EXECUTED => Trade(TradeExecuted),
        streams::SUBSCRIPTION_CHANGED => Subscription(SubscriptionChanged),
        streams::SALE_COMPLETED => Sale(SaleCompleted),
    }
}

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
    fn revenue(
        &self,
        input: RevenueInput,
    ) -> Result<Option<(&'static str, i64, String)>, HandlerError> {
        match input {
            RevenueInput::Trade(t) => {
                let v = validate_trade(t)?;
                let fee = v
                    .fee_cents
                    .unwrap_or_else(|| bps_of(v.notional_cents, self.default_fee_bps));
                Ok(Some((SOURCE_TRADE_FEE, fee, v.trade.user_id)))
            }
            RevenueInput::Subscription(s) => {
                let (s, cents) = subscription(s)?;
                Ok(match s.action {
                    SubscriptionAction::Started | SubscriptionAction::Renewed => {
                        Some((SOURCE_SUBSCRIPTION, cents, s.user_id))
                    }
                    SubscriptionAction::Cancelled => None,
                })
            }
            RevenueInput::Sale(s) => {
                let (s, cents) = sale(s)?;
                Ok(Some((
                    SOURCE_NFT_FEE,
                    bps_of(cents, self.nft_fee_bps),
                    s.seller_id,
                )))
            }
        }
    }
}

impl TypedHandler for RevenueTracking {
    type Input = RevenueInput;

    const REJECT: Reject = Reject::Listing;

    fn decide(
        &self,
        input: RevenueInput,
        ev: &Event,
        _: &[Vec<Reply>],
    ) -> Result<Step, HandlerError> {
        let Some((source, cents, user_id)) = self.revenue(input)? else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::financial::fixtures::*;
    use crate::handlers::testing::{args, done, poison_of};
    use crate::handlers::testing::{decode, event, event_at, group, json_event};

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
}
