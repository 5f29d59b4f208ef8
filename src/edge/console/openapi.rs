//! The console's entries of the OpenAPI document.

use serde_json::{Value, json};

use super::{MAX_LIST, MAX_REPLAY};

/// The console's entries of the OpenAPI document's `paths`.
pub fn openapi_paths() -> serde_json::Map<String, Value> {
    let err = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let ok = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"type": "object"}}}});
    let auth = |mut r: serde_json::Map<String, Value>| {
        r.insert(
            "401".into(),
            err("edge.ops = \"keys\" and no (or an unknown) key"),
        );
        r.insert("403".into(), err("The key lacks the `ops` scope"));
        r.insert(
            "429".into(),
            err("Too many failed authentications from this address"),
        );
        Value::Object(r)
    };
    let resp = |pairs: Vec<(&str, Value)>| -> serde_json::Map<String, Value> {
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    };
    let post_errors = |mut r: serde_json::Map<String, Value>| {
        r.insert(
            "400".into(),
            err("Malformed body, bad id, or `confirm` is not the group's name"),
        );
        r.insert(
            "404".into(),
            err("Unknown group, or none of the named dead letters exists"),
        );
        r.insert("413".into(), err("Body too large"));
        r.insert("415".into(), err("Content-Type is not application/json"));
        r.insert("503".into(), err("Redis unavailable"));
        auth(r)
    };
    let op = |summary: &str, params: Value, responses: Value| json!({"summary": summary, "security": [], "parameters": params, "responses": responses});
    let body = |schema: Value| json!({"required": true, "content": {"application/json": {"schema": schema}}});
    let mut m = serde_json::Map::new();
    m.insert("/console".into(), json!({"get": {"summary": "The operator's console (static page; its data comes from /console/api)", "security": [],
        "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}}));
    m.insert("/console/assets/{name}".into(), json!({"get": {"summary": "The console's script and style", "security": [],
        "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string", "enum": ["app.js", "app.css"]}}],
        "responses": {"200": {"description": "The asset", "content": {"text/javascript": {"schema": {"type": "string"}}, "text/css": {"schema": {"type": "string"}}}},
                      "404": err("No such asset")}}}));
    m.insert(
        "/console/api/topology".into(),
        json!({"get": op(
            "Streams, groups and stream → group → stream edges of the running config",
            json!([]),
            auth(resp(vec![("200", ok("Topology"))])),
        )}),
    );
    m.insert("/console/api/health".into(), json!({"get": op(
        "The latest health snapshot with every (group, stream) classified ok/warn/crit, KPIs against targets, and the history after `since` (from memory, never Redis)",
        json!([{"name": "since", "in": "query", "required": false, "schema": {"type": "integer"}, "description": "generated_at_ms of the previous answer: only newer history, and {\"changed\": false} when nothing is newer"}]),
        auth(resp(vec![("200", ok("Health")), ("400", err("Bad `since`")), ("503", err("No snapshot read yet"))])),
    )}));
    m.insert("/console/api/dead-letters".into(), json!({"get": op(
        "Dead letters (oldest first) with reason, attempts, error and payload",
        json!([{"name": "group", "in": "query", "required": false, "schema": {"type": "string"}},
               {"name": "count", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST, "default": 50}}]),
        auth(resp(vec![("200", ok("Dead letters")), ("400", err("Bad query")), ("404", err("Unknown group")), ("503", err("Redis unavailable"))])),
    )}));
    m.insert("/console/api/dead-letters/replay".into(), json!({"post": {
        "summary": "Replay named dead letters of one group (audited)", "security": [],
        "requestBody": body(json!({"type": "object", "required": ["group", "ids", "confirm"], "additionalProperties": false, "properties": {
            "group": {"type": "string"}, "ids": {"type": "array", "minItems": 1, "maxItems": MAX_REPLAY, "items": {"type": "string"}},
            "confirm": {"type": "string", "description": "The group's name again"}}})),
        "responses": post_errors(resp(vec![("200", ok("What was replayed, and ids not found"))])),
    }}));
    m.insert("/console/api/dead-letters/purge".into(), json!({"post": {
        "summary": "Delete every dead letter of one group (audited)", "security": [],
        "requestBody": body(json!({"type": "object", "required": ["group", "confirm"], "additionalProperties": false, "properties": {
            "group": {"type": "string"}, "confirm": {"type": "string", "description": "The group's name again"}}})),
        "responses": post_errors(resp(vec![("200", ok("How many were purged"))])),
    }}));
    m.insert("/console/api/trace".into(), json!({"get": op(
        "The causation tree of a correlation id, as `astra-bus trace` prints it, with payloads and producing groups",
        json!([{"name": "cid", "in": "query", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[!-~]+$"}}]),
        auth(resp(vec![("200", ok("Trace")), ("400", err("Missing or malformed cid")), ("404", err("No events with that cid in the window")), ("503", err("Redis unavailable"))])),
    )}));
    m
}
