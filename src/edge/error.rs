//! Every error the edge answers: a status, a stable machine-readable code and a detail a
//! human can act on, always as JSON `{"error", "detail", ...}` (never an HTML page).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::bus::BusError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `invalid_payload`.
    pub code: &'static str,
    /// What went wrong and, where it helps, what to do.
    pub detail: String,
    /// Extra JSON fields (e.g. `field`, `index`).
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Extra headers (e.g. `Retry-After`, `WWW-Authenticate`).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with `status`, `code` and `detail`.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            detail: detail.into(),
            extra: Default::default(),
            headers: vec![],
        }
    }

    /// 400: the request is malformed (syntax, headers).
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 422: well-formed, but the payload does not match the event's schema.
    pub fn invalid(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_payload", detail)
    }

    /// 404.
    pub fn not_found(code: &'static str, detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    /// 403.
    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::FORBIDDEN, code, detail)
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(code: &'static str, detail: impl Into<String>, retry: Duration) -> ApiError {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail).retry_after(retry)
    }

    /// Adds a JSON field.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> ApiError {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: header::HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }

    /// Adds `Retry-After` in whole seconds (at least 1).
    pub fn retry_after(self, d: Duration) -> ApiError {
        let secs = d.as_millis().div_ceil(1000).max(1);
        self.header(header::RETRY_AFTER, HeaderValue::from(secs as u64))
    }

    /// Maps a Redis failure: what the client should do is retry later, and nothing was
    /// stored under this answer.
    pub fn redis(e: &BusError) -> ApiError {
        match e {
            BusError::OutOfMemory(_) => Self::unavailable(
                "redis_out_of_memory",
                "Redis is at maxmemory and refuses writes; nothing was stored, retry later",
                Duration::from_secs(5),
            ),
            BusError::Unavailable(_) => Self::unavailable(
                "redis_unavailable",
                "Redis is not reachable; nothing was stored, retry later",
                Duration::from_secs(1),
            ),
            BusError::NotReplicated { .. } => Self::unavailable(
                "not_replicated",
                format!(
                    "{e}: the event is on the primary but not confirmed on enough replicas \
                     (redis.min_replicas_ack), so a failover could lose it; retry later with \
                     the same Idempotency-Key to avoid a second copy"
                ),
                Duration::from_secs(1),
            ),
            other => {
                tracing::error!(error = %other, "edge: redis command failed");
                Self::unavailable(
                    "redis_error",
                    format!("Redis refused the request ({other}); retry later"),
                    Duration::from_secs(1),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), self.code.into());
        body.insert("detail".into(), self.detail.into());
        body.extend(self.extra);
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::Value::Object(body).to_string(),
        )
            .into_response();
        for (k, v) in self.headers {
            r.headers_mut().append(k, v);
        }
        r
    }
}

/// A JSON response.
pub fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
