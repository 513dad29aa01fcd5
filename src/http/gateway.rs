//! Gateway routes: backends, models, model access, chat completions, accounting.
//! Handlers unpack and delegate to `gateway` and `accounting`.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
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
use crate::gateway::router_health::RouterHealth;

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
    State(state): St,
    Auth(principal): Auth,
    Json(request): Json<CreateBackend>,
) -> ApiResult<(StatusCode, Json<BackendView>)> {
    let backend = state
        .gateway
        .catalog
        .create_backend(Some(&principal), request)
        .await?;
    Ok((StatusCode::CREATED, Json(state.gateway.view(&backend))))
}

#[utoipa::path(get, path = "/v1/backends", tag = "gateway",
    responses((status = 200, body = Vec<BackendView>)), security(("bearer" = [])))]
pub async fn list_backends(
    State(state): St,
    Auth(principal): Auth,
) -> ApiResult<Json<Vec<BackendView>>> {
    let backends = state.gateway.catalog.backends(Some(&principal)).await?;
    Ok(Json(
        backends.iter().map(|b| state.gateway.view(b)).collect(),
    ))
}

#[utoipa::path(get, path = "/v1/backends/{id}", tag = "gateway",
    responses((status = 200, body = BackendView)), security(("bearer" = [])))]
pub async fn get_backend(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<BackendView>> {
    let backend = state.gateway.catalog.backend(Some(&principal), &id).await?;
    Ok(Json(state.gateway.view(&backend)))
}

#[utoipa::path(patch, path = "/v1/backends/{id}", tag = "gateway", request_body = UpdateBackend,
    responses((status = 200, body = BackendView)), security(("bearer" = [])))]
pub async fn update_backend(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
    Json(request): Json<UpdateBackend>,
) -> ApiResult<Json<BackendView>> {
    let backend = state
        .gateway
        .catalog
        .update_backend(Some(&principal), &id, request)
        .await?;
    Ok(Json(state.gateway.view(&backend)))
}

#[utoipa::path(delete, path = "/v1/backends/{id}", tag = "gateway",
    responses((status = 204)), security(("bearer" = [])))]
pub async fn delete_backend(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .gateway
        .catalog
        .delete_backend(Some(&principal), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Probes the backend now; a healthy answer closes its circuit breaker.
#[utoipa::path(get, path = "/v1/backends/{id}/health", tag = "gateway",
    responses((status = 200, body = HealthReport)), security(("bearer" = [])))]
pub async fn backend_health(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<HealthReport>> {
    let backend = state.gateway.catalog.backend(Some(&principal), &id).await?;
    Ok(Json(state.gateway.probe(&backend).await))
}

#[utoipa::path(post, path = "/v1/models", tag = "gateway", request_body = CreateModel,
    responses((status = 201, body = ModelView)), security(("bearer" = [])))]
pub async fn create_model(
    State(state): St,
    Auth(principal): Auth,
    Json(request): Json<CreateModel>,
) -> ApiResult<(StatusCode, Json<ModelView>)> {
    let model = state
        .gateway
        .catalog
        .create_model(Some(&principal), request)
        .await?;
    Ok((StatusCode::CREATED, Json(model)))
}

/// The models the caller's tenant can call, in OpenAI's list shape.
#[utoipa::path(get, path = "/v1/models", tag = "gateway",
    responses((status = 200, body = ModelList)), security(("bearer" = [])))]
pub async fn list_models(State(state): St, Auth(principal): Auth) -> ApiResult<Json<ModelList>> {
    state
        .gateway
        .catalog
        .list_models(&principal)
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/v1/models/{vendor}/{name}", tag = "gateway", params(TenantQuery),
    responses((status = 200, body = ModelView)), security(("bearer" = [])))]
pub async fn get_model(
    State(state): St,
    Auth(principal): Auth,
    Path((vendor, name)): Path<(String, String)>,
    Query(query): Query<TenantQuery>,
) -> ApiResult<Json<ModelView>> {
    let slug = format!("{vendor}/{name}");
    let model = state
        .gateway
        .catalog
        .get_model(&principal, &slug, query.tenant_id.as_deref());
    model.await.map(Json)
}

#[utoipa::path(patch, path = "/v1/models/{vendor}/{name}", tag = "gateway", params(TenantQuery),
    request_body = UpdateModel, responses((status = 200, body = ModelView)),
    security(("bearer" = [])))]
pub async fn update_model(
    State(state): St,
    Auth(principal): Auth,
    Path((vendor, name)): Path<(String, String)>,
    Query(query): Query<TenantQuery>,
    Json(request): Json<UpdateModel>,
) -> ApiResult<Json<ModelView>> {
    let slug = format!("{vendor}/{name}");
    let model =
        state
            .gateway
            .catalog
            .update_model(&principal, &slug, query.tenant_id.as_deref(), request);
    model.await.map(Json)
}

#[utoipa::path(delete, path = "/v1/models/{vendor}/{name}", tag = "gateway", params(TenantQuery),
    responses((status = 204)), security(("bearer" = [])))]
pub async fn delete_model(
    State(state): St,
    Auth(principal): Auth,
    Path((vendor, name)): Path<(String, String)>,
    Query(query): Query<TenantQuery>,
) -> ApiResult<StatusCode> {
    let slug = format!("{vendor}/{name}");
    let deleted = state
        .gateway
        .catalog
        .delete_model(&principal, &slug, query.tenant_id.as_deref());
    deleted.await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/model-access", tag = "gateway", params(TenantQuery),
    responses((status = 200, body = ModelAccessView)), security(("bearer" = [])))]
pub async fn get_model_access(
    State(state): St,
    Auth(principal): Auth,
    Query(query): Query<TenantQuery>,
) -> ApiResult<Json<ModelAccessView>> {
    let access = state
        .gateway
        .catalog
        .model_access(&principal, query.tenant_id.as_deref());
    access.await.map(Json)
}

/// Replaces the tenant's allow and deny lists.
#[utoipa::path(put, path = "/v1/model-access", tag = "gateway", request_body = PutModelAccess,
    responses((status = 200, body = ModelAccessView)), security(("bearer" = [])))]
pub async fn put_model_access(
    State(state): St,
    Auth(principal): Auth,
    Json(request): Json<PutModelAccess>,
) -> ApiResult<Json<ModelAccessView>> {
    state
        .gateway
        .catalog
        .put_model_access(&principal, request)
        .await
        .map(Json)
}

/// OpenAI-compatible chat completions (`stream: true` answers server-sent events).
#[utoipa::path(post, path = "/v1/chat/completions", tag = "gateway",
    responses((status = 200, description = "OpenAI's chat completion (plus `status: ok`), or SSE")),
    security(("bearer" = [])))]
pub async fn chat_completions(
    State(state): St,
    Auth(principal): Auth,
    request: Request,
) -> ApiResult<Response> {
    let admitted = state.gateway.admit()?;
    // `Cache-Control: no-cache` (or `no-store`): neither read nor fill the cache.
    let no_cache = request
        .headers()
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            matches!(
                d.trim().to_ascii_lowercase().as_str(),
                "no-cache" | "no-store"
            )
        });
    let limit = state.config.limits.max_json_body_bytes;
    let bytes = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|e| crate::server::body::read_error(e, "request body", limit))?;
    let reply = crate::gateway::chat::complete(
        state.gateway.clone(),
        principal,
        (bytes, no_cache),
        admitted,
    )
    .await?;
    Ok(chat_response(reply))
}

/// OpenAI-compatible embeddings: a catalogue model's upstreams, or the nodes' local
/// `scaigrid/all-minilm-l6-v2` (384 dimensions; also `all-MiniLM-L6-v2`).
#[utoipa::path(post, path = "/v1/embeddings", tag = "gateway",
    responses((status = 200, description = "OpenAI's embedding list")),
    security(("bearer" = [])))]
pub async fn embeddings(
    State(state): St,
    Auth(principal): Auth,
    request: Request,
) -> ApiResult<Response> {
    let _admitted = state.gateway.admit()?;
    let limit = state.config.limits.max_json_body_bytes;
    let bytes = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|e| crate::server::body::read_error(e, "request body", limit))?;
    let (body, backend_id) = state.gateway.embeddings(&principal, &bytes).await?;
    let model = body
        .get("model")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut response = axum::Json(serde_json::Value::Object(body)).into_response();
    let extensions = response.extensions_mut();
    extensions.insert(crate::telemetry::BackendId(backend_id));
    extensions.insert(crate::telemetry::ModelSlug(model));
    Ok(response)
}

/// A chat reply as HTTP: the JSON answer, or the SSE stream (unbuffered by proxies);
/// either names its backend for the access log and metrics.
fn chat_response(reply: crate::gateway::chat::Reply) -> Response {
    use crate::gateway::chat::Reply;
    let (mut response, backend_id, model, cache) = match reply {
        Reply::Answered {
            body,
            backend_id,
            model,
            cache,
        } => (
            axum::Json(serde_json::Value::Object(body)).into_response(),
            backend_id,
            model,
            cache,
        ),
        Reply::Streaming {
            events,
            backend_id,
            model,
            cache,
        } => {
            let body = futures_util::stream::unfold(events, |mut events| async move {
                events
                    .recv()
                    .await
                    .map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), events))
            });
            let mut response = Response::new(axum::body::Body::from_stream(body));
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
            headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
            (response, backend_id, model, cache)
        }
    };
    if let Some(cache) = cache {
        response
            .headers_mut()
            .insert("x-scaigrid-cache", HeaderValue::from_static(cache));
    }
    let extensions = response.extensions_mut();
    extensions.insert(crate::telemetry::BackendId(backend_id));
    extensions.insert(crate::telemetry::ModelSlug(model));
    response
}

#[utoipa::path(post, path = "/v1/accounting/budgets", tag = "accounting",
    request_body = CreateBudget, responses((status = 201, body = BudgetView)),
    security(("bearer" = [])))]
pub async fn create_budget(
    State(state): St,
    Auth(principal): Auth,
    Json(request): Json<CreateBudget>,
) -> ApiResult<(StatusCode, Json<BudgetView>)> {
    let budget = api::put_budget(&state.gate.accounting, &state.db, &principal, request).await?;
    Ok((StatusCode::CREATED, Json(budget)))
}

/// Each budget with `used`, `remaining` and `resets_at`.
#[utoipa::path(get, path = "/v1/accounting/budgets", tag = "accounting", params(TenantQuery),
    responses((status = 200, body = BudgetList)), security(("bearer" = [])))]
pub async fn list_budgets(
    State(state): St,
    Auth(principal): Auth,
    Query(query): Query<TenantQuery>,
) -> ApiResult<Json<BudgetList>> {
    api::list_budgets(
        &state.gate.accounting,
        &principal,
        query.tenant_id.as_deref(),
    )
    .await
    .map(Json)
}

#[utoipa::path(delete, path = "/v1/accounting/budgets/{id}", tag = "accounting",
    params(TenantQuery), responses((status = 204)), security(("bearer" = [])))]
pub async fn delete_budget(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
    Query(query): Query<TenantQuery>,
) -> ApiResult<StatusCode> {
    api::delete_budget(
        &state.gate.accounting,
        &principal,
        &id,
        query.tenant_id.as_deref(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Usage totals grouped by model, API key, module or day.
#[utoipa::path(get, path = "/v1/accounting/usage", tag = "accounting", params(UsageQuery),
    responses((status = 200, body = UsageReport)), security(("bearer" = [])))]
pub async fn usage(
    State(state): St,
    Auth(principal): Auth,
    Query(query): Query<UsageQuery>,
) -> ApiResult<Json<UsageReport>> {
    api::usage(&state.gate.accounting, &principal, query)
        .await
        .map(Json)
}

/// Per backend (platform admins) and per model: breaker, last probe, whether routing
/// would use it now, and its requests, error rate and p50/p99 latency over the last five
/// minutes; `unavailable_models` answer `MODEL_UNAVAILABLE` now.
#[utoipa::path(get, path = "/v1/router/health", tag = "gateway",
    responses((status = 200, body = RouterHealth)), security(("bearer" = [])))]
pub async fn router_health(
    State(state): St,
    Auth(principal): Auth,
) -> ApiResult<Json<RouterHealth>> {
    Ok(Json(state.gateway.router_health(&principal).await?))
}

/// Seed 004's path of `/v1/router/health`.
#[utoipa::path(get, path = "/api/v1/admin/router/health", tag = "gateway",
    responses((status = 200, body = RouterHealth)), security(("bearer" = [])))]
pub async fn router_health_alias(state: St, auth: Auth) -> ApiResult<Json<RouterHealth>> {
    router_health(state, auth).await
}
