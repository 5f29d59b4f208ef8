//! `financial.compliance`: flags large trades and high trading velocity.

use std::sync::Arc;

use super::*;
use crate::events::{ComplianceFlagged, streams};
use crate::group::GroupConfig;
use crate::handler::{Emit, Event, Handler, HandlerError, Op, Reply, Step};
use crate::handlers::support::{
    WINDOW, deny_unknown_options, duration_option, int_reply, option, require_publishes, round,
};
use crate::handlers::trading::ValidTrade;
use crate::handlers::typed::{Reject, TypedHandler};

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
/// Poison: see [`validate_trade`](crate::handlers::trading::validate_trade).
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
        let window = duration_option(g, "velocity_window", "60s", WINDOW)?;
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

impl TypedHandler for Compliance {
    type Input = ValidTrade;

    const REJECT: Reject = Reject::Listing;

    fn decide(
        &self,
        v: ValidTrade,
        ev: &Event,
        rounds: &[Vec<Reply>],
    ) -> Result<Step, HandlerError> {
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
    use crate::handlers::financial::fixtures::*;
    use crate::handlers::testing::{args, done, more, poison_of};
    use crate::handlers::testing::{decode, event, event_at, group, int};

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
