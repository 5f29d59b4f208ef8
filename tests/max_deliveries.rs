//! An entry that reaches `max_deliveries` after a delivery already committed part of it.
//!
//! The fault suites found it at random (kill -9 between a commit's first write and its
//! XACK, then more kills while the entry was redelivered): the entry crossed
//! `max_deliveries` and was dead-lettered as if nothing had applied, so its event ended both
//! applied and dead-lettered. Here the same state is built on purpose, on one node and on a
//! 3-master cluster: a consumer ("ghost", a crashed daemon) commits the first round of a
//! two-round event, or the whole of an event whose second copy it then holds, and the
//! entries' delivery counts are pushed past `max_deliveries` (each XCLAIM is a delivery, as
//! each crash during a redelivery was). A real daemon then reclaims them. Wanted: the
//! started event finishes (each round applied once), the completed one is only
//! acknowledged, nothing is dead-lettered, nothing stays pending.

mod support;

use std::sync::Arc;
use std::time::Duration;

use astra_bus::bus::Redis;
use astra_bus::bus::client::{arg, as_int, parse_read_reply};
use astra_bus::bus::commit::{RoundItem, RoundOutcome, Target, commit_round};
use astra_bus::config::GroupConfig;
use astra_bus::envelope::{ContentType, Envelope};
use astra_bus::handlers::{Event, Handler, HandlerError, Op, Registry, Reply, Step};
use serde::Deserialize;
use support::bus::*;
use support::{RedisCluster, RedisServer, write_config};

const A: &str = "astra.test.a.v1";
const DLQ: &str = "astra.bus.dead_letter.v1";
const GROUP: &str = "test.two";

/// Two rounds: HINCRBY the user's counter, then record the reply it got.
struct Two;

#[derive(Deserialize)]
struct User {
    user_id: String,
}

fn ops(user: &str, rounds: &[Vec<Reply>]) -> Step {
    match rounds.first() {
        None => Step::More(vec![Op::hincrby(format!("astra:two:{user}"), "n", 1)]),
        Some(r) => Step::Done {
            ops: vec![Op::hset(
                format!("astra:two_seen:{user}"),
                "n",
                r.first().and_then(Reply::as_int).unwrap_or(-1).to_string(),
            )],
            emit: vec![],
        },
    }
}

impl Handler for Two {
    fn step(&self, ev: &Event, rounds: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        let p: User = ev.payload()?;
        Ok(ops(&p.user_id, rounds))
    }
}

fn build(_: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
    Ok(Arc::new(Two))
}

fn registry() -> Registry {
    let mut r = Registry::builtin();
    r.insert("test.two", build);
    r
}

async fn hget(redis: &Redis, key: &str, field: &str) -> Option<i64> {
    as_int(&redis.cmd("HGET", vec![arg(key), arg(field)]).await.unwrap())
}

/// The ghost reads whatever is new (one delivery each).
async fn ghost_reads(redis: &Redis) -> Vec<String> {
    let v = redis
        .cmd(
            "XREADGROUP",
            vec![
                arg("GROUP"),
                arg(GROUP),
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
    parse_read_reply(v)
        .into_iter()
        .flat_map(|(_, es)| es.into_iter().map(|e| e.id))
        .collect()
}

/// One commit round as the ghost, the way the engine would commit it.
async fn ghost_commits(
    redis: &Redis,
    user: &str,
    env: &Envelope,
    entry: &str,
    rounds: &[Vec<Reply>],
) -> RoundOutcome {
    let (ops, is_final) = match ops(user, rounds) {
        Step::More(ops) => (ops, false),
        Step::Done { ops, .. } => (ops, true),
    };
    let target = Target {
        group: GROUP,
        stream: A,
        consumer: "ghost",
        dedup_ttl: Duration::from_secs(3600),
    };
    let item = RoundItem {
        event_id: &env.id,
        entry_id: entry,
        round: rounds.len(),
        is_final,
        ops: &ops,
        emits: vec![],
    };
    commit_round(redis, target, &[item])
        .await
        .unwrap()
        .remove(0)
}

fn envelope(user: &str) -> Envelope {
    Envelope::root(
        "test.a",
        1,
        "test",
        None,
        ContentType::Json,
        format!(r#"{{"user_id":"{user}"}}"#).into_bytes(),
    )
}

async fn case(url: &str) {
    let redis = connect(url).await;
    let dir = write_config(
        &streams_toml(&[A], ""),
        &[(
            "test",
            &format!(
                "[[group]]\nname = \"{GROUP}\"\nhandler = \"test.two\"\nreads = [\"{A}\"]\npublishes = []\n"
            ),
        )],
    );
    let reg = registry();
    let cfg = load(&dir.path, url, "setup", &reg);
    astra_bus::bus::declare::declare(&redis, &cfg)
        .await
        .unwrap();

    // Started: round 1 of 2 committed, then the ghost died.
    let started = envelope("u");
    let e1 = astra_bus::bus::publish::publish(&redis, A, &started)
        .await
        .unwrap();
    assert_eq!(ghost_reads(&redis).await, vec![e1.clone()]);
    let r0 = match ghost_commits(&redis, "u", &started, &e1, &[]).await {
        RoundOutcome::Applied(r) => r,
        other => panic!("round 1: {other:?}"),
    };
    assert_eq!(r0, vec![Reply::Int(1)]);

    // Completed: both rounds committed (done marker, XACK); then a second copy of the
    // same event (a producer's retry) that the ghost also held when it died.
    let done = envelope("v");
    let e2 = astra_bus::bus::publish::publish(&redis, A, &done)
        .await
        .unwrap();
    assert_eq!(ghost_reads(&redis).await, vec![e2.clone()]);
    let r0 = match ghost_commits(&redis, "v", &done, &e2, &[]).await {
        RoundOutcome::Applied(r) => r,
        other => panic!("round 1: {other:?}"),
    };
    assert_eq!(
        ghost_commits(&redis, "v", &done, &e2, &[r0]).await,
        RoundOutcome::Applied(vec![])
    );
    let e3 = astra_bus::bus::publish::publish(&redis, A, &done)
        .await
        .unwrap();
    assert_eq!(ghost_reads(&redis).await, vec![e3.clone()]);

    // Crashes during redeliveries: every XCLAIM counts one more delivery (max is 3).
    for id in [&e1, &e3] {
        for _ in 0..3 {
            redis
                .cmd(
                    "XCLAIM",
                    vec![arg(A), arg(GROUP), arg("ghost"), arg(0), arg(id.as_str())],
                )
                .await
                .unwrap();
        }
    }

    // Someone else's increment meanwhile: a re-applied round 1 would show on top of it.
    redis
        .cmd("HINCRBY", vec![arg("astra:two:u"), arg("n"), arg(10)])
        .await
        .unwrap();

    let d = InProc::start(load(&dir.path, url, "live", &reg), reg).await;
    wait_until(Duration::from_secs(20), "nothing pending", || async {
        pending(&redis, A, GROUP).await == 0
    })
    .await;
    d.stop().await;

    let dead = astra_bus::bus::dlq::list(&redis, DLQ, None, 100)
        .await
        .unwrap();
    assert!(
        dead.is_empty(),
        "an event committed in part or in whole was dead-lettered: {:?}",
        dead.iter()
            .map(|d| (d.get("entry_id"), d.get("reason")))
            .collect::<Vec<_>>()
    );
    // Had the started event's first round applied again, u's counter would say 12 and its
    // second round would record 12.
    assert_eq!(
        hget(&redis, "astra:two:u", "n").await,
        Some(11),
        "round 1 once"
    );
    assert_eq!(
        hget(&redis, "astra:two_seen:u", "n").await,
        Some(1),
        "the started event finished with the reply recorded for its first round"
    );
    assert_eq!(hget(&redis, "astra:two:v", "n").await, Some(1));
    assert_eq!(hget(&redis, "astra:two_seen:v", "n").await, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_over_max_deliveries_that_was_committed_in_part_finishes_on_one_node() {
    let server = RedisServer::start();
    case(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_over_max_deliveries_that_was_committed_in_part_finishes_on_a_cluster() {
    let cluster = RedisCluster::start();
    case(&cluster.url()).await;
}
