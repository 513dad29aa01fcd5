//! Firewall policies: rows as stored (rules and stages as JSON text).

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{new_id, now_ms};

#[derive(Debug, Clone)]
pub struct PolicyRow {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub mode: String,
    pub scope: String,
    pub scope_id: Option<String>,
    pub stages: String,
    pub rules: String,
    pub created_at: i64,
    pub updated_at: i64,
}

fn from_row(row: &AnyRow) -> Result<PolicyRow, sqlx::Error> {
    Ok(PolicyRow {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        mode: row.try_get("mode")?,
        scope: row.try_get("scope")?,
        scope_id: row.try_get("scope_id")?,
        stages: row.try_get("stages")?,
        rules: row.try_get("rules")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// What a policy row holds besides its id, tenant and times.
pub struct PolicyFields<'a> {
    pub name: &'a str,
    pub mode: &'a str,
    pub scope: &'a str,
    pub scope_id: Option<&'a str>,
    pub stages: &'a str,
    pub rules: &'a str,
}

/// Inserts a policy; `None` when the tenant has one of this name.
pub async fn create(
    conn: &mut AnyConnection,
    tenant_id: &str,
    fields: &PolicyFields<'_>,
) -> Result<Option<PolicyRow>, sqlx::Error> {
    let now = now_ms();
    let row = sqlx::query(
        "INSERT INTO firewall_policies (id, tenant_id, name, mode, scope, scope_id, stages, \
         rules, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
         ON CONFLICT (tenant_id, name) DO NOTHING RETURNING *",
    )
    .bind(new_id("fwp"))
    .bind(tenant_id)
    .bind(fields.name)
    .bind(fields.mode)
    .bind(fields.scope)
    .bind(fields.scope_id)
    .bind(fields.stages)
    .bind(fields.rules)
    .bind(now)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Replaces a policy's fields; `None` when it is not the tenant's (or the name is taken).
pub async fn update(
    conn: &mut AnyConnection,
    tenant_id: &str,
    id: &str,
    fields: &PolicyFields<'_>,
) -> Result<Option<PolicyRow>, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE firewall_policies SET name = $1, mode = $2, scope = $3, scope_id = $4, \
         stages = $5, rules = $6, updated_at = $7 WHERE id = $8 AND tenant_id = $9 RETURNING *",
    )
    .bind(fields.name)
    .bind(fields.mode)
    .bind(fields.scope)
    .bind(fields.scope_id)
    .bind(fields.stages)
    .bind(fields.rules)
    .bind(now_ms())
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn get(
    conn: &mut AnyConnection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<PolicyRow>, sqlx::Error> {
    let row = sqlx::query("SELECT * FROM firewall_policies WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Every policy of a tenant, oldest first.
pub async fn list(
    conn: &mut AnyConnection,
    tenant_id: &str,
) -> Result<Vec<PolicyRow>, sqlx::Error> {
    sqlx::query("SELECT * FROM firewall_policies WHERE tenant_id = $1 ORDER BY created_at, id")
        .bind(tenant_id)
        .fetch_all(conn)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// Deletes a policy of the tenant; whether it existed.
pub async fn delete(
    conn: &mut AnyConnection,
    tenant_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query("DELETE FROM firewall_policies WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant_id)
        .execute(conn)
        .await?;
    Ok(result.rows_affected() > 0)
}
