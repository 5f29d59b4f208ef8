//! The HTTP edge against real Redis and the real server on a loopback port: every route,
//! every status code (400/401/403/404/405/413/415/422/429/503), idempotent retries,
//! correlation ids into the stream entry, two edge instances sharing one rate limit,
//! publishing while Redis is down, random bodies and headers without a 5xx, and the seed
//! routes answering after the end-to-end scenario's events went through the edge.

mod support;

use std::time::Duration;

use astra_bus::bus::Redis;
use astra_bus::bus::client::{arg, as_array, as_string, parse_entries};
use astra_bus::config::{Config, hex, key_sha256};
use astra_bus::daemon::Role;
use astra_bus::events::streams;
use astra_bus::handlers::{Registry, social};
use serde_json::{Value, json};
use support::bus::*;
use support::{RedisServer, TempDir, free_port, shipped_config_copy};

const TRADE: &str = streams::TRADE_EXECUTED;

fn trade(id: &str, user: &str) -> Value {
    json!({"trade_id": id, "user_id": user, "symbol": "BTC", "side": "buy", "quantity": 0.5, "price_usd": 100.0})
}

/// The shipped config with `edit` applied to streams.toml, the edge on a free port.
fn config(url: &str, edit: impl Fn(String) -> String) -> (TempDir, Config, u16) {
    let dir = shipped_config_copy();
    let p = dir.join("streams.toml");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("block = \"2s\"", "block = \"100ms\"")
        .replace("refresh_interval = \"5s\"", "refresh_interval = \"200ms\"");
    std::fs::write(&p, edit(text)).unwrap();
    let port = free_port();
    let url = url.to_string();
    let cfg = Config::load_for(
        &dir.path,
        move |k| match k {
            "ASTRA_REDIS_URL" => Some(url.clone()),
            "ASTRA_INSTANCE" => Some("edge-test".into()),
            "ASTRA_HTTP_LISTEN" => Some(format!("127.0.0.1:{port}")),
            _ => None,
        },
        &Registry::builtin(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (dir, cfg, port)
}

async fn entry_fields(redis: &Redis, stream: &str, entry: &str) -> Vec<(String, String)> {
    let v = redis
        .cmd("XRANGE", vec![arg(stream), arg(entry), arg(entry)])
        .await
        .unwrap();
    let e = parse_entries(v).into_iter().next().expect("entry stored");
    e.fields
        .expect("entry has a body")
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k.as_ref()).into_owned(),
                String::from_utf8_lossy(v.as_ref()).into_owned(),
            )
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn assert_error(r: &HttpReply, status: u16, code: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    let j = r.json();
    assert_eq!(j["error"], code, "{j}");
    assert!(j["detail"].as_str().is_some_and(|d| !d.is_empty()), "{j}");
    assert!(r.header("x-correlation-id").is_some(), "{r:?}");
    j
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_keeps_correlation_and_trace_ids_in_the_entry() {
    let server = RedisServer::start();
    let (_dir, cfg, port) = config(&server.url(), |t| t);
    let daemon = InProc::start(cfg, Registry::builtin()).await;
    let redis = connect(&server.url()).await;

    // One event with a correlation id and a traceparent.
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = post_json(
        port,
        &format!("/v1/events/{TRADE}"),
        &[("X-Correlation-ID", "order-42"), ("traceparent", tp)],
        &trade("t1", "u1"),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.header("x-correlation-id"), Some("order-42"));
    assert!(r.header("x-ratelimit-limit").is_some(), "{r:?}");
    let j = r.json();
    assert_eq!(j["cid"], "order-42");
    assert_eq!(j["stream"], TRADE);
    let f = entry_fields(&redis, TRADE, j["entry_id"].as_str().unwrap()).await;
    assert_eq!(field(&f, "cid"), Some("order-42"));
    assert_eq!(field(&f, "tp"), Some(tp));
    assert_eq!(field(&f, "id"), j["event_id"].as_str());
    assert_eq!(field(&f, "type"), Some("trading.trade_executed"));
    assert_eq!(field(&f, "src"), Some("edge"));

    // Without a correlation id one is generated, echoed and stored; a malformed
    // traceparent is ignored (W3C), not stored.
    let r = post_json(
        port,
        &format!("/v1/events/{TRADE}"),
        &[("traceparent", "garbage")],
        &trade("t2", "u1"),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let cid = r.header("x-correlation-id").unwrap().to_string();
    let j = r.json();
    assert_eq!(j["cid"], cid.as_str());
    let f = entry_fields(&redis, TRADE, j["entry_id"].as_str().unwrap()).await;
    assert_eq!(field(&f, "cid"), Some(cid.as_str()));
    assert_eq!(field(&f, "tp"), None);

    // A full envelope: the client's cid and ts (within edge.envelope_skew) are kept, its
    // event id is namespaced by producer (a UUID derived from the producer and the id).
    let ts = astra_bus::envelope::now_ms() - 60_000;
    let env = json!({"id": "client-id-1", "cid": "env-cid", "ts": ts,
                     "type": "trading.trade_executed", "v": 1, "data": trade("t3", "u2")});
    let r = http(
        port,
        "POST",
        &format!("/v1/events/{TRADE}"),
        &[("Content-Type", "application/vnd.astra.envelope+json")],
        env.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let j = r.json();
    let event_id = j["event_id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&event_id).is_ok(), "{event_id}");
    let f = entry_fields(&redis, TRADE, j["entry_id"].as_str().unwrap()).await;
    assert_eq!(field(&f, "cid"), Some("env-cid"));
    assert_eq!(field(&f, "ts"), Some(ts.to_string().as_str()));
    assert_eq!(field(&f, "id"), Some(event_id.as_str()));

    // A batch across two streams, in order.
    let before_reg = xlen(&redis, streams::REGISTERED).await;
    let r = post_json(
        port,
        "/v1/events",
        &[("X-Correlation-ID", "batch-1")],
        &json!({"events": [
            {"stream": streams::REGISTERED, "data": {"user_id": "b1", "display_name": "B1"}},
            {"stream": TRADE, "data": trade("t4", "b1")},
            {"stream": streams::REGISTERED, "data": {"user_id": "b2", "display_name": "B2"}},
        ]}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let items = r.json()["events"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3);
    assert_eq!(xlen(&redis, streams::REGISTERED).await, before_reg + 2);
    for (item, stream) in items
        .iter()
        .zip([streams::REGISTERED, TRADE, streams::REGISTERED])
    {
        assert_eq!(item["stream"], stream);
        let f = entry_fields(&redis, stream, item["entry_id"].as_str().unwrap()).await;
        assert_eq!(field(&f, "cid"), Some("batch-1"));
        assert_eq!(field(&f, "id"), item["event_id"].as_str());
    }
    // The handlers consume what the edge published: XP for u1's two trades.
    wait_until(Duration::from_secs(20), "xp for u1", || async {
        hgetall_int(&redis, &astra_bus::handlers::gamification::xp_key())
            .await
            .contains_key("u1")
    })
    .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_a_json_4xx() {
    let server = RedisServer::start();
    let (_dir, cfg, port) = config(&server.url(), |t| {
        t.replace("max_body_bytes = 1048576", "max_body_bytes = 4096")
            .replace("max_batch = 500", "max_batch = 3")
    });
    let daemon = InProc::start_role(cfg, Registry::builtin(), Role::Edge).await;
    let redis = connect(&server.url()).await;
    let path = format!("/v1/events/{TRADE}");
    let ct = [("Content-Type", "application/json")];

    // 400: not JSON; a malformed correlation id; a bad X-User-ID; a bad Idempotency-Key.
    let r = http(port, "POST", &path, &ct, b"{not json").await;
    assert_error(&r, 400, "invalid_json");
    let r = post_json(
        port,
        &path,
        &[("X-Correlation-ID", "has space")],
        &trade("t", "u"),
    )
    .await;
    assert_eq!(
        assert_error(&r, 400, "invalid_header")["header"],
        "X-Correlation-ID"
    );
    let r = post_json(port, &path, &[("X-User-ID", "")], &trade("t", "u")).await;
    assert_error(&r, 400, "invalid_header");
    let long = "k".repeat(300);
    let r = post_json(port, &path, &[("Idempotency-Key", &long)], &trade("t", "u")).await;
    assert_error(&r, 400, "invalid_header");
    let r = http(
        port,
        "GET",
        "/api/v1/gamification/leaderboard/daily?limit=0",
        &[],
        b"",
    )
    .await;
    assert_error(&r, 400, "invalid_query");
    let r = http(port, "GET", "/api/v1/social/feed?bogus=1", &[], b"").await;
    assert_error(&r, 400, "invalid_query");

    // 403: a stream the handlers write.
    let r = post_json(
        port,
        &format!("/v1/events/{}", streams::XP_AWARDED),
        &[],
        &json!({}),
    )
    .await;
    assert_error(&r, 403, "stream_not_publishable");

    // 404: an undeclared stream, an unknown route, an unknown board, an unknown user.
    let r = post_json(port, "/v1/events/astra.nope.thing.v1", &[], &json!({})).await;
    assert_error(&r, 404, "unknown_stream");
    let r = http(port, "GET", "/nope", &[], b"").await;
    assert_error(&r, 404, "no_route");
    let r = http(
        port,
        "GET",
        "/api/v1/gamification/leaderboard/monthly",
        &[],
        b"",
    )
    .await;
    assert_error(&r, 404, "unknown_board");
    let r = http(
        port,
        "GET",
        "/api/v1/gamification/user/nobody/profile",
        &[],
        b"",
    )
    .await;
    assert_error(&r, 404, "unknown_user");

    // 405: a known route with the wrong method.
    let r = http(port, "GET", &path, &[], b"").await;
    assert_error(&r, 405, "method_not_allowed");

    // 413: a body over max_body_bytes; 422: a batch over max_batch.
    let big = json!({"pad": "x".repeat(5000)});
    let r = post_json(port, &path, &[], &big).await;
    assert_error(&r, 413, "payload_too_large");
    let four: Vec<Value> = (0..4)
        .map(|i| json!({"stream": TRADE, "data": trade(&format!("t{i}"), "u")}))
        .collect();
    let r = post_json(port, "/v1/events", &[], &json!({ "events": four })).await;
    assert_error(&r, 422, "batch_too_large");

    // 415: another content type, or none.
    let r = http(
        port,
        "POST",
        &path,
        &[("Content-Type", "text/plain")],
        b"{}",
    )
    .await;
    assert_error(&r, 415, "unsupported_media_type");
    let r = http(port, "POST", &path, &[], b"{}").await;
    assert_error(&r, 415, "unsupported_media_type");

    // 422: the field and the reason; in a batch also the index, and nothing is stored.
    let mut bad = trade("t", "u");
    bad["quantity"] = json!("lots");
    let r = post_json(port, &path, &[], &bad).await;
    let j = assert_error(&r, 422, "invalid_payload");
    assert_eq!(j["field"], "quantity", "{j}");
    let r = post_json(port, &path, &[], &json!({"trade_id": "t"})).await;
    let j = assert_error(&r, 422, "invalid_payload");
    assert_eq!(j["field"], "user_id", "{j}");
    let before = xlen(&redis, TRADE).await;
    let r = post_json(
        port,
        "/v1/events",
        &[],
        &json!({"events": [
            {"stream": TRADE, "data": trade("ok", "u")},
            {"stream": TRADE, "data": {"trade_id": "x", "user_id": "u", "symbol": "B", "side": "hold", "quantity": 1, "price_usd": 1}},
        ]}),
    )
    .await;
    let j = assert_error(&r, 422, "invalid_payload");
    assert_eq!(j["index"], 1, "{j}");
    assert_eq!(j["field"], "side", "{j}");
    assert_eq!(xlen(&redis, TRADE).await, before, "all or nothing");
    // An envelope whose type does not match the stream.
    let r = http(
        port,
        "POST",
        &path,
        &[("Content-Type", "application/vnd.astra.envelope+json")],
        json!({"type": "user.registered", "data": trade("t", "u")})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(assert_error(&r, 422, "invalid_payload")["field"], "type");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_retry_returns_the_first_answer_and_stores_nothing() {
    let server = RedisServer::start();
    let (_dir, cfg, port) = config(&server.url(), |t| t);
    let daemon = InProc::start_role(cfg, Registry::builtin(), Role::Edge).await;
    let redis = connect(&server.url()).await;
    let path = format!("/v1/events/{TRADE}");
    let first = post_json(
        port,
        &path,
        &[("Idempotency-Key", "k-1")],
        &trade("t1", "u1"),
    )
    .await;
    assert_eq!(first.status, 202, "{}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None);
    for _ in 0..3 {
        let again = post_json(
            port,
            &path,
            &[("Idempotency-Key", "k-1")],
            &trade("t1", "u1"),
        )
        .await;
        assert_eq!(again.status, 202, "{}", again.body);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.json()["event_id"], first.json()["event_id"]);
        assert_eq!(again.json()["entry_id"], first.json()["entry_id"]);
    }
    assert_eq!(xlen(&redis, TRADE).await, 1);
    // The same key for a different request is refused, and stores nothing.
    let other = post_json(
        port,
        &path,
        &[("Idempotency-Key", "k-1")],
        &trade("t2", "u1"),
    )
    .await;
    assert_error(&other, 409, "idempotency_key_reused");
    assert_eq!(xlen(&redis, TRADE).await, 1);
    // A batch across two streams, retried: the same ids, nothing new.
    let batch = json!({"events": [
        {"stream": TRADE, "data": trade("t3", "u1")},
        {"stream": streams::REGISTERED, "data": {"user_id": "u9", "display_name": "Nine"}},
    ]});
    let a = post_json(port, "/v1/events", &[("Idempotency-Key", "b-1")], &batch).await;
    let b = post_json(port, "/v1/events", &[("Idempotency-Key", "b-1")], &batch).await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(b.status, 202, "{}", b.body);
    assert_eq!(a.json()["events"], b.json()["events"]);
    assert_eq!(b.header("idempotent-replayed"), Some("true"));
    assert_eq!(xlen(&redis, TRADE).await, 2);
    assert_eq!(xlen(&redis, streams::REGISTERED).await, 1);
    // Concurrent retries of one new key: exactly one event is stored.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let path = path.clone();
        set.spawn(async move {
            post_json(
                port,
                &path,
                &[("Idempotency-Key", "race")],
                &trade("t4", "u1"),
            )
            .await
        });
    }
    let mut ids = std::collections::BTreeSet::new();
    while let Some(r) = set.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 202, "{}", r.body);
        ids.insert(r.json()["entry_id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(xlen(&redis, TRADE).await, 3);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_required_scoped_and_ops_routes_configurable() {
    let server = RedisServer::start();
    let trading_key = "trading-secret";
    let reader_key = "reader-secret";
    let ops_key = "ops-secret";
    let keys = format!(
        "[[edge.key]]\nname = \"trading-app\"\nsha256 = \"{}\"\nscopes = [\"publish:astra.trading.*\"]\nuser = \"svc-trading\"\n\n\
         [[edge.key]]\nname = \"reader\"\nsha256 = \"{}\"\nscopes = [\"read\"]\n\n\
         [[edge.key]]\nname = \"ops\"\nsha256 = \"{}\"\nscopes = [\"ops\"]\n\n",
        hex(&key_sha256(trading_key)),
        hex(&key_sha256(reader_key)),
        hex(&key_sha256(ops_key)),
    );
    let (_dir, cfg, port) = config(&server.url(), |t| {
        t.replace("auth = \"off\"", "auth = \"keys\"")
            .replace("# ops = \"keys\"", "ops = \"keys\"")
            .replace("[edge.rate_limit]\n", &format!("{keys}[edge.rate_limit]\n"))
    });
    let daemon = InProc::start_role(cfg, Registry::builtin(), Role::Edge).await;
    let redis = connect(&server.url()).await;
    let path = format!("/v1/events/{TRADE}");
    let bearer = |k: &str| format!("Bearer {k}");

    // 401 without a key or with an unknown one, with the Bearer challenge.
    let r = post_json(port, &path, &[], &trade("t", "u")).await;
    assert_error(&r, 401, "unauthorized");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    let r = post_json(
        port,
        &path,
        &[("Authorization", "Bearer wrong")],
        &trade("t", "u"),
    )
    .await;
    assert_error(&r, 401, "unauthorized");
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    // In scope: 202 and `src` names the key; out of scope: 403; for another user than
    // the key's fixed one: 403.
    let r = post_json(
        port,
        &path,
        &[("Authorization", &bearer(trading_key))],
        &trade("t", "u"),
    )
    .await;
    assert_error(&r, 403, "user_mismatch");
    let r = post_json(
        port,
        &path,
        &[("Authorization", &bearer(trading_key))],
        &trade("t", "svc-trading"),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let f = entry_fields(&redis, TRADE, r.json()["entry_id"].as_str().unwrap()).await;
    assert_eq!(field(&f, "src"), Some("trading-app"));
    let r = post_json(
        port,
        &format!("/v1/events/{}", streams::REGISTERED),
        &[("Authorization", &bearer(trading_key))],
        &json!({"user_id": "u", "display_name": "U"}),
    )
    .await;
    assert_error(&r, 403, "out_of_scope");
    // The seed trading route needs the same publish scope; user_id defaults to the key's user.
    let r = post_json(
        port,
        "/api/v1/trading/execute",
        &[("Authorization", &bearer(trading_key))],
        &json!({"symbol": "ETH", "side": "sell", "quantity": 1, "price_usd": 10}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(r.json()["trade_id"].as_str().is_some());
    // Reads need the read scope.
    let feed = "/api/v1/social/feed";
    let r = http(
        port,
        "GET",
        feed,
        &[("Authorization", &bearer(trading_key))],
        b"",
    )
    .await;
    assert_error(&r, 403, "out_of_scope");
    let r = http(
        port,
        "GET",
        feed,
        &[("Authorization", &bearer(reader_key))],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Ops routes keyed: 401 without, 403 with a key lacking `ops`, 200 with it.
    let r = http(port, "GET", "/metrics", &[], b"").await;
    assert_error(&r, 401, "unauthorized");
    let r = http(
        port,
        "GET",
        "/metrics",
        &[("Authorization", &bearer(reader_key))],
        b"",
    )
    .await;
    assert_error(&r, 403, "out_of_scope");
    let r = http(
        port,
        "GET",
        "/metrics",
        &[("Authorization", &bearer(ops_key))],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("astra_bus_http_requests_total"),
        "{}",
        r.body
    );
    daemon.stop().await;
}

#[test]
fn auth_off_on_a_public_address_is_refused_with_the_fix() {
    let dir = shipped_config_copy();
    let err = Config::load_with_env(&dir.path, |k| match k {
        "ASTRA_HTTP_LISTEN" => Some("0.0.0.0:8000".into()),
        _ => None,
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("not loopback"), "{err}");
    assert!(err.contains("edge.auth = \"keys\""), "{err}");
    // Keys mode without keys is refused too; with a keys file it starts.
    let err = Config::load_with_env(&dir.path, |k| match k {
        "ASTRA_HTTP_LISTEN" => Some("0.0.0.0:8000".into()),
        "ASTRA_EDGE_AUTH" => Some("keys".into()),
        _ => None,
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("no keys"), "{err}");
    let keys = dir.join("edge-keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[key]]\nname = \"app\"\nsha256 = \"{}\"\nscopes = [\"*\"]\n",
            hex(&key_sha256("s"))
        ),
    )
    .unwrap();
    let keys_path = keys.to_string_lossy().into_owned();
    let cfg = Config::load_with_env(&dir.path, |k| match k {
        "ASTRA_HTTP_LISTEN" => Some("0.0.0.0:8000".into()),
        "ASTRA_EDGE_AUTH" => Some("keys".into()),
        "ASTRA_EDGE_KEYS_FILE" => Some(keys_path.clone()),
        _ => None,
    })
    .unwrap();
    assert_eq!(cfg.edge.keys.len(), 1);
    // A bad key entry names the file, line and field.
    std::fs::write(
        &keys,
        "[[key]]\nname = \"app\"\nsha256 = \"abc\"\nscopes = [\"*\"]\n",
    )
    .unwrap();
    let err = Config::load_with_env(&dir.path, |k| match k {
        "ASTRA_EDGE_KEYS_FILE" => Some(keys_path.clone()),
        _ => None,
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("edge-keys.toml:3:"), "{err}");
    assert!(err.contains("64 hex digits"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edge_instances_share_one_rate_limit() {
    let server = RedisServer::start();
    let limits = |t: String| {
        t.replace("per_user = 200", "per_user = 5")
            .replace("social = 50", "social = 2")
    };
    let (_d1, cfg1, port1) = config(&server.url(), limits);
    let (_d2, cfg2, port2) = config(&server.url(), limits);
    let e1 = InProc::start_role(cfg1, Registry::builtin(), Role::Edge).await;
    let e2 = InProc::start_role(cfg2, Registry::builtin(), Role::Edge).await;
    let path = format!("/v1/events/{TRADE}");
    let mut accepted = 0;
    let mut refused = None;
    for i in 0..8 {
        let port = if i % 2 == 0 { port1 } else { port2 };
        let r = post_json(
            port,
            &path,
            &[("X-User-ID", "alice")],
            &trade(&format!("t{i}"), "alice"),
        )
        .await;
        match r.status {
            202 => {
                accepted += 1;
                assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
                assert_eq!(
                    r.header("x-ratelimit-remaining"),
                    Some((5 - accepted).to_string().as_str())
                );
            }
            429 => {
                refused.get_or_insert(r);
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(accepted, 5, "the limit is shared across both instances");
    let r = refused.expect("refused after the limit");
    let j = assert_error(&r, 429, "rate_limited");
    assert_eq!(j["limit"], "user");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=120).contains(&retry), "{retry}");
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert!(r.header("x-ratelimit-reset").is_some());
    // Another user is not affected; the per-route (social) limit is per user too.
    let feed = "/api/v1/social/feed";
    for (i, expect) in [200, 200, 429].into_iter().enumerate() {
        let port = if i % 2 == 0 { port1 } else { port2 };
        let r = http(port, "GET", feed, &[("X-User-ID", "bob")], b"").await;
        assert_eq!(r.status, expect, "{}", r.body);
        if expect == 429 {
            assert_eq!(r.json()["limit"], "route");
        }
    }
    let m = http(port1, "GET", "/metrics", &[], b"").await.body;
    assert!(metric_value(&m, "astra_bus_edge_rate_limited_total{limit=\"user\"}") >= 1.0);
    e1.stop().await;
    e2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_while_redis_is_down_answers_503_and_stores_nothing() {
    let mut server = RedisServer::start_with(support::RedisOptions {
        appendonly: true,
        ..Default::default()
    });
    let (_dir, cfg, port) = config(&server.url(), |t| t);
    astra_bus::bus::declare::declare(&connect(&server.url()).await, &cfg)
        .await
        .unwrap();
    let daemon = InProc::start_role(cfg, Registry::builtin(), Role::Edge).await;
    let path = format!("/v1/events/{TRADE}");
    let r = post_json(port, &path, &[], &trade("before", "u")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let r = http(port, "GET", "/ready", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.body);

    server.kill();
    for i in 0..5 {
        let r = post_json(port, &path, &[], &trade(&format!("down{i}"), "u")).await;
        let j = assert_error(&r, 503, "redis_unavailable");
        assert!(r.header("retry-after").is_some(), "{j}");
    }
    let r = http(port, "GET", "/ready", &[], b"").await;
    assert_error(&r, 503, "not_ready");
    let r = http(port, "GET", "/health", &[], b"").await;
    assert_eq!(r.status, 200, "alive while Redis is down");

    server.restart();
    let redis = connect(&server.url()).await;
    wait_until(Duration::from_secs(20), "edge publishes again", || async {
        post_json(port, &path, &[], &trade("after", "u"))
            .await
            .status
            == 202
    })
    .await;
    // Give a late resend every chance to show up: none may.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v = redis
        .cmd("XRANGE", vec![arg(TRADE), arg("-"), arg("+")])
        .await
        .unwrap();
    let ids: Vec<String> = parse_entries(v)
        .iter()
        .map(|e| {
            let env =
                astra_bus::envelope::Envelope::from_fields(e.fields.as_ref().unwrap()).unwrap();
            env.payload::<astra_bus::events::TradeExecuted>()
                .unwrap()
                .trade_id
        })
        .collect();
    assert_eq!(ids.first().map(String::as_str), Some("before"));
    assert!(ids.iter().all(|t| !t.starts_with("down")), "{ids:?}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_answers() {
    let server = RedisServer::start();
    let (_dir, cfg, port) = config(&server.url(), |t| t);
    let daemon = InProc::start(cfg, Registry::builtin()).await;
    let doc = http(port, "GET", "/openapi.json", &[], b"").await.json();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    // 17 routes; the publish route once per external stream (5), the board route per board
    // (3); the console's 8.
    assert_eq!(paths.len(), 31, "{:?}", paths.keys());
    wait_until(Duration::from_secs(10), "a health snapshot", || async {
        http(port, "GET", "/dashboard", &[], b"").await.status == 200
    })
    .await;
    for (template, item) in paths {
        let path = template
            .replace("{stream}", TRADE)
            .replace("{id}", "u1")
            .replace("{board}", "weekly")
            .replace("{name}", "app.js")
            .replace("{service}", "probe")
            .replace("{instance}", "i-1");
        // DELETE last, so it removes what POST made (a 404 would mean no route).
        let mut methods: Vec<&String> = item.as_object().unwrap().keys().collect();
        methods.sort_by_key(|m| m.as_str() == "delete");
        for method in methods {
            let r = match method.as_str() {
                "get" => http(port, "GET", &path, &[("X-User-ID", "probe")], b"").await,
                "post" => {
                    let body = match template.as_str() {
                        "/v1/events" => {
                            json!({"events": [{"stream": TRADE, "data": trade("p1", "u1")}]})
                        }
                        "/api/v1/users/register" => json!({"user_id": "u1", "display_name": "U"}),
                        "/v1/services/{service}/instances/{instance}" => {
                            json!({"url": "http://127.0.0.1:9"})
                        }
                        _ => trade("p2", "u1"),
                    };
                    post_json(port, &path, &[("X-User-ID", "probe")], &body).await
                }
                "delete" => http(port, "DELETE", &path, &[], b"").await,
                m => panic!("undocumented method {m}"),
            };
            let documented = item[method]["responses"]
                .as_object()
                .unwrap()
                .contains_key(&r.status.to_string());
            assert!(
                documented && r.status != 404 || template.ends_with("/profile"),
                "{method} {path}: {} {}",
                r.status,
                r.body
            );
        }
    }
    // Content of the ops routes.
    let d = http(port, "GET", "/dashboard", &[], b"").await.json();
    assert_eq!(d["kpis"].as_array().unwrap().len(), 6, "{d}");
    assert_eq!(d["bus"]["groups"], 17);
    let html = http(
        port,
        "GET",
        "/dashboard",
        &[("Accept", "text/html,*/*;q=0.8")],
        b"",
    )
    .await;
    assert!(
        html.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(html.body.contains("<table>") && html.body.contains("daily_active_users"));
    let s = http(port, "GET", "/v1/streams", &[], b"").await.json();
    assert_eq!(s["streams"].as_array().unwrap().len(), 20);
    let g = http(port, "GET", "/v1/groups", &[], b"").await.json();
    assert_eq!(g["groups"].as_array().unwrap().len(), 67);
    let ready = http(port, "GET", "/ready", &[], b"").await.json();
    assert_eq!(ready["status"], "ready");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_names_the_groups_that_are_missing() {
    let server = RedisServer::start();
    let (_dir, cfg, port) = config(&server.url(), |t| t);
    // The edge alone does not declare: nothing exists yet.
    let edge = InProc::start_role(cfg.clone(), Registry::builtin(), Role::Edge).await;
    let r = http(port, "GET", "/ready", &[], b"").await;
    let j = assert_error(&r, 503, "not_ready");
    assert_eq!(j["missing"].as_array().unwrap().len(), 67, "{j}");
    let redis = connect(&server.url()).await;
    astra_bus::bus::declare::declare(&redis, &cfg)
        .await
        .unwrap();
    let r = http(port, "GET", "/ready", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.body);
    edge.stop().await;
}

/// A tiny deterministic generator of hostile inputs.
fn junk(rng: &mut support::Rng) -> Vec<u8> {
    let pieces: [&[u8]; 14] = [
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b":",
        b",",
        b"null",
        b"1e999",
        b"-0",
        b"\"quantity\"",
        b"\xff\xfe",
        b"\\u0000",
        b"{\"events\":",
    ];
    let n = rng.range(0, 24) as usize;
    let mut out = vec![];
    for _ in 0..n {
        out.extend_from_slice(pieces[rng.range(0, pieces.len() as u64) as usize]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bodies_and_headers_never_get_a_5xx() {
    let server = RedisServer::start();
    let (_dir, cfg, port) = config(&server.url(), |t| {
        t.replace("per_user = 200", "per_user = 100000")
    });
    let daemon = InProc::start_role(cfg, Registry::builtin(), Role::Edge).await;
    let mut rng = support::Rng::from_env();
    let routes = [
        format!("/v1/events/{TRADE}"),
        "/v1/events".to_string(),
        "/api/v1/trading/execute".to_string(),
        "/api/v1/users/register".to_string(),
        format!("/v1/events/{}", streams::REGISTERED),
        "/v1/events/%ff%fe".to_string(),
    ];
    let cts = [
        "application/json",
        "application/vnd.astra.envelope+json",
        "text/plain",
        "application/json; charset=utf-8",
        "",
    ];
    let valid: [Value; 4] = [
        trade("f", "u"),
        json!({"events": [{"stream": TRADE, "data": trade("f", "u")}]}),
        json!({"data": trade("f", "u"), "id": 7}),
        json!({"user_id": "u", "display_name": 5}),
    ];
    let mut statuses = std::collections::BTreeMap::new();
    // One well-formed publish first, so every seed reaches the accepting side too.
    let ok = http(
        port,
        "POST",
        &routes[0],
        &[("Content-Type", "application/json")],
        trade("f0", "u").to_string().as_bytes(),
    )
    .await;
    assert_eq!(ok.status, 202, "{}", ok.body);
    *statuses.entry(ok.status).or_insert(0) += 1;
    for i in 0..400 {
        let route = &routes[rng.range(0, routes.len() as u64) as usize];
        let ct = cts[rng.range(0, cts.len() as u64) as usize];
        let body = if rng.range(0, 3) == 0 {
            valid[rng.range(0, 4) as usize].to_string().into_bytes()
        } else {
            junk(&mut rng)
        };
        let cid = format!("fuzz-{i}");
        let weird_cid = "\u{7f}bad";
        let mut headers = vec![];
        if !ct.is_empty() {
            headers.push(("Content-Type", ct));
        }
        match rng.range(0, 6) {
            0 => headers.push(("X-Correlation-ID", cid.as_str())),
            1 => headers.push(("X-Correlation-ID", weird_cid)),
            2 => headers.push(("Idempotency-Key", cid.as_str())),
            3 => headers.push(("traceparent", "00-zz-yy-01")),
            4 => headers.push(("X-User-ID", "a b")),
            _ => headers.push(("Authorization", "Bearer nope")),
        }
        let r = http(port, "POST", route, &headers, &body).await;
        assert!(
            r.status < 500,
            "seed {:?}: POST {route} {headers:?} {:?} -> {} {}",
            std::env::var("ASTRA_TEST_SEED").ok(),
            String::from_utf8_lossy(&body),
            r.status,
            r.body
        );
        assert!(
            r.body.is_empty() || serde_json::from_str::<Value>(&r.body).is_ok(),
            "{}",
            r.body
        );
        *statuses.entry(r.status).or_insert(0) += 1;
    }
    // The generator reached both sides of the edge.
    assert!(
        statuses.contains_key(&202) && statuses.contains_key(&400),
        "{statuses:?}"
    );
    let m = http(port, "GET", "/metrics", &[], b"").await.body;
    assert_eq!(metric_value(&m, "astra_bus_http_panics_total"), 0.0);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_routes_answer_after_the_scenario_went_through_the_edge() {
    let server = RedisServer::start();
    let (_dir, cfg, port) = config(&server.url(), |t| t);
    let daemon = InProc::start(cfg.clone(), Registry::builtin()).await;
    let redis = connect(&server.url()).await;
    // Stay inside one minute (the handlers' velocity windows are per minute).
    let now = astra_bus::envelope::now_ms();
    if now % 60_000 > 30_000 {
        tokio::time::sleep(Duration::from_millis((60_000 - now % 60_000) as u64 + 50)).await;
    }
    for (u, name, clan) in [
        ("alice", "Alice", Some("owls")),
        ("bob", "Bob", Some("owls")),
        ("carol", "Carol", None),
    ] {
        let mut body = json!({"user_id": u, "display_name": name});
        if let Some(c) = clan {
            body["clan"] = json!(c);
        }
        let r = post_json(port, "/api/v1/users/register", &[("X-User-ID", u)], &body).await;
        assert_eq!(r.status, 202, "{}", r.body);
        assert_eq!(r.json()["user_id"], u);
    }
    wait_until(
        Duration::from_secs(30),
        "registrations processed",
        || async {
            !hgetall_int(&redis, &astra_bus::handlers::user::profile_key("carol"))
                .await
                .is_empty()
                || xlen(&redis, streams::REGISTERED).await == 3
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..20 {
        for (u, body) in [
            (
                "alice",
                json!({"trade_id": format!("a{i}"), "user_id": "alice", "symbol": "BTC", "side": "buy", "quantity": 0.1, "price_usd": 60000.0, "fee_usd": 6.0}),
            ),
            (
                "bob",
                json!({"trade_id": format!("b{i}"), "user_id": "bob", "symbol": "ETH", "side": if i % 2 == 0 { "buy" } else { "sell" }, "quantity": 20, "price_usd": 3000}),
            ),
            (
                "carol",
                json!({"trade_id": format!("c{i}"), "user_id": "carol", "symbol": "SOL", "side": "buy", "quantity": 1, "price_usd": 100}),
            ),
        ] {
            let r = post_json(port, "/api/v1/trading/execute", &[("X-User-ID", u)], &body).await;
            assert_eq!(r.status, 202, "{}", r.body);
        }
    }
    let interactions: Vec<Value> = [
        ("alice", "bob", "like"),
        ("alice", "bob", "like"),
        ("alice", "bob", "like"),
        ("carol", "alice", "follow"),
        ("bob", "carol", "comment"),
        ("bob", "carol", "comment"),
        ("bob", "alice", "share"),
    ]
    .iter()
    .map(|(f, t, k)| json!({"stream": streams::INTERACTION, "data": {"user_id": f, "target_user_id": t, "kind": k}}))
    .collect();
    let r = post_json(
        port,
        "/v1/events",
        &[("X-User-ID", "batcher")],
        &json!({ "events": interactions }),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    // Wait until every group is drained.
    wait_until(Duration::from_secs(60), "topology drained", || async {
        let rows = astra_bus::bus::status::status(&redis, &cfg).await.unwrap();
        rows.iter().all(|r| r.pending == 0 && r.lag == Some(0))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Profiles: the scenario's XP and levels.
    for (u, xp, level, name) in [
        ("alice", 1403, 4, "Alice"),
        ("bob", 10_007, 11, "Bob"),
        ("carol", 221, 2, "Carol"),
    ] {
        let r = http(
            port,
            "GET",
            &format!("/api/v1/gamification/user/{u}/profile"),
            &[("X-User-ID", "reader")],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let p = r.json();
        assert_eq!(p["xp"], xp, "{p}");
        assert_eq!(p["level"], level, "{p}");
        assert_eq!(p["display_name"], name, "{p}");
        assert_eq!(p["trades"], 20, "{p}");
        assert_eq!(p["leaderboards"]["all_time"]["xp"], xp, "{p}");
    }
    // Leaderboards: bob, alice, carol on every board; limit applies.
    for board in ["daily", "weekly", "all_time"] {
        let r = http(
            port,
            "GET",
            &format!("/api/v1/gamification/leaderboard/{board}?limit=2"),
            &[("X-User-ID", "reader")],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let b = r.json();
        let users: Vec<&str> = b["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["user_id"].as_str().unwrap())
            .collect();
        assert_eq!(users, ["bob", "alice"], "{b}");
        assert_eq!(b["entries"][0]["xp"], 10_007);
        assert_eq!(b["entries"][0]["rank"], 1);
    }
    // Feeds: exactly what the feed handler stored, newest first, global and per user.
    for (q, key) in [
        ("", social::global_feed_key()),
        ("&user=bob", social::user_feed_key("bob")),
    ] {
        let r = http(
            port,
            "GET",
            &format!("/api/v1/social/feed?limit=200{q}"),
            &[("X-User-ID", "reader")],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let items = r.json()["items"].as_array().unwrap().clone();
        let stored = redis
            .cmd("LRANGE", vec![arg(key.as_str()), arg(0), arg(-1)])
            .await
            .unwrap();
        let stored: Vec<Value> = as_array(stored)
            .unwrap()
            .iter()
            .map(|v| serde_json::from_str(&as_string(v).unwrap()).unwrap())
            .collect();
        assert!(!items.is_empty());
        assert_eq!(items, stored, "{key}");
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_runs_as_the_least_privilege_edge_user() {
    // The shipped ACL file with passwords for its users, plus an admin for the checks.
    let acl_dir = TempDir::new("acl");
    let shipped =
        std::fs::read_to_string(support::repo_root().join("setup/redis-users.acl")).unwrap();
    let acl = shipped
        .replace(
            "user astra-worker on resetpass",
            "user astra-worker on resetpass >w",
        )
        .replace(
            "user astra-edge on resetpass",
            "user astra-edge on resetpass >e",
        )
        + "user test-admin on >admin-pass ~* &* +@all\n";
    let acl_path = acl_dir.join("users.acl");
    std::fs::write(&acl_path, acl).unwrap();
    let server = RedisServer::start_with(support::RedisOptions {
        extra: vec![("aclfile".into(), acl_path.to_string_lossy().into_owned())],
        admin: Some(("test-admin".into(), "admin-pass".into())),
        ..Default::default()
    });
    astra_bus::bus::script::ensure(&connect(&server.url()).await)
        .await
        .expect("admin loads the functions");
    let edge_url = server.url_as("astra-edge", "e");
    // The worker declares and consumes; the edge only publishes and reads.
    let (_wd, wcfg, _wport) = config(&server.url_as("astra-worker", "w"), |t| t);
    let worker = InProc::start(wcfg, Registry::builtin()).await;
    let (_ed, ecfg, port) = config(&edge_url, |t| t);
    let edge = InProc::start_role(ecfg, Registry::builtin(), Role::Edge).await;

    // Two trades, one of them retried with its idempotency key.
    for (key, id) in [("k1", "t0"), ("k1", "t0"), ("k2", "t1")] {
        let r = post_json(
            port,
            &format!("/v1/events/{TRADE}"),
            &[("Idempotency-Key", key), ("X-User-ID", "acl-user")],
            &trade(id, "acl-user"),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let r = post_json(
        port,
        "/api/v1/users/register",
        &[],
        &json!({"user_id": "acl-user", "display_name": "A"}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let admin = connect(&server.url()).await;
    wait_until(
        Duration::from_secs(30),
        "the worker applied both trades",
        || async {
            hgetall_int(&admin, &astra_bus::handlers::user::profile_key("acl-user"))
                .await
                .get("trades")
                == Some(&2)
        },
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "a health snapshot as the edge",
        || async { http(port, "GET", "/dashboard", &[], b"").await.status == 200 },
    )
    .await;
    for path in [
        "/ready",
        "/v1/streams",
        "/v1/groups",
        "/api/v1/gamification/user/acl-user/profile",
        "/api/v1/gamification/leaderboard/all_time",
        "/api/v1/social/feed?user=acl-user",
    ] {
        let r = http(port, "GET", path, &[("X-User-ID", "acl-user")], b"").await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    // The service registry, as the edge user: register, list, leave.
    let r = post_json(
        port,
        "/v1/services/trading/instances/t-1",
        &[],
        &json!({"url": "http://127.0.0.1:8001"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let l = http(port, "GET", "/v1/services", &[], b"").await;
    assert_eq!(
        (l.status, &l.json()["services"][0]["healthy"]),
        (200, &json!(1)),
        "{}",
        l.body
    );
    let r = http(
        port,
        "DELETE",
        "/v1/services/trading/instances/t-1",
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // What the edge user must not do is refused by Redis itself.
    let e = connect(&edge_url).await;
    for (cmd, args) in [
        ("XADD", vec![streams::XP_AWARDED, "*", "f", "v"]),
        ("XGROUP", vec!["CREATE", TRADE, "rogue", "0"]),
        ("XACK", vec![TRADE, "gamification.xp_processing", "0-1"]),
        ("HSET", vec!["astra:gamification:xp", "acl-user", "1000000"]),
        ("DEL", vec![TRADE]),
        ("FLUSHALL", vec![]),
        ("CONFIG", vec!["GET", "maxmemory"]),
        ("KEYS", vec!["*"]),
    ] {
        let err = e
            .cmd(cmd, args.into_iter().map(arg).collect())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("NOPERM"), "{cmd}: {err}");
    }
    edge.stop().await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_and_slow_requests_are_answered_503() {
    let server = RedisServer::start();
    let (_dir, cfg, port) = config(&server.url(), |t| {
        t.replace("max_concurrency = 1024", "max_concurrency = 1")
            .replace("request_timeout = \"10s\"", "request_timeout = \"300ms\"")
    });
    let daemon = InProc::start_role(cfg, Registry::builtin(), Role::Edge).await;
    // A client that announces a body and never sends it holds the only slot...
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    slow.write_all(
        format!(
            "POST /v1/events/{TRADE} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...so another request is shed at once...
    let r = http(port, "GET", "/api/v1/social/feed", &[], b"").await;
    assert_error(&r, 503, "overloaded");
    assert!(r.header("retry-after").is_some());
    // ...and the slow one is cut at the request deadline.
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
        .await
        .expect("answered within the deadline")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("\"error\":\"timeout\""), "{text}");
    // The slot is free again.
    let r = post_json(port, &format!("/v1/events/{TRADE}"), &[], &trade("t", "u")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_at_maxmemory_gets_503_and_stores_nothing() {
    let server = RedisServer::start();
    let (_dir, cfg, port) = config(&server.url(), |t| t);
    let daemon = InProc::start_role(cfg, Registry::builtin(), Role::Edge).await;
    let redis = connect(&server.url()).await;
    let path = format!("/v1/events/{TRADE}");
    let r = post_json(port, &path, &[], &trade("t0", "u")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    server.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    for key in [None, Some("oom-key")] {
        let h: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
        let r = post_json(port, &path, &h, &trade("t1", "u")).await;
        let j = assert_error(&r, 503, "redis_out_of_memory");
        assert!(r.header("retry-after").is_some(), "{j}");
    }
    server.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(
        xlen(&redis, TRADE).await,
        1,
        "nothing stored while out of memory"
    );
    let r = post_json(
        port,
        &path,
        &[("Idempotency-Key", "oom-key")],
        &trade("t1", "u"),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        r.header("idempotent-replayed"),
        None,
        "the refused attempt left no record"
    );
    assert_eq!(xlen(&redis, TRADE).await, 2);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_works_on_a_redis_cluster() {
    // Rate-limit keys share one hash tag, idempotency records share their stream's slot,
    // reads are single-key commands: everything routes on a 3-master cluster.
    let cluster = support::RedisCluster::start();
    let (_dir, cfg, port) = config(&cluster.url(), |t| {
        t.replace("per_user = 200", "per_user = 50")
    });
    let daemon = InProc::start(cfg, Registry::builtin()).await;
    let redis = connect(&cluster.url()).await;
    let r = http(port, "GET", "/ready", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Every master has this binary's function library (each master has its own).
    let lib = &astra_bus::bus::script::library().name;
    for p in &cluster.ports {
        let listed = support::raw_command(*p, &["FUNCTION", "LIST", "LIBRARYNAME", lib]).unwrap();
        assert!(listed.contains(lib.as_str()), "master {p}: {listed}");
    }
    // A batch across streams in three slots, retried with its idempotency key.
    let batch = json!({"events": [
        {"stream": streams::REGISTERED, "data": {"user_id": "cu", "display_name": "C"}},
        {"stream": TRADE, "data": trade("ct1", "cu")},
        {"stream": streams::INTERACTION, "data": {"user_id": "cu", "target_user_id": "x", "kind": "like"}},
    ]});
    let a = post_json(
        port,
        "/v1/events",
        &[("Idempotency-Key", "c-1"), ("X-User-ID", "cu")],
        &batch,
    )
    .await;
    let b = post_json(
        port,
        "/v1/events",
        &[("Idempotency-Key", "c-1"), ("X-User-ID", "cu")],
        &batch,
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(b.header("idempotent-replayed"), Some("true"), "{}", b.body);
    assert_eq!(a.json()["events"], b.json()["events"]);
    let r = post_json(
        port,
        &format!("/v1/events/{TRADE}"),
        &[("X-User-ID", "cu")],
        &trade("ct2", "cu"),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        r.header("x-ratelimit-remaining"),
        Some("43"),
        "every event counted: the batch of 3, its replay, and one trade"
    );
    wait_until(Duration::from_secs(30), "both trades applied", || async {
        let r = http(
            port,
            "GET",
            "/api/v1/gamification/user/cu/profile",
            &[("X-User-ID", "cu")],
            b"",
        )
        .await;
        r.status == 200 && r.json()["trades"] == 2
    })
    .await;
    assert_eq!(xlen(&redis, TRADE).await, 2);
    for path in [
        "/api/v1/gamification/leaderboard/all_time",
        "/api/v1/social/feed",
        "/v1/groups",
        "/v1/streams",
    ] {
        let r = http(port, "GET", path, &[("X-User-ID", "cu")], b"").await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    daemon.stop().await;
}
