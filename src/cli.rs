//! The `astra-bus` command line. Each subcommand is a thin shell over the library; errors
//! become `anyhow` here and nowhere else.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::bus::Redis;
use crate::bus::declare::{GroupState, declare};
use crate::bus::publish::publish;
use crate::config::Config;
use crate::daemon::RunOptions;
use crate::envelope::{ContentType, Envelope};
use crate::shutdown::Shutdown;

/// Redis Streams as a dependable event bus.
#[derive(Debug, Parser)]
#[command(name = "astra-bus", version, about, long_about = None)]
pub struct Cli {
    /// Directory holding streams.toml and consumer-groups/.
    #[arg(
        long,
        short = 'c',
        global = true,
        default_value = ".",
        env = "ASTRA_CONFIG_DIR"
    )]
    pub config: PathBuf,

    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    #[command(subcommand)]
    pub command: Command,
}

/// `key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Generate a random key; prints it once (give it to the client) and the
    /// `[[edge.key]]` entry with its SHA-256 (put that in the config).
    ///
    /// Example: astra-bus key new mobile-app --scope 'publish:astra.trading.*' --scope read
    New {
        /// Who holds the key.
        name: String,
        /// Scopes: `publish:<stream>`, `publish:<prefix>*`, `read`, `ops`, `*`.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// The user the key acts as for per-user rate limits.
        #[arg(long)]
        user: Option<String>,
    },
    /// Print the SHA-256 (hex) of a key read from stdin, as `sha256` in `[[edge.key]]`.
    ///
    /// Example: printf %s "$KEY" | astra-bus key hash
    Hash,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration and print the topology.
    ///
    /// Prints each domain with its streams and each group with what it reads and
    /// publishes, then `ok: N streams, G groups, D domains`. On errors prints every
    /// problem as file:line:col: message and exits 1.
    ///
    /// Example: astra-bus check --config /etc/astra-bus
    Check,

    /// Load this binary's Redis function library, create every stream and consumer group
    /// (idempotent).
    ///
    /// Run it as an admin (a Redis user allowed FUNCTION LOAD, e.g. astra-admin of
    /// setup/redis-users.acl) after installing or upgrading: the daemon's own users may
    /// only call the functions. Reports the library (`loaded` / `present`, other versions
    /// left alone), per group and stream `created` or `exists`, and groups that exist in
    /// Redis on declared streams but are not in the config (they are left alone).
    ///
    /// Example: ASTRA_REDIS_URL=redis://astra-admin@127.0.0.1:6379 astra-bus declare
    Declare,

    /// Print the event catalog: the topology as an AsyncAPI 3.0.0 document (streams as
    /// channels, groups' reads and publishes as operations, every payload's JSON Schema),
    /// or `--format jsonschema`: `{stream: payload schema}`. Reads only the config (no
    /// Redis); `GET /asyncapi.json` serves the same document.
    ///
    /// Example: astra-bus catalog --config /etc/astra-bus > asyncapi.json
    Catalog {
        /// `asyncapi` (AsyncAPI 3.0.0) or `jsonschema` (draft-07 schemas by stream).
        #[arg(long, value_enum, default_value = "asyncapi")]
        format: crate::catalog::Format,
    },

    /// Print this binary's Redis function library (the code `declare` loads), for an admin
    /// who loads it by hand: `astra-bus functions | redis-cli -x FUNCTION LOAD REPLACE`.
    Functions,

    /// Run the daemon: declare, then consume with every configured group until SIGTERM.
    ///
    /// SIGTERM or Ctrl-C: stop reading, finish in-flight work, exit 0 within
    /// daemon.shutdown_deadline (unfinished entries stay pending and are reclaimed later).
    /// SIGHUP: reload the configuration (an invalid one is logged and the old one kept).
    /// `--role edge` runs only the HTTP edge (no consumer groups, no declare, no
    /// retention), e.g. as a Redis user that may only publish and read.
    ///
    /// Example: astra-bus run --config /etc/astra-bus
    Run {
        /// What to run: `all` (groups, retention and the HTTP edge) or `edge` (HTTP only).
        #[arg(long, default_value = "all", value_parser = ["all", "edge"])]
        role: String,
    },

    /// API keys for the HTTP edge.
    ///
    /// Example: astra-bus key new mobile-app --scope 'publish:astra.trading.*' --scope read
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },

    /// Publish one event (JSON payload) to a declared stream; prints event and entry id.
    ///
    /// The payload is checked against the stream's schema and stored as MessagePack.
    ///
    /// Example: astra-bus publish astra.user.registered.v1 '{"user_id":"u1","display_name":"Ada"}'
    Publish {
        /// Stream name (must be declared).
        stream: String,
        /// JSON payload.
        json: String,
        /// Correlation id (default: the new event's id).
        #[arg(long)]
        cid: Option<String>,
        /// Producer name recorded in `src`.
        #[arg(long, default_value = "astra-bus-cli")]
        src: String,
    },

    /// Per group and stream: length, lag, pending, oldest pending age, consumers, dead letters.
    ///
    /// Example: astra-bus status
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },

    /// Print a stream's events decoded, then follow new ones.
    ///
    /// Example: astra-bus tail astra.gamification.xp_awarded.v1 --last 20
    Tail {
        /// Stream name (must be declared).
        stream: String,
        /// How many existing events to print first.
        #[arg(long, default_value_t = 10)]
        last: usize,
        /// Exit after printing the existing events instead of following.
        #[arg(long)]
        no_follow: bool,
    },

    /// Dead letters: list, replay to the group that dead-lettered them, or purge.
    ///
    /// Example: astra-bus dlq list --group gamification.xp_processing
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },

    /// Verify the tamper-evident audit log.
    ///
    /// Example: astra-bus audit verify
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },

    /// Print the tree of events that share a correlation id.
    ///
    /// Streams are scanned from a minute before the correlation id's time for --window
    /// (UUIDv7 ids carry their time); for any other id, over the last --since.
    ///
    /// Example: astra-bus trace 0193a6f2-7c1e-7d3a-9a51-0c2b6f1e9d10
    Trace {
        /// Correlation id.
        cid: String,
        /// Scan window length.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        window: std::time::Duration,
        /// Scan start as a duration ago, when the cid carries no time (e.g. "24h").
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
    },
}

/// `audit` actions.
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Walk the hash chain and report the first broken link (exit 1 if broken).
    ///
    /// Example: astra-bus audit verify
    Verify,
}

/// `dlq` actions.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// List dead letters (oldest first).
    ///
    /// Example: astra-bus dlq list --count 20
    List {
        /// Only those of this group.
        #[arg(long)]
        group: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        count: usize,
    },
    /// Hand dead letters back to the group that dead-lettered them (same event id; no
    /// other group sees them again; a partly applied event resumes) and mark them
    /// resolved: no longer listed, never replayed twice (the dead-letter stream itself is
    /// append-only, trimmed by its retention).
    ///
    /// Example: astra-bus dlq replay 1732190000000-0   (or --all [--group G])
    Replay {
        /// Dead-letter entry ids to replay.
        ids: Vec<String>,
        /// Replay every dead letter (of --group, if given).
        #[arg(long)]
        all: bool,
        /// Only those of this group.
        #[arg(long)]
        group: Option<String>,
    },
    /// Mark dead letters resolved without replaying them (of --group, or all): no longer
    /// listed or replayable.
    ///
    /// Example: astra-bus dlq purge --group nft.marketplace
    Purge {
        /// Only those of this group.
        #[arg(long)]
        group: Option<String>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        // One-shot commands behave like Unix tools: `astra-bus status | head` ends quietly
        // when the reader goes away instead of panicking on a broken pipe. (The daemon
        // keeps Rust's default of ignoring SIGPIPE: its sockets must never kill it.)
        // SAFETY: setting a signal disposition before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    crate::logging::init(&cli.log_format);
    // Blocking threads (DNS lookups, file reads) stay few: the systemd unit's TasksMax
    // bounds the process's threads.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    Config::load(&cli.config).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn connect(cfg: &Config) -> anyhow::Result<Redis> {
    Redis::connect_config(&cfg.redis).await.with_context(|| {
        format!(
            "cannot connect to redis at {}",
            crate::bus::client::redact_url(&cfg.redis.url)
        )
    })
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Check => Ok(check(&cli)),
        Command::Declare => {
            let cfg = load(&cli)?;
            let redis = connect(&cfg).await?;
            let lib = crate::bus::script::ensure(&redis).await?;
            for n in &lib.loaded {
                println!("functions {} on {n}: loaded", lib.name);
            }
            for n in &lib.present {
                println!("functions {} on {n}: present", lib.name);
            }
            for o in &lib.others {
                println!(
                    "functions {o}: another version's library (left alone; FUNCTION DELETE {o} once no binary of that version runs)"
                );
            }
            let report = declare(&redis, &cfg).await?;
            for s in &report.streams_created {
                println!("stream {s}: created");
            }
            for (g, s, state) in &report.groups {
                let st = match state {
                    GroupState::Created => "created",
                    GroupState::Exists => "exists",
                };
                println!("group {g} on {s}: {st}");
            }
            for (s, g) in &report.unknown_groups {
                println!("unknown group {g} on {s}: not in the config (left alone)");
            }
            println!(
                "ok: {} streams ({} created), {} groups on {} (stream, group) pairs ({} created), {} unknown",
                cfg.streams.len(),
                report.streams_created.len(),
                cfg.groups.len(),
                report.groups.len(),
                report.created(),
                report.unknown_groups.len()
            );
            redis.quit().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Catalog { format } => {
            print!("{}", crate::catalog::render(&load(&cli)?, *format));
            Ok(ExitCode::SUCCESS)
        }
        Command::Functions => {
            print!("{}", crate::bus::script::library().code);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { role } => run_daemon(&cli, role).await,
        Command::Key { action } => key_command(action),
        Command::Publish {
            stream,
            json,
            cid,
            src,
        } => {
            let cfg = load(&cli)?;
            let s = cfg.stream(stream).ok_or_else(|| {
                anyhow::anyhow!(
                    "stream {stream} is not declared in {}",
                    cli.config.display()
                )
            })?;
            let value: serde_json::Value = serde_json::from_str(json)
                .with_context(|| format!("payload is not valid JSON: {json}"))?;
            crate::events::validate_json(stream, &value)
                .and_then(|()| {
                    s.schema
                        .as_ref()
                        .map_or(Ok(()), |c| c.check(&value).map_err(|e| e.to_string()))
                })
                .map_err(|e| anyhow::anyhow!("payload does not match {stream}: {e}"))?;
            let data = rmp_serde::to_vec_named(&value).context("encoding the payload")?;
            let env = Envelope::root(
                &s.event_type(),
                s.version,
                src,
                cid.clone(),
                ContentType::MsgPack,
                data,
            );
            let redis = connect(&cfg).await?;
            let entry = publish(&redis, stream, &env).await?;
            println!("{} {}", env.id, entry);
            redis.quit().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => {
            let cfg = load(&cli)?;
            let redis = connect(&cfg).await?;
            let rows = crate::bus::status::status(&redis, &cfg).await?;
            redis.quit().await;
            if *json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<32} {:<44} {:>9} {:>8} {:>8} {:>12} {:>9} {:>6}",
                    "GROUP",
                    "STREAM",
                    "LENGTH",
                    "LAG",
                    "PENDING",
                    "OLDEST_PEND",
                    "CONSUMERS",
                    "DLQ"
                );
                for r in rows {
                    println!(
                        "{:<32} {:<44} {:>9} {:>8} {:>8} {:>12} {:>9} {:>6}{}",
                        r.group,
                        r.stream,
                        r.length,
                        r.lag.map_or("unknown".to_string(), |l| l.to_string()),
                        r.pending,
                        r.oldest_pending_age_ms.map_or("-".to_string(), |ms| {
                            humantime::format_duration(std::time::Duration::from_millis(ms as u64))
                                .to_string()
                        }),
                        r.consumers,
                        r.dead_letters,
                        if r.exists {
                            ""
                        } else {
                            "  (group missing: run declare)"
                        }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail {
            stream,
            last,
            no_follow,
        } => {
            let cfg = load(&cli)?;
            if cfg.stream(stream).is_none() {
                anyhow::bail!(
                    "stream {stream} is not declared in {}",
                    cli.config.display()
                );
            }
            let redis = connect(&cfg).await?;
            tail(&redis, stream, *last, !*no_follow).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { action } => {
            let cfg = load(&cli)?;
            let redis = connect(&cfg).await?;
            let code = dlq_command(&redis, &cfg, action).await?;
            redis.quit().await;
            Ok(code)
        }
        Command::Audit {
            action: AuditAction::Verify,
        } => {
            let cfg = load(&cli)?;
            let redis = connect(&cfg).await?;
            let r = crate::bus::audit::verify(&redis).await;
            redis.quit().await;
            match r {
                Ok((n, head)) => {
                    println!(
                        "ok: {n} audit records, chain intact, head {}",
                        if head.is_empty() { "-" } else { &head }
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(crate::bus::audit::AuditError::Redis(e)) => Err(e.into()),
                Err(e) => {
                    println!("broken: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Trace { cid, window, since } => {
            let cfg = load(&cli)?;
            let redis = connect(&cfg).await?;
            // A UUIDv7 correlation id carries its time: scan from a minute before it for
            // --window. Any other id: scan the last --since.
            let now = crate::envelope::now_ms();
            let (from, to) = match uuid::Uuid::parse_str(cid)
                .ok()
                .and_then(|u| u.get_timestamp())
            {
                Some(t) => {
                    let (secs, nanos) = t.to_unix();
                    let at = secs as i64 * 1000 + i64::from(nanos / 1_000_000);
                    (at - 60_000, at + window.as_millis() as i64)
                }
                None => (now - since.as_millis() as i64, now + 60_000),
            };
            let nodes = crate::bus::trace::collect(&redis, &cfg, cid, from, to).await?;
            redis.quit().await;
            if nodes.is_empty() {
                eprintln!("no events with correlation id {cid} in the scanned window");
                return Ok(ExitCode::FAILURE);
            }
            print!("{}", crate::bus::trace::render(&nodes));
            println!("{} events", nodes.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn key_command(action: &KeyAction) -> anyhow::Result<ExitCode> {
    use crate::config::{hex, key_sha256};
    match action {
        KeyAction::New { name, scopes, user } => {
            let mut raw = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))
                .context("reading /dev/urandom")?;
            let key = format!("astra_{}", hex(&raw));
            let scopes: Vec<String> = scopes.iter().map(|s| format!("{s:?}")).collect();
            println!("# key (give it to the client; it is not stored anywhere):");
            println!("# {key}");
            println!("[[edge.key]]");
            println!("name = {name:?}");
            println!("sha256 = \"{}\"", hex(&key_sha256(&key)));
            println!("scopes = [{}]", scopes.join(", "));
            if let Some(u) = user {
                println!("user = {u:?}");
            }
            Ok(ExitCode::SUCCESS)
        }
        KeyAction::Hash => {
            let mut key = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut key)?;
            let key = key.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(!key.is_empty(), "no key on stdin");
            println!("{}", hex(&key_sha256(key)));
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run_daemon(cli: &Cli, role: &str) -> anyhow::Result<ExitCode> {
    let role = if role == "edge" {
        crate::daemon::Role::Edge
    } else {
        crate::daemon::Role::All
    };
    use tokio::signal::unix::{SignalKind, signal};
    // Handlers first: a SIGTERM that arrives while the config loads must drain, not kill.
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut cfg = load(cli)?;
    let metrics = crate::metrics::Metrics::new();
    // One liveness set across reloads: the readers of each run register in it, and the
    // watchdog (when systemd asks for one) pings at half its interval while none is stuck.
    let liveness = crate::watchdog::Liveness::new();
    let (stop_watchdog, watchdog_shutdown) = Shutdown::new();
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        let every = std::time::Duration::from_micros(usec / 2);
        tracing::info!(interval = ?every, "systemd watchdog enabled");
        tokio::spawn(crate::watchdog::watchdog_loop(
            liveness.clone(),
            every,
            || {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            },
            watchdog_shutdown,
        ));
    }
    // Dropped on every way out of this function, which ends the pinger.
    let _stop_watchdog = stop_watchdog;
    loop {
        let (trigger, shutdown) = Shutdown::new();
        let opts = RunOptions {
            role,
            metrics: metrics.clone(),
            on_ready: Some(Box::new(|| {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            })),
            liveness: liveness.clone(),
            ..RunOptions::default()
        };
        let mut daemon = tokio::spawn(crate::daemon::run_with(cfg.clone(), opts, shutdown));
        let reload = loop {
            tokio::select! {
                _ = term.recv() => break None,
                _ = tokio::signal::ctrl_c() => break None,
                _ = hup.recv() => match Config::load(&cli.config).map_err(|e| e.to_string()).and_then(|new| {
                    // Handler options are part of the config: a reload they break is refused.
                    crate::handlers::Registry::builtin().check(&new.groups).map(|()| new).map_err(|e| e.join("\n"))
                }) {
                    Ok(new) => {
                        tracing::info!("SIGHUP: configuration reloaded, restarting groups");
                        break Some(new);
                    }
                    Err(e) => tracing::error!("SIGHUP: invalid configuration, keeping the old one:\n{e}"),
                },
                r = &mut daemon => {
                    // The daemon stopped by itself: that is an error (e.g. handler options).
                    r??;
                    anyhow::bail!("the daemon stopped unexpectedly");
                }
            }
        };
        let _ = sd_notify::notify(
            false,
            &[if reload.is_some() {
                sd_notify::NotifyState::Reloading
            } else {
                sd_notify::NotifyState::Stopping
            }],
        );
        trigger.trigger();
        daemon.await??;
        match reload {
            Some(new) => cfg = new,
            None => return Ok(ExitCode::SUCCESS),
        }
    }
}

async fn tail(redis: &Redis, stream: &str, last: usize, follow: bool) -> anyhow::Result<()> {
    use crate::bus::query::{stream_read_after, stream_tail};
    let entries = stream_tail(redis, stream, last).await?;
    let mut after = entries
        .last()
        .map(|e| e.id.clone())
        .unwrap_or_else(|| "$".into());
    for e in &entries {
        println!("{}", describe_entry(stream, e));
    }
    if !follow {
        return Ok(());
    }
    let conn = redis.dedicated().await?;
    loop {
        let read = stream_read_after(&conn, stream, &after, 100, 5000);
        let es = tokio::select! {
            es = read => es?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        for e in es {
            println!("{}", describe_entry(stream, &e));
            after = e.id.clone();
        }
    }
}

/// One line per entry: id, type, event id, cid, caus, payload as JSON (or why it is
/// malformed).
pub fn describe_entry(stream: &str, e: &crate::bus::client::RawEntry) -> String {
    let Some(fields) = &e.fields else {
        return format!("{} (deleted)", e.id);
    };
    match crate::bus::consume::decode_entry(stream, fields) {
        Ok(env) => format!(
            "{} {} id={} cid={} caus={} ts={} src={} {}",
            e.id,
            env.event_type,
            env.id,
            env.cid,
            env.caus.as_deref().unwrap_or("-"),
            env.ts,
            env.src,
            env.data_as_json()
                .map(|v| v.to_string())
                .unwrap_or_else(|err| format!("<{err}>"))
        ),
        Err(err) => format!("{} MALFORMED ({err}) fields={}", e.id, fields_text(fields)),
    }
}

fn fields_text(fields: &[(Vec<u8>, Vec<u8>)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={:?}",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(v)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn dlq_command(redis: &Redis, cfg: &Config, action: &DlqAction) -> anyhow::Result<ExitCode> {
    use crate::bus::dlq;
    let streams = cfg.dead_letter_streams();
    match action {
        DlqAction::List { group, count } => {
            let mut n = 0;
            for s in &streams {
                for d in dlq::list(redis, s, group.as_deref(), *count).await? {
                    n += 1;
                    let orig = crate::bus::client::RawEntry {
                        id: d.get("entry_id").unwrap_or("?").to_string(),
                        fields: Some(d.original.clone()),
                    };
                    println!(
                        "{} [{}] group={} stream={} entry={} attempts={} error={}\n    {}",
                        d.dlq_id,
                        d.get("reason").unwrap_or("?"),
                        d.get("group").unwrap_or("?"),
                        d.get("stream").unwrap_or("?"),
                        d.get("entry_id").unwrap_or("?"),
                        d.get("attempts").unwrap_or("?"),
                        d.get("error").unwrap_or(""),
                        describe_entry(d.get("stream").unwrap_or(""), &orig)
                    );
                }
            }
            println!("{n} dead letters");
            Ok(ExitCode::SUCCESS)
        }
        DlqAction::Replay { ids, all, group } => {
            if ids.is_empty() && !all {
                anyhow::bail!("name dead-letter entry ids to replay, or --all");
            }
            let mut n = 0;
            for s in &streams {
                for d in dlq::list(redis, s, group.as_deref(), usize::MAX).await? {
                    if *all || ids.contains(&d.dlq_id) {
                        let r = dlq::replay(redis, s, &d).await?;
                        println!(
                            "{} -> group {} (event {} of {}), replay entry {}",
                            d.dlq_id,
                            r.group,
                            r.event_id.as_deref().unwrap_or("?"),
                            r.stream,
                            r.entry_id
                        );
                        n += 1;
                    }
                }
            }
            println!("{n} replayed");
            Ok(if n == 0 && !ids.is_empty() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        DlqAction::Purge { group } => {
            let mut n = 0;
            for s in &streams {
                n += dlq::purge(redis, s, group.as_deref()).await?;
            }
            println!("{n} purged");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(cli: &Cli) -> ExitCode {
    let cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            let n = e.diagnostics().len().max(1);
            eprintln!(
                "error: {n} problem{} in {}",
                if n == 1 { "" } else { "s" },
                cli.config.display()
            );
            return ExitCode::FAILURE;
        }
    };
    if let Err(errors) = crate::handlers::Registry::builtin().check(&cfg.groups) {
        for e in &errors {
            eprintln!("{e}");
        }
        let n = errors.len();
        eprintln!(
            "error: {n} problem{} in {}",
            if n == 1 { "" } else { "s" },
            cli.config.display()
        );
        return ExitCode::FAILURE;
    }
    print!("{}", topology_text(&cfg));
    println!(
        "ok: {} streams, {} groups, {} domains",
        cfg.streams.len(),
        cfg.groups.len(),
        cfg.domains().len()
    );
    ExitCode::SUCCESS
}

/// The topology as text: per domain, its streams, then its groups.
pub fn topology_text(cfg: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut domains: Vec<String> = cfg.streams.iter().map(|s| s.domain.clone()).collect();
    domains.extend(cfg.domains());
    domains.sort();
    domains.dedup();
    for d in domains {
        let _ = writeln!(out, "domain {d}");
        for s in cfg.streams.iter().filter(|s| s.domain == d) {
            let mut ret = vec![];
            if let Some(n) = s.max_len {
                ret.push(format!("max_len {n}"));
            }
            if let Some(a) = s.max_age {
                ret.push(format!("max_age {}", humantime::format_duration(a)));
            }
            let _ = writeln!(
                out,
                "  stream {}{}  [{}]  {}",
                s.name,
                if s.external { " (external)" } else { "" },
                ret.join(", "),
                s.description
            );
        }
        for g in cfg.groups.iter().filter(|g| g.domain == d) {
            let _ = writeln!(out, "  group {} (handler {})", g.name, g.handler);
            let _ = writeln!(out, "    reads     {}", g.reads.join(", "));
            let _ = writeln!(
                out,
                "    publishes {}",
                if g.publishes.is_empty() {
                    "-".to_string()
                } else {
                    g.publishes.join(", ")
                }
            );
        }
    }
    out
}
