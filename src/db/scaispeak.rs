//! ScaiSpeak tenant policies.

use sqlx::{AnyConnection, Row};

use super::now_ms;
use crate::services::backends::Backend;

pub async fn get_allowed(
    conn: &mut AnyConnection,
    tenant_id: &str,
) -> Result<Option<Vec<Backend>>, sqlx::Error> {
    let row = sqlx::query("SELECT allowed_backends FROM scaispeak_policies WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_optional(conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let allowed: String = row.try_get("allowed_backends")?;
    serde_json::from_str(&allowed)
        .map(Some)
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

pub async fn put_allowed(
    conn: &mut AnyConnection,
    tenant_id: &str,
    allowed: &[Backend],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO scaispeak_policies (tenant_id, allowed_backends, updated_at) \
         VALUES ($1, $2, $3) ON CONFLICT (tenant_id) DO UPDATE SET \
         allowed_backends = excluded.allowed_backends, updated_at = excluded.updated_at",
    )
    .bind(tenant_id)
    .bind(serde_json::to_string(allowed).unwrap_or_default())
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}
