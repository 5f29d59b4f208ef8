//! Throughput benchmark: `cargo bench --bench throughput`.
//!
//! In one run, against one private redis-server:
//! 1. raw baseline: 4 connections, each looping XREADGROUP COUNT 100 → pipelined XADD of
//!    every entry to an output stream + one XACK;
//! 2. the daemon binary draining the same number of events with `builtin.forward`
//!    (re-publish each event, exactly-once commit protocol);
//! 3. the daemon with `builtin.count_by_user` (one HINCRBY per event);
//! 4. publish→commit latency with events published at a paced 10k/s.
//!
//! It prints events/s, the daemon/raw ratio, Redis CPU µs per event (`INFO cpu`), and the
//! daemon's peak RSS. `ASTRA_BENCH_EVENTS` sets the drain size (default 1,000,000).
//! Without `--bench` (as `cargo test --all-targets` runs it) it does a small smoke run.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use astra_bus::bus::Redis;
use astra_bus::bus::client::{Value, arg, as_array, parse_read_reply};
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

/// The raw loop: no envelope decoding, no handler, no dedup; the floor any bus pays.
async fn raw_baseline(server: &RedisServer, n: usize) -> (f64, f64) {
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
    let cpu0 = server.cpu_seconds();
    let start = Instant::now();
    let mut tasks = vec![];
    for c in 0..4 {
        let conn = Redis::connect(&server.url(), Duration::from_secs(5))
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            loop {
                let v = conn
                    .cmd(
                        "XREADGROUP",
                        vec![
                            arg("GROUP"),
                            arg("raw"),
                            arg(format!("c{c}")),
                            arg("COUNT"),
                            arg(100),
                            arg("STREAMS"),
                            arg(IN),
                            arg(">"),
                        ],
                    )
                    .await
                    .unwrap();
                let entries: Vec<_> = parse_read_reply(v)
                    .into_iter()
                    .flat_map(|(_, e)| e)
                    .collect();
                if entries.is_empty() {
                    return;
                }
                let mut cmds: Vec<(&'static str, Vec<Value>)> = vec![];
                let mut ack = vec![arg(IN), arg("raw")];
                for e in &entries {
                    let mut args = vec![arg(OUT), arg("*")];
                    for (k, v) in e.fields.as_ref().unwrap() {
                        args.push(Value::Bytes(k.clone().into()));
                        args.push(Value::Bytes(v.clone().into()));
                    }
                    cmds.push(("XADD", args));
                    ack.push(arg(e.id.as_str()));
                }
                cmds.push(("XACK", ack));
                conn.pipeline(cmds).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu0;
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

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("ASTRA_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 2_000 });
    let (rate, secs) = if full { (10_000, 5) } else { (1_000, 1) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = RedisServer::start();
        let version = server.cli(&["INFO", "server"]);
        let version = version.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("?").trim().to_string();
        println!("astra-bus throughput benchmark: {n} events, redis {version}, {} cores", std::thread::available_parallelism().map_or(0, |n| n.get()));
        let (raw, raw_cpu) = raw_baseline(&server, n).await;
        println!("raw baseline     (4 conns, XREADGROUP COUNT 100, XADD each + XACK, pipelined): {raw:>10.0} events/s  redis cpu {raw_cpu:>5.2} µs/event");
        let (fwd, fwd_cpu, fwd_rss) = daemon_drain(&server, n, "builtin.forward").await;
        println!(
            "daemon pass-through (builtin.forward, exactly-once commit):                     {fwd:>10.0} events/s  redis cpu {fwd_cpu:>5.2} µs/event  ratio {:.2}x raw  peak RSS {fwd_rss:.1} MB",
            fwd / raw
        );
        let (cnt, cnt_cpu, cnt_rss) = daemon_drain(&server, n, "builtin.count_by_user").await;
        println!(
            "daemon stateful     (builtin.count_by_user, one HINCRBY per event):            {cnt:>10.0} events/s  redis cpu {cnt_cpu:>5.2} µs/event  ratio {:.2}x raw  peak RSS {cnt_rss:.1} MB",
            cnt / raw
        );
        let (achieved, p50, p99, count) = latency_at(&server, rate, secs).await;
        println!(
            "latency at {achieved:.0} events/s published ({count} events, forward): publish→commit p50 {p50:.0} ms, p99 {p99:.0} ms (1 ms resolution: stream ids are ms)"
        );
    });
}
