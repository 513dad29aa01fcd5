//! GCRA (the generic cell rate algorithm): a token bucket kept as one number per key,
//! the *theoretical arrival time* (TAT). Pure arithmetic on seconds; the stores keep the
//! numbers.
//!
//! A limit of `L` per minute emits one unit every `60/L` s and allows a burst of `L`
//! (a full bucket). Taking `n` units moves the TAT forward by `n·60/L`; the bucket is
//! over its limit when the TAT would run more than a minute ahead of now.

/// The window every limit is expressed in.
pub const WINDOW_SECONDS: f64 = 60.0;

/// What one check decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// The limit per minute.
    pub limit: u64,
    /// Units left right now (after this request if it was allowed).
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset_seconds: f64,
    /// Seconds until a request of this size would pass (0 when allowed).
    pub retry_after_seconds: f64,
}

fn interval(limit: u64) -> f64 {
    WINDOW_SECONDS / limit.max(1) as f64
}

fn decision(tat: f64, now: f64, limit: u64, allowed: bool, retry_after: f64) -> Decision {
    let ahead = (tat - now).max(0.0);
    let free = (WINDOW_SECONDS - ahead).max(0.0);
    Decision {
        allowed,
        limit,
        remaining: (free / interval(limit)).floor() as u64,
        reset_seconds: ahead,
        retry_after_seconds: retry_after,
    }
}

/// Takes `cost` units if they fit. Returns the new TAT (unchanged when refused).
pub fn take(tat: Option<f64>, now: f64, limit: u64, cost: f64) -> (f64, Decision) {
    let tat = tat.unwrap_or(now).max(now);
    let next = tat + cost * interval(limit);
    let over = next - now - WINDOW_SECONDS;
    if over > 1e-9 {
        (tat, decision(tat, now, limit, false, over))
    } else {
        (next, decision(next, now, limit, true, 0.0))
    }
}

/// Whether at least one unit is left, without taking it (for quantities known only
/// after the work: tokens, audio seconds).
pub fn peek(tat: Option<f64>, now: f64, limit: u64) -> Decision {
    let tat = tat.unwrap_or(now).max(now);
    let over = tat + interval(limit) - now - WINDOW_SECONDS;
    match over > 1e-9 {
        true => decision(tat, now, limit, false, over),
        false => decision(tat, now, limit, true, 0.0),
    }
}

/// Charges `cost` units unconditionally (the bucket may go into debt, which later
/// requests wait out). Returns the new TAT.
pub fn charge(tat: Option<f64>, now: f64, limit: u64, cost: f64) -> f64 {
    tat.unwrap_or(now).max(now) + cost * interval(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_a_burst_of_the_limit_then_refuses() {
        let mut tat = None;
        for i in 0..10 {
            let (next, d) = take(tat, 100.0, 10, 1.0);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 9 - i);
            tat = Some(next);
        }
        let (_, d) = take(tat, 100.0, 10, 1.0);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert!((d.retry_after_seconds - 6.0).abs() < 1e-6, "{d:?}");
        assert!((d.reset_seconds - 60.0).abs() < 1e-6);
    }

    #[test]
    fn units_come_back_at_the_emission_rate() {
        let mut tat = None;
        for _ in 0..10 {
            tat = Some(take(tat, 0.0, 10, 1.0).0);
        }
        assert!(!take(tat, 5.9, 10, 1.0).1.allowed);
        let (_, d) = take(tat, 6.0, 10, 1.0);
        assert!(d.allowed);
        // A bucket idle for longer than the window is simply full.
        let (_, d) = take(tat, 1000.0, 10, 1.0);
        assert_eq!(d.remaining, 9);
    }

    #[test]
    fn debt_blocks_until_paid() {
        let tat = charge(None, 0.0, 60, 120.0);
        assert!(!peek(Some(tat), 0.0, 60).allowed);
        assert!(!peek(Some(tat), 60.0, 60).allowed);
        assert!(peek(Some(tat), 61.0, 60).allowed);
    }

    #[test]
    fn a_request_larger_than_the_bucket_never_fits() {
        let (_, d) = take(None, 0.0, 5, 6.0);
        assert!(!d.allowed);
        assert!(d.retry_after_seconds > 0.0);
    }
}
