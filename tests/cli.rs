//! The command line as a user runs it: `check`, `declare` (twice), `publish`, `status`,
//! `tail`, `dlq`, against a real redis-server.

mod support;

use std::process::{Command, Output};

use support::bus::*;
use support::{RedisServer, bin, repo_root, shipped_config_copy};

fn run(args: &[&str], url: &str) -> Output {
    Command::new(bin())
        .args(args)
        .env("ASTRA_REDIS_URL", url)
        .env("ASTRA_LOG", "warn")
        .output()
        .expect("run astra-bus")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn check_prints_the_shipped_topology() {
    let root = repo_root();
    let o = run(
        &["check", "--config", root.to_str().unwrap()],
        "redis://127.0.0.1:1",
    );
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.ends_with("ok: 20 streams, 17 groups, 7 domains\n"),
        "{out}"
    );
    assert!(out.contains("domain gamification\n"));
    assert!(out.contains("  group gamification.xp_processing (handler gamification.xp_processing)\n    reads     astra.trading.trade_executed.v1, astra.social.interaction.v1\n    publishes astra.gamification.xp_awarded.v1, astra.gamification.level_up.v1\n"), "{out}");
    assert!(out.contains("  stream astra.trading.trade_executed.v1 (external)"));
}

#[test]
fn check_lists_every_error_and_exits_1() {
    let dir = shipped_config_copy();
    let p = dir.join("consumer-groups/social.toml");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace(
            "astra.social.feed_item_posted.v1",
            "astra.social.feed_item.v1",
        )
        .replace(
            "handler = \"social.influence\"",
            "handler = \"social.influenze\"",
        );
    std::fs::write(&p, text).unwrap();
    let o = run(
        &["check", "--config", dir.path.to_str().unwrap()],
        "redis://127.0.0.1:1",
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("consumer-groups/social.toml:8:14: group social.feed_generation publishes undeclared stream astra.social.feed_item.v1"), "{err}");
    assert!(
        err.contains("unknown handler \"social.influenze\""),
        "{err}"
    );
    assert!(err.contains("error: 2 problems"), "{err}");
}

#[tokio::test]
async fn declare_creates_everything_then_reports_it_exists_and_leaves_unknown_groups_alone() {
    let server = RedisServer::start();
    let url = server.url();
    let root = repo_root();
    let cfg = root.to_str().unwrap();
    let first = stdout(&run(&["declare", "--config", cfg], &url));
    assert_eq!(
        first.matches(": created\n").count(),
        20 + 67,
        "20 streams, 67 (group, stream) pairs:\n{first}"
    );
    assert!(
        first.contains("group gamification.xp_processing on astra.social.interaction.v1: created")
    );
    // Someone else's group on a declared stream.
    server.cli(&[
        "XGROUP",
        "CREATE",
        "astra.trading.trade_executed.v1",
        "bi.export",
        "$",
    ]);
    let second = stdout(&run(&["declare", "--config", cfg], &url));
    assert_eq!(second.matches(": created").count(), 0, "{second}");
    assert_eq!(second.matches(": exists\n").count(), 67, "{second}");
    assert!(second.contains("unknown group bi.export on astra.trading.trade_executed.v1: not in the config (left alone)"), "{second}");
    assert!(second.contains("ok: 20 streams (0 created), 17 groups on 67 (stream, group) pairs (0 created), 1 unknown"), "{second}");
    assert!(
        server
            .cli(&["XINFO", "GROUPS", "astra.trading.trade_executed.v1"])
            .contains("bi.export")
    );
}

#[tokio::test]
async fn publish_status_tail_and_dead_letter_replay() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = shipped_config_copy();
    let cfg = dir.path.to_str().unwrap();
    assert!(run(&["declare", "--config", cfg], &url).status.success());
    let o = run(
        &[
            "publish",
            "--config",
            cfg,
            "astra.user.registered.v1",
            r#"{"user_id":"u1","display_name":"Ada","clan":"owls"}"#,
            "--cid",
            "req-42",
        ],
        &url,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let printed = stdout(&o);
    let (event_id, entry_id) = printed.trim().split_once(' ').unwrap();
    assert_eq!(event_id.len(), 36);
    assert!(entry_id.contains('-'));
    // A payload that does not match the stream's schema is refused, naming the field.
    let bad = run(
        &[
            "publish",
            "--config",
            cfg,
            "astra.user.registered.v1",
            r#"{"user_id":"u1"}"#,
        ],
        &url,
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("display_name"));
    let unknown = run(
        &["publish", "--config", cfg, "astra.user.nope.v1", "{}"],
        &url,
    );
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not declared"));

    let tail = stdout(&run(
        &[
            "tail",
            "--config",
            cfg,
            "astra.user.registered.v1",
            "--no-follow",
        ],
        &url,
    ));
    assert!(
        tail.contains(&format!(
            "{entry_id} user.registered id={event_id} cid=req-42"
        )),
        "{tail}"
    );
    assert!(tail.contains(r#""display_name":"Ada""#), "{tail}");

    let status = stdout(&run(&["status", "--config", cfg], &url));
    let line = status
        .lines()
        .find(|l| l.starts_with("user.profile_updates") && l.contains("astra.user.registered.v1"))
        .unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        &cols[2..8],
        ["1", "1", "0", "-", "0", "0"],
        "length 1, lag 1, nothing pending: {line}"
    );

    // A dead letter, listed, and replayed to its group alone: onto the group's replay
    // stream with the same event id, nothing new on the shared stream.
    let redis = connect(&url).await;
    let dl = astra_bus::bus::deadletter::DeadLetter {
        entry_id: entry_id.to_string(),
        stream: "astra.user.registered.v1".to_string(),
        fields: vec![
            (b"id".to_vec(), event_id.as_bytes().to_vec()),
            (b"type".to_vec(), b"user.registered".to_vec()),
            (b"v".to_vec(), b"1".to_vec()),
            (b"cid".to_vec(), b"req-42".to_vec()),
            (b"ts".to_vec(), b"1".to_vec()),
            (b"ct".to_vec(), b"application/json".to_vec()),
            (
                b"data".to_vec(),
                br#"{"user_id":"u1","display_name":"Ada"}"#.to_vec(),
            ),
        ],
        reason: astra_bus::bus::deadletter::Reason::Poison,
        error: "test".into(),
        attempts: 1,
    };
    // Make it pending for the group first (dead-lettering acknowledges it).
    server.cli(&[
        "XREADGROUP",
        "GROUP",
        "user.profile_updates",
        "c",
        "COUNT",
        "1",
        "STREAMS",
        "astra.user.registered.v1",
        ">",
    ]);
    let moved = astra_bus::bus::deadletter::dead_letter(
        &redis,
        "user.profile_updates",
        "c",
        "astra.user.registered.v1",
        "astra.bus.dead_letter.v1",
        &[dl],
    )
    .await
    .unwrap();
    assert_eq!(moved, 1);
    let list = stdout(&run(&["dlq", "list", "--config", cfg], &url));
    assert!(
        list.contains("[poison] group=user.profile_updates stream=astra.user.registered.v1"),
        "{list}"
    );
    assert!(list.contains("1 dead letters"));
    let replay = stdout(&run(&["dlq", "replay", "--config", cfg, "--all"], &url));
    assert!(replay.contains("1 replayed"), "{replay}");
    assert!(replay.contains("-> group user.profile_updates"), "{replay}");
    assert_eq!(
        read_all(&redis, "astra.user.registered.v1").await.len(),
        1,
        "nothing re-published where the sibling groups read"
    );
    // The group's replay stream gets a reference to the dead letter (the group reads the
    // dead letter itself: the same event id and fields).
    let refs = read_raw(&redis, "astra:replay:user.profile_updates").await;
    assert_eq!(refs.len(), 1);
    let field = |k: &str| {
        refs[0]
            .iter()
            .find(|(f, _)| f == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(field("dlq_stream"), "astra.bus.dead_letter.v1");
    let dead = read_raw(&redis, "astra.bus.dead_letter.v1").await;
    let dead_field = |k: &str| {
        dead[0]
            .iter()
            .find(|(f, _)| f == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(dead_field("id"), event_id, "the same event id");
    assert_eq!(dead_field("cid"), "req-42");
    assert!(replay.contains(event_id), "{replay}");
    let listed = stdout(&run(&["dlq", "list", "--config", cfg], &url));
    assert!(
        listed.contains("0 dead letters"),
        "replayed: no longer listed: {listed}"
    );
    assert_eq!(
        xlen(&redis, "astra.bus.dead_letter.v1").await,
        1,
        "the dead-letter stream is append-only"
    );
    let status = stdout(&run(&["status", "--config", cfg], &url));
    assert!(
        !status
            .lines()
            .any(|l| l.starts_with("user.profile_updates") && l.trim_end().ends_with(" 1")),
        "dead-letter count back to 0:\n{status}"
    );
}

#[test]
fn check_rejects_bad_handler_options_with_their_location() {
    let dir = shipped_config_copy();
    let p = dir.join("consumer-groups/gamification.toml");
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "publishes = [\"astra.gamification.leaderboard_updated.v1\"]",
        "publishes = [\"astra.gamification.leaderboard_updated.v1\"]\n[group.options]\ntop_nn = 5",
    );
    std::fs::write(&p, text).unwrap();
    let o = run(
        &["check", "--config", dir.path.to_str().unwrap()],
        "redis://127.0.0.1:1",
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("consumer-groups/gamification.toml:"), "{err}");
    assert!(
        err.contains("group gamification.leaderboards options: unknown option `top_nn`"),
        "{err}"
    );
}

#[test]
fn key_new_refuses_a_scope_it_cannot_parse_and_says_why() {
    for (scope, why) in [
        ("bogus", "scope \"bogus\" is not one of"),
        ("register:Trading", "a service name is 1-64 characters"),
        (
            "publish:",
            "publish: needs a stream name or a prefix ending in *",
        ),
    ] {
        let o = run(
            &["key", "new", "k", "--scope", scope],
            "redis://127.0.0.1:1",
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(why), "{scope}: {err}");
        assert!(o.stdout.is_empty(), "no key printed for {scope}");
    }
    let o = run(
        &[
            "key",
            "new",
            "trading-svc",
            "--scope",
            "register:trading",
            "--scope",
            "publish:astra.trading.*",
        ],
        "redis://127.0.0.1:1",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout(&o).contains("scopes = [\"register:trading\", \"publish:astra.trading.*\"]"),
        "{}",
        stdout(&o)
    );
}
