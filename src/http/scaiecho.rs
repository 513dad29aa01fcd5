//! ScaiEcho routes (`/v1/modules/scaiecho/...`) and the OpenAI-compatible
//! `POST /v1/audio/transcriptions`. Each handler checks auth, reads and validates the
//! upload, then calls `scaiecho`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::AppState;
use crate::auth::{Auth, Principal};
use crate::error::ApiResult;
use crate::extract::Json;
use crate::scaiecho::format::{self, ResponseFormat, Transcription};
use crate::scaiecho::policy::{self, Policy, PolicyPatch};
use crate::scaiecho::{self, MODULE, Options, upload};
use crate::services::modules::require_enabled;
use crate::telemetry::BackendId;

type St = State<Arc<AppState>>;

/// Auth, upload, options, policy, decode, transcribe: the shared path of both routes.
async fn run(
    state: &AppState,
    principal: &Principal,
    request: Request,
) -> ApiResult<(Transcription, Options)> {
    // Module and base permission before the body is even read.
    require_enabled(principal, MODULE)?;
    principal.require("scaiecho:transcribe")?;
    let upload = upload::read(request, state.config.limits.max_upload_bytes).await?;
    let options = Options::from_upload(&upload)?;
    scaiecho::authorize(principal, &options)?;
    let policy = scaiecho::policy(state, &principal.tenant_id).await?;
    let backend = policy::resolve(&policy, options.backend_preference, state.scaiecho.usable())?;
    let samples = scaiecho::decode_16k(state, &upload).await?;
    if options.run_async {
        return Err(crate::error::ApiError::invalid(
            "async transcription jobs are not available yet",
        )
        .with_field("field", "async"));
    }
    let transcription = scaiecho::transcribe(state, principal, samples, &options, backend).await?;
    Ok((transcription, options))
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
    responses((status = 200, body = Transcription)), security(("bearer" = [])))]
pub async fn transcribe(
    State(state): St,
    Auth(principal): Auth,
    request: Request,
) -> ApiResult<Response> {
    let (transcription, options) = run(&state, &principal, request).await?;
    let body = format::render(&transcription, options.response_format);
    Ok(respond(
        body,
        options.response_format,
        &transcription.backend,
    ))
}

/// The OpenAI-compatible alias: `json` is `{"text"}`, `verbose_json` the full body.
#[utoipa::path(post, path = "/v1/audio/transcriptions", tag = "scaiecho",
    responses((status = 200, description = "as OpenAI's API")), security(("bearer" = [])))]
pub async fn openai_transcriptions(
    State(state): St,
    Auth(principal): Auth,
    request: Request,
) -> ApiResult<Response> {
    let (transcription, options) = run(&state, &principal, request).await?;
    let body = match options.response_format {
        ResponseFormat::Json => json!({ "text": transcription.text }).to_string(),
        ResponseFormat::VerboseJson => json!({
            "task": "transcribe",
            "language": transcription.language,
            "duration": transcription.duration,
            "text": transcription.text,
            "segments": transcription.segments,
        })
        .to_string(),
        other => format::render(&transcription, other),
    };
    Ok(respond(
        body,
        options.response_format,
        &transcription.backend,
    ))
}

/// The tenant's ScaiEcho policy.
#[utoipa::path(get, path = "/v1/modules/scaiecho/tenant-policy", tag = "scaiecho",
    responses((status = 200, body = Policy)), security(("bearer" = [])))]
pub async fn get_policy(State(state): St, Auth(principal): Auth) -> ApiResult<Json<Policy>> {
    require_enabled(&principal, MODULE)?;
    scaiecho::policy(&state, &principal.tenant_id)
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
    require_enabled(&principal, MODULE)?;
    principal.require_tenant_admin(&principal.tenant_id)?;
    let updated = scaiecho::policy(&state, &principal.tenant_id)
        .await?
        .apply(patch)?;
    let mut tx = state.db.begin().await?;
    crate::db::scaiecho::put_policy(&mut tx, &principal.tenant_id, &updated).await?;
    crate::services::audit(
        &mut tx,
        Some(&principal),
        Some(&principal.tenant_id),
        "scaiecho.policy.update",
        ("tenant", &principal.tenant_id),
        serde_json::to_value(&updated).ok(),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(updated))
}
