//! `GET /v1/infra/nodes` (alias `/v1/admin/nodes`): the inference nodes and the engines
//! each has loaded. In the embedded default, the node processes this server supervises
//! (with their pid, restarts, queue depth and calls in flight); in a scaled deployment,
//! every node heard from in the Redis node registry, with whether this process reaches
//! it (`reachable`, `unreachable_because`) and its `load` as routing sees it. Each
//! shows the evictions it still owes for speakers and voices deleted while it was away.

use std::sync::Arc;

use axum::extract::State;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::Json;

async fn list(state: &AppState) -> ApiResult<Json<Value>> {
    let mut nodes: Vec<Value> = match &state.cluster {
        Some(cluster) => crate::cluster::nodes::list(cluster).await?,
        None => state
            .nodes
            .engines()
            .map(|engines| engines.members().iter().map(|m| m.view()).collect())
            .unwrap_or_default(),
    };
    // In a scaled deployment the registry says what each node reports of itself; this
    // process adds whether it reaches the node (a wrong token or a firewall shows
    // here, not there) and the load it routes by.
    if let (Some(_), Some(engines)) = (&state.cluster, state.nodes.engines()) {
        let members = engines.members();
        for node in &mut nodes {
            let id = node["node_id"].as_str().unwrap_or_default().to_owned();
            if let Some(member) = members.iter().find(|m| m.id == id) {
                let seen = member.seen();
                node["reachable"] = json!(seen.ready);
                node["load"] = json!(member.load());
                if let Some(error) = seen.error.filter(|_| !seen.ready) {
                    node["unreachable_because"] = json!(error);
                }
            }
        }
    }
    // Evictions each node still owes for deleted speakers and voices (it was away);
    // best effort: the nodes' view must not depend on the database being up.
    let owed = match state.db.pool.acquire().await {
        Ok(mut conn) => crate::db::evictions::counts(&mut conn).await.ok(),
        Err(_) => None,
    };
    if let Some(owed) = owed {
        for node in &mut nodes {
            let count = owed
                .iter()
                .find(|(id, _)| node["node_id"].as_str() == Some(id))
                .map_or(0, |(_, count)| *count);
            node["evictions_owed"] = json!(count);
        }
    }
    Ok(Json(json!({ "object": "list", "data": nodes })))
}

/// Inference nodes with `status`, `device`, `models_loaded` (any authenticated caller).
#[utoipa::path(get, path = "/v1/infra/nodes", tag = "operations",
    responses((status = 200, description = "the nodes")), security(("bearer" = [])))]
pub async fn infra_nodes(
    State(state): State<Arc<AppState>>,
    _caller: Auth,
) -> ApiResult<Json<Value>> {
    list(&state).await
}

/// Alias of `/v1/infra/nodes`.
#[utoipa::path(get, path = "/v1/admin/nodes", tag = "operations",
    responses((status = 200, description = "the nodes")), security(("bearer" = [])))]
pub async fn admin_nodes(
    State(state): State<Arc<AppState>>,
    _caller: Auth,
) -> ApiResult<Json<Value>> {
    list(&state).await
}
