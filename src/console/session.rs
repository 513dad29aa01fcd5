//! Signing the console in and out: a password login (its access JWT in the session
//! cookie, its refresh token in a cookie only the session endpoints see) or a pasted API
//! key (in the session cookie until the browser closes). See [`crate::auth::console`]
//! for the cookies and the CSRF token.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::console::{
    self as cookies, REFRESH_COOKIE, REFRESH_PATH, SESSION_COOKIE, SESSION_PATH,
};
use crate::auth::{Authenticator, api_key};
use crate::db::Db;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ratelimit::Limits;
use crate::services::sessions::{self, RefreshRequest, TokenRequest, TokenResponse};

/// Sign in with `email` and `password`, or with `api_key`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsoleLogin {
    pub email: Option<String>,
    pub password: Option<String>,
    pub api_key: Option<String>,
}

/// What the page keeps: the CSRF token to send as `X-CSRF-Token` with every call.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsoleSession {
    pub csrf_token: String,
    /// `password` (refreshed through `/console/session/refresh`) or `api_key`.
    pub kind: &'static str,
    /// Seconds the access token has left (password sessions).
    pub expires_in: Option<u64>,
}

/// A session and the cookies that carry it.
pub struct Signed {
    pub session: ConsoleSession,
    pub cookies: Vec<HeaderValue>,
}

/// The stores a login touches.
pub type Stores<'a> = (&'a Db, &'a Authenticator, &'a Limits);

fn kind_of(token: &str) -> &'static str {
    if token.starts_with(api_key::PREFIX) {
        "api_key"
    } else {
        "password"
    }
}

fn password_session(
    auth: &Authenticator,
    tokens: &TokenResponse,
    refresh_ttl: u64,
    secure: bool,
) -> Signed {
    let csrf_token = auth.csrf.token(&tokens.access_token);
    Signed {
        session: ConsoleSession {
            csrf_token,
            kind: "password",
            expires_in: Some(tokens.expires_in),
        },
        cookies: vec![
            cookies::set_cookie(
                SESSION_COOKIE,
                &tokens.access_token,
                SESSION_PATH,
                Some(refresh_ttl),
                secure,
            ),
            cookies::set_cookie(
                REFRESH_COOKIE,
                &tokens.refresh_token,
                REFRESH_PATH,
                Some(refresh_ttl),
                secure,
            ),
        ],
    }
}

/// Signs in: checks the credential exactly as the API would, then sets the cookies.
pub async fn login(
    (db, auth, limits): Stores<'_>,
    refresh_ttl: u64,
    client: IpAddr,
    secure: bool,
    request: ConsoleLogin,
) -> ApiResult<Signed> {
    match request {
        ConsoleLogin {
            email: Some(email),
            password: Some(password),
            api_key: None,
        } => {
            let tokens = sessions::login(
                (db, auth, limits),
                refresh_ttl,
                client,
                TokenRequest { email, password },
            )
            .await?;
            Ok(password_session(auth, &tokens, refresh_ttl, secure))
        }
        ConsoleLogin {
            email: None,
            password: None,
            api_key: Some(key),
        } => {
            auth.login.admit_ip(limits, client).await?;
            let key = key.trim();
            if !key.starts_with(api_key::PREFIX) {
                return Err(ApiError::new(
                    ErrorCode::AUTH_TOKEN_INVALID,
                    "an API key starts with `sgk_`",
                ));
            }
            auth.authenticate(key).await?;
            Ok(Signed {
                session: ConsoleSession {
                    csrf_token: auth.csrf.token(key),
                    kind: "api_key",
                    expires_in: None,
                },
                cookies: vec![
                    cookies::set_cookie(SESSION_COOKIE, key, SESSION_PATH, None, secure),
                    // A password session's refresh token must not outlive it.
                    cookies::set_cookie(REFRESH_COOKIE, "", REFRESH_PATH, Some(0), secure),
                ],
            })
        }
        _ => Err(ApiError::invalid(
            "send either `email` and `password`, or `api_key`",
        )),
    }
}

/// The current session's CSRF token (a new tab of a signed-in browser asks for it):
/// readable only by this origin's pages, as the same-origin policy keeps other pages
/// from reading the answer.
pub fn current(auth: &Authenticator, headers: &HeaderMap) -> ApiResult<ConsoleSession> {
    let token = cookies::cookie(headers, SESSION_COOKIE).ok_or_else(|| {
        ApiError::new(
            ErrorCode::AUTH_TOKEN_MISSING,
            "not signed in to the console",
        )
    })?;
    Ok(ConsoleSession {
        csrf_token: auth.csrf.token(token),
        kind: kind_of(token),
        expires_in: None,
    })
}

/// Trades the refresh cookie for new tokens; the request must carry the CSRF token of
/// the (expired) session cookie.
pub async fn refresh(
    db: &Db,
    auth: &Authenticator,
    refresh_ttl: u64,
    secure: bool,
    headers: &HeaderMap,
) -> ApiResult<Signed> {
    require_csrf(auth, headers)?;
    let refresh_token = cookies::cookie(headers, REFRESH_COOKIE)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::AUTH_TOKEN_MISSING,
                "no refresh cookie: sign in again",
            )
        })?
        .to_owned();
    let tokens = sessions::refresh(db, auth, refresh_ttl, RefreshRequest { refresh_token }).await?;
    Ok(password_session(auth, &tokens, refresh_ttl, secure))
}

/// Signs out: the login's refresh tokens stop working and the cookies are deleted.
pub async fn logout(db: &Db, auth: &Authenticator, headers: &HeaderMap) -> ApiResult<()> {
    require_csrf(auth, headers)?;
    if let Some(refresh_token) = cookies::cookie(headers, REFRESH_COOKIE) {
        let request = RefreshRequest {
            refresh_token: refresh_token.to_owned(),
        };
        sessions::logout(db, request).await?;
    }
    Ok(())
}

/// The cookies that end a session.
pub fn cleared(secure: bool) -> Vec<HeaderValue> {
    vec![
        cookies::set_cookie(SESSION_COOKIE, "", SESSION_PATH, Some(0), secure),
        cookies::set_cookie(REFRESH_COOKIE, "", REFRESH_PATH, Some(0), secure),
    ]
}

/// The session endpoints that change state need the session cookie and its CSRF token.
fn require_csrf(auth: &Authenticator, headers: &HeaderMap) -> ApiResult<()> {
    match cookies::session_token(&auth.csrf, headers, None)? {
        Some(_) => Ok(()),
        None => Err(ApiError::new(
            ErrorCode::AUTH_CSRF_FAILED,
            "no console session cookie",
        )),
    }
}
