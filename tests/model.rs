//! Model test: a random sequence of input events is applied twice, on two private Redis
//! servers, by the real daemon binary with the shipped topology and all 17 handlers:
//!
//! - the reference: one daemon, `batch_size = 1`, `concurrency = 1`, no faults, so the rule
//!   functions are applied one event at a time;
//! - the subject: two daemons with batches of 20, one killed with SIGKILL mid-run and
//!   restarted.
//!
//! Afterwards every projection whose value does not depend on processing order must be
//! identical, nothing may be pending or dead-lettered, and both audit chains verify.
//! (Order-dependent values are left out and listed below: which award crosses a level, a
//! feed's order, rank-change events, rolling windows pruned relative to the newest trade.)

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use astra_bus::bus::Redis;
use astra_bus::bus::client::{arg, as_array, as_int, as_pairs, as_string};
use astra_bus::config::Config;
use astra_bus::envelope::{ContentType, Envelope, now_ms};
use astra_bus::events::streams;
use astra_bus::handlers::Registry;
use support::bus::*;
use support::{DaemonProcess, RedisServer, Rng, TempDir, shipped_config_copy};

/// Key patterns whose final value depends on processing order (excluded).
const ORDER_DEPENDENT: &[&str] = &[
    "astra:dedup:",             // bookkeeping
    "astra:groups:",            // group positions (timing)
    "astra:social:feed:",       // list order
    "astra:analytics:{audit}:", // chain order (verified separately)
    "astra:trading:exposure:",  // pruned relative to the newest trade seen so far
    "astra:nft:collection:",    // sales window pruned likewise (counters compared via analytics)
];

/// Hash fields whose value depends on order (how awards partition level crossings).
const ORDER_DEPENDENT_FIELDS: &[&str] = &["level_ups"];

fn config_dir(url: &str, batch: usize, concurrency: usize) -> TempDir {
    let dir = shipped_config_copy();
    let p = dir.join("streams.toml");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace(
            "url = \"redis://127.0.0.1:6379\"",
            &format!("url = \"{url}\""),
        )
        .replace("batch_size = 100", &format!("batch_size = {batch}"))
        .replace("concurrency = 512", &format!("concurrency = {concurrency}"))
        .replace("block = \"2s\"", "block = \"50ms\"")
        .replace("claim_idle = \"30s\"", "claim_idle = \"1s\"");
    std::fs::write(&p, text).unwrap();
    dir
}

/// (stream, JSON payload, ts) of one input event.
type Input = (String, serde_json::Value, i64);

/// The random input sequence: registrations (all users, first), then trades,
/// interactions, subscriptions (one start per subscriber) and NFT sales.
fn sequence(rng: &mut Rng, n: usize, base: i64) -> (Vec<Input>, Vec<Input>) {
    let users: Vec<String> = (0..8).map(|i| format!("user{i}")).collect();
    let clans = ["owls", "foxes", "bears"];
    let mut first = vec![];
    for (i, u) in users.iter().enumerate() {
        let mut p = serde_json::json!({"user_id": u, "display_name": format!("User {i}")});
        if i % 4 != 3 {
            p["clan"] = clans[i % 3].into();
        }
        first.push((streams::REGISTERED.to_string(), p, base));
    }
    let mut rest = vec![];
    let mut subscribed = std::collections::HashSet::new();
    for i in 0..n {
        let ts = base + 1_000 + (i as i64) * 7;
        let u = &users[rng.range(0, users.len() as u64) as usize];
        let roll = rng.range(0, 100);
        let (stream, p) = if roll < 60 {
            let prices = [12.5, 99.0, 250.0, 1_000.0, 7_500.0, 31_000.0, 64_000.0];
            let qty = [0.01, 0.5, 1.0, 2.0, 10.0];
            let symbol = ["BTC", "ETH", "SOL"][rng.range(0, 3) as usize];
            let mut p = serde_json::json!({
                "trade_id": format!("t{i}"), "user_id": u,
                "symbol": symbol,
                "side": if rng.range(0, 2) == 0 { "buy" } else { "sell" },
                "quantity": qty[rng.range(0, qty.len() as u64) as usize],
                "price_usd": prices[rng.range(0, prices.len() as u64) as usize],
            });
            if rng.range(0, 3) == 0 {
                p["fee_usd"] = serde_json::json!(rng.range(0, 5000) as f64 / 100.0);
            }
            (streams::TRADE_EXECUTED, p)
        } else if roll < 88 {
            let mut t = &users[rng.range(0, users.len() as u64) as usize];
            if t == u {
                t = &users[(users.iter().position(|x| x == u).unwrap() + 1) % users.len()];
            }
            let kind = ["like", "comment", "share", "follow"][rng.range(0, 4) as usize];
            (
                streams::INTERACTION,
                serde_json::json!({"user_id": u, "target_user_id": t, "kind": kind}),
            )
        } else if roll < 94 && subscribed.insert(u.clone()) {
            let price = [9.99, 19.99, 49.99][rng.range(0, 3) as usize];
            (
                streams::SUBSCRIPTION_CHANGED,
                serde_json::json!({"user_id": u, "plan": "pro", "action": "started", "price_usd": price}),
            )
        } else {
            let buyer = &users[(users.iter().position(|x| x == u).unwrap() + 3) % users.len()];
            let collection = ["genesis", "punks"][rng.range(0, 2) as usize];
            let price = [50.0, 120.0, 999.99][rng.range(0, 3) as usize];
            (
                streams::SALE_COMPLETED,
                serde_json::json!({
                    "sale_id": format!("s{i}"), "collection": collection,
                    "token_id": i.to_string(), "seller_id": u, "buyer_id": buyer,
                    "price_usd": price
                }),
            )
        };
        rest.push((stream.to_string(), p, ts));
    }
    (first, rest)
}

async fn publish_all(redis: &Redis, cfg: &Config, events: &[Input]) {
    let mut batch = vec![];
    for (stream, p, ts) in events {
        let s = cfg.stream(stream).unwrap();
        let mut env = Envelope::root(
            &s.event_type(),
            s.version,
            "model",
            None,
            ContentType::MsgPack,
            rmp_serde::to_vec_named(p).unwrap(),
        );
        env.ts = *ts;
        batch.push((stream.clone(), env));
    }
    for chunk in batch.chunks(200) {
        astra_bus::bus::publish::publish_many(redis, chunk)
            .await
            .unwrap();
    }
}

async fn quiet(redis: &Redis, cfg: &Config) -> bool {
    let rows = astra_bus::bus::status::status(redis, cfg).await.unwrap();
    rows.iter().all(|r| r.pending == 0 && r.lag == Some(0))
}

async fn drain(redis: &Redis, cfg: &Config, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut streak = 0;
    while streak < 3 {
        assert!(Instant::now() < deadline, "did not drain");
        streak = if quiet(redis, cfg).await {
            streak + 1
        } else {
            0
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Canonical text of every order-independent key.
async fn snapshot(redis: &Redis) -> BTreeMap<String, String> {
    let mut keys = vec![];
    let mut cursor = "0".to_string();
    loop {
        let v = redis
            .cmd(
                "SCAN",
                vec![
                    arg(cursor.as_str()),
                    arg("MATCH"),
                    arg("astra:*"),
                    arg("COUNT"),
                    arg(1000),
                ],
            )
            .await
            .unwrap();
        let mut a = as_array(v).unwrap().into_iter();
        cursor = as_string(&a.next().unwrap()).unwrap();
        keys.extend(
            as_array(a.next().unwrap())
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
        if ORDER_DEPENDENT.iter().any(|p| k.starts_with(p)) {
            continue;
        }
        let t = as_string(&redis.cmd("TYPE", vec![arg(k.as_str())]).await.unwrap()).unwrap();
        let text = match t.as_str() {
            "hash" => {
                let m: BTreeMap<String, String> =
                    as_pairs(redis.cmd("HGETALL", vec![arg(k.as_str())]).await.unwrap())
                        .into_iter()
                        .filter(|(f, _)| !ORDER_DEPENDENT_FIELDS.contains(&f.as_str()))
                        .map(|(f, v)| (f, as_string(&v).unwrap_or_default()))
                        .collect();
                format!("{m:?}")
            }
            "set" => {
                let mut m: Vec<String> =
                    as_array(redis.cmd("SMEMBERS", vec![arg(k.as_str())]).await.unwrap())
                        .unwrap()
                        .iter()
                        .filter_map(as_string)
                        .collect();
                m.sort();
                format!("{m:?}")
            }
            "zset" => {
                let a = as_array(
                    redis
                        .cmd(
                            "ZRANGE",
                            vec![arg(k.as_str()), arg(0), arg(-1), arg("WITHSCORES")],
                        )
                        .await
                        .unwrap(),
                )
                .unwrap();
                let mut m: Vec<(String, String)> = a
                    .chunks(2)
                    .map(|c| (as_string(&c[0]).unwrap(), as_string(&c[1]).unwrap()))
                    .collect();
                m.sort();
                format!("{m:?}")
            }
            "string" if k.contains(":dau:") => {
                format!(
                    "pfcount {:?}",
                    as_int(&redis.cmd("PFCOUNT", vec![arg(k.as_str())]).await.unwrap())
                )
            }
            "string" => as_string(&redis.cmd("GET", vec![arg(k.as_str())]).await.unwrap())
                .unwrap_or_default(),
            "stream" => {
                // Derived streams whose entry count is order-independent.
                let counted = [
                    streams::XP_AWARDED,
                    streams::ACHIEVEMENT_UNLOCKED,
                    streams::REWARD_ISSUED,
                    streams::POSITION_UPDATED,
                    streams::REVENUE_RECORDED,
                    streams::COMPLIANCE_FLAGGED,
                    streams::CLAN_SCORE_UPDATED,
                    streams::INFLUENCE_UPDATED,
                    streams::DEAD_LETTER,
                ];
                if !counted.contains(&k.as_str()) {
                    continue;
                }
                format!(
                    "xlen {:?}",
                    as_int(&redis.cmd("XLEN", vec![arg(k.as_str())]).await.unwrap())
                )
            }
            other => format!("<{other}>"),
        };
        out.insert(k, text);
    }
    out
}

async fn run_case(
    server: &RedisServer,
    dir: &Path,
    first: &[Input],
    rest: &[Input],
    faults: Option<&mut Rng>,
) -> BTreeMap<String, String> {
    let url = server.url();
    let reg = Registry::builtin();
    let cfg = load(dir, &url, "model", &reg);
    let redis = connect(&url).await;
    let logs = TempDir::new("model-logs");
    let mut a = DaemonProcess::start(dir, &url, "model-a", &logs.path);
    let mut b = faults
        .is_some()
        .then(|| DaemonProcess::start(dir, &url, "model-b", &logs.path));
    // Registrations first (clan membership must be known before XP counts for a clan).
    publish_all(&redis, &cfg, first).await;
    drain(&redis, &cfg, Duration::from_secs(120)).await;
    publish_all(&redis, &cfg, rest).await;
    if let Some(rng) = faults {
        // Kill one daemon mid-run, then restart it under the same name.
        tokio::time::sleep(Duration::from_millis(rng.range(30, 300))).await;
        assert!(!quiet(&redis, &cfg).await, "the kill must land mid-run");
        a.kill9();
        tokio::time::sleep(Duration::from_millis(rng.range(100, 1500))).await;
        a = DaemonProcess::start(dir, &url, "model-a", &logs.path);
    }
    drain(&redis, &cfg, Duration::from_secs(300)).await;
    for d in [Some(&mut a), b.as_mut()].into_iter().flatten() {
        let (st, _) = d.terminate(Duration::from_secs(20));
        assert!(st.success(), "{}", d.log_text());
    }
    assert_eq!(
        xlen(&redis, streams::DEAD_LETTER).await,
        0,
        "{:?}",
        read_raw(&redis, streams::DEAD_LETTER).await
    );
    let (records, _) = astra_bus::bus::audit::verify(&redis).await.unwrap();
    let mut events = 0;
    for s in &cfg.streams {
        if s.name != streams::DEAD_LETTER {
            events += xlen(&redis, &s.name).await;
        }
    }
    assert_eq!(records as i64, events, "every event audited exactly once");
    snapshot(&redis).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_and_crashing_daemons_end_in_the_sequential_state() {
    let mut rng = Rng::from_env();
    let base = now_ms() / 60_000 * 60_000;
    let (first, rest) = sequence(&mut rng, 1500, base);

    let reference_server = RedisServer::start();
    let reference_dir = config_dir(&reference_server.url(), 1, 1);
    let reference = run_case(&reference_server, &reference_dir.path, &first, &rest, None).await;

    let subject_server = RedisServer::start();
    let subject_dir = config_dir(&subject_server.url(), 20, 80);
    let subject = run_case(
        &subject_server,
        &subject_dir.path,
        &first,
        &rest,
        Some(&mut rng),
    )
    .await;

    assert!(
        reference.len() > 50,
        "the snapshot covers the projections: {}",
        reference.len()
    );
    let only_ref: Vec<_> = reference
        .keys()
        .filter(|k| !subject.contains_key(*k))
        .collect();
    let only_sub: Vec<_> = subject
        .keys()
        .filter(|k| !reference.contains_key(*k))
        .collect();
    assert!(
        only_ref.is_empty() && only_sub.is_empty(),
        "keys differ: {only_ref:?} / {only_sub:?}"
    );
    let diffs: Vec<_> = reference
        .iter()
        .filter(|(k, v)| subject.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}:\n  sequential {v}\n  concurrent {}", subject[k]))
        .collect();
    assert!(
        diffs.is_empty(),
        "{} keys differ:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}
