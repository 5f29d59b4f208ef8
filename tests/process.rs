//! The daemon binary under faults: SIGKILL at random points, a zombie consumer frozen past
//! claim_idle, SIGTERM during load. After each, every input is applied exactly once (state
//! and derived-output counts exact) and no entry is left pending.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use astra_bus::envelope::{ContentType, Envelope};
use support::bus::*;
use support::{DaemonProcess, RedisServer, Rng, TempDir, write_config};

const A: &str = "astra.test.a.v1";
const B: &str = "astra.test.b.v1";

fn config(url: &str, batch: usize) -> TempDir {
    let mut streams = streams_toml(
        &[A, B],
        &format!("batch_size = {batch}\nconcurrency = {}", batch * 4),
    );
    streams = streams.replace("redis://127.0.0.1:1", url);
    write_config(
        &streams,
        &[(
            "test",
            &format!(
                "[[group]]\nname = \"test.count\"\nhandler = \"builtin.count_by_user\"\nreads = [\"{A}\"]\n\n\
                 [[group]]\nname = \"test.fwd\"\nhandler = \"builtin.forward\"\nreads = [\"{A}\"]\npublishes = [\"{B}\"]\n"
            ),
        )],
    )
}

async fn preload(url: &str, n: usize, users: usize) {
    let redis = connect(url).await;
    let mut batch = vec![];
    for i in 0..n {
        let env = Envelope::root(
            "test.a",
            1,
            "test",
            None,
            ContentType::Json,
            format!("{{\"user_id\":\"u{}\",\"n\":{i}}}", i % users).into_bytes(),
        );
        batch.push((A.to_string(), env));
        if batch.len() == 500 {
            astra_bus::bus::publish::publish_many(&redis, &batch)
                .await
                .unwrap();
            batch.clear();
        }
    }
    astra_bus::bus::publish::publish_many(&redis, &batch)
        .await
        .unwrap();
    redis.quit().await;
}

/// Every input applied exactly once: counts exact, one derived event per input with
/// distinct ids, nothing pending.
async fn assert_exactly_once(url: &str, n: usize, users: usize) {
    let redis = connect(url).await;
    let counts = hgetall_int(&redis, "astra:count:test.count").await;
    assert_eq!(counts.len(), users);
    for (u, c) in &counts {
        assert_eq!(*c, (n / users) as i64, "user {u}: {counts:?}");
    }
    let out = read_all(&redis, B).await;
    assert_eq!(out.len(), n, "exactly one derived event per input");
    let causes: HashSet<&str> = out
        .iter()
        .map(|(_, e)| e.caus.as_deref().unwrap())
        .collect();
    assert_eq!(causes.len(), n, "each derived event from a distinct input");
    let ids: HashSet<&str> = out.iter().map(|(_, e)| e.id.as_str()).collect();
    assert_eq!(ids.len(), n);
    assert_eq!(pending(&redis, A, "test.count").await, 0);
    assert_eq!(pending(&redis, A, "test.fwd").await, 0);
    assert_eq!(xlen(&redis, "astra.bus.dead_letter.v1").await, 0);
    redis.quit().await;
}

async fn done(url: &str, n: usize) -> bool {
    let redis = connect(url).await;
    let ok = xlen(&redis, B).await >= n as i64
        && hgetall_int(&redis, "astra:count:test.count")
            .await
            .values()
            .sum::<i64>()
            >= n as i64
        && pending(&redis, A, "test.count").await == 0
        && pending(&redis, A, "test.fwd").await == 0;
    redis.quit().await;
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_never_loses_or_doubles_work() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = config(&url, 50);
    let logs = TempDir::new("logs");
    // Enough input that the daemon cannot drain it within the kill windows below (it
    // once did with 10k on an idle machine, and the test then killed it too rarely).
    let (n, users) = (30_000, 10);
    preload(&url, n, users).await;
    let mut rng = Rng::from_env();
    let mut kills = 0;
    let start = Instant::now();
    while !done(&url, n).await {
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "crash loop did not finish"
        );
        let mut d = DaemonProcess::start(&dir.path, &url, "crashy", &logs.path);
        if kills < 8 {
            tokio::time::sleep(Duration::from_millis(rng.range(20, 300))).await;
            d.kill9();
            kills += 1;
        } else {
            wait_until(Duration::from_secs(120), "drain after the kills", || {
                done(&url, n)
            })
            .await;
            let (st, _) = d.terminate(Duration::from_secs(15));
            assert!(st.success(), "{}", d.log_text());
        }
    }
    eprintln!("killed {kills} times");
    assert!(
        kills >= 3,
        "the test must actually kill the daemon mid-flight"
    );
    assert_exactly_once(&url, n, users).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_consumer_frozen_past_claim_idle_applies_nothing_twice() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = config(&url, 20);
    let logs = TempDir::new("logs");
    let (n, users) = (4_000, 8);
    let mut zombie = DaemonProcess::start(&dir.path, &url, "zombie", &logs.path);
    let mut healthy = DaemonProcess::start(&dir.path, &url, "healthy", &logs.path);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loader = tokio::spawn({
        let url = url.clone();
        async move { preload(&url, n, users).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Freeze one daemon mid-flight, well past claim_idle (300ms): the other reclaims its
    // entries; then let it resume and commit what it had in hand.
    zombie.pause();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    zombie.resume();
    loader.await.unwrap();
    wait_until(Duration::from_secs(120), "all processed", || done(&url, n)).await;
    let (st, _) = zombie.terminate(Duration::from_secs(15));
    assert!(st.success());
    let (st, _) = healthy.terminate(Duration::from_secs(15));
    assert!(st.success());
    assert!(
        healthy
            .log_text()
            .contains("reclaimed idle pending entries"),
        "the healthy daemon reclaimed the zombie's entries:\n{}",
        healthy.log_text()
    );
    assert_exactly_once(&url, n, users).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_exits_zero_in_time_and_loses_nothing() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = config(&url, 50);
    let logs = TempDir::new("logs");
    let (n, users) = (6_000, 6);
    let mut d = DaemonProcess::start(&dir.path, &url, "termed", &logs.path);
    let loader = tokio::spawn({
        let url = url.clone();
        async move { preload(&url, n, users).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // streams_toml sets shutdown_deadline = 5s.
    let (st, took) = d.terminate(Duration::from_secs(8));
    assert!(
        st.success(),
        "exit 0 on SIGTERM, got {st:?}\n{}",
        d.log_text()
    );
    assert!(
        took < Duration::from_secs(6),
        "exited within the deadline: {took:?}"
    );
    assert!(d.log_text().contains("astra-bus stopped"));
    loader.await.unwrap();
    let mut d = DaemonProcess::start(&dir.path, &url, "termed", &logs.path);
    wait_until(
        Duration::from_secs(120),
        "all processed after restart",
        || done(&url, n),
    )
    .await;
    let (st, _) = d.terminate(Duration::from_secs(8));
    assert!(
        st.success(),
        "exit 0 on SIGTERM after the restart, got {st:?}\n{}",
        d.log_text()
    );
    assert_exactly_once(&url, n, users).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_run_loses_and_doubles_nothing() {
    let mut server = RedisServer::start_with(support::RedisOptions {
        appendonly: true,
        extra: vec![("appendfsync".into(), "always".into())],
        ..Default::default()
    });
    let url = server.url();
    let dir = config(&url, 50);
    let logs = TempDir::new("logs");
    // Kill Redis as soon as work has visibly started (a fixed sleep was sometimes long
    // enough for the daemon to finish 6k inputs first).
    let (n, users) = (30_000, 6);
    preload(&url, n, users).await;
    let mut d = DaemonProcess::start(&dir.path, &url, "survivor", &logs.path);
    let redis = connect(&url).await;
    wait_until(Duration::from_secs(30), "work started", || async {
        xlen(&redis, B).await > 0
    })
    .await;
    redis.quit().await;
    assert!(!done(&url, n).await, "the restart must land mid-run");
    // kill -9 Redis (AOF, fsync always: every acknowledged write survives), down ~1 s.
    server.kill();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    server.restart();
    wait_until(
        Duration::from_secs(120),
        "all processed after the Redis restart",
        || done(&url, n),
    )
    .await;
    let (st, _) = d.terminate(Duration::from_secs(15));
    assert!(st.success(), "{}", d.log_text());
    assert_exactly_once(&url, n, users).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_valid_config_and_keeps_the_old_one_when_invalid() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = config(&url, 50);
    let logs = TempDir::new("logs");
    let d = DaemonProcess::start(&dir.path, &url, "reloader", &logs.path);
    let redis = connect(&url).await;
    wait_until(Duration::from_secs(20), "initial groups", || async {
        astra_bus::bus::declare::groups_on(&redis, A)
            .await
            .unwrap()
            .len()
            == 2
    })
    .await;
    // Add a group that forwards A to a new stream C.
    let c = "astra.test.c.v1";
    let streams_path = dir.join("streams.toml");
    let mut text = std::fs::read_to_string(&streams_path).unwrap();
    text.push_str(&format!(
        "\n[[stream]]\nname = \"{c}\"\ndescription = \"added\"\n"
    ));
    std::fs::write(&streams_path, text).unwrap();
    let groups_path = dir.join("consumer-groups/test.toml");
    let mut groups = std::fs::read_to_string(&groups_path).unwrap();
    groups.push_str(&format!("\n[[group]]\nname = \"test.fwd_c\"\nhandler = \"builtin.forward\"\nreads = [\"{A}\"]\npublishes = [\"{c}\"]\n"));
    std::fs::write(&groups_path, &groups).unwrap();
    let hup = |pid: u32| {
        assert!(
            std::process::Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .unwrap()
                .success()
        );
    };
    hup(d.child.id());
    preload(&url, 100, 2).await;
    wait_until(
        Duration::from_secs(30),
        "the new group processes",
        || async { xlen(&redis, c).await == 100 },
    )
    .await;
    // An invalid config is refused; the daemon keeps running the old one.
    std::fs::write(
        &groups_path,
        groups.replace("builtin.forward", "builtin.nope"),
    )
    .unwrap();
    hup(d.child.id());
    wait_until(Duration::from_secs(10), "the refusal logged", || async {
        d.log_text()
            .contains("SIGHUP: invalid configuration, keeping the old one")
    })
    .await;
    assert!(d.log_text().contains("unknown handler \"builtin.nope\""));
    preload(&url, 100, 2).await;
    wait_until(Duration::from_secs(30), "still processing", || async {
        xlen(&redis, c).await == 200
    })
    .await;
    let mut d = d;
    let (st, _) = d.terminate(Duration::from_secs(15));
    assert!(st.success());
}
