//! Dead letters in the console: list (with reason, attempts, error and payload), replay
//! and purge. Replay and purge need the ops scope, the group's name echoed as `confirm`,
//! and log one audit line per attempt (`console action`: who, from where, what, outcome).

use std::collections::HashSet;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Edge, MAX_BODY_BYTES, MAX_LIST, MAX_REPLAY, QueryMap, RequestCtx, event_json, group,
    payload_json, query, text,
};
use crate::bus::dlq::{self, DeadEntry};
use crate::config::GroupConfig;
use crate::edge::error::{ApiError, json as json_response};
use crate::envelope::Envelope;

/// A dead letter as the page shows it: metadata, the event, its payload (or raw fields).
fn dead_json(dlq_stream: &str, d: &DeadEntry) -> Value {
    let env = Envelope::from_fields(&d.original).ok();
    let (payload, preview) = env
        .as_ref()
        .map(payload_json)
        .unwrap_or((Value::Null, None));
    // An entry that is not a valid envelope (reason `malformed`) is shown field by field.
    let fields: Option<Vec<(String, String)>> = env.is_none().then(|| {
        d.original
            .iter()
            .map(|(k, v)| (text(k, 64), text(v, 4096)))
            .collect()
    });
    let int = |k: &str| d.get(k).and_then(|v| v.parse::<i64>().ok());
    json!({
        "dlq_stream": dlq_stream,
        "dlq_id": d.dlq_id,
        "group": d.get("group"),
        "stream": d.get("stream"),
        "entry_id": d.get("entry_id"),
        "reason": d.get("reason"),
        "error": d.get("error"),
        "attempts": int("attempts"),
        "dead_at_ms": int("ts"),
        "event": env.as_ref().map(event_json),
        "payload": payload,
        "payload_preview": preview,
        "fields": fields,
    })
}

/// `GET /console/api/dead-letters?group=G&count=N`: oldest first, at most `count`
/// (default 50, up to 500), of one group or of all.
pub(super) async fn dead_letters(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    q: QueryMap,
) -> Result<Response, ApiError> {
    edge.authenticate_ops(&ctx, &headers).await?;
    let q = query(q, &["group", "count"])?;
    let g = q.get("group").map(|n| group(&edge, n)).transpose()?;
    let count = match q.get("count") {
        None => 50,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_LIST).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("count must be an integer from 1 to {MAX_LIST}, got {s:?}"),
                )
                .with("parameter", "count"));
            }
        },
    };
    let streams = match g {
        Some(g) => vec![g.dead_letter_stream.clone()],
        None => edge.config.dead_letter_streams(),
    };
    let redis = edge.redis()?;
    let mut rows = vec![];
    for s in &streams {
        if rows.len() >= count {
            break;
        }
        let found = dlq::list(redis, s, g.map(|g| g.name.as_str()), count - rows.len())
            .await
            .map_err(|e| ApiError::redis(&e))?;
        rows.extend(found.iter().map(|d| dead_json(s, d)));
    }
    Ok(json_response(
        StatusCode::OK,
        json!({"dead_letters": rows, "count": rows.len(), "limit": count, "group": g.map(|g| &g.name)}),
    ))
}

/// Who asked for an operator action, for the audit line.
struct Who {
    /// The API key's name, `-` without auth.
    key: String,
    /// `X-User-ID` or the key's user.
    user: String,
    /// Peer address.
    peer: String,
}

/// Checks the ops scope and says who the caller is.
async fn who(edge: &Edge, headers: &HeaderMap, ctx: &RequestCtx) -> Result<Who, ApiError> {
    edge.authenticate_ops(ctx, headers).await?;
    let caller = crate::edge::auth::authenticate(&edge.config.edge, &edge.keys, headers).ok();
    Ok(Who {
        key: caller
            .as_ref()
            .map_or("-".to_string(), |c| c.name().to_string()),
        user: caller
            .and_then(|c| c.user)
            .unwrap_or_else(|| "-".to_string()),
        peer: ctx.peer.map_or_else(|| "-".to_string(), |p| p.to_string()),
    })
}

/// A console request's JSON body (at most [`MAX_BODY_BYTES`]).
async fn read_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    shape: &str,
) -> Result<T, ApiError> {
    crate::edge::body::read_json(headers, body, MAX_BODY_BYTES, "console requests", shape).await
}

fn confirmed(g: &GroupConfig, confirm: &str, action: &str) -> Result<(), ApiError> {
    if confirm == g.name {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "confirmation_required",
            format!(
                "{action} changes the bus: set \"confirm\" to the group's name ({:?}) to confirm",
                g.name
            ),
        )
        .with("group", g.name.as_str()))
    }
}

/// A stream entry id, `<ms>-<seq>`.
fn valid_entry_id(s: &str) -> bool {
    s.split_once('-').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.len() <= 20
            && b.len() <= 20
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    group: String,
    ids: Vec<String>,
    confirm: String,
}

/// One audit line per operator action that passed authentication.
fn audit(who: &Who, action: &str, group: &str, what: &str, outcome: &str) {
    tracing::info!(
        audit = true,
        action,
        key = %who.key,
        user = %who.user,
        peer = %who.peer,
        group,
        what,
        outcome,
        "console action"
    );
}

/// `POST /console/api/dead-letters/replay` `{"group", "ids", "confirm"}`: replays the
/// named dead letters of `group` (the group-targeted replay of [`dlq::replay`]).
pub(super) async fn replay(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let who = who(&edge, &headers, &ctx).await?;
    let r = replay_inner(&edge, &headers, body).await;
    match &r {
        Ok((g, ids, done, missing)) => audit(
            &who,
            "dlq.replay",
            g,
            &ids.join(","),
            &format!("replayed {} missing {}", done.len(), missing.len()),
        ),
        Err((g, ids, e)) => audit(&who, "dlq.replay", g, &ids.join(","), &e.detail),
    }
    let (_, _, done, missing) = r.map_err(|(_, _, e)| e)?;
    if done.is_empty() {
        return Err(ApiError::not_found(
            "no_dead_letter",
            "none of the named dead letters exists (already replayed or purged?)",
        )
        .with("missing", missing));
    }
    Ok(json_response(
        StatusCode::OK,
        json!({"replayed": done, "missing": missing}),
    ))
}

type Outcome = (String, Vec<String>, Vec<Value>, Vec<String>);

async fn replay_inner(
    edge: &Edge,
    headers: &HeaderMap,
    body: Body,
) -> Result<Outcome, (String, Vec<String>, ApiError)> {
    let req: ReplayRequest = read_body(
        headers,
        body,
        "{\"group\": G, \"ids\": [dead-letter ids], \"confirm\": G}",
    )
    .await
    .map_err(|e| (String::new(), vec![], e))?;
    let fail = |e: ApiError| (req.group.clone(), req.ids.clone(), e);
    let g = group(edge, &req.group).map_err(fail)?;
    confirmed(g, &req.confirm, "replay").map_err(fail)?;
    if req.ids.is_empty() || req.ids.len() > MAX_REPLAY {
        return Err(fail(ApiError::bad_request(
            "invalid_body",
            format!("ids must name 1 to {MAX_REPLAY} dead letters"),
        )));
    }
    if let Some(bad) = req.ids.iter().find(|i| !valid_entry_id(i)) {
        return Err(fail(
            ApiError::bad_request(
                "invalid_body",
                format!("{bad:?} is not a dead-letter entry id (<ms>-<seq>)"),
            )
            .with("id", bad.as_str()),
        ));
    }
    let redis = edge.redis().map_err(fail)?;
    let stream = &g.dead_letter_stream;
    let wanted: HashSet<&str> = req.ids.iter().map(String::as_str).collect();
    let all = dlq::list(redis, stream, Some(&g.name), usize::MAX)
        .await
        .map_err(|e| fail(ApiError::redis(&e)))?;
    let mut done = vec![];
    let mut found = HashSet::new();
    for d in all.iter().filter(|d| wanted.contains(d.dlq_id.as_str())) {
        found.insert(d.dlq_id.as_str());
        match dlq::replay(redis, stream, d).await {
            Ok(r) => done.push(json!({
                "dlq_id": d.dlq_id, "group": r.group, "stream": r.stream,
                "event_id": r.event_id, "entry_id": r.entry_id,
            })),
            Err(e) => {
                let replayed: Vec<&str> =
                    done.iter().filter_map(|v| v["dlq_id"].as_str()).collect();
                let mut err = ApiError::redis(&e);
                err.detail = format!(
                    "replayed {replayed:?}, then {} failed: {}",
                    d.dlq_id, err.detail
                );
                return Err(fail(err));
            }
        }
    }
    let missing = req
        .ids
        .iter()
        .filter(|i| !found.contains(i.as_str()))
        .cloned()
        .collect();
    Ok((g.name.clone(), req.ids.clone(), done, missing))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    group: String,
    confirm: String,
}

/// `POST /console/api/dead-letters/purge` `{"group", "confirm"}`: deletes every dead
/// letter of `group`.
pub(super) async fn purge(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let who = who(&edge, &headers, &ctx).await?;
    let req: PurgeRequest = match read_body(&headers, body, "{\"group\": G, \"confirm\": G}").await
    {
        Ok(r) => r,
        Err(e) => {
            audit(&who, "dlq.purge", "", "", &e.detail);
            return Err(e);
        }
    };
    let r = async {
        let g = group(&edge, &req.group)?;
        confirmed(g, &req.confirm, "purge")?;
        let redis = edge.redis()?;
        dlq::purge(redis, &g.dead_letter_stream, Some(&g.name))
            .await
            .map_err(|e| ApiError::redis(&e))
    }
    .await;
    match r {
        Ok(n) => {
            audit(&who, "dlq.purge", &req.group, "all", &format!("purged {n}"));
            Ok(json_response(
                StatusCode::OK,
                json!({"purged": n, "group": req.group}),
            ))
        }
        Err(e) => {
            audit(&who, "dlq.purge", &req.group, "all", &e.detail);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids() {
        assert!(valid_entry_id("1732190000000-0"));
        assert!(!valid_entry_id("1732190000000"));
        assert!(!valid_entry_id("-0"));
        assert!(!valid_entry_id("1-x"));
        assert!(!valid_entry_id("1-2-3"));
    }
}
