//! The delivery engine against a real redis-server: correlation through a chain, poison and
//! malformed entries to dead letters, two daemons sharing work, recovery after Redis loses
//! its data, and retention that never trims what a group still needs.

mod support;

use std::sync::Arc;
use std::time::Duration;

use astra_bus::bus::client::arg;
use astra_bus::config::GroupConfig;
use astra_bus::handlers::{Event, Handler, HandlerError, Op, Registry, Reply, Step};
use serde::Deserialize;
use support::bus::*;
use support::{RedisServer, write_config};

const A: &str = "astra.test.a.v1";
const B: &str = "astra.test.b.v1";
const C: &str = "astra.test.c.v1";
const DLQ: &str = "astra.bus.dead_letter.v1";

#[tokio::test]
async fn a_three_step_chain_keeps_cid_and_sets_caus() {
    let server = RedisServer::start();
    let dir = write_config(
        &streams_toml(&[A, B, C], ""),
        &[(
            "test",
            &format!(
                "[[group]]\nname = \"test.ab\"\nhandler = \"builtin.forward\"\nreads = [\"{A}\"]\npublishes = [\"{B}\"]\n\n\
                 [[group]]\nname = \"test.bc\"\nhandler = \"builtin.forward\"\nreads = [\"{B}\"]\npublishes = [\"{C}\"]\n"
            ),
        )],
    );
    let reg = Registry::builtin();
    let daemon = InProc::start(load(&dir.path, &server.url(), "d1", &reg), reg).await;
    let redis = connect(&server.url()).await;
    let mut roots = vec![];
    for i in 0..20 {
        let cid = format!("cid-{i}");
        let (id, _) = publish_json(&redis, A, &format!("{{\"i\":{i}}}"), Some(&cid)).await;
        roots.push((id, cid));
    }
    wait_until(Duration::from_secs(20), "20 events on C", || async {
        xlen(&redis, C).await == 20
    })
    .await;
    let bs = read_all(&redis, B).await;
    let cs = read_all(&redis, C).await;
    for (root_id, cid) in &roots {
        let b = bs
            .iter()
            .find(|(_, e)| e.caus.as_deref() == Some(root_id))
            .expect("B derived from A");
        assert_eq!(&b.1.cid, cid);
        assert_eq!(b.1.event_type, "test.b");
        let c = cs
            .iter()
            .find(|(_, e)| e.caus.as_deref() == Some(b.1.id.as_str()))
            .expect("C derived from B");
        assert_eq!(&c.1.cid, cid);
        assert_eq!(
            c.1.data_as_json().unwrap()["i"],
            b.1.data_as_json().unwrap()["i"]
        );
    }
    daemon.stop().await;
    assert_eq!(pending(&redis, A, "test.ab").await, 0);
    assert_eq!(pending(&redis, B, "test.bc").await, 0);
    assert_eq!(
        xlen(&redis, B).await,
        20,
        "exactly one derived event per input"
    );
}

/// Counts `n` per user, fails transiently on mode "retry" and permanently on "poison".
struct Flaky;

#[derive(Deserialize)]
struct FlakyPayload {
    user_id: String,
    mode: String,
}

impl Handler for Flaky {
    fn step(&self, ev: &Event, _: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        let p: FlakyPayload = ev.payload()?;
        match p.mode.as_str() {
            "retry" => Err(HandlerError::Retry("downstream not ready".into())),
            "poison" => Err(HandlerError::Poison("mode poison is never valid".into())),
            "panic" => panic!("handler bug on purpose"),
            _ => Ok(Step::Done {
                ops: vec![Op::hincrby("astra:test:counts", p.user_id, 1)],
                emit: vec![],
            }),
        }
    }
}

fn flaky(_: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
    Ok(Arc::new(Flaky))
}

fn flaky_setup(server: &RedisServer) -> (support::TempDir, Registry) {
    let dir = write_config(
        &streams_toml(&[A], ""),
        &[(
            "test",
            &format!(
                "[[group]]\nname = \"test.flaky\"\nhandler = \"test.flaky\"\nreads = [\"{A}\"]\n"
            ),
        )],
    );
    let mut reg = Registry::builtin();
    reg.insert("test.flaky", flaky);
    let _ = server;
    (dir, reg)
}

fn field<'a>(entry: &'a [(String, String)], name: &str) -> &'a str {
    entry
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

#[tokio::test]
async fn poison_and_retries_end_in_dead_letters_and_the_rest_is_processed() {
    let server = RedisServer::start();
    let (dir, reg) = flaky_setup(&server);
    let daemon = InProc::start(load(&dir.path, &server.url(), "d1", &reg), reg).await;
    let redis = connect(&server.url()).await;
    for i in 0..30 {
        let mode = match i {
            10 => "retry",
            20 => "poison",
            25 => "panic",
            _ => "ok",
        };
        publish_json(
            &redis,
            A,
            &format!("{{\"user_id\":\"u{}\",\"mode\":\"{mode}\"}}", i % 3),
            None,
        )
        .await;
    }
    wait_until(Duration::from_secs(30), "3 dead letters", || async {
        xlen(&redis, DLQ).await == 3
    })
    .await;
    daemon.stop().await;
    let counts = hgetall_int(&redis, "astra:test:counts").await;
    assert_eq!(
        counts.values().sum::<i64>(),
        27,
        "every ok entry applied once: {counts:?}"
    );
    let dead = read_raw(&redis, DLQ).await;
    let by_reason = |r: &str| {
        dead.iter()
            .find(|e| field(e, "dlq_reason") == r)
            .unwrap_or_else(|| panic!("{r} in {dead:?}"))
    };
    let retried = by_reason("max_deliveries");
    assert_eq!(field(retried, "dlq_group"), "test.flaky");
    assert_eq!(field(retried, "dlq_stream"), A);
    assert_eq!(
        field(retried, "dlq_attempts"),
        "4",
        "max_deliveries 3, dead-lettered on the 4th"
    );
    assert!(
        field(retried, "data").contains("retry"),
        "original fields kept"
    );
    let poison = by_reason("poison");
    assert_eq!(field(poison, "dlq_attempts"), "1", "poison goes at once");
    assert!(field(poison, "dlq_error").contains("never valid"));
    assert!(
        dead.iter()
            .any(|e| field(e, "dlq_error").contains("handler panicked: handler bug on purpose"))
    );
    assert_eq!(pending(&redis, A, "test.flaky").await, 0);
}

#[tokio::test]
async fn malformed_entries_go_straight_to_dead_letters_and_nothing_stalls() {
    let server = RedisServer::start();
    let (dir, reg) = flaky_setup(&server);
    let daemon = InProc::start(load(&dir.path, &server.url(), "d1", &reg), reg).await;
    let redis = connect(&server.url()).await;
    publish_json(&redis, A, r#"{"user_id":"u1","mode":"ok"}"#, None).await;
    // Missing fields, a wrong type, undecodable msgpack, a payload missing a field.
    let raw: Vec<Vec<(&str, &[u8])>> = vec![
        vec![("hello", b"world")],
        vec![
            ("id", b"x1"),
            ("type", b"test.other"),
            ("v", b"1"),
            ("ts", b"1"),
            ("data", b"{}"),
        ],
        vec![
            ("id", b"x2"),
            ("type", b"test.a"),
            ("v", b"1"),
            ("ts", b"1"),
            ("ct", b"application/msgpack"),
            ("data", b"\xc1\xff"),
        ],
        vec![
            ("id", b"x3"),
            ("type", b"test.a"),
            ("v", b"1"),
            ("ts", b"1"),
            ("ct", b"application/json"),
            ("data", br#"{"mode":"ok"}"#),
        ],
    ];
    for fields in &raw {
        let mut args = vec![arg(A), arg("*")];
        for (k, v) in fields {
            args.push(arg(*k));
            args.push(astra_bus::bus::client::Value::Bytes(v.to_vec().into()));
        }
        redis.cmd("XADD", args).await.unwrap();
    }
    publish_json(&redis, A, r#"{"user_id":"u2","mode":"ok"}"#, None).await;
    wait_until(Duration::from_secs(20), "4 dead letters", || async {
        xlen(&redis, DLQ).await == 4
    })
    .await;
    wait_until(Duration::from_secs(20), "both good events", || async {
        hgetall_int(&redis, "astra:test:counts").await.len() == 2
    })
    .await;
    daemon.stop().await;
    let dead = read_raw(&redis, DLQ).await;
    // Dead letters are matched by the original entry's `id` field (none for the first).
    let by_id = |id: &str| {
        dead.iter()
            .find(|e| field(e, "id") == id)
            .unwrap_or_else(|| panic!("{id} in {dead:?}"))
    };
    assert!(field(by_id(""), "dlq_error").contains("missing field `id`"));
    assert_eq!(field(by_id(""), "dlq_reason"), "malformed");
    assert_eq!(field(by_id(""), "hello"), "world", "original fields kept");
    let wrong_type = field(by_id("x1"), "dlq_error");
    assert!(
        wrong_type.contains("field `type`") && wrong_type.contains("test.other"),
        "{wrong_type}"
    );
    let bad_msgpack = field(by_id("x2"), "dlq_error");
    assert!(
        bad_msgpack.contains("field `data`") && bad_msgpack.contains("msgpack"),
        "{bad_msgpack}"
    );
    assert!(field(by_id("x3"), "dlq_error").contains("user_id"));
    assert_eq!(field(by_id("x3"), "dlq_reason"), "poison");
    assert_eq!(pending(&redis, A, "test.flaky").await, 0);
}

#[tokio::test]
async fn two_daemons_share_the_work_and_totals_are_exact() {
    let server = RedisServer::start();
    let dir = write_config(
        &streams_toml(&[A, B], "batch_size = 20"),
        &[(
            "test",
            &format!(
                "[[group]]\nname = \"test.count\"\nhandler = \"builtin.count_by_user\"\nreads = [\"{A}\"]\n\n\
                 [[group]]\nname = \"test.fwd\"\nhandler = \"builtin.forward\"\nreads = [\"{A}\"]\npublishes = [\"{B}\"]\n"
            ),
        )],
    );
    let reg = Registry::builtin();
    let d1 = InProc::start(load(&dir.path, &server.url(), "d1", &reg), reg.clone()).await;
    let d2 = InProc::start(load(&dir.path, &server.url(), "d2", &reg), reg).await;
    let redis = connect(&server.url()).await;
    let n = 2000;
    for i in 0..n {
        publish_json(&redis, A, &format!("{{\"user_id\":\"u{}\"}}", i % 10), None).await;
    }
    wait_until(Duration::from_secs(60), "all forwarded", || async {
        xlen(&redis, B).await >= n
    })
    .await;
    wait_until(Duration::from_secs(60), "all counted", || async {
        hgetall_int(&redis, "astra:count:test.count")
            .await
            .values()
            .sum::<i64>()
            >= n
    })
    .await;
    let m1 = d1.metrics.encode();
    let m2 = d2.metrics.encode();
    d1.stop().await;
    d2.stop().await;
    let counts = hgetall_int(&redis, "astra:count:test.count").await;
    assert_eq!(counts.len(), 10);
    assert!(counts.values().all(|c| *c == n / 10), "{counts:?}");
    assert_eq!(xlen(&redis, B).await, n, "no duplicate derived events");
    let consumed = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("astra_bus_acked_total{") && l.contains("test.count"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>()
    };
    let (c1, c2) = (consumed(&m1), consumed(&m2));
    assert_eq!(
        c1 + c2,
        n as f64,
        "every event acknowledged once across both"
    );
    assert!(c1 > 0.0 && c2 > 0.0, "work is shared: {c1} / {c2}");
}

#[tokio::test]
async fn redis_restarted_without_persistence_recovers_via_nogroup() {
    let mut server = RedisServer::start();
    let dir = write_config(
        &streams_toml(&[A], ""),
        &[(
            "test",
            &format!(
                "[[group]]\nname = \"test.count\"\nhandler = \"builtin.count_by_user\"\nreads = [\"{A}\"]\n"
            ),
        )],
    );
    let reg = Registry::builtin();
    let daemon = InProc::start(load(&dir.path, &server.url(), "d1", &reg), reg).await;
    {
        let redis = connect(&server.url()).await;
        publish_json(&redis, A, r#"{"user_id":"before"}"#, None).await;
        wait_until(Duration::from_secs(10), "first event", || async {
            !hgetall_int(&redis, "astra:count:test.count")
                .await
                .is_empty()
        })
        .await;
        redis.quit().await;
    }
    // Everything is gone: streams, groups, state.
    server.restart();
    let redis = connect(&server.url()).await;
    // Publishing recreates the stream without the group; the daemon must re-create it at 0.
    for _ in 0..5 {
        publish_json(&redis, A, r#"{"user_id":"after"}"#, None).await;
    }
    wait_until(
        Duration::from_secs(30),
        "events after the restart",
        || async {
            hgetall_int(&redis, "astra:count:test.count")
                .await
                .get("after")
                == Some(&5)
        },
    )
    .await;
    let text = daemon.metrics.encode();
    daemon.stop().await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("astra_bus_nogroup_recoveries_total{") && !l.ends_with(" 0")),
        "NOGROUP recovery counted:\n{text}"
    );
}

#[tokio::test]
async fn retention_never_trims_what_a_group_still_needs() {
    let server = RedisServer::start();
    let redis = connect(&server.url()).await;
    let stream = astra_bus::config::StreamConfig {
        name: A.into(),
        domain: "test".into(),
        event: "a".into(),
        version: 1,
        description: String::new(),
        external: false,
        max_len: Some(10),
        max_age: Some(Duration::from_secs(1)),
        schema: None,
    };
    redis
        .cmd(
            "XGROUP",
            vec![
                arg("CREATE"),
                arg(A),
                arg("lagging"),
                arg("0"),
                arg("MKSTREAM"),
            ],
        )
        .await
        .unwrap();
    let mut ids = vec![];
    for i in 0..1000 {
        ids.push(
            publish_json(&redis, A, &format!("{{\"i\":{i}}}"), None)
                .await
                .1,
        );
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The group has read nothing: nothing may go, although max_len and max_age both say so.
    astra_bus::bus::retention::trim_stream(&redis, &stream)
        .await
        .unwrap();
    assert_eq!(xlen(&redis, A).await, 1000);
    // Read 600 (pending, not acknowledged): still nothing may go.
    redis
        .cmd(
            "XREADGROUP",
            vec![
                arg("GROUP"),
                arg("lagging"),
                arg("c"),
                arg("COUNT"),
                arg(600),
                arg("STREAMS"),
                arg(A),
                arg(">"),
            ],
        )
        .await
        .unwrap();
    astra_bus::bus::retention::trim_stream(&redis, &stream)
        .await
        .unwrap();
    assert_eq!(xlen(&redis, A).await, 1000);
    // Acknowledge the first 500: trimming may now remove only entries before the 501st.
    let mut args = vec![arg(A), arg("lagging")];
    args.extend(ids[..500].iter().map(|i| arg(i.as_str())));
    redis.cmd("XACK", args).await.unwrap();
    astra_bus::bus::retention::trim_stream(&redis, &stream)
        .await
        .unwrap();
    let left = read_all(&redis, A).await;
    assert!(
        left.len() >= 500 && left.len() < 1000,
        "approximate trim happened within bounds: {}",
        left.len()
    );
    let first_needed = &ids[500];
    assert!(
        left.iter().any(|(id, _)| id == first_needed),
        "the first still-needed entry survives"
    );
    let kept: std::collections::HashSet<&str> = left.iter().map(|(id, _)| id.as_str()).collect();
    assert!(
        ids[500..].iter().all(|id| kept.contains(id.as_str())),
        "no needed entry trimmed"
    );
}

#[tokio::test]
async fn idle_streams_of_a_group_do_not_starve_its_busy_stream() {
    // A group reading many streams with little room in flight: readers blocked on idle
    // streams must not hold that room (a regression: they did, and the busy stream then
    // advanced one batch per `block` of every idle reader).
    let server = RedisServer::start();
    let idle: Vec<String> = (0..9).map(|i| format!("astra.test.idle{i}.v1")).collect();
    let mut all: Vec<&str> = idle.iter().map(String::as_str).collect();
    all.push(A);
    let reads = all
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let dir = write_config(
        &streams_toml(&all, "batch_size = 10\nconcurrency = 10")
            .replace("block = \"100ms\"", "block = \"1s\""),
        &[(
            "test",
            &format!(
                "[[group]]\nname = \"test.count\"\nhandler = \"builtin.count_by_user\"\nreads = [{reads}]\n"
            ),
        )],
    );
    let reg = Registry::builtin();
    let daemon = InProc::start(load(&dir.path, &server.url(), "d1", &reg), reg).await;
    let redis = connect(&server.url()).await;
    for i in 0..300 {
        publish_json(&redis, A, &format!("{{\"user_id\":\"u{}\"}}", i % 3), None).await;
    }
    // Starved, this takes 30 batches × 9 idle readers × 1 s ≈ 270 s.
    wait_until(
        Duration::from_secs(60),
        "the busy stream drained",
        || async {
            hgetall_int(&redis, "astra:count:test.count")
                .await
                .values()
                .sum::<i64>()
                == 300
        },
    )
    .await;
    daemon.stop().await;
}

#[tokio::test]
async fn pending_entries_trimmed_away_are_counted_as_lost_and_cleared() {
    let server = RedisServer::start();
    let dir = write_config(
        &streams_toml(&[A], ""),
        &[(
            "test",
            &format!(
                "[[group]]\nname = \"test.count\"\nhandler = \"builtin.count_by_user\"\nreads = [\"{A}\"]\n"
            ),
        )],
    );
    let redis = connect(&server.url()).await;
    redis
        .cmd(
            "XGROUP",
            vec![
                arg("CREATE"),
                arg(A),
                arg("test.count"),
                arg("0"),
                arg("MKSTREAM"),
            ],
        )
        .await
        .unwrap();
    let (_, gone) = publish_json(&redis, A, r#"{"user_id":"u1"}"#, None).await;
    publish_json(&redis, A, r#"{"user_id":"u2"}"#, None).await;
    // A consumer that died holding both entries; then the first entry's body is deleted.
    redis
        .cmd(
            "XREADGROUP",
            vec![
                arg("GROUP"),
                arg("test.count"),
                arg("dead"),
                arg("COUNT"),
                arg(10),
                arg("STREAMS"),
                arg(A),
                arg(">"),
            ],
        )
        .await
        .unwrap();
    redis
        .cmd("XDEL", vec![arg(A), arg(gone.as_str())])
        .await
        .unwrap();
    let reg = Registry::builtin();
    let daemon = InProc::start(load(&dir.path, &server.url(), "d1", &reg), reg).await;
    wait_until(
        Duration::from_secs(20),
        "the surviving entry reclaimed and processed",
        || async {
            hgetall_int(&redis, "astra:count:test.count")
                .await
                .get("u2")
                == Some(&1)
        },
    )
    .await;
    let text = daemon.metrics.encode();
    daemon.stop().await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("astra_bus_lost_total{") && l.ends_with(" 1")),
        "one entry counted as lost:\n{text}"
    );
    assert_eq!(
        pending(&redis, A, "test.count").await,
        0,
        "the lost entry no longer pending"
    );
    assert_eq!(
        hgetall_int(&redis, "astra:count:test.count")
            .await
            .get("u1"),
        None
    );
}

#[tokio::test]
async fn idle_consumers_are_removed_only_when_they_own_nothing() {
    use astra_bus::bus::consume::GroupContext;
    let server = RedisServer::start();
    let redis = connect(&server.url()).await;
    redis
        .cmd(
            "XGROUP",
            vec![
                arg("CREATE"),
                arg(A),
                arg("test.g"),
                arg("0"),
                arg("MKSTREAM"),
            ],
        )
        .await
        .unwrap();
    publish_json(&redis, A, r#"{"user_id":"u1"}"#, None).await;
    for c in ["ghost", "me"] {
        redis
            .cmd(
                "XGROUP",
                vec![arg("CREATECONSUMER"), arg(A), arg("test.g"), arg(c)],
            )
            .await
            .unwrap();
    }
    // "holder" owns a pending entry.
    redis
        .cmd(
            "XREADGROUP",
            vec![
                arg("GROUP"),
                arg("test.g"),
                arg("holder"),
                arg("COUNT"),
                arg(1),
                arg("STREAMS"),
                arg(A),
                arg(">"),
            ],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut group = support::bus::test_group("test.g");
    group.reads = vec![A.into()];
    let ctx = GroupContext::new(
        redis.clone(),
        group,
        Arc::new(Flaky),
        "me",
        Duration::from_secs(60),
        astra_bus::metrics::Metrics::new(),
    );
    let removed = astra_bus::bus::reclaim::remove_idle_consumers(&ctx, A, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(removed, vec!["ghost".to_string()]);
    let left = redis
        .cmd("XINFO", vec![arg("CONSUMERS"), arg(A), arg("test.g")])
        .await
        .unwrap();
    let names: Vec<String> = astra_bus::bus::client::as_array(left)
        .unwrap()
        .into_iter()
        .filter_map(|c| {
            astra_bus::bus::client::as_pairs(c)
                .into_iter()
                .find(|(k, _)| k == "name")
                .and_then(|(_, v)| astra_bus::bus::client::as_string(&v))
        })
        .collect();
    assert_eq!(
        names,
        vec!["holder".to_string(), "me".to_string()],
        "the consumer with pending entries and our own stay"
    );
}
