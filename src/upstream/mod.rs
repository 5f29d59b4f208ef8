//! Talking to the services of the registry (`[services.<name>]`): which instance gets the
//! next request, and each instance's circuit breaker.
//!
//! - The healthy instances come from the registry ([`crate::bus::services`]), read at
//!   most once per `registry_refresh` per service and kept when Redis cannot be read, so
//!   a Redis outage does not take the gateway's routes down with it.
//! - [`Upstreams::pick`] goes round-robin over the healthy instances whose breaker admits
//!   a request ([`breaker`]); the [`Attempt`] it returns must be told how it went, and
//!   an attempt dropped without an outcome (the client went away) frees a probe's slot.
//! - Breakers are per instance and per daemon (each edge judges what it sees), their
//!   states exported as `astra_bus_breaker_state{service,state}` (how many instances are
//!   in each state: a fixed label set, services being declared in TOML) and their
//!   transitions as `astra_bus_breaker_transitions_total{service,to}` with a log line.
//!
//! [`http`] is the pooled client every attempt goes through; [`remote`] is remote
//! handlers' wire contract (the daemon asks a service to decide a batch of events).

pub mod breaker;
pub mod http;
pub mod remote;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use breaker::{Admit, Breaker, State};

use crate::bus::Redis;
use crate::bus::services::{self, Instance};
use crate::config::{Config, ServiceConfig};
use crate::envelope::now_ms;
use crate::internal_events::{BreakerStates, BreakerTransitioned};
use crate::metrics::Metrics;

/// Why no instance can take a request now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// No healthy instance is registered (or none that is not already tried).
    NoInstance,
    /// Every healthy instance's breaker is open; the first probe is due in about this long.
    AllOpen(Duration),
    /// The registry could not be read and nothing was read before.
    Registry(String),
}

/// The declared services and their instances' breakers.
pub struct Upstreams {
    services: HashMap<String, Arc<Upstream>>,
    http: http::Http,
    metrics: Arc<Metrics>,
}

struct Upstream {
    cfg: ServiceConfig,
    inner: Mutex<Inner>,
    /// One registry read at a time per service; the others use what it reads.
    reading: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Inner {
    /// When the healthy list was last read.
    read_at: Option<Instant>,
    /// Healthy instances, by id.
    instances: Vec<Instance>,
    /// One breaker per instance in `instances`.
    breakers: HashMap<String, Breaker>,
    /// Round-robin position.
    next: usize,
}

/// One request on its way to an instance. Report how it went with
/// [`Attempt::succeeded`] or [`Attempt::failed`].
pub struct Attempt {
    up: Arc<Upstream>,
    metrics: Arc<Metrics>,
    /// The instance's id.
    pub instance: String,
    /// Its base URL (`http://host:port[/base]`).
    pub url: String,
    /// Whether this is a half-open breaker's probe.
    pub probe: bool,
    reported: bool,
}

impl Upstreams {
    /// Every `[services.<name>]` of `config`, each breaker closed.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Upstreams {
        let services: HashMap<_, _> = config
            .services
            .iter()
            .map(|s| {
                let up = Arc::new(Upstream {
                    cfg: s.clone(),
                    inner: Mutex::default(),
                    reading: tokio::sync::Mutex::new(()),
                });
                (s.name.clone(), up)
            })
            .collect();
        for name in services.keys() {
            BreakerStates {
                service: name,
                counts: [0, 0, 0],
            }
            .emit(&metrics);
        }
        Upstreams {
            services,
            http: http::Http::new(),
            metrics,
        }
    }

    /// A declared service's settings.
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.get(name).map(|u| &u.cfg)
    }

    /// The shared HTTP client.
    pub fn http(&self) -> &http::Http {
        &self.http
    }

    /// The next instance of `service` to try, skipping the ids in `tried`.
    ///
    /// # Panics
    /// If `service` is not declared (callers look it up first).
    pub async fn pick(
        &self,
        redis: &Redis,
        service: &str,
        tried: &[String],
    ) -> Result<Attempt, Unavailable> {
        let up = self
            .services
            .get(service)
            .expect("a declared service")
            .clone();
        self.refresh(&up, redis).await?;
        let now = Instant::now();
        let mut inner = up.inner.lock().expect("upstream state");
        let Inner {
            instances,
            breakers,
            next,
            ..
        } = &mut *inner;
        let n = instances.len();
        let mut soonest: Option<Duration> = None;
        let mut transition = None;
        let mut chosen = None;
        for k in 0..n {
            let i = (*next + k) % n;
            let inst = &instances[i];
            if tried.contains(&inst.id) {
                continue;
            }
            let b = breakers.entry(inst.id.clone()).or_default();
            let (admit, t) = b.admit(&up.cfg.breaker, now);
            if t.is_some() {
                transition = t.map(|t| (inst.id.clone(), t));
            }
            match admit {
                Admit::Refuse(d) => soonest = Some(soonest.map_or(d, |s| s.min(d))),
                Admit::Pass | Admit::Probe => {
                    *next = (i + 1) % n.max(1);
                    chosen = Some((inst.clone(), admit == Admit::Probe));
                    break;
                }
            }
        }
        let counts = counts(breakers);
        drop(inner);
        if let Some((instance, (from, to))) = transition {
            transitioned(&self.metrics, &up, &instance, from, to, counts);
        }
        match chosen {
            Some((inst, probe)) => Ok(Attempt {
                up,
                metrics: self.metrics.clone(),
                instance: inst.id,
                url: inst.url,
                probe,
                reported: false,
            }),
            None => Err(soonest.map_or(Unavailable::NoInstance, Unavailable::AllOpen)),
        }
    }

    /// Re-reads the healthy instances when the list is older than `registry_refresh`.
    async fn refresh(&self, up: &Arc<Upstream>, redis: &Redis) -> Result<(), Unavailable> {
        let fresh = |u: &Upstream| {
            let inner = u.inner.lock().expect("upstream state");
            inner
                .read_at
                .is_some_and(|t| t.elapsed() < u.cfg.registry_refresh)
        };
        if fresh(up) {
            return Ok(());
        }
        let _one = up.reading.lock().await;
        if fresh(up) {
            return Ok(());
        }
        let read = services::instances(redis, &up.cfg.name, now_ms()).await;
        let mut inner = up.inner.lock().expect("upstream state");
        let listed = match read {
            Ok(l) => l,
            // Keep routing with what was read before; try Redis again next time.
            Err(e) if inner.read_at.is_some() => {
                tracing::warn!(service = %up.cfg.name, error = %e, "upstream: registry read failed; using the instances read before");
                return Ok(());
            }
            Err(e) => return Err(Unavailable::Registry(e.to_string())),
        };
        inner.read_at = Some(Instant::now());
        // Only plain-HTTP instances are routable (no TLS client yet).
        inner.instances = listed
            .into_iter()
            .filter(|i| i.healthy && i.url.starts_with("http://"))
            .collect();
        let ids: std::collections::HashSet<String> =
            inner.instances.iter().map(|i| i.id.clone()).collect();
        inner.breakers.retain(|id, _| ids.contains(id));
        for id in ids {
            inner.breakers.entry(id).or_default();
        }
        let counts = counts(&inner.breakers);
        drop(inner);
        BreakerStates {
            service: &up.cfg.name,
            counts,
        }
        .emit(&self.metrics);
        Ok(())
    }
}

fn transitioned(
    metrics: &Metrics,
    up: &Upstream,
    instance: &str,
    from: State,
    to: State,
    counts: [i64; 3],
) {
    BreakerTransitioned {
        service: &up.cfg.name,
        instance,
        from: from.as_str(),
        to: to.as_str(),
        failures: up.cfg.breaker.failures,
        open_for: up.cfg.breaker.open_for,
    }
    .emit(metrics);
    BreakerStates {
        service: &up.cfg.name,
        counts,
    }
    .emit(metrics);
}

/// How many breakers are in each of [`State::ALL`].
fn counts(breakers: &HashMap<String, Breaker>) -> [i64; 3] {
    let mut c = [0; 3];
    for b in breakers.values() {
        let i = State::ALL.iter().position(|s| *s == b.state()).unwrap_or(0);
        c[i] += 1;
    }
    c
}

impl Attempt {
    /// The instance answered (any status below 500).
    pub fn succeeded(mut self) {
        self.report(|b, _| b.success());
    }

    /// The instance failed: no connection, lost, timed out, too large, or a 5xx answer.
    pub fn failed(mut self) {
        self.report(|b, cfg| b.failure(cfg, Instant::now()));
    }

    fn report(
        &mut self,
        f: impl FnOnce(&mut Breaker, &crate::config::BreakerConfig) -> Option<breaker::Transition>,
    ) {
        self.reported = true;
        let mut inner = self.up.inner.lock().expect("upstream state");
        // An instance that left the registry meanwhile has no breaker any more.
        let Some(b) = inner.breakers.get_mut(&self.instance) else {
            return;
        };
        let t = f(b, &self.up.cfg.breaker);
        let counts = counts(&inner.breakers);
        drop(inner);
        if let Some((from, to)) = t {
            transitioned(&self.metrics, &self.up, &self.instance, from, to, counts);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.reported
            && let Ok(mut inner) = self.up.inner.lock()
            && let Some(b) = inner.breakers.get_mut(&self.instance)
        {
            b.abandon();
        }
    }
}
