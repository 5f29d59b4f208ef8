//! The `astra-bus` binary as a black box: started with a config dir, an environment and a
//! role on a known port, waited for over HTTP, its CPU and memory read from /proc.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, bin, free_port};

/// A running `astra-bus run`, killed on drop.
pub struct Binary {
    pub child: Child,
    pub port: u16,
    pub log: std::path::PathBuf,
}

impl Binary {
    /// Starts `astra-bus run --role <role> --config <dir>` with `env` (plus
    /// `ASTRA_HTTP_LISTEN` on a free loopback port unless `env` sets it) and waits until
    /// `/health` answers.
    pub fn start(dir: &Path, role: &str, env: &[(&str, String)], logs: &TempDir) -> Binary {
        let port = free_port();
        let mut env = env.to_vec();
        env.push(("ASTRA_HTTP_LISTEN", format!("127.0.0.1:{port}")));
        Self::start_args(
            &["run", "--role", role, "--config", &dir.to_string_lossy()],
            &env,
            logs,
            port,
        )
    }

    /// Starts `astra-bus <args>` with exactly `env` added (nothing else), listening on
    /// `port` as its config or environment says, and waits until `/health` answers.
    pub fn start_args(args: &[&str], env: &[(&str, String)], logs: &TempDir, port: u16) -> Binary {
        let log = logs.join(format!("astra-{port}.log"));
        let mut cmd = Command::new(bin());
        cmd.args(args).env("ASTRA_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn astra-bus");
        let mut b = Binary { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = b.child.try_wait() {
                panic!("astra-bus exited with {st}: {}", b.log_text());
            }
            // Up, and connected to Redis (ops routes answer 503 until then; 401 when keyed).
            if get(port, "/health").is_some_and(|(s, _)| s == 200)
                && get(port, "/v1/streams").is_some_and(|(s, _)| s != 503)
            {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "astra-bus not up: {}",
                b.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// CPU time (user + system) the process used so far.
    pub fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after = stat.rsplit_once(')').unwrap().1;
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }

    /// Resident memory now, and its peak (VmHWM), bytes.
    pub fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        (kb("VmRSS:"), kb("VmHWM:"))
    }

    /// Waits until `/ready` answers 200 (with `headers`).
    pub fn wait_ready(&mut self, headers: &[(&str, &str)]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("astra-bus exited with {st}: {}", self.log_text());
            }
            if request(self.port, "GET", "/ready", headers, b"").is_some_and(|(s, _)| s == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "astra-bus not ready: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One blocking HTTP/1.1 request (Connection: close): (status, body), None when the
/// connection failed.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).ok()?;
    let mut out = vec![];
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// GET without headers.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    request(port, "GET", path, &[], b"")
}

/// POST of JSON.
pub fn post(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    request(port, "POST", path, &h, body.as_bytes()).expect("edge answers")
}

/// The shipped config in a temp dir, with `edit` applied to streams.toml.
pub fn shipped_config(edit: impl Fn(String) -> String) -> TempDir {
    let d = super::shipped_config_copy();
    let p = d.join("streams.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, edit(text)).unwrap();
    d
}

/// Raises every rate limit out of the way (for tests about something else).
pub fn unlimited(t: String) -> String {
    t.replace("per_user = 200", "per_user = 1000000")
        .replace("per_client = 1000", "per_client = 1000000")
        .replace("per_key = 1000", "per_key = 1000000")
        .replace("trading = 100", "trading = 1000000")
        .replace("gamification = 200", "gamification = 1000000")
        .replace("social = 50", "social = 1000000")
}
