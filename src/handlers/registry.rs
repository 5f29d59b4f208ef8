//! The handlers this binary knows, by the name configs use: the one place handler names
//! are bound to code.
//!
//! Embedders build their own: start from [`Registry::builtin`] (or [`Registry::empty`]),
//! [`Registry::insert`] a constructor per handler name (a function, or a closure that
//! captures what its handlers share), and hand it to `astra_bus::cli::main_with` (the
//! whole command line: `run`, `check`, SIGHUP reload, sd-notify, the edge) or to
//! `astra_bus::daemon::run_with`. `examples/custom-handler/` is such a binary.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{analytics, builtin, financial, gamification, nft, social, trading, user};
use crate::group::GroupConfig;
use crate::handler::{BuildFn, Constructor, Handler};

/// The handlers this binary knows, by the name configs use.
#[derive(Clone)]
pub struct Registry {
    ctors: BTreeMap<&'static str, Constructor>,
}

impl Registry {
    /// Every built-in handler. This is the one place handler names are bound to code.
    pub fn builtin() -> Registry {
        let mut r = Registry::empty();
        r.insert("builtin.forward", builtin::Forward::build);
        r.insert("builtin.count_by_user", builtin::CountByUser::build);
        r.insert(builtin::remote::NAME, builtin::Remote::build);
        for (name, ctor) in domain_handlers() {
            r.insert(name, ctor);
        }
        r
    }

    /// No handlers at all (an embedder that runs only its own).
    pub fn empty() -> Registry {
        Registry {
            ctors: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) the handler `name`: `ctor` builds it for each group that names
    /// it, from the group's settings and `options` (an `Err` names the wrong option and
    /// is reported with the options' `file:line:col` by `check`, at start and on reload).
    /// A function (`MyHandler::build`) or a closure; a closure may capture state its
    /// handlers share (clone an `Arc` into each). A handler must still decide as a pure
    /// function of the event and its recorded replies (see [`Handler::step`]).
    pub fn insert<F>(&mut self, name: &'static str, ctor: F) -> &mut Self
    where
        F: Fn(&GroupConfig) -> Result<Arc<dyn Handler>, String> + Send + Sync + 'static,
    {
        self.ctors.insert(name, Arc::new(ctor) as Constructor);
        self
    }

    /// [`Registry::insert`] as a builder: `Registry::builtin().with("x.y", X::build)`.
    pub fn with<F>(mut self, name: &'static str, ctor: F) -> Self
    where
        F: Fn(&GroupConfig) -> Result<Arc<dyn Handler>, String> + Send + Sync + 'static,
    {
        self.insert(name, ctor);
        self
    }

    /// Registers one shared handler value under `name`: every group naming it gets the
    /// same instance (a struct holding state that needs no per-group options; a group
    /// that sets `options` anyway is refused, so a typo is not silently ignored).
    pub fn insert_shared(&mut self, name: &'static str, handler: Arc<dyn Handler>) -> &mut Self {
        self.insert(name, move |g: &GroupConfig| {
            if let Some(k) = g.options.keys().next() {
                return Err(format!("unknown option {k:?} (handler {name} takes none)"));
            }
            Ok(handler.clone())
        })
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
fn domain_handlers() -> Vec<(&'static str, BuildFn)> {
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
