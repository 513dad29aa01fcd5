//! Gateway routes: backends, models, model access, chat completions, accounting.
//! Handlers unpack and delegate to `gateway` and `accounting`.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::accounting::BudgetView;
use crate::accounting::api::{self, BudgetList, CreateBudget, UsageQuery, UsageReport};
use crate::app::AppState;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::{Json, Query};
use crate::gateway::HealthReport;
use crate::gateway::catalog::{
    BackendView, CreateBackend, CreateModel, ModelAccessView, ModelList, ModelView, PutModelAccess,
    UpdateBackend, UpdateModel,
};

type St = State<Arc<AppState>>;

#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    /// A tenant's own model or budget (platform admins only).
    pub tenant_id: Option<String>,
}

#[utoipa::path(post, path = "/v1/backends", tag = "gateway", request_body = CreateBackend,
    responses((status = 201, body = BackendView)), security(("bearer" = [])))]
pub async fn create_backend(
    State(s): St,
    Auth(p): Auth,
    Json(r): Json<CreateBackend>,
) -> ApiResult<(StatusCode, Json<BackendView>)> {
    let backend = s.gateway.catalog.create_backend(Some(&p), r).await?;
    Ok((StatusCode::CREATED, Json(s.gateway.view(&backend))))
}

#[utoipa::path(get, path = "/v1/backends", tag = "gateway",
    responses((status = 200, body = Vec<BackendView>)), security(("bearer" = [])))]
pub async fn list_backends(State(s): St, Auth(p): Auth) -> ApiResult<Json<Vec<BackendView>>> {
    let backends = s.gateway.catalog.backends(Some(&p)).await?;
    Ok(Json(backends.iter().map(|b| s.gateway.view(b)).collect()))
}

#[utoipa::path(get, path = "/v1/backends/{id}", tag = "gateway",
    responses((status = 200, body = BackendView)), security(("bearer" = [])))]
pub async fn get_backend(
    State(s): St,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<BackendView>> {
    let backend = s.gateway.catalog.backend(Some(&p), &id).await?;
    Ok(Json(s.gateway.view(&backend)))
}

#[utoipa::path(patch, path = "/v1/backends/{id}", tag = "gateway", request_body = UpdateBackend,
    responses((status = 200, body = BackendView)), security(("bearer" = [])))]
pub async fn update_backend(
    State(s): St,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(r): Json<UpdateBackend>,
) -> ApiResult<Json<BackendView>> {
    let backend = s.gateway.catalog.update_backend(Some(&p), &id, r).await?;
    Ok(Json(s.gateway.view(&backend)))
}

#[utoipa::path(delete, path = "/v1/backends/{id}", tag = "gateway",
    responses((status = 204)), security(("bearer" = [])))]
pub async fn delete_backend(
    State(s): St,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.gateway.catalog.delete_backend(Some(&p), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Probes the backend now; a healthy answer closes its circuit breaker.
#[utoipa::path(get, path = "/v1/backends/{id}/health", tag = "gateway",
    responses((status = 200, body = HealthReport)), security(("bearer" = [])))]
pub async fn backend_health(
    State(s): St,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<HealthReport>> {
    let backend = s.gateway.catalog.backend(Some(&p), &id).await?;
    Ok(Json(s.gateway.probe(&backend).await))
}

#[utoipa::path(post, path = "/v1/models", tag = "gateway", request_body = CreateModel,
    responses((status = 201, body = ModelView)), security(("bearer" = [])))]
pub async fn create_model(
    State(s): St,
    Auth(p): Auth,
    Json(r): Json<CreateModel>,
) -> ApiResult<(StatusCode, Json<ModelView>)> {
    let model = s.gateway.catalog.create_model(Some(&p), r).await?;
    Ok((StatusCode::CREATED, Json(model)))
}

/// The models the caller's tenant can call, in OpenAI's list shape.
#[utoipa::path(get, path = "/v1/models", tag = "gateway",
    responses((status = 200, body = ModelList)), security(("bearer" = [])))]
pub async fn list_models(State(s): St, Auth(p): Auth) -> ApiResult<Json<ModelList>> {
    s.gateway.catalog.list_models(&p).await.map(Json)
}

#[utoipa::path(get, path = "/v1/models/{vendor}/{name}", tag = "gateway", params(TenantQuery),
    responses((status = 200, body = ModelView)), security(("bearer" = [])))]
pub async fn get_model(
    State(s): St,
    Auth(p): Auth,
    Path((vendor, name)): Path<(String, String)>,
    Query(q): Query<TenantQuery>,
) -> ApiResult<Json<ModelView>> {
    let slug = format!("{vendor}/{name}");
    let model = s
        .gateway
        .catalog
        .get_model(&p, &slug, q.tenant_id.as_deref());
    model.await.map(Json)
}

#[utoipa::path(patch, path = "/v1/models/{vendor}/{name}", tag = "gateway", params(TenantQuery),
    request_body = UpdateModel, responses((status = 200, body = ModelView)),
    security(("bearer" = [])))]
pub async fn update_model(
    State(s): St,
    Auth(p): Auth,
    Path((vendor, name)): Path<(String, String)>,
    Query(q): Query<TenantQuery>,
    Json(r): Json<UpdateModel>,
) -> ApiResult<Json<ModelView>> {
    let slug = format!("{vendor}/{name}");
    let model = s
        .gateway
        .catalog
        .update_model(&p, &slug, q.tenant_id.as_deref(), r);
    model.await.map(Json)
}

#[utoipa::path(delete, path = "/v1/models/{vendor}/{name}", tag = "gateway", params(TenantQuery),
    responses((status = 204)), security(("bearer" = [])))]
pub async fn delete_model(
    State(s): St,
    Auth(p): Auth,
    Path((vendor, name)): Path<(String, String)>,
    Query(q): Query<TenantQuery>,
) -> ApiResult<StatusCode> {
    let slug = format!("{vendor}/{name}");
    let deleted = s
        .gateway
        .catalog
        .delete_model(&p, &slug, q.tenant_id.as_deref());
    deleted.await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/model-access", tag = "gateway", params(TenantQuery),
    responses((status = 200, body = ModelAccessView)), security(("bearer" = [])))]
pub async fn get_model_access(
    State(s): St,
    Auth(p): Auth,
    Query(q): Query<TenantQuery>,
) -> ApiResult<Json<ModelAccessView>> {
    let access = s.gateway.catalog.model_access(&p, q.tenant_id.as_deref());
    access.await.map(Json)
}

/// Replaces the tenant's allow and deny lists.
#[utoipa::path(put, path = "/v1/model-access", tag = "gateway", request_body = PutModelAccess,
    responses((status = 200, body = ModelAccessView)), security(("bearer" = [])))]
pub async fn put_model_access(
    State(s): St,
    Auth(p): Auth,
    Json(r): Json<PutModelAccess>,
) -> ApiResult<Json<ModelAccessView>> {
    s.gateway.catalog.put_model_access(&p, r).await.map(Json)
}

/// OpenAI-compatible chat completions (`stream: true` answers server-sent events).
#[utoipa::path(post, path = "/v1/chat/completions", tag = "gateway",
    responses((status = 200, description = "OpenAI's chat completion (plus `status: ok`), or SSE")),
    security(("bearer" = [])))]
pub async fn chat_completions(
    State(s): St,
    Auth(p): Auth,
    request: Request,
) -> ApiResult<Response> {
    let admitted = s.gateway.admit()?;
    let limit = s.config.limits.max_json_body_bytes;
    let bytes = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|e| crate::server::body::read_error(e, "request body", limit))?;
    crate::gateway::chat::complete(s.gateway.clone(), p, bytes, admitted).await
}

#[utoipa::path(post, path = "/v1/accounting/budgets", tag = "accounting",
    request_body = CreateBudget, responses((status = 201, body = BudgetView)),
    security(("bearer" = [])))]
pub async fn create_budget(
    State(s): St,
    Auth(p): Auth,
    Json(r): Json<CreateBudget>,
) -> ApiResult<(StatusCode, Json<BudgetView>)> {
    let budget = api::put_budget(&s.gate.accounting, &s.db, &p, r).await?;
    Ok((StatusCode::CREATED, Json(budget)))
}

/// Each budget with `used`, `remaining` and `resets_at`.
#[utoipa::path(get, path = "/v1/accounting/budgets", tag = "accounting", params(TenantQuery),
    responses((status = 200, body = BudgetList)), security(("bearer" = [])))]
pub async fn list_budgets(
    State(s): St,
    Auth(p): Auth,
    Query(q): Query<TenantQuery>,
) -> ApiResult<Json<BudgetList>> {
    api::list_budgets(&s.gate.accounting, &p, q.tenant_id.as_deref())
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/v1/accounting/budgets/{id}", tag = "accounting",
    params(TenantQuery), responses((status = 204)), security(("bearer" = [])))]
pub async fn delete_budget(
    State(s): St,
    Auth(p): Auth,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
) -> ApiResult<StatusCode> {
    api::delete_budget(&s.gate.accounting, &p, &id, q.tenant_id.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Usage totals grouped by model, API key, module or day.
#[utoipa::path(get, path = "/v1/accounting/usage", tag = "accounting", params(UsageQuery),
    responses((status = 200, body = UsageReport)), security(("bearer" = [])))]
pub async fn usage(
    State(s): St,
    Auth(p): Auth,
    Query(q): Query<UsageQuery>,
) -> ApiResult<Json<UsageReport>> {
    api::usage(&s.gate.accounting, &p, q).await.map(Json)
}
