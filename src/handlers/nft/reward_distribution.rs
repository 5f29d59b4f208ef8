//! `nft.reward_distribution`: badge rewards for levels and achievements, once per (user, reward).

use std::sync::Arc;

use super::*;
use crate::events::{AchievementUnlocked, LevelUp, RewardIssued, streams};
use crate::group::GroupConfig;
use crate::handler::{Emit, Event, Handler, HandlerError, Op, Reply, Step};
use crate::handlers::support::{
    deny_unknown_options, non_empty, option, poison, reply_int, too_many_rounds,
};
use crate::handlers::typed::{TypedHandler, input};

input! {
    /// What `nft.reward_distribution` reads.
    pub enum RewardInput {
        streams::ACHIEVEMENT_UNLOCKED => Achievement(AchievementUnlocked),
        streams::LEVEL_UP => LevelUp(LevelUp),
    }
}

/// `nft.reward_distribution`: issues badge rewards for levels and achievements, at most
/// once per (user, reward).
///
/// Rules:
/// - `gamification.level_up` from `from` to `to` grants every level tier `L` with
///   `from < L <= to`: `bronze_badge` at `bronze_level` (5), `silver_badge` at
///   `silver_level` (10), `gold_badge` at `gold_level` (20); the reason is `level_<L>`. A
///   jump 4 → 11 grants bronze and silver. `to <= from` or an empty `user_id` is poison.
/// - `gamification.achievement_unlocked` grants `<achievement>_badge`, reason
///   `<achievement>`. An empty `achievement` or `user_id` is poison.
///
/// Rounds: (1) one `SADD astra:nft:rewards:<user> <reward>` per granted reward; (2) for
/// each reward whose `SADD` replied 1 (newly added, so decided atomically even with two
/// consumers racing), emit `nft.reward_issued` and
/// `HINCRBY astra:nft:rewards_issued <user> <number issued>`. A reward the user already
/// holds emits nothing.
///
/// Keys: [`rewards_key`], [`rewards_issued_key`].
/// Emits: `astra.nft.reward_issued.v1` ([`RewardIssued`] `{user_id, reward, reason}`).
/// Options: `bronze_level` (5), `silver_level` (10), `gold_level` (20); each ≥ 2 and
/// strictly increasing.
pub struct RewardDistribution {
    /// (level, reward name), ascending by level.
    tiers: [(u32, &'static str); 3],
}

impl RewardDistribution {
    /// Builds from the group config.
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(g, &["bronze_level", "silver_level", "gold_level"])?;
        let bronze: u32 = option(g, "bronze_level", 5)?;
        let silver: u32 = option(g, "silver_level", 10)?;
        let gold: u32 = option(g, "gold_level", 20)?;
        if bronze < 2 {
            return Err(format!(
                "option `bronze_level`: must be >= 2 (level 1 is where everyone starts), got {bronze}"
            ));
        }
        if silver <= bronze {
            return Err(format!(
                "option `silver_level`: must be greater than `bronze_level` ({bronze}), got {silver}"
            ));
        }
        if gold <= silver {
            return Err(format!(
                "option `gold_level`: must be greater than `silver_level` ({silver}), got {gold}"
            ));
        }
        Ok(Arc::new(RewardDistribution {
            tiers: [
                (bronze, "bronze_badge"),
                (silver, "silver_badge"),
                (gold, "gold_badge"),
            ],
        }))
    }

    /// The user and the (reward, reason) pairs the event grants, before de-duplication.
    fn grants(&self, input: RewardInput) -> Result<(String, Vec<(String, String)>), HandlerError> {
        match input {
            RewardInput::LevelUp(p) => {
                non_empty("user_id", &p.user_id)?;
                if p.to <= p.from {
                    return Err(poison(format!(
                        "field `to`: must be greater than `from` ({}), got {}",
                        p.from, p.to
                    )));
                }
                let grants = self
                    .tiers
                    .iter()
                    .filter(|(level, _)| p.from < *level && *level <= p.to)
                    .map(|(level, reward)| (reward.to_string(), format!("level_{level}")))
                    .collect();
                Ok((p.user_id, grants))
            }
            RewardInput::Achievement(p) => {
                non_empty("user_id", &p.user_id)?;
                non_empty("achievement", &p.achievement)?;
                Ok((
                    p.user_id,
                    vec![(format!("{}_badge", p.achievement), p.achievement)],
                ))
            }
        }
    }
}

impl TypedHandler for RewardDistribution {
    type Input = RewardInput;

    fn decide(
        &self,
        input: RewardInput,
        _: &Event,
        rounds: &[Vec<Reply>],
    ) -> Result<Step, HandlerError> {
        let (user, grants) = self.grants(input)?;
        if grants.is_empty() {
            return Ok(Step::nothing());
        }
        match rounds.len() {
            0 => Ok(Step::More(
                grants
                    .iter()
                    .map(|(reward, _)| Op::sadd(rewards_key(&user), reward))
                    .collect(),
            )),
            1 => {
                let mut emit = vec![];
                for (i, (reward, reason)) in grants.into_iter().enumerate() {
                    if reply_int(rounds, 0, i, "SADD reward")? == 1 {
                        emit.push(Emit::new(
                            streams::REWARD_ISSUED,
                            &RewardIssued {
                                user_id: user.clone(),
                                reward,
                                reason,
                            },
                        ));
                    }
                }
                if emit.is_empty() {
                    return Ok(Step::nothing());
                }
                Ok(Step::Done {
                    ops: vec![Op::hincrby(rewards_issued_key(), &user, emit.len() as i64)],
                    emit,
                })
            }
            _ => Err(too_many_rounds(rounds)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::nft::fixtures::*;
    use crate::handlers::testing::{decode, group, int, json_event};

    fn rewards(options: &str) -> Arc<dyn Handler> {
        RewardDistribution::build(&group(
            "nft.reward_distribution",
            "nft.reward_distribution",
            &[streams::REWARD_ISSUED],
            options,
        ))
        .unwrap()
    }

    fn sadd_members(step: &Step) -> Vec<String> {
        let Step::More(ops) = step else {
            panic!("expected More, got {step:?}")
        };
        ops.iter()
            .map(|o| {
                assert_eq!(o.cmd(), "SADD");
                assert_eq!(o.key(), "astra:nft:rewards:u1");
                String::from_utf8(o.args()[0].clone()).unwrap()
            })
            .collect()
    }

    fn emitted(step: &Step) -> Vec<RewardIssued> {
        match step {
            Step::Done { emit, .. } => emit
                .iter()
                .map(|e| {
                    assert_eq!(e.stream, streams::REWARD_ISSUED);
                    decode(e)
                })
                .collect(),
            other => panic!("expected Done, got {other:?}"),
        }
    }

    #[test]
    fn level_tiers_are_granted_at_exact_boundaries() {
        let h = rewards("");
        assert_eq!(
            sadd_members(&h.step(&level_up(4, 5), &[]).unwrap()),
            ["bronze_badge"]
        );
        assert_eq!(h.step(&level_up(5, 6), &[]).unwrap(), Step::nothing());
        assert_eq!(h.step(&level_up(3, 4), &[]).unwrap(), Step::nothing());
        assert_eq!(
            sadd_members(&h.step(&level_up(9, 10), &[]).unwrap()),
            ["silver_badge"]
        );
        assert_eq!(h.step(&level_up(10, 19), &[]).unwrap(), Step::nothing());
        assert_eq!(
            sadd_members(&h.step(&level_up(19, 20), &[]).unwrap()),
            ["gold_badge"]
        );
        assert_eq!(h.step(&level_up(20, 21), &[]).unwrap(), Step::nothing());
    }

    #[test]
    fn a_level_jump_grants_every_tier_it_passes() {
        let h = rewards("");
        let ev = level_up(4, 11);
        assert_eq!(
            sadd_members(&h.step(&ev, &[]).unwrap()),
            ["bronze_badge", "silver_badge"]
        );
        let done = h.step(&ev, &[vec![int(1), int(1)]]).unwrap();
        let got = emitted(&done);
        assert_eq!(
            got,
            vec![
                RewardIssued {
                    user_id: "u1".into(),
                    reward: "bronze_badge".into(),
                    reason: "level_5".into()
                },
                RewardIssued {
                    user_id: "u1".into(),
                    reward: "silver_badge".into(),
                    reason: "level_10".into()
                },
            ]
        );
        let Step::Done { ops, .. } = done else {
            unreachable!()
        };
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].cmd(), "HINCRBY");
        assert_eq!(ops[0].key(), "astra:nft:rewards_issued");
        assert_eq!(ops[0].args(), [b"u1".to_vec(), b"2".to_vec()]);
        let all = h.step(&level_up(1, 30), &[]).unwrap();
        assert_eq!(
            sadd_members(&all),
            ["bronze_badge", "silver_badge", "gold_badge"]
        );
    }

    #[test]
    fn a_reward_already_held_is_not_issued_again() {
        let h = rewards("");
        let ev = level_up(4, 11);
        // Bronze was already there (SADD 0), silver is new.
        let done = h.step(&ev, &[vec![int(0), int(1)]]).unwrap();
        let got = emitted(&done);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].reward, "silver_badge");
        let Step::Done { ops, .. } = done else {
            unreachable!()
        };
        assert_eq!(ops[0].args()[1], b"1".to_vec());
        // Both held: nothing at all, no counter change.
        assert_eq!(
            h.step(&ev, &[vec![int(0), int(0)]]).unwrap(),
            Step::nothing()
        );
    }

    #[test]
    fn achievements_grant_their_badge_once() {
        let h = rewards("");
        let ev = achievement("first_trade");
        assert_eq!(
            sadd_members(&h.step(&ev, &[]).unwrap()),
            ["first_trade_badge"]
        );
        let got = emitted(&h.step(&ev, &[vec![int(1)]]).unwrap());
        assert_eq!(
            got,
            vec![RewardIssued {
                user_id: "u1".into(),
                reward: "first_trade_badge".into(),
                reason: "first_trade".into()
            }]
        );
        assert_eq!(h.step(&ev, &[vec![int(0)]]).unwrap(), Step::nothing());
    }

    #[test]
    fn reward_poison_names_the_field() {
        let h = rewards("");
        let err = h.step(&level_up(5, 5), &[]).unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("`to`")),
            "{err}"
        );
        let err = h.step(&achievement(""), &[]).unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("`achievement`")),
            "{err}"
        );
        let ev = json_event(streams::LEVEL_UP, r#"{"user_id":"u1","from":1}"#);
        let err = h.step(&ev, &[]).unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("`to`")),
            "{err}"
        );
        let ev = json_event(
            streams::ACHIEVEMENT_UNLOCKED,
            r#"{"user_id":" ","achievement":"x"}"#,
        );
        let err = h.step(&ev, &[]).unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("`user_id`")),
            "{err}"
        );
        let ev = json_event(streams::SALE_COMPLETED, "{}");
        assert!(matches!(h.step(&ev, &[]), Err(HandlerError::Poison(m)) if m.contains("not read")));
        // A reply that is not an integer breaks the invariant.
        let err = h
            .step(&achievement("x"), &[vec![crate::handlers::Reply::Nil]])
            .unwrap_err();
        assert!(matches!(err, HandlerError::Poison(_)));
    }

    #[test]
    fn reward_options() {
        let h = rewards("bronze_level = 3");
        assert_eq!(
            sadd_members(&h.step(&level_up(2, 3), &[]).unwrap()),
            ["bronze_badge"]
        );
        assert_eq!(h.step(&level_up(4, 5), &[]).unwrap(), Step::nothing());
        let done = h.step(&level_up(2, 3), &[vec![int(1)]]).unwrap();
        assert_eq!(emitted(&done)[0].reason, "level_3");
        let g = |o: &str| {
            RewardDistribution::build(&group("n", "nft.reward_distribution", &[], o)).err()
        };
        assert!(g("").is_none());
        assert!(g("silver_level = 5").unwrap().contains("silver_level"));
        assert!(g("bronze_level = 1").unwrap().contains("bronze_level"));
        assert!(g("gold_level = 10").unwrap().contains("gold_level"));
        assert!(
            g("platinum_level = 50")
                .unwrap()
                .contains("unknown option `platinum_level`")
        );
        assert!(g("gold_level = \"high\"").unwrap().contains("gold_level"));
    }
}
