//! The service registry: instances of the services behind the edge announce themselves
//! with heartbeats, kept in Redis so every daemon on the same Redis sees the same ones.
//!
//! Keys (one per command, so cluster-safe without hash tags):
//! - `astra:edge:svc:<service>`: a hash, instance id → `{"url", "ttl_ms", "seen_ms"}`
//!   (JSON), rewritten by each heartbeat; the key itself expires [`FORGET_AFTER`] ttls
//!   after the last heartbeat of any instance.
//! - `astra:edge:services`: the index, service → the last heartbeat's time (ms).
//!
//! An instance is healthy until `ttl` after its last heartbeat, listed as unhealthy for
//! [`FORGET_AFTER`] ttls, then forgotten (removed by the next listing). Times are the
//! writing daemon's clock: daemons sharing a registry keep their clocks in sync (NTP).

use serde::{Deserialize, Serialize};

use super::client::{BusError, Redis, arg, as_pairs, as_string};

/// The index of services.
pub const INDEX: &str = "astra:edge:services";
/// How many ttls after its last heartbeat an instance is forgotten.
pub const FORGET_AFTER: i64 = 3;

/// The hash holding `service`'s instances.
pub fn key(service: &str) -> String {
    format!("astra:edge:svc:{service}")
}

/// What a heartbeat records of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Where the instance answers (`http://` or `https://`).
    pub url: String,
    /// How long after this heartbeat the instance counts as healthy.
    pub ttl_ms: u64,
    /// When the heartbeat was recorded (ms since the epoch).
    pub seen_ms: i64,
}

/// An instance as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instance {
    /// The instance's id within its service.
    pub id: String,
    /// Where it answers.
    pub url: String,
    /// A heartbeat within its ttl.
    pub healthy: bool,
    /// Its last heartbeat (ms since the epoch).
    pub last_heartbeat_ms: i64,
    /// When it stops counting as healthy without another heartbeat.
    pub healthy_until_ms: i64,
}

/// A service as listed: its instances, healthy ones first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    /// The service's name (`/api/v1/<name>/…`).
    pub name: String,
    /// Instances with a heartbeat within their ttl.
    pub healthy: usize,
    /// Instances listed (healthy or not yet forgotten).
    pub total: usize,
    /// Each instance.
    pub instances: Vec<Instance>,
}

/// Records a heartbeat of `instance` of `service` (registering it if new): one round trip.
pub async fn heartbeat(
    redis: &Redis,
    service: &str,
    instance: &str,
    rec: &Record,
) -> Result<(), BusError> {
    let k = key(service);
    let body = serde_json::to_string(rec).expect("a record serializes");
    let keep = rec.ttl_ms as i64 * FORGET_AFTER;
    let replies = redis
        .pipeline(vec![
            ("HSET", vec![arg(k.as_str()), arg(instance), arg(body)]),
            ("PEXPIRE", vec![arg(k.as_str()), arg(keep), arg("GT")]),
            // A new key has no ttl, so GT leaves it without one: set it then.
            ("PEXPIRE", vec![arg(k.as_str()), arg(keep), arg("NX")]),
            ("HSET", vec![arg(INDEX), arg(service), arg(rec.seen_ms)]),
        ])
        .await?;
    replies.into_iter().try_for_each(|r| r.map(|_| ()))
}

/// Removes `instance` of `service`; whether it was listed.
pub async fn deregister(redis: &Redis, service: &str, instance: &str) -> Result<bool, BusError> {
    let n = redis
        .cmd("HDEL", vec![arg(key(service)), arg(instance)])
        .await?;
    Ok(super::client::as_int(&n).unwrap_or(0) > 0)
}

/// Every service with its instances as of `now_ms`; instances past [`FORGET_AFTER`] ttls
/// and services with none left are removed on the way (two round trips plus one per
/// removal).
pub async fn list(redis: &Redis, now_ms: i64) -> Result<Vec<Service>, BusError> {
    let names: Vec<String> = as_pairs(redis.cmd("HGETALL", vec![arg(INDEX)]).await?)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let reads = redis
        .pipeline(
            names
                .iter()
                .map(|n| ("HGETALL", vec![arg(key(n))]))
                .collect(),
        )
        .await?;
    let mut out = vec![];
    let mut forget: Vec<(&'static str, Vec<fred::types::Value>)> = vec![];
    for (name, r) in names.iter().zip(reads) {
        let (instances, gone) = parse_instances(r?, now_ms);
        forget.extend(
            gone.into_iter()
                .map(|id| ("HDEL", vec![arg(key(name)), arg(id)])),
        );
        if instances.is_empty() {
            forget.push(("HDEL", vec![arg(INDEX), arg(name.as_str())]));
            continue;
        }
        out.push(Service {
            name: name.clone(),
            healthy: instances.iter().filter(|i| i.healthy).count(),
            total: instances.len(),
            instances,
        });
    }
    if !forget.is_empty() {
        // Best effort: a failed removal is retried by the next listing.
        let _ = redis.pipeline(forget).await;
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The instances of one `service` as of `now_ms`, healthy first (one round trip; nothing is
/// removed: [`list`] forgets).
pub async fn instances(
    redis: &Redis,
    service: &str,
    now_ms: i64,
) -> Result<Vec<Instance>, BusError> {
    let r = redis.cmd("HGETALL", vec![arg(key(service))]).await?;
    Ok(parse_instances(r, now_ms).0)
}

/// A service's hash as instances (healthy first, then by id), and the ids to forget
/// (unreadable, or past [`FORGET_AFTER`] ttls).
fn parse_instances(r: fred::types::Value, now_ms: i64) -> (Vec<Instance>, Vec<String>) {
    let mut instances = vec![];
    let mut gone = vec![];
    for (id, v) in as_pairs(r) {
        let rec = as_string(&v).and_then(|s| serde_json::from_str::<Record>(&s).ok());
        let Some(rec) = rec else {
            gone.push(id);
            continue;
        };
        let until = rec.seen_ms.saturating_add(rec.ttl_ms as i64);
        if now_ms > rec.seen_ms.saturating_add(rec.ttl_ms as i64 * FORGET_AFTER) {
            gone.push(id);
            continue;
        }
        instances.push(Instance {
            id,
            url: rec.url,
            healthy: now_ms <= until,
            last_heartbeat_ms: rec.seen_ms,
            healthy_until_ms: until,
        });
    }
    instances.sort_by(|a, b| b.healthy.cmp(&a.healthy).then(a.id.cmp(&b.id)));
    (instances, gone)
}
