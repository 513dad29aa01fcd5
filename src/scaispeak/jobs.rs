//! Synth jobs: long texts (over `inline_text_chars`) or `async: true`. The validated
//! request is the job's options; a worker (`crate::jobs`) synthesizes it, stores the
//! audio in the object store and the job's result links to
//! `GET /v1/modules/scaispeak/jobs/{id}/audio` (`synth.job.completed` / `.failed`).
//! Deleting the job removes the audio.

use axum::body::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::output::{Codec, Output, OutputRequest};
use super::{MODULE, SaveTo, Speak, voices};
use crate::auth::Principal;
use crate::db::jobs::{self, JobRow, NewJob};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::jobs::{JobFilter, JobView};
use crate::scaispeak::ScaiSpeak;
use crate::speech::backends::Preference;
use crate::speech::balancers::Serves;
use crate::store::ObjectKey;

pub const KIND: &str = "synth";

/// A synth request as stored with its job.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    text: String,
    voice: String,
    codec: Codec,
    sample_rate: Option<u32>,
    speed: f32,
    backend_preference: Option<Preference>,
    /// The user's drive instead of the job's own object (the job's subject is the user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    save_to: Option<SaveTo>,
    /// A balancer's name: the job binds to one of its instances when it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
}

fn output_key(tenant_id: &str, job_id: &str) -> ApiResult<ObjectKey> {
    ObjectKey::new(tenant_id, &format!("scaispeak/jobs/{job_id}/output"))
        .map_err(|e| ApiError::internal(format_args!("object key: {e}")))
}

/// Queues a validated request; wakes this process's workers.
pub async fn create(state: &ScaiSpeak, principal: &Principal, speak: &Speak) -> ApiResult<JobView> {
    let id = jobs::job_id();
    let stored = Stored {
        text: speak.text.clone(),
        voice: speak.voice.id.clone(),
        codec: speak.output.codec,
        sample_rate: speak.output.sample_rate,
        speed: speak.speed,
        backend_preference: speak.backend_preference,
        save_to: speak.save_to.clone(),
        model: speak.model.clone(),
    };
    let options = serde_json::to_string(&stored).map_err(ApiError::internal)?;
    // The job's object is where its audio will be.
    let key = output_key(&principal.tenant_id, &id)?;
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
            media_type: None,
            audio_seconds: None,
        },
    )
    .await
}

/// Runs a claimed synth job: the audio goes to the object store, or with `save_to` to
/// the user's drive (a file that appeared since the job was queued fails it with
/// `SCAISPEAK_SCAIDRIVE_CONFLICT` unless `overwrite`).
pub async fn run(state: &ScaiSpeak, job: &JobRow) -> ApiResult<(Value, f64)> {
    let stored: Stored = serde_json::from_str(&job.options)
        .map_err(|e| ApiError::internal(format_args!("synth job options: {e}")))?;
    let speak = Speak {
        voice: voices::find(state, &job.tenant_id, Some(&stored.voice)).await?,
        output: Output::from_request(
            OutputRequest {
                codec: Some(stored.codec),
                sample_rate: stored.sample_rate,
            },
            Codec::Wav,
        )?,
        text: stored.text,
        speed: stored.speed,
        backend_preference: stored.backend_preference,
        run_async: false,
        save_to: None,
        stream: false,
        // Asked again now: the instance picked at the request may be gone.
        nodes: state
            .handles
            .bound(&job.tenant_id, stored.model.as_deref(), Serves::Speech)
            .await?,
        model: stored.model,
    };
    let spoken = super::speak(state, &job.tenant_id, &job.subject, &speak).await?;
    let characters = speak.text.chars().count();
    if let Some(save_to) = &stored.save_to {
        let saved = super::drive::save(
            state,
            &job.tenant_id,
            &job.subject,
            save_to,
            speak.output.codec,
            spoken.content_type,
            spoken.bytes,
        )
        .await?;
        let result = json!({
            "file": saved,
            "characters": characters,
            "backend": spoken.backend.as_str(),
        });
        return Ok((result, spoken.seconds));
    }
    let key = output_key(&job.tenant_id, &job.id)?;
    let bytes = spoken.bytes.len();
    state
        .handles
        .store
        .put(&key, Bytes::from(spoken.bytes))
        .await
        .map_err(|e| e.api("storing the audio"))?;
    let result = json!({
        "audio_url": format!("/v1/modules/{MODULE}/jobs/{}/audio", job.id),
        "content_type": spoken.content_type,
        "bytes": bytes,
        "characters": characters,
        "backend": spoken.backend.as_str(),
    });
    Ok((result, spoken.seconds))
}

async fn row(state: &ScaiSpeak, principal: &Principal, id: &str) -> ApiResult<JobRow> {
    crate::jobs::find(&state.handles.jobs, &principal.tenant_id, MODULE, id).await
}

pub async fn get(state: &ScaiSpeak, principal: &Principal, id: &str) -> ApiResult<JobView> {
    row(state, principal, id).await.map(JobView::from)
}

pub async fn list(
    state: &ScaiSpeak,
    principal: &Principal,
    filter: &JobFilter,
) -> ApiResult<(Vec<JobView>, Option<String>)> {
    crate::jobs::list(&state.handles.jobs, &principal.tenant_id, MODULE, filter).await
}

/// A finished job's audio and its content type, streamed from the object store as it
/// is read; 404 until it has succeeded.
pub async fn audio(
    state: &ScaiSpeak,
    principal: &Principal,
    id: &str,
) -> ApiResult<(String, crate::store::ByteChunks)> {
    let job = row(state, principal, id).await?;
    let result = job
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str::<Value>(r).ok())
        .unwrap_or_default();
    if let Some(path) = result["file"]["path"].as_str() {
        return Err(ApiError::new(
            ErrorCode::NOT_FOUND,
            format!("this job's audio was saved to the drive at `{path}`, not with the job"),
        ));
    }
    let content_type = result["content_type"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ApiError::not_found("job audio (the job has not succeeded)"))?;
    let chunks = state
        .handles
        .store
        .get_stream(&output_key(&job.tenant_id, &job.id)?)
        .await
        .map_err(|e| e.api("job audio"))?;
    Ok((content_type, chunks))
}

/// Deletes a job and its audio.
pub async fn delete(state: &ScaiSpeak, principal: &Principal, id: &str) -> ApiResult<()> {
    let job = crate::jobs::remove(&state.handles.jobs, &principal.tenant_id, MODULE, id).await?;
    if let Ok(key) = output_key(&job.tenant_id, &job.id) {
        let _ = state.handles.store.delete(&key).await;
    }
    Ok(())
}
