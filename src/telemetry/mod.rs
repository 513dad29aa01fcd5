//! Logs and metrics: the tracing subscriber, the Prometheus recorder, and the middleware
//! that times every request by route, status and backend.

mod histogram;
pub mod otel;
pub mod stats;

use std::sync::{LazyLock, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
pub use histogram::HistogramVec;

pub const REQUESTS_IN_FLIGHT: &str = "scaigrid_http_requests_in_flight";

/// Every request's duration by route, status, the backend it was dispatched to and the
/// gateway model it named.
pub static REQUEST_DURATION: LazyLock<HistogramVec<4>> = LazyLock::new(|| {
    HistogramVec::new(
        "scaigrid_request_duration_seconds",
        "Time from request to response head, by route, status, backend and model.",
        ["route", "status", "backend_id", "model"],
        &[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0,
        ],
    )
});

/// Time from the end of an utterance to its final transcript on a ScaiEcho stream.
pub static STREAM_FINAL: LazyLock<HistogramVec<0>> = LazyLock::new(|| {
    HistogramVec::new(
        "scaigrid_scaiecho_stream_final_seconds",
        "Time from the end of an utterance to its final on a ScaiEcho stream.",
        [],
        &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0],
    )
});

/// Set on a response by a handler that dispatched to a backend, so the request's
/// duration is also broken down by `backend_id`.
#[derive(Debug, Clone)]
pub struct BackendId(pub String);

/// Set on a chat response: the model's slug, so latency is also broken down by model.
#[derive(Debug, Clone)]
pub struct ModelSlug(pub String);

/// Installs the global subscriber (once; later calls are no-ops): log lines on stderr
/// and, for a serving `role` when the environment asks (`otel`), spans over OTLP.
/// Call it inside the runtime; shut the guard down before the process exits.
pub fn init_logging(format: LogFormat, role: Option<&'static str>) -> otel::Guard {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn"));
    let (spans, guard) = match role {
        Some(role) => otel::layer(role),
        None => (None, otel::Guard::default()),
    };
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let lines = match format {
        LogFormat::Json => lines.json().flatten_event(true).boxed(),
        LogFormat::Text => lines.boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(spans)
        .with(filter)
        .with(lines)
        .try_init();
    guard
}

/// The process's Prometheus recorder (installed on first call).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Counters and gauges only: histograms are `HistogramVec`s (see its module).
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// The `/metrics` text: the recorder's counters and gauges, then the histograms.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut out = handle.render();
    REQUEST_DURATION.render(&mut out);
    STREAM_FINAL.render(&mut out);
    out
}

/// One request counted in `scaigrid_http_requests_in_flight` until dropped, so a request
/// whose client went away (its future dropped mid-handler) is not counted forever.
struct InFlight(metrics::Gauge);

/// The gauge's value, readable here (the recorder's gauges cannot be read back).
static IN_FLIGHT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Requests this process is answering now.
pub fn in_flight() -> u64 {
    IN_FLIGHT.load(std::sync::atomic::Ordering::Relaxed)
}

impl InFlight {
    fn enter() -> Self {
        let gauge = metrics::gauge!(REQUESTS_IN_FLIGHT);
        gauge.increment(1.0);
        IN_FLIGHT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
        IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Middleware: in-flight gauge and the duration histogram.
pub async fn middleware(request: Request, next: Next) -> Response {
    // `MatchedPath` is an `Arc<str>`: cloning it allocates nothing.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let in_flight = InFlight::enter();
    let started = Instant::now();
    let response = next.run(request).await;
    drop(in_flight);
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    // The access log: one line per request, inside the request's span (so it carries
    // the request id). Filter with `RUST_LOG=scaigrid::access=warn` to silence it.
    if status >= 500 {
        tracing::warn!(target: "scaigrid::access", status, micros = elapsed.as_micros() as u64, "request failed");
    } else {
        tracing::info!(target: "scaigrid::access", status, micros = elapsed.as_micros() as u64, "request");
    }
    let backend_id = response.extensions().get::<BackendId>();
    let model = response.extensions().get::<ModelSlug>();
    REQUEST_DURATION.observe(
        [
            route.as_ref().map_or("unmatched", |r| r.as_str()),
            response.status().as_str(),
            backend_id.map_or("", |b| b.0.as_str()),
            model.map_or("", |m| m.0.as_str()),
        ],
        elapsed.as_secs_f64(),
    );
    response
}
