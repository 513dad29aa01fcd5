//! Usage events: one row per billable quantity (audio seconds, characters, tokens), the
//! raw material of accounting.

use sqlx::AnyConnection;

use super::{new_id, now_ms};

pub struct UsageEvent<'a> {
    pub tenant_id: &'a str,
    pub subject: &'a str,
    pub module: &'a str,
    pub metric: &'a str,
    pub quantity: f64,
    pub request_id: Option<&'a str>,
}

pub async fn record(conn: &mut AnyConnection, event: &UsageEvent<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO usage_events \
         (id, tenant_id, subject, module, metric, quantity, request_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(new_id("use"))
    .bind(event.tenant_id)
    .bind(event.subject)
    .bind(event.module)
    .bind(event.metric)
    .bind(event.quantity)
    .bind(event.request_id)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// Total of a metric for a tenant (tests and the usage report).
pub async fn total(
    conn: &mut AnyConnection,
    tenant_id: &str,
    metric: &str,
) -> Result<f64, sqlx::Error> {
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT COALESCE(SUM(quantity), 0.0) AS total FROM usage_events \
         WHERE tenant_id = $1 AND metric = $2",
    )
    .bind(tenant_id)
    .bind(metric)
    .fetch_one(conn)
    .await?;
    row.try_get("total")
}
