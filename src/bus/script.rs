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
        match redis
            .cmd("EVALSHA", eval_args(arg(sha), &keys, &args))
            .await
        {
            Err(BusError::Command(msg)) if msg.starts_with("NOSCRIPT") && redis.is_cluster() => {
                // In a cluster each master has its own script cache and SCRIPT LOAD reaches
                // one of them: EVAL (routed by the first key, like EVALSHA) runs the script
                // and caches it on that master, so the next EVALSHA there succeeds.
                redis
                    .cmd("EVAL", eval_args(arg(self.source), &keys, &args))
                    .await
            }
            Err(BusError::Command(msg)) if msg.starts_with("NOSCRIPT") => {
                let sha = self.load(redis).await?;
                redis
                    .cmd("EVALSHA", eval_args(arg(sha), &keys, &args))
                    .await
            }
            other => other,
        }
    }
}

/// `<script or sha> <numkeys> <keys...> <args...>`.
fn eval_args(script: Value, keys: &[Value], args: &[Value]) -> Vec<Value> {
    let mut full = Vec::with_capacity(keys.len() + args.len() + 2);
    full.push(script);
    full.push(arg(keys.len() as i64));
    full.extend_from_slice(keys);
    full.extend_from_slice(args);
    full
}
