//! What the console shows of live health: every (group, stream) pair classified ok /
//! warn / crit from the daemon's latest snapshot, and a short history of per-group and
//! per-stream throughput and lag. The history is recorded by the daemon's health loop
//! (once per `metrics.refresh_interval`), never by a viewer, so any number of open
//! consoles adds no Redis command.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::bus::status::{GroupStatus, Snapshot};
use crate::config::Config;

/// Lag (entries not yet delivered) at which a pair turns amber.
pub const LAG_WARN: i64 = 1_000;
/// Lag at which a pair turns red.
pub const LAG_CRIT: i64 = 10_000;
/// An oldest pending entry older than this many `claim_idle`s turns a pair red (older
/// than one `claim_idle` it is amber: reclaiming should have moved it by then).
pub const PENDING_AGE_CRIT_FACTOR: u32 = 10;
/// How far back the history reaches.
pub const HISTORY_SPAN: Duration = Duration::from_secs(600);
/// At most this many samples are kept, whatever the refresh interval (memory bound).
pub const HISTORY_MAX_SAMPLES: usize = 600;

/// Health of a pair, a group or a stream; ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Nothing to look at.
    Ok,
    /// Falling behind, stuck entries or dead letters: look soon.
    Warn,
    /// Missing group, nobody consuming, or far behind: look now.
    Crit,
}

fn age(ms: i64) -> String {
    humantime::format_duration(Duration::from_secs((ms.max(0) / 1000) as u64)).to_string()
}

/// Classifies one (group, stream) pair; the reasons say why it is not ok.
pub fn classify(p: &GroupStatus, claim_idle: Duration) -> (Health, Vec<String>) {
    let mut h = Health::Ok;
    let mut why = vec![];
    let mut flag = |level: Health, reason: String| {
        h = h.max(level);
        why.push(reason);
    };
    if !p.exists {
        flag(
            Health::Crit,
            "group missing in Redis (a worker re-creates it; `astra-bus declare` does now)".into(),
        );
    }
    let lag = p.lag.unwrap_or(0);
    if p.exists && p.consumers == 0 && (lag > 0 || p.pending > 0) {
        flag(
            Health::Crit,
            format!(
                "no consumer while {} entries wait",
                lag.max(0) + p.pending.max(0)
            ),
        );
    }
    if lag >= LAG_CRIT {
        flag(Health::Crit, format!("lag {lag} ≥ {LAG_CRIT}"));
    } else if lag >= LAG_WARN {
        flag(Health::Warn, format!("lag {lag} ≥ {LAG_WARN}"));
    }
    if let Some(a) = p.oldest_pending_age_ms {
        let idle = claim_idle.as_millis() as i64;
        let crit = idle * i64::from(PENDING_AGE_CRIT_FACTOR);
        if idle > 0 && a >= crit {
            flag(
                Health::Crit,
                format!(
                    "oldest pending {} ≥ {PENDING_AGE_CRIT_FACTOR} × claim_idle",
                    age(a)
                ),
            );
        } else if a >= idle {
            flag(
                Health::Warn,
                format!("oldest pending {} ≥ claim_idle {}", age(a), age(idle)),
            );
        }
    }
    if p.dead_letters > 0 {
        flag(
            Health::Warn,
            format!("{} dead letter(s) of the group", p.dead_letters),
        );
    }
    (h, why)
}

/// One point of a series: a rate (per second, since the previous sample) and a level.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Point {
    /// Entries per second: read by the group, or added to the stream.
    pub rate: Option<f64>,
    /// The group's lag (sum over its streams), or the largest lag of a stream's readers.
    pub lag: Option<i64>,
}

/// Every series' point at one refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When the snapshot was taken (Unix ms).
    pub at_ms: i64,
    /// In [`History::groups`] order.
    pub groups: Vec<Point>,
    /// In [`History::streams`] order.
    pub streams: Vec<Point>,
}

/// Counters of the previous sample, to turn into rates.
struct Counters {
    at_ms: i64,
    groups: Vec<Option<i64>>,
    streams: Vec<Option<i64>>,
}

struct Inner {
    samples: VecDeque<Sample>,
    last: Option<Counters>,
}

/// The recent history of the daemon's snapshots, compacted to the console's series.
pub struct History {
    /// Group names, config order.
    pub groups: Vec<String>,
    /// Stream names, config order.
    pub streams: Vec<String>,
    inner: Mutex<Inner>,
}

/// Entries the group read from the stream. Redis reports `entries-read` as nil for a
/// group that has never read an empty stream: that is 0.
fn entries_read(p: &GroupStatus) -> Option<i64> {
    p.entries_read
        .or((p.length == 0 && p.lag == Some(0)).then_some(0))
}

fn sum(mut it: impl Iterator<Item = Option<i64>>) -> Option<i64> {
    it.try_fold(0, |acc, v| Some(acc + v?))
}

fn rate(now: Option<i64>, before: Option<i64>, secs: f64) -> Option<f64> {
    match (now, before) {
        // A counter that went down (group re-created, stream deleted) has no rate.
        (Some(n), Some(b)) if n >= b && secs > 0.0 => Some((n - b) as f64 / secs),
        _ => None,
    }
}

impl History {
    /// An empty history for `cfg`'s groups and streams.
    pub fn new(cfg: &Config) -> History {
        History {
            groups: cfg.groups.iter().map(|g| g.name.clone()).collect(),
            streams: cfg.streams.iter().map(|s| s.name.clone()).collect(),
            inner: Mutex::new(Inner {
                samples: VecDeque::new(),
                last: None,
            }),
        }
    }

    /// Adds the snapshot taken at `at_ms`, dropping samples older than [`HISTORY_SPAN`]
    /// (and beyond [`HISTORY_MAX_SAMPLES`]).
    pub fn record(&self, at_ms: i64, snap: &Snapshot) {
        let mut by_group: HashMap<&str, Vec<&GroupStatus>> = HashMap::new();
        let mut by_stream: HashMap<&str, Vec<&GroupStatus>> = HashMap::new();
        for p in &snap.groups {
            by_group.entry(p.group.as_str()).or_default().push(p);
            by_stream.entry(p.stream.as_str()).or_default().push(p);
        }
        let lengths: HashMap<&str, i64> =
            snap.streams.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        let group_read: Vec<Option<i64>> = self
            .groups
            .iter()
            .map(|g| {
                let ps = by_group.get(g.as_str())?;
                sum(ps.iter().map(|p| entries_read(p)))
            })
            .collect();
        // Entries ever added to a stream = what a reader has read + its lag (Redis keeps
        // both per group); unlike the length, retention trimming does not lower it.
        // A stream nobody reads falls back to its length.
        let stream_added: Vec<Option<i64>> = self
            .streams
            .iter()
            .map(|s| {
                let from_readers = by_stream
                    .get(s.as_str())
                    .into_iter()
                    .flatten()
                    .filter_map(|p| Some(entries_read(p)? + p.lag?))
                    .max();
                from_readers.or_else(|| lengths.get(s.as_str()).copied())
            })
            .collect();
        let mut inner = self.inner.lock().expect("history lock");
        let (secs, prev_groups, prev_streams) = match &inner.last {
            Some(c) => (
                (at_ms - c.at_ms) as f64 / 1000.0,
                c.groups.clone(),
                c.streams.clone(),
            ),
            None => (
                0.0,
                vec![None; self.groups.len()],
                vec![None; self.streams.len()],
            ),
        };
        let groups = self
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| Point {
                rate: rate(group_read[i], prev_groups[i], secs),
                lag: by_group
                    .get(g.as_str())
                    .and_then(|ps| sum(ps.iter().map(|p| p.lag))),
            })
            .collect();
        let streams = self
            .streams
            .iter()
            .enumerate()
            .map(|(i, s)| Point {
                rate: rate(stream_added[i], prev_streams[i], secs),
                lag: by_stream
                    .get(s.as_str())
                    .and_then(|ps| ps.iter().filter_map(|p| p.lag).max()),
            })
            .collect();
        inner.samples.push_back(Sample {
            at_ms,
            groups,
            streams,
        });
        let oldest = at_ms - HISTORY_SPAN.as_millis() as i64;
        while inner.samples.len() > HISTORY_MAX_SAMPLES
            || inner.samples.front().is_some_and(|s| s.at_ms < oldest)
        {
            inner.samples.pop_front();
        }
        inner.last = Some(Counters {
            at_ms,
            groups: group_read,
            streams: stream_added,
        });
    }

    /// Samples taken after `since_ms`, oldest first.
    pub fn since(&self, since_ms: i64) -> Vec<Sample> {
        let inner = self.inner.lock().expect("history lock");
        inner
            .samples
            .iter()
            .filter(|s| s.at_ms > since_ms)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(group: &str, stream: &str) -> GroupStatus {
        GroupStatus {
            group: group.into(),
            stream: stream.into(),
            length: 0,
            lag: Some(0),
            pending: 0,
            oldest_pending_age_ms: None,
            consumers: 1,
            exists: true,
            dead_letters: 0,
            last_delivered_id: Some("0-0".into()),
            oldest_pending_id: None,
            entries_read: Some(0),
        }
    }

    #[test]
    fn a_healthy_pair_is_ok_and_each_problem_names_itself() {
        let idle = Duration::from_secs(30);
        let ok = pair("g", "s");
        assert_eq!(classify(&ok, idle), (Health::Ok, vec![]));

        let lagging = GroupStatus {
            lag: Some(LAG_WARN),
            ..ok.clone()
        };
        let (h, why) = classify(&lagging, idle);
        assert_eq!(h, Health::Warn);
        assert_eq!(why, vec!["lag 1000 ≥ 1000"]);
        let just_below = GroupStatus {
            lag: Some(LAG_WARN - 1),
            ..ok.clone()
        };
        assert_eq!(classify(&just_below, idle).0, Health::Ok);
        let far = GroupStatus {
            lag: Some(LAG_CRIT),
            ..ok.clone()
        };
        assert_eq!(classify(&far, idle).0, Health::Crit);

        let stuck = GroupStatus {
            pending: 3,
            oldest_pending_age_ms: Some(31_000),
            ..ok.clone()
        };
        let (h, why) = classify(&stuck, idle);
        assert_eq!(h, Health::Warn);
        assert!(why[0].starts_with("oldest pending 31s"), "{why:?}");
        let very_stuck = GroupStatus {
            oldest_pending_age_ms: Some(300_000),
            ..stuck.clone()
        };
        assert_eq!(classify(&very_stuck, idle).0, Health::Crit);

        let dead = GroupStatus {
            dead_letters: 2,
            ..ok.clone()
        };
        assert_eq!(
            classify(&dead, idle),
            (
                Health::Warn,
                vec!["2 dead letter(s) of the group".to_string()]
            )
        );

        let orphaned = GroupStatus {
            consumers: 0,
            lag: Some(5),
            ..ok.clone()
        };
        assert_eq!(classify(&orphaned, idle).0, Health::Crit);
        // No consumer but nothing to do (a new, idle group) is fine.
        let idle_group = GroupStatus {
            consumers: 0,
            ..ok.clone()
        };
        assert_eq!(classify(&idle_group, idle).0, Health::Ok);

        let missing = GroupStatus {
            exists: false,
            consumers: 0,
            lag: None,
            ..ok
        };
        let (h, why) = classify(&missing, idle);
        assert_eq!(h, Health::Crit);
        assert_eq!(why.len(), 1, "{why:?}");
    }

    fn config() -> Config {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        Config::load_with_env(dir, |_| None).expect("shipped config")
    }

    fn snapshot(cfg: &Config, read: i64, lag: i64, length: i64) -> Snapshot {
        let mut snap = Snapshot::default();
        for g in &cfg.groups {
            for s in &g.reads {
                snap.groups.push(GroupStatus {
                    lag: Some(lag),
                    entries_read: Some(read),
                    length,
                    ..pair(&g.name, s)
                });
            }
        }
        snap.streams = cfg
            .streams
            .iter()
            .map(|s| (s.name.clone(), length))
            .collect();
        snap
    }

    #[test]
    fn rates_come_from_entries_read_and_survive_trimming() {
        let cfg = config();
        let h = History::new(&cfg);
        h.record(10_000, &snapshot(&cfg, 100, 0, 100));
        // Two seconds later every group read 50 more and 10 wait; retention trimmed the
        // streams to 20 entries: the rates must not go negative or vanish.
        h.record(12_000, &snapshot(&cfg, 150, 10, 20));
        let s = h.since(0);
        assert_eq!(s.len(), 2);
        assert!(s[0].groups.iter().all(|p| p.rate.is_none()));
        let xp = cfg
            .groups
            .iter()
            .position(|g| g.name == "gamification.xp_processing")
            .unwrap();
        // xp_processing reads two streams: 2 × 50 entries in 2 s.
        assert_eq!(s[1].groups[xp].rate, Some(50.0));
        assert_eq!(s[1].groups[xp].lag, Some(20));
        let trades = cfg
            .streams
            .iter()
            .position(|s| s.name == "astra.trading.trade_executed.v1")
            .unwrap();
        // Added: 100 → 160 (read 150 + lag 10) in 2 s.
        assert_eq!(s[1].streams[trades].rate, Some(30.0));
        assert_eq!(s[1].streams[trades].lag, Some(10));
        assert_eq!(h.since(10_000).len(), 1);
        // A counter that goes down (group re-created) gives no rate rather than a
        // negative one.
        h.record(13_000, &snapshot(&cfg, 0, 0, 20));
        assert!(h.since(12_000)[0].groups.iter().all(|p| p.rate.is_none()));
    }

    #[test]
    fn history_keeps_the_last_minutes_and_is_bounded() {
        let cfg = config();
        let h = History::new(&cfg);
        let snap = snapshot(&cfg, 0, 0, 0);
        for i in 0..(HISTORY_MAX_SAMPLES as i64 + 50) {
            h.record(1_000_000 + i * 100, &snap);
        }
        assert_eq!(h.since(0).len(), HISTORY_MAX_SAMPLES);
        let h = History::new(&cfg);
        for i in 0..20 {
            h.record(i * 60_000, &snap);
        }
        let kept = h.since(i64::MIN);
        assert_eq!(kept.first().unwrap().at_ms, 19 * 60_000 - 600_000);
        assert_eq!(kept.len(), 11);
    }
}
