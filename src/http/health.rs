//! `/health/live`, `/health/ready`, `/metrics`, `/openapi.json`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::Json;

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "operations", responses((status = 200, description = "alive")))]
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Every dependency answers (database, object store, Redis when configured, and the
/// engines when this process runs them); 503 `SERVICE_UNAVAILABLE` names the one that does not.
#[utoipa::path(get, path = "/health/ready", tag = "operations", responses(
    (status = 200, description = "ready"),
    (status = 503, description = "a dependency is down")
))]
pub async fn ready(State(state): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    let (database, object_store) = tokio::join!(state.db.check(), state.store.check());
    let mut results = vec![("database", database), ("object_store", object_store)];
    if let Some(cluster) = &state.cluster {
        results.push(("redis", cluster.check().await));
    }
    if let Some(engines) = state.nodes.engines() {
        let problems = engines.problems();
        let engines = match problems.is_empty() {
            true => Ok(()),
            false => Err(problems.join("; ")),
        };
        results.push(("engines", engines));
    }
    let mut checks = serde_json::Map::new();
    let mut failing = Vec::new();
    for (name, result) in results {
        match result {
            Ok(()) => {
                checks.insert(name.into(), json!({ "status": "ok" }));
            }
            Err(error) => {
                tracing::warn!(dependency = name, %error, "readiness check failed");
                checks.insert(name.into(), json!({ "status": "down", "error": error }));
                failing.push(name);
            }
        }
    }
    if failing.is_empty() {
        return Ok(Json(json!({ "status": "ready", "checks": checks })));
    }
    Err(ApiError::new(
        ErrorCode::SERVICE_UNAVAILABLE,
        format!("dependency down: {}", failing.join(", ")),
    )
    .with_field("dependency", failing[0])
    .with_field("failing", failing)
    .with_field("checks", Value::Object(checks)))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus metrics")))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::render(&state.metrics),
    )
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.get().cloned().unwrap_or_default(),
    )
}
