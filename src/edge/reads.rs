//! Projection reads served from what the handlers keep in Redis (one pipelined round per
//! request, single-key commands only, so they work the same on a cluster).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::error::{ApiError, json as json_response};
use super::{Class, Edge, RequestCtx};
use crate::bus::query::{Reads, Replies, Slot};
use crate::config::valid_user_id;
use crate::handlers::gamification::{self as gm, Board};
use crate::handlers::{social, user};

type QueryMap = Result<Query<HashMap<String, String>>, QueryRejection>;

fn query(q: QueryMap, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::bad_request("invalid_query", format!("bad query string: {e}")))?;
    if let Some(k) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "unknown query parameter {k:?}; this route takes {}",
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            ),
        )
        .with("parameter", k.as_str()));
    }
    Ok(q)
}

fn limit_param(q: &HashMap<String, String>, default: usize, max: usize) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(
                "invalid_query",
                format!("limit must be an integer from 1 to {max}, got {s:?}"),
            )
            .with("parameter", "limit")),
        },
    }
}

fn path_user(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) =
        p.map_err(|e| ApiError::bad_request("invalid_path", format!("bad user id: {e}")))?;
    if !valid_user_id(&id) {
        return Err(ApiError::bad_request(
            "invalid_path",
            "user id must be 1-128 of A-Z a-z 0-9 . _ : @ -",
        ));
    }
    Ok(id)
}

/// Sends one request's reads in one round; any failed read fails the request.
async fn round(edge: &Edge, reads: Reads) -> Result<Replies, ApiError> {
    let redis = edge.redis()?;
    reads.send(redis).await.map_err(|e| ApiError::redis(&e))
}

/// A round of one read: the answer of the read `queue` puts in it.
async fn read_one<T>(
    edge: &Edge,
    queue: impl FnOnce(&mut Reads) -> Slot<T>,
) -> Result<T, ApiError> {
    let mut reads = Reads::new();
    let slot = queue(&mut reads);
    Ok(round(edge, reads).await?.get(&slot))
}

/// `GET /api/v1/gamification/user/{id}/profile`: profile, XP, level, achievements and
/// the user's rank on the current boards. 404 for a user the bus has never seen.
pub async fn profile(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    path: Result<Path<String>, PathRejection>,
    q: QueryMap,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = edge.authenticate(&ctx, &headers, Class::Read).await?;
    let id = path_user(path)?;
    query(q, &[])?;
    let admitted = edge.limit(&ctx, &caller, &["gamification"], 1).await?;
    let now = crate::envelope::now_ms();
    let mut reads = Reads::new();
    let profile = reads.hash_all(&user::profile_key(&id));
    let xp = reads.hash_int(&gm::xp_key(), &id);
    let achievements = reads.set_members(&gm::achievements_key(&id));
    let on_boards: Vec<_> = Board::ALL
        .iter()
        .map(|b| {
            let key = b.key_at(now);
            (reads.rank_from_top(&key, &id), reads.score(&key, &id))
        })
        .collect();
    let r = round(&edge, reads).await?;
    let profile = r.get(&profile);
    let xp = r.get(&xp);
    if profile.is_empty() && xp.is_none() {
        return Err(ApiError::not_found(
            "unknown_user",
            format!("no profile or XP for user {id:?} (yet: events are processed asynchronously)"),
        ));
    }
    let text = |f: &str| profile.get(f).cloned();
    let int = |f: &str| profile.get(f).and_then(|v| v.parse::<i64>().ok());
    let xp = xp.or_else(|| int(user::FIELD_XP)).unwrap_or(0);
    let mut achievements = r.get(&achievements);
    achievements.sort();
    let mut boards = serde_json::Map::new();
    for (b, (rank, score)) in Board::ALL.iter().zip(&on_boards) {
        let rank = r.get(rank).map(|r| r + 1);
        let score = r.get(score);
        boards.insert(
            b.as_str().to_string(),
            json!({"period": b.period(now), "rank": rank, "xp": score.map(|s| s as i64)}),
        );
    }
    let body = json!({
        "user_id": id,
        "display_name": text(user::FIELD_DISPLAY_NAME),
        "clan": text(user::FIELD_CLAN),
        "xp": xp,
        "level": gm::level_for_xp(xp),
        "trades": int(user::FIELD_TRADES).unwrap_or(0),
        "achievements": achievements,
        "leaderboards": boards,
    });
    Ok(admitted.apply(json_response(StatusCode::OK, body)))
}

/// `GET /api/v1/gamification/leaderboard/{board}?limit=&period=`: the top of a board
/// (`daily`, `weekly`, `all_time`) for the current period, or the given one.
pub async fn leaderboard(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    path: Result<Path<String>, PathRejection>,
    q: QueryMap,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = edge.authenticate(&ctx, &headers, Class::Read).await?;
    let Path(name) =
        path.map_err(|e| ApiError::bad_request("invalid_path", format!("bad board: {e}")))?;
    let Some(board) = Board::parse(&name) else {
        return Err(ApiError::not_found(
            "unknown_board",
            format!("no leaderboard {name:?}; boards are daily, weekly, all_time"),
        ));
    };
    let q = query(q, &["limit", "period"])?;
    let limit = limit_param(&q, 10, 100)?;
    let now = crate::envelope::now_ms();
    let period = match q.get("period") {
        None => board.period(now),
        Some(p) if period_ok(board, p) => p.clone(),
        Some(p) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!(
                    "period {p:?} is not a {} period (e.g. {:?})",
                    board.as_str(),
                    board.period(now)
                ),
            )
            .with("parameter", "period"));
        }
    };
    let admitted = edge.limit(&ctx, &caller, &["gamification"], 1).await?;
    let key = gm::board_key(board.as_str(), &period);
    let top = read_one(&edge, |r| r.top_n(&key, limit)).await?;
    let entries: Vec<Value> = top
        .into_iter()
        .map(|(rank, user, score)| json!({"rank": rank, "user_id": user, "xp": score as i64}))
        .collect();
    let body = json!({"board": board.as_str(), "period": period, "entries": entries});
    Ok(admitted.apply(json_response(StatusCode::OK, body)))
}

/// Whether `p` has the shape of `board`'s periods (`2026-11-21`, `2026-W47`, `all`).
fn period_ok(board: Board, p: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match board {
        Board::AllTime => p == "all",
        Board::Daily => {
            let parts: Vec<&str> = p.split('-').collect();
            parts.len() == 3
                && parts[0].len() == 4
                && parts[1].len() == 2
                && parts[2].len() == 2
                && parts.iter().all(|x| digits(x))
        }
        Board::Weekly => match p.split_once("-W") {
            Some((y, w)) => y.len() == 4 && w.len() == 2 && digits(y) && digits(w),
            None => false,
        },
    }
}

/// `GET /api/v1/social/feed?user=&limit=`: the newest feed items, global or one user's.
pub async fn feed(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    q: QueryMap,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = edge.authenticate(&ctx, &headers, Class::Read).await?;
    let q = query(q, &["user", "limit"])?;
    let limit = limit_param(&q, 20, 200)?;
    let key = match q.get("user") {
        None => social::global_feed_key(),
        Some(u) if valid_user_id(u) => social::user_feed_key(u),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "user must be 1-128 of A-Z a-z 0-9 . _ : @ -",
            )
            .with("parameter", "user"));
        }
    };
    let admitted = edge.limit(&ctx, &caller, &["social"], 1).await?;
    let head = read_one(&edge, |r| r.list_head(&key, limit)).await?;
    let items: Vec<Value> = head
        .into_iter()
        .map(|s| serde_json::from_str(&s).unwrap_or(Value::String(s)))
        .collect();
    let body = json!({
        "scope": q.get("user").map(|u| format!("user:{u}")).unwrap_or_else(|| "global".into()),
        "items": items,
    });
    Ok(admitted.apply(json_response(StatusCode::OK, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_have_their_boards_shape() {
        assert!(period_ok(Board::Daily, "2026-11-21"));
        assert!(!period_ok(Board::Daily, "2026-W47"));
        assert!(period_ok(Board::Weekly, "2026-W47"));
        assert!(!period_ok(Board::Weekly, "2026-47"));
        assert!(period_ok(Board::AllTime, "all"));
        assert!(!period_ok(Board::AllTime, "2026"));
    }
}
