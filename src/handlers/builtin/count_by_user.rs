//! `builtin.count_by_user`: counts events per `user_id`.

use std::sync::Arc;

use serde::Deserialize;

use crate::group::GroupConfig;
use crate::handler::{Event, Handler, HandlerError, Op, Reply, Step};
use crate::handlers::support::deny_unknown_options;

/// Counts events per `user_id` in the hash `astra:count:<group>` (one atomic HINCRBY).
pub struct CountByUser {
    key: String,
}

#[derive(Deserialize)]
struct UserBearing {
    user_id: String,
}

impl CountByUser {
    /// Builds from the group config.
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(g, &[])?;
        Ok(Arc::new(CountByUser {
            key: format!("astra:count:{}", g.name),
        }))
    }
}

impl Handler for CountByUser {
    fn step(&self, ev: &Event, _: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        let p: UserBearing = ev.payload()?;
        Ok(Step::Done {
            ops: vec![Op::hincrby(&self.key, p.user_id, 1)],
            emit: vec![],
        })
    }
}
