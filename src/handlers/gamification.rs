//! gamification domain handlers.

use super::Constructor;

/// The handlers of this domain, by name.
pub fn handlers() -> Vec<(&'static str, Constructor)> {
    vec![]
}
