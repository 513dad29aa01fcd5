//! `/v1/auth/*` and `/v1/me`.

use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::{Auth, Subject};
use crate::error::ApiResult;
use crate::extract::Json;
use crate::rbac::PermissionSet;
use crate::server::client_ip::client_ip;
use crate::services::sessions::{self, RefreshRequest, TokenRequest, TokenResponse};
use crate::services::users::{self, SetPassword};

/// Log in with email and password: a short-lived access JWT and a refresh token.
#[utoipa::path(post, path = "/v1/auth/token", tag = "auth", request_body = TokenRequest,
    responses((status = 200, body = TokenResponse)))]
pub async fn token(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(request): Json<TokenRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let client = client_ip(peer.ip(), &headers, &state.config.http.trusted_proxies);
    sessions::login(
        (&state.db, &state.auth, &state.gate.limits),
        state.config.auth.refresh_token_ttl_seconds,
        client,
        request,
    )
    .await
    .map(Json)
}

/// Trade a refresh token for a new access token and a new refresh token (the old one
/// stops working; presenting it again revokes the whole login).
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse)))]
pub async fn refresh(
    State(state): State<Arc<AppState>>,
    Json(request): Json<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let ttl = state.config.auth.refresh_token_ttl_seconds;
    sessions::refresh(&state.db, &state.auth, ttl, request)
        .await
        .map(Json)
}

/// End a login: its refresh tokens stop working.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204)))]
pub async fn logout(
    State(state): State<Arc<AppState>>,
    Json(request): Json<RefreshRequest>,
) -> ApiResult<StatusCode> {
    sessions::logout(&state.db, request).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct MeTenant {
    id: String,
    slug: String,
    modules: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    #[schema(value_type = Object)]
    identity: Subject,
    tenant: MeTenant,
    roles: Vec<String>,
    #[schema(value_type = Vec<String>)]
    permissions: PermissionSet,
}

/// Change one's own password (users, with the current one); other logins end.
#[utoipa::path(post, path = "/v1/me/password", tag = "auth", request_body = SetPassword,
    responses((status = 204)), security(("bearer" = [])))]
pub async fn change_password(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    Json(request): Json<SetPassword>,
) -> ApiResult<StatusCode> {
    users::change_own_password(&state.db, &state.auth.login, &principal, request).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's identity, tenant, roles and effective permissions.
#[utoipa::path(get, path = "/v1/me", tag = "auth", responses((status = 200, body = MeResponse)),
    security(("bearer" = [])))]
pub async fn me(Auth(principal): Auth) -> ApiResult<Json<MeResponse>> {
    Ok(Json(MeResponse {
        identity: principal.subject.clone(),
        tenant: MeTenant {
            id: principal.tenant_id.clone(),
            slug: principal.tenant_slug.clone(),
            modules: principal.modules.clone(),
        },
        roles: principal.roles.clone(),
        permissions: principal.permissions.clone(),
    }))
}
