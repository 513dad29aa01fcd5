//! Request statistics for people (the console's overview): per route and backend, the
//! requests, the share that failed, and latency quantiles, summed over statuses from the
//! request-duration histogram. Pure: a snapshot in, rows out.

use serde::Serialize;
use utoipa::ToSchema;

/// One route (with the backend it dispatched to and the model it named, if any) since
/// the process started.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RouteStats {
    pub route: String,
    /// Empty when the route does not dispatch to a backend.
    pub backend_id: String,
    /// The gateway model (chat); empty for other routes.
    pub model: String,
    pub requests: u64,
    /// Answered 5xx.
    pub server_errors: u64,
    /// Answered 4xx.
    pub client_errors: u64,
    /// Interpolated within the histogram's buckets.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Counts of one `(route, backend, model)`, summed over statuses.
struct Tally {
    key: [String; 3],
    counts: Vec<u64>,
    server_errors: u64,
    client_errors: u64,
}

/// Rows of a `(route, status, backend_id, model)` histogram snapshot, busiest first.
pub fn by_route(bounds: &[f64], series: &[([String; 4], Vec<u64>)]) -> Vec<RouteStats> {
    let mut tallies: Vec<Tally> = Vec::new();
    for ([route, status, backend, model], counts) in series {
        let key = [route.clone(), backend.clone(), model.clone()];
        let index = match tallies.iter().position(|tally| tally.key == key) {
            Some(index) => index,
            None => {
                tallies.push(Tally {
                    key,
                    counts: vec![0; counts.len()],
                    server_errors: 0,
                    client_errors: 0,
                });
                tallies.len() - 1
            }
        };
        let tally = &mut tallies[index];
        for (sum, count) in tally.counts.iter_mut().zip(counts) {
            *sum += count;
        }
        let total: u64 = counts.iter().sum();
        match status.as_bytes().first() {
            Some(b'5') => tally.server_errors += total,
            Some(b'4') => tally.client_errors += total,
            _ => {}
        }
    }
    let mut out: Vec<RouteStats> = tallies
        .into_iter()
        .map(|tally| {
            let [route, backend_id, model] = tally.key;
            RouteStats {
                route,
                backend_id,
                model,
                requests: tally.counts.iter().sum(),
                server_errors: tally.server_errors,
                client_errors: tally.client_errors,
                p50_ms: quantile(bounds, &tally.counts, 0.50) * 1e3,
                p99_ms: quantile(bounds, &tally.counts, 0.99) * 1e3,
            }
        })
        .collect();
    out.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.route.cmp(&b.route)));
    out
}

/// The `q` quantile of per-bucket counts (the last bucket `+Inf`), interpolated linearly
/// within its bucket; in the `+Inf` bucket, the largest bound. 0 when empty.
pub fn quantile(bounds: &[f64], counts: &[u64], q: f64) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let target = q * total as f64;
    let mut before = 0u64;
    for (index, &count) in counts.iter().enumerate() {
        if count > 0 && (before + count) as f64 >= target {
            let Some(&upper) = bounds.get(index) else {
                return bounds.last().copied().unwrap_or(0.0);
            };
            let lower = if index == 0 { 0.0 } else { bounds[index - 1] };
            let within = ((target - before as f64) / count as f64).clamp(0.0, 1.0);
            return lower + (upper - lower) * within;
        }
        before += count;
    }
    bounds.last().copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: &[f64] = &[0.01, 0.1, 1.0];

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        // 100 requests: 50 up to 10 ms, 49 up to 100 ms, 1 over a second.
        let counts = [50, 49, 0, 1];
        assert!((quantile(BOUNDS, &counts, 0.5) - 0.01).abs() < 1e-9);
        let p99 = quantile(BOUNDS, &counts, 0.99);
        assert!((p99 - 0.1).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(BOUNDS, &counts, 1.0), 1.0);
        assert_eq!(quantile(BOUNDS, &[0, 0, 0, 0], 0.5), 0.0);
        // Half of one bucket: halfway through it.
        assert!((quantile(BOUNDS, &[0, 2, 0, 0], 0.25) - 0.0325).abs() < 1e-9);
    }

    #[test]
    fn statuses_are_summed_per_route_and_backend() {
        let chat = |status: &str, model: &str| -> [String; 4] {
            ["/v1/chat".into(), status.into(), "b1".into(), model.into()]
        };
        let series = vec![
            (chat("200", "m1"), vec![3, 0, 0, 0]),
            (chat("502", "m1"), vec![0, 1, 0, 0]),
            (chat("429", "m1"), vec![1, 0, 0, 0]),
            (chat("200", "m2"), vec![0, 0, 1, 0]),
            (
                ["/v1/me".into(), "200".into(), "".into(), "".into()],
                vec![1, 0, 0, 0],
            ),
        ];
        let rows = by_route(BOUNDS, &series);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].model, "m1");
        assert_eq!(rows[0].route, "/v1/chat");
        assert_eq!(
            (
                rows[0].requests,
                rows[0].server_errors,
                rows[0].client_errors
            ),
            (5, 1, 1)
        );
        assert_eq!(rows[1].requests, 1);
    }
}
