//! astra-bus: Redis Streams as a dependable event bus.
//!
//! Module map:
//!
//! - [`envelope`]: the flat stream-entry format every event uses, stream names, derived-event
//!   ids.
//! - [`events`]: typed payloads of every event in the shipped topology.
//! - [`calendar`]: UTC days and ISO weeks of Unix-ms timestamps.
//! - [`group`]: one consumer group's resolved settings ([`group::GroupConfig`]) and their
//!   defaults.
//! - [`handler`]: the handler interface (decide, don't commit): `Event`, `Op`, `Reply`,
//!   `Step`, `Emit`, `HandlerError`, the `Handler` trait. Shared by `handlers` and `bus`.
//! - [`handlers`]: the domain handlers, one file each: `handlers/<domain>/<name>.rs` is
//!   the handler `<domain>.<name>` with its unit tests (e.g.
//!   `handlers/gamification/xp_processing.rs`); `handlers/builtin/` the generic ones;
//!   `registry.rs` binds names to them, `typed.rs` decodes their input per stream,
//!   `support.rs` holds what they share.
//! - [`config`]: the topology as TOML (`streams.toml`, `consumer-groups/*.toml`), validated
//!   with file:line:col diagnostics: `raw.rs` (the TOML), `model.rs` (validated, with the
//!   defaults), `validate/` (one file per section), `env.rs`, `url.rs`, `load.rs`.
//! - [`bus`]: everything that talks to Redis: the client wrapper, declaration, consuming,
//!   the commit protocol, reclaiming, dead letters, publishing, retention, status.
//! - [`daemon`]: `run(config, shutdown)`: the whole daemon.
//! - [`kpi`]: business KPIs computed from the analytics counters in Redis.
//! - [`metrics`]: every exported metric, in one place.
//! - [`catalog`]: the topology as an AsyncAPI 3.0 document and payload JSON Schemas
//!   (`astra-bus catalog`, `/asyncapi.json`; no Redis).
//! - [`edge`]: the HTTP edge (publish API, projection reads, `/health`, `/ready`,
//!   `/metrics`, `/dashboard`, the operator's console at `/console`, API keys, rate
//!   limits, idempotency).
//! - [`shutdown`]: the shutdown signal every loop listens to.
//! - [`watchdog`]: liveness of the delivery loops and the systemd watchdog fed from it.
//! - [`logging`]: text or JSON-lines logs.
//! - [`cli`]: the `astra-bus` command line.

// The bottom layer (`envelope`, `events`, `calendar`, `group`, `handler`) imports nothing
// above it; `handlers` builds on it, `config` validates handler names through
// `handlers::Registry`, and `bus`, `daemon`, `edge` and `cli` sit on top.
pub mod bus;
pub mod calendar;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod edge;
pub mod envelope;
pub mod events;
pub mod group;
pub mod handler;
pub mod handlers;
pub mod kpi;
pub mod logging;
pub mod metrics;
pub mod shutdown;
pub mod watchdog;

pub use daemon::run;
