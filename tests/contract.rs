//! The published contract, checked by a real third-party client: schemathesis (PyPI,
//! installed by `setup/test`) generates requests from `GET /openapi.json` of a live daemon
//! against real Redis, positive and negative, and every check must pass: no 5xx, every
//! status and header documented, bodies matching their schemas, schema-valid requests
//! accepted, schema-violating ones refused, auth enforced where the document says so.
//! Once with `edge.auth = "off"` (all roles on loopback) and once with keys (`--role edge`).
//! Examples per operation: `ASTRA_SCHEMATHESIS_EXAMPLES` (default 25); seed:
//! `ASTRA_SCHEMATHESIS_SEED` (default fixed, so CI runs are reproducible).

mod support;

use std::process::Command;
use std::time::Duration;

use support::RedisServer;
use support::edge::{Binary, shipped_config, unlimited};

fn schemathesis(port: u16, extra: &[&str]) {
    // It keeps a cache of examples in its working directory: not the repository.
    let cwd = support::TempDir::new("schemathesis");
    let examples = std::env::var("ASTRA_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "25".into());
    let seed = std::env::var("ASTRA_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let out = Command::new("st")
        .args(["run", &format!("http://127.0.0.1:{port}/openapi.json")])
        .args(["--max-examples", &examples, "--seed", &seed])
        .args(["--request-timeout", "20"])
        .args(extra)
        .env("NO_COLOR", "1")
        .current_dir(&cwd.path)
        .output()
        .expect("schemathesis (`st`) is installed by setup/test: pip install schemathesis");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    assert!(text.contains("Fuzzing") && !text.contains("❌"), "{text}");
}

#[test]
fn schemathesis_finds_nothing_with_auth_off_and_with_keys() {
    let server = RedisServer::start();
    let logs = support::TempDir::new("contract");
    // Auth off, every role (the worker consumes what schemathesis publishes).
    // The auth-failure limit out of the way too: schemathesis sends bad credentials to
    // every keyed operation within a minute (the limiter has its own tests).
    let dir =
        shipped_config(|t| unlimited(t).replace("auth_failures = 20", "auth_failures = 100000"));
    let env = [("ASTRA_REDIS_URL", server.url())];
    let mut all = Binary::start(&dir.path, "all", &env, &logs);
    all.wait_ready(&[]);
    schemathesis(all.port, &[]);
    // Keys: a key for every route, allowed to name users; ops keyed too.
    let key = "schemathesis-key";
    let keys = dir.join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[key]]\nname = \"st\"\nsha256 = \"{}\"\nscopes = [\"*\"]\nact_for_users = true\n",
            astra_bus::config::hex(&astra_bus::config::key_sha256(key))
        ),
    )
    .unwrap();
    let env = [
        ("ASTRA_REDIS_URL", server.url()),
        ("ASTRA_EDGE_AUTH", "keys".to_string()),
        ("ASTRA_EDGE_OPS", "keys".to_string()),
        ("ASTRA_EDGE_KEYS_FILE", keys.to_string_lossy().into_owned()),
    ];
    let edge = Binary::start(&dir.path, "edge", &env, &logs);
    schemathesis(edge.port, &["-H", &format!("Authorization: Bearer {key}")]);
    // Nothing it sent broke the daemon.
    std::thread::sleep(Duration::from_millis(200));
    assert!(support::edge::get(all.port, "/health").is_some_and(|(s, _)| s == 200));
}
