//! Local logins: email + password → access JWT + rotating refresh token.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use std::net::IpAddr;

use crate::auth::Authenticator;
use crate::db::{Db, now_ms, refresh_tokens, users};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ratelimit::Limits;

const REFRESH_PREFIX: &str = "sgr_";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Use once with `/v1/auth/refresh`; each refresh returns a new one.
    pub refresh_token: String,
    pub refresh_expires_in: u64,
}

fn new_refresh_token() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!(
        "{REFRESH_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

async fn issue(
    conn: &mut sqlx::AnyConnection,
    auth: &Authenticator,
    refresh_ttl_seconds: u64,
    user: &users::UserRow,
    family_id: &str,
) -> ApiResult<(TokenResponse, String)> {
    let refresh_token = new_refresh_token();
    let expires_at = now_ms() + i64::try_from(refresh_ttl_seconds * 1000).unwrap_or(i64::MAX / 2);
    let id = refresh_tokens::insert(
        conn,
        &user.id,
        family_id,
        &crate::auth::api_key::hash(&refresh_token),
        expires_at,
    )
    .await?;
    let access_token = auth
        .local
        .mint(&user.id, &user.tenant_id)
        .map_err(ApiError::internal)?;
    Ok((
        TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: auth.local.access_ttl_seconds(),
            refresh_token,
            refresh_expires_in: refresh_ttl_seconds,
        },
        id,
    ))
}

/// Email and password to tokens. An unknown email and a wrong password get the same
/// answer after the same work ([`crate::auth::login`]), and attempts are counted.
pub async fn login(
    (db, auth, limits): (&Db, &Authenticator, &Limits),
    refresh_ttl_seconds: u64,
    client: IpAddr,
    request: TokenRequest,
) -> ApiResult<TokenResponse> {
    auth.login.admit(limits, client, &request.email).await?;
    // No connection is held while the password waits for its turn on a core.
    let user = {
        let mut conn = db.pool.acquire().await?;
        users::get_by_email(&mut conn, &request.email).await?
    };
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let matches = auth.login.verify(request.password, stored).await?;
    let user = match (user, matches) {
        (Some(user), true) => user,
        _ => {
            auth.login.failed(limits, &request.email).await;
            return Err(ApiError::new(
                ErrorCode::AUTH_TOKEN_INVALID,
                "invalid email or password",
            ));
        }
    };
    if user.status != users::ACTIVE {
        return Err(ApiError::new(
            ErrorCode::AUTH_TOKEN_REVOKED,
            "the account is disabled",
        ));
    }
    // Refuses users of deleted tenants the same way every other request does.
    auth.user_principal(&user.id).await?;
    let family_id = crate::db::new_id("fam");
    let mut conn = db.pool.acquire().await?;
    let (response, _) = issue(&mut conn, auth, refresh_ttl_seconds, &user, &family_id).await?;
    Ok(response)
}

pub async fn refresh(
    db: &Db,
    auth: &Authenticator,
    refresh_ttl_seconds: u64,
    request: RefreshRequest,
) -> ApiResult<TokenResponse> {
    let invalid = || ApiError::new(ErrorCode::AUTH_TOKEN_INVALID, "invalid refresh token");
    if !request.refresh_token.starts_with(REFRESH_PREFIX) {
        return Err(invalid());
    }
    let mut tx = db.begin().await?;
    let token =
        refresh_tokens::get_by_hash(&mut tx, &crate::auth::api_key::hash(&request.refresh_token))
            .await?
            .ok_or_else(invalid)?;
    if token.revoked_at.is_some() {
        if token.replaced_by.is_some() {
            // A rotated-out token came back: someone kept a copy. End the whole login.
            let revoked = refresh_tokens::revoke_family(&mut tx, &token.family_id).await?;
            tx.commit().await?;
            tracing::warn!(family = %token.family_id, revoked, "refresh token reuse detected");
        }
        return Err(ApiError::new(
            ErrorCode::AUTH_TOKEN_REVOKED,
            "refresh token revoked",
        ));
    }
    if token.expires_at <= now_ms() {
        return Err(ApiError::new(
            ErrorCode::AUTH_TOKEN_EXPIRED,
            "refresh token expired",
        ));
    }
    let user = users::get(&mut tx, &token.user_id)
        .await?
        .filter(|u| u.status == users::ACTIVE)
        .ok_or_else(|| ApiError::new(ErrorCode::AUTH_TOKEN_REVOKED, "the user no longer exists"))?;
    auth.user_principal(&user.id).await?;
    let (response, successor) =
        issue(&mut tx, auth, refresh_ttl_seconds, &user, &token.family_id).await?;
    if !refresh_tokens::mark_replaced(&mut tx, &token.id, &successor).await? {
        // A concurrent refresh with the same token won the race.
        return Err(ApiError::new(
            ErrorCode::AUTH_TOKEN_REVOKED,
            "refresh token already used",
        ));
    }
    tx.commit().await?;
    Ok(response)
}

/// Ends a login: revokes the token's whole family. Unknown tokens are not an error
/// (logout is idempotent).
pub async fn logout(db: &Db, request: RefreshRequest) -> ApiResult<()> {
    let mut conn = db.pool.acquire().await?;
    if let Some(token) = refresh_tokens::get_by_hash(
        &mut conn,
        &crate::auth::api_key::hash(&request.refresh_token),
    )
    .await?
    {
        refresh_tokens::revoke_family(&mut conn, &token.family_id).await?;
    }
    Ok(())
}
