//! The `astra-bus` command line. Each subcommand is a thin shell over the library; errors
//! become `anyhow` here and nowhere else.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::bus::Redis;
use crate::bus::declare::{GroupState, declare};
use crate::config::Config;

/// Redis Streams as a dependable event bus.
#[derive(Debug, Parser)]
#[command(name = "astra-bus", version, about, long_about = None)]
pub struct Cli {
    /// Directory holding streams.toml and consumer-groups/.
    #[arg(long, short = 'c', global = true, default_value = ".", env = "ASTRA_CONFIG_DIR")]
    pub config: PathBuf,

    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    #[command(subcommand)]
    pub command: Command,
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

    /// Create every stream and consumer group (idempotent).
    ///
    /// Reports per group and stream `created` or `exists`, and lists groups that exist in
    /// Redis on declared streams but are not in the config (they are left alone).
    ///
    /// Example: ASTRA_REDIS_URL=redis://127.0.0.1:6379 astra-bus declare
    Declare,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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

fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ASTRA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        let _ = b.json().flatten_event(true).try_init();
    } else {
        let _ = b.try_init();
    }
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    Config::load(&cli.config).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn connect(cfg: &Config) -> anyhow::Result<Redis> {
    Redis::connect(&cfg.redis.url, cfg.redis.command_timeout)
        .await
        .with_context(|| format!("cannot connect to redis at {}", cfg.redis.url))
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Check => Ok(check(&cli)),
        Command::Declare => {
            let cfg = load(&cli)?;
            let redis = connect(&cfg).await?;
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
    }
}

fn check(cli: &Cli) -> ExitCode {
    let cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            let n = e.diagnostics().len().max(1);
            eprintln!("error: {n} problem{} in {}", if n == 1 { "" } else { "s" }, cli.config.display());
            return ExitCode::FAILURE;
        }
    };
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
