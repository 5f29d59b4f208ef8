//! Remote handlers' wire contract, version 1: the daemon POSTs a batch of events as JSON
//! to a healthy instance of the group's service and commits what it answers.
//!
//! Request: `POST <instance url><path>`, `Content-Type: application/json`,
//! `X-Astra-Contract: 1`, `X-Astra-Group: <group>`; for a batch of one event also
//! `Idempotency-Key` (its event id), `X-Correlation-ID` and `traceparent`. Body:
//!
//! ```json
//! {"contract": 1, "group": "scoring.trade_scorer", "events": [
//!   {"idempotency_key": "<event id>", "id": "<event id>", "stream": "astra.trading.trade_executed.v1",
//!    "entry_id": "1733300000000-0", "type": "trading.trade_executed", "v": 1, "cid": "…",
//!    "caus": null, "ts": 1733300000000, "src": "…", "traceparent": null, "attempt": 1,
//!    "data": {"trade_id": "t1", …}}]}
//! ```
//!
//! Answer: 200 with one result per event, matched by `id`:
//!
//! ```json
//! {"results": [
//!   {"id": "<event id>", "outcome": "done",
//!    "emit": [{"stream": "astra.scoring.trade_scored.v1", "data": {…}}],
//!    "ops": [["HINCRBY", "svc:scorer:volume", "ann", 500]]},
//!   {"id": "…", "outcome": "retry", "reason": "…"},
//!   {"id": "…", "outcome": "poison", "reason": "…"}]}
//! ```
//!
//! `done` commits the ops (allowed write commands, keys under the group's `key_prefix`)
//! and publishes the derived events (to streams the group `publishes`) atomically with
//! the ack, exactly once however often the event is delivered: a redelivered event gets
//! the same `idempotency_key`, and its first committed answer is the one that counts.
//! `retry` leaves the event pending (retried with backoff, then by reclaim, dead-lettered
//! after `max_deliveries`); `poison` dead-letters it with the reason. An event without a
//! result is retried. A bad op or emit in a `done` result poisons that event alone.
//!
//! Failures: a refused connection tries the next instance; when none can take it the
//! group waits ([`Asked::Wait`]). A timeout, a lost connection, a non-200 answer or one
//! off the contract is [`Asked::Failed`] (counted against the events). Breakers count
//! everything but a 4xx or a well-formed answer as the instance's failure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Unavailable, Upstreams, http::Failure};
use crate::bus::Redis;
use crate::envelope::encode_msgpack;
use crate::group::GroupConfig;
use crate::handler::{Asked, BoxFuture, Decide, Emit, Event, HandlerError, Op, RemoteSpec, Step};
use crate::internal_events::UpstreamAttempted;
use crate::metrics::Metrics;

/// The contract version this daemon speaks.
pub const CONTRACT: u32 = 1;

/// Instances tried for one batch at most when connections are refused.
const MAX_ATTEMPTS: usize = 3;

/// Asks a remote handler's service.
pub struct RemoteDecider {
    spec: RemoteSpec,
    group: Arc<GroupConfig>,
    upstreams: Arc<Upstreams>,
    redis: Redis,
    metrics: Arc<Metrics>,
}

impl RemoteDecider {
    /// The decider of `group`, whose handler's spec is `spec`.
    pub fn new(
        spec: RemoteSpec,
        group: Arc<GroupConfig>,
        upstreams: Arc<Upstreams>,
        redis: Redis,
        metrics: Arc<Metrics>,
    ) -> RemoteDecider {
        RemoteDecider {
            spec,
            group,
            upstreams,
            redis,
            metrics,
        }
    }

    async fn ask(&self, events: &[&Event], attempts: &[u64]) -> Asked {
        let body = Bytes::from(request_body(&self.group.name, events, attempts));
        let Some(svc) = self.upstreams.service(&self.spec.service).cloned() else {
            return Asked::Wait {
                retry_in: Duration::from_secs(5),
                why: format!("service {} is not declared", self.spec.service),
            };
        };
        let mut tried = vec![];
        let mut last_refusal = None;
        for _ in 0..MAX_ATTEMPTS {
            let attempt = match self
                .upstreams
                .pick(&self.redis, &self.spec.service, &tried)
                .await
            {
                Ok(a) => a,
                Err(u) => return wait(&self.spec.service, u, last_refusal, &svc),
            };
            tried.push(attempt.instance.clone());
            let url = format!("{}{}", attempt.url.trim_end_matches('/'), self.spec.path);
            let mut req = hyper::Request::post(&url)
                .header("content-type", "application/json")
                .header("x-astra-contract", CONTRACT.to_string())
                .header("x-astra-group", self.group.name.as_str());
            if let [ev] = events {
                req = req
                    .header("idempotency-key", ev.env.id.as_str())
                    .header("x-correlation-id", ev.env.cid.as_str());
                if let Some(tp) = &ev.env.tp {
                    req = req.header("traceparent", tp.as_str());
                }
            }
            let Ok(req) = req.body(Full::new(body.clone())) else {
                attempt.failed();
                last_refusal = Some(format!("instance url {url:?} is unusable"));
                continue;
            };
            let sent = self
                .upstreams
                .http()
                .send(req, self.spec.timeout, svc.max_response_bytes)
                .await;
            let outcome = |o: &'static str| UpstreamAttempted {
                service: &self.spec.service,
                outcome: o,
            };
            match sent {
                Err(Failure::Refused(e)) => {
                    outcome("refused").emit(&self.metrics);
                    attempt.failed();
                    last_refusal = Some(format!("instance {}: {e}", tried.last().unwrap()));
                }
                Err(f) => {
                    outcome(f.as_str()).emit(&self.metrics);
                    attempt.failed();
                    return Asked::Failed(format!("instance {}: {f}", tried.last().unwrap()));
                }
                Ok(resp) => {
                    let status = resp.status();
                    let who = tried.last().unwrap();
                    if status.is_server_error() {
                        outcome("error_status").emit(&self.metrics);
                        attempt.failed();
                        return Asked::Failed(format!("instance {who} answered {status}"));
                    }
                    if status != hyper::StatusCode::OK {
                        // It is up and refusing what we send: a contract problem, not an outage.
                        outcome("ok").emit(&self.metrics);
                        attempt.succeeded();
                        let text = String::from_utf8_lossy(resp.body());
                        return Asked::Failed(format!(
                            "instance {who} answered {status}: {}",
                            text.chars().take(300).collect::<String>()
                        ));
                    }
                    match parse_answer(resp.body(), events, &self.spec) {
                        Ok(d) => {
                            outcome("ok").emit(&self.metrics);
                            attempt.succeeded();
                            return Asked::Decided(d);
                        }
                        Err(e) => {
                            outcome("error_status").emit(&self.metrics);
                            attempt.failed();
                            return Asked::Failed(format!(
                                "instance {who}: answer off contract {CONTRACT}: {e}"
                            ));
                        }
                    }
                }
            }
        }
        wait(
            &self.spec.service,
            Unavailable::NoInstance,
            last_refusal,
            &svc,
        )
    }
}

impl Decide for RemoteDecider {
    fn decide<'a>(&'a self, events: &'a [&'a Event], attempts: &'a [u64]) -> BoxFuture<'a, Asked> {
        Box::pin(self.ask(events, attempts))
    }
}

fn wait(
    service: &str,
    u: Unavailable,
    last_refusal: Option<String>,
    svc: &crate::config::ServiceConfig,
) -> Asked {
    let tail = last_refusal
        .map(|r| format!(" (last: {r})"))
        .unwrap_or_default();
    let (retry_in, why) = match u {
        Unavailable::NoInstance => (
            svc.registry_refresh.max(Duration::from_millis(500)),
            format!("service {service} has no healthy instance that takes requests{tail}"),
        ),
        Unavailable::AllOpen(d) => (
            d,
            format!(
                "every healthy instance of service {service} has an open circuit breaker{tail}"
            ),
        ),
        Unavailable::Registry(e) => (
            Duration::from_secs(1),
            format!("the service registry cannot be read: {e}"),
        ),
    };
    Asked::Wait { retry_in, why }
}

/// The JSON Schemas of the contract: (request, answer), for the OpenAPI document.
pub fn contract_schemas() -> (Value, Value) {
    let text = json!({"type": "string"});
    let request = json!({
        "type": "object", "required": ["contract", "group", "events"],
        "description": "Remote handlers' wire contract 1: what astra-bus POSTs to <instance url><path> (Content-Type application/json, X-Astra-Contract: 1, X-Astra-Group; for a batch of one also Idempotency-Key, X-Correlation-ID and traceparent). At most the group's batch_size events.",
        "properties": {
            "contract": {"type": "integer", "enum": [CONTRACT]},
            "group": text,
            "events": {"type": "array", "items": {
                "type": "object",
                "required": ["idempotency_key", "id", "stream", "entry_id", "type", "v", "cid", "ts", "src", "attempt", "data"],
                "properties": {
                    "idempotency_key": {"type": "string", "description": "The event id: the same on every redelivery"},
                    "id": text, "stream": text, "entry_id": text, "type": text,
                    "v": {"type": "integer"}, "cid": text,
                    "caus": {"type": "string", "nullable": true}, "ts": {"type": "integer"}, "src": text,
                    "traceparent": {"type": "string", "nullable": true},
                    "attempt": {"type": "integer", "description": "Deliveries of this entry so far (1 the first time)"},
                    "data": {"type": "object", "description": "The payload, within its stream's contract"}}}}}
    });
    let answer = json!({
        "type": "object", "required": ["results"],
        "description": "A remote handler's answer (200): one result per event, matched by id; an event without one is retried.",
        "properties": {"results": {"type": "array", "items": {
            "type": "object", "required": ["id", "outcome"], "additionalProperties": false,
            "properties": {
                "id": text,
                "outcome": {"type": "string", "enum": ["done", "retry", "poison"]},
                "reason": {"type": "string", "description": "Why (retry, poison): kept in the dead letter"},
                "emit": {"type": "array", "items": {"type": "object", "required": ["stream", "data"], "additionalProperties": false,
                    "properties": {"stream": {"type": "string", "description": "One of the group's publishes"}, "data": {"type": "object"}}}},
                "ops": {"type": "array", "description": "[\"COMMAND\", \"key\", args...]: allowed write commands, keys under the group's key_prefix; committed with the ack",
                    "items": {"type": "array", "minItems": 2, "items": {"oneOf": [{"type": "string"}, {"type": "number"}]}}}}}}}
    });
    (request, answer)
}

/// The request's JSON body (contract 1).
pub fn request_body(group: &str, events: &[&Event], attempts: &[u64]) -> Vec<u8> {
    let evs: Vec<Value> = events
        .iter()
        .zip(attempts)
        .map(|(ev, n)| {
            let e = &ev.env;
            json!({
                "idempotency_key": e.id, "id": e.id, "stream": ev.stream, "entry_id": ev.entry_id,
                "type": e.event_type, "v": e.v, "cid": e.cid, "caus": e.caus, "ts": e.ts,
                "src": e.src, "traceparent": e.tp, "attempt": n,
                "data": e.data_as_json().unwrap_or(Value::Null),
            })
        })
        .collect();
    serde_json::to_vec(&json!({"contract": CONTRACT, "group": group, "events": evs}))
        .expect("JSON values serialize")
}

#[derive(Deserialize)]
struct Answer {
    results: Vec<Result1>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Result1 {
    id: String,
    outcome: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    emit: Vec<EmitJson>,
    #[serde(default)]
    ops: Vec<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmitJson {
    stream: String,
    data: Value,
}

/// One decision per event in `events` (in order) from an answer body; `Err` when the
/// answer as a whole is off the contract.
pub fn parse_answer(
    body: &[u8],
    events: &[&Event],
    spec: &RemoteSpec,
) -> Result<Vec<Result<Step, HandlerError>>, String> {
    let a: Answer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut by_id: HashMap<String, Result1> = HashMap::new();
    for r in a.results {
        by_id.entry(r.id.clone()).or_insert(r);
    }
    Ok(events
        .iter()
        .map(|ev| match by_id.remove(&ev.env.id) {
            None => Err(HandlerError::Retry(
                "the service's answer has no result for this event".into(),
            )),
            Some(r) => decision(r, spec),
        })
        .collect())
}

fn decision(r: Result1, spec: &RemoteSpec) -> Result<Step, HandlerError> {
    let reason = || {
        r.reason
            .clone()
            .unwrap_or_else(|| "(no reason given)".into())
    };
    match r.outcome.as_str() {
        "done" => {}
        "retry" => return Err(HandlerError::Retry(format!("the service: {}", reason()))),
        "poison" => return Err(HandlerError::Poison(format!("the service: {}", reason()))),
        other => {
            return Err(HandlerError::Poison(format!(
                "the service answered outcome {other:?} (expected done, retry or poison)"
            )));
        }
    }
    let mut ops = vec![];
    for (n, op) in r.ops.iter().enumerate() {
        ops.push(
            parse_op(op, spec)
                .map_err(|e| HandlerError::Poison(format!("the service's op {n}: {e}")))?,
        );
    }
    let mut emit = vec![];
    for (n, e) in r.emit.into_iter().enumerate() {
        if !e.data.is_object() {
            return Err(HandlerError::Poison(format!(
                "the service's emit {n}: data must be a JSON object"
            )));
        }
        emit.push(Emit::raw(&e.stream, encode_msgpack(&e.data)));
    }
    Ok(Step::Done { ops, emit })
}

/// `["CMD", "key", arg, …]`, args strings or numbers.
fn parse_op(op: &[Value], spec: &RemoteSpec) -> Result<Op, String> {
    let text = |v: &Value| -> Result<String, String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(format!("arguments are strings or numbers, got {other}")),
        }
    };
    let [cmd, key, args @ ..] = op else {
        return Err("an op is [\"COMMAND\", \"key\", args…]".into());
    };
    let (cmd, key) = (text(cmd)?, text(key)?);
    if !key.starts_with(&spec.key_prefix) {
        return Err(format!(
            "key {key:?} is outside the group's key_prefix {:?}",
            spec.key_prefix
        ));
    }
    let args = args
        .iter()
        .map(|a| text(a).map(String::into_bytes))
        .collect::<Result<Vec<_>, _>>()?;
    Op::parse(&cmd, &key, args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::testing::event_at;

    fn spec() -> RemoteSpec {
        RemoteSpec {
            service: "scorer".into(),
            path: "/events".into(),
            timeout: Duration::from_secs(1),
            key_prefix: "svc:scorer:".into(),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }

    #[test]
    fn answers_become_steps_per_event() {
        let a = event_at("astra.user.registered.v1", &json!({"user_id": "a"}), 1);
        let b = event_at("astra.user.registered.v1", &json!({"user_id": "b"}), 2);
        let c = event_at("astra.user.registered.v1", &json!({"user_id": "c"}), 3);
        let body = json!({"results": [
            {"id": b.env.id, "outcome": "retry", "reason": "busy"},
            {"id": a.env.id, "outcome": "done", "ops": [["hincrby", "svc:scorer:n", "a", 2]],
             "emit": [{"stream": "astra.user.profile_updated.v1", "data": {"user_id": "a"}}]},
        ]});
        let d = parse_answer(body.to_string().as_bytes(), &[&a, &b, &c], &spec()).unwrap();
        match &d[0] {
            Ok(Step::Done { ops, emit }) => {
                assert_eq!(ops[0].cmd(), "HINCRBY");
                assert_eq!(ops[0].key(), "svc:scorer:n");
                assert_eq!(ops[0].args(), &[b"a".to_vec(), b"2".to_vec()]);
                assert_eq!(emit[0].stream, "astra.user.profile_updated.v1");
                assert_eq!(emit[0].event_type, "user.profile_updated");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(d[1], Err(HandlerError::Retry("the service: busy".into())));
        assert!(matches!(&d[2], Err(HandlerError::Retry(r)) if r.contains("no result")));
    }

    #[test]
    fn bad_ops_poison_their_event_only() {
        let a = event_at("astra.user.registered.v1", &json!({"user_id": "a"}), 1);
        for (op, why) in [
            (json!(["FLUSHALL", "svc:scorer:x"]), "not one an op may use"),
            (json!(["HGET", "svc:scorer:x", "f"]), "only reads"),
            (
                json!(["HSET", "astra:dedup:x", "f", "v"]),
                "outside the group's key_prefix",
            ),
            (
                json!(["CHAINAPPEND", "svc:scorer:x", "r"]),
                "not one an op may use",
            ),
            (json!(["HSET"]), "an op is"),
            (
                json!(["HSET", "svc:scorer:x", {"a": 1}, "v"]),
                "strings or numbers",
            ),
        ] {
            let body = json!({"results": [{"id": a.env.id, "outcome": "done", "ops": [op]}]});
            let d = parse_answer(body.to_string().as_bytes(), &[&a], &spec()).unwrap();
            assert!(
                matches!(&d[0], Err(HandlerError::Poison(r)) if r.contains(why)),
                "{why}: {:?}",
                d[0]
            );
        }
        // An answer that is not the contract at all fails the whole request.
        assert!(parse_answer(b"[1,2]", &[&a], &spec()).is_err());
        assert!(
            parse_answer(
                br#"{"results": [{"id": "x", "outcome": "done", "extra": 1}]}"#,
                &[&a],
                &spec()
            )
            .is_err()
        );
    }

    #[test]
    fn the_request_carries_the_envelope_and_the_idempotency_key() {
        let mut a = event_at("astra.user.registered.v1", &json!({"user_id": "a"}), 1);
        a.env.tp = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        let v: Value = serde_json::from_slice(&request_body("user.g", &[&a], &[2])).unwrap();
        assert_eq!(v["contract"], 1);
        assert_eq!(v["group"], "user.g");
        let e = &v["events"][0];
        assert_eq!(e["idempotency_key"], a.env.id.as_str());
        assert_eq!(e["cid"], a.env.cid.as_str());
        assert_eq!(e["traceparent"], a.env.tp.clone().unwrap());
        assert_eq!(e["attempt"], 2);
        assert_eq!(e["data"]["user_id"], "a");
    }
}
