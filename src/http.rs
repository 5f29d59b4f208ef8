//! The daemon's HTTP listener: `GET /metrics` (OpenMetrics text of every metric, served
//! from memory: a scrape never touches Redis) and `GET /health` (the process is alive).
//! Anything else is a JSON 404.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Content type of the OpenMetrics text exposition (prometheus-client's format).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(m): State<Arc<Metrics>>) -> Response {
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], m.encode()).into_response()
}

async fn health() -> Response {
    json(StatusCode::OK, serde_json::json!({"status": "ok"}))
}

async fn not_found() -> Response {
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({"error": "not_found", "detail": "no such route; try /metrics or /health"}),
    )
}

/// The routes.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(self::metrics))
        .route("/health", get(health))
        .fallback(not_found)
        .with_state(metrics)
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(async move { shutdown.recv().await })
        .await
}
