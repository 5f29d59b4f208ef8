//! `trading.risk_management`: rolling per-user gross exposure with a limit.

use std::sync::Arc;

use super::{ValidTrade, exposure_key, exposure_member};
use crate::events::{RiskAlert, streams};
use crate::group::GroupConfig;
use crate::handler::{Emit, Event, Handler, HandlerError, Op, Reply, Step};
use crate::handlers::support::{
    WINDOW, deny_unknown_options, duration_option, int_reply, option, poison, require_publishes,
    round,
};
use crate::handlers::typed::{Reject, TypedHandler};

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
/// Poison: see [`validate_trade`](super::validate_trade).
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
        let window = duration_option(g, "window", "1h", WINDOW)?;
        let window_ms = window.as_millis() as i64;
        Ok(Arc::new(RiskManagement {
            limit_cents,
            window_ms,
            window_secs: window.as_secs(),
            ttl_secs: window.as_secs() as i64 + 1 + 86_400,
        }))
    }
}

impl TypedHandler for RiskManagement {
    type Input = ValidTrade;

    const REJECT: Reject = Reject::Listing;

    fn decide(
        &self,
        v: ValidTrade,
        ev: &Event,
        rounds: &[Vec<Reply>],
    ) -> Result<Step, HandlerError> {
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
    use crate::events::Side;

    use crate::handlers::testing::{args, done, more, poison_of};
    use crate::handlers::testing::{decode, event_at, group, int, text};
    use crate::handlers::trading::fixtures::*;

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
