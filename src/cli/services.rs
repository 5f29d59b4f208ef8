//! `astra-bus service list | heartbeat | remove`: the service registry from the shell.

use std::process::ExitCode;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

use super::{ServiceAction, connect};
use crate::bus::services::{self, Record};
use crate::config::Config;
use crate::edge::services::check_heartbeat;
use crate::envelope::now_ms;

pub(super) async fn service(cfg: &Config, action: &ServiceAction) -> anyhow::Result<ExitCode> {
    // Bad arguments are refused before anything connects.
    match action {
        ServiceAction::List { .. } => {}
        ServiceAction::Heartbeat {
            service,
            instance,
            url,
            ttl,
            ..
        } => {
            check_names(service, instance)?;
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            check_heartbeat(url, ttl_ms).map_err(|r| {
                let flag = if r.field == "url" { "--url" } else { "--ttl" };
                anyhow::anyhow!("{flag}: {}", r.why)
            })?;
        }
        ServiceAction::Remove { service, instance } => check_names(service, instance)?,
    }
    let redis = connect(cfg).await?;
    match action {
        ServiceAction::List { json } => {
            let all = services::list(&redis, now_ms()).await?;
            if *json {
                println!("{}", serde_json::json!({ "services": all }));
                return Ok(ExitCode::SUCCESS);
            }
            if all.is_empty() {
                println!("no services registered");
            }
            for s in &all {
                println!("{}: {}/{} healthy", s.name, s.healthy, s.total);
                for i in &s.instances {
                    let age = (now_ms() - i.last_heartbeat_ms).max(0);
                    println!(
                        "  {:<24} {:<9} {}  (last heartbeat {} ms ago)",
                        i.id,
                        if i.healthy { "healthy" } else { "unhealthy" },
                        i.url,
                        age
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ServiceAction::Heartbeat {
            service,
            instance,
            url,
            ttl,
            once,
        } => {
            let beat = || async {
                let rec = Record {
                    url: url.clone(),
                    ttl_ms: ttl.as_millis() as u64,
                    seen_ms: now_ms(),
                };
                services::heartbeat(&redis, service, instance, &rec).await
            };
            beat()
                .await
                .with_context(|| format!("registering {service}/{instance}"))?;
            println!(
                "{service}/{instance} registered at {url}, healthy for {ttl:?} after each heartbeat"
            );
            if *once {
                return Ok(ExitCode::SUCCESS);
            }
            let mut term = signal(SignalKind::terminate())?;
            let mut tick = tokio::time::interval(*ttl / 3);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        // A missed beat is retried at the next tick; the ttl covers two.
                        if let Err(e) = beat().await {
                            eprintln!("heartbeat of {service}/{instance} failed (retried in {:?}): {e}", *ttl / 3);
                        }
                    }
                    _ = term.recv() => break,
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
            services::deregister(&redis, service, instance).await?;
            println!("{service}/{instance} removed");
            Ok(ExitCode::SUCCESS)
        }
        ServiceAction::Remove { service, instance } => {
            if services::deregister(&redis, service, instance).await? {
                println!("{service}/{instance} removed");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "service {service} has no instance {instance} (expired, or never registered)"
                );
                Ok(ExitCode::from(1))
            }
        }
    }
}

fn check_names(service: &str, instance: &str) -> anyhow::Result<()> {
    crate::edge::services::check_names(service, instance).map_err(|r| {
        let value = if r.field == "service" {
            service
        } else {
            instance
        };
        anyhow::anyhow!("{} {value:?}: {}", r.field, r.why)
    })
}
