//! The audit log: one row per administrative change, written in the same transaction as
//! the change so neither exists without the other.

use sqlx::AnyConnection;

use super::{new_id, now_ms};

pub struct AuditEntry<'a> {
    pub tenant_id: Option<&'a str>,
    pub actor_kind: &'a str,
    pub actor_id: &'a str,
    pub action: &'a str,
    pub target_kind: &'a str,
    pub target_id: &'a str,
    pub detail: Option<serde_json::Value>,
}

pub async fn record(conn: &mut AnyConnection, entry: AuditEntry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (id, tenant_id, actor_kind, actor_id, action, target_kind, \
         target_id, detail, request_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(new_id("aud"))
    .bind(entry.tenant_id)
    .bind(entry.actor_kind)
    .bind(entry.actor_id)
    .bind(entry.action)
    .bind(entry.target_kind)
    .bind(entry.target_id)
    .bind(entry.detail.map(|d| d.to_string()))
    .bind(crate::request_id::current())
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}
