//! Throughput benchmark: `cargo bench --bench throughput`.
//!
//! In one run, against one private redis-server, in alternating rounds:
//! 1. the ceiling: a client that writes RESP itself (`raw/mod.rs`, no client library), 4
//!    connections, each looping XREADGROUP COUNT 100 → XADD of every entry to an output
//!    stream + one XACK, with the next read pipelined behind the commit;
//! 2. the daemon binary draining the same events with `builtin.forward` (re-publish each
//!    event, full commit protocol);
//! 3. the daemon with `builtin.count_by_user` (one HINCRBY per event);
//!
//! then publish→commit latency with events published at a paced 10k/s, and the daemon's
//! peak RSS while draining 1M events. It prints events/s, the ratio to the ceiling and Redis
//! CPU µs per event (`INFO cpu`) against the ceiling's, per round and as a table
//! (median of the rounds). `ASTRA_BENCH_EVENTS` (300,000), `ASTRA_BENCH_ROUNDS` (3) and
//! `ASTRA_BENCH_RSS_EVENTS` (1,000,000) set the sizes. Without `--bench` (as `cargo test
//! --all-targets` runs it) it does a small smoke run.

mod raw;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use astra_bus::bus::Redis;
use astra_bus::bus::client::{Value, arg, as_array};
use astra_bus::envelope::{ContentType, Envelope};
use support::{DaemonProcess, RedisServer, TempDir, write_config};

const IN: &str = "astra.bench.in.v1";
const OUT: &str = "astra.bench.out.v1";

async fn preload(redis: &Redis, n: usize, users: usize) {
    let mut batch = Vec::with_capacity(1000);
    for i in 0..n {
        let payload = format!("{{\"user_id\":\"u{}\",\"n\":{i}}}", i % users);
        let data =
            rmp_serde::to_vec_named(&serde_json::from_str::<serde_json::Value>(&payload).unwrap())
                .unwrap();
        batch.push((
            IN.to_string(),
            Envelope::root("bench.in", 1, "bench", None, ContentType::MsgPack, data),
        ));
        if batch.len() == 1000 {
            astra_bus::bus::publish::publish_many(redis, &batch)
                .await
                .unwrap();
            batch.clear();
        }
    }
    if !batch.is_empty() {
        astra_bus::bus::publish::publish_many(redis, &batch)
            .await
            .unwrap();
    }
}

async fn reset(redis: &Redis) {
    redis.cmd("FLUSHALL", vec![]).await.unwrap();
}

/// The ceiling: a client that writes RESP itself (see `raw/mod.rs`), 4 connections,
/// XREADGROUP COUNT 100 with the next read pipelined behind each commit.
async fn ceiling(server: &RedisServer, n: usize) -> (f64, f64) {
    let redis = Redis::connect(&server.url(), Duration::from_secs(5))
        .await
        .unwrap();
    reset(&redis).await;
    redis
        .cmd(
            "XGROUP",
            vec![
                arg("CREATE"),
                arg(IN),
                arg("raw"),
                arg("0"),
                arg("MKSTREAM"),
            ],
        )
        .await
        .unwrap();
    preload(&redis, n, 100).await;
    let stats0 = server.command_stats();
    let cpu0 = server.cpu_seconds();
    let port = server.port;
    let (moved, secs) = tokio::task::spawn_blocking(move || raw::drain(port, IN, OUT, "raw", 4))
        .await
        .unwrap();
    let cpu = server.cpu_seconds() - cpu0;
    println!(
        "  ceiling: redis time per event by command: {}",
        where_time_went(&stats0, &server.command_stats(), n)
    );
    assert_eq!(moved, n);
    assert_eq!(
        astra_bus::bus::client::as_int(&redis.cmd("XLEN", vec![arg(OUT)]).await.unwrap()),
        Some(n as i64)
    );
    (n as f64 / secs, cpu * 1e6 / n as f64)
}

fn config(url: &str, handler: &str) -> TempDir {
    let publishes = if handler == "builtin.forward" {
        format!("publishes = [\"{OUT}\"]\n")
    } else {
        String::new()
    };
    write_config(
        &format!(
            "[redis]\nurl = \"{url}\"\n\n[defaults]\nbatch_size = 200\nconcurrency = 2000\nblock = \"50ms\"\n\n\
             [retention]\ninterval = \"1h\"\n\n[daemon]\nshutdown_deadline = \"10s\"\n\n\
             [[stream]]\nname = \"{IN}\"\ndescription = \"in\"\n\n[[stream]]\nname = \"{OUT}\"\ndescription = \"out\"\n\n\
             [[stream]]\nname = \"astra.bus.dead_letter.v1\"\ndescription = \"dl\"\n"
        ),
        &[(
            "bench",
            &format!(
                "[[group]]\nname = \"bench.g\"\nhandler = \"{handler}\"\nreads = [\"{IN}\"]\n{publishes}"
            ),
        )],
    )
}

async fn pending_and_lag(redis: &Redis) -> (i64, i64) {
    // Before the daemon declared the stream, XINFO errors: report "no group yet".
    let Ok(v) = redis.cmd("XINFO", vec![arg("GROUPS"), arg(IN)]).await else {
        return (-1, -1);
    };
    let g = as_array(v).unwrap_or_default().into_iter().next();
    let m: HashMap<String, Value> = g
        .map(astra_bus::bus::client::as_pairs)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let get = |k: &str| {
        m.get(k)
            .and_then(astra_bus::bus::client::as_int)
            .unwrap_or(-1)
    };
    (get("pending"), get("lag"))
}

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Where Redis's time went between two `INFO commandstats` readings, per event: one line
/// per command with its calls and µs per event (commands inside scripts count twice: under
/// their own name and in the script's total).
fn where_time_went(
    before: &std::collections::BTreeMap<String, (u64, u64)>,
    after: &std::collections::BTreeMap<String, (u64, u64)>,
    events: usize,
) -> String {
    let mut rows: Vec<(String, u64, u64)> = after
        .iter()
        .map(|(k, (c, u))| {
            let (c0, u0) = before.get(k).copied().unwrap_or_default();
            (k.clone(), c - c0, u - u0)
        })
        .filter(|(_, c, _)| *c > 0)
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.2));
    rows.iter()
        .map(|(k, c, u)| {
            format!(
                "{k} {:.3} calls {:.2} µs",
                *c as f64 / events as f64,
                *u as f64 / events as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// CPU seconds (user + system) the process `pid` has used so far.
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// Preloads `n` events, starts the daemon binary, times the drain.
async fn daemon_drain(server: &RedisServer, n: usize, handler: &str) -> (f64, f64, f64) {
    let redis = Redis::connect(&server.url(), Duration::from_secs(5))
        .await
        .unwrap();
    reset(&redis).await;
    let dir = config(&server.url(), handler);
    let logs = TempDir::new("bench-logs");
    // Declare first so the group exists before the preload (start_id 0 reads it all anyway).
    preload(&redis, n, 100).await;
    let stats0 = server.command_stats();
    let cpu0 = server.cpu_seconds();
    let start = Instant::now();
    let mut d = DaemonProcess::start(&dir.path, &server.url(), "bench", &logs.path);
    let mut rss: f64 = 0.0;
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        rss = rss.max(peak_rss_mb(d.child.id()));
        let (pending, lag) = pending_and_lag(&redis).await;
        if pending == 0 && lag == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "drain too slow:\n{}",
            d.log_text()
        );
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu0;
    let daemon_cpu = process_cpu_seconds(d.child.id());
    println!(
        "  {handler}: daemon cpu {:.2} µs/event; redis time per event by command: {}",
        daemon_cpu * 1e6 / n as f64,
        where_time_went(&stats0, &server.command_stats(), n)
    );
    rss = rss.max(peak_rss_mb(d.child.id()));
    let (st, _) = d.terminate(Duration::from_secs(20));
    assert!(st.success());
    if handler == "builtin.forward" {
        let out = astra_bus::bus::client::as_int(&redis.cmd("XLEN", vec![arg(OUT)]).await.unwrap())
            .unwrap();
        assert_eq!(out, n as i64, "exactly one derived event per input");
    }
    // Startup (connect, declare, first read) is inside the timing, as a user would see it.
    (n as f64 / secs, cpu * 1e6 / n as f64, rss)
}

/// Publishes at `rate`/s for `secs` while the daemon forwards; latency = commit (the
/// derived entry's id time) − the source event's `ts`, both from this machine's clock.
async fn latency_at(server: &RedisServer, rate: u64, secs: u64) -> (f64, f64, f64, usize) {
    let redis = Redis::connect(&server.url(), Duration::from_secs(5))
        .await
        .unwrap();
    reset(&redis).await;
    let dir = config(&server.url(), "builtin.forward");
    let logs = TempDir::new("bench-logs");
    let mut d = DaemonProcess::start(&dir.path, &server.url(), "bench", &logs.path);
    // Wait until the group exists (the daemon declared it).
    while pending_and_lag(&redis).await.0 < 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total = (rate * secs) as usize;
    let per_tick = (rate / 1000).max(1) as usize; // one tick per millisecond
    let start = Instant::now();
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while sent < total {
        tick.tick().await;
        let batch: Vec<_> = (0..per_tick)
            .map(|i| {
                let data = rmp_serde::to_vec_named(
                    &serde_json::json!({"user_id": format!("u{}", (sent + i) % 100)}),
                )
                .unwrap();
                (
                    IN.to_string(),
                    Envelope::root("bench.in", 1, "bench", None, ContentType::MsgPack, data),
                )
            })
            .collect();
        astra_bus::bus::publish::publish_many(&redis, &batch)
            .await
            .unwrap();
        sent += batch.len();
    }
    let achieved = sent as f64 / start.elapsed().as_secs_f64();
    loop {
        let (pending, lag) = pending_and_lag(&redis).await;
        if pending == 0 && lag == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (st, _) = d.terminate(Duration::from_secs(20));
    assert!(st.success());
    // Source ts by event id, then each derived entry's id time.
    let mut ts: HashMap<String, i64> = HashMap::new();
    for (_, e) in read_stream(&redis, IN).await {
        ts.insert(e.id.clone(), e.ts);
    }
    let mut lat: Vec<i64> = vec![];
    for (entry_id, e) in read_stream(&redis, OUT).await {
        let commit_ms = astra_bus::bus::client::id_ms(&entry_id);
        if let Some(src) = e.caus.as_ref().and_then(|c| ts.get(c)) {
            lat.push(commit_ms - src);
        }
    }
    lat.sort_unstable();
    let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize] as f64;
    (achieved, q(0.5), q(0.99), lat.len())
}

async fn read_stream(redis: &Redis, stream: &str) -> Vec<(String, Envelope)> {
    let mut out = vec![];
    let mut start = "-".to_string();
    loop {
        let v = redis
            .cmd(
                "XRANGE",
                vec![
                    arg(stream),
                    arg(start.as_str()),
                    arg("+"),
                    arg("COUNT"),
                    arg(10_000),
                ],
            )
            .await
            .unwrap();
        let page = astra_bus::bus::client::parse_entries(v);
        let n = page.len();
        for e in page {
            start = format!("({}", e.id);
            out.push((
                e.id.clone(),
                Envelope::from_fields(&e.fields.unwrap()).unwrap(),
            ));
        }
        if n < 10_000 {
            return out;
        }
    }
}

/// min / median / max of a sample.
fn spread(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let n = env("ASTRA_BENCH_EVENTS", if full { 300_000 } else { 2_000 });
    let rounds = env("ASTRA_BENCH_ROUNDS", if full { 3 } else { 1 });
    let rss_n = env("ASTRA_BENCH_RSS_EVENTS", if full { 1_000_000 } else { 0 });
    let (rate, secs) = if full { (10_000, 5) } else { (1_000, 1) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = RedisServer::start();
        let version = server.cli(&["INFO", "server"]);
        let version = version.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("?").trim().to_string();
        println!(
            "astra-bus throughput benchmark: {n} events x {rounds} alternating rounds, redis {version}, {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        // (events/s, redis cpu µs/event) per round, and peak RSS.
        let mut rows: [(Vec<f64>, Vec<f64>, f64); 3] = Default::default();
        for r in 1..=rounds {
            let (c, c_cpu) = ceiling(&server, n).await;
            rows[0].0.push(c);
            rows[0].1.push(c_cpu);
            println!("round {r}: ceiling {c:>9.0} events/s {c_cpu:>5.2} µs/event");
            for (i, handler) in [(1, "builtin.forward"), (2, "builtin.count_by_user")] {
                let (e, cpu, rss) = daemon_drain(&server, n, handler).await;
                rows[i].0.push(e);
                rows[i].1.push(cpu);
                rows[i].2 = rows[i].2.max(rss);
                println!(
                    "round {r}: {handler:<22} {e:>9.0} events/s {cpu:>5.2} µs/event  {:.2}x ceiling, {:.2}x its redis cpu",
                    e / c,
                    cpu / c_cpu
                );
            }
        }
        let labels = [
            "ceiling (raw RESP client, 4 conns, XREADGROUP COUNT 100, XADD each + XACK, next read pipelined)",
            "daemon pass-through (builtin.forward, full commit protocol)",
            "daemon stateful (builtin.count_by_user, one HINCRBY per event)",
        ];
        let (_, ceiling_rate, _) = spread(&mut rows[0].0.clone());
        let (_, ceiling_cpu, _) = spread(&mut rows[0].1.clone());
        println!();
        println!("| consumer | events/s (min–median–max) | ratio (median) | Redis CPU µs/event (median) | vs ceiling's CPU | peak RSS |");
        println!("|---|---|---|---|---|---|");
        for (i, label) in labels.iter().enumerate() {
            let (lo, mid, hi) = spread(&mut rows[i].0);
            let (_, cpu, _) = spread(&mut rows[i].1);
            println!(
                "| {label} | {lo:.0}–{mid:.0}–{hi:.0} | {:.2}x | {cpu:.2} | {:.2}x | {} |",
                mid / ceiling_rate,
                cpu / ceiling_cpu,
                if i == 0 { "–".to_string() } else { format!("{:.1} MB", rows[i].2) }
            );
        }
        println!();
        let (achieved, p50, p99, count) = latency_at(&server, rate, secs).await;
        println!(
            "latency at {achieved:.0} events/s published ({count} events, forward): publish→commit p50 {p50:.0} ms, p99 {p99:.0} ms (1 ms resolution: stream ids are ms)"
        );
        if rss_n > 0 {
            let (e, cpu, rss) = daemon_drain(&server, rss_n, "builtin.forward").await;
            println!(
                "drain of {rss_n} events (forward): {e:.0} events/s, {cpu:.2} µs redis cpu/event, daemon peak RSS {rss:.1} MB"
            );
        }
    });
}
