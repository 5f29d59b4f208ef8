//! An operator's day on the shipped topology, deployed as shipped: Redis with the shipped
//! ACL file, the daemon binary (`astra-bus run`, all 17 groups) and the CLI both as
//! `astra-worker`. One trade is dead-lettered by `financial.compliance` alone (the key it
//! counts in holds the wrong type), the operator fixes the key and runs `astra-bus dlq
//! replay --all --group financial.compliance`: compliance applies the trade once, and
//! every other key, every stream's entries, the audit chain and every `astra_business_*`
//! series stay byte-identical. Replaying again changes nothing.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use astra_bus::bus::Redis;
use astra_bus::bus::client::{arg, as_array, as_int, as_string};
use astra_bus::envelope::{ContentType, Envelope, now_ms};
use astra_bus::events::streams;
use astra_bus::handlers::{analytics, financial};
use support::bus::{connect, wait_until};
use support::edge::{Binary, get};
use support::{RedisOptions, RedisServer, TempDir, bin, repo_root, shipped_config_copy};

const GROUP: &str = "financial.compliance";
const WORKER_PW: &str = "worker-secret";

/// The shipped ACL file with the worker's password, plus a root user for the test's own
/// reads (SCAN, DUMP) and for the operator's fix.
fn redis_as_shipped(dir: &TempDir) -> RedisServer {
    let acl = std::fs::read_to_string(repo_root().join("setup/redis-users.acl"))
        .unwrap()
        .replace(
            "user astra-worker on resetpass",
            &format!("user astra-worker on resetpass >{WORKER_PW}"),
        )
        + "user test-root on >root-secret ~* &* +@all\n";
    let path = dir.join("users.acl");
    std::fs::write(&path, acl).unwrap();
    RedisServer::start_with(RedisOptions {
        extra: vec![("aclfile".into(), path.to_string_lossy().into_owned())],
        admin: Some(("test-root".into(), "root-secret".into())),
        ..Default::default()
    })
}

async fn publish(redis: &Redis, stream: &str, ts: i64, payload: serde_json::Value) -> String {
    let (domain, event, v) = astra_bus::config::parse_stream_name(stream).unwrap();
    let mut env = Envelope::root(
        &format!("{domain}.{event}"),
        v,
        "operator-test",
        None,
        ContentType::Json,
        serde_json::to_vec(&payload).unwrap(),
    );
    env.ts = ts;
    astra_bus::bus::publish::publish(redis, stream, &env)
        .await
        .unwrap();
    env.id
}

fn trade(id: &str, user: &str, qty: u32) -> serde_json::Value {
    serde_json::json!({"trade_id": id, "user_id": user, "symbol": "BTC", "side": "buy",
        "quantity": qty, "price_usd": 250, "fee_usd": 0.5})
}

/// Runs the CLI as the operator does, with the daemon's own environment.
fn cli(dir: &TempDir, url: &str, args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .args(["--config", dir.path.to_str().unwrap()])
        .env("ASTRA_REDIS_URL", url)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "astra-bus {args:?}: {text}");
    text
}

/// Every key of the database: non-streams by their DUMP, streams by their entries (a
/// stream's DUMP also holds its consumer groups' read positions and idle times).
async fn snapshot(root: &Redis) -> BTreeMap<String, Vec<u8>> {
    let mut keys = vec![];
    let mut cursor = "0".to_string();
    loop {
        let v = as_array(
            root.cmd(
                "SCAN",
                vec![arg(cursor.as_str()), arg("COUNT"), arg("1000")],
            )
            .await
            .unwrap(),
        )
        .unwrap();
        let mut it = v.into_iter();
        cursor = as_string(&it.next().unwrap()).unwrap();
        keys.extend(
            as_array(it.next().unwrap())
                .unwrap()
                .iter()
                .filter_map(as_string),
        );
        if cursor == "0" {
            break;
        }
    }
    let mut out = BTreeMap::new();
    for k in keys {
        let t = as_string(&root.cmd("TYPE", vec![arg(k.as_str())]).await.unwrap()).unwrap();
        let v = if t == "stream" {
            root.cmd("XRANGE", vec![arg(k.as_str()), arg("-"), arg("+")])
                .await
                .unwrap()
        } else {
            root.cmd("DUMP", vec![arg(k.as_str())]).await.unwrap()
        };
        out.insert(k, format!("{t} {v:?}").into_bytes());
    }
    out
}

/// The `astra_business_*` series of a scrape.
fn business(port: u16) -> Vec<String> {
    let (status, body) = get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    let mut lines: Vec<String> = body
        .lines()
        .filter(|l| l.starts_with("astra_business_"))
        .map(str::to_string)
        .collect();
    lines.sort();
    assert!(lines.len() >= 5, "business series scraped: {lines:?}");
    lines
}

/// Every group of the topology has read everything and has nothing pending (replay
/// streams included), three checks in a row.
async fn settled(root: &Redis, cfg: &astra_bus::config::Config) {
    let mut quiet = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while quiet < 3 {
        let rows = astra_bus::bus::status::status(root, cfg).await.unwrap();
        let mut busy = rows.iter().any(|r| r.pending > 0 || r.lag != Some(0));
        for g in &cfg.groups {
            busy |= !support::bus::replays_done(root, &g.name).await;
        }
        quiet = if busy { 0 } else { quiet + 1 };
        assert!(std::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Keys the replay itself writes, besides compliance's own state: the group's replay
/// stream, the resolved-dead-letter hash and the dead-letter count per group (checked on
/// their own), compliance's done markers, and the positions the health loop records every
/// refresh.
fn replay_machinery(key: &str) -> bool {
    key == astra_bus::bus::consume::replay_stream(GROUP)
        || key == astra_bus::bus::dlq::RESOLVED
        || key == astra_bus::bus::deadletter::DEAD_LETTER_COUNTS
        || key.starts_with(&format!("astra:dedup:{GROUP}:"))
        || key == "astra:groups:positions"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_one_compliance_dead_letter_changes_compliance_alone() {
    let acl_dir = TempDir::new("acl");
    let server = redis_as_shipped(&acl_dir);
    let root = connect(&server.url()).await;
    // The admin step (FUNCTION LOAD), as `astra-bus declare` does it.
    astra_bus::bus::script::ensure(&root).await.unwrap();
    let worker = server.url_as("astra-worker", WORKER_PW);

    let dir = shipped_config_copy();
    let streams_path = dir.join("streams.toml");
    let text = std::fs::read_to_string(&streams_path)
        .unwrap()
        .replace("block = \"2s\"", "block = \"100ms\"")
        .replace("refresh_interval = \"5s\"", "refresh_interval = \"200ms\"");
    std::fs::write(&streams_path, text).unwrap();
    let logs = TempDir::new("operator-logs");
    let daemon = Binary::start(
        &dir.path,
        "all",
        &[("ASTRA_REDIS_URL", worker.clone())],
        &logs,
    );
    let cfg = support::bus::load(
        &dir.path,
        &worker,
        "check",
        &astra_bus::handlers::Registry::builtin(),
    );

    // Ordinary traffic, then the victim: the key compliance counts the victim's trades
    // in holds a hash, so its INCRBY is refused (the eight other readers of the trade
    // apply it).
    let base = now_ms() / 60_000 * 60_000;
    for u in ["ann", "ben", "vic"] {
        publish(
            &root,
            streams::REGISTERED,
            base,
            serde_json::json!({"user_id": u, "display_name": u}),
        )
        .await;
    }
    for i in 0..6 {
        let user = if i % 2 == 0 { "ann" } else { "ben" };
        publish(
            &root,
            streams::TRADE_EXECUTED,
            base + 1_000,
            trade(&format!("t{i}"), user, 2),
        )
        .await;
    }
    let vkey = financial::velocity_key("vic", financial::velocity_bucket(base + 2_000, 60_000));
    root.cmd("HSET", vec![arg(vkey.as_str()), arg("x"), arg("1")])
        .await
        .unwrap();
    let victim = publish(
        &root,
        streams::TRADE_EXECUTED,
        base + 2_000,
        trade("victim", "vic", 3),
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "compliance dead-letters the trade",
        || async {
            astra_bus::bus::dlq::list(&root, streams::DEAD_LETTER, Some(GROUP), 10)
                .await
                .unwrap()
                .len()
                == 1
        },
    )
    .await;
    settled(&root, &cfg).await;
    let dead = astra_bus::bus::dlq::list(&root, streams::DEAD_LETTER, None, 100)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "only compliance dead-lettered it");
    assert_eq!(dead[0].event_id().as_deref(), Some(victim.as_str()));
    assert_eq!(dead[0].get("reason"), Some("failed"));
    let listed = cli(&dir, &worker, &["dlq", "list", "--group", GROUP]);
    assert!(
        listed.contains(&victim) || listed.contains(&dead[0].dlq_id),
        "{listed}"
    );

    // Wait for one more metrics refresh, then take the "before" picture.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = snapshot(&root).await;
    let business_before = business(daemon.port);
    let (audit_before, _) = astra_bus::bus::audit::verify(&root).await.unwrap();

    // The operator fixes the cause and replays, as the daemon's user.
    root.cmd("DEL", vec![arg(vkey.as_str())]).await.unwrap();
    let out = cli(&dir, &worker, &["dlq", "replay", "--all", "--group", GROUP]);
    assert!(out.contains("1 replayed") && out.contains(&victim), "{out}");
    wait_until(Duration::from_secs(30), "compliance applies it", || async {
        as_int(&root.cmd("GET", vec![arg(vkey.as_str())]).await.unwrap()) == Some(1)
    })
    .await;
    settled(&root, &cfg).await;
    tokio::time::sleep(Duration::from_millis(600)).await;

    // Compliance applied it once: the counter is 1, with its expiry.
    let ttl = as_int(&root.cmd("TTL", vec![arg(vkey.as_str())]).await.unwrap()).unwrap();
    assert!(ttl > 60, "the velocity counter expires: {ttl}");
    // Everything else is byte-identical.
    let after = snapshot(&root).await;
    let changed: std::collections::BTreeSet<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .filter(|k| !replay_machinery(k) && **k != vkey)
        .collect();
    assert!(changed.is_empty(), "keys the replay changed: {changed:?}");
    let counts =
        support::bus::hgetall_int(&root, astra_bus::bus::deadletter::DEAD_LETTER_COUNTS).await;
    assert_eq!(
        counts.iter().filter(|(_, n)| **n != 0).count(),
        0,
        "no dead letters counted any more: {counts:?}"
    );
    assert_eq!(business(daemon.port), business_before, "astra_business_*");
    let (audit_after, _) = astra_bus::bus::audit::verify(&root).await.unwrap();
    assert_eq!(audit_after, audit_before, "audit chain length");
    assert_eq!(
        as_int(
            &root
                .cmd("LLEN", vec![arg(analytics::audit_log_key())])
                .await
                .unwrap()
        ),
        Some(audit_before as i64)
    );
    assert!(
        astra_bus::bus::dlq::list(&root, streams::DEAD_LETTER, None, 100)
            .await
            .unwrap()
            .is_empty(),
        "the dead letter is resolved"
    );

    // Pressing the button again does nothing.
    let again = cli(&dir, &worker, &["dlq", "replay", "--all", "--group", GROUP]);
    assert!(again.contains("0 replayed"), "{again}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    settled(&root, &cfg).await;
    assert_eq!(
        as_int(&root.cmd("GET", vec![arg(vkey.as_str())]).await.unwrap()),
        Some(1)
    );
    let last = snapshot(&root).await;
    let changed: std::collections::BTreeSet<&String> = after
        .keys()
        .chain(last.keys())
        .filter(|k| after.get(*k) != last.get(*k))
        .filter(|k| **k != "astra:groups:positions")
        .collect();
    assert!(changed.is_empty(), "a second replay changed: {changed:?}");
    drop(daemon);
}
