//! The daemon: connect, declare, run every group's readers and reclaimers plus retention,
//! and on shutdown stop reading, finish in-flight work and return within the deadline.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::bus::consume::{GroupContext, read_loop, redis_backoff, sleep_or_shutdown};
use crate::bus::declare::declare;
use crate::bus::reclaim::reclaim_loop;
use crate::bus::retention::retention_loop;
use crate::bus::{BusError, Redis};
use crate::config::Config;
use crate::handlers::Registry;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A handler rejected its group's options (or is unknown).
    #[error("handler setup: {0}")]
    Handler(String),
    /// Redis failed in a way retrying cannot fix.
    #[error(transparent)]
    Redis(#[from] BusError),
    /// The HTTP listener could not bind.
    #[error("http.listen {addr}: {source}")]
    Http {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Reads stream and group health from Redis every `interval` (one pipelined round) into
/// the metrics, so scrapes are served from memory.
async fn health_loop(redis: Redis, config: Config, metrics: Arc<Metrics>, mut shutdown: Shutdown) {
    loop {
        match crate::bus::status::snapshot(&redis, &config).await {
            Ok(snap) => metrics.record_health(&snap),
            Err(e) => {
                metrics.redis_up.set(0);
                tracing::warn!(error = %e, "health refresh failed");
            }
        }
        if !sleep_or_shutdown(config.metrics.refresh_interval, &mut shutdown).await {
            break;
        }
    }
}

/// Connects to Redis, retrying with backoff until it answers or shutdown.
pub async fn connect_with_retry(cfg: &Config, shutdown: &mut Shutdown) -> Option<Redis> {
    let mut backoff = redis_backoff();
    loop {
        match Redis::connect_config(&cfg.redis).await {
            Ok(r) => return Some(r),
            Err(e) => {
                let d = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(url = %cfg.redis.url, error = %e, "redis not reachable, retrying in {d:?}");
                if !sleep_or_shutdown(d, shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// Options beyond the config that embedders and tests may set.
pub struct RunOptions {
    /// Handlers known to this daemon.
    pub registry: Registry,
    /// Where metrics are recorded.
    pub metrics: Arc<Metrics>,
    /// Called once every group's readers are running (systemd READY=1, tests).
    pub on_ready: Option<Box<dyn FnOnce() + Send>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            registry: Registry::builtin(),
            metrics: Metrics::new(),
            on_ready: None,
        }
    }
}

/// Runs the daemon with the built-in handlers until `shutdown` fires.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), RunError> {
    run_with(config, RunOptions::default(), shutdown).await
}

/// Runs the daemon until `shutdown` fires, then drains: readers stop, in-flight batches
/// finish and commit; whatever is not done by `shutdown_deadline` stays pending in Redis
/// (reclaimed later, never lost).
pub async fn run_with(
    config: Config,
    opts: RunOptions,
    shutdown: Shutdown,
) -> Result<(), RunError> {
    let mut sd = shutdown.clone();
    // Build every handler first: a bad option is a configuration error, fail fast.
    let mut handlers = vec![];
    for g in &config.groups {
        handlers.push(opts.registry.build(g).map_err(RunError::Handler)?);
    }
    // Bind early: a taken port is a configuration error, reported before anything runs.
    let listener = if config.http.enabled {
        let addr = config.http.listen;
        Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Http { addr, source })?,
        )
    } else {
        None
    };
    let Some(redis) = connect_with_retry(&config, &mut sd).await else {
        return Ok(());
    };
    let metrics = opts.metrics.clone();
    {
        let m = metrics.clone();
        redis.on_reconnect(move || {
            m.reconnects.inc();
        });
    }
    let mut backoff = redis_backoff();
    loop {
        match declare(&redis, &config).await {
            Ok(r) => {
                for (s, g) in &r.unknown_groups {
                    tracing::warn!(stream = %s, group = %g, "group in Redis is not in the config (left alone)");
                }
                tracing::info!(
                    created = r.created(),
                    pairs = r.groups.len(),
                    "topology declared"
                );
                break;
            }
            Err(e) => {
                let d = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %e, "declare failed, retrying in {d:?}");
                if !sleep_or_shutdown(d, &mut sd).await {
                    redis.quit().await;
                    return Ok(());
                }
            }
        }
    }

    let mut tasks = JoinSet::new();
    for (g, handler) in config.groups.iter().zip(handlers) {
        let ctx = Arc::new(GroupContext {
            redis: redis.clone(),
            group: Arc::new(g.clone()),
            handler,
            consumer: config.daemon.instance.clone(),
            dedup_ttl: config.daemon.dedup_ttl,
            inflight: Arc::new(Semaphore::new(g.concurrency)),
            metrics: metrics.clone(),
            publishes: g.publishes.iter().cloned().collect::<HashSet<_>>(),
        });
        for s in &g.reads {
            metrics.init_series(s, &g.name);
            tasks.spawn(read_loop(ctx.clone(), s.clone(), shutdown.clone()));
            tasks.spawn(reclaim_loop(
                ctx.clone(),
                s.clone(),
                config.daemon.consumer_idle_limit,
                shutdown.clone(),
            ));
        }
    }
    if let Some(listener) = listener {
        tracing::info!(addr = %config.http.listen, "serving /metrics and /health");
        let m = metrics.clone();
        let sd2 = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = crate::http::serve(listener, m, sd2).await {
                tracing::error!(error = %e, "http listener failed");
            }
        });
    }
    tasks.spawn(health_loop(
        redis.clone(),
        config.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(retention_loop(
        redis.clone(),
        config.streams.clone(),
        config.retention.interval,
        shutdown.clone(),
    ));
    tracing::info!(groups = config.groups.len(), consumer = %config.daemon.instance, "astra-bus running");
    if let Some(f) = opts.on_ready {
        f();
    }

    sd.recv().await;
    tracing::info!(deadline = ?config.daemon.shutdown_deadline, "shutting down: finishing in-flight work");
    let drained = tokio::time::timeout(config.daemon.shutdown_deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "drain deadline passed; unfinished entries stay pending and will be reclaimed"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    redis.quit().await;
    tracing::info!("astra-bus stopped");
    Ok(())
}
