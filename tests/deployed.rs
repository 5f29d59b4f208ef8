//! The shipped deployments as shipped. Redis runs with `setup/redis-users.acl`, its
//! passwords filled in exactly as the compose file's Redis entrypoint does (the SHA-256 of
//! each secret appended to its user's line); the binary runs with exactly the commands,
//! users and environment of `setup/docker-compose.yml` (admin step `astra-init`, worker
//! `astra-bus`, public edge `astra-edge`) and of `setup/systemd/astra-bus.service` (one
//! process as astra-worker, after the README's admin step). Only what a container or
//! systemd would provide is mapped: the `redis` host to 127.0.0.1 and its port, secret and
//! credential paths to temp files, port 8000 to a free port (same address family). Then
//! the end-to-end scenario through HTTP (publish, idempotent retry, batch, reads, ops), and
//! every refusal the users' ACLs promise, asked of Redis itself.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use astra_bus::config::{hex, key_sha256};
use support::edge::{Binary, post, request, shipped_config};
use support::{RedisOptions, RedisServer, TempDir, bin, free_port, raw_command_as, repo_root};

const TRADE: &str = "astra.trading.trade_executed.v1";
const PASSWORDS: [(&str, &str); 3] = [
    ("admin", "admin-secret"),
    ("worker", "worker-secret"),
    ("edge", "edge-secret"),
];

fn sha_hex(s: &str) -> String {
    hex(&key_sha256(s))
}

/// The shipped ACL file with each user's password hash appended (the compose Redis
/// entrypoint's `sed`), plus a root user for the test's own checks only.
fn redis_with_shipped_acl(dir: &TempDir) -> RedisServer {
    let mut acl = std::fs::read_to_string(repo_root().join("setup/redis-users.acl")).unwrap();
    for (u, pw) in PASSWORDS {
        let prefix = format!("user astra-{u} ");
        acl = acl
            .lines()
            .map(|l| {
                if l.starts_with(&prefix) {
                    format!("{l} #{}", sha_hex(pw))
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
    }
    acl.push_str("user test-root on >root-secret ~* &* +@all\n");
    let path = dir.join("users.acl");
    std::fs::write(&path, acl).unwrap();
    RedisServer::start_with(RedisOptions {
        extra: vec![("aclfile".into(), path.to_string_lossy().into_owned())],
        admin: Some(("test-root".into(), "root-secret".into())),
        ..Default::default()
    })
}

/// The compose file as JSON (python3-yaml, as the service tests parse it).
fn compose() -> serde_json::Value {
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let out = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(repo_root().join("setup/docker-compose.yml"))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A compose service's command and environment, with what the container runtime would
/// provide mapped onto this host.
struct Service {
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    port: Option<u16>,
}

fn service(
    c: &serde_json::Value,
    name: &str,
    redis_port: u16,
    secrets: &TempDir,
    keys: &Path,
) -> Service {
    let svc = &c["services"][name];
    let args: Vec<String> = svc["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let mut env = vec![];
    let mut port = None;
    for (k, v) in svc["environment"].as_object().unwrap() {
        let mut v = v.as_str().unwrap().to_string();
        v = v.replace("@redis:6379", &format!("@127.0.0.1:{redis_port}"));
        if let Some(secret) = v.strip_prefix("/run/secrets/") {
            // The secret's file, as compose mounts it.
            let file = c["secrets"][secret]["file"].as_str().unwrap();
            let user = file
                .trim_start_matches("./secrets/redis-")
                .trim_end_matches("-password");
            let pw = PASSWORDS.iter().find(|(u, _)| *u == user).unwrap().1;
            let path = secrets.join(secret);
            std::fs::write(&path, pw).unwrap();
            v = path.to_string_lossy().into_owned();
        }
        if v == "/etc/astra-bus/edge-keys.toml" {
            v = keys.to_string_lossy().into_owned();
        }
        if k == "ASTRA_HTTP_LISTEN" {
            let p = free_port();
            v = v.replace(":8000", &format!(":{p}"));
            port = Some(p);
        }
        env.push((Box::leak(k.clone().into_boxed_str()) as &'static str, v));
    }
    Service { args, env, port }
}

fn bearer(k: &str) -> String {
    format!("Bearer {k}")
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The scenario through an edge on `port`: registration, a trade retried with its
/// idempotency key, a batch, then the reads. `auth`: headers every request carries.
fn scenario(port: u16, auth: &[(&str, &str)]) {
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut h: Vec<(&str, &str)> = auth.to_vec();
        h.extend_from_slice(extra);
        h
    };
    let (s, b) = post(
        port,
        "/api/v1/users/register",
        &with(&[("X-User-ID", "ada")]),
        r#"{"user_id":"ada","display_name":"Ada","clan":"owls"}"#,
    );
    assert_eq!(s, 202, "register: {b}");
    let trade = r#"{"trade_id":"t-1","user_id":"ada","symbol":"BTC","side":"buy","quantity":0.5,"price_usd":30000}"#;
    let path = format!("/v1/events/{TRADE}");
    let first = post(
        port,
        &path,
        &with(&[("X-User-ID", "ada"), ("Idempotency-Key", "order-1")]),
        trade,
    );
    assert_eq!(first.0, 202, "publish: {}", first.1);
    let again = post(
        port,
        &path,
        &with(&[("X-User-ID", "ada"), ("Idempotency-Key", "order-1")]),
        trade,
    );
    assert_eq!(again, first, "the retry answers the first answer");
    let batch = r#"{"events":[
        {"stream":"astra.social.interaction.v1","data":{"user_id":"ada","target_user_id":"bob","kind":"like"}},
        {"stream":"astra.financial.subscription_changed.v1","data":{"user_id":"ada","plan":"pro","action":"started","price_usd":9.99}}]}"#;
    let (s, b) = post(port, "/v1/events", &with(&[("X-User-ID", "ada")]), batch);
    assert_eq!(s, 202, "batch: {b}");
    wait_for(
        "the worker applied the trade",
        Duration::from_secs(30),
        || {
            request(
                port,
                "GET",
                "/api/v1/gamification/user/ada/profile",
                &with(&[("X-User-ID", "ada")]),
                b"",
            )
            .is_some_and(|(s, b)| {
                s == 200 && serde_json::from_str::<serde_json::Value>(&b).unwrap()["trades"] == 1
            })
        },
    );
    for p in [
        "/api/v1/gamification/leaderboard/all_time",
        "/api/v1/social/feed?user=ada",
        "/api/v1/social/feed",
    ] {
        let (s, b) = request(port, "GET", p, &with(&[("X-User-ID", "ada")]), b"").unwrap();
        assert_eq!(s, 200, "{p}: {b}");
    }
}

/// `cmd args` as `user` must be refused by Redis with NOPERM.
fn refused(redis: &RedisServer, user: &str, cmds: &[&[&str]]) {
    let pw = PASSWORDS
        .iter()
        .find(|(u, _)| format!("astra-{u}") == user)
        .unwrap()
        .1;
    for args in cmds {
        let r = raw_command_as(redis.port, Some((user, pw)), args).unwrap();
        assert!(r.starts_with("+OK\r\n"), "{user} logs in: {r}");
        assert!(r.contains("NOPERM"), "{user} {args:?} must be refused: {r}");
    }
}

fn allowed(redis: &RedisServer, user: &str, args: &[&str]) -> String {
    let pw = PASSWORDS
        .iter()
        .find(|(u, _)| format!("astra-{u}") == user)
        .unwrap()
        .1;
    let r = raw_command_as(redis.port, Some((user, pw)), args).unwrap();
    assert!(
        !r.contains("NOPERM") && !r.contains("-ERR"),
        "{user} {args:?}: {r}"
    );
    r
}

#[test]
fn the_compose_stack_runs_as_shipped_and_each_user_is_refused_what_it_must_not_do() {
    let tmp = TempDir::new("compose");
    let redis = redis_with_shipped_acl(&tmp);
    let c = compose();
    // The Dockerfile bakes the shipped config into /etc/astra-bus; the keys file is the
    // shipped one plus the operator's keys.
    let config = shipped_config(|t| t);
    let keys = tmp.join("edge-keys.toml");
    let (app, ops) = ("app-key-0123456789", "ops-key-0123456789");
    std::fs::write(
        &keys,
        format!(
            "{}\n[[key]]\nname = \"app\"\nsha256 = \"{}\"\nscopes = [\"publish:astra.*\", \"read\"]\nact_for_users = true\n\n\
             [[key]]\nname = \"ops\"\nsha256 = \"{}\"\nscopes = [\"ops\"]\n",
            std::fs::read_to_string(repo_root().join("setup/edge-keys.toml")).unwrap(),
            sha_hex(app),
            sha_hex(ops)
        ),
    )
    .unwrap();
    let secrets = TempDir::new("secrets");
    let cfg = config.path.to_string_lossy().into_owned();
    let with_config = |mut s: Service| {
        s.env.push(("ASTRA_CONFIG_DIR", cfg.clone()));
        s
    };
    let init = with_config(service(&c, "astra-init", redis.port, &secrets, &keys));
    let worker = with_config(service(&c, "astra-bus", redis.port, &secrets, &keys));
    let edge_svc = with_config(service(&c, "astra-edge", redis.port, &secrets, &keys));
    assert!(
        edge_svc
            .env
            .iter()
            .any(|(k, v)| *k == "ASTRA_REDIS_URL" && v.starts_with("redis://astra-edge@")),
        "the public edge logs in as astra-edge"
    );
    assert!(
        c["services"]["astra-bus"]["ports"].is_null(),
        "the worker publishes no port"
    );
    assert!(!c["services"]["astra-edge"]["ports"].is_null());

    // Before the admin step the edge cannot run its scripts, and says what to do.
    let args: Vec<&str> = edge_svc.args.iter().map(String::as_str).collect();
    let mut edge = Binary::start_args(&args, &edge_svc.env, &tmp, edge_svc.port.unwrap());
    wait_for(
        "the edge names the admin step",
        Duration::from_secs(15),
        || edge.log_text().contains("astra-bus declare"),
    );
    // The admin step (astra-init): loads the functions and declares, then exits 0.
    let out = Command::new(bin())
        .args(&init.args)
        .envs(init.env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "declare: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(": loaded"), "{text}");
    let args: Vec<&str> = worker.args.iter().map(String::as_str).collect();
    let mut w = Binary::start_args(&args, &worker.env, &tmp, worker.port.unwrap());
    w.wait_ready(&[]);
    edge.wait_ready(&[("Authorization", &bearer(ops))]);
    let port = edge_svc.port.unwrap();
    assert_eq!(edge.port, port);

    scenario(port, &[("Authorization", &bearer(app))]);
    // Ops routes on the public edge need the ops key; /health and /openapi.json are open.
    for p in [
        "/metrics",
        "/dashboard",
        "/v1/groups",
        "/v1/streams",
        "/ready",
    ] {
        let (s, _) = request(port, "GET", p, &[], b"").unwrap();
        assert_eq!(s, 401, "{p} without a key");
        let (s, _) = request(port, "GET", p, &[("Authorization", &bearer(app))], b"").unwrap();
        assert_eq!(s, 403, "{p} with a key lacking ops");
    }
    wait_for("the edge's dashboard", Duration::from_secs(20), || {
        request(
            port,
            "GET",
            "/dashboard",
            &[("Authorization", &bearer(ops))],
            b"",
        )
        .is_some_and(|(s, _)| s == 200)
    });
    let (s, b) = request(
        port,
        "GET",
        "/metrics",
        &[("Authorization", &bearer(ops))],
        b"",
    )
    .unwrap();
    assert_eq!(s, 200);
    assert!(b.contains("astra_bus_http_requests_total"), "{b}");
    assert_eq!(request(port, "GET", "/health", &[], b"").unwrap().0, 200);
    assert_eq!(
        request(port, "GET", "/openapi.json", &[], b"").unwrap().0,
        200
    );
    // The worker's ops routes are open to Prometheus on the compose network; its publish
    // routes still need a key.
    let wp = worker.port.unwrap();
    for p in ["/metrics", "/ready", "/v1/groups"] {
        assert_eq!(request(wp, "GET", p, &[], b"").unwrap().0, 200, "{p}");
    }
    assert_eq!(post(wp, &format!("/v1/events/{TRADE}"), &[], "{}").0, 401);

    // What Redis refuses to each user (commands and keys).
    let stream = TRADE;
    let every_destroyer: Vec<Vec<&str>> = vec![
        vec!["SET", stream, "x"],
        vec!["PEXPIRE", stream, "1"],
        vec!["EXPIRE", stream, "1"],
        vec!["DEL", stream],
        vec!["UNLINK", stream],
        vec!["RENAME", stream, "astra.x"],
        vec!["XDEL", stream, "0-1"],
        vec!["XSETID", stream, "0-1"],
        vec!["XGROUP", "DESTROY", stream, "gamification.xp_processing"],
        vec!["RESTORE", stream, "0", "x", "REPLACE"],
        vec!["EVAL", "while true do end", "0"],
        vec!["EVALSHA", "0000000000000000000000000000000000000000", "0"],
        vec!["SCRIPT", "LOAD", "while true do end"],
        vec![
            "FUNCTION",
            "LOAD",
            "#!lua name=evil\nredis.register_function('spin', function() while true do end end)",
        ],
        vec!["FUNCTION", "DELETE", "anything"],
        vec!["FUNCTION", "FLUSH"],
        vec!["FLUSHALL"],
        vec!["CONFIG", "GET", "maxmemory"],
        vec!["KEYS", "*"],
        vec!["GET", "not-an-astra-key"],
    ];
    let cmds: Vec<&[&str]> = every_destroyer.iter().map(Vec::as_slice).collect();
    refused(&redis, "astra-edge", &cmds);
    refused(&redis, "astra-worker", &cmds);
    // The edge may not write anything but the five public streams and its own keys.
    refused(
        &redis,
        "astra-edge",
        &[
            &["XADD", "astra.gamification.xp_awarded.v1", "*", "f", "v"],
            &["XTRIM", stream, "MAXLEN", "0"],
            &["XGROUP", "CREATE", stream, "rogue", "0"],
            &["XACK", stream, "gamification.xp_processing", "0-1"],
            &["HSET", "astra:gamification:xp", "ada", "1000000"],
            &["SET", "astra:user:profile:ada", "x"],
            &["DEL", "astra:gamification:xp"],
        ],
    );
    // The admin may load functions and declare, nothing destructive.
    refused(
        &redis,
        "astra-admin",
        &[
            &["DEL", stream],
            &["SET", stream, "x"],
            &["FLUSHALL"],
            &["KEYS", "*"],
            &["FUNCTION", "FLUSH"],
        ],
    );
    // Scripts: only the admin-loaded library's functions, by FCALL.
    let libs = allowed(
        &redis,
        "astra-edge",
        &["FUNCTION", "LIST", "LIBRARYNAME", "astra_*"],
    );
    assert!(
        libs.contains(&astra_bus::bus::script::library().name),
        "{libs}"
    );
    assert!(!redis.cli(&["FUNCTION", "LIST"]).contains("evil"));
    // Everything above left the data alone.
    assert!(redis.cli(&["XLEN", stream]).parse::<i64>().unwrap() >= 1);
    assert_eq!(redis.cli(&["TYPE", stream]), "stream");
    assert_eq!(redis.cli(&["TTL", stream]), "-1");
}

/// `Key=Value` lines of a unit's `[Service]` section (the last one wins, as in systemd).
fn unit_settings() -> BTreeMap<String, Vec<String>> {
    let text =
        std::fs::read_to_string(repo_root().join("setup/systemd/astra-bus.service")).unwrap();
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in text.lines() {
        if l.starts_with('#') || !l.contains('=') {
            continue;
        }
        let (k, v) = l.split_once('=').unwrap();
        m.entry(k.to_string()).or_default().push(v.to_string());
    }
    m
}

#[test]
fn the_systemd_unit_runs_as_shipped_after_the_admin_step() {
    let tmp = TempDir::new("systemd");
    let redis = redis_with_shipped_acl(&tmp);
    let unit = unit_settings();
    // The resource bounds the edge's limits are sized for.
    for (k, v) in [
        ("LimitNOFILE", "65536"),
        ("MemoryMax", "1G"),
        ("TasksMax", "256"),
    ] {
        assert_eq!(unit.get(k).map(|v| v[0].as_str()), Some(v), "{k}");
    }
    // /etc/astra-bus as setup/install and the README leave it: the shipped config with
    // redis.url pointing at astra-worker, the password in /etc/astra-bus/redis-password.
    let etc = shipped_config(|t| {
        t.replace(
            "url = \"redis://127.0.0.1:6379\"",
            &format!("url = \"redis://astra-worker@127.0.0.1:{}\"", redis.port),
        )
    });
    let text = std::fs::read_to_string(etc.join("streams.toml")).unwrap();
    assert!(
        text.contains("redis://astra-worker@"),
        "the test edits redis.url: {text}"
    );
    let port = free_port();
    std::fs::write(
        etc.join("streams.toml"),
        text.replace("127.0.0.1:8000", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    // LoadCredential=redis-password:<file> puts the file in $CREDENTIALS_DIRECTORY (%d).
    let creds = TempDir::new("credentials");
    let cred = &unit["LoadCredential"][0];
    let (name, _) = cred.split_once(':').unwrap();
    std::fs::write(creds.join(name), "worker-secret\n").unwrap();
    let mut env = vec![];
    for e in &unit["Environment"] {
        let (k, v) = e.split_once('=').unwrap();
        let v = v.replace("%d", &creds.path.to_string_lossy());
        env.push((Box::leak(k.to_string().into_boxed_str()) as &'static str, v));
    }
    // The README's admin step: `astra-bus declare` as astra-admin.
    let admin_pw = tmp.join("admin-password");
    std::fs::write(&admin_pw, "admin-secret").unwrap();
    let out = Command::new(bin())
        .args(["declare", "--config"])
        .arg(&etc.path)
        .env(
            "ASTRA_REDIS_URL",
            format!("redis://astra-admin@127.0.0.1:{}", redis.port),
        )
        .env("ASTRA_REDIS_PASSWORD_FILE", &admin_pw)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ExecStart, with /etc/astra-bus mapped to the temp dir.
    let exec = &unit["ExecStart"][0];
    let args: Vec<String> = exec
        .split_whitespace()
        .skip(1)
        .map(|a| a.replace("/etc/astra-bus", &etc.path.to_string_lossy()))
        .collect();
    assert_eq!(args[0], "run");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut d = Binary::start_args(&args, &env, &tmp, port);
    d.wait_ready(&[]);
    // Loopback, auth off (the shipped default): rate limits on, counted with Redis's clock
    // as astra-worker (TIME was refused to it before).
    scenario(port, &[]);
    for p in ["/metrics", "/dashboard", "/v1/groups", "/v1/streams"] {
        wait_for(p, Duration::from_secs(20), || {
            request(port, "GET", p, &[], b"").is_some_and(|(s, _)| s == 200)
        });
    }
    let (s, b) = request(port, "GET", "/api/v1/social/feed", &[], b"").unwrap();
    assert_eq!(s, 200, "{b}");
}
