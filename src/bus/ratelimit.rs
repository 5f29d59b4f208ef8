//! Rate limits shared by every edge instance: one atomic script per request checks and
//! counts all of the request's buckets (user, route, key) in Redis.
//!
//! Every bucket key carries the hash tag `{astra:edge:rl}`, so the script touches one
//! cluster slot. That concentrates rate-limit traffic on one node, which is cheap (one
//! small script per request) and buys all-or-nothing admission across buckets.

use std::time::Duration;

use super::client::{BusError, Redis, Value, arg, as_array, as_int};
use super::script::Script;

pub(crate) static SCRIPT: Script = Script::new("ratelimit", include_str!("ratelimit.lua"));

/// One counter a request must fit in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// What it counts, e.g. `user:u1`, `route:trading:u1`, `key:mobile-app`.
    pub name: String,
    /// Requests allowed per window.
    pub limit: u32,
}

/// The Redis key of a bucket.
pub fn bucket_key(name: &str) -> String {
    format!("astra:edge:rl:{{astra:edge:rl}}:{name}")
}

/// The script's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Admitted (and counted).
    pub allowed: bool,
    /// Index (into the buckets passed) of the refusing bucket, or of the tightest one.
    pub bucket: usize,
    /// That bucket's limit.
    pub limit: u32,
    /// Requests left in that bucket after this one.
    pub remaining: u32,
    /// Time until the current window ends.
    pub reset: Duration,
    /// When refused: how long until a request can pass.
    pub retry_after: Duration,
}

/// Checks and counts one request costing `cost` (its events; at least 1) against
/// `buckets` (at least one).
pub async fn check(
    redis: &Redis,
    window: Duration,
    cost: u32,
    buckets: &[Bucket],
) -> Result<Verdict, BusError> {
    let keys = buckets.iter().map(|b| arg(bucket_key(&b.name))).collect();
    let mut args = vec![arg(window.as_millis() as i64), arg(i64::from(cost.max(1)))];
    args.extend(buckets.iter().map(|b| arg(i64::from(b.limit))));
    let v = SCRIPT.call(redis, keys, args).await?;
    parse(v).ok_or_else(|| BusError::protocol("ratelimit script", "malformed reply"))
}

fn parse(v: Value) -> Option<Verdict> {
    let a = as_array(v)?;
    let n = |i: usize| a.get(i).and_then(as_int);
    Some(Verdict {
        allowed: n(0)? == 1,
        bucket: (n(1)? as usize).saturating_sub(1),
        limit: n(2)? as u32,
        remaining: n(3)?.max(0) as u32,
        reset: Duration::from_millis(n(4)?.max(0) as u64),
        retry_after: Duration::from_millis(n(5)?.max(0) as u64),
    })
}
