//! The gateway proxy: `/api/v1/<service>/…` routes the edge does not serve itself go to
//! a healthy instance of that service when it is declared with `proxy = true`.
//!
//! What the edge does first, as for its own routes: authentication (`proxy:<service>`,
//! `proxy:*` or `*` when keys are on), rate limits (one unit; a per-route limit named
//! after the service), the body limit and the request deadline. Then:
//!
//! 1. Pick an instance ([`crate::upstream::Upstreams::pick`]: round-robin over the healthy
//!    instances whose breaker admits a request).
//! 2. Send the request with the path and query unchanged, the edge's credentials and
//!    hop-by-hop headers removed, and what the edge verified put in their place:
//!    `X-Correlation-ID`, `traceparent` (only a valid one), `X-Forwarded-For` (the peer
//!    the edge saw, never a client's claim), `X-Forwarded-Proto`, `X-Forwarded-Host`,
//!    `X-Astra-Key` (the key's name) and `X-User-ID` (only a user the key vouches for;
//!    with auth off what the client sent). A client's own `X-Astra-*` headers are dropped.
//! 3. An instance that refused the connection never got the request: try the next one.
//!    A failure after the request went out is retried elsewhere only for GET and HEAD;
//!    otherwise the answer is 503 `upstream_failed` (it may have been processed).
//! 4. Relay the answer (status, headers but hop-by-hop, body up to `max_response_bytes`).
//!    A 5xx answer is relayed and counts as a failure of the instance.
//!
//! No instance, every breaker open, or no answer: a JSON 503 with `Retry-After`, never an
//! answer made up by the edge.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::Response;
use http_body_util::Full;
use hyper::body::Bytes;

use super::error::ApiError;
use super::{Edge, RequestCtx};
use crate::internal_events::UpstreamAttempted;
use crate::upstream::Unavailable;
use crate::upstream::http::Failure;

/// Instances tried for one request at most.
const MAX_ATTEMPTS: usize = 3;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), plus the
/// framing hyper sets itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
];

/// Request headers the edge replaces with what it verified.
const REPLACED: &[&str] = &[
    "authorization",
    "x-api-key",
    "x-user-id",
    "x-correlation-id",
    "traceparent",
    "tracestate",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
];

/// `ANY /api/v1/{service}/{*path}`.
pub async fn proxy(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    path: Result<Path<(String, String)>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let Path((service, _rest)) = path
        .map_err(|e| ApiError::bad_request("invalid_path", format!("{}: {e}", req.uri().path())))?;
    let Some(svc) = edge
        .upstreams
        .service(&service)
        .filter(|s| s.proxy)
        .cloned()
    else {
        return Err(ApiError::not_found(
            "no_route",
            format!(
                "no route {} {}: the edge serves no such path and no service {service:?} is \
                 proxied (declare [services.{service}] with proxy = true); GET /openapi.json \
                 lists every route",
                req.method(),
                req.uri().path()
            ),
        ));
    };
    let (parts, body) = req.into_parts();
    let caller = edge.verify(&ctx, &parts.headers).await?;
    if !caller.has(|s| s.allows_proxy(&service)) {
        return Err(ApiError::forbidden(
            "out_of_scope",
            format!(
                "key {:?} may not call service {service} (add scope \"proxy:{service}\")",
                caller.name()
            ),
        ));
    }
    let admitted = edge.limit(&ctx, &caller, &[service.as_str()], 1).await?;
    // Held to the end: the body's share of `edge.body_memory`.
    let mut held = super::body::read_limited(&edge, &parts.headers, body).await?;
    let redis = edge.redis()?;

    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut headers = forwarded_headers(&parts.headers);
    let mut set = |k: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            headers.insert(HeaderName::from_static(k), v);
        }
    };
    set("x-correlation-id", &ctx.cid);
    if let Some(tp) = &ctx.traceparent {
        set("traceparent", tp);
    }
    if let Some(peer) = ctx.peer {
        set("x-forwarded-for", &peer.ip().to_string());
    }
    set("x-forwarded-proto", "http");
    if let Some(host) = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        set("x-forwarded-host", host);
    }
    if let Some(k) = &caller.key {
        set("x-astra-key", &k.name);
    }
    if let Some(u) = &caller.user
        && (caller.verified_user || caller.key.is_none())
    {
        set("x-user-id", u);
    }
    let body = Bytes::from(std::mem::take(&mut held.bytes));
    let retry_after_failure = matches!(parts.method, Method::GET | Method::HEAD);

    let mut tried: Vec<String> = vec![];
    let mut last: Option<Failure> = None;
    for _ in 0..MAX_ATTEMPTS {
        let attempt = match edge.upstreams.pick(redis, &service, &tried).await {
            Ok(a) => a,
            Err(why) => return Err(unavailable(&service, why, last.as_ref(), &svc)),
        };
        tried.push(attempt.instance.clone());
        let url = format!("{}{}", attempt.url.trim_end_matches('/'), path_and_query);
        let mut up = hyper::Request::builder()
            .method(parts.method.clone())
            .uri(&url);
        if let Some(h) = up.headers_mut() {
            *h = headers.clone();
        }
        let Ok(up) = up.body(Full::new(body.clone())) else {
            // The instance registered a URL hyper cannot use: the instance is at fault.
            UpstreamAttempted {
                service: &service,
                outcome: "refused",
            }
            .emit(&edge.metrics);
            last = Some(Failure::Refused(format!("unusable instance url {url:?}")));
            attempt.failed();
            continue;
        };
        match edge
            .upstreams
            .http()
            .send(up, svc.timeout, svc.max_response_bytes)
            .await
        {
            Ok(resp) => {
                let failed = resp.status().is_server_error();
                UpstreamAttempted {
                    service: &service,
                    outcome: if failed { "error_status" } else { "ok" },
                }
                .emit(&edge.metrics);
                if failed {
                    attempt.failed();
                } else {
                    attempt.succeeded();
                }
                return Ok(admitted.apply(relay(resp)));
            }
            Err(f) => {
                UpstreamAttempted {
                    service: &service,
                    outcome: f.as_str(),
                }
                .emit(&edge.metrics);
                attempt.failed();
                let again = !f.maybe_sent() || retry_after_failure;
                if !again {
                    return Err(failed_after_send(&service, &f));
                }
                last = Some(f);
            }
        }
    }
    Err(unavailable(
        &service,
        Unavailable::NoInstance,
        last.as_ref(),
        &svc,
    ))
}

/// The client's headers minus hop-by-hop ones, the ones the edge replaces, and any
/// `X-Astra-*` (the edge's own namespace).
fn forwarded_headers(from: &HeaderMap) -> HeaderMap {
    let named = connection_named(from);
    let mut out = HeaderMap::new();
    for (k, v) in from {
        let n = k.as_str();
        if HOP_BY_HOP.contains(&n)
            || REPLACED.contains(&n)
            || n.starts_with("x-astra-")
            || named.iter().any(|x| x == n)
        {
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    out
}

/// The headers `Connection: x, y` names as hop-by-hop too (lower-cased).
fn connection_named(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect()
}

/// The instance's answer, without its hop-by-hop headers.
fn relay(resp: hyper::Response<Bytes>) -> Response {
    let (parts, body) = resp.into_parts();
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = parts.status;
    let named = connection_named(&parts.headers);
    for (k, v) in &parts.headers {
        let n = k.as_str();
        if HOP_BY_HOP.contains(&n) || named.iter().any(|x| x == n) {
            continue;
        }
        out.headers_mut().append(k.clone(), v.clone());
    }
    out
}

/// 503: nothing could take the request.
fn unavailable(
    service: &str,
    why: Unavailable,
    last: Option<&Failure>,
    svc: &crate::config::ServiceConfig,
) -> ApiError {
    let tail = last
        .map(|f| format!(" (the last instance tried: {f})"))
        .unwrap_or_default();
    match why {
        Unavailable::NoInstance => ApiError::unavailable(
            "no_instance",
            format!(
                "service {service} has no healthy instance that can take the request{tail}; \
                 retry later"
            ),
            svc.registry_refresh.max(Duration::from_secs(1)),
        ),
        Unavailable::AllOpen(d) => ApiError::unavailable(
            "circuit_open",
            format!(
                "every healthy instance of service {service} failed {} times in a row; their \
                 circuit breakers let a probe through in about {}{tail}",
                svc.breaker.failures,
                humantime::format_duration(Duration::from_secs(d.as_secs().max(1)))
            ),
            d,
        ),
        Unavailable::Registry(e) => ApiError::unavailable(
            "registry_unavailable",
            format!(
                "the service registry could not be read ({e}) and no instance of {service} is \
                 known yet; retry later"
            ),
            Duration::from_secs(1),
        ),
    }
    .with("service", service)
}

/// 503 after the request went out and it is not safe to send again.
fn failed_after_send(service: &str, f: &Failure) -> ApiError {
    ApiError::unavailable(
        "upstream_failed",
        format!(
            "the instance of service {service} failed after the request was sent ({f}); it \
             may have been processed, so it was not sent elsewhere: retry with care \
             (an Idempotency-Key, if the service honours one)"
        ),
        Duration::from_secs(1),
    )
    .with("service", service)
}
