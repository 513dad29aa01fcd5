//! What every WebSocket route shares: token auth after accept, `error` frames with the
//! close code of their error code, the closing handshake, write timeouts (a client that
//! stops reading is dropped, never buffered for), idle reads.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use serde_json::{Value, json};

use crate::auth::{Authenticator, Principal};
use crate::error::{ApiError, ErrorCode};

/// A send that cannot complete in this time means the client stopped reading.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the client's close frame after ours.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// How a session ends.
pub enum End {
    /// The client asked to end (`close`): the final frame, then close 1000.
    Done,
    /// The client went away (closed, vanished, or stopped reading).
    Gone,
    /// An error frame and its close code.
    Error(ApiError),
}

impl From<ApiError> for End {
    fn from(error: ApiError) -> Self {
        End::Error(error)
    }
}

/// The `error` frame: `code`, `message`, `request_id` and the envelope's extra fields.
pub fn error_frame(error: &ApiError) -> String {
    let mut frame = json!({
        "type": "error",
        "code": error.code.as_str(),
        "message": error.message,
    });
    if let Some(object) = frame.as_object_mut() {
        if let Some(id) = crate::request_id::current() {
            object.insert("request_id".into(), Value::String(id));
        }
        for (name, value) in &error.fields {
            object.insert(name.clone(), value.clone());
        }
    }
    frame.to_string()
}

/// Where a session's frames come from and go to: a WebSocket, or the control side of a
/// WebRTC session (whose frames travel on its control WebSocket and data channel). The
/// stream sessions are written against this, so both transports run the same code.
pub trait Link: Send {
    /// The next message from the client; `None` once it is gone.
    fn recv(&mut self) -> impl Future<Output = Option<Message>> + Send;
    /// Sends one message; `Err(End::Gone)` when the client is gone or stopped reading.
    fn send(&mut self, message: Message) -> impl Future<Output = Result<(), End>> + Send;
}

impl Link for WebSocket {
    async fn recv(&mut self) -> Option<Message> {
        match WebSocket::recv(self).await {
            Some(Ok(message)) => Some(message),
            None | Some(Err(_)) => None,
        }
    }

    async fn send(&mut self, message: Message) -> Result<(), End> {
        match tokio::time::timeout(WRITE_TIMEOUT, WebSocket::send(self, message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => {
                tracing::info!("stream dropped: the client stopped reading");
                metrics::counter!("scaigrid_stream_clients_dropped_total", "reason" => "stopped_reading")
                    .increment(1);
                Err(End::Gone)
            }
        }
    }
}

pub async fn send_text(socket: &mut impl Link, text: String) -> Result<(), End> {
    socket.send(Message::Text(text.into())).await
}

pub async fn send_binary(socket: &mut impl Link, bytes: Vec<u8>) -> Result<(), End> {
    socket.send(Message::Binary(bytes.into())).await
}

pub async fn send_error(socket: &mut impl Link, error: &ApiError) -> Result<(), End> {
    send_text(socket, error_frame(error)).await
}

pub async fn ping(socket: &mut impl Link) -> Result<(), End> {
    socket.send(Message::Ping(Default::default())).await
}

/// The closing handshake: our close frame, then the client's frames are read (and
/// dropped) until its close comes back. Dropping the connection with unread data would
/// make the kernel reset it, and the client could lose the error and close frames.
pub async fn close(socket: &mut impl Link, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.to_owned().into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(message) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Ends a session: `Ok(frame)` is the last frame then close 1000; an error is its
/// `error` frame then its close code; a client that is gone gets nothing.
pub async fn finish(socket: &mut impl Link, outcome: Result<String, End>) {
    match outcome {
        Ok(last) => {
            if send_text(socket, last).await.is_ok() {
                close(socket, 1000, "done").await;
            }
        }
        Err(End::Error(error)) => {
            let code = error.code.ws_close_code().unwrap_or(1011);
            tracing::info!(
                code = error.code.as_str(),
                close = code,
                "stream closed: {}",
                error.message
            );
            if send_error(socket, &error).await.is_ok() {
                close(socket, code, error.code.as_str()).await;
            }
        }
        Err(End::Gone | End::Done) => {}
    }
}

/// The next message, or the end of the session (idle for `idle`, or gone).
pub async fn next_message(socket: &mut impl Link, idle: Duration) -> Result<Message, End> {
    match tokio::time::timeout(idle, socket.recv()).await {
        Err(_) => Err(idle_error(idle).into()),
        Ok(None | Some(Message::Close(_))) => Err(End::Gone),
        Ok(Some(message)) => Ok(message),
    }
}

pub fn idle_error(idle: Duration) -> ApiError {
    ApiError::invalid(format!(
        "no frame from the client for {} s; the stream is closed",
        idle.as_secs()
    ))
    .with_field("reason", "idle_timeout")
}

/// The first text frame of a stream (its `open`), read within `idle`; a binary frame
/// before it is refused with `refusal` (control frames pass).
pub async fn open_frame(
    socket: &mut impl Link,
    idle: Duration,
    refusal: &'static str,
) -> Result<String, End> {
    loop {
        match next_message(socket, idle).await? {
            Message::Text(text) => return Ok(text.to_string()),
            Message::Binary(_) => return Err(ApiError::invalid(refusal).into()),
            _ => continue,
        }
    }
}

/// The `type` of a client text frame (`INVALID_REQUEST` when it is not JSON with one),
/// read before the frame itself so an unknown or malformed frame is named in the error.
pub fn frame_type(text: &str) -> Result<String, ApiError> {
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_str::<Typed>(text)
        .map(|t| t.kind)
        .map_err(|e| ApiError::invalid(format!("text frames are JSON with a `type`: {e}")))
}

/// The principal of the token sent as a header or `?token=` (4401 when missing or bad).
pub async fn authenticate(
    auth: &Authenticator,
    token: Option<String>,
) -> Result<Arc<Principal>, End> {
    let token = token.ok_or_else(|| {
        ApiError::new(
            ErrorCode::AUTH_TOKEN_MISSING,
            "send the token as `Authorization: Bearer` or `?token=`",
        )
    })?;
    let principal = auth.authenticate(&token).await?;
    tracing::Span::current().record("subject", principal.subject_id());
    Ok(principal)
}

/// `?token=` of a query string (for handlers that read the query themselves).
pub fn query_token(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
}

/// The token of a WebSocket upgrade: the header wins (a malformed one is an invalid
/// token, not a missing one), else `?token=`.
pub fn token(headers: &axum::http::HeaderMap, query: Option<String>) -> Option<String> {
    match headers.contains_key(axum::http::header::AUTHORIZATION) {
        true => Some(
            crate::auth::bearer_token(headers)
                .unwrap_or_default()
                .to_owned(),
        ),
        false => query,
    }
}
