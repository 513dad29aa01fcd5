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

/// The WebSocket protocols (`/stream/transcribe`, `/stream/speak`, the WebRTC control
/// socket) as an AsyncAPI 3.0 document: `docs/asyncapi.json`, built into the binary.
pub const ASYNCAPI: &str = include_str!("../../docs/asyncapi.json");

/// The AsyncAPI document of the WebSocket protocols (no sign-in, like this one).
#[utoipa::path(get, path = "/asyncapi.json", tag = "operations", responses((status = 200, description = "AsyncAPI 3.0 document of the WebSocket protocols")))]
pub async fn asyncapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], ASYNCAPI)
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.get().cloned().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::Value;

    use crate::error::ErrorCode;

    fn document() -> Value {
        serde_json::from_str(super::ASYNCAPI).expect("docs/asyncapi.json is JSON")
    }

    /// Every `$ref` in `value`.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("$ref", Value::String(target)) => out.push(target),
                        _ => refs(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| refs(item, out)),
            _ => {}
        }
    }

    #[test]
    fn the_asyncapi_document_resolves_and_names_routes_that_exist() {
        let document = document();
        assert_eq!(document["asyncapi"], "3.0.0");
        let mut targets = Vec::new();
        refs(&document, &mut targets);
        assert!(targets.len() > 40);
        for target in targets {
            let pointer = target.strip_prefix('#').expect("local references only");
            assert!(document.pointer(pointer).is_some(), "{target} resolves");
        }
        // Each channel is a WebSocket route of the router (its OpenAPI GET path).
        let (_, openapi) = crate::http::routes().split_for_parts();
        let paths: BTreeSet<String> = openapi.paths.paths.keys().cloned().collect();
        for (name, channel) in document["channels"].as_object().unwrap() {
            let address = channel["address"].as_str().unwrap();
            let path = address.replace("{module}", "{id}");
            assert!(
                paths.contains(&path),
                "channel {name}: {address} is not a route"
            );
        }
    }

    #[test]
    fn every_websocket_close_code_of_the_code_table_is_in_the_asyncapi_document() {
        let document = document();
        let listed: BTreeMap<String, BTreeSet<String>> = document["x-close-codes"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(close, entry)| {
                let codes = entry["codes"].as_array().unwrap();
                let codes = codes.iter().map(|c| c.as_str().unwrap().to_owned());
                (close.clone(), codes.collect())
            })
            .collect();
        let mut table: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for code in ErrorCode::ALL {
            if let Some(close) = code.ws_close_code() {
                table
                    .entry(close.to_string())
                    .or_default()
                    .insert(code.as_str().to_owned());
            }
        }
        for (close, codes) in &table {
            assert_eq!(listed.get(close), Some(codes), "close code {close}");
        }
        for (close, codes) in &listed {
            assert!(
                codes.is_empty() || table.contains_key(close),
                "close code {close} lists codes the table does not give it"
            );
        }
    }
}
