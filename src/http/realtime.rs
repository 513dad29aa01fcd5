//! `GET /v1/realtime`: OpenAI's Realtime API as a WebSocket (see `realtime`).

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::HeaderMap;
use axum::response::Response;
use tracing::Instrument;

use crate::app::AppState;
use crate::realtime::config::{Kind, Session};

/// The subprotocol a browser puts its key in (`openai-insecure-api-key.<key>`).
const KEY_PROTOCOL: &str = "openai-insecure-api-key.";

/// OpenAI's Realtime API: a voice conversation with the gateway's chat model `?model=`
/// (`session.update`, `input_audio_buffer.*`, `conversation.item.*`, `response.create`
/// and `.cancel` in; `session.*`, `input_audio_buffer.*`, `conversation.item.*`,
/// `response.*` with audio and transcript deltas, function calls, `error` out), or with
/// `?intent=transcription` (or `session.type: "transcription"`) a transcription
/// session. The key as `Authorization: Bearer`, `?token=`, or the subprotocol
/// `openai-insecure-api-key.<key>` (with `realtime`); `OpenAI-Beta: realtime=v1` (or
/// the `openai-beta.realtime-v1` subprotocol) speaks the beta protocol's names.
#[utoipa::path(get, path = "/v1/realtime", tag = "scaiecho",
    responses((status = 101, description = "WebSocket, OpenAI's Realtime protocol")),
    security(("bearer" = [])))]
pub async fn realtime(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    upgrade: WebSocketUpgrade,
) -> Response {
    let offered: Vec<String> = headers
        .get(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.split(',').map(|p| p.trim().to_owned()).collect())
        .unwrap_or_default();
    let query = uri.query().unwrap_or_default();
    let query_token = crate::ws::query_token(query);
    let param = |name: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.chars().take(128).collect::<String>())
    };
    let kind = match param("intent").as_deref() {
        Some("transcription") => Kind::Transcription,
        _ => Kind::Realtime,
    };
    let session = Session::new(kind, param("model").as_deref());
    let from_protocol = offered
        .iter()
        .find_map(|p| p.strip_prefix(KEY_PROTOCOL).map(str::to_owned));
    let token = match headers.contains_key(axum::http::header::AUTHORIZATION) {
        true => crate::ws::token(&headers, None),
        false => from_protocol.or(query_token),
    };
    let beta = headers
        .get("openai-beta")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("realtime=v1"))
        || offered.iter().any(|p| p == "openai-beta.realtime-v1");
    let request_id = crate::request_id::current().unwrap_or_else(crate::request_id::generate);
    let span = tracing::Span::current();
    // An append of 15 MiB of audio is 20 MiB of base64.
    let frame_limit = (crate::realtime::events::MAX_APPEND_BYTES / 3 * 4 + 64 * 1024)
        .max(state.config.stream.max_frame_bytes);
    upgrade
        .protocols(["realtime"])
        .max_message_size(frame_limit)
        .max_frame_size(frame_limit)
        .on_upgrade(move |socket| {
            metrics::counter!(super::scaiecho::COMPAT_SESSIONS, "protocol" => "openai_realtime")
                .increment(1);
            crate::request_id::scope(
                request_id,
                crate::realtime::serve(socket, state.realtime(), token, beta, session)
                    .instrument(span),
            )
        })
}
