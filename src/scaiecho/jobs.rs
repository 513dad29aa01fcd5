//! Async transcription jobs: the upload is staged in the object store and a `queued`
//! row written; a worker (in `serve`, or `scaigrid worker`) claims it, decodes, runs the
//! resolved backend, stores the result and emits `transcription.job.completed` or
//! `transcription.job.failed` in the same transaction. The staged audio is removed once
//! the job has ended (or is deleted).

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{Fields, MODULE, Options, Owner, policy};
use crate::app::AppState;
use crate::auth::Principal;
use crate::db::jobs::{self, JobRow, NewJob};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::model::Timestamp;
use crate::store::ObjectKey;

pub const KIND: &str = "transcription";
/// A claimed job's lease; renewed while it runs, so only a dead worker's jobs expire.
pub const LEASE: Duration = Duration::from_secs(60);

/// A job as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: String,
    pub object: &'static str,
    pub status: String,
    pub status_reason: Option<String>,
    pub audio_seconds: Option<f64>,
    pub attempts: i64,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// The transcription once `succeeded`.
    #[schema(value_type = Object)]
    pub result: Option<Value>,
}

impl From<JobRow> for JobView {
    fn from(row: JobRow) -> JobView {
        let time = |ms: i64| Timestamp(ms).to_rfc3339();
        JobView {
            id: row.id,
            object: "transcription.job",
            status: row.status,
            status_reason: row.status_reason,
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

fn input_key(tenant_id: &str, job_id: &str) -> ApiResult<ObjectKey> {
    ObjectKey::new(tenant_id, &format!("scaiecho/jobs/{job_id}/input"))
        .map_err(|e| ApiError::internal(format_args!("object key: {e}")))
}

/// Stages the audio and queues the job; wakes this process's workers.
pub async fn create(
    state: &AppState,
    principal: &Principal,
    audio: Bytes,
    media_type: Option<&str>,
    fields: &HashMap<String, String>,
    audio_seconds: Option<f64>,
) -> ApiResult<JobView> {
    let id = jobs::job_id();
    let key = input_key(&principal.tenant_id, &id)?;
    state
        .store
        .put(&key, audio)
        .await
        .map_err(|e| ApiError::internal(format_args!("staging the audio: {e}")))?;
    let options = serde_json::to_string(fields).unwrap_or_else(|_| "{}".into());
    let mut conn = state.db.pool.acquire().await?;
    jobs::create(
        &mut conn,
        &NewJob {
            id: &id,
            tenant_id: &principal.tenant_id,
            module: MODULE,
            kind: KIND,
            subject: principal.subject_id(),
            options: &options,
            input_key: key.path(),
            media_type,
            audio_seconds,
        },
    )
    .await?;
    let row = jobs::get(&mut conn, &principal.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::internal("job vanished after insert"))?;
    state.jobs_wakeup.notify_waiters();
    tracing::info!(job_id = %id, "transcription job queued");
    Ok(row.into())
}

pub async fn get(state: &AppState, principal: &Principal, id: &str) -> ApiResult<JobView> {
    let mut conn = state.db.pool.acquire().await?;
    jobs::get(&mut conn, &principal.tenant_id, id)
        .await?
        .filter(|job| job.module == MODULE)
        .map(JobView::from)
        .ok_or_else(|| ApiError::not_found("job"))
}

pub async fn list(state: &AppState, principal: &Principal) -> ApiResult<Vec<JobView>> {
    let mut conn = state.db.pool.acquire().await?;
    Ok(jobs::list(&mut conn, &principal.tenant_id, MODULE, 100)
        .await?
        .into_iter()
        .map(JobView::from)
        .collect())
}

/// Deletes a job and its staged audio; a worker running it drops its result.
pub async fn delete(state: &AppState, principal: &Principal, id: &str) -> ApiResult<()> {
    let mut conn = state.db.pool.acquire().await?;
    let job = jobs::delete(&mut conn, &principal.tenant_id, id)
        .await?
        .filter(|job| job.module == MODULE)
        .ok_or_else(|| ApiError::not_found("job"))?;
    if let Ok(key) = input_key(&job.tenant_id, &job.id) {
        let _ = state.store.delete(&key).await;
    }
    Ok(())
}

/// Claims of one job that may end in a busy dispatcher before it fails.
const MAX_BUSY_ATTEMPTS: i64 = 100;

/// A full inference queue (answered with `Retry-After`), as opposed to a backend that is
/// not there.
fn busy(error: &ApiError) -> bool {
    error.code == ErrorCode::SERVICE_UNAVAILABLE
        && error
            .headers
            .iter()
            .any(|(name, _)| name == axum::http::header::RETRY_AFTER)
}

/// The documented `status_reason` of a failure.
fn reason(error: &ApiError) -> String {
    match error.code {
        ErrorCode::AUDIO_DECODE_FAILED | ErrorCode::AUDIO_FORMAT_UNSUPPORTED => {
            "decode failure".into()
        }
        ErrorCode::CTX_TOO_LARGE => "too large".into(),
        ErrorCode::SCAIECHO_BACKEND_UNAVAILABLE | ErrorCode::SERVICE_UNAVAILABLE => {
            "backend unavailable".into()
        }
        ErrorCode::BUDGET_EXCEEDED => "quota exceeded".into(),
        _ => format!("internal error ({})", error.code.as_str()),
    }
}

async fn run(state: &AppState, job: &JobRow) -> ApiResult<(Value, f64)> {
    let key = input_key(&job.tenant_id, &job.id)?;
    let audio = state
        .store
        .get(&key)
        .await
        .map_err(|e| ApiError::internal(format_args!("staged audio: {e}")))?;
    let fields: HashMap<String, String> = serde_json::from_str(&job.options).unwrap_or_default();
    let options = Options::from_fields(&Fields(&fields))?;
    let samples = super::decode_16k(state, audio, job.media_type.as_deref()).await?;
    let policy = super::policy(state, &job.tenant_id).await?;
    let backend = policy::resolve(&policy, options.backend_preference, state.scaiecho.usable())?;
    let owner = Owner {
        tenant_id: &job.tenant_id,
        subject: &job.subject,
    };
    let transcription = super::transcribe(state, owner, samples, &options, backend).await?;
    let duration = transcription.duration;
    Ok((
        serde_json::to_value(&transcription).unwrap_or(Value::Null),
        duration,
    ))
}

/// Processes one claimed job to its end; the lease is renewed meanwhile.
pub async fn process(state: &AppState, id: &str) -> ApiResult<()> {
    let job = {
        let mut conn = state.db.pool.acquire().await?;
        jobs::get_any(&mut conn, id).await?
    };
    let Some(job) = job else { return Ok(()) };
    let renew = async {
        let mut ticker = tokio::time::interval(LEASE / 3);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if let Ok(mut conn) = state.db.pool.acquire().await {
                let _ = jobs::renew(&mut conn, id, LEASE.as_millis() as i64).await;
            }
        }
    };
    let outcome = tokio::select! {
        outcome = run(state, &job) => outcome,
        () = renew => Err(ApiError::internal("lease renewal stopped")),
    };
    if let Err(error) = &outcome
        && busy(error)
        && job.attempts < MAX_BUSY_ATTEMPTS
    {
        // The local dispatcher's queue is full: not the job's fault; back in the queue.
        tracing::info!(job_id = %id, "backend busy; job requeued");
        let mut conn = state.db.pool.acquire().await?;
        jobs::release(&mut conn, id).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        return Ok(());
    }
    let (status, reason, result, seconds, event) = match &outcome {
        Ok((result, seconds)) => (
            "succeeded",
            None,
            Some(result.to_string()),
            Some(*seconds),
            "transcription.job.completed",
        ),
        Err(error) => {
            tracing::warn!(job_id = %id, code = error.code.as_str(), error = %error.message, "transcription job failed");
            (
                "failed",
                Some(reason(error)),
                None,
                None,
                "transcription.job.failed",
            )
        }
    };
    let mut tx = state.db.begin().await?;
    let ended = jobs::finish(
        &mut tx,
        id,
        status,
        reason.as_deref(),
        result.as_deref(),
        seconds,
    )
    .await?;
    if ended {
        let payload = json!({
            "job_id": id,
            "status": status,
            "status_reason": reason,
            "audio_seconds": seconds,
        });
        crate::db::events::emit(&mut tx, &job.tenant_id, event, &payload).await?;
    }
    tx.commit().await?;
    if let Ok(key) = input_key(&job.tenant_id, &job.id) {
        let _ = state.store.delete(&key).await;
    }
    tracing::info!(job_id = %id, status, "transcription job ended");
    Ok(())
}
