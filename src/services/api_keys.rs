//! API keys: create (shown once), list, read, revoke.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Actor, admin_tenant, audit, ensure_covered, validate_name, validate_permissions};
use crate::auth::api_key;
use crate::db::page::Page;
use crate::db::roles::{self as role_db, SubjectKind};
use crate::db::{Db, api_keys, new_id, now_ms, tenants};
use crate::error::{ApiError, ApiResult};
use crate::rbac;
use crate::rbac::Permission;
use crate::records::{ApiKeyInfo, RateLimitSpec, Timestamp};

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: String,
    /// Another tenant (platform admins only); default the caller's.
    pub tenant_id: Option<String>,
    /// Role names; default `["member"]` when neither roles nor permissions are given.
    pub roles: Option<Vec<String>>,
    pub permissions: Option<Vec<String>>,
    pub expires_at: Option<Timestamp>,
    pub rate_limit: Option<RateLimitSpec>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    /// The key itself: shown only in this response.
    pub key: String,
}

/// Resolves role names in a tenant and checks the actor covers their permissions and the
/// direct ones. Returns the role ids.
pub async fn authorize_assignment(
    conn: &mut sqlx::AnyConnection,
    actor: Actor<'_>,
    tenant_id: &str,
    roles: &[String],
    permissions: &[String],
) -> ApiResult<Vec<String>> {
    validate_permissions(permissions)?;
    let resolved = role_db::resolve(&mut *conn, tenant_id, roles)
        .await?
        .map_err(|unknown| ApiError::invalid(format!("unknown role `{unknown}`")))?;
    let role_ids: Vec<String> = resolved.into_iter().map(|(id, _)| id).collect();
    let mut requested = role_db::permissions_of(&mut *conn, &role_ids).await?;
    requested.extend(permissions.iter().cloned());
    // The role, and what grants what it grants (`*`, `platform:admin`, `platform:*`,
    // directly or through a custom role), exist only in the platform tenant.
    let platform_role = roles.iter().any(|r| r == rbac::PLATFORM_ADMIN);
    let platform_wide = requested
        .iter()
        .any(|p| rbac::covers(p, rbac::Permission::PlatformAdmin.as_str()));
    let in_platform_tenant = match platform_role || platform_wide {
        true => is_platform_tenant(conn, tenant_id).await?,
        false => true,
    };
    let refusal = || {
        ApiError::invalid(
            "`platform_admin` (or `*`, `platform:admin`) can be held only in the platform tenant",
        )
    };
    if platform_role && !in_platform_tenant {
        return Err(refusal());
    }
    // Asking for what the caller lacks is 403 before the tenant rule for permissions.
    ensure_covered(actor, &requested)?;
    if platform_wide && !in_platform_tenant {
        return Err(refusal());
    }
    Ok(role_ids)
}

/// Whether `tenant_id` is the platform tenant (where platform-wide grants may exist).
pub async fn is_platform_tenant(
    conn: &mut sqlx::AnyConnection,
    tenant_id: &str,
) -> ApiResult<bool> {
    Ok(tenants::get(&mut *conn, tenant_id)
        .await?
        .is_some_and(|t| t.slug == tenants::PLATFORM_SLUG))
}

pub async fn create(db: &Db, actor: Actor<'_>, request: CreateApiKey) -> ApiResult<CreatedApiKey> {
    let tenant_id = admin_tenant(actor, request.tenant_id.as_deref())?;
    create_with_key(db, actor, &tenant_id, request, api_key::generate()).await
}

/// Creates a key with a given value (bootstrap uses an operator-chosen one).
pub async fn create_with_key(
    db: &Db,
    actor: Actor<'_>,
    tenant_id: &str,
    request: CreateApiKey,
    key: String,
) -> ApiResult<CreatedApiKey> {
    validate_name("name", &request.name, 200)?;
    if request.expires_at.is_some_and(|t| t.0 <= now_ms()) {
        return Err(ApiError::invalid("`expires_at` is in the past"));
    }
    let (roles, permissions) = match (request.roles, request.permissions) {
        (None, None) => (vec![rbac::MEMBER.to_owned()], Vec::new()),
        (roles, permissions) => (roles.unwrap_or_default(), permissions.unwrap_or_default()),
    };
    let mut tx = db.begin().await?;
    tenants::get(&mut tx, tenant_id)
        .await?
        .filter(|t| t.status == tenants::ACTIVE)
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    let role_ids = authorize_assignment(&mut tx, actor, tenant_id, &roles, &permissions).await?;
    let id = new_id("key");
    let row = api_keys::insert(
        &mut tx,
        api_keys::NewApiKey {
            id: &id,
            tenant_id,
            name: request.name.trim(),
            key_hash: &api_key::hash(&key),
            key_prefix: &api_key::display_prefix(&key),
            created_by: actor.map(|p| p.subject_id()),
            rate_limit: request.rate_limit.as_ref(),
            expires_at: request.expires_at.map(|t| t.0),
        },
    )
    .await?;
    role_db::assign(&mut tx, SubjectKind::ApiKey, &id, &role_ids).await?;
    role_db::grant(&mut tx, SubjectKind::ApiKey, &id, &permissions).await?;
    let detail = serde_json::json!({ "roles": roles, "permissions": permissions });
    audit(
        &mut tx,
        actor,
        Some(tenant_id),
        "api_key.create",
        ("api_key", &id),
        Some(detail),
    )
    .await?;
    let info = info(&mut tx, row).await?;
    tx.commit().await?;
    Ok(CreatedApiKey { info, key })
}

async fn info(conn: &mut sqlx::AnyConnection, row: api_keys::ApiKeyRow) -> ApiResult<ApiKeyInfo> {
    let (roles, permissions) = role_db::assignments(conn, SubjectKind::ApiKey, &row.id).await?;
    Ok(ApiKeyInfo {
        id: row.id,
        tenant_id: row.tenant_id,
        name: row.name,
        key_prefix: row.key_prefix,
        roles,
        permissions,
        rate_limit: row.rate_limit,
        created_by: row.created_by,
        created_at: Timestamp(row.created_at),
        expires_at: row.expires_at.map(Timestamp),
        revoked_at: row.revoked_at.map(Timestamp),
        last_used_at: row.last_used_at.map(Timestamp),
    })
}

/// A page of a tenant's keys (`active` or `revoked` ones, if `status` says), oldest
/// first; the cursor of the next page when there is one.
pub async fn list(
    db: &Db,
    actor: Actor<'_>,
    tenant_id: Option<&str>,
    status: Option<&str>,
    page: &Page,
) -> ApiResult<(Vec<ApiKeyInfo>, Option<String>)> {
    let tenant_id = admin_tenant(actor, tenant_id)?;
    let revoked = match status {
        None => None,
        Some("active") => Some(false),
        Some("revoked") => Some(true),
        Some(_) => return Err(ApiError::invalid("`status` must be `active` or `revoked`")),
    };
    let mut conn = db.pool.acquire().await?;
    let rows = api_keys::list(&mut conn, &tenant_id, revoked, page).await?;
    let (rows, next) = page.split(rows, |row| &row.id);
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(info(&mut conn, row).await?);
    }
    Ok((out, next))
}

/// Finds a key by id within the tenants the actor administers.
async fn find(
    conn: &mut sqlx::AnyConnection,
    actor: Actor<'_>,
    id: &str,
) -> ApiResult<api_keys::ApiKeyRow> {
    let not_found = || ApiError::not_found("API key");
    match actor {
        Some(principal) if !principal.is_platform_admin() => {
            principal.require(Permission::TenantAdmin)?;
            api_keys::get_in_tenant(conn, &principal.tenant_id, id)
                .await?
                .ok_or_else(not_found)
        }
        _ => {
            let row = sqlx::query("SELECT tenant_id FROM api_keys WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(not_found)?;
            let tenant_id: String = sqlx::Row::try_get(&row, "tenant_id")?;
            api_keys::get_in_tenant(conn, &tenant_id, id)
                .await?
                .ok_or_else(not_found)
        }
    }
}

pub async fn get(db: &Db, actor: Actor<'_>, id: &str) -> ApiResult<ApiKeyInfo> {
    let mut conn = db.pool.acquire().await?;
    let row = find(&mut conn, actor, id).await?;
    info(&mut conn, row).await
}

/// Revokes a key; it stops authenticating at once (the caller invalidates the cache).
pub async fn revoke(db: &Db, actor: Actor<'_>, id: &str) -> ApiResult<ApiKeyInfo> {
    let mut tx = db.begin().await?;
    let row = find(&mut tx, actor, id).await?;
    api_keys::revoke(&mut tx, &row.tenant_id, id).await?;
    audit(
        &mut tx,
        actor,
        Some(&row.tenant_id),
        "api_key.revoke",
        ("api_key", id),
        None,
    )
    .await?;
    let row = api_keys::get_in_tenant(&mut tx, &row.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    let info = info(&mut tx, row).await?;
    tx.commit().await?;
    Ok(info)
}
