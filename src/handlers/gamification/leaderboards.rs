//! `gamification.leaderboards`: daily, weekly and all-time XP leaderboards.

use std::sync::Arc;
use std::time::Duration;

use super::check_xp_awarded;
use crate::calendar::{day_end_ms, iso_week, utc_day, week_end_ms};
use crate::events::{LeaderboardUpdated, XpAwarded, streams};
use crate::group::GroupConfig;
use crate::handler::{Emit, Event, Handler, HandlerError, Op, Reply, Step};
use crate::handlers::support::{
    ANY_DURATION, deny_unknown_options, duration_option, expire_secs, positive_option, reply,
    reply_int, reply_score, unexpected_rounds,
};
use crate::handlers::typed::{Reject, TypedHandler};

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
            expire_margin: duration_option(g, "expire_margin", "2d", ANY_DURATION)?,
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

impl TypedHandler for Leaderboards {
    type Input = XpAwarded;

    const REJECT: Reject = Reject::Group(Self::NAME);

    fn decide(
        &self,
        x: XpAwarded,
        ev: &Event,
        rounds: &[Vec<Reply>],
    ) -> Result<Step, HandlerError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::at;

    use crate::handlers::gamification::fixtures::*;
    use crate::handlers::testing::{args, done, more, poison_of as poison_reason};
    use crate::handlers::testing::{decode, event, event_at, group, int, json_event, text};

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
}
