//! astra-bus: Redis Streams as a dependable event bus.
//!
//! Module map:
//!
//! - [`config`]: the topology as TOML (`streams.toml`, `consumer-groups/*.toml`), validated
//!   with file:line:col diagnostics.
//! - [`envelope`]: the flat stream-entry format every event uses, derived-event ids.
//! - [`events`]: typed payloads of every event in the shipped topology.
//! - [`handlers`]: the handler interface (decide, don't commit) and the domain handlers.
//! - [`bus`]: everything that talks to Redis: the client wrapper, declaration, consuming,
//!   the commit protocol, reclaiming, dead letters, publishing, retention, status.
//! - [`daemon`]: `run(config, shutdown)`: the whole daemon.
//! - [`kpi`]: business KPIs computed from the analytics counters in Redis.
//! - [`metrics`]: every exported metric, in one place.
//! - [`edge`]: the HTTP edge (publish API, projection reads, `/health`, `/ready`,
//!   `/metrics`, `/dashboard`, the operator's console at `/console`, API keys, rate
//!   limits, idempotency).
//! - [`shutdown`]: the shutdown signal every loop listens to.
//! - [`watchdog`]: liveness of the delivery loops and the systemd watchdog fed from it.
//! - [`logging`]: text or JSON-lines logs.
//! - [`cli`]: the `astra-bus` command line.

pub mod bus;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod edge;
pub mod envelope;
pub mod events;
pub mod handlers;
pub mod kpi;
pub mod logging;
pub mod metrics;
pub mod shutdown;
pub mod watchdog;

pub use daemon::run;
