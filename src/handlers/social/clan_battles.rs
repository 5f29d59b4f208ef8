//! `social.clan_battles`: weekly clan scores from the XP of clan members.

use std::sync::Arc;
use std::time::Duration;

use crate::calendar::{iso_week, week_end_ms};
use crate::events::{ClanScoreUpdated, UserRegistered, XpAwarded, streams};
use crate::group::GroupConfig;
use crate::handler::{Emit, Event, Handler, HandlerError, Op, Reply, Step};
use crate::handlers::gamification::check_xp_awarded;
use crate::handlers::support::{
    ANY_DURATION, deny_unknown_options, duration_option, expire_secs, reply, reply_score,
    require_non_empty, unexpected_rounds,
};
use crate::handlers::typed::{Reject, TypedHandler, input};

/// Hash `user_id → clan` of registered users that have a clan: `astra:social:clan_of`.
pub fn clan_membership_key() -> String {
    "astra:social:clan_of".to_string()
}

/// Sorted set `clan → XP` of one ISO week: `astra:social:clan_scores:<week>`, e.g.
/// `astra:social:clan_scores:2026-W47`.
pub fn clan_scores_key(week: &str) -> String {
    format!("astra:social:clan_scores:{week}")
}

input! {
    /// What `social.clan_battles` reads.
    pub enum ClanInput {
        streams::XP_AWARDED => Xp(XpAwarded),
        streams::REGISTERED => Registered(UserRegistered),
    }
}

/// `social.clan_battles`: weekly clan scores from the XP of clan members.
///
/// Rules:
/// - `astra.user.registered.v1` with a `clan` stores `user_id → clan` (`HSET`; a later
///   registration with a clan replaces it). Without a clan nothing is stored (nor removed).
/// - `astra.gamification.xp_awarded.v1`: round 1 `HGET`s the user's clan; if the user has
///   one, round 2 `ZINCRBY`s the clan's score for the ISO week of the event's `ts` by
///   `amount` and sets the key's `EXPIRE` (rest of the week plus `expire_margin`). The clan
///   is only *used*, and the score change is a commutative increment, so concurrent awards
///   never lose or double-count XP.
/// - XP of users without a clan, or not registered (yet) when their XP event is processed,
///   is not counted, and is not counted later either. Awards of 0 XP do nothing.
///
/// Keys: [`clan_membership_key`] (`astra:social:clan_of`, hash `user_id → clan`),
/// [`clan_scores_key`] (`astra:social:clan_scores:<week>`, sorted set `clan → XP`).
///
/// Emits `astra.social.clan_score_updated.v1` ([`ClanScoreUpdated`]: `clan`, `week`,
/// `score` after the update from the `ZINCRBY` reply, `delta`, `user_id`).
///
/// Options: `expire_margin` ("2d").
///
/// Poison: missing/mistyped fields, empty `user_id`, an empty `clan` string (omit the
/// field for "no clan"), negative `amount`.
pub struct ClanBattles {
    expire_margin: Duration,
}

impl ClanBattles {
    const NAME: &'static str = "social.clan_battles";

    /// Builds from the group's options.
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        Ok(Arc::new(Self::from_config(g)?))
    }

    fn from_config(g: &GroupConfig) -> Result<ClanBattles, String> {
        deny_unknown_options(g, &["expire_margin"])?;
        Ok(ClanBattles {
            expire_margin: duration_option(g, "expire_margin", "2d", ANY_DURATION)?,
        })
    }
}

impl TypedHandler for ClanBattles {
    type Input = ClanInput;

    const REJECT: Reject = Reject::Group(Self::NAME);

    fn decide(
        &self,
        input: ClanInput,
        ev: &Event,
        rounds: &[Vec<Reply>],
    ) -> Result<Step, HandlerError> {
        match input {
            ClanInput::Registered(u) => {
                require_non_empty("user_id", &u.user_id)?;
                let Some(clan) = u.clan else {
                    return Ok(Step::nothing());
                };
                require_non_empty("clan", &clan)?;
                if !rounds.is_empty() {
                    return Err(unexpected_rounds(Self::NAME, rounds));
                }
                Ok(Step::Done {
                    ops: vec![Op::hset(clan_membership_key(), &u.user_id, clan)],
                    emit: vec![],
                })
            }
            ClanInput::Xp(x) => {
                check_xp_awarded(&x)?;
                if x.amount == 0 {
                    return Ok(Step::nothing());
                }
                if rounds.is_empty() {
                    return Ok(Step::More(vec![Op::hget(
                        clan_membership_key(),
                        &x.user_id,
                    )]));
                }
                let clan = match reply(rounds, 0, 0, "HGET clan")?.as_str() {
                    Some(c) if !c.is_empty() => c.to_string(),
                    _ => return Ok(Step::nothing()),
                };
                let ts = ev.env.ts;
                let week = iso_week(ts);
                let key = clan_scores_key(&week);
                match rounds.len() {
                    1 => Ok(Step::More(vec![
                        Op::zincrby(&key, x.amount, &clan),
                        Op::expire(&key, expire_secs(week_end_ms(ts), ts, self.expire_margin)),
                    ])),
                    2 => {
                        let score = reply_score(rounds, 1, 0, "ZINCRBY clan score")?;
                        Ok(Step::Done {
                            ops: vec![],
                            emit: vec![Emit::new(
                                streams::CLAN_SCORE_UPDATED,
                                &ClanScoreUpdated {
                                    clan,
                                    week,
                                    score,
                                    delta: x.amount,
                                    user_id: x.user_id,
                                },
                            )],
                        })
                    }
                    _ => Err(unexpected_rounds(Self::NAME, rounds)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::social::fixtures::*;
    use crate::handlers::testing::{args, done, more, poison_of as poison_reason};
    use crate::handlers::testing::{decode, event, event_at, group, json_event, text};

    // ---- clan_battles ------------------------------------------------------------------------

    fn clans(options: &str) -> ClanBattles {
        ClanBattles::from_config(&group(
            "social.clan_battles",
            "social.clan_battles",
            &[streams::CLAN_SCORE_UPDATED],
            options,
        ))
        .unwrap()
    }

    fn registered(user: &str, clan: Option<&str>) -> UserRegistered {
        UserRegistered {
            user_id: user.into(),
            display_name: "D".into(),
            clan: clan.map(String::from),
        }
    }

    #[test]
    fn registration_remembers_the_clan() {
        let h = clans("");
        let ev = event(streams::REGISTERED, &registered("alice", Some("wolves")));
        let (ops, emit) = done(h.step(&ev, &[]).unwrap());
        assert_eq!(
            ops,
            vec![Op::hset("astra:social:clan_of", "alice", "wolves")]
        );
        assert!(emit.is_empty());
        let ev = event(streams::REGISTERED, &registered("bob", None));
        assert_eq!(h.step(&ev, &[]).unwrap(), Step::nothing());
        let ev = json_event(
            streams::REGISTERED,
            r#"{"user_id":"bob","display_name":"B"}"#,
        );
        assert_eq!(h.step(&ev, &[]).unwrap(), Step::nothing());
        let ev = event(streams::REGISTERED, &registered("bob", Some("")));
        assert!(poison_reason(h.step(&ev, &[])).contains("clan"));
        let ev = event(streams::REGISTERED, &registered("", Some("x")));
        assert!(poison_reason(h.step(&ev, &[])).contains("user_id"));
    }

    #[test]
    fn clan_member_xp_moves_the_weekly_score() {
        let h = clans("");
        let ev = event(streams::XP_AWARDED, &xp("alice", 30, 130));
        let ops = more(h.step(&ev, &[]).unwrap());
        assert_eq!(ops, vec![Op::hget("astra:social:clan_of", "alice")]);
        let r0 = vec![text("wolves")];
        let ops = more(h.step(&ev, std::slice::from_ref(&r0)).unwrap());
        assert_eq!(ops.len(), 2);
        assert_eq!(
            (ops[0].cmd(), ops[0].key()),
            ("ZINCRBY", "astra:social:clan_scores:2026-W47")
        );
        assert_eq!(args(&ops[0]), ["30", "wolves"]);
        assert_eq!(
            (ops[1].cmd(), ops[1].key()),
            ("EXPIRE", "astra:social:clan_scores:2026-W47")
        );
        // Saturday 12:00: 36 h left in the week + 2 d.
        assert_eq!(args(&ops[1]), ["302400"]);
        let (ops, emit) = done(h.step(&ev, &[r0, vec![text("1030")]]).unwrap());
        assert!(ops.is_empty());
        assert_eq!(emit[0].stream, streams::CLAN_SCORE_UPDATED);
        assert_eq!(
            decode::<ClanScoreUpdated>(&emit[0]),
            ClanScoreUpdated {
                clan: "wolves".into(),
                week: "2026-W47".into(),
                score: 1030,
                delta: 30,
                user_id: "alice".into(),
            }
        );
    }

    #[test]
    fn xp_without_a_clan_is_not_counted() {
        let h = clans("");
        let ev = event(streams::XP_AWARDED, &xp("nobody", 30, 130));
        assert_eq!(h.step(&ev, &[vec![Reply::Nil]]).unwrap(), Step::nothing());
        assert_eq!(h.step(&ev, &[vec![text("")]]).unwrap(), Step::nothing());
        let zero = event(streams::XP_AWARDED, &xp("alice", 0, 130));
        assert_eq!(h.step(&zero, &[]).unwrap(), Step::nothing());
    }

    #[test]
    fn clan_week_at_the_year_boundary_and_margin_option() {
        let h = clans("expire_margin = \"1d\"");
        // 2027-01-01 12:00 UTC (a Friday) is in 2026-W53, which ends Monday 2027-01-04.
        let ev = event_at(streams::XP_AWARDED, &xp("a", 5, 5), 1_798_804_800_000);
        let ops = more(h.step(&ev, &[vec![text("owls")]]).unwrap());
        assert_eq!(ops[0].key(), "astra:social:clan_scores:2026-W53");
        assert_eq!(
            args(&ops[1]),
            [(2 * 86_400 + 12 * 3_600 + 86_400).to_string()]
        );
        let (_, emit) = done(h.step(&ev, &[vec![text("owls")], vec![text("5")]]).unwrap());
        assert_eq!(decode::<ClanScoreUpdated>(&emit[0]).week, "2026-W53");
    }

    #[test]
    fn clan_options_and_poison() {
        assert_eq!(clans("").expire_margin, Duration::from_secs(2 * 86_400));
        let g = |o: &str| group("x", "social.clan_battles", &[], o);
        let err = ClanBattles::build(&g("margin = \"1d\"")).err().unwrap();
        assert!(err.contains("unknown option `margin`"), "{err}");
        let err = ClanBattles::build(&g("expire_margin = 3")).err().unwrap();
        assert!(err.contains("expire_margin"), "{err}");
        let h = clans("");
        let r = poison_reason(h.step(&event(streams::XP_AWARDED, &xp("a", -1, 5)), &[]));
        assert!(r.contains("amount"), "{r}");
        let ev = event(streams::XP_AWARDED, &xp("a", 1, 5));
        let r = poison_reason(h.step(&ev, &[vec![text("c")], vec![Reply::Nil]]));
        assert!(r.contains("ZINCRBY"), "{r}");
        poison_reason(h.step(&ev, &[vec![text("c")], vec![text("1")], vec![]]));
        let r = poison_reason(h.step(&event(streams::INTERACTION, &()), &[]));
        assert!(r.contains("does not read"), "{r}");
    }
}
