//! Setting up Redis: `astra-bus declare` (load the function library, create every stream
//! and group) and `functions` (print the library for an admin who loads it by hand).

use std::process::ExitCode;

use super::connect;
use crate::bus::declare::{GroupState, declare as declare_topology};
use crate::config::Config;

/// Loads the function library and declares every stream and group; prints what it found
/// and did.
pub(super) async fn declare(cfg: &Config) -> anyhow::Result<ExitCode> {
    let redis = connect(cfg).await?;
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
    let report = declare_topology(&redis, cfg).await?;
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

/// Prints this binary's Redis function library.
pub(super) fn functions() -> anyhow::Result<ExitCode> {
    print!("{}", crate::bus::script::library().code);
    Ok(ExitCode::SUCCESS)
}
