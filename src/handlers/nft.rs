//! nft domain handlers: badge rewards ([`RewardDistribution`]) and marketplace statistics
//! ([`Marketplace`]).

use std::sync::Arc;

use super::{
    Constructor, Emit, Event, Handler, HandlerError, Op, Reply, Step, deny_unknown_options,
    non_empty, option, poison,
};
use crate::events::{
    AchievementUnlocked, LevelUp, RewardIssued, SaleCompleted, streams, usd_to_cents,
};
use crate::group::GroupConfig;

/// The handlers of this domain, by name.
pub fn handlers() -> Vec<(&'static str, Constructor)> {
    vec![
        ("nft.reward_distribution", RewardDistribution::build),
        ("nft.marketplace", Marketplace::build),
    ]
}

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

/// `astra:nft:rewards:<user>`: set of the reward names a user holds (`bronze_badge`,
/// `first_trade_badge`, …). A reward is issued only when `SADD` adds it.
pub fn rewards_key(user: &str) -> String {
    format!("astra:nft:rewards:{user}")
}

/// `astra:nft:rewards_issued`: hash `<user>` → number of rewards issued to that user.
pub fn rewards_issued_key() -> String {
    "astra:nft:rewards_issued".to_string()
}

/// `astra:nft:collection:{<collection>}`: hash with the collection's all-time counters,
/// fields [`FIELD_VOLUME_CENTS`] and [`FIELD_SALES`]. The braces are a Redis Cluster hash
/// tag, so this key and [`collection_sales_key`] live in the same slot.
pub fn collection_key(collection: &str) -> String {
    format!("astra:nft:collection:{{{collection}}}")
}

/// `astra:nft:collection:{<collection>}:sales`: sorted set of the collection's recent
/// sales, score = sale `ts` (Unix ms), member = [`sale_member`] (`<cents>:<sale_id>`).
/// Entries older than 24 h plus `prune_margin_secs` (relative to the newest event that
/// pruned) are removed. Read it with `ZRANGE key 0 -1 WITHSCORES` and feed [`summarize`].
pub fn collection_sales_key(collection: &str) -> String {
    format!("astra:nft:collection:{{{collection}}}:sales")
}

/// `astra:nft:collections`: set of every collection that has had a sale.
pub fn collections_key() -> String {
    "astra:nft:collections".to_string()
}

/// Field of [`collection_key`]: total sale volume, integer cents.
pub const FIELD_VOLUME_CENTS: &str = "volume_cents";
/// Field of [`collection_key`]: number of sales.
pub const FIELD_SALES: &str = "sales";

/// Member of [`collection_sales_key`] for one sale: `<price_cents>:<sale_id>` (the price
/// first, so a sale id containing `:` still parses).
pub fn sale_member(sale_id: &str, price_cents: i64) -> String {
    format!("{price_cents}:{sale_id}")
}

/// Parses a [`sale_member`] back into `(price_cents, sale_id)`; `None` if malformed.
pub fn parse_sale_member(member: &str) -> Option<(i64, &str)> {
    let (cents, sale_id) = member.split_once(':')?;
    let cents: i64 = cents.parse().ok()?;
    (cents > 0 && !sale_id.is_empty()).then_some((cents, sale_id))
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The integer reply `i` of round `round`; anything else breaks the handler's invariant.
fn reply_int(
    rounds: &[Vec<Reply>],
    round: usize,
    i: usize,
    what: &str,
) -> Result<i64, HandlerError> {
    let r = rounds
        .get(round)
        .and_then(|r| r.get(i))
        .ok_or_else(|| poison(format!("round {round}: missing reply {i} ({what})")))?;
    r.as_int().ok_or_else(|| {
        poison(format!(
            "round {round}: reply {i} ({what}) is not an integer: {r:?}"
        ))
    })
}

fn unexpected_stream(ev: &Event) -> HandlerError {
    poison(format!(
        "stream `{}` is not read by this handler",
        ev.stream
    ))
}

fn unexpected_round(rounds: &[Vec<Reply>]) -> HandlerError {
    poison(format!(
        "called with {} recorded rounds; this handler never asks for that many",
        rounds.len()
    ))
}

// ---------------------------------------------------------------------------------------
// nft.reward_distribution
// ---------------------------------------------------------------------------------------

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
    fn grants(&self, ev: &Event) -> Result<(String, Vec<(String, String)>), HandlerError> {
        match ev.stream.as_str() {
            streams::LEVEL_UP => {
                let p: LevelUp = ev.payload()?;
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
            streams::ACHIEVEMENT_UNLOCKED => {
                let p: AchievementUnlocked = ev.payload()?;
                non_empty("user_id", &p.user_id)?;
                non_empty("achievement", &p.achievement)?;
                Ok((
                    p.user_id,
                    vec![(format!("{}_badge", p.achievement), p.achievement)],
                ))
            }
            _ => Err(unexpected_stream(ev)),
        }
    }
}

impl Handler for RewardDistribution {
    fn step(&self, ev: &Event, rounds: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        let (user, grants) = self.grants(ev)?;
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
            _ => Err(unexpected_round(rounds)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// nft.marketplace
// ---------------------------------------------------------------------------------------

/// The window of the "24h low" statistic.
pub const LOW_WINDOW_MS: i64 = 24 * 3_600_000;

/// `nft.marketplace`: per-collection volume, sale count, last price and 24-hour low.
///
/// Rules: a `nft.sale_completed` with `price_usd` ≤ 0, not finite, below one cent after
/// rounding or above 10^13 USD is poison, as is an empty `sale_id` or `collection`.
///
/// Rounds: (1) `ZADD astra:nft:collection:{<c>}:sales NX <ts> <cents>:<sale_id>` and
/// `ZREMRANGEBYSCORE … -inf (<ts − 24h − prune_margin>` (prune); (2) only if the `ZADD`
/// added the member (so a sale published twice is counted once while it is in the
/// window), `HINCRBY astra:nft:collection:{<c>} volume_cents <cents>`,
/// `HINCRBY … sales 1` and `SADD astra:nft:collections <c>`.
///
/// "Last price" and "24h low" are never stored as absolute values (a late or concurrent
/// event would overwrite a newer one); they are computed by [`summarize`] from the sorted
/// set, whose order is the sales' own `ts`, so delivery order cannot corrupt them.
///
/// Keys: [`collection_key`], [`collection_sales_key`], [`collections_key`].
/// Emits: nothing.
/// Options: `prune_margin_secs` (3600): how long past 24 h a sale stays in the sorted set
/// (so out-of-order events and readers' clock skew still see it).
pub struct Marketplace {
    prune_margin_ms: i64,
}

impl Marketplace {
    /// Builds from the group config.
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(g, &["prune_margin_secs"])?;
        let margin: u64 = option(g, "prune_margin_secs", 3600)?;
        if margin > 30 * 86_400 {
            return Err(format!(
                "option `prune_margin_secs`: at most 2592000 (30 days), got {margin}"
            ));
        }
        Ok(Arc::new(Marketplace {
            prune_margin_ms: margin as i64 * 1000,
        }))
    }
}

/// Validates a sale and returns its price in cents.
fn sale_cents(s: &SaleCompleted) -> Result<i64, HandlerError> {
    non_empty("sale_id", &s.sale_id)?;
    non_empty("collection", &s.collection)?;
    let p = s.price_usd;
    if !p.is_finite() || p <= 0.0 {
        return Err(poison(format!(
            "field `price_usd`: must be a finite number > 0, got {p}"
        )));
    }
    match usd_to_cents(p) {
        Some(c) if c >= 1 => Ok(c),
        Some(_) => Err(poison(format!(
            "field `price_usd`: {p} rounds to 0 cents; must be at least 0.005"
        ))),
        None => Err(poison(format!("field `price_usd`: {p} is out of range"))),
    }
}

impl Handler for Marketplace {
    fn step(&self, ev: &Event, rounds: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        if ev.stream != streams::SALE_COMPLETED {
            return Err(unexpected_stream(ev));
        }
        let sale: SaleCompleted = ev.payload()?;
        let cents = sale_cents(&sale)?;
        let sales = collection_sales_key(&sale.collection);
        match rounds.len() {
            0 => {
                let cutoff = ev.env.ts - LOW_WINDOW_MS - self.prune_margin_ms;
                Ok(Step::More(vec![
                    Op::new(
                        "ZADD",
                        sales.clone(),
                        vec![
                            b"NX".to_vec(),
                            ev.env.ts.to_string().into_bytes(),
                            sale_member(&sale.sale_id, cents).into_bytes(),
                        ],
                    ),
                    Op::zremrangebyscore(sales, "-inf", format!("({cutoff}")),
                ]))
            }
            1 => {
                if reply_int(rounds, 0, 0, "ZADD NX sale")? != 1 {
                    // The same sale (id and price) is already recorded: count it once.
                    return Ok(Step::nothing());
                }
                let key = collection_key(&sale.collection);
                Ok(Step::Done {
                    ops: vec![
                        Op::hincrby(&key, FIELD_VOLUME_CENTS, cents),
                        Op::hincrby(&key, FIELD_SALES, 1),
                        Op::sadd(collections_key(), &sale.collection),
                    ],
                    emit: vec![],
                })
            }
            _ => Err(unexpected_round(rounds)),
        }
    }
}

/// Statistics of one collection computed from its sales sorted set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectionStats {
    /// Price of the latest sale (highest `ts`; ties broken by the larger sale id), cents.
    pub last_price_cents: Option<i64>,
    /// Id of that sale.
    pub last_sale_id: Option<String>,
    /// `ts` of that sale, Unix ms.
    pub last_sale_ts: Option<i64>,
    /// Lowest price among sales with `ts > now − 24h` (later ones included), cents.
    pub low_24h_cents: Option<i64>,
    /// Number of sales in that window.
    pub sales_24h: u64,
    /// Volume of the sales in that window, cents.
    pub volume_24h_cents: i64,
    /// Entries whose member or score did not parse (skipped).
    pub malformed: u64,
}

/// Computes [`CollectionStats`] from `ZRANGE astra:nft:collection:{<c>}:sales 0 -1
/// WITHSCORES` output, as `(member, score)` pairs in any order, at `now_ms` (the reader's
/// clock, Unix ms). Pure: the HTTP edge and the metrics call it on what they read.
pub fn summarize<I, M>(entries: I, now_ms: i64) -> CollectionStats
where
    I: IntoIterator<Item = (M, f64)>,
    M: AsRef<str>,
{
    let mut st = CollectionStats::default();
    let mut last: Option<(i64, String, i64)> = None; // (ts, sale id, cents)
    for (member, score) in entries {
        let Some((cents, sale_id)) = parse_sale_member(member.as_ref()) else {
            st.malformed += 1;
            continue;
        };
        // Timestamps in ms are exact in an f64 (below 2^53).
        if !score.is_finite() || score.fract() != 0.0 || score.abs() > 9.0e15 {
            st.malformed += 1;
            continue;
        }
        let ts = score as i64;
        let newer = match &last {
            None => true,
            Some((lts, lid, _)) => (ts, sale_id) > (*lts, lid.as_str()),
        };
        if newer {
            last = Some((ts, sale_id.to_string(), cents));
        }
        if ts > now_ms - LOW_WINDOW_MS {
            st.sales_24h += 1;
            st.volume_24h_cents += cents;
            st.low_24h_cents = Some(st.low_24h_cents.map_or(cents, |l| l.min(cents)));
        }
    }
    if let Some((ts, id, cents)) = last {
        st.last_price_cents = Some(cents);
        st.last_sale_id = Some(id);
        st.last_sale_ts = Some(ts);
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::testing::{decode, event, event_at, group, int, json_event};

    fn rewards(options: &str) -> Arc<dyn Handler> {
        RewardDistribution::build(&group(
            "nft.reward_distribution",
            "nft.reward_distribution",
            &[streams::REWARD_ISSUED],
            options,
        ))
        .unwrap()
    }

    fn market(options: &str) -> Arc<dyn Handler> {
        Marketplace::build(&group("nft.marketplace", "nft.marketplace", &[], options)).unwrap()
    }

    fn level_up(from: u32, to: u32) -> Event {
        event(
            streams::LEVEL_UP,
            &LevelUp {
                user_id: "u1".into(),
                from,
                to,
                total_xp: 0,
            },
        )
    }

    fn achievement(a: &str) -> Event {
        event(
            streams::ACHIEVEMENT_UNLOCKED,
            &AchievementUnlocked {
                user_id: "u1".into(),
                achievement: a.into(),
            },
        )
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

    fn sale(id: &str, price: f64, ts: i64) -> Event {
        event_at(
            streams::SALE_COMPLETED,
            &SaleCompleted {
                sale_id: id.into(),
                collection: "punks".into(),
                token_id: "7".into(),
                seller_id: "s".into(),
                buyer_id: "b".into(),
                price_usd: price,
            },
            ts,
        )
    }

    const T: i64 = 1_795_262_400_000;

    #[test]
    fn marketplace_records_the_sale_and_prunes_in_one_round() {
        let h = market("");
        let Step::More(ops) = h.step(&sale("s1", 12.345, T), &[]).unwrap() else {
            panic!("expected More")
        };
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].cmd(), "ZADD");
        assert_eq!(ops[0].key(), "astra:nft:collection:{punks}:sales");
        assert_eq!(
            ops[0].args(),
            [
                b"NX".to_vec(),
                T.to_string().into_bytes(),
                b"1235:s1".to_vec()
            ]
        );
        assert_eq!(ops[1].cmd(), "ZREMRANGEBYSCORE");
        assert_eq!(ops[1].key(), "astra:nft:collection:{punks}:sales");
        let cutoff = T - 86_400_000 - 3_600_000;
        assert_eq!(
            ops[1].args(),
            [b"-inf".to_vec(), format!("({cutoff}").into_bytes()]
        );
    }

    #[test]
    fn marketplace_counts_a_new_sale_once() {
        let h = market("");
        let ev = sale("s1", 12.345, T);
        let Step::Done { ops, emit } = h.step(&ev, &[vec![int(1), int(0)]]).unwrap() else {
            panic!("expected Done")
        };
        assert!(emit.is_empty());
        let got: Vec<_> = ops
            .iter()
            .map(|o| (o.cmd(), o.key().to_string(), o.args().to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "HINCRBY",
                    "astra:nft:collection:{punks}".to_string(),
                    vec![b"volume_cents".to_vec(), b"1235".to_vec()]
                ),
                (
                    "HINCRBY",
                    "astra:nft:collection:{punks}".to_string(),
                    vec![b"sales".to_vec(), b"1".to_vec()]
                ),
                (
                    "SADD",
                    "astra:nft:collections".to_string(),
                    vec![b"punks".to_vec()]
                ),
            ]
        );
        // The same sale already in the set (ZADD NX replied 0): not counted again.
        assert_eq!(
            h.step(&ev, &[vec![int(0), int(3)]]).unwrap(),
            Step::nothing()
        );
    }

    #[test]
    fn marketplace_poison() {
        let h = market("");
        for (price, needle) in [
            (0.0, "price_usd"),
            (-1.0, "price_usd"),
            (f64::NAN, "price_usd"),
            (f64::INFINITY, "price_usd"),
            (0.004, "0 cents"),
            (1e14, "out of range"),
        ] {
            let err = h.step(&sale("s", price, T), &[]).unwrap_err();
            assert!(
                matches!(&err, HandlerError::Poison(m) if m.contains(needle)),
                "{price}: {err}"
            );
        }
        // Smallest valid price: one cent.
        assert!(matches!(
            h.step(&sale("s", 0.005, T), &[]),
            Ok(Step::More(_))
        ));
        let err = h.step(&sale("", 1.0, T), &[]).unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("`sale_id`")),
            "{err}"
        );
        let ev = json_event(
            streams::SALE_COMPLETED,
            r#"{"sale_id":"s","collection":"c","token_id":"t","seller_id":"a","buyer_id":"b"}"#,
        );
        let err = h.step(&ev, &[]).unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("price_usd")),
            "{err}"
        );
        let err = h.step(&level_up(1, 2), &[]).unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("not read")),
            "{err}"
        );
    }

    #[test]
    fn marketplace_options() {
        let h = market("prune_margin_secs = 60");
        let Step::More(ops) = h.step(&sale("s1", 1.0, T), &[]).unwrap() else {
            panic!("expected More")
        };
        assert_eq!(
            ops[1].args()[1],
            format!("({}", T - 86_400_000 - 60_000).into_bytes()
        );
        let g = |o: &str| Marketplace::build(&group("n", "nft.marketplace", &[], o)).err();
        assert!(g("").is_none());
        assert!(
            g("prune_margin_secs = -1")
                .unwrap()
                .contains("prune_margin_secs")
        );
        assert!(
            g("prune_margin_secs = 99999999")
                .unwrap()
                .contains("at most")
        );
        assert!(g("window = 1").unwrap().contains("unknown option `window`"));
    }

    #[test]
    fn members_roundtrip() {
        assert_eq!(sale_member("a:b", 42), "42:a:b");
        assert_eq!(parse_sale_member("42:a:b"), Some((42, "a:b")));
        assert_eq!(parse_sale_member("x:a"), None);
        assert_eq!(parse_sale_member("0:a"), None);
        assert_eq!(parse_sale_member("5:"), None);
        assert_eq!(parse_sale_member("5"), None);
    }

    #[test]
    fn summarize_uses_sale_time_not_arrival_order() {
        let now = T;
        let h = 3_600_000i64;
        // Arrival order (as listed) differs from ts order; ZRANGE would sort, but any
        // order must give the same answer.
        let entries = vec![
            ("900:late".to_string(), (now - h) as f64),
            ("500:old".to_string(), (now - 25 * h) as f64), // outside 24h: not in the low
            ("700:mid".to_string(), (now - 2 * h) as f64),
            ("800:edge".to_string(), (now - 24 * h) as f64), // exactly 24h old: outside
            ("1000:newest".to_string(), (now - 1000) as f64),
            ("garbage".to_string(), now as f64),
        ];
        let st = summarize(entries.clone(), now);
        assert_eq!(st.last_price_cents, Some(1000));
        assert_eq!(st.last_sale_id.as_deref(), Some("newest"));
        assert_eq!(st.last_sale_ts, Some(now - 1000));
        assert_eq!(st.low_24h_cents, Some(700));
        assert_eq!(st.sales_24h, 3);
        assert_eq!(st.volume_24h_cents, 900 + 700 + 1000);
        assert_eq!(st.malformed, 1);
        let mut rev = entries;
        rev.reverse();
        assert_eq!(summarize(rev, now), st);
        // One ms later the 24h-edge sale is still out; one ms earlier it is in.
        assert_eq!(
            summarize(vec![("800:edge", (now - 24 * h) as f64)], now - 1).low_24h_cents,
            Some(800)
        );
        // Equal timestamps: the larger sale id is "last", whatever the order.
        let tie = summarize(vec![("5:b", 10.0), ("7:a", 10.0)], 10);
        assert_eq!(
            (tie.last_price_cents, tie.last_sale_id.as_deref()),
            (Some(5), Some("b"))
        );
        let tie = summarize(vec![("7:a", 10.0), ("5:b", 10.0)], 10);
        assert_eq!(tie.last_price_cents, Some(5));
        // Nothing at all.
        assert_eq!(
            summarize(Vec::<(&str, f64)>::new(), now),
            CollectionStats::default()
        );
        // A fractional score is not a ts this handler wrote.
        assert_eq!(summarize(vec![("5:a", 1.5)], 10).malformed, 1);
    }
}
