//! `trading.risk_management`: rolling per-user gross exposure with a limit.

use std::sync::Arc;

use super::{ValidTrade, exposure_key, exposure_member, exposure_sum_key};
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
/// newest trade `ts` of the user handled so far (for trades that arrive in order, `T` is
/// this trade's own `ts`: "the last `window` up to and including this trade").
///
/// State: [`exposure_key`]`(user)` (sorted set scored by `ts`, member
/// `<cents>:<trade_id>`) and its running sum [`exposure_sum_key`]`(user)`, so a trade
/// costs the same whatever the user's history (the window is never read whole). Three
/// rounds, each atomic:
/// 1. `ZADD ts member` (0: the trade was seen before, it adds nothing);
///    `ZRANGEBYSCORE -inf (ts − window) WITHSCORES` + `ZREMRANGEBYSCORE` of the same range
///    (the trades leaving the window, removed once: whichever handler removes one
///    subtracts it); `ZREVRANGE 0 0 WITHSCORES` (the newest trade, `T`); `EXPIRE`.
/// 2. `INCRBY sum (own − left)`, where `own` is this trade's notional unless it was seen
///    before or is older than `T − window` (a late trade outside the current window: it
///    is removed again with `ZREM` and counts nothing); `EXPIRE`.
/// 3. The decision, from INCRBY's atomic reply: `after` = the reply, `before` = `after −
///    (own − left)`.
///
/// Alert rule: emit `astra.trading.risk_alert.v1` ([`RiskAlert`]) iff
/// `before ≤ limit < after`: once per upward crossing of the exposure as it moves trade by
/// trade. A user who stays above gets none; once trades have left the window and the
/// exposure is back at or below the limit, the next trade that pushes it above alerts
/// again. Because each trade's change is one INCRBY, two consumers handling two trades of
/// one user concurrently are linearised by Redis: they cannot both report one crossing.
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

    /// What round 1 tells: (this trade's own contribution, the notionals that left).
    fn change(
        &self,
        v: &ValidTrade,
        ts: i64,
        key: &str,
        r: &[Reply],
    ) -> Result<(i64, i64, bool), HandlerError> {
        let added = int_reply(&r[0], "ZADD")? == 1;
        let left: i64 = parse_window(&r[1], key)?
            .iter()
            .fold(0i64, |acc, (_, c)| acc.saturating_add(*c));
        let newest = parse_window(&r[3], key)?
            .iter()
            .map(|(s, _)| *s)
            .max()
            .unwrap_or(ts)
            .max(ts);
        let start = newest.saturating_sub(self.window_ms);
        let inside = ts > start;
        let own = if added && inside { v.notional_cents } else { 0 };
        Ok((own, left, added && !inside))
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
        let sum = exposure_sum_key(&t.user_id);
        let member = exposure_member(v.notional_cents, &t.trade_id);
        let cutoff = ts.saturating_sub(self.window_ms);
        match rounds.len() {
            0 => Ok(Step::More(vec![
                Op::zadd(&key, ts, &member),
                Op::new(
                    "ZRANGEBYSCORE",
                    &key,
                    vec![
                        b"-inf".to_vec(),
                        cutoff.to_string().into_bytes(),
                        b"WITHSCORES".to_vec(),
                    ],
                ),
                Op::zremrangebyscore(&key, "-inf", cutoff),
                Op::zrevrange_withscores(&key, 0, 0),
                Op::expire(&key, self.ttl_secs),
            ])),
            1 => {
                let r = round(rounds, 0, 5)?;
                let (own, left, late) = self.change(&v, ts, &key, r)?;
                let mut ops = vec![
                    Op::incrby(&sum, own - left),
                    Op::expire(&sum, self.ttl_secs),
                ];
                if late {
                    ops.push(Op::new("ZREM", &key, vec![member.into_bytes()]));
                }
                Ok(Step::More(ops))
            }
            _ => {
                let r0 = round(rounds, 0, 5)?;
                let (own, left, _) = self.change(&v, ts, &key, r0)?;
                let r1 = rounds
                    .get(1)
                    .ok_or_else(|| poison("round 1: replies missing"))?;
                let after = int_reply(
                    r1.first()
                        .ok_or_else(|| poison("round 1: no INCRBY reply"))?,
                    "INCRBY",
                )?;
                let before = after - (own - left);
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

    /// (member, score) pairs as Redis returns them (scores as strings).
    fn entries(es: &[(i64, &str, i64)]) -> Reply {
        let mut v = vec![];
        for (cents, id, ts) in es {
            v.push(text(&exposure_member(*cents, id)));
            v.push(text(&ts.to_string()));
        }
        Reply::Array(v)
    }

    /// Round 0's replies: ZADD, the trades that left, ZREMRANGEBYSCORE, the newest, EXPIRE.
    fn r0(added: i64, left: &[(i64, &str, i64)], newest: (i64, &str, i64)) -> Vec<Reply> {
        vec![
            int(added),
            entries(left),
            int(left.len() as i64),
            entries(&[newest]),
            int(1),
        ]
    }

    /// Runs rounds 1 and 2 with `sum_after` as INCRBY's reply: (round 1 ops, alerts).
    fn run(
        h: &Arc<dyn Handler>,
        e: &Event,
        round0: Vec<Reply>,
        sum_after: i64,
    ) -> (Vec<Op>, Vec<RiskAlert>) {
        let ops = more(h.step(e, std::slice::from_ref(&round0)).unwrap());
        let (done_ops, emit) = done(h.step(e, &[round0, vec![int(sum_after), int(1)]]).unwrap());
        assert!(done_ops.is_empty());
        let alerts = emit
            .iter()
            .map(|x| {
                assert_eq!(x.stream, streams::RISK_ALERT);
                decode(x)
            })
            .collect();
        (ops, alerts)
    }

    fn tr(id: &str, usd: f64, ts: i64) -> Event {
        event_at(streams::TRADE_EXECUTED, &trade(id, Side::Buy, 1.0, usd), ts)
    }

    #[test]
    fn the_first_round_adds_prunes_and_finds_the_newest_without_reading_the_window() {
        let h = risk("").unwrap();
        // 2 × 25,000.50 = 50,001.00 USD
        let e = event_at(
            streams::TRADE_EXECUTED,
            &trade("t1", Side::Sell, 2.0, 25_000.5),
            T0,
        );
        let ops = more(h.step(&e, &[]).unwrap());
        let key = "astra:trading:exposure:u1";
        assert!(ops.iter().all(|o| o.key() == key));
        let cmds: Vec<&str> = ops.iter().map(|o| o.cmd()).collect();
        assert_eq!(
            cmds,
            [
                "ZADD",
                "ZRANGEBYSCORE",
                "ZREMRANGEBYSCORE",
                "ZREVRANGE",
                "EXPIRE"
            ]
        );
        assert_eq!(args(&ops[0]), ["1795262400000", "5000100:t1"]);
        assert_eq!(args(&ops[1]), ["-inf", "1795258800000", "WITHSCORES"]);
        assert_eq!(args(&ops[2]), ["-inf", "1795258800000"]);
        assert_eq!(args(&ops[3]), ["0", "0", "WITHSCORES"]);
        assert_eq!(args(&ops[4]), ["90001"]);
    }

    #[test]
    fn the_running_sum_moves_by_own_minus_what_left() {
        let h = risk("").unwrap();
        let e = tr("t2", 60_000.0, T0);
        let round0 = r0(
            1,
            &[(1_000_000, "t0", T0 - HOUR - 5)],
            (6_000_000, "t2", T0),
        );
        let (ops, _) = run(&h, &e, round0, 0);
        assert_eq!(ops[0].cmd(), "INCRBY");
        assert_eq!(ops[0].key(), "astra:trading:exposure_sum:u1");
        assert_eq!(args(&ops[0]), ["5000000"]);
        assert_eq!(ops[1].cmd(), "EXPIRE");
        assert_eq!(ops.len(), 2);
    }

    #[test]
    fn risk_alerts_only_strictly_above_the_limit() {
        let h = risk("").unwrap();
        // Exactly at the limit: 40,000 + 60,000 = 100,000 USD → no alert.
        let e = tr("t2", 60_000.0, T0);
        let (_, a) = run(&h, &e, r0(1, &[], (6_000_000, "t2", T0)), 10_000_000);
        assert!(a.is_empty());
        // One cent more crosses.
        let e = tr("t2", 60_000.01, T0);
        let (_, a) = run(&h, &e, r0(1, &[], (6_000_001, "t2", T0)), 10_000_001);
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
        // 60k, then t1 (+50k) crosses, t2 (+1k) follows while still above: only t1 alerts.
        let e1 = tr("t1", 50_000.0, T0);
        assert_eq!(
            run(&h, &e1, r0(1, &[], (5_000_000, "t1", T0)), 11_000_000)
                .1
                .len(),
            1
        );
        let e2 = tr("t2", 1_000.0, T0 + 5);
        assert!(
            run(&h, &e2, r0(1, &[], (100_000, "t2", T0 + 5)), 11_100_000)
                .1
                .is_empty()
        );
        // An hour later t0 and t1 leave as t3 (99k) comes: the sum drops to 100k + 99k −
        // 110k = 99k... at or below: nothing.
        let e3 = tr("t3", 99_000.0, T0 + HOUR + 5);
        let left = [(6_000_000, "t0", T0 - 10), (5_000_000, "t1", T0)];
        let (ops, a) = run(
            &h,
            &e3,
            r0(1, &left, (9_900_000, "t3", T0 + HOUR + 5)),
            10_000_000,
        );
        assert_eq!(args(&ops[0]), ["-1100000"]);
        assert!(a.is_empty());
        // ...and t4 pushes it above again: a new crossing alerts.
        let e4 = tr("t4", 2_000.0, T0 + HOUR + 6);
        let a = run(
            &h,
            &e4,
            r0(1, &[], (200_000, "t4", T0 + HOUR + 6)),
            10_200_000,
        )
        .1;
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].trade_id.as_str(), a[0].exposure_cents),
            ("t4", 10_200_000)
        );
    }

    #[test]
    fn concurrent_trades_of_one_user_cannot_both_alert() {
        let h = risk("").unwrap();
        // Prior exposure 90k; tA (+20k) and tB (+30k) are handled by two consumers. Their
        // INCRBYs are linearised: whichever runs second sees the other's.
        let ea = tr("tA", 20_000.0, T0);
        let eb = tr("tB", 30_000.0, T0 + 1);
        let a1 = run(&h, &ea, r0(1, &[], (2_000_000, "tA", T0)), 11_000_000).1;
        let b1 = run(&h, &eb, r0(1, &[], (3_000_000, "tB", T0 + 1)), 14_000_000).1;
        assert_eq!((a1.len(), b1.len()), (1, 0));
        let b2 = run(&h, &eb, r0(1, &[], (3_000_000, "tB", T0 + 1)), 12_000_000).1;
        let a2 = run(&h, &ea, r0(1, &[], (3_000_000, "tB", T0 + 1)), 14_000_000).1;
        assert_eq!((a2.len(), b2.len()), (0, 1));
    }

    #[test]
    fn a_late_trade_outside_the_current_window_counts_nothing_and_is_removed() {
        let h = risk("").unwrap();
        let old = tr("old", 50_000.0, T0 - 2 * HOUR);
        let (ops, a) = run(&h, &old, r0(1, &[], (11_000_000, "t9", T0)), 11_000_000);
        assert_eq!(args(&ops[0]), ["0"], "adds nothing");
        assert_eq!(ops[2].cmd(), "ZREM");
        assert_eq!(args(&ops[2]), ["5000000:old"]);
        assert!(a.is_empty(), "no alert about a moment that has passed");
        // A late trade still inside T's window counts and may cross.
        let late = tr("late", 50_000.0, T0 - HOUR / 2);
        let (ops, a) = run(&h, &late, r0(1, &[], (5_000_000, "t9", T0)), 14_000_000);
        assert_eq!(args(&ops[0]), ["5000000"]);
        assert_eq!(ops.len(), 2);
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn a_trade_seen_before_adds_nothing() {
        let h = risk("").unwrap();
        let e = tr("t1", 60_000.0, T0);
        // ZADD replied 0: the same trade was published twice; no second crossing.
        let (ops, a) = run(&h, &e, r0(0, &[], (6_000_000, "t1", T0)), 11_000_000);
        assert_eq!(args(&ops[0]), ["0"]);
        assert!(a.is_empty());
    }

    #[test]
    fn risk_rejects_malformed_state() {
        let h = risk("").unwrap();
        let e = tr("t1", 1.0, T0);
        let bad = Reply::Array(vec![text("nocents"), text("1")]);
        let m = poison_of(h.step(&e, &[vec![int(1), bad, int(0), entries(&[]), int(1)]]));
        assert!(
            m.contains("malformed member \"nocents\" in astra:trading:exposure:u1"),
            "{m}"
        );
        let odd = Reply::Array(vec![text("1:t1")]);
        assert!(
            poison_of(h.step(&e, &[vec![int(1), odd, int(0), entries(&[]), int(1)]]))
                .contains("odd length")
        );
    }

    #[test]
    fn risk_options() {
        let h = risk("limit_usd = 500\nwindow = \"10m\"").unwrap();
        let e = tr("t1", 500.01, T0);
        let ops = more(h.step(&e, &[]).unwrap());
        assert_eq!(args(&ops[2]), ["-inf", (T0 - 600_000).to_string().as_str()]);
        assert_eq!(args(&ops[4]), ["87001"]);
        let a = run(&h, &e, r0(1, &[], (50_001, "t1", T0)), 50_001).1;
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
