//! `/console`: the web console's page, its embedded assets and its browser session.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::auth::console::secure_origin;
use crate::console::session::{self, ConsoleLogin, ConsoleSession, Signed};
use crate::console::{self, security_headers};
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::server::client_ip::client_ip;

type St = State<Arc<AppState>>;

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    security_headers(headers);
    response
}

/// The console (sign in with email and password or an API key).
#[utoipa::path(get, path = "/console", tag = "console",
    responses((status = 200, content_type = "text/html")))]
pub async fn index() -> Response {
    page("text/html; charset=utf-8", console::INDEX)
}

/// The API reference: `/openapi.json` as a browsable page (no sign-in; the document is
/// public).
#[utoipa::path(get, path = "/reference", tag = "operations",
    responses((status = 200, content_type = "text/html")))]
pub async fn reference() -> Response {
    page("text/html; charset=utf-8", console::REFERENCE)
}

/// A script or style sheet of the console, embedded in the binary.
#[utoipa::path(get, path = "/console/assets/{name}", tag = "console",
    responses((status = 200), (status = 404)))]
pub async fn asset(Path(name): Path<String>) -> Response {
    match console::asset(&name) {
        Some(asset) => page(asset.content_type, asset.body),
        None => ApiError::not_found("console asset").into_response(),
    }
}

fn signed(signed: Signed) -> Response {
    with_cookies(Json(signed.session).into_response(), signed.cookies)
}

fn with_cookies(mut response: Response, cookies: Vec<HeaderValue>) -> Response {
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    security_headers(response.headers_mut());
    response
}

/// Sign in: the credential goes into an `HttpOnly; SameSite=Strict` cookie; the answer
/// holds the CSRF token every later call sends as `X-CSRF-Token`.
#[utoipa::path(post, path = "/console/session", tag = "console", request_body = ConsoleLogin,
    responses((status = 200, body = ConsoleSession)))]
pub async fn sign_in(
    State(state): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(request): Json<ConsoleLogin>,
) -> ApiResult<Response> {
    let client = client_ip(peer.ip(), &headers, &state.config.http.trusted_proxies);
    let stores = (&state.db, state.auth.as_ref(), state.gate.limits.as_ref());
    let ttl = state.config.auth.refresh_token_ttl_seconds;
    let secure = secure_origin(&headers);
    session::login(stores, ttl, client, secure, request)
        .await
        .map(signed)
}

/// The CSRF token of this browser's session (a new tab asks for it); 401 when there is none.
#[utoipa::path(get, path = "/console/session", tag = "console",
    responses((status = 200, body = ConsoleSession)))]
pub async fn current(State(state): St, headers: HeaderMap) -> ApiResult<Response> {
    let session = session::current(&state.auth, &headers)?;
    let mut response = Json(session).into_response();
    security_headers(response.headers_mut());
    Ok(response)
}

/// Renew a password session's access token from its refresh cookie.
#[utoipa::path(post, path = "/console/session/refresh", tag = "console",
    responses((status = 200, body = ConsoleSession)))]
pub async fn refresh(State(state): St, headers: HeaderMap) -> ApiResult<Response> {
    let ttl = state.config.auth.refresh_token_ttl_seconds;
    let secure = secure_origin(&headers);
    session::refresh(&state.db, &state.auth, ttl, secure, &headers)
        .await
        .map(signed)
}

/// Sign out: the login's refresh tokens stop working and the cookies are deleted.
#[utoipa::path(delete, path = "/console/session", tag = "console",
    responses((status = 204)))]
pub async fn sign_out(State(state): St, headers: HeaderMap) -> ApiResult<Response> {
    session::logout(&state.db, &state.auth, &headers).await?;
    let response = StatusCode::NO_CONTENT.into_response();
    Ok(with_cookies(
        response,
        session::cleared(secure_origin(&headers)),
    ))
}
