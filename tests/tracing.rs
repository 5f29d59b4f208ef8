//! Distributed tracing end to end (issue 16): real `redis-server`, the shipped topology
//! in process, and a real OTLP receiver in the test (OTLP/HTTP `POST /v1/traces` decoded
//! with `opentelemetry-proto`'s `ExportTraceServiceRequest`, and OTLP/gRPC through its
//! tonic `TraceService`), no stubbed exporter.
//!
//! - `one_trade_is_one_trace_across_every_group`: a trade published through the edge with
//!   a client `traceparent` gives a SERVER, a PRODUCER and one CONSUMER span per (group,
//!   event) it flows into, all in the client's trace; every event's `tp` (read back from
//!   Redis) names its producing span as parent; without a `traceparent` the edge request
//!   is a root and the whole tree shares its new trace id.
//! - `a_trade_without_tp_in_redis_starts_a_root_per_group`: an entry written straight
//!   into Redis without `tp`: each group's span is a root, and what it derives carries
//!   that span's context (regression: the derived `tp` used to be copied verbatim).
//! - `grpc_receiver_gets_the_same_tree`: the same over OTLP/gRPC.
//! - `a_replayed_dead_letter_links_to_its_first_trace`: a poisoned trade's span says
//!   `dead_lettered`; `dlq replay` gives a new root span with a link to the first trace.
//! - `a_dead_collector_changes_neither_delivery_nor_exactness`: with the collector's port
//!   closed, every group's derived events are exactly those of a run with tracing off,
//!   the run takes at most 3× as long + 5 s, and the dropped spans are counted.
//!
//! The tracer provider is process-wide, so these tests run one at a time ([`serial`]).

#[path = "support/otlp.rs"]
mod otlp;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use astra_bus::bus::Redis;
use astra_bus::config::Config;
use astra_bus::envelope::{ContentType, Envelope, new_id, now_ms};
use astra_bus::handlers::Registry;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use otlp::{RSpan, Received, grpc_receiver, http_receiver};
use serde_json::json;
use support::bus::*;
use support::{RedisServer, TempDir, free_port, shipped_config_copy};

const TRADE: &str = "astra.trading.trade_executed.v1";
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// One test at a time: they share the process's tracer provider and subscriber.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    // The subscriber must carry the OpenTelemetry slot before any daemon starts (the
    // in-process helper installs a plain one otherwise).
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let _ = tracing_subscriber::registry()
        .with(astra_bus::telemetry::OtelSlot.with_filter(astra_bus::telemetry::OtelSlot::filter()))
        .with(
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(
                    tracing_subscriber::EnvFilter::try_from_env("ASTRA_LOG")
                        .unwrap_or_else(|_| "warn".into()),
                ),
        )
        .try_init();
    LOCK.lock().await
}

fn reload(dir: &TempDir, url: &str, port: u16) -> Config {
    let url = url.to_string();
    Config::load_for(
        &dir.path,
        move |k| match k {
            "ASTRA_REDIS_URL" => Some(url.clone()),
            "ASTRA_INSTANCE" => Some("trace-test".into()),
            "ASTRA_HTTP_LISTEN" => Some(format!("127.0.0.1:{port}")),
            _ => None,
        },
        &Registry::builtin(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until every group has read and acknowledged everything.
async fn drained(redis: &Redis, cfg: &Config) {
    let mut quiet = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while quiet < 3 {
        let rows = astra_bus::bus::status::status(redis, cfg).await.unwrap();
        let busy = rows.iter().any(|r| r.pending > 0 || r.lag != Some(0));
        quiet = if busy { 0 } else { quiet + 1 };
        assert!(
            Instant::now() < deadline,
            "the bus did not drain: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The shipped topology with `tracing` (a TOML section body) and the edge on a free port.
fn config(url: &str, tracing: Option<&str>) -> (TempDir, Config, u16) {
    let dir = shipped_config_copy();
    let p = dir.join("streams.toml");
    let mut text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("block = \"2s\"", "block = \"100ms\"");
    if let Some(t) = tracing {
        text.push_str(&format!("\n[tracing]\n{t}\n"));
    }
    std::fs::write(&p, text).unwrap();
    let port = free_port();
    let cfg = reload(&dir, url, port);
    (dir, cfg, port)
}

fn trade(id: &str, user: &str) -> serde_json::Value {
    json!({"trade_id": id, "user_id": user, "symbol": "BTC", "side": "buy",
           "quantity": 2, "price_usd": 30000.0, "fee_usd": 1.5})
}

/// Every event of correlation `cid`, on every declared stream: (stream, event).
async fn events_of(redis: &Redis, cfg: &Config, cid: &str) -> Vec<(String, Envelope)> {
    let mut out = vec![];
    for s in &cfg.streams {
        for (_, e) in read_all(redis, &s.name).await {
            if e.cid == cid {
                out.push((s.name.clone(), e));
            }
        }
    }
    out
}

/// (trace id, parent span id) of a `traceparent`.
fn tp_parts(tp: &str) -> (String, String) {
    let p: Vec<&str> = tp.split('-').collect();
    assert_eq!(p.len(), 4, "{tp}");
    (p[1].to_string(), p[2].to_string())
}

/// Waits until the receiver holds `n` spans of correlation `cid` (the daemon is stopped
/// first, which flushes the exporter, so this is quick).
async fn spans_of(got: &Received, cid: &str, at_least: usize) -> Vec<RSpan> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: Vec<RSpan> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.attr("astra.cid") == cid)
            .cloned()
            .collect();
        if v.len() >= at_least || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The consumer groups that read `stream`.
fn readers<'a>(cfg: &'a Config, stream: &str) -> Vec<&'a str> {
    cfg.groups
        .iter()
        .filter(|g| g.reads.iter().any(|r| r == stream))
        .map(|g| g.name.as_str())
        .collect()
}

/// Checks the tree of `cid`: one CONSUMER span per (group, event) for every group that
/// reads an event of it, each the child of the span named by the event's `tp`, and each
/// derived event's `tp` naming the span that produced it. Returns the trace id.
fn check_tree(cfg: &Config, events: &[(String, Envelope)], spans: &[RSpan]) -> String {
    let consumers: Vec<&RSpan> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Consumer)
        .collect();
    let trace = tp_parts(events[0].1.tp.as_deref().expect("the trade has a tp")).0;
    let mut expected = BTreeSet::new();
    for (stream, e) in events {
        let (t, parent) = tp_parts(
            e.tp.as_deref()
                .unwrap_or_else(|| panic!("{stream} {} has no tp", e.id)),
        );
        assert_eq!(t, trace, "{stream} {} is in another trace", e.id);
        if let Some(caus) = &e.caus {
            // Derived: its tp's parent is the span of (its group, its source event).
            let producer = consumers
                .iter()
                .find(|s| {
                    s.attr("messaging.message.id") == caus
                        && s.attr("messaging.consumer.group.name") == e.src
                })
                .unwrap_or_else(|| panic!("no span of {} handling {caus}", e.src));
            assert_eq!(
                parent, producer.id,
                "{stream} {}: tp parent is not its producing span",
                e.id
            );
        }
        for g in readers(cfg, stream) {
            expected.insert((g.to_string(), e.id.clone()));
            let s: Vec<&&RSpan> = consumers
                .iter()
                .filter(|s| {
                    s.attr("messaging.consumer.group.name") == g
                        && s.attr("messaging.message.id") == e.id
                })
                .collect();
            assert_eq!(
                s.len(),
                1,
                "spans of {g} handling {stream} {}: {s:#?}",
                e.id
            );
            let s = s[0];
            assert_eq!(s.trace, trace, "{g} on {stream}");
            assert_eq!(
                s.parent, parent,
                "{g} on {stream}: parent is the event's tp"
            );
            assert_eq!(s.name, format!("process {stream}"));
            assert_eq!(s.attr("messaging.system"), "redis");
            assert_eq!(s.attr("messaging.operation.type"), "process");
            assert_eq!(s.attr("messaging.destination.name"), stream);
            assert_eq!(s.attr("messaging.message.conversation_id"), e.cid);
            assert_eq!(s.attr("astra.outcome"), "ok", "{g} on {stream}");
        }
    }
    let seen: BTreeSet<(String, String)> = consumers
        .iter()
        .map(|s| {
            (
                s.attr("messaging.consumer.group.name").to_string(),
                s.attr("messaging.message.id").to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen, expected,
        "exactly one span per (group, event) of the tree"
    );
    let groups: BTreeSet<&str> = expected.iter().map(|(g, _)| g.as_str()).collect();
    // The trade reaches far: its own readers and, through derived events, more.
    assert!(groups.len() > readers(cfg, TRADE).len(), "{groups:?}");
    trace
}

async fn publish_trade(port: u16, cid: &str, tp: Option<&str>, id: &str) {
    let mut h = vec![("X-Correlation-ID", cid)];
    if let Some(tp) = tp {
        h.push(("traceparent", tp));
    }
    let r = post_json(port, &format!("/v1/events/{TRADE}"), &h, &trade(id, "ann")).await;
    assert_eq!(r.status, 202, "{}", r.body);
}

/// The edge's SERVER and PRODUCER spans of `cid`, checked; returns (server, producer).
fn edge_spans(spans: &[RSpan], trade: &Envelope) -> (RSpan, RSpan) {
    let server: Vec<&RSpan> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .collect();
    assert_eq!(server.len(), 1, "{server:#?}");
    let server = server[0].clone();
    assert_eq!(server.name, "POST /v1/events/{stream}");
    assert_eq!(server.attr("http.response.status_code"), "202");
    let producer: Vec<&RSpan> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Producer)
        .collect();
    assert_eq!(producer.len(), 1, "{producer:#?}");
    let producer = producer[0].clone();
    assert_eq!(producer.name, format!("publish {TRADE}"));
    assert_eq!(
        producer.parent, server.id,
        "publish is a child of the request"
    );
    assert_eq!(producer.trace, server.trace);
    assert_eq!(producer.attr("messaging.operation.type"), "publish");
    assert_eq!(producer.attr("messaging.destination.name"), TRADE);
    assert_eq!(producer.attr("messaging.message.id"), trade.id);
    let (t, p) = tp_parts(trade.tp.as_deref().unwrap());
    assert_eq!(
        (t, p),
        (producer.trace.clone(), producer.id.clone()),
        "the stored tp is the publish span"
    );
    (server, producer)
}

async fn run_tree(protocol: &str, port_of: (u16, Received)) {
    let (rport, got) = port_of;
    let server = RedisServer::start();
    let endpoint = match protocol {
        "grpc" => format!("http://127.0.0.1:{rport}"),
        _ => format!("http://127.0.0.1:{rport}/v1/traces"),
    };
    let (_dir, cfg, port) = config(
        &server.url(),
        Some(&format!(
            "enabled = true\nprotocol = \"{protocol}\"\nendpoint = \"{endpoint}\""
        )),
    );
    let daemon = InProc::start(cfg.clone(), Registry::builtin()).await;
    let redis = connect(&server.url()).await;
    let client_tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    publish_trade(port, "with-tp", Some(&client_tp), "t1").await;
    publish_trade(port, "without-tp", None, "t2").await;
    drained(&redis, &cfg).await;
    daemon.stop().await; // flushes the exporter

    // With the client's traceparent: everything is in the client's trace.
    let events = events_of(&redis, &cfg, "with-tp").await;
    let n = events
        .iter()
        .map(|(s, _)| readers(&cfg, s).len())
        .sum::<usize>()
        + 2;
    let spans = spans_of(&got, "with-tp", n).await;
    assert_eq!(events[0].0, TRADE);
    let (srv, _) = edge_spans(&spans, &events[0].1);
    assert_eq!(
        (srv.trace.as_str(), srv.parent.as_str()),
        (CLIENT_TRACE, CLIENT_SPAN)
    );
    assert_eq!(check_tree(&cfg, &events, &spans), CLIENT_TRACE);
    eprintln!(
        "{protocol}: {} events of the trade, {n} spans",
        events.len()
    );
    assert_eq!(spans.len(), n, "no other span of the trade");
    assert!(spans.iter().all(|s| s.trace == CLIENT_TRACE));

    // Without: the request is a root, and its new trace holds the whole tree.
    let events = events_of(&redis, &cfg, "without-tp").await;
    let n = events
        .iter()
        .map(|(s, _)| readers(&cfg, s).len())
        .sum::<usize>()
        + 2;
    let spans = spans_of(&got, "without-tp", n).await;
    let (srv, _) = edge_spans(&spans, &events[0].1);
    assert_eq!(
        srv.parent, "",
        "a request without traceparent is a root span"
    );
    assert_ne!(srv.trace, CLIENT_TRACE);
    assert_eq!(check_tree(&cfg, &events, &spans), srv.trace);
    assert_eq!(spans.len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trade_is_one_trace_across_every_group() {
    let _serial = serial().await;
    run_tree("http/protobuf", http_receiver().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_receiver_gets_the_same_tree() {
    let _serial = serial().await;
    run_tree("grpc", grpc_receiver().await).await;
}

/// A trade entry written straight into Redis (no edge) without `tp`.
async fn raw_trade(redis: &Redis, id: &str, cid: &str, tp: Option<&str>, ts: i64) -> Envelope {
    let mut env = Envelope::root(
        "trading.trade_executed",
        1,
        "tracing-test",
        Some(cid.to_string()),
        ContentType::Json,
        trade(&format!("trade-{id}"), "bob")
            .to_string()
            .into_bytes(),
    );
    env.id = id.to_string();
    env.ts = ts;
    env.tp = tp.map(str::to_string);
    astra_bus::bus::publish::publish(redis, TRADE, &env)
        .await
        .unwrap();
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trade_without_tp_in_redis_starts_a_root_per_group() {
    let _serial = serial().await;
    let (rport, got) = http_receiver().await;
    let server = RedisServer::start();
    let (_dir, cfg, _) = config(
        &server.url(),
        Some(&format!(
            "enabled = true\nendpoint = \"http://127.0.0.1:{rport}/v1/traces\""
        )),
    );
    let daemon = InProc::start(cfg.clone(), Registry::builtin()).await;
    let redis = connect(&server.url()).await;
    raw_trade(&redis, &new_id(), "raw", None, now_ms()).await;
    drained(&redis, &cfg).await;
    daemon.stop().await;
    let events = events_of(&redis, &cfg, "raw").await;
    let n = events
        .iter()
        .map(|(s, _)| readers(&cfg, s).len())
        .sum::<usize>();
    let spans = spans_of(&got, "raw", n).await;
    assert_eq!(spans.len(), n);
    let trade = &events[0].1;
    assert_eq!(trade.tp, None);
    let roots: Vec<&RSpan> = spans
        .iter()
        .filter(|s| s.attr("messaging.message.id") == trade.id)
        .collect();
    assert_eq!(roots.len(), readers(&cfg, TRADE).len());
    for r in &roots {
        assert_eq!(
            r.parent,
            "",
            "{}: an event without tp starts a root span",
            r.attr("messaging.consumer.group.name")
        );
    }
    // Each derived event carries the context of the span that produced it: the trace of
    // its group's root, and that span as parent. Copying the source's `tp` verbatim (the
    // old behaviour) leaves them without one.
    let derived: Vec<&(String, Envelope)> =
        events.iter().filter(|(_, e)| e.caus.is_some()).collect();
    assert!(!derived.is_empty());
    for (stream, e) in derived {
        let tp =
            e.tp.as_deref()
                .unwrap_or_else(|| panic!("{stream} {}: no tp", e.id));
        let (t, parent) = tp_parts(tp);
        let producer = spans
            .iter()
            .find(|s| s.id == parent)
            .unwrap_or_else(|| panic!("{stream} {}: tp parent {parent} is no span", e.id));
        assert_eq!(producer.trace, t);
        assert_eq!(producer.attr("messaging.consumer.group.name"), e.src);
        assert_eq!(
            Some(producer.attr("messaging.message.id")),
            e.caus.as_deref()
        );
        if e.caus.as_deref() == Some(trade.id.as_str()) {
            let root = roots
                .iter()
                .find(|r| r.attr("messaging.consumer.group.name") == e.src)
                .unwrap();
            assert_eq!(root.trace, t, "shares its group's new trace id");
        }
    }
}

/// Everything the groups keep in Redis: each key's type and value (a stream by its
/// length, a list and the audit chain head by size), read with SCAN. The dedup and idempotency bookkeeping is included: the same
/// event ids leave the same markers.
async fn redis_state(redis: &Redis) -> BTreeMap<String, String> {
    use astra_bus::bus::client::{arg, as_array, as_string};
    let text = |v: astra_bus::bus::client::Value| -> String {
        match as_array(v.clone()) {
            Some(items) => {
                let mut parts: Vec<String> = items
                    .iter()
                    .map(|i| as_string(i).unwrap_or_default())
                    .collect();
                // Hashes and sets come in no particular order.
                if !matches!(&v, astra_bus::bus::client::Value::Array(_)) {
                    parts.sort();
                }
                parts.join(",")
            }
            None => as_string(&v).unwrap_or_default(),
        }
    };
    let mut keys = vec![];
    let mut cursor = "0".to_string();
    loop {
        let v = redis
            .cmd("SCAN", vec![arg(cursor.as_str()), arg("COUNT"), arg(1000)])
            .await
            .unwrap();
        let parts = as_array(v).unwrap();
        cursor = as_string(&parts[0]).unwrap();
        keys.extend(
            as_array(parts[1].clone())
                .unwrap()
                .iter()
                .filter_map(as_string),
        );
        if cursor == "0" {
            break;
        }
    }
    let mut out = BTreeMap::new();
    for k in keys {
        let t = as_string(&redis.cmd("TYPE", vec![arg(k.as_str())]).await.unwrap()).unwrap();
        let v = match t.as_str() {
            "stream" => redis.cmd("XLEN", vec![arg(k.as_str())]).await.unwrap(),
            "hash" => redis.cmd("HGETALL", vec![arg(k.as_str())]).await.unwrap(),
            "zset" => redis
                .cmd(
                    "ZRANGE",
                    vec![arg(k.as_str()), arg(0), arg(-1), arg("WITHSCORES")],
                )
                .await
                .unwrap(),
            "set" => redis.cmd("SMEMBERS", vec![arg(k.as_str())]).await.unwrap(),
            "list" => redis
                .cmd("LRANGE", vec![arg(k.as_str()), arg(0), arg(-1)])
                .await
                .unwrap(),
            _ => redis.cmd("GET", vec![arg(k.as_str())]).await.unwrap(),
        };
        let mut v = text(v);
        // The audit chain links every stream's events in the order its readers happen to
        // interleave them, and a capped feed keeps the newest of an interleaving: those
        // are compared by size, not content.
        let n = redis.cmd(
            if t == "list" { "LLEN" } else { "STRLEN" },
            vec![arg(k.as_str())],
        );
        if t == "list" || k.contains("{audit}") {
            v = format!("{} long", as_string(&n.await.unwrap()).unwrap_or_default());
        }
        if t == "hash" || t == "set" {
            let mut parts: Vec<&str> = v.split(',').collect();
            parts.sort();
            v = parts.join(",");
        }
        out.insert(k, format!("{t}: {v}"));
    }
    out
}

/// Runs `trades` (id, ts) through a fresh Redis with `tracing`; returns (derived state,
/// seconds to drain, the daemon's metrics scrape).
async fn timed_run(
    trades: &[(String, i64)],
    tracing: Option<&str>,
) -> (BTreeMap<String, String>, f64, String) {
    let server = RedisServer::start();
    let (dir, _, port) = config(&server.url(), tracing);
    // One event in flight per group: the events commit in stream order, so which trade
    // crosses a level is the same in both runs and the derived events compare exactly
    // (with more in flight, batches commit in either order and so do level-ups).
    let p = dir.join("streams.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    let text = text
        .replace("concurrency = 512", "concurrency = 1")
        .replace("batch_size = 100", "batch_size = 1");
    std::fs::write(&p, text).unwrap();
    let cfg = reload(&dir, &server.url(), port);
    let daemon = InProc::start(cfg.clone(), Registry::builtin()).await;
    let redis = connect(&server.url()).await;
    let started = Instant::now();
    for (i, (id, ts)) in trades.iter().enumerate() {
        // A sampled parent on each, so every event is traced when tracing is on.
        let tp = format!("00-{:032x}-{:016x}-01", i + 1, i + 1);
        raw_trade(&redis, id, &format!("bulk-{i}"), Some(&tp), *ts).await;
    }
    drained(&redis, &cfg).await;
    let took = started.elapsed().as_secs_f64();
    let (_, _, metrics) = http_get(port, "/metrics").await;
    daemon.stop().await;
    let dead = astra_bus::bus::client::as_int(
        &redis
            .cmd(
                "XLEN",
                vec![astra_bus::bus::client::arg("astra.bus.dead_letter.v1")],
            )
            .await
            .unwrap(),
    );
    assert_eq!(dead.unwrap_or(0), 0, "nothing dead-lettered");
    (redis_state(&redis).await, took, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_changes_neither_delivery_nor_exactness() {
    let _serial = serial().await;
    let n = 300;
    let t0 = now_ms();
    let trades: Vec<(String, i64)> = (0..n).map(|i| (new_id(), t0 + i)).collect();
    let (off, off_secs, _) = timed_run(&trades, None).await;
    // Nothing listens there: every export fails at once.
    let closed = free_port();
    let (on, on_secs, metrics) = timed_run(
        &trades,
        Some(&format!("enabled = true\nendpoint = \"http://127.0.0.1:{closed}/v1/traces\"\nexport_timeout = \"1s\"")),
    )
    .await;
    eprintln!("{n} trades: tracing off {off_secs:.2}s, on to a dead collector {on_secs:.2}s");
    assert!(off.len() > 20, "{off:#?}");
    let differ: Vec<(&String, Option<&String>, Option<&String>)> = off
        .keys()
        .chain(on.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| on.get(*k) != off.get(*k))
        .map(|k| (k, off.get(k), on.get(k)))
        .collect();
    assert!(differ.is_empty(), "keys that differ (off, on): {differ:#?}");
    assert!(
        on_secs <= off_secs * 3.0 + 5.0,
        "on {on_secs}s vs off {off_secs}s"
    );
    let dropped = metric_value(
        &metrics,
        "astra_bus_trace_spans_dropped_total{reason=\"export_failed\"}",
    ) + metric_value(
        &metrics,
        "astra_bus_trace_spans_dropped_total{reason=\"queue_full\"}",
    );
    assert!(dropped > 0.0, "dropped spans are counted:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_dead_letter_links_to_its_first_trace() {
    let _serial = serial().await;
    let (rport, got) = http_receiver().await;
    let server = RedisServer::start();
    let (_dir, cfg, _) = config(
        &server.url(),
        Some(&format!(
            "enabled = true\nendpoint = \"http://127.0.0.1:{rport}/v1/traces\""
        )),
    );
    let daemon = InProc::start(cfg.clone(), Registry::builtin()).await;
    let redis = connect(&server.url()).await;
    // A trade whose payload its handlers refuse (poison): dead-lettered by each.
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let mut env = Envelope::root(
        "trading.trade_executed",
        1,
        "tracing-test",
        Some("poisoned".into()),
        ContentType::Json,
        json!({"trade_id": "p1", "user_id": "eve", "symbol": "BTC", "side": "sideways",
               "quantity": 1, "price_usd": 10.0})
        .to_string()
        .into_bytes(),
    );
    env.tp = Some(tp.clone());
    astra_bus::bus::publish::publish(&redis, TRADE, &env)
        .await
        .unwrap();
    drained(&redis, &cfg).await;
    const DLQ: &str = "astra.bus.dead_letter.v1";
    let dead = astra_bus::bus::dlq::list(&redis, DLQ, None, 100)
        .await
        .unwrap();
    let d = dead
        .iter()
        .find(|d| d.get("group") == Some("trading.internal_processing"))
        .unwrap_or_else(|| panic!("no dead letter of trading.internal_processing: {dead:#?}"));
    let first = spans_of(&got, "poisoned", 1).await;
    let s = first
        .iter()
        .find(|s| s.attr("messaging.consumer.group.name") == "trading.internal_processing")
        .expect("the first handling's span");
    assert_eq!(
        (s.trace.as_str(), s.parent.as_str()),
        (CLIENT_TRACE, CLIENT_SPAN)
    );
    assert_eq!(s.attr("astra.outcome"), "dead_lettered");
    assert_eq!(s.attr("astra.dead_letter.reason"), "poison");

    astra_bus::bus::dlq::replay(&redis, DLQ, d).await.unwrap();
    wait_until(Duration::from_secs(20), "the replay is handled", || async {
        replays_done(&redis, "trading.internal_processing").await
    })
    .await;
    daemon.stop().await;
    let spans = spans_of(&got, "poisoned", first.len() + 1).await;
    let replayed: Vec<&RSpan> = spans
        .iter()
        .filter(|s| s.attr("astra.replayed") == "true")
        .collect();
    assert_eq!(replayed.len(), 1, "{spans:#?}");
    let r = replayed[0];
    assert_eq!(
        r.attr("messaging.consumer.group.name"),
        "trading.internal_processing"
    );
    assert_eq!(r.attr("messaging.message.id"), env.id);
    assert_eq!(r.parent, "", "a replay starts a new trace");
    assert_ne!(r.trace, CLIENT_TRACE);
    assert_eq!(
        r.links,
        vec![(CLIENT_TRACE.to_string(), CLIENT_SPAN.to_string())],
        "linked to the trace it was first handled in"
    );
}
