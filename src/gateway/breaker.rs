//! A circuit breaker per backend (pure state machine; the caller supplies the clock).
//!
//! Closed: calls go through; `threshold` consecutive failures open it. Open: calls are
//! refused until `open_for` has passed, then it is half-open. Half-open: exactly one
//! call (the probe) goes through; its success closes the breaker, its failure opens it
//! again for another `open_for`. A successful health probe closes it at once.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug, Clone, Copy)]
pub struct Breaker {
    pub state: State,
    threshold: u32,
    open_for: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker {
            state: State::Closed { failures: 0 },
            threshold: threshold.max(1),
            open_for,
        }
    }

    /// `closed`, `open` or `half_open`, as the API and metrics name it.
    pub fn name(&self, now: Instant) -> &'static str {
        match self.state {
            State::Closed { .. } => "closed",
            State::Open { until } if now < until => "open",
            State::Open { .. } | State::HalfOpen { .. } => "half_open",
        }
    }

    /// Whether a call could go through now (without claiming the half-open probe).
    pub fn available(&self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until } => now >= until,
            State::HalfOpen { probing } => !probing,
        }
    }

    /// Claims permission for one call. In half-open state only one caller gets it.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until } if now < until => false,
            State::Open { .. } | State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                true
            }
            State::HalfOpen { probing: true } => false,
        }
    }

    pub fn success(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    pub fn failure(&mut self, now: Instant) {
        self.state = match self.state {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            State::Open { until } if now < until => State::Open { until },
            _ => State::Open {
                until: now + self.open_for,
            },
        };
    }

    /// A call that neither succeeded nor failed (e.g. the client's own bad request)
    /// gives the half-open probe back.
    pub fn neutral(&mut self) {
        if let State::HalfOpen { probing: true } = self.state {
            self.state = State::HalfOpen { probing: false };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_then_half_opens_and_closes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(10));
        b.failure(t0);
        b.failure(t0);
        b.success();
        b.failure(t0);
        b.failure(t0);
        assert_eq!(b.name(t0), "closed", "a success resets the count");
        b.failure(t0);
        assert_eq!(b.name(t0), "open");
        assert!(!b.try_acquire(t0 + Duration::from_secs(9)));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.name(later), "half_open");
        assert!(b.try_acquire(later), "one probe");
        assert!(!b.try_acquire(later), "only one probe");
        b.success();
        assert_eq!(b.name(later), "closed");
    }

    #[test]
    fn a_failed_probe_opens_again() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, Duration::from_secs(5));
        b.failure(t0);
        let later = t0 + Duration::from_secs(6);
        assert!(b.try_acquire(later));
        b.failure(later);
        assert_eq!(b.name(later), "open");
        assert!(b.available(later + Duration::from_secs(5)));
        b.neutral();
        assert_eq!(b.name(later), "open");
    }
}
