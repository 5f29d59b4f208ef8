//! Publishing over HTTP: one event, a batch, and the seed-compatible routes.
//!
//! Order of checks, so the cheapest refusal comes first and only valid requests reach
//! Redis: authenticate (401) → route and stream (404/403) → content type (415) → size
//! (413) → JSON (400) → schema (422) → rate limits (429, in Redis) → publish (202, or 503
//! when Redis cannot store it). With `Idempotency-Key`, publishing and remembering the
//! answer are one script per stream, so a retry returns the first answer (generated ids
//! included) and stores nothing new; records are scoped to the caller's verified identity.
//!
//! Cost is linear in the body: the body is read into a bounded buffer (counted against
//! `edge.body_memory`), checked once for well-formed JSON without building it, then each
//! payload is walked once against its contract ([`crate::events::schema`]), stopping at
//! the first problem.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::auth::Caller;
pub use super::body::ENVELOPE_MEDIA_TYPE;
use super::body::{BatchSeed, BodyKind, EnvelopeIn, ItemIn, read_body};
use super::error::{ApiError, json as json_response};
use super::{Class, Edge, RequestCtx};
use crate::bus::idempotent::{self, Outcome as IdemOutcome, Stored};
use crate::config::{StreamConfig, hex, visible_ascii};
use crate::envelope::{ContentType, Envelope};
use crate::events::schema::{self, Problem};
use crate::events::streams;
use crate::internal_events::{EventsPublished, IdempotentReplay};
use crate::telemetry::spans::{self, Traced};

/// The field a validation message is about (`missing field `x``, `x: reason`).
fn field_of(msg: &str) -> Option<String> {
    for prefix in ["missing field `", "unknown field `"] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            return rest.split('`').next().map(str::to_string);
        }
    }
    let (head, _) = msg.split_once(": ")?;
    (!head.is_empty() && head.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then(|| head.to_string())
}

fn problem(stream: &str, p: Problem) -> ApiError {
    let mut e =
        ApiError::invalid(format!("payload does not match {stream}: {p}")).with("stream", stream);
    if let Some(f) = p.field {
        e = e.with("field", f);
    }
    e
}

fn invalid(stream: &str, msg: String) -> ApiError {
    let mut e =
        ApiError::invalid(format!("payload does not match {stream}: {msg}")).with("stream", stream);
    if let Some(f) = field_of(&msg) {
        e = e.with("field", f);
    }
    e
}

fn stream_for<'a>(edge: &'a Edge, name: &str) -> Result<&'a StreamConfig, ApiError> {
    let s = edge.config.stream(name).ok_or_else(|| {
        ApiError::not_found(
            "unknown_stream",
            format!("stream {name} is not in the declared catalog; GET /v1/streams lists them"),
        )
        .with("stream", name)
    })?;
    if !s.external {
        return Err(ApiError::forbidden(
            "stream_not_publishable",
            format!(
                "{name} is written by the bus's handlers, not by clients; \
                 publishable streams are marked external in GET /v1/streams"
            ),
        )
        .with("stream", name));
    }
    Ok(s)
}

/// Parses one payload (JSON bytes) against the stream's contract: strictly for the public
/// inputs (unknown fields refused); on an external stream this binary has no contract
/// for, the stream's `schema` file when it names one, else any JSON object. `optional`:
/// required fields the route fills itself.
fn parse_payload(
    s: &StreamConfig,
    json: &[u8],
    fill: impl FnOnce(&mut Map<String, Value>),
) -> Result<Map<String, Value>, ApiError> {
    match schema::payload(&s.name) {
        Some(p) => {
            let mut m = p.parse(json).map_err(|e| problem(&s.name, e))?;
            fill(&mut m);
            p.complete(&m).map_err(|e| problem(&s.name, e))?;
            Ok(m)
        }
        None => match serde_json::from_slice::<Value>(json) {
            Ok(Value::Object(mut m)) => {
                fill(&mut m);
                if let Some(custom) = &s.schema {
                    custom.check_object(&m).map_err(|e| problem(&s.name, e))?;
                }
                Ok(m)
            }
            _ => Err(invalid(&s.name, "payload must be a JSON object".into())),
        },
    }
}

/// A key with a verified user may only publish events that user acts in.
fn bind_actor(s: &StreamConfig, m: &Map<String, Value>, caller: &Caller) -> Result<(), ApiError> {
    let (Some(p), Some(user), true) =
        (schema::payload(&s.name), &caller.user, caller.verified_user)
    else {
        return Ok(());
    };
    match m.get(p.actor).and_then(Value::as_str) {
        Some(a) if a == user => Ok(()),
        other => Err(ApiError::forbidden(
            "user_mismatch",
            format!(
                "key {:?} acts for user {user:?}; {} {} names {}",
                caller.name(),
                s.name,
                p.actor,
                other.map(|a| format!("{a:?}")).unwrap_or("nobody".into())
            ),
        )
        .with("field", p.actor)
        .with("stream", s.name.as_str())),
    }
}

/// The stored id of a client-chosen envelope id: a UUID (v8) derived from the producer
/// and the id, so ids are per producer.
fn namespaced_id(producer: &str, id: &str) -> String {
    let d = Sha256::digest([producer.as_bytes(), &[0], id.as_bytes()].concat());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid::Builder::from_custom_bytes(b).into_uuid().to_string()
}

/// Builds the envelope of one event: the payload (already checked) or a full envelope.
fn build_event(
    edge: &Edge,
    s: &StreamConfig,
    body: &[u8],
    kind: BodyKind,
    ctx: &RequestCtx,
    caller: &Caller,
    fill: impl FnOnce(&mut Map<String, Value>),
) -> Result<Envelope, ApiError> {
    let src = match &caller.key {
        Some(k) => k.name.clone(),
        None => "edge".to_string(),
    };
    let (payload, env_in) = match kind {
        BodyKind::Payload => (parse_payload(s, body, fill)?, None),
        BodyKind::Envelope => {
            let e: EnvelopeIn = serde_json::from_slice(body).map_err(|e| {
                let msg = e.to_string();
                let mut err = ApiError::invalid(format!("not a valid envelope: {msg}"))
                    .with("stream", s.name.as_str());
                if let Some(f) = field_of(&msg) {
                    err = err.with("field", f);
                }
                err
            })?;
            (parse_payload(s, e.data.get().as_bytes(), fill)?, Some(e))
        }
    };
    bind_actor(s, &payload, caller)?;
    let data = rmp_serde::to_vec_named(&payload)
        .map_err(|e| invalid(&s.name, format!("cannot be encoded: {e}")))?;
    let mut env = Envelope::root(
        &s.event_type(),
        s.version,
        &src,
        Some(ctx.cid.clone()),
        ContentType::MsgPack,
        data,
    );
    env.tp = ctx.traceparent.clone();
    if let Some(e) = env_in {
        let bad = |field: &str, why: String| {
            ApiError::invalid(format!("envelope field {field}: {why}"))
                .with("field", field)
                .with("stream", s.name.as_str())
        };
        if let Some(t) = e.event_type
            && t != env.event_type
        {
            return Err(bad(
                "type",
                format!("{t:?} does not match the stream's {:?}", env.event_type),
            ));
        }
        if let Some(v) = e.v
            && v != env.v
        {
            return Err(bad(
                "v",
                format!("{v} does not match the stream's version {}", env.v),
            ));
        }
        if let Some(x) = &e.src
            && *x != src
        {
            return Err(bad(
                "src",
                format!("is set by the edge to the key's name ({src:?}); leave it out"),
            ));
        }
        for (field, value, max) in [
            ("id", &e.id, 64),
            ("cid", &e.cid, 128),
            ("caus", &e.caus, 64),
        ] {
            if let Some(x) = value
                && !visible_ascii(x, max)
            {
                return Err(bad(
                    field,
                    format!("must be 1-{max} visible ASCII characters"),
                ));
            }
        }
        if let Some(ts) = e.ts {
            let skew = edge.config.edge.envelope_skew.as_millis() as i64;
            let now = crate::envelope::now_ms();
            if (ts - now).abs() > skew {
                return Err(bad(
                    "ts",
                    format!(
                        "{ts} is more than edge.envelope_skew = {} from the edge's clock ({now})",
                        humantime::format_duration(edge.config.edge.envelope_skew)
                    ),
                ));
            }
            env.ts = ts;
        }
        if let Some(id) = e.id {
            env.id = namespaced_id(&src, &id);
        }
        if let Some(cid) = e.cid {
            env.cid = cid;
        }
        env.caus = e.caus;
        // An invalid traceparent is ignored, as W3C trace context asks of receivers.
        if let Some(tp) = e.tp.filter(|tp| super::valid_traceparent(tp)) {
            env.tp = Some(tp);
        }
    }
    Ok(env)
}

/// `Idempotency-Key`: 1–255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(k) if visible_ascii(k, 255) => Ok(Some(k.to_string())),
            _ => Err(ApiError::bad_request(
                "invalid_header",
                "Idempotency-Key must be 1-255 visible ASCII characters",
            )
            .with("header", "Idempotency-Key")),
        },
    }
}

fn digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex(&h.finalize())
}

/// 409: the key belongs to another request (the first one's answer stands).
fn key_reused() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_key_reused",
        "this Idempotency-Key was used for a different request within edge.idempotency_ttl; \
         use a new key for a new request (nothing was stored)",
    )
}

/// What a publish stored (or, replayed, what the first request stored).
struct Outcome {
    events: Vec<Stored>,
    /// Ids the route generated (`user_id`, `trade_id`), as first answered.
    extra: Map<String, Value>,
    replayed: bool,
}

/// Publishes `events` (stream, envelope): in one pipelined round, or with an idempotency
/// key as one script per stream after claiming the key (so a reused key refuses before
/// anything is stored).
#[allow(clippy::too_many_arguments)]
async fn store(
    edge: &Edge,
    ctx: &RequestCtx,
    caller: &Caller,
    route: &str,
    headers: &HeaderMap,
    body: &[u8],
    mut events: Vec<(String, Envelope)>,
    extra: Map<String, Value>,
) -> Result<Outcome, ApiError> {
    // One PRODUCER span per event (none while tracing is off): the event's `tp` becomes
    // the span's context, so its consumers' spans are children of this publish.
    let traces: Vec<Traced> = if !crate::telemetry::enabled() {
        Vec::new() // no allocation, no span
    } else {
        events
            .iter_mut()
            .map(|(s, e)| {
                // The request's own `traceparent` is already the SERVER span's parent; only an
                // event's own `tp` (a batch item's) is a parent of its own.
                let own =
                    e.tp.as_deref()
                        .filter(|tp| *tp != ctx.traceparent.as_deref().unwrap_or(""));
                let t = spans::publish(s, &e.id, &e.cid, own);
                if t.tp.is_some() {
                    e.tp.clone_from(&t.tp);
                }
                t
            })
            .collect()
    };
    let r = store_traced(edge, ctx, caller, route, headers, body, events, extra).await;
    for (i, t) in traces.iter().enumerate() {
        match &r {
            Ok(o) => {
                let entry = o.events.get(i).map_or("", |s| s.entry_id.as_str());
                t.span.record("astra.entry_id", entry);
                t.outcome(
                    if o.replayed {
                        "idempotent_replay"
                    } else {
                        "ok"
                    },
                    None,
                );
            }
            Err(e) => t.outcome("failed", Some(&format!("{}: {}", e.code, e.detail))),
        }
    }
    r
}

#[allow(clippy::too_many_arguments)]
async fn store_traced(
    edge: &Edge,
    ctx: &RequestCtx,
    caller: &Caller,
    route: &str,
    headers: &HeaderMap,
    body: &[u8],
    events: Vec<(String, Envelope)>,
    extra: Map<String, Value>,
) -> Result<Outcome, ApiError> {
    let redis = edge.redis()?;
    let Some(key) = idempotency_key(headers)? else {
        // One event: a plain XADD (fred auto-pipelines concurrent requests); several: one
        // pipelined round.
        let entries = if let [(s, e)] = events.as_slice() {
            crate::bus::publish::publish(redis, s, e)
                .await
                .map(|id| vec![id])
        } else {
            crate::bus::publish::publish_many(redis, &events).await
        }
        .map_err(|e| ApiError::redis(&e))?;
        for (s, _) in &events {
            EventsPublished {
                stream: s,
                count: 1,
            }
            .emit(&edge.metrics);
        }
        return Ok(Outcome {
            events: events
                .iter()
                .zip(entries)
                .map(|((_, e), entry_id)| Stored {
                    event_id: e.id.clone(),
                    cid: e.cid.clone(),
                    entry_id,
                })
                .collect(),
            extra,
            replayed: false,
        });
    };
    // Scoped to the verified caller and the route: two callers never share a record.
    let identity = caller.identity(ctx.peer);
    let scope = digest(&[identity.as_bytes(), route.as_bytes(), key.as_bytes()]);
    let fingerprint = digest(&[route.as_bytes(), body]);
    let mut by_stream: Vec<(String, Vec<usize>)> = vec![];
    for (i, (s, _)) in events.iter().enumerate() {
        match by_stream.iter_mut().find(|(x, _)| x == s) {
            Some((_, idx)) => idx.push(i),
            None => by_stream.push((s.clone(), vec![i])),
        }
    }
    // The key is claimed for this request's fingerprint first (one SET NX): a request
    // with another body is refused before any stream is written, whatever streams each
    // of the two requests spans.
    let ttl = edge.config.edge.idempotency_ttl;
    let claimed = idempotent::claim(redis, &scope, &fingerprint, ttl)
        .await
        .map_err(|e| ApiError::redis(&e))?;
    if !claimed {
        return Err(key_reused());
    }
    let extra_text = Value::Object(extra).to_string();
    let mut out = vec![Stored::default(); events.len()];
    let mut all_replayed = true;
    let mut first_extra = None;
    for (stream, idx) in by_stream {
        let envs: Vec<Envelope> = idx.iter().map(|i| events[*i].1.clone()).collect();
        let outcome = idempotent::publish_once(
            redis,
            &stream,
            &scope,
            &fingerprint,
            &extra_text,
            ttl,
            &envs,
        )
        .await
        .map_err(|e| ApiError::redis(&e))?;
        let (record, replayed) = match outcome {
            IdemOutcome::Published(r) => {
                EventsPublished {
                    stream: &stream,
                    count: envs.len(),
                }
                .emit(&edge.metrics);
                (r, false)
            }
            IdemOutcome::Replayed(r) => (r, true),
        };
        if record.fingerprint != fingerprint || record.events.len() != idx.len() {
            return Err(key_reused());
        }
        all_replayed &= replayed;
        first_extra.get_or_insert(record.extra);
        for (i, ids) in idx.into_iter().zip(record.events) {
            out[i] = ids;
        }
    }
    if all_replayed {
        IdempotentReplay.emit(&edge.metrics);
    }
    let extra = match first_extra.and_then(|t| serde_json::from_str::<Value>(&t).ok()) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    Ok(Outcome {
        events: out,
        extra,
        replayed: all_replayed,
    })
}

fn accepted(body: Value, replayed: bool) -> Response {
    let mut r = json_response(StatusCode::ACCEPTED, body);
    if replayed {
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r
}

/// Shared tail of the single-event routes; `extra` are the ids the route generated.
#[allow(clippy::too_many_arguments)]
async fn publish_single(
    edge: &Edge,
    ctx: &RequestCtx,
    caller: &Caller,
    route: &str,
    headers: &HeaderMap,
    s: &StreamConfig,
    raw: &[u8],
    env: Envelope,
    extra: Map<String, Value>,
    status: bool,
) -> Result<Response, ApiError> {
    let admitted = edge.limit(ctx, caller, &[s.domain.as_str()], 1).await?;
    let out = store(
        edge,
        ctx,
        caller,
        route,
        headers,
        raw,
        vec![(s.name.clone(), env)],
        extra,
    )
    .await?;
    let stored = out.events.into_iter().next().unwrap_or_default();
    let mut body = json!({
        "event_id": stored.event_id,
        "entry_id": stored.entry_id,
        "stream": s.name,
        "cid": stored.cid,
    });
    for (k, v) in out.extra {
        body[k] = v;
    }
    if status {
        body["status"] = Value::from("accepted");
    }
    Ok(admitted.apply(accepted(body, out.replayed)))
}

/// `POST /v1/events/{stream}`: one event (its payload, or a full envelope).
pub async fn publish_one(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = edge.authenticate(&ctx, &headers, Class::Publish).await?;
    let Path(name) =
        path.map_err(|e| ApiError::bad_request("invalid_path", format!("bad stream name: {e}")))?;
    let s = stream_for(&edge, &name)?;
    caller.require_publish(&s.name)?;
    let (raw, kind) = read_body(&edge, &headers, body, true).await?;
    let env = build_event(&edge, s, &raw.bytes, kind, &ctx, &caller, |_| {})?;
    publish_single(
        &edge,
        &ctx,
        &caller,
        "/v1/events/{stream}",
        &headers,
        s,
        &raw.bytes,
        env,
        Map::new(),
        false,
    )
    .await
}

/// `POST /v1/events`: `{"events": [{"stream", "data"|"envelope"}, ...]}`, validated all
/// or nothing (422 names the index, the field and the reason); counts one per event
/// against the rate limits.
pub async fn publish_batch(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = edge.authenticate(&ctx, &headers, Class::Publish).await?;
    let (raw, _) = read_body(&edge, &headers, body, false).await?;
    let max = edge.config.edge.max_batch;
    let mut de = serde_json::Deserializer::from_slice(&raw.bytes);
    let items = serde::de::DeserializeSeed::deserialize(BatchSeed { max }, &mut de).map_err(|e| {
        if e.to_string().contains("edge.max_batch") {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "batch_too_large",
                format!("more than edge.max_batch = {max} events; split the batch"),
            )
        } else {
            ApiError::invalid(format!(
                "the body must be {{\"events\": [{{\"stream\": ..., \"data\": {{...}}}}, ...]}}: {e}"
            ))
        }
    })?;
    if items.is_empty() {
        return Err(ApiError::invalid("the batch has no events"));
    }
    let mut events = Vec::with_capacity(items.len());
    let mut domains: Vec<&str> = vec![];
    for (i, item) in items.into_iter().enumerate() {
        let at = |e: ApiError| e.with("index", i);
        let item: ItemIn = serde_json::from_str(item.get())
            .map_err(|e| at(ApiError::invalid(format!("event {i}: {e}"))))?;
        let s = stream_for(&edge, &item.stream).map_err(|e| {
            // In a batch an unknown stream is a problem of the body, not of the URL.
            if e.status == StatusCode::NOT_FOUND {
                at(ApiError::invalid(e.detail).with("stream", item.stream.as_str()))
            } else {
                at(e)
            }
        })?;
        caller.require_publish(&s.name).map_err(at)?;
        let (body, kind) = match (item.data, item.envelope) {
            (Some(d), None) => (d, BodyKind::Payload),
            (None, Some(e)) => (e, BodyKind::Envelope),
            _ => {
                return Err(at(ApiError::invalid(format!(
                    "event {i}: give exactly one of \"data\" (the payload) or \"envelope\""
                ))));
            }
        };
        let env = build_event(&edge, s, body.get().as_bytes(), kind, &ctx, &caller, |_| {})
            .map_err(at)?;
        if !domains.contains(&s.domain.as_str()) {
            domains.push(s.domain.as_str());
        }
        events.push((s.name.clone(), env));
    }
    let admitted = edge
        .limit(&ctx, &caller, &domains, events.len() as u32)
        .await?;
    let streams: Vec<String> = events.iter().map(|(s, _)| s.clone()).collect();
    let out = store(
        &edge,
        &ctx,
        &caller,
        "/v1/events",
        &headers,
        &raw.bytes,
        events,
        Map::new(),
    )
    .await?;
    let items: Vec<Value> = out
        .events
        .into_iter()
        .zip(streams)
        .map(|(e, stream)| {
            json!({"event_id": e.event_id, "entry_id": e.entry_id, "stream": stream, "cid": e.cid})
        })
        .collect();
    Ok(admitted.apply(accepted(json!({ "events": items }), out.replayed)))
}

/// Fills `field` with `value` when the client left it out; returns what was filled.
fn fill(m: &mut Map<String, Value>, field: &str, value: Option<String>) -> Option<String> {
    if m.contains_key(field) {
        return None;
    }
    let v = value?;
    m.insert(field.to_string(), Value::String(v.clone()));
    Some(v)
}

async fn seed_route(
    edge: &Edge,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    body: Body,
    route: &str,
    stream: &str,
    id_field: &str,
) -> Result<Response, ApiError> {
    let caller = edge.authenticate(ctx, headers, Class::Publish).await?;
    let s = edge.config.stream(stream).ok_or_else(|| {
        ApiError::not_found(
            "unknown_stream",
            format!("{stream} is not declared in this daemon's config"),
        )
    })?;
    caller.require_publish(&s.name)?;
    let (raw, _) = read_body(edge, headers, body, false).await?;
    // `user_id` defaults to the verified user only (a key's fixed or vouched-for user).
    let user = caller.user.clone().filter(|_| caller.verified_user);
    let mut extra = Map::new();
    let env = build_event(edge, s, &raw.bytes, BodyKind::Payload, ctx, &caller, |m| {
        if id_field != "user_id" {
            fill(m, "user_id", user);
        }
        let generated = fill(m, id_field, Some(uuid::Uuid::now_v7().to_string()));
        if let Some(id) = generated {
            extra.insert(id_field.to_string(), Value::String(id));
        }
    })?;
    // Echo the id the event carries (given or generated).
    let payload: Map<String, Value> = rmp_serde::from_slice(&env.data).unwrap_or_default();
    if let Some(v) = payload.get(id_field) {
        extra.insert(id_field.to_string(), v.clone());
    }
    publish_single(
        edge, ctx, &caller, route, headers, s, &raw.bytes, env, extra, true,
    )
    .await
}

/// `POST /api/v1/trading/execute` (seed route): publishes `trading.trade_executed`.
/// `trade_id` is generated when absent; `user_id` defaults to the caller's verified user.
pub async fn trading_execute(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    seed_route(
        &edge,
        &ctx,
        &headers,
        body,
        "/api/v1/trading/execute",
        streams::TRADE_EXECUTED,
        "trade_id",
    )
    .await
}

/// `POST /api/v1/users/register` (seed route): publishes `user.registered`; `user_id` is
/// generated when absent and returned (a replay returns the one first stored).
pub async fn users_register(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    seed_route(
        &edge,
        &ctx,
        &headers,
        body,
        "/api/v1/users/register",
        streams::REGISTERED,
        "user_id",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_in_messages() {
        assert_eq!(
            field_of("missing field `user_id`").as_deref(),
            Some("user_id")
        );
        assert_eq!(
            field_of("unknown field `foo`, expected one of `a`").as_deref(),
            Some("foo")
        );
        assert_eq!(
            field_of("quantity: must be > 0, got 0").as_deref(),
            Some("quantity")
        );
        assert_eq!(field_of("payload must be a JSON object"), None);
    }

    #[test]
    fn fill_keeps_given_ids_and_generates_missing_ones() {
        let mut m = Map::new();
        m.insert("trade_id".into(), json!("t1"));
        assert_eq!(fill(&mut m, "trade_id", Some("x".into())), None);
        assert_eq!(m["trade_id"], "t1");
        let mut m = Map::new();
        assert_eq!(
            fill(&mut m, "trade_id", Some("x".into())).as_deref(),
            Some("x")
        );
        assert_eq!(m["trade_id"], "x");
    }

    #[test]
    fn client_ids_are_per_producer() {
        assert_eq!(namespaced_id("a", "1"), namespaced_id("a", "1"));
        assert_ne!(namespaced_id("a", "1"), namespaced_id("b", "1"));
        assert_ne!(namespaced_id("a", "1"), namespaced_id("a", "2"));
    }

    #[test]
    fn digests_separate_their_parts() {
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]));
    }
}
