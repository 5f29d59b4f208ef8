//! `examples/custom-handler`, a binary of an embedder's own: the shipped topology plus one
//! handler of its own, run as a real process against a real redis-server. Its handler's
//! effects land (with the option from its TOML and the state its `main` shares), a
//! built-in group in the same process still works, and `check` refuses a bad option of
//! the custom handler with the place in the file, like a built-in one's.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use astra_bus::bus::client::arg;
use support::bus::*;
use support::{DaemonProcess, RedisServer, TempDir, shipped_config_copy};

/// The example binary: built by `cargo test` (examples are test targets); built here when
/// this test runs alone (`cargo test --test embed`).
fn example_bin() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let debug = deps.parent().unwrap().parent().unwrap();
    let path = debug.join("examples").join("custom-handler");
    if !path.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "--example", "custom-handler"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", debug.parent().unwrap())
            .status()
            .expect("cargo build --example custom-handler");
        assert!(st.success(), "building the example failed");
    }
    path
}

async fn hget(redis: &astra_bus::bus::Redis, key: &str, field: &str) -> Option<String> {
    let v = redis.cmd("HGET", vec![arg(key), arg(field)]).await.unwrap();
    astra_bus::bus::client::as_string(&v)
}

fn config_with_custom() -> TempDir {
    let dir = shipped_config_copy();
    let p = dir.join("streams.toml");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("block = \"2s\"", "block = \"100ms\"");
    std::fs::write(&p, text).unwrap();
    std::fs::copy(
        support::repo_root().join("examples/custom-handler/custom.toml"),
        dir.join("consumer-groups/custom.toml"),
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_handler_runs_beside_the_shipped_topology() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = config_with_custom();
    let logs = TempDir::new("embed-logs");
    let bin = example_bin();

    // `check` knows the custom handler (the stock binary would refuse its name).
    let out = Command::new(&bin)
        .args(["check", "--config"])
        .arg(&dir.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stock = Command::new(support::bin())
        .args(["check", "--config"])
        .arg(&dir.path)
        .output()
        .unwrap();
    assert!(
        !stock.status.success(),
        "the stock binary knows no custom.welcome"
    );
    assert!(
        String::from_utf8_lossy(&stock.stderr).contains("custom.welcome"),
        "{}",
        String::from_utf8_lossy(&stock.stderr)
    );

    let declare = Command::new(&bin)
        .args(["declare", "--config"])
        .arg(&dir.path)
        .env("ASTRA_REDIS_URL", &url)
        .output()
        .unwrap();
    assert!(
        declare.status.success(),
        "declare: {}",
        String::from_utf8_lossy(&declare.stderr)
    );

    let mut daemon = DaemonProcess::start_bin(&bin, &dir.path, &url, "embed-1", &logs.path);
    let redis = connect(&url).await;
    for (user, name, clan) in [
        ("u1", "Ada", Some("red")),
        ("u2", "Bo", Some("green")),
        ("u3", "Cy", None),
    ] {
        let payload = match clan {
            Some(c) => format!(r#"{{"user_id":"{user}","display_name":"{name}","clan":"{c}"}}"#),
            None => format!(r#"{{"user_id":"{user}","display_name":"{name}"}}"#),
        };
        publish_json(&redis, "astra.user.registered.v1", &payload, None).await;
    }
    wait_until(
        Duration::from_secs(30),
        "the custom handler's effects",
        || {
            let redis = redis.clone();
            async move {
                hgetall_int(&redis, "custom:welcome:clans")
                    .await
                    .values()
                    .sum::<i64>()
                    == 3
            }
        },
    )
    .await;
    let clans = hgetall_int(&redis, "custom:welcome:clans").await;
    assert_eq!(
        clans.into_iter().collect::<Vec<_>>(),
        vec![("none".into(), 1), ("other".into(), 1), ("red".into(), 1)],
        "clans counted by the shared table (green is not in it)"
    );
    let greeting = hget(&redis, "custom:welcome", "u1").await;
    assert_eq!(
        greeting.as_deref(),
        Some("Welcome aboard, Ada!"),
        "the group's option"
    );
    // A built-in group of the shipped topology, in the same process: user.profile_updates
    // writes the profile of a registered user.
    wait_until(
        Duration::from_secs(30),
        "the built-in profile handler",
        || {
            let redis = redis.clone();
            async move {
                let key = astra_bus::handlers::user::profile_key("u2");
                hget(&redis, &key, "display_name").await.as_deref() == Some("Bo")
            }
        },
    )
    .await;
    wait_until(Duration::from_secs(30), "nothing pending", || {
        let redis = redis.clone();
        async move { pending(&redis, "astra.user.registered.v1", "custom.welcome").await == 0 }
    })
    .await;
    daemon.kill9();

    // A bad option of the custom handler is refused with its place, as a built-in one's.
    let p = dir.join("consumer-groups/custom.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        text.replace("greeting = \"Welcome aboard\"", "greeting = \" \""),
    )
    .unwrap();
    let bad = Command::new(&bin)
        .args(["check", "--config"])
        .arg(&dir.path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        err.contains("custom.toml") && err.contains("greeting"),
        "{err}"
    );
}
