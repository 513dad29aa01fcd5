//! The control WebSocket of a session: the session's JSON frames out, the client's text
//! frames in (the same frames as the module's stream protocol; audio rides the track).

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use tokio::sync::mpsc;

use super::registry::Inbound;
use super::{Found, Module, Webrtc, find, lost};
use crate::error::{ApiError, ErrorCode};
use crate::ws::{self, End};

/// Largest control frame taken (JSON: `close`, or a ScaiSpeak text); larger is 4413.
pub const MAX_CONTROL_FRAME_BYTES: usize = 64 * 1024;

/// Frames up to this reach [`control`], which answers 4413; larger ones end the
/// connection in the protocol layer (1009).
pub const MAX_CONTROL_MESSAGE_BYTES: usize = 16 << 20;

/// The control WebSocket: the session's frames out, text frames in. Before the offer
/// was answered (or when the peer state is gone) it closes with 4404
/// `session_not_ready`.
pub async fn control(
    mut socket: WebSocket,
    state: Arc<Webrtc>,
    module: Module,
    id: String,
    token: Option<String>,
) {
    let inbox = match attach(&state, module, &id, token).await {
        Ok(inbox) => inbox,
        Err(End::Error(error)) if error.code.ws_close_code().is_some_and(|c| c != 4404) => {
            ws::finish(&mut socket, Err(End::Error(error))).await;
            return;
        }
        Err(End::Error(error)) => {
            tracing::info!(session = %id, code = error.code.as_str(), "control socket refused");
            if ws::send_error(&mut socket, &error).await.is_ok() {
                ws::close(&mut socket, 4404, "session_not_ready").await;
            }
            return;
        }
        Err(_) => return,
    };
    let (frames_tx, mut frames) = mpsc::channel::<Message>(64);
    if inbox.send(Inbound::Attach(frames_tx)).await.is_err() {
        let error = ApiError::new(ErrorCode::SESSION_NOT_READY, "the session has ended");
        if ws::send_error(&mut socket, &error).await.is_ok() {
            ws::close(&mut socket, 4404, "session_not_ready").await;
        }
        return;
    }
    let mut keepalive = tokio::time::interval(state.stream.keepalive);
    keepalive.tick().await;
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(Message::Close(close)) => {
                    let (code, reason) = close
                        .map(|frame| (frame.code, frame.reason.to_string()))
                        .unwrap_or((1000, "done".to_owned()));
                    ws::close(&mut socket, code, &reason).await;
                    return;
                }
                Some(frame) => {
                    if ws::Link::send(&mut socket, frame).await.is_err() {
                        return;
                    }
                }
                // Another control socket took over.
                None => {
                    ws::close(&mut socket, 1000, "replaced").await;
                    return;
                }
            },
            message = ws::Link::recv(&mut socket) => match message {
                Some(Message::Text(text)) if text.len() > MAX_CONTROL_FRAME_BYTES => {
                    let error = ApiError::too_large("a control frame", MAX_CONTROL_FRAME_BYTES as u64)
                        .with_field("limit_unit", "bytes");
                    ws::finish(&mut socket, Err(End::Error(error))).await;
                    return;
                }
                Some(Message::Text(text)) => {
                    let _ = inbox.send(Inbound::Text(text.to_string())).await;
                }
                Some(Message::Binary(_)) => {
                    let error = ApiError::invalid(
                        "audio goes on the WebRTC track; the control socket takes JSON frames",
                    );
                    if ws::send_error(&mut socket, &error).await.is_err() {
                        return;
                    }
                }
                // The socket went away; the session goes on (a new one may attach).
                None | Some(Message::Close(_)) => return,
                Some(_) => {}
            },
            _ = keepalive.tick() => {
                if ws::ping(&mut socket).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Auth and the session's inbox, for a control socket.
async fn attach(
    state: &Webrtc,
    module: Module,
    id: &str,
    token: Option<String>,
) -> Result<mpsc::Sender<Inbound>, End> {
    let principal = ws::authenticate(&state.auth, token).await?;
    match find(state, &principal, module, id).await? {
        Found::Live(entry) => entry.inbox().ok_or_else(|| {
            ApiError::new(
                ErrorCode::SESSION_NOT_READY,
                "send the SDP offer first (`POST .../offer`); the control socket opens after the answer",
            )
            .into()
        }),
        Found::Lost(_) => Err(lost(module, id).into()),
        Found::Ended(_) => Err(ApiError::new(ErrorCode::SESSION_NOT_READY, "the session has ended").into()),
    }
}
