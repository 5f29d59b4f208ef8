//! The OpenAPI 3 document of every route, served at `GET /openapi.json` for the running
//! configuration: which routes need a key (`security`), the JSON Schema of every public
//! payload (the event catalog's, [`crate::catalog`], built from the same tables the edge
//! enforces, under `components.schemas` by stream name and referenced from the publish
//! routes; `/asyncapi.json` carries them in draft-07's dialect), the header
//! constraints, and every status a route answers. Routes templated by a fixed set (the
//! external streams, the boards) are documented per member, so each carries its exact
//! schema. A unit test checks the document covers exactly the router's routes.

use serde_json::{Map, Value, json};

use crate::catalog;
use crate::config::{AuthMode, Config, StreamConfig};

const VISIBLE: &str = "^[!-~]+$";

fn err(desc: &str) -> Value {
    json!({"description": desc, "headers": corr_header(),
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn corr_header() -> Value {
    json!({"X-Correlation-ID": {"description": "The request's correlation id (kept or generated)",
                                "schema": {"type": "string"}}})
}

fn ok(desc: &str, schema: Value, rate_limited: bool) -> Value {
    let mut headers = corr_header();
    if rate_limited {
        for h in [
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
        ] {
            headers[h] = json!({"schema": {"type": "integer"}});
        }
    }
    json!({"description": desc, "headers": headers, "content": {"application/json": {"schema": schema}}})
}

fn security(keyed: bool) -> Value {
    if keyed {
        json!([{"bearer": []}])
    } else {
        json!([])
    }
}

fn header_params(publish: bool) -> Vec<Value> {
    let mut p = vec![
        json!({"name": "X-Correlation-ID", "in": "header", "required": false,
               "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": VISIBLE},
               "description": "1-128 visible ASCII; kept (or generated), echoed, stored as the event's `cid`"}),
        json!({"name": "X-User-ID", "in": "header", "required": false,
               "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9._:@-]+$"},
               "description": "The user the request acts for. With auth off it selects the per-user buckets; with keys it counts only from a key with act_for_users (else it is ignored), and a fixed-user key's user must match"}),
    ];
    if publish {
        p.push(json!({"name": "traceparent", "in": "header", "required": false, "schema": {"type": "string"},
                      "description": "W3C trace context, stored as the event's `tp` (an invalid one is ignored)"}));
        p.push(json!({"name": "Idempotency-Key", "in": "header", "required": false,
                      "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": VISIBLE},
                      "description": "A retry with the same key (same caller, route and body) within edge.idempotency_ttl returns the first answer (`Idempotent-Replayed: true`) and stores nothing; the same key with another body is a 422 and stores nothing"}));
    }
    p
}

fn common_errors(r: &mut Map<String, Value>, keyed: bool, publish: bool) {
    let mut codes = vec![
        ("400", "Malformed JSON, header, path or query parameter"),
        (
            "403",
            "The key's scopes do not allow this, or its fixed user is not the payload's user",
        ),
        (
            "429",
            "Rate limited (`Retry-After`, `X-RateLimit-*`), or too many failed authentications from this address",
        ),
        (
            "503",
            "Redis unavailable, overloaded, or past edge.request_timeout: nothing stored, retry after `Retry-After`",
        ),
    ];
    if keyed {
        codes.push((
            "401",
            "API key missing or unknown (`WWW-Authenticate: Bearer`)",
        ));
    }
    if publish {
        codes.push((
            "409",
            "The Idempotency-Key was used for another request (nothing stored)",
        ));
        codes.push(("413", "Body larger than edge.max_body_bytes"));
        codes.push(("415", "Content-Type not accepted here"));
        codes.push(("422", "The payload breaks its contract (`field`, `index`), or a batch has more than edge.max_batch events"));
    }
    for (c, d) in codes {
        r.insert(c.into(), err(d));
    }
}

fn publish_op(summary: &str, body: Value, result: Value, keyed: bool) -> Value {
    let mut responses = Map::new();
    responses.insert("202".into(), ok("Stored in the stream", result, true));
    common_errors(&mut responses, keyed, true);
    json!({
        "summary": summary,
        "security": security(keyed),
        "parameters": header_params(true),
        "requestBody": {"required": true, "content": body},
        "responses": responses,
    })
}

fn read_op(
    summary: &str,
    mut params: Vec<Value>,
    result: Value,
    not_found: Option<&str>,
    keyed: bool,
) -> Value {
    let mut responses = Map::new();
    responses.insert("200".into(), ok("OK", result, true));
    common_errors(&mut responses, keyed, false);
    if let Some(d) = not_found {
        responses.insert("404".into(), err(d));
    }
    params.extend(header_params(false));
    json!({"summary": summary, "security": security(keyed), "parameters": params, "responses": responses})
}

fn ops_op(summary: &str, keyed: bool, mut responses: Map<String, Value>) -> Value {
    if keyed {
        responses.insert("401".into(), err("API key missing or unknown"));
        responses.insert("403".into(), err("The key lacks the `ops` scope"));
        responses.insert(
            "429".into(),
            err("Too many failed authentications from this address"),
        );
        responses.insert("503".into(), err("Redis unavailable"));
    }
    json!({"summary": summary, "security": security(keyed), "responses": responses})
}

fn envelope_schema(stream: &str, event_type: &str, v: u32, data: Value, cfg: &Config) -> Value {
    json!({
        "type": "object", "additionalProperties": false, "required": ["data"],
        "description": format!(
            "A full envelope for {stream}. Also accepted: `ts` (occurred-at, Unix ms), only within \
             edge.envelope_skew = {} of the edge's clock (a window that moves with the clock, so it \
             is not a static property here; else the edge's time is used), and `src`, only equal to \
             your key's name (it is always set to it)",
            humantime::format_duration(cfg.edge.envelope_skew)
        ),
        "properties": {
            "id": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": VISIBLE,
                   "description": "Your id for the event; stored as a UUID derived from (your key, this id), so a retry with it is applied once"},
            "type": {"type": "string", "enum": [event_type]},
            "v": {"type": "integer", "enum": [v]},
            "cid": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": VISIBLE},
            "caus": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": VISIBLE},
            "tp": {"type": "string", "description": "W3C traceparent (an invalid one is ignored)"},
            "data": data,
        }
    })
}

/// A payload schema in this document's dialect: the catalog's (`/asyncapi.json`'s
/// `components.schemas`, draft-07) converted to OpenAPI 3.0's. `optional`: required
/// fields the route fills when absent.
fn payload_schema(s: &StreamConfig, optional: &[&str]) -> Value {
    catalog::openapi_30(&catalog::payload_of(s, optional))
}

fn published() -> Value {
    json!({"$ref": "#/components/schemas/Published"})
}

/// The document for `cfg` (every route; security and schemas as configured).
/// A proxied service's path: every method, answered by one of its instances.
fn proxy_item(svc: &crate::config::ServiceConfig, keyed: bool) -> Value {
    let mut responses = Map::new();
    responses.insert(
        "default".into(),
        json!({"description": format!("The answer of an instance of service {} (relayed as it is)", svc.name),
               "headers": corr_header()}),
    );
    for (c, d) in [
        (
            "403",
            "The key lacks scope proxy:<service> (or proxy:*, or *)",
        ),
        ("413", "Body larger than edge.max_body_bytes"),
        (
            "429",
            "Rate limited (`Retry-After`, `X-RateLimit-*`), or too many failed authentications from this address",
        ),
        (
            "503",
            "`no_instance` (none healthy), `circuit_open` (every healthy instance's breaker is open), `upstream_failed` (the instance failed after the request was sent; not sent elsewhere unless GET or HEAD), `registry_unavailable`, or the edge's own 503s; always `Retry-After`",
        ),
    ] {
        responses.insert(c.into(), err(d));
    }
    if keyed {
        responses.insert(
            "401".into(),
            err("API key missing or unknown (`WWW-Authenticate: Bearer`)"),
        );
    }
    let mut params = vec![
        json!({"name": "path", "in": "path", "required": true, "schema": {"type": "string"},
        "description": "The rest of the path, forwarded unchanged with the query"}),
    ];
    params.extend(header_params(false));
    let op = |m: &str| {
        json!({
            "summary": format!("{m} through the gateway proxy to a healthy instance of service {}{}", svc.name,
                if svc.description.is_empty() { String::new() } else { format!(" ({})", svc.description) }),
            "security": security(keyed),
            "parameters": params,
            "responses": responses,
        })
    };
    json!({"get": op("GET"), "post": op("POST"), "put": op("PUT"), "patch": op("PATCH"), "delete": op("DELETE")})
}

pub fn document_for(cfg: &Config) -> Value {
    let keyed = cfg.edge.auth == AuthMode::Keys;
    let ops_keyed = cfg.edge.ops_keyed();
    let mut paths = Map::new();
    let mut batch_items = vec![];
    let mut schemas = Map::new();
    for s in cfg.streams.iter().filter(|s| s.external) {
        let mut schema = payload_schema(s, &[]);
        if let Some(d) = schema["description"].as_str() {
            schema["description"] = format!(
                "{d} (the schema of /asyncapi.json#/components/schemas/{})",
                s.name
            )
            .into();
        }
        schemas.insert(s.name.clone(), schema);
        let data = json!({"$ref": format!("#/components/schemas/{}", s.name)});
        let env = envelope_schema(&s.name, &s.event_type(), s.version, data.clone(), cfg);
        batch_items.push(
            json!({"type": "object", "additionalProperties": false, "required": ["stream", "data"],
            "properties": {"stream": {"type": "string", "enum": [s.name]}, "data": data.clone()}}),
        );
        batch_items.push(json!({"type": "object", "additionalProperties": false, "required": ["stream", "envelope"],
            "properties": {"stream": {"type": "string", "enum": [s.name]}, "envelope": env.clone()}}));
        let body = json!({"application/json": {"schema": data},
                          "application/vnd.astra.envelope+json": {"schema": env}});
        paths.insert(
            format!("/v1/events/{}", s.name),
            json!({"post": publish_op(&format!("Publish one event to {} (its payload, or a full envelope)", s.name), body, published(), keyed)}),
        );
    }
    let json_only = |schema: Value| json!({"application/json": {"schema": schema}});
    paths.insert("/v1/events".into(), json!({"post": publish_op(
        "Publish a batch (validated all or nothing; counts one per event against the rate limits)",
        json_only(json!({"type": "object", "additionalProperties": false, "required": ["events"], "properties": {
            "events": {"type": "array", "minItems": 1, "maxItems": cfg.edge.max_batch, "items": {"oneOf": batch_items}}}})),
        json!({"type": "object", "required": ["events"], "properties": {"events": {"type": "array", "items": published()}}}),
        keyed,
    )}));
    if let Some(s) = cfg.stream(crate::events::streams::TRADE_EXECUTED) {
        paths.insert("/api/v1/trading/execute".into(), json!({"post": publish_op(
            "Seed route: publish astra.trading.trade_executed.v1 (trade_id generated when absent; user_id may be left out by a key with a fixed user)",
            json_only(payload_schema(s, &["trade_id"])),
            json!({"allOf": [published(), {"type": "object", "required": ["trade_id", "status"], "properties": {"trade_id": {"type": "string"}, "status": {"type": "string"}}}]}),
            keyed,
        )}));
    }
    if let Some(s) = cfg.stream(crate::events::streams::REGISTERED) {
        paths.insert("/api/v1/users/register".into(), json!({"post": publish_op(
            "Seed route: publish astra.user.registered.v1 (user_id generated when absent and returned; a replay returns the same one)",
            json_only(payload_schema(s, &["user_id"])),
            json!({"allOf": [published(), {"type": "object", "required": ["user_id", "status"], "properties": {"user_id": {"type": "string"}, "status": {"type": "string"}}}]}),
            keyed,
        )}));
    }
    let id_param = |name: &str, inp: &str, required: bool| {
        json!({"name": name, "in": inp, "required": required,
               "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9._:@-]+$"}})
    };
    paths.insert(
        "/api/v1/gamification/user/{id}/profile".into(),
        json!({"get": read_op(
            "A user's profile, XP, level, achievements and current ranks",
            vec![id_param("id", "path", true)],
            json!({"type": "object", "required": ["user_id", "xp", "level"]}),
            Some("The bus has no profile or XP for this user"),
            keyed,
        )}),
    );
    for (board, pattern, example) in [
        ("daily", "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "2026-11-21"),
        ("weekly", "^[0-9]{4}-W[0-9]{2}$", "2026-W47"),
        ("all_time", "^all$", "all"),
    ] {
        paths.insert(format!("/api/v1/gamification/leaderboard/{board}"), json!({"get": read_op(
            &format!("Top of the {board} leaderboard for the current (or given) period"),
            vec![
                json!({"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}}),
                json!({"name": "period", "in": "query", "required": false, "schema": {"type": "string", "pattern": pattern}, "example": example}),
            ],
            json!({"type": "object", "required": ["board", "period", "entries"]}),
            None,
            keyed,
        )}));
    }
    paths.insert("/api/v1/social/feed".into(), json!({"get": read_op(
        "Newest feed items, global or of one user",
        vec![
            id_param("user", "query", false),
            json!({"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 20}}),
        ],
        json!({"type": "object", "required": ["scope", "items"]}),
        None,
        keyed,
    )}));
    let one = |code: &str, v: Value| {
        let mut m = Map::new();
        m.insert(code.into(), v);
        m
    };
    let obj = json!({"type": "object"});
    paths.insert("/health".into(), json!({"get": ops_op("The process is alive (always open)", false, one("200", ok("Alive", obj.clone(), false)))}));
    let mut ready = one("200", ok("Ready", obj.clone(), false));
    ready.insert("503".into(), err("Not ready, with the reason"));
    paths.insert(
        "/ready".into(),
        json!({"get": ops_op("Redis reachable and every group declared", ops_keyed, ready)}),
    );
    paths.insert("/metrics".into(), json!({"get": ops_op("Prometheus/OpenMetrics exposition", ops_keyed, one("200",
        json!({"description": "OpenMetrics text", "headers": corr_header(), "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}})))}));
    let mut dash = one(
        "200",
        json!({"description": "Summary", "headers": corr_header(),
        "content": {"application/json": {"schema": obj.clone()}, "text/html": {"schema": {"type": "string"}}}}),
    );
    dash.insert("503".into(), err("No snapshot read yet"));
    paths.insert("/dashboard".into(), json!({"get": ops_op("KPI summary with targets (JSON, or HTML for browsers)", ops_keyed, dash)}));
    let mut streams = one("200", ok("Catalog", obj.clone(), false));
    streams.insert("503".into(), err("Redis unavailable"));
    paths.insert("/v1/streams".into(), json!({"get": ops_op("The declared stream catalog with lengths and readers", ops_keyed, streams.clone())}));
    paths.insert("/v1/groups".into(), json!({"get": ops_op("Per group and stream: length, lag, pending, consumers, dead letters", ops_keyed, streams)}));
    let mut listed = one(
        "200",
        ok(
            "Services with their instances, healthy count and total",
            obj.clone(),
            false,
        ),
    );
    listed.insert("503".into(), err("Redis unavailable"));
    paths.insert("/v1/services".into(), json!({"get": ops_op("The service registry: every service, how many of its instances are healthy (a heartbeat within their ttl), and each instance", ops_keyed, listed)}));
    let names = json!([
        {"name": "service", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"}},
        {"name": "instance", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:@-]{1,128}$"}},
    ]);
    let mut beat = one(
        "200",
        ok(
            "Recorded: healthy until, and how often to heartbeat",
            obj.clone(),
            false,
        ),
    );
    for (code, why) in [
        (
            "400",
            "Bad service or instance name, or a body that is not the shape",
        ),
        ("413", "Body over 4096 bytes"),
        ("415", "Not application/json"),
        (
            "422",
            "A url that is not absolute http(s), or ttl_ms out of range",
        ),
        ("503", "Redis unavailable"),
    ] {
        beat.insert(code.into(), err(why));
    }
    let mut post_op = ops_op(
        "Register an instance of a service, or heartbeat it (idempotent): healthy for ttl_ms after each",
        ops_keyed,
        beat,
    );
    post_op["parameters"] = names.clone();
    post_op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {
        "type": "object", "required": ["url"], "additionalProperties": false, "properties": {
            "url": {"type": "string", "maxLength": 2048, "pattern": "^https?://[!-.0-~][!-~]*$", "description": "Where the instance answers"},
            "ttl_ms": {"type": "integer", "minimum": 1000, "maximum": 3600000, "default": 10000,
                       "description": "Healthy this long after the heartbeat; listed as unhealthy for twice as long again, then forgotten"}}}}}});
    let mut gone = one("200", ok("Removed", obj.clone(), false));
    for (code, why) in [
        ("400", "Bad service or instance name"),
        ("404", "No such instance (expired or never registered)"),
        ("503", "Redis unavailable"),
    ] {
        gone.insert(code.into(), err(why));
    }
    let mut delete_op = ops_op("Remove an instance from the registry", ops_keyed, gone);
    delete_op["parameters"] = names;
    paths.insert(
        "/v1/services/{service}/instances/{instance}".into(),
        json!({"post": post_op, "delete": delete_op}),
    );
    paths.insert("/openapi.json".into(), json!({"get": ops_op("This document (always open)", false, one("200", ok("OpenAPI 3", obj.clone(), false)))}));
    paths.insert("/asyncapi.json".into(), json!({"get": ops_op(
        "The event catalog: streams, groups and payload schemas as AsyncAPI 3.0.0 (always open; `astra-bus catalog` prints it)",
        false, one("200", ok("AsyncAPI 3.0.0", obj, false)))}));
    paths.extend(super::console::openapi_paths());
    for svc in cfg.services.iter().filter(|s| s.proxy) {
        paths.insert(
            format!("/api/v1/{}/{{path}}", svc.name),
            proxy_item(svc, keyed),
        );
    }
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error", "detail"], "properties": {
        "error": {"type": "string"}, "detail": {"type": "string"},
        "field": {"type": "string"}, "index": {"type": "integer"}, "stream": {"type": "string"}}}),
    );
    let (remote_req, remote_answer) = crate::upstream::remote::contract_schemas();
    schemas.insert("RemoteHandlerRequest".into(), remote_req);
    schemas.insert("RemoteHandlerAnswer".into(), remote_answer);
    schemas.insert("Published".into(), json!({"type": "object", "required": ["event_id", "entry_id", "stream", "cid"], "properties": {
        "event_id": {"type": "string"}, "entry_id": {"type": "string"}, "stream": {"type": "string"}, "cid": {"type": "string"}}}));
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "astra-bus HTTP edge",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "Publish events to the declared streams, read the handlers' projections, and operate the bus. Every error is JSON {{error, detail}}. The payload schemas (components.schemas, by stream) are the event catalog's, GET /asyncapi.json, in this document's dialect. Remote handlers' wire contract (version 1, what the daemon sends a service and what it answers) is components.schemas.RemoteHandlerRequest and RemoteHandlerAnswer. This instance: edge.auth = {}, ops routes {}.",
                if keyed { "keys" } else { "off" },
                if ops_keyed { "need a key with the ops scope" } else { "open" }
            )
        },
        "security": security(keyed),
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "API key (edge.auth = \"keys\"); configured by its SHA-256"}},
            "schemas": schemas,
        }
    })
}
