//! astra-bus: Redis Streams as a dependable event bus.
//!
//! Where things live:
//!
//! - a handler: `handlers/<domain>/<name>.rs` is the handler `<domain>.<name>` with its
//!   unit tests, bound to its name in `handlers/registry.rs`;
//! - a metric: declared and registered in `metrics.rs` (one place for every exported
//!   metric family and its labels); updated only by the named events of
//!   `internal_events.rs` (each updates its metric and writes its log line together),
//!   which the delivery engine, the edge and the daemon's health loop emit;
//! - a route: `edge/mod.rs` builds the router; each route's handler is in `edge/publish.rs`,
//!   `edge/reads.rs`, `edge/ops.rs` or `edge/console.rs` (the table in [`edge`]);
//! - a Redis call: only under `bus/`; the edge and the CLI read through the typed
//!   functions of `bus/query.rs`; every Lua script is in `bus/` too, in or beside the Rust
//!   that calls it;
//! - a subcommand: its arguments in `cli/args.rs`, what it does in the file of its family
//!   (`cli/check.rs`, `admin.rs`, `run.rs`, `key.rs`, `events.rs`, `ops.rs`).
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
//!   `Step`, `Emit`, `HandlerError`, the `Handler` trait, and `COMMANDS`, the one list of
//!   commands an op may use (the commit scripts' table is generated from it). Shared by
//!   `handlers` and `bus`.
//! - [`handlers`]: the domain handlers, one file each: `handlers/<domain>/<name>.rs` is
//!   the handler `<domain>.<name>` with its unit tests (e.g.
//!   `handlers/gamification/xp_processing.rs`); `handlers/builtin/` the generic ones;
//!   `registry.rs` binds names to them, `typed.rs` decodes their input per stream,
//!   `support.rs` holds what they share.
//! - [`config`]: the topology as TOML (`streams.toml`, `consumer-groups/*.toml`), validated
//!   with file:line:col diagnostics: `raw.rs` (the TOML), `model.rs` (validated, with the
//!   defaults), `validate/` (one file per section), `env.rs`, `url.rs`, `load.rs`.
//! - [`health`]: the health snapshot as plain data (per-group status, stream lengths, KPI
//!   inputs) and the dead-letter reasons, read by `bus::status`, exported by `metrics`.
//! - [`kpi`]: business KPIs computed from the analytics counters in Redis.
//! - [`metrics`]: every exported metric, in one place.
//! - [`internal_events`]: what happens as named events (`EventCommitted`,
//!   `EntriesDeadLettered`, `LostEntries`, `HttpRequestAnswered`, `HealthRefreshFailed`,
//!   ...), each updating its metric and writing its log line together; beside `metrics`,
//!   used by `bus`, `edge` and `daemon`.
//! - [`bus`]: everything that talks to Redis: the client wrapper, declaration, consuming,
//!   the commit protocol, reclaiming, dead letters, publishing, retention, status, and
//!   `query` (typed reads for the edge and the CLI).
//! - [`upstream`]: talking to the services of the registry: round-robin over healthy
//!   instances, a circuit breaker per instance (`upstream/breaker.rs`), the pooled HTTP
//!   client (`upstream/http.rs`), remote handlers' wire contract (`upstream/remote.rs`);
//!   above `bus` (it reads the registry), used by `edge` (the gateway proxy) and
//!   `daemon` (remote handlers, whose wait-without-counting step is `bus/remote.rs`).
//! - [`daemon`]: `run(config, shutdown)`: the whole daemon.
//! - [`catalog`]: the topology as an AsyncAPI 3.0 document and payload JSON Schemas
//!   (`astra-bus catalog`, `/asyncapi.json`; no Redis).
//! - [`edge`]: the HTTP edge (publish API, projection reads, `/health`, `/ready`,
//!   `/metrics`, `/dashboard`, the operator's console at `/console`, the service registry
//!   and the gateway proxy `/api/v1/<service>/…`, API keys, rate limits, idempotency).
//! - [`shutdown`]: the shutdown signal every loop listens to.
//! - [`watchdog`]: liveness of the delivery loops and the systemd watchdog fed from it.
//! - [`logging`]: text or JSON-lines logs; installs the global subscriber, with the
//!   slot [`telemetry`] plugs its OpenTelemetry layer into.
//! - [`telemetry`]: distributed tracing over OTLP (off by default): `mod.rs` the resolved
//!   `[tracing]` settings, [`telemetry::install`] and the layer slot; `spans.rs` the spans
//!   (edge request SERVER, publish PRODUCER, per (group, event) CONSUMER) and the
//!   `traceparent` form; `export.rs` the bounded export queue that counts what it drops.
//! - [`cli`]: the `astra-bus` command line: `args.rs` the argument model, one file per
//!   subcommand family, `mod.rs` the `main` that dispatches to them.

// Imports point one way (`tests/layers.rs` checks it, naming file:line, and that the graph
// has no cycle): the bottom (`envelope`, `events`, `calendar`, `group`, `handler`,
// `shutdown`, `logging`, `telemetry`, `watchdog`) imports nothing above it; `handlers` only the bottom;
// `config` the bottom and `handlers::Registry` (handler-name validation; one way:
// `handlers` never imports `config`); `metrics`, `internal_events`, `kpi` and `health` the bottom and
// `handlers`' field names; `bus` all of those; `upstream` those and `bus`; `daemon`,
// `edge` and `cli` sit on top, and
// only they import each other. Only `bus` names `fred` or builds a Redis command.
// The module maps (`//!` at the top of each module) link to the private items they
// describe, for whoever reads the code: `cargo doc --document-private-items` renders them.
#![allow(rustdoc::private_intra_doc_links)]

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
pub mod health;
pub mod internal_events;
pub mod kpi;
pub mod logging;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
pub mod upstream;
pub mod watchdog;

pub use daemon::run;
