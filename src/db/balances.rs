//! Prepaid balances and their movements (see the migration). A tenant without a row
//! has a balance of 0.

use sqlx::{AnyConnection, Row};

use super::{new_id, now_ms};

/// A tenant's balance (0 without a row).
pub async fn get(conn: &mut AnyConnection, tenant_id: &str) -> Result<f64, sqlx::Error> {
    let row = sqlx::query("SELECT balance FROM balances WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_optional(conn)
        .await?;
    row.map_or(Ok(0.0), |row| row.try_get("balance"))
}

/// Adds `amount` (negative: a debit) and keeps the entry; the new balance.
pub async fn add(
    conn: &mut AnyConnection,
    tenant_id: &str,
    amount: f64,
    (kind, instance_id, detail): (&str, Option<&str>, &str),
) -> Result<f64, sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO balances (tenant_id, balance, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id) DO UPDATE SET balance = balances.balance + excluded.balance, \
         updated_at = excluded.updated_at",
    )
    .bind(tenant_id)
    .bind(amount)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO balance_entries (id, tenant_id, amount, kind, instance_id, detail, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new_id("bal"))
    .bind(tenant_id)
    .bind(amount)
    .bind(kind)
    .bind(instance_id)
    .bind(detail)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    get(conn, tenant_id).await
}

/// One movement of a balance.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Entry {
    pub amount: f64,
    /// `top_up` or `instance`.
    pub kind: String,
    pub instance_id: Option<String>,
    pub detail: Option<String>,
    pub created_at: i64,
}

/// A tenant's latest `limit` movements, newest first.
pub async fn entries(
    conn: &mut AnyConnection,
    tenant_id: &str,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT amount, kind, instance_id, detail, created_at FROM balance_entries \
         WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(tenant_id)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Entry {
                amount: row.try_get("amount")?,
                kind: row.try_get("kind")?,
                instance_id: row.try_get("instance_id")?,
                detail: row.try_get("detail")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .collect()
}
