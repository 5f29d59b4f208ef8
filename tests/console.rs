//! The operator's console in a real browser: Debian's headless Chromium driven over the
//! W3C WebDriver protocol (chromedriver) against three `astra-bus` processes on one real
//! Redis with the shipped topology under load: a console daemon (`--role edge`, the full
//! config), one worker running 16 groups and one running `nft.marketplace` alone (so the
//! test can stop one group's consumer, as an outage would).
//!
//! Checked in the page: 17 group nodes and exactly the config's stream → group → stream
//! edges; stopping the marketplace worker and a burst of sales turn its edge amber within
//! a refresh while its siblings stay green; a dead letter the test causes appears with its
//! reason, attempts and payload (markup in it stays text), is replayed from the page, and
//! disappears with its group applying it once (and audited in the log); a trace id typed
//! in shows the tree `astra-bus trace` prints; and ten open consoles add no Redis command
//! over several refreshes (INFO commandstats). Screenshots go to
//! `target/console-screenshots/` (or `ASTRA_SCREENSHOT_DIR`).
//!
//! A second test checks the console API without a browser: the ops scope, confirmations,
//! bad input and the audit lines.

#[path = "support/console_env.rs"]
mod console_env;
mod support;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use astra_bus::bus::client::arg;
use astra_bus::config::{Config, hex, key_sha256};
use astra_bus::envelope::{ContentType, Envelope, now_ms};
use astra_bus::events::streams;
use astra_bus::handlers::nft;
use console_env::*;
use serde_json::{Value, json};
use support::{RedisServer, TempDir, bin, free_port};
use webdriver::Driver;

const MARKET: &str = "nft.marketplace";
const REFRESH: Duration = Duration::from_secs(1);

#[test]
fn the_console_in_chromium_shows_the_running_bus() {
    let started = Instant::now();
    let shots = screenshot_dir();
    let tmp = TempDir::new("console");
    let server = RedisServer::start();
    let url = server.url();
    let full = config_dir(|_| true, |t| t);
    let others = config_dir(|g| g != MARKET, |t| t);
    let market_only = config_dir(|g| g == MARKET, |t| t);
    let url2 = url.clone();
    let cfg = Config::load_with_env(&full.path, move |k| {
        (k == "ASTRA_REDIS_URL").then(|| url2.clone())
    })
    .unwrap();
    assert_eq!(cfg.groups.len(), 17);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = rt.block_on(support::bus::connect(&url));

    let mut w_main = Daemon::start(
        &others.path,
        &url,
        "w-main",
        "127.0.0.1:0",
        false,
        &tmp.path,
    );
    let mut w_market = Daemon::start(
        &market_only.path,
        &url,
        "w-market",
        "127.0.0.1:0",
        false,
        &tmp.path,
    );
    let port = free_port();
    let console = Daemon::start(
        &full.path,
        &url,
        "console",
        &format!("127.0.0.1:{port}"),
        true,
        &tmp.path,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(port, "/console/api/health", &[]).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "no snapshot:\n{}",
            console.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let load = Load::start(&rt, redis.clone());

    let driver = Driver::start(&tmp.path);
    let sess = driver.session(&tmp.join("profile"), 1600, 1150);
    let base = format!("http://127.0.0.1:{port}");
    sess.goto(&format!("{base}/console"));

    // --- Topology: 17 group nodes, every stream, exactly the config's edges -------------
    sess.wait_for(
        "the graph and a snapshot",
        Duration::from_secs(20),
        "return document.querySelectorAll('#topology g.node[data-kind=group]').length === 17 && document.body.dataset.snapshotAt",
        json!([]),
    );
    let nodes = sess.eval(
        "return [...document.querySelectorAll('#topology g.node')].map(n => [n.dataset.kind, n.dataset.name])",
        json!([]),
    );
    let nodes: Vec<(String, String)> = serde_json::from_value(nodes).unwrap();
    let groups: BTreeSet<&str> = nodes
        .iter()
        .filter(|(k, _)| k == "group")
        .map(|(_, n)| n.as_str())
        .collect();
    let want_groups: BTreeSet<&str> = cfg.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(groups, want_groups);
    assert_eq!(
        nodes.iter().filter(|(k, _)| k == "stream").count(),
        cfg.streams.len()
    );
    let drawn = sess.eval(
        "return [...document.querySelectorAll('#topology path.edge')].filter(e => e.dataset.kind !== 'dead-letters').map(e => [e.dataset.kind, e.dataset.from, e.dataset.to])",
        json!([]),
    );
    let drawn: Vec<(String, String, String)> = serde_json::from_value(drawn).unwrap();
    let mut want = vec![];
    for g in &cfg.groups {
        for s in &g.reads {
            want.push(("reads".to_string(), s.clone(), g.name.clone()));
        }
        for s in &g.publishes {
            want.push(("publishes".to_string(), g.name.clone(), s.clone()));
        }
    }
    let (mut d_sorted, mut w_sorted) = (drawn.clone(), want.clone());
    d_sorted.sort();
    w_sorted.sort();
    assert_eq!(
        d_sorted, w_sorted,
        "the graph's edges are the config's stream → group → stream edges"
    );
    assert_eq!(drawn.iter().filter(|e| e.0 == "reads").count(), 67);
    sess.screenshot(&shots.join("01-topology.png"));

    // --- Induced lag: the marketplace's consumer stops, sales keep coming ---------------
    let warn_colour = rgb(sess
        .eval(
            "return getComputedStyle(document.documentElement).getPropertyValue('--warn')",
            json!([]),
        )
        .as_str()
        .unwrap());
    let ok_colour = rgb(sess
        .eval(
            "return getComputedStyle(document.documentElement).getPropertyValue('--ok')",
            json!([]),
        )
        .as_str()
        .unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let e = edge_health(&sess, streams::SALE_COMPLETED, MARKET);
        if e["health"] == "ok" && e["stroke"] == ok_colour.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "marketplace edge never ok: {e}");
        std::thread::sleep(Duration::from_millis(100));
    }
    w_market.stop();
    rt.block_on(async {
        for i in 0..1_500 {
            publish(
                &redis,
                streams::SALE_COMPLETED,
                None,
                sale(&format!("burst-{i}"), "burst", &i.to_string(), 10.0),
            )
            .await;
        }
    });
    let induced = Instant::now();
    sess.wait_for(
        "the marketplace edge turning amber",
        Duration::from_secs(10),
        &edge_when("e.dataset.health !== 'ok'"),
        json!([streams::SALE_COMPLETED, MARKET]),
    );
    let took = induced.elapsed();
    // The colour eases in (a 0.3 s transition).
    let e = sess.wait_for(
        "the marketplace edge in the warning colour",
        Duration::from_secs(2),
        &edge_when(&format!("getComputedStyle(e).stroke === '{warn_colour}'")),
        json!([streams::SALE_COMPLETED, MARKET]),
    );
    eprintln!("lag → warning colour on the page after {took:?} (refresh {REFRESH:?}): {e}");
    assert_eq!(e["health"], "warn", "{e}");
    assert_eq!(e["stroke"], warn_colour.as_str(), "{e}");
    // The next snapshot carries the lag, and the page polls when it is due.
    assert!(
        took < REFRESH * 2 + Duration::from_millis(500),
        "took {took:?}"
    );
    // Its siblings on the same stream keep up and stay (or turn back) green.
    let deadline = Instant::now() + Duration::from_secs(30);
    for g in [
        "financial.revenue_tracking",
        "analytics.metrics_collection",
        "analytics.audit_trail",
    ] {
        loop {
            let s = edge_health(&sess, streams::SALE_COMPLETED, g);
            if s["health"] == "ok" {
                break;
            }
            assert!(Instant::now() < deadline, "{g} stayed {s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(
        edge_health(&sess, streams::SALE_COMPLETED, MARKET)["health"],
        "warn"
    );
    // Clicking the amber edge opens the group's detail, which says why.
    click_edge(&sess, streams::SALE_COMPLETED, MARKET);
    let detail = sess.wait_for("the marketplace's detail", Duration::from_secs(5),
        "const d = document.getElementById('detail'); return !d.hidden && d.dataset.group === arguments[0] ? [d.dataset.health, d.textContent] : null",
        json!([MARKET]));
    assert_eq!(detail[0], "warn", "{detail}");
    assert!(
        detail[1].as_str().unwrap().contains("≥ 1000"),
        "the reason is the lag: {detail}"
    );
    sess.screenshot(&shots.join("02-lag-warning.png"));
    w_market = Daemon::start(
        &market_only.path,
        &url,
        "w-market",
        "127.0.0.1:0",
        false,
        &tmp.path,
    );
    sess.wait_for(
        "the marketplace edge green again",
        Duration::from_secs(40),
        &edge_when("e.dataset.health === 'ok'"),
        json!([streams::SALE_COMPLETED, MARKET]),
    );

    // --- A dead letter: the marketplace cannot store one sale ---------------------------
    let _ = load.stop(&rt);
    rt.block_on(drained(&redis, &cfg));
    let bad_key = nft::collection_sales_key("console-dlq");
    let poison_token = "<img src=x onerror=\"document.title='pwned'\">";
    let dlq_id = rt.block_on(async {
        redis
            .cmd("SET", vec![arg(bad_key.as_str()), arg("not a sorted set")])
            .await
            .unwrap();
        // Markup rides in a field the contract does not know (a raw producer wrote it;
        // consumers tolerate unknown fields), so the sale itself stays valid.
        let mut s = sale("dlq-sale-1", "console-dlq", "token-1", 250.0);
        s["note"] = json!(poison_token);
        publish_unchecked(&redis, streams::SALE_COMPLETED, Some("console-dlq"), s).await;
        let mut id = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while id.is_none() {
            let l = astra_bus::bus::dlq::list(&redis, streams::DEAD_LETTER, Some(MARKET), 10)
                .await
                .unwrap();
            id = l.first().map(|d| d.dlq_id.clone());
            assert!(Instant::now() < deadline, "no dead letter");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drained(&redis, &cfg).await;
        id.unwrap()
    });
    let collection = nft::collection_key("console-dlq");
    assert!(
        rt.block_on(hgetall(&redis, &collection)).is_empty(),
        "the failed sale was not applied"
    );
    let siblings_before = rt.block_on(sibling_state(&redis));
    sess.click(&sess.find("a[data-tab=dead-letters]"));
    let card = sess.wait_for("the dead letter in the list", Duration::from_secs(10),
        "const a = document.querySelector(`article.dl[data-dlq-id=\"${arguments[0]}\"]`); return a ? [a.dataset.group, a.textContent, a.querySelectorAll('img').length, document.title] : null",
        json!([dlq_id]));
    assert_eq!(card[0], MARKET, "{card}");
    let text = card[1].as_str().unwrap();
    assert!(
        text.contains("failed") && text.contains("attempts 1"),
        "{text}"
    );
    assert!(
        text.contains("holds a string"),
        "the error says why: {text}"
    );
    assert!(
        text.contains("\"collection\": \"console-dlq\"")
            && text.contains(&serde_json::to_string(poison_token).unwrap()),
        "payload shown as text: {text}"
    );
    assert_eq!(card[2], 0, "markup in a payload must not become elements");
    assert_eq!(card[3], "astra-bus console");
    sess.screenshot(&shots.join("03-dead-letters.png"));
    // The operator fixes the cause, then replays from the page (behind a confirmation).
    rt.block_on(redis.cmd("DEL", vec![arg(bad_key.as_str())]))
        .unwrap();
    sess.click(&sess.find(&format!(
        "article.dl[data-dlq-id=\"{dlq_id}\"] button.replay"
    )));
    sess.wait_for("the confirmation", Duration::from_secs(5), "return document.getElementById('modal').open && document.getElementById('modal-title').textContent", json!([]));
    sess.screenshot(&shots.join("04-replay-confirm.png"));
    assert!(
        !rt.block_on(astra_bus::bus::dlq::list(
            &redis,
            streams::DEAD_LETTER,
            Some(MARKET),
            10
        ))
        .unwrap()
        .is_empty(),
        "nothing happens before the operator confirms"
    );
    sess.click(&sess.find("#modal-ok"));
    sess.wait_for("the dead letter gone from the page", Duration::from_secs(10),
        "return !document.querySelector(`article.dl[data-dlq-id=\"${arguments[0]}\"]`) && document.querySelector('#dl-list p') !== null",
        json!([dlq_id]));
    sess.screenshot(&shots.join("05-after-replay.png"));
    rt.block_on(async {
        assert!(
            astra_bus::bus::dlq::list(&redis, streams::DEAD_LETTER, Some(MARKET), 10)
                .await
                .unwrap()
                .is_empty()
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while hgetall(&redis, &collection)
            .await
            .get(nft::FIELD_SALES)
            .map(String::as_str)
            != Some("1")
        {
            assert!(
                Instant::now() < deadline,
                "the marketplace never applied the replayed sale"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drained(&redis, &cfg).await;
        tokio::time::sleep(REFRESH).await;
    });
    let applied = rt.block_on(hgetall(&redis, &collection));
    assert_eq!(
        applied.get(nft::FIELD_SALES).map(String::as_str),
        Some("1"),
        "applied once: {applied:?}"
    );
    assert_eq!(
        applied.get(nft::FIELD_VOLUME_CENTS).map(String::as_str),
        Some("25000"),
        "{applied:?}"
    );
    let siblings_after = rt.block_on(sibling_state(&redis));
    // The replay is audited: one structured line with who and what.
    let audit: Vec<Value> = console
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "console action")
        .collect();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["action"], "dlq.replay");
    assert_eq!(audit[0]["group"], MARKET);
    assert_eq!(audit[0]["what"], dlq_id.as_str());
    assert_eq!(audit[0]["outcome"], "replayed 1 missing 0");
    assert!(
        audit[0]["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{}",
        audit[0]
    );

    // --- Trace: the tree the CLI prints --------------------------------------------------
    let load = Load::start(&rt, redis.clone());
    let cid = "console-trace-1";
    rt.block_on(async {
        publish(
            &redis,
            streams::TRADE_EXECUTED,
            Some(cid),
            json!({"trade_id": "trace-t1", "user_id": "tracer", "symbol": "ETH",
            "side": "buy", "quantity": 3.0, "price_usd": 2000.0, "fee_usd": 6.0}),
        )
        .await;
        // The tree is complete once it stops growing.
        let (mut last, mut same) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        while same < 4 || last < 5 {
            let n = astra_bus::bus::trace::collect(
                &redis,
                &cfg,
                cid,
                now_ms() - 600_000,
                now_ms() + 60_000,
            )
            .await
            .unwrap()
            .len();
            same = if n == last { same + 1 } else { 0 };
            last = n;
            assert!(Instant::now() < deadline, "trace did not settle");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let out = Command::new(bin())
        .args(["trace", cid, "--config"])
        .arg(&full.path)
        .env("ASTRA_REDIS_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli = String::from_utf8(out.stdout).unwrap();
    let mut cli_lines: Vec<&str> = cli.lines().collect();
    let total = cli_lines.pop().unwrap();
    let cli_nodes: Vec<_> = cli_lines.iter().map(|l| parse_cli_line(l)).collect();
    assert_eq!(total, format!("{} events", cli_nodes.len()));
    sess.click(&sess.find("a[data-tab=trace]"));
    let input = sess.find("#trace-cid");
    sess.click(&input);
    sess.type_text(&input, cid);
    sess.click(&sess.find("#trace-form button[type=submit]"));
    let page = sess.wait_for("the trace tree", Duration::from_secs(20),
        "if (!document.querySelector(`#trace-result ul.tree[data-cid=\"${arguments[0]}\"]`)) return null;
         return [...document.querySelectorAll('#trace-result li.trace-node')].map(li => {
           let nest = 0, p = li.parentElement.closest('li.trace-node');
           while (p) { nest++; p = p.parentElement.closest('li.trace-node'); }
           const pre = li.querySelector(':scope > .tnode > pre.payload');
           return [+li.dataset.depth, nest, li.dataset.type, li.dataset.id, li.dataset.stream, li.dataset.entry, li.dataset.group, pre ? pre.textContent : 'null'];
         });",
        json!([cid]));
    let page = page.as_array().unwrap();
    assert_eq!(page.len(), cli_nodes.len(), "page {page:?}\ncli:\n{cli}");
    for (p, (depth, ty, id, stream, entry, payload)) in page.iter().zip(&cli_nodes) {
        assert_eq!(p[0].as_u64().unwrap() as usize, *depth, "{p} vs {ty} {id}");
        assert_eq!(p[1].as_u64().unwrap() as usize, *depth, "nesting of {p}");
        assert_eq!(
            (p[2].as_str().unwrap(), p[3].as_str().unwrap()),
            (ty.as_str(), id.as_str())
        );
        assert_eq!(
            (p[4].as_str().unwrap(), p[5].as_str().unwrap()),
            (stream.as_str(), entry.as_str())
        );
        let shown: Value = serde_json::from_str(p[7].as_str().unwrap()).unwrap();
        // JavaScript prints 6.0 as 6: compare numbers as numbers.
        assert_eq!(
            numbers_as_f64(shown),
            numbers_as_f64(payload.clone()),
            "payload of {id}"
        );
        // Each derived event names the group that produced it, one that publishes there.
        let group = p[6].as_str().unwrap();
        if *depth > 0 {
            let g = cfg
                .group(group)
                .unwrap_or_else(|| panic!("{id} has no producing group: {p}"));
            assert!(
                g.publishes.contains(stream),
                "{group} does not publish {stream}"
            );
        } else {
            assert_eq!(group, "", "a root has no producing group");
        }
    }
    assert!(
        cli_nodes.iter().any(|n| n.0 >= 2),
        "a tree with depth: {cli}"
    );
    sess.screenshot(&shots.join("06-trace.png"));
    sess.click(&sess.find("a[data-tab=health]"));
    sess.wait_for(
        "health tables",
        Duration::from_secs(5),
        "return document.querySelectorAll('#groups-table tr[data-group]').length === 17",
        json!([]),
    );
    sess.screenshot(&shots.join("07-health.png"));
    sess.click(&sess.find("a[data-tab=overview]"));
    sess.screenshot(&shots.join("08-overview-under-load.png"));

    // --- Ten consoles add no Redis command per refresh ------------------------------------
    let _ = load.stop(&rt);
    w_main.stop();
    w_market.stop();
    drop(redis);
    drop(rt);
    // Only the console daemon talks to Redis now: its health loop, one pipelined round per
    // refresh, always the same commands (see `bus::status::snapshot`).
    let pairs: i64 = cfg.groups.iter().map(|g| g.reads.len() as i64).sum();
    let n_streams = cfg.streams.len() as i64;
    let round: BTreeMap<String, i64> = [
        ("xlen", n_streams),
        ("xinfo|groups", n_streams),
        ("xpending", pairs),
        ("hgetall", 3),
        ("pfcount", 1),
        ("get", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    sess.goto("about:blank");
    let window = REFRESH * 4 + Duration::from_millis(300);
    // The base sample is taken between two rounds: the next sample is then whole rounds.
    // At most one round per refresh: the loop sleeps a whole refresh after each round.
    let at_most = |since: Instant, until: Instant| {
        (until - since).as_millis() as i64 / REFRESH.as_millis() as i64 + 1
    };
    let mut tries = 0;
    let (a0, ta0) = loop {
        let base = commandstats(&server);
        let at = Instant::now();
        std::thread::sleep(REFRESH + Duration::from_millis(200));
        let d = delta(&base, &commandstats(&server));
        if whole_rounds(&d, &round).is_some() {
            break (base, at);
        }
        tries += 1;
        assert!(
            tries < 5,
            "Redis gets more than the health loop's rounds of {round:?}: {d:?}"
        );
    };
    std::thread::sleep(window);
    let (a1, rounds_a, ta1) = after_whole_rounds(&server, &a0, &round, "without consoles");
    assert!(rounds_a <= at_most(ta0, ta1), "{rounds_a} rounds");
    let me = sess.window();
    let mut windows = vec![me.clone()];
    for _ in 0..9 {
        windows.push(sess.new_window());
    }
    for w in &windows {
        sess.switch_to(w);
        sess.goto(&format!("{base}/console"));
        sess.wait_for("a console", Duration::from_secs(20),
            "return document.querySelectorAll('#topology g.node[data-kind=group]').length === 17 && document.body.dataset.snapshotAt", json!([]));
    }
    sess.switch_to(&me);
    let r0 = console_requests(port);
    let (b0, rounds_open, tb0) =
        after_whole_rounds(&server, &a1, &round, "while ten consoles opened");
    assert!(
        rounds_open <= at_most(ta1, tb0),
        "{rounds_open} rounds while ten consoles opened"
    );
    std::thread::sleep(window);
    let (_, rounds_b, tb1) = after_whole_rounds(&server, &b0, &round, "with ten consoles");
    let r1 = console_requests(port);
    eprintln!(
        "Redis commands: {rounds_a} health rounds of {round:?} in {:?} without consoles; {rounds_b} rounds in {:?} and nothing else with 10 consoles ({} polls)",
        ta1 - ta0,
        tb1 - tb0,
        r1 - r0
    );
    assert!(rounds_a >= 3 && rounds_b >= 3, "{rounds_a} {rounds_b}");
    assert!(
        rounds_b <= at_most(tb0, tb1),
        "{rounds_b} rounds in {:?}: the consoles made Redis work",
        tb1 - tb0
    );
    assert!(r1 - r0 >= 10 * 3, "ten consoles polled {} times", r1 - r0);
    for w in windows.iter().skip(1) {
        sess.switch_to(w);
        sess.close_window();
    }
    sess.quit();
    eprintln!(
        "screenshots in {} ({:?} in all)",
        shots.display(),
        started.elapsed()
    );

    // --- The replay re-delivered to the marketplace only ---------------------------------
    // Its siblings on the sale stream had applied the sale already; the replay must not
    // make them apply it again (revenue, KPI counters, audit chain, derived events).
    assert_eq!(
        siblings_after, siblings_before,
        "a replay must reach only the group that dead-lettered the event"
    );
}

#[test]
fn the_console_api_is_ops_scoped_confirmed_and_audited() {
    let server = RedisServer::start();
    let tmp = TempDir::new("console-api");
    let ops_key = "console-ops-secret";
    let reader_key = "console-reader-secret";
    let keys = format!(
        "[[edge.key]]\nname = \"operator\"\nsha256 = \"{}\"\nscopes = [\"ops\"]\nuser = \"ada\"\n\n\
         [[edge.key]]\nname = \"reader\"\nsha256 = \"{}\"\nscopes = [\"read\"]\n\n",
        hex(&key_sha256(ops_key)),
        hex(&key_sha256(reader_key)),
    );
    let dir = config_dir(
        |_| true,
        |t| {
            t.replace("\nauth = \"off\"\n", "\nauth = \"keys\"\nops = \"keys\"\n")
                .replace("[edge.rate_limit]\n", &format!("{keys}[edge.rate_limit]\n"))
        },
    );
    let port = free_port();
    let d = Daemon::start(
        &dir.path,
        &server.url(),
        "api",
        &format!("127.0.0.1:{port}"),
        false,
        &tmp.path,
    );
    let ops = format!("Bearer {ops_key}");
    let auth = [("Authorization", ops.as_str())];
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(port, "/console/api/health", &auth).0 != 200 {
        assert!(Instant::now() < deadline, "no snapshot");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The page and its assets are static and open; they carry no data, and the page may
    // run only its own script (a payload that became markup could not run).
    let (st, head, html) = http_full(port, "GET", "/console", &[], None);
    assert_eq!(st, 200);
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(
        html.contains("/console/assets/app.js") && !html.contains("<script>"),
        "no inline script"
    );
    assert_eq!(http_get(port, "/console/assets/app.js", &[]).0, 200);
    assert_eq!(http_get(port, "/console/assets/nope.js", &[]).0, 404);
    // In a browser the page asks for a key with the ops scope, refuses one without it,
    // and shows the bus once given the right one.
    {
        let driver = Driver::start(&tmp.path);
        let sess = driver.session(&tmp.join("profile"), 1400, 900);
        sess.goto(&format!("http://127.0.0.1:{port}/console"));
        let prompt = "const m = document.getElementById('modal'); return m.open ? document.getElementById('modal-body').textContent : null";
        sess.wait_for("the key prompt", Duration::from_secs(15), prompt, json!([]));
        sess.screenshot(&screenshot_dir().join("09-key-prompt.png"));
        sess.type_text(&sess.find("#modal-input"), reader_key);
        sess.click(&sess.find("#modal-ok"));
        let again = sess.wait_for("the prompt again, saying why", Duration::from_secs(15),
            "const m = document.getElementById('modal'); const t = document.getElementById('modal-body').textContent; return m.open && t.includes('lacks') ? t : null",
            json!([]));
        assert!(again.as_str().unwrap().contains("\"ops\" scope"), "{again}");
        sess.type_text(&sess.find("#modal-input"), ops_key);
        sess.click(&sess.find("#modal-ok"));
        sess.wait_for("the graph", Duration::from_secs(15),
            "return document.querySelectorAll('#topology g.node[data-kind=group]').length === 17 && document.body.dataset.snapshotAt", json!([]));
        sess.quit();
    }
    // Every API route needs the ops scope: 401 without a key, 403 with a read key.
    let reader = format!("Bearer {reader_key}");
    for path in [
        "/console/api/topology",
        "/console/api/health",
        "/console/api/dead-letters",
        "/console/api/trace?cid=x",
    ] {
        let (st, body) = http_get(port, path, &[]);
        assert_eq!(st, 401, "{path}: {body}");
        let (st, body) = http_get(port, path, &[("Authorization", reader.as_str())]);
        assert_eq!(st, 403, "{path}: {body}");
        assert!(body.contains("\"error\":\"out_of_scope\""), "{body}");
    }
    for path in [
        "/console/api/dead-letters/replay",
        "/console/api/dead-letters/purge",
    ] {
        let (st, _) = http(
            port,
            "POST",
            path,
            &[],
            Some(&json!({"group": MARKET, "confirm": MARKET, "ids": ["1-0"]})),
        );
        assert_eq!(st, 401, "{path}");
    }
    // Health is served from memory: the snapshot's shape.
    let (_, body) = http_get(port, "/console/api/health", &auth);
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["groups"].as_array().unwrap().len(), 17);
    assert_eq!(h["pairs"].as_array().unwrap().len(), 67);
    assert_eq!(h["kpis"].as_array().unwrap().len(), 6);
    let at = h["generated_at_ms"].as_i64().unwrap();
    let (_, body) = http_get(port, &format!("/console/api/health?since={at}"), &auth);
    let same: Value = serde_json::from_str(&body).unwrap();
    assert!(
        same["changed"] == false || same["generated_at_ms"].as_i64() > Some(at),
        "{same}"
    );

    // Bad input: a JSON 4xx naming the problem.
    for (path, code) in [
        ("/console/api/health?since=yesterday", 400),
        ("/console/api/health?nope=1", 400),
        ("/console/api/dead-letters?count=0", 400),
        ("/console/api/dead-letters?count=501", 400),
        ("/console/api/dead-letters?group=no.such", 404),
        ("/console/api/trace", 400),
        ("/console/api/trace?cid=has%20space", 400),
        ("/console/api/trace?cid=nobody-used-this", 404),
    ] {
        let (st, body) = http_get(port, path, &auth);
        assert_eq!(st, code, "{path}: {body}");
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: not JSON: {body}"));
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    }

    // Two real dead letters of the marketplace: the sales key of one collection has the
    // wrong type, so storing those two sales fails (entries written in the documented
    // format straight into the stream, as a producer in any language may).
    let bad_key = nft::collection_sales_key("api");
    server.cli(&["SET", &bad_key, "not a sorted set"]);
    for n in 1..=2 {
        let env = Envelope::root(
            "nft.sale_completed",
            1,
            "api-test",
            Some(format!("api-{n}")),
            ContentType::Json,
            sale(&format!("api-s{n}"), "api", "1", 5.0)
                .to_string()
                .into_bytes(),
        );
        let mut args: Vec<String> = vec!["XADD".into(), streams::SALE_COMPLETED.into(), "*".into()];
        for (k, v) in env.to_fields() {
            args.push(k.into());
            args.push(String::from_utf8(v).unwrap());
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        server.cli(&a);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while list_len(&server) < 2 {
        assert!(Instant::now() < deadline, "no dead letters");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (st, body) = http_get(
        port,
        &format!("/console/api/dead-letters?group={MARKET}"),
        &auth,
    );
    assert_eq!(st, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["count"], 2, "{list}");
    let first = list["dead_letters"][0]["dlq_id"]
        .as_str()
        .unwrap()
        .to_string();
    let one = &list["dead_letters"][0];
    assert_eq!(one["reason"], "failed", "{one}");
    assert_eq!(one["group"], MARKET);
    assert_eq!(one["stream"], streams::SALE_COMPLETED);
    assert_eq!(one["attempts"], 1);
    assert!(one["error"].as_str().unwrap().contains(&bad_key), "{one}");
    assert!(
        one["payload"]["sale_id"]
            .as_str()
            .unwrap()
            .starts_with("api-s"),
        "{one}"
    );
    let (_, body) = http_get(port, "/console/api/dead-letters?count=1", &auth);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["count"], 1, "count bounds the list: {v}");
    // Replay and purge need the group's name as confirmation, valid ids, JSON.
    let replay = "/console/api/dead-letters/replay";
    let purge = "/console/api/dead-letters/purge";
    for (path, body, code, error) in [
        (
            replay,
            json!({"group": MARKET, "ids": [first]}),
            400,
            "invalid_body",
        ),
        (
            replay,
            json!({"group": MARKET, "ids": [first], "confirm": "yes"}),
            400,
            "confirmation_required",
        ),
        (
            replay,
            json!({"group": MARKET, "ids": [], "confirm": MARKET}),
            400,
            "invalid_body",
        ),
        (
            replay,
            json!({"group": MARKET, "ids": ["1-0; DROP"], "confirm": MARKET}),
            400,
            "invalid_body",
        ),
        (
            replay,
            json!({"group": "no.such", "ids": [first], "confirm": "no.such"}),
            404,
            "unknown_group",
        ),
        (
            replay,
            json!({"group": MARKET, "ids": ["1-0"], "confirm": MARKET}),
            404,
            "no_dead_letter",
        ),
        (
            replay,
            json!({"group": "financial.subscriptions", "ids": [first], "confirm": "financial.subscriptions"}),
            404,
            "no_dead_letter",
        ),
        (purge, json!({"group": MARKET}), 400, "invalid_body"),
        (
            purge,
            json!({"group": MARKET, "confirm": "nft"}),
            400,
            "confirmation_required",
        ),
    ] {
        let (st, b) = http(port, "POST", path, &auth, Some(&body));
        assert_eq!(st, code, "{path} {body}: {b}");
        assert!(
            b.contains(&format!("\"error\":\"{error}\"")),
            "{path} {body}: {b}"
        );
    }
    // A form another site could make a browser send is not JSON: 415, nothing done.
    let (st, b) = http(
        port,
        "POST",
        replay,
        &[
            ("Authorization", ops.as_str()),
            ("Content-Type", "text/plain"),
        ],
        None,
    );
    assert_eq!(st, 415, "{b}");
    let (st, b) = http(
        port,
        "POST",
        purge,
        &auth,
        Some(&json!({"group": MARKET, "confirm": "x".repeat(70_000)})),
    );
    assert_eq!(st, 413, "{b}");
    assert_eq!(list_len(&server), 2, "nothing refused changed anything");
    // The operator fixes the cause first.
    server.cli(&["DEL", &bad_key]);
    // Confirmed: replayed (and gone), then the other purged.
    let (st, b) = http(
        port,
        "POST",
        replay,
        &auth,
        Some(&json!({"group": MARKET, "ids": [first, "9-9"], "confirm": MARKET})),
    );
    assert_eq!(st, 200, "{b}");
    let r: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(r["replayed"][0]["dlq_id"], first.as_str());
    assert_eq!(r["missing"], json!(["9-9"]));
    assert_eq!(list_len(&server), 1);
    let (st, b) = http(
        port,
        "POST",
        purge,
        &auth,
        Some(&json!({"group": MARKET, "confirm": MARKET})),
    );
    assert_eq!(st, 200, "{b}");
    assert!(b.contains("\"purged\":1"), "{b}");
    assert_eq!(list_len(&server), 0);
    // The replayed sale was applied by the marketplace (the purged one was not).
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.cli(&["HGET", &nft::collection_key("api"), nft::FIELD_SALES]) != "1" {
        assert!(
            Instant::now() < deadline,
            "the replayed sale was never applied"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every attempt that passed authentication left one audit line naming the key.
    let audit: Vec<Value> = d
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "console action")
        .collect();
    assert_eq!(audit.len(), 13, "{audit:#?}");
    assert!(
        audit
            .iter()
            .all(|a| a["key"] == "operator" && a["user"] == "ada"),
        "{audit:#?}"
    );
    let last_two: Vec<(&str, &str)> = audit[11..]
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap(),
                a["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        last_two,
        vec![
            ("dlq.replay", "replayed 1 missing 1"),
            ("dlq.purge", "purged 1")
        ]
    );
}

/// Dead letters still listed: the stream is append-only; replayed and purged ones are
/// marked resolved.
fn list_len(server: &RedisServer) -> i64 {
    let all: i64 = server.cli(&["XLEN", streams::DEAD_LETTER]).parse().unwrap();
    let resolved: i64 = server
        .cli(&["HLEN", astra_bus::bus::dlq::RESOLVED])
        .parse()
        .unwrap();
    all - resolved
}
