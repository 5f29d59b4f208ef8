//! The service registry over HTTP: instances register and heartbeat with
//! `POST /v1/services/{service}/instances/{instance}`, leave with `DELETE` on the same
//! path, and `GET /v1/services` lists every service with its healthy count. The registry
//! itself lives in Redis ([`crate::bus::services`]), so every edge on it sees the same.
//! Ops routes: when they are keyed, a key with the `ops` scope, or for one service's own
//! instances a key with `register:<service>` (it may not list the others).

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, json as json_response};
use super::{Edge, RequestCtx};
use crate::bus::services::{self, Record};
use crate::config::Scope;
use crate::envelope::now_ms;
use crate::events::schema::valid_id;

/// A heartbeat's body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Heartbeat {
    /// Where the instance answers: `http://host:port` or `https://…`.
    url: String,
    /// How long it counts as healthy without another heartbeat (ms; default 10 s).
    #[serde(default = "default_ttl_ms")]
    ttl_ms: u64,
}

fn default_ttl_ms() -> u64 {
    10_000
}

/// The ttls a heartbeat may ask for (ms).
pub const TTL_MS: std::ops::RangeInclusive<u64> = 1_000..=3_600_000;
const MAX_URL: usize = 2048;
const MAX_BODY: usize = 4096;

pub use crate::config::valid_service;

/// A registry request's input refused: the field to blame and why.
pub struct Refused {
    /// `service`, `instance`, `url` or `ttl_ms`.
    pub field: &'static str,
    /// What is wrong.
    pub why: String,
}

/// Checks a service name and an instance id (the routes' path, the CLI's arguments).
pub fn check_names(service: &str, instance: &str) -> Result<(), Refused> {
    if !valid_service(service) {
        return Err(Refused {
            field: "service",
            why: crate::config::SERVICE_NAME_RULE.into(),
        });
    }
    if !valid_id(instance) {
        return Err(Refused {
            field: "instance",
            why: "an instance id is 1-128 characters of A-Z, a-z, 0-9 and . _ : @ -".into(),
        });
    }
    Ok(())
}

/// Checks what a heartbeat records: its `url` and `ttl_ms`.
pub fn check_heartbeat(url: &str, ttl_ms: u64) -> Result<(), Refused> {
    valid_url(url).map_err(|why| Refused {
        field: "url",
        why: format!("url {why}"),
    })?;
    if !TTL_MS.contains(&ttl_ms) {
        return Err(Refused {
            field: "ttl_ms",
            why: format!("ttl_ms must be {} to {}", TTL_MS.start(), TTL_MS.end()),
        });
    }
    Ok(())
}

/// Checks a URL an instance gives for itself: absolute http(s), a host, no whitespace.
pub fn valid_url(u: &str) -> Result<(), String> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or("must start with http:// or https://")?;
    if u.len() > MAX_URL {
        return Err(format!("at most {MAX_URL} bytes"));
    }
    if rest.is_empty() || rest.starts_with('/') {
        return Err("names no host".into());
    }
    if !u.bytes().all(|b| (b'!'..=b'~').contains(&b)) {
        return Err("must be printable ASCII without spaces (percent-encode the rest)".into());
    }
    Ok(())
}

/// Who may change `service`'s instances: an ops key, or its own `register:<service>` key;
/// then the two names are checked (so a caller without rights learns nothing from a 400).
async fn authorized_names(
    edge: &Edge,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    let (service, instance) = p.map(|Path(p)| p).map_err(|e| {
        ApiError::bad_request(
            "invalid_path",
            format!("/v1/services/{{service}}/instances/{{instance}}: {e}"),
        )
    })?;
    edge.authenticate_ops_or(
        ctx,
        headers,
        |s| matches!(s, Scope::Register { service: mine } if *mine == service),
    )
    .await?;
    check_names(&service, &instance).map_err(|r| {
        let code = if r.field == "service" {
            "invalid_service"
        } else {
            "invalid_instance"
        };
        ApiError::bad_request(code, r.why).with("field", r.field)
    })?;
    Ok((service, instance))
}

/// `POST /v1/services/{service}/instances/{instance}`: registers or heartbeats.
pub async fn heartbeat(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (service, instance) = authorized_names(&edge, &ctx, &headers, p).await?;
    let hb: Heartbeat = super::body::read_json(
        &headers,
        body,
        MAX_BODY,
        "heartbeats",
        "{\"url\": \"http://host:port\", \"ttl_ms\": 10000}",
    )
    .await?;
    check_heartbeat(&hb.url, hb.ttl_ms).map_err(|r| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_heartbeat", r.why)
            .with("field", r.field)
    })?;
    let rec = Record {
        url: hb.url,
        ttl_ms: hb.ttl_ms,
        seen_ms: now_ms(),
    };
    let redis = edge.redis()?;
    services::heartbeat(redis, &service, &instance, &rec)
        .await
        .map_err(|e| ApiError::redis(&e))?;
    Ok(json_response(
        StatusCode::OK,
        json!({
            "service": service, "instance": instance, "url": rec.url,
            "healthy_until_ms": rec.seen_ms + rec.ttl_ms as i64,
            "heartbeat_every_ms": (Duration::from_millis(rec.ttl_ms) / 3).as_millis() as u64,
        }),
    ))
}

/// `DELETE /v1/services/{service}/instances/{instance}`: leaves the registry.
pub async fn deregister(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (service, instance) = authorized_names(&edge, &ctx, &headers, p).await?;
    let redis = edge.redis()?;
    let was = services::deregister(redis, &service, &instance)
        .await
        .map_err(|e| ApiError::redis(&e))?;
    if !was {
        return Err(ApiError::not_found(
            "no_instance",
            format!("service {service} has no instance {instance} (expired, or never registered)"),
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        json!({"service": service, "instance": instance, "removed": true}),
    ))
}

/// `GET /v1/services`: every service, its instances and how many are healthy.
pub async fn list(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    edge.authenticate_ops(&ctx, &headers).await?;
    let redis = edge.redis()?;
    let all = services::list(redis, now_ms())
        .await
        .map_err(|e| ApiError::redis(&e))?;
    Ok(json_response(StatusCode::OK, json!({ "services": all })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls_are_checked() {
        assert!(valid_service("trading") && valid_service("nft-market_2"));
        for bad in ["", "Trading", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_service(bad), "{bad:?}");
        }
        assert!(valid_url("http://10.0.0.7:8001").is_ok());
        assert!(valid_url("https://svc.internal/base").is_ok());
        for (bad, why) in [
            ("ftp://x", "must start with"),
            ("http://", "names no host"),
            ("http:///x", "names no host"),
            ("http://a b", "without spaces"),
            ("http://é", "without spaces"),
        ] {
            assert!(valid_url(bad).unwrap_err().contains(why), "{bad}");
        }
    }
}
