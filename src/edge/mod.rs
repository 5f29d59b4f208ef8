//! The HTTP edge (axum): the thin gateway in front of the bus.
//!
//! | module | routes |
//! |---|---|
//! | [`publish`] | `POST /v1/events/{stream}`, `POST /v1/events`, `POST /api/v1/trading/execute`, `POST /api/v1/users/register` |
//! | [`reads`] | `GET /api/v1/gamification/user/{id}/profile`, `GET /api/v1/gamification/leaderboard/{board}`, `GET /api/v1/social/feed` |
//! | [`ops`] | `GET /health`, `/ready`, `/metrics`, `/dashboard`, `/v1/streams`, `/v1/groups`, `/openapi.json`, `/asyncapi.json` |
//! | [`console`] | `GET /console` (the operator's console) and its `/console/api` |
//!
//! Cross-cutting concerns are layers around every route, not code in each handler:
//! correlation ids (`X-Correlation-ID`, validated or generated, echoed on every answer),
//! request metrics by route template, panic → JSON 500 (counted), load shedding
//! (`edge.max_concurrency`, 503 beyond) and the request deadline. Authentication, scopes
//! and rate limits are per route class and run in each handler through
//! [`Edge::authenticate`] (first) and [`Edge::limit`] (once the request is known valid, so
//! only requests that reach Redis count). Every error is JSON `{error, detail}`.
//!
//! Below the router, [`server`] owns the connections: header deadline, idle limit,
//! connection caps. Identity is what [`Edge::authenticate`] verified ([`auth::Caller`]):
//! rate-limit buckets, idempotency records and client-chosen event ids all derive from it,
//! never from a bare `X-User-ID` when keys are on.
//!
//! The edge's Redis handle is fail-fast ([`crate::bus::Redis::fail_fast`]): while Redis is
//! unreachable a publish is answered 503 at once and is never sent later behind the
//! client's back.

pub mod auth;
pub mod body;
pub mod console;
pub mod error;
pub mod openapi;
pub mod ops;
pub mod proxy;
pub mod publish;
pub mod reads;
pub mod server;
pub mod services;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use tokio::sync::Semaphore;

use crate::bus::Redis;
use crate::bus::ratelimit::{self, Bucket};
use crate::bus::status::Snapshot;
use crate::config::{ApiKey, Config, Scope};
use crate::internal_events::{HandlerPanicked, HttpRequestAnswered, RequestRateLimited};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use auth::Caller;
use error::ApiError;

/// The newest health snapshot the daemon read (refreshed every `metrics.refresh_interval`),
/// with the time it was taken (Unix ms). `/dashboard` is served from it, never from Redis.
pub type LatestSnapshot = Arc<RwLock<Option<(i64, Snapshot)>>>;

/// Everything the routes share.
pub struct Edge {
    /// The configuration the daemon runs with.
    pub config: Arc<Config>,
    /// Fail-fast Redis handle, set once connected (routes answer 503 before).
    redis: OnceLock<Redis>,
    /// Set once the topology is declared.
    declared: std::sync::atomic::AtomicBool,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Latest health snapshot.
    pub latest: LatestSnapshot,
    /// The last minutes of snapshots, for the console's charts (the health loop records).
    pub history: Arc<console::History>,
    /// API keys.
    keys: Vec<Arc<ApiKey>>,
    /// Requests in flight (load shedding).
    inflight: Arc<Semaphore>,
    /// Bytes of request bodies buffered at once (`edge.body_memory`).
    pub(crate) body_budget: Arc<Semaphore>,
    /// Client addresses over their failed-authentication limit, until when.
    auth_blocked: std::sync::Mutex<HashMap<IpAddr, Instant>>,
    /// The declared services the gateway proxy routes to, with their breakers.
    pub upstreams: Arc<crate::upstream::Upstreams>,
}

/// Addresses remembered as blocked at most (beyond, Redis's counter still answers).
const MAX_BLOCKED: usize = 65_536;

/// Per-request context the outer layer puts in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// Correlation id: `X-Correlation-ID` or a new UUIDv7.
    pub cid: String,
    /// A valid W3C `traceparent`, if sent.
    pub traceparent: Option<String>,
    /// Peer address (for per-user limits of anonymous callers).
    pub peer: Option<SocketAddr>,
}

/// Which limits a route counts against (ops routes count against none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Publishing (scope checked per stream by the handler).
    Publish,
    /// Projection reads (`read` scope).
    Read,
}

/// Headers of an admitted request (rate-limit state) to put on the answer.
#[derive(Debug, Default, Clone)]
pub struct Admitted {
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Admitted {
    /// Adds the headers to a response.
    pub fn apply(self, mut r: Response) -> Response {
        for (k, v) in self.headers {
            r.headers_mut().insert(k, v);
        }
        r
    }
}

impl Edge {
    /// Builds the edge for `config`; call [`Edge::connected`] once Redis answers.
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>, latest: LatestSnapshot) -> Arc<Edge> {
        let keys = config.edge.keys.iter().cloned().map(Arc::new).collect();
        Arc::new(Edge {
            inflight: Arc::new(Semaphore::new(config.edge.max_concurrency)),
            history: Arc::new(console::History::new(&config)),
            body_budget: Arc::new(Semaphore::new(config.edge.body_memory)),
            auth_blocked: Default::default(),
            upstreams: Arc::new(crate::upstream::Upstreams::new(&config, metrics.clone())),
            config,
            redis: OnceLock::new(),
            declared: Default::default(),
            metrics,
            latest,
            keys,
        })
    }

    /// Redis is reachable: routes may use it (through a fail-fast handle).
    pub fn connected(&self, redis: &Redis) {
        let _ = self
            .redis
            .set(redis.fail_fast(self.config.edge.redis_timeout));
    }

    /// The topology is declared (`/ready` starts checking groups).
    pub fn declared(&self) {
        self.declared
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether [`Edge::declared`] was called.
    pub fn is_declared(&self) -> bool {
        self.declared.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The Redis handle, or 503 while the daemon is still connecting.
    pub fn redis(&self) -> Result<&Redis, ApiError> {
        self.redis.get().ok_or_else(|| {
            ApiError::unavailable(
                "starting",
                "the daemon has not reached Redis yet; retry shortly",
                Duration::from_secs(1),
            )
        })
    }

    /// Authenticates (401; 429 once the client address failed `auth_failures` times in
    /// the window) and checks the route class's scope (403; publish scopes are checked
    /// per stream by the handler).
    pub async fn authenticate(
        &self,
        ctx: &RequestCtx,
        headers: &HeaderMap,
        class: Class,
    ) -> Result<Caller, ApiError> {
        let caller = self.verify(ctx, headers).await?;
        if class == Class::Read {
            caller.require(Scope::Read)?;
        }
        Ok(caller)
    }

    async fn verify(&self, ctx: &RequestCtx, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let ip = ctx.peer.map(|p| p.ip());
        let presents_key = headers.contains_key(header::AUTHORIZATION);
        if presents_key
            && self.config.edge.auth == crate::config::AuthMode::Keys
            && let Some(ip) = ip
            && let Some(until) = self.blocked_until(ip)
        {
            // Over the limit: refuse without even comparing the key, so guessing stays slow.
            RequestRateLimited {
                limit: "auth_failures",
            }
            .emit(&self.metrics);
            return Err(self.too_many_failures(until.saturating_duration_since(Instant::now())));
        }
        match auth::authenticate(&self.config.edge, &self.keys, headers) {
            Ok(c) => Ok(c),
            Err(auth::Refusal::Missing(e) | auth::Refusal::Other(e)) => Err(e),
            Err(auth::Refusal::Invalid(e)) => Err(self.count_failure(ip, e).await),
        }
    }

    /// A presented key was wrong: counts it for the client address (in Redis, shared by
    /// every instance); beyond `auth_failures` per window the answer is 429 and the
    /// address is refused without a key comparison until the window passes.
    async fn count_failure(&self, ip: Option<IpAddr>, e: ApiError) -> ApiError {
        let rl = &self.config.edge.rate_limit;
        let Ok(redis) = self.redis() else {
            return e;
        };
        let bucket = Bucket {
            name: format!("authfail:{}", ip.map(|i| i.to_string()).unwrap_or_default()),
            limit: rl.auth_failures,
        };
        let v = match ratelimit::check(redis, rl.window, 1, &[bucket]).await {
            Ok(v) => v,
            Err(err) => return ApiError::redis(&err),
        };
        if v.allowed {
            return e;
        }
        if let Some(ip) = ip {
            self.block(ip, v.retry_after);
        }
        RequestRateLimited {
            limit: "auth_failures",
        }
        .emit(&self.metrics);
        self.too_many_failures(v.retry_after)
    }

    fn too_many_failures(&self, retry: Duration) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_auth_failures",
            format!(
                "more than edge.rate_limit.auth_failures = {} failed authentications from this \
                 address per {}; retry later",
                self.config.edge.rate_limit.auth_failures,
                humantime::format_duration(self.config.edge.rate_limit.window)
            ),
        )
        .with("limit", "auth_failures")
        .retry_after(retry)
    }

    fn blocked_until(&self, ip: IpAddr) -> Option<Instant> {
        let mut b = self.auth_blocked.lock().expect("auth block table");
        match b.get(&ip) {
            Some(t) if *t > Instant::now() => Some(*t),
            Some(_) => {
                b.remove(&ip);
                None
            }
            None => None,
        }
    }

    fn block(&self, ip: IpAddr, d: Duration) {
        let mut b = self.auth_blocked.lock().expect("auth block table");
        if b.len() >= MAX_BLOCKED {
            let now = Instant::now();
            b.retain(|_, t| *t > now);
        }
        if b.len() < MAX_BLOCKED {
            b.insert(ip, Instant::now() + d);
        }
    }

    /// Counts the request (`cost`: its events; 1 for a read) against its rate limits
    /// (`domains`: the domains whose per-route limits apply) in one script, all or
    /// nothing; 429 when any is exhausted. Buckets come from what was verified: the key
    /// and the user it vouches for; with auth off the client address (always limited to
    /// `per_client`) and the `X-User-ID` it sends. Returns the rate-limit headers.
    pub async fn limit(
        &self,
        ctx: &RequestCtx,
        caller: &Caller,
        domains: &[&str],
        cost: u32,
    ) -> Result<Admitted, ApiError> {
        let rl = &self.config.edge.rate_limit;
        if !rl.enabled {
            return Ok(Admitted::default());
        }
        let addr = match ctx.peer {
            Some(p) => p.ip().to_string(),
            None => "unknown".to_string(),
        };
        let mut buckets = vec![];
        let mut kinds = vec![];
        // The user's own buckets: a key's users are its own (one key cannot drain another's).
        let user = match (&caller.key, &caller.user) {
            (Some(k), Some(u)) if k.user.as_deref() == Some(u.as_str()) => format!("user:{u}"),
            (Some(k), Some(u)) => format!("key:{}:user:{u}", k.name),
            (Some(k), None) => format!("key:{}:self", k.name),
            (None, Some(u)) => format!("user:{u}"),
            (None, None) => format!("client:{addr}"),
        };
        buckets.push(Bucket {
            name: user.clone(),
            limit: rl.per_user,
        });
        kinds.push("user");
        for d in domains {
            if let Some(limit) = rl.route.get(*d) {
                buckets.push(Bucket {
                    name: format!("route:{d}:{user}"),
                    limit: *limit,
                });
                kinds.push("route");
            }
        }
        match &caller.key {
            Some(k) => {
                buckets.push(Bucket {
                    name: format!("key:{}", k.name),
                    limit: rl.per_key,
                });
                kinds.push("key");
            }
            None => {
                // Without keys the address is the service: X-User-ID cannot lift this.
                buckets.push(Bucket {
                    name: format!("service:{addr}"),
                    limit: rl.per_client,
                });
                kinds.push("client");
            }
        }
        if let Some((i, b)) = buckets.iter().enumerate().find(|(_, b)| b.limit < cost) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "this batch counts {cost} events against a {} limit of {} per {}: it can \
                     never pass; send at most {} events per request",
                    kinds[i],
                    b.limit,
                    humantime::format_duration(rl.window),
                    b.limit
                ),
            )
            .with("limit", kinds[i])
            .retry_after(rl.window));
        }
        let redis = self.redis()?;
        let v = ratelimit::check(redis, rl.window, cost, &buckets)
            .await
            .map_err(|e| ApiError::redis(&e))?;
        let reset_secs = v.reset.as_millis().div_ceil(1000) as u64;
        let hdrs = vec![
            (
                header::HeaderName::from_static("x-ratelimit-limit"),
                HeaderValue::from(v.limit),
            ),
            (
                header::HeaderName::from_static("x-ratelimit-remaining"),
                HeaderValue::from(v.remaining),
            ),
            (
                header::HeaderName::from_static("x-ratelimit-reset"),
                HeaderValue::from(reset_secs),
            ),
        ];
        if !v.allowed {
            let kind = kinds.get(v.bucket).copied().unwrap_or("user");
            RequestRateLimited { limit: kind }.emit(&self.metrics);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "{kind} limit of {} per {} reached; retry later",
                    v.limit,
                    humantime::format_duration(rl.window)
                ),
            )
            .with("limit", kind)
            .retry_after(v.retry_after);
            e.headers.extend(hdrs);
            return Err(e);
        }
        Ok(Admitted { headers: hdrs })
    }

    /// For ops routes: 401/403 unless they are open (`edge.ops`; by default open only on
    /// a loopback listener) or the caller's key has the `ops` scope.
    pub async fn authenticate_ops(
        &self,
        ctx: &RequestCtx,
        headers: &HeaderMap,
    ) -> Result<(), ApiError> {
        self.authenticate_ops_or(ctx, headers, |_| false).await
    }

    /// [`Edge::authenticate_ops`], also letting through a key with a scope `also` accepts
    /// (e.g. `register:<service>` on that service's registry routes).
    pub async fn authenticate_ops_or(
        &self,
        ctx: &RequestCtx,
        headers: &HeaderMap,
        also: impl Fn(&Scope) -> bool,
    ) -> Result<(), ApiError> {
        if !self.config.edge.ops_keyed() {
            return Ok(());
        }
        if headers.contains_key(header::AUTHORIZATION)
            && let Some(ip) = ctx.peer.map(|p| p.ip())
            && let Some(until) = self.blocked_until(ip)
        {
            RequestRateLimited {
                limit: "auth_failures",
            }
            .emit(&self.metrics);
            return Err(self.too_many_failures(until.saturating_duration_since(Instant::now())));
        }
        if self.keys.is_empty() {
            return Err(auth::unauthorized(
                "ops routes need a key with the \"ops\" scope (edge.ops = \"keys\") and none is configured",
                false,
            ));
        }
        // With auth off there is no caller key: check one anyway (ops keys exist).
        let mut cfg = self.config.edge.clone();
        cfg.auth = crate::config::AuthMode::Keys;
        let caller = match auth::authenticate(&cfg, &self.keys, headers) {
            Ok(c) => c,
            Err(auth::Refusal::Missing(e) | auth::Refusal::Other(e)) => return Err(e),
            Err(auth::Refusal::Invalid(e)) => {
                return Err(self.count_failure(ctx.peer.map(|p| p.ip()), e).await);
            }
        };
        if caller.has(also) {
            return Ok(());
        }
        caller.require(Scope::Ops)
    }
}

/// The gateway proxy's route template (`/api/v1/<service>/…`).
pub const PROXY: &str = "/api/v1/{service}/{*path}";

/// Every route: (method, path template, handler). The OpenAPI document lists the same
/// set (a test compares them), so the document cannot drift from the router.
pub fn routes() -> Vec<(Method, &'static str, MethodRouter<Arc<Edge>>)> {
    let mut r = vec![
        (
            Method::POST,
            "/v1/events/{stream}",
            post(publish::publish_one),
        ),
        (Method::POST, "/v1/events", post(publish::publish_batch)),
        (
            Method::POST,
            "/api/v1/trading/execute",
            post(publish::trading_execute),
        ),
        (
            Method::POST,
            "/api/v1/users/register",
            post(publish::users_register),
        ),
        (
            Method::GET,
            "/api/v1/gamification/user/{id}/profile",
            get(reads::profile),
        ),
        (
            Method::GET,
            "/api/v1/gamification/leaderboard/{board}",
            get(reads::leaderboard),
        ),
        (Method::GET, "/api/v1/social/feed", get(reads::feed)),
        (Method::GET, "/health", get(ops::health)),
        (Method::GET, "/ready", get(ops::ready)),
        (Method::GET, "/metrics", get(ops::metrics)),
        (Method::GET, "/dashboard", get(ops::dashboard)),
        (Method::GET, "/v1/streams", get(ops::streams)),
        (Method::GET, "/v1/groups", get(ops::groups)),
        (Method::GET, "/v1/services", get(services::list)),
        (
            Method::POST,
            "/v1/services/{service}/instances/{instance}",
            post(services::heartbeat),
        ),
        (
            Method::DELETE,
            "/v1/services/{service}/instances/{instance}",
            delete(services::deregister),
        ),
        (Method::GET, "/openapi.json", get(ops::openapi)),
        // The gateway proxy: whatever the routes above do not serve under /api/v1/.
        (Method::GET, PROXY, get(proxy::proxy)),
        (Method::POST, PROXY, post(proxy::proxy)),
        (Method::PUT, PROXY, put(proxy::proxy)),
        (Method::PATCH, PROXY, patch(proxy::proxy)),
        (Method::DELETE, PROXY, delete(proxy::proxy)),
        (Method::GET, "/asyncapi.json", get(ops::asyncapi)),
    ];
    r.extend(console::routes());
    r
}

async fn no_route(req: Request) -> ApiError {
    ApiError::not_found(
        "no_route",
        format!(
            "no route {} {}; GET /openapi.json lists every route",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}; GET /openapi.json lists every route",
            req.method(),
            req.uri().path()
        ),
    )
}

/// A correlation id we store and echo: 1–128 visible ASCII characters.
fn valid_cid(s: &str) -> bool {
    crate::config::visible_ascii(s, 128)
}

/// W3C trace context: `00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero.
pub fn valid_traceparent(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

/// Outermost layer: correlation id in, correlation id out (on errors too).
async fn correlation(mut req: Request, next: Next) -> Response {
    let given = req.headers().get("x-correlation-id").map(|v| v.to_str());
    let (cid, bad) = match given {
        None => (crate::envelope::new_id(), false),
        Some(Ok(s)) if valid_cid(s) => (s.to_string(), false),
        Some(_) => (crate::envelope::new_id(), true),
    };
    let mut resp = if bad {
        ApiError::bad_request(
            "invalid_header",
            "X-Correlation-ID must be 1-128 visible ASCII characters",
        )
        .with("header", "X-Correlation-ID")
        .into_response()
    } else {
        // An invalid traceparent is ignored, as W3C trace context asks of receivers.
        let traceparent = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .filter(|s| valid_traceparent(s))
            .map(str::to_string);
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        req.extensions_mut().insert(RequestCtx {
            cid: cid.clone(),
            traceparent,
            peer,
        });
        next.run(req).await
    };
    if let Ok(v) = HeaderValue::from_str(&cid) {
        resp.headers_mut().insert("x-correlation-id", v);
    }
    resp
}

/// Request metrics by route template (a fixed set), method and status.
async fn observe(State(edge): State<Arc<Edge>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "other",
    };
    let started = Instant::now();
    // The SERVER span (nothing while tracing is off); what the request publishes is
    // traced under it.
    let trace = match req.extensions().get::<RequestCtx>() {
        Some(c) if crate::telemetry::enabled() => {
            crate::telemetry::spans::request(method, &route, &c.cid, c.traceparent.as_deref())
        }
        _ => crate::telemetry::spans::Traced::off(),
    };
    let resp = if trace.tp.is_some() {
        use tracing::Instrument as _;
        next.run(req).instrument(trace.span.clone()).await
    } else {
        next.run(req).await
    };
    crate::telemetry::spans::answered(&trace, resp.status().as_u16());
    HttpRequestAnswered {
        route: &route,
        method,
        status: resp.status().as_u16(),
        took: started.elapsed(),
    }
    .emit(&edge.metrics);
    resp
}

/// Load shedding and the request deadline.
async fn shed_and_deadline(State(edge): State<Arc<Edge>>, req: Request, next: Next) -> Response {
    let Ok(_permit) = edge.inflight.clone().try_acquire_owned() else {
        return ApiError::unavailable(
            "overloaded",
            format!(
                "more than edge.max_concurrency = {} requests in flight; retry shortly",
                edge.config.edge.max_concurrency
            ),
            Duration::from_secs(1),
        )
        .into_response();
    };
    let deadline = edge.config.edge.request_timeout;
    match tokio::time::timeout(deadline, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::unavailable(
            "timeout",
            format!(
                "the request did not finish within edge.request_timeout = {}; retry later",
                humantime::format_duration(deadline)
            ),
            Duration::from_secs(1),
        )
        .into_response(),
    }
}

/// The router with every layer.
pub fn router(edge: Arc<Edge>) -> Router {
    let mut r = Router::new();
    for (_, path, handler) in routes() {
        r = r.route(path, handler);
    }
    let panics = edge.clone();
    r.fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            edge.clone(),
            shed_and_deadline,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            move |_: Box<dyn std::any::Any + Send + 'static>| {
                HandlerPanicked.emit(&panics.metrics);
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the server failed while handling this request; it was logged",
                )
                .into_response()
            },
        ))
        .layer(middleware::from_fn_with_state(edge.clone(), observe))
        .layer(middleware::from_fn(correlation))
        .with_state(edge)
}

/// Serves until `shutdown`; in-flight requests finish first ([`server::serve`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    edge: Arc<Edge>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    server::serve(listener, edge, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent("00-abc-def-01"));
        assert!(!valid_traceparent(""));
    }

    #[test]
    fn correlation_ids() {
        assert!(valid_cid("order-42"));
        assert!(!valid_cid(""));
        assert!(!valid_cid("has space"));
        assert!(!valid_cid(&"x".repeat(129)));
    }

    #[test]
    fn openapi_lists_exactly_the_routes() {
        let shipped = include_str!("../../streams.toml");
        // Without proxied services, and with two (one more declared but not proxied).
        let with_services = format!(
            "{shipped}\n[services.pricing]\nproxy = true\n[services.billing]\nproxy = true\n[services.internal]\n"
        );
        for text in [shipped.to_string(), with_services] {
            routes_documented(&text);
        }
    }

    fn routes_documented(streams_toml: &str) {
        let cfg = Config::from_sources(
            std::path::Path::new("."),
            &[("streams.toml".into(), streams_toml.into())],
        )
        .unwrap();
        let mut routed: Vec<(String, String)> = vec![];
        for (m, p, _) in routes() {
            let m = m.to_string().to_lowercase();
            // Templates over a fixed set are documented per member.
            let expanded: Vec<String> = match p {
                "/v1/events/{stream}" => cfg
                    .streams
                    .iter()
                    .filter(|s| s.external)
                    .map(|s| format!("/v1/events/{}", s.name))
                    .collect(),
                "/api/v1/gamification/leaderboard/{board}" => ["daily", "weekly", "all_time"]
                    .iter()
                    .map(|b| format!("/api/v1/gamification/leaderboard/{b}"))
                    .collect(),
                PROXY => cfg
                    .services
                    .iter()
                    .filter(|s| s.proxy)
                    .map(|s| format!("/api/v1/{}/{{path}}", s.name))
                    .collect(),
                p => vec![p.to_string()],
            };
            routed.extend(expanded.into_iter().map(|p| (m.clone(), p)));
        }
        routed.sort();
        let doc = openapi::document_for(&cfg);
        let mut documented = vec![];
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.push((method.clone(), path.clone()));
            }
        }
        documented.sort();
        assert_eq!(routed, documented);
    }
}
