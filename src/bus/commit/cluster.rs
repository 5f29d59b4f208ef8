//! The round in Redis Cluster (SPEC "Commit protocol": effectively-once across slots).

use std::collections::HashMap;

use super::encode::{
    Answer, SlotShare, decode_replies, encode_slot_call, parse_reply, progress_round, unsendable,
};
use super::{RoundItem, RoundOutcome, Target, done_keys, done_ttl_secs, started_keys};
use crate::bus::client::{BusError, Redis, Value, arg, as_array, as_string, keyslot};
use crate::envelope::now_ms;
use crate::handlers::Reply;

/// A hash tag for every cluster slot: `SLOT_TAGS[s]` hashes to slot `s`, so a key
/// containing `{SLOT_TAGS[s]}` lives in slot `s`.
pub(super) fn slot_tag(slot: u16) -> &'static str {
    static TAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags: Vec<Option<String>> = vec![None; 16384];
        let mut left = tags.len();
        let mut i = 0u64;
        while left > 0 {
            let t = format!("{i:x}");
            let s = keyslot(t.as_bytes()) as usize;
            if tags[s].is_none() {
                tags[s] = Some(t);
                left -= 1;
            }
            i += 1;
        }
        tags.into_iter().map(Option::unwrap_or_default).collect()
    });
    &tags[slot as usize % tags.len()]
}

/// The round in Redis Cluster (SPEC "Commit protocol": effectively-once across slots).
///
/// 1. One pipelined read: which entries are still pending for the group (XCLAIM JUSTID,
///    so a zombie skips what others finished) and which events are done (the group's
///    done markers, one key per generation). Done events are only acknowledged.
/// 2. Every event's ops are split by hash slot; each slot touched gets one
///    `commit_slot.lua` call (all at once) that checks and applies that slot's ops with
///    that slot's progress record, atomically per slot. A slot already applied for a round
///    (an earlier delivery) replays its recorded replies, so nothing applies twice.
/// 3. Final round: the derived events are XADDed (deterministic ids: a crash before step
///    4 may leave a second entry with the same id, which consumers skip).
/// 4. The done markers are set and the entries acknowledged, XACK last.
///
/// A slot's progress is kept in generations like the done markers (not removed when the
/// event completes): a second, slower commit of the same entry may have passed step 1
/// before the first one finished, and must still find the slot applied.
pub(super) async fn commit_round_cluster(
    redis: &Redis,
    target: Target<'_>,
    items: &[RoundItem<'_>],
    heads: HashMap<String, String>,
) -> Result<Vec<RoundOutcome>, BusError> {
    let mut out: Vec<Option<RoundOutcome>> = vec![None; items.len()];
    // 1. Ours? Done?
    let done_keys = done_keys(target.group, None, target.dedup_ttl, now_ms());
    let mut cmds = vec![];
    let mut claim = vec![
        arg(target.stream),
        arg(target.group),
        arg(target.consumer),
        arg(0),
    ];
    claim.extend(items.iter().map(|it| arg(it.entry_id)));
    claim.push(arg("JUSTID"));
    cmds.push(("XCLAIM", claim));
    for k in &done_keys {
        let mut a = vec![arg(k.as_str())];
        a.extend(items.iter().map(|it| arg(it.event_id)));
        cmds.push(("HMGET", a));
    }
    // Marks every event as started (its handler ran to the end): an entry that then
    // reaches max_deliveries before a delivery finishes the commit is finished, not
    // dead-lettered with some slots applied ([`super::recall`]). In the same round trip.
    let now = now_ms();
    let started = started_keys(target.group, target.dedup_ttl, now);
    let mut mark = vec![arg(started[0].as_str())];
    for it in items {
        mark.push(arg(it.event_id));
        mark.push(arg("S"));
    }
    cmds.push(("HSET", mark));
    cmds.push((
        "EXPIRE",
        vec![
            arg(started[0].as_str()),
            arg(done_ttl_secs(target.dedup_ttl, now)),
        ],
    ));
    let mut replies = redis.pipeline(cmds).await?.into_iter();
    let ours: std::collections::HashSet<String> = replies
        .next()
        .transpose()?
        .and_then(as_array)
        .unwrap_or_default()
        .iter()
        .filter_map(as_string)
        .collect();
    let mut done = vec![false; items.len()];
    for r in replies.by_ref().take(done_keys.len()) {
        for (i, v) in as_array(r?).unwrap_or_default().iter().enumerate() {
            if as_string(v).as_deref() == Some("D") && i < done.len() {
                done[i] = true;
            }
        }
    }
    for r in replies {
        r?;
    }
    let mut acks: Vec<&str> = vec![];
    let mut seen_final: std::collections::HashSet<&str> = Default::default();
    for (i, it) in items.iter().enumerate() {
        if !ours.contains(it.entry_id) {
            out[i] = Some(RoundOutcome::NotOurs);
        } else if done[i] {
            out[i] = Some(RoundOutcome::AlreadyDone);
            acks.push(it.entry_id);
        } else if it.is_final && !seen_final.insert(it.event_id) {
            // A second copy of an event finishing in this batch: the first one publishes.
            out[i] = Some(RoundOutcome::AlreadyDone);
            acks.push(it.entry_id);
        } else {
            if let Some(why) = unsendable(it) {
                out[i] = Some(RoundOutcome::Failed(why));
            }
            for op in it.ops {
                if let Some(k2) = &op.key2
                    && keyslot(k2.as_bytes()) != keyslot(op.key.as_bytes())
                {
                    out[i] = Some(RoundOutcome::Failed(format!(
                        "{} {} {}: keys in two hash slots (give them one hash tag)",
                        op.cmd, op.key, k2
                    )));
                }
            }
        }
    }
    // 2. One call per hash slot touched.
    let mut slots: std::collections::BTreeMap<u16, SlotShare> = Default::default();
    for (i, it) in items.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        let mut by_slot: std::collections::BTreeMap<u16, Vec<usize>> = Default::default();
        for (j, op) in it.ops.iter().enumerate() {
            by_slot
                .entry(keyslot(op.key.as_bytes()))
                .or_default()
                .push(j);
        }
        for (slot, ops) in by_slot {
            slots.entry(slot).or_default().push((i, ops));
        }
    }
    let mut merged: Vec<Vec<Reply>> = items
        .iter()
        .map(|it| vec![Reply::Nil; it.ops.len()])
        .collect();
    let mut applied = vec![false; items.len()];
    let mut conflict = vec![false; items.len()];
    let mut failed: Vec<Option<String>> = vec![None; items.len()];
    let mut calls = vec![];
    for (slot, share) in slots {
        let r = redis.clone();
        let mut heads = heads.clone();
        let (call, share, clashing) = encode_slot_call(target, slot, items, share, &mut heads)?;
        for i in clashing {
            failed[i].get_or_insert_with(|| {
                "uses a key as another type than an earlier event of this batch".to_string()
            });
        }
        // Spawned so every slot's call goes out at once (one auto-pipelined client).
        calls.push((
            share,
            tokio::spawn(async move { super::COMMIT_SLOT.call(&r, call.0, call.1).await }),
        ));
    }
    for (share, c) in calls {
        let reply = c
            .await
            .map_err(|e| BusError::Unavailable(format!("commit task: {e}")))??;
        match parse_reply(reply, share.len(), |_| true)? {
            Answer::BadKey { actual, .. } => {
                // Nothing of this slot was written; its events fail (a key in it has the
                // wrong type). Their other slots may have applied: that is recorded there.
                for (i, _) in &share {
                    failed[*i].get_or_insert_with(|| {
                        format!("a key of this event holds a {actual} (wrong type)")
                    });
                }
            }
            Answer::Rows(rows) => {
                for ((i, ops), row) in share.into_iter().zip(rows) {
                    let replies = match row.status {
                        b'0' => {
                            applied[i] = true;
                            decode_replies(&row.payload)?
                        }
                        b'1' => progress_round(&row.payload, items[i].round)?,
                        b'5' => {
                            conflict[i] = true;
                            continue;
                        }
                        _ => {
                            failed[i]
                                .get_or_insert(String::from_utf8_lossy(&row.payload).into_owned());
                            continue;
                        }
                    };
                    for (j, r) in ops.into_iter().zip(replies) {
                        merged[i][j] = r;
                    }
                }
            }
        }
    }
    // 3. Publish what the final round derived.
    let mut xadds = vec![];
    let mut finishing = vec![];
    for (i, it) in items.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        if let Some(reason) = failed[i].take() {
            out[i] = Some(RoundOutcome::Failed(reason));
        } else if conflict[i] {
            out[i] = Some(RoundOutcome::Conflict);
        } else if it.is_final {
            for (s, env) in &it.emits {
                let mut a = vec![arg(s.as_str()), arg("*")];
                for (k, v) in env.to_fields() {
                    a.push(arg(k));
                    a.push(Value::Bytes(v.into()));
                }
                xadds.push((i, ("XADD", a)));
            }
            finishing.push(i);
        } else {
            let replies = std::mem::take(&mut merged[i]);
            out[i] = Some(if applied[i] || it.ops.is_empty() {
                RoundOutcome::Applied(replies)
            } else {
                RoundOutcome::Replayed(replies)
            });
        }
    }
    if !xadds.is_empty() {
        let (who, cmds): (Vec<usize>, Vec<_>) = xadds.into_iter().unzip();
        for (i, r) in who.into_iter().zip(redis.pipeline(cmds).await?) {
            if let Err(e) = r {
                // Not published, so not done: dead-letter it (its slots' work is recorded
                // and a replay resumes from there).
                out[i].get_or_insert(RoundOutcome::Failed(format!("XADD: {e}")));
            }
        }
    }
    // 4. Done markers, then acknowledgements.
    let finished: Vec<usize> = finishing
        .into_iter()
        .filter(|i| out[*i].is_none())
        .collect();
    if !finished.is_empty() {
        let mut a = vec![arg(done_keys[0].as_str())];
        for &i in &finished {
            a.push(arg(items[i].event_id));
            a.push(arg("D"));
        }
        let cmds = vec![
            ("HSET", a),
            (
                "EXPIRE",
                vec![
                    arg(done_keys[0].as_str()),
                    arg(done_ttl_secs(target.dedup_ttl, now_ms())),
                ],
            ),
        ];
        for r in redis.pipeline(cmds).await? {
            r?;
        }
    }
    for &i in &finished {
        acks.push(items[i].entry_id);
        out[i] = Some(RoundOutcome::Applied(vec![]));
    }
    for chunk in acks.chunks(1000) {
        let mut a = vec![arg(target.stream), arg(target.group)];
        a.extend(chunk.iter().map(|id| arg(*id)));
        redis.cmd("XACK", a).await?;
    }
    Ok(out
        .into_iter()
        .map(|o| o.expect("every event has an outcome"))
        .collect())
}
