//! The fault-injection suite: real daemon processes and a real redis-server under a loop of
//! faults while a loader publishes inputs with a unique payload each — kill -9 of a daemon,
//! a zombie daemon frozen past `claim_idle`, kill -9 of redis-server (AOF) and restart,
//! `CLIENT KILL` of the daemons' connections, Redis at `maxmemory` (noeviction: OOM errors),
//! and a frozen (slow) group while retention trims. Then faults stop, the topology drains,
//! and a total-queue check in the style of Jepsen's runs over every input and every group:
//! lost = 0, duplicate effects = 0, unexpected = 0, every input processed or dead-lettered,
//! pending lists empty. The counts per fault kind are printed as a table (straight to
//! stderr, so `cargo test` shows it without `--nocapture`).
//!
//! Bounded by itself: the fault loop has a fixed number of injections and the drain a
//! deadline; the whole test asserts it finished within [`SUITE_DEADLINE`].
//! `ASTRA_TEST_SEED` replays a fault order.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use astra_bus::bus::Redis;
use astra_bus::bus::client::{arg, as_array, as_pairs, as_string};
use astra_bus::envelope::{ContentType, Envelope};
use support::bus::*;
use support::{DaemonProcess, RedisOptions, RedisServer, Rng, TempDir, write_config};

const A: &str = "astra.test.a.v1";
const B: &str = "astra.test.b.v1";
const DLQ: &str = "astra.bus.dead_letter.v1";
/// Groups of the two main daemons (count_by_user and forward A → B) and of the slow one.
const COUNT: &str = "test.count";
const FWD: &str = "test.fwd";
const SLOW: &str = "test.slow";
/// Retention bound of the input stream: small, so retention trims all the time.
const MAX_LEN: i64 = 300;
/// The daemons' Redis user: `CLIENT KILL USER` hits exactly their connections.
const DAEMON_USER: &str = "astra";
/// Rounds over every fault kind.
const ROUNDS: usize = 3;
const SUITE_DEADLINE: Duration = Duration::from_secs(420);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Fault {
    None,
    Kill9,
    Zombie,
    RedisRestart,
    ClientKill,
    Oom,
    SlowGroup,
}

impl Fault {
    const ALL: [Fault; 6] = [
        Fault::Kill9,
        Fault::Zombie,
        Fault::RedisRestart,
        Fault::ClientKill,
        Fault::Oom,
        Fault::SlowGroup,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::None => "none (between faults)",
            Fault::Kill9 => "kill -9 daemon",
            Fault::Zombie => "SIGSTOP daemon > claim_idle",
            Fault::RedisRestart => "kill -9 redis + restart",
            Fault::ClientKill => "CLIENT KILL daemon conns",
            Fault::Oom => "redis at maxmemory (OOM)",
            Fault::SlowGroup => "slow group + retention",
        }
    }
}

/// One published input.
struct Input {
    id: String,
    user: String,
    malformed: bool,
    fault: Fault,
}

fn streams_config(url: &str) -> String {
    streams_toml(&[A, B], "batch_size = 50\nconcurrency = 200")
        .replace("redis://127.0.0.1:1", url)
        .replace("max_deliveries = 3", "max_deliveries = 20")
        .replace("interval = \"1h\"", "interval = \"250ms\"")
        .replace(
            &format!("name = \"{A}\"\ndescription = \"test stream\"\n"),
            &format!("name = \"{A}\"\ndescription = \"test stream\"\nmax_len = {MAX_LEN}\n"),
        )
}

fn group(name: &str, handler: &str, publishes: &[&str]) -> String {
    let p: Vec<String> = publishes.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[[group]]\nname = \"{name}\"\nhandler = \"{handler}\"\nreads = [\"{A}\"]\npublishes = [{}]\n\n",
        p.join(", ")
    )
}

/// The main daemons run `test.count` and `test.fwd`; the slow daemon runs `test.slow` alone.
fn configs(url: &str) -> (TempDir, TempDir) {
    let streams = streams_config(url);
    let main = format!(
        "{}{}",
        group(COUNT, "builtin.count_by_user", &[]),
        group(FWD, "builtin.forward", &[B])
    );
    let slow = group(SLOW, "builtin.count_by_user", &[]);
    (
        write_config(&streams, &[("test", &main)]),
        write_config(&streams, &[("test", &slow)]),
    )
}

/// Publishes inputs until `stop`, 10 every ~40 ms, each tagged with the fault active at the
/// time; every 50th is malformed (a `type` that does not match the stream) and must end in
/// the dead letters of every group. A batch refused (OOM, Redis down, connection killed) is
/// sent again: a resent copy carries the same event ids.
async fn loader(
    url: String,
    current: Arc<Mutex<Fault>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Input> {
    let redis = connect(&url).await;
    let mut inputs = vec![];
    let mut n = 0usize;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let fault = *current.lock().unwrap();
        let mut batch = vec![];
        for _ in 0..10 {
            let malformed = n % 50 == 49;
            let user = format!("in-{n}");
            let env = Envelope::root(
                if malformed { "test.wrong" } else { "test.a" },
                1,
                "faults",
                None,
                ContentType::Json,
                format!("{{\"user_id\":\"{user}\",\"n\":{n}}}").into_bytes(),
            );
            inputs.push(Input {
                id: env.id.clone(),
                user,
                malformed,
                fault,
            });
            batch.push((A.to_string(), env));
            n += 1;
        }
        let start = Instant::now();
        while let Err(e) = astra_bus::bus::publish::publish_many(&redis, &batch).await {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "publishing kept failing: {e}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    redis.quit().await;
    inputs
}

/// XINFO GROUPS of `A` as name → fields.
async fn groups_info(redis: &Redis) -> HashMap<String, HashMap<String, String>> {
    let Ok(v) = redis.cmd("XINFO", vec![arg("GROUPS"), arg(A)]).await else {
        return HashMap::new(); // not declared yet
    };
    as_array(v)
        .unwrap_or_default()
        .into_iter()
        .map(|g| {
            let m: HashMap<String, String> = as_pairs(g)
                .into_iter()
                .map(|(k, v)| (k, as_string(&v).unwrap_or_default()))
                .collect();
            (m.get("name").cloned().unwrap_or_default(), m)
        })
        .collect()
}

/// Every group has read everything and has nothing pending.
async fn drained(url: &str) -> bool {
    let redis = connect(url).await;
    let v = redis.cmd("XINFO", vec![arg("STREAM"), arg(A)]).await;
    let last = v
        .ok()
        .map(as_pairs)
        .unwrap_or_default()
        .into_iter()
        .find(|(k, _)| k == "last-generated-id")
        .and_then(|(_, v)| as_string(&v))
        .unwrap_or_default();
    let info = groups_info(&redis).await;
    redis.quit().await;
    [COUNT, FWD, SLOW].iter().all(|g| {
        info.get(*g).is_some_and(|m| {
            m.get("pending").map(String::as_str) == Some("0")
                && m.get("last-delivered-id") == Some(&last)
        })
    })
}

#[derive(Default, Clone, Copy)]
struct Row {
    injections: u64,
    inputs: u64,
    processed: u64,
    dead_lettered: u64,
    lost: u64,
    duplicates: u64,
}

/// The total-queue check. Per group and input: the effect (count field / derived event) and
/// the dead letters. Returns the table rows per fault kind and the unexpected items.
async fn check(url: &str, inputs: &[Input]) -> (BTreeMap<Fault, Row>, Vec<String>) {
    let redis = connect(url).await;
    let counts: HashMap<&str, BTreeMap<String, i64>> = HashMap::from([
        (
            COUNT,
            hgetall_int(&redis, &format!("astra:count:{COUNT}")).await,
        ),
        (
            SLOW,
            hgetall_int(&redis, &format!("astra:count:{SLOW}")).await,
        ),
    ]);
    // Derived events of test.fwd, per input id: (entries, distinct derived ids).
    let mut derived: HashMap<String, (u64, HashSet<String>)> = HashMap::new();
    for (_, e) in read_all(&redis, B).await {
        let d = derived
            .entry(e.caus.clone().unwrap_or_default())
            .or_default();
        d.0 += 1;
        d.1.insert(e.id);
    }
    // Dead letters per (group, event id): distinct source entries.
    let mut dead: HashMap<(String, String), HashSet<String>> = HashMap::new();
    let mut dead_copies: HashMap<(String, String), u64> = HashMap::new();
    for fields in read_raw(&redis, DLQ).await {
        let f: HashMap<&str, &str> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let key = (
            f.get("dlq_group").unwrap_or(&"").to_string(),
            f.get("id").unwrap_or(&"").to_string(),
        );
        *dead_copies
            .entry((
                key.0.clone(),
                f.get("dlq_entry_id").unwrap_or(&"").to_string(),
            ))
            .or_default() += 1;
        dead.entry(key)
            .or_default()
            .insert(f.get("dlq_entry_id").unwrap_or(&"").to_string());
    }
    let mut unexpected = vec![];
    let known_users: HashSet<&str> = inputs.iter().map(|i| i.user.as_str()).collect();
    let known_ids: HashSet<&str> = inputs.iter().map(|i| i.id.as_str()).collect();
    for (g, c) in &counts {
        for u in c.keys() {
            if !known_users.contains(u.as_str()) {
                unexpected.push(format!("{g}: effect for unknown user {u}"));
            }
        }
    }
    for caus in derived.keys() {
        if !known_ids.contains(caus.as_str()) {
            unexpected.push(format!("{FWD}: derived event of unknown input {caus}"));
        }
    }
    for (g, id) in dead.keys() {
        if !known_ids.contains(id.as_str()) {
            unexpected.push(format!("{g}: dead letter of unknown input {id}"));
        }
    }
    for ((g, entry), n) in &dead_copies {
        if *n > 1 {
            unexpected.push(format!("{g}: source entry {entry} dead-lettered {n} times"));
        }
    }
    let mut rows: BTreeMap<Fault, Row> = BTreeMap::new();
    for i in inputs {
        let row = rows.entry(i.fault).or_default();
        row.inputs += 1;
        for g in [COUNT, FWD, SLOW] {
            let effects = match g {
                FWD => derived.get(&i.id).map_or(0, |d| d.0),
                _ => counts[g].get(&i.user).copied().unwrap_or(0).max(0) as u64,
            };
            let dl = dead
                .get(&(g.to_string(), i.id.clone()))
                .map_or(0, |s| s.len() as u64);
            if i.malformed && effects > 0 {
                unexpected.push(format!("{g}: malformed input {} was applied", i.id));
            }
            match (effects, dl) {
                (0, 0) => row.lost += 1,
                (1, 0) => row.processed += 1,
                (0, _) => row.dead_lettered += 1,
                _ => row.duplicates += 1,
            }
        }
    }
    redis.quit().await;
    (rows, unexpected)
}

fn print_table(rows: &BTreeMap<Fault, Row>, elapsed: Duration, unexpected: usize, seed: u64) {
    let mut out = String::new();
    out.push_str(&format!(
        "\nfault-injection suite (seed {seed}, {:.1}s): per fault kind, inputs published while it was active;\nprocessed/dead-lettered/lost/duplicates count (input, group) pairs over the 3 groups\n",
        elapsed.as_secs_f64()
    ));
    out.push_str(&format!(
        "{:<30} {:>10} {:>7} {:>10} {:>14} {:>5} {:>10}\n",
        "fault", "injections", "inputs", "processed", "dead-lettered", "lost", "duplicates"
    ));
    let mut total = Row::default();
    for (f, r) in rows {
        out.push_str(&format!(
            "{:<30} {:>10} {:>7} {:>10} {:>14} {:>5} {:>10}\n",
            f.name(),
            r.injections,
            r.inputs,
            r.processed,
            r.dead_lettered,
            r.lost,
            r.duplicates
        ));
        total.injections += r.injections;
        total.inputs += r.inputs;
        total.processed += r.processed;
        total.dead_lettered += r.dead_lettered;
        total.lost += r.lost;
        total.duplicates += r.duplicates;
    }
    out.push_str(&format!(
        "{:<30} {:>10} {:>7} {:>10} {:>14} {:>5} {:>10}\nunexpected: {unexpected}\n",
        "total",
        total.injections,
        total.inputs,
        total.processed,
        total.dead_lettered,
        total.lost,
        total.duplicates
    ));
    // Straight to the process's stderr: the test harness captures print macros only.
    let _ = std::io::stderr().write_all(out.as_bytes());
}

fn start_daemon(dir: &Path, url: &str, name: &str, logs: &TempDir) -> DaemonProcess {
    DaemonProcess::start(dir, url, name, &logs.path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_queue_check_under_injected_faults() {
    let started = Instant::now();
    let mut server = RedisServer::start_with(RedisOptions {
        appendonly: true,
        extra: vec![("appendfsync".into(), "always".into())],
        raw_args: ["--user", DAEMON_USER, "on", ">pw", "~*", "&*", "+@all"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    let admin_url = server.url();
    let daemon_url = format!("redis://{DAEMON_USER}:pw@127.0.0.1:{}", server.port);
    let (main_cfg, slow_cfg) = configs(&daemon_url);
    let logs = TempDir::new("fault-logs");
    let mut rng = Rng::from_env();
    let seed = rng.0;
    let mut daemons = [
        start_daemon(&main_cfg.path, &daemon_url, "d1", &logs),
        start_daemon(&main_cfg.path, &daemon_url, "d2", &logs),
    ];
    let mut slow = start_daemon(&slow_cfg.path, &daemon_url, "slow", &logs);
    let admin = connect(&admin_url).await;
    wait_until(Duration::from_secs(30), "groups declared", || async {
        groups_info(&admin).await.len() == 3
    })
    .await;

    let current = Arc::new(Mutex::new(Fault::None));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(loader(admin_url.clone(), current.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // Rounds over every fault kind, each round in a seeded order.
    let mut schedule = vec![];
    for _ in 0..ROUNDS {
        let mut kinds = Fault::ALL.to_vec();
        for i in (1..kinds.len()).rev() {
            kinds.swap(i, rng.range(0, i as u64 + 1) as usize);
        }
        schedule.extend(kinds);
    }
    let mut injections: BTreeMap<Fault, u64> = BTreeMap::new();
    let mut retention_held_back = 0u32;
    for fault in schedule {
        *current.lock().unwrap() = fault;
        *injections.entry(fault).or_default() += 1;
        match fault {
            Fault::Kill9 => {
                let i = rng.range(0, 2) as usize;
                tokio::time::sleep(Duration::from_millis(rng.range(100, 600))).await;
                daemons[i].kill9();
                tokio::time::sleep(Duration::from_millis(rng.range(200, 800))).await;
                daemons[i] =
                    start_daemon(&main_cfg.path, &daemon_url, &format!("d{}", i + 1), &logs);
            }
            Fault::Zombie => {
                // claim_idle is 300ms: frozen 5× that, its entries are reclaimed by the
                // other daemon; then it wakes up and commits what it had in hand.
                let i = rng.range(0, 2) as usize;
                daemons[i].pause();
                tokio::time::sleep(Duration::from_millis(1500)).await;
                daemons[i].resume();
            }
            Fault::RedisRestart => {
                server.kill();
                tokio::time::sleep(Duration::from_millis(rng.range(300, 1000))).await;
                server.restart();
            }
            Fault::ClientKill => {
                let mut killed = 0;
                for _ in 0..3 {
                    killed += server.client_kill_user(DAEMON_USER);
                    tokio::time::sleep(Duration::from_millis(rng.range(100, 400))).await;
                }
                assert!(
                    killed > 0,
                    "CLIENT KILL USER found the daemons' connections"
                );
            }
            Fault::Oom => {
                // Let a backlog build up first, so the daemons have work to commit while
                // every write is refused.
                daemons.iter().for_each(DaemonProcess::pause);
                tokio::time::sleep(Duration::from_millis(400)).await;
                server.set_maxmemory(1);
                daemons.iter().for_each(DaemonProcess::resume);
                tokio::time::sleep(Duration::from_millis(1500)).await;
                server.set_maxmemory(0);
            }
            Fault::SlowGroup => {
                // The slow group stops consuming while retention keeps running: the stream
                // must keep everything the slow group has not processed.
                slow.pause();
                tokio::time::sleep(Duration::from_millis(3000)).await;
                // ~650 inputs arrived meanwhile; retention alone would keep ~MAX_LEN.
                if xlen(&admin, A).await > MAX_LEN + 200 {
                    retention_held_back += 1;
                }
                slow.resume();
            }
            Fault::None => {}
        }
        *current.lock().unwrap() = Fault::None;
        tokio::time::sleep(Duration::from_millis(rng.range(300, 800))).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let inputs = load.await.unwrap();

    wait_until(Duration::from_secs(180), "the topology drains", || {
        drained(&admin_url)
    })
    .await;
    for d in daemons.iter_mut().chain(std::iter::once(&mut slow)) {
        let (st, _) = d.terminate(Duration::from_secs(15));
        assert!(st.success(), "daemon exits 0:\n{}", d.log_text());
    }
    // Retention trimmed the input stream (it holds far fewer entries than were published).
    let trimmed = xlen(&admin, A).await < inputs.len() as i64 / 2;
    let (mut rows, unexpected) = check(&admin_url, &inputs).await;
    for (f, n) in &injections {
        rows.entry(*f).or_default().injections = *n;
    }
    let elapsed = started.elapsed();
    print_table(&rows, elapsed, unexpected.len(), seed);

    let lost: u64 = rows.values().map(|r| r.lost).sum();
    let duplicates: u64 = rows.values().map(|r| r.duplicates).sum();
    let processed: u64 = rows.values().map(|r| r.processed).sum();
    let dead_lettered: u64 = rows.values().map(|r| r.dead_lettered).sum();
    let malformed = inputs.iter().filter(|i| i.malformed).count() as u64;
    assert_eq!(lost, 0, "lost (input, group) pairs");
    assert_eq!(duplicates, 0, "duplicate effects");
    assert!(unexpected.is_empty(), "unexpected: {unexpected:?}");
    assert_eq!(processed + dead_lettered, inputs.len() as u64 * 3);
    assert!(
        dead_lettered >= malformed * 3,
        "every malformed input is dead-lettered by every group"
    );
    for g in [COUNT, FWD, SLOW] {
        assert_eq!(pending(&admin, A, g).await, 0, "{g} has nothing pending");
    }
    // The faults actually happened and had their effect.
    assert!(
        inputs.len() > 2000,
        "the loader kept publishing: {}",
        inputs.len()
    );
    assert!(trimmed, "retention trimmed the input stream");
    assert!(
        retention_held_back > 0,
        "retention kept what the frozen slow group still needed"
    );
    let logs_text: String = std::fs::read_dir(&logs.path)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(
        logs_text.contains("reclaimed idle pending entries"),
        "some daemon reclaimed another's entries"
    );
    assert!(
        logs_text.contains("redis is out of memory"),
        "the daemons met OOM errors (and retried)"
    );
    assert!(
        elapsed < SUITE_DEADLINE,
        "the suite took {elapsed:?}, over its bound {SUITE_DEADLINE:?}"
    );
    admin.quit().await;
}
