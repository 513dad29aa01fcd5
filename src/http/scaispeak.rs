//! ScaiSpeak routes (`/v1/modules/scaispeak/...`), the OpenAI-compatible
//! `POST /v1/audio/speech`, and `GET /v1/modules/{id}/readyz` for both speech modules.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::app::AppState;
use crate::auth::{Auth, Principal};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::Json;
use crate::jobs::{JobFilter, JobView};
use crate::ratelimit::Consumed;
use crate::scaispeak::output::{Codec, OutputRequest};
use crate::scaispeak::voices::{self, Voice};
use crate::scaispeak::{self, MODULE, Outcome, Policy, PolicyPatch, SpeakRequest};
use crate::services::modules::require_enabled;
use crate::telemetry::BackendId;

type St = State<Arc<AppState>>;

const AUDIO_SECONDS: HeaderName = HeaderName::from_static("x-scaigrid-audio-seconds");
/// Which backend spoke (`A` local node, `B` relay).
const BACKEND: HeaderName = HeaderName::from_static("x-scaigrid-backend");

async fn speak_response(
    state: &AppState,
    principal: &Principal,
    request: SpeakRequest,
) -> ApiResult<Response> {
    let spoken = match scaispeak::speak_request(&state.scaispeak, principal, request).await? {
        Outcome::Queued(job) => return Ok((StatusCode::ACCEPTED, Json(job)).into_response()),
        Outcome::Saved {
            file,
            seconds,
            backend,
        } => {
            let body = json!({
                "object": "scaispeak.saved",
                "file": file,
                "audio_seconds": (seconds * 1000.0).round() / 1000.0,
                "backend": backend.as_str(),
            });
            let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
            response.extensions_mut().insert(Consumed {
                audio_seconds: seconds,
            });
            return Ok(response);
        }
        Outcome::Streamed(streamed) => return Ok(streamed_response(streamed)),
        Outcome::Spoken(spoken) => spoken,
    };
    let mut response = ([(CONTENT_TYPE, spoken.content_type)], spoken.bytes).into_response();
    if let Ok(seconds) = HeaderValue::from_str(&format!("{:.3}", spoken.seconds)) {
        response.headers_mut().insert(AUDIO_SECONDS, seconds);
    }
    response
        .headers_mut()
        .insert(BACKEND, HeaderValue::from_static(spoken.backend.as_str()));
    response
        .extensions_mut()
        .insert(BackendId(spoken.backend.as_str().to_owned()));
    response.extensions_mut().insert(Consumed {
        audio_seconds: spoken.seconds,
    });
    Ok(response)
}

/// Audio sent while it is made: chunked, no length. A synthesis that fails after the
/// first bytes ends the body with an error, which resets the connection (a client sees
/// a broken transfer, never a short file that looks whole). Usage is charged by the
/// synthesis task when the body ends.
fn streamed_response(streamed: scaispeak::streamed::Streamed) -> Response {
    let scaispeak::streamed::Streamed {
        content_type,
        backend,
        first,
        rest,
    } = streamed;
    let tail = futures_util::stream::unfold(rest, |mut rest| async move {
        let piece = rest.recv().await?;
        let piece = piece
            .map(axum::body::Bytes::from)
            .map_err(|error| std::io::Error::other(error.message));
        Some((piece, rest))
    });
    let head = futures_util::stream::once(std::future::ready(Ok(axum::body::Bytes::from(first))));
    let body = axum::body::Body::from_stream(futures_util::StreamExt::chain(head, tail));
    let mut response = ([(CONTENT_TYPE, content_type)], body).into_response();
    response
        .headers_mut()
        .insert(BACKEND, HeaderValue::from_static(backend.as_str()));
    response
        .extensions_mut()
        .insert(BackendId(backend.as_str().to_owned()));
    response
}

/// Synthesizes `text` with `voice`; the audio comes back inline in `output.codec`. A
/// text over `inline_text_chars`, or `async: true`, becomes a synth job (202).
#[utoipa::path(post, path = "/v1/modules/scaispeak/speak", tag = "scaispeak",
    request_body = SpeakRequest, responses((status = 200, description = "the audio")),
    security(("bearer" = [])))]
pub async fn speak(
    State(state): St,
    Auth(principal): Auth,
    Json(request): Json<SpeakRequest>,
) -> ApiResult<Response> {
    speak_response(&state, &principal, request).await
}

/// OpenAI's `POST /v1/audio/speech` body. `model` binds the synthesis to a balancer
/// of that name and is otherwise ignored (OpenAI's `tts-1`: the tenant policy picks the
/// backend); `instructions` is accepted and ignored (no voice here takes instructions).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct OpenAiSpeech {
    pub input: String,
    pub model: Option<String>,
    pub voice: Option<String>,
    /// `mp3` (the default, as OpenAI's), `opus`, `flac`, `wav`, `pcm`.
    pub response_format: Option<String>,
    pub speed: Option<f32>,
    /// `audio` (the default); `sse` is not offered.
    pub stream_format: Option<String>,
}

/// OpenAI's `response_format` as an output: `pcm` is 24 kHz s16le as OpenAI's.
fn openai_output(format: Option<&str>) -> ApiResult<OutputRequest> {
    let (codec, sample_rate) = match format {
        None | Some("mp3") => (Codec::Mp3, None),
        Some("wav") => (Codec::Wav, None),
        Some("pcm") => (Codec::PcmS16le, Some(24_000)),
        Some("opus") => (Codec::Opus, None),
        Some("flac") => (Codec::Flac, None),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "response_format `{other}` is not available; use mp3, opus, flac, wav or pcm"
            ))
            .with_field("field", "response_format"));
        }
    };
    Ok(OutputRequest {
        codec: Some(codec),
        sample_rate,
    })
}

/// The OpenAI-compatible alias. The audio is sent while it is made (OpenAI's SDKs read it
/// with `with_streaming_response`), and a long text is answered inline too (its clients
/// expect audio, not a job).
#[utoipa::path(post, path = "/v1/audio/speech", tag = "scaispeak",
    request_body = OpenAiSpeech, responses((status = 200, description = "the audio")),
    security(("bearer" = [])))]
pub async fn openai_speech(
    State(state): St,
    Auth(principal): Auth,
    Json(body): Json<OpenAiSpeech>,
) -> ApiResult<Response> {
    let output = openai_output(body.response_format.as_deref())?;
    if let Some(other) = body.stream_format.as_deref().filter(|f| *f != "audio") {
        return Err(ApiError::invalid(format!(
            "stream_format `{other}` is not available; use audio"
        ))
        .with_field("field", "stream_format"));
    }
    let request = SpeakRequest {
        text: body.input,
        voice: body.voice,
        output,
        speed: body.speed,
        backend_preference: None,
        run_async: false,
        save_to: None,
        model: body.model,
        stream: Some(true),
        long_inline: true,
    };
    speak_response(&state, &principal, request).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct VoiceFilter {
    /// `global` or `tenant`.
    scope: Option<String>,
    /// `ready`, `processing` or `failed`.
    embedding_status: Option<String>,
    /// Voices a page holds, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// The `next_after` of the previous page.
    after: Option<String>,
}

/// Voices this tenant can speak with: global ones and its cloned ones.
#[utoipa::path(get, path = "/v1/modules/scaispeak/voices", tag = "scaispeak",
    params(VoiceFilter), responses((status = 200, body = Vec<Voice>)), security(("bearer" = [])))]
pub async fn list_voices(
    State(state): St,
    Auth(principal): Auth,
    crate::extract::Query(filter): crate::extract::Query<VoiceFilter>,
) -> ApiResult<Json<Value>> {
    let page = crate::db::page::Page::parse(filter.limit, filter.after)?;
    let data = voices::list(
        &state.scaispeak,
        &principal,
        filter.scope.as_deref(),
        filter.embedding_status.as_deref(),
    )
    .await?;
    let (data, next) = page.slice(data, |voice| &voice.id);
    Ok(Json(super::page_of(&data, next.as_deref())))
}

/// Voice-cloning intake: `name` plus a reference clip (multipart `file`, or the raw body
/// with `?name=`). 422 `SCAISPEAK_VOICE_PREFLIGHT_FAILED` with the `preflight` block.
#[utoipa::path(post, path = "/v1/modules/scaispeak/voices", tag = "scaispeak",
    responses((status = 201, body = Voice)), security(("bearer" = [])))]
pub async fn create_voice(
    State(state): St,
    Auth(principal): Auth,
    request: axum::extract::Request,
) -> ApiResult<(StatusCode, Json<Voice>)> {
    require_enabled(&principal, MODULE)?;
    principal.require(voices::WRITE)?;
    let upload = super::upload::read(request, state.scaispeak.intake()).await?;
    let voice = voices::create(&state.scaispeak, &principal, upload).await?;
    Ok((StatusCode::CREATED, Json(voice)))
}

#[utoipa::path(get, path = "/v1/modules/scaispeak/voices/{id}", tag = "scaispeak",
    responses((status = 200, body = Voice)), security(("bearer" = [])))]
pub async fn get_voice(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Voice>> {
    voices::get(&state.scaispeak, &principal, &id)
        .await
        .map(Json)
}

/// Erases a tenant voice: reference, profile, embedding, warm entries.
#[utoipa::path(delete, path = "/v1/modules/scaispeak/voices/{id}", tag = "scaispeak",
    responses((status = 200, body = voices::Erased)), security(("bearer" = [])))]
pub async fn delete_voice(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<voices::Erased>> {
    voices::erase(&state.scaispeak, &principal, &id)
        .await
        .map(Json)
}

/// Re-runs the intake from the staged reference.
#[utoipa::path(post, path = "/v1/modules/scaispeak/voices/{id}/repromote", tag = "scaispeak",
    responses((status = 200, body = Voice)), security(("bearer" = [])))]
pub async fn repromote_voice(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Voice>> {
    voices::repromote(&state.scaispeak, &principal, &id)
        .await
        .map(Json)
}

/// A no-op 200 on a ready voice; 409 `SCAISPEAK_VOICE_NOT_READY_FOR_WARMING` otherwise.
#[utoipa::path(post, path = "/v1/modules/scaispeak/voices/{id}/warm", tag = "scaispeak",
    responses((status = 200, body = Voice)), security(("bearer" = [])))]
pub async fn warm_voice(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Voice>> {
    voices::warm(&state.scaispeak, &principal, &id)
        .await
        .map(Json)
}

/// Drops the voice from this node's warm list.
#[utoipa::path(post, path = "/v1/modules/scaispeak/voices/{id}/evict", tag = "scaispeak",
    responses((status = 200, body = Voice)), security(("bearer" = [])))]
pub async fn evict_voice(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Voice>> {
    voices::evict(&state.scaispeak, &principal, &id)
        .await
        .map(Json)
}

/// The tenant's ScaiSpeak policy (`allowed_backends`).
#[utoipa::path(get, path = "/v1/modules/scaispeak/admin/policy", tag = "scaispeak",
    responses((status = 200, body = Policy)), security(("bearer" = [])))]
pub async fn get_policy(State(state): St, Auth(principal): Auth) -> ApiResult<Json<Policy>> {
    require_enabled(&principal, MODULE)?;
    scaispeak::policy(&state.scaispeak, &principal.tenant_id)
        .await
        .map(Json)
}

/// Sets `allowed_backends` (tenant admins).
#[utoipa::path(patch, path = "/v1/modules/scaispeak/admin/policy", tag = "scaispeak",
    request_body = PolicyPatch, responses((status = 200, body = Policy)), security(("bearer" = [])))]
pub async fn patch_policy(
    State(state): St,
    Auth(principal): Auth,
    Json(patch): Json<PolicyPatch>,
) -> ApiResult<Json<Policy>> {
    scaispeak::patch_policy(&state.scaispeak, &principal, patch)
        .await
        .map(Json)
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
pub struct StreamQuery {
    /// The bearer token, for clients that cannot set headers on a WebSocket.
    token: Option<String>,
}

/// WebSocket text to speech: `open`, `text` pieces, `flush`, `close`; `ready`, binary
/// audio frames (20 ms Opus packets or PCM), `done`. 4502 right after `open` when no
/// backend resolves.
#[utoipa::path(get, path = "/v1/modules/scaispeak/stream/speak", tag = "scaispeak",
    params(StreamQuery), responses((status = 101, description = "WebSocket")),
    security(("bearer" = [])))]
pub async fn stream_speak(
    State(state): St,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let token = crate::ws::token(&headers, query.token);
    let request_id = crate::request_id::current().unwrap_or_else(crate::request_id::generate);
    let span = tracing::Span::current();
    upgrade.max_message_size(1 << 20).on_upgrade(move |socket| {
        crate::request_id::scope(
            request_id,
            scaispeak::stream::serve(socket, state.scaispeak.clone(), token).instrument(span),
        )
    })
}

/// Whether a speech module can serve now: each backend's state; 503 when none can.
#[utoipa::path(get, path = "/v1/modules/{id}/readyz", tag = "modules",
    responses((status = 200, description = "ready"), (status = 503, description = "no backend")))]
pub async fn module_readyz(State(state): St, Path(id): Path<String>) -> ApiResult<Response> {
    let usable = match id.as_str() {
        "scaiecho" => state.scaiecho.usable(),
        "scaispeak" => state.scaispeak.usable(),
        _ => return Err(ApiError::not_found("module")),
    };
    let ready = usable.local || usable.relay;
    let body = json!({
        "module": id,
        "status": if ready { "ready" } else { "unavailable" },
        "backends": { "A": usable.local, "B": usable.relay },
    });
    if !ready {
        return Err(ApiError::new(
            ErrorCode::SERVICE_UNAVAILABLE,
            format!("{id}: no backend is usable (no engine loaded, no relay configured)"),
        )
        .with_field("backends", body["backends"].clone()));
    }
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

fn job_access(principal: &Principal) -> ApiResult<()> {
    scaispeak::authorize(principal)
}

/// The tenant's synth jobs, newest first, a page at a time (`has_more`, `next_after`).
#[utoipa::path(get, path = "/v1/modules/scaispeak/jobs", tag = "scaispeak", params(JobFilter),
    responses((status = 200, body = Vec<JobView>)), security(("bearer" = [])))]
pub async fn list_jobs(
    State(state): St,
    Auth(principal): Auth,
    crate::extract::Query(filter): crate::extract::Query<JobFilter>,
) -> ApiResult<Json<Value>> {
    job_access(&principal)?;
    let (data, next) = scaispeak::jobs::list(&state.scaispeak, &principal, &filter).await?;
    Ok(Json(super::page_of(&data, next.as_deref())))
}

/// One synth job; `result.audio_url` once `succeeded`.
#[utoipa::path(get, path = "/v1/modules/scaispeak/jobs/{id}", tag = "scaispeak",
    responses((status = 200, body = JobView)), security(("bearer" = [])))]
pub async fn get_job(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    job_access(&principal)?;
    scaispeak::jobs::get(&state.scaispeak, &principal, &id)
        .await
        .map(Json)
}

/// Deletes a synth job and its audio.
#[utoipa::path(delete, path = "/v1/modules/scaispeak/jobs/{id}", tag = "scaispeak",
    responses((status = 204)), security(("bearer" = [])))]
pub async fn delete_job(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    job_access(&principal)?;
    scaispeak::jobs::delete(&state.scaispeak, &principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The audio of a succeeded synth job.
#[utoipa::path(get, path = "/v1/modules/scaispeak/jobs/{id}/audio", tag = "scaispeak",
    responses((status = 200, description = "the audio")), security(("bearer" = [])))]
pub async fn job_audio(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    job_access(&principal)?;
    let (content_type, chunks) = scaispeak::jobs::audio(&state.scaispeak, &principal, &id).await?;
    let body = axum::body::Body::from_stream(chunks);
    Ok(([(CONTENT_TYPE, content_type)], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_formats_map_to_outputs_and_mp3_is_the_default() {
        let codec = |format: Option<&str>| openai_output(format).map(|o| (o.codec, o.sample_rate));
        assert_eq!(codec(None).unwrap(), (Some(Codec::Mp3), None));
        assert_eq!(codec(Some("mp3")).unwrap(), (Some(Codec::Mp3), None));
        assert_eq!(
            codec(Some("pcm")).unwrap(),
            (Some(Codec::PcmS16le), Some(24_000))
        );
        assert_eq!(codec(Some("flac")).unwrap(), (Some(Codec::Flac), None));
        assert_eq!(codec(Some("opus")).unwrap(), (Some(Codec::Opus), None));
        assert_eq!(codec(Some("wav")).unwrap(), (Some(Codec::Wav), None));
        for refused in ["aac", "MP3", "", "wav\0"] {
            let error = openai_output(Some(refused)).unwrap_err();
            assert_eq!(error.code, ErrorCode::INVALID_REQUEST, "{refused}");
        }
    }
}
