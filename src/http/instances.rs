//! `/v1/instances`: model instances on the inference nodes (seed 003's launch flow).
//! Handlers unpack the request and call `instances`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::{Json, Query};
use crate::instances::balancers::{BalancerView, CreateBalancer};
use crate::instances::{BalanceView, InstanceView, Launch, TopUp};

type St = State<Arc<AppState>>;

/// Launches a model on the nodes that meet the smart constraints: 202 with the
/// instance `starting`; 409 `SMART_NO_MATCH` (the constraint that excluded the most
/// nodes) or `GPU_INCOMPATIBLE` (the need and the best free figure) with the failed
/// instance's `instance_id`.
#[utoipa::path(post, path = "/v1/instances", tag = "instances", request_body = Launch,
    responses((status = 202, body = InstanceView), (status = 409, description = "SMART_NO_MATCH or GPU_INCOMPATIBLE")),
    security(("bearer" = [])))]
pub async fn launch(
    State(state): St,
    Auth(principal): Auth,
    Json(request): Json<Launch>,
) -> ApiResult<(StatusCode, Json<InstanceView>)> {
    let instance = state.instances.launch(&principal, request).await?;
    Ok((StatusCode::ACCEPTED, Json(instance)))
}

/// The tenant's instances, newest first.
#[utoipa::path(get, path = "/v1/instances", tag = "instances",
    responses((status = 200, body = Vec<InstanceView>)), security(("bearer" = [])))]
pub async fn list(State(state): St, Auth(principal): Auth) -> ApiResult<Json<Value>> {
    let instances = state.instances.list(&principal).await?;
    Ok(Json(json!({ "object": "list", "data": instances })))
}

/// One instance, with `failure_reason`, `failure_detail` and `remediation` when it
/// failed.
#[utoipa::path(get, path = "/v1/instances/{id}", tag = "instances",
    params(("id" = String, Path)), responses((status = 200, body = InstanceView)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<InstanceView>> {
    state.instances.get(&principal, &id).await.map(Json)
}

/// Deletes a stopped or failed instance (409 while it is live: stop it first).
#[utoipa::path(delete, path = "/v1/instances/{id}", tag = "instances",
    params(("id" = String, Path)), responses((status = 204)), security(("bearer" = [])))]
pub async fn delete(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.instances.delete(&principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Places a stopped or failed instance anew (202, `starting`).
#[utoipa::path(post, path = "/v1/instances/{id}/start", tag = "instances",
    params(("id" = String, Path)), responses((status = 202, body = InstanceView)),
    security(("bearer" = [])))]
pub async fn start(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<InstanceView>)> {
    let instance = state.instances.start(&principal, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(instance)))
}

/// Stops an instance: its model is unloaded where its launch loaded it.
#[utoipa::path(post, path = "/v1/instances/{id}/stop", tag = "instances",
    params(("id" = String, Path)), responses((status = 200, body = InstanceView)),
    security(("bearer" = [])))]
pub async fn stop(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<InstanceView>> {
    state.instances.stop(&principal, &id).await.map(Json)
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct BalanceQuery {
    /// Another tenant's (platform admins).
    tenant_id: Option<String>,
}

/// The tenant's prepaid balance, what its running instances cost per hour, and the
/// latest movements (top-ups, instance debits).
#[utoipa::path(get, path = "/v1/accounting/balance", tag = "instances",
    params(BalanceQuery), responses((status = 200, body = BalanceView)),
    security(("bearer" = [])))]
pub async fn balance(
    State(state): St,
    Auth(principal): Auth,
    Query(query): Query<BalanceQuery>,
) -> ApiResult<Json<BalanceView>> {
    state
        .instances
        .balance(&principal, query.tenant_id.as_deref())
        .await
        .map(Json)
}

/// Adds cost units to a tenant's balance (platform admins).
#[utoipa::path(post, path = "/v1/accounting/balance/top-up", tag = "instances",
    request_body = TopUp, responses((status = 200, body = BalanceView)),
    security(("bearer" = [])))]
pub async fn top_up(
    State(state): St,
    Auth(principal): Auth,
    Json(request): Json<TopUp>,
) -> ApiResult<Json<BalanceView>> {
    state.instances.top_up(&principal, request).await.map(Json)
}

/// Groups instances of one model behind a name that speech requests give as their
/// `model` (201).
#[utoipa::path(post, path = "/v1/balancers", tag = "instances", request_body = CreateBalancer,
    responses((status = 201, body = BalancerView)), security(("bearer" = [])))]
pub async fn create_balancer(
    State(state): St,
    Auth(principal): Auth,
    Json(request): Json<CreateBalancer>,
) -> ApiResult<(StatusCode, Json<BalancerView>)> {
    let balancer = state.instances.create_balancer(&principal, request).await?;
    Ok((StatusCode::CREATED, Json(balancer)))
}

/// The tenant's balancers, each member with its state and health.
#[utoipa::path(get, path = "/v1/balancers", tag = "instances",
    responses((status = 200, body = Vec<BalancerView>)), security(("bearer" = [])))]
pub async fn list_balancers(State(state): St, Auth(principal): Auth) -> ApiResult<Json<Value>> {
    let balancers = state.instances.balancers(&principal).await?;
    Ok(Json(json!({ "object": "list", "data": balancers })))
}

#[utoipa::path(get, path = "/v1/balancers/{id}", tag = "instances",
    params(("id" = String, Path)), responses((status = 200, body = BalancerView)),
    security(("bearer" = [])))]
pub async fn get_balancer(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<BalancerView>> {
    state.instances.balancer(&principal, &id).await.map(Json)
}

#[utoipa::path(delete, path = "/v1/balancers/{id}", tag = "instances",
    params(("id" = String, Path)), responses((status = 204)), security(("bearer" = [])))]
pub async fn delete_balancer(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.instances.delete_balancer(&principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
