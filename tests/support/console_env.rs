//! What tests/console.rs runs against: daemons as processes, traffic, Redis-side probes
//! and page probes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use astra_bus::bus::Redis;
use astra_bus::bus::client::{arg, as_int};
use astra_bus::config::Config;
use astra_bus::envelope::{ContentType, Envelope, now_ms};
use astra_bus::events::streams;
use astra_bus::handlers::{analytics, financial};
use serde_json::{Value, json};

use crate::support::{RedisServer, TempDir, bin, shipped_config_copy};
use crate::webdriver::Session;

// ---------------------------------------------------------------------------------------
// Daemons as processes
// ---------------------------------------------------------------------------------------

/// The shipped config, made quick for a test (short blocking reads, 1 s refresh), with
/// only the groups `keep` accepts.
pub fn config_dir(keep: impl Fn(&str) -> bool, edit: impl Fn(String) -> String) -> TempDir {
    let dir = shipped_config_copy();
    let p = dir.join("streams.toml");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("block = \"2s\"", "block = \"100ms\"")
        .replace("refresh_interval = \"5s\"", "refresh_interval = \"1s\"");
    std::fs::write(&p, edit(text)).unwrap();
    for e in std::fs::read_dir(dir.join("consumer-groups")).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut parts = text.split("[[group]]\n");
        let head = parts.next().unwrap().to_string();
        let blocks: Vec<&str> = parts
            .filter(|b| {
                let name = b
                    .lines()
                    .find_map(|l| l.strip_prefix("name = \""))
                    .and_then(|l| l.strip_suffix('"'))
                    .unwrap();
                keep(name)
            })
            .collect();
        if blocks.is_empty() {
            std::fs::remove_file(&path).unwrap();
        } else {
            let mut out = head;
            for b in blocks {
                out.push_str("[[group]]\n");
                out.push_str(b);
            }
            std::fs::write(&path, out).unwrap();
        }
    }
    dir
}

pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// `astra-bus --log-format json run --config dir [--role edge]`, logging to a file.
    pub fn start(
        dir: &Path,
        url: &str,
        instance: &str,
        listen: &str,
        edge: bool,
        logs: &Path,
    ) -> Daemon {
        let log = logs.join(format!("{instance}-{}.log", now_ms()));
        let mut cmd = Command::new(bin());
        cmd.args(["--log-format", "json", "run", "--config"])
            .arg(dir);
        if edge {
            cmd.args(["--role", "edge"]);
        }
        let child = cmd
            .env("ASTRA_REDIS_URL", url)
            .env("ASTRA_INSTANCE", instance)
            .env("ASTRA_HTTP_LISTEN", listen)
            .env("ASTRA_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn astra-bus");
        let mut d = Daemon { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !d.log_text().contains("\"message\":\"astra-bus running\"") {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("{instance} exited ({st}):\n{}", d.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{instance} did not start:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
        d
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait for the graceful exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "daemon did not stop:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET over a fresh connection: (status, body).
pub fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    http(port, "GET", path, headers, None)
}

pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, String) {
    let (status, _, body) = http_full(port, method, path, headers, body);
    (status, body)
}

/// [`http`] with the response head (status line and headers, lower-cased).
pub fn http_full(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if body.is_some() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            payload.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&payload);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

// ---------------------------------------------------------------------------------------
// Redis-side helpers
// ---------------------------------------------------------------------------------------

pub async fn publish(redis: &Redis, stream: &str, cid: Option<&str>, payload: Value) -> String {
    astra_bus::events::validate_json(stream, &payload).unwrap();
    publish_unchecked(redis, stream, cid, payload).await
}

/// [`publish`] without the edge's contract check, as a producer writing straight into Redis
/// would (consumers tolerate fields they do not know).
pub async fn publish_unchecked(
    redis: &Redis,
    stream: &str,
    cid: Option<&str>,
    payload: Value,
) -> String {
    let (domain, event, v) = astra_bus::config::parse_stream_name(stream).unwrap();
    let env = Envelope::root(
        &format!("{domain}.{event}"),
        v,
        "console-test",
        cid.map(str::to_string),
        ContentType::Json,
        payload.to_string().into_bytes(),
    );
    astra_bus::bus::publish::publish(redis, stream, &env)
        .await
        .unwrap();
    env.id
}

pub fn sale(id: &str, collection: &str, token: &str, price: f64) -> Value {
    json!({"sale_id": id, "collection": collection, "token_id": token, "seller_id": "seller-1", "buyer_id": "buyer-1", "price_usd": price})
}

/// Steady mixed traffic on every public input until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Load {
    pub fn start(rt: &tokio::runtime::Runtime, redis: Redis) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = rt.spawn(async move {
            let mut i = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let u = format!("load-u{}", i % 40);
                publish(&redis, streams::TRADE_EXECUTED, None, json!({"trade_id": format!("load-t{i}"), "user_id": u,
                    "symbol": "BTC", "side": if i.is_multiple_of(2) { "buy" } else { "sell" }, "quantity": 0.1, "price_usd": 30000.0, "fee_usd": 1.5})).await;
                publish(&redis, streams::INTERACTION, None, json!({"user_id": u, "target_user_id": format!("load-u{}", (i + 7) % 40), "kind": "like"})).await;
                if i.is_multiple_of(5) {
                    publish(&redis, streams::REGISTERED, None, json!({"user_id": u, "display_name": format!("Load {i}"), "clan": "owls"})).await;
                }
                if i.is_multiple_of(4) {
                    publish(&redis, streams::SALE_COMPLETED, None, sale(&format!("load-s{i}"), "load-apes", &i.to_string(), 50.0)).await;
                }
                if i.is_multiple_of(20) {
                    publish(&redis, streams::SUBSCRIPTION_CHANGED, None, json!({"user_id": u, "plan": "pro", "action": "started", "price_usd": 9.99})).await;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            i
        });
        Load { stop, task }
    }

    pub fn stop(self, rt: &tokio::runtime::Runtime) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        rt.block_on(self.task).unwrap()
    }
}

/// Waits until every group has nothing pending and no lag, three reads in a row.
pub async fn drained(redis: &Redis, cfg: &Config) {
    let mut quiet = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    while quiet < 3 {
        let rows = astra_bus::bus::status::status(redis, cfg).await.unwrap();
        let busy = rows.iter().any(|r| r.pending > 0 || r.lag != Some(0));
        quiet = if busy { 0 } else { quiet + 1 };
        assert!(
            Instant::now() < deadline,
            "the bus did not drain: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

pub async fn hgetall(redis: &Redis, key: &str) -> BTreeMap<String, String> {
    let v = redis.cmd("HGETALL", vec![arg(key)]).await.unwrap();
    astra_bus::bus::client::as_pairs(v)
        .into_iter()
        .map(|(k, v)| (k, astra_bus::bus::client::as_string(&v).unwrap_or_default()))
        .collect()
}

/// What the marketplace's sibling groups on `sale_completed` keep: revenue, KPI counters
/// and totals, the audit chain, and the derived revenue events.
pub async fn sibling_state(redis: &Redis) -> Vec<(String, String)> {
    let day = astra_bus::handlers::utc_day(now_ms());
    let mut out = vec![];
    for key in [
        financial::revenue_day_key(&day),
        analytics::day_key(&day),
        analytics::total_key(),
    ] {
        out.push((key.clone(), format!("{:?}", hgetall(redis, &key).await)));
    }
    let audit = redis
        .cmd("LLEN", vec![arg(analytics::audit_log_key())])
        .await
        .unwrap();
    out.push(("audit records".into(), format!("{:?}", as_int(&audit))));
    let n = redis
        .cmd("XLEN", vec![arg(streams::REVENUE_RECORDED)])
        .await
        .unwrap();
    out.push((
        streams::REVENUE_RECORDED.into(),
        format!("{:?}", as_int(&n)),
    ));
    out
}

/// INFO commandstats as command → calls.
pub fn commandstats(server: &RedisServer) -> BTreeMap<String, i64> {
    server
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}

pub fn delta(a: &BTreeMap<String, i64>, b: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    b.iter()
        .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0)))
        .filter(|(k, d)| *d != 0 && k != "info")
        .collect()
}

/// How many whole health rounds `d` is, if it is exactly that (and nothing else).
pub fn whole_rounds(d: &BTreeMap<String, i64>, round: &BTreeMap<String, i64>) -> Option<i64> {
    let r = d.get("xlen").copied().unwrap_or(0) / round["xlen"];
    let exact = d.keys().all(|k| round.contains_key(k))
        && round
            .iter()
            .all(|(k, n)| d.get(k).copied().unwrap_or(0) == r * n);
    exact.then_some(r)
}

/// Samples until the commands since `base` are whole rounds (a sample can land inside a
/// round's pipeline); panics with what else Redis was sent.
pub fn after_whole_rounds(
    server: &RedisServer,
    base: &BTreeMap<String, i64>,
    round: &BTreeMap<String, i64>,
    when: &str,
) -> (BTreeMap<String, i64>, i64, Instant) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = commandstats(server);
        let at = Instant::now();
        let d = delta(base, &now);
        if let Some(r) = whole_rounds(&d, round) {
            return (now, r, at);
        }
        assert!(
            Instant::now() < deadline,
            "{when}: Redis got more than the health loop's rounds of {round:?}: {d:?}"
        );
        std::thread::sleep(Duration::from_millis(15));
    }
}

pub fn console_requests(port: u16) -> i64 {
    let (_, body) = http_get(port, "/metrics", &[]);
    body.lines()
        .filter(|l| {
            l.starts_with("astra_bus_http_requests_total{")
                && l.contains("route=\"/console/api/health\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as i64
}

pub fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("ASTRA_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .unwrap()
                .join("console-screenshots")
        });
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------
// Page probes
// ---------------------------------------------------------------------------------------

pub const EDGE_STATE: &str = "const e = document.querySelector(`#topology path.edge[data-kind=reads][data-from=\"${arguments[0]}\"][data-to=\"${arguments[1]}\"]`);
    return e ? {health: e.dataset.health || null, stroke: getComputedStyle(e).stroke, at: document.body.dataset.snapshotAt} : null;";

/// [`EDGE_STATE`], but null until `cond` holds.
pub fn edge_when(cond: &str) -> String {
    EDGE_STATE.replace("return e ?", &format!("return e && {cond} ?"))
}

pub fn edge_health(sess: &Session, stream: &str, group: &str) -> Value {
    sess.eval(EDGE_STATE, json!([stream, group]))
}

/// `#e3a008` → `rgb(227, 160, 8)` (how getComputedStyle reports colours).
pub fn rgb(hex_colour: &str) -> String {
    let h = hex_colour.trim().trim_start_matches('#');
    let c = |i: usize| u8::from_str_radix(&h[i..i + 2], 16).unwrap();
    format!("rgb({}, {}, {})", c(0), c(2), c(4))
}

/// Clicks a point of the edge's visible stroke that the pointer really hits (the edge's
/// hit area is the topmost element there), as a person would.
pub fn click_edge(sess: &Session, stream: &str, group: &str) {
    let at = sess.eval(
        "const e = document.querySelector(`#topology path.edge[data-kind=reads][data-from=\"${arguments[0]}\"][data-to=\"${arguments[1]}\"]`);
         const hit = document.querySelector(`#topology path.edge-hit[data-hit=\"${e.dataset.edge}\"]`);
         e.scrollIntoView({block: 'center'});
         const len = e.getTotalLength(); const m = e.getScreenCTM();
         for (let t = 0.5; t < 0.95; t += 0.03) {
           for (const u of [t, 1 - t]) {
             const p = e.getPointAtLength(len * u);
             const x = p.x * m.a + p.y * m.c + m.e, y = p.x * m.b + p.y * m.d + m.f;
             if (document.elementFromPoint(x, y) === hit) return [Math.round(x), Math.round(y)];
           }
         }
         return null;",
        json!([stream, group]),
    );
    let xy = at
        .as_array()
        .unwrap_or_else(|| panic!("no clickable point on {stream} → {group}"));
    sess.click_at(xy[0].as_i64().unwrap(), xy[1].as_i64().unwrap());
}

pub fn numbers_as_f64(v: Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_f64).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, numbers_as_f64(v))).collect())
        }
        other => other,
    }
}

/// One line of `astra-bus trace` output: (depth, type, id, stream, entry, payload).
pub fn parse_cli_line(line: &str) -> (usize, String, String, String, String, Value) {
    let (depth, rest) = match line.find("└─ ") {
        // `render` indents a child at depth d by 3·d spaces.
        Some(i) => (i / 3, &line[i + "└─ ".len()..]),
        None => (0, line),
    };
    let mut it = rest.splitn(5, ' ');
    let ty = it.next().unwrap().to_string();
    let id = it.next().unwrap().to_string();
    let stream = it.next().unwrap().trim_start_matches('[').to_string();
    let entry = it.next().unwrap().trim_end_matches(']').to_string();
    let payload = serde_json::from_str(it.next().unwrap_or("null")).unwrap_or(Value::Null);
    (depth, ty, id, stream, entry, payload)
}
