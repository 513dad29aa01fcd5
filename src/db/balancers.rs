//! Balancer rows (see the migration).

use sqlx::{AnyConnection, Row};

use super::now_ms;

/// One instance behind a balancer and its share.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub instance_id: String,
    /// Its share of the requests among the healthy members (default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq)]
pub struct BalancerRow {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub model: String,
    pub members: Vec<Member>,
    pub created_at: i64,
}

fn row(row: &sqlx::any::AnyRow) -> Result<BalancerRow, sqlx::Error> {
    let members: String = row.try_get("members")?;
    Ok(BalancerRow {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        model: row.try_get("model")?,
        members: serde_json::from_str(&members).unwrap_or_default(),
        created_at: row.try_get("created_at")?,
    })
}

pub async fn create(conn: &mut AnyConnection, balancer: &BalancerRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO balancers (id, tenant_id, name, model, members, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(&balancer.id)
    .bind(&balancer.tenant_id)
    .bind(&balancer.name)
    .bind(&balancer.model)
    .bind(serde_json::json!(balancer.members).to_string())
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

const SELECT: &str =
    "SELECT id, tenant_id, name, model, members, created_at FROM balancers WHERE tenant_id = $1";

/// A tenant's balancer by id, or (`by_name`) by name.
pub async fn get(
    conn: &mut AnyConnection,
    tenant_id: &str,
    (key, by_name): (&str, bool),
) -> Result<Option<BalancerRow>, sqlx::Error> {
    let sql = match by_name {
        true => format!("{SELECT} AND name = $2"),
        false => format!("{SELECT} AND id = $2"),
    };
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant_id)
        .bind(key)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(row)
        .transpose()
}

pub async fn list(
    conn: &mut AnyConnection,
    tenant_id: &str,
) -> Result<Vec<BalancerRow>, sqlx::Error> {
    let sql = format!("{SELECT} ORDER BY name LIMIT 500");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant_id)
        .fetch_all(conn)
        .await?;
    rows.iter().map(row).collect()
}

pub async fn delete(
    conn: &mut AnyConnection,
    tenant_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM balancers WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
