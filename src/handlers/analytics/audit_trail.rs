//! `analytics.audit_trail`: every event appended to a tamper-evident SHA-256 hash chain.

use std::sync::Arc;

use super::*;
use crate::group::GroupConfig;
use crate::handler::{Event, Handler, HandlerError, Op, Reply, Step};
use crate::handlers::support::deny_unknown_options;

/// `analytics.audit_trail`: appends every event it reads to a tamper-evident SHA-256
/// hash chain.
///
/// One op per event, `CHAINAPPEND astra:analytics:{audit}:head astra:analytics:{audit}:log
/// <record>` ([`Op::chain_append`]), with `record` = [`canonical_bytes`] of the event. The
/// script computes `hash = SHA-256(prev_hash_hex ‖ record)` where `prev_hash_hex` is the
/// previous record's hash as 64 lowercase hex ASCII characters (empty for the first
/// record), stores `hash_hex` at the head and `RPUSH`es the MessagePack array
/// `[prev_hex, hash_hex, record]` to the log. Because the link is computed where the head
/// is read, two consumers appending at once can never fork the chain. Changing, removing
/// or reordering any record breaks [`verify_chain`] at that point; removing records at
/// the end is caught by comparing the last hash with the head
/// ([`verify_chain_with_head`]).
///
/// Every stream the group reads is recorded (the config decides which); nothing is
/// poison, since the record needs only the envelope, never the payload.
///
/// Keys: [`audit_head_key`], [`audit_log_key`].
/// Emits: nothing.
/// Options: none.
pub struct AuditTrail;

impl AuditTrail {
    /// Builds from the group config.
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(g, &[])?;
        Ok(Arc::new(AuditTrail))
    }
}

impl Handler for AuditTrail {
    fn step(&self, ev: &Event, _rounds: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        Ok(Step::Done {
            ops: vec![Op::chain_append(
                audit_head_key(),
                audit_log_key(),
                canonical_bytes(ev),
            )],
            emit: vec![],
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

fn json_str(out: &mut String, s: &str) {
    // serde_json's escaping of a &str cannot fail.
    out.push_str(&serde_json::to_string(s).expect("JSON string escaping"));
}

/// The audit record of an event: canonical JSON of its envelope, UTF-8, no whitespace,
/// keys in this fixed order:
///
/// ```text
/// {"stream":S,"id":S,"type":S,"v":N,"cid":S,"caus":S|null,"ts":N,"src":S,"ct":S,"data":H}
/// ```
///
/// - `stream`: the stream the event was read from; `id`, `type`, `cid`, `src`: envelope
///   fields; `caus`: the causation id, `null` on root events; `v`, `ts`: decimal integers
///   (`ts` in Unix ms, may be negative); `ct`: `application/msgpack` or
///   `application/json`; `data`: the payload bytes exactly as published, lowercase hex
///   (so the record does not depend on how the payload is encoded).
/// - Strings use JSON's minimal escaping (serde_json): `"` → `\"`, `\` → `\\`, `\b \f
///   \n \r \t` as such, other control characters as `\u00xx` (lowercase hex); everything
///   else, including non-ASCII and `/`, is written as is.
/// - The traceparent (`tp`) and the Redis entry id are not part of the record: they are
///   transport details, not facts about the business event.
pub fn canonical_bytes(ev: &Event) -> Vec<u8> {
    let e = &ev.env;
    let mut out = String::with_capacity(256 + 2 * e.data.len());
    out.push_str("{\"stream\":");
    json_str(&mut out, &ev.stream);
    out.push_str(",\"id\":");
    json_str(&mut out, &e.id);
    out.push_str(",\"type\":");
    json_str(&mut out, &e.event_type);
    out.push_str(",\"v\":");
    out.push_str(&e.v.to_string());
    out.push_str(",\"cid\":");
    json_str(&mut out, &e.cid);
    out.push_str(",\"caus\":");
    match &e.caus {
        Some(c) => json_str(&mut out, c),
        None => out.push_str("null"),
    }
    out.push_str(",\"ts\":");
    out.push_str(&e.ts.to_string());
    out.push_str(",\"src\":");
    json_str(&mut out, &e.src);
    out.push_str(",\"ct\":");
    json_str(&mut out, e.ct.as_str());
    out.push_str(",\"data\":\"");
    out.push_str(&hex(&e.data));
    out.push_str("\"}");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{ContentType, Envelope};
    use crate::events::streams;

    use crate::handlers::testing::{group, json_event};

    fn envelope_event() -> Event {
        Event {
            stream: "astra.trading.trade_executed.v1".into(),
            entry_id: "1-0".into(),
            env: Envelope {
                id: "0190a0b0-0000-7000-8000-000000000001".into(),
                event_type: "trading.trade_executed".into(),
                v: 1,
                cid: "c\"1\n".into(),
                caus: None,
                ts: 1_795_262_400_000,
                src: "héllo/x".into(),
                tp: Some("00-abc-def-01".into()),
                ct: ContentType::MsgPack,
                data: vec![0x81, 0xa1, b'a', 0x0f],
            },
        }
    }

    #[test]
    fn canonical_bytes_are_exact() {
        let mut ev = envelope_event();
        assert_eq!(
            String::from_utf8(canonical_bytes(&ev)).unwrap(),
            concat!(
                r#"{"stream":"astra.trading.trade_executed.v1","#,
                r#""id":"0190a0b0-0000-7000-8000-000000000001","#,
                r#""type":"trading.trade_executed","v":1,"cid":"c\"1\n","caus":null,"#,
                r#""ts":1795262400000,"src":"héllo/x","ct":"application/msgpack","#,
                r#""data":"81a1610f"}"#
            )
        );
        ev.env.caus = Some("p".into());
        ev.env.ct = ContentType::Json;
        ev.env.tp = None; // not part of the record
        let s = String::from_utf8(canonical_bytes(&ev)).unwrap();
        assert!(s.contains(r#""caus":"p","ts""#), "{s}");
        assert!(s.contains(r#""ct":"application/json""#), "{s}");
        // The record is valid JSON with the fields in that order.
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["data"], "81a1610f");
    }

    #[test]
    fn audit_appends_one_chain_op_per_event() {
        let h = AuditTrail::build(&group(
            "analytics.audit_trail",
            "analytics.audit_trail",
            &[],
            "",
        ))
        .unwrap();
        let ev = envelope_event();
        let Step::Done { ops, emit } = h.step(&ev, &[]).unwrap() else {
            panic!("expected Done")
        };
        assert!(emit.is_empty());
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].cmd(), "CHAINAPPEND");
        assert_eq!(ops[0].key(), "astra:analytics:{audit}:head");
        assert_eq!(
            ops[0].keys().collect::<Vec<_>>(),
            [
                "astra:analytics:{audit}:head",
                "astra:analytics:{audit}:log"
            ]
        );
        assert_eq!(ops[0].args(), [canonical_bytes(&ev)]);
        // Any payload, even one no other handler would accept, is recorded.
        let odd = json_event(streams::TRADE_EXECUTED, "not json");
        assert!(matches!(h.step(&odd, &[]).unwrap(), Step::Done { ops, .. } if ops.len() == 1));
    }
}
