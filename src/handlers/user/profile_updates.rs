//! `user.profile_updates`: the profile projection and `user.profile_updated` events.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::events::{
    AchievementUnlocked, LevelUp, ProfileUpdated, UserRegistered, XpAwarded, streams,
};
use crate::group::GroupConfig;
use crate::handler::{Emit, Event, Handler, HandlerError, Op, Reply, Step};
use crate::handlers::gamification::level_for_xp;
use crate::handlers::support::{deny_unknown_options, non_empty, poison};
use crate::handlers::typed::{TypedHandler, input};

/// `user.profile_updates`: the profile projection, one hash per user, and a
/// `user.profile_updated` event with the profile after every change.
///
/// Rules, per input (each first round also runs `HSETNX level 1`, so a profile always has
/// a level):
/// - `user.registered`: `HSET display_name <name> [clan <clan>]` (an absent clan leaves
///   the field as it is). Empty `display_name` or `clan` (when given) is poison.
/// - `gamification.xp_awarded`: `HINCRBY xp <amount>` (commutative: concurrent or
///   out-of-order awards can never make XP go backwards, unlike `HSET xp <total>`), and
///   `HINCRBY trades 1` when `reason` is `trade`. A negative `amount` is poison. The
///   stored `level` is then moved by `HINCRBY level <level(new) − level(new − amount)>`:
///   those deltas telescope along the order in which the atomic `HINCRBY xp` ran, so
///   once every in-flight event is committed, `level` = level of `xp`, whatever the
///   interleaving (an absolute `HSET level` computed from a reply could be overwritten by
///   a slower, older event).
/// - `gamification.achievement_unlocked`: `HINCRBY achievements 1`.
/// - `gamification.level_up`: no state change (the level follows from XP); emits the
///   current profile.
///
/// Every first round ends with `HGETALL` of the profile, in the same atomic round as the
/// change, so the emitted snapshot is consistent. Its `level` is computed from the
/// snapshot's `xp` (level `L` needs `100·(L−1)²` XP), not read from the stored field.
/// Because the projection follows XP, the snapshot emitted for a `level_up` that arrives
/// before its `xp_awarded` can show the lower level; the `xp_awarded` then emits the new
/// one.
///
/// Keys: [`profile_key`].
/// Emits: `astra.user.profile_updated.v1` ([`ProfileUpdated`] `{user_id, display_name,
/// clan, xp, level, achievements, trades}`).
/// Options: none.
pub struct ProfileUpdates;

impl ProfileUpdates {
    /// Builds from the group config.
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(g, &[])?;
        Ok(Arc::new(ProfileUpdates))
    }
}

/// What one input does to the profile.
enum Change {
    Registered {
        display_name: String,
        clan: Option<String>,
    },
    Xp {
        amount: i64,
        trade: bool,
    },
    Achievement,
    LevelUp,
}

input! {
    /// What `user.profile_updates` reads.
    pub enum ProfileInput {
        streams::XP_AWARDED => Xp(XpAwarded),
        streams::LEVEL_UP => LevelUp(LevelUp),
        streams::ACHIEVEMENT_UNLOCKED => Achievement(AchievementUnlocked),
        streams::REGISTERED => Registered(UserRegistered),
    }
}

fn decode_change(input: ProfileInput) -> Result<(String, Change), HandlerError> {
    match input {
        ProfileInput::Registered(p) => {
            non_empty("user_id", &p.user_id)?;
            non_empty("display_name", &p.display_name)?;
            if let Some(c) = &p.clan {
                non_empty("clan", c)?;
            }
            Ok((
                p.user_id,
                Change::Registered {
                    display_name: p.display_name,
                    clan: p.clan,
                },
            ))
        }
        ProfileInput::Xp(p) => {
            non_empty("user_id", &p.user_id)?;
            if p.amount < 0 {
                return Err(poison(format!(
                    "field `amount`: must be >= 0, got {}",
                    p.amount
                )));
            }
            Ok((
                p.user_id,
                Change::Xp {
                    amount: p.amount,
                    trade: p.reason == "trade",
                },
            ))
        }
        ProfileInput::Achievement(p) => {
            non_empty("user_id", &p.user_id)?;
            non_empty("achievement", &p.achievement)?;
            Ok((p.user_id, Change::Achievement))
        }
        ProfileInput::LevelUp(p) => {
            non_empty("user_id", &p.user_id)?;
            Ok((p.user_id, Change::LevelUp))
        }
    }
}

/// An `HGETALL` reply as a map; a malformed reply breaks the handler's invariant.
fn hash_map(r: &Reply) -> Result<BTreeMap<String, String>, HandlerError> {
    let items = match r {
        Reply::Array(a) => a,
        // An empty hash can come back as nil from some client layers.
        Reply::Nil => return Ok(BTreeMap::new()),
        other => return Err(poison(format!("HGETALL reply is not an array: {other:?}"))),
    };
    if items.len() % 2 != 0 {
        return Err(poison(format!(
            "HGETALL reply has an odd number of items ({})",
            items.len()
        )));
    }
    let mut m = BTreeMap::new();
    for pair in items.chunks(2) {
        let (Some(k), Some(v)) = (pair[0].as_str(), pair[1].as_str()) else {
            return Err(poison(format!("HGETALL reply item is not text: {pair:?}")));
        };
        m.insert(k.to_string(), v.to_string());
    }
    Ok(m)
}

fn count_field(m: &BTreeMap<String, String>, field: &str) -> Result<i64, HandlerError> {
    match m.get(field) {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| {
            poison(format!(
                "profile field `{field}` holds {v:?}, not an integer"
            ))
        }),
    }
}

impl TypedHandler for ProfileUpdates {
    type Input = ProfileInput;

    fn decide(
        &self,
        input: ProfileInput,
        _: &Event,
        rounds: &[Vec<Reply>],
    ) -> Result<Step, HandlerError> {
        let (user, change) = decode_change(input)?;
        let key = profile_key(&user);
        match rounds.len() {
            0 => {
                let mut ops = vec![];
                if !matches!(change, Change::LevelUp) {
                    ops.push(Op::hsetnx(&key, FIELD_LEVEL, "1"));
                }
                match &change {
                    Change::Registered { display_name, clan } => {
                        let mut pairs = vec![(FIELD_DISPLAY_NAME, display_name.as_str())];
                        if let Some(c) = clan {
                            pairs.push((FIELD_CLAN, c.as_str()));
                        }
                        ops.push(Op::hset_many(&key, &pairs));
                    }
                    Change::Xp { amount, trade } => {
                        ops.push(Op::hincrby(&key, FIELD_XP, *amount));
                        if *trade {
                            ops.push(Op::hincrby(&key, FIELD_TRADES, 1));
                        }
                    }
                    Change::Achievement => ops.push(Op::hincrby(&key, FIELD_ACHIEVEMENTS, 1)),
                    Change::LevelUp => {}
                }
                ops.push(Op::hgetall(&key));
                Ok(Step::More(ops))
            }
            1 => {
                let replies = &rounds[0];
                let snapshot =
                    hash_map(replies.last().ok_or_else(|| {
                        poison("round 0: missing the HGETALL reply".to_string())
                    })?)?;
                let xp = count_field(&snapshot, FIELD_XP)?;
                let mut ops = vec![];
                if let Change::Xp { amount, .. } = change {
                    // Reply 1 is HINCRBY xp (reply 0 is HSETNX level).
                    let new = replies.get(1).and_then(Reply::as_int).ok_or_else(|| {
                        poison(format!(
                            "round 0: reply 1 (HINCRBY xp) is not an integer: {:?}",
                            replies.get(1)
                        ))
                    })?;
                    let delta =
                        i64::from(level_for_xp(new)) - i64::from(level_for_xp(new - amount));
                    if delta != 0 {
                        ops.push(Op::hincrby(&key, FIELD_LEVEL, delta));
                    }
                }
                let profile = ProfileUpdated {
                    user_id: user,
                    display_name: snapshot.get(FIELD_DISPLAY_NAME).cloned(),
                    clan: snapshot.get(FIELD_CLAN).cloned(),
                    xp,
                    level: level_for_xp(xp),
                    achievements: count_field(&snapshot, FIELD_ACHIEVEMENTS)?,
                    trades: count_field(&snapshot, FIELD_TRADES)?,
                };
                Ok(Step::Done {
                    ops,
                    emit: vec![Emit::new(streams::PROFILE_UPDATED, &profile)],
                })
            }
            n => Err(poison(format!(
                "called with {n} recorded rounds; this handler uses 2"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::testing::{decode, event, group, int, json_event, op_text, text};
    use crate::handlers::user::fixtures::s;

    fn profiles() -> Arc<dyn Handler> {
        ProfileUpdates::build(&group(
            "user.profile_updates",
            "user.profile_updates",
            &[streams::PROFILE_UPDATED],
            "",
        ))
        .unwrap()
    }

    fn xp(amount: i64, reason: &str) -> Event {
        event(
            streams::XP_AWARDED,
            &XpAwarded {
                user_id: "u1".into(),
                amount,
                total: 0,
                level: 1,
                reason: reason.into(),
            },
        )
    }

    fn hgetall(pairs: &[(&str, &str)]) -> Reply {
        Reply::Array(pairs.iter().flat_map(|(k, v)| [text(k), text(v)]).collect())
    }

    fn ops_of(step: &Step) -> Vec<(&'static str, String, Vec<String>)> {
        let ops = match step {
            Step::More(ops) => ops,
            Step::Done { ops, .. } => ops,
        };
        ops.iter().map(op_text).collect()
    }

    fn profile_of(step: &Step) -> ProfileUpdated {
        let Step::Done { emit, .. } = step else {
            panic!("expected Done, got {step:?}")
        };
        assert_eq!(emit.len(), 1);
        assert_eq!(emit[0].stream, streams::PROFILE_UPDATED);
        decode(&emit[0])
    }

    #[test]
    fn level_formula_boundaries() {
        assert_eq!(level_for_xp(-5), 1);
        assert_eq!(level_for_xp(0), 1);
        assert_eq!(level_for_xp(99), 1);
        assert_eq!(level_for_xp(100), 2);
        assert_eq!(level_for_xp(399), 2);
        assert_eq!(level_for_xp(400), 3);
        assert_eq!(level_for_xp(1599), 4);
        assert_eq!(level_for_xp(1600), 5);
        assert_eq!(level_for_xp(8099), 9);
        assert_eq!(level_for_xp(8100), 10);
        assert_eq!(level_for_xp(36_100), 20);
        for l in 1u32..2000 {
            let need = 100 * i64::from(l - 1).pow(2);
            assert_eq!(level_for_xp(need), l);
            if need > 0 {
                assert_eq!(level_for_xp(need - 1), l - 1);
            }
        }
        assert!(level_for_xp(i64::MAX) > 1);
    }

    #[test]
    fn xp_is_added_by_delta_and_the_snapshot_comes_from_the_same_round() {
        let h = profiles();
        let ev = xp(150, "trade");
        let first = h.step(&ev, &[]).unwrap();
        assert!(matches!(first, Step::More(_)));
        let k = s("astra:user:profile:u1");
        assert_eq!(
            ops_of(&first),
            vec![
                ("HSETNX", k.clone(), vec![s("level"), s("1")]),
                ("HINCRBY", k.clone(), vec![s("xp"), s("150")]),
                ("HINCRBY", k.clone(), vec![s("trades"), s("1")]),
                ("HGETALL", k.clone(), vec![]),
            ]
        );
        // XP 0 → 150 crosses level 2: the stored level moves by +1.
        let snap = hgetall(&[
            ("level", "1"),
            ("xp", "150"),
            ("trades", "1"),
            ("display_name", "Ann"),
            ("clan", "wolves"),
        ]);
        let done = h
            .step(&ev, &[vec![int(1), int(150), int(1), snap]])
            .unwrap();
        assert_eq!(
            ops_of(&done),
            vec![("HINCRBY", k.clone(), vec![s("level"), s("1")])]
        );
        assert_eq!(
            profile_of(&done),
            ProfileUpdated {
                user_id: "u1".into(),
                display_name: Some("Ann".into()),
                clan: Some("wolves".into()),
                xp: 150,
                level: 2,
                achievements: 0,
                trades: 1,
            }
        );
    }

    #[test]
    fn level_moves_only_on_the_award_that_crosses() {
        let h = profiles();
        let ev = xp(50, "like");
        // Not a trade: no trades counter.
        let first = h.step(&ev, &[]).unwrap();
        assert_eq!(ops_of(&first).len(), 3);
        assert!(
            !ops_of(&first)
                .iter()
                .any(|(_, _, a)| a.first().map(String::as_str) == Some("trades"))
        );
        // 300 → 350: stays level 2, no level op.
        let done = h
            .step(
                &ev,
                &[vec![
                    int(0),
                    int(350),
                    hgetall(&[("xp", "350"), ("level", "2")]),
                ]],
            )
            .unwrap();
        assert!(ops_of(&done).is_empty());
        assert_eq!(profile_of(&done).level, 2);
        // 350 → 400: exactly level 3.
        let done = h
            .step(
                &ev,
                &[vec![
                    int(0),
                    int(400),
                    hgetall(&[("xp", "400"), ("level", "2")]),
                ]],
            )
            .unwrap();
        assert_eq!(
            ops_of(&done),
            vec![(
                "HINCRBY",
                s("astra:user:profile:u1"),
                vec![s("level"), s("1")]
            )]
        );
        assert_eq!(profile_of(&done).level, 3);
        // A big award jumping two levels (0 → 400): +2.
        let big = xp(400, "trade");
        let done = h
            .step(
                &big,
                &[vec![int(1), int(400), int(1), hgetall(&[("xp", "400")])]],
            )
            .unwrap();
        assert_eq!(ops_of(&done)[0].2, vec![s("level"), s("2")]);
    }

    #[test]
    fn interleaved_awards_converge_to_the_level_of_the_total() {
        // Two awards race; whichever HINCRBY ran first, the level deltas sum to the
        // level of the final total (HSETNX started it at 1).
        let level_after = |order: &[i64]| {
            let mut total = 0;
            let mut level = 1i64;
            for amount in order {
                total += amount;
                level += i64::from(level_for_xp(total)) - i64::from(level_for_xp(total - amount));
            }
            (total, level)
        };
        for order in [[90i64, 20, 300], [300, 20, 90], [20, 300, 90]] {
            let (total, level) = level_after(&order);
            assert_eq!(level, i64::from(level_for_xp(total)));
            assert_eq!(level, 3);
        }
    }

    #[test]
    fn registration_achievements_and_level_ups() {
        let h = profiles();
        let k = s("astra:user:profile:u1");
        let reg = event(
            streams::REGISTERED,
            &UserRegistered {
                user_id: "u1".into(),
                display_name: "Ann".into(),
                clan: Some("wolves".into()),
            },
        );
        assert_eq!(
            ops_of(&h.step(&reg, &[]).unwrap()),
            vec![
                ("HSETNX", k.clone(), vec![s("level"), s("1")]),
                (
                    "HSET",
                    k.clone(),
                    vec![s("display_name"), s("Ann"), s("clan"), s("wolves")]
                ),
                ("HGETALL", k.clone(), vec![]),
            ]
        );
        let done = h
            .step(
                &reg,
                &[vec![
                    int(1),
                    int(2),
                    hgetall(&[("level", "1"), ("display_name", "Ann"), ("clan", "wolves")]),
                ]],
            )
            .unwrap();
        assert!(ops_of(&done).is_empty());
        let p = profile_of(&done);
        assert_eq!((p.xp, p.level, p.achievements, p.trades), (0, 1, 0, 0));
        assert_eq!(p.clan.as_deref(), Some("wolves"));

        // Without a clan: only the display name is set.
        let reg2 = json_event(
            streams::REGISTERED,
            r#"{"user_id":"u1","display_name":"Bo"}"#,
        );
        assert_eq!(
            ops_of(&h.step(&reg2, &[]).unwrap())[1],
            ("HSET", k.clone(), vec![s("display_name"), s("Bo")])
        );

        let ach = event(
            streams::ACHIEVEMENT_UNLOCKED,
            &AchievementUnlocked {
                user_id: "u1".into(),
                achievement: "first_trade".into(),
            },
        );
        assert_eq!(
            ops_of(&h.step(&ach, &[]).unwrap())[1],
            ("HINCRBY", k.clone(), vec![s("achievements"), s("1")])
        );
        let done = h
            .step(
                &ach,
                &[vec![
                    int(0),
                    int(3),
                    hgetall(&[("xp", "1600"), ("achievements", "3")]),
                ]],
            )
            .unwrap();
        assert!(ops_of(&done).is_empty());
        let p = profile_of(&done);
        assert_eq!(
            (p.xp, p.level, p.achievements, p.display_name),
            (1600, 5, 3, None)
        );

        let lu = event(
            streams::LEVEL_UP,
            &LevelUp {
                user_id: "u1".into(),
                from: 4,
                to: 5,
                total_xp: 1600,
            },
        );
        assert_eq!(
            ops_of(&h.step(&lu, &[]).unwrap()),
            vec![("HGETALL", k.clone(), vec![])]
        );
        // Level comes from the projection's XP, even if level_up arrived first.
        let done = h.step(&lu, &[vec![hgetall(&[("xp", "1500")])]]).unwrap();
        assert!(ops_of(&done).is_empty());
        assert_eq!(profile_of(&done).level, 4);
        let done = h.step(&lu, &[vec![Reply::Array(vec![])]]).unwrap();
        assert_eq!(profile_of(&done).level, 1);
    }

    #[test]
    fn profile_poison_names_the_field() {
        let h = profiles();
        let err = h.step(&xp(-1, "trade"), &[]).unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("`amount`")),
            "{err}"
        );
        let ev = json_event(streams::REGISTERED, r#"{"user_id":"u1","display_name":""}"#);
        let err = h.step(&ev, &[]).unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("`display_name`")),
            "{err}"
        );
        let ev = json_event(
            streams::REGISTERED,
            r#"{"user_id":"u1","display_name":"A","clan":""}"#,
        );
        let err = h.step(&ev, &[]).unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("`clan`")),
            "{err}"
        );
        let ev = json_event(streams::XP_AWARDED, r#"{"user_id":"u1","amount":5}"#);
        let err = h.step(&ev, &[]).unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("total")),
            "{err}"
        );
        let ev = json_event(streams::REWARD_ISSUED, "{}");
        let err = h.step(&ev, &[]).unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("not read")),
            "{err}"
        );
        // A corrupted counter in the hash is reported, not silently zeroed.
        let err = h
            .step(
                &xp(1, "like"),
                &[vec![
                    int(0),
                    int(1),
                    hgetall(&[("xp", "1"), ("trades", "x")]),
                ]],
            )
            .unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("`trades`")),
            "{err}"
        );
        let err = h
            .step(
                &xp(1, "like"),
                &[vec![int(0), int(1), Reply::Array(vec![text("xp")])]],
            )
            .unwrap_err();
        assert!(matches!(err, HandlerError::Poison(_)));
    }
}
