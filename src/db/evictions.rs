//! Evictions owed by nodes that could not be reached when a speaker profile or a voice
//! was deleted. The erasure reconciler (`speech::erasure`) sends them once the node is
//! back and settles the row; until then the nodes view counts them.

use sqlx::{AnyConnection, Row};

use super::now_ms;

/// One eviction a node owes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    /// `speaker` or `voice` (the node's warm kinds).
    pub kind: String,
    pub item_id: String,
    pub node_id: String,
}

/// Records that `node_id` still holds `kind:item_id` (again: no second row).
pub async fn owe(
    conn: &mut AnyConnection,
    (kind, item_id): (&str, &str),
    node_id: &str,
    tenant_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO node_evictions (kind, item_id, node_id, tenant_id, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind, item_id, node_id) DO NOTHING",
    )
    .bind(kind)
    .bind(item_id)
    .bind(node_id)
    .bind(tenant_id)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// The oldest `limit` evictions owed by any of `node_ids`.
pub async fn owed_by(
    conn: &mut AnyConnection,
    node_ids: &[String],
    limit: i64,
) -> Result<Vec<Owed>, sqlx::Error> {
    if node_ids.is_empty() {
        return Ok(Vec::new());
    }
    // Portable SQL has no array binding: the few node ids go in as numbered binds.
    let marks: Vec<String> = (0..node_ids.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "SELECT kind, item_id, node_id FROM node_evictions WHERE node_id IN ({}) \
         ORDER BY created_at, item_id LIMIT $1",
        marks.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(limit);
    for id in node_ids {
        query = query.bind(id);
    }
    let rows = query.fetch_all(conn).await?;
    rows.into_iter()
        .map(|row| {
            Ok(Owed {
                kind: row.try_get("kind")?,
                item_id: row.try_get("item_id")?,
                node_id: row.try_get("node_id")?,
            })
        })
        .collect()
}

/// The node evicted it: the row goes.
pub async fn settle(conn: &mut AnyConnection, owed: &Owed) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM node_evictions WHERE kind = $1 AND item_id = $2 AND node_id = $3")
        .bind(&owed.kind)
        .bind(&owed.item_id)
        .bind(&owed.node_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Another try failed (`error`); the row stays for the next one.
pub async fn failed(conn: &mut AnyConnection, owed: &Owed, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE node_evictions SET attempts = attempts + 1, last_error = $4 \
         WHERE kind = $1 AND item_id = $2 AND node_id = $3",
    )
    .bind(&owed.kind)
    .bind(&owed.item_id)
    .bind(&owed.node_id)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// How many evictions each node owes.
pub async fn counts(conn: &mut AnyConnection) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT node_id, COUNT(*) AS owed FROM node_evictions GROUP BY node_id ORDER BY node_id",
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| Ok((row.try_get("node_id")?, row.try_get("owed")?)))
        .collect()
}
