//! Async jobs: the database is the queue (workers claim the oldest queued job with a
//! lease; an expired lease makes a job claimable again), so jobs survive restarts and
//! any number of worker processes share them.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{new_id, now_ms};

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub tenant_id: String,
    pub module: String,
    pub kind: String,
    pub status: String,
    pub status_reason: Option<String>,
    /// A failed job's stable reason (`DECODE_FAILED`, `BACKEND_UNAVAILABLE`, ...) and
    /// its one-line explanation.
    pub failure_reason: Option<String>,
    pub failure_detail: Option<String>,
    pub subject: String,
    pub options: String,
    pub input_key: Option<String>,
    pub media_type: Option<String>,
    pub result: Option<String>,
    pub audio_seconds: Option<f64>,
    pub attempts: i64,
    /// Claims that found the job's previous worker dead (lease run out mid-job).
    pub crashes: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The trace context of the request that queued it (`trace_context`).
    pub traceparent: Option<String>,
}

const COLUMNS: &str = "id, tenant_id, module, kind, status, status_reason, failure_reason, \
    failure_detail, subject, options, input_key, media_type, result, audio_seconds, attempts, \
    crashes, created_at, updated_at, started_at, finished_at, traceparent";

fn from_row(row: &AnyRow) -> Result<JobRow, sqlx::Error> {
    Ok(JobRow {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        module: row.try_get("module")?,
        kind: row.try_get("kind")?,
        status: row.try_get("status")?,
        status_reason: row.try_get("status_reason")?,
        failure_reason: row.try_get("failure_reason")?,
        failure_detail: row.try_get("failure_detail")?,
        subject: row.try_get("subject")?,
        options: row.try_get("options")?,
        input_key: row.try_get("input_key")?,
        media_type: row.try_get("media_type")?,
        result: row.try_get("result")?,
        audio_seconds: row.try_get("audio_seconds")?,
        attempts: row.try_get("attempts")?,
        crashes: row.try_get("crashes")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        traceparent: row.try_get("traceparent")?,
    })
}

/// How a job failed: the documented `status_reason` (seed 002's words), the stable
/// `failure_reason` enum and a one-line detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub status_reason: String,
    pub reason: &'static str,
    pub detail: String,
}

pub struct NewJob<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub module: &'a str,
    pub kind: &'a str,
    pub subject: &'a str,
    pub options: &'a str,
    pub input_key: &'a str,
    pub media_type: Option<&'a str>,
    pub audio_seconds: Option<f64>,
}

pub fn job_id() -> String {
    new_id("job")
}

pub async fn create(conn: &mut AnyConnection, job: &NewJob<'_>) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, module, kind, status, subject, options, input_key, \
         media_type, audio_seconds, attempts, created_at, updated_at, traceparent) \
         VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, 0, $10, $10, $11)",
    )
    .bind(job.id)
    .bind(job.tenant_id)
    .bind(job.module)
    .bind(job.kind)
    .bind(job.subject)
    .bind(job.options)
    .bind(job.input_key)
    .bind(job.media_type)
    .bind(job.audio_seconds)
    .bind(now)
    .bind(crate::trace_context::current_traceparent())
    .execute(conn)
    .await?;
    Ok(())
}

/// A job of a tenant (`None` for another tenant's: not found, never forbidden).
pub async fn get(
    conn: &mut AnyConnection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<JobRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE tenant_id = $1 AND id = $2");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// A job by id alone (workers).
pub async fn get_any(conn: &mut AnyConnection, id: &str) -> Result<Option<JobRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// A tenant's jobs, newest first.
pub async fn list(
    conn: &mut AnyConnection,
    tenant_id: &str,
    module: &str,
    status: Option<&str>,
    page: &super::page::Page,
) -> Result<Vec<JobRow>, sqlx::Error> {
    let mut sql = format!("SELECT {COLUMNS} FROM jobs WHERE tenant_id = $1 AND module = $2");
    if status.is_some() {
        sql.push_str(" AND status = $3");
    }
    let next = 3 + usize::from(status.is_some());
    sql.push_str(&page.sql("jobs", next, super::page::Order::Newest));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant_id)
        .bind(module);
    if let Some(status) = status {
        query = query.bind(status);
    }
    page.bind(query)
        .fetch_all(conn)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// Claims the oldest job that is queued or whose lease ran out; `None` when there is
/// none (or another worker won the race for it). Taking over a job whose lease ran out
/// mid-job counts a crash of its previous worker (SET sees the row as it was).
pub async fn claim_next(
    conn: &mut AnyConnection,
    lease_ms: i64,
) -> Result<Option<String>, sqlx::Error> {
    let now = now_ms();
    let row = sqlx::query(
        "UPDATE jobs SET status = 'processing', attempts = attempts + 1, \
         crashes = crashes + CASE WHEN status = 'processing' THEN 1 ELSE 0 END, \
         started_at = $1, updated_at = $1, lease_until = $2 \
         WHERE id = (SELECT id FROM jobs WHERE status = 'queued' \
                     OR (status = 'processing' AND lease_until < $1) \
                     ORDER BY created_at LIMIT 1) \
         AND (status = 'queued' OR (status = 'processing' AND lease_until < $1)) \
         RETURNING id",
    )
    .bind(now)
    .bind(now + lease_ms)
    .fetch_optional(conn)
    .await?;
    row.map(|row| row.try_get("id")).transpose()
}

/// What claiming one named job found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// It is ours now.
    Claimed,
    /// Another worker runs it under a live lease.
    Held,
    /// It ended or was deleted.
    Gone,
}

/// Claims the job `id` if it is queued or its lease ran out.
pub async fn claim(
    conn: &mut AnyConnection,
    id: &str,
    lease_ms: i64,
) -> Result<Claim, sqlx::Error> {
    let now = now_ms();
    let claimed = sqlx::query(
        "UPDATE jobs SET status = 'processing', attempts = attempts + 1, \
         crashes = crashes + CASE WHEN status = 'processing' THEN 1 ELSE 0 END, \
         started_at = $1, updated_at = $1, lease_until = $2 \
         WHERE id = $3 AND (status = 'queued' OR (status = 'processing' AND lease_until < $1))",
    )
    .bind(now)
    .bind(now + lease_ms)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if claimed.rows_affected() == 1 {
        return Ok(Claim::Claimed);
    }
    let status: Option<String> = sqlx::query("SELECT status FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(|row| row.try_get("status"))
        .transpose()?;
    Ok(match status.as_deref() {
        Some("processing") | Some("queued") => Claim::Held,
        _ => Claim::Gone,
    })
}

/// Ids of jobs queued (or requeued) more than `older_than_ms` ago, at most `limit`;
/// their `updated_at` is moved to now so the next sweep skips them for as long again.
pub async fn touch_stale_queued(
    conn: &mut AnyConnection,
    older_than_ms: i64,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let now = now_ms();
    let rows = sqlx::query(
        "UPDATE jobs SET updated_at = $1 WHERE id IN \
         (SELECT id FROM jobs WHERE status = 'queued' AND updated_at < $2 \
          ORDER BY created_at LIMIT $3) AND status = 'queued' RETURNING id",
    )
    .bind(now)
    .bind(now - older_than_ms)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(|row| row.try_get("id")).collect()
}

/// Extends a processing job's lease.
pub async fn renew(conn: &mut AnyConnection, id: &str, lease_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE jobs SET lease_until = $1 WHERE id = $2 AND status = 'processing'")
        .bind(now_ms() + lease_ms)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Puts a processing job back in the queue (its backend was busy).
pub async fn release(conn: &mut AnyConnection, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE jobs SET status = 'queued', lease_until = NULL, updated_at = $1 \
         WHERE id = $2 AND status = 'processing'",
    )
    .bind(now_ms())
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Puts a processing job back in the queue after the node running it died: a crash of
/// its worker, counted toward failing a poison input.
pub async fn release_crashed(conn: &mut AnyConnection, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE jobs SET status = 'queued', lease_until = NULL, crashes = crashes + 1, \
         updated_at = $1 WHERE id = $2 AND status = 'processing'",
    )
    .bind(now_ms())
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends a processing job; `false` when it is no longer processing (deleted meanwhile).
pub async fn finish(
    conn: &mut AnyConnection,
    id: &str,
    status: &str,
    failure: Option<&Failure>,
    result: Option<&str>,
    audio_seconds: Option<f64>,
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let done = sqlx::query(
        "UPDATE jobs SET status = $1, status_reason = $2, result = $3, \
         audio_seconds = CASE WHEN $4 < 0 THEN audio_seconds ELSE $4 END, \
         finished_at = $5, updated_at = $5, \
         lease_until = NULL, failure_reason = $7, failure_detail = $8 \
         WHERE id = $6 AND status = 'processing'",
    )
    .bind(status)
    .bind(failure.map(|f| f.status_reason.as_str()))
    .bind(result)
    // A number every time (-1: keep the column): see `db::instances::transition`.
    .bind(audio_seconds.unwrap_or(-1.0))
    .bind(now)
    .bind(id)
    .bind(failure.map(|f| f.reason))
    .bind(failure.map(|f| f.detail.as_str()))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes a tenant's job; returns it (for its staged input) if it existed.
pub async fn delete(
    conn: &mut AnyConnection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<JobRow>, sqlx::Error> {
    let Some(job) = get(conn, tenant_id, id).await? else {
        return Ok(None);
    };
    sqlx::query("DELETE FROM jobs WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(Some(job))
}
