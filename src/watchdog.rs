//! Liveness of the delivery loops, and systemd's watchdog fed from it.
//!
//! A watchdog that pings from a timer proves only that the timer runs. Here every reader
//! loop touches its [`Heartbeat`] once per iteration, and the pinger sends `WATCHDOG=1`
//! only while every registered loop has beaten within its bound: a reader wedged on a
//! dead connection or behind a handler that never returns stops the pings, and systemd
//! restarts the daemon (its entries stay pending and are recovered on restart).
//! A Redis outage does *not* stop the pings: readers keep iterating through their
//! retry backoff, and a restart would not bring Redis back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;

/// Longest pause a healthy reader makes beyond its blocking read and one command: the
/// retry backoff tops out at 5 s plus up to 5 s of jitter, and scheduling needs a margin.
pub const LOOP_SLACK: Duration = Duration::from_secs(15);

/// The set of loops whose progress the watchdog vouches for.
#[derive(Debug)]
pub struct Liveness {
    origin: Instant,
    loops: Mutex<Vec<Weak<Beat>>>,
}

#[derive(Debug)]
struct Beat {
    name: String,
    bound_ms: u64,
    /// Milliseconds since `origin` of the last completed iteration.
    last_ms: AtomicU64,
    origin: Instant,
}

/// One loop's handle: call [`Heartbeat::beat`] once per completed iteration. Dropping it
/// (the loop ended, e.g. on reload) removes the loop from the check.
#[derive(Debug, Clone)]
pub struct Heartbeat(Arc<Beat>);

impl Heartbeat {
    /// Records that the loop completed an iteration now (one relaxed atomic store).
    pub fn beat(&self) {
        let b = &self.0;
        b.last_ms
            .store(b.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// A heartbeat nobody checks, for loops run outside a daemon (tests, tools).
    pub fn detached() -> Heartbeat {
        Liveness::new().register("detached", Duration::MAX)
    }
}

/// A loop that has not beaten within its bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// The loop's name (`group stream`).
    pub name: String,
    /// Time since its last completed iteration.
    pub silent_for: Duration,
}

impl Liveness {
    /// An empty set (healthy: no loop is stuck).
    pub fn new() -> Arc<Liveness> {
        Arc::new(Liveness {
            origin: Instant::now(),
            loops: Mutex::new(vec![]),
        })
    }

    /// Registers a loop that must complete an iteration at least every `bound`. It counts
    /// as having just beaten.
    pub fn register(&self, name: impl Into<String>, bound: Duration) -> Heartbeat {
        let beat = Arc::new(Beat {
            name: name.into(),
            bound_ms: u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
            last_ms: AtomicU64::new(self.origin.elapsed().as_millis() as u64),
            origin: self.origin,
        });
        let mut loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        loops.retain(|w| w.strong_count() > 0);
        loops.push(Arc::downgrade(&beat));
        Heartbeat(beat)
    }

    /// Loops that have not beaten within their bound, now.
    pub fn stuck(&self) -> Vec<Stuck> {
        self.stuck_at(self.origin.elapsed().as_millis() as u64)
    }

    fn stuck_at(&self, now_ms: u64) -> Vec<Stuck> {
        let loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        loops
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|b| {
                let silent = now_ms.saturating_sub(b.last_ms.load(Ordering::Relaxed));
                (silent > b.bound_ms).then(|| Stuck {
                    name: b.name.clone(),
                    silent_for: Duration::from_millis(silent),
                })
            })
            .collect()
    }

    /// Number of loops currently registered (alive).
    pub fn loops(&self) -> usize {
        let loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        loops.iter().filter(|w| w.strong_count() > 0).count()
    }
}

/// Calls `ping` every `every` while no loop is stuck, until shutdown. Logs once when loops
/// get stuck (naming them) and once when they recover, not at every tick.
pub async fn watchdog_loop(
    liveness: Arc<Liveness>,
    every: Duration,
    ping: impl Fn() + Send,
    mut shutdown: Shutdown,
) {
    let mut was_stuck = false;
    loop {
        let stuck = liveness.stuck();
        if stuck.is_empty() {
            if was_stuck {
                tracing::warn!("delivery loops progress again; watchdog pings resume");
                was_stuck = false;
            }
            ping();
        } else if !was_stuck {
            let names: Vec<String> = stuck
                .iter()
                .map(|s| format!("{} (silent {:?})", s.name, s.silent_for))
                .collect();
            tracing::error!(
                loops = %names.join(", "),
                "delivery loops are stuck; withholding watchdog pings so the service manager restarts the daemon"
            );
            was_stuck = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.recv() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_is_stuck_only_after_its_bound_without_a_beat() {
        let l = Liveness::new();
        let a = l.register("g a", Duration::from_millis(1_000));
        let _b = l.register("g b", Duration::from_millis(5_000));
        let t0 = a.0.last_ms.load(Ordering::Relaxed);
        assert!(l.stuck_at(t0 + 1_000).is_empty(), "at the bound: healthy");
        let stuck = l.stuck_at(t0 + 1_001);
        assert_eq!(
            stuck,
            vec![Stuck {
                name: "g a".into(),
                silent_for: Duration::from_millis(1_001)
            }]
        );
        let both: Vec<String> = l.stuck_at(t0 + 6_000).into_iter().map(|s| s.name).collect();
        assert_eq!(both, ["g a", "g b"]);
        // A beat resets the clock of that loop only.
        a.0.last_ms.store(t0 + 5_500, Ordering::Relaxed);
        let after: Vec<String> = l.stuck_at(t0 + 6_000).into_iter().map(|s| s.name).collect();
        assert_eq!(after, ["g b"]);
    }

    #[test]
    fn a_dropped_heartbeat_no_longer_counts() {
        let l = Liveness::new();
        let a = l.register("gone", Duration::from_millis(10));
        assert_eq!(l.loops(), 1);
        assert_eq!(l.stuck_at(u64::MAX / 2).len(), 1);
        drop(a);
        assert_eq!(l.loops(), 0);
        assert!(l.stuck_at(u64::MAX / 2).is_empty());
    }

    #[test]
    fn beat_records_the_current_time() {
        let l = Liveness::new();
        let a = l.register("x", Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(l.stuck().len(), 1, "silent past its bound");
        a.beat();
        assert!(l.stuck().is_empty(), "a beat makes it healthy again");
    }

    #[tokio::test]
    async fn pings_only_while_no_loop_is_stuck() {
        let l = Liveness::new();
        let beat = l.register("r", Duration::from_millis(150));
        let (trigger, shutdown) = Shutdown::new();
        let pings = Arc::new(AtomicU64::new(0));
        let p = pings.clone();
        let task = tokio::spawn(watchdog_loop(
            l.clone(),
            Duration::from_millis(10),
            move || {
                p.fetch_add(1, Ordering::SeqCst);
            },
            shutdown,
        ));
        // Healthy while beating.
        for _ in 0..10 {
            beat.beat();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let healthy = pings.load(Ordering::SeqCst);
        assert!(healthy >= 5, "pings while healthy: {healthy}");
        // Silent past the bound: pings stop.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let at_stall = pings.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            pings.load(Ordering::SeqCst),
            at_stall,
            "no pings while stuck"
        );
        // Beating again resumes them.
        beat.beat();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pings.load(Ordering::SeqCst) > at_stall, "pings resume");
        trigger.trigger();
        task.await.unwrap();
    }
}
