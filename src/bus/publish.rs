//! Publishing events: XADD of an envelope's flat fields. Used by the CLI, the HTTP edge and
//! dead-letter replay; handlers publish through the commit script instead.

use super::client::{BusError, Redis, Value, arg, as_string};
use crate::envelope::Envelope;

fn xadd_args(stream: &str, env: &Envelope) -> Vec<Value> {
    let mut args = vec![arg(stream), arg("*")];
    for (k, v) in env.to_fields() {
        args.push(arg(k));
        args.push(Value::Bytes(v.into()));
    }
    args
}

/// Appends `env` to `stream`; returns the entry id. If the connection drops after Redis
/// stored the entry, the client may send it again: the copy carries the same event `id`,
/// and every consumer skips ids it has already applied.
pub async fn publish(redis: &Redis, stream: &str, env: &Envelope) -> Result<String, BusError> {
    let v = redis.cmd("XADD", xadd_args(stream, env)).await?;
    as_string(&v).ok_or_else(|| BusError::protocol("XADD", format!("{v:?}")))
}

/// Appends many events in one pipelined round trip; returns entry ids in order.
pub async fn publish_many(
    redis: &Redis,
    events: &[(String, Envelope)],
) -> Result<Vec<String>, BusError> {
    let cmds = events
        .iter()
        .map(|(s, e)| ("XADD", xadd_args(s, e)))
        .collect();
    let mut ids = Vec::with_capacity(events.len());
    for r in redis.pipeline(cmds).await? {
        let v = r?;
        ids.push(as_string(&v).ok_or_else(|| BusError::protocol("XADD", format!("{v:?}")))?);
    }
    Ok(ids)
}
