//! Module enablement per tenant.

use sqlx::{AnyConnection, Row};

use super::now_ms;

/// Sets a module on or off for a tenant.
pub async fn set_enabled(
    conn: &mut AnyConnection,
    tenant_id: &str,
    module_id: &str,
    enabled: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tenant_modules (tenant_id, module_id, enabled, updated_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, module_id) \
         DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at",
    )
    .bind(tenant_id)
    .bind(module_id)
    .bind(i64::from(enabled))
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// Module ids enabled for a tenant.
pub async fn enabled_for(
    conn: &mut AnyConnection,
    tenant_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query(
        "SELECT module_id FROM tenant_modules WHERE tenant_id = $1 AND enabled = 1 ORDER BY module_id",
    )
    .bind(tenant_id)
    .fetch_all(conn)
    .await?
    .iter()
    .map(|row| row.try_get("module_id"))
    .collect()
}
