//! The event catalog: the loaded topology as an AsyncAPI 3.0.0 document, and the payload
//! JSON Schemas by stream. A pure function of the [`Config`] (no Redis), printed by
//! `astra-bus catalog` and served at `GET /asyncapi.json`; `/openapi.json` uses the same
//! payload schemas (in OpenAPI 3.0's dialect, [`openapi_30`]).
//!
//! - channels: one per declared stream (`address` = the stream name), with its one
//!   message: the envelope fields as `headers`, the payload schema as `payload`
//!   (a dead-letter stream's message: the `dlq_*` fields as headers);
//! - operations: per group, a `receive` per stream it reads, a `send` per stream it
//!   publishes and a `send` to its dead-letter stream; the HTTP edge's `send` per external
//!   stream. The group is in the operation id (`<group>.receive.<stream>`) and in
//!   `x-astra-group` (AsyncAPI's Redis bindings are reserved: they may hold no field);
//! - components: the messages and the payload schemas, keyed by stream name.
//!
//! Schemas use draft-07 keywords only ([`schemas`]), the dialect AsyncAPI 3.0's default
//! schema format extends; `--format jsonschema` marks each with draft-07's `$schema`.

mod schemas;
mod trace;

use serde_json::{Map, Value, json};

use crate::config::{Config, StreamConfig};

pub use schemas::{dead_letter_headers, envelope_headers, payload};

/// The AsyncAPI version of [`asyncapi`].
pub const ASYNCAPI_VERSION: &str = "3.0.0";
/// The JSON Schema dialect of every payload schema.
pub const JSON_SCHEMA_DIALECT: &str = "http://json-schema.org/draft-07/schema#";

/// What `astra-bus catalog --format` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The AsyncAPI 3.0.0 document.
    #[value(name = "asyncapi")]
    AsyncApi,
    /// `{stream: payload schema}`.
    #[value(name = "jsonschema")]
    JsonSchema,
}

/// The document in `format`, pretty-printed, with a final newline.
pub fn render(cfg: &Config, format: Format) -> String {
    let v = match format {
        Format::AsyncApi => asyncapi(cfg),
        Format::JsonSchema => json_schemas(cfg),
    };
    // A Value always serializes.
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

/// `{stream name: payload schema}` for every declared stream, each a standalone draft-07
/// schema (with `$schema`, and the stream name as `title`).
pub fn json_schemas(cfg: &Config) -> Value {
    let mut m = Map::new();
    for s in &cfg.streams {
        let mut schema = stream_payload(cfg, s);
        schema["$schema"] = Value::from(JSON_SCHEMA_DIALECT);
        schema["title"] = Value::from(s.name.as_str());
        m.insert(s.name.clone(), schema);
    }
    Value::Object(m)
}

fn is_dead_letter(cfg: &Config, s: &StreamConfig) -> bool {
    cfg.dead_letter_streams().contains(&s.name)
}

/// The payload schema of a declared stream (what its entries' `data` holds).
fn stream_payload(cfg: &Config, s: &StreamConfig) -> Value {
    if is_dead_letter(cfg, s) {
        return json!({"description": "A dead letter's `data` is the original entry's, unchanged (any payload)"});
    }
    payload_of(s, &[])
}

/// The payload schema of `s`: the one its `schema` file declares (as written, without
/// `$schema` and `$id`), else [`payload`]'s.
pub fn payload_of(s: &StreamConfig, optional: &[&str]) -> Value {
    match &s.schema {
        Some(custom) => {
            let mut v = custom.source.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("$schema");
                o.remove("$id");
            }
            v
        }
        None => payload(&s.name, optional),
    }
}

/// `key` as a JSON pointer segment (stream names never hold `~` or `/`, but a pointer
/// must be exact).
fn segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn reference(path: &str, key: &str) -> Value {
    json!({"$ref": format!("#/{path}/{}", segment(key))})
}

fn message(cfg: &Config, s: &StreamConfig) -> Value {
    let dead_letter = is_dead_letter(cfg, s);
    let (headers, summary) = if dead_letter {
        (
            dead_letter_headers(),
            "An entry a group could not process, with the reason (see `dlq_*`)".to_string(),
        )
    } else {
        (
            envelope_headers(s),
            format!("A {} event (v{})", s.event_type(), s.version),
        )
    };
    let mut m = json!({
        "name": s.event_type(),
        "title": s.name,
        "summary": summary,
        "contentType": "application/msgpack",
        "headers": headers,
        "payload": reference("components/schemas", &s.name),
    });
    if !dead_letter {
        m["description"] = Value::from(
            "The payload is the entry's `data` field: MessagePack with named fields (`ct` \
             application/msgpack, the default) or JSON (`ct` application/json).",
        );
        m["correlationId"] = json!({"location": "$message.header#/cid",
                                    "description": "copied unchanged to every derived event"});
    }
    m
}

fn channel(s: &StreamConfig) -> Value {
    let mut c = json!({
        "address": s.name,
        "title": s.name,
        "description": s.description,
        "messages": {s.name.as_str(): reference("components/messages", &s.name)},
        "x-astra-external": s.external,
        "x-astra-version": s.version,
    });
    if s.max_len.is_some() || s.max_age.is_some() {
        let mut r = Map::new();
        if let Some(n) = s.max_len {
            r.insert("max_len".into(), Value::from(n));
        }
        if let Some(d) = s.max_age {
            r.insert(
                "max_age".into(),
                Value::from(humantime::format_duration(d).to_string()),
            );
        }
        c["x-astra-retention"] = Value::Object(r);
    }
    c
}

fn operation(action: &str, stream: &str, summary: String) -> Value {
    json!({
        "action": action,
        "channel": reference("channels", stream),
        "summary": summary,
        "messages": [{"$ref": format!("#/channels/{0}/messages/{0}", segment(stream))}],
    })
}

/// The AsyncAPI 3.0.0 document of `cfg`'s topology.
pub fn asyncapi(cfg: &Config) -> Value {
    let mut channels = Map::new();
    let mut messages = Map::new();
    let mut payloads = Map::new();
    for s in &cfg.streams {
        channels.insert(s.name.clone(), channel(s));
        messages.insert(s.name.clone(), message(cfg, s));
        payloads.insert(s.name.clone(), stream_payload(cfg, s));
    }
    let mut ops = Map::new();
    for s in cfg.streams.iter().filter(|s| s.external) {
        let mut op = operation(
            "send",
            &s.name,
            format!(
                "Outside applications publish to {} (POST /v1/events/{}, or XADD)",
                s.name, s.name
            ),
        );
        op["x-astra-route"] = Value::from(format!("POST /v1/events/{}", s.name));
        ops.insert(format!("edge.send.{}", s.name), op);
    }
    for g in &cfg.groups {
        let mut add = |action: &str, stream: &str, summary: String| {
            let mut op = operation(action, stream, summary);
            op["description"] = Value::from(g.description.as_str());
            op["x-astra-group"] = Value::from(g.name.as_str());
            op["x-astra-handler"] = Value::from(g.handler.as_str());
            ops.insert(format!("{}.{action}.{stream}", g.name), op);
        };
        for s in &g.reads {
            add(
                "receive",
                s,
                format!("{} consumes {s} (consumer group {})", g.name, g.name),
            );
        }
        for s in &g.publishes {
            add("send", s, format!("{} publishes {s}", g.name));
        }
        add(
            "send",
            &g.dead_letter_stream,
            format!("{}'s dead letters (written by the runtime)", g.name),
        );
    }
    json!({
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "astra-bus event catalog",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "The Redis streams of this topology ({} streams, {} consumer groups): each \
                 stream is a channel whose address is the Redis key; each entry is one flat \
                 event envelope (the message headers) whose `data` field holds the payload. \
                 Consumer groups receive and send through the operations (`x-astra-group`). \
                 Payload schemas use JSON Schema draft-07 keywords; patterns are ECMA-262.",
                cfg.streams.len(),
                cfg.groups.len()
            ),
        },
        "defaultContentType": "application/msgpack",
        "channels": channels,
        "operations": ops,
        "components": {"messages": messages, "schemas": payloads},
    })
}

/// `schema` (draft-07 keywords) in OpenAPI 3.0's dialect: a numeric `exclusiveMinimum`
/// becomes `minimum` with `exclusiveMinimum: true` (and the same for the maximum),
/// `type: [t, "null"]` becomes `type: t, nullable: true`; `$schema` goes.
pub fn openapi_30(schema: &Value) -> Value {
    match schema {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$schema", _) => {}
                    ("exclusiveMinimum" | "exclusiveMaximum", Value::Number(n)) => {
                        let bound = if k == "exclusiveMinimum" {
                            "minimum"
                        } else {
                            "maximum"
                        };
                        out.insert(bound.into(), Value::Number(n.clone()));
                        out.insert(k.clone(), Value::Bool(true));
                    }
                    ("type", Value::Array(ts)) => {
                        let non_null: Vec<&Value> = ts.iter().filter(|t| *t != "null").collect();
                        if let [t] = non_null[..] {
                            out.insert("type".into(), t.clone());
                        }
                        if non_null.len() < ts.len() {
                            out.insert("nullable".into(), Value::Bool(true));
                        }
                    }
                    ("properties", Value::Object(ps)) => {
                        let ps = ps.iter().map(|(n, s)| (n.clone(), openapi_30(s))).collect();
                        out.insert(k.clone(), Value::Object(ps));
                    }
                    _ => {
                        out.insert(k.clone(), openapi_30(v));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(openapi_30).collect()),
        v => v.clone(),
    }
}

#[cfg(test)]
mod tests;
