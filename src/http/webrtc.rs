//! WebRTC session routes of ScaiEcho and ScaiSpeak (`/v1/modules/{id}/sessions...`) and
//! the demo page. Handlers unpack the request and call `webrtc`; a request for a
//! session another edge holds goes there (`webrtc::forward`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;
use tracing::Instrument;

use crate::app::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::Json;
use crate::webrtc::forward::{self, Unreachable};
use crate::webrtc::{self, Answer, Module, SessionView};

type St = State<Arc<AppState>>;

/// Largest SDP offer taken (a browser's is a few KiB).
const MAX_OFFER_BYTES: usize = 64 * 1024;

/// Creates a session: the options of the module's stream `open` (ScaiEcho: `language`,
/// `diarize`, `chunk_seconds`, `backend_preference`; ScaiSpeak: `voice`, `speed`,
/// `backend_preference`). The response carries the ICE servers for the browser and the
/// offer and control URLs.
#[utoipa::path(post, path = "/v1/modules/{id}/sessions", tag = "webrtc",
    params(("id" = String, Path, description = "`scaiecho` or `scaispeak`")),
    request_body(content = Option<Object>, content_type = "application/json"),
    responses((status = 201, body = SessionView)), security(("bearer" = [])))]
pub async fn create_session(
    State(state): St,
    Auth(principal): Auth,
    Path(module): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let module = Module::parse(&module)?;
    if body.len() > state.config.limits.max_json_body_bytes {
        return Err(ApiError::new(
            ErrorCode::CTX_TOO_LARGE,
            "the options are too large",
        ));
    }
    let options = match body.iter().all(u8::is_ascii_whitespace) {
        true => Value::Null,
        false => serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("the options are not JSON: {e}")))?,
    };
    let view = webrtc::create(&state.webrtc, principal, module, options).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[utoipa::path(get, path = "/v1/modules/{id}/sessions/{session}", tag = "webrtc",
    params(("id" = String, Path), ("session" = String, Path)),
    responses((status = 200, body = SessionView)), security(("bearer" = [])))]
pub async fn get_session(
    State(state): St,
    Auth(principal): Auth,
    Path((module, id)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let module = Module::parse(&module)?;
    let request = (Method::GET, &uri, &headers, Bytes::new());
    if let Some(answer) = forwarded(&state, &id, request).await {
        return Ok(answer);
    }
    let view = webrtc::get(&state.webrtc, &principal, module, &id).await?;
    Ok(Json(view).into_response())
}

/// The answer of the edge that holds session `id`, when another one does and answers
/// (else the session is handled here: held here, or lost).
async fn forwarded(
    state: &AppState,
    id: &str,
    (method, uri, headers, body): (Method, &axum::http::Uri, &HeaderMap, Bytes),
) -> Option<Response> {
    let edge = state.webrtc.elsewhere(id, headers).await?;
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let client = &state.webrtc.forwarder;
    match forward::http(client, &edge, (method, path), headers, body).await {
        Ok(answer) => Some(answer),
        Err(Unreachable(why)) => {
            tracing::warn!(session = %id, %why, "the edge holding the session is unreachable");
            None
        }
    }
}

/// Ends a session (its usage is recorded); deleting an ended one is a no-op.
#[utoipa::path(delete, path = "/v1/modules/{id}/sessions/{session}", tag = "webrtc",
    params(("id" = String, Path), ("session" = String, Path)),
    responses((status = 204)), security(("bearer" = [])))]
pub async fn delete_session(
    State(state): St,
    Auth(principal): Auth,
    Path((module, id)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let module = Module::parse(&module)?;
    let request = (Method::DELETE, &uri, &headers, Bytes::new());
    if let Some(answer) = forwarded(&state, &id, request).await {
        return Ok(answer);
    }
    webrtc::delete(&state.webrtc, &principal, module, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The SDP offer (`{"type":"offer","sdp":...}` as JSON, or `application/sdp`) → the
/// answer. 501 `..._WEBRTC_UNAVAILABLE` without WebRTC; 410
/// `..._WEBRTC_SESSION_STATE_LOST` when the peer state is gone (restart).
#[utoipa::path(post, path = "/v1/modules/{id}/sessions/{session}/offer", tag = "webrtc",
    params(("id" = String, Path), ("session" = String, Path)),
    request_body(content = Object, content_type = "application/json"),
    responses((status = 200, body = Answer), (status = 410), (status = 501)),
    security(("bearer" = [])))]
pub async fn offer(
    State(state): St,
    Auth(principal): Auth,
    Path((module, id)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let module = Module::parse(&module)?;
    if body.len() > MAX_OFFER_BYTES {
        return Err(
            ApiError::new(ErrorCode::CTX_TOO_LARGE, "the offer is too large")
                .with_field("limit", MAX_OFFER_BYTES)
                .with_field("limit_unit", "bytes"),
        );
    }
    let sdp = offer_sdp(&headers, &body)?;
    let request = (Method::POST, &uri, &headers, body);
    if let Some(answer) = forwarded(&state, &id, request).await {
        return Ok(answer);
    }
    let answer = webrtc::offer(&state.webrtc, &principal, module, &id, &sdp).await?;
    Ok(Json(answer).into_response())
}

/// The SDP text of an offer body.
fn offer_sdp(headers: &HeaderMap, body: &[u8]) -> ApiResult<String> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/json");
    if content_type.starts_with("application/sdp") {
        return String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::invalid("the SDP is not UTF-8"));
    }
    #[derive(serde::Deserialize)]
    struct Offer {
        #[serde(rename = "type")]
        kind: Option<String>,
        sdp: String,
    }
    let offer: Offer = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("send {{\"type\":\"offer\",\"sdp\":...}}: {e}")))?;
    if offer.kind.as_deref().is_some_and(|kind| kind != "offer") {
        return Err(ApiError::invalid("`type` must be `offer`").with_field("field", "type"));
    }
    Ok(offer.sdp)
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
pub struct ControlQuery {
    /// The bearer token (browsers cannot set headers on a WebSocket).
    token: Option<String>,
}

/// The session's control WebSocket: the stream's JSON frames (`ready`, `delta`,
/// `interrupted`, `error`, `done`) out, its text frames in. Closes 4404
/// `session_not_ready` before the offer was answered or when the peer state is gone.
#[utoipa::path(get, path = "/v1/modules/{id}/sessions/{session}/control", tag = "webrtc",
    params(("id" = String, Path), ("session" = String, Path), ControlQuery),
    responses((status = 101, description = "WebSocket")), security(("bearer" = [])))]
pub async fn control(
    State(state): St,
    Path((module, id)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Query(query): Query<ControlQuery>,
    upgrade: WebSocketUpgrade,
) -> ApiResult<Response> {
    let module = Module::parse(&module)?;
    let token = crate::ws::token(&headers, query.token);
    let request_id = crate::request_id::current().unwrap_or_else(crate::request_id::generate);
    let span = tracing::Span::current();
    // Held by another edge: a caller this edge accepts is passed on there (the token
    // in a header, not the URL); the owner checks the rest.
    let elsewhere = match state.webrtc.elsewhere(&id, &headers).await {
        Some(edge)
            if crate::ws::authenticate(&state.auth, token.clone())
                .await
                .is_ok() =>
        {
            Some(edge)
        }
        _ => None,
    };
    if let Some(edge) = elsewhere {
        let path = uri.path().to_owned();
        return Ok(upgrade
            .max_message_size(webrtc::MAX_CONTROL_MESSAGE_BYTES)
            .max_frame_size(webrtc::MAX_CONTROL_MESSAGE_BYTES)
            .on_upgrade(move |socket| {
                let piped = async move {
                    match forward::connect(&edge, &path, token.as_deref()).await {
                        Ok(upstream) => forward::pipe(socket, upstream).await,
                        Err(Unreachable(why)) => {
                            tracing::warn!(session = %id, %why, "the edge holding the session is unreachable");
                            webrtc::control(socket, state.webrtc.clone(), module, id, token).await;
                        }
                    }
                };
                crate::request_id::scope(request_id, piped.instrument(span))
            }));
    }
    Ok(upgrade
        .max_message_size(webrtc::MAX_CONTROL_MESSAGE_BYTES)
        .max_frame_size(webrtc::MAX_CONTROL_MESSAGE_BYTES)
        .on_upgrade(move |socket| {
            crate::request_id::scope(
                request_id,
                webrtc::control(socket, state.webrtc.clone(), module, id, token).instrument(span),
            )
        }))
}

/// A page that runs both sessions in the browser: the microphone to ScaiEcho, text to
/// ScaiSpeak's audio track. Paste an API key; nothing is stored.
#[utoipa::path(get, path = "/webrtc-demo", tag = "webrtc",
    responses((status = 200, content_type = "text/html")))]
pub async fn demo() -> Html<&'static str> {
    Html(include_str!("../webrtc/demo.html"))
}

#[cfg(test)]
mod tests {
    /// The demo page renders transcripts, which are whatever was said: never as markup.
    #[test]
    fn the_demo_page_never_parses_text_as_html() {
        let page = include_str!("../webrtc/demo.html");
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!page.contains(sink), "the demo page uses {sink}");
        }
    }
}
