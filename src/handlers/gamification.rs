//! gamification domain handlers: XP and levels, leaderboards, achievements.
//!
//! Also home of the time and level helpers the social domain and the HTTP edge share:
//! [`level_for_xp`], [`xp_for_level`], [`iso_week`], [`week_end_ms`], [`day_end_ms`],
//! [`expire_secs`], and every gamification key layout (`astra:gamification:…`).

use std::sync::Arc;
use std::time::Duration;

use super::{
    Constructor, Emit, Event, Handler, HandlerError, Op, Reply, Step, deny_unknown_options, option,
};
use crate::calendar::utc_day;
pub use crate::calendar::{day_end_ms, iso_week, iso_year_week, week_end_ms};
use crate::events::{
    AchievementUnlocked, Interaction, InteractionKind, LeaderboardUpdated, LevelUp, TradeExecuted,
    XpAwarded, notional_cents, streams,
};
use crate::group::GroupConfig;

/// The handlers of this domain, by name.
pub fn handlers() -> Vec<(&'static str, Constructor)> {
    vec![
        ("gamification.xp_processing", XpProcessing::build),
        ("gamification.leaderboards", Leaderboards::build),
        ("gamification.achievements", Achievements::build),
    ]
}

// ---------------------------------------------------------------------------------------
// Levels
// ---------------------------------------------------------------------------------------

/// The level of a user with `xp` total XP. Level `L` needs `100·(L−1)²` XP: level 1 at
/// 0 XP, level 2 at 100, level 3 at 400, level 4 at 900, … Negative totals are level 1.
///
/// Integer math only (`1 + isqrt(xp / 100)`): exact at every threshold. This works
/// because `(L−1)²` is an integer, so `100·(L−1)² ≤ xp ⇔ (L−1)² ≤ ⌊xp/100⌋`.
pub fn level_for_xp(xp: i64) -> u32 {
    if xp < 100 {
        return 1;
    }
    // isqrt(i64::MAX / 100) < 2^32, so the cast cannot truncate.
    1 + (xp / 100).isqrt() as u32
}

/// Total XP needed to reach `level` (`100·(level−1)²`, saturating; level 0 and 1 need 0).
pub fn xp_for_level(level: u32) -> i64 {
    let k = i64::from(level.saturating_sub(1));
    k.saturating_mul(k).saturating_mul(100)
}

// ---------------------------------------------------------------------------------------
// Time periods
// ---------------------------------------------------------------------------------------

/// `EXPIRE` seconds for a key of a period that ends at `period_end_ms`, written by an event
/// that occurred at `ts_ms`: the rest of the period (rounded up to whole seconds) plus
/// `margin`, at least 1. Measured from the event's time, so the same event always asks for
/// the same TTL (replay-safe) and the key outlives its period by `margin`.
pub fn expire_secs(period_end_ms: i64, ts_ms: i64, margin: Duration) -> i64 {
    let rest_ms = period_end_ms.saturating_sub(ts_ms).max(0);
    let rest_secs = rest_ms / 1000 + i64::from(rest_ms % 1000 != 0);
    let margin = i64::try_from(margin.as_secs()).unwrap_or(i64::MAX);
    rest_secs.saturating_add(margin).max(1)
}

// ---------------------------------------------------------------------------------------
// Shared handler plumbing (also used by `social`)
// ---------------------------------------------------------------------------------------

/// A humantime duration option (`"2d"`, `"36h"`), `default` when absent.
pub(crate) fn duration_option(
    g: &GroupConfig,
    name: &str,
    default: &str,
) -> Result<Duration, String> {
    let s: String = option(g, name, default.to_string())?;
    humantime::parse_duration(&s).map_err(|e| {
        format!("option `{name}`: {e} (expected a duration such as \"2d\" or \"36h\")")
    })
}

/// An integer option that must be at least 1.
pub(crate) fn positive_option(g: &GroupConfig, name: &str, default: u32) -> Result<u32, String> {
    let v: u32 = option(g, name, default)?;
    if v == 0 {
        return Err(format!("option `{name}`: must be >= 1, got 0"));
    }
    Ok(v)
}

/// Poison unless `value` is non-empty.
pub(crate) fn require_non_empty(field: &str, value: &str) -> Result<(), HandlerError> {
    if value.is_empty() {
        return Err(HandlerError::Poison(format!(
            "field `{field}`: must not be empty"
        )));
    }
    Ok(())
}

/// Poison: the event arrived on a stream the group does not read.
pub(crate) fn unexpected_stream(group: &str, ev: &Event) -> HandlerError {
    HandlerError::Poison(format!("group {group} does not read stream {}", ev.stream))
}

/// Poison: `step` was called with more rounds than this event's plan has.
pub(crate) fn unexpected_rounds(group: &str, rounds: &[Vec<Reply>]) -> HandlerError {
    HandlerError::Poison(format!(
        "group {group}: step called after {} rounds, more than this event needs",
        rounds.len()
    ))
}

/// The reply to op `i` of round `r`. A missing reply is poison: the recorded replies are
/// replayed as they are, so retrying could never fix it.
pub(crate) fn reply<'a>(
    rounds: &'a [Vec<Reply>],
    r: usize,
    i: usize,
    what: &str,
) -> Result<&'a Reply, HandlerError> {
    rounds
        .get(r)
        .and_then(|round| round.get(i))
        .ok_or_else(|| HandlerError::Poison(format!("round {r}: missing reply {i} ({what})")))
}

/// An integer reply (`HINCRBY`, `SADD`, `ZREVRANK`, …).
pub(crate) fn reply_int(
    rounds: &[Vec<Reply>],
    r: usize,
    i: usize,
    what: &str,
) -> Result<i64, HandlerError> {
    let rep = reply(rounds, r, i, what)?;
    rep.as_int().ok_or_else(|| {
        HandlerError::Poison(format!(
            "round {r}: reply {i} ({what}) is not an integer: {rep:?}"
        ))
    })
}

/// An integral sorted-set score (`ZINCRBY` replies a decimal string such as `"12"`).
pub(crate) fn reply_score(
    rounds: &[Vec<Reply>],
    r: usize,
    i: usize,
    what: &str,
) -> Result<i64, HandlerError> {
    let rep = reply(rounds, r, i, what)?;
    rep.as_int()
        .or_else(|| {
            rep.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.round() as i64)
        })
        .ok_or_else(|| {
            HandlerError::Poison(format!(
                "round {r}: reply {i} ({what}) is not a score: {rep:?}"
            ))
        })
}

/// A trade's notional in cents after checking the fields every trade consumer relies on
/// (`user_id` non-empty, `quantity` > 0, `price_usd` ≥ 0, both finite, notional in range).
pub(crate) fn trade_notional_cents(t: &TradeExecuted) -> Result<i64, HandlerError> {
    require_non_empty("user_id", &t.user_id)?;
    if !t.quantity.is_finite() || t.quantity <= 0.0 {
        return Err(HandlerError::Poison(format!(
            "field `quantity`: must be a finite number > 0, got {}",
            t.quantity
        )));
    }
    if !t.price_usd.is_finite() || t.price_usd < 0.0 {
        return Err(HandlerError::Poison(format!(
            "field `price_usd`: must be a finite number >= 0, got {}",
            t.price_usd
        )));
    }
    notional_cents(t.quantity, t.price_usd).ok_or_else(|| {
        HandlerError::Poison(format!(
            "fields `quantity` × `price_usd`: notional {} × {} is out of range",
            t.quantity, t.price_usd
        ))
    })
}

/// Checks an `xp_awarded` payload: `user_id` non-empty, `amount` ≥ 0.
pub(crate) fn check_xp_awarded(x: &XpAwarded) -> Result<(), HandlerError> {
    require_non_empty("user_id", &x.user_id)?;
    if x.amount < 0 {
        return Err(HandlerError::Poison(format!(
            "field `amount`: must be >= 0, got {}",
            x.amount
        )));
    }
    Ok(())
}

/// Checks a `level_up` payload: `user_id` non-empty, `1 <= from < to`.
pub(crate) fn check_level_up(l: &LevelUp) -> Result<(), HandlerError> {
    require_non_empty("user_id", &l.user_id)?;
    if l.from < 1 {
        return Err(HandlerError::Poison(format!(
            "field `from`: must be >= 1, got {}",
            l.from
        )));
    }
    if l.to <= l.from {
        return Err(HandlerError::Poison(format!(
            "field `to`: must be > `from` ({}), got {}",
            l.from, l.to
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// gamification.xp_processing
// ---------------------------------------------------------------------------------------

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
    fn award(&self, ev: &Event) -> Result<(String, i64, &'static str), HandlerError> {
        match ev.stream.as_str() {
            streams::TRADE_EXECUTED => {
                let t: TradeExecuted = ev.payload()?;
                let notional = trade_notional_cents(&t)?;
                Ok((t.user_id, self.trade_xp(notional), "trade"))
            }
            streams::INTERACTION => {
                let i: Interaction = ev.payload()?;
                require_non_empty("user_id", &i.user_id)?;
                require_non_empty("target_user_id", &i.target_user_id)?;
                Ok((i.user_id, interaction_xp(i.kind), i.kind.as_str()))
            }
            _ => Err(unexpected_stream(Self::NAME, ev)),
        }
    }
}

impl Handler for XpProcessing {
    fn step(&self, ev: &Event, rounds: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        let (user, amount, reason) = self.award(ev)?;
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

// ---------------------------------------------------------------------------------------
// gamification.leaderboards
// ---------------------------------------------------------------------------------------

/// A leaderboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Board {
    /// Per UTC day, period `2026-11-21`.
    Daily,
    /// Per ISO week, period `2026-W47`.
    Weekly,
    /// Forever, period `all`.
    AllTime,
}

impl Board {
    /// Every board, in the order the handler updates them.
    pub const ALL: [Board; 3] = [Board::Daily, Board::Weekly, Board::AllTime];

    /// `daily`, `weekly` or `all_time`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Board::Daily => "daily",
            Board::Weekly => "weekly",
            Board::AllTime => "all_time",
        }
    }

    /// Parses `daily`, `weekly` or `all_time`.
    pub fn parse(name: &str) -> Option<Board> {
        Board::ALL.into_iter().find(|b| b.as_str() == name)
    }

    /// The period holding `ts_ms`: `2026-11-21`, `2026-W47` or `all`.
    pub fn period(&self, ts_ms: i64) -> String {
        match self {
            Board::Daily => utc_day(ts_ms),
            Board::Weekly => iso_week(ts_ms),
            Board::AllTime => "all".to_string(),
        }
    }

    /// When the period holding `ts_ms` ends (None: never).
    pub fn period_end_ms(&self, ts_ms: i64) -> Option<i64> {
        match self {
            Board::Daily => Some(day_end_ms(ts_ms)),
            Board::Weekly => Some(week_end_ms(ts_ms)),
            Board::AllTime => None,
        }
    }

    /// The sorted-set key of this board's period holding `ts_ms`.
    pub fn key_at(&self, ts_ms: i64) -> String {
        board_key(self.as_str(), &self.period(ts_ms))
    }
}

/// Sorted set `user_id → XP` of one leaderboard period:
/// `astra:gamification:leaderboard:<board>:<period>`, e.g.
/// `astra:gamification:leaderboard:daily:2026-11-21`,
/// `astra:gamification:leaderboard:weekly:2026-W47`,
/// `astra:gamification:leaderboard:all_time:all`.
pub fn board_key(board: &str, period: &str) -> String {
    format!("astra:gamification:leaderboard:{board}:{period}")
}

/// The current period of board `board` (`daily`|`weekly`|`all_time`) at `ts_ms`
/// (`2026-11-21`, `2026-W47`, `all`); None for an unknown board name.
pub fn current_period(board: &str, ts_ms: i64) -> Option<String> {
    Board::parse(board).map(|b| b.period(ts_ms))
}

/// The key of board `board` (`daily`|`weekly`|`all_time`) for the period holding `ts_ms`;
/// None for an unknown board name.
pub fn current_board_key(board: &str, ts_ms: i64) -> Option<String> {
    Board::parse(board).map(|b| b.key_at(ts_ms))
}

/// `gamification.leaderboards`: daily, weekly and all-time XP leaderboards.
///
/// Rules: every `astra.gamification.xp_awarded.v1` adds `amount` to the user's score on
/// three boards: the UTC day and the ISO week of the event's `ts`, and all time. For each
/// board, ONE atomic round asks `ZREVRANK` (before), `ZINCRBY`, `ZREVRANK` (after), so
/// before and after describe the same instant. A `LeaderboardUpdated` is emitted for a board
/// when the user's new rank is within the top `top_n` and differs from the old one (the old
/// rank counts as none when the user was absent or outside the top `top_n`). Only the
/// awarded user's own rank is reported, not the users it pushed down. An award of 0 does
/// nothing.
///
/// Keys: [`board_key`] (`astra:gamification:leaderboard:<board>:<period>`, sorted sets
/// `user_id → XP`). Daily and weekly keys get an `EXPIRE` in the same round: the rest of
/// the period (from the event's `ts`) plus `expire_margin` ([`expire_secs`]).
///
/// Emits `astra.gamification.leaderboard_updated.v1` ([`LeaderboardUpdated`]: `board`,
/// `period`, 1-based `rank` and `previous_rank`, `score` after the update).
///
/// Options: `top_n` (10, ≥ 1), `expire_margin` ("2d").
///
/// Poison: missing/mistyped fields, empty `user_id`, negative `amount`.
pub struct Leaderboards {
    top_n: i64,
    expire_margin: Duration,
}

impl Leaderboards {
    const NAME: &'static str = "gamification.leaderboards";

    /// Builds from the group's options.
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        Ok(Arc::new(Self::from_config(g)?))
    }

    fn from_config(g: &GroupConfig) -> Result<Leaderboards, String> {
        deny_unknown_options(g, &["top_n", "expire_margin"])?;
        Ok(Leaderboards {
            top_n: i64::from(positive_option(g, "top_n", 10)?),
            expire_margin: duration_option(g, "expire_margin", "2d")?,
        })
    }

    /// The round-0 ops, and for each board the index of its first op.
    fn plan(&self, x: &XpAwarded, ts_ms: i64) -> (Vec<Op>, Vec<(Board, usize)>) {
        let mut ops = vec![];
        let mut at = vec![];
        for board in Board::ALL {
            let key = board.key_at(ts_ms);
            at.push((board, ops.len()));
            ops.push(Op::zrevrank(&key, &x.user_id));
            ops.push(Op::zincrby(&key, x.amount, &x.user_id));
            ops.push(Op::zrevrank(&key, &x.user_id));
            if let Some(end) = board.period_end_ms(ts_ms) {
                ops.push(Op::expire(
                    &key,
                    expire_secs(end, ts_ms, self.expire_margin),
                ));
            }
        }
        (ops, at)
    }

    /// A 0-based rank within the top N, or None.
    fn in_top(&self, rank: Option<i64>) -> Option<i64> {
        rank.filter(|r| (0..self.top_n).contains(r))
    }
}

impl Handler for Leaderboards {
    fn step(&self, ev: &Event, rounds: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        if ev.stream != streams::XP_AWARDED {
            return Err(unexpected_stream(Self::NAME, ev));
        }
        let x: XpAwarded = ev.payload()?;
        check_xp_awarded(&x)?;
        if x.amount == 0 {
            return Ok(Step::nothing());
        }
        let ts = ev.env.ts;
        let (ops, at) = self.plan(&x, ts);
        match rounds.len() {
            0 => Ok(Step::More(ops)),
            1 => {
                let mut emit = vec![];
                for (board, i) in at {
                    let before = reply(rounds, 0, i, "ZREVRANK before")?;
                    let before = if before.is_nil() {
                        None
                    } else {
                        Some(reply_int(rounds, 0, i, "ZREVRANK before")?)
                    };
                    let score = reply_score(rounds, 0, i + 1, "ZINCRBY")?;
                    let after = reply_int(rounds, 0, i + 2, "ZREVRANK after")?;
                    let previous = self.in_top(before);
                    if self.in_top(Some(after)).is_some() && previous != Some(after) {
                        emit.push(Emit::new(
                            streams::LEADERBOARD_UPDATED,
                            &LeaderboardUpdated {
                                board: board.as_str().to_string(),
                                period: board.period(ts),
                                user_id: x.user_id.clone(),
                                rank: (after + 1) as u32,
                                previous_rank: previous.map(|r| (r + 1) as u32),
                                score,
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

// ---------------------------------------------------------------------------------------
// gamification.achievements
// ---------------------------------------------------------------------------------------

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

impl Handler for Achievements {
    fn step(&self, ev: &Event, rounds: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        match ev.stream.as_str() {
            streams::TRADE_EXECUTED => {
                let t: TradeExecuted = ev.payload()?;
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
            streams::LEVEL_UP => {
                let l: LevelUp = ev.payload()?;
                check_level_up(&l)?;
                Self::unlock(&l.user_id, &Self::level_candidates(l.from, l.to), rounds, 0)
            }
            streams::XP_AWARDED => {
                let x: XpAwarded = ev.payload()?;
                check_xp_awarded(&x)?;
                let crossed = x.total - x.amount < XP_10K && XP_10K <= x.total;
                let candidates: &[&'static str] = if crossed { &["xp_10k"] } else { &[] };
                Self::unlock(&x.user_id, candidates, rounds, 0)
            }
            _ => Err(unexpected_stream(Self::NAME, ev)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::at;
    use crate::events::Side;
    use crate::handlers::testing::{args, done, more, poison_of as poison_reason};
    use crate::handlers::testing::{decode, event, event_at, group, int, json_event, text};

    fn trade(user: &str, quantity: f64, price_usd: f64) -> TradeExecuted {
        TradeExecuted {
            trade_id: "t1".into(),
            user_id: user.into(),
            symbol: "BTC".into(),
            side: Side::Buy,
            quantity,
            price_usd,
            fee_usd: None,
        }
    }

    fn interaction(user: &str, target: &str, kind: InteractionKind) -> Interaction {
        Interaction {
            user_id: user.into(),
            target_user_id: target.into(),
            kind,
        }
    }

    fn xp(user: &str, amount: i64, total: i64) -> XpAwarded {
        XpAwarded {
            user_id: user.into(),
            amount,
            total,
            level: level_for_xp(total),
            reason: "trade".into(),
        }
    }

    // ---- helpers ------------------------------------------------------------------------

    #[test]
    fn levels_are_exact_at_every_threshold() {
        assert_eq!(level_for_xp(-5), 1);
        assert_eq!(level_for_xp(0), 1);
        assert_eq!(level_for_xp(99), 1);
        assert_eq!(level_for_xp(100), 2);
        assert_eq!(level_for_xp(399), 2);
        assert_eq!(level_for_xp(400), 3);
        assert_eq!(level_for_xp(899), 3);
        assert_eq!(level_for_xp(900), 4);
        assert_eq!(level_for_xp(1_600), 5);
        assert_eq!(level_for_xp(8_100), 10);
        assert_eq!(level_for_xp(i64::MAX), 303_700_050);
        for l in 1..=20_000u32 {
            let t = xp_for_level(l);
            assert_eq!(t, 100 * i64::from(l - 1).pow(2));
            assert_eq!(level_for_xp(t), l, "at {t}");
            if l > 1 {
                assert_eq!(level_for_xp(t - 1), l - 1, "just below {t}");
            }
        }
        // Large exact squares, where an f64 sqrt would be off by one.
        let k: i64 = 303_700_049;
        assert_eq!(level_for_xp(100 * k * k), (k + 1) as u32);
        assert_eq!(level_for_xp(100 * k * k - 1), k as u32);
    }

    #[test]
    fn period_ttls() {
        let sat_noon = at(2026, 11, 21, 12);
        let two_days = Duration::from_secs(2 * 86_400);
        assert_eq!(
            expire_secs(day_end_ms(sat_noon), sat_noon, two_days),
            12 * 3600 + 2 * 86_400
        );
        assert_eq!(expire_secs(1_500, 1_000, Duration::ZERO), 1); // rounds up
        assert_eq!(expire_secs(1_000, 1_000, Duration::ZERO), 1); // never 0 or negative
        assert_eq!(expire_secs(0, 5_000, Duration::from_secs(10)), 10);
    }

    // ---- xp_processing --------------------------------------------------------------------

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

    // ---- leaderboards ---------------------------------------------------------------------

    fn lb_handler(options: &str) -> Leaderboards {
        Leaderboards::from_config(&group(
            "gamification.leaderboards",
            "gamification.leaderboards",
            &[streams::LEADERBOARD_UPDATED],
            options,
        ))
        .unwrap()
    }

    fn rank(r: Option<i64>) -> Reply {
        r.map(int).unwrap_or(Reply::Nil)
    }

    /// Round-0 replies: (before, score, after) per board, with EXPIRE replies for the
    /// daily and weekly boards.
    fn lb_replies(per_board: [(Option<i64>, i64, i64); 3]) -> Vec<Reply> {
        let mut v = vec![];
        for (i, (before, score, after)) in per_board.into_iter().enumerate() {
            v.push(rank(before));
            v.push(text(&score.to_string()));
            v.push(int(after));
            if i < 2 {
                v.push(int(1));
            }
        }
        v
    }

    #[test]
    fn leaderboard_ops_one_atomic_round_per_board() {
        let h = lb_handler("");
        let ev = event(streams::XP_AWARDED, &xp("alice", 25, 125));
        let ops = more(h.step(&ev, &[]).unwrap());
        let shape: Vec<(&str, &str, Vec<String>)> =
            ops.iter().map(|o| (o.cmd(), o.key(), args(o))).collect();
        let d = "astra:gamification:leaderboard:daily:2026-11-21";
        let w = "astra:gamification:leaderboard:weekly:2026-W47";
        let a = "astra:gamification:leaderboard:all_time:all";
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            shape,
            vec![
                ("ZREVRANK", d, s(&["alice"])),
                ("ZINCRBY", d, s(&["25", "alice"])),
                ("ZREVRANK", d, s(&["alice"])),
                // Saturday 12:00: 12 h left in the day + 2 d.
                ("EXPIRE", d, s(&["216000"])),
                ("ZREVRANK", w, s(&["alice"])),
                ("ZINCRBY", w, s(&["25", "alice"])),
                ("ZREVRANK", w, s(&["alice"])),
                // 1 d 12 h left in the week + 2 d.
                ("EXPIRE", w, s(&["302400"])),
                ("ZREVRANK", a, s(&["alice"])),
                ("ZINCRBY", a, s(&["25", "alice"])),
                ("ZREVRANK", a, s(&["alice"])),
            ]
        );
    }

    #[test]
    fn leaderboard_emits_rank_changes_within_top_n() {
        let h = lb_handler("");
        let ev = event(streams::XP_AWARDED, &xp("alice", 25, 125));
        let replies = lb_replies([
            (None, 25, 0),      // daily: new entry straight to #1
            (Some(3), 125, 3),  // weekly: rank unchanged → nothing
            (Some(10), 125, 9), // all-time: #11 (outside) → #10
        ]);
        let (ops, emit) = done(h.step(&ev, &[replies]).unwrap());
        assert!(ops.is_empty());
        let got: Vec<LeaderboardUpdated> = emit.iter().map(decode).collect();
        assert!(
            emit.iter()
                .all(|e| e.stream == streams::LEADERBOARD_UPDATED)
        );
        assert_eq!(
            got,
            vec![
                LeaderboardUpdated {
                    board: "daily".into(),
                    period: "2026-11-21".into(),
                    user_id: "alice".into(),
                    rank: 1,
                    previous_rank: None,
                    score: 25
                },
                LeaderboardUpdated {
                    board: "all_time".into(),
                    period: "all".into(),
                    user_id: "alice".into(),
                    rank: 10,
                    previous_rank: None,
                    score: 125
                },
            ]
        );
        // Inside the top: #5 → #2 reports the previous rank.
        let replies = lb_replies([(Some(4), 9, 1), (Some(1), 9, 1), (Some(10), 9, 10)]);
        let (_, emit) = done(h.step(&ev, &[replies]).unwrap());
        assert_eq!(emit.len(), 1);
        let u: LeaderboardUpdated = decode(&emit[0]);
        assert_eq!(
            (u.board.as_str(), u.rank, u.previous_rank),
            ("daily", 2, Some(5))
        );
    }

    #[test]
    fn leaderboard_top_n_boundary_and_option() {
        let h = lb_handler("top_n = 3");
        let ev = event(streams::XP_AWARDED, &xp("alice", 1, 1));
        // New rank 3 (0-based) is outside a top 3; rank 2 is inside.
        let replies = lb_replies([(None, 1, 3), (Some(5), 1, 2), (Some(2), 1, 2)]);
        let (_, emit) = done(h.step(&ev, &[replies]).unwrap());
        let got: Vec<LeaderboardUpdated> = emit.iter().map(decode).collect();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].board.as_str(), got[0].rank, got[0].previous_rank),
            ("weekly", 3, None)
        );
    }

    #[test]
    fn leaderboard_options_and_poison() {
        let h = lb_handler("");
        assert_eq!(
            (h.top_n, h.expire_margin),
            (10, Duration::from_secs(172_800))
        );
        let h = lb_handler("expire_margin = \"1h\"");
        let ev = event(streams::XP_AWARDED, &xp("alice", 1, 1));
        let ops = more(h.step(&ev, &[]).unwrap());
        assert_eq!(args(&ops[3]), ["46800"]); // 12 h + 1 h
        let g = |o: &str| group("x", "gamification.leaderboards", &[], o);
        let err = Leaderboards::build(&g("top = 3")).err().unwrap();
        assert!(err.contains("unknown option `top`"), "{err}");
        let err = Leaderboards::build(&g("top_n = 0")).err().unwrap();
        assert!(err.contains("top_n"), "{err}");
        let err = Leaderboards::build(&g("expire_margin = \"soon\""))
            .err()
            .unwrap();
        assert!(err.contains("expire_margin"), "{err}");

        let h = lb_handler("");
        let r = poison_reason(h.step(&event(streams::XP_AWARDED, &xp("alice", -1, 1)), &[]));
        assert!(r.contains("amount"), "{r}");
        let r = poison_reason(h.step(&event(streams::XP_AWARDED, &xp("", 1, 1)), &[]));
        assert!(r.contains("user_id"), "{r}");
        let missing = json_event(
            streams::XP_AWARDED,
            r#"{"user_id":"a","total":1,"level":1,"reason":"x"}"#,
        );
        let r = poison_reason(h.step(&missing, &[]));
        assert!(r.contains("amount"), "{r}");
        assert_eq!(
            h.step(&event(streams::XP_AWARDED, &xp("a", 0, 5)), &[])
                .unwrap(),
            Step::nothing()
        );
    }

    #[test]
    fn board_keys_for_the_http_edge() {
        let ts = at(2027, 1, 2, 23);
        assert_eq!(
            board_key("daily", "2027-01-02"),
            "astra:gamification:leaderboard:daily:2027-01-02"
        );
        assert_eq!(current_period("daily", ts).as_deref(), Some("2027-01-02"));
        assert_eq!(current_period("weekly", ts).as_deref(), Some("2026-W53"));
        assert_eq!(current_period("all_time", ts).as_deref(), Some("all"));
        assert_eq!(current_period("monthly", ts), None);
        assert_eq!(
            current_board_key("weekly", ts).as_deref(),
            Some("astra:gamification:leaderboard:weekly:2026-W53")
        );
        assert_eq!(
            current_board_key("all_time", ts).as_deref(),
            Some("astra:gamification:leaderboard:all_time:all")
        );
        assert_eq!(current_board_key("", ts), None);
    }

    #[test]
    fn weekly_board_at_the_year_boundary_uses_the_iso_week() {
        let h = lb_handler("expire_margin = \"0s\"");
        let ev = event_at(streams::XP_AWARDED, &xp("a", 1, 1), at(2021, 1, 3, 18));
        let ops = more(h.step(&ev, &[]).unwrap());
        assert_eq!(
            ops[0].key(),
            "astra:gamification:leaderboard:daily:2021-01-03"
        );
        assert_eq!(
            ops[4].key(),
            "astra:gamification:leaderboard:weekly:2020-W53"
        );
        assert_eq!(args(&ops[7]), ["21600"]); // Sunday 18:00 → Monday 00:00
    }

    // ---- achievements -----------------------------------------------------------------------

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

    #[test]
    fn registered_names() {
        let names: Vec<&str> = handlers().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "gamification.xp_processing",
                "gamification.leaderboards",
                "gamification.achievements"
            ]
        );
    }
}
