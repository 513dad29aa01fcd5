//! OpenAI's Realtime API (`/v1/realtime`, WebSocket) over ScaiGrid's products, so an
//! application written against it works with only its base URL and key changed.
//!
//! Served today: **transcription sessions** (`session.type: "transcription"`, and the
//! beta protocol's `transcription_session.update`), on the ScaiEcho stream session
//! (`link::RealtimeLink` translates, as `scaiecho::deepgram` does for Deepgram). Voice
//! conversation sessions (a chat model between speech in and speech out), WebRTC calls
//! and `response.*` are not yet: a `session.update` asking for them is an `error` event
//! naming the parameter, and the session goes on.
//!
//! A transport over the products (like `webrtc`): conversation sessions will join
//! ScaiEcho, the gateway and ScaiSpeak here, which no product may do.

pub mod events;
pub mod link;

use std::sync::Arc;

use crate::scaiecho::ScaiEcho;

/// Runs one `/v1/realtime` connection to its end.
pub async fn serve(
    socket: axum::extract::ws::WebSocket,
    scaiecho: Arc<ScaiEcho>,
    token: Option<String>,
    beta: bool,
) {
    let link = link::RealtimeLink::new(socket, beta);
    crate::scaiecho::stream::serve_link(link, scaiecho, token, None).await;
}
