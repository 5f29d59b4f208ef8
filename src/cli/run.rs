//! `astra-bus run`: the daemon under the process's signals (SIGTERM/Ctrl-C drain, SIGHUP
//! reloads), systemd notifications and watchdog.

use std::process::ExitCode;

use super::{Cli, load};
use crate::daemon::RunOptions;
use crate::shutdown::Shutdown;

/// Runs the daemon in `role` until SIGTERM or Ctrl-C, restarting its groups on each valid
/// SIGHUP reload.
pub(super) async fn run_daemon(cli: &Cli, role: &str) -> anyhow::Result<ExitCode> {
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
            registry: super::registry().clone(),
        };
        let mut daemon = tokio::spawn(crate::daemon::run_with(cfg.clone(), opts, shutdown));
        let reload = loop {
            tokio::select! {
                _ = term.recv() => break None,
                _ = tokio::signal::ctrl_c() => break None,
                _ = hup.recv() => match super::load_config(cli).map_err(|e| e.to_string()).and_then(|new| {
                    // Handler options are part of the config: a reload they break is refused.
                    super::registry().check(&new.groups).map(|()| new).map_err(|e| e.join("\n"))
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
