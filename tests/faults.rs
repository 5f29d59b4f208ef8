//! The fault-injection suite: real daemon processes and real Redis (one server, and a
//! 3-master cluster) under a seeded loop of faults while a loader publishes inputs with a
//! unique payload each. Faults: kill -9 of a daemon; a zombie daemon frozen past
//! `claim_idle`; kill -9 of redis-server (AOF) and restart; `CLIENT KILL` of the daemons'
//! connections; Redis at `maxmemory` (OOM); a frozen (slow) group while retention trims;
//! `XGROUP DESTROY` of a live group; an operator replaying dead letters (after breaking,
//! then fixing, the keys of a few inputs); and an input whose handler aborts the whole
//! process. All the while the loader also retries earlier event ids with a re-stamped `ts`
//! and writes malformed entries with thousands of fields. One group runs a two-round
//! handler. `max_deliveries` is the default 5.
//!
//! Then faults stop, the topology drains, and a total-queue check in the style of Jepsen's
//! runs over every input and every group: lost = 0, duplicate effects = 0, unexpected = 0,
//! every input processed or dead-lettered, pending lists empty. The counts per fault kind
//! are printed as a table (straight to stderr, so `cargo test` shows it).
//!
//! The daemons are this test binary run again (`--ignored --exact fault_child_daemon`) with
//! the test handler, so a handler can abort a real process. Bounded by itself: a fixed
//! number of injections and a drain deadline; `ASTRA_TEST_SEED` replays a fault order.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use astra_bus::bus::Redis;
use astra_bus::bus::client::{arg, as_array, as_pairs, as_string};
use astra_bus::config::GroupConfig;
use astra_bus::envelope::{ContentType, Envelope};
use astra_bus::handlers::{Event, Handler, HandlerError, Op, Registry, Reply, Step};
use serde::Deserialize;
use support::bus::*;
use support::{DaemonProcess, RedisCluster, RedisOptions, RedisServer, Rng, TempDir, write_config};

const A: &str = "astra.test.a.v1";
const B: &str = "astra.test.b.v1";
const DLQ: &str = "astra.bus.dead_letter.v1";
/// Groups of the two main daemons (count_by_user, forward A → B, the two-round handler)
/// and of the slow one.
const COUNT: &str = "test.count";
const FWD: &str = "test.fwd";
const TWO: &str = "test.two";
const SLOW: &str = "test.slow";
const GROUPS: [&str; 4] = [COUNT, FWD, TWO, SLOW];
/// Retention bound of the input stream: small, so retention trims all the time.
const MAX_LEN: i64 = 300;
/// The daemons' Redis user: `CLIENT KILL USER` hits exactly their connections.
const DAEMON_USER: &str = "astra";
/// Rounds over every fault kind.
const ROUNDS: usize = 2;
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
    DestroyGroup,
    DlqReplay,
    CrashLoop,
}

impl Fault {
    const SINGLE: [Fault; 9] = [
        Fault::Kill9,
        Fault::Zombie,
        Fault::RedisRestart,
        Fault::ClientKill,
        Fault::Oom,
        Fault::SlowGroup,
        Fault::DestroyGroup,
        Fault::DlqReplay,
        Fault::CrashLoop,
    ];
    /// On the cluster: the faults that do not need one server's process or memory limit.
    const CLUSTER: [Fault; 6] = [
        Fault::Kill9,
        Fault::Zombie,
        Fault::SlowGroup,
        Fault::DestroyGroup,
        Fault::DlqReplay,
        Fault::CrashLoop,
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
            Fault::DestroyGroup => "XGROUP DESTROY live group",
            Fault::DlqReplay => "break keys, fix, dlq replay",
            Fault::CrashLoop => "handler aborts the process",
        }
    }
}

// ---------------------------------------------------------------------------------------
// The daemon process: this test binary with the two-round test handler
// ---------------------------------------------------------------------------------------

/// Two rounds: HINCRBY the user's counter, then record the reply; aborts the whole process
/// on an input that says so (an entry that kills whoever handles it).
struct Two;

#[derive(Deserialize)]
struct TwoInput {
    user_id: String,
    #[serde(default)]
    abort: bool,
}

impl Two {
    fn build(_: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        Ok(Arc::new(Two))
    }
}

impl Handler for Two {
    fn step(&self, ev: &Event, rounds: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        let p: TwoInput = ev.payload()?;
        if p.abort {
            std::process::abort();
        }
        let key = format!("astra:two:{}", p.user_id);
        match rounds.first() {
            None => Ok(Step::More(vec![Op::hincrby(&key, "n", 1)])),
            Some(r) => Ok(Step::Done {
                ops: vec![Op::hset(
                    format!("astra:two_seen:{}", p.user_id),
                    "n",
                    r.first().and_then(Reply::as_int).unwrap_or(-1).to_string(),
                )],
                emit: vec![],
            }),
        }
    }
}

/// Not a test on its own: the daemon process the suite starts (this binary run again).
#[test]
#[ignore = "a daemon process started by the fault suite"]
fn fault_child_daemon() {
    let (Ok(dir), Ok(url), Ok(instance)) = (
        std::env::var("ASTRA_CHILD_CONFIG"),
        std::env::var("ASTRA_CHILD_URL"),
        std::env::var("ASTRA_CHILD_INSTANCE"),
    ) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(std::io::stderr)
            .try_init();
        let mut reg = Registry::builtin();
        reg.insert(TWO, Two::build);
        let cfg = load(Path::new(&dir), &url, &instance, &reg);
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

fn start_daemon(dir: &Path, url: &str, instance: &str, logs: &TempDir) -> DaemonProcess {
    static N: AtomicUsize = AtomicUsize::new(0);
    let log = logs.join(format!(
        "daemon-{instance}-{}.log",
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "fault_child_daemon", "--nocapture"])
        .env("ASTRA_CHILD_CONFIG", dir)
        .env("ASTRA_CHILD_URL", url)
        .env("ASTRA_CHILD_INSTANCE", instance)
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    DaemonProcess { child, log }
}

/// A daemon the suite keeps running: restarted whenever it dies (a crash loop).
struct Supervised {
    proc: DaemonProcess,
    dir: std::path::PathBuf,
    instance: String,
}

struct Fleet {
    url: String,
    logs: TempDir,
    daemons: Vec<Supervised>,
    crashes: u64,
}

impl Fleet {
    fn start(&mut self, dir: &Path, instance: &str) {
        let proc = start_daemon(dir, &self.url, instance, &self.logs);
        self.daemons.push(Supervised {
            proc,
            dir: dir.to_path_buf(),
            instance: instance.to_string(),
        });
    }

    /// Restarts every daemon that exited on its own.
    fn revive(&mut self) {
        for d in &mut self.daemons {
            if d.proc.child.try_wait().unwrap().is_some() {
                self.crashes += 1;
                d.proc = start_daemon(&d.dir, &self.url, &d.instance, &self.logs);
            }
        }
    }

    fn restart(&mut self, i: usize) {
        let d = &mut self.daemons[i];
        d.proc.kill9();
        d.proc = start_daemon(&d.dir, &self.url, &d.instance, &self.logs);
    }

    /// Sleeps `d`, reviving crashed daemons meanwhile.
    async fn sleep(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.revive();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs_text(&self) -> String {
        std::fs::read_dir(&self.logs.path)
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Topology and load
// ---------------------------------------------------------------------------------------

fn streams_config(url: &str) -> String {
    streams_toml(&[A, B], "batch_size = 50\nconcurrency = 200")
        .replace("redis://127.0.0.1:1", url)
        .replace("max_deliveries = 3", "max_deliveries = 5")
        .replace("interval = \"1h\"", "interval = \"250ms\"")
        .replace(
            "[daemon]\nshutdown_deadline = \"5s\"\n",
            "[daemon]\nshutdown_deadline = \"5s\"\n\n[metrics]\nrefresh_interval = \"200ms\"\n",
        )
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

/// The main daemons run `test.count`, `test.fwd` and `test.two`; the slow one `test.slow`.
fn configs(url: &str) -> (TempDir, TempDir) {
    let streams = streams_config(url);
    let main = format!(
        "{}{}{}",
        group(COUNT, "builtin.count_by_user", &[]),
        group(FWD, "builtin.forward", &[B]),
        group(TWO, TWO, &[])
    );
    let slow = group(SLOW, "builtin.count_by_user", &[]);
    (
        write_config(&streams, &[("test", &main)]),
        write_config(&streams, &[("test", &slow)]),
    )
}

/// One published input.
struct Input {
    id: String,
    user: String,
    malformed: bool,
    /// Its handler in `test.two` aborts the process.
    crash: bool,
    fault: Fault,
}

/// What the fault loop tells the loader.
#[derive(Default)]
struct Control {
    current: Mutex<Option<Fault>>,
    stop: AtomicBool,
    /// The next input number (for the dlq-replay fault's victims).
    next: AtomicUsize,
    /// Publish one input that aborts `test.two`'s handler.
    crash: AtomicBool,
}

fn envelope(event_type: &str, json: String) -> Envelope {
    Envelope::root(
        event_type,
        1,
        "faults",
        None,
        ContentType::Json,
        json.into_bytes(),
    )
}

/// Publishes inputs until stopped, 10 every ~40 ms, each tagged with the fault active at
/// the time. Every 50th is malformed (a `type` that does not match the stream), every
/// 300th a malformed entry with 4,100 fields; both must end in the dead letters of every
/// group. Every 7th batch also re-sends an earlier input with its `ts` moved an hour on (a
/// producer's retry: same event id). A batch refused (OOM, Redis down, connection killed)
/// is sent again: a resent copy carries the same event ids.
async fn loader(url: String, ctl: Arc<Control>) -> Vec<Input> {
    let redis = connect(&url).await;
    let mut inputs = vec![];
    let mut sent: Vec<Envelope> = vec![];
    let mut n = 0usize;
    let mut batches = 0usize;
    let mut rng = Rng(0x5eed_1234_abcd);
    while !ctl.stop.load(Ordering::SeqCst) {
        let fault = ctl.current.lock().unwrap().unwrap_or(Fault::None);
        let mut batch = vec![];
        for _ in 0..10 {
            let user = format!("in-{n}");
            let crash = ctl.crash.swap(false, Ordering::SeqCst);
            let malformed = !crash && n % 50 == 49;
            if !crash && n % 300 == 299 {
                // Wide and malformed, written straight into Redis.
                let env = envelope("test.wrong", format!("{{\"user_id\":\"{user}\"}}"));
                let mut a = vec![arg(A), arg("*")];
                for (k, v) in env.to_fields() {
                    a.push(arg(k));
                    a.push(astra_bus::bus::client::Value::Bytes(v.into()));
                }
                for i in 0..4100 {
                    a.push(arg(format!("extra{i}")));
                    a.push(arg(format!("v{i}")));
                }
                while redis.cmd("XADD", a.clone()).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                inputs.push(Input {
                    id: env.id,
                    user,
                    malformed: true,
                    crash: false,
                    fault,
                });
                n += 1;
                continue;
            }
            let json = if crash {
                format!("{{\"user_id\":\"{user}\",\"n\":{n},\"abort\":true}}")
            } else {
                format!("{{\"user_id\":\"{user}\",\"n\":{n}}}")
            };
            let env = envelope(if malformed { "test.wrong" } else { "test.a" }, json);
            inputs.push(Input {
                id: env.id.clone(),
                user,
                malformed,
                crash,
                fault,
            });
            if !malformed && !crash {
                sent.push(env.clone());
            }
            batch.push((A.to_string(), env));
            n += 1;
        }
        ctl.next.store(n, Ordering::SeqCst);
        batches += 1;
        if batches.is_multiple_of(7) && !sent.is_empty() {
            let mut retry = sent[rng.range(0, sent.len() as u64) as usize].clone();
            retry.ts += 3_600_000;
            batch.push((A.to_string(), retry));
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

/// Every group has read everything and has nothing pending (replays included).
async fn drained(redis: &Redis) -> bool {
    let v = redis.cmd("XINFO", vec![arg("STREAM"), arg(A)]).await;
    let last = v
        .ok()
        .map(as_pairs)
        .unwrap_or_default()
        .into_iter()
        .find(|(k, _)| k == "last-generated-id")
        .and_then(|(_, v)| as_string(&v))
        .unwrap_or_default();
    // Replays an operator made are read too (not only acknowledged once read).
    for g in GROUPS {
        if !replays_done(redis, g).await {
            return false;
        }
    }
    let info = groups_info(redis).await;
    GROUPS.iter().all(|g| {
        info.get(*g).is_some_and(|m| {
            m.get("pending").map(String::as_str) == Some("0")
                && m.get("last-delivered-id") == Some(&last)
        })
    })
}

// ---------------------------------------------------------------------------------------
// The total-queue check
// ---------------------------------------------------------------------------------------

#[derive(Default, Clone, Copy)]
struct Row {
    injections: u64,
    inputs: u64,
    processed: u64,
    dead_lettered: u64,
    lost: u64,
    duplicates: u64,
}

/// Per group and input: the effect and the dead letters still listed (replayed ones are
/// resolved). Returns the table rows per fault kind and the unexpected items.
async fn check(
    redis: &Redis,
    inputs: &[Input],
) -> (BTreeMap<Fault, Row>, Vec<String>, Vec<String>) {
    let counts: HashMap<&str, BTreeMap<String, i64>> = HashMap::from([
        (
            COUNT,
            hgetall_int(redis, &format!("astra:count:{COUNT}")).await,
        ),
        (
            SLOW,
            hgetall_int(redis, &format!("astra:count:{SLOW}")).await,
        ),
    ]);
    // Derived events of test.fwd, per input id: entries, and distinct derived ids (a
    // same-id copy after a crash is allowed in a cluster only).
    let mut derived: HashMap<String, (u64, HashSet<String>)> = HashMap::new();
    for (_, e) in read_all(redis, B).await {
        let d = derived
            .entry(e.caus.clone().unwrap_or_default())
            .or_default();
        d.0 += 1;
        d.1.insert(e.id);
    }
    // Dead letters still listed, per (group, event id): distinct source entries.
    let mut dead: HashMap<(String, String), HashSet<String>> = HashMap::new();
    let mut dead_reason: HashMap<(String, String), String> = HashMap::new();
    for d in astra_bus::bus::dlq::list(redis, DLQ, None, usize::MAX)
        .await
        .unwrap()
    {
        let key = (
            d.get("group").unwrap_or("").to_string(),
            d.event_id().unwrap_or_default(),
        );
        dead_reason.insert(key.clone(), d.get("reason").unwrap_or("").to_string());
        dead.entry(key)
            .or_default()
            .insert(d.get("entry_id").unwrap_or("").to_string());
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
    let cluster = redis.is_cluster();
    let mut rows: BTreeMap<Fault, Row> = BTreeMap::new();
    let mut lost = vec![];
    let mut dups = vec![];
    for i in inputs {
        let row = rows.entry(i.fault).or_default();
        row.inputs += 1;
        let hget = |key: String| async move {
            as_string(&redis.cmd("HGET", vec![arg(key), arg("n")]).await.unwrap())
        };
        let two = hget(format!("astra:two:{}", i.user)).await;
        let two_seen = hget(format!("astra:two_seen:{}", i.user)).await;
        if two.is_some() && two_seen.as_deref() != Some("1") {
            unexpected.push(format!(
                "{TWO}: {} finished its second round with {two_seen:?}",
                i.user
            ));
        }
        for g in GROUPS {
            let effects = match g {
                FWD => derived
                    .get(&i.id)
                    .map_or(0, |d| if cluster { d.1.len() as u64 } else { d.0 }),
                TWO => two.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0u64),
                _ => counts[g].get(&i.user).copied().unwrap_or(0).max(0) as u64,
            };
            let key = (g.to_string(), i.id.clone());
            let dl = dead.get(&key).map_or(0, |s| s.len() as u64);
            if i.malformed && effects > 0 {
                unexpected.push(format!("{g}: malformed input {} was applied", i.id));
            }
            if i.crash && g == TWO {
                if effects > 0 {
                    unexpected.push(format!("{g}: the aborting input {} was applied", i.id));
                }
                if dead_reason.get(&key).map(String::as_str) != Some("max_deliveries") {
                    unexpected.push(format!(
                        "{g}: the aborting input {} ended {:?}, not max_deliveries",
                        i.id,
                        dead_reason.get(&key)
                    ));
                }
            }
            match (effects, dl) {
                (0, 0) => {
                    row.lost += 1;
                    lost.push(format!(
                        "{g}: {} ({}, published during {:?})",
                        i.id, i.user, i.fault
                    ));
                }
                (1, 0) => row.processed += 1,
                (0, _) => row.dead_lettered += 1,
                _ => {
                    row.duplicates += 1;
                    dups.push(format!(
                        "{g}: {} ({}, published during {:?}): {effects} effects, {dl} dead letters {:?}",
                        i.id,
                        i.user,
                        i.fault,
                        dead_reason.get(&key)
                    ));
                }
            }
        }
    }
    // Duplicates are printed with the lost pairs (their logs help the same way).
    lost.extend(dups.into_iter().map(|d| format!("DUPLICATE {d}")));
    (rows, unexpected, lost)
}

fn print_table(
    title: &str,
    rows: &BTreeMap<Fault, Row>,
    elapsed: Duration,
    unexpected: usize,
    seed: u64,
    crashes: u64,
) {
    let mut out = String::new();
    out.push_str(&format!(
        "\nfault-injection suite, {title} (seed {seed}, {:.1}s, {crashes} daemon crashes): per fault kind, inputs published while it was active;\nprocessed/dead-lettered/lost/duplicates count (input, group) pairs over the 4 groups\n",
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
    let _ = std::io::stderr().write_all(out.as_bytes());
}

// ---------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------

enum Backend {
    Single(RedisServer),
    Cluster(RedisCluster),
}

/// Breaks the `test.two` keys of a few upcoming inputs, lets them be dead-lettered, fixes
/// the keys and replays exactly those dead letters (as an operator would).
async fn dlq_replay_fault(admin: &Redis, fleet: &mut Fleet, ctl: &Control) -> usize {
    let first = ctl.next.load(Ordering::SeqCst) + 20;
    let victims: Vec<String> = (first..first + 5).map(|n| format!("in-{n}")).collect();
    for u in &victims {
        admin
            .cmd("SET", vec![arg(format!("astra:two:{u}")), arg("broken")])
            .await
            .unwrap();
    }
    fleet.sleep(Duration::from_millis(1500)).await;
    for u in &victims {
        admin
            .cmd("DEL", vec![arg(format!("astra:two:{u}"))])
            .await
            .unwrap();
    }
    let mut replayed = 0;
    for d in astra_bus::bus::dlq::list(admin, DLQ, Some(TWO), usize::MAX)
        .await
        .unwrap()
    {
        let user = Envelope::from_fields(&d.original)
            .ok()
            .and_then(|e| e.data_as_json().ok())
            .and_then(|j| j["user_id"].as_str().map(str::to_string));
        if d.get("reason") == Some("failed") && user.is_some_and(|u| victims.contains(&u)) {
            astra_bus::bus::dlq::replay(admin, DLQ, &d).await.unwrap();
            replayed += 1;
        }
    }
    replayed
}

async fn xlen_sync(redis: &Redis, group: &str) -> i64 {
    xlen(redis, &astra_bus::bus::consume::replay_stream(group)).await
}

/// The two suites take turns: each runs 6 processes flat out on a 2-core machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run_suite(backend: &mut Backend, faults: &[Fault], title: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let (admin_url, daemon_url) = match backend {
        Backend::Single(s) => (
            s.url(),
            format!("redis://{DAEMON_USER}:pw@127.0.0.1:{}", s.port),
        ),
        Backend::Cluster(c) => (c.url(), c.url()),
    };
    let (main_cfg, slow_cfg) = configs(&daemon_url);
    let mut fleet = Fleet {
        url: daemon_url.clone(),
        logs: TempDir::new("fault-logs"),
        daemons: vec![],
        crashes: 0,
    };
    let mut rng = Rng::from_env();
    let seed = rng.0;
    fleet.start(&main_cfg.path, "d1");
    fleet.start(&main_cfg.path, "d2");
    fleet.start(&slow_cfg.path, "slow");
    let admin = connect(&admin_url).await;
    wait_until(Duration::from_secs(60), "groups declared", || async {
        groups_info(&admin).await.len() == GROUPS.len()
    })
    .await;

    let ctl = Arc::new(Control::default());
    let load = tokio::spawn(loader(admin_url.clone(), ctl.clone()));
    fleet.sleep(Duration::from_millis(1000)).await;

    let mut schedule = vec![];
    for _ in 0..ROUNDS {
        let mut kinds = faults.to_vec();
        for i in (1..kinds.len()).rev() {
            kinds.swap(i, rng.range(0, i as u64 + 1) as usize);
        }
        schedule.extend(kinds);
    }
    let mut injections: BTreeMap<Fault, u64> = BTreeMap::new();
    let mut retention_held_back = 0u32;
    let mut replayed = 0;
    for fault in schedule {
        *ctl.current.lock().unwrap() = Some(fault);
        *injections.entry(fault).or_default() += 1;
        match fault {
            Fault::Kill9 => {
                let i = rng.range(0, 2) as usize;
                fleet
                    .sleep(Duration::from_millis(rng.range(100, 600)))
                    .await;
                fleet.daemons[i].proc.kill9();
                fleet
                    .sleep(Duration::from_millis(rng.range(200, 800)))
                    .await;
                fleet.restart(i);
            }
            Fault::Zombie => {
                // claim_idle is 300ms: frozen 5× that, its entries are reclaimed by the
                // other daemon; then it wakes up and commits what it had in hand.
                let i = rng.range(0, 2) as usize;
                fleet.daemons[i].proc.pause();
                tokio::time::sleep(Duration::from_millis(1500)).await;
                fleet.daemons[i].proc.resume();
            }
            Fault::RedisRestart => {
                let Backend::Single(server) = backend else {
                    unreachable!()
                };
                server.kill();
                tokio::time::sleep(Duration::from_millis(rng.range(300, 1000))).await;
                server.restart();
            }
            Fault::ClientKill => {
                let Backend::Single(server) = backend else {
                    unreachable!()
                };
                let mut killed = 0;
                for _ in 0..3 {
                    killed += server.client_kill_user(DAEMON_USER);
                    fleet
                        .sleep(Duration::from_millis(rng.range(100, 400)))
                        .await;
                }
                assert!(
                    killed > 0,
                    "CLIENT KILL USER found the daemons' connections"
                );
            }
            Fault::Oom => {
                let Backend::Single(server) = backend else {
                    unreachable!()
                };
                // A backlog first, so the daemons have work to commit while every write
                // is refused.
                fleet.daemons[..2].iter().for_each(|d| d.proc.pause());
                tokio::time::sleep(Duration::from_millis(400)).await;
                server.set_maxmemory(1);
                fleet.daemons[..2].iter().for_each(|d| d.proc.resume());
                fleet.sleep(Duration::from_millis(1500)).await;
                server.set_maxmemory(0);
            }
            Fault::SlowGroup => {
                // The slow group stops consuming while retention keeps running: the stream
                // must keep everything the slow group has not processed.
                fleet.daemons[2].proc.pause();
                tokio::time::sleep(Duration::from_millis(3000)).await;
                if xlen(&admin, A).await > MAX_LEN + 200 {
                    retention_held_back += 1;
                }
                fleet.daemons[2].proc.resume();
            }
            Fault::DestroyGroup => {
                // An operator destroys a live group: its daemons re-create it where it was.
                let _ = admin
                    .cmd("XGROUP", vec![arg("DESTROY"), arg(A), arg(COUNT)])
                    .await;
                fleet.sleep(Duration::from_millis(1000)).await;
            }
            Fault::DlqReplay => {
                replayed += dlq_replay_fault(&admin, &mut fleet, &ctl).await;
            }
            Fault::CrashLoop => {
                // One input whose two-round handler aborts the process: each attempt kills
                // a daemon; after max_deliveries it is dead-lettered without running.
                ctl.crash.store(true, Ordering::SeqCst);
                fleet.sleep(Duration::from_millis(6000)).await;
            }
            Fault::None => {}
        }
        *ctl.current.lock().unwrap() = Some(Fault::None);
        fleet
            .sleep(Duration::from_millis(rng.range(300, 800)))
            .await;
    }
    ctl.stop.store(true, Ordering::SeqCst);
    let inputs = load.await.unwrap();

    let drain_deadline = Instant::now() + Duration::from_secs(180);
    while !drained(&admin).await {
        assert!(
            Instant::now() < drain_deadline,
            "the topology did not drain"
        );
        fleet.sleep(Duration::from_millis(200)).await;
    }
    for d in fleet.daemons.iter_mut() {
        let (st, _) = d.proc.terminate(Duration::from_secs(15));
        assert!(st.success(), "daemon exits 0:\n{}", d.proc.log_text());
    }
    let trimmed = xlen(&admin, A).await < inputs.len() as i64 / 2;
    let (mut rows, unexpected, lost_pairs) = check(&admin, &inputs).await;
    for (f, n) in &injections {
        rows.entry(*f).or_default().injections = *n;
    }
    let elapsed = started.elapsed();
    print_table(title, &rows, elapsed, unexpected.len(), seed, fleet.crashes);

    let lost: u64 = rows.values().map(|r| r.lost).sum();
    let duplicates: u64 = rows.values().map(|r| r.duplicates).sum();
    let processed: u64 = rows.values().map(|r| r.processed).sum();
    let dead_lettered: u64 = rows.values().map(|r| r.dead_lettered).sum();
    let malformed = inputs.iter().filter(|i| i.malformed).count() as u64;
    let crash_inputs = inputs.iter().filter(|i| i.crash).count() as u64;
    if lost > 0 || duplicates > 0 {
        // What the daemons said about the lost (or doubled) inputs, to tell the cause.
        let logs = fleet.logs_text();
        let dead = read_raw(&admin, DLQ).await;
        let resolved = hgetall_int(&admin, astra_bus::bus::dlq::RESOLVED).await;
        let mut replays = vec![];
        for g in GROUPS {
            replays.push(format!("{g}: {}", xlen_sync(&admin, g).await));
        }
        eprintln!("replay streams: {replays:?}; resolved: {}", resolved.len());
        for l in &lost_pairs {
            eprintln!("lost: {l}");
            let id = l
                .trim_start_matches("DUPLICATE ")
                .split(' ')
                .nth(1)
                .unwrap_or_default();
            for line in logs.lines().filter(|line| line.contains(id)) {
                eprintln!("  log: {line}");
            }
            for d in dead
                .iter()
                .filter(|d| d.iter().any(|(_, v)| v.contains(id)))
            {
                let meta: Vec<&(String, String)> =
                    d.iter().filter(|(k, _)| k.starts_with("dlq_")).collect();
                eprintln!("  dead letter: {meta:?}");
            }
        }
    }
    assert_eq!(
        lost, 0,
        "lost (input, group) pairs (and duplicates): {lost_pairs:?}"
    );
    assert_eq!(duplicates, 0, "duplicate effects");
    assert!(unexpected.is_empty(), "unexpected: {unexpected:?}");
    assert_eq!(
        processed + dead_lettered,
        inputs.len() as u64 * GROUPS.len() as u64
    );
    assert!(
        dead_lettered >= malformed * GROUPS.len() as u64 + crash_inputs,
        "every malformed input is dead-lettered by every group, every aborting one by {TWO}"
    );
    for g in GROUPS {
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
    assert!(
        crash_inputs > 0 && fleet.crashes >= crash_inputs,
        "the aborting inputs crashed daemons"
    );
    assert!(replayed > 0, "the operator replayed dead letters");
    let logs_text = fleet.logs_text();
    assert!(
        logs_text.contains("reclaimed idle pending entries"),
        "some daemon reclaimed another's entries"
    );
    assert!(
        logs_text.contains("re-created where it was"),
        "the destroyed group was re-created"
    );
    if faults.contains(&Fault::Oom) {
        assert!(
            logs_text.contains("redis is out of memory"),
            "the daemons met OOM errors (and retried)"
        );
    }
    assert!(
        elapsed < SUITE_DEADLINE,
        "the suite took {elapsed:?}, over its bound {SUITE_DEADLINE:?}"
    );
    admin.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_queue_check_under_injected_faults() {
    let server = RedisServer::start_with(RedisOptions {
        appendonly: true,
        extra: vec![("appendfsync".into(), "always".into())],
        raw_args: ["--user", DAEMON_USER, "on", ">pw", "~*", "&*", "+@all"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    let mut backend = Backend::Single(server);
    run_suite(&mut backend, &Fault::SINGLE, "one redis-server").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_queue_check_under_injected_faults_on_a_cluster() {
    let mut backend = Backend::Cluster(RedisCluster::start());
    run_suite(&mut backend, &Fault::CLUSTER, "3-master Redis Cluster").await;
}
