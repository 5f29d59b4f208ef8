//! `financial.subscriptions`: active subscribers and monthly recurring revenue (MRR).

use std::sync::Arc;

use super::*;
use crate::events::{SubscriptionAction, SubscriptionChanged};
use crate::group::GroupConfig;
use crate::handler::{Event, Handler, HandlerError, Op, Reply, Step};
use crate::handlers::support::{deny_unknown_options, int_reply, round};
use crate::handlers::typed::{Reject, TypedHandler};

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

impl TypedHandler for Subscriptions {
    type Input = SubscriptionChanged;

    const REJECT: Reject = Reject::Listing;

    fn decide(
        &self,
        s: SubscriptionChanged,
        _: &Event,
        rounds: &[Vec<Reply>],
    ) -> Result<Step, HandlerError> {
        let (s, cents) = subscription(s)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::streams;

    use crate::handlers::financial::fixtures::*;
    use crate::handlers::testing::{args, done, more, poison_of};
    use crate::handlers::testing::{event, group, int, text};

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
}
