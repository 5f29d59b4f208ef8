//! Full-topology benchmark: `cargo bench --bench topology`.
//!
//! For each size in `ASTRA_BENCH_TRADES` (default `5000,20000,50000`), on a fresh
//! redis-server: preloads 100 registered users and that many trades (an outside producer
//! writing straight into Redis), runs the daemon binary with the shipped topology (all 17
//! groups) until every group is drained, and prints input trades/s, the derived events and
//! (group, entry) deliveries, Redis CPU µs per trade and per delivery, the daemon's CPU,
//! and where Redis's time went (INFO commandstats). The last line compares Redis CPU per
//! trade between the smallest and the largest size (a handler whose cost grows with
//! history shows there). Without `--bench` (as `cargo test --all-targets` runs it) it does
//! a small smoke run.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use astra_bus::bus::Redis;
use astra_bus::config::Config;
use astra_bus::envelope::{ContentType, Envelope};
use astra_bus::events::streams;
use support::{DaemonProcess, RedisServer, TempDir, shipped_config_copy};

async fn publish(redis: &Redis, stream: &str, payloads: Vec<serde_json::Value>) {
    let (domain, event, v) = astra_bus::config::parse_stream_name(stream).unwrap();
    let events: Vec<_> = payloads
        .iter()
        .map(|p| {
            let data = rmp_serde::to_vec_named(p).unwrap();
            (
                stream.to_string(),
                Envelope::root(
                    &format!("{domain}.{event}"),
                    v,
                    "bench",
                    None,
                    ContentType::MsgPack,
                    data,
                ),
            )
        })
        .collect();
    for chunk in events.chunks(1000) {
        astra_bus::bus::publish::publish_many(redis, chunk)
            .await
            .unwrap();
    }
}

/// CPU seconds (user + system) the process `pid` has used so far.
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// One drain of `n` trades; returns Redis CPU µs per trade.
async fn run(n: usize) -> f64 {
    let server = RedisServer::start();
    let url = server.url();
    let dir = shipped_config_copy();
    let p = dir.join("streams.toml");
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "url = \"redis://127.0.0.1:6379\"",
        &format!("url = \"{url}\""),
    );
    std::fs::write(&p, text).unwrap();
    let cfg = Config::load_with_env(&dir.path, |_| None).unwrap();
    let redis = Redis::connect(&url, Duration::from_secs(5)).await.unwrap();
    let users = 100;
    publish(&redis, streams::REGISTERED, (0..users).map(|u| serde_json::json!({"user_id": format!("u{u}"), "display_name": format!("User {u}"), "clan": format!("clan{}", u % 7)})).collect()).await;
    let prices = [25.0, 180.0, 950.0, 4_200.0, 12_000.0, 61_000.0];
    publish(
        &redis,
        streams::TRADE_EXECUTED,
        (0..n)
            .map(|i| {
                let (symbol, side, price) = (["BTC", "ETH"][i % 2], ["buy", "sell"][i % 3 % 2], prices[i % prices.len()]);
                serde_json::json!({"trade_id": format!("t{i}"), "user_id": format!("u{}", i % users), "symbol": symbol, "side": side, "quantity": 1.0, "price_usd": price})
            })
            .collect(),
    )
    .await;
    let stats0 = server.command_stats();
    let cpu0 = server.cpu_seconds();
    let start = Instant::now();
    let logs = TempDir::new("bench-logs");
    let mut d = DaemonProcess::start(&dir.path, &url, "bench", &logs.path);
    let mut quiet = 0;
    while quiet < 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let rows = astra_bus::bus::status::status(&redis, &cfg).await.unwrap();
        let busy = rows
            .iter()
            .any(|r| !r.exists || r.pending > 0 || r.lag != Some(0));
        quiet = if busy { 0 } else { quiet + 1 };
        assert!(
            start.elapsed() < Duration::from_secs(1200),
            "did not drain:\n{}",
            d.log_text()
        );
    }
    let secs = start.elapsed().as_secs_f64() - 0.05;
    let cpu = server.cpu_seconds() - cpu0;
    let stats1 = server.command_stats();
    let daemon_cpu = process_cpu_seconds(d.child.id());
    let (st, _) = d.terminate(Duration::from_secs(20));
    assert!(st.success());
    let mut derived = 0i64;
    let mut deliveries = 0i64;
    let readers = cfg.readers();
    for s in &cfg.streams {
        let len = astra_bus::bus::client::as_int(
            &redis
                .cmd("XLEN", vec![astra_bus::bus::client::arg(s.name.as_str())])
                .await
                .unwrap(),
        )
        .unwrap_or(0);
        if s.name != streams::TRADE_EXECUTED && s.name != streams::REGISTERED {
            derived += len;
        }
        deliveries += len * readers.get(s.name.as_str()).map_or(0, |g| g.len() as i64);
    }
    let dl = astra_bus::bus::client::as_int(
        &redis
            .cmd(
                "XLEN",
                vec![astra_bus::bus::client::arg(streams::DEAD_LETTER)],
            )
            .await
            .unwrap(),
    )
    .unwrap_or(0);
    assert_eq!(dl, 0, "nothing dead-lettered");
    let mut rows: Vec<(String, u64, u64)> = stats1
        .iter()
        .map(|(k, (c, u))| {
            let (c0, u0) = stats0.get(k).copied().unwrap_or_default();
            (k.clone(), c - c0, u - u0)
        })
        .filter(|r| r.2 > 0)
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.2));
    let top: Vec<String> = rows
        .iter()
        .take(8)
        .map(|(k, c, u)| {
            format!(
                "{k} {:.2} calls {:.1} µs",
                *c as f64 / n as f64,
                *u as f64 / n as f64
            )
        })
        .collect();
    println!(
        "{n} trades from {users} users: drained in {secs:.2} s, {:.0} trades/s; {derived} derived events; {deliveries} (group, entry) deliveries ({:.0}/s)",
        n as f64 / secs,
        deliveries as f64 / secs
    );
    println!(
        "  redis cpu {:.1} µs per trade, {:.2} µs per delivery; daemon cpu {:.1} µs per trade",
        cpu * 1e6 / n as f64,
        cpu * 1e6 / deliveries as f64,
        daemon_cpu * 1e6 / n as f64
    );
    println!("  per trade by command: {}", top.join(", "));
    cpu * 1e6 / n as f64
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = std::env::var("ASTRA_BENCH_TRADES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| {
            if full {
                vec![5_000, 20_000, 50_000]
            } else {
                vec![300]
            }
        });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "astra-bus full-topology benchmark: the shipped 17 groups ({} daemon, {} cores)",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let mut costs = vec![];
        for n in &sizes {
            costs.push(run(*n).await);
        }
        if costs.len() > 1 {
            println!(
                "redis cpu per trade, largest vs smallest size: {:.2}x ({} → {} trades)",
                costs[costs.len() - 1] / costs[0],
                sizes[0],
                sizes[sizes.len() - 1]
            );
        }
    });
}
