//! The domain handlers, the registry that binds their names to code, and what they share.
//!
//! The interface they implement ([`Handler`], [`Event`], [`Op`], [`Reply`], [`Step`],
//! [`Emit`], [`HandlerError`], [`KeyType`], [`MAX_ROUNDS`]) lives in [`crate::handler`] and
//! is re-exported here; the calendar helpers come from [`crate::calendar`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

pub use crate::calendar::{civil_from_days, utc_day};
use crate::envelope::{Envelope, encode_msgpack, parse_stream_name};
use crate::group::GroupConfig;
pub use crate::handler::{
    Emit, Event, Handler, HandlerError, KeyType, MAX_ROUNDS, Op, Reply, Step,
};

pub mod analytics;
pub mod builtin;
pub mod financial;
pub mod gamification;
pub mod nft;
pub mod social;
pub mod trading;
pub mod user;

/// Builds a handler for a group from its options; errors say which option is wrong.
pub type Constructor = fn(&GroupConfig) -> Result<Arc<dyn Handler>, String>;

/// The handlers this binary knows, by the name configs use.
#[derive(Clone)]
pub struct Registry {
    ctors: BTreeMap<&'static str, Constructor>,
}

impl Registry {
    /// Every built-in handler. This is the one place handler names are bound to code.
    pub fn builtin() -> Registry {
        let mut r = Registry {
            ctors: BTreeMap::new(),
        };
        r.insert("builtin.forward", builtin::Forward::build);
        r.insert("builtin.count_by_user", builtin::CountByUser::build);
        for (name, ctor) in domain_handlers() {
            r.insert(name, ctor);
        }
        r
    }

    /// Adds (or replaces) a handler; tests register their own this way.
    pub fn insert(&mut self, name: &'static str, ctor: Constructor) -> &mut Self {
        self.ctors.insert(name, ctor);
        self
    }

    /// Known names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.ctors.keys().copied().collect()
    }

    /// True if `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.ctors.contains_key(name)
    }

    /// Builds every group's handler once, to validate their options; returns every
    /// problem (each names the options' `file:line:col`).
    pub fn check(&self, groups: &[GroupConfig]) -> Result<(), Vec<String>> {
        let errors: Vec<String> = groups.iter().filter_map(|g| self.build(g).err()).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Builds the handler `group.handler` for `group`.
    pub fn build(&self, group: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        let ctor = self
            .ctors
            .get(group.handler.as_str())
            .ok_or_else(|| format!("unknown handler {:?}", group.handler))?;
        ctor(group).map_err(|e| {
            format!(
                "{}: group {} options: {e}",
                group.options_origin, group.name
            )
        })
    }
}

/// The domain handlers (one file per domain).
fn domain_handlers() -> Vec<(&'static str, Constructor)> {
    let mut v = vec![];
    v.extend(trading::handlers());
    v.extend(gamification::handlers());
    v.extend(social::handlers());
    v.extend(financial::handlers());
    v.extend(nft::handlers());
    v.extend(user::handlers());
    v.extend(analytics::handlers());
    v
}

/// True if the built-in registry knows `name`.
pub fn is_known(name: &str) -> bool {
    Registry::builtin().contains(name)
}

/// Names in the built-in registry.
pub fn names() -> Vec<&'static str> {
    Registry::builtin().names()
}

/// Poison (dead-letter now) with a reason.
pub fn poison(msg: impl Into<String>) -> HandlerError {
    HandlerError::Poison(msg.into())
}

/// Poison naming `field` when `value` is empty or blank.
pub fn non_empty(field: &str, value: &str) -> Result<(), HandlerError> {
    if value.trim().is_empty() {
        return Err(poison(format!("field `{field}`: must not be empty")));
    }
    Ok(())
}

/// Reads a typed option from a group's `[group.options]`, falling back to `default`.
pub fn option<T: serde::de::DeserializeOwned>(
    group: &GroupConfig,
    name: &str,
    default: T,
) -> Result<T, String> {
    match group.options.get(name) {
        None => Ok(default),
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|e| format!("option `{name}`: {e}")),
    }
}

/// Rejects options the handler does not know (so a typo is an error, not a silent default).
pub fn deny_unknown_options(group: &GroupConfig, known: &[&str]) -> Result<(), String> {
    for k in group.options.keys() {
        if !known.contains(&k.as_str()) {
            return Err(format!(
                "unknown option `{k}` (known: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
    }
    Ok(())
}

/// Helpers for handler unit tests: build groups and events, decode emits. No Redis here;
/// tests feed `step` the replies Redis would give and assert on the ops and emits.
pub mod testing {
    use super::*;
    use crate::envelope::ContentType;
    use crate::group::StartId;

    /// A group config for `handler`, publishing to `publishes`, with `options` parsed from
    /// TOML (e.g. `"limit_usd = 5"`).
    pub fn group(name: &str, handler: &str, publishes: &[&str], options: &str) -> GroupConfig {
        GroupConfig {
            name: name.to_string(),
            domain: name.split('.').next().unwrap_or(name).to_string(),
            handler: handler.to_string(),
            description: String::new(),
            reads: vec![],
            publishes: publishes.iter().map(|s| s.to_string()).collect(),
            batch_size: 100,
            block: std::time::Duration::from_millis(100),
            concurrency: 100,
            claim_idle: std::time::Duration::from_secs(30),
            max_deliveries: 5,
            dead_letter_stream: crate::events::streams::DEAD_LETTER.to_string(),
            start_id: StartId::Beginning,
            options: toml::from_str(options).expect("test options are valid TOML"),
            options_origin: "test".to_string(),
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

    /// An op's arguments as text.
    pub fn args(op: &Op) -> Vec<String> {
        op.args()
            .iter()
            .map(|a| String::from_utf8(a.clone()).unwrap())
            .collect()
    }
}
