//! Users: tenant admins create and list the users of their tenant.

use serde::Deserialize;
use utoipa::ToSchema;

use super::api_keys::authorize_assignment;
use super::{Actor, admin_tenant, audit};
use crate::auth::login::LoginGuard;
use crate::auth::{Principal, Subject, password};
use crate::db::page::Page;
use crate::db::roles::{self as role_db, SubjectKind};
use crate::db::{Db, refresh_tokens, tenants, users};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::rbac;
use crate::records::{Timestamp, User};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    pub password: String,
    /// Another tenant (platform admins only); default the caller's.
    pub tenant_id: Option<String>,
    /// Role names; default `["member"]`.
    pub roles: Option<Vec<String>>,
    pub permissions: Option<Vec<String>>,
}

fn validate_email(email: &str) -> ApiResult<()> {
    let email = email.trim();
    let ok = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid("`email` is not an email address"))
    }
}

pub async fn to_user(conn: &mut sqlx::AnyConnection, row: users::UserRow) -> ApiResult<User> {
    let (roles, permissions) = role_db::assignments(conn, SubjectKind::User, &row.id).await?;
    Ok(User {
        id: row.id,
        tenant_id: row.tenant_id,
        email: row.email,
        status: row.status,
        roles,
        permissions,
        created_at: Timestamp(row.created_at),
    })
}

pub async fn create(db: &Db, actor: Actor<'_>, request: CreateUser) -> ApiResult<User> {
    let tenant_id = admin_tenant(actor, request.tenant_id.as_deref())?;
    validate_email(&request.email)?;
    validate_password(&request.password)?;
    let roles = request
        .roles
        .unwrap_or_else(|| vec![rbac::MEMBER.to_owned()]);
    let permissions = request.permissions.unwrap_or_default();
    let hashed = hash(request.password).await?;
    let mut tx = db.begin().await?;
    tenants::get(&mut tx, &tenant_id)
        .await?
        .filter(|t| t.status == tenants::ACTIVE)
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    let role_ids = authorize_assignment(&mut tx, actor, &tenant_id, &roles, &permissions).await?;
    let row = users::create(&mut tx, &tenant_id, &request.email, Some(&hashed))
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::CONFLICT, "a user with this email exists"))?;
    role_db::assign(&mut tx, SubjectKind::User, &row.id, &role_ids).await?;
    role_db::grant(&mut tx, SubjectKind::User, &row.id, &permissions).await?;
    let detail = serde_json::json!({ "roles": roles, "permissions": permissions });
    audit(
        &mut tx,
        actor,
        Some(&tenant_id),
        "user.create",
        ("user", &row.id),
        Some(detail),
    )
    .await?;
    let user = to_user(&mut tx, row).await?;
    tx.commit().await?;
    Ok(user)
}

/// A page of a tenant's users (of one `status`, if given), oldest first; the cursor of
/// the next page when there is one.
pub async fn list(
    db: &Db,
    actor: Actor<'_>,
    tenant_id: Option<&str>,
    status: Option<&str>,
    page: &Page,
) -> ApiResult<(Vec<User>, Option<String>)> {
    let tenant_id = admin_tenant(actor, tenant_id)?;
    if let Some(status) = status
        && ![users::ACTIVE, users::DISABLED].contains(&status)
    {
        return Err(ApiError::invalid("`status` must be `active` or `disabled`"));
    }
    let mut conn = db.pool.acquire().await?;
    let rows = users::list(&mut conn, &tenant_id, status, page).await?;
    let (rows, next) = page.split(rows, |row| &row.id);
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(to_user(&mut conn, row).await?);
    }
    Ok((out, next))
}

/// A user visible to the actor: in their tenant (tenant admin) or any (platform admin).
pub async fn get(db: &Db, actor: Actor<'_>, id: &str) -> ApiResult<User> {
    let mut conn = db.pool.acquire().await?;
    let row = visible(&mut conn, actor, id).await?;
    to_user(&mut conn, row).await
}

/// The user `id` if the actor administers its tenant; 404 for users of other tenants,
/// as if they did not exist.
async fn visible(
    conn: &mut sqlx::AnyConnection,
    actor: Actor<'_>,
    id: &str,
) -> ApiResult<users::UserRow> {
    let row = users::get(conn, id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    if let Some(principal) = actor {
        principal
            .require_tenant_admin(&row.tenant_id)
            .map_err(|error| {
                if error.code == ErrorCode::NOT_FOUND {
                    ApiError::not_found("user")
                } else {
                    error
                }
            })?;
    }
    Ok(row)
}

/// An admin must not lock themselves out by accident.
fn not_self(actor: Actor<'_>, id: &str, what: &str) -> ApiResult<()> {
    match actor {
        Some(principal) if principal.subject_id() == id => Err(ApiError::new(
            ErrorCode::CONFLICT,
            format!("you cannot {what} your own account; another admin can"),
        )),
        _ => Ok(()),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// `active` or `disabled` (a disabled user cannot sign in; their logins end).
    pub status: Option<String>,
}

pub async fn update(db: &Db, actor: Actor<'_>, id: &str, request: UpdateUser) -> ApiResult<User> {
    let mut tx = db.begin().await?;
    let row = visible(&mut tx, actor, id).await?;
    if let Some(status) = request.status.as_deref() {
        if ![users::ACTIVE, users::DISABLED].contains(&status) {
            return Err(ApiError::invalid("`status` must be `active` or `disabled`"));
        }
        if status == users::DISABLED {
            not_self(actor, id, "disable")?;
            refresh_tokens::revoke_user(&mut tx, id).await?;
        }
        users::set_status(&mut tx, id, status).await?;
        let detail = serde_json::json!({ "status": status });
        audit(
            &mut tx,
            actor,
            Some(&row.tenant_id),
            "user.update",
            ("user", id),
            Some(detail),
        )
        .await?;
    }
    let row = visible(&mut tx, actor, id).await?;
    let user = to_user(&mut tx, row).await?;
    tx.commit().await?;
    Ok(user)
}

pub async fn delete(db: &Db, actor: Actor<'_>, id: &str) -> ApiResult<()> {
    let mut tx = db.begin().await?;
    let row = visible(&mut tx, actor, id).await?;
    not_self(actor, id, "delete")?;
    users::delete(&mut tx, id).await?;
    let detail = serde_json::json!({ "email": row.email });
    audit(
        &mut tx,
        actor,
        Some(&row.tenant_id),
        "user.delete",
        ("user", id),
        Some(detail),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    pub password: String,
    /// Required when changing one's own password (`POST /v1/me/password`).
    pub current_password: Option<String>,
}

fn validate_password(password: &str) -> ApiResult<()> {
    if password.chars().count() < password::MIN_LENGTH || password.len() > 1024 {
        return Err(ApiError::invalid(format!(
            "`password` must be {} to 1024 characters",
            password::MIN_LENGTH
        )));
    }
    Ok(())
}

async fn hash(plain: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || password::hash(&plain))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// An admin sets a user's password: the user's logins end.
pub async fn reset_password(
    db: &Db,
    actor: Actor<'_>,
    id: &str,
    request: SetPassword,
) -> ApiResult<()> {
    validate_password(&request.password)?;
    {
        let mut conn = db.pool.acquire().await?;
        visible(&mut conn, actor, id).await?;
    }
    let hashed = hash(request.password).await?;
    let mut tx = db.begin().await?;
    let row = visible(&mut tx, actor, id).await?;
    users::set_password(&mut tx, id, &hashed).await?;
    refresh_tokens::revoke_user(&mut tx, id).await?;
    audit(
        &mut tx,
        actor,
        Some(&row.tenant_id),
        "user.password_reset",
        ("user", id),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A signed-in user changes their own password, proving the current one; their other
/// logins end.
pub async fn change_own_password(
    db: &Db,
    login: &LoginGuard,
    principal: &Principal,
    request: SetPassword,
) -> ApiResult<()> {
    let Subject::User { id, .. } = &principal.subject else {
        return Err(ApiError::new(
            ErrorCode::AUTHZ_PERMISSION_DENIED,
            "an API key has no password; sign in as the user",
        ));
    };
    validate_password(&request.password)?;
    let stored = {
        let mut conn = db.pool.acquire().await?;
        users::get(&mut conn, id)
            .await?
            .and_then(|user| user.password_hash)
    };
    let current = request.current_password.unwrap_or_default();
    if !login.verify(current, stored).await? {
        return Err(ApiError::new(
            ErrorCode::AUTH_TOKEN_INVALID,
            "`current_password` is wrong",
        ));
    }
    let hashed = hash(request.password).await?;
    let mut tx = db.begin().await?;
    users::set_password(&mut tx, id, &hashed).await?;
    refresh_tokens::revoke_user(&mut tx, id).await?;
    audit(
        &mut tx,
        Some(principal),
        Some(&principal.tenant_id),
        "user.password_change",
        ("user", id),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
