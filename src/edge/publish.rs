//! Publishing over HTTP: one event, a batch, and the seed-compatible routes.
//!
//! Order of checks, so the cheapest refusal comes first and only valid requests reach
//! Redis: authenticate (401) → route and stream (404/403) → content type (415) → size
//! (413) → JSON (400) → schema (422) → rate limits (429, in Redis) → publish (202, or 503
//! when Redis cannot store it). With `Idempotency-Key`, publishing and remembering the
//! answer are one script per stream, so a retry returns the first answer and stores
//! nothing new.

use std::sync::Arc;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::auth::Caller;
use super::error::{ApiError, json as json_response};
use super::{Class, Edge, RequestCtx};
use crate::bus::idempotent::{self, Outcome, Stored};
use crate::config::{StreamConfig, hex, visible_ascii};
use crate::envelope::{ContentType, Envelope};
use crate::events::streams;

/// Media type of a full envelope body.
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.astra.envelope+json";

/// What the body of a single publish is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    /// The event's payload.
    Payload,
    /// A full envelope (`data` holds the payload).
    Envelope,
}

/// A full envelope as a client sends it; everything but `data` is optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeIn {
    /// Event id chosen by the client (consumers skip ids they have applied, so a client
    /// that retries with the same id gets exactly-once effects).
    id: Option<String>,
    /// `<domain>.<event>`; must match the stream.
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// Schema version; must match the stream.
    v: Option<u32>,
    /// Correlation id (else `X-Correlation-ID`, else generated).
    cid: Option<String>,
    /// Causation id.
    caus: Option<String>,
    /// Occurred-at, Unix ms (else now).
    ts: Option<i64>,
    /// Producer (else the key's name, or `edge`).
    src: Option<String>,
    /// W3C traceparent (else the `traceparent` header).
    tp: Option<String>,
    /// The payload.
    data: Value,
}

/// One item of `POST /v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemIn {
    /// Target stream.
    stream: String,
    /// The payload (or give `envelope`).
    data: Option<Value>,
    /// A full envelope (or give `data`).
    envelope: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchIn {
    events: Vec<Value>,
}

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

fn invalid(stream: &str, msg: String) -> ApiError {
    let mut e =
        ApiError::invalid(format!("payload does not match {stream}: {msg}")).with("stream", stream);
    if let Some(f) = field_of(&msg) {
        e = e.with("field", f);
    }
    e
}

/// Reads and parses the body: 415 for another content type, 413 beyond the limit, 400
/// for malformed JSON.
async fn read_json(
    edge: &Edge,
    headers: &HeaderMap,
    body: Body,
    allow_envelope: bool,
) -> Result<(Value, BodyKind, Bytes), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let kind = match ct.as_deref() {
        Some("application/json") => BodyKind::Payload,
        Some(ENVELOPE_MEDIA_TYPE) if allow_envelope => BodyKind::Envelope,
        other => {
            let accepted = if allow_envelope {
                format!("application/json (the payload) or {ENVELOPE_MEDIA_TYPE} (a full envelope)")
            } else {
                "application/json".to_string()
            };
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "Content-Type {} is not accepted here; send {accepted}",
                    other.map(|s| format!("{s:?}")).unwrap_or("(none)".into())
                ),
            ));
        }
    };
    let limit = edge.config.edge.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body exceeds edge.max_body_bytes = {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e)
            .map(|s| s.to_string().contains("length limit"))
            .unwrap_or(false)
            || e.to_string().contains("length limit")
        {
            too_large()
        } else {
            ApiError::bad_request("unreadable_body", format!("could not read the body: {e}"))
        }
    })?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    Ok((v, kind, bytes))
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

/// Builds the envelope of one event after checking it against the stream's schema.
fn build_event(
    s: &StreamConfig,
    body: Value,
    kind: BodyKind,
    ctx: &RequestCtx,
    caller: &Caller,
) -> Result<Envelope, ApiError> {
    let src = match &caller.key {
        Some(k) => k.name.clone(),
        None => "edge".to_string(),
    };
    let (payload, env_in) = match kind {
        BodyKind::Payload => (body, None),
        BodyKind::Envelope => {
            let e: EnvelopeIn = serde_json::from_value(body).map_err(|e| {
                let msg = e.to_string();
                let mut err = ApiError::invalid(format!("not a valid envelope: {msg}"))
                    .with("stream", s.name.as_str());
                if let Some(f) = field_of(&msg) {
                    err = err.with("field", f);
                }
                err
            })?;
            (e.data.clone(), Some(e))
        }
    };
    crate::events::validate_json(&s.name, &payload).map_err(|m| invalid(&s.name, m))?;
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
        for (field, value, max) in [
            ("id", &e.id, 64),
            ("cid", &e.cid, 128),
            ("caus", &e.caus, 64),
            ("src", &e.src, 128),
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
        if let Some(ts) = e.ts
            && !(0..=crate::envelope::now_ms() + 86_400_000).contains(&ts)
        {
            return Err(bad(
                "ts",
                format!("{ts} is not a Unix time in ms up to a day ahead"),
            ));
        }
        if let Some(tp) = &e.tp
            && !super::valid_traceparent(tp)
        {
            return Err(bad(
                "tp",
                "not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)".into(),
            ));
        }
        if let Some(id) = e.id {
            env.id = id;
        }
        if let Some(cid) = e.cid {
            env.cid = cid;
        }
        env.caus = e.caus;
        if let Some(ts) = e.ts {
            env.ts = ts;
        }
        if let Some(src) = e.src {
            env.src = src;
        }
        if e.tp.is_some() {
            env.tp = e.tp;
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

/// Publishes `events` (stream, envelope): in one pipelined round, or with an idempotency
/// key as one script per stream. Returns what was stored in order (on a replay: what the
/// first request stored), and whether the whole answer is a replay.
async fn store(
    edge: &Edge,
    caller: &Caller,
    route: &str,
    headers: &HeaderMap,
    body: &[u8],
    events: Vec<(String, Envelope)>,
) -> Result<(Vec<Stored>, bool), ApiError> {
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
            edge.metrics.published_to(s);
        }
        return Ok((
            events
                .iter()
                .zip(entries)
                .map(|((_, e), entry_id)| Stored {
                    event_id: e.id.clone(),
                    cid: e.cid.clone(),
                    entry_id,
                })
                .collect(),
            false,
        ));
    };
    // Scoped to the caller and route: two clients (or routes) never share a record.
    let scope = digest(&[caller.name().as_bytes(), route.as_bytes(), key.as_bytes()]);
    let fingerprint = digest(&[route.as_bytes(), body]);
    let mut by_stream: Vec<(String, Vec<usize>)> = vec![];
    for (i, (s, _)) in events.iter().enumerate() {
        match by_stream.iter_mut().find(|(x, _)| x == s) {
            Some((_, idx)) => idx.push(i),
            None => by_stream.push((s.clone(), vec![i])),
        }
    }
    let mut out = vec![Stored::default(); events.len()];
    let mut all_replayed = true;
    for (stream, idx) in by_stream {
        let envs: Vec<Envelope> = idx.iter().map(|i| events[*i].1.clone()).collect();
        let outcome = idempotent::publish_once(
            redis,
            &stream,
            &scope,
            &fingerprint,
            edge.config.edge.idempotency_ttl,
            &envs,
        )
        .await
        .map_err(|e| ApiError::redis(&e))?;
        let (record, replayed) = match outcome {
            Outcome::Published(r) => {
                for _ in &envs {
                    edge.metrics.published_to(&stream);
                }
                (r, false)
            }
            Outcome::Replayed(r) => (r, true),
        };
        if record.fingerprint != fingerprint || record.events.len() != idx.len() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request within edge.idempotency_ttl; \
                 use a new key for a new request",
            ));
        }
        all_replayed &= replayed;
        for (i, ids) in idx.into_iter().zip(record.events) {
            out[i] = ids;
        }
    }
    if all_replayed {
        edge.metrics.edge_idempotent_replays.inc();
    }
    Ok((out, all_replayed))
}

fn accepted(body: Value, replayed: bool) -> Response {
    let mut r = json_response(StatusCode::ACCEPTED, body);
    if replayed {
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r
}

/// Shared tail of the single-event routes.
#[allow(clippy::too_many_arguments)]
async fn publish_single(
    edge: &Edge,
    ctx: &RequestCtx,
    caller: &Caller,
    route: &str,
    headers: &HeaderMap,
    s: &StreamConfig,
    payload: Value,
    kind: BodyKind,
    raw: &[u8],
    extra: &[(&str, Value)],
) -> Result<Response, ApiError> {
    let env = build_event(s, payload, kind, ctx, caller)?;
    let admitted = edge.limit(ctx, caller, &[s.domain.as_str()]).await?;
    let (ids, replayed) = store(
        edge,
        caller,
        route,
        headers,
        raw,
        vec![(s.name.clone(), env)],
    )
    .await?;
    let stored = ids.into_iter().next().unwrap_or_default();
    let mut body = json!({
        "event_id": stored.event_id,
        "entry_id": stored.entry_id,
        "stream": s.name,
        "cid": stored.cid,
    });
    for (k, v) in extra {
        body[*k] = v.clone();
    }
    Ok(admitted.apply(accepted(body, replayed)))
}

/// `POST /v1/events/{stream}`: one event (its payload, or a full envelope).
pub async fn publish_one(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = edge.authenticate(&headers, Class::Publish)?;
    let Path(name) =
        path.map_err(|e| ApiError::bad_request("invalid_path", format!("bad stream name: {e}")))?;
    let s = stream_for(&edge, &name)?;
    caller.require_publish(&s.name)?;
    let (payload, kind, raw) = read_json(&edge, &headers, body, true).await?;
    publish_single(
        &edge,
        &ctx,
        &caller,
        "/v1/events/{stream}",
        &headers,
        s,
        payload,
        kind,
        &raw,
        &[],
    )
    .await
}

/// `POST /v1/events`: `{"events": [{"stream", "data"|"envelope"}, ...]}`, validated all
/// or nothing (422 names the index, the field and the reason).
pub async fn publish_batch(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = edge.authenticate(&headers, Class::Publish)?;
    let (v, _, raw) = read_json(&edge, &headers, body, false).await?;
    let batch: BatchIn = serde_json::from_value(v).map_err(|e| {
        ApiError::invalid(format!(
            "the body must be {{\"events\": [{{\"stream\": ..., \"data\": {{...}}}}, ...]}}: {e}"
        ))
    })?;
    let max = edge.config.edge.max_batch;
    if batch.events.is_empty() {
        return Err(ApiError::invalid("the batch has no events"));
    }
    if batch.events.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "{} events exceed edge.max_batch = {max}; split the batch",
                batch.events.len()
            ),
        ));
    }
    let mut events = Vec::with_capacity(batch.events.len());
    let mut domains: Vec<&str> = vec![];
    for (i, item) in batch.events.into_iter().enumerate() {
        let at = |e: ApiError| e.with("index", i);
        let item: ItemIn = serde_json::from_value(item)
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
        let env = build_event(s, body, kind, &ctx, &caller).map_err(at)?;
        if !domains.contains(&s.domain.as_str()) {
            domains.push(s.domain.as_str());
        }
        events.push((s.name.clone(), env));
    }
    let admitted = edge.limit(&ctx, &caller, &domains).await?;
    let streams: Vec<String> = events.iter().map(|(s, _)| s.clone()).collect();
    let (ids, replayed) = store(&edge, &caller, "/v1/events", &headers, &raw, events).await?;
    let items: Vec<Value> = ids
        .into_iter()
        .zip(streams)
        .map(|(e, stream)| {
            json!({"event_id": e.event_id, "entry_id": e.entry_id, "stream": stream, "cid": e.cid})
        })
        .collect();
    Ok(admitted.apply(accepted(json!({ "events": items }), replayed)))
}

/// Fills `field` with `value` when the client left it out.
fn fill(
    payload: &mut Value,
    field: &str,
    value: impl FnOnce() -> Option<String>,
) -> Option<String> {
    let obj = payload.as_object_mut()?;
    if let Some(Value::String(s)) = obj.get(field) {
        return Some(s.clone());
    }
    if obj.contains_key(field) {
        return None; // present but not a string: the schema check reports it
    }
    let v = value()?;
    obj.insert(field.to_string(), Value::String(v.clone()));
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
    let caller = edge.authenticate(headers, Class::Publish)?;
    let s = edge.config.stream(stream).ok_or_else(|| {
        ApiError::not_found(
            "unknown_stream",
            format!("{stream} is not declared in this daemon's config"),
        )
    })?;
    caller.require_publish(&s.name)?;
    let (mut payload, _, raw) = read_json(edge, headers, body, false).await?;
    if !payload.is_object() {
        return Err(invalid(stream, "payload must be a JSON object".into()));
    }
    let user = caller.user.clone();
    if id_field != "user_id" {
        fill(&mut payload, "user_id", || user);
    }
    let id = fill(&mut payload, id_field, || {
        Some(uuid::Uuid::now_v7().to_string())
    });
    let mut extra = vec![("status", Value::from("accepted"))];
    if let Some(id) = id {
        extra.push((
            if id_field == "trade_id" {
                "trade_id"
            } else {
                "user_id"
            },
            Value::from(id),
        ));
    }
    publish_single(
        edge,
        ctx,
        &caller,
        route,
        headers,
        s,
        payload,
        BodyKind::Payload,
        &raw,
        &extra,
    )
    .await
}

/// `POST /api/v1/trading/execute` (seed route): publishes `trading.trade_executed`.
/// `trade_id` is generated when absent; `user_id` defaults to the caller's user.
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
/// generated when absent and returned.
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
        let mut p = json!({"trade_id": "t1"});
        assert_eq!(
            fill(&mut p, "trade_id", || Some("x".into())).as_deref(),
            Some("t1")
        );
        let mut p = json!({});
        assert_eq!(
            fill(&mut p, "trade_id", || Some("x".into())).as_deref(),
            Some("x")
        );
        assert_eq!(p["trade_id"], "x");
        let mut p = json!({"trade_id": 5});
        assert_eq!(fill(&mut p, "trade_id", || Some("x".into())), None);
    }

    #[test]
    fn digests_separate_their_parts() {
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]));
    }
}
