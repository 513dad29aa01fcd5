//! Logs and metrics: the tracing subscriber, the Prometheus recorder, and the middleware
//! that times every request by route, status and backend.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub const REQUEST_DURATION: &str = "scaigrid_request_duration_seconds";
pub const REQUESTS_IN_FLIGHT: &str = "scaigrid_http_requests_in_flight";

/// Set on a response by a handler that dispatched to a backend, so the request's
/// duration is also broken down by `backend_id`.
#[derive(Debug, Clone)]
pub struct BackendId(pub String);

/// Installs the global subscriber (once; later calls are no-ops).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The process's Prometheus recorder (installed on first call).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(REQUEST_DURATION.to_owned()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0, 30.0, 60.0,
                    ],
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// Middleware: in-flight gauge and the duration histogram.
pub async fn middleware(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let in_flight = metrics::gauge!(REQUESTS_IN_FLIGHT);
    in_flight.increment(1.0);
    let started = Instant::now();
    let response = next.run(request).await;
    in_flight.decrement(1.0);
    let backend_id = response
        .extensions()
        .get::<BackendId>()
        .map(|b| b.0.clone())
        .unwrap_or_default();
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    // The access log: one line per request, inside the request's span (so it carries
    // the request id). Filter with `RUST_LOG=scaigrid::access=warn` to silence it.
    if status >= 500 {
        tracing::warn!(target: "scaigrid::access", status, micros = elapsed.as_micros() as u64, "request failed");
    } else {
        tracing::info!(target: "scaigrid::access", status, micros = elapsed.as_micros() as u64, "request");
    }
    metrics::histogram!(
        REQUEST_DURATION,
        "route" => route,
        "status" => status.to_string(),
        "backend_id" => backend_id,
    )
    .record(elapsed.as_secs_f64());
    response
}
