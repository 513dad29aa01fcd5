//! `/v1/firewall/policies` and `/v1/guardrails/test` (alias
//! `/api/v1/admin/guardrails/test`, the path seed 004 names).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::admin::TenantFilter;
use crate::app::AppState;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::{Json, Query};
use crate::firewall::{GuardrailsResult, GuardrailsTest, PolicyRequest, PolicyView};

type St = State<Arc<AppState>>;

/// Create a policy: `mode` (`audit`, `block`, `redact`), what it is attached to
/// (`scope` `tenant`, `api_key` or `model` with `scope_id`), the `stages` it guards and
/// its `rules` (`keyword`, `regex`, `pii`, `max_size`, `judge`, each with a `slug`).
#[utoipa::path(post, path = "/v1/firewall/policies", tag = "firewall", request_body = PolicyRequest,
    responses((status = 201, body = PolicyView)), security(("bearer" = [])))]
pub async fn create(
    State(state): St,
    Auth(principal): Auth,
    Json(request): Json<PolicyRequest>,
) -> ApiResult<(StatusCode, Json<PolicyView>)> {
    let view = state.firewall.create(&principal, request).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/v1/firewall/policies", tag = "firewall", params(TenantFilter),
    responses((status = 200, body = Vec<PolicyView>)), security(("bearer" = [])))]
pub async fn list(
    State(state): St,
    Auth(principal): Auth,
    Query(f): Query<TenantFilter>,
) -> ApiResult<Json<Vec<PolicyView>>> {
    state
        .firewall
        .list(&principal, f.tenant_id.as_deref())
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/v1/firewall/policies/{id}", tag = "firewall", params(TenantFilter),
    responses((status = 200, body = PolicyView)), security(("bearer" = [])))]
pub async fn get(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
    Query(f): Query<TenantFilter>,
) -> ApiResult<Json<PolicyView>> {
    state
        .firewall
        .get(&principal, f.tenant_id.as_deref(), &id)
        .await
        .map(Json)
}

/// Replace a policy (the same body as creating it).
#[utoipa::path(put, path = "/v1/firewall/policies/{id}", tag = "firewall", request_body = PolicyRequest,
    responses((status = 200, body = PolicyView)), security(("bearer" = [])))]
pub async fn replace(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
    Json(request): Json<PolicyRequest>,
) -> ApiResult<Json<PolicyView>> {
    state
        .firewall
        .update(&principal, &id, request)
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/v1/firewall/policies/{id}", tag = "firewall", params(TenantFilter),
    responses((status = 204)), security(("bearer" = [])))]
pub async fn delete(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
    Query(f): Query<TenantFilter>,
) -> ApiResult<StatusCode> {
    state
        .firewall
        .delete(&principal, f.tenant_id.as_deref(), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Run a policy (by id or name; absent: every policy of the tenant) over a text: the
/// matches, the modes, the decision and each rule's time. Nothing is audited.
#[utoipa::path(post, path = "/v1/guardrails/test", tag = "firewall", request_body = GuardrailsTest,
    responses((status = 200, body = GuardrailsResult)), security(("bearer" = [])))]
pub async fn test(
    State(state): St,
    Auth(principal): Auth,
    Json(request): Json<GuardrailsTest>,
) -> ApiResult<Json<GuardrailsResult>> {
    state.firewall.test(&principal, request).await.map(Json)
}

/// Alias of `POST /v1/guardrails/test` (seed 004).
#[utoipa::path(post, path = "/api/v1/admin/guardrails/test", tag = "firewall", request_body = GuardrailsTest,
    responses((status = 200, body = GuardrailsResult)), security(("bearer" = [])))]
pub async fn test_alias(
    state: St,
    auth: Auth,
    request: Json<GuardrailsTest>,
) -> ApiResult<Json<GuardrailsResult>> {
    test(state, auth, request).await
}
