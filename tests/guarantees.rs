//! The guarantee on the paths people really take (issue "the guarantee on every path"):
//! operators replaying dead letters, destroying a group, restarting a crash-looping daemon;
//! producers retrying an event id with a re-stamped `ts`, writing entries with thousands of
//! fields; consumers paused past the de-duplication window. Each test drives real daemons
//! against a real redis-server and checks the state exactly: every effect once, nothing
//! lost, nothing left pending.

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use astra_bus::bus::client::{Value, arg, as_int, as_string};
use astra_bus::config::GroupConfig;
use astra_bus::envelope::{ContentType, Envelope};
use astra_bus::handlers::{Emit, Event, Handler, HandlerError, Op, Registry, Reply, Step};
use serde::Deserialize;
use support::bus::*;
use support::{RedisServer, TempDir, bin, write_config};

const A: &str = "astra.test.a.v1";
const B: &str = "astra.test.b.v1";
const C: &str = "astra.test.c.v1";
const DLQ: &str = "astra.bus.dead_letter.v1";

fn group(name: &str, handler: &str, reads: &[&str], publishes: &[&str], extra: &str) -> String {
    let list = |v: &[&str]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[[group]]\nname = \"{name}\"\nhandler = \"{handler}\"\nreads = [{}]\npublishes = [{}]\n{extra}\n",
        list(reads),
        list(publishes)
    )
}

fn config(defaults: &str, daemon: &str, groups: &[String]) -> TempDir {
    let mut streams = streams_toml(&[A, B, C], "");
    if let Some(n) = defaults.strip_prefix("max_deliveries = ") {
        streams = streams.replace("max_deliveries = 3", &format!("max_deliveries = {n}"));
    } else {
        streams = streams.replace(
            "max_deliveries = 3\n",
            &format!("max_deliveries = 3\n{defaults}\n"),
        );
    }
    let streams = streams.replace(
        "[daemon]\nshutdown_deadline = \"5s\"\n",
        &format!("[daemon]\nshutdown_deadline = \"5s\"\n{daemon}\n"),
    );
    write_config(&streams, &[("test", &groups.concat())])
}

async fn hget(redis: &astra_bus::bus::Redis, key: &str, field: &str) -> Option<i64> {
    as_int(&redis.cmd("HGET", vec![arg(key), arg(field)]).await.unwrap())
}

async fn raw(redis: &astra_bus::bus::Redis, cmd: &'static str, args: &[&str]) -> Value {
    redis
        .cmd(cmd, args.iter().map(|a| arg(*a)).collect())
        .await
        .unwrap()
}

/// Publishes `env` as it is (a producer that chose its own id and ts).
async fn publish_env(redis: &astra_bus::bus::Redis, stream: &str, env: &Envelope) -> String {
    astra_bus::bus::publish::publish(redis, stream, env)
        .await
        .unwrap()
}

fn json_env(event_type: &str, json: &str) -> Envelope {
    Envelope::root(
        event_type,
        1,
        "test",
        None,
        ContentType::Json,
        json.as_bytes().to_vec(),
    )
}

/// Runs the CLI binary against `url` with the config in `dir`.
fn cli(dir: &TempDir, url: &str, args: &[&str]) -> String {
    let o = Command::new(bin())
        .args(args)
        .args(["--config", dir.path.to_str().unwrap()])
        .env("ASTRA_REDIS_URL", url)
        .env("ASTRA_LOG", "warn")
        .output()
        .expect("run astra-bus");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every field and value of a key, as Redis would DUMP it (byte-identical comparison).
async fn dump(redis: &astra_bus::bus::Redis, key: &str) -> Option<Vec<u8>> {
    astra_bus::bus::client::as_bytes(&raw(redis, "DUMP", &[key]).await)
}

/// Issue 12 (1): replaying group A's dead letters re-published them with a new event id
/// on the stream both groups read, so sibling B applied them a second time (B = 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_redelivers_to_its_group_only_and_siblings_stay_byte_identical() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = config(
        "",
        "",
        &[
            group("test.a", "builtin.count_by_user", &[A], &[], ""),
            group("test.b", "builtin.count_by_user", &[A], &[], ""),
        ],
    );
    let redis = connect(&url).await;
    // Group A's state key has the wrong type: all of A's events are dead-lettered.
    raw(&redis, "SET", &["astra:count:test.a", "oops"]).await;
    let reg = Registry::builtin();
    let daemon = InProc::start(load(&dir.path, &url, "d1", &reg), reg.clone()).await;
    for i in 0..10 {
        publish_json(&redis, A, &format!("{{\"user_id\":\"u{}\"}}", i % 2), None).await;
    }
    wait_until(
        Duration::from_secs(20),
        "A dead-lettered, B applied",
        || async { xlen(&redis, DLQ).await == 10 && pending(&redis, A, "test.a").await == 0 },
    )
    .await;
    let b_before = dump(&redis, "astra:count:test.b").await;
    assert_eq!(hget(&redis, "astra:count:test.b", "u0").await, Some(5));
    let len_before = xlen(&redis, A).await;
    // The operator fixes the key and replays A's dead letters.
    raw(&redis, "DEL", &["astra:count:test.a"]).await;
    let out = cli(&dir, &url, &["dlq", "replay", "--all", "--group", "test.a"]);
    assert!(out.contains("10 replayed"), "{out}");
    wait_until(Duration::from_secs(20), "A applied the replay", || async {
        hget(&redis, "astra:count:test.a", "u0").await == Some(5)
            && hget(&redis, "astra:count:test.a", "u1").await == Some(5)
    })
    .await;
    // Give a sibling every chance to (wrongly) apply something.
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.stop().await;
    assert_eq!(
        dump(&redis, "astra:count:test.b").await,
        b_before,
        "sibling state byte-identical"
    );
    assert_eq!(hget(&redis, "astra:count:test.b", "u0").await, Some(5));
    assert_eq!(hget(&redis, "astra:count:test.a", "u0").await, Some(5));
    assert_eq!(
        xlen(&redis, A).await,
        len_before,
        "nothing re-published on the shared stream"
    );
    assert!(
        astra_bus::bus::dlq::list(&redis, DLQ, None, 10)
            .await
            .unwrap()
            .is_empty(),
        "replayed dead letters are no longer listed"
    );
    assert_eq!(pending(&redis, A, "test.b").await, 0);
}

/// Issue 12 (2): the marker bucket came from the producer's `ts`, so a retry of one event
/// id whose `ts` crossed an hour applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_event_id_with_a_re_stamped_ts_applies_once() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = config(
        "",
        "",
        &[group("test.count", "builtin.count_by_user", &[A], &[], "")],
    );
    let redis = connect(&url).await;
    let reg = Registry::builtin();
    let daemon = InProc::start(load(&dir.path, &url, "d1", &reg), reg).await;
    let mut env = json_env("test.a", r#"{"user_id":"u1"}"#);
    env.ts = 1_700_006_399_999;
    publish_env(&redis, A, &env).await;
    // The producer retries: same id, ts stamped again, one ms later (the next hour).
    env.ts = 1_700_006_400_000;
    publish_env(&redis, A, &env).await;
    // And again much later, on another day.
    env.ts = 1_700_100_000_000;
    publish_env(&redis, A, &env).await;
    wait_until(
        Duration::from_secs(20),
        "all three entries handled",
        || async {
            pending(&redis, A, "test.count").await == 0
                && hget(&redis, "astra:count:test.count", "u1").await.is_some()
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.stop().await;
    assert_eq!(
        hget(&redis, "astra:count:test.count", "u1").await,
        Some(1),
        "one event id, one effect"
    );
    assert_eq!(pending(&redis, A, "test.count").await, 0);
}

/// Issue 12 (3): the dead-letter script acknowledged before copying, and the copy of an
/// entry with 4,100 fields failed (Lua's unpack limit): the entry vanished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_entry_with_thousands_of_fields_is_dead_lettered_whole() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = config(
        "",
        "",
        &[group("test.count", "builtin.count_by_user", &[A], &[], "")],
    );
    let redis = connect(&url).await;
    let mut args = vec![
        arg(A),
        arg("*"),
        arg("id"),
        arg("wide-1"),
        arg("type"),
        arg("test.a"),
        arg("v"),
        arg("1"),
        arg("ts"),
        arg("1"),
        arg("data"),
        arg("not json"),
        arg("ct"),
        arg("application/json"),
    ];
    for i in 0..4100 {
        args.push(arg(format!("f{i}")));
        args.push(arg(format!("value {i}")));
    }
    let entry = as_string(&redis.cmd("XADD", args).await.unwrap()).unwrap();
    let reg = Registry::builtin();
    let daemon = InProc::start(load(&dir.path, &url, "d1", &reg), reg).await;
    wait_until(
        Duration::from_secs(20),
        "the wide entry dead-lettered",
        || async { xlen(&redis, DLQ).await == 1 },
    )
    .await;
    daemon.stop().await;
    assert_eq!(pending(&redis, A, "test.count").await, 0);
    let dead = astra_bus::bus::dlq::list(&redis, DLQ, None, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    // Its `data` is not JSON: refused when decoded, before any handler work.
    assert!(
        matches!(d.get("reason"), Some("malformed" | "poison")),
        "{:?}",
        d.get("reason")
    );
    assert_eq!(d.get("entry_id"), Some(entry.as_str()));
    assert!(
        d.get("error").unwrap_or("").contains("data"),
        "{:?}",
        d.get("error")
    );
    assert_eq!(d.original.len(), 4106, "every field kept");
    assert!(
        d.original
            .iter()
            .any(|(k, v)| k == b"f4099" && v == b"value 4099")
    );
}

/// A final round of HINCRBY then PFADD, deriving one event to B: PFADD fails on a string
/// that is not a HyperLogLog, which only running the op can tell.
struct HalfWay;

#[derive(Deserialize)]
struct UserBearing {
    user_id: String,
}

impl HalfWay {
    fn build(_: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        Ok(Arc::new(HalfWay))
    }
}

impl Handler for HalfWay {
    fn step(&self, ev: &Event, _: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        let p: UserBearing = ev.payload()?;
        Ok(Step::Done {
            ops: vec![
                Op::hincrby("astra:test:n", &p.user_id, 1),
                Op::pfadd("astra:test:hll", &p.user_id),
            ],
            emit: vec![Emit::raw(B, ev.env.data.clone())],
        })
    }
}

/// Issue 12 (4): a final round that failed part-way was recorded like a complete one; a
/// redelivery of the event then marked it done and acknowledged it without publishing its
/// derived event or dead-lettering it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_final_round_is_never_acknowledged_without_its_derived_event() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = config("", "", &[group("test.half", "test.half", &[A], &[B], "")]);
    let redis = connect(&url).await;
    raw(&redis, "SET", &["astra:test:hll", "not a hyperloglog"]).await;
    let mut reg = Registry::builtin();
    reg.insert("test.half", HalfWay::build);
    let daemon = InProc::start(load(&dir.path, &url, "d1", &reg), reg).await;
    let env = json_env("test.a", r#"{"user_id":"u1"}"#);
    publish_env(&redis, A, &env).await;
    wait_until(
        Duration::from_secs(20),
        "first copy dead-lettered",
        || async { xlen(&redis, DLQ).await == 1 },
    )
    .await;
    // The producer retries the same event.
    publish_env(&redis, A, &env).await;
    wait_until(Duration::from_secs(20), "second copy handled", || async {
        pending(&redis, A, "test.half").await == 0 && xlen(&redis, A).await == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        xlen(&redis, DLQ).await,
        2,
        "the retry is dead-lettered too, not acknowledged as done"
    );
    assert_eq!(hget(&redis, "astra:test:n", "u1").await, Some(1));
    assert_eq!(xlen(&redis, B).await, 0);
    // The operator fixes the key and replays both dead letters.
    raw(&redis, "DEL", &["astra:test:hll"]).await;
    for d in astra_bus::bus::dlq::list(&redis, DLQ, None, 10)
        .await
        .unwrap()
    {
        let _ = astra_bus::bus::dlq::replay(&redis, DLQ, &d).await.unwrap();
    }
    wait_until(Duration::from_secs(20), "the derived event", || async {
        xlen(&redis, B).await >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    daemon.stop().await;
    assert_eq!(xlen(&redis, B).await, 1, "the derived event, once");
    assert_eq!(
        hget(&redis, "astra:test:n", "u1").await,
        Some(1),
        "the applied half is not applied again"
    );
    assert_eq!(
        as_int(&raw(&redis, "PFCOUNT", &["astra:test:hll"]).await),
        Some(1)
    );
    assert!(
        astra_bus::bus::dlq::list(&redis, DLQ, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Counts per user and derives an event to the stream its payload names.
struct Route;

#[derive(Deserialize)]
struct Routed {
    user_id: String,
    to: String,
}

impl Route {
    fn build(_: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        Ok(Arc::new(Route))
    }
}

impl Handler for Route {
    fn step(&self, ev: &Event, _: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        let p: Routed = ev.payload()?;
        Ok(Step::Done {
            ops: vec![Op::hincrby("astra:test:n", &p.user_id, 1)],
            emit: vec![Emit::raw(&p.to, ev.env.data.clone())],
        })
    }
}

/// Issue 12 (5): a derived event's stream had no type check: its WRONGTYPE aborted the
/// script after the ops of earlier events in the batch were written and before their
/// markers were, so every redelivery applied them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_derived_event_to_a_wrong_type_key_fails_alone_and_nothing_applies_twice() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = config(
        "",
        "",
        &[group("test.route", "test.route", &[A], &[B, C], "")],
    );
    let redis = connect(&url).await;
    let mut reg = Registry::builtin();
    reg.insert("test.route", Route::build);
    let cfg = load(&dir.path, &url, "d1", &reg);
    let daemon = InProc::start(cfg, reg).await;
    // C's key gets the wrong type once the daemon runs; then all five arrive at once (one
    // script, so the blocked reader gets them in one batch).
    raw(&redis, "DEL", &[C]).await;
    raw(&redis, "HSET", &[C, "not", "a stream"]).await;
    let mut args = vec![
        arg(
            "for i, to in ipairs(ARGV) do redis.call('XADD', KEYS[1], '*', 'id', 'route-' .. i, 'type', 'test.a', 'v', '1', 'ts', '1', 'ct', 'application/json', 'data', '{\"user_id\":\"u' .. (i - 1) .. '\",\"to\":\"' .. to .. '\"}') end",
        ),
        arg(1),
        arg(A),
    ];
    for to in [B, B, C, B, B] {
        args.push(arg(to));
    }
    redis.cmd("EVAL", args).await.unwrap();
    wait_until(Duration::from_secs(20), "handled", || async {
        pending(&redis, A, "test.route").await == 0 && xlen(&redis, DLQ).await >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.stop().await;
    for i in [0, 1, 3, 4] {
        assert_eq!(
            hget(&redis, "astra:test:n", &format!("u{i}")).await,
            Some(1),
            "u{i} applied exactly once"
        );
    }
    assert_eq!(hget(&redis, "astra:test:n", "u2").await, None);
    assert_eq!(xlen(&redis, B).await, 4);
    let dead = astra_bus::bus::dlq::list(&redis, DLQ, None, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].get("error").unwrap_or("").contains(C),
        "{:?}",
        dead[0].get("error")
    );
}

/// Issue 12 (9): a total near i64::MAX made later events fail after part of their ops
/// were applied (the count rose for events that were then dead-lettered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_total_refuses_the_event_whole() {
    struct Add;
    #[derive(Deserialize)]
    struct Amount {
        user_id: String,
        amount: i64,
    }
    impl Handler for Add {
        fn step(&self, ev: &Event, _: &[Vec<Reply>]) -> Result<Step, HandlerError> {
            let p: Amount = ev.payload()?;
            Ok(Step::Done {
                ops: vec![
                    Op::hincrby("astra:test:n", &p.user_id, 1),
                    Op::hincrby("astra:test:total", "v", p.amount),
                ],
                emit: vec![],
            })
        }
    }
    fn build(_: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        Ok(Arc::new(Add))
    }
    let server = RedisServer::start();
    let url = server.url();
    let dir = config("", "", &[group("test.add", "test.add", &[A], &[], "")]);
    let redis = connect(&url).await;
    let mut reg = Registry::builtin();
    reg.insert("test.add", build);
    let daemon = InProc::start(load(&dir.path, &url, "d1", &reg), reg).await;
    publish_json(
        &redis,
        A,
        &format!("{{\"user_id\":\"big\",\"amount\":{}}}", i64::MAX - 10),
        None,
    )
    .await;
    // Batches of one stream may commit in any order: the big one lands first.
    wait_until(Duration::from_secs(20), "the big one applied", || async {
        hget(&redis, "astra:test:n", "big").await == Some(1)
    })
    .await;
    for _ in 0..3 {
        publish_json(&redis, A, r#"{"user_id":"late","amount":100}"#, None).await;
    }
    publish_json(&redis, A, r#"{"user_id":"fine","amount":-5}"#, None).await;
    let start = Instant::now();
    while !(pending(&redis, A, "test.add").await == 0 && xlen(&redis, DLQ).await == 3) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "pending {} dead {} n {:?} total {:?} len {}",
            pending(&redis, A, "test.add").await,
            xlen(&redis, DLQ).await,
            hgetall_int(&redis, "astra:test:n").await,
            hget(&redis, "astra:test:total", "v").await,
            xlen(&redis, A).await,
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.stop().await;
    assert_eq!(hget(&redis, "astra:test:n", "big").await, Some(1));
    assert_eq!(
        hget(&redis, "astra:test:n", "late").await,
        None,
        "nothing of a refused event is applied"
    );
    assert_eq!(hget(&redis, "astra:test:n", "fine").await, Some(1));
    assert_eq!(
        hget(&redis, "astra:test:total", "v").await,
        Some(i64::MAX - 15)
    );
    for d in astra_bus::bus::dlq::list(&redis, DLQ, None, 10)
        .await
        .unwrap()
    {
        assert_eq!(d.get("reason"), Some("failed"));
        assert!(d.get("error").unwrap_or("").contains("overflow"));
    }
}

/// Counts per user after a short nap, so a test can freeze the daemon mid-batch.
struct Sleepy;

impl Sleepy {
    fn build(_: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        Ok(Arc::new(Sleepy))
    }
}

impl Handler for Sleepy {
    fn step(&self, ev: &Event, _: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        std::thread::sleep(Duration::from_millis(1500));
        Awake.step(ev, &[])
    }
}

/// The same handler without the nap.
struct Awake;

impl Awake {
    fn build(_: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        Ok(Arc::new(Awake))
    }
}

impl Handler for Awake {
    fn step(&self, ev: &Event, _: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        let p: UserBearing = ev.payload()?;
        Ok(Step::Done {
            ops: vec![Op::hincrby("astra:count:test.slow", p.user_id, 1)],
            emit: vec![],
        })
    }
}

/// This test binary run again as a daemon with the test handlers (see [`child_daemon`]).
fn spawn_child(dir: &TempDir, url: &str, instance: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_daemon", "--nocapture"])
        .env("ASTRA_CHILD_CONFIG", &dir.path)
        .env("ASTRA_CHILD_URL", url)
        .env("ASTRA_CHILD_INSTANCE", instance)
        .env("ASTRA_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: kill(2) on a pid we spawned and have not reaped.
    let r = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(r, 0, "kill({}, {sig})", child.id());
}

/// Pending entries of `group` on A held by `consumer`.
async fn held_by(redis: &astra_bus::bus::Redis, group: &str, consumer: &str) -> usize {
    array_len(
        redis
            .cmd(
                "XPENDING",
                vec![
                    arg(A),
                    arg(group),
                    arg("-"),
                    arg("+"),
                    arg(10),
                    arg(consumer),
                ],
            )
            .await
            .unwrap(),
    )
}

/// Issue 12 (8): a consumer paused past `dedup_ttl`, whose entry another consumer finished
/// (or dead-lettered) meanwhile, still applied its batch when it woke up.
async fn paused_consumer_case(max_deliveries: u32) -> (Option<i64>, i64) {
    let server = RedisServer::start();
    let url = server.url();
    let dir = config(
        &format!("max_deliveries = {max_deliveries}"),
        "dedup_ttl = \"1s\"",
        &[group("test.slow", "test.slow", &[A], &[], "")],
    );
    let redis = connect(&url).await;
    let mut awake = Registry::builtin();
    awake.insert("test.slow", Awake::build);
    let cfg = load(&dir.path, &url, "setup", &awake);
    astra_bus::bus::declare::declare(&redis, &cfg)
        .await
        .unwrap();
    // A real process that reads the entry, then is frozen (SIGSTOP) inside its handler.
    let mut sleepy = spawn_child(&dir, &url, "sleepy");
    publish_json(&redis, A, r#"{"user_id":"u1"}"#, None).await;
    wait_until(
        Duration::from_secs(15),
        "read by the sleepy daemon",
        || async { held_by(&redis, "test.slow", "sleepy").await == 1 },
    )
    .await;
    signal(&sleepy, libc::SIGSTOP);
    // Another daemon reclaims it (claim_idle 300 ms) and finishes or dead-letters it.
    let d2 = InProc::start(load(&dir.path, &url, "awake", &awake), awake).await;
    wait_until(
        Duration::from_secs(10),
        "finished by the other daemon",
        || async { pending(&redis, A, "test.slow").await == 0 },
    )
    .await;
    // The done marker ages out of the 1 s window; then the frozen daemon wakes up and
    // commits what it decided before it froze.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    signal(&sleepy, libc::SIGCONT);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    signal(&sleepy, libc::SIGTERM);
    let _ = sleepy.wait();
    d2.stop().await;
    (
        hget(&redis, "astra:count:test.slow", "u1").await,
        xlen(&redis, DLQ).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_paused_past_the_window_does_not_apply_what_another_finished() {
    let (count, dead) = paused_consumer_case(3).await;
    assert_eq!(
        count,
        Some(1),
        "applied once, by the daemon that finished it"
    );
    assert_eq!(dead, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_paused_past_the_window_does_not_apply_what_was_dead_lettered() {
    // max_deliveries 1: the reclaiming daemon dead-letters it at once.
    let (count, dead) = paused_consumer_case(1).await;
    assert_eq!(dead, 1);
    assert_eq!(
        count, None,
        "a dead-lettered event is not applied behind the operator's back"
    );
}

/// Issue 12 (7): a lost group was re-created at `0` and re-read up to the retention, while
/// markers live `dedup_ttl`: everything older was applied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroyed_group_is_re_created_where_it_was() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = config(
        "",
        "dedup_ttl = \"1s\"\n\n[metrics]\nrefresh_interval = \"100ms\"",
        &[group("test.count", "builtin.count_by_user", &[A], &[], "")],
    );
    let redis = connect(&url).await;
    let reg = Registry::builtin();
    let daemon = InProc::start(load(&dir.path, &url, "d1", &reg), reg).await;
    for _ in 0..10 {
        publish_json(&redis, A, r#"{"user_id":"u1"}"#, None).await;
    }
    wait_until(Duration::from_secs(10), "10 applied", || async {
        hget(&redis, "astra:count:test.count", "u1").await == Some(10)
    })
    .await;
    // Markers age out of the window; the daemon keeps recording where the group is.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    // An operator destroys the live group.
    raw(&redis, "XGROUP", &["DESTROY", A, "test.count"]).await;
    for _ in 0..5 {
        publish_json(&redis, A, r#"{"user_id":"u1"}"#, None).await;
    }
    wait_until(
        Duration::from_secs(10),
        "group back and new entries applied",
        || async {
            pending(&redis, A, "test.count").await == 0
                && hget(&redis, "astra:count:test.count", "u1")
                    .await
                    .is_some_and(|n| n >= 15)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.stop().await;
    assert_eq!(
        hget(&redis, "astra:count:test.count", "u1").await,
        Some(15),
        "the old entries are not read again"
    );
}

/// Counts per user; aborts the whole process on an event whose payload says so.
struct Abort;

#[derive(Deserialize)]
struct MaybeAbort {
    user_id: String,
    #[serde(default)]
    abort: bool,
}

impl Abort {
    fn build(_: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        Ok(Arc::new(Abort))
    }
}

impl Handler for Abort {
    fn step(&self, ev: &Event, _: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        let p: MaybeAbort = ev.payload()?;
        if p.abort {
            std::process::abort();
        }
        Ok(Step::Done {
            ops: vec![Op::hincrby("astra:count:test.crash", p.user_id, 1)],
            emit: vec![],
        })
    }
}

/// Not a test on its own: the daemon process the crash-loop and pause tests start (this
/// test binary run again with `--ignored --exact`), so that a handler can abort, or a
/// daemon be frozen, as a real process.
#[test]
#[ignore = "a daemon process started by the tests of this file"]
fn child_daemon() {
    let (Ok(dir), Ok(url)) = (
        std::env::var("ASTRA_CHILD_CONFIG"),
        std::env::var("ASTRA_CHILD_URL"),
    ) else {
        return;
    };
    let instance = std::env::var("ASTRA_CHILD_INSTANCE").unwrap_or_else(|_| "child".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut reg = Registry::builtin();
        reg.insert("test.crash", Abort::build);
        reg.insert("test.slow", Sleepy::build);
        let cfg = load(std::path::Path::new(&dir), &url, &instance, &reg);
        let (trigger, shutdown) = astra_bus::shutdown::Shutdown::new();
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        tokio::spawn(async move {
            term.recv().await;
            trigger.trigger();
        });
        let opts = astra_bus::daemon::RunOptions {
            registry: reg,
            ..Default::default()
        };
        astra_bus::daemon::run_with(cfg, opts, shutdown)
            .await
            .unwrap();
    });
}

/// Issue 12 (6): recovering its own pending entries at start passed no delivery counts
/// and re-reading reset their idle time, so an entry that kills the process was retried
/// forever and no other daemon ever claimed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_aborts_the_process_is_dead_lettered_after_max_deliveries() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = config(
        "batch_size = 100",
        "",
        &[group("test.crash", "test.crash", &[A], &[], "")],
    );
    let redis = connect(&url).await;
    // Declared first, so the entries below are read by the group.
    let reg = {
        let mut r = Registry::builtin();
        r.insert("test.crash", Abort::build);
        r
    };
    let cfg = load(&dir.path, &url, "setup", &reg);
    astra_bus::bus::declare::declare(&redis, &cfg)
        .await
        .unwrap();
    for i in 0..30 {
        let abort = i == 12;
        publish_json(
            &redis,
            A,
            &format!("{{\"user_id\":\"u{i}\",\"abort\":{abort}}}"),
            None,
        )
        .await;
    }
    let mut crashes = 0;
    let start = Instant::now();
    loop {
        let mut child = spawn_child(&dir, &url, "crashy");
        // Runs until the poison entry kills it, or until everything is handled.
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut exited = false;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                exited = true;
                break;
            }
            if pending(&redis, A, "test.crash").await == 0 && xlen(&redis, DLQ).await == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if exited {
            crashes += 1;
            assert!(
                crashes <= 6,
                "still crash-looping after {crashes} restarts (max_deliveries is 3)"
            );
            continue;
        }
        let _ = child.kill();
        let _ = child.wait();
        break;
    }
    assert!(start.elapsed() < Duration::from_secs(120));
    assert_eq!(crashes, 3, "one crash per delivery up to max_deliveries");
    let dead = astra_bus::bus::dlq::list(&redis, DLQ, None, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].get("reason"), Some("max_deliveries"));
    assert_eq!(pending(&redis, A, "test.crash").await, 0);
    let counts = hgetall_int(&redis, "astra:count:test.crash").await;
    assert_eq!(counts.len(), 29, "every other entry applied: {counts:?}");
    assert!(counts.values().all(|n| *n == 1), "once each: {counts:?}");
}
