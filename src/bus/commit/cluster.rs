//! The round in Redis Cluster (SPEC "Commit protocol": effectively-once across slots).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::encode::{
    Answer, SlotShare, decode_replies, encode_slot_call, parse_reply, progress_round, unsendable,
};
use super::{RoundItem, RoundOutcome, Target, done_keys, done_ttl_secs, started_keys};
use crate::bus::client::{BusError, Redis, Value, arg, as_array, as_string, keyslot};
use crate::bus::publish::xadd_args;
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
/// 1. [`read_ours_and_done`]: one pipelined read: which entries are still pending for the
///    group (XCLAIM JUSTID, so a zombie skips what others finished) and which events are
///    done (the group's done markers, one key per generation); in the same round trip
///    every event is marked started. [`triage`] then sorts them: done events are only
///    acknowledged, the rest go on.
/// 2. [`apply_per_slot`]: every event's ops are split by hash slot; each slot touched
///    gets one `commit_slot.lua` call (all at once) that checks and applies that slot's
///    ops with that slot's progress record, atomically per slot. A slot already applied
///    for a round (an earlier delivery) replays its recorded replies, so nothing applies
///    twice.
/// 3. [`publish_derived`]: final round: the derived events are XADDed (deterministic ids:
///    a crash before step 4 may leave a second entry with the same id, which consumers
///    skip).
/// 4. [`mark_done_and_ack`]: the done markers are set and the entries acknowledged, XACK
///    last.
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
    let mut out: Outcomes = vec![None; items.len()];
    // 1. Ours? Done?
    let done_keys = done_keys(target.group, None, target.dedup_ttl, now_ms());
    let state = read_ours_and_done(redis, target, items, &done_keys).await?;
    let mut acks = triage(items, &state, &mut out);
    // 2. One call per hash slot touched.
    let slots = apply_per_slot(redis, target, items, &out, heads).await?;
    // 3. Publish what the final round derived.
    let finishing = publish_derived(redis, items, slots, &mut out).await?;
    // 4. Done markers, then acknowledgements.
    mark_done_and_ack(
        redis,
        target,
        items,
        &done_keys[0],
        finishing,
        &mut acks,
        &mut out,
    )
    .await?;
    Ok(out
        .into_iter()
        .map(|o| o.expect("every event has an outcome"))
        .collect())
}

/// Every event's outcome once it is decided (`None`: still going on to the next step).
type Outcomes = Vec<Option<RoundOutcome>>;

/// What step 1 read: the entries still pending for this consumer, and per event whether a
/// done marker holds it.
struct PendingState {
    ours: HashSet<String>,
    done: Vec<bool>,
}

/// Step 1: XCLAIM JUSTID of the batch, one HMGET per done-marker generation, and the
/// started marks (HSET + EXPIRE), in one pipelined round trip.
async fn read_ours_and_done(
    redis: &Redis,
    target: Target<'_>,
    items: &[RoundItem<'_>],
    done_keys: &[String],
) -> Result<PendingState, BusError> {
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
    for k in done_keys {
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
    let ours: HashSet<String> = replies
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
    Ok(PendingState { ours, done })
}

/// Step 1, decided: not ours → nothing; done, or a second copy of an event finishing in
/// this batch → acknowledged only; unsendable or keys in two slots → failed. Returns the
/// entries to acknowledge; the events left undecided go on to step 2.
fn triage<'a>(items: &[RoundItem<'a>], state: &PendingState, out: &mut Outcomes) -> Vec<&'a str> {
    let mut acks: Vec<&str> = vec![];
    let mut seen_final: HashSet<&str> = Default::default();
    for (i, it) in items.iter().enumerate() {
        if !state.ours.contains(it.entry_id) {
            out[i] = Some(RoundOutcome::NotOurs);
        } else if state.done[i] {
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
    acks
}

/// What step 2 did, per event: the replies merged over its slots, whether any slot
/// applied now, whether a slot saw a conflict, and why it failed if it did.
struct SlotResults {
    merged: Vec<Vec<Reply>>,
    applied: Vec<bool>,
    conflict: Vec<bool>,
    failed: Vec<Option<String>>,
}

/// Step 2: one `commit_slot.lua` call per hash slot the undecided events touch, all sent
/// at once; their answers merged back per event.
async fn apply_per_slot(
    redis: &Redis,
    target: Target<'_>,
    items: &[RoundItem<'_>],
    out: &Outcomes,
    heads: HashMap<String, String>,
) -> Result<SlotResults, BusError> {
    let mut res = SlotResults {
        merged: items
            .iter()
            .map(|it| vec![Reply::Nil; it.ops.len()])
            .collect(),
        applied: vec![false; items.len()],
        conflict: vec![false; items.len()],
        failed: vec![None; items.len()],
    };
    let mut calls = vec![];
    for (slot, share) in shares_by_slot(items, out) {
        let r = redis.clone();
        let mut heads = heads.clone();
        let (call, share, clashing) = encode_slot_call(target, slot, items, share, &mut heads)?;
        for i in clashing {
            res.failed[i].get_or_insert_with(|| {
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
        merge_slot_answer(items, share, reply, &mut res)?;
    }
    Ok(res)
}

/// Each undecided event's ops grouped by hash slot: per slot, (event, its op indices).
fn shares_by_slot(items: &[RoundItem<'_>], out: &Outcomes) -> BTreeMap<u16, SlotShare> {
    let mut slots: BTreeMap<u16, SlotShare> = Default::default();
    for (i, it) in items.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        let mut by_slot: BTreeMap<u16, Vec<usize>> = Default::default();
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
    slots
}

/// One slot's answer into the per-event results.
fn merge_slot_answer(
    items: &[RoundItem<'_>],
    share: SlotShare,
    reply: Value,
    res: &mut SlotResults,
) -> Result<(), BusError> {
    match parse_reply(reply, share.len(), |_| true)? {
        Answer::BadKey { actual, .. } => {
            // Nothing of this slot was written; its events fail (a key in it has the
            // wrong type). Their other slots may have applied: that is recorded there.
            for (i, _) in &share {
                res.failed[*i].get_or_insert_with(|| {
                    format!("a key of this event holds a {actual} (wrong type)")
                });
            }
        }
        Answer::Rows(rows) => {
            for ((i, ops), row) in share.into_iter().zip(rows) {
                let replies = match row.status {
                    b'0' => {
                        res.applied[i] = true;
                        decode_replies(&row.payload)?
                    }
                    b'1' => progress_round(&row.payload, items[i].round)?,
                    b'5' => {
                        res.conflict[i] = true;
                        continue;
                    }
                    _ => {
                        res.failed[i]
                            .get_or_insert(String::from_utf8_lossy(&row.payload).into_owned());
                        continue;
                    }
                };
                for (j, r) in ops.into_iter().zip(replies) {
                    res.merged[i][j] = r;
                }
            }
        }
    }
    Ok(())
}

/// Step 3: decides every event left (failed, conflict, a non-final round applied or
/// replayed) and XADDs what the final rounds derived, in one pipeline. Returns the final
/// rounds to finish in step 4 (an XADD that failed turns its event into a dead letter).
async fn publish_derived(
    redis: &Redis,
    items: &[RoundItem<'_>],
    mut slots: SlotResults,
    out: &mut Outcomes,
) -> Result<Vec<usize>, BusError> {
    let mut xadds = vec![];
    let mut finishing = vec![];
    for (i, it) in items.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        if let Some(reason) = slots.failed[i].take() {
            out[i] = Some(RoundOutcome::Failed(reason));
        } else if slots.conflict[i] {
            out[i] = Some(RoundOutcome::Conflict);
        } else if it.is_final {
            for (s, env) in &it.emits {
                xadds.push((i, ("XADD", xadd_args(s, env))));
            }
            finishing.push(i);
        } else {
            let replies = std::mem::take(&mut slots.merged[i]);
            out[i] = Some(if slots.applied[i] || it.ops.is_empty() {
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
    Ok(finishing)
}

/// Step 4: the done markers of the finished events (HSET + EXPIRE, one pipeline), then
/// XACK of everything to acknowledge, last, in chunks of 1000.
async fn mark_done_and_ack<'a>(
    redis: &Redis,
    target: Target<'_>,
    items: &[RoundItem<'a>],
    done_key: &str,
    finishing: Vec<usize>,
    acks: &mut Vec<&'a str>,
    out: &mut Outcomes,
) -> Result<(), BusError> {
    let finished: Vec<usize> = finishing
        .into_iter()
        .filter(|i| out[*i].is_none())
        .collect();
    if !finished.is_empty() {
        let mut a = vec![arg(done_key)];
        for &i in &finished {
            a.push(arg(items[i].event_id));
            a.push(arg("D"));
        }
        let cmds = vec![
            ("HSET", a),
            (
                "EXPIRE",
                vec![
                    arg(done_key),
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
    Ok(())
}
