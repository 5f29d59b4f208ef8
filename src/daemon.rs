//! The daemon: connect, declare, run every group's readers and reclaimers plus retention,
//! and on shutdown stop reading, finish in-flight work and return within the deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::bus::consume::{GroupContext, redis_backoff, sleep_or_shutdown};
use crate::bus::declare::declare;
use crate::bus::reader::read_loop;
use crate::bus::reclaim::reclaim_loop;
use crate::bus::retention::retention_loop;
use crate::bus::{BusError, Redis};
use crate::config::Config;
use crate::edge::{Edge, LatestSnapshot};
use crate::handlers::Registry;
use crate::internal_events::{
    HealthRefreshFailed, HealthRefreshed, RedisReconnected, SpansDropped,
};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::watchdog::{LOOP_SLACK, Liveness};

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
    #[error("edge.listen {addr}: {source}")]
    Http {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Reads stream and group health from Redis every `interval` (one pipelined round) into
/// the metrics, the latest snapshot and the console's history, so scrapes, `/dashboard`
/// and consoles are served from memory.
async fn health_loop(
    redis: Redis,
    config: Config,
    metrics: Arc<Metrics>,
    latest: LatestSnapshot,
    record_positions: bool,
    history: Arc<crate::edge::console::History>,
    mut shutdown: Shutdown,
) {
    loop {
        match crate::bus::status::snapshot(&redis, &config).await {
            Ok(snap) => {
                HealthRefreshed { snapshot: &snap }.emit(&metrics);
                // Where each group is, so a group that vanishes is re-created there.
                if record_positions
                    && let Err(e) = crate::bus::status::record_positions(&redis, &snap).await
                {
                    tracing::warn!(error = %e, "recording group positions failed");
                }
                let at = crate::envelope::now_ms();
                history.record(at, &snap);
                *latest.write().expect("snapshot lock") = Some((at, snap));
            }
            Err(e) => {
                HealthRefreshFailed { error: &e }.emit(&metrics);
            }
        }
        if !sleep_or_shutdown(config.metrics.refresh_interval, &mut shutdown).await {
            break;
        }
    }
}

/// Connects to Redis, retrying with backoff until it answers or shutdown (`Ok(None)`).
/// Settings that cannot work (an unreadable password file) fail at once instead.
pub async fn connect_with_retry(
    cfg: &Config,
    shutdown: &mut Shutdown,
) -> Result<Option<Redis>, BusError> {
    let mut backoff = redis_backoff();
    loop {
        match Redis::connect_config(&cfg.redis).await {
            Ok(r) => return Ok(Some(r)),
            Err(e @ BusError::Settings(_)) => return Err(e),
            Err(e) => {
                let d = backoff.next().unwrap_or(Duration::from_secs(5));
                let url = crate::bus::client::redact_url(&cfg.redis.url);
                tracing::warn!(%url, error = %e, "redis not reachable, retrying in {d:?}");
                if !sleep_or_shutdown(d, shutdown).await {
                    return Ok(None);
                }
            }
        }
    }
}

/// What this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Every consumer group, retention and the HTTP edge.
    #[default]
    All,
    /// Only the HTTP edge (publish, reads, ops routes): no consumer groups, no declare,
    /// no retention, so it can log in as a Redis user that may only publish and read.
    Edge,
}

/// Options beyond the config that embedders and tests may set.
pub struct RunOptions {
    /// What to run.
    pub role: Role,
    /// Handlers known to this daemon.
    pub registry: Registry,
    /// Where metrics are recorded.
    pub metrics: Arc<Metrics>,
    /// Called once every group's readers are running (systemd READY=1, tests).
    pub on_ready: Option<Box<dyn FnOnce() + Send>>,
    /// Where every reader registers its heartbeat (the systemd watchdog checks it).
    pub liveness: Arc<Liveness>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            role: Role::All,
            registry: Registry::builtin(),
            metrics: Metrics::new(),
            on_ready: None,
            liveness: Liveness::new(),
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
    let telemetry = start_tracing(&config, &opts.metrics);
    let r = run_traced(config, opts, shutdown).await;
    if let Some(t) = telemetry {
        // Flushing blocks (at most the export timeout): not on a runtime worker.
        let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
    }
    r
}

/// Installs the OTLP tracer of `[tracing]`, if enabled. Tracing that cannot start is
/// logged and left off: it never keeps the daemon from delivering.
fn start_tracing(config: &Config, metrics: &Arc<Metrics>) -> Option<crate::telemetry::Telemetry> {
    let m = metrics.clone();
    let on_drop: crate::telemetry::DropHook = Arc::new(move |reason, count| {
        SpansDropped {
            reason: reason.as_str(),
            count,
        }
        .emit(&m);
    });
    let t = &config.tracing;
    match crate::telemetry::install(t, &config.daemon.instance, on_drop) {
        Ok(Some(telemetry)) => {
            tracing::info!(endpoint = t.endpoint(), protocol = t.protocol.as_str(), ratio = t.sampling.ratio, parent_based = t.sampling.parent_based, service = %t.service_name, "tracing: exporting spans over OTLP");
            Some(telemetry)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!(error = %e, "tracing could not start; running without it");
            None
        }
    }
}

async fn run_traced(config: Config, opts: RunOptions, shutdown: Shutdown) -> Result<(), RunError> {
    let mut sd = shutdown.clone();
    // Build every handler first: a bad option is a configuration error, fail fast.
    let mut handlers = vec![];
    for g in &config.groups {
        handlers.push(opts.registry.build(g).map_err(RunError::Handler)?);
    }
    let metrics = opts.metrics.clone();
    let latest = LatestSnapshot::default();
    let mut tasks = JoinSet::new();
    // Bind early: a taken port is a configuration error, reported before anything runs.
    // Serve at once: /health answers while Redis is still unreachable, /ready says why
    // the daemon is not ready, and publishes get 503 instead of hanging.
    let edge = Edge::new(Arc::new(config.clone()), metrics.clone(), latest.clone());
    if config.edge.enabled {
        let addr = config.edge.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Http { addr, source })?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(addr), auth = ?config.edge.auth, "http edge listening");
        let edge = edge.clone();
        let sd2 = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = crate::edge::serve(listener, edge, sd2).await {
                tracing::error!(error = %e, "http edge failed");
            }
        });
    }
    // Settings that cannot work (an unreadable password file) stop the daemon at once.
    let redis = match connect_with_retry(&config, &mut sd).await {
        Ok(Some(redis)) => redis,
        Ok(None) => return drain(tasks, &config).await,
        Err(e) => {
            // Nothing has been read yet: the edge can simply stop.
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            return Err(e.into());
        }
    };
    {
        let m = metrics.clone();
        redis.on_reconnect(move || {
            RedisReconnected.emit(&m);
        });
    }
    edge.connected(&redis);
    let mut backoff = redis_backoff();
    // Every script runs as a function of this binary's library: check it is loaded on
    // every master (loading it when this user may). A user that may not load it waits
    // here, saying which admin step is missing, until an admin has run it.
    loop {
        match crate::bus::script::ensure(&redis).await {
            Ok(r) => {
                tracing::info!(library = %r.name, loaded = ?r.loaded, others = ?r.others, "redis functions ready");
                break;
            }
            Err(e) => {
                let d = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::error!(error = %e, "redis functions not ready, checking again in {d:?}");
                if !sleep_or_shutdown(d, &mut sd).await {
                    redis.quit().await;
                    return drain(tasks, &config).await;
                }
            }
        }
    }
    let mut backoff = redis_backoff();
    // The edge alone neither declares nor consumes: whoever runs the groups declares.
    let mut declared = opts.role != Role::All;
    while !declared {
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
                declared = true;
            }
            Err(e) => {
                let d = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %e, "declare failed, retrying in {d:?}");
                if !sleep_or_shutdown(d, &mut sd).await {
                    redis.quit().await;
                    return drain(tasks, &config).await;
                }
            }
        }
    }
    edge.declared();

    let groups: &[crate::config::GroupConfig] = if opts.role == Role::All {
        &config.groups
    } else {
        &[]
    };
    for (g, handler) in groups.iter().zip(handlers) {
        // A remote handler's group is decided by its service, through the edge's
        // upstreams (one set of breakers per daemon, shared with the gateway proxy).
        let remote = handler.remote().cloned().map(|spec| {
            Arc::new(crate::upstream::remote::RemoteDecider::new(
                spec,
                Arc::new(g.clone()),
                edge.upstreams.clone(),
                redis.clone(),
                metrics.clone(),
            )) as Arc<dyn crate::handlers::Decide>
        });
        let ctx = Arc::new(
            GroupContext::new(
                redis.clone(),
                g.clone(),
                handler,
                &config.daemon.instance,
                config.daemon.dedup_ttl,
                metrics.clone(),
            )
            .with_schemas(&config.streams)
            .with_remote(remote),
        );
        // A reader iteration is one blocking read (block + command timeout) plus, at
        // worst, one retry backoff: longer than that without an iteration means stuck.
        let bound = g.block + config.redis.command_timeout + LOOP_SLACK;
        // Its streams, and its replay stream (dead letters handed back to it).
        for s in g.reads.iter().cloned().chain([ctx.replay_stream()]) {
            let s = &s;
            if !crate::bus::consume::is_replay_stream(s) {
                metrics.init_series(s, &g.name);
            }
            // Every log line of these loops carries the group and stream (JSON logs
            // flatten span fields into the line).
            let span = tracing::info_span!("reader", group = %g.name, stream = %s);
            let beat = opts.liveness.register(format!("{} {s}", g.name), bound);
            span.in_scope(|| tracing::debug!(?bound, "reader started"));
            tasks.spawn(
                read_loop(ctx.clone(), s.clone(), shutdown.clone(), beat).instrument(span.clone()),
            );
            tasks.spawn(
                reclaim_loop(
                    ctx.clone(),
                    s.clone(),
                    config.daemon.consumer_idle_limit,
                    shutdown.clone(),
                )
                .instrument(span),
            );
        }
    }
    tasks.spawn(health_loop(
        redis.clone(),
        config.clone(),
        metrics.clone(),
        latest,
        opts.role == Role::All,
        edge.history.clone(),
        shutdown.clone(),
    ));
    if opts.role == Role::All {
        let readers = config
            .readers()
            .into_iter()
            .map(|(s, gs)| (s.to_string(), gs.iter().map(|g| g.name.clone()).collect()))
            .collect();
        tasks.spawn(retention_loop(
            redis.clone(),
            config.streams.clone(),
            readers,
            config.retention.interval,
            shutdown.clone(),
        ));
    }
    tracing::info!(groups = config.groups.len(), consumer = %config.daemon.instance, "astra-bus running");
    if let Some(f) = opts.on_ready {
        f();
    }

    sd.recv().await;
    let r = drain(tasks, &config).await;
    redis.quit().await;
    tracing::info!("astra-bus stopped");
    r
}

/// After shutdown: waits for every task (readers finish and commit their batches, the
/// edge answers its in-flight requests) until `shutdown_deadline`, then aborts the rest.
async fn drain(mut tasks: JoinSet<()>, config: &Config) -> Result<(), RunError> {
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
    Ok(())
}
