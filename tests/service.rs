//! Running astra-bus as a service: the sd_notify protocol and the watchdog, SIGHUP reload
//! of a running daemon, JSON logs, `rediss://` with a CA made here plus a password file,
//! the systemd unit (systemd-analyze), `setup/install` into a temp root, and the Docker
//! files (every file they name exists).

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use astra_bus::config::GroupConfig;
use astra_bus::daemon::{RunOptions, run_with};
use astra_bus::handlers::{Event, Handler, HandlerError, Op, Registry, Reply, Step};
use astra_bus::shutdown::Shutdown;
use astra_bus::watchdog::{Liveness, watchdog_loop};
use support::bus::*;
use support::{DaemonProcess, RedisOptions, RedisServer, TempDir, bin, repo_root, write_config};

const A: &str = "astra.test.a.v1";
const B: &str = "astra.test.b.v1";

fn count_config(url: &str, extra_defaults: &str) -> TempDir {
    let streams = streams_toml(&[A, B], extra_defaults).replace("redis://127.0.0.1:1", url);
    write_config(
        &streams,
        &[(
            "test",
            &format!(
                "[[group]]\nname = \"test.count\"\nhandler = \"builtin.count_by_user\"\nreads = [\"{A}\"]\n"
            ),
        )],
    )
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig}");
}

/// Receives notify datagrams until one equals `want` (returned messages include it).
fn recv_until(sock: &UnixDatagram, want: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut got = vec![];
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).trim().to_string();
            let done = msg.lines().any(|l| l == want);
            got.push(msg);
            if done {
                return got;
            }
        }
    }
    panic!("no {want} within {timeout:?}; got {got:?}");
}

#[test]
fn sd_notify_ready_watchdog_reload_and_stopping() {
    let server = RedisServer::start();
    let dir = count_config(&server.url(), "");
    let tmp = TempDir::new("notify");
    let sock_path = tmp.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log = tmp.join("daemon.log");
    // systemd sets WATCHDOG_PID to the service's pid: `exec` keeps the shell's pid.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "WATCHDOG_PID=$$ exec \"$0\" run --config \"$1\"",
            &bin().to_string_lossy(),
            &dir.path.to_string_lossy(),
        ])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .env("ASTRA_INSTANCE", "notify")
        .env("ASTRA_HTTP_LISTEN", "127.0.0.1:0")
        .env("ASTRA_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The pinger runs from the start (harmless before READY=1); nothing else comes first.
    let first = recv_until(&sock, "READY=1", Duration::from_secs(20));
    assert!(
        first[..first.len() - 1].iter().all(|m| m == "WATCHDOG=1"),
        "{first:?}"
    );
    // Pings every 200 ms (half of WATCHDOG_USEC) while the reader is healthy.
    let start = Instant::now();
    let mut pings = 0;
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_millis(1500) {
        if let Ok(n) = sock.recv(&mut buf) {
            assert_eq!(&buf[..n], b"WATCHDOG=1\n");
            pings += 1;
        }
    }
    assert!(
        (4..=10).contains(&pings),
        "~7 pings in 1.5 s at 200 ms, got {pings}"
    );
    signal(&child, "-HUP");
    let reload = recv_until(&sock, "READY=1", Duration::from_secs(20));
    let r = reload.iter().position(|m| m == "RELOADING=1");
    assert!(
        r.is_some_and(|i| i + 1 < reload.len()),
        "RELOADING=1 then READY=1: {reload:?}"
    );
    recv_until(&sock, "WATCHDOG=1", Duration::from_secs(5));
    signal(&child, "-TERM");
    recv_until(&sock, "STOPPING=1", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("systemd watchdog enabled")
    );
}

/// Blocks (a thread, like a handler stuck in a synchronous call) on payload `"hang"`
/// until [`GATE`] opens; otherwise counts per user.
struct Gate;

static GATE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

impl Handler for Gate {
    fn step(&self, ev: &Event, _: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        let p: serde_json::Value = ev.payload()?;
        if p["mode"] == "hang" {
            let (lock, cv) = &GATE;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
        }
        Ok(Step::Done {
            ops: vec![Op::hincrby("astra:test:gate", "events", 1)],
            emit: vec![],
        })
    }
}

fn gate(_: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
    Ok(Arc::new(Gate))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_reader_stops_the_watchdog_pings_until_it_moves_again() {
    let server = RedisServer::start();
    // One event in flight at a time; no reclaim during the test (it would hand the stuck
    // entry to the handler again).
    let mut streams = streams_toml(&[A], "batch_size = 1\nconcurrency = 1")
        .replace("claim_idle = \"300ms\"", "claim_idle = \"1h\"");
    streams = streams.replace("[defaults]", "command_timeout = \"1s\"\n\n[defaults]");
    let dir = write_config(
        &streams,
        &[(
            "test",
            &format!(
                "[[group]]\nname = \"test.gate\"\nhandler = \"test.gate\"\nreads = [\"{A}\"]\n"
            ),
        )],
    );
    let mut reg = Registry::builtin();
    reg.insert("test.gate", gate);
    let cfg = load(&dir.path, &server.url(), "gate", &reg);
    let liveness = Liveness::new();
    let (trigger, shutdown) = Shutdown::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let opts = RunOptions {
        registry: reg,
        on_ready: Some(Box::new(move || {
            let _ = ready_tx.send(());
        })),
        liveness: liveness.clone(),
        ..RunOptions::default()
    };
    let daemon = tokio::spawn(run_with(cfg, opts, shutdown.clone()));
    ready_rx.await.unwrap();
    assert_eq!(
        liveness.loops(),
        2,
        "the reader and the group's replay reader registered their heartbeats"
    );
    let pings = Arc::new(AtomicU64::new(0));
    let p = pings.clone();
    let pinger = tokio::spawn(watchdog_loop(
        liveness.clone(),
        Duration::from_millis(100),
        move || {
            p.fetch_add(1, Ordering::SeqCst);
        },
        shutdown,
    ));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(pings.load(Ordering::SeqCst) >= 5, "healthy: pings");

    // The first event wedges its handler; the reader reads the second and waits for room
    // in the group (concurrency 1) that never comes: no more iterations.
    let redis = connect(&server.url()).await;
    publish_json(&redis, A, r#"{"mode":"hang"}"#, None).await;
    publish_json(&redis, A, r#"{"mode":"ok"}"#, None).await;
    let stuck_at = Instant::now();
    // Bound: block 100 ms + command_timeout 1 s + 15 s slack, from the reader's last beat
    // (just before it read the second event).
    let became_stuck = loop {
        if !liveness.stuck().is_empty() {
            break stuck_at.elapsed();
        }
        assert!(
            stuck_at.elapsed() < Duration::from_secs(40),
            "the reader never counted as stuck"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        became_stuck > Duration::from_secs(15),
        "stuck only after the bound, not at the first slow read: {became_stuck:?}"
    );
    // A tick may have been under way at the transition; after that, silence.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let last = pings.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(pings.load(Ordering::SeqCst), last, "no pings while stuck");
    let stuck = liveness.stuck();
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    assert_eq!(stuck[0].name, format!("test.gate {A}"));

    // Unwedge: the reader moves again and the pings resume; both events are applied.
    {
        let (lock, cv) = &GATE;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
    wait_until(Duration::from_secs(10), "pings resume", || {
        let p = pings.clone();
        async move { p.load(Ordering::SeqCst) > last }
    })
    .await;
    wait_until(Duration::from_secs(10), "both events applied", || async {
        hgetall_int(&redis, "astra:test:gate").await.get("events") == Some(&2)
    })
    .await;
    assert!(liveness.stuck().is_empty());
    trigger.trigger();
    daemon.await.unwrap().unwrap();
    pinger.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_changes_and_removes_groups_in_a_running_daemon() {
    let server = RedisServer::start();
    let url = server.url();
    let c = "astra.test.c.v1";
    let d_stream = "astra.test.d.v1";
    let streams = streams_toml(&[A, B, c, d_stream], "").replace("redis://127.0.0.1:1", &url);
    let groups_v1 = format!(
        "[[group]]\nname = \"test.count\"\nhandler = \"builtin.count_by_user\"\nreads = [\"{A}\"]\n\n\
         [[group]]\nname = \"test.fwd\"\nhandler = \"builtin.forward\"\nreads = [\"{A}\"]\npublishes = [\"{B}\"]\n"
    );
    let dir = write_config(&streams, &[("test", &groups_v1)]);
    let logs = TempDir::new("logs");
    let mut d = DaemonProcess::start(&dir.path, &url, "reloader", &logs.path);
    let redis = connect(&url).await;
    let publish = |n: usize| {
        let redis = redis.clone();
        async move {
            for i in 0..n {
                publish_json(&redis, A, &format!("{{\"user_id\":\"u{}\"}}", i % 2), None).await;
            }
        }
    };
    publish(10).await;
    wait_until(Duration::from_secs(20), "v1 processes", || async {
        xlen(&redis, B).await == 10
    })
    .await;
    let counted = || async {
        hgetall_int(&redis, "astra:count:test.count")
            .await
            .values()
            .sum::<i64>()
    };
    wait_until(Duration::from_secs(20), "v1 counts", || async {
        counted().await == 10
    })
    .await;

    // v2: test.count removed; test.fwd changed (now also publishes to C); test.new added
    // (reads B, forwards to D).
    let groups_v2 = format!(
        "[[group]]\nname = \"test.fwd\"\nhandler = \"builtin.forward\"\nreads = [\"{A}\"]\npublishes = [\"{B}\", \"{c}\"]\n\n\
         [[group]]\nname = \"test.new\"\nhandler = \"builtin.forward\"\nreads = [\"{B}\"]\npublishes = [\"{d_stream}\"]\n"
    );
    std::fs::write(dir.join("consumer-groups/test.toml"), groups_v2).unwrap();
    signal(&d.child, "-HUP");
    wait_until(Duration::from_secs(20), "the new group exists", || async {
        astra_bus::bus::declare::groups_on(&redis, B)
            .await
            .unwrap()
            .iter()
            .any(|g| g == "test.new")
    })
    .await;
    publish(10).await;
    wait_until(
        Duration::from_secs(20),
        "changed group publishes to C too",
        || async { xlen(&redis, c).await == 10 && xlen(&redis, B).await == 20 },
    )
    .await;
    wait_until(
        Duration::from_secs(20),
        "added group reads B from its start",
        || async { xlen(&redis, d_stream).await == 20 },
    )
    .await;
    // The removed group stopped: it counted nothing of the new events, owes nothing, and
    // its Redis group is left in place (never destroyed).
    assert_eq!(counted().await, 10);
    assert_eq!(pending(&redis, A, "test.count").await, 0);
    assert!(
        astra_bus::bus::declare::groups_on(&redis, A)
            .await
            .unwrap()
            .iter()
            .any(|g| g == "test.count")
    );
    let (st, _) = d.terminate(Duration::from_secs(15));
    assert!(st.success(), "{}", d.log_text());
    assert!(d.log_text().contains("configuration reloaded"));
}

#[test]
fn json_logs_are_one_flat_object_per_line() {
    let server = RedisServer::start();
    let dir = count_config(&server.url(), "");
    let tmp = TempDir::new("jsonlog");
    let log = tmp.join("daemon.log");
    let mut child = Command::new(bin())
        .args(["run", "--log-format", "json", "--config"])
        .arg(&dir.path)
        .env("ASTRA_INSTANCE", "jsonlog")
        .env("ASTRA_HTTP_LISTEN", "127.0.0.1:0")
        .env("ASTRA_LOG", "info,astra_bus=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let redis = connect(&server.url()).await;
        // Three events without user_id: poison for count_by_user, dead-lettered.
        for _ in 0..3 {
            publish_json(&redis, A, r#"{"nope":1}"#, Some("log-cid-7")).await;
        }
        wait_until(Duration::from_secs(20), "dead letters", || async {
            xlen(&redis, "astra.bus.dead_letter.v1").await == 3
        })
        .await;
    });
    signal(&child, "-TERM");
    let st = child.wait().unwrap();
    assert!(st.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Map<String, serde_json::Value>> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON object ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 4, "{text}");
    for l in &lines {
        for k in ["ts", "level", "target", "message"] {
            assert!(l.get(k).is_some_and(|v| v.is_string()), "{k} in {l:?}");
        }
    }
    let find = |msg: &str| {
        lines
            .iter()
            .filter(|l| l["message"] == msg)
            .collect::<Vec<_>>()
    };
    // Per entry at debug, with the correlation id and the reader's group and stream.
    let per_entry = find("dead-lettered");
    assert_eq!(per_entry.len(), 3, "{text}");
    for l in per_entry {
        assert_eq!(l["level"], "DEBUG");
        assert_eq!(l["cid"], "log-cid-7");
        assert_eq!(l["group"], "test.count");
        assert_eq!(l["stream"], A);
    }
    // One warning per batch and reason, not one per entry.
    let summary = find("entries dead-lettered");
    assert!(!summary.is_empty() && summary.len() <= 3, "{text}");
    let total: u64 = summary.iter().map(|l| l["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 3);
    assert!(summary.iter().all(|l| l["level"] == "WARN"));
    assert!(
        lines.iter().any(|l| l["message"] == "astra-bus running"),
        "{text}"
    );
    // A line whose group and stream come from the reader's span alone.
    let started: Vec<_> = find("reader started")
        .into_iter()
        .filter(|l| l["stream"] == A)
        .collect();
    assert_eq!(started.len(), 1, "{text}");
    assert_eq!(started[0]["group"], "test.count");
}

/// Makes a CA and a server certificate for 127.0.0.1 with the openssl CLI.
fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (setup/test installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=astra test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    // A second CA that signed nothing: trusting it alone must fail the handshake.
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "other.key",
            "-out",
            "other.crt",
            "-days",
            "2",
            "-subj",
            "/CN=other CA",
        ],
    ]
    .concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_and_a_password_file_publishes_and_consumes() {
    let certs = TempDir::new("tls");
    make_certs(&certs.path);
    let tls_port = support::free_port();
    let pem = |f: &str| certs.join(f).to_string_lossy().into_owned();
    // The harness keeps its plain port for its own checks; astra-bus gets only the TLS
    // port. requirepass: the daemon's password comes from a file.
    let server = RedisServer::start_with(RedisOptions {
        extra: vec![
            ("tls-port".into(), tls_port.to_string()),
            ("tls-cert-file".into(), pem("server.crt")),
            ("tls-key-file".into(), pem("server.key")),
            ("tls-ca-cert-file".into(), pem("ca.crt")),
            ("tls-auth-clients".into(), "no".into()),
            ("requirepass".into(), "tls-s3cret".into()),
        ],
        admin: Some(("default".into(), "tls-s3cret".into())),
        ..Default::default()
    });
    let rediss = format!("rediss://127.0.0.1:{tls_port}");
    let dir = count_config(&rediss, "");
    // Relative paths in [redis] are relative to the config directory.
    std::fs::copy(certs.join("ca.crt"), dir.join("ca.crt")).unwrap();
    std::fs::write(dir.join("redis-password"), "tls-s3cret\n").unwrap();
    let streams = std::fs::read_to_string(dir.join("streams.toml")).unwrap();
    std::fs::write(
        dir.join("streams.toml"),
        streams.replace(
            "[defaults]",
            "password_file = \"redis-password\"\ntls_ca_file = \"ca.crt\"\n\n[defaults]",
        ),
    )
    .unwrap();
    let cli = |envs: &[(&str, String)], args: &[&str]| {
        let mut cmd = Command::new(bin());
        cmd.args(args).arg("--config").arg(&dir.path);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.env_remove("ASTRA_REDIS_URL").output().unwrap()
    };
    // Trusting a CA that did not sign the server's certificate: refused.
    let out = cli(&[("ASTRA_REDIS_CA_FILE", pem("other.crt"))], &["declare"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "untrusted server accepted: {err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // The right CA: the CLI declares over TLS...
    let out = cli(&[], &["declare"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...the library publishes over TLS...
    let cfg = astra_bus::config::Config::load_with_env(&dir.path, |_| None).unwrap();
    assert!(cfg.redis.url.starts_with("rediss://"));
    let tls = astra_bus::bus::Redis::connect_config(&cfg.redis)
        .await
        .expect("rediss connect");
    for i in 0..20 {
        publish_json(&tls, A, &format!("{{\"user_id\":\"u{}\"}}", i % 4), None).await;
    }
    // ...and the daemon consumes over TLS.
    let logs = TempDir::new("logs");
    let mut d = DaemonProcess::start(&dir.path, &rediss, "tls", &logs.path);
    let plain = connect(&server.url()).await;
    wait_until(Duration::from_secs(30), "20 events counted", || async {
        hgetall_int(&plain, "astra:count:test.count")
            .await
            .values()
            .sum::<i64>()
            == 20
    })
    .await;
    let (st, _) = d.terminate(Duration::from_secs(15));
    assert!(st.success(), "{}", d.log_text());
    tls.quit().await;
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze (Debian package systemd; setup/test installs it)")
}

/// The shipped unit with ExecStart pointing at the built binary: `verify` checks that the
/// executable exists, and /usr/local/bin/astra-bus need not on a build machine.
fn unit_copy(tmp: &TempDir) -> PathBuf {
    let unit =
        std::fs::read_to_string(repo_root().join("setup/systemd/astra-bus.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/astra-bus run"));
    let path = tmp.join("astra-bus.service");
    std::fs::write(
        &path,
        unit.replace(
            "ExecStart=/usr/local/bin/astra-bus",
            &format!("ExecStart={}", bin().display()),
        ),
    )
    .unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_and_scores_at_most_2() {
    let tmp = TempDir::new("unit");
    let unit = unit_copy(&tmp);
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "TimeoutStopSec=30s",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=",
        "MemoryDenyWriteExecute=yes",
        "LoadCredential=redis-password:/etc/astra-bus/redis-password",
        "Environment=ASTRA_REDIS_PASSWORD_FILE=%d/redis-password",
    ] {
        assert!(text.lines().any(|l| l == line), "unit lacks {line}");
    }
    let out = systemd_analyze(&["verify", &unit.to_string_lossy()]);
    let msgs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && msgs.trim().is_empty(),
        "verify: {msgs}"
    );
    let out = systemd_analyze(&["security", "--offline=yes", &unit.to_string_lossy()]);
    let report = String::from_utf8_lossy(&out.stdout);
    let score: f64 = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for astra-bus.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in {report}"));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{report}");
    // The drain deadline fits in TimeoutStopSec.
    let cfg = astra_bus::config::Config::load_with_env(repo_root(), |_| None).unwrap();
    assert!(cfg.daemon.shutdown_deadline < Duration::from_secs(30));
}

#[test]
fn setup_install_fills_a_temp_root_and_keeps_edited_config() {
    let root = TempDir::new("destdir");
    let install = || {
        let out = Command::new("bash")
            .arg(repo_root().join("setup/install"))
            .env("DESTDIR", &root.path)
            .env("ASTRA_BIN", bin())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    install();
    let installed_bin = root.join("usr/local/bin/astra-bus");
    assert_eq!(
        std::fs::read(&installed_bin).unwrap(),
        std::fs::read(bin()).unwrap()
    );
    let etc = root.join("etc/astra-bus");
    let shipped = |p: &str| std::fs::read_to_string(repo_root().join(p)).unwrap();
    assert_eq!(
        std::fs::read_to_string(etc.join("streams.toml")).unwrap(),
        shipped("streams.toml")
    );
    for e in std::fs::read_dir(repo_root().join("consumer-groups")).unwrap() {
        let name = e.unwrap().file_name();
        assert_eq!(
            std::fs::read_to_string(etc.join("consumer-groups").join(&name)).unwrap(),
            shipped(&format!("consumer-groups/{}", name.to_string_lossy()))
        );
    }
    assert_eq!(
        std::fs::read_to_string(root.join("etc/systemd/system/astra-bus.service")).unwrap(),
        shipped("setup/systemd/astra-bus.service")
    );
    // The installed config is valid, checked by the installed binary.
    let out = Command::new(&installed_bin)
        .args(["check", "--config"])
        .arg(&etc)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("ok: "), "{stdout}");
    // A re-install keeps an edited file and puts the shipped one beside it.
    let edited =
        shipped("streams.toml").replace("command_timeout = \"10s\"", "command_timeout = \"5s\"");
    assert_ne!(edited, shipped("streams.toml"));
    std::fs::write(etc.join("streams.toml"), &edited).unwrap();
    let said = install();
    assert!(said.contains("kept"), "{said}");
    assert_eq!(
        std::fs::read_to_string(etc.join("streams.toml")).unwrap(),
        edited
    );
    assert_eq!(
        std::fs::read_to_string(etc.join("streams.toml.dist")).unwrap(),
        shipped("streams.toml")
    );
    assert!(
        !etc.join("consumer-groups/trading.toml.dist").exists(),
        "unchanged files: no .dist"
    );
}

/// Parses YAML with python3-yaml (setup/test installs it) into JSON. Debian's own
/// interpreter first: that is where the package installs, while `python3` on PATH may be
/// another installation (pyenv) without it.
fn yaml(path: &Path) -> serde_json::Value {
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
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_compose_file_parses_and_names_files_that_exist() {
    let setup = repo_root().join("setup");
    let compose = yaml(&setup.join("docker-compose.yml"));
    let services = compose["services"].as_object().unwrap();
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 5, "{names:?}");
    for s in [
        "redis",
        "astra-init",
        "astra-bus",
        "astra-edge",
        "prometheus",
    ] {
        assert!(services.contains_key(s), "{s} in {names:?}");
    }
    // Every bind-mounted host path exists (relative to the compose file's directory).
    let mut mounted = vec![];
    for (name, svc) in services {
        for v in svc["volumes"].as_array().into_iter().flatten() {
            let src = v.as_str().unwrap().split(':').next().unwrap();
            if src.starts_with('.') || src.starts_with('/') {
                let p = setup.join(src);
                assert!(p.exists(), "service {name} mounts missing {}", p.display());
                mounted.push(p.canonicalize().unwrap());
            }
        }
    }
    for f in [
        "redis.conf",
        "setup/redis-users.acl",
        "setup/monitoring/prometheus.compose.yml",
        "setup/monitoring/astra-bus-rules.yml",
        "setup/edge-keys.toml",
    ] {
        let p = repo_root().join(f).canonicalize().unwrap();
        assert!(mounted.contains(&p), "{f} is mounted");
    }
    // The build context has the Dockerfile.
    let build = &services["astra-bus"]["build"];
    let ctx = setup.join(build["context"].as_str().unwrap());
    assert!(ctx.join(build["dockerfile"].as_str().unwrap()).is_file());
    // The files that are not in git are the secrets, created by the user.
    let secrets = compose["secrets"].as_object().unwrap();
    for u in ["admin", "worker", "edge"] {
        assert_eq!(
            secrets[&format!("redis_{u}_password")]["file"],
            format!("./secrets/redis-{u}-password")
        );
    }
    let ignore = std::fs::read_to_string(repo_root().join(".gitignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "setup/secrets/"));
    // The daemon listens beyond loopback, so edge auth is on; its password is the secret.
    let env = &services["astra-bus"]["environment"];
    assert_eq!(env["ASTRA_HTTP_LISTEN"], "0.0.0.0:8000");
    assert_eq!(env["ASTRA_EDGE_AUTH"], "keys");
    assert_eq!(
        env["ASTRA_REDIS_PASSWORD_FILE"],
        "/run/secrets/redis_worker_password"
    );
    assert!(
        env["ASTRA_REDIS_URL"]
            .as_str()
            .unwrap()
            .starts_with("redis://astra-worker@redis:")
    );
    // Prometheus's compose config scrapes the compose service.
    let prom = yaml(&setup.join("monitoring/prometheus.compose.yml"));
    assert_eq!(
        prom["scrape_configs"][0]["static_configs"][0]["targets"][0],
        "astra-bus:8000"
    );
}

#[test]
fn the_dockerfile_copies_files_that_exist() {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let mut copies = 0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("COPY ") else {
            continue;
        };
        if rest.starts_with("--from=") {
            continue;
        }
        let parts: Vec<&str> = rest.split_whitespace().collect();
        for src in &parts[..parts.len() - 1] {
            assert!(repo_root().join(src).exists(), "COPY source {src} missing");
            copies += 1;
        }
    }
    assert!(copies >= 5, "{copies} COPY sources");
    for needed in [
        "cargo build --release --locked",
        "FROM debian:bookworm-slim",
        "USER astra",
        "STOPSIGNAL SIGTERM",
        "HEALTHCHECK",
        "/ready",
    ] {
        assert!(text.contains(needed), "Dockerfile lacks {needed}");
    }
    // .dockerignore keeps the multi-gigabyte target/ out of the build context.
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target/"));
}

/// The astra-bus service's environment in the compose file, applied to the shipped config:
/// with the shipped (empty) keys file the daemon refuses to start, naming the fix; with a
/// key added, the config is valid.
#[test]
fn the_compose_environment_needs_a_key_and_then_checks() {
    let setup = repo_root().join("setup");
    let compose = yaml(&setup.join("docker-compose.yml"));
    let env = compose["services"]["astra-bus"]["environment"]
        .as_object()
        .unwrap()
        .clone();
    let dir = support::shipped_config_copy();
    let shipped_keys = std::fs::read_to_string(setup.join("edge-keys.toml")).unwrap();
    let keys = dir.join("edge-keys.toml");
    let check = || {
        let mut cmd = Command::new(bin());
        cmd.args(["check", "--config"]).arg(&dir.path);
        for (k, v) in &env {
            cmd.env(k, v.as_str().unwrap());
        }
        cmd.env("ASTRA_EDGE_KEYS_FILE", &keys);
        cmd.output().unwrap()
    };
    std::fs::write(&keys, &shipped_keys).unwrap();
    let out = check();
    let err =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "started without a key: {err}");
    assert!(err.contains("no keys are configured"), "{err}");
    std::fs::write(
        &keys,
        format!(
            "{shipped_keys}\n[[key]]\nname = \"pricing-service\"\nsha256 = \"{}\"\nscopes = [\"publish:astra.trading.trade_executed.v1\", \"read\"]\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let out = check();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
