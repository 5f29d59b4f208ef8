//! Lua scripts loaded once and called by hash (EVALSHA). After a Redis restart the script
//! cache is empty; NOSCRIPT triggers one SCRIPT LOAD and a retry (in a cluster, where every
//! master has its own cache, one EVAL on the master that answered NOSCRIPT).

use std::sync::Mutex;

use super::client::{BusError, Redis, Value, arg, as_string};

/// A Lua script with its cached SHA1.
pub struct Script {
    name: &'static str,
    source: &'static str,
    sha: Mutex<Option<String>>,
}

impl Script {
    /// Declares a script. `source` must begin with a `#!lua` shebang.
    pub const fn new(name: &'static str, source: &'static str) -> Script {
        Script {
            name,
            source,
            sha: Mutex::new(None),
        }
    }

    /// The script's name, for errors and metrics.
    pub fn name(&self) -> &'static str {
        self.name
    }

    async fn load(&self, redis: &Redis) -> Result<String, BusError> {
        let v = redis
            .cmd("SCRIPT", vec![arg("LOAD"), arg(self.source)])
            .await?;
        let sha =
            as_string(&v).ok_or_else(|| BusError::protocol("SCRIPT LOAD", format!("{v:?}")))?;
        *self.sha.lock().expect("script sha lock") = Some(sha.clone());
        Ok(sha)
    }

    /// Runs the script with EVALSHA, loading it first if Redis does not know it.
    pub async fn call(
        &self,
        redis: &Redis,
        keys: Vec<Value>,
        args: Vec<Value>,
    ) -> Result<Value, BusError> {
        let cached = self.sha.lock().expect("script sha lock").clone();
        let sha = match cached {
            Some(s) => s,
            None => self.load(redis).await?,
        };
        let mut full = Vec::with_capacity(keys.len() + args.len() + 2);
        full.push(arg(sha));
        full.push(arg(keys.len() as i64));
        full.extend(keys.iter().cloned());
        full.extend(args.iter().cloned());
        match redis.cmd("EVALSHA", full).await {
            Err(BusError::Command(msg)) if msg.starts_with("NOSCRIPT") && redis.is_cluster() => {
                // In a cluster each master has its own script cache and SCRIPT LOAD reaches
                // one of them: EVAL (routed by the first key, like EVALSHA) runs the script
                // and caches it on that master, so the next EVALSHA there succeeds.
                let mut full = Vec::with_capacity(keys.len() + args.len() + 2);
                full.push(arg(self.source));
                full.push(arg(keys.len() as i64));
                full.extend(keys);
                full.extend(args);
                redis.cmd("EVAL", full).await
            }
            Err(BusError::Command(msg)) if msg.starts_with("NOSCRIPT") => {
                let sha = self.load(redis).await?;
                let mut full = Vec::with_capacity(keys.len() + args.len() + 2);
                full.push(arg(sha));
                full.push(arg(keys.len() as i64));
                full.extend(keys);
                full.extend(args);
                redis.cmd("EVALSHA", full).await
            }
            other => other,
        }
    }
}
