//! The last few minutes of a backend's or a model's calls, for the router health view:
//! requests, errors and latency quantiles. Pure; the gateway keeps one per backend and
//! one per model and feeds it the clock's minute.
//!
//! A ring of one-minute slots, each with fixed latency buckets: memory is fixed per
//! window whatever the traffic, and a slot older than the window is reused in place.

use serde::Serialize;
use utoipa::ToSchema;

/// Minutes a window covers (the current one and the four before it).
pub const MINUTES: u64 = 5;
/// Bucket upper bounds in milliseconds; the last bucket is everything slower.
const BOUNDS_MS: &[f64] = &[
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0, 30_000.0,
    60_000.0, 120_000.0,
];
const BUCKETS: usize = 15;
const _: () = assert!(BOUNDS_MS.len() + 1 == BUCKETS);

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The unix minute the slot counts (a slot from an older minute counts nothing).
    minute: u64,
    requests: u64,
    errors: u64,
    latency: [u64; BUCKETS],
}

#[derive(Debug, Clone, Default)]
pub struct Window {
    slots: [Slot; MINUTES as usize],
}

/// What a window saw.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WindowStats {
    pub requests: u64,
    pub errors: u64,
    /// `errors / requests` (0 with no requests).
    pub error_rate: f64,
    /// Latency quantiles in milliseconds, interpolated within fixed buckets (absent
    /// with no timed call).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Window {
    /// One call in `minute` (unix minutes): its latency when it had one to time.
    pub fn record(&mut self, minute: u64, latency_ms: Option<f64>, failed: bool) {
        let slot = &mut self.slots[(minute % MINUTES) as usize];
        if slot.minute != minute {
            *slot = Slot {
                minute,
                ..Slot::default()
            };
        }
        slot.requests += 1;
        slot.errors += u64::from(failed);
        if let Some(ms) = latency_ms.filter(|ms| ms.is_finite() && *ms >= 0.0) {
            let bucket = BOUNDS_MS.partition_point(|bound| *bound < ms);
            slot.latency[bucket] += 1;
        }
    }

    /// The calls of the [`MINUTES`] minutes up to `minute`.
    pub fn stats(&self, minute: u64) -> WindowStats {
        let mut requests = 0;
        let mut errors = 0;
        let mut latency = [0u64; BUCKETS];
        for slot in &self.slots {
            if slot.minute + MINUTES > minute && slot.minute <= minute {
                requests += slot.requests;
                errors += slot.errors;
                for (sum, count) in latency.iter_mut().zip(slot.latency) {
                    *sum += count;
                }
            }
        }
        let timed = latency.iter().any(|count| *count > 0);
        let quantile = |q| {
            let ms = crate::telemetry::stats::quantile(BOUNDS_MS, &latency, q);
            timed.then_some((ms * 10.0).round() / 10.0)
        };
        WindowStats {
            requests,
            errors,
            error_rate: match requests {
                0 => 0.0,
                n => errors as f64 / n as f64,
            },
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
        }
    }
}

/// The current unix minute.
pub fn minute_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_its_last_minutes_only() {
        let mut window = Window::default();
        for _ in 0..98 {
            window.record(1_000, Some(40.0), false);
        }
        window.record(1_000, Some(4_000.0), true);
        window.record(1_001, None, true);
        let now = window.stats(1_001);
        assert_eq!((now.requests, now.errors), (100, 2));
        assert!((now.error_rate - 0.02).abs() < 1e-9);
        let p50 = now.p50_ms.unwrap();
        assert!((25.0..=50.0).contains(&p50), "{p50}");
        assert!(now.p99_ms.unwrap() > 50.0, "{now:?}");
        // Minute 1000 leaves the window at 1005; 1001 at 1006.
        assert_eq!(window.stats(1_004).requests, 100);
        assert_eq!(window.stats(1_005).requests, 1);
        let empty = window.stats(1_006);
        assert_eq!(
            (empty.requests, empty.error_rate, empty.p50_ms),
            (0, 0.0, None)
        );
        // A slot comes back for a new minute empty.
        window.record(1_005, Some(1.0), false);
        assert_eq!(window.stats(1_005).requests, 2);
        // The slowest bucket holds anything slower than its bound.
        window.record(1_005, Some(1e9), false);
        assert_eq!(window.stats(1_005).p99_ms, Some(120_000.0));
    }
}
