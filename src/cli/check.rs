//! `astra-bus check` (validate the configuration, print the topology) and `catalog`
//! (the topology as AsyncAPI or JSON Schema): the config only, no Redis.

use std::process::ExitCode;

use super::{Cli, load};
use crate::config::Config;

/// Prints the event catalog in `format`.
pub(super) fn catalog(cli: &Cli, format: crate::catalog::Format) -> anyhow::Result<ExitCode> {
    print!("{}", crate::catalog::render(&load(cli)?, format));
    Ok(ExitCode::SUCCESS)
}

/// Validates the configuration and the handler options; prints the topology or every
/// problem.
pub(super) fn check(cli: &Cli) -> ExitCode {
    let cfg = match super::load_config(cli) {
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
    if let Err(errors) = super::registry().check(&cfg.groups) {
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
