//! One instance's circuit breaker, as the seeds' gateway had it: CLOSED lets everything
//! through and counts consecutive failures; `failures` of them open it; OPEN refuses for
//! `open_for`, then lets exactly one request through as a probe (HALF_OPEN); the probe's
//! success closes it, its failure opens it for another `open_for`.
//!
//! Pure state and time passed in, so every transition is unit-tested without a clock or
//! a network. [`super::Upstreams`] keeps one per instance and turns transitions into the
//! `astra_bus_breaker_*` metrics and log lines.

use std::time::{Duration, Instant};

use crate::config::BreakerConfig;

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Requests pass; consecutive failures are counted.
    Closed,
    /// Requests are refused until the window ends.
    Open,
    /// The window ended: one probe is (or may be) in flight.
    HalfOpen,
}

impl State {
    /// Every state, in the order the metric lists them.
    pub const ALL: [State; 3] = [State::Closed, State::Open, State::HalfOpen];

    /// The name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// Whether a request may go to the instance now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Yes (closed).
    Pass,
    /// Yes, as the one probe of a half-open breaker: report its outcome.
    Probe,
    /// No: open (or half-open with its probe out), for about this long.
    Refuse(Duration),
}

/// One instance's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    /// Consecutive failures while closed.
    failures: u32,
    /// When it last opened.
    opened_at: Option<Instant>,
    /// A half-open breaker's probe is out.
    probing: bool,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: State::Closed,
            failures: 0,
            opened_at: None,
            probing: false,
        }
    }
}

/// A change of state.
pub type Transition = (State, State);

impl Breaker {
    /// Its state (an open breaker whose window ended still reads open until asked to
    /// admit a request).
    pub fn state(&self) -> State {
        self.state
    }

    /// Asks to send a request at `now`; may move OPEN → HALF_OPEN (the returned transition).
    pub fn admit(&mut self, cfg: &BreakerConfig, now: Instant) -> (Admit, Option<Transition>) {
        match self.state {
            State::Closed => (Admit::Pass, None),
            State::Open => {
                let opened = self.opened_at.unwrap_or(now);
                let ends = opened + cfg.open_for;
                if now < ends {
                    return (Admit::Refuse(ends - now), None);
                }
                self.state = State::HalfOpen;
                self.probing = true;
                (Admit::Probe, Some((State::Open, State::HalfOpen)))
            }
            State::HalfOpen if self.probing => {
                // The probe decides; until it does, others wait about a probe's length.
                (Admit::Refuse(Duration::from_secs(1)), None)
            }
            State::HalfOpen => {
                self.probing = true;
                (Admit::Probe, None)
            }
        }
    }

    /// The instance answered well.
    pub fn success(&mut self) -> Option<Transition> {
        self.failures = 0;
        self.probing = false;
        match self.state {
            State::Closed => None,
            from => {
                self.state = State::Closed;
                self.opened_at = None;
                Some((from, State::Closed))
            }
        }
    }

    /// The instance failed (refused, lost, timed out, answered 5xx) at `now`.
    pub fn failure(&mut self, cfg: &BreakerConfig, now: Instant) -> Option<Transition> {
        self.probing = false;
        match self.state {
            State::Closed => {
                self.failures += 1;
                if self.failures < cfg.failures {
                    return None;
                }
                self.open(now);
                Some((State::Closed, State::Open))
            }
            State::HalfOpen => {
                self.open(now);
                Some((State::HalfOpen, State::Open))
            }
            // A request admitted before it opened: the window starts again from now.
            State::Open => {
                self.opened_at = Some(now);
                None
            }
        }
    }

    /// An admitted request ended without an outcome (the caller went away): a probe's slot
    /// is free again, nothing is counted.
    pub fn abandon(&mut self) {
        self.probing = false;
    }

    fn open(&mut self, now: Instant) {
        self.state = State::Open;
        self.opened_at = Some(now);
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            failures: 3,
            open_for: Duration::from_secs(30),
        }
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let (c, t) = (cfg(), Instant::now());
        let mut b = Breaker::default();
        assert_eq!(b.failure(&c, t), None);
        assert_eq!(b.failure(&c, t), None);
        // A success in between starts the count again.
        assert_eq!(b.success(), None);
        assert_eq!(b.failure(&c, t), None);
        assert_eq!(b.failure(&c, t), None);
        assert_eq!(b.failure(&c, t), Some((State::Closed, State::Open)));
        assert_eq!(b.state(), State::Open);
        assert_eq!(
            b.admit(&c, t + Duration::from_secs(10)).0,
            Admit::Refuse(Duration::from_secs(20))
        );
    }

    #[test]
    fn half_open_sends_one_probe_and_its_outcome_decides() {
        let (c, t) = (cfg(), Instant::now());
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.failure(&c, t);
        }
        let later = t + Duration::from_secs(30);
        assert_eq!(
            b.admit(&c, later),
            (Admit::Probe, Some((State::Open, State::HalfOpen)))
        );
        // Only one probe at a time.
        assert!(matches!(b.admit(&c, later).0, Admit::Refuse(_)));
        // A failed probe opens it for a whole new window.
        assert_eq!(b.failure(&c, later), Some((State::HalfOpen, State::Open)));
        assert!(matches!(
            b.admit(&c, later + Duration::from_secs(29)).0,
            Admit::Refuse(_)
        ));
        let again = later + Duration::from_secs(30);
        assert_eq!(b.admit(&c, again).0, Admit::Probe);
        assert_eq!(b.success(), Some((State::HalfOpen, State::Closed)));
        assert_eq!(b.admit(&c, again).0, Admit::Pass);
    }

    #[test]
    fn an_abandoned_probe_frees_the_slot() {
        let (c, t) = (cfg(), Instant::now());
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.failure(&c, t);
        }
        let later = t + Duration::from_secs(31);
        assert_eq!(b.admit(&c, later).0, Admit::Probe);
        b.abandon();
        assert_eq!(b.admit(&c, later), (Admit::Probe, None));
    }

    #[test]
    fn a_late_failure_while_open_restarts_the_window() {
        let (c, t) = (cfg(), Instant::now());
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.failure(&c, t);
        }
        let t2 = t + Duration::from_secs(20);
        assert_eq!(b.failure(&c, t2), None);
        assert!(matches!(
            b.admit(&c, t + Duration::from_secs(31)).0,
            Admit::Refuse(_)
        ));
        assert_eq!(b.admit(&c, t2 + Duration::from_secs(30)).0, Admit::Probe);
    }
}
