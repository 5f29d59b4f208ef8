//! Redis Streams plumbing: the client wrapper, topology declaration, the delivery engine
//! (consume → handle → commit), reclaiming, dead letters, publishing and retention, and
//! [`query`]: the typed reads the edge and the CLI use instead of raw commands.

pub mod audit;
pub mod client;
pub mod commit;
pub mod consume;
pub mod context;
pub mod deadletter;
pub mod declare;
pub mod dlq;
pub mod idempotent;
pub mod publish;
pub mod query;
pub mod ratelimit;
pub mod reader;
pub mod reclaim;
pub mod redeliver;
pub mod replay;
pub mod retention;
pub mod script;
pub mod services;
pub mod status;
pub mod trace;

pub use client::{BusError, Redis};
