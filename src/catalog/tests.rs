use super::*;
use crate::events::streams;

fn shipped() -> Config {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    Config::load_with_env(dir, |_| None).unwrap()
}

/// Resolves a local `$ref` (`#/a/b`) in `doc`.
fn resolve<'a>(doc: &'a Value, r: &Value) -> &'a Value {
    let p = r["$ref"].as_str().unwrap().strip_prefix('#').unwrap();
    doc.pointer(p).unwrap_or_else(|| panic!("dangling {p}"))
}

#[test]
fn every_stream_is_a_channel_and_every_group_its_operations() {
    let cfg = shipped();
    let doc = asyncapi(&cfg);
    assert_eq!(doc["asyncapi"], "3.0.0");
    let channels = doc["channels"].as_object().unwrap();
    assert_eq!(channels.len(), cfg.streams.len());
    for s in &cfg.streams {
        let c = &channels[&s.name];
        assert_eq!(c["address"], s.name.as_str());
        for m in c["messages"].as_object().unwrap().values() {
            let m = resolve(&doc, m);
            assert!(resolve(&doc, &m["payload"]).is_object());
        }
    }
    let ops = doc["operations"].as_object().unwrap();
    let reads: usize = cfg.groups.iter().map(|g| g.reads.len()).sum();
    let sends: usize = cfg.groups.iter().map(|g| g.publishes.len() + 1).sum();
    let external = cfg.streams.iter().filter(|s| s.external).count();
    assert_eq!(ops.len(), reads + sends + external);
    for (id, op) in ops {
        let ch = resolve(&doc, &op["channel"]);
        assert!(ch["address"].is_string(), "{id}");
        for m in op["messages"].as_array().unwrap() {
            // An operation's messages are its channel's.
            let r = m["$ref"].as_str().unwrap();
            assert!(
                r.starts_with(op["channel"]["$ref"].as_str().unwrap()),
                "{id}"
            );
            resolve(&doc, m);
        }
        if let Some(g) = op["x-astra-group"].as_str() {
            assert!(id.starts_with(&format!("{g}.")), "{id}");
        }
    }
    let op = &ops["gamification.xp_processing.receive.astra.trading.trade_executed.v1"];
    assert_eq!(op["action"], "receive");
    assert_eq!(op["x-astra-group"], "gamification.xp_processing");
    let op = &ops["gamification.xp_processing.send.astra.gamification.level_up.v1"];
    assert_eq!(op["action"], "send");
}

#[test]
fn payload_schemas_carry_the_contracts_bounds() {
    let doc = asyncapi(&shipped());
    let s = &doc["components"]["schemas"];
    let trade = &s[streams::TRADE_EXECUTED];
    assert_eq!(trade["additionalProperties"], false);
    assert_eq!(trade["properties"]["side"]["enum"], json!(["buy", "sell"]));
    assert_eq!(trade["properties"]["quantity"]["exclusiveMinimum"], 0.0);
    assert_eq!(trade["properties"]["quantity"]["maximum"], 1e6);
    assert_eq!(trade["properties"]["user_id"]["maxLength"], 128);
    assert_eq!(trade["properties"]["symbol"]["maxLength"], 32);
    let req = trade["required"].as_array().unwrap();
    assert!(req.contains(&json!("trade_id")) && !req.contains(&json!("fee_usd")));
    let reg = &s[streams::REGISTERED];
    assert_eq!(reg["properties"]["display_name"]["maxLength"], 64);
    assert_eq!(
        s[streams::SUBSCRIPTION_CHANGED]["properties"]["price_usd"]["minimum"],
        0.0
    );
    // Derived ones: from their structs.
    let xp = &s[streams::XP_AWARDED];
    assert_eq!(xp["properties"]["level"]["type"], "integer");
    assert_eq!(xp["required"].as_array().unwrap().len(), 5);
    // Headers: the envelope, pinned to the stream's type and version.
    let m = &doc["components"]["messages"][streams::TRADE_EXECUTED];
    assert_eq!(
        m["headers"]["properties"]["type"]["enum"],
        json!(["trading.trade_executed"])
    );
    assert_eq!(m["headers"]["properties"]["v"]["enum"], json!(["1"]));
    for f in ["id", "type", "v", "cid", "caus", "ts", "src", "tp", "ct"] {
        assert!(m["headers"]["properties"][f].is_object(), "{f}");
    }
    let dl = &doc["components"]["messages"][streams::DEAD_LETTER];
    assert!(dl["headers"]["properties"]["dlq_reason"]["enum"].is_array());
}

#[test]
fn json_schemas_map_every_stream() {
    let cfg = shipped();
    let m = json_schemas(&cfg);
    assert_eq!(m.as_object().unwrap().len(), cfg.streams.len());
    for s in &cfg.streams {
        assert_eq!(m[&s.name]["$schema"], JSON_SCHEMA_DIALECT);
    }
    let doc = asyncapi(&cfg);
    let mut t = m[streams::TRADE_EXECUTED].clone();
    let o = t.as_object_mut().unwrap();
    o.remove("$schema");
    o.remove("title");
    assert_eq!(t, doc["components"]["schemas"][streams::TRADE_EXECUTED]);
    assert!(render(&cfg, Format::AsyncApi).ends_with("}\n"));
}

#[test]
fn openapi_dialect() {
    let s = json!({"type": "object", "properties": {
        "n": {"type": "number", "exclusiveMinimum": 0, "maximum": 5},
        "type": {"type": ["integer", "null"]},
        "m": {"type": "object", "additionalProperties": {"type": ["string", "null"]}}}});
    assert_eq!(
        openapi_30(&s),
        json!({"type": "object", "properties": {
            "n": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 5},
            "type": {"type": "integer", "nullable": true},
            "m": {"type": "object", "additionalProperties": {"type": "string", "nullable": true}}}})
    );
}
