//! A [`Link`] over in-process channels: a realtime session runs the ScaiEcho and
//! ScaiSpeak stream sessions on pipes and plays their client.

use axum::extract::ws::Message;
use tokio::sync::mpsc;

use crate::ws::{End, Link, WRITE_TIMEOUT};

/// Messages a pipe holds in each direction before a sender waits.
const DEPTH: usize = 256;

/// The stream session's end.
pub struct Pipe {
    inbox: mpsc::Receiver<Message>,
    outbox: mpsc::Sender<Message>,
}

/// The client's end: what it sends the session, and what the session sent.
pub struct Peer {
    pub to: mpsc::Sender<Message>,
    pub from: mpsc::Receiver<Message>,
}

pub fn pipe() -> (Pipe, Peer) {
    let (to, inbox) = mpsc::channel(DEPTH);
    let (outbox, from) = mpsc::channel(DEPTH);
    (Pipe { inbox, outbox }, Peer { to, from })
}

impl Link for Pipe {
    async fn recv(&mut self) -> Option<Message> {
        self.inbox.recv().await
    }

    /// A peer that stopped reading is gone, as a WebSocket client would be.
    async fn send(&mut self, message: Message) -> Result<(), End> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.outbox.send(message)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Gone),
        }
    }
}
