//! ScaiEcho tenant policies.

use sqlx::{AnyConnection, Row};

use super::now_ms;
use crate::scaiecho::policy::Policy;

pub async fn get_policy(
    conn: &mut AnyConnection,
    tenant_id: &str,
) -> Result<Option<Policy>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT allowed_backends, backend_preference, inline_threshold_seconds \
         FROM scaiecho_policies WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let allowed: String = row.try_get("allowed_backends")?;
    let preference: String = row.try_get("backend_preference")?;
    let decode = |e: serde_json::Error| sqlx::Error::Decode(Box::new(e));
    Ok(Some(Policy {
        allowed_backends: serde_json::from_str(&allowed).map_err(decode)?,
        backend_preference: serde_json::from_value(serde_json::Value::String(preference))
            .map_err(decode)?,
        inline_threshold_seconds: row.try_get("inline_threshold_seconds")?,
    }))
}

pub async fn put_policy(
    conn: &mut AnyConnection,
    tenant_id: &str,
    policy: &Policy,
) -> Result<(), sqlx::Error> {
    let preference = serde_json::to_value(policy.backend_preference)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    sqlx::query(
        "INSERT INTO scaiecho_policies \
         (tenant_id, allowed_backends, backend_preference, inline_threshold_seconds, updated_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id) DO UPDATE SET \
         allowed_backends = excluded.allowed_backends, \
         backend_preference = excluded.backend_preference, \
         inline_threshold_seconds = excluded.inline_threshold_seconds, \
         updated_at = excluded.updated_at",
    )
    .bind(tenant_id)
    .bind(serde_json::to_string(&policy.allowed_backends).unwrap_or_default())
    .bind(preference)
    .bind(policy.inline_threshold_seconds)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}
