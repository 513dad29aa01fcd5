//! WebRTC sessions for ScaiEcho and ScaiSpeak (SPEC: `POST /sessions`,
//! `POST /sessions/{id}/offer`, WebSocket `/sessions/{id}/control`).
//!
//! `POST /sessions` does every check a stream's `open` does (auth, module, permission,
//! rate limits and budget, options, backend, voice) and prepares the stream session, so
//! a bad request fails there with its HTTP code. The offer binds UDP sockets, answers
//! with host candidates, and starts two tasks: the peer ([`peer`], str0m over UDP) and
//! the stream session itself, the very code the WebSocket routes run, reading and
//! writing through a [`link::RtcLink`]. Audio comes in on the peer's track (ScaiEcho) or
//! goes out on it (ScaiSpeak); JSON frames go out on the control WebSocket and on a data
//! channel if the browser opened one, and text comes in from either.
//!
//! The peer state lives in this process. A database row outlives it, so an offer or a
//! control socket for a session whose process restarted gets 410
//! `..._WEBRTC_SESSION_STATE_LOST` (or close 4404), not a 404. In a scaled deployment
//! the row names the edge that holds the session, and the other edges forward its
//! requests there ([`forward`]).

// Without the `webrtc` feature the peer half is gone; the session bookkeeping stays so
// the routes can answer (501 on offers).
#![cfg_attr(not(feature = "webrtc"), allow(dead_code))]

pub mod control;
pub mod forward;
pub mod link;
#[cfg(feature = "webrtc")]
pub mod peer;
pub mod registry;

pub use control::{MAX_CONTROL_MESSAGE_BYTES, control};
use registry::{Entry, Phase};
pub use registry::{Inbound, Outbound, Prepared, Registry};

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
#[cfg(feature = "webrtc")]
use tokio::sync::mpsc;
#[cfg(feature = "webrtc")]
use tracing::Instrument;

use crate::auth::Authenticator;
use crate::auth::Principal;
use crate::config::IceServer;
use crate::config::{StreamConfig, WebrtcConfig};
use crate::db::Db;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::rbac::Permission;
use crate::records::Timestamp;
use crate::ws::{self, End};
use crate::{scaiecho, scaispeak};

/// Messages waiting for the session task (audio packets, text frames).
const INBOX: usize = 1024;
/// How far ahead of playback ScaiSpeak packets leave: the browser's jitter buffer
/// takes them in real time.
const SPEAK_LEAD: Duration = Duration::from_millis(40);

/// The two modules with WebRTC sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Module {
    Scaiecho,
    Scaispeak,
}

impl Module {
    /// The module of a `/v1/modules/{id}/sessions` path.
    pub fn parse(id: &str) -> ApiResult<Module> {
        match id {
            "scaiecho" => Ok(Module::Scaiecho),
            "scaispeak" => Ok(Module::Scaispeak),
            other => Err(ApiError::new(
                ErrorCode::NOT_FOUND,
                format!("module `{other}` has no WebRTC sessions (scaiecho and scaispeak do)"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Module::Scaiecho => "scaiecho",
            Module::Scaispeak => "scaispeak",
        }
    }

    fn unavailable(self) -> ErrorCode {
        match self {
            Module::Scaiecho => ErrorCode::SCAIECHO_WEBRTC_UNAVAILABLE,
            Module::Scaispeak => ErrorCode::SCAISPEAK_WEBRTC_UNAVAILABLE,
        }
    }

    fn state_lost(self) -> ErrorCode {
        match self {
            Module::Scaiecho => ErrorCode::SCAIECHO_WEBRTC_SESSION_STATE_LOST,
            Module::Scaispeak => ErrorCode::SCAISPEAK_WEBRTC_SESSION_STATE_LOST,
        }
    }
}

/// The WebRTC transport's context: its sessions, and the two products whose stream
/// sessions it carries.
pub struct Webrtc {
    /// This process's sessions.
    pub registry: Registry,
    /// Redis of the scaled deployment: the per-tenant session cap holds across edges.
    cluster: Option<Arc<crate::cluster::Cluster>>,
    config: WebrtcConfig,
    stream: StreamConfig,
    db: Db,
    auth: Arc<Authenticator>,
    scaiecho: Arc<scaiecho::ScaiEcho>,
    scaispeak: Arc<scaispeak::ScaiSpeak>,
    /// The URL other edges reach this one at, once it listens (scaled deployment).
    edge: std::sync::OnceLock<String>,
    /// Passes a session's requests to the edge that holds it.
    pub(crate) forwarder: reqwest::Client,
}

impl Webrtc {
    pub fn new(
        (config, stream): (WebrtcConfig, StreamConfig),
        db: Db,
        auth: Arc<Authenticator>,
        (scaiecho, scaispeak): (Arc<scaiecho::ScaiEcho>, Arc<scaispeak::ScaiSpeak>),
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Webrtc {
        Webrtc {
            registry: Registry::default(),
            cluster,
            config,
            stream,
            db,
            auth,
            scaiecho,
            scaispeak,
            edge: std::sync::OnceLock::new(),
            forwarder: forward::client(),
        }
    }

    /// Where other edges reach this one (set once, by `serve`, when it listens);
    /// sessions created here are recorded with it.
    pub fn listening_at(&self, url: String) {
        let _ = self.edge.set(url);
    }

    /// The URL of another edge that holds session `id`, when a request for it should
    /// go there: a scaled deployment, not held here, its row naming another edge, and
    /// the request not already forwarded.
    pub async fn elsewhere(&self, id: &str, headers: &axum::http::HeaderMap) -> Option<String> {
        if self.cluster.is_none()
            || forward::is_forwarded(headers)
            || self.registry.get(id).is_some()
        {
            return None;
        }
        let mut conn = self.db.pool.acquire().await.ok()?;
        let url = crate::db::webrtc::edge_url(&mut conn, id).await.ok()??;
        (self.edge.get() != Some(&url)).then_some(url)
    }
}

/// Whether this build and configuration can answer offers.
pub fn available(state: &Webrtc) -> bool {
    cfg!(feature = "webrtc") && state.config.enabled
}

/// A session as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub id: String,
    #[schema(value_type = String)]
    pub module: Module,
    /// `created` (waiting for the offer), `active`, `ended`, or `lost` (its process
    /// restarted).
    pub status: String,
    /// Give these to `RTCPeerConnection` (`iceServers`).
    pub ice_servers: Vec<IceServer>,
    /// Whether offers can be answered (false: built or configured without WebRTC).
    pub webrtc_available: bool,
    pub offer_url: String,
    pub control_url: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
}

fn view(
    state: &Webrtc,
    module: Module,
    id: &str,
    status: &str,
    created_at: i64,
    end_reason: Option<String>,
) -> SessionView {
    let base = format!("/v1/modules/{}/sessions/{id}", module.as_str());
    SessionView {
        id: id.to_owned(),
        module,
        status: status.to_owned(),
        ice_servers: state.config.ice_servers.clone(),
        webrtc_available: available(state),
        offer_url: format!("{base}/offer"),
        control_url: format!("{base}/control"),
        created_at: Timestamp(created_at).to_rfc3339(),
        end_reason,
    }
}

/// The checks of a stream's `open`, before anything else.
async fn admit(state: &Webrtc, principal: &Principal, module: Module) -> ApiResult<()> {
    match module {
        Module::Scaiecho => scaiecho::stream::admit(&state.scaiecho, principal).await,
        Module::Scaispeak => scaispeak::stream::admit(&state.scaispeak, principal).await,
    }
}

/// `POST /sessions`: the options of a stream's `open` (ScaiEcho: `language`,
/// `diarize`, `chunk_seconds`, `backend_preference`; ScaiSpeak: `voice`, `speed`,
/// `backend_preference`), checked and the session prepared.
pub async fn create(
    state: &Arc<Webrtc>,
    principal: Arc<Principal>,
    module: Module,
    options: Value,
) -> ApiResult<SessionView> {
    admit(state, &principal, module).await?;
    let open = open_frame(module, options)?;
    let cap = state.config.max_sessions_per_tenant;
    let prepared = match module {
        Module::Scaiecho => {
            let open = scaiecho::stream::protocol::parse_open(&open.to_string())?;
            let open = scaiecho::stream::protocol::Open {
                media_type: "audio/opus;transport=webrtc".to_owned(),
                ..open
            };
            let slot = scaiecho::stream::take_slot(&state.scaiecho, &principal.tenant_id).await?;
            Prepared::Echo(Box::new(
                scaiecho::stream::Session::open(&state.scaiecho, principal.clone(), slot, open)
                    .await?,
            ))
        }
        Module::Scaispeak => {
            let open = scaispeak::stream::parse_open(&open.to_string())?;
            let slot = scaispeak::stream::take_slot(&state.scaispeak, &principal.tenant_id).await?;
            Prepared::Speak(Box::new(
                scaispeak::stream::Session::open(
                    &state.scaispeak,
                    principal.clone(),
                    slot,
                    open,
                    SPEAK_LEAD,
                )
                .await?,
            ))
        }
    };
    // Across the deployment: a lease per session (the local count is checked below).
    let lease = match &state.cluster {
        Some(cluster) => {
            let kind = ("webrtc", principal.tenant_id.as_str());
            let taken = crate::cluster::streams::take(cluster, kind, cap).await?;
            Some(taken.ok_or_else(|| registry::full(cap))?)
        }
        None => None,
    };
    let id = crate::db::new_id("rtc");
    let entry = Arc::new(Entry {
        id: id.clone(),
        tenant_id: principal.tenant_id.clone(),
        module,
        created_at: crate::db::now_ms(),
        phase: Mutex::new(Phase::Created(Some(prepared))),
        _lease: lease,
    });
    state.registry.insert(entry.clone(), cap)?;
    let mut conn = state.db.pool.acquire().await?;
    if let Err(error) = crate::db::webrtc::create(
        &mut conn,
        &id,
        &principal.tenant_id,
        module.as_str(),
        (
            principal.subject_id(),
            state
                .edge
                .get()
                .filter(|_| state.cluster.is_some())
                .map(String::as_str),
        ),
    )
    .await
    {
        state.registry.remove(&id);
        return Err(error.into());
    }
    drop(conn);
    tokio::spawn(expire_unanswered(
        state.clone(),
        id.clone(),
        state.config.offer_timeout,
    ));
    tracing::info!(session = %id, module = module.as_str(), "webrtc session created");
    Ok(view(state, module, &id, "created", entry.created_at, None))
}

/// The session options as the module's `open` frame: the transport decides the media
/// (ScaiEcho hears the Opus track; ScaiSpeak sends Opus at 48 kHz, paced in real time).
fn open_frame(module: Module, options: Value) -> ApiResult<Value> {
    let mut options = match options {
        Value::Object(options) => options,
        Value::Null => Default::default(),
        _ => return Err(ApiError::invalid("the session options are a JSON object")),
    };
    let fixed: &[&str] = match module {
        Module::Scaiecho => &["type", "media_type"],
        Module::Scaispeak => &["type", "output", "pace"],
    };
    if let Some(name) = fixed.iter().find(|name| options.contains_key(**name)) {
        return Err(ApiError::invalid(format!(
            "`{name}` is set by the WebRTC transport (audio is the session's Opus track)"
        ))
        .with_field("field", *name));
    }
    options.insert("type".into(), "open".into());
    match module {
        Module::Scaiecho => {
            // What the peer hands on (see `peer`): 16 kHz mono s16le.
            options.insert("media_type".into(), "audio/pcm;rate=16000".into());
        }
        Module::Scaispeak => {
            options.insert(
                "output".into(),
                json!({"codec": "opus", "sample_rate": 48_000}),
            );
            options.insert("pace".into(), true.into());
        }
    }
    Ok(Value::Object(options))
}

/// Drops a session nobody sent an offer for.
async fn expire_unanswered(state: Arc<Webrtc>, id: String, after: Duration) {
    tokio::time::sleep(after).await;
    let waiting = state
        .registry
        .get(&id)
        .is_some_and(|entry| matches!(entry.phase.lock().as_deref(), Ok(Phase::Created(_))));
    if waiting && state.registry.remove(&id).is_some() {
        tracing::info!(session = %id, "webrtc session expired without an offer");
        mark_ended(&state, &id, "offer_timeout").await;
    }
}

async fn mark_ended(state: &Webrtc, id: &str, reason: &str) {
    let result = async {
        let mut conn = state.db.pool.acquire().await?;
        crate::db::webrtc::set_status(&mut conn, id, "ended", Some(reason)).await
    }
    .await;
    if let Err(error) = result {
        tracing::warn!(session = %id, "recording the end of a webrtc session: {error}");
    }
}

/// A session the caller may address.
enum Found {
    Live(Arc<Entry>),
    /// The row says it is not over, but this process has no peer state for it.
    Lost(crate::db::webrtc::SessionRow),
    Ended(crate::db::webrtc::SessionRow),
}

/// The module and its permission: every session route and the control socket need
/// what creating the session needed, not just the tenant (a viewer key must not end,
/// answer or listen in on another member's session).
fn authorize(principal: &Principal, module: Module) -> ApiResult<()> {
    match module {
        Module::Scaiecho => {
            crate::services::modules::require_enabled(principal, scaiecho::MODULE)?;
            principal.require(Permission::ScaiechoTranscribe)
        }
        Module::Scaispeak => scaispeak::authorize(principal),
    }
}

async fn find(state: &Webrtc, principal: &Principal, module: Module, id: &str) -> ApiResult<Found> {
    authorize(principal, module)?;
    if let Some(entry) = state.registry.get(id)
        && entry.tenant_id == principal.tenant_id
        && entry.module == module
    {
        return Ok(Found::Live(entry));
    }
    let mut conn = state.db.pool.acquire().await?;
    match crate::db::webrtc::get(&mut conn, &principal.tenant_id, id).await? {
        Some(row) if row.module == module.as_str() => Ok(match row.status.as_str() {
            "ended" => Found::Ended(row),
            _ => Found::Lost(row),
        }),
        _ => Err(ApiError::not_found("session")),
    }
}

fn lost(module: Module, id: &str) -> ApiError {
    ApiError::new(
        module.state_lost(),
        format!(
            "the peer state of session {id} is gone (its server process restarted); create a new session and send the offer again"
        ),
    )
}

/// `GET /sessions/{id}`.
pub async fn get(
    state: &Webrtc,
    principal: &Principal,
    module: Module,
    id: &str,
) -> ApiResult<SessionView> {
    Ok(match find(state, principal, module, id).await? {
        Found::Live(entry) => view(state, module, id, entry.status(), entry.created_at, None),
        Found::Lost(row) => view(state, module, id, "lost", row.created_at, None),
        Found::Ended(row) => view(state, module, id, "ended", row.created_at, row.end_reason),
    })
}

/// `DELETE /sessions/{id}`: ends it (its usage is recorded as the stream ends).
/// Deleting an ended or lost session is not an error: it is over either way.
pub async fn delete(
    state: &Webrtc,
    principal: &Principal,
    module: Module,
    id: &str,
) -> ApiResult<()> {
    match find(state, principal, module, id).await? {
        Found::Live(entry) => match entry.inbox() {
            Some(inbox) => {
                let _ = inbox.send(Inbound::Stop).await;
            }
            None => {
                state.registry.remove(id);
                mark_ended(state, id, "deleted").await;
            }
        },
        Found::Lost(_) => mark_ended(state, id, "state_lost").await,
        Found::Ended(_) => {}
    }
    Ok(())
}

/// The SDP answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Answer {
    /// Always `answer`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub sdp: String,
}

/// `POST /sessions/{id}/offer`: answers the browser's offer and starts the session.
pub async fn offer(
    state: &Arc<Webrtc>,
    principal: &Principal,
    module: Module,
    id: &str,
    sdp: &str,
) -> ApiResult<Answer> {
    let entry = match find(state, principal, module, id).await? {
        Found::Live(entry) => entry,
        Found::Lost(_) => return Err(lost(module, id)),
        Found::Ended(row) => {
            return Err(ApiError::new(
                ErrorCode::CONFLICT,
                format!(
                    "session {id} has ended ({}); create a new one",
                    row.end_reason.as_deref().unwrap_or("ended")
                ),
            ));
        }
    };
    if !available(state) {
        return Err(ApiError::new(
            module.unavailable(),
            match cfg!(feature = "webrtc") {
                true => "WebRTC is turned off in this deployment (`webrtc.enabled = false`)",
                false => "this server was built without WebRTC (cargo feature `webrtc`)",
            },
        ));
    }
    let prepared = {
        let mut phase = entry
            .phase
            .lock()
            .map_err(|_| ApiError::internal("webrtc session poisoned"))?;
        match &mut *phase {
            Phase::Created(prepared) => prepared.take().ok_or_else(|| {
                ApiError::new(
                    ErrorCode::CONFLICT,
                    "an offer for this session is being answered",
                )
            })?,
            Phase::Active(_) => {
                return Err(ApiError::new(
                    ErrorCode::CONFLICT,
                    "this session already has its peer (renegotiation is not supported)",
                ));
            }
        }
    };
    start(state, entry, prepared, sdp).await
}

#[cfg(feature = "webrtc")]
async fn start(
    state: &Arc<Webrtc>,
    entry: Arc<Entry>,
    prepared: Prepared,
    sdp: &str,
) -> ApiResult<Answer> {
    let ips = candidate_ips(state);
    let (peer, answer) = match peer::accept(sdp, &ips, state.config.public_ip).await {
        Ok(answered) => answered,
        Err(error) => {
            // A bad offer loses nothing: the session waits for a good one.
            if let Ok(mut phase) = entry.phase.lock() {
                *phase = Phase::Created(Some(prepared));
            }
            return Err(error);
        }
    };
    let (inbox_tx, inbox) = mpsc::channel(INBOX);
    let (outbound_tx, outbound) = mpsc::channel(256);
    if let Ok(mut phase) = entry.phase.lock() {
        *phase = Phase::Active(inbox_tx.clone());
    }
    // The peer exists from here on: the row's status is a record, not a gate, so a
    // database hiccup is logged rather than stranding a live peer.
    if let Err(error) = set_active(state, &entry.id).await {
        tracing::warn!(session = %entry.id, %error, "webrtc session not marked active");
    }
    // The session outlives the offer request: its own root span, carrying the id of
    // the request that started it.
    let span = tracing::info_span!(
        parent: None,
        "webrtc",
        session = %entry.id,
        module = entry.module.as_str(),
        request_id = crate::request_id::current().unwrap_or_default(),
    );
    tokio::spawn(peer::run(peer, inbox_tx, outbound).instrument(span.clone()));
    let link = link::RtcLink::new(inbox, outbound_tx, entry.module);
    tokio::spawn(run(state.clone(), entry.id.clone(), prepared, link).instrument(span));
    metrics::counter!("scaigrid_webrtc_sessions_started_total", "module" => entry.module.as_str())
        .increment(1);
    Ok(Answer {
        kind: "answer",
        sdp: answer,
    })
}

#[cfg(feature = "webrtc")]
async fn set_active(state: &Webrtc, id: &str) -> ApiResult<()> {
    let mut conn = state.db.pool.acquire().await?;
    crate::db::webrtc::set_status(&mut conn, id, "active", None).await?;
    Ok(())
}

#[cfg(not(feature = "webrtc"))]
async fn start(
    _state: &Arc<Webrtc>,
    _entry: Arc<Entry>,
    _prepared: Prepared,
    _sdp: &str,
) -> ApiResult<Answer> {
    Err(ApiError::internal("webrtc is not built in"))
}

/// The session task: the module's stream session over the link, to its end.
async fn run(state: Arc<Webrtc>, id: String, prepared: Prepared, mut link: link::RtcLink) {
    let outcome = match prepared {
        Prepared::Echo(session) => session.run_to_end(&mut link).await,
        Prepared::Speak(session) => session.run_to_end(&mut link).await,
    };
    let reason = match &outcome {
        _ if link.stopped() => "deleted".to_owned(),
        Ok(_) => "done".to_owned(),
        Err(End::Gone) => "gone".to_owned(),
        Err(End::Done) => "done".to_owned(),
        Err(End::Error(error)) => error.code.as_str().to_ascii_lowercase(),
    };
    ws::finish(&mut link, outcome).await;
    state.registry.remove(&id);
    mark_ended(&state, &id, &reason).await;
    tracing::info!(reason, "webrtc session ended");
}

/// The IPs host candidates are offered on: the configured ones, else loopback and the
/// interface of the default route (found by routing a UDP socket; nothing is sent).
fn candidate_ips(state: &Webrtc) -> Vec<IpAddr> {
    if let Some(ips) = &state.config.candidate_ips {
        return ips.clone();
    }
    let mut ips = vec![IpAddr::from([127, 0, 0, 1])];
    let routed = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|socket| {
            socket.connect("198.51.100.1:9")?;
            socket.local_addr()
        })
        .map(|addr| addr.ip());
    if let Ok(ip) = routed
        && !ip.is_loopback()
        && !ip.is_unspecified()
    {
        ips.push(ip);
    }
    ips
}
