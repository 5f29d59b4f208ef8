//! A binary of your own: the whole `astra-bus` command line (run, check, declare, reload
//! on SIGHUP, sd-notify, the HTTP edge, ...) with the built-in handlers plus one of its own.
//!
//! Build and run (the shipped topology plus `consumer-groups/custom.toml` from this
//! folder, copied next to the others):
//!
//! ```text
//! cargo build --release --example custom-handler
//! cp examples/custom-handler/custom.toml consumer-groups/
//! target/release/examples/custom-handler check --config .
//! target/release/examples/custom-handler run --config .
//! ```
//!
//! The handler `custom.welcome` greets every registered user: on each
//! `astra.user.registered.v1` it writes `<greeting>, <display_name>!` to the hash
//! `custom:welcome` (field: the user id) and counts registrations per clan in
//! `custom:welcome:clans`, in one atomic commit with the event's acknowledgement, like
//! every built-in handler. Its `greeting` comes from the group's `options`; the clans it
//! counts by name come from state the binary owns and hands to every handler it builds
//! (a closure capturing an `Arc`), the way a real embedder shares a lookup table.

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;

use astra_bus::events::UserRegistered;
use astra_bus::group::GroupConfig;
use astra_bus::handlers::{
    Event, Handler, HandlerError, Op, Registry, Reply, Step, deny_unknown_options, option,
};

/// `custom.welcome`: the handler's state is its greeting (per group, from `options`) and
/// the clans it knows (shared by every group, owned by `main`).
struct Welcome {
    greeting: String,
    known_clans: Arc<HashSet<String>>,
}

impl Welcome {
    /// Builds the handler for one group; the error names the bad option (reported by
    /// `check`, at start and on reload with the options' file:line:col).
    fn build(
        g: &GroupConfig,
        known_clans: Arc<HashSet<String>>,
    ) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(g, &["greeting"])?;
        let greeting: String = option(g, "greeting", "Welcome".to_string())?;
        if greeting.trim().is_empty() {
            return Err("option `greeting`: must not be empty".into());
        }
        Ok(Arc::new(Welcome {
            greeting,
            known_clans,
        }))
    }
}

impl Handler for Welcome {
    // Pure: the same event always decides the same ops (it is re-run on redelivery).
    fn step(&self, ev: &Event, _rounds: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        let u: UserRegistered = ev.payload()?;
        let clan = match u.clan.as_deref() {
            Some(c) if self.known_clans.contains(c) => c,
            Some(_) => "other",
            None => "none",
        };
        Ok(Step::Done {
            ops: vec![
                Op::hset(
                    "custom:welcome",
                    &u.user_id,
                    format!("{}, {}!", self.greeting, u.display_name),
                ),
                Op::hincrby("custom:welcome:clans", clan, 1),
            ],
            emit: vec![],
        })
    }
}

fn main() -> ExitCode {
    let known_clans: Arc<HashSet<String>> =
        Arc::new(["red", "blue"].into_iter().map(String::from).collect());
    let registry = Registry::builtin().with("custom.welcome", move |g: &GroupConfig| {
        Welcome::build(g, known_clans.clone())
    });
    astra_bus::cli::main_with(registry)
}
