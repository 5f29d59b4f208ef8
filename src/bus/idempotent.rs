//! Publishing with an idempotency key: a retry returns the first result and publishes
//! nothing new. The record lives next to the stream (its key carries the stream name as
//! hash tag) and one script checks it, appends and stores it, so "published" and
//! "remembered" cannot come apart, on one node or in a cluster.

use std::time::Duration;

use super::client::{BusError, Redis, Value, arg, as_array, as_bytes, as_int};
use super::script::Script;
use crate::envelope::Envelope;

pub(crate) static SCRIPT: Script =
    Script::new("idempotent_publish", include_str!("idempotent.lua"));

/// The record key of `scope` (a digest of key holder, route and idempotency key) for
/// `stream`.
pub fn record_key(stream: &str, scope: &str) -> String {
    format!("astra:edge:idem:{{{stream}}}:{scope}")
}

/// What the first request published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The first request's fingerprint.
    pub fingerprint: String,
    /// What the first request's route generated (JSON text; empty for old records).
    pub extra: String,
    /// What was stored, in order.
    pub events: Vec<Stored>,
}

/// One stored event of a record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stored {
    /// Event id.
    pub event_id: String,
    /// Its correlation id.
    pub cid: String,
    /// The stream entry id.
    pub entry_id: String,
}

/// Result of an idempotent publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Published now.
    Published(Record),
    /// Published earlier: nothing was written.
    Replayed(Record),
}

/// The claim key of `scope`.
pub fn claim_key(scope: &str) -> String {
    format!("astra:edge:idem:claim:{scope}")
}

/// Claims `scope` for `fingerprint` (SET NX GET): true when it is this request's (claimed
/// now, or earlier by the same request), false when another request holds it. Every
/// idempotent publish claims first, so a reused key is refused before any stream is
/// written (the per-stream records then make each stream's publish happen once).
pub async fn claim(
    redis: &Redis,
    scope: &str,
    fingerprint: &str,
    ttl: Duration,
) -> Result<bool, BusError> {
    let v = redis
        .cmd(
            "SET",
            vec![
                arg(claim_key(scope)),
                arg(fingerprint),
                arg("NX"),
                arg("GET"),
                arg("PX"),
                arg(ttl.as_millis().max(1) as i64),
            ],
        )
        .await?;
    Ok(match as_bytes(&v) {
        None => true,
        Some(old) => old == fingerprint.as_bytes(),
    })
}

/// Publishes `events` to `stream` unless `scope` was used within `ttl`; `extra` (one line
/// of JSON) is kept in the record for the replayed answer.
#[allow(clippy::too_many_arguments)]
pub async fn publish_once(
    redis: &Redis,
    stream: &str,
    scope: &str,
    fingerprint: &str,
    extra: &str,
    ttl: Duration,
    events: &[Envelope],
) -> Result<Outcome, BusError> {
    let keys = vec![arg(record_key(stream, scope)), arg(stream)];
    let mut args = vec![
        arg(ttl.as_millis().max(1) as i64),
        arg(fingerprint),
        arg(extra.replace('\n', " ")),
        arg(events.len() as i64),
    ];
    for e in events {
        let fields = e.to_fields();
        // Ids and cids are visible ASCII (no spaces), so a space separates them.
        args.push(arg(format!("{} {}", e.id, e.cid)));
        args.push(arg(fields.len() as i64));
        for (k, v) in fields {
            args.push(arg(k));
            args.push(Value::Bytes(v.into()));
        }
    }
    // With `redis.min_replicas_ack`, the script runs on a publisher connection and a WAIT
    // follows, as for plain publishes (WAIT blocks its connection).
    let ack = redis.replica_ack();
    let conn = match ack {
        Some(_) => redis.publisher().await?,
        None => redis.clone(),
    };
    let v = SCRIPT.call(&conn, keys, args).await?;
    if let Some((n, timeout)) = ack {
        super::publish::wait_for_replicas(&conn, n, timeout).await?;
    }
    let bad = || BusError::protocol("idempotent publish script", "malformed reply");
    let a = as_array(v).ok_or_else(bad)?;
    let fresh = a.first().and_then(as_int).ok_or_else(bad)? == 1;
    let rec = a.get(1).and_then(as_bytes).ok_or_else(bad)?;
    let record = parse_record(&String::from_utf8_lossy(&rec)).ok_or_else(bad)?;
    Ok(if fresh {
        Outcome::Published(record)
    } else {
        Outcome::Replayed(record)
    })
}

fn parse_record(s: &str) -> Option<Record> {
    let mut lines = s.split('\n').peekable();
    let fingerprint = lines.next()?.to_string();
    // Records written before generated ids were kept have no `x` line.
    let extra = match lines.peek() {
        Some(l) if l.starts_with('x') => lines.next()?[1..].to_string(),
        _ => String::new(),
    };
    let mut events = vec![];
    for l in lines {
        let mut parts = l.split(' ');
        let (event_id, cid, entry_id) = (parts.next()?, parts.next()?, parts.next()?);
        events.push(Stored {
            event_id: event_id.to_string(),
            cid: cid.to_string(),
            entry_id: entry_id.to_string(),
        });
    }
    Some(Record {
        fingerprint,
        extra,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse() {
        let r = parse_record("fp\nx{\"user_id\":\"u\"}\nid1 c1 1-0\nid2 c2 1-1").unwrap();
        assert_eq!(r.fingerprint, "fp");
        assert_eq!(r.extra, "{\"user_id\":\"u\"}");
        assert_eq!(parse_record("fp\nid1 c1 1-0").unwrap().extra, "");
        assert_eq!(r.events.len(), 2);
        assert_eq!(
            r.events[1],
            Stored {
                event_id: "id2".into(),
                cid: "c2".into(),
                entry_id: "1-1".into()
            }
        );
        assert_eq!(parse_record("fp").unwrap().events, vec![]);
        assert!(parse_record("fp\nbroken").is_none());
    }

    #[test]
    fn record_key_shares_the_streams_slot() {
        // The hash tag is the stream name, the whole key of the stream itself.
        let k = record_key("astra.user.registered.v1", "abc");
        assert!(k.contains("{astra.user.registered.v1}"));
    }
}
