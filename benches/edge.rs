//! HTTP edge benchmark: `cargo bench --bench edge`.
//!
//! In one run, against one private redis-server:
//! 1. baseline: `redis-benchmark` XADD of a trade-sized entry, `-c 50`, no pipelining;
//! 2. the `astra-bus run --role edge` binary taking `POST /v1/events/{stream}` from 50
//!    keep-alive connections (this process is the load generator), with rate limits on
//!    (one rate-limit script + one XADD per request) and off (one XADD per request);
//! 3. latency with requests paced at 5,000/s.
//!
//! It prints publishes/s, the edge/baseline ratio and p50/p99 latency.
//! `ASTRA_BENCH_REQUESTS` sets the request count (default 200,000). Without `--bench` (as
//! `cargo test --all-targets` runs it) it does a small smoke run.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{RedisServer, TempDir, bin, free_port, shipped_config_copy};

const STREAM: &str = "astra.trading.trade_executed.v1";
const CONNS: usize = 50;

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.set_nodelay(true).unwrap();
        Conn { s, buf: vec![] }
    }

    /// Sends one request and reads the answer; returns the status.
    async fn send(&mut self, req: &[u8]) -> u16 {
        self.s.write_all(req).await.unwrap();
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    self.buf.drain(..end + 4 + len);
                    return head.split_whitespace().nth(1).unwrap().parse().unwrap();
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn request(i: usize) -> Vec<u8> {
    let body = format!(
        "{{\"trade_id\":\"t{i}\",\"user_id\":\"u{}\",\"symbol\":\"BTC\",\"side\":\"buy\",\"quantity\":0.5,\"price_usd\":30000}}",
        i % 10_000
    );
    format!(
        "POST /v1/events/{STREAM} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nX-User-ID: u{}\r\nContent-Length: {}\r\n\r\n{body}",
        i % 10_000,
        body.len()
    )
    .into_bytes()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// `n` requests over `CONNS` connections as fast as they are answered.
async fn saturate(port: u16, n: usize) -> (f64, Duration, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..CONNS {
        let next = next.clone();
        set.spawn(async move {
            let mut c = Conn::open(port).await;
            let mut lat = vec![];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return lat;
                }
                let t = Instant::now();
                let status = c.send(&request(i)).await;
                assert_eq!(status, 202, "request {i}");
                lat.push(t.elapsed());
            }
        });
    }
    let mut all = vec![];
    while let Some(l) = set.join_next().await {
        all.extend(l.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    (
        n as f64 / secs,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    )
}

/// Requests paced at `rate`/s for `secs` over `CONNS` connections; latency from the
/// scheduled send time (so queueing behind a slow answer counts).
async fn paced(port: u16, rate: usize, secs: u64) -> (f64, Duration, Duration) {
    let total = rate * secs as usize;
    let per_conn = total / CONNS;
    let interval = Duration::from_secs_f64(CONNS as f64 / rate as f64);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c_idx in 0..CONNS {
        set.spawn(async move {
            let mut c = Conn::open(port).await;
            let offset = interval.mul_f64(c_idx as f64 / CONNS as f64);
            let mut lat = Vec::with_capacity(per_conn);
            for k in 0..per_conn {
                let due = started + offset + interval * k as u32;
                tokio::time::sleep_until(due.into()).await;
                let status = c.send(&request(c_idx * per_conn + k)).await;
                assert_eq!(status, 202);
                lat.push(due.elapsed());
            }
            lat
        });
    }
    let mut all = vec![];
    while let Some(l) = set.join_next().await {
        all.extend(l.unwrap());
    }
    let achieved = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort();
    (achieved, percentile(&all, 0.5), percentile(&all, 0.99))
}

/// `redis-benchmark` XADD at `CONNS` connections, no pipelining: (requests/s, p99 ms).
fn redis_benchmark(port: u16, n: usize) -> (f64, f64) {
    let out = Command::new("redis-benchmark")
        .args(["-p", &port.to_string(), "-c", &CONNS.to_string(), "-n", &n.to_string(), "--csv"])
        .args(["XADD", "astra.bench.baseline.v1", "*", "id", "0193a6f2-7c1e-7d3a-9a51-0c2b6f1e9d10", "type", "trading.trade_executed", "v", "1", "cid", "0193a6f2-7c1e-7d3a-9a51-0c2b6f1e9d10", "ts", "1763700000000", "src", "edge", "ct", "application/msgpack", "data", "x-----------------------------------------------------------------------------------------"])
        .output()
        .expect("redis-benchmark (Debian package redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("\"XADD"))
        .unwrap_or_else(|| panic!("redis-benchmark printed no XADD row:\n{text}"));
    let cols: Vec<f64> = row
        .split("\",\"")
        .skip(1)
        .filter_map(|c| c.trim_matches('"').parse().ok())
        .collect();
    // rps, avg, min, p50, p95, p99, max
    (cols[0], cols.get(5).copied().unwrap_or(f64::NAN))
}

/// CPU seconds (user + system) the process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat (utime, stime), counted after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

struct Edge {
    child: std::process::Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_edge(url: &str, rate_limits: bool) -> Edge {
    let dir = shipped_config_copy();
    let p = dir.join("streams.toml");
    let mut text = std::fs::read_to_string(&p).unwrap();
    // 10,000 users: the per-user limits are not what is measured.
    text = text.replace("per_user = 200", "per_user = 1000000");
    // One client address sends everything: the per-address service limit is not measured.
    text = text.replace("per_client = 1000", "per_client = 100000000");
    text = text.replace("trading = 100", "trading = 1000000");
    if !rate_limits {
        text = text.replace(
            "[edge.rate_limit]\n",
            "[edge.rate_limit]\nenabled = false\n",
        );
    }
    std::fs::write(&p, text).unwrap();
    let port = free_port();
    let child = Command::new(bin())
        .args(["run", "--role", "edge", "--config"])
        .arg(&dir.path)
        .env("ASTRA_REDIS_URL", url)
        .env("ASTRA_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("ASTRA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn astra-bus");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
            let _ = s
                .write_all(b"GET /health HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                .await;
            let mut out = vec![];
            let _ = s.read_to_end(&mut out).await;
            if out.starts_with(b"HTTP/1.1 200") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "edge did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Edge {
        child,
        port,
        _dir: dir,
    }
}

/// CPU the edge spends on 1 MiB bodies built to be expensive (the most of 5 each), read
/// from /proc: the per-request bound is < 100 ms of CPU for any 1 MiB body.
async fn worst_case_cpu(edge: &Edge) {
    let mib = 1 << 20;
    let mut unknown = String::from("{");
    let mut i = 0;
    while unknown.len() < mib - 200 {
        unknown.push_str(&format!("\"k{i:06}\":{i},"));
        i += 1;
    }
    unknown.push_str("\"quantity\":\"oops\"}");
    let mut valid_prefix = String::from("{\"trade_id\":\"t\",\"symbol\":\"");
    valid_prefix.push_str(&"\\u00e9".repeat((mib - 64) / 6));
    valid_prefix.push_str("\"}");
    let mut batch = String::from("{\"events\":[");
    while batch.len() < mib - 10 {
        batch.push_str("{},");
    }
    batch.pop();
    batch.push_str("]}");
    let cases = [
        (
            "20k unknown keys + a type error",
            format!("/v1/events/{STREAM}"),
            unknown,
        ),
        (
            "1 MiB of unicode escapes",
            format!("/v1/events/{STREAM}"),
            valid_prefix,
        ),
        (
            "1 MiB number",
            format!("/v1/events/{STREAM}"),
            format!("{{\"quantity\":{}}}", "9".repeat(mib - 20)),
        ),
        (
            "deep nesting",
            format!("/v1/events/{STREAM}"),
            format!("{}{}", "[".repeat(mib / 2 - 8), "]".repeat(mib / 2 - 8)),
        ),
        ("batch of 350k items", "/v1/events".to_string(), batch),
    ];
    for (name, path, body) in cases {
        let mut worst = 0.0f64;
        let mut status = String::new();
        for _ in 0..5 {
            let cpu0 = cpu_seconds(edge.child.id());
            let mut s = TcpStream::connect(("127.0.0.1", edge.port)).await.unwrap();
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(body.as_bytes()).await.unwrap();
            let mut out = vec![];
            let _ = s.read_to_end(&mut out).await;
            status = String::from_utf8_lossy(&out[..out.len().min(12)]).into_owned();
            worst = worst.max(cpu_seconds(edge.child.id()) - cpu0);
        }
        println!(
            "          worst case {name:<32} ({} KiB): {status}  edge cpu at most {:.1} ms",
            body.len() / 1024,
            worst * 1e3
        );
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("ASTRA_BENCH_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 200_000 } else { 2_000 });
    let (rate, secs) = if full { (5_000, 10) } else { (500, 1) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = RedisServer::start();
        println!(
            "astra-bus edge benchmark: {n} requests, {CONNS} connections, {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let redis0 = server.cpu_seconds();
        let (base, base_p99) = redis_benchmark(server.port, n);
        let base_cpu = (server.cpu_seconds() - redis0) / n as f64 * 1e6;
        println!("baseline  redis-benchmark XADD -c {CONNS} (no pipelining):          {base:>9.0} req/s  p99 {base_p99:.2} ms  redis cpu {base_cpu:.1} µs/req");
        for limits in [false, true] {
            let edge = start_edge(&server.url(), limits).await;
            let cpu0 = cpu_seconds(edge.child.id());
            let redis0 = server.cpu_seconds();
            let (rps, p50, p99) = saturate(edge.port, n).await;
            let cpu = (cpu_seconds(edge.child.id()) - cpu0) / n as f64 * 1e6;
            let redis_cpu = (server.cpu_seconds() - redis0) / n as f64 * 1e6;
            let label = if limits { "on " } else { "off" };
            println!(
                "edge      POST /v1/events/{{stream}}, rate limits {label}:             {rps:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  ratio {:.2}x baseline  edge cpu {cpu:.1} µs/req  redis cpu {redis_cpu:.1} µs/req",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3,
                rps / base
            );
            if !limits {
                worst_case_cpu(&edge).await;
            }
            let (achieved, p50, p99) = paced(edge.port, rate, secs).await;
            println!(
                "          paced at {rate}/s for {secs}s (achieved {achieved:.0}/s): p50 {:.2} ms  p99 {:.2} ms",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
        }
    });
}
