//! astra-bus: Redis Streams as a dependable event bus.
//!
//! Module map:
//!
//! - [`config`]: the topology as TOML (`streams.toml`, `consumer-groups/*.toml`), validated
//!   with file:line:col diagnostics.
//! - [`envelope`]: the flat stream-entry format every event uses, derived-event ids.
//! - [`bus`]: everything that talks to Redis: the client wrapper, topology declaration,
//!   and the delivery engine.
//! - [`events`]: typed payloads of every event in the shipped topology.
//! - [`handlers`]: the handler interface (decide, don't commit) and the domain handlers.
//! - [`cli`]: the `astra-bus` command line.

pub mod bus;
pub mod cli;
pub mod config;
pub mod envelope;
pub mod events;
pub mod handlers;
