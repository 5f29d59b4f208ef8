//! The edge as attacked, black box: the `astra-bus` binary over real HTTP against real
//! Redis, each test trying to break one promise the way a hostile or careless client
//! would. Costs are read from the daemon's /proc entry (CPU time, peak RSS), never from
//! wall time, and the budgets are structural (orders of magnitude above what a request
//! costs, far below what the old quadratic validation cost), so they hold on a loaded
//! machine.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use astra_bus::config::{hex, key_sha256};
use serde_json::{Value, json};
use support::edge::{Binary, get, post, request, shipped_config, unlimited};
use support::{RedisServer, TempDir};

const TRADE: &str = "astra.trading.trade_executed.v1";

fn trade(id: &str, user: &str) -> String {
    json!({"trade_id": id, "user_id": user, "symbol": "BTC", "side": "buy", "quantity": 0.5, "price_usd": 100.0})
        .to_string()
}

fn key_entry(name: &str, secret: &str, scopes: &str, extra: &str) -> String {
    format!(
        "[[key]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = {scopes}\n{extra}\n",
        hex(&key_sha256(secret))
    )
}

fn bearer(k: &str) -> String {
    format!("Bearer {k}")
}

fn j(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// An edge (auth off unless `env` says otherwise) with the shipped config and `edit`.
fn edge(
    server: &RedisServer,
    role: &str,
    edit: impl Fn(String) -> String,
    env: &[(&str, String)],
) -> (Binary, TempDir, TempDir) {
    let dir = shipped_config(edit);
    let logs = TempDir::new("attacks");
    let mut e = vec![("ASTRA_REDIS_URL", server.url())];
    e.extend_from_slice(env);
    let mut b = Binary::start(&dir.path, role, &e, &logs);
    if role == "all" {
        b.wait_ready(&[]);
    }
    (b, dir, logs)
}

/// Bodies built to be expensive: each is at most 1 MiB.
fn worst_cases() -> Vec<(&'static str, Vec<u8>, u16)> {
    let mib = 1 << 20;
    let mut unknown = String::from("{");
    let mut i = 0;
    while unknown.len() < mib - 200 {
        unknown.push_str(&format!("\"k{i:06}\":{i},"));
        i += 1;
    }
    unknown.push_str("\"quantity\":\"oops\",\"trade_id\":\"t\"}");
    let mut unknown_last = unknown.clone();
    unknown_last.truncate(unknown_last.len() - 35);
    unknown_last.push('}');
    let long_user = format!("{{\"user_id\":\"{}\"}}", "u".repeat(mib - 20));
    let escapes = format!("{{\"symbol\":\"{}\"}}", "\\u00e9".repeat((mib - 20) / 6));
    let digits = format!("{{\"quantity\":{}}}", "9".repeat(mib - 20));
    let deep = format!("{}{}", "[".repeat(mib / 2 - 8), "]".repeat(mib / 2 - 8));
    let mut batch = String::from("{\"events\":[");
    while batch.len() < mib - 10 {
        batch.push_str("{},");
    }
    batch.pop();
    batch.push_str("]}");
    vec![
        (
            "20k-unknown-keys-then-a-type-error",
            unknown.into_bytes(),
            422,
        ),
        ("unknown-keys-only", unknown_last.into_bytes(), 422),
        ("1MiB-user-id", long_user.into_bytes(), 422),
        ("1MiB-of-unicode-escapes", escapes.into_bytes(), 422),
        ("1MiB-number", digits.into_bytes(), 422),
        ("deep-nesting", deep.into_bytes(), 422),
        ("batch-of-350k-items", batch.into_bytes(), 422),
    ]
}

#[test]
fn worst_case_bodies_cost_little_cpu_and_300_in_parallel_keep_memory_bounded() {
    let server = RedisServer::start();
    let (d, _dir, _logs) = edge(&server, "edge", unlimited, &[]);
    let port = d.port;
    // One at a time: each answered 4xx naming the problem, at a bounded CPU cost. Release
    // builds take < 100 ms of CPU for any 1 MiB body (the edge bench measures it); this
    // unoptimised test build gets a budget ten times that. The old validation took 22 s
    // of CPU for a 329 KB body of 20,000 unknown keys.
    let budget = Duration::from_millis(1000);
    for (name, body, want) in worst_cases() {
        assert!(body.len() <= 1 << 20, "{name}: {}", body.len());
        let path = if name.starts_with("batch") {
            "/v1/events".to_string()
        } else {
            format!("/v1/events/{TRADE}")
        };
        let before = d.cpu();
        let (s, b) = request(
            port,
            "POST",
            &path,
            &[("Content-Type", "application/json")],
            &body,
        )
        .unwrap();
        let cpu = d.cpu() - before;
        eprintln!("{name}: {s} in {cpu:?} of CPU");
        assert_eq!(s, want, "{name}: {b}");
        assert!(cpu < budget, "{name}: {cpu:?} of CPU");
    }
    // 300 at once: bodies wait for room in edge.body_memory (64 MiB), so the peak RSS stays
    // under 256 MiB (300 MiB of bodies arrive), and /health answers throughout.
    let cases = worst_cases();
    let body = Arc::new(cases[0].1.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let slowest_health = Arc::new(AtomicU64::new(0));
    let health = {
        let (stop, slowest) = (stop.clone(), slowest_health.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = get(port, "/health");
                assert!(
                    r.is_some_and(|(s, _)| s == 200),
                    "/health failed under load"
                );
                slowest.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        })
    };
    let clients: Vec<_> = (0..300)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                request(
                    port,
                    "POST",
                    &format!("/v1/events/{TRADE}"),
                    &[("Content-Type", "application/json")],
                    &body,
                )
                .map(|(s, _)| s)
            })
        })
        .collect();
    let statuses: Vec<Option<u16>> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    let probes = health.join().unwrap();
    let (_, peak) = d.rss();
    eprintln!(
        "300 parallel 1 MiB bodies: peak RSS {} MiB, {probes} /health probes, slowest {} ms",
        peak >> 20,
        slowest_health.load(Ordering::Relaxed)
    );
    assert!(
        statuses.iter().all(|s| matches!(s, Some(422) | Some(503))),
        "{statuses:?}"
    );
    assert!(peak < 256 << 20, "peak RSS {} MiB", peak >> 20);
    assert!(probes > 0);
}

#[test]
fn identity_comes_from_what_the_edge_verified() {
    let server = RedisServer::start();
    // Auth off: the address is the service, whatever X-User-ID says.
    let (d, _dir, _logs) = edge(
        &server,
        "edge",
        |t| t.replace("per_client = 1000", "per_client = 100"),
        &[],
    );
    let mut ok = 0;
    for i in 0..300 {
        let u = format!("rotating-{i}");
        let (s, _) = request(
            d.port,
            "GET",
            "/api/v1/social/feed",
            &[("X-User-ID", &u)],
            b"",
        )
        .unwrap();
        assert!(s == 200 || s == 429, "{s}");
        ok += usize::from(s == 200);
    }
    assert_eq!(
        ok, 100,
        "rotating X-User-ID with auth off: only the address limit"
    );
    drop(d);

    // Keys: a plain service key's X-User-ID chooses nothing; an act-for key's users are
    // its own (it cannot drain another key's); a fixed-user key acts for its user only.
    let keys = [
        key_entry("svc", "svc-secret", "[\"*\"]", ""),
        key_entry("app", "app-secret", "[\"*\"]", "act_for_users = true"),
        key_entry("ada", "ada-secret", "[\"*\"]", "user = \"ada\""),
    ]
    .concat();
    let dir = shipped_config(|t| t);
    std::fs::write(dir.join("keys.toml"), keys).unwrap();
    let logs = TempDir::new("identity");
    let env = [
        ("ASTRA_REDIS_URL", server.url()),
        ("ASTRA_EDGE_AUTH", "keys".to_string()),
        ("ASTRA_EDGE_KEYS_FILE", "keys.toml".to_string()),
    ];
    let d = Binary::start(&dir.path, "edge", &env, &logs);
    let feed = |key: &str, user: Option<&str>| {
        let b = bearer(key);
        let mut h = vec![("Authorization", b.as_str())];
        if let Some(u) = user {
            h.push(("X-User-ID", u));
        }
        request(d.port, "GET", "/api/v1/social/feed", &h, b"")
            .unwrap()
            .0
    };
    let mut ok = 0;
    for i in 0..300 {
        let u = format!("spoof-{i}");
        ok += usize::from(feed("svc-secret", Some(&u)) == 200);
    }
    assert_eq!(
        ok, 50,
        "a service key's rotating X-User-ID: one bucket (social 50/min)"
    );
    // The act-for key drains "ada" under its own name...
    for _ in 0..50 {
        assert_eq!(feed("app-secret", Some("ada")), 200);
    }
    assert_eq!(feed("app-secret", Some("ada")), 429);
    // ...which is not ada's own bucket.
    assert_eq!(feed("ada-secret", None), 200);
    // A fixed-user key cannot claim another user, nor publish for one.
    assert_eq!(feed("ada-secret", Some("bob")), 403);
    let (s, b) = post(
        d.port,
        &format!("/v1/events/{TRADE}"),
        &[("Authorization", "Bearer ada-secret")],
        &trade("t1", "bob"),
    );
    assert_eq!(s, 403, "{b}");
    assert_eq!(j(&b)["field"], "user_id");
}

#[test]
fn batches_count_per_event_and_failed_authentication_is_limited_per_address() {
    let server = RedisServer::start();
    let start = |window: &str| {
        let w = format!("window = \"{window}\"");
        let dir = shipped_config(move |t| t.replace("window = \"1m\"", &w));
        std::fs::write(
            dir.join("keys.toml"),
            key_entry("app", "good-secret", "[\"*\"]", "act_for_users = true"),
        )
        .unwrap();
        let logs = TempDir::new("batch");
        let env = [
            ("ASTRA_REDIS_URL", server.url()),
            ("ASTRA_EDGE_AUTH", "keys".to_string()),
            ("ASTRA_EDGE_KEYS_FILE", "keys.toml".to_string()),
        ];
        let d = Binary::start(&dir.path, "edge", &env, &logs);
        (d, dir, logs)
    };
    let (d, _dir, _logs) = start("1m");
    let good = [
        ("Authorization", "Bearer good-secret"),
        ("X-User-ID", "batcher"),
    ];
    let batch = |n: usize, tag: &str| {
        let events: Vec<Value> = (0..n)
            .map(|i| json!({"stream": TRADE, "data": j(&trade(&format!("{tag}{i}"), "batcher"))}))
            .collect();
        json!({ "events": events }).to_string()
    };
    // trading = 100 per user per window: 60 events pass, 60 more do not.
    let (s, b) = post(d.port, "/v1/events", &good, &batch(60, "a"));
    assert_eq!(s, 202, "{b}");
    let (s, b) = post(d.port, "/v1/events", &good, &batch(60, "b"));
    assert_eq!(s, 429, "{b}");
    // 300 events can never fit a window of 200: refused, naming the limit.
    let (s, b) = post(d.port, "/v1/events", &good, &batch(300, "c"));
    assert_eq!(s, 429, "{b}");
    assert!(
        j(&b)["detail"].as_str().unwrap().contains("never pass"),
        "{b}"
    );
    // Guessing keys: 20 failures per window, then 429 for every keyed request from the
    // address, the right key included, until the window (3 s here) passes.
    drop(d);
    let (d, _dir2, _logs2) = start("3s");
    let mut statuses = vec![];
    for i in 0..25 {
        let k = bearer(&format!("guess-{i}"));
        statuses.push(
            request(
                d.port,
                "GET",
                "/api/v1/social/feed",
                &[("Authorization", &k)],
                b"",
            )
            .unwrap()
            .0,
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        20,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        5,
        "{statuses:?}"
    );
    let (s, _) = request(d.port, "GET", "/api/v1/social/feed", &good, b"").unwrap();
    assert_eq!(s, 429, "blocked while over the failure limit");
    std::thread::sleep(Duration::from_secs(7));
    let (s, b) = request(d.port, "GET", "/api/v1/social/feed", &good, b"").unwrap();
    assert_eq!(s, 200, "{b}");
}

#[test]
fn idempotency_is_per_caller_replays_generated_ids_and_refusals_store_nothing() {
    let server = RedisServer::start();
    let dir = shipped_config(unlimited);
    std::fs::write(
        dir.join("keys.toml"),
        [
            key_entry("one", "one-secret", "[\"*\"]", ""),
            key_entry("two", "two-secret", "[\"*\"]", ""),
        ]
        .concat(),
    )
    .unwrap();
    let logs = TempDir::new("idem");
    let env = [
        ("ASTRA_REDIS_URL", server.url()),
        ("ASTRA_EDGE_AUTH", "keys".to_string()),
        ("ASTRA_EDGE_KEYS_FILE", "keys.toml".to_string()),
    ];
    let d = Binary::start(&dir.path, "edge", &env, &logs);
    let xlen = |s: &str| server.cli(&["XLEN", s]).parse::<i64>().unwrap_or(0);
    let path = format!("/v1/events/{TRADE}");
    // Two callers, one Idempotency-Key, one body: two events, neither sees the other's.
    let a = post(
        d.port,
        &path,
        &[
            ("Authorization", "Bearer one-secret"),
            ("Idempotency-Key", "shared"),
        ],
        &trade("t1", "u1"),
    );
    let b = post(
        d.port,
        &path,
        &[
            ("Authorization", "Bearer two-secret"),
            ("Idempotency-Key", "shared"),
        ],
        &trade("t1", "u1"),
    );
    assert_eq!((a.0, b.0), (202, 202));
    assert_ne!(j(&a.1)["event_id"], j(&b.1)["event_id"]);
    assert_eq!(xlen(TRADE), 2);
    // A retried registration returns the user_id the first one stored.
    let reg = |key: &str| {
        post(
            d.port,
            "/api/v1/users/register",
            &[
                ("Authorization", "Bearer one-secret"),
                ("Idempotency-Key", key),
            ],
            r#"{"display_name":"New"}"#,
        )
    };
    let first = reg("signup-1");
    let again = reg("signup-1");
    assert_eq!(first.0, 202, "{}", first.1);
    assert_eq!(
        j(&first.1)["user_id"],
        j(&again.1)["user_id"],
        "{} / {}",
        first.1,
        again.1
    );
    assert_eq!(xlen("astra.user.registered.v1"), 1);
    let stored = server.cli(&["XRANGE", "astra.user.registered.v1", "-", "+"]);
    assert!(
        stored.contains(j(&first.1)["user_id"].as_str().unwrap()),
        "the stored event carries the answered user_id: {stored}"
    );
    // A reused key on a longer batch over two streams: 409, and nothing stored anywhere.
    let h = [
        ("Authorization", "Bearer one-secret"),
        ("Idempotency-Key", "batch-1"),
    ];
    let one = json!({"events": [{"stream": TRADE, "data": j(&trade("t9", "u1"))}]}).to_string();
    assert_eq!(post(d.port, "/v1/events", &h, &one).0, 202);
    let (trades, interactions) = (xlen(TRADE), xlen("astra.social.interaction.v1"));
    let longer = json!({"events": [
        {"stream": "astra.social.interaction.v1", "data": {"user_id": "u1", "target_user_id": "u2", "kind": "like"}},
        {"stream": TRADE, "data": j(&trade("t9", "u1"))}]})
    .to_string();
    let (s, body) = post(d.port, "/v1/events", &h, &longer);
    assert_eq!(s, 409, "{body}");
    assert_eq!(
        (xlen(TRADE), xlen("astra.social.interaction.v1")),
        (trades, interactions)
    );
    // A batch with one bad event stores none of them.
    let bad = json!({"events": [
        {"stream": "astra.social.interaction.v1", "data": {"user_id": "u1", "target_user_id": "u2", "kind": "like"}},
        {"stream": TRADE, "data": {"trade_id": "t", "user_id": "u1", "symbol": "BTC", "side": "buy", "quantity": 1e308, "price_usd": 1}}]})
    .to_string();
    let (s, body) = post(
        d.port,
        "/v1/events",
        &[("Authorization", "Bearer one-secret")],
        &bad,
    );
    assert_eq!(s, 422, "{body}");
    assert_eq!(j(&body)["index"], 1);
    assert_eq!(
        (xlen(TRADE), xlen("astra.social.interaction.v1")),
        (trades, interactions)
    );
}

#[test]
fn envelopes_and_payloads_keep_their_bounds() {
    let server = RedisServer::start();
    let dir = shipped_config(unlimited);
    std::fs::write(
        dir.join("keys.toml"),
        [
            key_entry("pricing", "p-secret", "[\"*\"]", ""),
            key_entry("other", "o-secret", "[\"*\"]", ""),
        ]
        .concat(),
    )
    .unwrap();
    let logs = TempDir::new("envelope");
    let env = [
        ("ASTRA_REDIS_URL", server.url()),
        ("ASTRA_EDGE_AUTH", "keys".to_string()),
        ("ASTRA_EDGE_KEYS_FILE", "keys.toml".to_string()),
    ];
    let d = Binary::start(&dir.path, "edge", &env, &logs);
    let path = format!("/v1/events/{TRADE}");
    let env_post = |key: &str, e: Value| {
        request(
            d.port,
            "POST",
            &path,
            &[
                ("Authorization", &bearer(key)),
                ("Content-Type", "application/vnd.astra.envelope+json"),
            ],
            e.to_string().as_bytes(),
        )
        .unwrap()
    };
    let now = astra_bus::envelope::now_ms();
    let data = j(&trade("e1", "u1"));
    // Forged producer, backdated or future ts: 422 naming the field.
    for (field, e) in [
        ("src", json!({"src": "payments-service", "data": data})),
        ("ts", json!({"ts": now - 86_400_000, "data": data})),
        ("ts", json!({"ts": now + 3_600_000, "data": data})),
    ] {
        let (s, b) = env_post("p-secret", e);
        assert_eq!(s, 422, "{b}");
        assert_eq!(j(&b)["field"], field, "{b}");
    }
    // src equal to the key's name, ts within the skew: kept.
    let (s, b) = env_post(
        "p-secret",
        json!({"src": "pricing", "ts": now - 1000, "id": "order-7", "data": data}),
    );
    assert_eq!(s, 202, "{b}");
    let mine = j(&b)["event_id"].clone();
    // The same client id from another producer is another event; from the same one, the same.
    let (_, b) = env_post("o-secret", json!({"id": "order-7", "data": data}));
    assert_ne!(j(&b)["event_id"], mine);
    let (_, b) = env_post("p-secret", json!({"id": "order-7", "data": data}));
    assert_eq!(j(&b)["event_id"], mine);
    // Payload bounds.
    let k = [("Authorization", "Bearer p-secret")];
    for (field, body) in [
        ("user_id", trade("t", &"u".repeat(200))),
        ("user_id", trade("t", "{slot}")),
        ("quantity", trade("t", "u").replace("0.5", "1e308")),
        ("price_usd", trade("t", "u").replace("100.0", "0")),
        ("price_usd", trade("t", "u").replace("100.0", "-5")),
        ("junk", trade("t", "u").replace("}", ",\"junk\":1}")),
    ] {
        let (s, b) = post(d.port, &path, &k, &body);
        assert_eq!(s, 422, "{body}: {b}");
        assert_eq!(j(&b)["field"], field, "{b}");
    }
    let (s, b) = post(
        d.port,
        "/api/v1/users/register",
        &k,
        r#"{"user_id":"u","display_name":"a\u0007b"}"#,
    );
    assert_eq!(
        (s, j(&b)["field"].clone()),
        (422, json!("display_name")),
        "{b}"
    );
}

#[test]
fn a_raw_publisher_cannot_plant_huge_ids_either() {
    // Bypassing the edge (XADD as an admin would), a 1 MiB user_id is poison to every
    // consumer: dead-lettered, never a key or a leaderboard member.
    let server = RedisServer::start();
    let (_d, _dir, _logs) = edge(
        &server,
        "all",
        |t| t.replace("block = \"2s\"", "block = \"100ms\""),
        &[],
    );
    let huge = "u".repeat(1 << 20);
    let data = json!({"trade_id": "raw-1", "user_id": huge, "symbol": "BTC", "side": "buy", "quantity": 1, "price_usd": 1}).to_string();
    let ts = astra_bus::envelope::now_ms().to_string();
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let args = [
        "XADD",
        TRADE,
        "*",
        "id",
        "0193a6f2-7c1e-7d3a-9a51-0c2b6f1e9d10",
        "type",
        "trading.trade_executed",
        "v",
        "1",
        "ts",
        &ts,
        "ct",
        "application/json",
        "data",
        &data,
    ];
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"$"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dead = server.cli(&["HGET", "astra:dlq:counts", "trading.internal_processing"]);
        if dead == "1" {
            break;
        }
        assert!(Instant::now() < deadline, "not dead-lettered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let keys = server.cli(&["--scan", "--pattern", "astra:*uuuuuuuu*"]);
    assert!(keys.is_empty(), "{}", &keys[..keys.len().min(200)]);
    let board = server.cli(&["ZCARD", "astra:gamification:leaderboard:all_time:all"]);
    assert!(board == "0" || board.is_empty(), "{board}");
}

#[test]
fn ops_routes_need_a_key_on_a_public_listener() {
    let server = RedisServer::start();
    let dir = shipped_config(|t| t);
    std::fs::write(
        dir.join("keys.toml"),
        key_entry("ops", "ops-secret", "[\"ops\"]", ""),
    )
    .unwrap();
    let logs = TempDir::new("ops");
    let port = support::free_port();
    let env = [
        ("ASTRA_REDIS_URL", server.url()),
        ("ASTRA_EDGE_AUTH", "keys".to_string()),
        ("ASTRA_EDGE_KEYS_FILE", "keys.toml".to_string()),
        ("ASTRA_HTTP_LISTEN", format!("0.0.0.0:{port}")),
    ];
    let args = [
        "run",
        "--role",
        "edge",
        "--config",
        &dir.path.to_string_lossy(),
    ];
    let d = Binary::start_args(&args, &env, &logs, port);
    for p in [
        "/ready",
        "/metrics",
        "/dashboard",
        "/v1/streams",
        "/v1/groups",
    ] {
        assert_eq!(get(d.port, p).unwrap().0, 401, "{p}");
        let (s, _) = request(
            d.port,
            "GET",
            p,
            &[("Authorization", "Bearer ops-secret")],
            b"",
        )
        .unwrap();
        assert!(s == 200 || s == 503, "{p}: {s}");
    }
    assert_eq!(get(d.port, "/health").unwrap().0, 200);
    let doc = j(&get(d.port, "/openapi.json").unwrap().1);
    assert_eq!(
        doc["paths"]["/metrics"]["get"]["security"],
        json!([{"bearer": []}])
    );
    assert_eq!(doc["paths"]["/health"]["get"]["security"], json!([]));
}

#[test]
fn slow_idle_and_greedy_connections_are_cut() {
    let server = RedisServer::start();
    let (d, _dir, _logs) = edge(
        &server,
        "edge",
        |t| {
            t.replace("header_timeout = \"5s\"", "header_timeout = \"1s\"")
                .replace("idle_timeout = \"60s\"", "idle_timeout = \"1s\"")
                .replace(
                    "max_connections_per_client = 1024",
                    "max_connections_per_client = 5",
                )
        },
        &[],
    );
    let closed_within = |s: &mut TcpStream, limit: Duration| {
        s.set_read_timeout(Some(limit)).unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Some(t.elapsed()),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    };
    // Headers that never finish (one byte a while): closed at the header deadline.
    let mut loris = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    loris
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let t = closed_within(&mut loris, Duration::from_secs(10));
    assert!(
        t.is_some(),
        "a request whose headers never finish was not closed"
    );
    // A kept-alive connection that goes quiet: closed after idle_timeout.
    let mut idle = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let t = closed_within(&mut idle, Duration::from_secs(10));
    assert!(t.is_some(), "an idle keep-alive connection was not closed");
    // Five connections held open by one address: the sixth is closed at once.
    let held: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut sixth = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let _ = sixth.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut out = vec![];
    sixth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = sixth.read_to_end(&mut out);
    assert!(
        !String::from_utf8_lossy(&out).contains("200 OK"),
        "the sixth connection was served"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(d.port, "/health").unwrap().0, 200);
}
