//! Publishing events: XADD of an envelope's flat fields. Used by the CLI, the HTTP edge and
//! dead-letter replay; handlers publish through the commit script instead.

use super::client::{BusError, Redis, Value, arg, as_string};
use crate::envelope::Envelope;

/// The XADD arguments of `env` appended to `stream` (auto id): the envelope's flat fields.
pub(crate) fn xadd_args(stream: &str, env: &Envelope) -> Vec<Value> {
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
///
/// With `redis.min_replicas_ack` > 0 the XADD runs on a publisher connection followed by
/// `WAIT n timeout` (WAIT blocks its connection, so never the shared one), and fewer
/// acknowledging replicas fail the publish with [`BusError::NotReplicated`].
pub async fn publish(redis: &Redis, stream: &str, env: &Envelope) -> Result<String, BusError> {
    let Some((n, timeout)) = redis.replica_ack() else {
        let v = redis.cmd("XADD", xadd_args(stream, env)).await?;
        return as_string(&v).ok_or_else(|| BusError::protocol("XADD", format!("{v:?}")));
    };
    let conn = redis.publisher().await?;
    let v = conn.cmd("XADD", xadd_args(stream, env)).await?;
    let id = as_string(&v).ok_or_else(|| BusError::protocol("XADD", format!("{v:?}")))?;
    wait_for_replicas(&conn, n, timeout).await?;
    Ok(id)
}

pub(crate) async fn wait_for_replicas(
    conn: &Redis,
    wanted: u32,
    timeout: std::time::Duration,
) -> Result<(), BusError> {
    let acked = conn.wait_replicas(wanted, timeout).await?;
    if acked < i64::from(wanted) {
        return Err(BusError::NotReplicated {
            wanted,
            acked,
            timeout_ms: timeout.as_millis() as u64,
        });
    }
    Ok(())
}

/// Appends many events in one pipelined round trip; returns entry ids in order. With
/// `redis.min_replicas_ack` > 0, one WAIT follows the batch (see [`publish`]).
pub async fn publish_many(
    redis: &Redis,
    events: &[(String, Envelope)],
) -> Result<Vec<String>, BusError> {
    let cmds = events
        .iter()
        .map(|(s, e)| ("XADD", xadd_args(s, e)))
        .collect();
    let ack = redis.replica_ack();
    let conn = match ack {
        Some(_) => redis.publisher().await?,
        None => redis.clone(),
    };
    let mut ids = Vec::with_capacity(events.len());
    for r in conn.pipeline(cmds).await? {
        let v = r?;
        ids.push(as_string(&v).ok_or_else(|| BusError::protocol("XADD", format!("{v:?}")))?);
    }
    if let Some((n, timeout)) = ack {
        // One WAIT covers every XADD this connection sent before it.
        wait_for_replicas(&conn, n, timeout).await?;
    }
    Ok(ids)
}
