//! What every handler file shares: reading options, checking payload fields, reading the
//! replies of earlier rounds. (The poison for a stream a handler does not read is
//! [`crate::handlers::typed::Reject`].)
//!
//! Each helper keeps the exact wording its handlers have always used: the reasons end up
//! in dead letters (`dlq_error`) and in the tests, so two domains that word a thing
//! differently keep their own helper here rather than a merged one.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::group::GroupConfig;
use crate::handler::{HandlerError, Reply};

// ---------------------------------------------------------------------------------------
// Options (checked when the handler is built, so `astra-bus check` reports them)
// ---------------------------------------------------------------------------------------

/// Reads a typed option from a group's `[group.options]`, falling back to `default`.
pub fn option<T: serde::de::DeserializeOwned>(
    group: &GroupConfig,
    name: &str,
    default: T,
) -> Result<T, String> {
    match group.options.get(name) {
        None => Ok(default),
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|e| format!("option `{name}`: {e}")),
    }
}

/// Rejects options the handler does not know (so a typo is an error, not a silent default).
pub fn deny_unknown_options(group: &GroupConfig, known: &[&str]) -> Result<(), String> {
    for k in group.options.keys() {
        if !known.contains(&k.as_str()) {
            return Err(format!(
                "unknown option `{k}` (known: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
    }
    Ok(())
}

/// An integer option that must be at least 1.
pub(crate) fn positive_option(g: &GroupConfig, name: &str, default: u32) -> Result<u32, String> {
    let v: u32 = option(g, name, default)?;
    if v == 0 {
        return Err(format!("option `{name}`: must be >= 1, got 0"));
    }
    Ok(v)
}

/// Any duration: what the expiry margins (`expire_margin`) accept.
pub(crate) const ANY_DURATION: RangeInclusive<Duration> = Duration::ZERO..=Duration::MAX;

/// 1ms to 366 days: what the rolling and fixed windows (`window`, `velocity_window`) accept.
pub(crate) const WINDOW: RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(366 * 86_400);

/// A humantime duration option (`"2d"`, `"36h"`), `default` when absent, within `range`.
pub(crate) fn duration_option(
    g: &GroupConfig,
    name: &str,
    default: &str,
    range: RangeInclusive<Duration>,
) -> Result<Duration, String> {
    let s: String = option(g, name, default.to_string())?;
    let d = humantime::parse_duration(&s).map_err(|e| {
        format!("option `{name}`: {e} (got {s:?}; expected a duration such as \"2d\" or \"36h\")")
    })?;
    if d < *range.start() {
        return Err(format!(
            "option `{name}`: must be at least {}, got {s:?}",
            describe(*range.start())
        ));
    }
    if d > *range.end() {
        return Err(format!(
            "option `{name}`: must be at most {}, got {s:?}",
            describe(*range.end())
        ));
    }
    Ok(d)
}

/// A bound as people write it: whole days as `366 days`, the rest as humantime does.
fn describe(d: Duration) -> String {
    const DAY: u64 = 86_400;
    if d.subsec_nanos() == 0 && d.as_secs() >= DAY && d.as_secs().is_multiple_of(DAY) {
        format!("{} days", d.as_secs() / DAY)
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// Constructor check: the group must be allowed to publish `stream`.
pub(crate) fn require_publishes(g: &GroupConfig, stream: &str) -> Result<(), String> {
    if g.publishes.iter().any(|s| s == stream) {
        Ok(())
    } else {
        Err(format!(
            "group must publish to `{stream}` (add it to `publishes`)"
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Payload fields
// ---------------------------------------------------------------------------------------

/// Poison (dead-letter now) with a reason.
pub fn poison(msg: impl Into<String>) -> HandlerError {
    HandlerError::Poison(msg.into())
}

/// Poison naming `field` when `value` is empty or blank (what most handlers check).
pub fn non_empty(field: &str, value: &str) -> Result<(), HandlerError> {
    if value.trim().is_empty() {
        return Err(poison(format!("field `{field}`: must not be empty")));
    }
    Ok(())
}

/// Poison naming `field` when `value` is empty; unlike [`non_empty`], blanks pass (what
/// the gamification and social handlers have always accepted).
pub(crate) fn require_non_empty(field: &str, value: &str) -> Result<(), HandlerError> {
    if value.is_empty() {
        return Err(HandlerError::Poison(format!(
            "field `{field}`: must not be empty"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Rounds a handler never asks for
// ---------------------------------------------------------------------------------------

/// Poison: `step` was called with more rounds than this event's plan has (gamification,
/// social).
pub(crate) fn unexpected_rounds(group: &str, rounds: &[Vec<Reply>]) -> HandlerError {
    HandlerError::Poison(format!(
        "group {group}: step called after {} rounds, more than this event needs",
        rounds.len()
    ))
}

/// Poison: `step` was called with more rounds than the handler ever asks for (nft).
pub(crate) fn too_many_rounds(rounds: &[Vec<Reply>]) -> HandlerError {
    poison(format!(
        "called with {} recorded rounds; this handler never asks for that many",
        rounds.len()
    ))
}

// ---------------------------------------------------------------------------------------
// Replies of earlier rounds
// ---------------------------------------------------------------------------------------

/// The reply to op `i` of round `r`. A missing reply is poison: the recorded replies are
/// replayed as they are, so retrying could never fix it.
pub(crate) fn reply<'a>(
    rounds: &'a [Vec<Reply>],
    r: usize,
    i: usize,
    what: &str,
) -> Result<&'a Reply, HandlerError> {
    rounds
        .get(r)
        .and_then(|round| round.get(i))
        .ok_or_else(|| HandlerError::Poison(format!("round {r}: missing reply {i} ({what})")))
}

/// An integer reply (`HINCRBY`, `SADD`, `ZREVRANK`, …).
pub(crate) fn reply_int(
    rounds: &[Vec<Reply>],
    r: usize,
    i: usize,
    what: &str,
) -> Result<i64, HandlerError> {
    reply_as(rounds, (r, i, what), "an integer", Reply::as_int)
}

/// An integral sorted-set score (`ZINCRBY` replies a decimal string such as `"12"`).
pub(crate) fn reply_score(
    rounds: &[Vec<Reply>],
    r: usize,
    i: usize,
    what: &str,
) -> Result<i64, HandlerError> {
    reply_as(rounds, (r, i, what), "a score", |rep| {
        rep.as_int().or_else(|| {
            rep.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.round() as i64)
        })
    })
}

/// Reply `i` of round `r` read with `read`; poison naming `kind` when it does not fit.
fn reply_as(
    rounds: &[Vec<Reply>],
    (r, i, what): (usize, usize, &str),
    kind: &str,
    read: impl Fn(&Reply) -> Option<i64>,
) -> Result<i64, HandlerError> {
    let rep = reply(rounds, r, i, what)?;
    read(rep).ok_or_else(|| {
        HandlerError::Poison(format!(
            "round {r}: reply {i} ({what}) is not {kind}: {rep:?}"
        ))
    })
}

/// The replies of round `i`, which must be `len` of them, or a poison error naming what
/// is missing (a runtime bug).
pub(crate) fn round(rounds: &[Vec<Reply>], i: usize, len: usize) -> Result<&[Reply], HandlerError> {
    match rounds.get(i) {
        Some(r) if r.len() == len => Ok(r),
        Some(r) => Err(poison(format!(
            "round {i}: expected {len} replies, got {}",
            r.len()
        ))),
        None => Err(poison(format!("round {i}: replies missing"))),
    }
}

/// An integer reply, or poison naming the op (a reply of the wrong shape is a bug).
pub(crate) fn int_reply(r: &Reply, what: &str) -> Result<i64, HandlerError> {
    r.as_int()
        .ok_or_else(|| poison(format!("unexpected reply to {what}: {r:?}")))
}

// ---------------------------------------------------------------------------------------
// Key lifetimes
// ---------------------------------------------------------------------------------------

/// `EXPIRE` seconds for a key of a period that ends at `period_end_ms`, written by an event
/// that occurred at `ts_ms`: the rest of the period (rounded up to whole seconds) plus
/// `margin`, at least 1. Measured from the event's time, so the same event always asks for
/// the same TTL (replay-safe) and the key outlives its period by `margin`.
pub fn expire_secs(period_end_ms: i64, ts_ms: i64, margin: Duration) -> i64 {
    let rest_ms = period_end_ms.saturating_sub(ts_ms).max(0);
    let rest_secs = rest_ms / 1000 + i64::from(rest_ms % 1000 != 0);
    let margin = i64::try_from(margin.as_secs()).unwrap_or(i64::MAX);
    rest_secs.saturating_add(margin).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::{at, day_end_ms};
    use crate::handlers::testing::group;

    #[test]
    fn period_ttls() {
        let sat_noon = at(2026, 11, 21, 12);
        let two_days = Duration::from_secs(2 * 86_400);
        assert_eq!(
            expire_secs(day_end_ms(sat_noon), sat_noon, two_days),
            12 * 3600 + 2 * 86_400
        );
        assert_eq!(expire_secs(1_500, 1_000, Duration::ZERO), 1); // rounds up
        assert_eq!(expire_secs(1_000, 1_000, Duration::ZERO), 1); // never 0 or negative
        assert_eq!(expire_secs(0, 5_000, Duration::from_secs(10)), 10);
    }

    #[test]
    fn duration_options_keep_each_handlers_range() {
        let g = |opts: &str| group("x.y", "x.y", &[], opts);
        let window = |opts: &str| duration_option(&g(opts), "window", "1h", WINDOW);
        let margin = |opts: &str| duration_option(&g(opts), "margin", "2d", ANY_DURATION);
        assert_eq!(window(""), Ok(Duration::from_secs(3600)));
        assert_eq!(margin(""), Ok(Duration::from_secs(2 * 86_400)));
        assert_eq!(
            window("window = \"0s\""),
            Err("option `window`: must be at least 1ms, got \"0s\"".into())
        );
        assert_eq!(
            window("window = \"367d\""),
            Err("option `window`: must be at most 366 days, got \"367d\"".into())
        );
        assert_eq!(
            window("window = \"366d\""),
            Ok(Duration::from_secs(366 * 86_400))
        );
        assert_eq!(margin("margin = \"0s\""), Ok(Duration::ZERO));
        assert_eq!(
            margin("margin = \"3650d\""),
            Ok(Duration::from_secs(3650 * 86_400))
        );
        let e = margin("margin = \"soon\"").unwrap_err();
        assert!(e.starts_with("option `margin`: "), "{e}");
        assert!(e.contains("\"soon\""), "{e}");
    }
}
