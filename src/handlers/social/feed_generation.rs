//! `social.feed_generation`: global and per-user activity feeds.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::events::{AchievementUnlocked, FeedItemPosted, LevelUp, Side, TradeExecuted, streams};
use crate::group::GroupConfig;
use crate::handler::{Emit, Event, Handler, HandlerError, Op, Reply, Step};
use crate::handlers::gamification::{check_level_up, trade_notional_cents};
use crate::handlers::support::{
    deny_unknown_options, option, positive_option, require_non_empty, unexpected_rounds,
};
use crate::handlers::typed::{Reject, TypedHandler, input};

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

input! {
    /// What `social.feed_generation` reads.
    pub enum FeedInput {
        streams::ACHIEVEMENT_UNLOCKED => Achievement(AchievementUnlocked),
        streams::LEVEL_UP => LevelUp(LevelUp),
        streams::TRADE_EXECUTED => Trade(TradeExecuted),
    }
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
    fn item(
        &self,
        input: FeedInput,
    ) -> Result<Option<(String, &'static str, String)>, HandlerError> {
        match input {
            FeedInput::Achievement(a) => {
                require_non_empty("user_id", &a.user_id)?;
                require_non_empty("achievement", &a.achievement)?;
                let text = format!("{} unlocked the achievement {}", a.user_id, a.achievement);
                Ok(Some((a.user_id, "achievement", text)))
            }
            FeedInput::LevelUp(l) => {
                check_level_up(&l)?;
                let text = format!("{} reached level {}", l.user_id, l.to);
                Ok(Some((l.user_id, "level_up", text)))
            }
            FeedInput::Trade(t) => {
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
        }
    }
}

impl TypedHandler for FeedGeneration {
    type Input = FeedInput;

    const REJECT: Reject = Reject::Group(Self::NAME);

    fn decide(
        &self,
        input: FeedInput,
        ev: &Event,
        rounds: &[Vec<Reply>],
    ) -> Result<Step, HandlerError> {
        let Some((user, kind, text)) = self.item(input)? else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::social::fixtures::*;
    use crate::handlers::testing::{args, done, poison_of as poison_reason};
    use crate::handlers::testing::{decode, event, group, json_event};

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
}
