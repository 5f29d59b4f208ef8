//! The event envelope: a flat Redis stream entry any language can write and read.
//!
//! | field | meaning |
//! |---|---|
//! | `id` | globally unique event id (UUIDv7 or ULID) |
//! | `type` | `<domain>.<event>` |
//! | `v` | schema version (the stream's `.v<n>`) |
//! | `cid` | correlation id, copied to every derived event |
//! | `caus` | id of the event this one was derived from (absent on roots) |
//! | `ts` | occurred-at, Unix milliseconds |
//! | `src` | producer name |
//! | `tp` | W3C traceparent (optional) |
//! | `ct` | `application/msgpack` (default) or `application/json` |
//! | `data` | the payload |
//!
//! Derived events get ids computed from (group, source event id, index) and keep their
//! cause's `ts`, so re-running a handler after a crash yields the same event and consumers
//! can recognise the repeat.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// Content type of `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// MessagePack with named fields (rmp-serde `to_vec_named`). The default.
    MsgPack,
    /// UTF-8 JSON.
    Json,
}

impl ContentType {
    /// The `ct` field value.
    pub fn as_str(&self) -> &'static str {
        match self {
            ContentType::MsgPack => "application/msgpack",
            ContentType::Json => "application/json",
        }
    }

    fn parse(s: &str) -> Option<ContentType> {
        match s {
            "application/msgpack" | "application/x-msgpack" => Some(ContentType::MsgPack),
            "application/json" => Some(ContentType::Json),
            _ => None,
        }
    }
}

/// Why an entry could not be decoded; names the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// A required field is absent.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// A field is present but unusable.
    #[error("field `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// `data` does not decode into the event's payload type.
    #[error("field `data` ({ct}): {reason}")]
    Payload { ct: &'static str, reason: String },
}

/// A decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Event id.
    pub id: String,
    /// `<domain>.<event>`.
    pub event_type: String,
    /// Schema version.
    pub v: u32,
    /// Correlation id.
    pub cid: String,
    /// Causation id.
    pub caus: Option<String>,
    /// Occurred-at, Unix ms.
    pub ts: i64,
    /// Producer.
    pub src: String,
    /// traceparent.
    pub tp: Option<String>,
    /// Encoding of `data`.
    pub ct: ContentType,
    /// Encoded payload.
    pub data: Vec<u8>,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new random, time-ordered event id (UUIDv7).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The deterministic id of the `index`-th event that `group` derives from `source_id`.
/// It has the UUIDv7 layout (the source's timestamp, so ids still sort by time) with the
/// remaining bits taken from SHA-256(group, source id, index).
pub fn derived_id(group: &str, source_id: &str, source_ts: i64, index: u32) -> String {
    let mut h = Sha256::new();
    h.update(group.as_bytes());
    h.update([0]);
    h.update(source_id.as_bytes());
    h.update([0]);
    h.update(index.to_be_bytes());
    let digest = h.finalize();
    let mut rand = [0u8; 10];
    rand.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(source_ts.max(0) as u64, &rand)
        .into_uuid()
        .to_string()
}

/// Encodes a payload as MessagePack with named fields.
pub fn encode_msgpack<T: Serialize + ?Sized>(payload: &T) -> Vec<u8> {
    // Serializing plain structs into a Vec cannot fail.
    rmp_serde::to_vec_named(payload).expect("msgpack encoding of a payload struct")
}

impl Envelope {
    /// A new root event (no causation): fresh id, correlation id = `cid` or the event id.
    pub fn root(
        event_type: &str,
        v: u32,
        src: &str,
        cid: Option<String>,
        ct: ContentType,
        data: Vec<u8>,
    ) -> Envelope {
        let id = new_id();
        Envelope {
            cid: cid.unwrap_or_else(|| id.clone()),
            id,
            event_type: event_type.to_string(),
            v,
            caus: None,
            ts: now_ms(),
            src: src.to_string(),
            tp: None,
            ct,
            data,
        }
    }

    /// The `index`-th event derived by `group` from `self`: same `cid`, `caus` = our id,
    /// and the same `ts`: a derived event happened when its cause did, which keeps day
    /// and window attribution on the original occurrence and makes a re-derived event
    /// identical to the first (only `src` says who derived it).
    pub fn derive(
        &self,
        group: &str,
        index: u32,
        event_type: &str,
        v: u32,
        data: Vec<u8>,
    ) -> Envelope {
        Envelope {
            id: derived_id(group, &self.id, self.ts, index),
            event_type: event_type.to_string(),
            v,
            cid: self.cid.clone(),
            caus: Some(self.id.clone()),
            ts: self.ts,
            src: group.to_string(),
            tp: self.tp.clone(),
            ct: ContentType::MsgPack,
            data,
        }
    }

    /// The entry's field/value pairs, in a stable order.
    pub fn to_fields(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut f = Vec::with_capacity(10);
        f.push(("id", self.id.clone().into_bytes()));
        f.push(("type", self.event_type.clone().into_bytes()));
        f.push(("v", self.v.to_string().into_bytes()));
        f.push(("cid", self.cid.clone().into_bytes()));
        if let Some(c) = &self.caus {
            f.push(("caus", c.clone().into_bytes()));
        }
        f.push(("ts", self.ts.to_string().into_bytes()));
        f.push(("src", self.src.clone().into_bytes()));
        if let Some(tp) = &self.tp {
            f.push(("tp", tp.clone().into_bytes()));
        }
        f.push(("ct", self.ct.as_str().as_bytes().to_vec()));
        f.push(("data", self.data.clone()));
        f
    }

    /// Decodes an entry's fields. Unknown fields are ignored (forward compatibility);
    /// missing or malformed required ones are an error naming the field.
    pub fn from_fields<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        fields: &[(K, V)],
    ) -> Result<Envelope, EnvelopeError> {
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k.as_ref() == name.as_bytes())
                .map(|(_, v)| v.as_ref())
        };
        let text = |name: &'static str, required: bool| -> Result<Option<String>, EnvelopeError> {
            match get(name) {
                None if required => Err(EnvelopeError::Missing(name)),
                None => Ok(None),
                Some(b) => {
                    let s = std::str::from_utf8(b).map_err(|_| EnvelopeError::Invalid {
                        field: name,
                        reason: "not valid UTF-8".into(),
                    })?;
                    if s.is_empty() {
                        if required {
                            return Err(EnvelopeError::Invalid {
                                field: name,
                                reason: "empty".into(),
                            });
                        }
                        return Ok(None);
                    }
                    Ok(Some(s.to_string()))
                }
            }
        };
        let id = text("id", true)?.unwrap_or_default();
        if id.len() > 128 {
            return Err(EnvelopeError::Invalid {
                field: "id",
                reason: format!("{} bytes long, at most 128", id.len()),
            });
        }
        let event_type = text("type", true)?.unwrap_or_default();
        if !event_type.contains('.') {
            return Err(EnvelopeError::Invalid {
                field: "type",
                reason: format!("{event_type:?} is not <domain>.<event>"),
            });
        }
        let v_text = text("v", true)?.unwrap_or_default();
        let v: u32 =
            v_text
                .parse()
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| EnvelopeError::Invalid {
                    field: "v",
                    reason: format!("{v_text:?} is not a version number >= 1"),
                })?;
        let cid = text("cid", false)?.unwrap_or_else(|| id.clone());
        let ts_text = text("ts", true)?.unwrap_or_default();
        let ts: i64 = ts_text.parse().map_err(|_| EnvelopeError::Invalid {
            field: "ts",
            reason: format!("{ts_text:?} is not Unix milliseconds"),
        })?;
        let ct = match text("ct", false)? {
            None => ContentType::MsgPack,
            Some(s) => ContentType::parse(&s).ok_or_else(|| EnvelopeError::Invalid {
                field: "ct",
                reason: format!("{s:?} is not application/msgpack or application/json"),
            })?,
        };
        let data = get("data").ok_or(EnvelopeError::Missing("data"))?.to_vec();
        Ok(Envelope {
            id,
            event_type,
            v,
            cid,
            caus: text("caus", false)?,
            ts,
            src: text("src", false)?.unwrap_or_else(|| "unknown".into()),
            tp: text("tp", false)?,
            ct,
            data,
        })
    }

    /// Decodes `data` into the event's payload type.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, EnvelopeError> {
        match self.ct {
            ContentType::MsgPack => {
                rmp_serde::from_slice(&self.data).map_err(|e| EnvelopeError::Payload {
                    ct: "msgpack",
                    reason: e.to_string(),
                })
            }
            ContentType::Json => {
                serde_json::from_slice(&self.data).map_err(|e| EnvelopeError::Payload {
                    ct: "json",
                    reason: e.to_string(),
                })
            }
        }
    }

    /// `data` as a JSON value whatever its encoding (for `tail`, `trace`, the DLQ).
    pub fn data_as_json(&self) -> Result<serde_json::Value, EnvelopeError> {
        self.payload::<serde_json::Value>()
    }
}

/// Parses a stream name, `astra.<domain>.<event>.v<n>` (lower-case `[a-z0-9_]` segments,
/// `n >= 1`); returns (domain, event, n). An event's `type` is `<domain>.<event>` and its
/// `v` is `n`.
pub fn parse_stream_name(name: &str) -> Option<(String, String, u32)> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() != 4 || parts[0] != "astra" {
        return None;
    }
    let seg_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    if !seg_ok(parts[1]) || !seg_ok(parts[2]) {
        return None;
    }
    let v = parts[3].strip_prefix('v')?;
    if v.is_empty() || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u32 = v.parse().ok()?;
    Some((parts[1].to_string(), parts[2].to_string(), n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct P {
        user_id: String,
        n: i64,
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
    }

    #[test]
    fn derived_ids_are_deterministic_and_distinct() {
        let a = derived_id("g", "src", 1_700_000_000_000, 0);
        assert_eq!(a, derived_id("g", "src", 1_700_000_000_000, 0));
        assert_ne!(a, derived_id("g", "src", 1_700_000_000_000, 1));
        assert_ne!(a, derived_id("h", "src", 1_700_000_000_000, 0));
        let u = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(u.get_version_num(), 7);
    }

    #[test]
    fn missing_and_bad_fields_are_named() {
        let ok = Envelope::root("a.b", 1, "t", None, ContentType::Json, b"{}".to_vec());
        let fields = ok.to_fields();
        for name in ["id", "type", "v", "ts", "data"] {
            let f: Vec<_> = fields.iter().filter(|(k, _)| *k != name).cloned().collect();
            let err = Envelope::from_fields(&f).unwrap_err();
            assert_eq!(err, EnvelopeError::Missing(name), "{name}");
        }
        let mut f = fields.clone();
        f.iter_mut().find(|(k, _)| *k == "v").unwrap().1 = b"x".to_vec();
        assert!(matches!(
            Envelope::from_fields(&f),
            Err(EnvelopeError::Invalid { field: "v", .. })
        ));
        let mut f = fields.clone();
        f.iter_mut().find(|(k, _)| *k == "ct").unwrap().1 = b"text/xml".to_vec();
        assert!(matches!(
            Envelope::from_fields(&f),
            Err(EnvelopeError::Invalid { field: "ct", .. })
        ));
    }

    #[test]
    fn json_payloads_from_foreign_publishers() {
        let e = Envelope::root(
            "a.b",
            1,
            "t",
            None,
            ContentType::Json,
            br#"{"user_id":"u1","n":3,"blob":[1,2]}"#.to_vec(),
        );
        let back = Envelope::from_fields(&e.to_fields()).unwrap();
        let p: P = back.payload().unwrap();
        assert_eq!(p.n, 3);
        let err = Envelope::root(
            "a.b",
            1,
            "t",
            None,
            ContentType::Json,
            b"{\"n\":1}".to_vec(),
        )
        .payload::<P>()
        .unwrap_err();
        assert!(err.to_string().contains("user_id"), "{err}");
    }

    proptest! {
        #[test]
        fn roundtrip(user in "[a-z0-9]{0,12}", n in any::<i64>(), blob in proptest::collection::vec(any::<u8>(), 0..64),
                     cid in proptest::option::of("[a-f0-9-]{1,36}"), caus in proptest::option::of("[a-f0-9-]{1,36}")) {
            let p = P { user_id: user, n, blob };
            let mut e = Envelope::root("trading.trade_executed", 1, "prop", cid, ContentType::MsgPack, encode_msgpack(&p));
            e.caus = caus;
            let back = Envelope::from_fields(&e.to_fields()).unwrap();
            prop_assert_eq!(&back, &e);
            prop_assert_eq!(back.payload::<P>().unwrap(), p);
        }

        #[test]
        fn arbitrary_fields_never_panic(fields in proptest::collection::vec(
            (prop_oneof![Just(b"id".to_vec()), Just(b"type".to_vec()), Just(b"v".to_vec()), Just(b"ts".to_vec()),
                         Just(b"ct".to_vec()), Just(b"data".to_vec()), Just(b"cid".to_vec()),
                         proptest::collection::vec(any::<u8>(), 0..8)],
             proptest::collection::vec(any::<u8>(), 0..40)), 0..12)) {
            if let Ok(e) = Envelope::from_fields(&fields) {
                let _ = e.payload::<P>();
                let _ = e.data_as_json();
            }
        }
    }

    #[test]
    fn stream_names() {
        assert_eq!(
            parse_stream_name("astra.trading.trade_executed.v1"),
            Some(("trading".into(), "trade_executed".into(), 1))
        );
        assert!(parse_stream_name("astra.trading.trade_executed.v12").is_some());
        for bad in [
            "astra.Trading.trade.v1",
            "astra.trading.trade.v0",
            "astra.trading.trade.v01",
            "astra.trading.trade",
            "astra.trading.trade.1",
            "bus.trading.trade.v1",
            "astra..trade.v1",
            "astra.trading.trade-x.v1",
            "astra.a.b.c.v1",
        ] {
            assert_eq!(parse_stream_name(bad), None, "{bad}");
        }
    }
}
