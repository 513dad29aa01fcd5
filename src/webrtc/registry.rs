//! This process's WebRTC sessions: what reaches a session's task and what it sends its
//! peer, the prepared stream waiting for its offer, and the per-tenant registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::Message;
use tokio::sync::mpsc;

use super::Module;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::{scaiecho, scaispeak};

/// What reaches a running session's task.
pub enum Inbound {
    /// A JSON frame from the control socket or the data channel.
    Text(String),
    /// Received audio: 16 kHz mono s16le.
    Audio(Vec<u8>),
    /// A control socket attached: the session's frames go to it from now on.
    Attach(mpsc::Sender<Message>),
    /// The peer disconnected.
    PeerGone,
    /// `DELETE`: end now.
    Stop,
}

/// What a session sends its peer.
pub enum Outbound {
    /// One 20 ms Opus packet for the outgoing track.
    Audio(Vec<u8>),
    /// A JSON frame for the data channel.
    Text(String),
}

/// A stream session prepared at `POST /sessions`, waiting for its offer.
pub enum Prepared {
    Echo(Box<scaiecho::stream::Session>),
    Speak(Box<scaispeak::stream::Session>),
}

pub(super) enum Phase {
    /// Waiting for the offer (`None` while one is being answered).
    Created(Option<Prepared>),
    /// Answered: the session task reads this inbox.
    Active(mpsc::Sender<Inbound>),
}

pub(super) struct Entry {
    pub(super) id: String,
    pub(super) tenant_id: String,
    pub(super) module: Module,
    pub(super) created_at: i64,
    pub(super) phase: Mutex<Phase>,
    /// The deployment-wide cap's lease (scaled); given back when the entry goes.
    pub(super) _lease: Option<crate::cluster::streams::Lease>,
}

impl Entry {
    pub(super) fn status(&self) -> &'static str {
        match self.phase.lock().as_deref() {
            Ok(Phase::Active(_)) => "active",
            _ => "created",
        }
    }

    pub(super) fn inbox(&self) -> Option<mpsc::Sender<Inbound>> {
        match self.phase.lock().as_deref() {
            Ok(Phase::Active(inbox)) => Some(inbox.clone()),
            _ => None,
        }
    }
}

/// 429 `RATE_LIMITED`: the tenant has `cap` sessions.
pub(super) fn full(cap: usize) -> ApiError {
    ApiError::new(
        ErrorCode::RATE_LIMITED,
        format!("the tenant already has {cap} WebRTC sessions"),
    )
    .with_field("limit", cap)
}

/// This process's sessions.
#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Arc<Entry>>>,
}

impl Registry {
    pub(super) fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.sessions.lock().ok()?.get(id).cloned()
    }

    /// Adds a session unless the tenant is at its cap.
    pub(super) fn insert(&self, entry: Arc<Entry>, cap: usize) -> ApiResult<()> {
        let mut sessions = self
            .sessions
            .lock()
            .map_err(|_| ApiError::internal("webrtc registry poisoned"))?;
        let open = sessions
            .values()
            .filter(|other| other.tenant_id == entry.tenant_id)
            .count();
        if open >= cap {
            return Err(full(cap));
        }
        sessions.insert(entry.id.clone(), entry);
        metrics::gauge!("scaigrid_webrtc_sessions").increment(1.0);
        Ok(())
    }

    pub(super) fn remove(&self, id: &str) -> Option<Arc<Entry>> {
        let removed = self.sessions.lock().ok()?.remove(id);
        if removed.is_some() {
            metrics::gauge!("scaigrid_webrtc_sessions").decrement(1.0);
        }
        removed
    }
}
