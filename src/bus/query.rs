//! Typed reads for the layers above the bus (the edge's routes, the CLI): each function
//! names what it reads and returns plain Rust values, so no code outside `src/bus/` spells
//! a Redis command, builds its arguments or decodes its reply (`tests/layers.rs` checks).
//!
//! Projection reads go through [`Reads`]: the single-key reads of one request, sent in one
//! pipelined round (each command names one key, so they work the same on a cluster).

use std::collections::HashMap;

use super::client::{BusError, RawEntry, Redis, Value, arg, as_array, as_int, as_pairs, as_string};
use super::client::{parse_entries, parse_read_reply};

/// PING, then XINFO GROUPS of each of `streams`, in one pipelined round: what `/ready`
/// needs to tell "Redis is down" from "a group is missing" in one round trip.
///
/// `Err`: the round itself failed (Redis unreachable). `Ok((ping, groups))`: PING's own
/// answer, and the group names on each stream in `streams` order (empty where XINFO
/// failed, e.g. for a stream that does not exist yet).
pub async fn ping_and_groups(
    redis: &Redis,
    streams: &[&str],
) -> Result<(Result<(), BusError>, Vec<Vec<String>>), BusError> {
    let mut cmds = vec![("PING", vec![])];
    for s in streams {
        cmds.push(("XINFO", vec![arg("GROUPS"), arg(*s)]));
    }
    let mut replies = redis.pipeline(cmds).await?.into_iter();
    let ping = match replies.next() {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    };
    let groups = replies
        .map(|r| r.map(super::declare::group_names).unwrap_or_default())
        .collect();
    Ok((ping, groups))
}

/// XLEN of each of `streams`, in one pipelined round: `/v1/streams` shows every length
/// and must not cost a round trip per stream. `None` where Redis refused one (the others
/// are still answered).
pub async fn stream_lengths(redis: &Redis, streams: &[&str]) -> Result<Vec<Option<i64>>, BusError> {
    let cmds = streams.iter().map(|s| ("XLEN", vec![arg(*s)])).collect();
    Ok(redis
        .pipeline(cmds)
        .await?
        .into_iter()
        .map(|r| r.ok().as_ref().and_then(as_int))
        .collect())
}

/// The last `n` entries of `stream`, oldest first (XREVRANGE … COUNT n, reversed): what
/// `astra-bus tail` prints before it follows.
pub async fn stream_tail(redis: &Redis, stream: &str, n: usize) -> Result<Vec<RawEntry>, BusError> {
    let v = redis
        .cmd(
            "XREVRANGE",
            vec![arg(stream), arg("+"), arg("-"), arg("COUNT"), arg(n as i64)],
        )
        .await?;
    let mut entries = parse_entries(v);
    entries.reverse();
    Ok(entries)
}

/// Up to `count` entries of `stream` after id `after` (`$`: only new ones), waiting up to
/// `block_ms` for the first (XREAD … BLOCK): how `astra-bus tail --follow` follows. Empty
/// on timeout. Blocks its connection: call it on a [`Redis::dedicated`] one.
pub async fn stream_read_after(
    redis: &Redis,
    stream: &str,
    after: &str,
    count: usize,
    block_ms: u64,
) -> Result<Vec<RawEntry>, BusError> {
    let v = redis
        .blocking_cmd(
            "XREAD",
            5, // the stream key (routes the read in a cluster)
            vec![
                arg("COUNT"),
                arg(count as i64),
                arg("BLOCK"),
                arg(block_ms as i64),
                arg("STREAMS"),
                arg(stream),
                arg(after),
            ],
        )
        .await?;
    Ok(parse_read_reply(v)
        .into_iter()
        .flat_map(|(_, es)| es)
        .collect())
}

/// Where one read of a [`Reads`] round will find its answer, and how to decode it.
#[derive(Debug)]
pub struct Slot<T> {
    index: usize,
    decode: fn(&Value) -> T,
}

/// The single-key reads of one request, sent together in one pipelined round by
/// [`Reads::send`]: a projection read costs one round trip however many keys it shows.
/// Each method queues one read and returns the [`Slot`] its answer is read from.
#[derive(Debug, Default)]
pub struct Reads {
    cmds: Vec<(&'static str, Vec<Value>)>,
}

/// The answers of a [`Reads`] round.
#[derive(Debug)]
pub struct Replies(Vec<Value>);

impl Reads {
    /// An empty round.
    pub fn new() -> Reads {
        Reads::default()
    }

    fn push<T>(
        &mut self,
        name: &'static str,
        args: Vec<Value>,
        decode: fn(&Value) -> T,
    ) -> Slot<T> {
        self.cmds.push((name, args));
        Slot {
            index: self.cmds.len() - 1,
            decode,
        }
    }

    /// Every field of the hash `key` as text (HGETALL); empty for a missing key.
    pub fn hash_all(&mut self, key: &str) -> Slot<HashMap<String, String>> {
        self.push("HGETALL", vec![arg(key)], |v| {
            as_pairs(v.clone())
                .into_iter()
                .filter_map(|(k, v)| Some((k, as_string(&v)?)))
                .collect()
        })
    }

    /// The integer in `field` of the hash `key` (HGET); `None` when absent or not an
    /// integer.
    pub fn hash_int(&mut self, key: &str, field: &str) -> Slot<Option<i64>> {
        self.push("HGET", vec![arg(key), arg(field)], as_int)
    }

    /// The members of the set `key` (SMEMBERS), in Redis's order.
    pub fn set_members(&mut self, key: &str) -> Slot<Vec<String>> {
        self.push("SMEMBERS", vec![arg(key)], |v| {
            as_array(v.clone())
                .unwrap_or_default()
                .iter()
                .filter_map(as_string)
                .collect()
        })
    }

    /// `member`'s 0-based rank in the sorted set `key`, highest score first (ZREVRANK);
    /// `None` when it is not a member.
    pub fn rank_from_top(&mut self, key: &str, member: &str) -> Slot<Option<i64>> {
        self.push("ZREVRANK", vec![arg(key), arg(member)], as_int)
    }

    /// `member`'s score in the sorted set `key` (ZSCORE); `None` when it is not a member.
    pub fn score(&mut self, key: &str, member: &str) -> Slot<Option<f64>> {
        self.push("ZSCORE", vec![arg(key), arg(member)], |v| {
            as_string(v).and_then(|s| s.parse::<f64>().ok())
        })
    }

    /// The `n` highest-scored members of the sorted set `key` with their 1-based rank and
    /// score (ZREVRANGE 0 n-1 WITHSCORES); `n` must be at least 1.
    pub fn top_n(&mut self, key: &str, n: usize) -> Slot<Vec<(usize, String, f64)>> {
        let args = vec![arg(key), arg(0), arg(n as i64 - 1), arg("WITHSCORES")];
        self.push("ZREVRANGE", args, |v| {
            as_array(v.clone())
                .unwrap_or_default()
                .chunks(2)
                .enumerate()
                .filter_map(|(i, pair)| {
                    let member = as_string(pair.first()?)?;
                    let score = as_string(pair.get(1)?)?.parse::<f64>().ok()?;
                    Some((i + 1, member, score))
                })
                .collect()
        })
    }

    /// The first `n` items of the list `key` as text (LRANGE 0 n-1); `n` must be at least
    /// 1.
    pub fn list_head(&mut self, key: &str, n: usize) -> Slot<Vec<String>> {
        self.push("LRANGE", vec![arg(key), arg(0), arg(n as i64 - 1)], |v| {
            as_array(v.clone())
                .unwrap_or_default()
                .iter()
                .filter_map(as_string)
                .collect()
        })
    }

    /// Sends the round; the first read Redis refused fails it.
    pub async fn send(self, redis: &Redis) -> Result<Replies, BusError> {
        let replies = redis.pipeline(self.cmds).await?;
        Ok(Replies(replies.into_iter().collect::<Result<_, _>>()?))
    }
}

impl Replies {
    /// The answer to the read of `slot`.
    pub fn get<T>(&self, slot: &Slot<T>) -> T {
        (slot.decode)(&self.0[slot.index])
    }
}
