//! Admin surface: tenants, users, API keys, roles, grants, modules.
//!
//! Handlers unpack and delegate to `services`; changes that affect authentication
//! (revocation, roles, grants, tenants, modules) invalidate the principal cache.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::auth::Auth;
use crate::db::page::Page;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::records::{ApiKeyInfo, Role, Tenant, User};
use crate::services::api_keys::{CreateApiKey, CreatedApiKey};
use crate::services::modules::{ModuleInfo, ModuleToggle};
use crate::services::roles::{CreateGrant, CreateRole, UpdateRole};
use crate::services::tenants::{CreateTenant, UpdateTenant};
use crate::services::users::{CreateUser, SetPassword, UpdateUser};
use crate::services::{api_keys, modules, roles, tenants, users};

#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantFilter {
    /// Another tenant (platform admins only); default the caller's.
    pub tenant_id: Option<String>,
}

/// A list's tenant, status and page.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListFilter {
    /// Another tenant (platform admins only); default the caller's.
    pub tenant_id: Option<String>,
    /// Users: `active` or `disabled`; keys: `active` or `revoked`.
    pub status: Option<String>,
    /// Rows a page holds, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `X-Next-After` of the previous page.
    pub after: Option<String>,
}

impl ListFilter {
    fn page(&self) -> ApiResult<Page> {
        Page::parse(self.limit, self.after.clone())
    }
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

/// A page of users; `X-Next-After` (and `Link: rel="next"`) lead to the next.
#[utoipa::path(get, path = "/v1/users", tag = "admin", params(ListFilter),
    responses((status = 200, body = Vec<User>)), security(("bearer" = [])))]
pub async fn list_users(
    State(state): St,
    Auth(principal): Auth,
    uri: Uri,
    Query(f): Query<ListFilter>,
) -> ApiResult<Response> {
    let page = f.page()?;
    let (users, next) = users::list(
        &state.db,
        Some(&principal),
        f.tenant_id.as_deref(),
        f.status.as_deref(),
        &page,
    )
    .await?;
    Ok(super::paged(&uri, users, next))
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

/// Disable (their logins end at once) or re-enable a user.
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "admin", request_body = UpdateUser,
    responses((status = 200, body = User)), security(("bearer" = [])))]
pub async fn update_user(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
    Json(request): Json<UpdateUser>,
) -> ApiResult<Json<User>> {
    let user = users::update(&state.db, Some(&principal), &id, request).await?;
    state.auth.invalidate().await;
    Ok(Json(user))
}

/// Delete a user with their logins, roles and grants.
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "admin",
    responses((status = 204)), security(("bearer" = [])))]
pub async fn delete_user(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    users::delete(&state.db, Some(&principal), &id).await?;
    state.auth.invalidate().await;
    Ok(StatusCode::NO_CONTENT)
}

/// Set a user's password (tenant admins); the user's logins end.
#[utoipa::path(post, path = "/v1/users/{id}/password", tag = "admin", request_body = SetPassword,
    responses((status = 204)), security(("bearer" = [])))]
pub async fn reset_password(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
    Json(request): Json<SetPassword>,
) -> ApiResult<StatusCode> {
    users::reset_password(&state.db, Some(&principal), &id, request).await?;
    Ok(StatusCode::NO_CONTENT)
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

/// A page of API keys; `X-Next-After` (and `Link: rel="next"`) lead to the next.
#[utoipa::path(get, path = "/v1/api-keys", tag = "admin", params(ListFilter),
    responses((status = 200, body = Vec<ApiKeyInfo>)), security(("bearer" = [])))]
pub async fn list_api_keys(
    State(state): St,
    Auth(principal): Auth,
    uri: Uri,
    Query(f): Query<ListFilter>,
) -> ApiResult<Response> {
    let page = f.page()?;
    let (keys, next) = api_keys::list(
        &state.db,
        Some(&principal),
        f.tenant_id.as_deref(),
        f.status.as_deref(),
        &page,
    )
    .await?;
    Ok(super::paged(&uri, keys, next))
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

/// Change a custom role's description or permissions.
#[utoipa::path(patch, path = "/v1/roles/{id}", tag = "admin", params(TenantFilter), request_body = UpdateRole,
    responses((status = 200, body = Role)), security(("bearer" = [])))]
pub async fn update_role(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
    Query(f): Query<TenantFilter>,
    Json(request): Json<UpdateRole>,
) -> ApiResult<Json<Role>> {
    let role = roles::update(
        &state.db,
        Some(&principal),
        f.tenant_id.as_deref(),
        &id,
        request,
    )
    .await?;
    state.auth.invalidate().await;
    Ok(Json(role))
}

/// Take roles and/or direct permissions away from a user or API key.
#[utoipa::path(post, path = "/v1/grants/revoke", tag = "admin", request_body = CreateGrant,
    responses((status = 204)), security(("bearer" = [])))]
pub async fn revoke_grant(
    State(state): St,
    Auth(principal): Auth,
    Json(request): Json<CreateGrant>,
) -> ApiResult<StatusCode> {
    roles::revoke(&state.db, Some(&principal), request).await?;
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

/// The modules with their status for the caller's tenant (or, for platform admins,
/// `tenant_id`'s).
#[utoipa::path(get, path = "/v1/modules", tag = "modules", params(TenantFilter),
    responses((status = 200, body = Vec<ModuleInfo>)), security(("bearer" = [])))]
pub async fn list_modules(
    State(state): St,
    Auth(principal): Auth,
    Query(f): Query<TenantFilter>,
) -> ApiResult<Json<Vec<ModuleInfo>>> {
    let error = |id: &str| state.module_error(id);
    match f.tenant_id.as_deref() {
        None => Ok(Json(modules::list(&principal, error))),
        Some(tenant) => modules::list_for(&state.db, &principal, tenant, error)
            .await
            .map(Json),
    }
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
