//! The event catalog (`astra-bus catalog`, `GET /asyncapi.json`) checked by third-party
//! tools, both installed by `setup/test`:
//!
//! - the AsyncAPI document is valid AsyncAPI 3.0.0 for the official CLI
//!   (`asyncapi validate`, npm `@asyncapi/cli`), and a corrupted copy is not;
//! - 200 fixtures (valid payloads of the five public streams and mutations of them:
//!   missing field, wrong type, out of range, bad enum, unknown field, too long, bad
//!   character, …; generated from a fixed seed) are judged alike by a real daemon's edge
//!   (202 or 422 naming the field) and by Python's `jsonschema` against the exported
//!   schemas, and as the test meant them; the derived events the handlers then publish
//!   match their exported payload and header schemas;
//! - `/asyncapi.json` is the CLI's document, open like `/openapi.json`, whose publish
//!   routes reference the same payload schemas.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use support::catalog::{asyncapi_validate, catalog, python};
use support::edge::{Binary, get, post, request, shipped_config, unlimited};
use support::{RedisServer, Rng, TempDir};

#[test]
fn the_catalog_is_valid_asyncapi_3_for_the_official_cli() {
    let tmp = TempDir::new("asyncapi");
    let doc = catalog(&support::repo_root(), "asyncapi");
    assert_eq!(doc["asyncapi"], "3.0.0");
    let (ok, text) = asyncapi_validate(&tmp, "asyncapi.json", &doc);
    assert!(ok && text.contains("is valid"), "{text}");
    assert!(text.contains("0 errors, 0 warnings"), "{text}");
    println!(
        "asyncapi validate: {}",
        text.lines()
            .find(|l| l.contains("problem"))
            .unwrap_or("no problems")
    );
    // The validator does refuse what is not AsyncAPI 3.0: an AsyncAPI 2 action, a
    // dangling channel, a schema of an unknown type.
    for (what, corrupt) in [
        (
            "action publish",
            "/operations/gamification.xp_processing.receive.astra.trading.trade_executed.v1/action",
        ),
        (
            "dangling channel",
            "/operations/gamification.xp_processing.send.astra.gamification.level_up.v1/channel",
        ),
        (
            "bad schema type",
            "/components/schemas/astra.trading.trade_executed.v1/properties/side/type",
        ),
    ] {
        let mut bad = doc.clone();
        *bad.pointer_mut(corrupt)
            .unwrap_or_else(|| panic!("{corrupt}")) = match what {
            "action publish" => json!("publish"),
            "dangling channel" => json!({"$ref": "#/channels/astra.nowhere.v1"}),
            _ => json!("strng"),
        };
        let (ok, text) = asyncapi_validate(&tmp, "corrupt.json", &bad);
        assert!(!ok && text.contains("error"), "{what}: {text}");
    }
    // The jsonschema format: one draft-07 schema per stream, each one a valid schema.
    let schemas = catalog(&support::repo_root(), "jsonschema");
    assert_eq!(schemas.as_object().unwrap().len(), 20);
    let checked = python(&tmp, "check", &schemas, &[]);
    assert_eq!(checked.len(), 20, "{checked:?}");
}

// ---------------------------------------------------------------------------------------
// Fixtures: the public contracts as the README documents them, written here on their
// own (not read from the exported schemas, so a bound missing there is caught).
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum F {
    Id(usize),
    Sym(usize),
    Text(usize),
    Enum(&'static [&'static str]),
    Num { min: f64, excl: bool, max: f64 },
}

const ID: F = F::Id(128);

/// (stream, [(field, kind, required)]).
type Contract = (&'static str, &'static [(&'static str, F, bool)]);

const CONTRACTS: [Contract; 5] = [
    (
        "astra.trading.trade_executed.v1",
        &[
            ("trade_id", ID, true),
            ("user_id", ID, true),
            ("symbol", F::Sym(32), true),
            ("side", F::Enum(&["buy", "sell"]), true),
            (
                "quantity",
                F::Num {
                    min: 0.0,
                    excl: true,
                    max: 1e6,
                },
                true,
            ),
            (
                "price_usd",
                F::Num {
                    min: 0.0,
                    excl: true,
                    max: 1e6,
                },
                true,
            ),
            (
                "fee_usd",
                F::Num {
                    min: 0.0,
                    excl: false,
                    max: 1e6,
                },
                false,
            ),
        ],
    ),
    (
        "astra.social.interaction.v1",
        &[
            ("user_id", ID, true),
            ("target_user_id", ID, true),
            (
                "kind",
                F::Enum(&["like", "comment", "share", "follow"]),
                true,
            ),
        ],
    ),
    (
        "astra.user.registered.v1",
        &[
            ("user_id", ID, true),
            ("display_name", F::Text(64), true),
            ("clan", F::Id(64), false),
        ],
    ),
    (
        "astra.financial.subscription_changed.v1",
        &[
            ("user_id", ID, true),
            ("plan", F::Id(64), true),
            (
                "action",
                F::Enum(&["started", "renewed", "cancelled"]),
                true,
            ),
            (
                "price_usd",
                F::Num {
                    min: 0.0,
                    excl: false,
                    max: 1e5,
                },
                true,
            ),
        ],
    ),
    (
        "astra.nft.sale_completed.v1",
        &[
            ("sale_id", ID, true),
            ("collection", ID, true),
            ("token_id", ID, true),
            ("seller_id", ID, true),
            ("buyer_id", ID, true),
            (
                "price_usd",
                F::Num {
                    min: 0.0,
                    excl: true,
                    max: 1e7,
                },
                true,
            ),
        ],
    ),
];

/// One fixture: the stream, what it tests, the payload, whether it should be accepted,
/// and the field a refusal must name.
struct Fixture {
    stream: &'static str,
    label: String,
    payload: Value,
    valid: bool,
    field: Option<String>,
}

/// Valid values of a field (the first is the base payload's; `n` makes ids distinct).
fn valid_values(f: F, n: u64) -> Vec<Value> {
    match f {
        F::Id(max) => vec![
            json!(format!("u{n}")),
            json!("A.b_c:d@e-9"),
            json!("x".repeat(max)),
            json!("z"),
        ],
        F::Sym(max) => vec![
            json!("BTC"),
            json!("ETH-USD"),
            json!("a/b._-"),
            json!("S".repeat(max)),
        ],
        F::Text(max) => vec![
            json!("Ada Lovelace"),
            json!("é".repeat(max)),
            json!("😀".repeat(max)),
            json!("a"),
        ],
        F::Enum(vs) => vs.iter().map(|v| json!(v)).collect(),
        F::Num { min, excl, max } => {
            let mut v = vec![json!(2.5), json!(max), json!(1), json!(min + 1e-6)];
            if !excl {
                v.push(json!(min));
            }
            v
        }
    }
}

/// (what, value) that break a field.
fn invalid_values(f: F) -> Vec<(&'static str, Value)> {
    let mut v = match f {
        F::Id(max) => vec![
            ("too_long", json!("x".repeat(max + 1))),
            ("empty", json!("")),
            ("space", json!("a b")),
            ("brace", json!("{tag}")),
            ("trailing_newline", json!("ab\n")),
            ("non_ascii", json!("é")),
        ],
        F::Sym(max) => vec![
            ("too_long", json!("S".repeat(max + 1))),
            ("empty", json!("")),
            ("space", json!("BTC USD")),
            ("colon", json!("BTC:1")),
            ("trailing_newline", json!("BTC\n")),
        ],
        F::Text(max) => vec![
            ("too_long", json!("é".repeat(max + 1))),
            ("empty", json!("")),
            ("control", json!("a\u{7}b")),
            ("trailing_newline", json!("Ada\n")),
            ("c1_control", json!("a\u{85}")),
        ],
        F::Enum(vs) => vec![
            ("upper_case", json!(vs[0].to_uppercase())),
            ("other", json!("hold")),
            ("empty", json!("")),
            ("padded", json!(format!("{} ", vs[0]))),
        ],
        F::Num { min, excl, max } => {
            let mut v = vec![
                ("below", json!(min - 1.0)),
                ("above", json!(max * 1.000001)),
                ("far_above", json!(1e300)),
                ("string", json!("1")),
            ];
            if excl {
                v.push(("at_exclusive_min", json!(min)));
            }
            v
        }
    };
    let number = matches!(f, F::Num { .. });
    v.push(("null", Value::Null));
    v.push(("bool", json!(true)));
    v.push(("array", json!([1])));
    v.push(("object", json!({"a": 1})));
    v.push(("wrong_type", if number { json!("lots") } else { json!(5) }));
    v
}

/// Every candidate of one contract, in a fixed order.
fn candidates(c: &Contract, n: &mut u64) -> Vec<Fixture> {
    let (stream, fields) = *c;
    let mut base = Map::new();
    let mut next_base = |n: &mut u64| {
        *n += 1;
        for (name, f, _) in fields {
            base.insert(name.to_string(), valid_values(*f, *n)[0].clone());
        }
        base.clone()
    };
    let mut out = vec![];
    let mut add = |label: String, payload: Value, valid: bool, field: Option<&str>| {
        out.push(Fixture {
            stream,
            label,
            payload,
            valid,
            field: field.map(str::to_string),
        });
    };
    add("base".into(), Value::Object(next_base(n)), true, None);
    for (name, f, required) in fields {
        for v in valid_values(*f, 0).into_iter().skip(1) {
            let mut p = next_base(n);
            p.insert(name.to_string(), v);
            add(format!("{name}:valid"), Value::Object(p), true, None);
        }
        for (what, v) in invalid_values(*f) {
            let mut p = next_base(n);
            p.insert(name.to_string(), v);
            add(
                format!("{name}:{what}"),
                Value::Object(p),
                false,
                Some(name),
            );
        }
        let mut p = next_base(n);
        p.remove(*name);
        let label = if *required {
            "missing_required"
        } else {
            "missing_optional"
        };
        add(
            format!("{name}:{label}"),
            Value::Object(p),
            !required,
            required.then_some(*name),
        );
    }
    let mut p = next_base(n);
    p.insert("extra".into(), json!(1));
    add(
        "unknown_field".into(),
        Value::Object(p),
        false,
        Some("extra"),
    );
    let mut p = next_base(n);
    p.insert("Extra_null".into(), Value::Null);
    add(
        "unknown_null_field".into(),
        Value::Object(p),
        false,
        Some("Extra_null"),
    );
    add("array_payload".into(), json!([next_base(n)]), false, None);
    add("string_payload".into(), json!("trade"), false, None);
    add("empty_object".into(), json!({}), false, Some(fields[0].0));
    out
}

/// 200 fixtures, 40 per contract: from a seeded shuffle of its candidates, one of every
/// kind (valid variant, each mutation) first, then valid and invalid ones alternately.
fn fixtures() -> Vec<Fixture> {
    let mut rng = Rng(0x00c0_ffee_5eed);
    let mut n = 0;
    let mut all = vec![];
    for c in &CONTRACTS {
        let mut cands = candidates(c, &mut n);
        for i in (1..cands.len()).rev() {
            cands.swap(i, rng.range(0, i as u64 + 1) as usize);
        }
        let kind = |f: &Fixture| f.label.rsplit(':').next().unwrap().to_string();
        let mut kinds = std::collections::BTreeSet::new();
        let (mut first, mut valid, mut invalid) = (vec![], vec![], vec![]);
        for f in cands {
            if kinds.insert(kind(&f)) {
                first.push(f)
            } else if f.valid {
                valid.push(f)
            } else {
                invalid.push(f)
            }
        }
        assert!(
            first.len() <= 40 && first.len() + valid.len() + invalid.len() >= 40,
            "{}",
            c.0
        );
        // The rest alternately valid and invalid, so about a quarter are accepted.
        let (mut valid, mut invalid) = (valid.into_iter(), invalid.into_iter());
        while first.len() < 40 {
            let pick = if first.len() % 2 == 0 {
                valid.next().or_else(|| invalid.next())
            } else {
                invalid.next().or_else(|| valid.next())
            };
            first.extend(pick);
        }
        all.extend(first);
    }
    all
}

/// Waits until every group has read and committed everything.
fn drained(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (s, body) = get(port, "/v1/groups").unwrap();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let rows = v["groups"].as_array().cloned().unwrap_or_default();
        if s == 200 && !rows.is_empty() && rows.iter().all(|r| r["lag"] == 0 && r["pending"] == 0) {
            return;
        }
        assert!(Instant::now() < deadline, "groups not drained: {body}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn fixtures_are_judged_alike_by_the_edge_and_the_exported_schemas() {
    let server = RedisServer::start();
    let logs = TempDir::new("catalog-logs");
    let tmp = TempDir::new("catalog");
    let dir = shipped_config(unlimited);
    let mut d = Binary::start(
        &dir.path,
        "all",
        &[("ASTRA_REDIS_URL", server.url())],
        &logs,
    );
    d.wait_ready(&[]);
    let schemas = catalog(&dir.path, "jsonschema");
    let doc = catalog(&dir.path, "asyncapi");

    // /asyncapi.json is the CLI's document.
    let (s, body) = get(d.port, "/asyncapi.json").unwrap();
    assert_eq!(s, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), doc);

    let fx = fixtures();
    assert_eq!(fx.len(), 200);
    let mut edge = vec![];
    for f in &fx {
        let (status, body) = post(
            d.port,
            &format!("/v1/events/{}", f.stream),
            &[],
            &f.payload.to_string(),
        );
        assert!(
            status == 202 || status == 422,
            "{} {}: {status} {body}",
            f.stream,
            f.label
        );
        if status == 422 {
            let e: Value = serde_json::from_str(&body).unwrap();
            if let Some(field) = &f.field {
                assert_eq!(
                    e["field"],
                    field.as_str(),
                    "{} {}: {body}",
                    f.stream,
                    f.label
                );
            }
        }
        edge.push(status == 202);
    }
    let jobs: Vec<(String, Value)> = fx
        .iter()
        .map(|f| (f.stream.to_string(), f.payload.clone()))
        .collect();
    let py = python(&tmp, "validate", &schemas, &jobs);
    let mut tally: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
    let mut python_re_differs = vec![];
    for ((f, e), p) in fx.iter().zip(&edge).zip(&py) {
        let schema_ok = p[0].as_bool().unwrap();
        assert!(
            *e == schema_ok && *e == f.valid,
            "{} {}: meant {}, edge {}, schema {} ({}) payload {}",
            f.stream,
            f.label,
            f.valid,
            e,
            schema_ok,
            p[2],
            f.payload
        );
        if p[1].as_bool() != Some(schema_ok) {
            python_re_differs.push(format!("{} {}", f.stream, f.label));
        }
        let t = tally.entry(f.stream).or_default();
        t[if *e { 0 } else { 1 }] += 1;
        t[if schema_ok { 2 } else { 3 }] += 1;
    }
    println!(
        "fixtures: {} (edge accepted/refused, schema valid/invalid)",
        fx.len()
    );
    for (s, t) in &tally {
        println!(
            "  {s:<42} edge {:>2}/{:<2} schema {:>2}/{:<2}",
            t[0], t[1], t[2], t[3]
        );
    }
    let accepted = edge.iter().filter(|a| **a).count();
    println!(
        "  total: {accepted} accepted and valid, {} refused and invalid, 0 disagreements",
        fx.len() - accepted
    );
    println!(
        "  with Python re's own `$` (a final newline allowed) jsonschema would accept {} of them: {:?}",
        python_re_differs.len(),
        python_re_differs
    );
    assert!(accepted >= 40 && fx.len() - accepted >= 100, "{accepted}");

    // The handlers' derived events match the exported payload and header schemas. A
    // user with a clan and one large trade of theirs reach the streams the fixtures'
    // one-off users do not (level up, clan score, risk alert, compliance flag).
    drained(d.port, Duration::from_secs(120));
    let story = [
        (
            "astra.user.registered.v1",
            json!({"user_id": "story", "display_name": "Story", "clan": "owls"}),
        ),
        (
            "astra.trading.trade_executed.v1",
            json!({"trade_id": "story-1", "user_id": "story",
            "symbol": "BTC", "side": "buy", "quantity": 10, "price_usd": 20000, "fee_usd": 5}),
        ),
    ];
    for (stream, payload) in story {
        let (s, body) = post(
            d.port,
            &format!("/v1/events/{stream}"),
            &[],
            &payload.to_string(),
        );
        assert_eq!(s, 202, "{body}");
        drained(d.port, Duration::from_secs(120));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut named = schemas.as_object().unwrap().clone();
    let mut jobs = vec![];
    let mut counts = BTreeMap::new();
    let mut dead_letters = vec![];
    rt.block_on(async {
        let redis = support::bus::connect(&server.url()).await;
        for (name, m) in doc["components"]["messages"].as_object().unwrap() {
            let mut h = m["headers"].clone();
            h["$schema"] = json!("http://json-schema.org/draft-07/schema#");
            named.insert(format!("headers:{name}"), h);
            let raw = support::bus::read_raw(&redis, name).await;
            counts.insert(name.clone(), raw.len());
            if name.ends_with("dead_letter.v1") {
                for fields in raw {
                    let dlq: Vec<_> = fields
                        .iter()
                        .filter(|(k, _)| k.starts_with("dlq_"))
                        .collect();
                    println!("dead letter: {dlq:?}");
                    dead_letters.push(format!("{dlq:?}"));
                    let o: Map<String, Value> =
                        fields.into_iter().map(|(k, v)| (k, json!(v))).collect();
                    jobs.push((format!("headers:{name}"), Value::Object(o)));
                }
                continue;
            }
            for (fields, (_, env)) in raw
                .into_iter()
                .zip(support::bus::read_all(&redis, name).await)
            {
                let o: Map<String, Value> = fields
                    .into_iter()
                    .filter(|(k, _)| k != "data")
                    .map(|(k, v)| (k, json!(v)))
                    .collect();
                jobs.push((format!("headers:{name}"), Value::Object(o)));
                jobs.push((name.clone(), env.data_as_json().unwrap()));
            }
        }
    });
    let py = python(&tmp, "validate", &Value::Object(named), &jobs);
    for ((name, v), p) in jobs.iter().zip(&py) {
        assert_eq!(p[0], true, "{name}: {} in {v}", p[2]);
    }
    println!("entries on every stream after the fixtures (all match their schemas): {counts:?}");
    let empty: Vec<_> = counts
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(s, _)| s.as_str())
        .collect();
    assert!(empty.is_empty(), "streams never written: {empty:?}");
    // No accepted input is dead-lettered, but for one known gap: the public contract takes
    // any sale price > 0, nft.marketplace refuses one under half a cent (0 cents) as
    // poison. Pinned here so that any other dead letter fails.
    let sub_cent_sales = fx
        .iter()
        .zip(&edge)
        .filter(|(f, e)| **e && f.stream == "astra.nft.sale_completed.v1")
        .filter(|(f, _)| f.payload["price_usd"].as_f64().is_some_and(|p| p < 0.005))
        .count();
    assert_eq!(
        counts["astra.bus.dead_letter.v1"], sub_cent_sales,
        "{dead_letters:?}"
    );
    assert!(
        dead_letters
            .iter()
            .all(|e| e.contains("nft.marketplace") && e.contains("rounds to 0 cents")),
        "{dead_letters:?}"
    );
}

#[test]
fn asyncapi_json_is_open_like_openapi_json_and_shares_its_payload_schemas() {
    let server = RedisServer::start();
    let logs = TempDir::new("catalog-logs");
    let dir = shipped_config(|t| t);
    let keys = dir.join("keys.toml");
    let sha = astra_bus::config::hex(&astra_bus::config::key_sha256("ops-secret"));
    std::fs::write(
        &keys,
        format!("[[key]]\nname = \"ops\"\nsha256 = \"{sha}\"\nscopes = [\"ops\"]\n"),
    )
    .unwrap();
    let env = [
        ("ASTRA_REDIS_URL", server.url()),
        ("ASTRA_EDGE_AUTH", "keys".to_string()),
        ("ASTRA_EDGE_OPS", "keys".to_string()),
        ("ASTRA_EDGE_KEYS_FILE", keys.to_string_lossy().into_owned()),
    ];
    let d = Binary::start(&dir.path, "edge", &env, &logs);
    assert_eq!(get(d.port, "/metrics").unwrap().0, 401);
    let (s, body) = get(d.port, "/asyncapi.json").unwrap();
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        catalog(&dir.path, "asyncapi")
    );
    let (s, _) = request(
        d.port,
        "GET",
        "/asyncapi.json",
        &[("Authorization", "Bearer wrong")],
        b"",
    )
    .unwrap();
    assert_eq!(s, 200);

    // /openapi.json's publish routes reference the catalog's payload schemas.
    let api: Value = serde_json::from_str(&get(d.port, "/openapi.json").unwrap().1).unwrap();
    assert!(api["paths"]["/asyncapi.json"]["get"].is_object());
    let schemas = catalog(&dir.path, "jsonschema");
    for (stream, _) in CONTRACTS {
        let body = &api["paths"][format!("/v1/events/{stream}")]["post"]["requestBody"]["content"];
        let r = json!({"$ref": format!("#/components/schemas/{stream}")});
        assert_eq!(body["application/json"]["schema"], r, "{stream}");
        assert_eq!(
            body["application/vnd.astra.envelope+json"]["schema"]["properties"]["data"],
            r
        );
        let ours = &api["components"]["schemas"][stream];
        let theirs = astra_bus::catalog::openapi_30(&schemas[stream]);
        for k in ["required", "properties", "additionalProperties", "type"] {
            assert_eq!(ours[k], theirs[k], "{stream} {k}");
        }
    }
}
