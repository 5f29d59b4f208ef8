//! Helpers for handler unit tests: build groups and events, decode emits. No Redis here;
//! tests feed `step` the replies Redis would give and assert on the ops and emits.

use serde::Serialize;

use crate::envelope::ContentType;
use crate::envelope::{Envelope, encode_msgpack, parse_stream_name};
use crate::group::GroupConfig;
use crate::handler::{Emit, Event, HandlerError, Op, Reply, Step};

/// A group config for `handler`, publishing to `publishes`, with `options` parsed from
/// TOML (e.g. `"limit_usd = 5"`); every delivery setting at its default (the same
/// defaults a configured group gets).
pub fn group(name: &str, handler: &str, publishes: &[&str], options: &str) -> GroupConfig {
    GroupConfig {
        name: name.to_string(),
        domain: name.split('.').next().unwrap_or(name).to_string(),
        handler: handler.to_string(),
        publishes: publishes.iter().map(|s| s.to_string()).collect(),
        options: toml::from_str(options).expect("test options are valid TOML"),
        options_origin: "test".to_string(),
        ..GroupConfig::default()
    }
}

/// An event on `stream` carrying `payload` (MessagePack), occurred at `ts_ms`.
pub fn event_at<T: Serialize>(stream: &str, payload: &T, ts_ms: i64) -> Event {
    let (domain, ev, v) = parse_stream_name(stream).expect("valid stream name");
    let mut env = Envelope::root(
        &format!("{domain}.{ev}"),
        v,
        "test",
        None,
        ContentType::MsgPack,
        encode_msgpack(payload),
    );
    env.ts = ts_ms;
    Event {
        stream: stream.to_string(),
        entry_id: format!("{ts_ms}-0"),
        env,
    }
}

/// [`event_at`] at a fixed instant: 2026-11-21T12:00:00Z.
pub fn event<T: Serialize>(stream: &str, payload: &T) -> Event {
    event_at(stream, payload, 1_795_262_400_000)
}

/// An event whose `data` is the given JSON text (as a foreign publisher would write).
pub fn json_event(stream: &str, json: &str) -> Event {
    let mut e = event(stream, &());
    e.env.ct = ContentType::Json;
    e.env.data = json.as_bytes().to_vec();
    e
}

/// Decodes an emitted payload.
pub fn decode<T: serde::de::DeserializeOwned>(emit: &Emit) -> T {
    rmp_serde::from_slice(&emit.data).expect("emitted payload decodes")
}

/// Integer reply.
pub fn int(i: i64) -> Reply {
    Reply::Int(i)
}

/// String reply.
pub fn text(s: &str) -> Reply {
    Reply::Bytes(s.as_bytes().to_vec())
}

/// The ops of a `Step::More` (panics otherwise).
pub fn more(s: Step) -> Vec<Op> {
    match s {
        Step::More(ops) => ops,
        other => panic!("expected More, got {other:?}"),
    }
}

/// The ops and emits of a `Step::Done` (panics otherwise).
pub fn done(s: Step) -> (Vec<Op>, Vec<Emit>) {
    match s {
        Step::Done { ops, emit } => (ops, emit),
        other => panic!("expected Done, got {other:?}"),
    }
}

/// The reason of a poison result (panics otherwise).
pub fn poison_of(r: Result<Step, HandlerError>) -> String {
    match r {
        Err(HandlerError::Poison(m)) => m,
        other => panic!("expected poison, got {other:?}"),
    }
}

/// An op as (command, key, arguments as text), to compare with what a test expects.
pub fn op_text(op: &Op) -> (&'static str, String, Vec<String>) {
    (op.cmd(), op.key().to_string(), args(op))
}

/// An op's arguments as text.
pub fn args(op: &Op) -> Vec<String> {
    op.args()
        .iter()
        .map(|a| String::from_utf8(a.clone()).unwrap())
        .collect()
}
