//! `social.influence`: influence score of the users who receive interactions.

use std::sync::Arc;

use serde::Deserialize;

use crate::events::{InfluenceUpdated, Interaction, InteractionKind, streams};
use crate::group::GroupConfig;
use crate::handler::{Emit, Event, Handler, HandlerError, Op, Reply, Step};
use crate::handlers::support::{
    deny_unknown_options, option, reply_score, require_non_empty, unexpected_rounds,
};
use crate::handlers::typed::{Reject, TypedHandler};

/// Sorted set `user_id → influence score`: `astra:social:influence`.
pub fn influence_key() -> String {
    "astra:social:influence".to_string()
}

/// Influence points per interaction kind (option table `weights`; kinds left out keep
/// their default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InfluenceWeights {
    pub like: u32,
    pub comment: u32,
    pub share: u32,
    pub follow: u32,
}

impl Default for InfluenceWeights {
    fn default() -> Self {
        InfluenceWeights {
            like: 1,
            comment: 3,
            share: 5,
            follow: 10,
        }
    }
}

impl InfluenceWeights {
    /// The weight of `kind`.
    pub fn of(&self, kind: InteractionKind) -> i64 {
        i64::from(match kind {
            InteractionKind::Like => self.like,
            InteractionKind::Comment => self.comment,
            InteractionKind::Share => self.share,
            InteractionKind::Follow => self.follow,
        })
    }
}

/// `social.influence`: influence score of the users who receive interactions.
///
/// Rules: an `astra.social.interaction.v1` raises the *target*'s (`target_user_id`)
/// influence by its kind's weight (like 1, comment 3, share 5, follow 10 by default) with
/// one `ZINCRBY`. Self-interactions (`user_id == target_user_id`) are ignored: no change,
/// no event (nobody gains influence by liking or following themselves). A kind whose weight
/// is 0 is ignored the same way.
///
/// Keys: [`influence_key`] (`astra:social:influence`, sorted set `user_id → score`).
///
/// Emits `astra.social.influence_updated.v1` ([`InfluenceUpdated`]: `user_id` = target,
/// `score` after the update from the `ZINCRBY` reply, `delta`, `from_user_id` = actor,
/// `kind`).
///
/// Options: `weights`, a table overriding any of the defaults, e.g.
/// `weights = { like = 2, follow = 20 }` (non-negative integers; unknown kinds rejected).
///
/// Poison: missing/mistyped fields, unknown `kind`, empty `user_id`/`target_user_id`.
pub struct Influence {
    weights: InfluenceWeights,
}

impl Influence {
    const NAME: &'static str = "social.influence";

    /// Builds from the group's options.
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        Ok(Arc::new(Self::from_config(g)?))
    }

    fn from_config(g: &GroupConfig) -> Result<Influence, String> {
        deny_unknown_options(g, &["weights"])?;
        Ok(Influence {
            weights: option(g, "weights", InfluenceWeights::default())?,
        })
    }
}

impl TypedHandler for Influence {
    type Input = Interaction;

    const REJECT: Reject = Reject::Group(Self::NAME);

    fn decide(
        &self,
        i: Interaction,
        _: &Event,
        rounds: &[Vec<Reply>],
    ) -> Result<Step, HandlerError> {
        require_non_empty("user_id", &i.user_id)?;
        require_non_empty("target_user_id", &i.target_user_id)?;
        let delta = self.weights.of(i.kind);
        if i.user_id == i.target_user_id || delta == 0 {
            return Ok(Step::nothing());
        }
        match rounds.len() {
            0 => Ok(Step::More(vec![Op::zincrby(
                influence_key(),
                delta,
                &i.target_user_id,
            )])),
            1 => {
                let score = reply_score(rounds, 0, 0, "ZINCRBY influence")?;
                Ok(Step::Done {
                    ops: vec![],
                    emit: vec![Emit::new(
                        streams::INFLUENCE_UPDATED,
                        &InfluenceUpdated {
                            user_id: i.target_user_id,
                            score,
                            delta,
                            from_user_id: i.user_id,
                            kind: i.kind.as_str().to_string(),
                        },
                    )],
                })
            }
            _ => Err(unexpected_rounds(Self::NAME, rounds)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::social::fixtures::*;
    use crate::handlers::testing::{decode, event, group, json_event, text};
    use crate::handlers::testing::{done, more, poison_of as poison_reason};

    // ---- influence ---------------------------------------------------------------------------

    fn influence(options: &str) -> Influence {
        Influence::from_config(&group(
            "social.influence",
            "social.influence",
            &[streams::INFLUENCE_UPDATED],
            options,
        ))
        .unwrap()
    }

    fn interaction(user: &str, target: &str, kind: InteractionKind) -> Interaction {
        Interaction {
            user_id: user.into(),
            target_user_id: target.into(),
            kind,
        }
    }

    #[test]
    fn interactions_raise_the_targets_influence() {
        let h = influence("");
        for (kind, delta) in [
            (InteractionKind::Like, 1),
            (InteractionKind::Comment, 3),
            (InteractionKind::Share, 5),
            (InteractionKind::Follow, 10),
        ] {
            let ev = event(streams::INTERACTION, &interaction("fan", "star", kind));
            let ops = more(h.step(&ev, &[]).unwrap());
            assert_eq!(
                ops,
                vec![Op::zincrby("astra:social:influence", delta, "star")]
            );
            let (ops, emit) = done(h.step(&ev, &[vec![text("42")]]).unwrap());
            assert!(ops.is_empty());
            assert_eq!(emit[0].stream, streams::INFLUENCE_UPDATED);
            assert_eq!(
                decode::<InfluenceUpdated>(&emit[0]),
                InfluenceUpdated {
                    user_id: "star".into(),
                    score: 42,
                    delta,
                    from_user_id: "fan".into(),
                    kind: kind.as_str().into(),
                }
            );
        }
    }

    #[test]
    fn self_interactions_are_ignored() {
        let h = influence("");
        let ev = event(
            streams::INTERACTION,
            &interaction("me", "me", InteractionKind::Follow),
        );
        assert_eq!(h.step(&ev, &[]).unwrap(), Step::nothing());
    }

    #[test]
    fn influence_weight_options() {
        assert_eq!(influence("").weights, InfluenceWeights::default());
        let h = influence("weights = { like = 2, follow = 0 }");
        assert_eq!(
            h.weights,
            InfluenceWeights {
                like: 2,
                comment: 3,
                share: 5,
                follow: 0
            }
        );
        let ev = event(
            streams::INTERACTION,
            &interaction("a", "b", InteractionKind::Like),
        );
        assert_eq!(
            more(h.step(&ev, &[]).unwrap()),
            vec![Op::zincrby("astra:social:influence", 2, "b")]
        );
        // Weight 0 disables a kind.
        let ev = event(
            streams::INTERACTION,
            &interaction("a", "b", InteractionKind::Follow),
        );
        assert_eq!(h.step(&ev, &[]).unwrap(), Step::nothing());
        let g = |o: &str| group("x", "social.influence", &[], o);
        let err = Influence::build(&g("weights = { poke = 1 }"))
            .err()
            .unwrap();
        assert!(err.contains("weights") && err.contains("poke"), "{err}");
        let err = Influence::build(&g("weights = { like = -1 }"))
            .err()
            .unwrap();
        assert!(err.contains("weights"), "{err}");
        let err = Influence::build(&g("like = 1")).err().unwrap();
        assert!(err.contains("unknown option `like`"), "{err}");
    }

    #[test]
    fn influence_poison() {
        let h = influence("");
        let ev = event(
            streams::INTERACTION,
            &interaction("", "b", InteractionKind::Like),
        );
        assert!(poison_reason(h.step(&ev, &[])).contains("user_id"));
        let missing = json_event(
            streams::INTERACTION,
            r#"{"user_id":"a","target_user_id":"b"}"#,
        );
        assert!(poison_reason(h.step(&missing, &[])).contains("kind"));
        let ev = event(
            streams::INTERACTION,
            &interaction("a", "b", InteractionKind::Like),
        );
        poison_reason(h.step(&ev, &[vec![Reply::Nil]]));
        let r = poison_reason(h.step(&event(streams::XP_AWARDED, &xp("a", 1, 1)), &[]));
        assert!(r.contains("does not read"), "{r}");
    }
}
