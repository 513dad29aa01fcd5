//! The event outbox: events (`transcription.job.completed`, ...) written in the
//! transaction that causes them; the gateway's webhook dispatcher delivers them. Each
//! keeps the trace context it was written in, so its deliveries join that trace.

use sqlx::AnyConnection;

use super::{new_id, now_ms};

pub async fn emit(
    conn: &mut AnyConnection,
    tenant_id: &str,
    name: &str,
    payload: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO event_outbox (id, tenant_id, name, payload, created_at, traceparent) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new_id("evt"))
    .bind(tenant_id)
    .bind(name)
    .bind(payload.to_string())
    .bind(now_ms())
    .bind(crate::trace_context::current_traceparent())
    .execute(conn)
    .await?;
    Ok(())
}
