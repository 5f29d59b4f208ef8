//! Operations routes: liveness, readiness, metrics, the KPI dashboard, the catalog and
//! group status, the OpenAPI document and the AsyncAPI event catalog. `/health`
//! (liveness, says nothing), `/openapi.json` and `/asyncapi.json` (the public contracts)
//! are always open; the others need a key with the
//! `ops` scope unless `edge.ops = "open"` (the default only on a loopback listener: the
//! dashboard shows revenue, `/v1/groups` costs Redis ~60 calls). Never rate limited
//! (health checks and scrapes must not be refused by a busy client).

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::{ApiError, json as json_response};
use super::{Edge, RequestCtx};
use crate::bus::query;

/// Content type of the OpenMetrics text exposition (prometheus-client's format).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /health`: the process is alive (never touches Redis).
pub async fn health(State(_edge): State<Arc<Edge>>) -> Result<Response, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}),
    ))
}

/// `GET /ready`: Redis answers and every configured group exists on its streams; 503 with
/// the reason otherwise. One pipelined round: PING and XINFO GROUPS per stream read.
pub async fn ready(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    edge.authenticate_ops(&ctx, &headers).await?;
    let not_ready = |reason: String| {
        ApiError::unavailable("not_ready", reason, std::time::Duration::from_secs(1))
    };
    let redis = edge
        .redis()
        .map_err(|_| not_ready("the daemon has not reached Redis yet".into()))?;
    if !edge.is_declared() {
        return Err(not_ready("the topology is not declared yet".into()));
    }
    let readers = edge.config.readers();
    let streams: Vec<&str> = readers.keys().copied().collect();
    let (ping, on_streams) = query::ping_and_groups(redis, &streams)
        .await
        .map_err(|e| not_ready(format!("Redis is not reachable: {e}")))?;
    if let Err(e) = ping {
        return Err(not_ready(format!("Redis does not answer PING: {e}")));
    }
    let mut missing = vec![];
    for ((stream, groups), have) in readers.iter().zip(on_streams) {
        for g in groups {
            if !have.contains(&g.name) {
                missing.push(format!("{} on {stream}", g.name));
            }
        }
    }
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(3).map(String::as_str).collect();
        return Err(not_ready(format!(
            "{} group(s) not declared in Redis, e.g. {}{} (a worker declares them at start \
             and re-creates lost ones; `astra-bus declare` does it now)",
            missing.len(),
            shown.join(", "),
            if missing.len() > 3 { ", …" } else { "" }
        ))
        .with("missing", missing));
    }
    Ok(json_response(
        StatusCode::OK,
        json!({"status": "ready", "groups": edge.config.groups.len(), "streams": readers.len()}),
    ))
}

/// `GET /metrics`: every metric in OpenMetrics text, from memory.
pub async fn metrics(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    edge.authenticate_ops(&ctx, &headers).await?;
    Ok((
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        edge.metrics.encode(),
    )
        .into_response())
}

/// The dashboard's JSON: KPIs with targets, today's revenue by source, business totals
/// and a bus summary, from the latest health snapshot.
pub fn dashboard_json(edge: &Edge) -> Option<Value> {
    let guard = edge.latest.read().expect("snapshot lock");
    let (at, snap) = guard.as_ref()?;
    let kpis = crate::kpi::compute(&snap.kpi);
    let targets: std::collections::HashMap<&str, f64> = crate::kpi::TARGETS.into_iter().collect();
    let kpi_rows: Vec<Value> = kpis
        .values
        .iter()
        .map(|(k, v)| {
            let target = targets.get(k).copied().unwrap_or(0.0);
            json!({"kpi": k, "value": v, "target": target, "met": *v >= target})
        })
        .collect();
    let revenue: serde_json::Map<String, Value> = kpis
        .revenue_by_source_usd
        .iter()
        .map(|(s, v)| (s.to_string(), json!(v)))
        .collect();
    let lag: i64 = snap.groups.iter().filter_map(|g| g.lag).sum();
    let pending: i64 = snap.groups.iter().map(|g| g.pending).sum();
    let dead: i64 = {
        let mut seen = std::collections::BTreeMap::new();
        for g in &snap.groups {
            seen.insert(g.group.clone(), g.dead_letters);
        }
        seen.values().sum()
    };
    Some(json!({
        "generated_at_ms": at,
        "kpis": kpi_rows,
        "daily_revenue_by_source_usd": revenue,
        "totals": snap.totals,
        "bus": {
            "groups": edge.config.groups.len(),
            "streams": snap.streams.len(),
            "lag": lag,
            "pending": pending,
            "dead_letters": dead,
            "missing_groups": snap.groups.iter().filter(|g| !g.exists).count(),
        },
    }))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn dashboard_html(d: &Value) -> String {
    let mut rows = String::new();
    for k in d["kpis"].as_array().into_iter().flatten() {
        let met = k["met"].as_bool().unwrap_or(false);
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{:.2}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            escape(k["kpi"].as_str().unwrap_or("")),
            k["value"].as_f64().unwrap_or(0.0),
            k["target"],
            if met { "ok" } else { "low" },
            if met { "met" } else { "below" },
        ));
    }
    let mut revenue = String::new();
    for (s, v) in d["daily_revenue_by_source_usd"]
        .as_object()
        .into_iter()
        .flatten()
    {
        revenue.push_str(&format!(
            "<tr><td>{}</td><td>${:.2}</td></tr>",
            escape(s),
            v.as_f64().unwrap_or(0.0)
        ));
    }
    let bus = &d["bus"];
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>astra-bus dashboard</title>\
         <meta http-equiv=\"refresh\" content=\"10\">\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1.5em}}\
         td,th{{border:1px solid #ccc;padding:.3em .8em;text-align:left}}.ok{{color:#070}}.low{{color:#a00}}</style>\
         </head><body><h1>astra-bus</h1>\
         <p><a href=\"/console\">Open the console</a>: topology, live health, dead letters, traces (needs JavaScript).</p>\
         <h2>KPIs</h2><table><tr><th>kpi</th><th>value</th><th>target</th><th></th></tr>{rows}</table>\
         <h2>Revenue today</h2><table><tr><th>source</th><th>USD</th></tr>{revenue}</table>\
         <h2>Bus</h2><table><tr><th>groups</th><td>{}</td></tr><tr><th>lag</th><td>{}</td></tr>\
         <tr><th>pending</th><td>{}</td></tr><tr><th>dead letters</th><td>{}</td></tr></table>\
         <p>JSON: <code>curl -H 'Accept: application/json' /dashboard</code></p></body></html>",
        bus["groups"], bus["lag"], bus["pending"], bus["dead_letters"]
    )
}

/// `GET /dashboard`: the KPI summary as JSON, or a small HTML page when the client
/// prefers `text/html` (a browser).
pub async fn dashboard(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    edge.authenticate_ops(&ctx, &headers).await?;
    let Some(d) = dashboard_json(&edge) else {
        return Err(ApiError::unavailable(
            "not_ready",
            "no health snapshot has been read from Redis yet",
            std::time::Duration::from_secs(1),
        ));
    };
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(prefers_html)
        .unwrap_or(false);
    if wants_html {
        return Ok((
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            dashboard_html(&d),
        )
            .into_response());
    }
    Ok(json_response(StatusCode::OK, d))
}

/// Whether an `Accept` header ranks `text/html` above `application/json`.
fn prefers_html(accept: &str) -> bool {
    let q_of = |media: &str| -> Option<f32> {
        accept.split(',').find_map(|part| {
            let mut it = part.split(';');
            let m = it.next()?.trim();
            if m != media {
                return None;
            }
            let q = it
                .find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse().ok()))
                .unwrap_or(1.0);
            Some(q)
        })
    };
    match (q_of("text/html"), q_of("application/json")) {
        (Some(h), Some(j)) => h > j,
        (Some(h), None) => h > 0.0,
        _ => false,
    }
}

/// `GET /v1/streams`: the declared catalog with each stream's length and readers.
pub async fn streams(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    edge.authenticate_ops(&ctx, &headers).await?;
    let redis = edge.redis()?;
    let names: Vec<&str> = edge
        .config
        .streams
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    let lens = query::stream_lengths(redis, &names)
        .await
        .map_err(|e| ApiError::redis(&e))?;
    let readers = edge.config.readers();
    let rows: Vec<Value> = edge
        .config
        .streams
        .iter()
        .zip(lens)
        .map(|(s, len)| {
            let groups: Vec<&str> = readers
                .get(s.name.as_str())
                .map(|gs| gs.iter().map(|g| g.name.as_str()).collect())
                .unwrap_or_default();
            json!({
                "name": s.name,
                "type": s.event_type(),
                "version": s.version,
                "external": s.external,
                "description": s.description,
                "length": len,
                "groups": groups,
                "publish": s.external.then(|| format!("POST /v1/events/{}", s.name)),
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, json!({ "streams": rows })))
}

/// `GET /v1/groups`: what `astra-bus status --json` prints, read live.
pub async fn groups(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    edge.authenticate_ops(&ctx, &headers).await?;
    let redis = edge.redis()?;
    let rows = crate::bus::status::status(redis, &edge.config)
        .await
        .map_err(|e| ApiError::redis(&e))?;
    Ok(json_response(StatusCode::OK, json!({ "groups": rows })))
}

/// `GET /openapi.json`.
pub async fn openapi(State(edge): State<Arc<Edge>>) -> Result<Response, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        super::openapi::document_for(&edge.config),
    ))
}

/// `GET /asyncapi.json`: the event catalog, what `astra-bus catalog` prints (always open,
/// like `/openapi.json`).
pub async fn asyncapi(State(edge): State<Arc<Edge>>) -> Result<Response, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        crate::catalog::asyncapi(&edge.config),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_html_and_clients_json() {
        assert!(prefers_html(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        assert!(!prefers_html("application/json"));
        assert!(!prefers_html("*/*"));
        assert!(!prefers_html("application/json, text/html;q=0.5"));
    }
}
