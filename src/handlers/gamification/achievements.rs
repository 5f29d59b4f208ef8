//! `gamification.achievements`: unlocks achievements, each once per user.

use std::sync::Arc;

use super::{check_level_up, check_xp_awarded, trade_notional_cents};
use crate::events::{AchievementUnlocked, LevelUp, TradeExecuted, XpAwarded, streams};
use crate::group::GroupConfig;
use crate::handler::{Emit, Event, Handler, HandlerError, Op, Reply, Step};
use crate::handlers::support::{deny_unknown_options, reply_int, unexpected_rounds};
use crate::handlers::typed::{Reject, TypedHandler, input};

/// Every achievement `gamification.achievements` can unlock.
pub const ACHIEVEMENTS: [&str; 7] = [
    "first_trade",
    "trades_10",
    "trades_100",
    "volume_100k",
    "level_5",
    "level_10",
    "xp_10k",
];

/// Traded notional (cents) that unlocks `volume_100k`: 100,000 USD.
pub const VOLUME_100K_CENTS: i64 = 10_000_000;

/// Total XP that unlocks `xp_10k`.
pub const XP_10K: i64 = 10_000;

/// Set of the achievements a user has unlocked: `astra:gamification:achievements:<user>`.
pub fn achievements_key(user: &str) -> String {
    format!("astra:gamification:achievements:{user}")
}

/// Hash of a user's trade stats kept by `gamification.achievements`:
/// `astra:gamification:trade_stats:<user>`, fields `trades` (count) and `volume_cents`.
pub fn trade_stats_key(user: &str) -> String {
    format!("astra:gamification:trade_stats:{user}")
}

input! {
    /// What `gamification.achievements` reads.
    pub enum AchievementsInput {
        streams::XP_AWARDED => Xp(XpAwarded),
        streams::LEVEL_UP => LevelUp(LevelUp),
        streams::TRADE_EXECUTED => Trade(TradeExecuted),
    }
}

/// `gamification.achievements`: unlocks achievements, each once per user.
///
/// Rules (the "crossing" decides what to try):
/// - trade (`astra.trading.trade_executed.v1`): round 1 `HINCRBY` the user's `trades` by 1
///   and `volume_cents` by the notional; `trades` = 1 → `first_trade`, = 10 → `trades_10`,
///   = 100 → `trades_100`; `volume_cents` crossing 10,000,000 (100,000 USD; `old < T <= new`,
///   `old = new − notional`) → `volume_100k`;
/// - `astra.gamification.level_up.v1`: `from < 5 <= to` → `level_5`, `from < 10 <= to` →
///   `level_10`;
/// - `astra.gamification.xp_awarded.v1`: `total − amount < 10,000 <= total` → `xp_10k`.
///
/// Then one round `SADD`s each candidate to the user's achievement set, and only the
/// members `SADD` answered 1 for are new (so the set decides, and an achievement is
/// unlocked once per user even if two events try it at the same time).
///
/// Keys: [`achievements_key`] (set of achievement names), [`trade_stats_key`] (hash with
/// `trades`, `volume_cents`; this handler's own counts, independent of the trading domain).
///
/// Emits `astra.gamification.achievement_unlocked.v1` ([`AchievementUnlocked`]) per newly
/// unlocked achievement.
///
/// Options: none.
///
/// Poison: missing/mistyped fields, empty `user_id`, invalid trade numbers, negative
/// `amount`, a level-up whose `to <= from`.
pub struct Achievements;

impl Achievements {
    const NAME: &'static str = "gamification.achievements";

    /// Builds from the group's options (it has none).
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(g, &[])?;
        Ok(Arc::new(Achievements))
    }

    /// Candidates from a level-up.
    pub fn level_candidates(from: u32, to: u32) -> Vec<&'static str> {
        [(5, "level_5"), (10, "level_10")]
            .into_iter()
            .filter(|(l, _)| from < *l && *l <= to)
            .map(|(_, a)| a)
            .collect()
    }

    /// Candidates from the trade-stats replies (new count, new volume, this trade's notional).
    pub fn trade_candidates(trades: i64, volume_cents: i64, notional: i64) -> Vec<&'static str> {
        let mut v = vec![];
        match trades {
            1 => v.push("first_trade"),
            10 => v.push("trades_10"),
            100 => v.push("trades_100"),
            _ => {}
        }
        if volume_cents - notional < VOLUME_100K_CENTS && VOLUME_100K_CENTS <= volume_cents {
            v.push("volume_100k");
        }
        v
    }

    /// `SADD` round at index `at` for `candidates`, then the emits.
    fn unlock(
        user: &str,
        candidates: &[&'static str],
        rounds: &[Vec<Reply>],
        at: usize,
    ) -> Result<Step, HandlerError> {
        if candidates.is_empty() {
            return Ok(Step::nothing());
        }
        match rounds.len() {
            n if n == at => Ok(Step::More(
                candidates
                    .iter()
                    .map(|a| Op::sadd(achievements_key(user), a))
                    .collect(),
            )),
            n if n == at + 1 => {
                let mut emit = vec![];
                for (i, a) in candidates.iter().enumerate() {
                    if reply_int(rounds, at, i, "SADD achievement")? == 1 {
                        emit.push(Emit::new(
                            streams::ACHIEVEMENT_UNLOCKED,
                            &AchievementUnlocked {
                                user_id: user.to_string(),
                                achievement: a.to_string(),
                            },
                        ));
                    }
                }
                Ok(Step::Done { ops: vec![], emit })
            }
            _ => Err(unexpected_rounds(Self::NAME, rounds)),
        }
    }
}

impl TypedHandler for Achievements {
    type Input = AchievementsInput;

    const REJECT: Reject = Reject::Group(Self::NAME);

    fn decide(
        &self,
        input: AchievementsInput,
        _: &Event,
        rounds: &[Vec<Reply>],
    ) -> Result<Step, HandlerError> {
        match input {
            AchievementsInput::Trade(t) => {
                let notional = trade_notional_cents(&t)?;
                if rounds.is_empty() {
                    let key = trade_stats_key(&t.user_id);
                    return Ok(Step::More(vec![
                        Op::hincrby(&key, "trades", 1),
                        Op::hincrby(&key, "volume_cents", notional),
                    ]));
                }
                let trades = reply_int(rounds, 0, 0, "HINCRBY trades")?;
                let volume = reply_int(rounds, 0, 1, "HINCRBY volume_cents")?;
                let candidates = Self::trade_candidates(trades, volume, notional);
                Self::unlock(&t.user_id, &candidates, rounds, 1)
            }
            AchievementsInput::LevelUp(l) => {
                check_level_up(&l)?;
                Self::unlock(&l.user_id, &Self::level_candidates(l.from, l.to), rounds, 0)
            }
            AchievementsInput::Xp(x) => {
                check_xp_awarded(&x)?;
                let crossed = x.total - x.amount < XP_10K && XP_10K <= x.total;
                let candidates: &[&'static str] = if crossed { &["xp_10k"] } else { &[] };
                Self::unlock(&x.user_id, candidates, rounds, 0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::gamification::fixtures::*;
    use crate::handlers::testing::{args, done, more, poison_of as poison_reason};
    use crate::handlers::testing::{decode, event, group, int, json_event};

    fn ach() -> Achievements {
        Achievements
    }

    fn unlocked(emit: &[Emit]) -> Vec<String> {
        emit.iter()
            .inspect(|e| assert_eq!(e.stream, streams::ACHIEVEMENT_UNLOCKED))
            .map(|e| decode::<AchievementUnlocked>(e).achievement)
            .collect()
    }

    #[test]
    fn trade_counts_and_volume_unlock_at_exact_values() {
        assert_eq!(Achievements::trade_candidates(1, 500, 500), ["first_trade"]);
        assert!(Achievements::trade_candidates(2, 1_000, 500).is_empty());
        assert_eq!(
            Achievements::trade_candidates(10, 1_000, 500),
            ["trades_10"]
        );
        assert!(Achievements::trade_candidates(11, 1_000, 500).is_empty());
        assert_eq!(
            Achievements::trade_candidates(100, 1_000, 500),
            ["trades_100"]
        );
        assert!(Achievements::trade_candidates(101, 1_000, 500).is_empty());
        // Volume: 9,999,999 → 10,000,000 crosses; 10,000,000 → 10,000,001 does not.
        assert_eq!(
            Achievements::trade_candidates(5, 10_000_000, 1),
            ["volume_100k"]
        );
        assert!(Achievements::trade_candidates(5, 10_000_001, 1).is_empty());
        assert!(Achievements::trade_candidates(5, 9_999_999, 9_999_999).is_empty());
        assert_eq!(
            Achievements::trade_candidates(1, 20_000_000, 20_000_000),
            ["first_trade", "volume_100k"]
        );
    }

    #[test]
    fn trade_rounds_count_then_sadd_then_emit_only_new() {
        let h = ach();
        let ev = event(streams::TRADE_EXECUTED, &trade("alice", 2.0, 50_000.0));
        let ops = more(h.step(&ev, &[]).unwrap());
        assert_eq!(ops.len(), 2);
        assert_eq!(
            (ops[0].cmd(), ops[0].key()),
            ("HINCRBY", "astra:gamification:trade_stats:alice")
        );
        assert_eq!(args(&ops[0]), ["trades", "1"]);
        assert_eq!(args(&ops[1]), ["volume_cents", "10000000"]);
        let r0 = vec![int(1), int(10_000_000)];
        let ops = more(h.step(&ev, std::slice::from_ref(&r0)).unwrap());
        assert_eq!(ops.len(), 2);
        assert!(
            ops.iter()
                .all(|o| o.cmd() == "SADD" && o.key() == "astra:gamification:achievements:alice")
        );
        assert_eq!(args(&ops[0]), ["first_trade"]);
        assert_eq!(args(&ops[1]), ["volume_100k"]);
        // first_trade was already in the set (e.g. the trade count was reset): only the new one.
        let (ops, emit) = done(h.step(&ev, &[r0.clone(), vec![int(0), int(1)]]).unwrap());
        assert!(ops.is_empty());
        assert_eq!(unlocked(&emit), ["volume_100k"]);
        assert_eq!(decode::<AchievementUnlocked>(&emit[0]).user_id, "alice");
        // No candidate: done after the counting round.
        assert_eq!(
            h.step(&ev, &[vec![int(2), int(20_000_000)]]).unwrap(),
            Step::nothing()
        );
        poison_reason(h.step(&ev, &[r0, vec![int(1), int(1)], vec![]]));
    }

    #[test]
    fn level_achievements_from_level_up_crossings() {
        assert!(Achievements::level_candidates(1, 4).is_empty());
        assert_eq!(Achievements::level_candidates(4, 5), ["level_5"]);
        assert!(Achievements::level_candidates(5, 9).is_empty());
        assert_eq!(Achievements::level_candidates(9, 10), ["level_10"]);
        assert_eq!(
            Achievements::level_candidates(3, 12),
            ["level_5", "level_10"]
        );
        assert!(Achievements::level_candidates(10, 11).is_empty());

        let h = ach();
        let up = LevelUp {
            user_id: "bob".into(),
            from: 4,
            to: 5,
            total_xp: 1_600,
        };
        let ev = event(streams::LEVEL_UP, &up);
        let ops = more(h.step(&ev, &[]).unwrap());
        assert_eq!(
            ops,
            vec![Op::sadd("astra:gamification:achievements:bob", "level_5")]
        );
        let (_, emit) = done(h.step(&ev, &[vec![int(1)]]).unwrap());
        assert_eq!(unlocked(&emit), ["level_5"]);
        // The same SADD answering 0 (already unlocked): nothing is emitted.
        let (_, emit) = done(h.step(&ev, &[vec![int(0)]]).unwrap());
        assert!(emit.is_empty());
        let ev = event(
            streams::LEVEL_UP,
            &LevelUp {
                from: 5,
                to: 6,
                ..up.clone()
            },
        );
        assert_eq!(h.step(&ev, &[]).unwrap(), Step::nothing());
        let ev = event(
            streams::LEVEL_UP,
            &LevelUp {
                from: 6,
                to: 6,
                ..up.clone()
            },
        );
        assert!(poison_reason(h.step(&ev, &[])).contains("`to`"));
        let ev = event(
            streams::LEVEL_UP,
            &LevelUp {
                from: 0,
                to: 6,
                ..up
            },
        );
        assert!(poison_reason(h.step(&ev, &[])).contains("`from`"));
    }

    #[test]
    fn xp_10k_when_the_total_crosses_it_once() {
        let h = ach();
        let awards = [
            (100, 9_999, false),
            (1, 10_000, true),
            (5, 10_005, false),
            (20_000, 30_000, false),
            (25_000, 30_000, true),
        ];
        for (amount, total, crosses) in awards {
            let ev = event(streams::XP_AWARDED, &xp("carol", amount, total));
            let step = h.step(&ev, &[]).unwrap();
            if crosses {
                assert_eq!(
                    more(step),
                    vec![Op::sadd("astra:gamification:achievements:carol", "xp_10k")]
                );
                let (_, emit) = done(h.step(&ev, &[vec![int(1)]]).unwrap());
                assert_eq!(unlocked(&emit), ["xp_10k"]);
            } else {
                assert_eq!(step, Step::nothing(), "{amount}/{total}");
            }
        }
    }

    #[test]
    fn achievements_options_and_poison() {
        let g = |o: &str| group("x", "gamification.achievements", &[], o);
        assert!(Achievements::build(&g("")).is_ok());
        let err = Achievements::build(&g("threshold = 1")).err().unwrap();
        assert!(err.contains("unknown option `threshold`"), "{err}");
        let h = ach();
        let r = poison_reason(h.step(&event(streams::TRADE_EXECUTED, &trade("a", -2.0, 1.0)), &[]));
        assert!(r.contains("quantity"), "{r}");
        let r = poison_reason(h.step(&event(streams::XP_AWARDED, &xp("a", -5, 1)), &[]));
        assert!(r.contains("amount"), "{r}");
        let missing = json_event(
            streams::LEVEL_UP,
            r#"{"user_id":"a","from":1,"total_xp":5}"#,
        );
        assert!(poison_reason(h.step(&missing, &[])).contains("to"));
        let r = poison_reason(h.step(&event(streams::INTERACTION, &()), &[]));
        assert!(r.contains("does not read"), "{r}");
    }
}
