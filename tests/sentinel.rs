//! Sentinel mode against real processes: a primary, a replica and three Sentinels. The
//! primary is killed (kill -9) while a loader publishes with `min_replicas_ack = 1`; the
//! Sentinels promote the replica, the daemon follows the new primary, and every input is
//! applied exactly once. What a failover can lose is accounted for: a publish confirmed by
//! WAIT reached the replica and must survive; a publish that failed (connection lost, or
//! `NotReplicated` while no replica was attached) is retried with the same event id, so a
//! copy that did survive is de-duplicated by the consumers.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use astra_bus::bus::BusError;
use astra_bus::envelope::{ContentType, Envelope};
use support::bus::*;
use support::{DaemonProcess, SentinelSet, TempDir, write_config};

const A: &str = "astra.test.a.v1";
const B: &str = "astra.test.b.v1";

#[derive(Default, Debug)]
struct LoadReport {
    /// Event ids, each confirmed by WAIT 1 in the end.
    ids: Vec<String>,
    batches: u64,
    /// Attempts refused because fewer than 1 replica acknowledged.
    not_replicated: u64,
    /// Attempts that failed otherwise (primary gone, connection reset, timeout).
    failed: u64,
}

async fn loader(url: String, stop: Arc<AtomicBool>, confirmed: Arc<AtomicUsize>) -> LoadReport {
    let redis = connect(&url)
        .await
        .with_replica_ack(1, Duration::from_millis(500));
    let mut r = LoadReport::default();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let batch: Vec<(String, Envelope)> = (0..10)
            .map(|_| {
                n += 1;
                let env = Envelope::root(
                    "test.a",
                    1,
                    "failover",
                    None,
                    ContentType::Json,
                    format!("{{\"user_id\":\"in-{n}\"}}").into_bytes(),
                );
                (A.to_string(), env)
            })
            .collect();
        let start = Instant::now();
        loop {
            match astra_bus::bus::publish::publish_many(&redis, &batch).await {
                Ok(_) => break,
                Err(BusError::NotReplicated { .. }) => r.not_replicated += 1,
                Err(_) => r.failed += 1,
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "publishing never recovered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        r.batches += 1;
        r.ids.extend(batch.into_iter().map(|(_, e)| e.id));
        confirmed.store(r.ids.len(), Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_follows_a_failover_and_no_acknowledged_publish_is_lost() {
    let mut set = SentinelSet::start();
    let url = set.url();
    let old_primary = set.primary.port;
    let streams = streams_toml(&[A, B], "batch_size = 50\nconcurrency = 200")
        .replace("redis://127.0.0.1:1", &url);
    let dir = write_config(
        &streams,
        &[(
            "test",
            &format!(
                "[[group]]\nname = \"test.count\"\nhandler = \"builtin.count_by_user\"\nreads = [\"{A}\"]\n\n\
                 [[group]]\nname = \"test.fwd\"\nhandler = \"builtin.forward\"\nreads = [\"{A}\"]\npublishes = [\"{B}\"]\n"
            ),
        )],
    );
    let logs = TempDir::new("logs");
    let mut daemon = DaemonProcess::start(&dir.path, &url, "follower", &logs.path);
    let stop = Arc::new(AtomicBool::new(false));
    let confirmed = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(loader(url.clone(), stop.clone(), confirmed.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // kill -9 the primary under load; the Sentinels promote the replica.
    let killed_at = Instant::now();
    set.primary.kill();
    wait_until(
        Duration::from_secs(30),
        "the Sentinels fail over",
        || async { set.current_primary_port() == Some(set.replica.port) },
    )
    .await;
    let failover = killed_at.elapsed();
    let confirmed_before = confirmed.load(Ordering::SeqCst);
    // No replica is attached now: WAIT 1 cannot succeed, publishes fail with
    // NotReplicated. The old primary comes back (empty: no persistence) and the
    // Sentinels turn it into a replica of the new primary.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    set.primary.restart();
    wait_until(
        Duration::from_secs(30),
        "the old primary rejoins as a replica",
        || async {
            set.primary
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let report = load.await.unwrap();

    let redis = connect(&url).await;
    let n = report.ids.len();
    wait_until(
        Duration::from_secs(120),
        "the new primary drained",
        || async {
            pending(&redis, A, "test.count").await == 0
                && pending(&redis, A, "test.fwd").await == 0
                && hgetall_int(&redis, "astra:count:test.count").await.len() >= n
                && xlen(&redis, B).await >= n as i64
        },
    )
    .await;
    let (st, _) = daemon.terminate(Duration::from_secs(15));
    assert!(st.success(), "{}", daemon.log_text());

    // Every confirmed input applied exactly once, on the new primary.
    let counts = hgetall_int(&redis, "astra:count:test.count").await;
    let wrong: Vec<_> = counts.iter().filter(|(_, c)| **c != 1).collect();
    assert!(wrong.is_empty(), "applied more than once: {wrong:?}");
    assert_eq!(counts.len(), n, "every confirmed input applied");
    let out = read_all(&redis, B).await;
    let causes: HashSet<&str> = out.iter().filter_map(|(_, e)| e.caus.as_deref()).collect();
    let ids: HashSet<&str> = report.ids.iter().map(String::as_str).collect();
    assert_eq!(causes, ids, "one derived event per confirmed input");
    let per_cause: HashMap<&str, usize> = out.iter().fold(HashMap::new(), |mut m, (_, e)| {
        *m.entry(e.caus.as_deref().unwrap_or("")).or_default() += 1;
        m
    });
    assert!(
        per_cause.values().all(|c| *c == 1),
        "no duplicate derived entry"
    );
    // Stream A may hold more entries than inputs: a retried batch whose first copy
    // survived leaves a same-id duplicate, which the consumers skipped.
    let entries = xlen(&redis, A).await;
    assert!(entries >= n as i64);
    assert!(
        report.not_replicated + report.failed > 0,
        "the failover was felt by the publisher: {report:?}"
    );
    // The same daemon process (never restarted) applied inputs that exist only on the new
    // primary: it followed the failover.
    assert!(
        n > confirmed_before + 100,
        "inputs published after the failover: {} of {n}",
        n - confirmed_before
    );
    let _ = std::io::stderr().write_all(
        format!(
            "sentinel failover: promoted after {:.1}s (old primary {old_primary}, new {}); {} confirmed inputs in {} batches ({} after the promotion); \
             attempts refused: {} NotReplicated, {} connection/timeouts; stream entries {entries} \
             ({} same-id copies skipped); lost confirmed: 0; applied twice: 0\n",
            failover.as_secs_f64(),
            set.replica.port,
            n,
            report.batches,
            n - confirmed_before,
            report.not_replicated,
            report.failed,
            entries - n as i64
        )
        .as_bytes(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_fails_when_too_few_replicas_ack_and_wait_never_blocks_the_shared_connection() {
    // A primary without replicas: WAIT 1 can only time out.
    let server = support::RedisServer::start();
    let shared = connect(&server.url()).await;
    let redis = shared
        .clone()
        .with_replica_ack(1, Duration::from_millis(800));
    let env = Envelope::root(
        "test.a",
        1,
        "t",
        None,
        ContentType::Json,
        b"{\"user_id\":\"u\"}".to_vec(),
    );
    let started = Instant::now();
    let waiting = tokio::spawn({
        let redis = redis.clone();
        let env = env.clone();
        async move { astra_bus::bus::publish::publish(&redis, A, &env).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // While WAIT blocks its publisher connection, the shared one answers at once.
    let t = Instant::now();
    assert_eq!(xlen(&shared, A).await, 1, "the XADD itself happened");
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    match waiting.await.unwrap() {
        Err(BusError::NotReplicated {
            wanted: 1,
            acked: 0,
            timeout_ms: 800,
        }) => {}
        other => panic!("expected NotReplicated, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(800));
    // publish_many: one WAIT for the batch, same verdict; with 0 it is not asked for.
    let batch = vec![(A.to_string(), env.clone()), (A.to_string(), env.clone())];
    let err = astra_bus::bus::publish::publish_many(&redis, &batch)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("only 0 of 1 replicas"), "{err}");
    astra_bus::bus::publish::publish_many(&shared, &batch)
        .await
        .unwrap();
    assert_eq!(xlen(&shared, A).await, 5);
}
