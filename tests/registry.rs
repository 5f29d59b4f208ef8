//! The service registry: instances register and heartbeat through the edge, every edge on
//! the same Redis lists the same services with their healthy count, an instance without
//! heartbeats turns unhealthy after its ttl and is forgotten after three, and every bad
//! request is a JSON 4xx naming what is wrong.

mod support;

use std::time::Duration;

use astra_bus::config::Config;
use astra_bus::daemon::Role;
use astra_bus::handlers::Registry;
use serde_json::{Value, json};
use support::bus::*;
use support::{RedisServer, TempDir, free_port, shipped_config_copy};

/// An edge-only config on `url` listening on a free port.
fn edge_config(url: &str, instance: &str) -> (TempDir, Config, u16) {
    edge_config_with(url, instance, |_| None)
}

/// [`edge_config`] with more environment (`env` may read files of the config dir).
fn edge_config_with(
    url: &str,
    instance: &str,
    env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
) -> (TempDir, Config, u16) {
    let dir = shipped_config_copy();
    let port = free_port();
    let (url, instance) = (url.to_string(), instance.to_string());
    let cfg = Config::load_for(
        &dir.path,
        move |k| match k {
            "ASTRA_REDIS_URL" => Some(url.clone()),
            "ASTRA_INSTANCE" => Some(instance.clone()),
            "ASTRA_HTTP_LISTEN" => Some(format!("127.0.0.1:{port}")),
            k => env(k),
        },
        &Registry::builtin(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (dir, cfg, port)
}

async fn beat(port: u16, service: &str, instance: &str, ttl_ms: u64) -> HttpReply {
    post_json(
        port,
        &format!("/v1/services/{service}/instances/{instance}"),
        &[],
        &json!({"url": format!("http://127.0.0.1:80{}", instance.len()), "ttl_ms": ttl_ms}),
    )
    .await
}

async fn services(port: u16) -> Value {
    let r = http(port, "GET", "/v1/services", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["services"].clone()
}

/// (healthy, total, ids of healthy instances) of `name` in a listing.
fn counts(list: &Value, name: &str) -> Option<(u64, u64, Vec<String>)> {
    let s = list.as_array()?.iter().find(|s| s["name"] == name)?;
    let healthy = s["instances"]
        .as_array()?
        .iter()
        .filter(|i| i["healthy"] == true)
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    Some((s["healthy"].as_u64()?, s["total"].as_u64()?, healthy))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_heartbeat_expire_and_are_seen_by_every_edge() {
    let server = RedisServer::start();
    let (_d1, c1, p1) = edge_config(&server.url(), "edge-a");
    let (_d2, c2, p2) = edge_config(&server.url(), "edge-b");
    let a = InProc::start_role(c1, Registry::builtin(), Role::Edge).await;
    let b = InProc::start_role(c2, Registry::builtin(), Role::Edge).await;

    // Two instances of trading register through edge a (1 s ttl), one of social through b.
    for i in ["t-1", "t-2"] {
        let r = beat(p1, "trading", i, 1000).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["heartbeat_every_ms"], 333, "{}", r.body);
    }
    assert_eq!(beat(p2, "social", "s-1", 60_000).await.status, 200);
    // Both edges list the same registry.
    for port in [p1, p2] {
        let l = services(port).await;
        assert_eq!(
            counts(&l, "trading").map(|c| (c.0, c.1)),
            Some((2, 2)),
            "{l}"
        );
        assert_eq!(
            counts(&l, "social").map(|c| (c.0, c.1)),
            Some((1, 1)),
            "{l}"
        );
        let t = l
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "trading")
            .unwrap();
        assert_eq!(t["instances"][0]["url"], "http://127.0.0.1:803", "{t}");
    }

    // t-2 dies: t-1 keeps heartbeating. After its ttl t-2 is listed unhealthy (1/2) ...
    let started = std::time::Instant::now();
    let mut seen_half = false;
    while started.elapsed() < Duration::from_secs(10) {
        assert_eq!(beat(p1, "trading", "t-1", 1000).await.status, 200);
        let l = services(p2).await;
        match counts(&l, "trading") {
            Some((1, 2, healthy)) => {
                assert_eq!(healthy, ["t-1"], "{l}");
                seen_half = true;
            }
            Some((1, 1, healthy)) if seen_half => {
                // ... then forgotten, 3 ttls after its last heartbeat.
                assert_eq!(healthy, ["t-1"], "{l}");
                assert!(
                    started.elapsed() >= Duration::from_millis(2000),
                    "forgotten too soon"
                );
                break;
            }
            Some((2, 2, _)) => {}
            other => panic!("unexpected {other:?}: {l}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let l = services(p1).await;
    assert_eq!(
        counts(&l, "trading").map(|c| (c.0, c.1)),
        Some((1, 1)),
        "t-2 forgotten: {l}"
    );

    // Leaving: DELETE removes it; a second DELETE is a 404; a service with no instance
    // left is not listed.
    let r = http(p2, "DELETE", "/v1/services/trading/instances/t-1", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http(p2, "DELETE", "/v1/services/trading/instances/t-1", &[], b"").await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("no_instance")),
        "{}",
        r.body
    );
    let l = services(p1).await;
    assert!(counts(&l, "trading").is_none(), "{l}");
    assert!(counts(&l, "social").is_some(), "{l}");

    // Bad requests: a JSON 4xx naming what is wrong, nothing registered.
    for (path, ct, body, status, code) in [
        (
            "/v1/services/Trading/instances/t-1",
            "application/json",
            r#"{"url":"http://a"}"#,
            400,
            "invalid_service",
        ),
        (
            "/v1/services/trading/instances/t%201",
            "application/json",
            r#"{"url":"http://a"}"#,
            400,
            "invalid_instance",
        ),
        (
            "/v1/services/trading/instances/t-1",
            "text/plain",
            r#"{"url":"http://a"}"#,
            415,
            "unsupported_media_type",
        ),
        (
            "/v1/services/trading/instances/t-1",
            "application/json",
            r#"{"url":"ftp://a"}"#,
            422,
            "invalid_heartbeat",
        ),
        (
            "/v1/services/trading/instances/t-1",
            "application/json",
            r#"{"url":"http://a","ttl_ms":5}"#,
            422,
            "invalid_heartbeat",
        ),
        (
            "/v1/services/trading/instances/t-1",
            "application/json",
            r#"{"url":"http://a","weight":2}"#,
            400,
            "invalid_body",
        ),
        (
            "/v1/services/trading/instances/t-1",
            "application/json",
            r#"{"url":"http://a","#,
            400,
            "invalid_body",
        ),
    ] {
        let r = http(p1, "POST", path, &[("Content-Type", ct)], body.as_bytes()).await;
        let e = r.json();
        assert_eq!(
            (r.status, e["error"].as_str()),
            (status, Some(code)),
            "{path} {body}: {}",
            r.body
        );
        assert!(
            e["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{}",
            r.body
        );
    }
    let big = format!(r#"{{"url":"http://a/{}"}}"#, "x".repeat(8000));
    let r = http(
        p1,
        "POST",
        "/v1/services/trading/instances/t-1",
        &[("Content-Type", "application/json")],
        big.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.body);
    let l = services(p1).await;
    assert!(
        counts(&l, "trading").is_none(),
        "nothing registered by a bad request: {l}"
    );

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_heartbeats_lists_and_removes_like_the_edge() {
    let server = RedisServer::start();
    let (dir, cfg, port) = edge_config(&server.url(), "edge-cli");
    let edge = InProc::start_role(cfg, Registry::builtin(), Role::Edge).await;
    let cli = |args: &[&str]| {
        std::process::Command::new(support::bin())
            .args(args)
            .args(["--config", &dir.path.to_string_lossy()])
            .env("ASTRA_REDIS_URL", server.url())
            .env("ASTRA_LOG", "warn")
            .output()
            .unwrap()
    };
    // A sidecar heartbeat, every third of its 1 s ttl, until SIGTERM.
    let mut sidecar = std::process::Command::new(support::bin())
        .args([
            "service",
            "heartbeat",
            "payments",
            "p-1",
            "--url",
            "http://127.0.0.1:8009",
            "--ttl",
            "1s",
        ])
        .args(["--config", &dir.path.to_string_lossy()])
        .env("ASTRA_REDIS_URL", server.url())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the sidecar registered",
        || async { counts(&services(port).await, "payments").is_some() },
    )
    .await;
    // Healthy well past its ttl: the heartbeats keep it so.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let l = services(port).await;
    assert_eq!(
        counts(&l, "payments"),
        Some((1, 1, vec!["p-1".to_string()])),
        "{l}"
    );
    // `service list --json` says what the edge says; the table names the health.
    let o = cli(&["service", "list", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        counts(&listed["services"], "payments"),
        counts(&l, "payments")
    );
    let o = cli(&["service", "list"]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("payments: 1/1 healthy")
            && table.contains("p-1")
            && table.contains("http://127.0.0.1:8009"),
        "{table}"
    );
    let o = cli(&["status"]);
    let status = String::from_utf8_lossy(&o.stdout);
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["payments", "1", "1"]),
        "{status}"
    );
    // SIGTERM: it leaves the registry on the way out.
    unsafe { libc::kill(sidecar.id() as i32, libc::SIGTERM) };
    assert!(sidecar.wait().unwrap().success());
    assert!(counts(&services(port).await, "payments").is_none());
    // Bad input says what is wrong; removing an unknown instance exits 1.
    let o = cli(&[
        "service",
        "heartbeat",
        "Pay",
        "p-1",
        "--url",
        "http://a",
        "--once",
    ]);
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("a service name is 1-64 characters")
    );
    let o = cli(&[
        "service",
        "heartbeat",
        "pay",
        "p-1",
        "--url",
        "ftp://a",
        "--once",
    ]);
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("must start with http:// or https://")
    );
    let o = cli(&["service", "remove", "pay", "p-9"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_scope_lets_a_service_manage_its_own_instances_only() {
    let server = RedisServer::start();
    let keys_dir = TempDir::new("registry-keys");
    let keys = keys_dir.join("keys.toml");
    let entry = |name: &str, key: &str, scope: &str| {
        format!(
            "[[key]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [\"{scope}\"]\n",
            astra_bus::config::hex(&astra_bus::config::key_sha256(key))
        )
    };
    std::fs::write(
        &keys,
        entry("trading-svc", "trading-key", "register:trading")
            + &entry("reader", "read-key", "read")
            + &entry("operator", "ops-key", "ops"),
    )
    .unwrap();
    let keys_path = keys.to_string_lossy().into_owned();
    let (_d, cfg, port) = edge_config_with(&server.url(), "edge-keys", move |k| match k {
        "ASTRA_EDGE_AUTH" | "ASTRA_EDGE_OPS" => Some("keys".into()),
        "ASTRA_EDGE_KEYS_FILE" => Some(keys_path.clone()),
        _ => None,
    });
    let edge = InProc::start_role(cfg, Registry::builtin(), Role::Edge).await;
    let call = |method: &'static str, path: String, key: Option<&'static str>| async move {
        let auth = key.map(|k| format!("Bearer {k}"));
        let mut h: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            h.push(("Authorization", a.as_str()));
        }
        http(
            port,
            method,
            &path,
            &h,
            br#"{"url":"http://10.0.0.7:8001"}"#,
        )
        .await
    };
    let own = "/v1/services/trading/instances/t-1".to_string();
    let other = "/v1/services/social/instances/s-1".to_string();
    // Its own service: register and remove.
    assert_eq!(
        call("POST", own.clone(), Some("trading-key")).await.status,
        200
    );
    // Another service, the listing, and other keys' scopes: refused, as JSON.
    for (method, path, key, status) in [
        ("POST", other.clone(), Some("trading-key"), 403),
        ("GET", "/v1/services".to_string(), Some("trading-key"), 403),
        ("POST", own.clone(), Some("read-key"), 403),
        ("POST", own.clone(), None, 401),
        ("DELETE", own.clone(), Some("read-key"), 403),
    ] {
        let r = call(method, path.clone(), key).await;
        assert_eq!(r.status, status, "{method} {path} with {key:?}: {}", r.body);
        assert!(r.json()["error"].is_string(), "{}", r.body);
    }
    // An ops key sees it; the service's key removes its own instance.
    let r = http(
        port,
        "GET",
        "/v1/services",
        &[("Authorization", "Bearer ops-key")],
        b"",
    )
    .await;
    assert_eq!(
        counts(&r.json()["services"], "trading").map(|c| (c.0, c.1)),
        Some((1, 1)),
        "{}",
        r.body
    );
    assert_eq!(
        call("DELETE", own.clone(), Some("trading-key"))
            .await
            .status,
        200
    );
    assert_eq!(
        call("POST", other, Some("ops-key")).await.status,
        200,
        "ops may register any"
    );
    edge.stop().await;
}
