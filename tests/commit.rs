//! The commit script against a real redis-server: rounds are applied once and replayed from
//! the marker, the final round publishes and acknowledges exactly once, key types are
//! checked before anything is written, and hash-chain appends link records with SHA-256.

mod support;

use astra_bus::bus::Redis;
use astra_bus::bus::client::{Value, arg, as_int, as_string, parse_read_reply};
use astra_bus::bus::commit::{RoundItem, RoundOutcome, commit_round};
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
                arg(1000),
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

#[tokio::test]
async fn rounds_apply_once_and_replay_from_the_marker() {
    let server = RedisServer::start();
    let (redis, evs) = setup(&server, 1).await;
    let (entry, env) = &evs[0];
    let ops = vec![
        Op::hincrby("astra:test:h", "u1", 5),
        Op::hget("astra:test:h", "u1"),
    ];
    let item = |round, is_final, ops: &'static [Op]| RoundItem {
        event_id: &env.id,
        event_ts: env.ts,
        entry_id: entry,
        round,
        is_final,
        ops,
        emits: vec![],
    };
    let ops: &'static [Op] = Box::leak(ops.into_boxed_slice());
    let first = commit_round(&redis, GROUP, STREAM, 60, &[item(0, false, ops)])
        .await
        .unwrap();
    assert_eq!(
        first,
        vec![RoundOutcome::Applied(vec![
            Reply::Int(5),
            Reply::Bytes(b"5".to_vec())
        ])]
    );
    // A redelivery replays round 0 from the marker without applying it again.
    let again = commit_round(&redis, GROUP, STREAM, 60, &[item(0, false, ops)])
        .await
        .unwrap();
    assert_eq!(
        again,
        vec![RoundOutcome::Replayed(vec![
            Reply::Int(5),
            Reply::Bytes(b"5".to_vec())
        ])]
    );
    assert_eq!(
        as_string(&get(&redis, "HGET", vec![arg("astra:test:h"), arg("u1")]).await).unwrap(),
        "5"
    );
    assert_eq!(pending(&redis).await, 1, "not final yet: still pending");

    // Final round: applies, acks, marks done.
    let fin: &'static [Op] =
        Box::leak(vec![Op::hincrby("astra:test:h", "u1", 1)].into_boxed_slice());
    let r = commit_round(&redis, GROUP, STREAM, 60, &[item(1, true, fin)])
        .await
        .unwrap();
    assert_eq!(r, vec![RoundOutcome::Applied(vec![Reply::Int(6)])]);
    assert_eq!(pending(&redis).await, 0);
    // A zombie replaying any round now only acknowledges.
    let z0 = commit_round(&redis, GROUP, STREAM, 60, &[item(0, false, ops)])
        .await
        .unwrap();
    assert_eq!(z0, vec![RoundOutcome::AlreadyDone]);
    let z1 = commit_round(&redis, GROUP, STREAM, 60, &[item(1, true, fin)])
        .await
        .unwrap();
    assert_eq!(z1, vec![RoundOutcome::AlreadyDone]);
    assert_eq!(
        as_string(&get(&redis, "HGET", vec![arg("astra:test:h"), arg("u1")]).await).unwrap(),
        "6"
    );
    // The marker bucket expires.
    let key = astra_bus::bus::commit::dedup_key(GROUP, env.ts);
    let ttl = as_int(&get(&redis, "TTL", vec![arg(key.as_str())]).await).unwrap();
    assert!(ttl > 0 && ttl <= 60, "ttl {ttl}");
}

#[tokio::test]
async fn final_round_publishes_and_acks_exactly_once_for_a_batch() {
    let server = RedisServer::start();
    let (redis, evs) = setup(&server, 3).await;
    let mk = |i: usize| {
        let (entry, env) = &evs[i];
        RoundItem {
            event_id: &env.id,
            event_ts: env.ts,
            entry_id: entry,
            round: 0,
            is_final: true,
            ops: &[],
            emits: vec![(
                OUT.to_string(),
                env.derive(GROUP, 0, "test.out", 1, b"x".to_vec()),
            )],
        }
    };
    let items: Vec<RoundItem> = (0..3).map(mk).collect();
    let r = commit_round(&redis, GROUP, STREAM, 60, &items)
        .await
        .unwrap();
    assert!(
        r.iter().all(|o| matches!(o, RoundOutcome::Applied(_))),
        "{r:?}"
    );
    assert_eq!(as_int(&get(&redis, "XLEN", vec![arg(OUT)]).await), Some(3));
    assert_eq!(pending(&redis).await, 0);
    // The same batch again (a zombie that was paused past claim_idle): nothing new.
    let items: Vec<RoundItem> = (0..3).map(mk).collect();
    let r = commit_round(&redis, GROUP, STREAM, 60, &items)
        .await
        .unwrap();
    assert_eq!(r, vec![RoundOutcome::AlreadyDone; 3]);
    assert_eq!(as_int(&get(&redis, "XLEN", vec![arg(OUT)]).await), Some(3));
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
async fn wrong_key_type_fails_before_anything_is_written() {
    let server = RedisServer::start();
    let (redis, evs) = setup(&server, 1).await;
    redis
        .cmd("SET", vec![arg("astra:test:str"), arg("x")])
        .await
        .unwrap();
    let (entry, env) = &evs[0];
    let ops = [
        Op::hincrby("astra:test:other", "f", 1),
        Op::hincrby("astra:test:str", "f", 1),
    ];
    let r = commit_round(
        &redis,
        GROUP,
        STREAM,
        60,
        &[RoundItem {
            event_id: &env.id,
            event_ts: env.ts,
            entry_id: entry,
            round: 0,
            is_final: true,
            ops: &ops,
            emits: vec![],
        }],
    )
    .await
    .unwrap();
    match &r[0] {
        RoundOutcome::Failed(reason) => assert!(
            reason.contains("astra:test:str") && reason.contains("hash"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        as_int(&get(&redis, "EXISTS", vec![arg("astra:test:other")]).await),
        Some(0)
    );
    assert_eq!(
        pending(&redis).await,
        1,
        "a failed event is not acknowledged by the commit"
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
        let r = commit_round(
            &redis,
            GROUP,
            STREAM,
            60,
            &[RoundItem {
                event_id: &env.id,
                event_ts: env.ts,
                entry_id: entry,
                round: 0,
                is_final: true,
                ops: &ops,
                emits: vec![],
            }],
        )
        .await
        .unwrap();
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
    let (redis, evs) = setup(&server, 2).await;
    // Two entries carrying the same event id (a publisher retried its XADD).
    let (entry_a, env) = &evs[0];
    let (entry_b, _) = &evs[1];
    let ops = [Op::hincrby("astra:test:h", "u1", 1)];
    let item = |entry: &'static str| RoundItem {
        event_id: &env.id,
        event_ts: env.ts,
        entry_id: entry,
        round: 0,
        is_final: true,
        ops: &ops,
        emits: vec![(
            OUT.to_string(),
            env.derive(GROUP, 0, "test.out", 1, b"x".to_vec()),
        )],
    };
    let a: &'static str = Box::leak(entry_a.clone().into_boxed_str());
    let b: &'static str = Box::leak(entry_b.clone().into_boxed_str());
    let r = commit_round(&redis, GROUP, STREAM, 60, &[item(a), item(b)])
        .await
        .unwrap();
    assert_eq!(
        r,
        vec![
            RoundOutcome::Applied(vec![Reply::Int(1)]),
            RoundOutcome::AlreadyDone
        ]
    );
    assert_eq!(
        as_string(&get(&redis, "HGET", vec![arg("astra:test:h"), arg("u1")]).await).unwrap(),
        "1"
    );
    assert_eq!(as_int(&get(&redis, "XLEN", vec![arg(OUT)]).await), Some(1));
    assert_eq!(pending(&redis).await, 0, "both entries acknowledged");
}

#[tokio::test]
async fn an_op_failing_mid_round_is_recorded_so_nothing_is_applied_twice() {
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
    let item = RoundItem {
        event_id: &env.id,
        event_ts: env.ts,
        entry_id: entry,
        round: 0,
        is_final: false,
        ops: &ops,
        emits: vec![],
    };
    let r = commit_round(&redis, GROUP, STREAM, 60, std::slice::from_ref(&item))
        .await
        .unwrap();
    match &r[0] {
        RoundOutcome::Failed(reason) => assert!(
            reason.contains("HINCRBY astra:test:h") && reason.contains("not an integer"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    // The first op was written; a redelivery replays the recorded round instead.
    let again = commit_round(&redis, GROUP, STREAM, 60, &[item])
        .await
        .unwrap();
    assert!(matches!(again[0], RoundOutcome::Replayed(_)), "{again:?}");
    assert_eq!(
        as_string(&get(&redis, "HGET", vec![arg("astra:test:h"), arg("n")]).await).unwrap(),
        "5"
    );
}
