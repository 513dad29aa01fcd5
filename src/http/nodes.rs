//! `GET /v1/infra/nodes` (alias `/v1/admin/nodes`): the inference nodes and the engines
//! each has loaded. In the embedded default the server process is the one node.

use std::sync::Arc;

use axum::extract::State;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::auth::Auth;
use crate::extract::Json;

fn list(state: &AppState) -> Json<Value> {
    let nodes: Vec<Value> = state
        .node
        .iter()
        .map(|node| serde_json::to_value(node.info()).unwrap_or(Value::Null))
        .collect();
    Json(json!({ "object": "list", "data": nodes }))
}

/// Inference nodes with `status`, `device`, `models_loaded` (any authenticated caller).
#[utoipa::path(get, path = "/v1/infra/nodes", tag = "operations",
    responses((status = 200, description = "the nodes")), security(("bearer" = [])))]
pub async fn infra_nodes(State(state): State<Arc<AppState>>, _caller: Auth) -> Json<Value> {
    list(&state)
}

/// Alias of `/v1/infra/nodes`.
#[utoipa::path(get, path = "/v1/admin/nodes", tag = "operations",
    responses((status = 200, description = "the nodes")), security(("bearer" = [])))]
pub async fn admin_nodes(State(state): State<Arc<AppState>>, _caller: Auth) -> Json<Value> {
    list(&state)
}
