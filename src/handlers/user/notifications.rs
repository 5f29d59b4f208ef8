//! `user.notifications`: notification requests for achievements, rewards and level-ups.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::events::{AchievementUnlocked, LevelUp, NotificationRequested, RewardIssued, streams};
use crate::group::GroupConfig;
use crate::handler::{Emit, Event, Handler, HandlerError, Reply, Step};
use crate::handlers::support::{deny_unknown_options, non_empty, poison};
use crate::handlers::typed::{TypedHandler, input};

input! {
    /// What `user.notifications` reads.
    pub enum NotificationInput {
        streams::ACHIEVEMENT_UNLOCKED => Achievement(AchievementUnlocked),
        streams::REWARD_ISSUED => Reward(RewardIssued),
        streams::LEVEL_UP => LevelUp(LevelUp),
    }
}

/// `user.notifications`: asks the notification service to tell a user about an
/// achievement, a reward or a level-up.
///
/// Rules (one `user.notification_requested` per input, no state):
/// - `gamification.achievement_unlocked` → template `achievement_unlocked`, params
///   `{achievement}`;
/// - `nft.reward_issued` → template `reward_issued`, params `{reward, reason}`;
/// - `gamification.level_up` → template `level_up`, params `{from, to}` (decimal).
///
/// Empty `user_id`, `achievement` or `reward`, or `to <= from`, is poison.
///
/// No de-duplication state is needed: each input is itself issued at most once per
/// (user, achievement/reward/level crossing) by its producer, and the runtime publishes
/// a handler's derived events exactly once per source event (a redelivered source event
/// replays its recorded result, and the derived event id is deterministic), so a
/// notification cannot be requested twice.
///
/// Keys: none.
/// Emits: `astra.user.notification_requested.v1` ([`NotificationRequested`]
/// `{user_id, template, params}`).
/// Options: none.
pub struct Notifications;

impl Notifications {
    /// Builds from the group config.
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(g, &[])?;
        Ok(Arc::new(Notifications))
    }
}

impl TypedHandler for Notifications {
    type Input = NotificationInput;

    fn decide(
        &self,
        input: NotificationInput,
        _: &Event,
        _: &[Vec<Reply>],
    ) -> Result<Step, HandlerError> {
        let params = |pairs: &[(&str, String)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        let n = match input {
            NotificationInput::Achievement(p) => {
                non_empty("user_id", &p.user_id)?;
                non_empty("achievement", &p.achievement)?;
                NotificationRequested {
                    user_id: p.user_id,
                    template: "achievement_unlocked".into(),
                    params: params(&[("achievement", p.achievement)]),
                }
            }
            NotificationInput::Reward(p) => {
                non_empty("user_id", &p.user_id)?;
                non_empty("reward", &p.reward)?;
                NotificationRequested {
                    user_id: p.user_id,
                    template: "reward_issued".into(),
                    params: params(&[("reward", p.reward), ("reason", p.reason)]),
                }
            }
            NotificationInput::LevelUp(p) => {
                non_empty("user_id", &p.user_id)?;
                if p.to <= p.from {
                    return Err(poison(format!(
                        "field `to`: must be greater than `from` ({}), got {}",
                        p.from, p.to
                    )));
                }
                NotificationRequested {
                    user_id: p.user_id,
                    template: "level_up".into(),
                    params: params(&[("from", p.from.to_string()), ("to", p.to.to_string())]),
                }
            }
        };
        Ok(Step::Done {
            ops: vec![],
            emit: vec![Emit::new(streams::NOTIFICATION_REQUESTED, &n)],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::testing::{decode, event, group, json_event};
    use crate::handlers::user::fixtures::s;

    fn notifications() -> Arc<dyn Handler> {
        Notifications::build(&group(
            "user.notifications",
            "user.notifications",
            &[streams::NOTIFICATION_REQUESTED],
            "",
        ))
        .unwrap()
    }

    fn notification_of(step: &Step) -> NotificationRequested {
        let Step::Done { ops, emit } = step else {
            panic!("expected Done, got {step:?}")
        };
        assert!(ops.is_empty());
        assert_eq!(emit.len(), 1);
        assert_eq!(emit[0].stream, streams::NOTIFICATION_REQUESTED);
        decode(&emit[0])
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (s(k), s(v))).collect()
    }

    #[test]
    fn notifications_for_each_input() {
        let h = notifications();
        let n = notification_of(
            &h.step(
                &event(
                    streams::ACHIEVEMENT_UNLOCKED,
                    &AchievementUnlocked {
                        user_id: "u1".into(),
                        achievement: "trades_10".into(),
                    },
                ),
                &[],
            )
            .unwrap(),
        );
        assert_eq!(
            n,
            NotificationRequested {
                user_id: "u1".into(),
                template: "achievement_unlocked".into(),
                params: params(&[("achievement", "trades_10")]),
            }
        );
        let n = notification_of(
            &h.step(
                &event(
                    streams::REWARD_ISSUED,
                    &RewardIssued {
                        user_id: "u2".into(),
                        reward: "bronze_badge".into(),
                        reason: "level_5".into(),
                    },
                ),
                &[],
            )
            .unwrap(),
        );
        assert_eq!(n.user_id, "u2");
        assert_eq!(n.template, "reward_issued");
        assert_eq!(
            n.params,
            params(&[("reward", "bronze_badge"), ("reason", "level_5")])
        );
        let n = notification_of(
            &h.step(
                &event(
                    streams::LEVEL_UP,
                    &LevelUp {
                        user_id: "u3".into(),
                        from: 4,
                        to: 11,
                        total_xp: 10_000,
                    },
                ),
                &[],
            )
            .unwrap(),
        );
        assert_eq!(n.template, "level_up");
        assert_eq!(n.params, params(&[("from", "4"), ("to", "11")]));
    }

    #[test]
    fn notification_poison() {
        let h = notifications();
        let ev = json_event(
            streams::LEVEL_UP,
            r#"{"user_id":"u","from":3,"to":3,"total_xp":1}"#,
        );
        let err = h.step(&ev, &[]).unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("`to`")),
            "{err}"
        );
        let ev = json_event(
            streams::REWARD_ISSUED,
            r#"{"user_id":"u","reward":"","reason":"x"}"#,
        );
        let err = h.step(&ev, &[]).unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("`reward`")),
            "{err}"
        );
        let ev = json_event(streams::ACHIEVEMENT_UNLOCKED, r#"{"achievement":"x"}"#);
        let err = h.step(&ev, &[]).unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("user_id")),
            "{err}"
        );
        let ev = json_event(streams::XP_AWARDED, "{}");
        let err = h.step(&ev, &[]).unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("not read")),
            "{err}"
        );
    }
}
