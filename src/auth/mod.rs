//! Authentication: turns a bearer token into a [`Principal`].
//!
//! Three kinds of token are accepted: `sgk_` API keys, access JWTs of the local issuer,
//! and JWTs of configured external issuers (verified by JWKS, mapped to a local user by
//! their `email` claim). Every failure maps to one `AUTH_*` code.

pub mod api_key;
pub mod cache;
pub mod console;
pub mod jwks;
pub mod jwt;
pub mod login;
pub mod password;
pub mod principal;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::config::AuthConfig;
use crate::db::roles::SubjectKind;
use crate::db::{Db, api_keys, now_ms, tenants, users};
use crate::error::{ApiError, ApiResult, ErrorCode};
use cache::PrincipalCache;
use jwks::ExternalVerifier;
use jwt::LocalIssuer;
pub use principal::{Principal, Subject};

pub struct Authenticator {
    db: Db,
    pub local: LocalIssuer,
    external: Vec<ExternalVerifier>,
    cache: PrincipalCache,
    pub login: login::LoginGuard,
    /// The key of the console session's CSRF tokens.
    pub csrf: console::CsrfKey,
    /// Where invalidations are broadcast to the other processes (scaled deployment).
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

fn error(code: ErrorCode, message: &str) -> ApiError {
    ApiError::new(code, message)
}

const UNKNOWN_KEY: &str = "unknown API key";
const REVOKED_KEY: &str = "API key revoked";

/// The message of a key refusal that no later request can change (the key does not
/// exist, or was revoked), to be remembered; `None` for anything else (a deleted tenant
/// can be one that a racing request just created; a database error is no answer).
fn final_refusal(error: &ApiError) -> Option<&'static str> {
    [UNKNOWN_KEY, REVOKED_KEY]
        .into_iter()
        .find(|message| error.message == *message)
}

impl Authenticator {
    pub fn new(
        db: Db,
        config: &AuthConfig,
        jwt_secret: &[u8],
        http: &reqwest::Client,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> anyhow::Result<Self> {
        Ok(Authenticator {
            db,
            local: LocalIssuer::new(jwt_secret, config.access_token_ttl_seconds),
            external: config
                .external_issuers
                .iter()
                .map(|issuer| ExternalVerifier::new(issuer.clone(), http.clone()))
                .collect(),
            cache: PrincipalCache::new(Duration::from_secs(config.key_cache_ttl_seconds)),
            login: login::LoginGuard::new(config)?,
            csrf: console::CsrfKey::derive(jwt_secret),
            cluster,
        })
    }

    /// Forget cached principals, here and (scaled) in every other process: call after
    /// revoking a key or changing roles, grants, users or tenants.
    pub async fn invalidate(&self) {
        self.cache.invalidate();
        if let Some(cluster) = &self.cluster
            && let Err(error) = crate::cluster::revocation::publish(cluster).await
        {
            tracing::error!(%error, "revocation not broadcast; other processes keep cached credentials until their cache TTL");
        }
    }

    /// Forget this process's cached principals (another process changed something).
    pub fn invalidate_local(&self) {
        self.cache.invalidate();
    }

    /// The request's credential: `Authorization: Bearer`, else the console's session
    /// cookie with its CSRF token (403 `AUTH_CSRF_FAILED` without it); neither is 401
    /// `AUTH_TOKEN_MISSING`.
    pub fn credential<'h>(&self, headers: &'h HeaderMap) -> ApiResult<&'h str> {
        if !headers.contains_key(axum::http::header::AUTHORIZATION)
            && let Some(token) = console::session_token(&self.csrf, headers, None)?
        {
            return Ok(token);
        }
        bearer_token(headers)
    }

    /// Resolves a bearer token (the `auth` span of a trace).
    #[tracing::instrument(name = "auth", skip_all)]
    pub async fn authenticate(&self, token: &str) -> ApiResult<Arc<Principal>> {
        if token.starts_with(api_key::PREFIX) {
            return self.authenticate_key(token).await;
        }
        match jwt::peek_issuer(token) {
            Some(issuer) if issuer == jwt::LOCAL_ISSUER => {
                let claims = self.local.verify(token).map_err(|code| {
                    let message = match code {
                        ErrorCode::AUTH_TOKEN_EXPIRED => "access token expired; refresh it",
                        _ => "invalid access token",
                    };
                    error(code, message)
                })?;
                self.user_principal(&claims.sub).await
            }
            Some(issuer) => {
                let verifier = self
                    .external
                    .iter()
                    .find(|v| v.issuer() == issuer)
                    .ok_or_else(|| error(ErrorCode::AUTH_TOKEN_INVALID, "unknown token issuer"))?;
                let claims = verifier.verify(token).await?;
                let config = verifier.config();
                if config.require_email_verified && !claims.email_is_verified() {
                    return Err(error(
                        ErrorCode::AUTH_TOKEN_INVALID,
                        "the token's email is not verified (`email_verified` is not true)",
                    ));
                }
                let email = claims.email.ok_or_else(|| {
                    error(ErrorCode::AUTH_TOKEN_INVALID, "token has no email claim")
                })?;
                // Only users of the tenant bound to this issuer: its users must not reach
                // an account of the same email elsewhere (the platform's above all).
                let not_found = || {
                    error(
                        ErrorCode::AUTH_IDENTITY_NOT_FOUND,
                        "no account found for this email",
                    )
                };
                let mut conn = self.db.pool.acquire().await?;
                let tenant = match config.tenant.as_deref() {
                    Some(slug) => tenants::get_by_slug(&mut conn, slug).await?,
                    None => None,
                };
                let user = users::get_by_email(&mut conn, &email)
                    .await?
                    .filter(|user| tenant.as_ref().is_some_and(|t| t.id == user.tenant_id))
                    .ok_or_else(not_found)?;
                self.user_principal(&user.id).await
            }
            None => Err(error(
                ErrorCode::AUTH_TOKEN_INVALID,
                "token is neither an API key (sgk_...) nor a JWT",
            )),
        }
    }

    async fn authenticate_key(&self, key: &str) -> ApiResult<Arc<Principal>> {
        let hash = api_key::hash(key);
        let cache_key = format!("key:{hash}");
        let principal = match self.cache.get(&cache_key) {
            Some(principal) => principal,
            None => {
                if let Some(refusal) = self.cache.refusal(&cache_key) {
                    return Err(refusal);
                }
                let generation = self.cache.generation();
                let principal = match self.load_key(&hash).await {
                    Ok(principal) => Arc::new(principal),
                    Err(error) => {
                        if let Some(message) = final_refusal(&error) {
                            self.cache.insert_refusal(cache_key, error.code, message);
                        }
                        return Err(error);
                    }
                };
                self.cache.insert(cache_key, principal.clone(), generation);
                principal
            }
        };
        if principal.expires_at.is_some_and(|at| at <= now_ms()) {
            return Err(error(ErrorCode::AUTH_TOKEN_EXPIRED, "API key expired"));
        }
        Ok(principal)
    }

    async fn load_key(&self, hash: &str) -> ApiResult<Principal> {
        let mut conn = self.db.pool.acquire().await?;
        let key = api_keys::get_by_hash(&mut conn, hash)
            .await?
            .ok_or_else(|| error(ErrorCode::AUTH_TOKEN_INVALID, UNKNOWN_KEY))?;
        if key.revoked_at.is_some() {
            return Err(error(ErrorCode::AUTH_TOKEN_REVOKED, REVOKED_KEY));
        }
        // Off the request's path: a slow write must not slow the call it serves.
        let (db, id) = (self.db.clone(), key.id.clone());
        tokio::spawn(async move {
            if let Ok(mut conn) = db.pool.acquire().await
                && let Err(error) = api_keys::touch(&mut conn, &id).await
            {
                tracing::warn!(%error, key = %id, "last use of the key not recorded");
            }
        });
        let subject = Subject::ApiKey {
            id: key.id,
            name: key.name,
        };
        let parts = PrincipalParts {
            subject,
            tenant_id: &key.tenant_id,
            rate_limit: key.rate_limit,
            expires_at: key.expires_at,
        };
        principal_in_active_tenant(&mut conn, parts).await
    }

    /// The principal of an active user in an active tenant.
    pub async fn user_principal(&self, user_id: &str) -> ApiResult<Arc<Principal>> {
        let cache_key = format!("user:{user_id}");
        if let Some(principal) = self.cache.get(&cache_key) {
            return Ok(principal);
        }
        let generation = self.cache.generation();
        let mut conn = self.db.pool.acquire().await?;
        let user = users::get(&mut conn, user_id)
            .await?
            .filter(|u| u.status == users::ACTIVE)
            .ok_or_else(|| {
                error(
                    ErrorCode::AUTH_TOKEN_REVOKED,
                    "the user was disabled or deleted",
                )
            })?;
        let parts = PrincipalParts {
            subject: Subject::User {
                id: user.id,
                email: user.email,
            },
            tenant_id: &user.tenant_id,
            rate_limit: None,
            expires_at: None,
        };
        let principal = Arc::new(principal_in_active_tenant(&mut conn, parts).await?);
        self.cache.insert(cache_key, principal.clone(), generation);
        Ok(principal)
    }
}

/// What differs between the principals of keys and users.
struct PrincipalParts<'a> {
    subject: Subject,
    tenant_id: &'a str,
    /// The key's own limits (users have none of their own).
    rate_limit: Option<crate::records::RateLimitSpec>,
    expires_at: Option<i64>,
}

/// Completes a principal: the tenant must be active; roles, permissions and enabled
/// modules are loaded.
async fn principal_in_active_tenant(
    conn: &mut sqlx::AnyConnection,
    parts: PrincipalParts<'_>,
) -> ApiResult<Principal> {
    let tenant = tenants::get(&mut *conn, parts.tenant_id)
        .await?
        .filter(|t| t.status == tenants::ACTIVE)
        .ok_or_else(|| error(ErrorCode::AUTH_TOKEN_REVOKED, "the tenant was deleted"))?;
    let (kind, subject_id) = match &parts.subject {
        Subject::ApiKey { id, .. } => (SubjectKind::ApiKey, id),
        Subject::User { id, .. } => (SubjectKind::User, id),
    };
    let (roles, permissions) = crate::db::roles::effective(&mut *conn, kind, subject_id).await?;
    let modules = crate::db::modules::enabled_for(&mut *conn, &tenant.id).await?;
    Ok(Principal {
        subject: parts.subject,
        tenant_id: tenant.id,
        tenant_slug: tenant.slug,
        roles,
        permissions,
        rate_limit: parts.rate_limit,
        tenant_rate_limit: tenant.rate_limit,
        modules,
        expires_at: parts.expires_at,
    })
}

/// The token of an `Authorization: Bearer <token>` header (or `Token <token>`, the
/// scheme Deepgram's clients send).
pub fn bearer_token(headers: &HeaderMap) -> ApiResult<&str> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(error(
            ErrorCode::AUTH_TOKEN_MISSING,
            "missing Authorization header (expected `Bearer <token>`)",
        ));
    };
    let value = value.to_str().map_err(|_| {
        error(
            ErrorCode::AUTH_TOKEN_INVALID,
            "Authorization header is not ASCII",
        )
    })?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") && !scheme.eq_ignore_ascii_case("token") {
        return Err(error(
            ErrorCode::AUTH_TOKEN_INVALID,
            "Authorization header must be `Bearer <token>`",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(error(ErrorCode::AUTH_TOKEN_MISSING, "empty bearer token"));
    }
    Ok(token)
}

/// Extractor: the authenticated caller of an HTTP route.
pub struct Auth(pub Arc<Principal>);

/// A principal a middleware already authenticated for this request (the rate-limit
/// middleware of limited routes), so [`Auth`] does not repeat the work.
#[derive(Clone)]
pub struct Authenticated(pub Arc<Principal>);

/// A state the [`Auth`] extractor can authenticate with (the application state).
pub trait AuthState: Send + Sync {
    fn authenticator(&self) -> &Authenticator;
}

impl<S: AuthState> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(Authenticated(principal)) = parts.extensions.get::<Authenticated>() {
            tracing::Span::current().record("subject", principal.subject_id());
            return Ok(Auth(principal.clone()));
        }
        let authenticator = state.authenticator();
        let token = authenticator.credential(&parts.headers)?;
        let principal = authenticator.authenticate(token).await?;
        tracing::Span::current().record("subject", principal.subject_id());
        Ok(Auth(principal))
    }
}
