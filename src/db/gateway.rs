//! Upstream backends, models with their routing policies, and per-tenant model access.

use sqlx::{AnyConnection, Row};

use super::now_ms;

#[derive(Debug, Clone, PartialEq)]
pub struct BackendRow {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub base_url: String,
    pub api_key: Option<String>,
    pub timeout_s: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

fn backend_row(row: &sqlx::any::AnyRow) -> Result<BackendRow, sqlx::Error> {
    Ok(BackendRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        base_url: row.try_get("base_url")?,
        api_key: row.try_get("api_key")?,
        timeout_s: row.try_get("timeout_s")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub async fn insert_backend(conn: &mut AnyConnection, b: &BackendRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO gateway_backends (id, name, kind, base_url, api_key, timeout_s, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&b.id)
    .bind(&b.name)
    .bind(&b.kind)
    .bind(&b.base_url)
    .bind(&b.api_key)
    .bind(b.timeout_s)
    .bind(b.created_at)
    .bind(b.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn update_backend(conn: &mut AnyConnection, b: &BackendRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE gateway_backends SET name = $2, base_url = $3, api_key = $4, timeout_s = $5, \
         updated_at = $6 WHERE id = $1",
    )
    .bind(&b.id)
    .bind(&b.name)
    .bind(&b.base_url)
    .bind(&b.api_key)
    .bind(b.timeout_s)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete_backend(conn: &mut AnyConnection, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM gateway_backends WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn backends(conn: &mut AnyConnection) -> Result<Vec<BackendRow>, sqlx::Error> {
    let rows = sqlx::query("SELECT * FROM gateway_backends ORDER BY created_at, id")
        .fetch_all(conn)
        .await?;
    rows.iter().map(backend_row).collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelRow {
    pub id: String,
    pub slug: String,
    pub tenant_id: Option<String>,
    /// JSON array.
    pub capabilities: String,
    /// JSON routing policy.
    pub routing: String,
    /// JSON pricing.
    pub pricing: Option<String>,
    /// Tokens of prompt and completion together at most (`None`: no limit).
    pub context_length: Option<i64>,
    /// JSON cache policy (`None`: not cached).
    pub cache: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

fn model_row(row: &sqlx::any::AnyRow) -> Result<ModelRow, sqlx::Error> {
    Ok(ModelRow {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        tenant_id: row.try_get("tenant_id")?,
        capabilities: row.try_get("capabilities")?,
        routing: row.try_get("routing")?,
        pricing: row.try_get("pricing")?,
        context_length: row.try_get("context_length")?,
        cache: row.try_get("cache")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub async fn insert_model(conn: &mut AnyConnection, m: &ModelRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO gateway_models (id, slug, tenant_id, capabilities, routing, pricing, \
         created_at, updated_at, context_length, cache) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&m.id)
    .bind(&m.slug)
    .bind(&m.tenant_id)
    .bind(&m.capabilities)
    .bind(&m.routing)
    .bind(&m.pricing)
    .bind(m.created_at)
    .bind(m.updated_at)
    .bind(m.context_length)
    .bind(&m.cache)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn update_model(conn: &mut AnyConnection, m: &ModelRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE gateway_models SET capabilities = $2, routing = $3, pricing = $4, \
         updated_at = $5, context_length = $6, cache = $7 WHERE id = $1",
    )
    .bind(&m.id)
    .bind(&m.capabilities)
    .bind(&m.routing)
    .bind(&m.pricing)
    .bind(now_ms())
    .bind(m.context_length)
    .bind(&m.cache)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete_model(conn: &mut AnyConnection, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM gateway_models WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn models(conn: &mut AnyConnection) -> Result<Vec<ModelRow>, sqlx::Error> {
    let rows = sqlx::query("SELECT * FROM gateway_models ORDER BY slug, created_at")
        .fetch_all(conn)
        .await?;
    rows.iter().map(model_row).collect()
}

/// Every (tenant, slug, rule) of `/v1/model-access`.
pub async fn access_rules(
    conn: &mut AnyConnection,
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    let rows = sqlx::query("SELECT tenant_id, slug, rule FROM model_access ORDER BY slug")
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("tenant_id")?,
                row.try_get("slug")?,
                row.try_get("rule")?,
            ))
        })
        .collect()
}

/// Replaces a tenant's access rules.
pub async fn replace_access(
    conn: &mut AnyConnection,
    tenant_id: &str,
    allow: &[String],
    deny: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM model_access WHERE tenant_id = $1")
        .bind(tenant_id)
        .execute(&mut *conn)
        .await?;
    for (rule, slugs) in [("allow", allow), ("deny", deny)] {
        for slug in slugs {
            sqlx::query("INSERT INTO model_access (tenant_id, slug, rule) VALUES ($1, $2, $3)")
                .bind(tenant_id)
                .bind(slug)
                .bind(rule)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}
