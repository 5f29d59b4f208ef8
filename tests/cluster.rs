//! Redis Cluster mode against the harness's real 3-master cluster: commits split by hash
//! slot apply each slot's share once and replay it after a retry, derived events are
//! published once with deterministic ids and XACK comes last; dead letters, replay,
//! retention, reclaim and consumer pruning work with single-slot commands; and the daemon
//! binary, killed with SIGKILL at random points, ends with exact state (effectively once).

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use astra_bus::bus::Redis;
use astra_bus::bus::client::{arg, as_int, keyslot, parse_read_reply};
use astra_bus::bus::commit::{RoundItem, RoundOutcome, Target, commit_round};
use astra_bus::envelope::{ContentType, Envelope};
use astra_bus::handlers::{Op, Reply};
use support::bus::*;
use support::{DaemonProcess, RedisCluster, Rng, TempDir, write_config};

const A: &str = "astra.test.a.v1";
const B: &str = "astra.test.b.v1";
const DLQ: &str = "astra.bus.dead_letter.v1";
const GROUP: &str = "test.g";

async fn make_pending(redis: &Redis, n: usize) -> Vec<(String, Envelope)> {
    astra_bus::bus::declare::declare_group_at(redis, A, GROUP, "0")
        .await
        .unwrap();
    let mut out = vec![];
    for i in 0..n {
        let env = Envelope::root(
            "test.a",
            1,
            "t",
            None,
            ContentType::Json,
            format!("{{\"user_id\":\"u{i}\"}}").into_bytes(),
        );
        let id = astra_bus::bus::publish::publish(redis, A, &env)
            .await
            .unwrap();
        out.push((id, env));
    }
    let v = redis
        .cmd(
            "XREADGROUP",
            vec![
                arg("GROUP"),
                arg(GROUP),
                arg("c1"),
                arg("COUNT"),
                arg(1000),
                arg("STREAMS"),
                arg(A),
                arg(">"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(parse_read_reply(v)[0].1.len(), n);
    out
}

fn target(group: &str) -> Target<'_> {
    Target {
        group,
        stream: A,
        consumer: "c1",
        dedup_ttl: Duration::from_secs(60),
    }
}

async fn hget(redis: &Redis, key: &str, field: &str) -> Option<i64> {
    as_int(&redis.cmd("HGET", vec![arg(key), arg(field)]).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_split_by_slot_applies_once_replays_in_op_order_and_acks_last() {
    let cluster = RedisCluster::start();
    let redis = connect(&cluster.url()).await;
    assert!(redis.is_cluster());
    let evs = make_pending(&redis, 4).await;
    // Round 0 touches 12 keys (many slots, all three masters); round 1 other keys, so
    // some slots are touched in round 1 only.
    let keys0: Vec<String> = (0..12).map(|k| format!("astra:test:r0:{k}")).collect();
    let keys1: Vec<String> = (0..6).map(|k| format!("astra:test:r1:{k}")).collect();
    let slots: HashSet<u16> = keys0.iter().map(|k| keyslot(k.as_bytes())).collect();
    assert!(slots.len() >= 10, "keys spread over slots: {slots:?}");
    let ops0: Vec<Op> = keys0
        .iter()
        .map(|k| Op::hincrby(k.as_str(), "n", 1))
        .collect();
    let ops1: Vec<Op> = keys1
        .iter()
        .map(|k| Op::hincrby(k.as_str(), "n", 10))
        .collect();
    let round0 = |i: usize| RoundItem {
        event_id: &evs[i].1.id,
        entry_id: &evs[i].0,
        round: 0,
        is_final: false,
        ops: &ops0,
        emits: vec![],
    };
    let items: Vec<RoundItem> = (0..evs.len()).map(round0).collect();
    let first = commit_round(&redis, target(GROUP), &items).await.unwrap();
    // Replies come back in op order: event i sees n = i + 1 on every key.
    for (i, o) in first.iter().enumerate() {
        assert_eq!(
            o,
            &RoundOutcome::Applied(vec![Reply::Int(i as i64 + 1); 12]),
            "event {i}"
        );
    }
    // The same round again (a retry after a failure elsewhere, or a redelivery): every
    // slot replays its recorded replies, nothing is applied twice.
    let items: Vec<RoundItem> = (0..evs.len()).map(round0).collect();
    let again = commit_round(&redis, target(GROUP), &items).await.unwrap();
    for (i, o) in again.iter().enumerate() {
        assert_eq!(
            o,
            &RoundOutcome::Replayed(vec![Reply::Int(i as i64 + 1); 12])
        );
    }
    for k in &keys0 {
        assert_eq!(hget(&redis, k, "n").await, Some(4), "{k}");
    }
    assert_eq!(
        pending(&redis, A, GROUP).await,
        4,
        "not final: still pending"
    );

    // Final round: other slots, one derived event each; XACK last.
    let fin = |i: usize| RoundItem {
        event_id: &evs[i].1.id,
        entry_id: &evs[i].0,
        round: 1,
        is_final: true,
        ops: &ops1,
        emits: vec![(
            B.to_string(),
            evs[i].1.derive(GROUP, 0, "test.b", 1, b"x".to_vec()),
        )],
    };
    let items: Vec<RoundItem> = (0..evs.len()).map(fin).collect();
    let r = commit_round(&redis, target(GROUP), &items).await.unwrap();
    assert!(
        r.iter().all(|o| matches!(o, RoundOutcome::Applied(_))),
        "{r:?}"
    );
    assert_eq!(pending(&redis, A, GROUP).await, 0);
    assert_eq!(xlen(&redis, B).await, 4);
    // A zombie replaying either round afterwards finds the entries acknowledged: nothing
    // applied, nothing published.
    let items: Vec<RoundItem> = (0..evs.len()).map(round0).collect();
    let z0 = commit_round(&redis, target(GROUP), &items).await.unwrap();
    assert_eq!(z0, vec![RoundOutcome::NotOurs; 4]);
    let items: Vec<RoundItem> = (0..evs.len()).map(fin).collect();
    let z1 = commit_round(&redis, target(GROUP), &items).await.unwrap();
    assert_eq!(z1, vec![RoundOutcome::NotOurs; 4]);
    assert_eq!(xlen(&redis, B).await, 4);
    for k in &keys1 {
        assert_eq!(hget(&redis, k, "n").await, Some(40), "{k}");
    }
    // The derived events carry deterministic ids from (group, source id, index).
    let out = read_all(&redis, B).await;
    for ((_, d), (_, src)) in out.iter().zip(&evs) {
        assert_eq!(d.caus.as_deref(), Some(src.id.as_str()));
        assert_eq!(
            d.id,
            astra_bus::envelope::derived_id(GROUP, &src.id, src.ts, 0)
        );
    }
    // An op whose two keys are in different slots is refused, not half-applied.
    let more = make_pending(&redis, 1).await;
    let (entry, env) = &more[0];
    let bad = [Op::chain_append("astra:test:head", "astra:test:log", b"r")];
    let r = commit_round(
        &redis,
        target(GROUP),
        &[RoundItem {
            event_id: &env.id,
            entry_id: entry,
            round: 0,
            is_final: true,
            ops: &bad,
            emits: vec![],
        }],
    )
    .await
    .unwrap();
    assert!(
        matches!(&r[0], RoundOutcome::Failed(m) if m.contains("two hash slots")),
        "{r:?}"
    );
}

fn topology(url: &str, extra: &str) -> TempDir {
    let streams = streams_toml(
        &[A, B],
        &format!("batch_size = 50\nconcurrency = 200\n{extra}"),
    )
    .replace("redis://127.0.0.1:1", url);
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

async fn preload(redis: &Redis, n: usize, users: usize) -> Vec<String> {
    let mut ids = vec![];
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
        ids.push(env.id.clone());
        batch.push((A.to_string(), env));
        if batch.len() == 500 {
            astra_bus::bus::publish::publish_many(redis, &batch)
                .await
                .unwrap();
            batch.clear();
        }
    }
    astra_bus::bus::publish::publish_many(redis, &batch)
        .await
        .unwrap();
    ids
}

/// Dead letters of `group`, as (event id, user id of the payload).
async fn dead_of(redis: &Redis, group: &str) -> Vec<(String, String)> {
    astra_bus::bus::dlq::list(redis, DLQ, Some(group), usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|d| {
            let env = Envelope::from_fields(&d.original).unwrap();
            let user = env.data_as_json().unwrap()["user_id"]
                .as_str()
                .unwrap()
                .to_string();
            (env.id, user)
        })
        .collect()
}

/// Every input applied by both groups, or dead-lettered by the one that gave up on it
/// (an entry in flight at `max_deliveries` consecutive kills looks exactly like one that
/// kills the daemon, and goes to the dead letters: counted, never lost).
async fn done(redis: &Redis, n: usize) -> bool {
    pending(redis, A, "test.count").await == 0
        && pending(redis, A, "test.fwd").await == 0
        && hgetall_int(redis, "astra:count:test.count")
            .await
            .values()
            .sum::<i64>() as usize
            + dead_of(redis, "test.count").await.len()
            >= n
        && read_all(redis, B)
            .await
            .iter()
            .map(|(_, e)| e.caus.clone())
            .collect::<HashSet<_>>()
            .len()
            + dead_of(redis, "test.fwd").await.len()
            >= n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_on_a_cluster_is_effectively_once() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let dir = topology(&url, "");
    let logs = TempDir::new("logs");
    let redis = connect(&url).await;
    let (n, users) = (20_000, 20);
    let ids = preload(&redis, n, users).await;
    let mut rng = Rng::from_env();
    let mut kills = 0;
    let start = Instant::now();
    while !done(&redis, n).await {
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "crash loop did not finish"
        );
        let mut d = DaemonProcess::start(&dir.path, &url, "crashy", &logs.path);
        if kills < 6 {
            tokio::time::sleep(Duration::from_millis(rng.range(100, 500))).await;
            d.kill9();
            kills += 1;
        } else {
            wait_until(Duration::from_secs(120), "drain after the kills", || {
                done(&redis, n)
            })
            .await;
            let (st, _) = d.terminate(Duration::from_secs(15));
            assert!(st.success(), "{}", d.log_text());
        }
    }
    assert!(
        kills >= 3,
        "the test must actually kill the daemon mid-flight"
    );
    // State: exact (per-slot progress: never applied twice), counting what was
    // dead-lettered after max_deliveries attempts as not applied.
    let dead_count = dead_of(&redis, "test.count").await;
    let dead_fwd = dead_of(&redis, "test.fwd").await;
    for d in astra_bus::bus::dlq::list(&redis, DLQ, None, usize::MAX)
        .await
        .unwrap()
    {
        assert_eq!(d.get("reason"), Some("max_deliveries"), "{:?}", d.meta);
    }
    let counts = hgetall_int(&redis, "astra:count:test.count").await;
    assert_eq!(counts.len(), users);
    for (u, c) in &counts {
        let dead = dead_count.iter().filter(|(_, du)| du == u).count();
        assert_eq!(
            *c,
            (n / users - dead) as i64,
            "user {u} ({dead} dead-lettered): {counts:?}"
        );
    }
    // Derived events: exactly one distinct event id per input the forwarder did not
    // dead-letter; a crash between XADD and XACK may leave a second entry, but with the
    // same id (consumers skip it).
    let out = read_all(&redis, B).await;
    let by_cause: HashSet<&str> = out
        .iter()
        .map(|(_, e)| e.caus.as_deref().unwrap())
        .collect();
    let distinct: HashSet<&str> = out.iter().map(|(_, e)| e.id.as_str()).collect();
    let known: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let fwd_dead: HashSet<&str> = dead_fwd.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(by_cause.len(), n - fwd_dead.len());
    assert!(by_cause.is_subset(&known));
    assert!(
        by_cause.is_disjoint(&fwd_dead),
        "dead-lettered and published"
    );
    assert_eq!(distinct.len(), by_cause.len(), "one derived id per input");
    let extra_copies = out.len() - by_cause.len();
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("cluster SIGKILL loop: {kills} kills, {n} inputs, {} derived entries ({extra_copies} same-id copies), {} + {} dead-lettered after max_deliveries\n", out.len(), dead_count.len(), dead_fwd.len()).as_bytes(),
    );
    assert_eq!(pending(&redis, A, "test.count").await, 0);
    assert_eq!(pending(&redis, A, "test.fwd").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replay_retention_reclaim_and_pruning_work_on_a_cluster() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let dir = topology(&url, "");
    let registry = astra_bus::handlers::Registry::builtin();
    let cfg = load(&dir.path, &url, "one", &registry);
    let redis = connect(&url).await;
    // A malformed entry and a good one, then the daemon.
    redis
        .cmd(
            "XADD",
            vec![
                arg(A),
                arg("*"),
                arg("id"),
                arg("bad-1"),
                arg("type"),
                arg("nope"),
            ],
        )
        .await
        .unwrap();
    preload(&redis, 10, 2).await;
    let daemon = InProc::start(cfg.clone(), registry.clone()).await;
    wait_until(
        Duration::from_secs(30),
        "processed and dead-lettered",
        || async {
            pending(&redis, A, "test.count").await == 0
                && pending(&redis, A, "test.fwd").await == 0
                && xlen(&redis, DLQ).await == 2
                && xlen(&redis, B).await == 10
        },
    )
    .await;
    daemon.stop().await;
    // One dead letter per group, with the reason; counted per group.
    let dead = astra_bus::bus::dlq::list(&redis, DLQ, None, 100)
        .await
        .unwrap();
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|d| d.get("reason") == Some("malformed")));
    let counts = hgetall_int(&redis, astra_bus::bus::deadletter::DEAD_LETTER_COUNTS).await;
    assert_eq!(counts.get("test.count"), Some(&1));
    // Replay hands it back to its group alone (its replay stream; the shared stream gets
    // nothing) and forgets the dead letter.
    let before = xlen(&redis, A).await;
    let r = astra_bus::bus::dlq::replay(&redis, DLQ, &dead[0])
        .await
        .unwrap();
    assert_eq!(xlen(&redis, A).await, before);
    let replay = astra_bus::bus::consume::replay_stream(&r.group);
    assert_eq!(xlen(&redis, &replay).await, 1);
    assert_eq!(
        astra_bus::bus::dlq::list(&redis, DLQ, None, 100)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        astra_bus::bus::dlq::purge(&redis, DLQ, None).await.unwrap(),
        1
    );
    // Status reads every group from the three masters in one pipelined round.
    let st = astra_bus::bus::status::status(&redis, &cfg).await.unwrap();
    assert_eq!(st.len(), 2);
    assert!(st.iter().all(|g| g.exists && g.length == before), "{st:?}");
    // Reclaim: entries pending on a vanished consumer are taken over and processed.
    preload(&redis, 6, 2).await;
    redis
        .cmd(
            "XREADGROUP",
            vec![
                arg("GROUP"),
                arg("test.count"),
                arg("ghost"),
                arg("COUNT"),
                arg(100),
                arg("STREAMS"),
                arg(A),
                arg(">"),
            ],
        )
        .await
        .unwrap();
    let group = cfg.group("test.count").unwrap();
    let ctx = std::sync::Arc::new(astra_bus::bus::consume::GroupContext::new(
        redis.clone(),
        group.clone(),
        registry.build(group).unwrap(),
        "rescuer",
        Duration::from_secs(60),
        astra_bus::metrics::Metrics::new(),
    ));
    tokio::time::sleep(group.claim_idle + Duration::from_millis(100)).await;
    let (_t, shutdown) = astra_bus::shutdown::Shutdown::new();
    let rep = astra_bus::bus::reclaim::reclaim_once(&ctx, A, &shutdown)
        .await
        .unwrap();
    assert_eq!(rep.claimed, 6, "the 6 new entries: {rep:?}");
    assert_eq!(rep.processed.committed, 6);
    assert_eq!(rep.processed.dead_lettered, 0);
    assert_eq!(pending(&redis, A, "test.count").await, 0);
    assert_eq!(
        hgetall_int(&redis, "astra:count:test.count")
            .await
            .values()
            .sum::<i64>(),
        16
    );
    // Pruning: the ghost owns nothing now and is removed; the rescuer is kept.
    let removed = astra_bus::bus::reclaim::remove_idle_consumers(&ctx, A, Duration::from_millis(1))
        .await
        .unwrap();
    assert!(removed.contains(&"ghost".to_string()), "{removed:?}");
    // Retention: runs against the cluster and never trims what a group still needs:
    // test.fwd has not read the 6 newest entries.
    let mut s = cfg.stream(A).unwrap().clone();
    s.max_len = Some(0);
    astra_bus::bus::retention::trim_stream(&redis, &s)
        .await
        .unwrap();
    let floor = astra_bus::bus::retention::needed_floor(&redis, A)
        .await
        .unwrap()
        .expect("groups constrain the stream");
    let v = redis
        .cmd(
            "XRANGE",
            vec![arg(A), arg(format!("{}-{}", floor.0, floor.1)), arg("+")],
        )
        .await
        .unwrap();
    assert_eq!(
        astra_bus::bus::client::parse_entries(v).len(),
        6,
        "what test.fwd still needs is kept"
    );
}

/// A consumer dead-letters only entries still pending for itself: one another consumer
/// claimed meanwhile is that consumer's to commit (else it could be both applied and listed
/// as a dead letter; the fault suite found that once on a cluster).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_move_only_entries_still_ours_on_a_cluster() {
    let cluster = RedisCluster::start();
    let redis = connect(&cluster.url()).await;
    let pending = make_pending(&redis, 2).await;
    dead_letters_only_ours(&redis, A, GROUP, &pending).await;
}

/// The same on one node (one script: the check and the move are atomic there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_move_only_entries_still_ours_on_one_node() {
    let server = support::RedisServer::start();
    let redis = connect(&server.url()).await;
    let pending = make_pending(&redis, 2).await;
    dead_letters_only_ours(&redis, A, GROUP, &pending).await;
}

async fn dead_letters_only_ours(
    redis: &Redis,
    stream: &str,
    group: &str,
    pending: &[(String, Envelope)],
) {
    use astra_bus::bus::deadletter::{DeadLetter, Reason, dead_letter};
    // c2 claims the first entry from c1 (a reclaim after claim_idle).
    redis
        .cmd(
            "XCLAIM",
            vec![
                arg(stream),
                arg(group),
                arg("c2"),
                arg(0),
                arg(pending[0].0.as_str()),
                arg("JUSTID"),
            ],
        )
        .await
        .unwrap();
    let letters: Vec<DeadLetter> = pending
        .iter()
        .map(|(id, env)| DeadLetter {
            entry_id: id.clone(),
            stream: stream.to_string(),
            fields: env
                .to_fields()
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
            reason: Reason::Poison,
            error: "test".into(),
            attempts: 1,
        })
        .collect();
    let moved = dead_letter(redis, group, "c1", stream, DLQ, &letters)
        .await
        .unwrap();
    assert_eq!(moved, 1, "only the entry still pending for c1 is moved");
    assert_eq!(xlen(redis, DLQ).await, 1);
    let of = |c: &'static str| async move {
        array_len(
            redis
                .cmd(
                    "XPENDING",
                    vec![arg(stream), arg(group), arg("-"), arg("+"), arg(10), arg(c)],
                )
                .await
                .unwrap(),
        )
    };
    assert_eq!(of("c2").await, 1, "c2 keeps the entry it claimed");
    assert_eq!(
        of("c1").await,
        0,
        "c1's dead-lettered entry is acknowledged"
    );
}
