//! The `astra-bus` command line. Each subcommand is a thin shell over the library; errors
//! become `anyhow` here and nowhere else.
//!
//! Files by job: [`args`] (the argument model and `--help` text), this one (`main`, the
//! dispatch, loading the config and connecting), then one file per subcommand family:
//! [`check`] (`check`, `catalog`), [`admin`] (`declare`, `functions`), [`run`] (the
//! daemon), [`key`], [`events`] (`publish`, `tail`, `trace`), [`ops`] (`status`, `dlq`,
//! `audit`).
//!
//! [`main`] runs it with the built-in handlers; [`main_with`] with an embedder's
//! [`Registry`] (a binary of its own gets every subcommand, SIGHUP reload and sd-notify,
//! and `check`, `run` and reload validate handler names and options against it).

mod admin;
mod args;
mod check;
mod events;
mod key;
mod ops;
mod run;
mod services;

use std::process::ExitCode;
use std::sync::OnceLock;

use anyhow::Context as _;
use clap::Parser;

pub use args::{AuditAction, Cli, Command, DlqAction, KeyAction, ServiceAction};
pub use check::topology_text;
pub use events::describe_entry;

use crate::bus::Redis;
use crate::config::{Config, ConfigError};
use crate::handlers::Registry;

/// The handlers of this process: set once by [`main_with`] before anything runs (one
/// command line per process), so every subcommand validates and runs against the same
/// registry without threading it through each of them.
static REGISTRY: OnceLock<Registry> = OnceLock::new();

fn registry() -> &'static Registry {
    REGISTRY.get_or_init(Registry::builtin)
}

/// Entry point of the `astra-bus` binary: the command line with the built-in handlers.
pub fn main() -> ExitCode {
    main_with(Registry::builtin())
}

/// The whole command line with `registry`'s handlers: what an embedder's `main` calls
/// (see `examples/custom-handler/`). Call it once per process.
pub fn main_with(registry: Registry) -> ExitCode {
    if REGISTRY.set(registry).is_err() {
        eprintln!("error: astra_bus::cli::main_with called twice in one process");
        return ExitCode::FAILURE;
    }
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
    load_config(cli).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The config, with handler names checked against this process's registry.
fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    Config::load_for(&cli.config, |k| std::env::var(k).ok(), registry())
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
        Command::Check => Ok(check::check(&cli)),
        Command::Declare => admin::declare(&load(&cli)?).await,
        Command::Catalog { format } => check::catalog(&cli, *format),
        Command::Functions => admin::functions(),
        Command::Run { role } => run::run_daemon(&cli, role).await,
        Command::Key { action } => key::key_command(action),
        Command::Publish {
            stream,
            json,
            cid,
            src,
        } => events::publish(&cli, stream, json, cid.clone(), src).await,
        Command::Status { json } => ops::status(&load(&cli)?, *json).await,
        Command::Tail {
            stream,
            last,
            no_follow,
        } => events::tail(&cli, stream, *last, !*no_follow).await,
        Command::Dlq { action } => ops::dlq(&load(&cli)?, action).await,
        Command::Service { action } => services::service(&load(&cli)?, action).await,
        Command::Audit {
            action: AuditAction::Verify,
        } => ops::audit_verify(&load(&cli)?).await,
        Command::Trace { cid, window, since } => {
            events::trace(&load(&cli)?, cid, *window, *since).await
        }
    }
}
