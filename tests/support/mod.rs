//! Test harness: real `redis-server` processes on free loopback ports, in temp dirs,
//! killed on drop. No mocks: every integration test talks to a real Redis.
#![allow(dead_code)]

pub mod bus;
pub mod catalog;
pub mod edge;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "astra-bus-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Sends one command over a fresh connection, returns the raw RESP reply text.
/// Used by the harness itself (readiness, cluster state) so it does not depend on the
/// crate under test.
pub fn raw_command(port: u16, args: &[&str]) -> std::io::Result<String> {
    raw_command_as(port, None, args)
}

/// [`raw_command`] after `AUTH user pass` (replies of both, concatenated).
pub fn raw_command_as(
    port: u16,
    auth: Option<(&str, &str)>,
    args: &[&str],
) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let encode = |args: &[&str]| {
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
        }
        req
    };
    let mut req = String::new();
    if let Some((u, p)) = auth {
        req.push_str(&encode(&["AUTH", u, p]));
    }
    req.push_str(&encode(args));
    s.write_all(req.as_bytes())?;
    let mut out = String::new();
    let mut buf = vec![0u8; 65536];
    // Read until both replies arrived (or the peer stops sending).
    for _ in 0..50 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
        if auth.is_none() || out.matches("\r\n").count() >= 2 {
            break;
        }
    }
    Ok(out)
}

/// Options for a single Redis server.
#[derive(Clone, Default)]
pub struct RedisOptions {
    /// Enable AOF (fsync every second) so a kill -9 + restart keeps the data.
    pub appendonly: bool,
    /// Extra `--name value` arguments.
    pub extra: Vec<(String, String)>,
    /// (user, password) the harness itself logs in with (when the default user is off).
    pub admin: Option<(String, String)>,
    /// Extra arguments passed as they are (e.g. `--user astra on >pw ~* &* +@all`, where
    /// the directive's words must be separate arguments).
    pub raw_args: Vec<String>,
}

/// A private `redis-server`, killed (and its directory removed) on drop.
pub struct RedisServer {
    pub port: u16,
    pub dir: TempDir,
    child: Option<Child>,
    opts: RedisOptions,
}

impl RedisServer {
    /// Starts a server with no persistence.
    pub fn start() -> RedisServer {
        Self::start_with(RedisOptions::default())
    }

    /// Starts a server with options.
    pub fn start_with(opts: RedisOptions) -> RedisServer {
        let mut server = RedisServer {
            port: 0,
            dir: TempDir::new("redis"),
            child: None,
            opts,
        };
        for _ in 0..5 {
            // The port may be taken between probing and binding: then try another.
            server.port = free_port();
            server.child = Some(spawn_redis(
                server.port,
                &server.dir.path,
                &server.opts,
                &[],
            ));
            if server.wait_ready(Duration::from_secs(10)) {
                return server;
            }
            server.kill();
        }
        panic!("redis-server did not start (see {:?})", server.dir.path);
    }

    /// `redis://127.0.0.1:<port>` (with the admin credentials, if any).
    pub fn url(&self) -> String {
        match &self.opts.admin {
            Some((u, p)) => format!("redis://{u}:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// `redis://user:pass@127.0.0.1:<port>`.
    pub fn url_as(&self, user: &str, pass: &str) -> String {
        format!("redis://{user}:{pass}@127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return false;
            }
            let auth = self
                .opts
                .admin
                .as_ref()
                .map(|(u, p)| (u.as_str(), p.as_str()));
            // The answer must come from our own child: when another test (or another
            // checkout's test run on the same machine) took the probed port first, our
            // server fails to bind and a PING would reach theirs, so two tests would share
            // one Redis and see each other's data.
            // PING as well: INFO answers while the dataset is still loading.
            let pid = self.child.as_ref().map_or(0, |c| c.id());
            if let Ok(r) = raw_command_as(self.port, auth, &["INFO", "server"])
                && r.contains(&format!("process_id:{pid}\r\n"))
                && let Ok(r) = raw_command_as(self.port, auth, &["PING"])
                && r.contains("+PONG")
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// kill -9 the server (data on disk stays).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and directory (after [`kill`]).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let child = spawn_redis(self.port, &self.dir.path, &self.opts, &[]);
            self.child = Some(child);
            if self.wait_ready(Duration::from_secs(5)) {
                return;
            }
            self.kill();
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Redis's own CPU time so far (`INFO cpu`: user + sys), seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let info = self.cli(&["INFO", "cpu"]);
        let get = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}:")))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        get("used_cpu_user") + get("used_cpu_sys")
    }

    /// `INFO commandstats`: per command, (calls, microseconds of Redis CPU). Commands run
    /// inside a script or function are counted under their own names too.
    pub fn command_stats(&self) -> std::collections::BTreeMap<String, (u64, u64)> {
        let info = self.cli(&["INFO", "commandstats"]);
        let mut out = std::collections::BTreeMap::new();
        for l in info.lines() {
            let Some((name, rest)) = l.strip_prefix("cmdstat_").and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let field = |k: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            out.insert(name.to_string(), (field("calls"), field("usec")));
        }
        out
    }

    /// Kills every connection Redis has open for `user` (`CLIENT KILL USER`); returns how
    /// many were killed.
    pub fn client_kill_user(&self, user: &str) -> u64 {
        self.cli(&["CLIENT", "KILL", "USER", user])
            .parse()
            .unwrap_or(0)
    }

    /// `CONFIG SET maxmemory <bytes>` (0 = no limit); with `noeviction` every write is
    /// refused with OOM while memory is above it.
    pub fn set_maxmemory(&self, bytes: u64) {
        let r = self.cli(&["CONFIG", "SET", "maxmemory", &bytes.to_string()]);
        assert_eq!(r, "OK", "CONFIG SET maxmemory {bytes}");
    }

    /// Runs `redis-cli` against this server and returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()]);
        if let Some((u, p)) = &self.opts.admin {
            cmd.args(["--user", u, "--pass", p, "--no-auth-warning"]);
        }
        let out = cmd.args(args).output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn spawn_redis(port: u16, dir: &Path, opts: &RedisOptions, more: &[&str]) -> Child {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--dir", &dir.to_string_lossy()])
        .args(["--save", ""])
        .args(["--protected-mode", "yes"])
        .args(["--logfile", &dir.join("redis.log").to_string_lossy()])
        .args(["--maxmemory-policy", "noeviction"]);
    if opts.appendonly {
        cmd.args(["--appendonly", "yes", "--appendfsync", "everysec"]);
    } else {
        cmd.args(["--appendonly", "no"]);
    }
    for (k, v) in &opts.extra {
        cmd.arg(format!("--{k}")).arg(v);
    }
    cmd.args(&opts.raw_args);
    cmd.args(more);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    cmd.spawn()
        .expect("spawn redis-server (is it installed? setup/test installs it)")
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-master Redis Cluster on loopback, torn down on drop.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    dirs: Vec<TempDir>,
    children: Vec<Child>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers and joins them with `redis-cli --cluster create`.
    pub fn start() -> RedisCluster {
        let mut ports = vec![];
        let mut dirs = vec![];
        let mut children = vec![];
        for _ in 0..3 {
            let port = free_port();
            let dir = TempDir::new("cluster");
            let child = spawn_redis(
                port,
                &dir.path,
                &RedisOptions::default(),
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ],
            );
            ports.push(port);
            dirs.push(dir);
            children.push(child);
        }
        let cluster = RedisCluster {
            ports,
            dirs,
            children,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for p in &cluster.ports {
            while !raw_command(*p, &["PING"]).is_ok_and(|r| r.starts_with("+PONG")) {
                assert!(Instant::now() < deadline, "cluster node {p} did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = cluster.ports.iter().all(|p| {
                raw_command(*p, &["CLUSTER", "INFO"]).is_ok_and(|r| r.contains("cluster_state:ok"))
            });
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "cluster did not reach state ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// The daemon's URL for this cluster: `redis-cluster://` with every master as a seed.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis-cluster://{}", nodes.join(","))
    }

    /// Seed URLs, one per master.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.dirs.clear();
    }
}

/// The repository root (where the shipped config lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies the shipped config (`streams.toml`, `consumer-groups/`) into a temp dir.
pub fn shipped_config_copy() -> TempDir {
    let d = TempDir::new("config");
    copy_config(&repo_root(), &d.path);
    d
}

/// Copies `streams.toml` and `consumer-groups/*.toml` from `from` into `to`.
pub fn copy_config(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("consumer-groups")).unwrap();
    std::fs::copy(from.join("streams.toml"), to.join("streams.toml")).unwrap();
    for e in std::fs::read_dir(from.join("consumer-groups")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join("consumer-groups").join(e.file_name())).unwrap();
    }
}

/// Writes a config dir from literal file contents: `streams.toml` plus `(domain, text)`.
pub fn write_config(streams: &str, groups: &[(&str, &str)]) -> TempDir {
    let d = TempDir::new("config");
    std::fs::create_dir_all(d.join("consumer-groups")).unwrap();
    std::fs::write(d.join("streams.toml"), streams).unwrap();
    for (domain, text) in groups {
        std::fs::write(d.join(format!("consumer-groups/{domain}.toml")), text).unwrap();
    }
    d
}

/// Path of the built `astra-bus` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_astra-bus"))
}

/// The `astra-bus` binary running as a child process (`run`), logging to a file.
pub struct DaemonProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl DaemonProcess {
    /// Starts `astra-bus run --config dir` against `url` with consumer name `instance`.
    pub fn start(config_dir: &Path, url: &str, instance: &str, log_dir: &Path) -> DaemonProcess {
        Self::start_bin(&bin(), config_dir, url, instance, log_dir)
    }

    /// [`DaemonProcess::start`] with another binary (an embedder's, built on the library).
    pub fn start_bin(
        bin: &Path,
        config_dir: &Path,
        url: &str,
        instance: &str,
        log_dir: &Path,
    ) -> DaemonProcess {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let log = log_dir.join(format!("daemon-{instance}-{n}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(config_dir)
            .env("ASTRA_REDIS_URL", url)
            .env("ASTRA_INSTANCE", instance)
            .env("ASTRA_HTTP_LISTEN", "127.0.0.1:0")
            .env("ASTRA_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn astra-bus");
        DaemonProcess { child, log }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill {sig}");
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP (the process freezes: a zombie consumer).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGTERM, then waits up to `within`; returns the exit status and how long it took.
    ///
    /// Waits first (up to 15 s) until the daemon logged "astra-bus running" or exited: a
    /// SIGTERM that lands before the process installed its handler (a few ms after spawn,
    /// longer on a loaded machine) kills it by the default action, which is not what a test
    /// that asks for a graceful stop means (systemd, too, only stops a started unit). Tests
    /// whose work was already done when the daemon started hit that window.
    pub fn terminate(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let wait = Instant::now();
        while wait.elapsed() < Duration::from_secs(15)
            && !self.log_text().contains("astra-bus running")
            && self.child.try_wait().expect("wait").is_none()
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let start = Instant::now();
        self.signal("-TERM");
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return (st, start.elapsed());
            }
            if start.elapsed() > within {
                self.kill9();
                panic!(
                    "daemon did not exit within {within:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small deterministic PRNG (xorshift) so fault tests print and reuse their seed.
pub struct Rng(pub u64);

impl Rng {
    /// Seeded from the clock unless `ASTRA_TEST_SEED` is set; prints the seed.
    pub fn from_env() -> Rng {
        let seed = std::env::var("ASTRA_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("ASTRA_TEST_SEED={seed}");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// A Sentinel-managed primary with one replica and three Sentinels on loopback (quorum 2,
/// `down-after-milliseconds` 1000), torn down on drop. The monitored name is
/// [`SentinelSet::SERVICE`].
pub struct SentinelSet {
    pub primary: RedisServer,
    pub replica: RedisServer,
    pub sentinel_ports: Vec<u16>,
    dirs: Vec<TempDir>,
    children: Vec<Child>,
}

impl SentinelSet {
    pub const SERVICE: &'static str = "astra";

    /// Starts primary, replica (in sync) and three Sentinels that know each other.
    pub fn start() -> SentinelSet {
        let primary = RedisServer::start();
        let replica = RedisServer::start_with(RedisOptions {
            raw_args: vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary.port.to_string(),
            ],
            ..Default::default()
        });
        let mut set = SentinelSet {
            primary,
            replica,
            sentinel_ports: vec![],
            dirs: vec![],
            children: vec![],
        };
        for _ in 0..3 {
            let port = free_port();
            let dir = TempDir::new("sentinel");
            let conf = dir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {d}\nlogfile {d}/sentinel.log\n\
                     sentinel monitor {s} 127.0.0.1 {p} 2\nsentinel down-after-milliseconds {s} 1000\n\
                     sentinel failover-timeout {s} 3000\nsentinel parallel-syncs {s} 1\n",
                    d = dir.path.display(),
                    s = Self::SERVICE,
                    p = set.primary.port
                ),
            )
            .unwrap();
            let child = Command::new("redis-sentinel")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-sentinel (setup/test installs it)");
            set.sentinel_ports.push(port);
            set.dirs.push(dir);
            set.children.push(child);
        }
        // Ready when the replica is in sync and every Sentinel sees the replica and the
        // two other Sentinels (needed for a quorum and a leader election).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let synced = set
                .replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up");
            let known = set.sentinel_ports.iter().all(|p| {
                let f = Self::master_fields(*p);
                f.get("num-other-sentinels").map(String::as_str) == Some("2")
                    && f.get("num-slaves").map(String::as_str) == Some("1")
            });
            if synced && known {
                return set;
            }
            assert!(Instant::now() < deadline, "sentinels did not converge");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `SENTINEL MASTER <service>` of one Sentinel as field → value.
    fn master_fields(port: u16) -> std::collections::HashMap<String, String> {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "SENTINEL", "MASTER", Self::SERVICE])
            .output()
            .expect("redis-cli");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_string(), c[1].to_string()))
            .collect()
    }

    /// The port of the primary the Sentinels currently name (asks each until one answers).
    pub fn current_primary_port(&self) -> Option<u16> {
        self.sentinel_ports.iter().find_map(|p| {
            let out = Command::new("redis-cli")
                .args([
                    "-p",
                    &p.to_string(),
                    "SENTINEL",
                    "GET-MASTER-ADDR-BY-NAME",
                    Self::SERVICE,
                ])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .nth(1)?
                .trim()
                .parse()
                .ok()
        })
    }

    /// The daemon's URL: `redis-sentinel://` with the three Sentinels.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .sentinel_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!(
            "redis-sentinel://{}/0?sentinelServiceName={}",
            nodes.join(","),
            Self::SERVICE
        )
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
