//! The commit script against a real redis-server: rounds are applied once and replayed from
//! the recorded progress, the final round publishes and acknowledges exactly once, every
//! precondition of every write (key types of ops and derived events, increments that stay
//! integers) is checked before anything is written, an entry that is no longer pending for
//! the group is left alone, a round that fails half way resumes instead of re-applying, and
//! hash-chain appends link records with SHA-256.

mod support;

use astra_bus::bus::Redis;
use astra_bus::bus::client::{Value, arg, as_int, as_string, parse_read_reply};
use astra_bus::bus::commit::{RoundItem, RoundOutcome, Target, commit_round};
use astra_bus::envelope::{ContentType, Envelope};
use astra_bus::handlers::{Op, Reply};
use sha2::{Digest, Sha256};
use std::time::Duration;
use support::RedisServer;

const STREAM: &str = "astra.test.in.v1";
const OUT: &str = "astra.test.out.v1";
const GROUP: &str = "test.g";

async fn setup(server: &RedisServer, n: usize) -> (Redis, Vec<(String, Envelope)>) {
    let redis = Redis::connect(&server.url(), Duration::from_secs(5))
        .await
        .unwrap();
    redis
        .cmd(
            "XGROUP",
            vec![
                arg("CREATE"),
                arg(STREAM),
                arg(GROUP),
                arg("0"),
                arg("MKSTREAM"),
            ],
        )
        .await
        .unwrap();
    let mut out = vec![];
    for i in 0..n {
        let env = Envelope::root(
            "test.in",
            1,
            "t",
            None,
            ContentType::Json,
            format!("{{\"i\":{i}}}").into_bytes(),
        );
        let id = astra_bus::bus::publish::publish(&redis, STREAM, &env)
            .await
            .unwrap();
        out.push((id, env));
    }
    // Make them pending for the consumer.
    let v = redis
        .cmd(
            "XREADGROUP",
            vec![
                arg("GROUP"),
                arg(GROUP),
                arg("c1"),
                arg("COUNT"),
                arg(100_000),
                arg("STREAMS"),
                arg(STREAM),
                arg(">"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(parse_read_reply(v)[0].1.len(), n);
    (redis, out)
}

async fn pending(redis: &Redis) -> i64 {
    let v = redis
        .cmd("XPENDING", vec![arg(STREAM), arg(GROUP)])
        .await
        .unwrap();
    match v {
        Value::Array(a) => as_int(&a[0]).unwrap(),
        other => panic!("{other:?}"),
    }
}

async fn get(redis: &Redis, cmd: &'static str, args: Vec<Value>) -> Value {
    redis.cmd(cmd, args).await.unwrap()
}

fn target() -> Target<'static> {
    Target {
        group: GROUP,
        stream: STREAM,
        consumer: "c1",
        dedup_ttl: Duration::from_secs(60),
    }
}

async fn commit(redis: &Redis, items: &[RoundItem<'_>]) -> Vec<RoundOutcome> {
    commit_round(redis, target(), items).await.unwrap()
}

fn item<'a>(
    entry: &'a str,
    env: &'a Envelope,
    round: usize,
    is_final: bool,
    ops: &'a [Op],
) -> RoundItem<'a> {
    RoundItem {
        event_id: &env.id,
        entry_id: entry,
        round,
        is_final,
        ops,
        emits: vec![],
    }
}

fn with_emit<'a>(mut it: RoundItem<'a>, env: &Envelope) -> RoundItem<'a> {
    it.emits = vec![(
        OUT.to_string(),
        env.derive(GROUP, 0, "test.out", 1, b"x".to_vec()),
    )];
    it
}

async fn text(redis: &Redis, key: &str, field: &str) -> Option<String> {
    as_string(&get(redis, "HGET", vec![arg(key), arg(field)]).await)
}

async fn xlen(redis: &Redis, key: &str) -> i64 {
    as_int(&get(redis, "XLEN", vec![arg(key)]).await).unwrap_or(0)
}

/// A second entry carrying the same event (a producer that retried its XADD), pending.
async fn duplicate_of(redis: &Redis, env: &Envelope) -> String {
    let id = astra_bus::bus::publish::publish(redis, STREAM, env)
        .await
        .unwrap();
    redis
        .cmd(
            "XREADGROUP",
            vec![
                arg("GROUP"),
                arg(GROUP),
                arg("c1"),
                arg("COUNT"),
                arg(1000),
                arg("STREAMS"),
                arg(STREAM),
                arg(">"),
            ],
        )
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn rounds_apply_once_and_replay_from_the_recorded_progress() {
    let server = RedisServer::start();
    let (redis, evs) = setup(&server, 1).await;
    let (entry, env) = &evs[0];
    let ops = [
        Op::hincrby("astra:test:h", "u1", 5),
        Op::hget("astra:test:h", "u1"),
    ];
    let first = commit(&redis, &[item(entry, env, 0, false, &ops)]).await;
    let replies = vec![Reply::Int(5), Reply::Bytes(b"5".to_vec())];
    assert_eq!(first, vec![RoundOutcome::Applied(replies.clone())]);
    // A redelivery replays round 0 from the progress without applying it again.
    let again = commit(&redis, &[item(entry, env, 0, false, &ops)]).await;
    assert_eq!(again, vec![RoundOutcome::Replayed(replies)]);
    assert_eq!(text(&redis, "astra:test:h", "u1").await.unwrap(), "5");
    assert_eq!(pending(&redis).await, 1, "not final yet: still pending");
    let progress = astra_bus::bus::commit::progress_key(GROUP);
    assert_eq!(
        as_int(&get(&redis, "HLEN", vec![arg(progress.as_str())]).await),
        Some(1)
    );

    // Final round: applies, acks, marks done, forgets the progress.
    let fin = [Op::hincrby("astra:test:h", "u1", 1)];
    let r = commit(&redis, &[item(entry, env, 1, true, &fin)]).await;
    assert_eq!(r, vec![RoundOutcome::Applied(vec![])]);
    assert_eq!(pending(&redis).await, 0);
    assert_eq!(
        as_int(&get(&redis, "HLEN", vec![arg(progress.as_str())]).await),
        Some(0)
    );
    // A zombie committing any round of that entry now finds it acknowledged: nothing.
    let z0 = commit(&redis, &[item(entry, env, 0, false, &ops)]).await;
    assert_eq!(z0, vec![RoundOutcome::NotOurs]);
    let z1 = commit(&redis, &[item(entry, env, 1, true, &fin)]).await;
    assert_eq!(z1, vec![RoundOutcome::NotOurs]);
    // A second entry of the same event (a retried XADD) is only acknowledged.
    let dup = duplicate_of(&redis, env).await;
    let d = commit(&redis, &[item(&dup, env, 0, false, &ops)]).await;
    assert_eq!(d, vec![RoundOutcome::AlreadyDone]);
    assert_eq!(pending(&redis).await, 0);
    assert_eq!(text(&redis, "astra:test:h", "u1").await.unwrap(), "6");
    // The done marker's generation expires.
    let key = &astra_bus::bus::commit::done_marker_keys(GROUP, Duration::from_secs(60))[0];
    let ttl = as_int(&get(&redis, "TTL", vec![arg(key.as_str())]).await).unwrap();
    assert!(
        ttl > 60 && ttl <= 122,
        "lives until the next generation ends: ttl {ttl}"
    );
}

#[tokio::test]
async fn final_round_publishes_and_acks_exactly_once_for_a_batch() {
    let server = RedisServer::start();
    let (redis, evs) = setup(&server, 3).await;
    let mk = |i: usize| {
        let (entry, env) = &evs[i];
        with_emit(item(entry, env, 0, true, &[]), env)
    };
    let items: Vec<RoundItem> = (0..3).map(mk).collect();
    let r = commit(&redis, &items).await;
    assert_eq!(r, vec![RoundOutcome::Applied(vec![]); 3]);
    assert_eq!(xlen(&redis, OUT).await, 3);
    assert_eq!(pending(&redis).await, 0);
    // The same batch again (a zombie that was paused past claim_idle): nothing new.
    let items: Vec<RoundItem> = (0..3).map(mk).collect();
    assert_eq!(commit(&redis, &items).await, vec![RoundOutcome::NotOurs; 3]);
    assert_eq!(xlen(&redis, OUT).await, 3);
    // The derived entries carry cid and caus.
    let v = get(&redis, "XRANGE", vec![arg(OUT), arg("-"), arg("+")]).await;
    let entries = astra_bus::bus::client::parse_entries(v);
    for (e, (_, src)) in entries.iter().zip(&evs) {
        let d = Envelope::from_fields(e.fields.as_ref().unwrap()).unwrap();
        assert_eq!(d.cid, src.cid);
        assert_eq!(d.caus.as_deref(), Some(src.id.as_str()));
    }
}

#[tokio::test]
async fn wrong_key_type_fails_that_event_before_anything_is_written() {
    let server = RedisServer::start();
    let (redis, evs) = setup(&server, 2).await;
    redis
        .cmd("SET", vec![arg("astra:test:str"), arg("x")])
        .await
        .unwrap();
    let bad = [
        Op::hincrby("astra:test:other", "f", 1),
        Op::hincrby("astra:test:str", "f", 1),
    ];
    let good = [Op::hincrby("astra:test:ok", "f", 1)];
    let r = commit(
        &redis,
        &[
            item(&evs[0].0, &evs[0].1, 0, true, &bad),
            item(&evs[1].0, &evs[1].1, 0, true, &good),
        ],
    )
    .await;
    match &r[0] {
        RoundOutcome::Failed(reason) => assert!(
            reason.contains("astra:test:str") && reason.contains("hash"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r[1],
        RoundOutcome::Applied(vec![]),
        "the other event commits"
    );
    assert_eq!(
        as_int(&get(&redis, "EXISTS", vec![arg("astra:test:other")]).await),
        Some(0),
        "nothing of the failed event was written"
    );
    assert_eq!(
        text(&redis, "astra:test:ok", "f").await.as_deref(),
        Some("1")
    );
    assert_eq!(
        pending(&redis).await,
        1,
        "a failed event is not acknowledged by the commit"
    );
}

/// Issue 12 (5): the derived event's stream had no type check, so a WRONGTYPE on its XADD
/// aborted the script after earlier events' ops were written and before their markers
/// were: every redelivery applied them again.
#[tokio::test]
async fn a_derived_event_to_a_key_of_the_wrong_type_fails_before_any_write() {
    let server = RedisServer::start();
    let (redis, evs) = setup(&server, 2).await;
    redis.cmd("SET", vec![arg(OUT), arg("x")]).await.unwrap();
    let ops = [Op::hincrby("astra:test:h", "n", 1)];
    let items = || -> Vec<RoundItem> {
        vec![
            item(&evs[0].0, &evs[0].1, 0, true, &ops),
            with_emit(item(&evs[1].0, &evs[1].1, 0, true, &ops), &evs[1].1),
        ]
    };
    let r = commit(&redis, &items()).await;
    assert_eq!(r[0], RoundOutcome::Applied(vec![]));
    match &r[1] {
        RoundOutcome::Failed(reason) => {
            assert!(
                reason.contains(OUT) && reason.contains("stream"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        text(&redis, "astra:test:h", "n").await.as_deref(),
        Some("1")
    );
    // Redelivered (the failed one stays pending): the first is not applied again.
    let r = commit(&redis, &items()).await;
    assert_eq!(r[0], RoundOutcome::NotOurs);
    assert!(matches!(r[1], RoundOutcome::Failed(_)), "{r:?}");
    assert_eq!(
        text(&redis, "astra:test:h", "n").await.as_deref(),
        Some("1")
    );
}

/// Issue 12 (9): a total near i64::MAX made every later event fail after part of its ops
/// were applied. The increment's precondition is checked before the first write.
#[tokio::test]
async fn an_increment_that_would_overflow_fails_before_any_write() {
    let server = RedisServer::start();
    let (redis, evs) = setup(&server, 3).await;
    let near = (i64::MAX - 100).to_string();
    redis
        .cmd(
            "HSET",
            vec![arg("astra:test:total"), arg("v"), arg(near.as_str())],
        )
        .await
        .unwrap();
    let small = [
        Op::hincrby("astra:test:count", "n", 1),
        Op::hincrby("astra:test:total", "v", 10),
    ];
    let huge = [
        Op::hincrby("astra:test:count", "n", 1),
        Op::hincrby("astra:test:total", "v", 1_000_000),
    ];
    let r = commit(
        &redis,
        &[
            item(&evs[0].0, &evs[0].1, 0, true, &small),
            item(&evs[1].0, &evs[1].1, 0, true, &huge),
            item(&evs[2].0, &evs[2].1, 0, true, &small),
        ],
    )
    .await;
    assert_eq!(r[0], RoundOutcome::Applied(vec![]));
    match &r[1] {
        RoundOutcome::Failed(reason) => assert!(reason.contains("overflow"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(r[2], RoundOutcome::Applied(vec![]));
    assert_eq!(
        text(&redis, "astra:test:count", "n").await.as_deref(),
        Some("2"),
        "nothing of the refused event was applied"
    );
    assert_eq!(
        text(&redis, "astra:test:total", "v").await.unwrap(),
        (i64::MAX - 80).to_string()
    );
}

/// Issue 12 (4): a final round that failed part-way was recorded like a complete round,
/// and its redelivery acknowledged it without publishing its derived events.
#[tokio::test]
async fn a_round_that_fails_half_way_resumes_and_then_publishes() {
    let server = RedisServer::start();
    let (redis, evs) = setup(&server, 1).await;
    let (entry, env) = &evs[0];
    // A string that is not a HyperLogLog: TYPE says string, PFADD still refuses it, so
    // only running the op finds out.
    redis
        .cmd("SET", vec![arg("astra:test:hll"), arg("not a hyperloglog")])
        .await
        .unwrap();
    let ops = [
        Op::hincrby("astra:test:h", "n", 5),
        Op::pfadd("astra:test:hll", "u1"),
    ];
    let round = || with_emit(item(entry, env, 0, true, &ops), env);
    let r = commit(&redis, &[round()]).await;
    match &r[0] {
        RoundOutcome::Failed(reason) => assert!(reason.contains("PFADD"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        text(&redis, "astra:test:h", "n").await.as_deref(),
        Some("5")
    );
    assert_eq!(xlen(&redis, OUT).await, 0);
    assert_eq!(
        pending(&redis).await,
        1,
        "not acknowledged without its derived event"
    );
    // Still broken: fails again, applies nothing twice.
    let r = commit(&redis, &[round()]).await;
    assert!(matches!(r[0], RoundOutcome::Failed(_)), "{r:?}");
    assert_eq!(
        text(&redis, "astra:test:h", "n").await.as_deref(),
        Some("5")
    );
    // The operator fixes the key; the redelivery resumes after what was applied.
    redis.cmd("DEL", vec![arg("astra:test:hll")]).await.unwrap();
    let r = commit(&redis, &[round()]).await;
    assert_eq!(r, vec![RoundOutcome::Applied(vec![])]);
    assert_eq!(
        text(&redis, "astra:test:h", "n").await.as_deref(),
        Some("5")
    );
    assert_eq!(
        as_int(&get(&redis, "PFCOUNT", vec![arg("astra:test:hll")]).await),
        Some(1)
    );
    assert_eq!(xlen(&redis, OUT).await, 1, "the derived event, once");
    assert_eq!(pending(&redis).await, 0);
}

/// Issue 12 (8): an entry another consumer finished or dead-lettered meanwhile is left
/// alone, whatever the markers say (they may have expired for a long-paused consumer).
#[tokio::test]
async fn an_entry_that_is_no_longer_pending_is_not_applied() {
    let server = RedisServer::start();
    let (redis, evs) = setup(&server, 2).await;
    // The reclaimer dead-lettered the first, another consumer finished the second.
    for (entry, _) in &evs {
        redis
            .cmd("XACK", vec![arg(STREAM), arg(GROUP), arg(entry.as_str())])
            .await
            .unwrap();
    }
    let ops = [Op::hincrby("astra:test:h", "n", 1)];
    let r = commit(
        &redis,
        &[
            with_emit(item(&evs[0].0, &evs[0].1, 0, true, &ops), &evs[0].1),
            item(&evs[1].0, &evs[1].1, 0, false, &ops),
        ],
    )
    .await;
    assert_eq!(r, vec![RoundOutcome::NotOurs; 2]);
    assert_eq!(text(&redis, "astra:test:h", "n").await, None);
    assert_eq!(xlen(&redis, OUT).await, 0);
}

#[tokio::test]
async fn one_key_used_as_two_types_in_a_batch_commits_what_fits() {
    let server = RedisServer::start();
    let (redis, evs) = setup(&server, 3).await;
    let as_hash = [Op::hincrby("astra:test:k", "f", 1)];
    let as_zset = [Op::zincrby("astra:test:k", 1, "m")];
    let both = [
        Op::hincrby("astra:test:j", "f", 1),
        Op::zincrby("astra:test:j", 1, "m"),
    ];
    let r = commit(
        &redis,
        &[
            item(&evs[0].0, &evs[0].1, 0, true, &as_hash),
            item(&evs[1].0, &evs[1].1, 0, true, &as_zset),
            item(&evs[2].0, &evs[2].1, 0, true, &both),
        ],
    )
    .await;
    assert_eq!(r[0], RoundOutcome::Applied(vec![]));
    match (&r[1], &r[2]) {
        (RoundOutcome::Failed(a), RoundOutcome::Failed(b)) => {
            assert!(a.contains("holds a hash"), "{a}");
            assert!(b.contains("both as a hash and as a zset"), "{b}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pending(&redis).await, 2);
}

#[tokio::test]
async fn large_batches_go_through_in_one_call() {
    let server = RedisServer::start();
    let (redis, evs) = setup(&server, 1500).await;
    let ops: Vec<[Op; 1]> = (0..evs.len())
        .map(|i| [Op::hincrby("astra:test:h", format!("u{}", i % 10), 1)])
        .collect();
    let items: Vec<RoundItem> = evs
        .iter()
        .zip(&ops)
        .map(|((e, env), ops)| with_emit(item(e, env, 0, true, ops), env))
        .collect();
    let r = commit(&redis, &items).await;
    assert!(r.iter().all(|o| *o == RoundOutcome::Applied(vec![])));
    assert_eq!(pending(&redis).await, 0);
    assert_eq!(xlen(&redis, OUT).await, 1500);
    assert_eq!(
        text(&redis, "astra:test:h", "u3").await.as_deref(),
        Some("150")
    );
}

#[tokio::test]
async fn chain_append_links_records_with_sha256() {
    let server = RedisServer::start();
    let lens = [0usize, 1, 55, 56, 63, 64, 65, 119, 120, 1000];
    let (redis, evs) = setup(&server, lens.len()).await;
    let mut prev = String::new();
    for (i, n) in lens.iter().enumerate() {
        let record: Vec<u8> = (0..*n).map(|b| (b * 7 + i) as u8).collect();
        let ops = [Op::chain_append(
            "astra:test:head",
            "astra:test:log",
            &record,
        )];
        let (entry, env) = &evs[i];
        // A non-final round, so the replies come back.
        let r = commit(&redis, &[item(entry, env, 0, false, &ops)]).await;
        let mut h = Sha256::new();
        h.update(prev.as_bytes());
        h.update(&record);
        let expected: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let RoundOutcome::Applied(replies) = &r[0] else {
            panic!("{r:?}")
        };
        let items = replies[0].items();
        assert_eq!(items[0].as_int(), Some(i as i64 + 1), "seq");
        assert_eq!(items[1].as_str(), Some(prev.as_str()), "prev");
        assert_eq!(
            items[2].as_str(),
            Some(expected.as_str()),
            "sha256 of {n} bytes"
        );
        prev = expected;
    }
    assert_eq!(
        as_string(&get(&redis, "GET", vec![arg("astra:test:head")]).await).unwrap(),
        prev
    );
    assert_eq!(
        as_int(&get(&redis, "LLEN", vec![arg("astra:test:log")]).await),
        Some(lens.len() as i64)
    );
}

#[tokio::test]
async fn the_same_event_twice_in_one_batch_applies_once() {
    let server = RedisServer::start();
    let (redis, evs) = setup(&server, 1).await;
    let (entry_a, env) = &evs[0];
    let entry_b = duplicate_of(&redis, env).await;
    let ops = [Op::hincrby("astra:test:h", "u1", 1)];
    let r = commit(
        &redis,
        &[
            with_emit(item(entry_a, env, 0, true, &ops), env),
            with_emit(item(&entry_b, env, 0, true, &ops), env),
        ],
    )
    .await;
    assert_eq!(
        r,
        vec![RoundOutcome::Applied(vec![]), RoundOutcome::AlreadyDone]
    );
    assert_eq!(
        text(&redis, "astra:test:h", "u1").await.as_deref(),
        Some("1")
    );
    assert_eq!(xlen(&redis, OUT).await, 1);
    assert_eq!(pending(&redis).await, 0, "both entries acknowledged");
}

#[tokio::test]
async fn a_non_integer_value_fails_the_increment_before_any_write() {
    let server = RedisServer::start();
    let (redis, evs) = setup(&server, 1).await;
    redis
        .cmd(
            "HSET",
            vec![arg("astra:test:h"), arg("text"), arg("not a number")],
        )
        .await
        .unwrap();
    let (entry, env) = &evs[0];
    let ops = [
        Op::hincrby("astra:test:h", "n", 5),
        Op::hincrby("astra:test:h", "text", 1),
    ];
    let r = commit(&redis, &[item(entry, env, 0, false, &ops)]).await;
    match &r[0] {
        RoundOutcome::Failed(reason) => assert!(
            reason.contains("HINCRBY astra:test:h") && reason.contains("not an integer"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        text(&redis, "astra:test:h", "n").await,
        None,
        "nothing written"
    );
}

/// The overflow precondition is exact (Lua's doubles are not: it adds on decimal text):
/// random values and increments near both ends of the i64 range are refused exactly when
/// Rust's `checked_add` would overflow, and applied otherwise.
#[tokio::test]
async fn the_increment_precondition_agrees_with_checked_add() {
    let server = RedisServer::start();
    let cases = 200;
    let (redis, evs) = setup(&server, cases).await;
    let mut rng = support::Rng::from_env();
    let near = |rng: &mut support::Rng| -> i64 {
        let off = rng.range(0, 5000) as i64;
        match rng.range(0, 4) {
            0 => i64::MAX - off,
            1 => i64::MIN + off,
            2 => off - 2500,
            _ => (rng.next() as i64) / 2,
        }
    };
    for (i, (entry, env)) in evs.iter().enumerate() {
        let cur = near(&mut rng);
        let by = match rng.range(0, 3) {
            0 => near(&mut rng),
            1 => rng.range(0, 10_000) as i64 - 5000,
            _ => (rng.next() as i64) >> rng.range(0, 63),
        };
        let key = format!("astra:test:p{i}");
        redis
            .cmd("HSET", vec![arg(key.as_str()), arg("v"), arg(cur)])
            .await
            .unwrap();
        let ops = [Op::hincrby(key.as_str(), "v", by)];
        let r = commit(&redis, &[item(entry, env, 0, true, &ops)]).await;
        match cur.checked_add(by) {
            Some(sum) => {
                assert_eq!(r, vec![RoundOutcome::Applied(vec![])], "{cur} + {by}");
                assert_eq!(text(&redis, &key, "v").await, Some(sum.to_string()));
            }
            None => {
                assert!(
                    matches!(&r[0], RoundOutcome::Failed(m) if m.contains("overflow")),
                    "{cur} + {by}: {r:?}"
                );
                assert_eq!(text(&redis, &key, "v").await, Some(cur.to_string()));
            }
        }
    }
}

/// An increment that is an event's first write is not checked in advance (Redis refuses it
/// whole when it would overflow): the event fails with nothing written and nothing to
/// resume, and the rest of the batch commits.
#[tokio::test]
async fn a_lone_overflowing_increment_fails_whole() {
    let server = RedisServer::start();
    let (redis, evs) = setup(&server, 2).await;
    let near = (i64::MAX - 5).to_string();
    redis
        .cmd(
            "HSET",
            vec![arg("astra:test:total"), arg("v"), arg(near.as_str())],
        )
        .await
        .unwrap();
    let huge = [Op::hincrby("astra:test:total", "v", 10)];
    let fine = [Op::hincrby("astra:test:other", "v", 10)];
    let r = commit(
        &redis,
        &[
            item(&evs[0].0, &evs[0].1, 0, true, &huge),
            item(&evs[1].0, &evs[1].1, 0, true, &fine),
        ],
    )
    .await;
    assert!(
        matches!(&r[0], RoundOutcome::Failed(m) if m.contains("overflow")),
        "{r:?}"
    );
    assert_eq!(r[1], RoundOutcome::Applied(vec![]));
    assert_eq!(text(&redis, "astra:test:total", "v").await, Some(near));
    let progress = astra_bus::bus::commit::progress_key(GROUP);
    assert_eq!(
        as_int(&get(&redis, "HLEN", vec![arg(progress.as_str())]).await),
        Some(0),
        "nothing applied, so nothing to resume"
    );
}
