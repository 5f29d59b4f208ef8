//! Reading a publish body: the content type, the size limit, the share of
//! `edge.body_memory`, a well-formedness check that builds nothing, and the shapes the
//! body is parsed into (an envelope, a batch bounded while it is parsed). Everything here
//! is linear in the body.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::Edge;
use super::error::ApiError;
use crate::events::schema;

/// Media type of a full envelope body.
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.astra.envelope+json";

/// What the body of a single publish is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyKind {
    /// The event's payload.
    Payload,
    /// A full envelope (`data` holds the payload).
    Envelope,
}

/// An optional field that may be left out but not be `null` (the schema says its type).
fn non_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A full envelope as a client sends it; everything but `data` is optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EnvelopeIn<'a> {
    /// Event id chosen by the client, namespaced by its producer: the stored id is a UUID
    /// derived from (producer, id), so a retry with the same id gets the same event id
    /// (consumers apply it once) and no producer can take another's ids.
    #[serde(default, deserialize_with = "non_null")]
    pub(super) id: Option<String>,
    /// `<domain>.<event>`; must match the stream.
    #[serde(rename = "type", default, deserialize_with = "non_null")]
    pub(super) event_type: Option<String>,
    /// Schema version; must match the stream.
    #[serde(default, deserialize_with = "non_null")]
    pub(super) v: Option<u32>,
    /// Correlation id (else `X-Correlation-ID`, else generated).
    #[serde(default, deserialize_with = "non_null")]
    pub(super) cid: Option<String>,
    /// Causation id.
    #[serde(default, deserialize_with = "non_null")]
    pub(super) caus: Option<String>,
    /// Occurred-at, Unix ms, within `edge.envelope_skew` of the edge's clock (else now).
    #[serde(default, deserialize_with = "non_null")]
    pub(super) ts: Option<i64>,
    /// Producer: always the key's name; accepted only when it says so.
    #[serde(default, deserialize_with = "non_null")]
    pub(super) src: Option<String>,
    /// W3C traceparent (else the `traceparent` header); an invalid one is ignored.
    #[serde(default, deserialize_with = "non_null")]
    pub(super) tp: Option<String>,
    /// The payload.
    #[serde(borrow)]
    pub(super) data: &'a RawValue,
}

/// One item of `POST /v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ItemIn<'a> {
    /// Target stream.
    pub(super) stream: String,
    /// The payload (or give `envelope`).
    #[serde(borrow, default, deserialize_with = "non_null")]
    pub(super) data: Option<&'a RawValue>,
    /// A full envelope (or give `data`).
    #[serde(borrow, default, deserialize_with = "non_null")]
    pub(super) envelope: Option<&'a RawValue>,
}

/// `{"events": [...]}`, refusing more than `max` items while parsing (a body of a million
/// tiny items never becomes a million-element vector).
pub(super) struct BatchSeed {
    pub(super) max: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for BatchSeed {
    type Value = Vec<&'de RawValue>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

struct ItemsSeed {
    max: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for ItemsSeed {
    type Value = Vec<&'de RawValue>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ItemsSeed {
    type Value = Vec<&'de RawValue>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of events")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = vec![];
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if out.len() == self.max {
                return Err(serde::de::Error::custom(format!(
                    "more than edge.max_batch = {} events",
                    self.max
                )));
            }
            out.push(item);
        }
        Ok(out)
    }
}

impl<'de> serde::de::Visitor<'de> for BatchSeed {
    type Value = Vec<&'de RawValue>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("{\"events\": [...]}")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut events = None;
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if k != "events" || events.is_some() {
                return Err(serde::de::Error::custom(format!(
                    "unexpected field {:?}: the body has only \"events\"",
                    k.chars().take(64).collect::<String>()
                )));
            }
            events = Some(map.next_value_seed(ItemsSeed { max: self.max })?);
        }
        events.ok_or_else(|| serde::de::Error::missing_field("events"))
    }
}

/// A request body held in memory, with its share of `edge.body_memory`.
pub(crate) struct BodyBytes {
    pub(crate) bytes: Vec<u8>,
    _budget: tokio::sync::OwnedSemaphorePermit,
}

/// Reads the body: 415 for another content type, 413 beyond the limit, 400 for malformed
/// JSON (checked without building it). Waits for room in `edge.body_memory` first (the
/// whole need at once, so two half-read bodies can never wait on each other).
pub(super) async fn read_body(
    edge: &Edge,
    headers: &HeaderMap,
    body: Body,
    allow_envelope: bool,
) -> Result<(BodyBytes, BodyKind), ApiError> {
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
    let bytes = read_limited(edge, headers, body).await?;
    schema::well_formed(&bytes.bytes).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    Ok((bytes, kind))
}

/// Reads a body of any kind: 413 beyond `edge.max_body_bytes`, after waiting for room in
/// `edge.body_memory` (the whole need at once, so two half-read bodies can never wait on
/// each other).
pub(super) async fn read_limited(
    edge: &Edge,
    headers: &HeaderMap,
    body: Body,
) -> Result<BodyBytes, ApiError> {
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
    let need = declared
        .map_or(limit, |n| n as usize)
        .clamp(1, edge.config.edge.body_memory);
    let budget = edge
        .body_budget
        .clone()
        .acquire_many_owned(need as u32)
        .await
        .map_err(|_| {
            ApiError::unavailable(
                "shutting_down",
                "the edge is stopping",
                Duration::from_secs(1),
            )
        })?;
    let mut bytes = Vec::with_capacity(declared.map_or(8192, |n| n as usize));
    let mut body = body;
    use http_body_util::BodyExt as _;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::bad_request("unreadable_body", format!("could not read the body: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(BodyBytes {
        bytes,
        _budget: budget,
    })
}

/// A small JSON request body (console and registry requests, not event payloads): `415`
/// unless `application/json`, `413` past `limit` bytes (`what` names the requests in the
/// message), `400` naming the expected `shape` when it does not parse.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    what: &str,
    shape: &str,
) -> Result<T, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if ct.as_deref() != Some("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("{what} are at most {limit} bytes"),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request("invalid_body", format!("the body must be {shape}: {e}"))
    })
}
