//! OpenAI's Realtime API (`/v1/realtime`, WebSocket) over ScaiGrid's products, so an
//! application written against it works with only its base URL and key changed.
//!
//! Two kinds of session (see `config`): **transcription** (audio in, growing and
//! completed transcripts out) and **realtime**, a voice conversation: ScaiEcho hears
//! each turn, the gateway's chat model answers it (any model the tenant may use, with
//! its budgets, rate limits and firewall), ScaiSpeak speaks the answer as it is
//! written; `response.*` events, barge-in, text items, function tools. The current
//! event names and the beta ones are both spoken.
//!
//! A transport over the products (like `webrtc`): it joins ScaiEcho, the gateway and
//! ScaiSpeak, which no product may do. The products' stream sessions run on in-process
//! pipes (`pipe`), so their limits, metering and guards are the same as on their own
//! WebSockets.

pub mod config;
pub mod conversation;
pub mod events;
mod pipe;
pub mod plan;
pub mod respond;
pub mod response;
pub mod session;
pub mod transcript;
pub mod turns;

use std::sync::Arc;

use crate::config::StreamConfig;
use crate::gateway::Gateway;
use crate::ratelimit::gate::Gate;
use crate::scaiecho::ScaiEcho;
use crate::scaispeak::ScaiSpeak;

/// What a realtime session uses.
pub struct Products {
    pub scaiecho: Arc<ScaiEcho>,
    pub scaispeak: Arc<ScaiSpeak>,
    pub gateway: Arc<Gateway>,
    pub gate: Gate,
    pub stream: StreamConfig,
}

pub use session::serve;
