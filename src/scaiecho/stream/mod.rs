//! WebSocket `/stream/transcribe`: one task per connection drives the SPEC protocol.
//!
//! Auth, module and permission checks, the per-tenant stream slot, `open`, and the
//! backend all come before any audio is read; each failure is an `error` frame and the
//! close code of its error code (4401, 4403, 4429, 4400, 4502). After `ready`, binary
//! frames go through the [`pipeline`] (decode, 16 kHz, VAD, endpointer) on a blocking
//! thread, the [`scheduler`] picks what to transcribe, and results go out as `delta`
//! frames. Bad audio or an over-limit stream first finishes what was already heard
//! (nothing is lost), then sends the error and closes.
//!
//! Buffers are bounded: one transcription per stream runs at a time (finals queue in
//! the scheduler, partials collapse to the newest), a frame over the size limit is
//! refused, and a client that stops reading is dropped when a send cannot complete in
//! `WRITE_TIMEOUT`.

pub mod pipeline;
pub mod protocol;
pub mod scheduler;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use engines::diarize::{DiarizeParams, OnlineSpeakers};
use engines::endpoint::{EndpointParams, Kind, Snapshot};
use media::stream::StreamLimits;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::firewall::Stage;
use crate::firewall::stream::StreamGuard;
use crate::rbac::Permission;
use crate::scaiecho::MODULE;
use crate::scaiecho::ScaiEcho;
use crate::scaiecho::format::WordOut;
use crate::scaiecho::policy::{self, Backend};
use crate::services::modules::require_enabled;
use crate::speech::balancers::Serves;
use crate::speech::meter::{Meter, Used};
use crate::ws::{self, End, Link};
use pipeline::Pipeline;
use protocol::{Control, Delta, Open, ServerFrame, Usage};
use scheduler::{Emit, Scheduler};

/// Wait before retrying a final the engine's queue refused.
const BUSY_RETRY: Duration = Duration::from_millis(50);

pub use crate::slots::Slot;

/// One of the tenant's open-stream slots (429/4429 `RATE_LIMITED` when all are taken).
pub async fn take_slot(state: &Arc<ScaiEcho>, tenant: &str) -> Result<Slot, ApiError> {
    state
        .streams
        .take(tenant, state.handles.stream.max_per_tenant)
        .await
}

/// A transcribed snapshot: text, and the speaker embedding when diarizing.
#[derive(Clone)]
struct Heard {
    text: String,
    embedding: Option<Vec<f32>>,
    language: Option<String>,
    /// Times from the snapshot's start; `None` unless asked for (finals only).
    words: Option<Vec<WordOut>>,
}

type Running = Pin<Box<dyn Future<Output = (Kind, Result<Heard, ApiError>)> + Send>>;

/// Runs one connection to its end. `token` is the bearer token from the header or
/// `?token=`.
pub async fn serve(socket: WebSocket, state: Arc<ScaiEcho>, token: Option<String>) {
    serve_link(socket, state, token, None).await;
}

/// Runs one stream on any link to its end. `open`: the options when the link's URL gave
/// them (a compatible protocol's query), else the first frame must be `open`; an error
/// there closes the stream after auth, as a bad `open` frame would.
pub async fn serve_link(
    mut socket: impl Link,
    state: Arc<ScaiEcho>,
    token: Option<String>,
    open: Option<ApiResult<Open>>,
) {
    let outcome = match start(&mut socket, &state, token, open).await {
        Ok(session) => session.run_to_end(&mut socket).await,
        Err(end) => Err(end),
    };
    ws::finish(&mut socket, outcome).await;
}

/// Everything before `ready`: auth, permissions, rate limits and budget, the stream
/// slot, `open`, the backend.
async fn start(
    socket: &mut impl Link,
    state: &Arc<ScaiEcho>,
    token: Option<String>,
    open: Option<ApiResult<Open>>,
) -> Result<Session, End> {
    let principal = ws::authenticate(&state.handles.gate.auth, token).await?;
    admit(state, &principal).await?;
    // The slot before `open`: a tenant at its limit is refused at once.
    let slot = take_slot(state, &principal.tenant_id).await?;
    let open = match open {
        Some(open) => open?,
        None => {
            let idle = state.handles.stream.idle_timeout;
            let refusal = "send the `open` frame before any audio";
            let text = ws::open_frame(socket, idle, refusal).await?;
            protocol::parse_open(&text)?
        }
    };
    Ok(Session::open(state, principal, slot, open).await?)
}

/// The checks on the caller before its `open` is read: module, permission, rate limits
/// and budget.
pub async fn admit(state: &ScaiEcho, principal: &Principal) -> Result<(), ApiError> {
    require_enabled(principal, MODULE)?;
    principal.require(Permission::ScaiechoTranscribe)?;
    state.handles.gate.admit_stream(principal).await
}

/// One transcription stream, whatever carries it (a WebSocket or a WebRTC session).
pub struct Session {
    id: String,
    state: Arc<ScaiEcho>,
    principal: Arc<Principal>,
    _slot: Slot,
    open: Open,
    backend: Backend,
    /// `None` only while a message is on the blocking thread.
    pipeline: Option<Pipeline>,
    scheduler: Scheduler<Heard>,
    running: Option<Running>,
    /// When each final's snapshot came out of the endpointer (for the latency metric).
    final_since: HashMap<u64, Instant>,
    speakers: Option<OnlineSpeakers>,
    finals: u64,
    /// The nodes of a balancer's instance every utterance runs on (`open.model`).
    nodes: Option<Vec<String>>,
    /// Usage recorded while the stream runs (set when it starts).
    meter: Option<Meter>,
    /// The firewall's transcript policies when any apply (checked on every delta).
    guard: Option<Arc<StreamGuard>>,
    /// The last utterance whose start was announced (`speech_events`).
    announced: Option<u64>,
}

impl Session {
    /// A stream for an admitted caller's `open` in its stream slot: the backend, the
    /// speaker library when diarizing. [`Session::run_to_end`] sends `ready` first.
    pub async fn open(
        state: &Arc<ScaiEcho>,
        principal: Arc<Principal>,
        slot: Slot,
        open: Open,
    ) -> Result<Session, ApiError> {
        if open.diarize {
            principal.require(Permission::ScaiechoDiarize)?;
        }
        let model = open.model.as_deref();
        let nodes = state
            .handles
            .bound(&principal.tenant_id, model, Serves::Transcription)
            .await?;
        let tenant_policy = crate::scaiecho::policy(state, &principal.tenant_id).await?;
        let preference = crate::speech::balancers::preference(&nodes, open.backend_preference);
        let backend = policy::resolve(&tenant_policy, preference, state.usable())?;
        let enrolled = match open.diarize {
            true => crate::scaiecho::speakers::enrolled(state, &principal.tenant_id).await?,
            false => Vec::new(),
        };
        let guard = StreamGuard::open(
            &state.handles.firewall,
            &principal,
            model,
            Stage::Transcript,
        )
        .await?;
        let mut session = Session::new(state.clone(), principal, slot, open, backend, enrolled);
        let (id, backend_name) = (&session.id, backend.as_str());
        tracing::info!(session = %id, backend = backend_name, nodes = ?nodes, "stream open");
        session.nodes = nodes;
        session.guard = guard;
        Ok(session)
    }

    /// The `ready` frame.
    pub fn ready_frame(&self) -> String {
        ServerFrame::Ready {
            session_id: self.id.clone(),
            backend: self.backend.as_str().to_owned(),
            media_type: self.open.media_type.clone(),
            chunk_seconds: self.open.chunk_seconds,
            diarize: self.speakers.is_some(),
        }
        .to_json()
    }

    /// Sends `ready`, runs the stream, records its usage; `Ok` is the `done` frame.
    pub async fn run_to_end(mut self, socket: &mut impl Link) -> Result<String, End> {
        metrics::counter!("scaigrid_scaiecho_streams_total").increment(1);
        let gate = &self.state.handles.gate;
        let principal = self.principal.clone();
        self.meter = Some(Meter::start(gate, principal, MODULE, &self.id, false).await?);
        let end = match ws::send_text(socket, self.ready_frame()).await {
            Ok(()) => {
                let nodes = self.nodes.clone();
                crate::inference::pool::bound(nodes, self.run(socket)).await
            }
            Err(end) => end,
        };
        if let Some(meter) = self.meter.take() {
            meter.finish(self.used()).await;
        }
        match end {
            End::Done => Ok(self.done_frame().to_json()),
            other => Err(other),
        }
    }

    fn new(
        state: Arc<ScaiEcho>,
        principal: Arc<Principal>,
        slot: Slot,
        open: Open,
        backend: Backend,
        enrolled: Vec<(String, Vec<f32>)>,
    ) -> Session {
        let limits = StreamLimits {
            max_seconds: state.handles.stream.max_seconds as f64,
            ..StreamLimits::default()
        };
        let defaults = EndpointParams::default();
        let params = EndpointParams {
            chunk_ms: (open.chunk_seconds * 1000.0) as u32,
            silence_ms: open.silence_ms.unwrap_or(defaults.silence_ms),
            ..defaults
        };
        let pipeline = Pipeline::new(
            open.format,
            limits,
            state.handles.nodes.vad().cloned(),
            params,
        );
        // The relay has no diarization: `diarize` is a no-op there (seed page 002).
        let can_diarize = backend == Backend::Local
            && state
                .local
                .as_ref()
                .is_some_and(|engines| engines.can_diarize());
        let speakers = (open.diarize && can_diarize)
            .then(|| OnlineSpeakers::new(enrolled, DiarizeParams::default()));
        Session {
            id: format!("strm_{}", uuid::Uuid::now_v7().simple()),
            state,
            principal,
            _slot: slot,
            open,
            backend,
            pipeline: Some(pipeline),
            scheduler: Scheduler::default(),
            running: None,
            final_since: HashMap::new(),
            speakers,
            finals: 0,
            nodes: None,
            meter: None,
            guard: None,
            announced: None,
        }
    }

    async fn run(&mut self, socket: &mut impl Link) -> End {
        let config = self.state.handles.stream.clone();
        let mut keepalive = tokio::time::interval(config.keepalive);
        keepalive.tick().await;
        let mut last_heard = Instant::now();
        let mut closing = false;
        loop {
            if closing && self.running.is_none() && self.scheduler.idle() {
                return End::Done;
            }
            let idle_deadline = tokio::time::Instant::from_std(last_heard + config.idle_timeout);
            let step: Result<(), End> = tokio::select! {
                finished = async { self.running.as_mut().expect("guarded").await },
                    if self.running.is_some() =>
                {
                    self.running = None;
                    self.finished(socket, finished).await
                }
                message = socket.recv(), if !closing => {
                    last_heard = Instant::now();
                    match message {
                        None | Some(Message::Close(_)) => Err(End::Gone),
                        Some(Message::Binary(bytes)) => self.audio(socket, &bytes).await,
                        Some(Message::Text(text)) => {
                            match protocol::parse_control(&text) {
                                Ok(Control::Flush) => {
                                    let snapshot = self.pipeline.as_mut().and_then(Pipeline::flush);
                                    self.offer(socket, snapshot.into_iter().collect()).await
                                }
                                Ok(Control::Close) => {
                                    closing = true;
                                    self.finish_audio(socket).await
                                }
                                // A bad control frame loses nothing: say so, carry on.
                                Err(error) => ws::send_error(socket, &error).await,
                            }
                        }
                        Some(_) => Ok(()),
                    }
                }
                _ = tokio::time::sleep_until(idle_deadline), if !closing => {
                    Err(End::Error(ws::idle_error(config.idle_timeout)))
                }
                _ = keepalive.tick() => {
                    ws::ping(socket).await
                }
            };
            match step {
                Ok(()) => {}
                Err(End::Error(error)) if !closing && error.code != ErrorCode::INTERNAL_ERROR => {
                    // Bad input or a limit: finish what was heard, then report and close.
                    return self.drain_then(socket, error).await;
                }
                Err(end) => return end,
            }
        }
    }

    /// Ends the open utterance, sends every outstanding final, then ends with `error`.
    async fn drain_then(&mut self, socket: &mut impl Link, error: ApiError) -> End {
        let snapshot = self.pipeline.as_mut().and_then(Pipeline::flush);
        if let Err(end) = self.offer(socket, snapshot.into_iter().collect()).await {
            return end;
        }
        while let Some(running) = self.running.take() {
            let finished = running.await;
            if let Err(end) = self.finished(socket, finished).await {
                return end;
            }
        }
        End::Error(error)
    }

    /// One binary frame through the pipeline (on a blocking thread).
    async fn audio(&mut self, socket: &mut impl Link, bytes: &[u8]) -> Result<(), End> {
        let limit = self.state.handles.stream.max_frame_bytes;
        if bytes.len() > limit {
            return Err(ApiError::new(
                ErrorCode::CTX_TOO_LARGE,
                format!("a binary frame of {} bytes is over the limit", bytes.len()),
            )
            .with_field("limit", limit)
            .with_field("limit_unit", "bytes")
            .into());
        }
        let snapshots = self
            .with_pipeline({
                let bytes = bytes.to_vec();
                move |pipeline| pipeline.push(&bytes)
            })
            .await?;
        self.announce(socket).await?;
        self.offer(socket, snapshots).await?;
        // What was heard so far: a checkpoint when one is due, and the next stretch
        // must be allowed (else the stream drains and closes 4429).
        let used = self.used();
        match self.meter.as_mut() {
            Some(meter) => Ok(meter.update(used).await?),
            None => Ok(()),
        }
    }

    /// `speech_started` for an utterance the VAD heard begin, once (`speech_events`).
    async fn announce(&mut self, socket: &mut impl Link) -> Result<(), End> {
        if !self.open.speech_events {
            return Ok(());
        }
        let Some((utterance, start)) = self.pipeline.as_ref().and_then(Pipeline::speaking) else {
            return Ok(());
        };
        if self.announced.is_some_and(|last| last >= utterance) {
            return Ok(());
        }
        self.announced = Some(utterance);
        let start = (start * 1000.0).round() / 1000.0;
        let frame = ServerFrame::SpeechStarted { utterance, start };
        ws::send_text(socket, frame.to_json()).await
    }

    /// End of audio (`close`): drain the decoder, end the utterance.
    async fn finish_audio(&mut self, socket: &mut impl Link) -> Result<(), End> {
        let snapshots = self.with_pipeline(Pipeline::finish).await?;
        self.offer(socket, snapshots).await
    }

    async fn with_pipeline<T: Send + 'static>(
        &mut self,
        work: impl FnOnce(&mut Pipeline) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, End> {
        let mut pipeline = self
            .pipeline
            .take()
            .ok_or_else(|| ApiError::internal("stream pipeline missing"))?;
        let (pipeline, result) = tokio::task::spawn_blocking(move || {
            let result = work(&mut pipeline);
            (pipeline, result)
        })
        .await
        .map_err(ApiError::internal)?;
        self.pipeline = Some(pipeline);
        Ok(result?)
    }

    async fn offer(&mut self, socket: &mut impl Link, snapshots: Vec<Snapshot>) -> Result<(), End> {
        for snapshot in snapshots {
            if snapshot.kind == Kind::Final {
                self.final_since.insert(snapshot.utterance, Instant::now());
            }
            let (emits, start) = self.scheduler.offer(snapshot);
            self.emit(socket, emits).await?;
            self.start(start);
        }
        Ok(())
    }

    async fn finished(
        &mut self,
        socket: &mut impl Link,
        (kind, result): (Kind, Result<Heard, ApiError>),
    ) -> Result<(), End> {
        let heard = match result {
            Ok(heard) => Some(heard),
            Err(error) if kind == Kind::Final => {
                // The session goes on; the client learns this utterance is lost.
                tracing::warn!(
                    code = error.code.as_str(),
                    "stream final failed: {}",
                    error.message
                );
                ws::send_error(socket, &error).await?;
                None
            }
            Err(error) => {
                tracing::debug!("stream interim skipped: {}", error.message);
                None
            }
        };
        let (emits, start) = self.scheduler.finished(heard);
        self.emit(socket, emits).await?;
        self.start(start);
        Ok(())
    }

    fn start(&mut self, snapshot: Option<Snapshot>) {
        if let Some(snapshot) = snapshot {
            self.running = Some(Box::pin(transcribe(
                self.state.clone(),
                self.backend,
                self.open.language.clone(),
                self.speakers.is_some(),
                self.open.words,
                snapshot,
            )));
        }
    }

    async fn emit(&mut self, socket: &mut impl Link, emits: Vec<Emit<Heard>>) -> Result<(), End> {
        for emit in emits {
            let speaker_label = match (&mut self.speakers, &emit.result.embedding) {
                (Some(speakers), Some(embedding)) if emit.is_final => {
                    Some(speakers.label(embedding))
                }
                _ => None,
            };
            if emit.is_final {
                self.finals += 1;
                if let Some(since) = self.final_since.remove(&emit.utterance) {
                    crate::telemetry::STREAM_FINAL.observe([], since.elapsed().as_secs_f64());
                }
            }
            let mut text = emit.result.text;
            let mut redacted = false;
            if let Some(guard) = &self.guard {
                if !emit.is_final && guard.holds_partials() {
                    continue;
                }
                // Blocked: the delta is not sent; the stream ends with the refusal.
                let verdict = guard.piece(&mut text, emit.is_final).await?;
                redacted = verdict.redacted.is_some();
            }
            let seconds = |samples: u64| (samples as f64 / 16.0).round() / 1000.0;
            let start = seconds(emit.start);
            // Redacted text has no word timings (a match can span words).
            let words = emit
                .result
                .words
                .filter(|_| emit.is_final && !redacted)
                .map(|words| {
                    let on_stream_clock = |mut word: WordOut| {
                        word.start = ((word.start + start) * 1000.0).round() / 1000.0;
                        word.end = ((word.end + start) * 1000.0).round() / 1000.0;
                        word.speaker_label = speaker_label.clone();
                        word
                    };
                    words.into_iter().map(on_stream_clock).collect()
                });
            let frame = ServerFrame::Delta(Delta {
                text,
                start,
                end: seconds(emit.end),
                is_final: emit.is_final,
                utterance: emit.utterance,
                speaker_label,
                language: emit.result.language,
                words,
            });
            ws::send_text(socket, frame.to_json()).await?;
        }
        Ok(())
    }

    fn audio_seconds(&self) -> f64 {
        self.pipeline.as_ref().map_or(0.0, Pipeline::seconds)
    }

    fn used(&self) -> Used {
        Used {
            audio_seconds: self.audio_seconds(),
            characters: 0,
        }
    }

    fn done_frame(&self) -> ServerFrame {
        ServerFrame::Done {
            usage: Usage {
                audio_seconds: (self.audio_seconds() * 1000.0).round() / 1000.0,
            },
            utterances: self.finals,
        }
    }
}

/// Transcribes one snapshot on the session's backend (and embeds its speaker for a
/// diarized final). A final the local queue refuses waits and retries: finals never
/// drop; interims are skipped instead.
async fn transcribe(
    state: Arc<ScaiEcho>,
    backend: Backend,
    language: Option<String>,
    diarize: bool,
    words: bool,
    snapshot: Snapshot,
) -> (Kind, Result<Heard, ApiError>) {
    let kind = snapshot.kind;
    // Word timing costs about a fifth more decoding: finals only (and candidates, whose
    // result becomes the final once the pause is confirmed).
    let words = words && kind != Kind::Partial;
    let result = async {
        let echo = &*state;
        match (backend, &echo.local, &echo.relay) {
            (Backend::Local, Some(local), _) => {
                let options = engines::whisper::Options {
                    beam_size: 1,
                    timestamps: false,
                    language,
                    compact: true,
                    single_window: true,
                    word_timestamps: words,
                };
                let text = async {
                    loop {
                        match local
                            .transcribe(snapshot.audio.clone(), options.clone())
                            .await
                        {
                            Err(engines::EngineError::Busy) if kind == Kind::Final => {
                                tokio::time::sleep(BUSY_RETRY).await;
                            }
                            other => break other,
                        }
                    }
                };
                let embedding = async {
                    match diarize && kind != Kind::Partial {
                        true => local.embed(snapshot.audio.clone()).await.map(Some),
                        false => Ok(None),
                    }
                };
                let (transcript, embedding) = tokio::join!(text, embedding);
                let transcript = transcript?;
                let words = words.then(|| {
                    let all = transcript.segments.iter().flat_map(|s| &s.words);
                    all.map(|w| WordOut::from_engine(w, None)).collect()
                });
                Ok(Heard {
                    text: transcript.text,
                    embedding: embedding?,
                    language: transcript.language,
                    words,
                })
            }
            (Backend::Relay, _, Some(relay)) => {
                let wav = media::encode::wav_s16(&snapshot.audio, 16_000, 1);
                let result = relay.transcribe(wav, language.as_deref(), words).await?;
                Ok(Heard {
                    text: result.text.trim().to_owned(),
                    embedding: None,
                    language: result.language.or(language),
                    words: words.then_some(result.words),
                })
            }
            _ => Err(ApiError::new(
                ErrorCode::SCAIECHO_BACKEND_UNAVAILABLE,
                format!("backend {} went away", backend.as_str()),
            )),
        }
    }
    .await;
    (kind, result)
}
