//! `gamification.xp_processing`: XP and level per user.

use std::sync::Arc;

use super::{level_for_xp, trade_notional_cents};
use crate::events::{Interaction, InteractionKind, LevelUp, TradeExecuted, XpAwarded, streams};
use crate::group::GroupConfig;
use crate::handler::{Emit, Event, Handler, HandlerError, Op, Reply, Step};
use crate::handlers::support::{
    deny_unknown_options, option, positive_option, reply_int, require_non_empty, unexpected_rounds,
};
use crate::handlers::typed::{Reject, TypedHandler, input};

/// Hash `user_id → total XP`, written by `gamification.xp_processing`.
pub fn xp_key() -> String {
    "astra:gamification:xp".to_string()
}

/// XP the actor of an interaction earns: like 1, comment 2, share 3, follow 1.
pub fn interaction_xp(kind: InteractionKind) -> i64 {
    match kind {
        InteractionKind::Like => 1,
        InteractionKind::Comment => 2,
        InteractionKind::Share => 3,
        InteractionKind::Follow => 1,
    }
}

input! {
    /// What `gamification.xp_processing` reads.
    pub enum XpInput {
        streams::TRADE_EXECUTED => Trade(TradeExecuted),
        streams::INTERACTION => Interaction(Interaction),
    }
}

/// `gamification.xp_processing`: XP and level per user.
///
/// Rules:
/// - a trade (`astra.trading.trade_executed.v1`) awards its `user_id`
///   `trade_base_xp + ⌊notional_usd / usd_per_xp⌋` XP, at most `trade_cap_xp`; the notional
///   is `quantity × price_usd` in integer cents;
/// - an interaction (`astra.social.interaction.v1`) awards its actor (`user_id`, not the
///   target) like 1, comment 2, share 3, follow 1 XP (self-interactions included);
/// - an award of 0 XP (possible with `trade_base_xp = 0` or `trade_cap_xp = 0`) changes
///   nothing and emits nothing;
/// - level `L` needs `100·(L−1)²` total XP ([`level_for_xp`]).
///
/// One round: `HINCRBY astra:gamification:xp <user> <amount>`. The old total is
/// `new − amount` from that one atomic reply, so concurrent awards to one user each see a
/// distinct `(old, new]` interval and a level threshold is reported exactly once.
///
/// Keys: [`xp_key`] (hash `user_id → XP`).
///
/// Emits `astra.gamification.xp_awarded.v1` ([`XpAwarded`]: `amount`, `total` after the
/// award, `level` after the award, `reason` = `trade`/`like`/`comment`/`share`/`follow`)
/// for every award, and, when the award crosses one or more level thresholds, one
/// `astra.gamification.level_up.v1` ([`LevelUp`]: `from` = level before, `to` = level after,
/// `total_xp`).
///
/// Options: `trade_base_xp` (10), `usd_per_xp` (100, ≥ 1), `trade_cap_xp` (500).
///
/// Poison: missing/mistyped fields, empty `user_id` (or `target_user_id`), `quantity` ≤ 0,
/// negative `price_usd`, non-finite numbers.
pub struct XpProcessing {
    trade_base_xp: i64,
    usd_per_xp: i64,
    trade_cap_xp: i64,
}

impl XpProcessing {
    const NAME: &'static str = "gamification.xp_processing";

    /// Builds from the group's options.
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        Ok(Arc::new(Self::from_config(g)?))
    }

    fn from_config(g: &GroupConfig) -> Result<XpProcessing, String> {
        deny_unknown_options(g, &["trade_base_xp", "usd_per_xp", "trade_cap_xp"])?;
        Ok(XpProcessing {
            trade_base_xp: i64::from(option::<u32>(g, "trade_base_xp", 10)?),
            usd_per_xp: i64::from(positive_option(g, "usd_per_xp", 100)?),
            trade_cap_xp: i64::from(option::<u32>(g, "trade_cap_xp", 500)?),
        })
    }

    /// XP for a trade of `notional_cents`.
    pub fn trade_xp(&self, notional_cents: i64) -> i64 {
        let by_volume = notional_cents.max(0) / (self.usd_per_xp * 100);
        self.trade_base_xp
            .saturating_add(by_volume)
            .min(self.trade_cap_xp)
    }

    /// (user, amount, reason) of the award an event earns.
    fn award(&self, input: XpInput) -> Result<(String, i64, &'static str), HandlerError> {
        match input {
            XpInput::Trade(t) => {
                let notional = trade_notional_cents(&t)?;
                Ok((t.user_id, self.trade_xp(notional), "trade"))
            }
            XpInput::Interaction(i) => {
                require_non_empty("user_id", &i.user_id)?;
                require_non_empty("target_user_id", &i.target_user_id)?;
                Ok((i.user_id, interaction_xp(i.kind), i.kind.as_str()))
            }
        }
    }
}

impl TypedHandler for XpProcessing {
    type Input = XpInput;

    const REJECT: Reject = Reject::Group(Self::NAME);

    fn decide(
        &self,
        input: XpInput,
        _: &Event,
        rounds: &[Vec<Reply>],
    ) -> Result<Step, HandlerError> {
        let (user, amount, reason) = self.award(input)?;
        if amount <= 0 {
            return Ok(Step::nothing());
        }
        match rounds.len() {
            0 => Ok(Step::More(vec![Op::hincrby(xp_key(), &user, amount)])),
            1 => {
                let total = reply_int(rounds, 0, 0, "HINCRBY xp")?;
                let from = level_for_xp(total - amount);
                let to = level_for_xp(total);
                let mut emit = vec![Emit::new(
                    streams::XP_AWARDED,
                    &XpAwarded {
                        user_id: user.clone(),
                        amount,
                        total,
                        level: to,
                        reason: reason.to_string(),
                    },
                )];
                if to > from {
                    emit.push(Emit::new(
                        streams::LEVEL_UP,
                        &LevelUp {
                            user_id: user,
                            from,
                            to,
                            total_xp: total,
                        },
                    ));
                }
                Ok(Step::Done { ops: vec![], emit })
            }
            _ => Err(unexpected_rounds(Self::NAME, rounds)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::gamification::fixtures::*;
    use crate::handlers::testing::{args, done, more, poison_of as poison_reason};
    use crate::handlers::testing::{decode, event, group, int, json_event};

    fn xp_handler(options: &str) -> XpProcessing {
        XpProcessing::from_config(&group(
            "gamification.xp_processing",
            "gamification.xp_processing",
            &[streams::XP_AWARDED, streams::LEVEL_UP],
            options,
        ))
        .unwrap()
    }

    /// Runs an award to completion given the HINCRBY reply.
    fn run_xp(h: &XpProcessing, ev: &Event, total: i64) -> (Op, Vec<Emit>) {
        let ops = more(h.step(ev, &[]).unwrap());
        assert_eq!(ops.len(), 1);
        let (final_ops, emit) = done(h.step(ev, &[vec![int(total)]]).unwrap());
        assert!(final_ops.is_empty());
        (ops[0].clone(), emit)
    }

    #[test]
    fn trade_xp_base_per_100_usd_and_cap() {
        let h = xp_handler("");
        assert_eq!(h.trade_xp(0), 10);
        assert_eq!(h.trade_xp(9_999), 10); // 99.99 USD
        assert_eq!(h.trade_xp(10_000), 11); // 100.00 USD
        assert_eq!(h.trade_xp(4_899_999), 499);
        assert_eq!(h.trade_xp(4_900_000), 500); // 49,000 USD: exactly the cap
        assert_eq!(h.trade_xp(4_910_000), 500); // 49,100 USD: 501 capped
        assert_eq!(h.trade_xp(i64::MAX), 500);
    }

    #[test]
    fn trade_award_uses_integer_cents_of_quantity_times_price() {
        let h = xp_handler("");
        // 0.1 × 1000.0 = 100.00000000000001 in f64 → 10,000 cents → 11 XP.
        let ev = event(streams::TRADE_EXECUTED, &trade("alice", 0.1, 1000.0));
        let (op, emit) = run_xp(&h, &ev, 11);
        assert_eq!(op.cmd(), "HINCRBY");
        assert_eq!(op.key(), "astra:gamification:xp");
        assert_eq!(args(&op), ["alice", "11"]);
        assert_eq!(emit.len(), 1);
        assert_eq!(emit[0].stream, streams::XP_AWARDED);
        let x: XpAwarded = decode(&emit[0]);
        assert_eq!(
            x,
            XpAwarded {
                user_id: "alice".into(),
                amount: 11,
                total: 11,
                level: 1,
                reason: "trade".into()
            }
        );
    }

    #[test]
    fn interactions_award_the_actor() {
        let h = xp_handler("");
        for (kind, amount) in [
            (InteractionKind::Like, 1),
            (InteractionKind::Comment, 2),
            (InteractionKind::Share, 3),
            (InteractionKind::Follow, 1),
        ] {
            let ev = event(streams::INTERACTION, &interaction("bob", "carol", kind));
            let (op, emit) = run_xp(&h, &ev, 50);
            assert_eq!(args(&op), ["bob".to_string(), amount.to_string()]);
            let x: XpAwarded = decode(&emit[0]);
            assert_eq!((x.user_id.as_str(), x.amount, x.total), ("bob", amount, 50));
            assert_eq!(x.reason, kind.as_str());
        }
    }

    #[test]
    fn level_up_exactly_at_the_threshold_and_only_once() {
        let h = xp_handler("");
        let ev = event(
            streams::INTERACTION,
            &interaction("bob", "carol", InteractionKind::Share),
        );
        // 96 → 99: no level-up.
        let (_, emit) = run_xp(&h, &ev, 99);
        assert_eq!(emit.len(), 1);
        // 97 → 100: exactly level 2.
        let (_, emit) = run_xp(&h, &ev, 100);
        assert_eq!(emit.len(), 2);
        assert_eq!(decode::<XpAwarded>(&emit[0]).level, 2);
        assert_eq!(emit[1].stream, streams::LEVEL_UP);
        assert_eq!(
            decode::<LevelUp>(&emit[1]),
            LevelUp {
                user_id: "bob".into(),
                from: 1,
                to: 2,
                total_xp: 100
            }
        );
        // 100 → 103: already level 2, nothing more.
        let (_, emit) = run_xp(&h, &ev, 103);
        assert_eq!(emit.len(), 1);
    }

    #[test]
    fn crossing_several_levels_emits_one_level_up() {
        let h = xp_handler("");
        let ev = event(streams::TRADE_EXECUTED, &trade("alice", 1.0, 49_000.0));
        let (op, emit) = run_xp(&h, &ev, 950);
        assert_eq!(args(&op), ["alice", "500"]);
        let ups: Vec<LevelUp> = emit
            .iter()
            .filter(|e| e.stream == streams::LEVEL_UP)
            .map(decode)
            .collect();
        // 450 (level 3) → 950 (level 4); and 0 → 500 crosses 100 and 400 at once.
        assert_eq!(ups.len(), 1);
        assert_eq!((ups[0].from, ups[0].to), (3, 4));
        let (_, emit) = run_xp(&h, &ev, 500);
        let up: LevelUp = decode(&emit[1]);
        assert_eq!((up.from, up.to, up.total_xp), (1, 3, 500));
    }

    #[test]
    fn concurrent_awards_report_a_crossing_once_in_either_order() {
        // Two consumers award 60 and 50 XP to a user at 40 XP. Whichever HINCRBY runs first,
        // each reply gives a disjoint (old, new] interval: exactly one crosses 100.
        let h = xp_handler("");
        let share = event(
            streams::INTERACTION,
            &interaction("u", "v", InteractionKind::Share),
        );
        let h60 = xp_handler("trade_base_xp = 60\ntrade_cap_xp = 60");
        let trade60 = event(streams::TRADE_EXECUTED, &trade("u", 1.0, 1.0));
        for (total_share, total_trade) in [(43, 103), (103, 100)] {
            let (_, a) = run_xp(&h, &share, total_share);
            let (_, b) = run_xp(&h60, &trade60, total_trade);
            let ups = a
                .iter()
                .chain(&b)
                .filter(|e| e.stream == streams::LEVEL_UP)
                .count();
            assert_eq!(ups, 1, "replies {total_share}/{total_trade}");
        }
    }

    #[test]
    fn zero_xp_awards_do_nothing() {
        let h = xp_handler("trade_base_xp = 0");
        let ev = event(streams::TRADE_EXECUTED, &trade("alice", 1.0, 99.99));
        assert_eq!(h.step(&ev, &[]).unwrap(), Step::nothing());
        let ev = event(streams::TRADE_EXECUTED, &trade("alice", 1.0, 100.0));
        assert_eq!(args(&more(h.step(&ev, &[]).unwrap())[0]), ["alice", "1"]);
    }

    #[test]
    fn xp_options() {
        let h = xp_handler("");
        assert_eq!(
            (h.trade_base_xp, h.usd_per_xp, h.trade_cap_xp),
            (10, 100, 500)
        );
        let h = xp_handler("trade_base_xp = 5\nusd_per_xp = 50\ntrade_cap_xp = 20");
        assert_eq!(h.trade_xp(100_000), 20); // 5 + 20 capped at 20
        assert_eq!(h.trade_xp(9_999), 6); // 5 + ⌊99.99 / 50⌋
        let g = |o: &str| group("x", "gamification.xp_processing", &[], o);
        let err = XpProcessing::build(&g("trade_xp = 1")).err().unwrap();
        assert!(err.contains("unknown option `trade_xp`"), "{err}");
        let err = XpProcessing::build(&g("usd_per_xp = 0")).err().unwrap();
        assert!(err.contains("usd_per_xp"), "{err}");
        let err = XpProcessing::build(&g("trade_base_xp = -1")).err().unwrap();
        assert!(err.contains("trade_base_xp"), "{err}");
        let err = XpProcessing::build(&g("trade_cap_xp = \"many\""))
            .err()
            .unwrap();
        assert!(err.contains("trade_cap_xp"), "{err}");
    }

    #[test]
    fn xp_poison() {
        let h = xp_handler("");
        let cases = [
            (trade("", 1.0, 1.0), "user_id"),
            (trade("a", 0.0, 1.0), "quantity"),
            (trade("a", f64::NAN, 1.0), "quantity"),
            (trade("a", 1.0, -1.0), "price_usd"),
            (trade("a", 1.0, f64::INFINITY), "price_usd"),
            (trade("a", 1e10, 1e10), "notional"),
        ];
        for (t, field) in cases {
            let r = poison_reason(h.step(&event(streams::TRADE_EXECUTED, &t), &[]));
            assert!(r.contains(field), "{r}");
        }
        let i = interaction("a", "", InteractionKind::Like);
        let r = poison_reason(h.step(&event(streams::INTERACTION, &i), &[]));
        assert!(r.contains("target_user_id"), "{r}");
        let missing = json_event(streams::INTERACTION, r#"{"user_id":"a","kind":"like"}"#);
        let r = poison_reason(h.step(&missing, &[]));
        assert!(r.contains("target_user_id"), "{r}");
        let bad_kind = json_event(
            streams::INTERACTION,
            r#"{"user_id":"a","target_user_id":"b","kind":"poke"}"#,
        );
        poison_reason(h.step(&bad_kind, &[]));
        let r = poison_reason(h.step(&event(streams::LEVEL_UP, &()), &[]));
        assert!(r.contains(streams::LEVEL_UP), "{r}");
        // A reply that is not an integer, or a round too many.
        let ev = event(
            streams::INTERACTION,
            &interaction("a", "b", InteractionKind::Like),
        );
        poison_reason(h.step(&ev, &[vec![Reply::Nil]]));
        poison_reason(h.step(&ev, &[vec![int(1)], vec![]]));
    }
}
