//! ScaiEcho tenant policies. Stored as columns, read into whatever serde type the
//! module defines (`scaiecho::policy::Policy`): the fields `allowed_backends` (a JSON
//! array), `backend_preference` (a string) and `inline_threshold_seconds`.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sqlx::{AnyConnection, Row};

use super::now_ms;

pub async fn get_policy<P: DeserializeOwned>(
    conn: &mut AnyConnection,
    tenant_id: &str,
) -> Result<Option<P>, sqlx::Error> {
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
    let threshold: f64 = row.try_get("inline_threshold_seconds")?;
    let decode = |e: serde_json::Error| sqlx::Error::Decode(Box::new(e));
    let allowed: Value = serde_json::from_str(&allowed).map_err(decode)?;
    serde_json::from_value(json!({
        "allowed_backends": allowed,
        "backend_preference": preference,
        "inline_threshold_seconds": threshold,
    }))
    .map(Some)
    .map_err(decode)
}

pub async fn put_policy<P: Serialize>(
    conn: &mut AnyConnection,
    tenant_id: &str,
    policy: &P,
) -> Result<(), sqlx::Error> {
    let policy = serde_json::to_value(policy).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
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
    .bind(policy["allowed_backends"].to_string())
    .bind(
        policy["backend_preference"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
    .bind(
        policy["inline_threshold_seconds"]
            .as_f64()
            .unwrap_or_default(),
    )
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}
