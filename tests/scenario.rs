//! The end-to-end scenario against real Redis with the shipped topology and all 17
//! handlers: 3 registered users (two in one clan), 60 trades of known sizes, social
//! interactions, a subscription and an NFT sale, published through the real publish path.
//! After the daemon drains, every projection is asserted exactly, the audit chain
//! verifies, and `astra-bus trace` prints one trade's tree of derived events.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use astra_bus::bus::Redis;
use astra_bus::bus::client::{arg, as_array, as_int, as_string};
use astra_bus::config::Config;
use astra_bus::envelope::{ContentType, Envelope, now_ms};
use astra_bus::events::{LevelUp, streams};
use astra_bus::handlers::{
    Registry, analytics, financial, gamification, nft, social, trading, user,
};
use support::bus::*;
use support::{RedisServer, bin, shipped_config_copy};

const ALICE: &str = "alice";
const BOB: &str = "bob";
const CAROL: &str = "carol";

async fn publish(
    redis: &Redis,
    cfg: &Config,
    stream: &str,
    ts: i64,
    cid: Option<&str>,
    payload: serde_json::Value,
) {
    let s = cfg.stream(stream).unwrap();
    let mut env = Envelope::root(
        &s.event_type(),
        s.version,
        "scenario",
        cid.map(str::to_string),
        ContentType::MsgPack,
        rmp_serde::to_vec_named(&payload).unwrap(),
    );
    env.ts = ts;
    astra_bus::events::validate_json(stream, &payload).unwrap();
    astra_bus::bus::publish::publish(redis, stream, &env)
        .await
        .unwrap();
}

/// Waits until every group has nothing pending and no lag, twice in a row.
async fn drained(redis: &Redis, cfg: &Config) {
    let mut quiet = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while quiet < 3 {
        let rows = astra_bus::bus::status::status(redis, cfg).await.unwrap();
        let busy = rows.iter().any(|r| r.pending > 0 || r.lag != Some(0));
        quiet = if busy { 0 } else { quiet + 1 };
        assert!(
            std::time::Instant::now() < deadline,
            "topology did not drain: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn zscores(redis: &Redis, key: &str) -> Vec<(String, i64)> {
    let v = redis
        .cmd(
            "ZREVRANGE",
            vec![arg(key), arg(0), arg(-1), arg("WITHSCORES")],
        )
        .await
        .unwrap();
    let a = as_array(v).unwrap_or_default();
    a.chunks(2)
        .map(|c| {
            (
                as_string(&c[0]).unwrap(),
                as_string(&c[1]).unwrap().parse::<f64>().unwrap() as i64,
            )
        })
        .collect()
}

async fn smembers(redis: &Redis, key: &str) -> BTreeSet<String> {
    let v = redis.cmd("SMEMBERS", vec![arg(key)]).await.unwrap();
    as_array(v)
        .unwrap_or_default()
        .iter()
        .filter_map(as_string)
        .collect()
}

async fn llen(redis: &Redis, key: &str) -> i64 {
    as_int(&redis.cmd("LLEN", vec![arg(key)]).await.unwrap()).unwrap()
}

async fn payloads<T: serde::de::DeserializeOwned>(redis: &Redis, stream: &str) -> Vec<T> {
    read_all(redis, stream)
        .await
        .into_iter()
        .map(|(_, e)| e.payload::<T>().unwrap())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_scenario_is_exact() {
    let server = RedisServer::start();
    scenario(&server.url(), &server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_scenario_is_exact_on_a_redis_cluster() {
    // The harness's 3-master cluster; the daemon, the CLI and the checks all connect with
    // a redis-cluster:// URL naming the three masters as seeds.
    let cluster = support::RedisCluster::start();
    scenario(&cluster.url(), &cluster.url()).await;
    // The data really is spread over the three masters, and commits kept per-slot
    // de-duplication markers (`astra:dedup:{<slot tag>}:…`) on each of them.
    for port in &cluster.ports {
        let keys = support::raw_command(*port, &["DBSIZE"]).unwrap();
        let n: i64 = keys.trim().trim_start_matches(':').parse().unwrap();
        assert!(n > 10, "master {port} holds {n} keys");
        let scan = support::raw_command(
            *port,
            &["SCAN", "0", "MATCH", "astra:dedup:{*", "COUNT", "100000"],
        )
        .unwrap();
        assert!(
            scan.contains("astra:dedup:{"),
            "master {port} has per-slot markers: {scan}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_scenario_is_exact_behind_sentinels() {
    // A primary, a replica and three Sentinels; the daemon and the CLI find the primary
    // through the Sentinels (redis-sentinel:// URL).
    let set = support::SentinelSet::start();
    scenario(&set.url(), &set.url()).await;
    // Everything was written to the primary and replicated.
    let keys = |s: &RedisServer| s.cli(&["DBSIZE"]).parse::<i64>().unwrap();
    assert!(keys(&set.primary) > 50);
    wait_until(Duration::from_secs(10), "the replica caught up", || async {
        keys(&set.replica) == keys(&set.primary)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_scenario_runs_as_the_least_privilege_worker() {
    // The shipped ACL file, with passwords given to its users and an admin for the test's
    // own checks; the default user is off.
    let acl_dir = support::TempDir::new("acl");
    let shipped =
        std::fs::read_to_string(support::repo_root().join("setup/redis-users.acl")).unwrap();
    let acl = shipped.replace(
        "user astra-worker on resetpass",
        "user astra-worker on resetpass >worker-pass",
    ) + "user test-admin on >admin-pass ~* &* +@all\n";
    let acl_path = acl_dir.join("users.acl");
    std::fs::write(&acl_path, acl).unwrap();
    let server = RedisServer::start_with(support::RedisOptions {
        extra: vec![("aclfile".into(), acl_path.to_string_lossy().into_owned())],
        admin: Some(("test-admin".into(), "admin-pass".into())),
        ..Default::default()
    });
    // Unauthenticated clients get nothing.
    let anon = support::raw_command(server.port, &["PING"]).unwrap();
    assert!(anon.starts_with("-NOAUTH"), "{anon}");
    // The admin step: load the function library (the worker may only call it).
    astra_bus::bus::script::ensure(&connect(&server.url()).await)
        .await
        .expect("admin loads the functions");
    let worker = server.url_as("astra-worker", "worker-pass");
    scenario(&worker, &server.url()).await;
    // The paths that run on timers (reclaim, consumer pruning, retention, the health
    // refresh) work as the worker too.
    let w = connect(&worker).await;
    let reg = Registry::builtin();
    let cfg = load(&shipped_config_copy().path, &worker, "acl", &reg);
    astra_bus::bus::status::snapshot(&w, &cfg)
        .await
        .expect("health refresh as worker");
    for s in &cfg.streams {
        astra_bus::bus::retention::trim_stream(&w, s)
            .await
            .expect("retention as worker");
    }
    let group = cfg.group("gamification.xp_processing").unwrap();
    let ctx = std::sync::Arc::new(astra_bus::bus::consume::GroupContext::new(
        w.clone(),
        group.clone(),
        reg.build(group).unwrap(),
        "acl-check",
        Duration::from_secs(60),
        astra_bus::metrics::Metrics::new(),
    ));
    let (_t, shutdown) = astra_bus::shutdown::Shutdown::new();
    astra_bus::bus::reclaim::reclaim_once(&ctx, streams::TRADE_EXECUTED, &shutdown)
        .await
        .expect("reclaim as worker");
    astra_bus::bus::reclaim::remove_idle_consumers(
        &ctx,
        streams::TRADE_EXECUTED,
        Duration::from_secs(1),
    )
    .await
    .expect("consumer pruning as worker");
    // What the worker must not do is refused.
    for (cmd, args) in [
        ("FLUSHALL", vec![]),
        ("CONFIG", vec!["GET", "maxmemory"]),
        ("KEYS", vec!["*"]),
        (
            "XGROUP",
            vec![
                "DESTROY",
                streams::TRADE_EXECUTED,
                "gamification.xp_processing",
            ],
        ),
        ("XDEL", vec![streams::TRADE_EXECUTED, "0-1"]),
        ("GET", vec!["not-an-astra-key"]),
    ] {
        let err = w
            .cmd(cmd, args.into_iter().map(arg).collect())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("NOPERM"), "{cmd}: {err}");
    }
}

/// Runs the scenario: the daemon and the CLI connect with `daemon_url`; publishing and
/// the checks use `admin_url`.
async fn scenario(daemon_url: &str, admin_url: &str) {
    let url = daemon_url.to_string();
    let dir = shipped_config_copy();
    // Faster polling for a test; everything else as shipped.
    let streams_path = dir.join("streams.toml");
    let text = std::fs::read_to_string(&streams_path)
        .unwrap()
        .replace("block = \"2s\"", "block = \"100ms\"");
    std::fs::write(&streams_path, text).unwrap();
    let reg = Registry::builtin();
    let cfg = load(&dir.path, &url, "scenario", &reg);
    let daemon = InProc::start(cfg.clone(), reg).await;
    let redis = connect(admin_url).await;

    // All events happen within one minute (fixed velocity windows), today (UTC).
    let base = now_ms() / 60_000 * 60_000;
    let day = astra_bus::handlers::utc_day(base);
    let week = gamification::iso_week(base);

    // 1. Registrations first, so clan membership is known before any XP.
    publish(
        &redis,
        &cfg,
        streams::REGISTERED,
        base,
        None,
        serde_json::json!({"user_id": ALICE, "display_name": "Alice", "clan": "owls"}),
    )
    .await;
    publish(
        &redis,
        &cfg,
        streams::REGISTERED,
        base,
        None,
        serde_json::json!({"user_id": BOB, "display_name": "Bob", "clan": "owls"}),
    )
    .await;
    publish(
        &redis,
        &cfg,
        streams::REGISTERED,
        base,
        None,
        serde_json::json!({"user_id": CAROL, "display_name": "Carol"}),
    )
    .await;
    drained(&redis, &cfg).await;

    // 2. 60 trades: alice 20 × $6,000 (fee $6 each), bob 20 × $60,000 (no fee: 0.1%),
    //    carol 20 × $100 (no fee). Bob's 7th trade carries a known correlation id.
    for i in 0..20i64 {
        let ts = base + 1000 + i;
        publish(&redis, &cfg, streams::TRADE_EXECUTED, ts, None,
            serde_json::json!({"trade_id": format!("a{i}"), "user_id": ALICE, "symbol": "BTC", "side": "buy", "quantity": 0.1, "price_usd": 60000.0, "fee_usd": 6.0})).await;
        let cid = (i == 6).then_some("trace-bob-7");
        publish(&redis, &cfg, streams::TRADE_EXECUTED, ts, cid,
            serde_json::json!({"trade_id": format!("b{i}"), "user_id": BOB, "symbol": "ETH", "side": if i % 2 == 0 { "buy" } else { "sell" }, "quantity": 20, "price_usd": 3000})).await;
        publish(&redis, &cfg, streams::TRADE_EXECUTED, ts, None,
            serde_json::json!({"trade_id": format!("c{i}"), "user_id": CAROL, "symbol": "SOL", "side": "buy", "quantity": 1, "price_usd": 100})).await;
    }
    // 3. Interactions: alice likes bob ×3, carol follows alice, bob comments on carol ×2,
    //    bob shares alice.
    let interactions = [
        (ALICE, BOB, "like"),
        (ALICE, BOB, "like"),
        (ALICE, BOB, "like"),
        (CAROL, ALICE, "follow"),
        (BOB, CAROL, "comment"),
        (BOB, CAROL, "comment"),
        (BOB, ALICE, "share"),
    ];
    for (from, to, kind) in interactions {
        publish(
            &redis,
            &cfg,
            streams::INTERACTION,
            base + 2000,
            None,
            serde_json::json!({"user_id": from, "target_user_id": to, "kind": kind}),
        )
        .await;
    }
    // 4. A subscription and an NFT sale.
    publish(&redis, &cfg, streams::SUBSCRIPTION_CHANGED, base + 3000, None,
        serde_json::json!({"user_id": CAROL, "plan": "pro", "action": "started", "price_usd": 49.99})).await;
    publish(&redis, &cfg, streams::SALE_COMPLETED, base + 3000, None,
        serde_json::json!({"sale_id": "s1", "collection": "genesis", "token_id": "42", "seller_id": ALICE, "buyer_id": BOB, "price_usd": 1000})).await;
    drained(&redis, &cfg).await;

    // XP: alice 20 × (10 + 60) + 3 likes; bob 20 × 500 (capped) + 2 comments × 2 + share 3;
    // carol 20 × (10 + 1) + follow 1.
    let xp = hgetall_int(&redis, &gamification::xp_key()).await;
    let expected_xp: BTreeMap<String, i64> = [(ALICE, 1403), (BOB, 10_007), (CAROL, 221)]
        .iter()
        .map(|(u, x)| (u.to_string(), *x))
        .collect();
    assert_eq!(xp, expected_xp);

    // Levels: level L needs 100·(L−1)² XP → alice 4, bob 11, carol 2. Every level is
    // reached by exactly one level_up event (the from→to ranges partition 1..final).
    let level_ups: Vec<LevelUp> = payloads(&redis, streams::LEVEL_UP).await;
    for (u, final_level) in [(ALICE, 4u32), (BOB, 11), (CAROL, 2)] {
        let mut ranges: Vec<(u32, u32)> = level_ups
            .iter()
            .filter(|l| l.user_id == u)
            .map(|l| (l.from, l.to))
            .collect();
        ranges.sort();
        let mut at = 1;
        for (from, to) in &ranges {
            assert_eq!(*from, at, "{u}: level ups {ranges:?}");
            at = *to;
        }
        assert_eq!(at, final_level, "{u}: {ranges:?}");
    }

    // Leaderboards: same order on every board.
    for board in ["daily", "weekly", "all_time"] {
        let key = gamification::current_board_key(board, base).unwrap();
        assert_eq!(
            zscores(&redis, &key).await,
            vec![
                (BOB.into(), 10_007),
                (ALICE.into(), 1403),
                (CAROL.into(), 221)
            ],
            "{board}"
        );
    }

    // Achievements.
    let r = &redis;
    let ach = |u| async move { smembers(r, &gamification::achievements_key(u)).await };
    assert_eq!(
        ach(ALICE).await,
        set(&["first_trade", "trades_10", "volume_100k"])
    );
    assert_eq!(
        ach(BOB).await,
        set(&[
            "first_trade",
            "trades_10",
            "volume_100k",
            "level_5",
            "level_10",
            "xp_10k"
        ])
    );
    assert_eq!(ach(CAROL).await, set(&["first_trade", "trades_10"]));
    assert_eq!(xlen(&redis, streams::ACHIEVEMENT_UNLOCKED).await, 11);

    // Feeds: 11 achievements + every level-up + bob's 20 trades ≥ $10,000.
    let n_level_ups = level_ups.len() as i64;
    assert_eq!(
        llen(&redis, &social::global_feed_key()).await,
        11 + n_level_ups + 20
    );
    let bob_level_ups = level_ups.iter().filter(|l| l.user_id == BOB).count() as i64;
    assert_eq!(
        llen(&redis, &social::user_feed_key(BOB)).await,
        6 + bob_level_ups + 20
    );
    assert_eq!(
        xlen(&redis, streams::FEED_ITEM_POSTED).await,
        11 + n_level_ups + 20
    );

    // Clan battles: owls = alice + bob; carol has no clan.
    assert_eq!(
        zscores(&redis, &social::clan_scores_key(&week)).await,
        vec![("owls".into(), 1403 + 10_007)]
    );

    // Influence: alice 10 (follow) + 5 (share); bob 3 likes; carol 2 comments × 3.
    let mut infl = zscores(&redis, &social::influence_key()).await;
    infl.sort();
    assert_eq!(
        infl,
        vec![(ALICE.into(), 15), (BOB.into(), 3), (CAROL.into(), 6)]
    );

    // Revenue: trade fees 20×600 + 20×6000 (0.1% of 60,000) + 20×10 (0.1% of 100) cents;
    // subscription 4999; NFT fee 2.5% of 1000 USD, booked to the seller.
    let rev = hgetall_int(&redis, &financial::revenue_day_key(&day)).await;
    assert_eq!(rev.get(financial::SOURCE_TRADE_FEE), Some(&132_200));
    assert_eq!(rev.get(financial::SOURCE_SUBSCRIPTION), Some(&4_999));
    assert_eq!(rev.get(financial::SOURCE_NFT_FEE), Some(&2_500));
    assert_eq!(rev.get(financial::REVENUE_TOTAL), Some(&139_699));
    assert_eq!(xlen(&redis, streams::REVENUE_RECORDED).await, 62);
    assert_eq!(
        smembers(&redis, &financial::subscribers_key()).await,
        set(&[CAROL])
    );
    assert_eq!(
        as_int(
            &redis
                .cmd("GET", vec![arg(financial::mrr_key().as_str())])
                .await
                .unwrap()
        ),
        Some(4_999)
    );

    // Compliance: bob's 20 large trades; each user's 20 trades in one minute → one
    // velocity flag each.
    let flags = |u| async move { hgetall_int(r, &financial::compliance_flags_key(u)).await };
    assert_eq!(
        flags(BOB).await,
        [("large_trade".to_string(), 20), ("velocity".to_string(), 1)]
            .into_iter()
            .collect()
    );
    assert_eq!(
        flags(ALICE).await,
        [("velocity".to_string(), 1)].into_iter().collect()
    );
    assert_eq!(
        flags(CAROL).await,
        [("velocity".to_string(), 1)].into_iter().collect()
    );
    assert_eq!(xlen(&redis, streams::COMPLIANCE_FLAGGED).await, 23);

    // Risk: alice crosses $100k gross exposure on her 17th trade, bob on his 2nd: one
    // alert each.
    let alerts: Vec<astra_bus::events::RiskAlert> = payloads(&redis, streams::RISK_ALERT).await;
    let alerted: BTreeSet<&str> = alerts.iter().map(|a| a.user_id.as_str()).collect();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerted, [ALICE, BOB].into_iter().collect());

    // Trading stats and positions.
    let stats = hgetall_int(&redis, &trading::stats_key(BOB)).await;
    assert_eq!(stats.get(trading::STATS_TRADES), Some(&20));
    assert_eq!(stats.get(trading::STATS_VOLUME_CENTS), Some(&120_000_000));
    let pos = hgetall_int(&redis, &trading::positions_key(ALICE)).await;
    assert_eq!(
        pos.get("BTC"),
        Some(&200_000_000),
        "20 × 0.1 BTC in 1e-8 units"
    );
    assert_eq!(
        hgetall_int(&redis, &trading::positions_key(BOB))
            .await
            .get("ETH"),
        Some(&0),
        "10 buys, 10 sells"
    );
    assert_eq!(xlen(&redis, streams::POSITION_UPDATED).await, 60);

    // Rewards: a badge per achievement (11) + bob's bronze and silver.
    assert_eq!(smembers(&redis, &nft::rewards_key(BOB)).await.len(), 8);
    assert!(
        smembers(&redis, &nft::rewards_key(BOB))
            .await
            .is_superset(&set(&["bronze_badge", "silver_badge", "xp_10k_badge"]))
    );
    assert_eq!(xlen(&redis, streams::REWARD_ISSUED).await, 13);
    // Notifications: achievements + rewards + level-ups.
    assert_eq!(
        xlen(&redis, streams::NOTIFICATION_REQUESTED).await,
        11 + 13 + n_level_ups
    );

    // Marketplace.
    let coll = hgetall_int(&redis, &nft::collection_key("genesis")).await;
    assert_eq!(coll.get(nft::FIELD_VOLUME_CENTS), Some(&100_000));
    assert_eq!(coll.get(nft::FIELD_SALES), Some(&1));

    // Profiles.
    let v = redis
        .cmd("HGETALL", vec![arg(user::profile_key(ALICE).as_str())])
        .await
        .unwrap();
    let profile: BTreeMap<String, String> = astra_bus::bus::client::as_pairs(v)
        .into_iter()
        .map(|(k, v)| (k, as_string(&v).unwrap()))
        .collect();
    assert_eq!(
        profile.get("display_name").map(String::as_str),
        Some("Alice")
    );
    assert_eq!(profile.get("clan").map(String::as_str), Some("owls"));
    assert_eq!(profile.get("xp").map(String::as_str), Some("1403"));
    assert_eq!(profile.get("level").map(String::as_str), Some("4"));
    assert_eq!(profile.get("achievements").map(String::as_str), Some("3"));
    assert_eq!(profile.get("trades").map(String::as_str), Some("20"));

    // KPI counters for the day.
    let kpi = hgetall_int(&redis, &analytics::day_key(&day)).await;
    let k = |f: &str| kpi.get(f).copied().unwrap_or(0);
    assert_eq!(k(analytics::field::TRADES), 60);
    assert_eq!(
        k(analytics::field::VOLUME_CENTS),
        20 * 600_000 + 20 * 6_000_000 + 20 * 10_000
    );
    assert_eq!(k(analytics::field::INTERACTIONS), 7);
    assert_eq!(k(analytics::field::REGISTRATIONS), 3);
    assert_eq!(k(analytics::field::XP), 1403 + 10_007 + 221);
    assert_eq!(k(analytics::field::LEVEL_UPS), n_level_ups);
    assert_eq!(k(analytics::field::ACHIEVEMENTS), 11);
    assert_eq!(k(analytics::field::REWARDS), 13);
    assert_eq!(k(analytics::field::SUBSCRIPTIONS_STARTED), 1);
    assert_eq!(k(analytics::field::NFT_SALES), 1);
    assert_eq!(k(analytics::field::NFT_VOLUME_CENTS), 100_000);
    assert_eq!(k("revenue_cents:trade_fee"), 132_200);
    assert_eq!(k("revenue_cents:subscription"), 4_999);
    assert_eq!(k("revenue_cents:nft_fee"), 2_500);
    let dau = as_int(
        &redis
            .cmd("PFCOUNT", vec![arg(analytics::dau_key(&day).as_str())])
            .await
            .unwrap(),
    );
    assert_eq!(dau, Some(3));

    // Nothing dead-lettered, nothing pending.
    assert_eq!(
        xlen(&redis, streams::DEAD_LETTER).await,
        0,
        "{:?}",
        read_raw(&redis, streams::DEAD_LETTER).await
    );
    daemon.stop().await;

    // The audit chain holds every business event and verifies.
    let mut business_events = 0;
    for s in &cfg.streams {
        if s.name != streams::DEAD_LETTER {
            business_events += xlen(&redis, &s.name).await;
        }
    }
    let (records, _) = astra_bus::bus::audit::verify(&redis).await.unwrap();
    assert_eq!(records as i64, business_events);
    let out = Command::new(bin())
        .args(["audit", "verify", "--config", dir.path.to_str().unwrap()])
        .env("ASTRA_REDIS_URL", &url)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with(&format!("ok: {business_events} audit records"))
    );
    // Tampering is detected: edit one record in the middle.
    let log = analytics::audit_log_key();
    let mid = business_events / 2;
    let rec = redis
        .cmd("LINDEX", vec![arg(log.as_str()), arg(mid)])
        .await
        .unwrap();
    let mut bytes = astra_bus::bus::client::as_bytes(&rec).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 1;
    redis
        .cmd(
            "LSET",
            vec![
                arg(log.as_str()),
                arg(mid),
                astra_bus::bus::client::Value::Bytes(bytes.into()),
            ],
        )
        .await
        .unwrap();
    let out = Command::new(bin())
        .args(["audit", "verify", "--config", dir.path.to_str().unwrap()])
        .env("ASTRA_REDIS_URL", &url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("broken: audit chain broken at record {mid}")),
        "{text}"
    );

    // trace: bob's 7th trade and everything derived from it.
    let out = Command::new(bin())
        .args([
            "trace",
            "trace-bob-7",
            "--config",
            dir.path.to_str().unwrap(),
        ])
        .env("ASTRA_REDIS_URL", &url)
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{tree}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tree.starts_with("trading.trade_executed "), "{tree}");
    for child in [
        "└─ trading.position_updated",
        "└─ gamification.xp_awarded",
        "└─ financial.revenue_recorded",
        "└─ financial.compliance_flagged",
        "└─ social.feed_item_posted",
        "   └─ user.profile_updated",
    ] {
        assert!(tree.contains(child), "missing {child:?} in\n{tree}");
    }
    let nodes = tree.lines().filter(|l| l.contains(" [astra.")).count();
    assert!(
        tree.trim_end().ends_with(&format!("{nodes} events")),
        "{tree}"
    );
}
