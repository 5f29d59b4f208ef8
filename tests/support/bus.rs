//! In-process daemons and small Redis helpers for the engine tests.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use astra_bus::bus::Redis;
use astra_bus::bus::client::{Value, arg, as_array, as_int, parse_entries};
use astra_bus::config::Config;
use astra_bus::daemon::{RunOptions, run_with};
use astra_bus::envelope::{ContentType, Envelope};
use astra_bus::handlers::Registry;
use astra_bus::metrics::Metrics;
use astra_bus::shutdown::{Shutdown, Trigger};
use std::sync::Arc;

/// A daemon running inside the test process.
pub struct InProc {
    trigger: Trigger,
    handle: tokio::task::JoinHandle<()>,
    pub metrics: Arc<Metrics>,
}

impl InProc {
    /// Starts `cfg` with `registry` and waits until its readers run.
    pub async fn start(cfg: Config, registry: Registry) -> InProc {
        Self::start_role(cfg, registry, astra_bus::daemon::Role::All).await
    }

    /// [`InProc::start`] running only `role`.
    pub async fn start_role(
        cfg: Config,
        registry: Registry,
        role: astra_bus::daemon::Role,
    ) -> InProc {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("ASTRA_LOG")
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let (trigger, shutdown) = Shutdown::new();
        let metrics = Metrics::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let opts = RunOptions {
            registry,
            metrics: metrics.clone(),
            on_ready: Some(Box::new(move || {
                let _ = tx.send(());
            })),
            role,
            ..RunOptions::default()
        };
        let handle = tokio::spawn(async move {
            run_with(cfg, opts, shutdown).await.expect("daemon runs");
        });
        tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .expect("daemon ready in time")
            .expect("daemon ready");
        InProc {
            trigger,
            handle,
            metrics,
        }
    }

    /// Signals shutdown and waits for the drain.
    pub async fn stop(self) {
        self.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("daemon stops in time")
            .expect("daemon task");
    }
}

/// Loads a config dir, pointing it at `url`, validating handlers against `registry`.
pub fn load(dir: &Path, url: &str, instance: &str, registry: &Registry) -> Config {
    let url = url.to_string();
    let instance = instance.to_string();
    Config::load_for(
        dir,
        move |k| match k {
            "ASTRA_REDIS_URL" => Some(url.clone()),
            "ASTRA_INSTANCE" => Some(instance.clone()),
            // Tests run in parallel: every daemon gets its own ephemeral port.
            "ASTRA_HTTP_LISTEN" => Some("127.0.0.1:0".into()),
            _ => None,
        },
        registry,
    )
    .unwrap_or_else(|e| panic!("test config: {e}"))
}

pub async fn connect(url: &str) -> Redis {
    Redis::connect(url, Duration::from_secs(5))
        .await
        .expect("connect")
}

/// Publishes a JSON payload as a root event; returns (event id, entry id).
pub async fn publish_json(
    redis: &Redis,
    stream: &str,
    json: &str,
    cid: Option<&str>,
) -> (String, String) {
    let (domain, event, v) = astra_bus::config::parse_stream_name(stream).unwrap();
    let env = Envelope::root(
        &format!("{domain}.{event}"),
        v,
        "test",
        cid.map(str::to_string),
        ContentType::Json,
        json.as_bytes().to_vec(),
    );
    let entry = astra_bus::bus::publish::publish(redis, stream, &env)
        .await
        .unwrap();
    (env.id, entry)
}

pub async fn xlen(redis: &Redis, stream: &str) -> i64 {
    as_int(&redis.cmd("XLEN", vec![arg(stream)]).await.unwrap()).unwrap_or(0)
}

/// Every entry of a stream, decoded.
pub async fn read_all(redis: &Redis, stream: &str) -> Vec<(String, Envelope)> {
    let v = redis
        .cmd("XRANGE", vec![arg(stream), arg("-"), arg("+")])
        .await
        .unwrap();
    parse_entries(v)
        .into_iter()
        .map(|e| (e.id, Envelope::from_fields(&e.fields.unwrap()).unwrap()))
        .collect()
}

/// Raw entries of a stream (fields as text pairs).
pub async fn read_raw(redis: &Redis, stream: &str) -> Vec<Vec<(String, String)>> {
    let v = redis
        .cmd("XRANGE", vec![arg(stream), arg("-"), arg("+")])
        .await
        .unwrap();
    parse_entries(v)
        .into_iter()
        .map(|e| {
            e.fields
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(&k).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect()
        })
        .collect()
}

/// Whether `group` has read every entry of its replay stream and has none pending (true
/// when the stream does not exist: nothing was ever replayed to it).
pub async fn replays_done(redis: &Redis, group: &str) -> bool {
    let stream = astra_bus::bus::consume::replay_stream(group);
    let Ok(info) = redis
        .cmd("XINFO", vec![arg("STREAM"), arg(stream.as_str())])
        .await
    else {
        return true;
    };
    let last = astra_bus::bus::client::as_pairs(info)
        .into_iter()
        .find(|(k, _)| k == "last-generated-id")
        .and_then(|(_, v)| astra_bus::bus::client::as_string(&v));
    let Ok(groups) = redis
        .cmd("XINFO", vec![arg("GROUPS"), arg(stream.as_str())])
        .await
    else {
        return false;
    };
    astra_bus::bus::client::as_array(groups)
        .unwrap_or_default()
        .into_iter()
        .map(|g| {
            astra_bus::bus::client::as_pairs(g)
                .into_iter()
                .map(|(k, v)| (k, astra_bus::bus::client::as_string(&v)))
                .collect::<std::collections::HashMap<_, _>>()
        })
        .find(|m| m.get("name").cloned().flatten().as_deref() == Some(group))
        .is_some_and(|m| {
            m.get("pending").cloned().flatten().as_deref() == Some("0")
                && m.get("last-delivered-id").cloned().flatten() == last
        })
}

/// Pending count of a group on a stream.
pub async fn pending(redis: &Redis, stream: &str, group: &str) -> i64 {
    match redis.cmd("XPENDING", vec![arg(stream), arg(group)]).await {
        Ok(Value::Array(a)) => as_int(&a[0]).unwrap_or(0),
        _ => -1,
    }
}

/// Waits until `f` returns true, polling; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// HGETALL as (field, integer) pairs.
pub async fn hgetall_int(redis: &Redis, key: &str) -> std::collections::BTreeMap<String, i64> {
    let v = redis.cmd("HGETALL", vec![arg(key)]).await.unwrap();
    astra_bus::bus::client::as_pairs(v)
        .into_iter()
        .map(|(k, v)| (k, as_int(&v).unwrap_or(i64::MIN)))
        .collect()
}

pub fn array_len(v: Value) -> usize {
    as_array(v).map_or(0, |a| a.len())
}

/// A streams.toml for test topologies: the given streams plus the dead-letter stream.
pub fn streams_toml(streams: &[&str], extra_defaults: &str) -> String {
    let mut s = format!(
        "[redis]\nurl = \"redis://127.0.0.1:1\"\n\n[defaults]\nblock = \"100ms\"\nclaim_idle = \"300ms\"\nmax_deliveries = 3\n{extra_defaults}\n\n[retention]\ninterval = \"1h\"\n\n[daemon]\nshutdown_deadline = \"5s\"\n\n"
    );
    for name in streams
        .iter()
        .chain(std::iter::once(&"astra.bus.dead_letter.v1"))
    {
        s.push_str(&format!(
            "[[stream]]\nname = \"{name}\"\ndescription = \"test stream\"\n\n"
        ));
    }
    s
}

/// A group config for direct calls into the engine.
pub fn test_group(name: &str) -> astra_bus::config::GroupConfig {
    astra_bus::handlers::testing::group(name, "builtin.count_by_user", &[], "")
}

/// GET `path` from 127.0.0.1:`port` over a fresh connection; returns (status, head, body).
pub async fn http_get(port: u16, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![];
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// The value of one series (`name{labels}`) in a Prometheus text scrape.
pub fn metric_value(body: &str, series: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{body}"))
}

/// An HTTP answer.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port` over a fresh connection.
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpReply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).await.unwrap();
    let mut buf = vec![];
    // The server may answer (413) and close before reading the whole body.
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpReply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// POST JSON.
pub async fn post_json(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> HttpReply {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    http(port, "POST", path, &h, body.to_string().as_bytes()).await
}
