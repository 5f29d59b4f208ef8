//! Operating a running bus: `status` (per group and stream), `dlq list|replay|purge`,
//! `audit verify`.

use std::process::ExitCode;

use super::{DlqAction, connect};
use crate::bus::Redis;
use crate::config::Config;

/// Prints per group and stream: length, lag, pending, oldest pending age, consumers,
/// dead letters (a table, or JSON).
pub(super) async fn status(cfg: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let redis = connect(cfg).await?;
    let rows = crate::bus::status::status(&redis, cfg).await?;
    if json {
        redis.quit().await;
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    // The table ends with the service registry; the JSON stays the groups' rows.
    let services = crate::bus::services::list(&redis, crate::envelope::now_ms()).await;
    redis.quit().await;
    println!(
        "{:<32} {:<44} {:>9} {:>8} {:>8} {:>12} {:>9} {:>6}",
        "GROUP", "STREAM", "LENGTH", "LAG", "PENDING", "OLDEST_PEND", "CONSUMERS", "DLQ"
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
                humantime::format_duration(std::time::Duration::from_millis(ms as u64)).to_string()
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
    // The service registry (`astra-bus service list` has each instance).
    match services {
        Ok(s) if s.is_empty() => {}
        Ok(s) => {
            println!();
            println!("{:<32} {:>8} {:>6}", "SERVICE", "HEALTHY", "TOTAL");
            for s in s {
                println!("{:<32} {:>8} {:>6}", s.name, s.healthy, s.total);
            }
        }
        Err(e) => println!("\nservices: cannot read the registry: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Walks the audit log's hash chain: `ok: …` (exit 0) or the first broken link (exit 1).
pub(super) async fn audit_verify(cfg: &Config) -> anyhow::Result<ExitCode> {
    let redis = connect(cfg).await?;
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

/// Runs a `dlq` action on every dead-letter stream of the config.
pub(super) async fn dlq(cfg: &Config, action: &DlqAction) -> anyhow::Result<ExitCode> {
    let redis = connect(cfg).await?;
    let code = dlq_command(&redis, cfg, action).await?;
    redis.quit().await;
    Ok(code)
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
                        super::events::describe_entry(d.get("stream").unwrap_or(""), &orig)
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
