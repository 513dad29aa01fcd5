//! WebSocket `/stream/speak`: text in (as it is written, word by word if need be), audio
//! out as soon as each sentence is synthesized.
//!
//! Protocol: `{"type":"open","voice":...,"output":{"codec":"opus"|"pcm_s16le",
//! "sample_rate":N},"speed":1.0,"backend_preference":"any","pace":false}` → `ready`;
//! then `{"type":"text","text":"..."}` pieces, `{"type":"flush"}` (speak what is pending
//! now), `{"type":"close"}` (speak the rest, then `done` with usage). Barge-in:
//! `{"type":"interrupt"}`, or `"interrupt": true` on a `text` frame, drops what is being
//! spoken and answers `{"type":"interrupted","dropped_frames":N}`. Audio comes as
//! binary frames: one 20 ms Opus packet at 48 kHz each (default), or 20 ms of s16le PCM.
//! With `pace: true` frames leave at playback speed (a quarter second ahead), so a
//! client can play each frame as it arrives and never underruns nor buffers seconds.
//!
//! One sentence synthesizes at a time per session while the previous one is sent; the
//! very first is split after its first clause, and on the local voice that clause's
//! first 0.23 s comes from the engine before the rest is decoded (elsewhere the clause
//! is framed 100 ms first), so audio starts sooner. The sentence
//! queue is bounded (4413 past it), and sends time out on a client that does not read.

pub mod framer;
pub mod protocol;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};

use super::output::{Codec, Output};
use super::text::Sentences;
use super::voices;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::firewall::Stage;
use crate::firewall::stream::StreamGuard;
use crate::scaispeak::{MODULE, ScaiSpeak};
use crate::slots::Slot;
use crate::speech::backends::Backend;
use crate::speech::balancers::Serves;
use crate::speech::meter::{Meter, Used};
use crate::ws::{self, End, Link};

/// Sentences waiting to be synthesized at most.
const MAX_QUEUED: usize = 64;
/// How far ahead of playback a paced stream sends.
const PACE_LEAD: Duration = Duration::from_millis(250);
const FRAME_MS: u64 = 20;

use framer::{Framer, HEAD_MS, Pending, Spoken, frame};

type Running = Pin<Box<dyn Future<Output = (Option<Framer>, ApiResult<Spoken>)> + Send>>;
pub use protocol::{ClientFrame, OpenFrame, ServerFrame, Usage, parse_client_frame, parse_open};

/// What a control frame asks of the session.
enum Action {
    Go,
    Close,
    /// Barge-in happened; this many frames were dropped unsent.
    Interrupted(usize),
}

/// One synthesis stream, whatever carries it (a WebSocket or a WebRTC session).
pub struct Session {
    id: String,
    voice: String,
    state: Arc<ScaiSpeak>,
    principal: Arc<Principal>,
    backend: Backend,
    /// The nodes of a balancer's instance every sentence runs on (`open.model`).
    nodes: Option<Vec<String>>,
    /// Usage recorded while the stream runs (set when it starts).
    meter: Option<Meter>,
    speed: f32,
    /// A cloned voice's conditioning profile.
    profile: Option<engines::conditioning::VoiceProfile>,
    pace: bool,
    /// How far ahead of playback a paced stream sends.
    lead: Duration,
    output: Output,
    /// The frames' rate, as `ready` said (whatever rate the backend speaks at).
    out_rate: u32,
    framer: Option<Framer>,
    sentences: Sentences,
    queue: VecDeque<String>,
    running: Option<Running>,
    /// Frames ready to leave, and when the next may (paced streams).
    outbox: VecDeque<Vec<u8>>,
    play_start: Option<Instant>,
    frames_sent: u64,
    /// The next sentence is the first after a silence (start, or barge-in).
    fresh: bool,
    characters: usize,
    seconds: f64,
    /// Characters of text taken in all (`[scaispeak] stream_max_chars`).
    received: usize,
    /// The firewall's speech-input policies when any apply (each sentence is checked
    /// before it is spoken).
    guard: Option<Arc<StreamGuard>>,
    /// Marks are on ([`Session::mark_sentences`]): the characters of each clause whose
    /// frames are all queued (an empty frame in the outbox stands for its mark), and
    /// those of the clause still being framed.
    marks: Option<VecDeque<usize>>,
    unmarked: usize,
    _slot: Slot,
}

pub async fn serve(mut socket: WebSocket, state: Arc<ScaiSpeak>, token: Option<String>) {
    let outcome = match start(&mut socket, &state, token).await {
        Ok(session) => session.run_to_end(&mut socket).await,
        Err(end) => Err(end),
    };
    ws::finish(&mut socket, outcome).await;
}

/// The checks on the caller before its `open` is read: module, permission, rate limits
/// and budget.
pub async fn admit(state: &ScaiSpeak, principal: &Principal) -> ApiResult<()> {
    super::authorize(principal)?;
    state.handles.gate.admit_stream(principal).await
}

async fn start(
    socket: &mut WebSocket,
    state: &Arc<ScaiSpeak>,
    token: Option<String>,
) -> Result<Session, End> {
    let principal = ws::authenticate(&state.handles.gate.auth, token).await?;
    admit(state, &principal).await?;
    // The slot before `open`: a tenant at its limit is refused at once.
    let slot = take_slot(state, &principal.tenant_id).await?;
    let idle = state.handles.stream.idle_timeout;
    let text = ws::open_frame(socket, idle, "send the `open` frame first").await?;
    let open = parse_open(&text)?;
    Ok(Session::open(state, principal, slot, open, PACE_LEAD).await?)
}

/// One of the tenant's open speech-stream slots (429/4429 `RATE_LIMITED` when all are
/// taken: `[scaispeak] stream_max_per_tenant`).
pub async fn take_slot(state: &Arc<ScaiSpeak>, tenant: &str) -> ApiResult<Slot> {
    state
        .streams
        .take(tenant, state.config.stream_max_per_tenant)
        .await
}

impl Session {
    /// A stream for an admitted caller's `open`: voice, output, speed and backend
    /// resolved. `lead` is how far ahead of playback a paced stream sends.
    pub async fn open(
        state: &Arc<ScaiSpeak>,
        principal: Arc<Principal>,
        slot: Slot,
        open: OpenFrame,
        lead: Duration,
    ) -> ApiResult<Session> {
        // A wrong voice is a bad `open` here (4400), not a missing resource.
        let voice = voices::find(state, &principal.tenant_id, open.voice.as_deref())
            .await
            .map_err(|e| ApiError::invalid(format!("voice: {}", e.message)))?;
        let output = Output::from_request(open.output, Codec::Opus)?;
        if !matches!(output.codec, Codec::Opus | Codec::PcmS16le) {
            return Err(
                ApiError::invalid("streams carry `opus` packets or `pcm_s16le` frames")
                    .with_field("field", "output.codec"),
            );
        }
        let speed = super::check_speed(open.speed)?;
        let model = open.model.as_deref();
        let nodes = state
            .handles
            .bound(&principal.tenant_id, model, Serves::Speech)
            .await?;
        let preference = crate::speech::balancers::preference(&nodes, open.backend_preference);
        let backend = super::resolve(state, &principal.tenant_id, preference, &voice).await?;
        let rate = output.rate(voice.sample_rate);
        let guard = StreamGuard::open(
            &state.handles.firewall,
            &principal,
            model,
            Stage::SpeechInput,
        )
        .await?;
        Ok(Session {
            guard,
            id: format!("spk_{}", uuid::Uuid::now_v7().simple()),
            voice: voice.id,
            state: state.clone(),
            principal,
            backend,
            nodes,
            meter: None,
            speed,
            profile: voice.profile.clone(),
            pace: open.pace,
            lead,
            output,
            out_rate: rate,
            framer: None,
            sentences: Sentences::default(),
            queue: VecDeque::new(),
            running: None,
            outbox: VecDeque::new(),
            play_start: None,
            frames_sent: 0,
            fresh: true,
            characters: 0,
            received: 0,
            marks: None,
            unmarked: 0,
            _slot: slot,
            seconds: 0.0,
        })
    }

    /// After the last frame of each clause, a text frame `{"type":"mark",
    /// "characters":N}` tells how many characters of the text it spoke. Not part of the
    /// public protocol: a transport that must know what was heard when speech is cut
    /// short (the Realtime API's barge-in) turns it on.
    pub fn mark_sentences(&mut self) {
        self.marks = Some(VecDeque::new());
    }

    /// The `ready` frame.
    pub fn ready_frame(&self) -> String {
        ServerFrame::Ready {
            session_id: self.id.clone(),
            voice: self.voice.clone(),
            backend: self.backend.as_str(),
            codec: self.output.codec,
            sample_rate: self.out_rate,
            frame_ms: FRAME_MS,
            pace: self.pace,
        }
        .to_text()
    }

    /// Sends `ready`, runs the stream, records its usage; `Ok` is the `done` frame.
    pub async fn run_to_end(mut self, socket: &mut impl Link) -> Result<String, End> {
        metrics::counter!("scaigrid_scaispeak_streams_total").increment(1);
        let gate = &self.state.handles.gate;
        let principal = self.principal.clone();
        self.meter = Some(Meter::start(gate, principal, MODULE, &self.id, true).await?);
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
            End::Done => Ok(ServerFrame::Done {
                usage: Usage {
                    characters: self.characters,
                    audio_seconds: (self.seconds * 1000.0).round() / 1000.0,
                },
            }
            .to_text()),
            other => Err(other),
        }
    }

    async fn run(&mut self, socket: &mut impl Link) -> End {
        let config = self.state.handles.stream.clone();
        let mut keepalive = tokio::time::interval(config.keepalive);
        keepalive.tick().await;
        let mut last_heard = Instant::now();
        let mut closing = false;
        loop {
            let busy = self.running.is_some() || !self.queue.is_empty() || !self.outbox.is_empty();
            if closing && !busy {
                return match self.drain(socket).await {
                    Ok(()) => End::Done,
                    Err(end) => end,
                };
            }
            if busy {
                last_heard = Instant::now();
            }
            let idle_deadline = tokio::time::Instant::from_std(last_heard + config.idle_timeout);
            let send_at = tokio::time::Instant::from_std(self.next_send_time());
            let step: Result<(), End> = tokio::select! {
                done = async { self.running.as_mut().expect("guarded").await },
                    if self.running.is_some() =>
                {
                    self.running = None;
                    self.synthesized(socket, done).await
                }
                _ = tokio::time::sleep_until(send_at), if !self.outbox.is_empty() => {
                    self.send_due(socket).await
                }
                message = socket.recv(), if !closing => {
                    last_heard = Instant::now();
                    match message {
                        None | Some(Message::Close(_)) => Err(End::Gone),
                        Some(Message::Text(text)) => match self.control(&text) {
                            Ok(Action::Go) => Ok(()),
                            Ok(Action::Close) => {
                                closing = true;
                                Ok(())
                            }
                            Ok(Action::Interrupted(dropped)) => {
                                let frame = ServerFrame::Interrupted { dropped_frames: dropped };
                                ws::send_text(socket, frame.to_text()).await
                            }
                            Err(error) if error.code == ErrorCode::CTX_TOO_LARGE => Err(error.into()),
                            // A bad frame loses nothing: say so, carry on.
                            Err(error) => ws::send_error(socket, &error).await,
                        },
                        Some(Message::Binary(_)) => {
                            let error = ApiError::invalid("this stream takes text frames, not audio");
                            ws::send_error(socket, &error).await
                        }
                        Some(_) => Ok(()),
                    }
                }
                _ = tokio::time::sleep_until(idle_deadline), if !closing && !busy => {
                    Err(End::Error(ws::idle_error(config.idle_timeout)))
                }
                _ = keepalive.tick() => ws::ping(socket).await,
            };
            if let Err(end) = step {
                return end;
            }
            self.start_next();
        }
    }

    /// A text frame: `text` (with `interrupt: true`, barge-in first), `interrupt`,
    /// `flush` or `close`.
    fn control(&mut self, text: &str) -> ApiResult<Action> {
        let frame = parse_client_frame(text)?;
        let limit = self.state.config.inline_text_chars;
        match frame {
            ClientFrame::Text {
                text: piece,
                interrupt,
            } => {
                let count = piece.chars().count();
                if count > limit {
                    return Err(ApiError::new(
                        ErrorCode::CTX_TOO_LARGE,
                        format!("a text frame is limited to {limit} characters"),
                    )
                    .with_field("limit", limit));
                }
                let total = self.state.config.stream_max_chars;
                self.received += count;
                if self.received > total {
                    return Err(ApiError::new(
                        ErrorCode::CTX_TOO_LARGE,
                        format!("a stream takes at most {total} characters of text"),
                    )
                    .with_field("limit", total)
                    .with_field("limit_unit", "characters"));
                }
                let dropped = interrupt.then(|| self.interrupt());
                let complete = self.sentences.push(&piece);
                self.enqueue(&complete)?;
                // Text that never ends a sentence is spoken once it reaches the limit.
                if self.sentences.pending_chars() > limit {
                    let rest = self.sentences.flush();
                    self.enqueue(rest.as_slice())?;
                }
                Ok(dropped.map_or(Action::Go, Action::Interrupted))
            }
            ClientFrame::Interrupt => Ok(Action::Interrupted(self.interrupt())),
            ClientFrame::Flush => {
                let rest = self.sentences.flush();
                self.enqueue(rest.as_slice())?;
                Ok(Action::Go)
            }
            ClientFrame::Close => {
                let rest = self.sentences.flush();
                self.enqueue(rest.as_slice())?;
                Ok(Action::Close)
            }
        }
    }

    /// Barge-in: drops what is being synthesized, waiting, or not yet sent, and the
    /// text not yet spoken. Returns how many frames were dropped unsent. What was
    /// synthesized still counts as usage (the work was done).
    fn interrupt(&mut self) -> usize {
        let dropped = self.outbox.len();
        self.outbox.clear();
        if let Some(marks) = &mut self.marks {
            marks.clear();
        }
        self.unmarked = 0;
        self.queue.clear();
        self.sentences.flush();
        // The running sentence's result is dropped with it; a fresh framer follows.
        self.running = None;
        self.framer = None;
        self.play_start = None;
        self.frames_sent = 0;
        self.fresh = true;
        metrics::counter!("scaigrid_scaispeak_interruptions_total").increment(1);
        dropped
    }

    fn enqueue(&mut self, sentences: &[String]) -> ApiResult<()> {
        let pieces = sentences
            .iter()
            .flat_map(|sentence| engines::piper::bounded_pieces(sentence));
        for sentence in pieces {
            if self.queue.len() >= MAX_QUEUED {
                return Err(ApiError::new(
                    ErrorCode::CTX_TOO_LARGE,
                    format!("more than {MAX_QUEUED} sentences are waiting to be spoken"),
                )
                .with_field("limit", MAX_QUEUED));
            }
            self.queue.push_back(sentence);
        }
        Ok(())
    }

    fn start_next(&mut self) {
        if self.running.is_some() {
            return;
        }
        let Some(mut sentence) = self.queue.pop_front() else {
            return;
        };
        // Nothing spoken yet (or just interrupted): start with the first clause alone
        // (time to first audio), and ahead of other streams' later sentences on the
        // engine: those only keep audio flowing that is already playing.
        let urgent = std::mem::take(&mut self.fresh);
        if urgent && let Some((head, tail)) = engines::piper::first_clause(&sentence) {
            self.queue.push_front(tail);
            sentence = head;
        }
        if urgent && self.backend == Backend::Local && self.profile.is_none() {
            self.start_first_piece(sentence);
            return;
        }
        let (state, backend, speed) = (self.state.clone(), self.backend, self.speed);
        let profile = self.profile.clone();
        let (output, out_rate) = (self.output, self.out_rate);
        let framer = self.framer.take();
        let guard = self.guard.clone();
        self.running = Some(Box::pin(async move {
            let mut sentence = sentence;
            if let Some(guard) = guard
                && let Err(refusal) = guard.piece(&mut sentence, true).await
            {
                return (framer, Err(refusal));
            }
            let (samples, rate) =
                match super::sentence(&state, backend, &sentence, speed, profile.as_ref(), urgent)
                    .await
                {
                    Ok(spoken) => spoken,
                    Err(error) => return (framer, Err(error)),
                };
            let head = match urgent {
                true => rate as usize * HEAD_MS / 1000,
                false => samples.len(),
            };
            let usage = (
                sentence.chars().count(),
                samples.len() as f64 / f64::from(rate.max(1)),
            );
            frame(framer, (output, rate, out_rate), samples, usage, head).await
        }));
    }

    /// A stream's first clause on the local voice: its first piece of audio (about
    /// 0.23 s) comes from the engine as soon as the encoder and a short span of the
    /// decoder have run, and is framed while the rest is decoded.
    fn start_first_piece(&mut self, sentence: String) {
        let Some(rate) = self.state.local.as_ref().and_then(|l| l.tts_sample_rate()) else {
            let error = super::backend_unavailable(Backend::Local);
            let framer = self.framer.take();
            self.running = Some(Box::pin(async move { (framer, Err(error)) }));
            return;
        };
        let (state, speed) = (self.state.clone(), self.speed);
        let (output, out_rate) = (self.output, self.out_rate);
        let framer = self.framer.take();
        let guard = self.guard.clone();
        self.running = Some(Box::pin(async move {
            let mut sentence = sentence;
            if let Some(guard) = guard
                && let Err(refusal) = guard.piece(&mut sentence, true).await
            {
                return (framer, Err(refusal));
            }
            let characters = sentence.chars().count();
            let local = state.local.as_ref().expect("checked above");
            let (first, continuation) = match local.first_piece(sentence, speed).await {
                Ok(piece) => piece,
                Err(error) => return (framer, Err(error.into())),
            };
            // The rest queues behind other streams' first pieces, and is decoded while
            // this piece is framed and sent.
            let pending: Option<Pending> = continuation.map(|continuation| {
                tokio::spawn(async move {
                    let local = state.local.as_ref().expect("checked above");
                    Ok(local.rest(continuation).await?)
                })
            });
            let usage = (characters, first.len() as f64 / f64::from(rate));
            let head = first.len();
            let (framer, framed) =
                frame(framer, (output, rate, out_rate), first, usage, head).await;
            let framed = framed.map(|spoken| Spoken { pending, ..spoken });
            (framer, framed)
        }));
    }

    /// Frames the rest of a first clause once the engine has it (its seconds count
    /// toward usage; its characters came with the first piece).
    fn frame_pending(&mut self, pending: Pending, rate: u32) {
        let framer = self.framer.take();
        let formats = (self.output, rate, self.out_rate);
        self.running = Some(Box::pin(async move {
            let rest = match pending.await {
                Ok(Ok(rest)) => rest,
                Ok(Err(error)) => return (framer, Err(error)),
                Err(error) => return (framer, Err(ApiError::internal(error))),
            };
            let (seconds, head) = (rest.len() as f64 / f64::from(rate.max(1)), rest.len());
            frame(framer, formats, rest, (0, seconds), head).await
        }));
    }

    /// Frames the rest of a clause whose head is on its way; the next sentence waits for
    /// it (one running at a time keeps the frames in order).
    fn frame_rest(&mut self, rest: Vec<f32>, rate: u32) {
        let framer = self.framer.take();
        let formats = (self.output, rate, self.out_rate);
        let head = rest.len();
        self.running = Some(Box::pin(frame(framer, formats, rest, (0, 0.0), head)));
    }

    /// A sentence came back: its frames join the outbox.
    async fn synthesized(
        &mut self,
        socket: &mut impl Link,
        (framer, result): (Option<Framer>, ApiResult<Spoken>),
    ) -> Result<(), End> {
        self.framer = framer;
        let spoken = match result {
            Ok(spoken) => spoken,
            // A node lost mid-sentence (after the first audio, or twice): that sentence
            // is lost, the client hears why, and the stream goes on with the next one
            // on whichever node is ready (another, or this one restarted).
            Err(error) if error.node_lost() => {
                let error = error
                    .in_stream(ErrorCode::SCAISPEAK_BACKEND_UNAVAILABLE)
                    .with_field("resumes", "next_sentence");
                tracing::warn!(
                    code = error.code.as_str(),
                    "stream sentence lost: {}",
                    error.message
                );
                metrics::counter!("scaigrid_scaispeak_sentences_lost_total").increment(1);
                // Nothing left to play: the next sentence is a first audio again.
                self.fresh |= self.outbox.is_empty();
                return ws::send_error(socket, &error).await;
            }
            Err(error) => return Err(error.into()),
        };
        self.characters += spoken.characters;
        self.seconds += spoken.seconds;
        self.outbox.extend(spoken.frames);
        if let Some(marks) = &mut self.marks {
            self.unmarked += spoken.characters;
            if spoken.pending.is_none() && spoken.rest.is_empty() {
                marks.push_back(std::mem::take(&mut self.unmarked));
                self.outbox.push_back(Vec::new());
            }
        }
        // What was spoken so far: a checkpoint when one is due, and the next stretch
        // must be allowed. Else what was framed (and is billed) still plays, and the
        // stream ends with the refusal (4429); nothing more is synthesized.
        let used = self.used();
        if let Some(meter) = self.meter.as_mut()
            && let Err(refusal) = meter.update(used).await
        {
            self.drain(socket).await?;
            return Err(refusal.into());
        }
        if let Some(pending) = spoken.pending {
            self.frame_pending(pending, spoken.rate);
        } else if !spoken.rest.is_empty() {
            self.frame_rest(spoken.rest, spoken.rate);
        }
        Ok(())
    }

    fn used(&self) -> Used {
        Used {
            audio_seconds: self.seconds,
            characters: self.characters as u64,
        }
    }

    /// When the next frame may leave: now, or its playback time minus the lead.
    fn next_send_time(&self) -> Instant {
        match (self.pace, self.play_start) {
            (true, Some(start)) => {
                let due = start + Duration::from_millis(self.frames_sent * FRAME_MS);
                due.checked_sub(self.lead).unwrap_or(start)
            }
            _ => Instant::now(),
        }
    }

    /// Sends every frame that is due.
    async fn send_due(&mut self, socket: &mut impl Link) -> Result<(), End> {
        while !self.outbox.is_empty() && self.next_send_time() <= Instant::now() {
            let frame = self.outbox.pop_front().expect("checked");
            if frame.is_empty() {
                let characters = self.marks.as_mut().and_then(VecDeque::pop_front);
                let mark = serde_json::json!({"type": "mark", "characters": characters});
                ws::send_text(socket, mark.to_string()).await?;
                continue;
            }
            let start = *self.play_start.get_or_insert_with(Instant::now);
            ws::send_binary(socket, frame).await?;
            self.frames_sent += 1;
            // A paced stream that fell behind (slow synthesis) restarts its clock
            // rather than bursting to catch up.
            let behind = Instant::now().saturating_duration_since(
                start + Duration::from_millis(self.frames_sent * FRAME_MS),
            );
            if self.pace && behind > Duration::ZERO {
                self.play_start = Some(Instant::now());
                self.frames_sent = 0;
            }
        }
        Ok(())
    }

    /// End of stream: the encoder's last frames, sent (paced if asked).
    async fn drain(&mut self, socket: &mut impl Link) -> Result<(), End> {
        if let Some(framer) = &mut self.framer {
            let last = framer.frames(&[], true)?;
            self.outbox.extend(last);
        }
        while !self.outbox.is_empty() {
            tokio::time::sleep_until(tokio::time::Instant::from_std(self.next_send_time())).await;
            self.send_due(socket).await?;
        }
        Ok(())
    }
}
