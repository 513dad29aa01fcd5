//! ScaiEcho routes (`/v1/modules/scaiecho/...`) and the OpenAI-compatible
//! `POST /v1/audio/transcriptions`. Each handler checks auth, reads and validates the
//! upload, then calls `scaiecho`.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::Instrument;

use crate::app::AppState;
use crate::auth::{Auth, Principal};
use crate::error::ApiResult;
use crate::extract::Json;
use crate::inference::pool::observed;
use crate::jobs::{JobFilter, JobView};
use crate::ratelimit::Consumed;
use crate::rbac::Permission;
use crate::scaiecho::format::{self, ResponseFormat, Transcription};
use crate::scaiecho::jobs;
use crate::scaiecho::policy::{Policy, PolicyPatch};
use crate::scaiecho::speakers::{self, Deleted, SpeakerView, WarmView};
use crate::scaiecho::{self, MODULE, Outcome};
use crate::services::modules::require_enabled;
use crate::telemetry::BackendId;

type St = State<Arc<AppState>>;

/// Auth, upload, then ScaiEcho's transcription of it: a finished transcription is
/// written by `render` in the requested format, a queued job is 202 with the job.
async fn run(
    state: &AppState,
    principal: &Principal,
    request: Request,
    render: fn(&Transcription, ResponseFormat) -> String,
) -> ApiResult<Response> {
    // Module and base permission before the body is even read.
    require_enabled(principal, MODULE)?;
    principal.require(Permission::ScaiechoTranscribe)?;
    let upload = super::upload::read(request, state.scaiecho.intake()).await?;
    let work = scaiecho::transcribe_upload(&state.scaiecho, principal, upload);
    let (outcome, served) = observed(work).await;
    let (transcription, format) = match outcome? {
        Outcome::Queued(job) => return Ok(accepted(job)),
        Outcome::Done(transcription, format) => (transcription, format),
    };
    let mut response = respond(
        render(&transcription, format),
        format,
        &transcription.backend,
    );
    if let Ok(value) = HeaderValue::from_str(&served.join(","))
        && !served.is_empty()
    {
        response.headers_mut().insert(NODE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("{:.3}", transcription.duration)) {
        response.headers_mut().insert(AUDIO_SECONDS, value);
    }
    response.extensions_mut().insert(Consumed {
        audio_seconds: transcription.duration,
    });
    Ok(response)
}

/// The inference nodes that served a transcription.
const NODE: HeaderName = HeaderName::from_static("x-scaigrid-node");

/// The seconds of audio transcribed (what accounting and the audio limits count).
const AUDIO_SECONDS: HeaderName = HeaderName::from_static("x-scaigrid-audio-seconds");

fn accepted(job: JobView) -> Response {
    (StatusCode::ACCEPTED, Json(job)).into_response()
}

fn respond(body: String, format: ResponseFormat, backend: &str) -> Response {
    let mut response = ([(CONTENT_TYPE, format.content_type())], body).into_response();
    response
        .extensions_mut()
        .insert(BackendId(backend.to_owned()));
    response
}

/// Transcribes audio sent as multipart (`file` part) or as the raw body with its
/// `Content-Type`; options as form fields or query parameters.
#[utoipa::path(post, path = "/v1/modules/scaiecho/transcribe", tag = "scaiecho",
    responses((status = 200, body = Transcription), (status = 202, body = JobView)),
    security(("bearer" = [])))]
pub async fn transcribe(
    State(state): St,
    Auth(principal): Auth,
    request: Request,
) -> ApiResult<Response> {
    run(&state, &principal, request, format::render).await
}

/// The OpenAI-compatible alias: `json` is `{"text"}`, `verbose_json` the full body.
#[utoipa::path(post, path = "/v1/audio/transcriptions", tag = "scaiecho",
    responses((status = 200, description = "as OpenAI's API")), security(("bearer" = [])))]
pub async fn openai_transcriptions(
    State(state): St,
    Auth(principal): Auth,
    request: Request,
) -> ApiResult<Response> {
    run(&state, &principal, request, openai_body).await
}

/// OpenAI's shapes: `json` is `{"text"}`, `verbose_json` the full body.
fn openai_body(transcription: &Transcription, format: ResponseFormat) -> String {
    match format {
        ResponseFormat::Json => json!({ "text": transcription.text }).to_string(),
        ResponseFormat::VerboseJson => {
            let mut body = json!({
                "task": "transcribe",
                "language": transcription.language,
                "duration": transcription.duration,
                "text": transcription.text,
                "segments": transcription.segments,
            });
            if let Some(words) = format::all_words(transcription) {
                body["words"] = json!(words);
            }
            body.to_string()
        }
        other => format::render(transcription, other),
    }
}

/// The tenant's ScaiEcho policy.
#[utoipa::path(get, path = "/v1/modules/scaiecho/tenant-policy", tag = "scaiecho",
    responses((status = 200, body = Policy)), security(("bearer" = [])))]
pub async fn get_policy(State(state): St, Auth(principal): Auth) -> ApiResult<Json<Policy>> {
    require_enabled(&principal, MODULE)?;
    scaiecho::policy(&state.scaiecho, &principal.tenant_id)
        .await
        .map(Json)
}

/// Changes the tenant's policy (tenant admins).
#[utoipa::path(patch, path = "/v1/modules/scaiecho/tenant-policy", tag = "scaiecho",
    request_body = PolicyPatch, responses((status = 200, body = Policy)), security(("bearer" = [])))]
pub async fn patch_policy(
    State(state): St,
    Auth(principal): Auth,
    Json(patch): Json<PolicyPatch>,
) -> ApiResult<Json<Policy>> {
    scaiecho::patch_policy(&state.scaiecho, &principal, patch)
        .await
        .map(Json)
}

/// Job routes need the module and the transcribe permission.
fn job_access(principal: &Principal) -> ApiResult<()> {
    require_enabled(principal, MODULE)?;
    principal.require(Permission::ScaiechoTranscribe)
}

/// The tenant's transcription jobs, newest first, a page at a time (`has_more` and
/// `next_after` lead to the next).
#[utoipa::path(get, path = "/v1/modules/scaiecho/jobs", tag = "scaiecho", params(JobFilter),
    responses((status = 200, body = Vec<JobView>)), security(("bearer" = [])))]
pub async fn list_jobs(
    State(state): St,
    Auth(principal): Auth,
    crate::extract::Query(filter): crate::extract::Query<JobFilter>,
) -> ApiResult<Json<serde_json::Value>> {
    job_access(&principal)?;
    let (jobs, next) = jobs::list(&state.scaiecho, &principal, &filter).await?;
    Ok(Json(super::page_of(&jobs, next.as_deref())))
}

/// One job; `result` holds the transcription once `succeeded`.
#[utoipa::path(get, path = "/v1/modules/scaiecho/jobs/{id}", tag = "scaiecho",
    responses((status = 200, body = JobView)), security(("bearer" = [])))]
pub async fn get_job(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    job_access(&principal)?;
    jobs::get(&state.scaiecho, &principal, &id).await.map(Json)
}

/// Deletes a job and its staged audio (a running job's result is dropped).
#[utoipa::path(delete, path = "/v1/modules/scaiecho/jobs/{id}", tag = "scaiecho",
    responses((status = 204)), security(("bearer" = [])))]
pub async fn delete_job(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    job_access(&principal)?;
    jobs::delete(&state.scaiecho, &principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
pub struct StreamQuery {
    /// The bearer token, for clients that cannot set headers on a WebSocket.
    token: Option<String>,
}

/// WebSocket speech to text (SPEC protocol): an `open` text frame, binary audio frames,
/// `flush`/`close` controls; `ready`, `delta`, `error`, `done` back. Errors close with
/// 4401, 4403, 4400, 4413, 4429 or 4502 after an `error` frame.
#[utoipa::path(get, path = "/v1/modules/scaiecho/stream/transcribe", tag = "scaiecho",
    params(StreamQuery), responses((status = 101, description = "WebSocket")),
    security(("bearer" = [])))]
pub async fn stream_transcribe(
    State(state): St,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The header wins; a malformed header is an invalid token, not a missing one.
    let token = match headers.contains_key(axum::http::header::AUTHORIZATION) {
        true => Some(
            crate::auth::bearer_token(&headers)
                .unwrap_or_default()
                .to_owned(),
        ),
        false => query.token,
    };
    let request_id = crate::request_id::current().unwrap_or_else(crate::request_id::generate);
    let span = tracing::Span::current();
    // Frames up to four times the limit reach the session, which refuses those over it
    // with 4413; larger ones end the connection in the protocol layer.
    let frame_limit = state.config.stream.max_frame_bytes.saturating_mul(4);
    upgrade
        .max_message_size(frame_limit)
        .max_frame_size(frame_limit)
        .on_upgrade(move |socket| {
            crate::request_id::scope(
                request_id,
                scaiecho::stream::serve(socket, state.scaiecho.clone(), token).instrument(span),
            )
        })
}

/// Enrolls a speaker: `label` plus a reference clip (multipart `file`, or the raw body
/// with `?label=`). Fails preflight with 422 `SCAIECHO_SPEAKER_PREFLIGHT_FAILED`.
#[utoipa::path(post, path = "/v1/modules/scaiecho/speakers", tag = "scaiecho",
    responses((status = 201, body = SpeakerView)), security(("bearer" = [])))]
pub async fn create_speaker(
    State(state): St,
    Auth(principal): Auth,
    request: Request,
) -> ApiResult<(StatusCode, Json<SpeakerView>)> {
    require_enabled(&principal, MODULE)?;
    principal.require(speakers::WRITE)?;
    let upload = super::upload::read(request, state.scaiecho.intake()).await?;
    let speaker = speakers::enroll(&state.scaiecho, &principal, upload).await?;
    Ok((StatusCode::CREATED, Json(speaker)))
}

/// `GET /speakers` query.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SpeakerFilter {
    /// `pending`, `ready` or `failed`.
    enrollment_status: Option<String>,
    /// Speakers a page holds, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// The `next_after` of the previous page.
    after: Option<String>,
}

/// The tenant's live speakers, a page at a time (`has_more`, `next_after`).
#[utoipa::path(get, path = "/v1/modules/scaiecho/speakers", tag = "scaiecho", params(SpeakerFilter),
    responses((status = 200, body = Vec<SpeakerView>)), security(("bearer" = [])))]
pub async fn list_speakers(
    State(state): St,
    Auth(principal): Auth,
    crate::extract::Query(filter): crate::extract::Query<SpeakerFilter>,
) -> ApiResult<Json<serde_json::Value>> {
    let page = crate::db::page::Page::parse(filter.limit, filter.after)?;
    let data = speakers::list(
        &state.scaiecho,
        &principal,
        filter.enrollment_status.as_deref(),
    )
    .await?;
    let (data, next) = page.slice(data, |speaker| &speaker.id);
    Ok(Json(super::page_of(&data, next.as_deref())))
}

/// One speaker with its `enrollment_status` (tombstoned ones show `deleted_at`).
#[utoipa::path(get, path = "/v1/modules/scaiecho/speakers/{id}", tag = "scaiecho",
    responses((status = 200, body = SpeakerView)), security(("bearer" = [])))]
pub async fn get_speaker(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<SpeakerView>> {
    speakers::get(&state.scaiecho, &principal, &id)
        .await
        .map(Json)
}

/// Tombstones the speaker, writes the audit row, evicts it from its nodes.
#[utoipa::path(delete, path = "/v1/modules/scaiecho/speakers/{id}", tag = "scaiecho",
    responses((status = 200, body = Deleted)), security(("bearer" = [])))]
pub async fn delete_speaker(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted>> {
    speakers::delete(&state.scaiecho, &principal, &id)
        .await
        .map(Json)
}

/// Which nodes hold the speaker's profile.
#[utoipa::path(get, path = "/v1/modules/scaiecho/speakers/{id}/warm", tag = "scaiecho",
    responses((status = 200, body = WarmView)), security(("bearer" = [])))]
pub async fn get_speaker_warm(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<WarmView>> {
    speakers::warm_status(&state.scaiecho, &principal, &id)
        .await
        .map(Json)
}

/// Fans the profile out to the nodes; `ready` once one accepts.
#[utoipa::path(post, path = "/v1/modules/scaiecho/speakers/{id}/warm", tag = "scaiecho",
    responses((status = 200, body = WarmView)), security(("bearer" = [])))]
pub async fn warm_speaker(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<WarmView>> {
    speakers::warm(&state.scaiecho, &principal, &id)
        .await
        .map(Json)
}

/// Deepgram-compatible live transcription: Deepgram's query parameters, `Results`,
/// `UtteranceEnd`, `SpeechStarted` and `Metadata` messages, `KeepAlive`, `Finalize` and
/// `CloseStream` (see `scaiecho::deepgram`). The key as `Authorization: Token <key>`
/// (or `Bearer`), the `token` subprotocol (`Sec-WebSocket-Protocol: token, <key>`), or
/// `?token=`. Errors are an `Error` message, then the close code of the error table.
#[utoipa::path(get, path = "/v1/listen", tag = "scaiecho",
    responses((status = 101, description = "WebSocket, Deepgram's live protocol")),
    security(("bearer" = [])))]
pub async fn listen_stream(
    State(state): St,
    headers: HeaderMap,
    uri: axum::http::Uri,
    upgrade: WebSocketUpgrade,
) -> Response {
    let query = uri.query().unwrap_or_default();
    let token = listen_token(&headers, query);
    // Options wrong in the URL are said after auth, on the socket (an `Error`, then
    // close 4400 or 4415's WebSocket code), as a bad `open` frame would be.
    let (options, open) = match scaiecho::deepgram::options::Listen::from_query(query) {
        Ok(listen) => {
            let open = listen.open();
            (listen, open)
        }
        Err(error) => (scaiecho::deepgram::options::Listen::default(), Err(error)),
    };
    let request_id = crate::request_id::current().unwrap_or_else(crate::request_id::generate);
    let span = tracing::Span::current();
    let frame_limit = state.config.stream.max_frame_bytes.saturating_mul(4);
    upgrade
        .protocols(["token"])
        .max_message_size(frame_limit)
        .max_frame_size(frame_limit)
        .on_upgrade(move |socket| {
            metrics::counter!(COMPAT_SESSIONS, "protocol" => "deepgram_live").increment(1);
            let link =
                scaiecho::deepgram::link::DeepgramLink::new(socket, options, request_id.clone());
            crate::request_id::scope(
                request_id,
                scaiecho::stream::serve_link(link, state.scaiecho.clone(), token, Some(open))
                    .instrument(span),
            )
        })
}

/// Sessions and requests in another vendor's protocol (`deepgram_live`,
/// `deepgram_file`, `openai_realtime`), by protocol: the rest of their story is
/// ScaiEcho's own metrics and usage.
pub(super) const COMPAT_SESSIONS: &str = "scaigrid_compat_sessions_total";

/// A Deepgram client's key: `Authorization` (`Token` or `Bearer`), the `token`
/// subprotocol browsers use (`Sec-WebSocket-Protocol: token, <key>`), else `?token=`.
fn listen_token(headers: &HeaderMap, query: &str) -> Option<String> {
    let subprotocol = headers
        .get(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let mut offered = value.split(',').map(str::trim);
            (offered.next() == Some("token"))
                .then(|| offered.next().map(str::to_owned))
                .flatten()
        });
    match headers.contains_key(axum::http::header::AUTHORIZATION) {
        true => crate::ws::token(headers, None),
        false => subprotocol.or_else(|| crate::ws::query_token(query)),
    }
}

/// Deepgram-compatible pre-recorded transcription: the audio as the body (any container
/// ScaiEcho decodes, told by its bytes), Deepgram's query parameters, Deepgram's
/// response body (`metadata`, `results.channels[0].alternatives[0]` with words,
/// `utterances` when asked). Transcribed on the request however long; `callback` and
/// URL sources are refused (400).
#[utoipa::path(post, path = "/v1/listen", tag = "scaiecho",
    responses((status = 200, description = "Deepgram's response body")),
    security(("bearer" = [])))]
pub async fn listen_file(
    State(state): St,
    Auth(principal): Auth,
    request: Request,
) -> ApiResult<Response> {
    require_enabled(&principal, MODULE)?;
    principal.require(Permission::ScaiechoTranscribe)?;
    let query = request.uri().query().unwrap_or_default().to_owned();
    let listen = scaiecho::deepgram::options::Listen::from_query(&query)?;
    let json_body = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if json_body {
        return Err(crate::error::ApiError::invalid(
            "a URL source is not fetched here: send the audio itself as the body",
        )
        .with_field("field", "url"));
    }
    let upload = super::upload::read(request, state.scaiecho.intake()).await?;
    metrics::counter!(COMPAT_SESSIONS, "protocol" => "deepgram_file").increment(1);
    let work = scaiecho::deepgram::transcribe_file(&state.scaiecho, &principal, upload, &listen);
    let (body, served) = observed(work).await;
    let body = body?;
    let seconds = body["metadata"]["duration"].as_f64().unwrap_or_default();
    let mut response = Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&served.join(","))
        && !served.is_empty()
    {
        response.headers_mut().insert(NODE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("{seconds:.3}")) {
        response.headers_mut().insert(AUDIO_SECONDS, value);
    }
    response.extensions_mut().insert(Consumed {
        audio_seconds: seconds,
    });
    Ok(response)
}
