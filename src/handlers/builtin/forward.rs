//! `builtin.forward`: re-publishes every event to the group's `publishes` streams.

use std::sync::Arc;

use crate::group::GroupConfig;
use crate::handler::{Emit, Event, Handler, HandlerError, Reply, Step};
use crate::handlers::support::deny_unknown_options;

/// Re-publishes every event unchanged (payload bytes kept) to each stream the group
/// `publishes`, as a derived event (same `cid`, `caus` = source id).
pub struct Forward {
    targets: Vec<String>,
}

impl Forward {
    /// Builds from the group config; needs at least one `publishes` stream.
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(g, &[])?;
        if g.publishes.is_empty() {
            return Err("builtin.forward needs at least one stream in `publishes`".into());
        }
        Ok(Arc::new(Forward {
            targets: g.publishes.clone(),
        }))
    }
}

impl Handler for Forward {
    fn step(&self, ev: &Event, _: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        let emit = self
            .targets
            .iter()
            .map(|t| {
                let mut e = Emit::raw(t, ev.env.data.clone());
                // Keep the source encoding: forwarding must not re-encode foreign JSON.
                if ev.env.ct == crate::envelope::ContentType::Json {
                    e.data = json_to_msgpack(&ev.env.data).unwrap_or_else(|| ev.env.data.clone());
                }
                e
            })
            .collect();
        Ok(Step::Done { ops: vec![], emit })
    }
}

fn json_to_msgpack(data: &[u8]) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    rmp_serde::to_vec_named(&v).ok()
}
