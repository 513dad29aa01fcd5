//! Custom roles and grants of roles/permissions to existing users and keys.

use serde::Deserialize;
use utoipa::ToSchema;

use super::api_keys::authorize_assignment;
use super::{Actor, admin_tenant, audit, validate_name, validate_permissions};
use crate::db::roles::{self as role_db, SubjectKind};
use crate::db::{Db, api_keys, users};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::records::Role;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRole {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub permissions: Vec<String>,
    pub tenant_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGrant {
    /// `user` or `api_key`.
    pub subject_kind: String,
    pub subject_id: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
}

pub async fn list(db: &Db, actor: Actor<'_>, tenant_id: Option<&str>) -> ApiResult<Vec<Role>> {
    let tenant_id = admin_tenant(actor, tenant_id)?;
    let mut conn = db.pool.acquire().await?;
    Ok(role_db::list(&mut conn, &tenant_id).await?)
}

pub async fn create(db: &Db, actor: Actor<'_>, request: CreateRole) -> ApiResult<Role> {
    let tenant_id = admin_tenant(actor, request.tenant_id.as_deref())?;
    validate_name("name", &request.name, 100)?;
    if request.description.len() > 1000 {
        return Err(ApiError::invalid(
            "`description` is longer than 1000 characters",
        ));
    }
    validate_permissions(&request.permissions)?;
    super::ensure_covered(actor, &request.permissions)?;
    let mut tx = db.begin().await?;
    let platform_wide = request
        .permissions
        .iter()
        .any(|p| crate::rbac::covers(p, crate::rbac::Permission::PlatformAdmin.as_str()));
    if platform_wide && !super::api_keys::is_platform_tenant(&mut tx, &tenant_id).await? {
        return Err(ApiError::invalid(
            "a role with `*` or `platform:admin` can exist only in the platform tenant",
        ));
    }
    let role = role_db::create_custom(
        &mut tx,
        &tenant_id,
        request.name.trim(),
        &request.description,
        &request.permissions,
    )
    .await?
    .ok_or_else(|| ApiError::new(ErrorCode::CONFLICT, "a role with this name exists"))?;
    audit(
        &mut tx,
        actor,
        Some(&tenant_id),
        "role.create",
        ("role", &role.id),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(role)
}

pub async fn delete(db: &Db, actor: Actor<'_>, tenant_id: Option<&str>, id: &str) -> ApiResult<()> {
    let tenant_id = admin_tenant(actor, tenant_id)?;
    let mut tx = db.begin().await?;
    if !role_db::delete_custom(&mut tx, &tenant_id, id).await? {
        return Err(ApiError::not_found("role"));
    }
    audit(
        &mut tx,
        actor,
        Some(&tenant_id),
        "role.delete",
        ("role", id),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The subject of a grant and its tenant, which the actor must administer (404 for
/// subjects of other tenants).
async fn grant_subject(
    conn: &mut sqlx::AnyConnection,
    actor: Actor<'_>,
    request: &CreateGrant,
) -> ApiResult<(SubjectKind, String)> {
    let kind = match request.subject_kind.as_str() {
        "user" => SubjectKind::User,
        "api_key" => SubjectKind::ApiKey,
        _ => {
            return Err(ApiError::invalid(
                "`subject_kind` must be `user` or `api_key`",
            ));
        }
    };
    let subject_tenant = match kind {
        SubjectKind::User => users::get(&mut *conn, &request.subject_id)
            .await?
            .map(|u| u.tenant_id),
        SubjectKind::ApiKey => {
            let row = sqlx::query("SELECT tenant_id FROM api_keys WHERE id = $1")
                .bind(&request.subject_id)
                .fetch_optional(&mut *conn)
                .await?;
            row.map(|r| sqlx::Row::try_get::<String, _>(&r, "tenant_id"))
                .transpose()?
        }
    };
    let not_found = || ApiError::not_found(kind.as_str());
    let tenant_id = subject_tenant.ok_or_else(not_found)?;
    if let Some(principal) = actor {
        principal
            .require_tenant_admin(&tenant_id)
            .map_err(|error| {
                if error.code == ErrorCode::NOT_FOUND {
                    not_found()
                } else {
                    error
                }
            })?;
    }
    if kind == SubjectKind::ApiKey {
        api_keys::get_in_tenant(&mut *conn, &tenant_id, &request.subject_id)
            .await?
            .ok_or_else(not_found)?;
    }
    Ok((kind, tenant_id))
}

/// Adds roles and/or direct permissions to a user or key of the actor's tenant.
pub async fn grant(db: &Db, actor: Actor<'_>, request: CreateGrant) -> ApiResult<()> {
    let mut tx = db.begin().await?;
    let (kind, tenant_id) = grant_subject(&mut tx, actor, &request).await?;
    let role_ids = authorize_assignment(
        &mut tx,
        actor,
        &tenant_id,
        &request.roles,
        &request.permissions,
    )
    .await?;
    role_db::assign(&mut tx, kind, &request.subject_id, &role_ids).await?;
    role_db::grant(&mut tx, kind, &request.subject_id, &request.permissions).await?;
    let detail = serde_json::json!({ "roles": request.roles, "permissions": request.permissions });
    audit(
        &mut tx,
        actor,
        Some(&tenant_id),
        "grant.create",
        (kind.as_str(), &request.subject_id),
        Some(detail),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Takes roles and/or direct permissions away from a user or key of the actor's tenant
/// (what it does not hold is ignored; an unknown role name is 400).
pub async fn revoke(db: &Db, actor: Actor<'_>, request: CreateGrant) -> ApiResult<()> {
    let mut tx = db.begin().await?;
    let (kind, tenant_id) = grant_subject(&mut tx, actor, &request).await?;
    let role_ids = match role_db::resolve(&mut tx, &tenant_id, &request.roles).await? {
        Ok(found) => found.into_iter().map(|(id, _)| id).collect::<Vec<_>>(),
        Err(unknown) => return Err(ApiError::invalid(format!("unknown role `{unknown}`"))),
    };
    role_db::unassign(
        &mut tx,
        kind,
        &request.subject_id,
        &role_ids,
        &request.permissions,
    )
    .await?;
    let detail = serde_json::json!({ "roles": request.roles, "permissions": request.permissions });
    audit(
        &mut tx,
        actor,
        Some(&tenant_id),
        "grant.revoke",
        (kind.as_str(), &request.subject_id),
        Some(detail),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRole {
    pub description: Option<String>,
    /// Replaces the role's permissions (the actor must hold each).
    pub permissions: Option<Vec<String>>,
}

/// Changes a custom role of the tenant; built-in roles cannot change (404 as if absent
/// from the tenant's custom roles, 409 for a built-in).
pub async fn update(
    db: &Db,
    actor: Actor<'_>,
    tenant_id: Option<&str>,
    id: &str,
    request: UpdateRole,
) -> ApiResult<Role> {
    let tenant_id = admin_tenant(actor, tenant_id)?;
    if request.description.as_ref().is_some_and(|d| d.len() > 1000) {
        return Err(ApiError::invalid(
            "`description` is longer than 1000 characters",
        ));
    }
    if let Some(permissions) = &request.permissions {
        validate_permissions(permissions)?;
        super::ensure_covered(actor, permissions)?;
        let platform_wide = permissions
            .iter()
            .any(|p| crate::rbac::covers(p, crate::rbac::Permission::PlatformAdmin.as_str()));
        let mut conn = db.pool.acquire().await?;
        if platform_wide && !super::api_keys::is_platform_tenant(&mut conn, &tenant_id).await? {
            return Err(ApiError::invalid(
                "a role with `*` or `platform:admin` can exist only in the platform tenant",
            ));
        }
    }
    let mut tx = db.begin().await?;
    let changed = role_db::update_custom(
        &mut tx,
        &tenant_id,
        id,
        request.description.as_deref(),
        request.permissions.as_deref(),
    )
    .await?;
    if !changed {
        let builtin = role_db::get(&mut tx, &tenant_id, id)
            .await?
            .is_some_and(|role| role.builtin);
        return Err(match builtin {
            true => ApiError::new(ErrorCode::CONFLICT, "built-in roles cannot change"),
            false => ApiError::not_found("role"),
        });
    }
    audit(
        &mut tx,
        actor,
        Some(&tenant_id),
        "role.update",
        ("role", id),
        None,
    )
    .await?;
    let role = role_db::get(&mut tx, &tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("role"))?;
    tx.commit().await?;
    Ok(role)
}
