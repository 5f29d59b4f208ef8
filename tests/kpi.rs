//! Business KPIs and metrics end to end: known events through the shipped topology, then
//! exact KPI gauges and business counters over HTTP, identical on two instances, scraped
//! by a real Prometheus server, and every metric name the alert rules and the dashboard
//! use present in a real scrape.

mod support;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use astra_bus::bus::Redis;
use astra_bus::config::Config;
use astra_bus::envelope::{ContentType, Envelope, now_ms};
use astra_bus::events::streams;
use astra_bus::handlers::{Registry, utc_day};
use support::bus::*;
use support::{RedisServer, TempDir, free_port, repo_root, shipped_config_copy};

fn config(url: &str, port: u16) -> (TempDir, Config) {
    let dir = shipped_config_copy();
    let p = dir.join("streams.toml");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("block = \"2s\"", "block = \"100ms\"")
        .replace("refresh_interval = \"5s\"", "refresh_interval = \"200ms\"");
    std::fs::write(&p, text).unwrap();
    let url = url.to_string();
    let cfg = Config::load_for(
        &dir.path,
        move |k| match k {
            "ASTRA_REDIS_URL" => Some(url.clone()),
            "ASTRA_INSTANCE" => Some(format!("kpi-{port}")),
            "ASTRA_HTTP_LISTEN" => Some(format!("127.0.0.1:{port}")),
            _ => None,
        },
        &Registry::builtin(),
    )
    .unwrap();
    (dir, cfg)
}

async fn publish(redis: &Redis, stream: &str, ts: i64, payload: serde_json::Value) {
    let (domain, event, v) = astra_bus::config::parse_stream_name(stream).unwrap();
    let mut env = Envelope::root(
        &format!("{domain}.{event}"),
        v,
        "kpi-test",
        None,
        ContentType::MsgPack,
        rmp_serde::to_vec_named(&payload).unwrap(),
    );
    env.ts = ts;
    astra_bus::bus::publish::publish(redis, stream, &env)
        .await
        .unwrap();
}

/// Known traffic in the previous complete minute (so trades/s sees it), today (UTC).
/// Active users: ann, ben (registered, traded, interacted), cat (subscribed), dan and eve
/// (NFT seller and buyer) → 5. Revenue: fees 3 × $1.00, subscription $20, NFT 2.5% of
/// $400 = $10.
async fn known_traffic(redis: &Redis) {
    // `trades_per_second` reads the last complete minute, so the test must read the
    // metrics before the minute it publishes into stops being the last one: late in a
    // minute, wait for the next one (the test reads well within 20 s).
    if now_ms() % 60_000 > 40_000 {
        let wait = 60_000 - now_ms() % 60_000 + 100;
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    let mut minute = now_ms() / 60_000 - 1;
    while utc_day(minute * 60_000) != utc_day(now_ms() + 5_000) {
        // Just after midnight: the previous minute is yesterday; wait for a clean minute.
        tokio::time::sleep(Duration::from_secs(5)).await;
        minute = now_ms() / 60_000 - 1;
    }
    let ts = minute * 60_000 + 1_000;
    for u in ["ann", "ben"] {
        publish(
            redis,
            streams::REGISTERED,
            ts,
            serde_json::json!({"user_id": u, "display_name": u}),
        )
        .await;
    }
    for (i, u) in ["ann", "ben", "ann"].iter().enumerate() {
        publish(
            redis,
            streams::TRADE_EXECUTED,
            ts,
            serde_json::json!({
            "trade_id": format!("t{i}"), "user_id": u, "symbol": "BTC", "side": "buy",
            "quantity": 1, "price_usd": 500, "fee_usd": 1.0}),
        )
        .await;
    }
    for (a, b) in [
        ("ann", "ben"),
        ("ben", "ann"),
        ("ann", "ben"),
        ("ben", "ann"),
    ] {
        publish(
            redis,
            streams::INTERACTION,
            ts,
            serde_json::json!({"user_id": a, "target_user_id": b, "kind": "like"}),
        )
        .await;
    }
    publish(redis, streams::SUBSCRIPTION_CHANGED, ts, serde_json::json!({"user_id": "cat", "plan": "basic", "action": "started", "price_usd": 20})).await;
    publish(redis, streams::SALE_COMPLETED, ts, serde_json::json!({
        "sale_id": "s1", "collection": "c", "token_id": "1", "seller_id": "dan", "buyer_id": "eve", "price_usd": 400})).await;
}

async fn kpi_lines(port: u16) -> Vec<String> {
    let (status, _, body) = http_get(port, "/metrics").await;
    assert_eq!(status, 200);
    let mut lines: Vec<String> = body
        .lines()
        .filter(|l| l.starts_with("astra_kpi_"))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

async fn settled(redis: &Redis, cfg: &Config) {
    let mut quiet = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while quiet < 3 {
        let rows = astra_bus::bus::status::status(redis, cfg).await.unwrap();
        quiet = if rows.iter().any(|r| r.pending > 0 || r.lag != Some(0)) {
            0
        } else {
            quiet + 1
        };
        assert!(std::time::Instant::now() < deadline, "did not drain");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One more health refresh after the last commit.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// A real Prometheus server scraping `target` every second, killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let port = free_port();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: astra-bus\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("run prometheus (setup/test installs Debian's prometheus package)");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kpis_are_exact_identical_across_instances_and_scraped_by_prometheus() {
    let server = RedisServer::start();
    let (p1, p2) = (free_port(), free_port());
    let (_d1, cfg1) = config(&server.url(), p1);
    let (_d2, cfg2) = config(&server.url(), p2);
    let d1 = InProc::start(cfg1.clone(), Registry::builtin()).await;
    let d2 = InProc::start(cfg2, Registry::builtin()).await;
    let redis = connect(&server.url()).await;
    known_traffic(&redis).await;
    settled(&redis, &cfg1).await;

    let (status, _, body) = http_get(p1, "/metrics").await;
    assert_eq!(status, 200);
    let kpi = |k: &str| metric_value(&body, &format!("astra_kpi_value{{kpi=\"{k}\"}}"));
    assert_eq!(kpi("daily_active_users"), 5.0);
    assert_eq!(kpi("trades_per_second"), 3.0 / 60.0);
    assert_eq!(kpi("daily_revenue_usd"), 33.0);
    assert_eq!(kpi("revenue_per_user_usd"), 33.0 / 5.0);
    assert_eq!(kpi("social_interaction_rate"), 4.0 / 5.0);
    // 10 × (0.5·(0.8/5) + 0.3·(0.6/10) + 0.2·min(1, achievements+level-ups per user)).
    let achievements = 2.0; // first_trade for ann and ben
    let expected_engagement =
        10.0 * (0.5 * (0.8 / 5.0) + 0.3 * (0.6 / 10.0) + 0.2 * (achievements / 5.0));
    assert!(
        (kpi("engagement_score") - expected_engagement).abs() < 1e-9,
        "{}",
        kpi("engagement_score")
    );
    for (k, t) in astra_bus::kpi::TARGETS {
        assert_eq!(
            metric_value(&body, &format!("astra_kpi_target{{kpi=\"{k}\"}}")),
            t
        );
    }
    let src = |s: &str| {
        metric_value(
            &body,
            &format!("astra_kpi_daily_revenue_by_source_usd{{source=\"{s}\"}}"),
        )
    };
    assert_eq!(
        (src("trade_fee"), src("subscription"), src("nft_fee")),
        (3.0, 20.0, 10.0)
    );
    assert_eq!(metric_value(&body, "astra_business_trades_total"), 3.0);
    assert_eq!(
        metric_value(&body, "astra_business_registrations_total"),
        2.0
    );
    assert_eq!(
        metric_value(&body, "astra_business_volume_usd_total"),
        1500.0
    );
    assert_eq!(
        metric_value(
            &body,
            "astra_business_revenue_usd_total{source=\"nft_fee\"}"
        ),
        10.0
    );
    assert_eq!(
        metric_value(&body, "astra_business_achievements_total"),
        achievements
    );

    // A second instance reports the same KPIs (computed from Redis, not from its own work).
    assert_eq!(kpi_lines(p1).await, kpi_lines(p2).await);

    // A real Prometheus scrapes the daemon; its query API returns the KPI.
    let prom = Prometheus::start(p1);
    let mut seen = None;
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", prom.port)).await else {
            continue;
        };
        drop(s);
        let (status, _, body) = http_get(
            prom.port,
            "/api/v1/query?query=astra_kpi_value%7Bkpi%3D%22daily_active_users%22%7D",
        )
        .await;
        if status != 200 {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if let Some(r) = v["data"]["result"].as_array().and_then(|a| a.first()) {
            seen = Some((
                r["metric"]["job"].clone(),
                r["value"][1].as_str().unwrap().to_string(),
            ));
            break;
        }
    }
    let (job, val) = seen.expect("prometheus scraped the KPI");
    assert_eq!(job, "astra-bus");
    assert_eq!(val, "5");
    let (_, _, targets) = http_get(prom.port, "/api/v1/targets").await;
    let t: serde_json::Value = serde_json::from_str(&targets).unwrap();
    assert_eq!(t["data"]["activeTargets"][0]["health"], "up", "{targets}");

    // Every astra_* metric the alert rules and the dashboard reference exists in a scrape.
    let (_, _, scrape) = http_get(p1, "/metrics").await;
    let families: BTreeSet<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    let mut referenced = BTreeSet::new();
    for f in [
        "setup/monitoring/astra-bus-rules.yml",
        "setup/monitoring/grafana-dashboard.json",
    ] {
        let text =
            std::fs::read_to_string(repo_root().join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let bytes = text.as_bytes();
        let mut i = 0;
        while let Some(off) = text[i..].find("astra_") {
            let start = i + off;
            let mut end = start;
            while end < bytes.len()
                && (bytes[end].is_ascii_lowercase()
                    || bytes[end].is_ascii_digit()
                    || bytes[end] == b'_')
            {
                end += 1;
            }
            let prev_ok = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let name = &text[start..end];
            if prev_ok
                && (name.starts_with("astra_bus_")
                    || name.starts_with("astra_kpi_")
                    || name.starts_with("astra_business_"))
            {
                referenced.insert(name.to_string());
            }
            i = end.max(start + 1);
        }
    }
    assert!(
        referenced.len() >= 10,
        "the rules and dashboard use the metrics: {referenced:?}"
    );
    let missing: Vec<&String> = referenced
        .iter()
        .filter(|n| {
            let base = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n);
            !families.contains(base) && !families.contains(n.as_str())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "referenced but not exported: {missing:?}\nexported: {families:?}"
    );

    d1.stop().await;
    d2.stop().await;
}
