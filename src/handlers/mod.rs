//! The domain handlers: one folder per domain, one file per handler with its unit tests
//! beside it, the registry that binds their names to code, and what they share.
//!
//! - [`registry`]: [`Registry`], handler name → constructor.
//! - [`support`]: options, payload checks, replies of earlier rounds, poison reasons.
//! - [`testing`]: building groups and events for handler unit tests (no Redis).
//! - `<domain>/mod.rs`: the domain's key layouts and shared rules, `<domain>/<name>.rs`:
//!   the handler `<domain>.<name>` (e.g. [`gamification::xp_processing`]).
//!
//! The interface they implement ([`Handler`], [`Event`], [`Op`], [`Reply`], [`Step`],
//! [`Emit`], [`HandlerError`], [`KeyType`], [`MAX_ROUNDS`]) lives in [`crate::handler`] and
//! is re-exported here; the calendar helpers come from [`crate::calendar`].

pub use crate::calendar::{civil_from_days, utc_day};
pub use crate::handler::{
    Asked, BuildFn, Constructor, Decide, Emit, Event, Handler, HandlerError, KeyType, MAX_ROUNDS,
    Op, RemoteSpec, Reply, Step, allowed_commands,
};

pub mod analytics;
pub mod builtin;
pub mod financial;
pub mod gamification;
pub mod nft;
pub mod registry;
pub mod social;
pub mod support;
pub mod testing;
pub mod trading;
pub mod typed;
pub mod user;

pub use registry::{Registry, is_known, names};
pub use support::{deny_unknown_options, non_empty, option, poison};
