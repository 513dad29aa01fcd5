//! API keys: stored only as a SHA-256 hash of the key, with a short display prefix.

use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::now_ms;
use super::page::{Order, Page};
use crate::records::{RateLimitSpec, json_column};

#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub key_prefix: String,
    pub created_by: Option<String>,
    pub rate_limit: Option<RateLimitSpec>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

const COLUMNS: &str = "id, tenant_id, name, key_prefix, created_by, rate_limit, created_at, expires_at, revoked_at, last_used_at";

fn from_row(row: &AnyRow) -> Result<ApiKeyRow, sqlx::Error> {
    Ok(ApiKeyRow {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        key_prefix: row.try_get("key_prefix")?,
        created_by: row.try_get("created_by")?,
        rate_limit: json_column(row.try_get("rate_limit")?),
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

pub struct NewApiKey<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub name: &'a str,
    pub key_hash: &'a str,
    pub key_prefix: &'a str,
    pub created_by: Option<&'a str>,
    pub rate_limit: Option<&'a RateLimitSpec>,
    pub expires_at: Option<i64>,
}

pub async fn insert(
    conn: &mut AnyConnection,
    key: NewApiKey<'_>,
) -> Result<ApiKeyRow, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO api_keys (id, tenant_id, name, key_hash, key_prefix, created_by, \
         rate_limit, created_at, expires_at, revoked_at, last_used_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL) RETURNING {COLUMNS}"
    )))
    .bind(key.id)
    .bind(key.tenant_id)
    .bind(key.name)
    .bind(key.key_hash)
    .bind(key.key_prefix)
    .bind(key.created_by)
    .bind(
        key.rate_limit
            .map(|r| serde_json::to_string(r).unwrap_or_default()),
    )
    .bind(now_ms())
    .bind(key.expires_at)
    .fetch_one(conn)
    .await?;
    from_row(&row)
}

pub async fn get_by_hash(
    conn: &mut AnyConnection,
    key_hash: &str,
) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1"
    )))
    .bind(key_hash)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// A key by id in any tenant (platform-admin operations only).
pub async fn get_by_id(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// A key by id, only if it belongs to `tenant_id` (tenant scoping is in the query).
pub async fn get_in_tenant(
    conn: &mut AnyConnection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE id = $1 AND tenant_id = $2"
    )))
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn list(
    conn: &mut AnyConnection,
    tenant_id: &str,
    revoked: Option<bool>,
    page: &Page,
) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
    let mut sql = format!("SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1");
    match revoked {
        Some(true) => sql.push_str(" AND revoked_at IS NOT NULL"),
        Some(false) => sql.push_str(" AND revoked_at IS NULL"),
        None => {}
    }
    sql.push_str(&page.sql("api_keys", 2, Order::Oldest));
    page.bind(sqlx::query(AssertSqlSafe(sql)).bind(tenant_id))
        .fetch_all(conn)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// Revokes a key of the tenant. Returns whether an unrevoked key was revoked.
pub async fn revoke(
    conn: &mut AnyConnection,
    tenant_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL",
    )
    .bind(now_ms())
    .bind(id)
    .bind(tenant_id)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Notes that the key authenticated now.
pub async fn touch(conn: &mut AnyConnection, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
        .bind(super::now_ms())
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
