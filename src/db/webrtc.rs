//! WebRTC session rows: what outlives a process's in-memory peer state (see the
//! migration).

use sqlx::{AnyConnection, Row};

use super::now_ms;

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    pub module: String,
    pub status: String,
    pub end_reason: Option<String>,
    pub created_at: i64,
}

pub async fn create(
    conn: &mut AnyConnection,
    id: &str,
    tenant_id: &str,
    module: &str,
    (subject, edge_url): (&str, Option<&str>),
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO webrtc_sessions (id, tenant_id, module, subject, status, created_at, \
         updated_at, edge_url) VALUES ($1, $2, $3, $4, 'created', $5, $5, $6)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(module)
    .bind(subject)
    .bind(now)
    .bind(edge_url)
    .execute(conn)
    .await?;
    Ok(())
}

/// The URL of the edge that holds a session's peer state, while the session is not
/// over (scaled deployment; `None` in the embedded default). By id alone: the edge it
/// names checks the caller.
pub async fn edge_url(conn: &mut AnyConnection, id: &str) -> Result<Option<String>, sqlx::Error> {
    let row =
        sqlx::query("SELECT edge_url FROM webrtc_sessions WHERE id = $1 AND status <> 'ended'")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(row.and_then(|row| row.try_get::<Option<String>, _>("edge_url").ok().flatten()))
}

/// A tenant's session by id.
pub async fn get(
    conn: &mut AnyConnection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<SessionRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, module, status, end_reason, created_at FROM webrtc_sessions \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        Ok(SessionRow {
            id: row.try_get("id")?,
            module: row.try_get("module")?,
            status: row.try_get("status")?,
            end_reason: row.try_get("end_reason")?,
            created_at: row.try_get("created_at")?,
        })
    })
    .transpose()
}

/// Moves a session on (`active`, or `ended` with a reason). An ended session stays
/// ended.
pub async fn set_status(
    conn: &mut AnyConnection,
    id: &str,
    status: &str,
    end_reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webrtc_sessions SET status = $1, end_reason = $2, updated_at = $3 \
         WHERE id = $4 AND status <> 'ended'",
    )
    .bind(status)
    .bind(end_reason)
    .bind(now_ms())
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}
