//! A stream declared in `streams.toml` may name its own JSON Schema file (`schema =
//! "schemas/x.json"`): `astra-bus check` refuses one outside the supported subset, naming
//! the file and the reason; the catalog exports it; the edge enforces it (422 naming the
//! field) alike with Python's `jsonschema`.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::catalog::{asyncapi_validate, catalog, python};
use support::edge::{Binary, get, post, shipped_config, unlimited};
use support::{RedisServer, TempDir, bin};

const ORDER: &str = "astra.shop.order_placed.v1";

const ORDER_SCHEMA: &str = r#"{
  "$schema": "http://json-schema.org/draft-07/schema#",
  "type": "object",
  "additionalProperties": false,
  "required": ["order_id", "amount", "lines"],
  "properties": {
    "order_id": {"type": "string", "minLength": 1, "maxLength": 16, "pattern": "^[a-z0-9-]+$"},
    "amount": {"type": "number", "exclusiveMinimum": 0, "maximum": 100000},
    "currency": {"enum": ["EUR", "USD"]},
    "lines": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
      "type": "object", "required": ["sku", "qty"],
      "properties": {"sku": {"type": "string", "maxLength": 8}, "qty": {"type": "integer", "minimum": 1}}}},
    "note": {"type": ["string", "null"], "maxLength": 20}
  }
}"#;

/// The shipped config plus an external stream with its own schema file (`schema` text).
fn with_order_stream(schema: &str) -> TempDir {
    let dir = shipped_config(unlimited);
    let toml = dir.join("streams.toml");
    let mut t = std::fs::read_to_string(&toml).unwrap();
    t.push_str(&format!(
        "\n[[stream]]\nname = \"{ORDER}\"\ndescription = \"An order was placed (this deployment's own stream).\"\nexternal = true\nschema = \"schemas/order_placed.json\"\n"
    ));
    std::fs::write(&toml, t).unwrap();
    std::fs::create_dir_all(dir.join("schemas")).unwrap();
    std::fs::write(dir.join("schemas/order_placed.json"), schema).unwrap();
    dir
}

#[test]
fn a_stream_may_carry_its_own_schema_file() {
    // `check` refuses a schema file it cannot enforce, naming the file and the reason.
    for (schema, reason) in [
        (
            ORDER_SCHEMA.replace("\"minItems\": 1", "\"oneOf\": []"),
            "at /properties/lines/oneOf: keyword \"oneOf\" is not in the subset",
        ),
        (
            ORDER_SCHEMA.replace("\"exclusiveMinimum\": 0", "\"exclusiveMinimum\": true"),
            "at /properties/amount/exclusiveMinimum: must be a number",
        ),
        (
            ORDER_SCHEMA.replace("\"amount\":", "\"amount\"::"),
            "not JSON (line 8, column",
        ),
    ] {
        let (ok, text) = check(&with_order_stream(&schema));
        assert!(!ok, "{text}");
        assert!(
            text.contains("streams.toml:")
                && text.contains(&format!(
                    "stream {ORDER}: schema schemas/order_placed.json: {reason}"
                )),
            "{text}"
        );
    }
    let dir = with_order_stream(ORDER_SCHEMA);
    std::fs::remove_file(dir.join("schemas/order_placed.json")).unwrap();
    let (ok, text) = check(&dir);
    assert!(
        !ok && text.contains("schemas/order_placed.json: cannot read"),
        "{text}"
    );
    // A stream with a built-in contract cannot take one.
    let dir = with_order_stream(ORDER_SCHEMA);
    let toml = dir.join("streams.toml");
    let t = std::fs::read_to_string(&toml).unwrap().replacen(
        "external = true\n",
        "external = true\nschema = \"schemas/order_placed.json\"\n",
        1,
    );
    std::fs::write(&toml, t).unwrap();
    let (ok, text) = check(&dir);
    assert!(!ok && text.contains("astra.trading.trade_executed.v1: schema schemas/order_placed.json: this binary has the payload's contract built in"), "{text}");

    let dir = with_order_stream(ORDER_SCHEMA);
    let (ok, text) = check(&dir);
    assert!(ok, "{text}");
    // Exported as written (the catalog's draft-07), valid AsyncAPI still.
    let mut written: Value = serde_json::from_str(ORDER_SCHEMA).unwrap();
    written.as_object_mut().unwrap().remove("$schema");
    let doc = catalog(&dir.path, "asyncapi");
    assert_eq!(doc["components"]["schemas"][ORDER], written);
    assert_eq!(doc["channels"][ORDER]["address"], ORDER);
    let tmp = TempDir::new("catalog-order");
    let (ok, text) = asyncapi_validate(&tmp, "asyncapi.json", &doc);
    assert!(ok, "{text}");
    // The edge enforces it (422 naming the field), alike with Python's jsonschema.
    let server = RedisServer::start();
    let logs = TempDir::new("catalog-logs");
    let d = Binary::start(
        &dir.path,
        "edge",
        &[("ASTRA_REDIS_URL", server.url())],
        &logs,
    );
    let api: Value = serde_json::from_str(&get(d.port, "/openapi.json").unwrap().1).unwrap();
    let amount = &api["components"]["schemas"][ORDER]["properties"]["amount"];
    assert_eq!(
        (amount["minimum"].as_f64(), &amount["exclusiveMinimum"]),
        (Some(0.0), &json!(true))
    );
    let ok = json!({"order_id": "o-1", "amount": 12.5, "currency": "EUR", "lines": [{"sku": "a1", "qty": 2}], "note": null});
    let cases: Vec<(Option<&str>, Value)> = vec![
        (None, ok.clone()),
        (
            None,
            json!({"order_id": "o-2", "amount": 100000, "lines": [{"sku": "", "qty": 1.0}]}),
        ),
        (
            Some("order_id"),
            json!({"order_id": "O 1", "amount": 1, "lines": [{"sku": "a", "qty": 1}]}),
        ),
        (
            Some("amount"),
            json!({"order_id": "o", "amount": 0, "lines": [{"sku": "a", "qty": 1}]}),
        ),
        (
            Some("amount"),
            json!({"order_id": "o", "lines": [{"sku": "a", "qty": 1}]}),
        ),
        (
            Some("currency"),
            json!({"order_id": "o", "amount": 1, "currency": "GBP", "lines": [{"sku": "a", "qty": 1}]}),
        ),
        (
            Some("lines"),
            json!({"order_id": "o", "amount": 1, "lines": []}),
        ),
        (
            Some("lines.0.qty"),
            json!({"order_id": "o", "amount": 1, "lines": [{"sku": "a", "qty": 1.5}]}),
        ),
        (
            Some("lines.1.sku"),
            json!({"order_id": "o", "amount": 1, "lines": [{"sku": "a", "qty": 1}, {"sku": "123456789", "qty": 1}]}),
        ),
        (
            Some("note"),
            json!({"order_id": "o", "amount": 1, "lines": [{"sku": "a", "qty": 1}], "note": 5}),
        ),
        (
            Some("extra"),
            json!({"order_id": "o", "amount": 1, "lines": [{"sku": "a", "qty": 1}], "extra": true}),
        ),
    ];
    let schemas = catalog(&dir.path, "jsonschema");
    let jobs: Vec<(String, Value)> = cases
        .iter()
        .map(|(_, v)| (ORDER.to_string(), v.clone()))
        .collect();
    let py = python(&tmp, "validate", &schemas, &jobs);
    for ((field, payload), p) in cases.iter().zip(&py) {
        let (s, body) = post(
            d.port,
            &format!("/v1/events/{ORDER}"),
            &[],
            &payload.to_string(),
        );
        assert_eq!(s == 202, field.is_none(), "{payload}: {s} {body}");
        assert_eq!(p[0], field.is_none(), "{payload}: {}", p[2]);
        if let Some(f) = field {
            let e: Value = serde_json::from_str(&body).unwrap();
            assert_eq!((s, e["field"].as_str()), (422, Some(*f)), "{body}");
        }
    }
}

/// Adds `[[stream]]` `name` (external) with `extra` TOML lines to the config in `dir`.
fn add_stream(dir: &TempDir, name: &str, extra: &str) {
    let toml = dir.join("streams.toml");
    let mut t = std::fs::read_to_string(&toml).unwrap();
    t.push_str(&format!(
        "\n[[stream]]\nname = \"{name}\"\ndescription = \"The next version.\"\nexternal = true\n{extra}"
    ));
    std::fs::write(&toml, t).unwrap();
}

/// Runs `astra-bus check` on `dir`: whether it passed, and what it printed.
fn check(dir: &TempDir) -> (bool, String) {
    let o = Command::new(bin())
        .args(["check", "--config", &dir.path.to_string_lossy()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), text)
}

#[test]
fn check_says_what_a_v2_schema_breaks_for_readers_of_v1() {
    const V2: &str = "astra.shop.order_placed.v2";
    let v1: Value = serde_json::from_str(ORDER_SCHEMA).unwrap();
    let with_v2 = |v2: &Value, extra: &str| {
        let dir = with_order_stream(ORDER_SCHEMA);
        std::fs::write(dir.join("schemas/order_placed.v2.json"), v2.to_string()).unwrap();
        add_stream(
            &dir,
            V2,
            &format!("schema = \"schemas/order_placed.v2.json\"\n{extra}"),
        );
        dir
    };
    // Narrowing is safe: a currency now required, a smaller cap on lines.
    let mut narrower = v1.clone();
    narrower["required"] = json!(["order_id", "amount", "lines", "currency"]);
    narrower["properties"]["lines"]["maxItems"] = json!(2);
    let (ok, text) = check(&with_v2(&narrower, ""));
    assert!(ok, "{text}");

    // Widening breaks v1's readers: each place named, at v2's `schema` key.
    let mut wider = v1.clone();
    wider["required"] = json!(["order_id", "amount"]);
    wider["properties"]["coupon"] = json!({"type": "string"});
    wider["properties"]["currency"] = json!({"enum": ["EUR", "USD", "GBP"]});
    let dir = with_v2(&wider, "");
    let (ok, text) = check(&dir);
    assert!(!ok, "{text}");
    let toml = std::fs::read_to_string(dir.join("streams.toml")).unwrap();
    let line = toml
        .lines()
        .position(|l| l.contains("order_placed.v2.json"))
        .unwrap()
        + 1;
    let head = format!(
        "streams.toml:{line}:10: stream {V2}: schema schemas/order_placed.v2.json breaks readers of {ORDER} (schemas/order_placed.json): "
    );
    for place in [
        "at /required: v1 requires \"lines\", v2 does not",
        "at /properties/coupon: v2 allows property \"coupon\", which v1 refuses",
        "at /properties/currency: v2 allows \"GBP\", which v1 refuses",
    ] {
        assert!(text.contains(&format!("{head}{place}")), "{place}\n{text}");
    }
    assert!(text.contains("compatibility = \"none\""), "{text}");

    // Declared on purpose: accepted. A value outside the two: refused, with its place.
    let (ok, text) = check(&with_v2(&wider, "compatibility = \"none\"\n"));
    assert!(ok, "{text}");
    let (ok, text) = check(&with_v2(&wider, "compatibility = \"backward\"\n"));
    assert!(
        !ok && text.contains(&format!(
            "stream {V2}: compatibility \"backward\" is not one of \"forward\", \"none\""
        )),
        "{text}"
    );

    // A v2 with no schema accepts anything v1 refuses.
    let dir = with_order_stream(ORDER_SCHEMA);
    add_stream(&dir, V2, "");
    let (ok, text) = check(&dir);
    assert!(
        !ok && text.contains(&format!("stream {V2}: has no schema, so it accepts payloads {ORDER} (schemas/order_placed.json) refuses")),
        "{text}"
    );

    // The next version of a stream with a built-in contract is checked against it.
    let trade = "astra.trading.trade_executed.v1";
    let dir = with_order_stream(ORDER_SCHEMA);
    let mut exported = catalog(&dir.path, "jsonschema")[trade].clone();
    assert!(exported.is_object(), "the catalog exports {trade}");
    std::fs::write(dir.join("schemas/trade.v2.json"), exported.to_string()).unwrap();
    add_stream(
        &dir,
        "astra.trading.trade_executed.v2",
        "schema = \"schemas/trade.v2.json\"\n",
    );
    let (ok, text) = check(&dir);
    assert!(ok, "v1's own export is a compatible v2: {text}");
    exported["properties"]["venue"] = json!({"type": "string"});
    std::fs::write(dir.join("schemas/trade.v2.json"), exported.to_string()).unwrap();
    let (ok, text) = check(&dir);
    assert!(
        !ok && text.contains("breaks readers of astra.trading.trade_executed.v1 (its built-in contract): at /properties/venue: v2 allows property \"venue\""),
        "{text}"
    );
}

/// A producer that writes straight into Redis (skipping the edge and `publish`) cannot
/// slip a payload past a stream's schema: the consuming group dead-letters it as
/// malformed, naming the field, and processes the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_dead_letter_a_payload_that_breaks_its_streams_schema() {
    use astra_bus::handlers::Registry;
    use support::bus::{
        InProc, connect, hgetall_int, load, publish_json, streams_toml, wait_until,
    };

    const GROUP: &str = "shop.order_count";
    const DLQ: &str = "astra.bus.dead_letter.v1";
    let server = RedisServer::start();
    let url = server.url();
    let redis = connect(&url).await;
    let streams = streams_toml(&[], "").replacen(
        "[[stream]]",
        &format!(
            "[[stream]]\nname = \"{ORDER}\"\ndescription = \"orders\"\nschema = \"schemas/order.json\"\n\n[[stream]]"
        ),
        1,
    );
    let dir = support::write_config(
        &streams,
        &[(
            "shop",
            &format!(
                "[[group]]\nname = \"{GROUP}\"\nhandler = \"builtin.count_by_user\"\nreads = [\"{ORDER}\"]\n"
            ),
        )],
    );
    std::fs::create_dir_all(dir.join("schemas")).unwrap();
    std::fs::write(
        dir.join("schemas/order.json"),
        json!({
            "type": "object", "required": ["user_id", "amount"],
            "properties": {"user_id": {"type": "string"}, "amount": {"type": "number", "minimum": 0}}
        })
        .to_string(),
    )
    .unwrap();
    let reg = Registry::builtin();
    let cfg = load(&dir.path, &url, "shop-1", &reg);
    astra_bus::bus::declare::declare(&redis, &cfg)
        .await
        .unwrap();
    let d = InProc::start(cfg, reg).await;
    let (good, _) = publish_json(&redis, ORDER, r#"{"user_id":"u1","amount":5}"#, None).await;
    let (typed, _) = publish_json(&redis, ORDER, r#"{"user_id":"u2","amount":"5"}"#, None).await;
    let (negative, _) = publish_json(&redis, ORDER, r#"{"user_id":"u3","amount":-1}"#, None).await;
    wait_until(
        Duration::from_secs(20),
        "one counted, two dead letters",
        || {
            let redis = redis.clone();
            async move {
                hgetall_int(&redis, &format!("astra:count:{GROUP}"))
                    .await
                    .len()
                    == 1
                    && support::bus::xlen(&redis, DLQ).await == 2
            }
        },
    )
    .await;
    d.stop().await;
    let counted = hgetall_int(&redis, &format!("astra:count:{GROUP}")).await;
    assert_eq!(
        counted.into_iter().collect::<Vec<_>>(),
        [("u1".to_string(), 1)],
        "{good}"
    );
    let dead = astra_bus::bus::dlq::list(&redis, DLQ, None, 10)
        .await
        .unwrap();
    let mut got: Vec<(String, String, String)> = dead
        .iter()
        .map(|d| {
            let f = |k: &str| d.get(k).map(str::to_string).unwrap_or_default();
            (f("reason"), f("group"), f("error"))
        })
        .collect();
    got.sort();
    let want = |field: &str, why: &str| {
        (
            "malformed".to_string(),
            GROUP.to_string(),
            format!("payload breaks the schema of {ORDER}: {field}: {why}"),
        )
    };
    let mut expected = vec![
        want("amount", "must be number, got string"),
        want("amount", "must be >= 0, got -1"),
    ];
    expected.sort();
    assert_eq!(got, expected, "dead letters of {typed} and {negative}");
}
