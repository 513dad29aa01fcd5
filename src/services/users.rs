//! Users: tenant admins create and list the users of their tenant.

use serde::Deserialize;
use utoipa::ToSchema;

use super::api_keys::authorize_assignment;
use super::{Actor, admin_tenant, audit};
use crate::auth::password;
use crate::db::roles::{self as role_db, SubjectKind};
use crate::db::{Db, tenants, users};
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
    if request.password.chars().count() < password::MIN_LENGTH || request.password.len() > 1024 {
        return Err(ApiError::invalid(format!(
            "`password` must be {} to 1024 characters",
            password::MIN_LENGTH
        )));
    }
    let roles = request
        .roles
        .unwrap_or_else(|| vec![rbac::MEMBER.to_owned()]);
    let permissions = request.permissions.unwrap_or_default();
    let plain = request.password;
    let hash = tokio::task::spawn_blocking(move || password::hash(&plain))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let mut tx = db.begin().await?;
    tenants::get(&mut tx, &tenant_id)
        .await?
        .filter(|t| t.status == tenants::ACTIVE)
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    let role_ids = authorize_assignment(&mut tx, actor, &tenant_id, &roles, &permissions).await?;
    let row = users::create(&mut tx, &tenant_id, &request.email, Some(&hash))
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

pub async fn list(db: &Db, actor: Actor<'_>, tenant_id: Option<&str>) -> ApiResult<Vec<User>> {
    let tenant_id = admin_tenant(actor, tenant_id)?;
    let mut conn = db.pool.acquire().await?;
    let rows = users::list(&mut conn, &tenant_id).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(to_user(&mut conn, row).await?);
    }
    Ok(out)
}

/// A user visible to the actor: in their tenant (tenant admin) or any (platform admin).
pub async fn get(db: &Db, actor: Actor<'_>, id: &str) -> ApiResult<User> {
    let mut conn = db.pool.acquire().await?;
    let row = users::get(&mut conn, id)
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
    to_user(&mut conn, row).await
}
