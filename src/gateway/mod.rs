//! The gateway core: the model catalogue, upstream backends with circuit breakers and
//! health probes, and OpenAI-compatible chat completions routed across them.
//!
//! - [`catalog`]: backends, models, model access (admin CRUD and an in-memory snapshot);
//! - [`routing`]: the order in which a model's backends are tried (pure);
//! - [`breaker`]: the per-backend circuit breaker (pure);
//! - [`cache`]: the chat answer cache, exact and semantic;
//! - [`sse`]: reading and re-framing upstream server-sent events (pure);
//! - [`router_health`]: what routing sees now, per backend and model;
//! - [`window`]: the last five minutes of a backend's or a model's calls (pure);
//! - [`chat`]: `POST /v1/chat/completions`, streaming and not;
//! - [`embeddings`]: `POST /v1/embeddings`, upstream or on the nodes' local model;
//! - [`judge`]: the firewall's judge rules asking their evaluator through the gateway.

pub mod breaker;
pub mod cache;
pub mod catalog;
pub mod chat;
pub mod embeddings;
pub mod judge;
pub mod router_health;
pub mod routing;
pub mod sse;
pub mod window;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, header};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use utoipa::ToSchema;

use crate::accounting::Accounting;
use crate::config::GatewayConfig;
use crate::db::Db;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ratelimit::Limits;
use crate::records::Timestamp;
use breaker::Breaker;
use catalog::{BackendSpec, BackendView, Catalog};

pub const BREAKER_STATE: &str = "scaigrid_backend_circuit_state";
pub const BACKEND_HEALTHY: &str = "scaigrid_backend_healthy";
pub const BACKEND_CALLS: &str = "scaigrid_backend_calls_total";
pub const SHED: &str = "scaigrid_gateway_shed_total";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Unknown,
    Healthy,
    Unhealthy,
}

impl Health {
    fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

struct BackendState {
    breaker: Breaker,
    health: Health,
    /// The last probe's answer (the console shows why a backend is unhealthy).
    last_probe: Option<HealthReport>,
    /// Whether the breaker gauge has been exported once.
    exported: bool,
    /// Its calls of the last minutes (the router health view).
    window: window::Window,
}

/// How a call to a backend ended, for its breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// Neither (the client's own bad request): gives a half-open probe back.
    Neutral,
}

/// What a health probe found.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthReport {
    pub backend_id: String,
    /// `healthy` or `unhealthy`.
    pub status: &'static str,
    /// The breaker after the probe: a healthy probe closes it.
    pub breaker: &'static str,
    pub latency_ms: f64,
    pub error: Option<String>,
    pub checked_at: Timestamp,
}

pub struct Gateway {
    pub catalog: Catalog,
    states: RwLock<HashMap<String, Arc<Mutex<BackendState>>>>,
    http: reqwest::Client,
    config: GatewayConfig,
    /// Chat calls in flight (`gateway.max_in_flight` permits).
    admission: Arc<Semaphore>,
    /// Usage records and budget reservations of chat calls.
    accounting: Arc<Accounting>,
    /// The token rate limits chat calls are charged to.
    limits: Arc<Limits>,
    /// Guards chat input and output.
    pub firewall: Arc<crate::firewall::Firewall>,
    /// Each model's calls of the last minutes, by model id (the router health view).
    model_windows: Mutex<HashMap<String, window::Window>>,
    /// The inference nodes (the local embedding model).
    nodes: crate::speech::nodes::Nodes,
    /// Chat answers of the models that cache them.
    pub cache: cache::AnswerCache,
}

/// A chat call's place among those in flight, given back when dropped (for a stream,
/// when it ends).
pub type Admitted = OwnedSemaphorePermit;

impl Gateway {
    pub fn new(
        db: Db,
        config: GatewayConfig,
        vault: Arc<crate::vault::Vault>,
        (accounting, limits): (Arc<Accounting>, Arc<Limits>),
        firewall: Arc<crate::firewall::Firewall>,
        (nodes, cluster): (
            crate::speech::nodes::Nodes,
            Option<Arc<crate::cluster::Cluster>>,
        ),
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("scaigrid/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()?;
        let cache = match cluster {
            Some(cluster) => cache::AnswerCache::Shared(cluster),
            None => cache::AnswerCache::Local(cache::ChatCache::new(config.cache_max_entries)),
        };
        Ok(Gateway {
            catalog: Catalog::new(db, vault),
            states: RwLock::new(HashMap::new()),
            http,
            admission: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            accounting,
            limits,
            firewall,
            model_windows: Mutex::new(HashMap::new()),
            nodes,
            cache,
        })
    }

    /// Admits one chat call, or sheds it with 503 `SERVICE_UNAVAILABLE` and
    /// `Retry-After` when `gateway.max_in_flight` are already running: under overload
    /// (a stalled upstream, more offered load than the machine serves) the server keeps
    /// answering, fast, instead of queueing requests until memory runs out.
    pub fn admit(&self) -> ApiResult<Admitted> {
        self.admission.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!(SHED).increment(1);
            ApiError::new(
                ErrorCode::SERVICE_UNAVAILABLE,
                format!(
                    "the gateway is at its limit of {} chat calls in flight; retry shortly",
                    self.config.max_in_flight
                ),
            )
            .with_field("limit", self.config.max_in_flight)
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
        })
    }

    fn state(&self, backend_id: &str) -> Arc<Mutex<BackendState>> {
        if let Some(state) = self
            .states
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(backend_id)
        {
            return state.clone();
        }
        self.states
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(backend_id.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(BackendState {
                    breaker: Breaker::new(
                        self.config.breaker_failure_threshold,
                        self.config.breaker_open,
                    ),
                    health: Health::Unknown,
                    last_probe: None,
                    exported: false,
                    window: window::Window::default(),
                }))
            })
            .clone()
    }

    /// Runs `f` on a backend's state; exports the breaker state when it changed.
    fn with_state<T>(&self, backend_id: &str, f: impl FnOnce(&mut BackendState) -> T) -> T {
        let state = self.state(backend_id);
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        let before = state.breaker.name(Instant::now());
        let out = f(&mut state);
        let after = state.breaker.name(Instant::now());
        if before != after || !state.exported {
            state.exported = true;
            let code = match after {
                "closed" => 0.0,
                "half_open" => 1.0,
                _ => 2.0,
            };
            metrics::gauge!(BREAKER_STATE, "backend_id" => backend_id.to_owned()).set(code);
        }
        out
    }

    /// Whether a backend could take a call now: breaker not open, probe not failing.
    pub fn usable(&self, backend_id: &str) -> bool {
        self.with_state(backend_id, |s| {
            s.health != Health::Unhealthy && s.breaker.available(Instant::now())
        })
    }

    /// Claims a call (the single probe when half-open).
    pub fn acquire(&self, backend_id: &str) -> bool {
        self.with_state(backend_id, |s| s.breaker.try_acquire(Instant::now()))
    }

    /// How a call to a backend ended, for its breaker and its window; `latency`: how
    /// long it took to answer (for a stream, to its first byte).
    pub fn report(&self, backend_id: &str, outcome: Outcome, latency: Option<Duration>) {
        let label = match outcome {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Neutral => "neutral",
        };
        metrics::counter!(BACKEND_CALLS, "backend_id" => backend_id.to_owned(), "outcome" => label)
            .increment(1);
        let latency_ms = latency.map(|l| l.as_secs_f64() * 1e3);
        self.with_state(backend_id, |s| {
            let failed = outcome == Outcome::Failure;
            s.window.record(window::minute_now(), latency_ms, failed);
            match outcome {
                Outcome::Success => s.breaker.success(),
                Outcome::Failure => s.breaker.failure(Instant::now()),
                Outcome::Neutral => s.breaker.neutral(),
            }
        });
    }

    /// How a call to a model ended (answered, or no backend could answer it).
    pub fn report_model(&self, model_id: &str, latency: Option<Duration>, failed: bool) {
        let mut windows = self.model_windows.lock().unwrap_or_else(|e| e.into_inner());
        windows.entry(model_id.to_owned()).or_default().record(
            window::minute_now(),
            latency.map(|l| l.as_secs_f64() * 1e3),
            failed,
        );
    }

    /// A backend's calls of the last minutes.
    pub fn backend_window(&self, backend_id: &str) -> window::WindowStats {
        self.with_state(backend_id, |s| s.window.stats(window::minute_now()))
    }

    /// A model's calls of the last minutes.
    pub fn model_window(&self, model_id: &str) -> window::WindowStats {
        let windows = self.model_windows.lock().unwrap_or_else(|e| e.into_inner());
        windows
            .get(model_id)
            .cloned()
            .unwrap_or_default()
            .stats(window::minute_now())
    }

    pub fn view(&self, backend: &BackendSpec) -> BackendView {
        let (breaker, health, last_probe) = self.with_state(&backend.id, |s| {
            (
                s.breaker.name(Instant::now()),
                s.health.as_str(),
                s.last_probe.clone(),
            )
        });
        BackendView {
            id: backend.id.clone(),
            name: backend.name.clone(),
            kind: backend.kind.clone(),
            base_url: backend.base_url.clone(),
            has_api_key: backend.api_key.is_some(),
            timeout_s: backend.timeout.as_secs(),
            breaker,
            health,
            last_probe,
            created_at: Timestamp(backend.created_at),
            updated_at: Timestamp(backend.updated_at),
        }
    }

    /// An upstream request with the backend's credential and the trace context.
    fn upstream(
        &self,
        method: reqwest::Method,
        backend: &BackendSpec,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}{path}", backend.base_url))
            .headers(crate::trace_context::outgoing_headers());
        match &backend.api_key {
            Some(key) => request.bearer_auth(key.expose()),
            None => request,
        }
    }

    /// Probes a backend (`GET /models`): reachable, answering, and accepting our
    /// credential is healthy. A healthy probe closes the breaker.
    pub async fn probe(&self, backend: &BackendSpec) -> HealthReport {
        let started = Instant::now();
        let answer = self
            .upstream(reqwest::Method::GET, backend, "/models")
            .timeout(backend.timeout.min(Duration::from_secs(10)))
            .send()
            .await;
        let error = match answer {
            Ok(response) => {
                let status = response.status();
                match status.is_server_error() || status.as_u16() == 401 || status.as_u16() == 403 {
                    true => Some(format!("upstream answered {status}")),
                    false => None,
                }
            }
            Err(error) => Some(upstream_error_text(&error)),
        };
        let healthy = error.is_none();
        let latency_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        let report = self.with_state(&backend.id, |s| {
            s.health = match healthy {
                true => Health::Healthy,
                false => Health::Unhealthy,
            };
            if healthy {
                s.breaker.success();
            }
            let report = HealthReport {
                backend_id: backend.id.clone(),
                status: if healthy { "healthy" } else { "unhealthy" },
                breaker: s.breaker.name(Instant::now()),
                latency_ms,
                error,
                checked_at: Timestamp(crate::db::now_ms()),
            };
            s.last_probe = Some(report.clone());
            report
        });
        metrics::gauge!(BACKEND_HEALTHY, "backend_id" => backend.id.clone()).set(if healthy {
            1.0
        } else {
            0.0
        });
        report
    }

    /// Probes every backend every `health_interval`, for as long as the process runs.
    pub fn spawn_health_probes(self: &Arc<Self>) {
        let gateway = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(gateway.config.health_interval).await;
                let snapshot = match gateway.catalog.snapshot().await {
                    Ok(snapshot) => snapshot,
                    Err(error) => {
                        tracing::warn!("health probes skipped: {}", error.message);
                        continue;
                    }
                };
                let probes = snapshot.backends.values().map(|b| gateway.probe(b));
                for report in futures_util::future::join_all(probes).await {
                    if let Some(error) = &report.error {
                        tracing::warn!(backend_id = %report.backend_id, %error, "backend unhealthy");
                    }
                }
            }
        });
    }
}

pub use crate::speech::upstream::error_text as upstream_error_text;
