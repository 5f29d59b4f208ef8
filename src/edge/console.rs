//! The operator's console at `/console`: the topology as a graph coloured by health, live
//! per-group and per-stream health with the last minutes as small charts, KPI gauges,
//! dead letters (list, replay, purge) and the trace view, in one page of vanilla JS
//! embedded in the binary (no build step, no CDN).
//!
//! | route | what | Redis |
//! |---|---|---|
//! | `GET /console`, `GET /console/assets/{name}` | the page, its script and style | never |
//! | `GET /console/api/topology` | streams, groups, edges from the running config | never |
//! | `GET /console/api/health?since=MS` | latest snapshot classified, KPIs, history after `since` | never |
//! | `GET /console/api/dead-letters?group=G&count=N` | dead letters with reason, attempts, payload | on demand |
//! | `POST /console/api/dead-letters/replay` | replay named dead letters of a group (confirmed) | on demand |
//! | `POST /console/api/dead-letters/purge` | purge a group's dead letters (confirmed) | on demand |
//! | `GET /console/api/trace?cid=C` | the causation tree `astra-bus trace` prints | on demand |
//!
//! Live health comes only from the daemon's snapshot ([`super::LatestSnapshot`], read once
//! per `metrics.refresh_interval`) and the [`History`] the health loop records, so viewers
//! add no Redis command per refresh however many are open. The page polls when the next
//! snapshot is due; an unchanged snapshot is a tiny `{"changed": false}` answer.
//!
//! Access: the page and its assets are static and carry no data (like a login form), so a
//! browser can open them; every `/console/api` route is an ops route (the `ops` scope when
//! `edge.ops = "keys"`). The page asks for the key once and sends it as a bearer token
//! (kept in the tab's sessionStorage, never a cookie), so another site cannot make a
//! browser replay or purge. Replay and purge also need the group's name echoed as
//! `confirm` (the page asks the operator first), and each attempt logs one audit line
//! (`console action`: who, from where, what, outcome).
//!
//! Submodules: [`health`] (the ok / warn / crit rules and the history), `dead_letters`,
//! `trace_view`, `openapi` (the routes' entries of `/openapi.json`).

mod dead_letters;
pub mod health;
mod openapi;
mod trace_view;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde_json::{Value, json};

use super::error::{ApiError, json as json_response};
use super::{Edge, RequestCtx};
use crate::config::GroupConfig;
use crate::envelope::{Envelope, now_ms};
pub use health::History;
pub use openapi::openapi_paths;
pub use trace_view::{flatten, trace_window};

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const APP_CSS: &str = include_str!("console/app.css");

/// Only our own script and style, no inline code, no framing: a payload that slipped
/// into the DOM as markup still could not run.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Dead letters one list call returns at most.
const MAX_LIST: usize = 500;
/// Dead letters one replay call names at most.
const MAX_REPLAY: usize = 100;
/// Events of one trace returned at most.
const MAX_TRACE_NODES: usize = 2_000;
/// A payload larger than this (as JSON text) is shown as a truncated preview.
const MAX_PAYLOAD_CHARS: usize = 16 * 1024;
/// Bodies of replay and purge requests are tiny.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// The trace window, as `astra-bus trace`'s defaults: from a minute before a UUIDv7
/// correlation id's time for an hour; any other id, the last day.
const TRACE_WINDOW: Duration = Duration::from_secs(3600);
const TRACE_SINCE: Duration = Duration::from_secs(24 * 3600);

/// The console's routes (listed in the OpenAPI document like every other route).
pub fn routes() -> Vec<(Method, &'static str, MethodRouter<Arc<Edge>>)> {
    vec![
        (Method::GET, "/console", get(page)),
        (Method::GET, "/console/assets/{name}", get(asset)),
        (Method::GET, "/console/api/topology", get(topology)),
        (Method::GET, "/console/api/health", get(health_now)),
        (
            Method::GET,
            "/console/api/dead-letters",
            get(dead_letters::dead_letters),
        ),
        (
            Method::POST,
            "/console/api/dead-letters/replay",
            post(dead_letters::replay),
        ),
        (
            Method::POST,
            "/console/api/dead-letters/purge",
            post(dead_letters::purge),
        ),
        (
            Method::GET,
            "/console/api/trace",
            get(trace_view::trace_view),
        ),
    ]
}

fn static_response(content_type: &'static str, body: &'static str) -> Response {
    let mut r = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// `GET /console`: the page (static; it loads everything else from `/console/api`).
async fn page() -> Response {
    static_response("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /console/assets/{name}`: `app.js`, `app.css`.
async fn asset(name: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let name = name.map(|Path(n)| n).unwrap_or_default();
    match name.as_str() {
        "app.js" => Ok(static_response("text/javascript; charset=utf-8", APP_JS)),
        "app.css" => Ok(static_response("text/css; charset=utf-8", APP_CSS)),
        _ => Err(ApiError::not_found(
            "no_asset",
            format!("no console asset {name:?}; the console has app.js and app.css"),
        )),
    }
}

type QueryMap = Result<Query<HashMap<String, String>>, QueryRejection>;

/// A pair's health, its status and the reasons.
type Classified<'a> = (
    health::Health,
    &'a crate::bus::status::GroupStatus,
    Vec<String>,
);

fn query(q: QueryMap, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::bad_request("invalid_query", format!("bad query string: {e}")))?;
    if let Some(k) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "unknown query parameter {k:?}; this route takes {}",
                allowed.join(", ")
            ),
        )
        .with("parameter", k.as_str()));
    }
    Ok(q)
}

fn group<'a>(edge: &'a Edge, name: &str) -> Result<&'a GroupConfig, ApiError> {
    edge.config.group(name).ok_or_else(|| {
        ApiError::not_found(
            "unknown_group",
            format!(
                "no group {name:?} in the running config; GET /console/api/topology lists them"
            ),
        )
        .with("group", name)
    })
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn thresholds() -> Value {
    json!({
        "lag_warn": health::LAG_WARN,
        "lag_crit": health::LAG_CRIT,
        "pending_age_warn": "the group's claim_idle",
        "pending_age_crit_factor": health::PENDING_AGE_CRIT_FACTOR,
        "dead_letters_warn": 1,
        "history_span_ms": ms(health::HISTORY_SPAN),
    })
}

/// `GET /console/api/topology`: the running config as a graph.
async fn topology(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    edge.authenticate_ops(&ctx, &headers).await?;
    let cfg = &edge.config;
    let dead: BTreeSet<&str> = cfg
        .groups
        .iter()
        .map(|g| g.dead_letter_stream.as_str())
        .collect();
    let streams: Vec<Value> = cfg
        .streams
        .iter()
        .map(|s| {
            json!({
                "name": s.name, "domain": s.domain, "event": s.event, "version": s.version,
                "external": s.external, "description": s.description,
                "dead_letter": dead.contains(s.name.as_str()),
            })
        })
        .collect();
    let groups: Vec<Value> = cfg
        .groups
        .iter()
        .map(|g| {
            json!({
                "name": g.name, "domain": g.domain, "handler": g.handler,
                "description": g.description, "reads": g.reads, "publishes": g.publishes,
                "dead_letter_stream": g.dead_letter_stream, "batch_size": g.batch_size,
                "concurrency": g.concurrency, "claim_idle_ms": ms(g.claim_idle),
                "max_deliveries": g.max_deliveries,
            })
        })
        .collect();
    let mut edges = vec![];
    for g in &cfg.groups {
        for s in &g.reads {
            edges.push(json!({"from": s, "to": g.name, "kind": "reads"}));
        }
        for s in &g.publishes {
            edges.push(json!({"from": g.name, "to": s, "kind": "publishes"}));
        }
    }
    Ok(json_response(
        StatusCode::OK,
        json!({
            "streams": streams, "groups": groups, "edges": edges,
            "refresh_ms": ms(cfg.metrics.refresh_interval),
            "thresholds": thresholds(),
        }),
    ))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The history after `since` as columns: `t`, and per group / stream `rate` and `lag`.
fn history_json(h: &History, since: i64) -> Value {
    let samples = h.since(since);
    let column = |pick: &dyn Fn(&health::Sample) -> health::Point| -> Value {
        json!({
            "rate": samples.iter().map(|s| pick(s).rate.map(round2)).collect::<Vec<_>>(),
            "lag": samples.iter().map(|s| pick(s).lag).collect::<Vec<_>>(),
        })
    };
    let groups: serde_json::Map<String, Value> = h
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            (
                g.clone(),
                column(&|s| s.groups.get(i).copied().unwrap_or_default()),
            )
        })
        .collect();
    let streams: serde_json::Map<String, Value> = h
        .streams
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                n.clone(),
                column(&|s| s.streams.get(i).copied().unwrap_or_default()),
            )
        })
        .collect();
    json!({
        "t": samples.iter().map(|s| s.at_ms).collect::<Vec<_>>(),
        "groups": groups,
        "streams": streams,
    })
}

/// `GET /console/api/health?since=MS`: the latest snapshot, every pair classified, the
/// KPIs, and the history after `since` (all of it without). From memory only.
async fn health_now(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    q: QueryMap,
) -> Result<Response, ApiError> {
    edge.authenticate_ops(&ctx, &headers).await?;
    let q = query(q, &["since"])?;
    let since = match q.get("since") {
        None => i64::MIN,
        Some(s) => s.parse::<i64>().map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!("since must be a Unix time in ms (generated_at_ms of an earlier answer), got {s:?}"),
            )
            .with("parameter", "since")
        })?,
    };
    let refresh_ms = ms(edge.config.metrics.refresh_interval);
    let body = {
        let guard = edge.latest.read().expect("snapshot lock");
        let Some((at, snap)) = guard.as_ref() else {
            return Err(ApiError::unavailable(
                "not_ready",
                "no health snapshot has been read from Redis yet",
                Duration::from_secs(1),
            ));
        };
        let at = *at;
        if since >= at {
            return Ok(json_response(
                StatusCode::OK,
                json!({"changed": false, "generated_at_ms": at, "now_ms": now_ms(), "refresh_ms": refresh_ms}),
            ));
        }
        let cfg = &edge.config;
        let mut pairs = vec![];
        let mut by_group: HashMap<&str, Vec<Classified>> = HashMap::new();
        for p in &snap.groups {
            let idle = cfg
                .group(&p.group)
                .map_or(Duration::from_secs(30), |g| g.claim_idle);
            let (h, why) = health::classify(p, idle);
            let mut v = serde_json::to_value(p).unwrap_or_default();
            v["health"] = json!(h);
            v["reasons"] = json!(why);
            pairs.push(v);
            by_group
                .entry(p.group.as_str())
                .or_default()
                .push((h, p, why));
        }
        let groups: Vec<Value> = cfg
            .groups
            .iter()
            .map(|g| {
                let ps = by_group.remove(g.name.as_str()).unwrap_or_default();
                let worst = ps.iter().map(|(h, _, _)| *h).max().unwrap_or(health::Health::Ok);
                let mut reasons: Vec<String> = vec![];
                for (_, p, why) in &ps {
                    for w in why {
                        let r = format!("{}: {w}", p.stream);
                        if !reasons.contains(&r) {
                            reasons.push(r);
                        }
                    }
                }
                json!({
                    "name": g.name,
                    "health": worst,
                    "reasons": reasons,
                    "lag": ps.iter().try_fold(0i64, |a, (_, p, _)| Some(a + p.lag?)),
                    "pending": ps.iter().map(|(_, p, _)| p.pending).sum::<i64>(),
                    "oldest_pending_age_ms": ps.iter().filter_map(|(_, p, _)| p.oldest_pending_age_ms).max(),
                    "consumers": ps.iter().map(|(_, p, _)| p.consumers).max().unwrap_or(0),
                    "dead_letters": ps.first().map_or(0, |(_, p, _)| p.dead_letters),
                    "exists": ps.iter().all(|(_, p, _)| p.exists),
                })
            })
            .collect();
        let streams: Vec<Value> = snap
            .streams
            .iter()
            .map(|(name, len)| {
                let readers: Vec<&Value> = pairs
                    .iter()
                    .filter(|p| p["stream"] == name.as_str())
                    .collect();
                json!({
                    "name": name,
                    "length": len,
                    "readers": readers.len(),
                    "max_lag": readers.iter().filter_map(|p| p["lag"].as_i64()).max(),
                })
            })
            .collect();
        json!({
            "changed": true,
            "generated_at_ms": at,
            "now_ms": now_ms(),
            "refresh_ms": refresh_ms,
            "pairs": pairs,
            "groups": groups,
            "streams": streams,
        })
    };
    let mut body = body;
    // The KPI rows exactly as /dashboard computes them (after the lock above is released).
    if let Some(d) = super::ops::dashboard_json(&edge) {
        body["kpis"] = d["kpis"].clone();
        body["daily_revenue_by_source_usd"] = d["daily_revenue_by_source_usd"].clone();
        body["totals"] = d["totals"].clone();
    }
    body["history"] = history_json(&edge.history, since);
    body["thresholds"] = thresholds();
    Ok(json_response(StatusCode::OK, body))
}

fn text(b: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(b);
    if s.chars().count() > max {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}…")
    } else {
        s.into_owned()
    }
}

/// An event's payload for display: JSON when it decodes and is small enough, else a
/// truncated text preview.
fn payload_json(env: &Envelope) -> (Value, Option<String>) {
    match env.data_as_json() {
        Ok(v) => {
            let s = v.to_string();
            if s.len() > MAX_PAYLOAD_CHARS {
                (Value::Null, Some(text(s.as_bytes(), MAX_PAYLOAD_CHARS)))
            } else {
                (v, None)
            }
        }
        Err(_) => (Value::Null, Some(text(&env.data, MAX_PAYLOAD_CHARS))),
    }
}

fn event_json(env: &Envelope) -> Value {
    json!({
        "id": env.id, "type": env.event_type, "v": env.v, "cid": env.cid, "caus": env.caus,
        "ts": env.ts, "src": env.src,
    })
}
