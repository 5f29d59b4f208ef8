//! The `astra-bus` command line. Each subcommand is a thin shell over the library; errors
//! become `anyhow` here and nowhere else.
//!
//! Files by job: [`args`] (the argument model and `--help` text), this one (`main`, the
//! dispatch, loading the config and connecting), then one file per subcommand family:
//! [`check`] (`check`, `catalog`), [`admin`] (`declare`, `functions`), [`run`] (the
//! daemon), [`key`], [`events`] (`publish`, `tail`, `trace`), [`ops`] (`status`, `dlq`,
//! `audit`).

mod admin;
mod args;
mod check;
mod events;
mod key;
mod ops;
mod run;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

pub use args::{AuditAction, Cli, Command, DlqAction, KeyAction};
pub use check::topology_text;
pub use events::describe_entry;

use crate::bus::Redis;
use crate::config::Config;

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
        Command::Audit {
            action: AuditAction::Verify,
        } => ops::audit_verify(&load(&cli)?).await,
        Command::Trace { cid, window, since } => {
            events::trace(&load(&cli)?, cid, *window, *since).await
        }
    }
}
