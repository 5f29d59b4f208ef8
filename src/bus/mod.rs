//! Redis Streams plumbing: the client wrapper, topology declaration and (with the engine)
//! consuming, committing, reclaiming, publishing and retention.

pub mod client;
pub mod declare;
pub mod script;

pub use client::{BusError, Redis};
