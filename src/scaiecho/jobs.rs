//! Async transcription jobs: the upload is staged in the object store and a `queued`
//! row written; a worker (`crate::jobs`) claims it and calls [`run`]: decode, the
//! resolved backend, the transcription as the result (`transcription.job.completed` or
//! `.failed`). The staged audio is removed once the job has ended (or is deleted).

use std::collections::HashMap;

use axum::body::Bytes;
use serde_json::Value;

use super::{Fields, MODULE, Options, Owner, policy};
use crate::auth::Principal;
use crate::db::jobs::{self, JobRow, NewJob};
use crate::error::{ApiError, ApiResult};
use crate::jobs::{JobFilter, JobView};
use crate::scaiecho::ScaiEcho;
use crate::speech::balancers::Serves;
use crate::store::ObjectKey;

pub const KIND: &str = "transcription";

/// A job's options as stored in its row: the validated [`Options`] of the request.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    options: Options,
}

/// The options a job was accepted with. Rows queued before options were stored typed
/// hold the request's form fields; those are validated again as the request was.
fn stored_options(text: &str) -> ApiResult<Options> {
    if let Ok(stored) = serde_json::from_str::<Stored>(text) {
        return Ok(stored.options);
    }
    let fields: HashMap<String, String> = serde_json::from_str(text)
        .map_err(|e| ApiError::internal(format_args!("job options unreadable: {e}")))?;
    Options::from_fields(&Fields(&fields))
}

pub fn input_key(tenant_id: &str, job_id: &str) -> ApiResult<ObjectKey> {
    ObjectKey::new(tenant_id, &format!("scaiecho/jobs/{job_id}/input"))
        .map_err(|e| ApiError::internal(format_args!("object key: {e}")))
}

/// Stages the audio and queues the job; wakes this process's workers.
pub async fn create(
    state: &ScaiEcho,
    principal: &Principal,
    audio: Bytes,
    media_type: Option<&str>,
    options: &Options,
    audio_seconds: Option<f64>,
) -> ApiResult<JobView> {
    let id = jobs::job_id();
    let key = input_key(&principal.tenant_id, &id)?;
    state
        .handles
        .store
        .put(&key, audio)
        .await
        .map_err(|e| e.api("staging the audio"))?;
    let options = serde_json::to_string(&Stored {
        options: options.clone(),
    })
    .map_err(ApiError::internal)?;
    crate::jobs::queue(
        &state.handles.jobs,
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
    .await
}

/// Removes a finished job's staged audio.
pub async fn cleanup(state: &ScaiEcho, job: &JobRow) {
    if let Ok(key) = input_key(&job.tenant_id, &job.id) {
        let _ = state.handles.store.delete(&key).await;
    }
}

pub async fn get(state: &ScaiEcho, principal: &Principal, id: &str) -> ApiResult<JobView> {
    crate::jobs::find(&state.handles.jobs, &principal.tenant_id, MODULE, id)
        .await
        .map(JobView::from)
}

pub async fn list(
    state: &ScaiEcho,
    principal: &Principal,
    filter: &JobFilter,
) -> ApiResult<(Vec<JobView>, Option<String>)> {
    crate::jobs::list(&state.handles.jobs, &principal.tenant_id, MODULE, filter).await
}

/// Deletes a job and its staged audio; a worker running it drops its result.
pub async fn delete(state: &ScaiEcho, principal: &Principal, id: &str) -> ApiResult<()> {
    let job = crate::jobs::remove(&state.handles.jobs, &principal.tenant_id, MODULE, id).await?;
    if let Ok(key) = input_key(&job.tenant_id, &job.id) {
        let _ = state.handles.store.delete(&key).await;
    }
    Ok(())
}

/// Runs a claimed transcription job: its result and audio seconds.
pub async fn run(state: &ScaiEcho, job: &JobRow) -> ApiResult<(Value, f64)> {
    let key = input_key(&job.tenant_id, &job.id)?;
    let audio = state
        .handles
        .store
        .get(&key)
        .await
        .map_err(|e| e.api("staged audio"))?;
    let options = stored_options(&job.options)?;
    let samples = state
        .handles
        .intake
        .decode_16k(audio, job.media_type.as_deref())
        .await?;
    // A balancer is asked again now: the instance picked at the request may be gone.
    let model = options.model.as_deref();
    let nodes = state
        .handles
        .bound(&job.tenant_id, model, Serves::Transcription)
        .await?;
    let policy = super::policy(state, &job.tenant_id).await?;
    let preference = crate::speech::balancers::preference(&nodes, options.backend_preference);
    let backend = policy::resolve(&policy, preference, state.usable())?;
    let owner = Owner {
        tenant_id: &job.tenant_id,
        subject: &job.subject,
    };
    let work = super::transcribe(state, owner, samples, &options, backend);
    let mut transcription = crate::inference::pool::bound(nodes, work).await?;
    // The firewall over the result, as over a synchronous transcript: blocked, the job
    // fails (`FIREWALL_BLOCKED`, the work billed, no text kept); redacted, it is kept so.
    let principal = Principal::owner(&job.tenant_id, &job.subject);
    super::guard(state, &principal, model, &mut transcription).await?;
    let duration = transcription.duration;
    Ok((
        serde_json::to_value(&transcription).unwrap_or(Value::Null),
        duration,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_typed_and_legacy_rows_still_run() {
        let fields: HashMap<String, String> = [
            ("language", "de"),
            ("diarize", "true"),
            ("timestamps", "word"),
            ("response_format", "srt"),
            ("backend_preference", "prefer_managed"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let options = Options::from_fields(&Fields(&fields)).unwrap();
        let text = serde_json::to_string(&Stored {
            options: options.clone(),
        })
        .unwrap();
        assert!(text.contains(r#""response_format":"srt""#), "{text}");
        assert_eq!(stored_options(&text).unwrap(), options);
        // A row written by an earlier release: its form fields, validated again.
        let legacy = serde_json::to_string(&fields).unwrap();
        assert_eq!(stored_options(&legacy).unwrap(), options);
        // Neither: an internal error, not silent defaults.
        assert!(stored_options("[1, 2]").is_err());
        let bad_legacy = r#"{"timestamps":"sometimes"}"#;
        assert!(stored_options(bad_legacy).is_err());
    }
}
