//! The handlers this binary knows, by the name configs use: the one place handler names
//! are bound to code.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{analytics, builtin, financial, gamification, nft, social, trading, user};
use crate::group::GroupConfig;
use crate::handler::{Constructor, Handler};

/// The handlers this binary knows, by the name configs use.
#[derive(Clone)]
pub struct Registry {
    ctors: BTreeMap<&'static str, Constructor>,
}

impl Registry {
    /// Every built-in handler. This is the one place handler names are bound to code.
    pub fn builtin() -> Registry {
        let mut r = Registry {
            ctors: BTreeMap::new(),
        };
        r.insert("builtin.forward", builtin::Forward::build);
        r.insert("builtin.count_by_user", builtin::CountByUser::build);
        for (name, ctor) in domain_handlers() {
            r.insert(name, ctor);
        }
        r
    }

    /// Adds (or replaces) a handler; tests register their own this way.
    pub fn insert(&mut self, name: &'static str, ctor: Constructor) -> &mut Self {
        self.ctors.insert(name, ctor);
        self
    }

    /// Known names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.ctors.keys().copied().collect()
    }

    /// True if `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.ctors.contains_key(name)
    }

    /// Builds every group's handler once, to validate their options; returns every
    /// problem (each names the options' `file:line:col`).
    pub fn check(&self, groups: &[GroupConfig]) -> Result<(), Vec<String>> {
        let errors: Vec<String> = groups.iter().filter_map(|g| self.build(g).err()).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Builds the handler `group.handler` for `group`.
    pub fn build(&self, group: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        let ctor = self
            .ctors
            .get(group.handler.as_str())
            .ok_or_else(|| format!("unknown handler {:?}", group.handler))?;
        ctor(group).map_err(|e| {
            format!(
                "{}: group {} options: {e}",
                group.options_origin, group.name
            )
        })
    }
}

/// The domain handlers (one file per domain).
fn domain_handlers() -> Vec<(&'static str, Constructor)> {
    let mut v = vec![];
    v.extend(trading::handlers());
    v.extend(gamification::handlers());
    v.extend(social::handlers());
    v.extend(financial::handlers());
    v.extend(nft::handlers());
    v.extend(user::handlers());
    v.extend(analytics::handlers());
    v
}

/// True if the built-in registry knows `name`.
pub fn is_known(name: &str) -> bool {
    Registry::builtin().contains(name)
}

/// Names in the built-in registry.
pub fn names() -> Vec<&'static str> {
    Registry::builtin().names()
}
