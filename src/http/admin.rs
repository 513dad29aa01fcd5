//! Admin surface: tenants, users, API keys, roles, grants, modules.
//!
//! Handlers unpack and delegate to `services`; changes that affect authentication
//! (revocation, roles, grants, tenants, modules) invalidate the principal cache.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::records::{ApiKeyInfo, Role, Tenant, User};
use crate::services::api_keys::{CreateApiKey, CreatedApiKey};
use crate::services::modules::{ModuleInfo, ModuleToggle};
use crate::services::roles::{CreateGrant, CreateRole};
use crate::services::tenants::{CreateTenant, UpdateTenant};
use crate::services::users::CreateUser;
use crate::services::{api_keys, modules, roles, tenants, users};

#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantFilter {
    /// Another tenant (platform admins only); default the caller's.
    pub tenant_id: Option<String>,
}

type St = State<Arc<AppState>>;

#[utoipa::path(post, path = "/v1/tenants", tag = "admin", request_body = CreateTenant,
    responses((status = 201, body = Tenant)), security(("bearer" = [])))]
pub async fn create_tenant(
    State(state): St,
    Auth(principal): Auth,
    Json(request): Json<CreateTenant>,
) -> ApiResult<(StatusCode, Json<Tenant>)> {
    let tenant = tenants::create(&state.db, &state.config, Some(&principal), request).await?;
    Ok((StatusCode::CREATED, Json(tenant)))
}

#[utoipa::path(get, path = "/v1/tenants", tag = "admin",
    responses((status = 200, body = Vec<Tenant>)), security(("bearer" = [])))]
pub async fn list_tenants(State(state): St, Auth(principal): Auth) -> ApiResult<Json<Vec<Tenant>>> {
    tenants::list(&state.db, Some(&principal)).await.map(Json)
}

#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "admin",
    responses((status = 200, body = Tenant)), security(("bearer" = [])))]
pub async fn get_tenant(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Tenant>> {
    tenants::get(&state.db, Some(&principal), &id)
        .await
        .map(Json)
}

#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "admin", request_body = UpdateTenant,
    responses((status = 200, body = Tenant)), security(("bearer" = [])))]
pub async fn update_tenant(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
    Json(request): Json<UpdateTenant>,
) -> ApiResult<Json<Tenant>> {
    let tenant = tenants::update(&state.db, Some(&principal), &id, request).await?;
    state.auth.invalidate().await;
    Ok(Json(tenant))
}

#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "admin",
    responses((status = 204)), security(("bearer" = [])))]
pub async fn delete_tenant(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    tenants::delete(&state.db, Some(&principal), &id).await?;
    state.auth.invalidate().await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/users", tag = "admin", request_body = CreateUser,
    responses((status = 201, body = User)), security(("bearer" = [])))]
pub async fn create_user(
    State(state): St,
    Auth(principal): Auth,
    Json(request): Json<CreateUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let user = users::create(&state.db, Some(&principal), request).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[utoipa::path(get, path = "/v1/users", tag = "admin", params(TenantFilter),
    responses((status = 200, body = Vec<User>)), security(("bearer" = [])))]
pub async fn list_users(
    State(state): St,
    Auth(principal): Auth,
    Query(f): Query<TenantFilter>,
) -> ApiResult<Json<Vec<User>>> {
    users::list(&state.db, Some(&principal), f.tenant_id.as_deref())
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/v1/users/{id}", tag = "admin",
    responses((status = 200, body = User)), security(("bearer" = [])))]
pub async fn get_user(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<User>> {
    users::get(&state.db, Some(&principal), &id).await.map(Json)
}

#[utoipa::path(post, path = "/v1/api-keys", tag = "admin", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey)), security(("bearer" = [])))]
pub async fn create_api_key(
    State(state): St,
    Auth(principal): Auth,
    Json(request): Json<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    let created = api_keys::create(&state.db, Some(&principal), request).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/v1/api-keys", tag = "admin", params(TenantFilter),
    responses((status = 200, body = Vec<ApiKeyInfo>)), security(("bearer" = [])))]
pub async fn list_api_keys(
    State(state): St,
    Auth(principal): Auth,
    Query(f): Query<TenantFilter>,
) -> ApiResult<Json<Vec<ApiKeyInfo>>> {
    api_keys::list(&state.db, Some(&principal), f.tenant_id.as_deref())
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/v1/api-keys/{id}", tag = "admin",
    responses((status = 200, body = ApiKeyInfo)), security(("bearer" = [])))]
pub async fn get_api_key(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<ApiKeyInfo>> {
    api_keys::get(&state.db, Some(&principal), &id)
        .await
        .map(Json)
}

/// Revoke: the key stops working at once.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "admin",
    responses((status = 200, body = ApiKeyInfo)), security(("bearer" = [])))]
pub async fn revoke_api_key(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<ApiKeyInfo>> {
    let info = api_keys::revoke(&state.db, Some(&principal), &id).await?;
    state.auth.invalidate().await;
    Ok(Json(info))
}

#[utoipa::path(post, path = "/v1/roles", tag = "admin", request_body = CreateRole,
    responses((status = 201, body = Role)), security(("bearer" = [])))]
pub async fn create_role(
    State(state): St,
    Auth(principal): Auth,
    Json(request): Json<CreateRole>,
) -> ApiResult<(StatusCode, Json<Role>)> {
    let role = roles::create(&state.db, Some(&principal), request).await?;
    Ok((StatusCode::CREATED, Json(role)))
}

#[utoipa::path(get, path = "/v1/roles", tag = "admin", params(TenantFilter),
    responses((status = 200, body = Vec<Role>)), security(("bearer" = [])))]
pub async fn list_roles(
    State(state): St,
    Auth(principal): Auth,
    Query(f): Query<TenantFilter>,
) -> ApiResult<Json<Vec<Role>>> {
    roles::list(&state.db, Some(&principal), f.tenant_id.as_deref())
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/v1/roles/{id}", tag = "admin", params(TenantFilter),
    responses((status = 204)), security(("bearer" = [])))]
pub async fn delete_role(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
    Query(f): Query<TenantFilter>,
) -> ApiResult<StatusCode> {
    roles::delete(&state.db, Some(&principal), f.tenant_id.as_deref(), &id).await?;
    state.auth.invalidate().await;
    Ok(StatusCode::NO_CONTENT)
}

/// Add roles and/or direct permissions to a user or API key.
#[utoipa::path(post, path = "/v1/grants", tag = "admin", request_body = CreateGrant,
    responses((status = 204)), security(("bearer" = [])))]
pub async fn create_grant(
    State(state): St,
    Auth(principal): Auth,
    Json(request): Json<CreateGrant>,
) -> ApiResult<StatusCode> {
    roles::grant(&state.db, Some(&principal), request).await?;
    state.auth.invalidate().await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/modules", tag = "modules",
    responses((status = 200, body = Vec<ModuleInfo>)), security(("bearer" = [])))]
pub async fn list_modules(State(state): St, Auth(principal): Auth) -> Json<Vec<ModuleInfo>> {
    Json(modules::list(&principal, |id| state.module_error(id)))
}

#[utoipa::path(get, path = "/v1/modules/{id}", tag = "modules",
    responses((status = 200, body = ModuleInfo)), security(("bearer" = [])))]
pub async fn get_module(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<ModuleInfo>> {
    modules::get(&principal, &id, |id| state.module_error(id)).map(Json)
}

/// The toggle body is optional: empty means "the caller's tenant".
async fn toggle(
    s: &AppState,
    p: &crate::auth::Principal,
    id: &str,
    on: bool,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let body: ModuleToggle = if body.iter().all(u8::is_ascii_whitespace) {
        ModuleToggle::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?
    };
    modules::set_enabled(&s.db, Some(p), id, on, body).await?;
    s.auth.invalidate().await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/modules/{id}/enable", tag = "modules", request_body = Option<ModuleToggle>,
    responses((status = 204)), security(("bearer" = [])))]
pub async fn enable_module(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    toggle(&state, &principal, &id, true, body).await
}

#[utoipa::path(post, path = "/v1/modules/{id}/disable", tag = "modules", request_body = Option<ModuleToggle>,
    responses((status = 204)), security(("bearer" = [])))]
pub async fn disable_module(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    toggle(&state, &principal, &id, false, body).await
}
