//! Metrics over HTTP: exact counter and health-gauge values after known traffic, JSON
//! errors, and scrapes served from memory (no Redis command per scrape).

mod support;

use std::time::Duration;

use astra_bus::config::Config;
use astra_bus::handlers::Registry;
use support::bus::*;
use support::{RedisServer, free_port, write_config};

const A: &str = "astra.test.a.v1";
const B: &str = "astra.test.b.v1";

fn start_config(server: &RedisServer, refresh: &str) -> (support::TempDir, Config, u16) {
    let dir = write_config(
        &streams_toml(&[A, B], "").replace(
            "[daemon]",
            &format!("[metrics]\nrefresh_interval = \"{refresh}\"\n\n[daemon]"),
        ),
        &[(
            "test",
            &format!(
                "[[group]]\nname = \"test.fwd\"\nhandler = \"builtin.forward\"\nreads = [\"{A}\"]\npublishes = [\"{B}\"]\n"
            ),
        )],
    );
    let port = free_port();
    let url = server.url();
    let cfg = Config::load_for(
        &dir.path,
        move |k| match k {
            "ASTRA_REDIS_URL" => Some(url.clone()),
            "ASTRA_INSTANCE" => Some("m1".into()),
            "ASTRA_HTTP_LISTEN" => Some(format!("127.0.0.1:{port}")),
            _ => None,
        },
        &Registry::builtin(),
    )
    .unwrap();
    (dir, cfg, port)
}

#[tokio::test]
async fn metrics_are_served_over_http_with_exact_values() {
    let server = RedisServer::start();
    let (_dir, cfg, port) = start_config(&server, "200ms");
    let daemon = InProc::start(cfg, Registry::builtin()).await;
    let redis = connect(&server.url()).await;
    for i in 0..10 {
        publish_json(&redis, A, &format!("{{\"i\":{i}}}"), None).await;
    }
    wait_until(Duration::from_secs(20), "forwarded", || async {
        xlen(&redis, B).await == 10
    })
    .await;
    // Let one health refresh see the final state.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, head, body) = http_get(port, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        head.to_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    let sg = format!("{{stream=\"{A}\",group=\"test.fwd\"}}");
    assert_eq!(
        metric_value(&body, &format!("astra_bus_consumed_total{sg}")),
        10.0
    );
    assert_eq!(
        metric_value(&body, &format!("astra_bus_acked_total{sg}")),
        10.0
    );
    assert_eq!(
        metric_value(
            &body,
            &format!("astra_bus_published_total{{stream=\"{B}\"}}")
        ),
        10.0
    );
    assert_eq!(
        metric_value(&body, &format!("astra_bus_stream_length{{stream=\"{A}\"}}")),
        10.0
    );
    assert_eq!(
        metric_value(&body, &format!("astra_bus_stream_length{{stream=\"{B}\"}}")),
        10.0
    );
    assert_eq!(
        metric_value(&body, &format!("astra_bus_group_pending{sg}")),
        0.0
    );
    assert_eq!(
        metric_value(&body, &format!("astra_bus_group_lag{sg}")),
        0.0
    );
    assert_eq!(
        metric_value(&body, &format!("astra_bus_group_lag_unknown{sg}")),
        0.0
    );
    assert_eq!(
        metric_value(&body, &format!("astra_bus_group_consumers{sg}")),
        1.0
    );
    assert_eq!(
        metric_value(
            &body,
            &format!("astra_bus_group_oldest_pending_age_seconds{sg}")
        ),
        0.0
    );
    assert_eq!(metric_value(&body, "astra_bus_redis_up"), 1.0);
    // Series exist at 0 before their first event, so `increase()` sees the first one.
    assert_eq!(
        metric_value(
            &body,
            &format!(
                "astra_bus_dead_lettered_total{{stream=\"{A}\",group=\"test.fwd\",reason=\"poison\"}}"
            )
        ),
        0.0
    );
    assert_eq!(
        metric_value(&body, &format!("astra_bus_lost_total{sg}")),
        0.0
    );
    assert_eq!(
        metric_value(
            &body,
            "astra_bus_handler_duration_seconds_count{group=\"test.fwd\"}"
        ),
        10.0
    );
    assert!(body.trim_end().ends_with("# EOF"));

    let (status, _, body) = http_get(port, "/health").await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"status":"ok","version":"0.1.0"}"#)
    );
    let (status, head, body) = http_get(port, "/nope").await;
    assert_eq!(status, 404);
    assert!(
        head.to_lowercase()
            .contains("content-type: application/json")
    );
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"], "no_route");
    daemon.stop().await;
}

fn commandstat_calls(server: &RedisServer, cmd: &str) -> i64 {
    let info = server.cli(&["INFO", "commandstats"]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn scrapes_are_served_from_memory_without_redis_commands() {
    let server = RedisServer::start();
    // One refresh at startup, the next an hour later.
    let (_dir, cfg, port) = start_config(&server, "1h");
    let daemon = InProc::start(cfg, Registry::builtin()).await;
    let redis = connect(&server.url()).await;
    publish_json(&redis, A, "{}", None).await;
    wait_until(Duration::from_secs(20), "forwarded", || async {
        xlen(&redis, B).await == 1
    })
    .await;
    let (status, _, _) = http_get(port, "/metrics").await;
    assert_eq!(status, 200);
    let before: Vec<i64> = ["xinfo", "xlen", "xpending", "hgetall"]
        .iter()
        .map(|c| commandstat_calls(&server, c))
        .collect();
    for _ in 0..25 {
        let (status, _, body) = http_get(port, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("astra_bus_group_pending"));
    }
    let after: Vec<i64> = ["xinfo", "xlen", "xpending", "hgetall"]
        .iter()
        .map(|c| commandstat_calls(&server, c))
        .collect();
    assert_eq!(
        before, after,
        "25 scrapes issued no XINFO/XLEN/XPENDING/HGETALL"
    );
    daemon.stop().await;
}
