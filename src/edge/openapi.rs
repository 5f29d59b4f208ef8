//! The OpenAPI 3 document of every route, served at `GET /openapi.json`. A unit test
//! checks it lists exactly the router's (method, path) pairs, and the edge tests call
//! every documented route.

use serde_json::{Value, json};

fn err(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok(desc: &str, schema: Value) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": schema}}})
}

fn common_publish_errors(r: &mut serde_json::Map<String, Value>) {
    for (code, d) in [
        (
            "400",
            "Malformed JSON or header (X-Correlation-ID, X-User-ID, Idempotency-Key)",
        ),
        (
            "401",
            "API key missing or unknown (`WWW-Authenticate: Bearer`)",
        ),
        (
            "403",
            "The key's scopes do not allow this stream, or the stream is not external",
        ),
        (
            "413",
            "Body larger than edge.max_body_bytes, or batch larger than edge.max_batch",
        ),
        (
            "415",
            "Content-Type is not application/json (or the envelope media type)",
        ),
        (
            "422",
            "Payload does not match the event's schema (`field`, `index`), or the Idempotency-Key was reused for another request",
        ),
        ("429", "Rate limited (`Retry-After`, `X-RateLimit-*`)"),
        (
            "503",
            "Redis unavailable or out of memory: nothing stored, retry after `Retry-After`",
        ),
    ] {
        r.insert(code.into(), err(d));
    }
}

fn read_errors(r: &mut serde_json::Map<String, Value>) {
    for (code, d) in [
        ("400", "Bad path or query parameter"),
        ("401", "API key missing or unknown"),
        ("403", "The key lacks the `read` scope"),
        ("429", "Rate limited"),
        ("503", "Redis unavailable"),
    ] {
        r.insert(code.into(), err(d));
    }
}

fn headers_params() -> Value {
    json!([
        {"name": "X-Correlation-ID", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 128},
         "description": "Kept (or generated), echoed on the response and stored as the event's `cid`"},
        {"name": "traceparent", "in": "header", "required": false, "schema": {"type": "string"},
         "description": "W3C trace context, stored as the event's `tp`"},
        {"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 255},
         "description": "A retry with the same key within edge.idempotency_ttl returns the first response (`Idempotent-Replayed: true`) and publishes nothing"},
        {"name": "X-User-ID", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 128},
         "description": "The user the request acts for (per-user rate limits); a key's configured user wins"}
    ])
}

fn publish_op(summary: &str, body: Value, result: Value, extra_params: Value) -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert("202".into(), ok("Stored in the stream", result));
    common_publish_errors(&mut responses);
    let mut params = headers_params().as_array().cloned().unwrap_or_default();
    params.extend(extra_params.as_array().cloned().unwrap_or_default());
    json!({
        "summary": summary,
        "parameters": params,
        "requestBody": {"required": true, "content": body},
        "responses": responses,
    })
}

fn read_op(summary: &str, params: Value, result: Value, not_found: Option<&str>) -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert("200".into(), ok("OK", result));
    read_errors(&mut responses);
    if let Some(d) = not_found {
        responses.insert("404".into(), err(d));
    }
    json!({"summary": summary, "parameters": params, "responses": responses})
}

fn ops_op(summary: &str, responses: Value) -> Value {
    json!({"summary": summary, "security": [], "responses": responses})
}

/// The document.
pub fn document() -> Value {
    let payload = json!({"application/json": {"schema": {"type": "object", "description": "The event's payload (see the event catalog in the README)"}},
                         "application/vnd.astra.envelope+json": {"schema": {"$ref": "#/components/schemas/EnvelopeIn"}}});
    let json_only = |schema: Value| json!({"application/json": {"schema": schema}});
    let published = json!({"$ref": "#/components/schemas/Published"});
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "astra-bus HTTP edge",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Publish events to the declared streams, read the handlers' projections, and operate the bus. Every error is JSON {error, detail}."
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/events/{stream}": {"post": publish_op(
                "Publish one event (its payload, or a full envelope) to an external stream",
                payload,
                published.clone(),
                json!([{"name": "stream", "in": "path", "required": true, "schema": {"type": "string"}, "example": "astra.trading.trade_executed.v1"}]),
            )},
            "/v1/events": {"post": publish_op(
                "Publish a batch (all or nothing validation)",
                json_only(json!({"$ref": "#/components/schemas/Batch"})),
                json!({"type": "object", "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/Published"}}}}),
                json!([]),
            )},
            "/api/v1/trading/execute": {"post": publish_op(
                "Seed route: publish astra.trading.trade_executed.v1 (trade_id generated when absent, user_id defaults to the caller's user)",
                json_only(json!({"type": "object"})),
                json!({"allOf": [{"$ref": "#/components/schemas/Published"}, {"type": "object", "properties": {"trade_id": {"type": "string"}, "status": {"type": "string"}}}]}),
                json!([]),
            )},
            "/api/v1/users/register": {"post": publish_op(
                "Seed route: publish astra.user.registered.v1 (user_id generated when absent)",
                json_only(json!({"type": "object"})),
                json!({"allOf": [{"$ref": "#/components/schemas/Published"}, {"type": "object", "properties": {"user_id": {"type": "string"}, "status": {"type": "string"}}}]}),
                json!([]),
            )},
            "/api/v1/gamification/user/{id}/profile": {"get": read_op(
                "A user's profile, XP, level, achievements and current ranks",
                json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]),
                json!({"type": "object"}),
                Some("The bus has no profile or XP for this user"),
            )},
            "/api/v1/gamification/leaderboard/{board}": {"get": read_op(
                "Top of a leaderboard for the current (or given) period",
                json!([
                    {"name": "board", "in": "path", "required": true, "schema": {"type": "string", "enum": ["daily", "weekly", "all_time"]}},
                    {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}},
                    {"name": "period", "in": "query", "required": false, "schema": {"type": "string"}, "example": "2026-W47"}
                ]),
                json!({"type": "object"}),
                Some("No such board"),
            )},
            "/api/v1/social/feed": {"get": read_op(
                "Newest feed items, global or of one user",
                json!([
                    {"name": "user", "in": "query", "required": false, "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 20}}
                ]),
                json!({"type": "object"}),
                None,
            )},
            "/health": {"get": ops_op("The process is alive", json!({"200": ok("Alive", json!({"type": "object"}))}))},
            "/ready": {"get": ops_op("Redis reachable and every group declared", json!({
                "200": ok("Ready", json!({"type": "object"})),
                "503": err("Not ready, with the reason")
            }))},
            "/metrics": {"get": ops_op("Prometheus/OpenMetrics exposition", json!({
                "200": {"description": "OpenMetrics text", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}
            }))},
            "/dashboard": {"get": ops_op("KPI summary with targets (JSON, or HTML for browsers)", json!({
                "200": {"description": "Summary", "content": {"application/json": {"schema": {"type": "object"}}, "text/html": {"schema": {"type": "string"}}}},
                "503": err("No snapshot read yet")
            }))},
            "/v1/streams": {"get": ops_op("The declared stream catalog with lengths and readers", json!({
                "200": ok("Catalog", json!({"type": "object"})), "503": err("Redis unavailable")
            }))},
            "/v1/groups": {"get": ops_op("Per group and stream: length, lag, pending, consumers, dead letters", json!({
                "200": ok("Status", json!({"type": "object"})), "503": err("Redis unavailable")
            }))},
            "/openapi.json": {"get": ops_op("This document", json!({"200": ok("OpenAPI 3", json!({"type": "object"}))}))}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "API key (edge.auth = \"keys\"); configured by its SHA-256"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "detail"], "properties": {
                    "error": {"type": "string"}, "detail": {"type": "string"},
                    "field": {"type": "string"}, "index": {"type": "integer"}, "stream": {"type": "string"}}},
                "Published": {"type": "object", "required": ["event_id", "entry_id", "stream", "cid"], "properties": {
                    "event_id": {"type": "string"}, "entry_id": {"type": "string"}, "stream": {"type": "string"}, "cid": {"type": "string"}}},
                "Batch": {"type": "object", "required": ["events"], "properties": {"events": {"type": "array", "items": {
                    "type": "object", "required": ["stream"], "properties": {
                        "stream": {"type": "string"}, "data": {"type": "object"}, "envelope": {"$ref": "#/components/schemas/EnvelopeIn"}}}}}},
                "EnvelopeIn": {"type": "object", "required": ["data"], "additionalProperties": false, "properties": {
                    "id": {"type": "string"}, "type": {"type": "string"}, "v": {"type": "integer"}, "cid": {"type": "string"},
                    "caus": {"type": "string"}, "ts": {"type": "integer"}, "src": {"type": "string"}, "tp": {"type": "string"},
                    "data": {"type": "object"}}}
            }
        }
    });
    if let Some(paths) = doc["paths"].as_object_mut() {
        paths.extend(super::console::openapi_paths());
    }
    doc
}
