//! Tenants: create, read, list, update, soft delete.

use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{new_id, now_ms};
use crate::records::{RateLimitSpec, Tenant, Timestamp, json_column};

pub const ACTIVE: &str = "active";
pub const DELETED: &str = "deleted";
/// The bootstrap tenant; it has every module enabled.
pub const PLATFORM_SLUG: &str = "platform";

const COLUMNS: &str = "id, slug, name, status, rate_limit, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<Tenant, sqlx::Error> {
    Ok(Tenant {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        status: row.try_get("status")?,
        rate_limit: json_column(row.try_get("rate_limit")?),
        created_at: Timestamp(row.try_get("created_at")?),
        updated_at: Timestamp(row.try_get("updated_at")?),
    })
}

/// Inserts a tenant; `None` when the slug is taken.
pub async fn create(
    conn: &mut AnyConnection,
    name: &str,
    slug: &str,
) -> Result<Option<Tenant>, sqlx::Error> {
    let now = now_ms();
    let row = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO tenants ({COLUMNS}) VALUES ($1, $2, $3, $4, NULL, $5, $5) \
         ON CONFLICT (slug) DO NOTHING RETURNING {COLUMNS}"
    )))
    .bind(new_id("ten"))
    .bind(slug)
    .bind(name)
    .bind(ACTIVE)
    .bind(now)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// A tenant by id, deleted ones included (callers decide what deleted means).
pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<Tenant>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenants WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn get_by_slug(
    conn: &mut AnyConnection,
    slug: &str,
) -> Result<Option<Tenant>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenants WHERE slug = $1"
    )))
    .bind(slug)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Active tenants, oldest first.
pub async fn list(conn: &mut AnyConnection) -> Result<Vec<Tenant>, sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenants WHERE status = $1 ORDER BY created_at, id"
    )))
    .bind(ACTIVE)
    .fetch_all(conn)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

/// Changes name and/or rate limit of an active tenant; `None` if there is none.
pub async fn update(
    conn: &mut AnyConnection,
    id: &str,
    name: Option<&str>,
    rate_limit: Option<Option<&RateLimitSpec>>,
) -> Result<Option<Tenant>, sqlx::Error> {
    let Some(current) = get(&mut *conn, id).await?.filter(|t| t.status == ACTIVE) else {
        return Ok(None);
    };
    let name = name.unwrap_or(&current.name);
    let rate_limit = match rate_limit {
        Some(spec) => spec.map(|s| serde_json::to_string(s).unwrap_or_default()),
        None => current
            .rate_limit
            .as_ref()
            .map(|s| serde_json::to_string(s).unwrap_or_default()),
    };
    let row = sqlx::query(AssertSqlSafe(format!(
        "UPDATE tenants SET name = $1, rate_limit = $2, updated_at = $3 WHERE id = $4 \
         RETURNING {COLUMNS}"
    )))
    .bind(name)
    .bind(rate_limit)
    .bind(now_ms())
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Marks an active tenant deleted; its keys and users stop authenticating. Returns
/// whether a tenant was deleted.
pub async fn soft_delete(conn: &mut AnyConnection, id: &str) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE tenants SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4",
    )
    .bind(DELETED)
    .bind(now_ms())
    .bind(id)
    .bind(ACTIVE)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}
