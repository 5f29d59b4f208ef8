//! The replay stream of a group: dead letters an operator replays come back to that group
//! alone, as references resolved here to the dead letters they name.

use super::client::{BusError, RawEntry, arg};
use super::context::GroupContext;

/// The replay stream of `group` (`astra:replay:<group>`), read only by that group.
pub fn replay_stream(group: &str) -> String {
    format!("astra:replay:{group}")
}

/// True when `stream` is a group's replay stream.
pub fn is_replay_stream(stream: &str) -> bool {
    stream.starts_with("astra:replay:")
}

/// A replay stream carries references to dead letters (`dlq_stream`, `dlq_id`): each is
/// replaced by the dead letter it names (one pipelined read). A reference whose dead letter
/// is gone (trimmed by retention) or belongs to another group is acknowledged and logged.
pub(super) async fn resolve_replays(
    ctx: &GroupContext,
    from: &str,
    entries: Vec<RawEntry>,
) -> Result<Vec<RawEntry>, BusError> {
    let field = |e: &RawEntry, k: &[u8]| -> Option<String> {
        e.fields
            .as_ref()?
            .iter()
            .find(|(f, _)| f == k)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let refs: Vec<Option<(String, String)>> = entries
        .iter()
        .map(|e| Some((field(e, b"dlq_stream")?, field(e, b"dlq_id")?)))
        .collect();
    let cmds = refs
        .iter()
        .flatten()
        .map(|(s, id)| {
            (
                "XRANGE",
                vec![arg(s.as_str()), arg(id.as_str()), arg(id.as_str())],
            )
        })
        .collect();
    let mut found = ctx.redis.pipeline(cmds).await?.into_iter();
    let mut out = Vec::with_capacity(entries.len());
    let mut drop_ids = vec![];
    for (e, r) in entries.into_iter().zip(refs) {
        let dead = match r {
            Some(_) => found
                .next()
                .transpose()?
                .map(super::client::parse_entries)
                .and_then(|v| v.into_iter().next())
                .and_then(|d| d.fields),
            None => None,
        };
        let mine = dead.as_ref().is_some_and(|f| {
            f.iter()
                .any(|(k, v)| k == b"dlq_group" && v == ctx.group.name.as_bytes())
        });
        if mine {
            out.push(RawEntry {
                id: e.id,
                fields: dead,
            });
        } else {
            tracing::error!(target: "astra_bus::bus::consume", group = %ctx.group.name, stream = from, entry = %e.id, "replay reference to a dead letter that is gone or not this group's: dropped");
            drop_ids.push(e.id);
        }
    }
    if !drop_ids.is_empty() {
        let mut a = vec![arg(from), arg(ctx.group.name.as_str())];
        a.extend(drop_ids.iter().map(|i| arg(i.as_str())));
        ctx.redis.cmd("XACK", a).await?;
    }
    Ok(out)
}
