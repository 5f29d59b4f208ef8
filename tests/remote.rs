//! Remote handlers: a group decided by a service in another language, over HTTP/JSON,
//! with the same exactly-once commit as a built-in handler. Real parts only: the
//! `astra-bus` binary (SIGKILLed and restarted), a real redis-server, and the shipped
//! example service `examples/remote-handler/service.py` (Python, stdlib only) as two
//! instances that register themselves through the edge, killed and restarted.
//!
//! What must hold, whatever is killed when: every input has exactly one derived event,
//! the state the service asked for is exact, nothing is dead-lettered because a service
//! was down (the group waits while every breaker is open), and the registry shows the
//! instances' health as they die.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::bus::*;
use support::edge::Binary;
use support::{RedisServer, TempDir, free_port, repo_root, shipped_config_copy};

const TRADES: &str = "astra.trading.trade_executed.v1";
const SCORED: &str = "astra.scoring.trade_scored.v1";
const GROUP: &str = "scoring.trade_scorer";

/// The shipped streams plus the example's stream and service, and only the example's
/// group (the 17 shipped groups are not what this test is about).
fn config() -> TempDir {
    let dir = shipped_config_copy();
    let ex = repo_root().join("examples/remote-handler");
    let p = dir.join("streams.toml");
    let extra = std::fs::read_to_string(ex.join("streams-extra.toml")).unwrap();
    // Fast breakers and registry reads, so the outage fits in a test.
    let extra = extra
        .replace("open_for = \"30s\"", "open_for = \"1s\"")
        .replace("failures = 5", "failures = 2")
        .replace(
            "timeout = \"5s\"\n",
            "timeout = \"5s\"\nregistry_refresh = \"200ms\"\n",
        );
    let text = std::fs::read_to_string(&p).unwrap() + "\n" + &extra;
    std::fs::write(&p, text).unwrap();
    let groups = dir.join("consumer-groups");
    for f in std::fs::read_dir(&groups).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    std::fs::copy(ex.join("scoring.toml"), groups.join("scoring.toml")).unwrap();
    dir
}

/// One instance of the example service, heartbeating to the edge on `edge`.
struct Service {
    child: Child,
}

impl Service {
    /// Heartbeating itself to the edge on `edge`, or (`None`) left to a sidecar.
    fn start(id: &str, port: u16, edge: Option<u16>) -> Service {
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("examples/remote-handler/service.py"))
            .args(["--port", &port.to_string(), "--id", id]);
        if let Some(edge) = edge {
            cmd.args([
                "--edge",
                &format!("http://127.0.0.1:{edge}"),
                "--ttl-ms",
                "1500",
            ]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the example service");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "service {id} never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Service { child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `astra-bus service heartbeat` keeping `id` registered, as a sidecar does while the
/// service process itself restarts (killed on drop).
struct Sidecar(Child);

impl Sidecar {
    fn start(dir: &TempDir, url: &str, id: &str, port: u16) -> Sidecar {
        let child = Command::new(support::bin())
            .args(["service", "heartbeat", "scorer", id])
            .args([
                "--url",
                &format!("http://127.0.0.1:{port}"),
                "--ttl",
                "1500ms",
            ])
            .args(["--config", &dir.path.to_string_lossy()])
            .env("ASTRA_REDIS_URL", url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("astra-bus service heartbeat");
        Sidecar(child)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon(dir: &TempDir, url: &str, port: u16, logs: &TempDir) -> Binary {
    let env = [
        ("ASTRA_REDIS_URL", url.to_string()),
        ("ASTRA_HTTP_LISTEN", format!("127.0.0.1:{port}")),
        ("ASTRA_INSTANCE", "worker".to_string()),
    ];
    Binary::start_args(
        &["run", "--config", &dir.path.to_string_lossy()],
        &env,
        logs,
        port,
    )
}

async fn scored(redis: &astra_bus::bus::Redis) -> i64 {
    xlen(redis, SCORED).await
}

async fn wait_scored(redis: &astra_bus::bus::Redis, at_least: i64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while scored(redis).await < at_least {
        assert!(
            Instant::now() < deadline,
            "{what}: only {} scored",
            scored(redis).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (healthy, total) of the scorer in the edge's registry listing.
async fn health(edge: u16) -> Option<(u64, u64)> {
    let r = http(edge, "GET", "/v1/services", &[], b"").await;
    let v = r.json();
    let s = v["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == "scorer")?
        .clone();
    Some((s["healthy"].as_u64()?, s["total"].as_u64()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_service_decides_10k_events_exactly_once_across_kills() {
    const N: usize = 10_000;
    let server = RedisServer::start();
    let dir = config();
    let logs = TempDir::new("remote");
    let edge = free_port();
    let mut d = daemon(&dir, &server.url(), edge, &logs);
    let (pa, pb) = (free_port(), free_port());
    let mut a = Service::start("scorer-a", pa, Some(edge));
    // b's registration is a sidecar's, so it stays listed (and healthy) while b's process
    // is down: then only its circuit breaker keeps the group off it.
    let mut b = Service::start("scorer-b", pb, None);
    let _sidecar = Sidecar::start(&dir, &server.url(), "scorer-b", pb);
    let redis = connect(&server.url()).await;
    wait_until(
        Duration::from_secs(10),
        "both instances registered",
        || async { health(edge).await == Some((2, 2)) },
    )
    .await;

    // 10k trades from 20 users, published by 8 concurrent producers.
    let mut producers = vec![];
    for p in 0..8 {
        let r = redis.clone();
        producers.push(tokio::spawn(async move {
            for i in (p..N).step_by(8) {
                let body = json!({"trade_id": format!("t{i}"), "user_id": format!("u{}", i % 20),
                    "symbol": "BTC", "side": "buy", "quantity": 1 + i % 3, "price_usd": 10 + i % 7,
                    "fee_usd": 0.5});
                publish_json(&r, TRADES, &body.to_string(), None).await;
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    let mut expect_cents: std::collections::BTreeMap<String, i64> = Default::default();
    let mut expect_trades: std::collections::BTreeMap<String, i64> = Default::default();
    for i in 0..N {
        let u = format!("u{}", i % 20);
        *expect_cents.entry(u.clone()).or_default() += ((1 + i % 3) * (10 + i % 7) * 100) as i64;
        *expect_trades.entry(u).or_default() += 1;
    }

    let started = Instant::now();
    // 1. SIGKILL the daemon mid-run, start it again.
    wait_scored(&redis, 2_000, "before the daemon kill").await;
    let _ = d.child.kill();
    let _ = d.child.wait();
    d = daemon(&dir, &server.url(), edge, &logs);

    // 2. Kill one instance under load: its traffic moves to the other; the registry says 1/2.
    wait_scored(&redis, 4_000, "before killing scorer-a").await;
    a.kill();
    let at_kill = scored(&redis).await;
    // Unhealthy once its ttl (1.5 s) passes without a heartbeat, listed for 3 s more.
    wait_until(Duration::from_secs(4), "1/2 healthy", || async {
        health(edge).await == Some((1, 2))
    })
    .await;
    wait_scored(&redis, at_kill + 1_000, "scorer-b alone").await;

    // 3. Kill the last one (its sidecar keeps it listed): the breaker opens, the group
    // waits, nothing is dead-lettered.
    b.kill();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stalled = scored(&redis).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        scored(&redis).await,
        stalled,
        "nothing is decided without a service"
    );
    assert!(
        stalled < N as i64,
        "the outage came too late to test: {stalled}"
    );
    assert_eq!(
        xlen(&redis, "astra.bus.dead_letter.v1").await,
        0,
        "an outage dead-letters nothing"
    );
    let (_, _, m) = http_get(edge, "/metrics").await;
    assert!(
        metric_value(
            &m,
            "astra_bus_breaker_transitions_total{service=\"scorer\",to=\"open\"}"
        ) >= 1.0,
        "the breaker opened"
    );

    // 4. Back on the same address: a probe closes the breaker, the rest goes through.
    let _b2 = Service::start("scorer-b", pb, None);
    let outage = down.elapsed();
    wait_scored(&redis, N as i64, "after the outage").await;
    wait_until(Duration::from_secs(30), "group drained", || async {
        pending(&redis, TRADES, GROUP).await == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    eprintln!(
        "{N} trades decided by the service in {:.1}s, across a daemon SIGKILL, one instance's death and a {:.1}s outage of both",
        started.elapsed().as_secs_f64(),
        outage.as_secs_f64()
    );
    // Exactly one derived event per input, exact state, no dead letters.
    let out = read_all(&redis, SCORED).await;
    assert_eq!(out.len(), N, "one scored event per trade");
    let causes: std::collections::BTreeSet<_> =
        out.iter().map(|(_, e)| e.caus.clone().unwrap()).collect();
    assert_eq!(causes.len(), N, "no trade scored twice");
    assert_eq!(
        hgetall_int(&redis, "svc:scorer:volume_cents").await,
        expect_cents
    );
    assert_eq!(
        hgetall_int(&redis, "svc:scorer:trades").await,
        expect_trades
    );
    assert_eq!(xlen(&redis, "astra.bus.dead_letter.v1").await, 0);
    let (_, _, m) = http_get(edge, "/metrics").await;
    for to in ["half_open", "closed"] {
        assert!(
            metric_value(
                &m,
                &format!("astra_bus_breaker_transitions_total{{service=\"scorer\",to=\"{to}\"}}")
            ) >= 1.0,
            "{to}"
        );
    }
    // The derived events carry the trade's correlation id and name it as their cause.
    let trades = read_all(&redis, TRADES).await;
    let by_id: std::collections::HashMap<_, _> = trades
        .iter()
        .map(|(_, e)| (e.id.clone(), e.cid.clone()))
        .collect();
    for (_, e) in out.iter().take(100) {
        assert_eq!(by_id.get(e.caus.as_ref().unwrap()), Some(&e.cid));
    }
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_answering_poison_or_garbage_ends_in_dead_letters() {
    let server = RedisServer::start();
    let dir = config();
    let logs = TempDir::new("remote-bad");
    let edge = free_port();
    let d = daemon(&dir, &server.url(), edge, &logs);
    let port = free_port();
    let _s = Service::start("scorer-a", port, Some(edge));
    let redis = connect(&server.url()).await;
    wait_until(Duration::from_secs(10), "registered", || async {
        health(edge).await == Some((1, 1))
    })
    .await;
    // A payload off the trade contract never reaches the service: poison at once.
    publish_json(
        &redis,
        TRADES,
        r#"{"trade_id": "bad", "user_id": "u1", "symbol": "BTC", "side": "buy", "quantity": 1, "price_usd": "free"}"#,
        None,
    )
    .await;
    // One the service refuses by its own rule: poison with its reason.
    publish_json(
        &redis,
        TRADES,
        r#"{"trade_id": "big", "user_id": "u1", "symbol": "BTC", "side": "buy", "quantity": 1000, "price_usd": 2000}"#,
        None,
    )
    .await;
    wait_until(Duration::from_secs(20), "dead-lettered", || async {
        xlen(&redis, "astra.bus.dead_letter.v1").await == 2
    })
    .await;
    let dl = read_raw(&redis, "astra.bus.dead_letter.v1").await;
    let field = |n: usize, k: &str| {
        dl[n]
            .iter()
            .find(|(f, _)| f == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    for n in 0..2 {
        assert_eq!(field(n, "dlq_reason"), "poison", "{dl:?}");
        assert_eq!(field(n, "dlq_group"), GROUP);
    }
    let errors: Vec<String> = (0..2).map(|n| field(n, "dlq_error")).collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("field `price_usd`") && e.contains("the contract of")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("the service: over the scorer's limit")),
        "{errors:?}"
    );
    // Only the one within the contract was sent.
    let stats = http(port, "GET", "/stats", &[], b"").await.json();
    assert_eq!(stats["events"], 1, "{stats}");
    assert_eq!(xlen(&redis, SCORED).await, 0);
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_failing_every_request_dead_letters_after_max_deliveries() {
    let server = RedisServer::start();
    let dir = config();
    // Three failed requests per event at most; a quick backoff.
    let g = dir.join("consumer-groups/scoring.toml");
    let text = std::fs::read_to_string(&g).unwrap().replace(
        "timeout = \"5s\" }",
        "timeout = \"5s\", backoff = \"10ms\", max_backoff = \"50ms\" }\nmax_deliveries = 3",
    );
    std::fs::write(&g, text).unwrap();
    let logs = TempDir::new("remote-500");
    let edge = free_port();
    let d = daemon(&dir, &server.url(), edge, &logs);
    // A broken deployment: up, registered, answering 500 to everything.
    let port = free_port();
    let mut broken = Command::new("python3")
        .arg(repo_root().join("tests/support/echo_service.py"))
        .args(["--port", &port.to_string(), "--id", "scorer-x", "--fail"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = post_json(
        edge,
        "/v1/services/scorer/instances/scorer-x",
        &[],
        &json!({"url": format!("http://127.0.0.1:{port}"), "ttl_ms": 60_000}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let redis = connect(&server.url()).await;
    publish_json(
        &redis,
        TRADES,
        r#"{"trade_id": "t1", "user_id": "u1", "symbol": "BTC", "side": "buy", "quantity": 1, "price_usd": 10}"#,
        None,
    )
    .await;
    // Each failure counts; the breaker (2 failures, 1 s) spaces the later ones out.
    wait_until(Duration::from_secs(30), "dead-lettered", || async {
        xlen(&redis, "astra.bus.dead_letter.v1").await == 1
    })
    .await;
    let dl = read_raw(&redis, "astra.bus.dead_letter.v1").await;
    let field = |k: &str| {
        dl[0]
            .iter()
            .find(|(f, _)| f == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(field("dlq_reason"), "max_deliveries", "{dl:?}");
    assert!(
        field("dlq_error").contains("failed 3 times") && field("dlq_error").contains("500"),
        "{dl:?}"
    );
    assert_eq!(pending(&redis, TRADES, GROUP).await, 0);
    assert_eq!(xlen(&redis, SCORED).await, 0);
    let _ = broken.kill();
    let _ = broken.wait();
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tracing_on_the_service_is_asked_within_the_events_trace() {
    let server = RedisServer::start();
    let dir = config();
    // Tracing on, the collector absent (spans are dropped; the context still flows).
    let p = dir.join("streams.toml");
    let dead = free_port();
    let text = std::fs::read_to_string(&p).unwrap()
        + &format!(
            "\n[tracing]\nenabled = true\nendpoint = \"http://127.0.0.1:{dead}/v1/traces\"\n"
        );
    std::fs::write(&p, text).unwrap();
    let logs = TempDir::new("remote-trace");
    let edge = free_port();
    let d = daemon(&dir, &server.url(), edge, &logs);
    let port = free_port();
    let _s = Service::start("scorer-a", port, Some(edge));
    let redis = connect(&server.url()).await;
    wait_until(Duration::from_secs(10), "registered", || async {
        health(edge).await == Some((1, 1))
    })
    .await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let tp = format!("00-{trace}-00f067aa0ba902b7-01");
    let (_, _, _) = http_get(edge, "/health").await;
    let r = post_json(
        edge,
        &format!("/v1/events/{TRADES}"),
        &[("traceparent", tp.as_str())],
        &json!({"trade_id": "t1", "user_id": "u1", "symbol": "BTC", "side": "buy", "quantity": 1, "price_usd": 10}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    wait_scored(&redis, 1, "scored").await;
    let stats = http(port, "GET", "/stats", &[], b"").await.json();
    let asked = stats["last_traceparent"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let stored = read_all(&redis, TRADES).await[0].1.tp.clone().unwrap();
    let derived = read_all(&redis, SCORED).await[0].1.tp.clone().unwrap();
    // Same trace; the service sees the group's process span, which the derived event names.
    assert!(asked.starts_with(&format!("00-{trace}-")), "{asked}");
    assert_ne!(
        asked, stored,
        "the service is asked within the group's span, not the producer's"
    );
    assert_eq!(asked, derived);
    drop(d);
}
