//! The event outbox: events (`transcription.job.completed`, ...) written in the
//! transaction that causes them; the gateway's webhook dispatcher delivers them.

use sqlx::AnyConnection;

use super::{new_id, now_ms};

pub async fn emit(
    conn: &mut AnyConnection,
    tenant_id: &str,
    name: &str,
    payload: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO event_outbox (id, tenant_id, name, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(new_id("evt"))
    .bind(tenant_id)
    .bind(name)
    .bind(payload.to_string())
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}
