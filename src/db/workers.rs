//! The job worker processes: each writes its row while it runs (a heartbeat), removes
//! it when it stops; readers count a row as alive while its heartbeat is recent.

use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use super::now_ms;
use crate::records::Timestamp;

/// One process that runs jobs, as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, ToSchema)]
pub struct WorkerRow {
    /// The process's consumer id (node id, pid and a random suffix).
    pub id: String,
    pub node_id: String,
    pub host: String,
    pub pid: i64,
    /// Jobs it runs at once (`[jobs] workers`).
    pub capacity: i64,
    /// Jobs it runs now.
    pub busy: i64,
    /// Jobs it has taken and let go (ended, failed or handed back) since it started.
    pub jobs_handled: i64,
    pub started_at: Timestamp,
    pub seen_at: Timestamp,
}

/// Writes (or first writes) `worker`'s row, stamped now.
pub async fn beat(conn: &mut AnyConnection, worker: &WorkerRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO job_workers (id, node_id, host, pid, capacity, busy, jobs_handled, \
         started_at, seen_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (id) DO UPDATE SET busy = $6, jobs_handled = $7, seen_at = $9",
    )
    .bind(&worker.id)
    .bind(&worker.node_id)
    .bind(&worker.host)
    .bind(worker.pid)
    .bind(worker.capacity)
    .bind(worker.busy)
    .bind(worker.jobs_handled)
    .bind(worker.started_at.0)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// The process stopped: its row goes.
pub async fn remove(conn: &mut AnyConnection, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM job_workers WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Drops rows not written since `before_ms` (processes that died without a word).
pub async fn prune(conn: &mut AnyConnection, before_ms: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM job_workers WHERE seen_at < $1")
        .bind(before_ms)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// Every row, newest heartbeat first.
pub async fn list(conn: &mut AnyConnection) -> Result<Vec<WorkerRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, node_id, host, pid, capacity, busy, jobs_handled, started_at, seen_at \
         FROM job_workers ORDER BY seen_at DESC, id",
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(WorkerRow {
                id: row.try_get("id")?,
                node_id: row.try_get("node_id")?,
                host: row.try_get("host")?,
                pid: row.try_get("pid")?,
                capacity: row.try_get("capacity")?,
                busy: row.try_get("busy")?,
                jobs_handled: row.try_get("jobs_handled")?,
                started_at: Timestamp(row.try_get("started_at")?),
                seen_at: Timestamp(row.try_get("seen_at")?),
            })
        })
        .collect()
}
