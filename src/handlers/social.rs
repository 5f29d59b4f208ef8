//! social domain handlers: feeds, clan battles, influence.
//!
//! Key layouts live under `astra:social:`; the shared time helpers ([`iso_week`],
//! [`week_end_ms`], [`expire_secs`]) come from the gamification module.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::gamification::{
    check_level_up, check_xp_awarded, duration_option, expire_secs, iso_week, positive_option,
    reply, reply_score, require_non_empty, trade_notional_cents, unexpected_rounds,
    unexpected_stream, week_end_ms,
};
use super::{
    Constructor, Emit, Event, Handler, HandlerError, Op, Reply, Step, deny_unknown_options, option,
};
use crate::events::{
    AchievementUnlocked, ClanScoreUpdated, FeedItemPosted, InfluenceUpdated, Interaction,
    InteractionKind, LevelUp, Side, TradeExecuted, UserRegistered, XpAwarded, streams,
};
use crate::group::GroupConfig;

/// The handlers of this domain, by name.
pub fn handlers() -> Vec<(&'static str, Constructor)> {
    vec![
        ("social.feed_generation", FeedGeneration::build),
        ("social.clan_battles", ClanBattles::build),
        ("social.influence", Influence::build),
    ]
}

// ---------------------------------------------------------------------------------------
// social.feed_generation
// ---------------------------------------------------------------------------------------

/// List of the newest feed items of everyone (JSON [`FeedItem`]s, newest first):
/// `astra:social:feed:global`.
pub fn global_feed_key() -> String {
    "astra:social:feed:global".to_string()
}

/// List of the newest feed items about one user (JSON [`FeedItem`]s, newest first):
/// `astra:social:feed:user:<user>`.
pub fn user_feed_key(user: &str) -> String {
    format!("astra:social:feed:user:{user}")
}

/// One feed entry as stored (JSON) in the feed lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedItem {
    /// Id of the event the item is about.
    pub event_id: String,
    pub user_id: String,
    /// `achievement`, `level_up` or `large_trade`.
    pub kind: String,
    /// Human-readable line.
    pub text: String,
    /// Occurred-at of that event, Unix ms.
    pub ts: i64,
}

/// `1234567` cents → `$12,345.67`.
fn fmt_usd(cents: i64) -> String {
    let dollars = (cents / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in dollars.chars().enumerate() {
        if i > 0 && (dollars.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("${grouped}.{:02}", cents % 100)
}

/// `social.feed_generation`: global and per-user activity feeds.
///
/// Rules: an item is posted for every `astra.gamification.achievement_unlocked.v1`
/// (kind `achievement`), every `astra.gamification.level_up.v1` (kind `level_up`), and every
/// `astra.trading.trade_executed.v1` whose notional (`quantity × price_usd`, integer cents)
/// is at least `large_trade_usd` (kind `large_trade`); smaller trades are ignored.
///
/// One round (no replies needed): `LPUSH` the item to the global feed, `LTRIM` it to the
/// newest `global_cap`, `LPUSH` it to the user's feed, `LTRIM` that to `user_cap`.
///
/// Keys: [`global_feed_key`] (`astra:social:feed:global`), [`user_feed_key`]
/// (`astra:social:feed:user:<user>`); lists of JSON [`FeedItem`]
/// `{event_id, user_id, kind, text, ts}`, newest first.
///
/// Emits `astra.social.feed_item_posted.v1` ([`FeedItemPosted`]: `user_id`, `kind`, `text`,
/// `source_event_id`) per item.
///
/// Options: `large_trade_usd` (10000), `global_cap` (1000, ≥ 1), `user_cap` (200, ≥ 1).
///
/// Poison: missing/mistyped fields, empty `user_id`/`achievement`/`symbol`, invalid trade
/// numbers, a level-up whose `to <= from`.
pub struct FeedGeneration {
    large_trade_cents: i64,
    global_cap: i64,
    user_cap: i64,
}

impl FeedGeneration {
    const NAME: &'static str = "social.feed_generation";

    /// Builds from the group's options.
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        Ok(Arc::new(Self::from_config(g)?))
    }

    fn from_config(g: &GroupConfig) -> Result<FeedGeneration, String> {
        deny_unknown_options(g, &["large_trade_usd", "global_cap", "user_cap"])?;
        let usd: u64 = option(g, "large_trade_usd", 10_000)?;
        let large_trade_cents = i64::try_from(usd)
            .ok()
            .and_then(|u| u.checked_mul(100))
            .ok_or_else(|| format!("option `large_trade_usd`: {usd} is too large"))?;
        Ok(FeedGeneration {
            large_trade_cents,
            global_cap: i64::from(positive_option(g, "global_cap", 1_000)?),
            user_cap: i64::from(positive_option(g, "user_cap", 200)?),
        })
    }

    /// (user, kind, text) of the item an event makes, None if it makes none.
    fn item(&self, ev: &Event) -> Result<Option<(String, &'static str, String)>, HandlerError> {
        match ev.stream.as_str() {
            streams::ACHIEVEMENT_UNLOCKED => {
                let a: AchievementUnlocked = ev.payload()?;
                require_non_empty("user_id", &a.user_id)?;
                require_non_empty("achievement", &a.achievement)?;
                let text = format!("{} unlocked the achievement {}", a.user_id, a.achievement);
                Ok(Some((a.user_id, "achievement", text)))
            }
            streams::LEVEL_UP => {
                let l: LevelUp = ev.payload()?;
                check_level_up(&l)?;
                let text = format!("{} reached level {}", l.user_id, l.to);
                Ok(Some((l.user_id, "level_up", text)))
            }
            streams::TRADE_EXECUTED => {
                let t: TradeExecuted = ev.payload()?;
                let notional = trade_notional_cents(&t)?;
                require_non_empty("symbol", &t.symbol)?;
                if notional < self.large_trade_cents {
                    return Ok(None);
                }
                let verb = match t.side {
                    Side::Buy => "bought",
                    Side::Sell => "sold",
                };
                let text = format!(
                    "{} {verb} {} {} for {}",
                    t.user_id,
                    t.quantity,
                    t.symbol,
                    fmt_usd(notional)
                );
                Ok(Some((t.user_id, "large_trade", text)))
            }
            _ => Err(unexpected_stream(Self::NAME, ev)),
        }
    }
}

impl Handler for FeedGeneration {
    fn step(&self, ev: &Event, rounds: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        let Some((user, kind, text)) = self.item(ev)? else {
            return Ok(Step::nothing());
        };
        if !rounds.is_empty() {
            return Err(unexpected_rounds(Self::NAME, rounds));
        }
        let item = FeedItem {
            event_id: ev.env.id.clone(),
            user_id: user.clone(),
            kind: kind.to_string(),
            text: text.clone(),
            ts: ev.env.ts,
        };
        // Serializing a struct of strings and an integer cannot fail.
        let json = serde_json::to_vec(&item).expect("feed item serializes");
        let (global, mine) = (global_feed_key(), user_feed_key(&user));
        Ok(Step::Done {
            ops: vec![
                Op::lpush(&global, &json),
                Op::ltrim(&global, 0, self.global_cap - 1),
                Op::lpush(&mine, &json),
                Op::ltrim(&mine, 0, self.user_cap - 1),
            ],
            emit: vec![Emit::new(
                streams::FEED_ITEM_POSTED,
                &FeedItemPosted {
                    user_id: user,
                    kind: kind.to_string(),
                    text,
                    source_event_id: ev.env.id.clone(),
                },
            )],
        })
    }
}

// ---------------------------------------------------------------------------------------
// social.clan_battles
// ---------------------------------------------------------------------------------------

/// Hash `user_id → clan` of registered users that have a clan: `astra:social:clan_of`.
pub fn clan_membership_key() -> String {
    "astra:social:clan_of".to_string()
}

/// Sorted set `clan → XP` of one ISO week: `astra:social:clan_scores:<week>`, e.g.
/// `astra:social:clan_scores:2026-W47`.
pub fn clan_scores_key(week: &str) -> String {
    format!("astra:social:clan_scores:{week}")
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
            expire_margin: duration_option(g, "expire_margin", "2d")?,
        })
    }
}

impl Handler for ClanBattles {
    fn step(&self, ev: &Event, rounds: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        match ev.stream.as_str() {
            streams::REGISTERED => {
                let u: UserRegistered = ev.payload()?;
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
            streams::XP_AWARDED => {
                let x: XpAwarded = ev.payload()?;
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
            _ => Err(unexpected_stream(Self::NAME, ev)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// social.influence
// ---------------------------------------------------------------------------------------

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

impl Handler for Influence {
    fn step(&self, ev: &Event, rounds: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        if ev.stream != streams::INTERACTION {
            return Err(unexpected_stream(Self::NAME, ev));
        }
        let i: Interaction = ev.payload()?;
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
    use crate::handlers::testing::{args, done, more, poison_of as poison_reason};
    use crate::handlers::testing::{decode, event, event_at, group, json_event, text};

    fn trade(user: &str, side: Side, quantity: f64, price_usd: f64) -> TradeExecuted {
        TradeExecuted {
            trade_id: "t1".into(),
            user_id: user.into(),
            symbol: "BTC".into(),
            side,
            quantity,
            price_usd,
            fee_usd: Some(1.0),
        }
    }

    fn xp(user: &str, amount: i64, total: i64) -> XpAwarded {
        XpAwarded {
            user_id: user.into(),
            amount,
            total,
            level: 1,
            reason: "like".into(),
        }
    }

    // ---- feed_generation -------------------------------------------------------------------

    fn feed(options: &str) -> FeedGeneration {
        FeedGeneration::from_config(&group(
            "social.feed_generation",
            "social.feed_generation",
            &[streams::FEED_ITEM_POSTED],
            options,
        ))
        .unwrap()
    }

    #[test]
    fn usd_formatting() {
        assert_eq!(fmt_usd(0), "$0.00");
        assert_eq!(fmt_usd(5), "$0.05");
        assert_eq!(fmt_usd(99_999), "$999.99");
        assert_eq!(fmt_usd(100_000), "$1,000.00");
        assert_eq!(fmt_usd(123_456_789), "$1,234,567.89");
    }

    #[test]
    fn achievement_item_goes_to_both_feeds_capped() {
        let h = feed("");
        let a = AchievementUnlocked {
            user_id: "alice".into(),
            achievement: "first_trade".into(),
        };
        let ev = event(streams::ACHIEVEMENT_UNLOCKED, &a);
        let (ops, emit) = done(h.step(&ev, &[]).unwrap());
        let shape: Vec<(&str, &str)> = ops.iter().map(|o| (o.cmd(), o.key())).collect();
        assert_eq!(
            shape,
            [
                ("LPUSH", "astra:social:feed:global"),
                ("LTRIM", "astra:social:feed:global"),
                ("LPUSH", "astra:social:feed:user:alice"),
                ("LTRIM", "astra:social:feed:user:alice"),
            ]
        );
        assert_eq!(args(&ops[1]), ["0", "999"]);
        assert_eq!(args(&ops[3]), ["0", "199"]);
        assert_eq!(ops[0].args(), ops[2].args());
        let item: FeedItem = serde_json::from_slice(&ops[0].args()[0]).unwrap();
        assert_eq!(
            item,
            FeedItem {
                event_id: ev.env.id.clone(),
                user_id: "alice".into(),
                kind: "achievement".into(),
                text: "alice unlocked the achievement first_trade".into(),
                ts: 1_795_262_400_000,
            }
        );
        // Field order in the stored JSON is fixed.
        let json = String::from_utf8(ops[0].args()[0].clone()).unwrap();
        assert!(json.starts_with("{\"event_id\":"), "{json}");
        assert_eq!(emit.len(), 1);
        assert_eq!(emit[0].stream, streams::FEED_ITEM_POSTED);
        assert_eq!(
            decode::<FeedItemPosted>(&emit[0]),
            FeedItemPosted {
                user_id: "alice".into(),
                kind: "achievement".into(),
                text: "alice unlocked the achievement first_trade".into(),
                source_event_id: ev.env.id.clone(),
            }
        );
    }

    #[test]
    fn level_up_item() {
        let h = feed("global_cap = 5\nuser_cap = 1");
        let l = LevelUp {
            user_id: "bob".into(),
            from: 2,
            to: 4,
            total_xp: 900,
        };
        let (ops, emit) = done(h.step(&event(streams::LEVEL_UP, &l), &[]).unwrap());
        assert_eq!(args(&ops[1]), ["0", "4"]);
        assert_eq!(args(&ops[3]), ["0", "0"]);
        let p: FeedItemPosted = decode(&emit[0]);
        assert_eq!(
            (p.kind.as_str(), p.text.as_str()),
            ("level_up", "bob reached level 4")
        );
    }

    #[test]
    fn large_trades_from_the_threshold_up() {
        let h = feed("");
        // 9,999.99 USD: not large.
        let ev = event(
            streams::TRADE_EXECUTED,
            &trade("carol", Side::Buy, 1.0, 9_999.99),
        );
        assert_eq!(h.step(&ev, &[]).unwrap(), Step::nothing());
        // 0.1 × 100,000 = exactly 10,000.00 USD: large.
        let ev = event(
            streams::TRADE_EXECUTED,
            &trade("carol", Side::Sell, 0.1, 100_000.0),
        );
        let (ops, emit) = done(h.step(&ev, &[]).unwrap());
        assert_eq!(ops.len(), 4);
        assert_eq!(ops[2].key(), "astra:social:feed:user:carol");
        let p: FeedItemPosted = decode(&emit[0]);
        assert_eq!(p.kind, "large_trade");
        assert_eq!(p.text, "carol sold 0.1 BTC for $10,000.00");
        let item: FeedItem = serde_json::from_slice(&ops[0].args()[0]).unwrap();
        assert_eq!(item.kind, "large_trade");
        // A lower threshold.
        let h = feed("large_trade_usd = 50");
        let ev = event(
            streams::TRADE_EXECUTED,
            &trade("carol", Side::Buy, 2.0, 25.0),
        );
        let (_, emit) = done(h.step(&ev, &[]).unwrap());
        assert_eq!(
            decode::<FeedItemPosted>(&emit[0]).text,
            "carol bought 2 BTC for $50.00"
        );
    }

    #[test]
    fn feed_options_and_poison() {
        let h = feed("");
        assert_eq!(
            (h.large_trade_cents, h.global_cap, h.user_cap),
            (1_000_000, 1_000, 200)
        );
        let g = |o: &str| group("x", "social.feed_generation", &[], o);
        let err = FeedGeneration::build(&g("cap = 3")).err().unwrap();
        assert!(err.contains("unknown option `cap`"), "{err}");
        let err = FeedGeneration::build(&g("user_cap = 0")).err().unwrap();
        assert!(err.contains("user_cap"), "{err}");
        let err = FeedGeneration::build(&g("large_trade_usd = -5"))
            .err()
            .unwrap();
        assert!(err.contains("large_trade_usd"), "{err}");

        let r = poison_reason(h.step(
            &event(streams::TRADE_EXECUTED, &trade("c", Side::Buy, 1.0, -3.0)),
            &[],
        ));
        assert!(r.contains("price_usd"), "{r}");
        let mut t = trade("c", Side::Buy, 1.0, 1.0);
        t.symbol.clear();
        let r = poison_reason(h.step(&event(streams::TRADE_EXECUTED, &t), &[]));
        assert!(r.contains("symbol"), "{r}");
        let a = AchievementUnlocked {
            user_id: "a".into(),
            achievement: String::new(),
        };
        let r = poison_reason(h.step(&event(streams::ACHIEVEMENT_UNLOCKED, &a), &[]));
        assert!(r.contains("achievement"), "{r}");
        let missing = json_event(streams::ACHIEVEMENT_UNLOCKED, r#"{"achievement":"x"}"#);
        assert!(poison_reason(h.step(&missing, &[])).contains("user_id"));
        let r = poison_reason(h.step(&event(streams::XP_AWARDED, &xp("a", 1, 1)), &[]));
        assert!(r.contains("does not read"), "{r}");
    }

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

    #[test]
    fn registered_names() {
        let names: Vec<&str> = handlers().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "social.feed_generation",
                "social.clan_battles",
                "social.influence"
            ]
        );
    }
}
