//! The gateway proxy: `/api/v1/<service>/…` goes to a healthy instance of a declared
//! service found in the registry, with a circuit breaker per instance. Real parts: a real
//! redis-server, the edge in-process on a real port, service instances that are real
//! Python processes (`tests/support/echo_service.py`, stdlib only), killed and restarted.
//!
//! What is attacked: killing an instance under load (no 5xx but the documented 503s,
//! every answer JSON, traffic moves to the survivor, the registry shows 1/2 and then
//! forgets it), a broken deployment answering 500 (breaker opens, the edge answers 503
//! `circuit_open` with Retry-After, a probe after the window closes it again), spoofed
//! forwarding headers, the edge's own credentials leaking upstream, and keys without the
//! proxy scope.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use astra_bus::config::Config;
use astra_bus::daemon::Role;
use astra_bus::handlers::Registry;
use serde_json::{Value, json};
use support::bus::*;
use support::{RedisServer, TempDir, free_port, repo_root, shipped_config_copy};

const SERVICES: &str = r#"
[services.echo]
description = "echoes what it receives"
proxy = true
timeout = "2s"
registry_refresh = "100ms"

[services.echo.breaker]
failures = 2
open_for = "1s"

[services.empty]
proxy = true

[services.internal]
description = "reachable by remote handlers only"

[services.gamification]
proxy = true
"#;

/// An edge on `url` with [`SERVICES`] declared and the rate limits out of the way.
fn edge_config(url: &str, keys: Option<&str>) -> (TempDir, Config, u16) {
    let dir = shipped_config_copy();
    let p = dir.join("streams.toml");
    let text = support::edge::unlimited(std::fs::read_to_string(&p).unwrap()) + SERVICES;
    std::fs::write(&p, text).unwrap();
    if let Some(k) = keys {
        std::fs::write(dir.join("keys.toml"), k).unwrap();
    }
    let port = free_port();
    let (url, keyed, kf) = (
        url.to_string(),
        keys.is_some(),
        dir.join("keys.toml").display().to_string(),
    );
    let cfg = Config::load_for(
        &dir.path,
        move |k| match k {
            "ASTRA_REDIS_URL" => Some(url.clone()),
            "ASTRA_HTTP_LISTEN" => Some(format!("127.0.0.1:{port}")),
            "ASTRA_EDGE_AUTH" if keyed => Some("keys".into()),
            "ASTRA_EDGE_KEYS_FILE" if keyed => Some(kf.clone()),
            _ => None,
        },
        &Registry::builtin(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (dir, cfg, port)
}

/// One instance of the echo service, killed on drop.
struct Instance {
    child: Child,
}

impl Instance {
    fn start(id: &str, port: u16, fail: bool) -> Instance {
        let script = repo_root().join("tests/support/echo_service.py");
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .args(["--port", &port.to_string(), "--id", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if fail {
            cmd.arg("--fail");
        }
        let child = cmd.spawn().expect("python3 runs the echo service");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "echo {id} never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Instance { child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn register(edge: u16, service: &str, id: &str, port: u16, ttl_ms: u64) {
    let r = post_json(
        edge,
        &format!("/v1/services/{service}/instances/{id}"),
        &[],
        &json!({"url": format!("http://127.0.0.1:{port}"), "ttl_ms": ttl_ms}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Heartbeats `id` every 250 ms (ttl 2 s) until `alive` turns false.
fn heartbeat(edge: u16, id: &'static str, port: u16, alive: Arc<AtomicBool>) {
    tokio::spawn(async move {
        while alive.load(Ordering::SeqCst) {
            register(edge, "echo", id, port, 2000).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
}

/// The 503s the proxy documents.
const DOCUMENTED_503: &[&str] = &[
    "no_instance",
    "circuit_open",
    "upstream_failed",
    "registry_unavailable",
];

fn assert_documented(r: &HttpReply) {
    let v = r.json();
    match r.status {
        200 => assert!(v["instance"].is_string(), "{}", r.body),
        503 => {
            let code = v["error"].as_str().unwrap_or_default();
            assert!(
                DOCUMENTED_503.contains(&code),
                "undocumented 503: {}",
                r.body
            );
            assert!(r.header("retry-after").is_some(), "503 without Retry-After");
        }
        s => panic!("status {s}: {}", r.body),
    }
}

async fn metrics(port: u16) -> String {
    let r = http(port, "GET", "/metrics", &[], b"").await;
    assert_eq!(r.status, 200);
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_spreads_load_and_moves_off_a_killed_instance() {
    let server = RedisServer::start();
    let (_d, cfg, edge) = edge_config(&server.url(), None);
    let daemon = InProc::start_role(cfg, Registry::builtin(), Role::Edge).await;
    let (pa, pb) = (free_port(), free_port());
    let mut a = Instance::start("a", pa, false);
    let _b = Instance::start("b", pb, false);
    let (alive_a, alive_b) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(true)),
    );
    heartbeat(edge, "a", pa, alive_a.clone());
    heartbeat(edge, "b", pb, alive_b.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Round-robin: both instances answer.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20 {
        let r = http(
            edge,
            "GET",
            &format!("/api/v1/echo/items/{i}?q=1"),
            &[],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["path"], format!("/api/v1/echo/items/{i}?q=1"));
        seen.insert(v["instance"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), 2, "both instances get requests: {seen:?}");

    // What the instance sees: the edge's facts, never the client's claims.
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = http(
        edge,
        "POST",
        "/api/v1/echo/orders",
        &[
            ("Content-Type", "text/plain"),
            ("X-Correlation-ID", "corr-42"),
            ("traceparent", tp),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Astra-Key", "admin"),
            ("X-Custom", "kept"),
            ("Connection", "close, x-drop-me"),
            ("X-Drop-Me", "hop-by-hop"),
        ],
        b"hello",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-correlation-id"), Some("corr-42"));
    let v = r.json();
    let h = &v["headers"];
    assert_eq!(v["method"], "POST");
    assert_eq!(v["body"], "hello");
    assert_eq!(h["x-correlation-id"], "corr-42");
    assert_eq!(h["traceparent"], tp);
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(h["content-type"], "text/plain");
    assert!(
        h.get("x-astra-key").is_none(),
        "a client's X-Astra-* is dropped: {h}"
    );
    assert!(
        h.get("x-drop-me").is_none(),
        "Connection-named headers are hop-by-hop: {h}"
    );

    // The edge's own routes win over a service of the same name.
    let r = http(
        edge,
        "GET",
        "/api/v1/gamification/leaderboard/daily",
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.json().get("instance").is_none(),
        "served by the edge itself"
    );

    // Kill a under load: 4 clients × 60 requests, GETs and POSTs.
    let mut tasks = vec![];
    for c in 0..4 {
        tasks.push(tokio::spawn(async move {
            let mut out = vec![];
            for i in 0..60 {
                let r = if i % 2 == 0 {
                    http(edge, "GET", &format!("/api/v1/echo/c{c}/{i}"), &[], b"").await
                } else {
                    http(
                        edge,
                        "POST",
                        &format!("/api/v1/echo/c{c}/{i}"),
                        &[("Content-Type", "application/json")],
                        br#"{"n":1}"#,
                    )
                    .await
                };
                out.push(r);
            }
            out
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    alive_a.store(false, Ordering::SeqCst);
    a.kill();
    let mut answers = vec![];
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    answers.iter().for_each(assert_documented);
    let ok = answers.iter().filter(|r| r.status == 200).count();
    eprintln!(
        "under the kill: {ok} of {} answered 200, the rest documented 503s",
        answers.len()
    );
    // Only a request in flight at the kill may fail (a POST is not sent twice).
    assert!(
        ok >= answers.len() - 8,
        "{ok} of {} answered",
        answers.len()
    );
    // After the kill every request lands on b: a refused connection is retried there.
    for i in 0..20 {
        let r = http(edge, "GET", &format!("/api/v1/echo/after/{i}"), &[], b"").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["instance"], "b");
    }
    let m = metrics(edge).await;
    assert!(
        metric_value(
            &m,
            "astra_bus_breaker_transitions_total{service=\"echo\",to=\"open\"}"
        ) >= 1.0,
        "a's breaker opened"
    );
    assert!(
        metric_value(
            &m,
            "astra_bus_upstream_requests_total{service=\"echo\",outcome=\"refused\"}"
        ) >= 1.0
    );

    // The registry: 1/2 healthy once a's ttl passes, then a is forgotten (3 ttls).
    let mut states = vec![];
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while states.last() != Some(&(1, 1)) {
        assert!(
            std::time::Instant::now() < deadline,
            "a never forgotten: {states:?}"
        );
        let list = http(edge, "GET", "/v1/services", &[], b"").await.json();
        let echo = list["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "echo")
            .cloned()
            .unwrap();
        let now = (
            echo["healthy"].as_u64().unwrap(),
            echo["total"].as_u64().unwrap(),
        );
        if states.last() != Some(&now) {
            states.push(now);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(states.ends_with(&[(1, 2), (1, 1)]), "{states:?}");
    alive_b.store(false, Ordering::SeqCst);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_instance_opens_its_breaker_and_a_probe_closes_it() {
    let server = RedisServer::start();
    let (_d, cfg, edge) = edge_config(&server.url(), None);
    let daemon = InProc::start_role(cfg, Registry::builtin(), Role::Edge).await;
    let port = free_port();
    let mut broken = Instance::start("a", port, true);
    register(edge, "echo", "a", port, 60_000).await;

    // Its 500s are relayed (its answer, not the edge's) and count as failures.
    for _ in 0..2 {
        let r = http(edge, "GET", "/api/v1/echo/x", &[], b"").await;
        assert_eq!(r.status, 500, "{}", r.body);
        assert_eq!(r.json()["instance"], "a");
    }
    // Open: the edge answers for it, fast, with when to come back.
    let started = std::time::Instant::now();
    let r = http(edge, "GET", "/api/v1/echo/x", &[], b"").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "circuit_open");
    assert_eq!(r.json()["service"], "echo");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(started.elapsed() < Duration::from_millis(500));
    let m = metrics(edge).await;
    assert_eq!(
        metric_value(
            &m,
            "astra_bus_breaker_state{service=\"echo\",state=\"open\"}"
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &m,
            "astra_bus_breaker_state{service=\"echo\",state=\"closed\"}"
        ),
        0.0
    );

    // Fixed and redeployed on the same address: after the window one probe closes it.
    broken.kill();
    let _fixed = Instance::start("a", port, false);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = http(edge, "GET", "/api/v1/echo/x", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let m = metrics(edge).await;
    assert_eq!(
        metric_value(
            &m,
            "astra_bus_breaker_state{service=\"echo\",state=\"closed\"}"
        ),
        1.0
    );
    for to in ["open", "half_open", "closed"] {
        assert_eq!(
            metric_value(
                &m,
                &format!("astra_bus_breaker_transitions_total{{service=\"echo\",to=\"{to}\"}}")
            ),
            1.0,
            "{to}"
        );
    }

    // A service without instances: 503 no_instance; an undeclared or unproxied one: 404.
    let r = http(
        edge,
        "POST",
        "/api/v1/empty/x",
        &[("Content-Type", "application/json")],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "no_instance");
    assert!(r.header("retry-after").is_some());
    for path in ["/api/v1/nosuch/x", "/api/v1/internal/x"] {
        let r = http(edge, "GET", path, &[], b"").await;
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        assert_eq!(r.json()["error"], "no_route");
    }
    // A path that does not decode is a JSON 400, not axum's text.
    let r = http(edge, "GET", "/api/v1/echo/%FF%FE", &[], b"").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_path");
    // A body over edge.max_body_bytes never reaches the instance.
    let big = vec![b'x'; 1_100_000];
    let r = http(
        edge,
        "POST",
        "/api/v1/echo/x",
        &[("Content-Type", "text/plain")],
        &big,
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.body);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_scope_the_proxy_and_never_reach_the_service() {
    let server = RedisServer::start();
    let key = |name: &str, secret: &str, scopes: &str| {
        format!(
            "[[key]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = {scopes}\n",
            astra_bus::config::hex(&astra_bus::config::key_sha256(secret))
        )
    };
    let keys = [
        key("caller", "caller-secret", r#"["proxy:echo"]"#),
        key("reader", "reader-secret", r#"["read"]"#),
        key("ops", "ops-secret", r#"["ops"]"#),
    ]
    .concat();
    let (_d, cfg, edge) = edge_config(&server.url(), Some(&keys));
    let daemon = InProc::start_role(cfg, Registry::builtin(), Role::Edge).await;
    let port = free_port();
    let _i = Instance::start("a", port, false);
    let r = post_json(
        edge,
        "/v1/services/echo/instances/a",
        &[("Authorization", "Bearer ops-secret")],
        &json!({"url": format!("http://127.0.0.1:{port}"), "ttl_ms": 60_000}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let r = http(edge, "GET", "/api/v1/echo/x", &[], b"").await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = http(
        edge,
        "GET",
        "/api/v1/echo/x",
        &[("Authorization", "Bearer reader-secret")],
        b"",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"], "out_of_scope");
    let r = http(
        edge,
        "GET",
        "/api/v1/echo/x",
        &[
            ("Authorization", "Bearer caller-secret"),
            ("X-User-ID", "someone-else"),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let h: Value = r.json()["headers"].clone();
    assert!(
        h.get("authorization").is_none(),
        "the edge's credential stays at the edge: {h}"
    );
    assert_eq!(h["x-astra-key"], "caller");
    // The key does not vouch for users: the claimed user is not passed on as verified.
    assert!(h.get("x-user-id").is_none(), "{h}");
    daemon.stop().await;
}
