//! `GET /v1/infra/nodes` (alias `/v1/admin/nodes`): the inference nodes and the engines
//! each has loaded. In the embedded default, the node processes this server supervises
//! (with their pid, restarts, queue depth and calls in flight); in a scaled deployment,
//! every node heard from in the Redis node registry, with whether this process reaches
//! it (`reachable`, `unreachable_because`) and its `load` as routing sees it. Each
//! shows the evictions it still owes for speakers and voices deleted while it was away.

use std::sync::Arc;

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::inference::member::Member;
use crate::rbac::Permission;

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

/// `POST /v1/infra/nodes/{id}/models`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadModel {
    /// An engine id (`audio.stt.whisper-base`).
    pub model: String,
}

/// The node `id` among those this process calls. One this process has not found yet
/// (it announced itself since the last discovery) is looked for once more.
async fn member(state: &AppState, id: &str) -> ApiResult<Arc<Member>> {
    let find = || {
        state
            .nodes
            .engines()
            .and_then(|engines| engines.members().iter().find(|m| m.id == id).cloned())
    };
    if let Some(member) = find() {
        return Ok(member);
    }
    state.nodes.discover_now(DISCOVERY_WAIT).await;
    find().ok_or_else(|| ApiError::not_found(&format!("node `{id}`")))
}

/// How long a node found by [`member`]'s discovery may take to answer its first probe.
const DISCOVERY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a node carries after a change, with the change named.
async fn changed(member: &Member, model: &str, load: bool) -> ApiResult<Json<Value>> {
    member.change_model(model, load).await?;
    let mut view = member.view();
    view["changed"] = json!({ "model": model, "loaded": load });
    Ok(Json(view))
}

/// Loads an engine on a node (and what it needs), admitted against the memory free
/// on its device within its limit: 409 `GPU_INCOMPATIBLE` with `needed_mb` and
/// `available_mb` when it does not fit, 404 `MODEL_NOT_FOUND` for an unknown engine.
/// Loading what is loaded changes nothing. Platform admins only.
#[utoipa::path(post, path = "/v1/infra/nodes/{id}/models", tag = "operations",
    request_body = LoadModel,
    responses((status = 200, description = "the node with the model loaded"),
        (status = 409, description = "GPU_INCOMPATIBLE")),
    security(("bearer" = [])))]
pub async fn load_model(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    Path(id): Path<String>,
    Json(request): Json<LoadModel>,
) -> ApiResult<Json<Value>> {
    principal.require(Permission::PlatformAdmin)?;
    let member = member(&state, &id).await?;
    tracing::info!(node = %id, model = %request.model, "loading a model on a node");
    changed(&member, &request.model, true).await
}

/// Unloads an engine from a node; calls already running on it finish. 404
/// `MODEL_NOT_FOUND` when the node does not carry it, 409 `CONFLICT` while other
/// loaded engines need it. Platform admins only.
#[utoipa::path(delete, path = "/v1/infra/nodes/{id}/models/{model}", tag = "operations",
    responses((status = 200, description = "the node without the model")),
    security(("bearer" = [])))]
pub async fn unload_model(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    Path((id, model)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    principal.require(Permission::PlatformAdmin)?;
    let member = member(&state, &id).await?;
    tracing::info!(node = %id, %model, "unloading a model from a node");
    changed(&member, &model, false).await
}
