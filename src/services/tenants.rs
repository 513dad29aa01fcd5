//! Tenants: platform admins create, list, change and delete them.

use serde::Deserialize;
use utoipa::ToSchema;

use super::{Actor, audit, validate_name};
use crate::config::Config;
use crate::db::{Db, modules, tenants};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::rbac::Permission;
use crate::records::{RateLimitSpec, Tenant};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub name: String,
    pub slug: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    pub name: Option<String>,
    /// `null` removes the tenant's limits.
    #[serde(default, deserialize_with = "crate::records::double_option")]
    #[schema(value_type = Option<RateLimitSpec>)]
    pub rate_limit: Option<Option<RateLimitSpec>>,
}

fn require_platform(actor: Actor<'_>) -> ApiResult<()> {
    match actor {
        Some(principal) => principal.require(Permission::PlatformAdmin),
        None => Ok(()),
    }
}

/// Slugs are URL- and key-safe: 2–63 of `a-z 0-9 -`, not starting or ending with `-`.
pub fn validate_slug(slug: &str) -> ApiResult<()> {
    let ok = (2..=63).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "`slug` must be 2-63 characters of a-z, 0-9 and `-`, not starting or ending with `-`",
        ))
    }
}

pub async fn create(
    db: &Db,
    config: &Config,
    actor: Actor<'_>,
    request: CreateTenant,
) -> ApiResult<Tenant> {
    require_platform(actor)?;
    validate_name("name", &request.name, 200)?;
    validate_slug(&request.slug)?;
    let mut tx = db.begin().await?;
    let tenant = tenants::create(&mut tx, request.name.trim(), &request.slug)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::CONFLICT, "a tenant with this slug exists"))?;
    for module in &config.default_modules {
        modules::set_enabled(&mut tx, &tenant.id, module, true).await?;
    }
    audit(
        &mut tx,
        actor,
        Some(&tenant.id),
        "tenant.create",
        ("tenant", &tenant.id),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(tenant)
}

pub async fn list(db: &Db, actor: Actor<'_>) -> ApiResult<Vec<Tenant>> {
    let mut conn = db.pool.acquire().await?;
    match actor {
        Some(principal) if !principal.is_platform_admin() => {
            // Everyone else sees only their own tenant.
            Ok(tenants::get(&mut conn, &principal.tenant_id)
                .await?
                .into_iter()
                .collect())
        }
        _ => Ok(tenants::list(&mut conn).await?),
    }
}

/// A tenant visible to the actor (own tenant, or any for platform admins).
pub async fn get(db: &Db, actor: Actor<'_>, id: &str) -> ApiResult<Tenant> {
    if let Some(principal) = actor {
        principal.target_tenant(Some(id))?;
    }
    let mut conn = db.pool.acquire().await?;
    tenants::get(&mut conn, id)
        .await?
        .filter(|t| t.status == tenants::ACTIVE)
        .ok_or_else(|| ApiError::not_found("tenant"))
}

pub async fn update(
    db: &Db,
    actor: Actor<'_>,
    id: &str,
    request: UpdateTenant,
) -> ApiResult<Tenant> {
    if let Some(principal) = actor
        && !principal.is_platform_admin()
    {
        principal.target_tenant(Some(id))?;
        return Err(ApiError::permission_denied(
            Permission::PlatformAdmin.as_str(),
        ));
    }
    if let Some(name) = &request.name {
        validate_name("name", name, 200)?;
    }
    let mut tx = db.begin().await?;
    let tenant = tenants::update(
        &mut tx,
        id,
        request.name.as_deref().map(str::trim),
        request.rate_limit.as_ref().map(Option::as_ref),
    )
    .await?
    .ok_or_else(|| ApiError::not_found("tenant"))?;
    let detail = serde_json::json!({ "name": request.name, "rate_limit": request.rate_limit });
    audit(
        &mut tx,
        actor,
        Some(id),
        "tenant.update",
        ("tenant", id),
        Some(detail),
    )
    .await?;
    tx.commit().await?;
    Ok(tenant)
}

pub async fn delete(db: &Db, actor: Actor<'_>, id: &str) -> ApiResult<()> {
    if let Some(principal) = actor
        && !principal.is_platform_admin()
    {
        principal.target_tenant(Some(id))?;
        return Err(ApiError::permission_denied(
            Permission::PlatformAdmin.as_str(),
        ));
    }
    let mut tx = db.begin().await?;
    let tenant = tenants::get(&mut tx, id)
        .await?
        .filter(|t| t.status == tenants::ACTIVE)
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    if tenant.slug == tenants::PLATFORM_SLUG {
        return Err(ApiError::new(
            ErrorCode::CONFLICT,
            "the platform tenant cannot be deleted",
        ));
    }
    tenants::soft_delete(&mut tx, id).await?;
    audit(
        &mut tx,
        actor,
        Some(id),
        "tenant.delete",
        ("tenant", id),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
