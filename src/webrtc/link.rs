//! The stream sessions' [`Link`] for WebRTC: messages come from the session's inbox
//! (the peer's audio, text from the control socket or data channel), binary frames go
//! to the peer's track, text frames to the control socket and the data channel.
//!
//! The session lives on its peer, not on the control socket: frames sent while no
//! control socket is attached (before it connects, or between reconnects) wait in a
//! bounded backlog, and a control socket that stops reading is dropped, not waited on.

use std::collections::VecDeque;

use axum::extract::ws::Message;
use tokio::sync::mpsc;

use super::{Inbound, Module, Outbound};
use crate::ws::{End, Link, WRITE_TIMEOUT};

/// Frames kept for a control socket that is not attached.
const BACKLOG: usize = 256;

pub struct RtcLink {
    inbox: mpsc::Receiver<Inbound>,
    peer: mpsc::Sender<Outbound>,
    control: Option<mpsc::Sender<Message>>,
    backlog: VecDeque<Message>,
    /// What the peer going away means to the session: ScaiEcho ends its audio (so what
    /// was heard is still transcribed); ScaiSpeak has no one left to speak to.
    on_peer_gone: Option<Message>,
    /// The session sent its close: nothing more is read.
    closed: bool,
    /// `DELETE` ended the session (its end reason says so rather than "gone").
    stopped: bool,
}

impl RtcLink {
    pub fn new(
        inbox: mpsc::Receiver<Inbound>,
        peer: mpsc::Sender<Outbound>,
        module: Module,
    ) -> RtcLink {
        RtcLink {
            inbox,
            peer,
            control: None,
            backlog: VecDeque::new(),
            on_peer_gone: match module {
                Module::Scaiecho => Some(Message::Text(r#"{"type":"close"}"#.into())),
                Module::Scaispeak => None,
            },
            closed: false,
            stopped: false,
        }
    }

    /// Whether the session was ended by `DELETE`.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// To the control socket, or the backlog while none is attached.
    async fn forward(&mut self, message: Message) {
        if let Some(control) = &self.control {
            match tokio::time::timeout(WRITE_TIMEOUT, control.send(message.clone())).await {
                Ok(Ok(())) => return,
                Ok(Err(_)) => tracing::debug!("control socket detached"),
                Err(_) => tracing::info!("control socket dropped: it stopped reading"),
            }
            self.control = None;
        }
        if self.backlog.len() >= BACKLOG {
            self.backlog.pop_front();
            metrics::counter!("scaigrid_webrtc_control_frames_dropped_total").increment(1);
        }
        self.backlog.push_back(message);
    }

    async fn attach(&mut self, control: mpsc::Sender<Message>) {
        self.control = Some(control);
        while let Some(message) = self.backlog.pop_front() {
            self.forward(message).await;
            if self.control.is_none() {
                return;
            }
        }
    }
}

impl Link for RtcLink {
    async fn recv(&mut self) -> Option<Message> {
        while !self.closed {
            match self.inbox.recv().await? {
                Inbound::Text(text) => return Some(Message::Text(text.into())),
                Inbound::Audio(pcm) => return Some(Message::Binary(pcm.into())),
                Inbound::Attach(control) => self.attach(control).await,
                Inbound::PeerGone => match self.on_peer_gone.take() {
                    Some(message) => return Some(message),
                    None => return None,
                },
                Inbound::Stop => {
                    self.stopped = true;
                    return None;
                }
            }
        }
        None
    }

    async fn send(&mut self, message: Message) -> Result<(), End> {
        match message {
            Message::Binary(packet) => self
                .peer
                .send(Outbound::Audio(packet.to_vec()))
                .await
                .map_err(|_| End::Gone),
            Message::Text(text) => {
                // The data channel is best effort; the control socket is the record.
                let _ = self.peer.try_send(Outbound::Text(text.to_string()));
                self.forward(Message::Text(text)).await;
                Ok(())
            }
            Message::Close(frame) => {
                self.closed = true;
                self.forward(Message::Close(frame)).await;
                Ok(())
            }
            // The control socket pings on its own.
            Message::Ping(_) | Message::Pong(_) => Ok(()),
        }
    }
}
