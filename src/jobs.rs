//! Async jobs of every module, run by the workers (`worker.rs`): the job view, and the
//! processing of one claimed job: the module's `run` (a [`Runner`] the assembly gives)
//! while the lease is renewed, a busy engine putting the job back in the queue, then the
//! outcome, the `<kind>.job.completed` / `.failed` event in the same transaction, and the
//! module's cleanup of staged input.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tracing::Instrument;
use utoipa::ToSchema;

use crate::cluster::queue::Queue;
use crate::db::Db;
use crate::db::jobs::{self, Failure, JobRow, NewJob};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::records::Timestamp;

/// Claims of one job that may end in a busy dispatcher before it fails.
const MAX_BUSY_ATTEMPTS: i64 = 100;

/// Workers that may die on one job before it fails (`status_reason` [`WORKER_CRASHED`]).
pub const MAX_CRASHES: i64 = 3;
pub const WORKER_CRASHED: &str = "worker crashed";

/// The job queue: the rows, the wake-up of this process's workers, and (scaled) the
/// queue stream every worker process reads.
pub struct Jobs {
    db: Db,
    queue: Option<Arc<Queue>>,
    wakeup: tokio::sync::Notify,
    /// `[jobs] lease`: how long a claim lasts unless renewed (also the stream's
    /// visibility timeout).
    lease: Duration,
}

/// A module's work on its jobs, given to [`process`] by whoever runs them.
pub trait Runner: Send + Sync {
    /// The module's work for a job: its result and audio seconds.
    fn run(&self, job: &JobRow) -> impl Future<Output = ApiResult<(Value, f64)>> + Send;
    /// Removes staged input a finished job no longer needs.
    fn cleanup(&self, job: &JobRow) -> impl Future<Output = ()> + Send;
}

impl Jobs {
    pub fn new(db: Db, queue: Option<Arc<Queue>>, lease: Duration) -> Jobs {
        Jobs {
            db,
            queue,
            wakeup: tokio::sync::Notify::new(),
            lease,
        }
    }

    /// The queue stream (scaled deployment); the embedded default's workers poll.
    pub fn stream(&self) -> Option<&Arc<Queue>> {
        self.queue.as_ref()
    }

    /// Resolves when a job is queued in this process (or never: callers time out).
    pub async fn queued_here(&self) {
        self.wakeup.notified().await;
    }
}

/// A job as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: String,
    /// `transcription.job` or `synth.job`.
    pub object: String,
    pub status: String,
    pub status_reason: Option<String>,
    /// A failed job's stable reason: `DECODE_FAILED`, `TOO_LARGE`,
    /// `BACKEND_UNAVAILABLE`, `QUOTA_EXCEEDED`, `DRIVE_CONFLICT`, `WORKER_CRASHED` or
    /// `INTERNAL_ERROR`.
    pub failure_reason: Option<String>,
    /// One line on what happened.
    pub failure_detail: Option<String>,
    pub audio_seconds: Option<f64>,
    pub attempts: i64,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// The job's result once `succeeded` (a transcription; a synthesized file's link).
    #[schema(value_type = Object)]
    pub result: Option<Value>,
}

impl From<JobRow> for JobView {
    fn from(row: JobRow) -> JobView {
        let time = |ms: i64| Timestamp(ms).to_rfc3339();
        JobView {
            id: row.id,
            object: format!("{}.job", row.kind),
            status: row.status,
            status_reason: row.status_reason,
            failure_reason: row.failure_reason,
            failure_detail: row.failure_detail,
            audio_seconds: row.audio_seconds,
            attempts: row.attempts,
            created_at: time(row.created_at),
            updated_at: time(row.updated_at),
            started_at: row.started_at.map(time),
            finished_at: row.finished_at.map(time),
            result: row.result.and_then(|r| serde_json::from_str(&r).ok()),
        }
    }
}

/// Inserts a queued job and wakes the workers: this process's, and (scaled) every
/// worker process's through the queue stream. The row is the job: if the stream cannot
/// take the entry now, the queue's sweep adds it later, so the job is accepted anyway.
pub async fn queue(state: &Jobs, job: &NewJob<'_>) -> ApiResult<JobView> {
    let mut conn = state.db.pool.acquire().await?;
    jobs::create(&mut conn, job).await?;
    let row = jobs::get(&mut conn, job.tenant_id, job.id)
        .await?
        .ok_or_else(|| ApiError::internal("job vanished after insert"))?;
    drop(conn);
    state.wakeup.notify_waiters();
    if let Some(queue) = &state.queue
        && let Err(error) = queue.enqueue(job.id).await
    {
        tracing::warn!(job_id = %job.id, %error, "job not added to the queue stream; the sweep will add it");
    }
    tracing::info!(job_id = %job.id, kind = job.kind, "job queued");
    Ok(row.into())
}

/// A job of the tenant in `module`; another tenant's or module's is not found.
pub async fn find(state: &Jobs, tenant_id: &str, module: &str, id: &str) -> ApiResult<JobRow> {
    let mut conn = state.db.pool.acquire().await?;
    jobs::get(&mut conn, tenant_id, id)
        .await?
        .filter(|job| job.module == module)
        .ok_or_else(|| ApiError::not_found("job"))
}

/// A page of the tenant's jobs in `module` (of one status, if given), newest first;
/// the cursor of the next page when there is one.
pub async fn list(
    state: &Jobs,
    tenant_id: &str,
    module: &str,
    filter: &JobFilter,
) -> ApiResult<(Vec<JobView>, Option<String>)> {
    let page = filter.page()?;
    if let Some(status) = filter.status.as_deref()
        && !["queued", "processing", "succeeded", "failed"].contains(&status)
    {
        return Err(ApiError::invalid(
            "`status` must be queued, processing, succeeded or failed",
        ));
    }
    let mut conn = state.db.pool.acquire().await?;
    let rows = jobs::list(
        &mut conn,
        tenant_id,
        module,
        filter.status.as_deref(),
        &page,
    )
    .await?;
    let (rows, next) = page.split(rows, |row| &row.id);
    Ok((rows.into_iter().map(JobView::from).collect(), next))
}

/// `GET .../jobs` query: a status, and the page.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    /// `queued`, `processing`, `succeeded` or `failed`.
    pub status: Option<String>,
    /// Jobs a page holds, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `next_after` of the previous page.
    pub after: Option<String>,
}

impl JobFilter {
    pub fn page(&self) -> ApiResult<crate::db::page::Page> {
        crate::db::page::Page::parse(self.limit, self.after.clone())
    }
}

/// Deletes a job of `module` (checked before anything is deleted); the deleted row,
/// for the module to remove its objects.
pub async fn remove(state: &Jobs, tenant_id: &str, module: &str, id: &str) -> ApiResult<JobRow> {
    find(state, tenant_id, module, id).await?;
    let mut conn = state.db.pool.acquire().await?;
    jobs::delete(&mut conn, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))
}

/// A full inference queue (answered with `Retry-After`), as opposed to a backend that is
/// not there.
fn busy(error: &ApiError) -> bool {
    error.code == ErrorCode::SERVICE_UNAVAILABLE
        && error
            .headers
            .iter()
            .any(|(name, _)| name == axum::http::header::RETRY_AFTER)
}

/// How an error fails a job: the documented `status_reason` and the stable
/// `failure_reason`, with the error's message as the detail.
fn failure(error: &ApiError) -> Failure {
    let (status_reason, reason) = match error.code {
        ErrorCode::AUDIO_DECODE_FAILED | ErrorCode::AUDIO_FORMAT_UNSUPPORTED => {
            ("decode failure".to_owned(), "DECODE_FAILED")
        }
        ErrorCode::CTX_TOO_LARGE => ("too large".to_owned(), "TOO_LARGE"),
        ErrorCode::SCAIECHO_BACKEND_UNAVAILABLE
        | ErrorCode::SCAISPEAK_BACKEND_UNAVAILABLE
        | ErrorCode::SERVICE_UNAVAILABLE
        | ErrorCode::MODEL_UNAVAILABLE => ("backend unavailable".to_owned(), "BACKEND_UNAVAILABLE"),
        ErrorCode::BUDGET_EXCEEDED => ("quota exceeded".to_owned(), "QUOTA_EXCEEDED"),
        ErrorCode::SCAISPEAK_SCAIDRIVE_CONFLICT => ("drive conflict".to_owned(), "DRIVE_CONFLICT"),
        ErrorCode::FIREWALL_BLOCKED => ("blocked by the firewall".to_owned(), "FIREWALL_BLOCKED"),
        ErrorCode::JUDGE_UNREACHABLE => ("judge unreachable".to_owned(), "JUDGE_UNREACHABLE"),
        _ => (
            format!("internal error ({})", error.code.as_str()),
            "INTERNAL_ERROR",
        ),
    };
    Failure {
        status_reason,
        reason,
        detail: one_line(&error.message),
    }
}

/// The first line of a message, at most 300 characters.
fn one_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default();
    match line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

/// How processing a claimed job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    /// Succeeded or failed (or was deleted meanwhile).
    Ended,
    /// Its backend was busy; it is queued again.
    Requeued,
}

/// Processes one claimed job to its end; the lease (`jobs.lease_seconds`, which is also
/// the queue's visibility timeout) is renewed meanwhile, so only a dead worker's jobs
/// lapse.
pub async fn process(state: &Jobs, runner: &impl Runner, id: &str) -> ApiResult<Processed> {
    let job = {
        let mut conn = state.db.pool.acquire().await?;
        jobs::get_any(&mut conn, id).await?
    };
    let Some(job) = job else {
        return Ok(Processed::Ended);
    };
    // The run is a span of the trace of the request that queued it.
    let span = tracing::info_span!("job", job_id = %id, kind = %job.kind);
    let carried = crate::trace_context::adopt_stored(&span, job.traceparent.as_deref());
    crate::trace_context::carry(carried, run_job(state, runner, job))
        .instrument(span)
        .await
}

async fn run_job(state: &Jobs, runner: &impl Runner, job: JobRow) -> ApiResult<Processed> {
    let id = job.id.as_str();
    if job.crashes >= MAX_CRASHES {
        // Its workers died on it three times (a poison input): it fails instead of
        // taking the next worker down too.
        tracing::error!(job_id = %id, crashes = job.crashes, "job failed: its workers crashed");
        metrics::counter!("scaigrid_jobs_poisoned_total", "module" => job.module.clone())
            .increment(1);
        let crashed = Failure {
            status_reason: WORKER_CRASHED.to_owned(),
            reason: "WORKER_CRASHED",
            detail: format!(
                "the worker running it died {} times (a fault on this input, or a node lost \
                 under it)",
                job.crashes
            ),
        };
        return end(state, runner, &job, Err(crashed)).await;
    }
    let lease = state.lease;
    let renew = async {
        let mut ticker = tokio::time::interval(lease / 3);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if let Ok(mut conn) = state.db.pool.acquire().await {
                let _ = jobs::renew(&mut conn, id, lease.as_millis() as i64).await;
            }
        }
    };
    // One node per run: a node that dies on the job counts as a crash of its worker
    // (below), so a poison input fails after MAX_CRASHES deaths.
    let run = crate::inference::pool::single_attempt(runner.run(&job));
    let outcome = tokio::select! {
        outcome = run => outcome,
        () = renew => Err(ApiError::internal("lease renewal stopped")),
    };
    if let Err(error) = &outcome
        && error.node_lost()
    {
        tracing::warn!(job_id = %id, error = %error.message, crashes = job.crashes + 1,
            "the inference node died on the job; requeued");
        metrics::counter!("scaigrid_jobs_node_lost_total", "module" => job.module.clone())
            .increment(1);
        let mut conn = state.db.pool.acquire().await?;
        jobs::release_crashed(&mut conn, id).await?;
        return Ok(Processed::Requeued);
    }
    if let Err(error) = &outcome
        && busy(error)
        && job.attempts < MAX_BUSY_ATTEMPTS
    {
        // The local dispatcher's queue is full: not the job's fault; back in the queue.
        tracing::info!(job_id = %id, "backend busy; job requeued");
        metrics::counter!("scaigrid_jobs_requeued_total", "module" => job.module.clone())
            .increment(1);
        let mut conn = state.db.pool.acquire().await?;
        jobs::release(&mut conn, id).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        return Ok(Processed::Requeued);
    }
    let outcome = outcome.map_err(|error| {
        tracing::warn!(job_id = %id, code = error.code.as_str(), error = %error.message, "job failed");
        failure(&error)
    });
    end(state, runner, &job, outcome).await
}

/// Records a job's end (result, or the `status_reason` of its failure) and its event.
async fn end(
    state: &Jobs,
    runner: &impl Runner,
    job: &JobRow,
    outcome: Result<(Value, f64), Failure>,
) -> ApiResult<Processed> {
    let id = job.id.as_str();
    let (status, failure, result, seconds) = match &outcome {
        Ok((result, seconds)) => ("succeeded", None, Some(result.to_string()), Some(*seconds)),
        Err(failure) => ("failed", Some(failure), None, None),
    };
    let event = match status {
        "succeeded" => format!("{}.job.completed", job.kind),
        _ => format!("{}.job.failed", job.kind),
    };
    let mut tx = state.db.begin().await?;
    let ended = jobs::finish(&mut tx, id, status, failure, result.as_deref(), seconds).await?;
    if ended {
        let payload = json!({
            "job_id": id,
            "status": status,
            "status_reason": failure.map(|f| &f.status_reason),
            "failure_reason": failure.map(|f| f.reason),
            "audio_seconds": seconds,
        });
        crate::db::events::emit(&mut tx, &job.tenant_id, &event, &payload).await?;
    }
    tx.commit().await?;
    if ended {
        // Not when another worker took the job over meanwhile: it still needs the input.
        runner.cleanup(job).await;
    }
    tracing::info!(job_id = %id, status, kind = %job.kind, "job ended");
    Ok(Processed::Ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_the_seed_words_and_a_stable_reason() {
        let cases = [
            (
                ErrorCode::AUDIO_DECODE_FAILED,
                "decode failure",
                "DECODE_FAILED",
            ),
            (ErrorCode::CTX_TOO_LARGE, "too large", "TOO_LARGE"),
            // A balancer with nothing healthy behind it when the job runs.
            (
                ErrorCode::MODEL_UNAVAILABLE,
                "backend unavailable",
                "BACKEND_UNAVAILABLE",
            ),
            (
                ErrorCode::SCAIECHO_BACKEND_UNAVAILABLE,
                "backend unavailable",
                "BACKEND_UNAVAILABLE",
            ),
            (
                ErrorCode::BUDGET_EXCEEDED,
                "quota exceeded",
                "QUOTA_EXCEEDED",
            ),
            (
                ErrorCode::INTERNAL_ERROR,
                "internal error (INTERNAL_ERROR)",
                "INTERNAL_ERROR",
            ),
        ];
        for (code, words, reason) in cases {
            let failed = failure(&ApiError::new(code, "first line\nsecond line"));
            assert_eq!(failed.status_reason, words);
            assert_eq!(failed.reason, reason);
            assert_eq!(failed.detail, "first line");
        }
        let long = one_line(&"é".repeat(400));
        assert_eq!(long.chars().count(), 301);
        assert!(long.ends_with('…'));
    }
}
