//! One `/v1/realtime` connection: the client's events in, the session's events out.
//!
//! The session plays the client of two stream sessions on pipes: ScaiEcho hears the
//! input audio (opened on the first append, with the format, language and turn
//! detection set so far: they are fixed from then on), and per spoken response a
//! ScaiSpeak session speaks (see `respond`). Between them sits the conversation: a
//! user's turn, once transcribed, joins it and (with turn detection's
//! `create_response`) starts a response from the gateway's chat model; speech heard
//! while a response runs cancels it (`interrupt_response`) and its message keeps what
//! was heard by then.
//!
//! Every mistake of the client is an `error` event naming the parameter and the
//! session goes on; a refusal of the caller (auth, permission, limits on the audio
//! stream) or a broken audio stream ends it with the error table's close code.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::Products;
use super::config::{self, Kind, Session, Turn, invalid};
use super::conversation::{self, Body, Conversation, Item, Role};
use super::events::{self, ClientEvent};
use super::pipe::{self, Peer};
use super::plan;
use super::respond::{self, Piece};
use super::response::{Ending, Response};
use super::transcript::{Heard, Transcript};
use super::turns;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::ws::{self, End, Link};

/// How long a `response.create` waits for the transcripts of committed audio.
const TRANSCRIPT_WAIT: Duration = Duration::from_secs(5);
/// Finished responses kept for `conversation.item.truncate` of their audio.
const RECENT: usize = 8;

/// A response under way.
struct Active {
    response: Response,
    task: tokio::task::JoinHandle<()>,
    pieces: mpsc::Receiver<Piece>,
    /// Cut at the most output tokens.
    truncated: bool,
    failed: Option<ApiError>,
}

/// A turn held open (`semantic_vad`): its transcript left the sentence open, so the
/// answer waits for the longer pause, on the stream's clock (or the wall clock, should
/// the client stop sending audio).
struct Hold {
    audio_until: f64,
    wall_until: tokio::time::Instant,
}

/// A `response.create` waiting for committed audio's transcripts.
struct Waiting {
    params: Value,
    event_id: Option<String>,
    until: tokio::time::Instant,
}

pub struct Realtime {
    socket: WebSocket,
    products: Arc<Products>,
    principal: Arc<Principal>,
    session: Session,
    beta: bool,
    transcript: Transcript,
    conversation: Conversation,
    /// The ScaiEcho stream once audio came.
    ears: Option<Peer>,
    /// Audio or a response came: the session's kind is fixed.
    started: bool,
    active: Option<Active>,
    waiting: Option<Waiting>,
    hold: Option<Hold>,
    recent: VecDeque<Response>,
}

/// What ends the session.
enum Stop {
    /// The client left.
    Gone,
    /// An error event, then this close code.
    Close(ApiError),
    /// The audio stream ended with its close frame (its error event was sent).
    Relay(Option<CloseFrame>),
}

impl From<End> for Stop {
    fn from(end: End) -> Stop {
        match end {
            End::Error(error) => Stop::Close(error),
            End::Done | End::Gone => Stop::Gone,
        }
    }
}

/// Runs one connection to its end.
pub async fn serve(
    mut socket: WebSocket,
    products: Arc<Products>,
    token: Option<String>,
    beta: bool,
    session: Session,
) {
    let principal = match ws::authenticate(&products.gate.auth, token).await {
        Ok(principal) => principal,
        Err(end) => return stop(&mut socket, end.into()).await,
    };
    let mut realtime = Realtime {
        socket,
        products,
        principal,
        session,
        beta,
        transcript: Transcript::new(beta),
        conversation: Conversation::default(),
        ears: None,
        started: false,
        active: None,
        waiting: None,
        hold: None,
        recent: VecDeque::new(),
    };
    let ending = realtime.run().await;
    if let Some(active) = realtime.active.take() {
        active.task.abort();
    }
    stop(&mut realtime.socket, ending).await;
}

async fn stop(socket: &mut WebSocket, ending: Stop) {
    match ending {
        Stop::Gone => {}
        Stop::Close(error) => {
            let code = error.code.ws_close_code().unwrap_or(1011);
            tracing::info!(
                code = error.code.as_str(),
                close = code,
                "realtime session closed: {}",
                error.message
            );
            let event = events::error(&error, None).to_string();
            if Link::send(socket, Message::Text(event.into()))
                .await
                .is_ok()
            {
                ws::close(socket, code, error.code.as_str()).await;
            }
        }
        Stop::Relay(frame) => {
            let (code, reason) = frame.map_or((1011, "the audio stream ended".into()), |f| {
                (f.code, f.reason.to_string())
            });
            ws::close(socket, code, &reason).await;
        }
    }
}

impl Realtime {
    async fn run(&mut self) -> Stop {
        let created = self.session_event("created");
        if let Err(end) = self.emit(created).await {
            return end.into();
        }
        let mut keepalive = tokio::time::interval(self.products.stream.keepalive);
        keepalive.tick().await;
        loop {
            let waiting_until = self.waiting.as_ref().map(|w| w.until);
            let hold_until = self.hold.as_ref().map(|h| h.wall_until);
            let step: Result<(), Stop> = tokio::select! {
                message = Link::recv(&mut self.socket) => match message {
                    None | Some(Message::Close(_)) => Err(Stop::Gone),
                    Some(Message::Text(text)) => self.client(&text).await,
                    Some(Message::Binary(_)) => {
                        let error = ApiError::invalid(
                            "audio goes in input_audio_buffer.append events (base64), not binary frames",
                        );
                        self.emit(events::error(&error, None)).await.map_err(Stop::from)
                    }
                    Some(_) => Ok(()),
                },
                heard = recv_from(&mut self.ears) => match heard {
                    Some(Message::Text(text)) => self.heard(&text).await,
                    Some(Message::Close(frame)) => Err(Stop::Relay(frame)),
                    None => Err(Stop::Relay(None)),
                    Some(_) => Ok(()),
                },
                piece = recv_piece(&mut self.active) => self.piece(piece).await,
                () = sleep_until(waiting_until) => {
                    // Committed audio without speech gives no transcript: answer anyway.
                    self.transcript.awaiting = 0;
                    let waiting = self.waiting.take().expect("guarded");
                    self.create_response(waiting.params, waiting.event_id.as_deref()).await
                }
                () = sleep_until(hold_until) => self.release_turn().await,
                _ = keepalive.tick() => {
                    // The audio stream stays open while the client is here, sending
                    // audio or not (a conversation may go on in text).
                    if let Some(ears) = &self.ears {
                        let _ = ears.to.try_send(Message::Ping(Default::default()));
                    }
                    ws::ping(&mut self.socket).await.map_err(Stop::from)
                }
            };
            if let Err(stop) = step {
                return stop;
            }
        }
    }

    async fn emit(&mut self, event: Value) -> Result<(), End> {
        ws::send_text(&mut self.socket, event.to_string()).await
    }

    async fn emit_all(&mut self, events: Vec<Value>) -> Result<(), Stop> {
        for event in events {
            self.emit(event).await?;
        }
        Ok(())
    }

    /// A mistake of the client: said, and the session goes on.
    async fn refuse(&mut self, error: &ApiError, event_id: Option<&str>) -> Result<(), Stop> {
        self.emit(events::error(error, event_id))
            .await
            .map_err(Stop::from)
    }

    fn session_event(&self, what: &str) -> Value {
        let kind = match (self.beta, self.session.kind) {
            (true, Kind::Transcription) => format!("transcription_session.{what}"),
            _ => format!("session.{what}"),
        };
        events::event(&kind, json!({"session": self.session.describe(self.beta)}))
    }

    async fn client(&mut self, text: &str) -> Result<(), Stop> {
        let value = match serde_json::from_str::<Value>(text) {
            Ok(value) => value,
            Err(e) => {
                let error =
                    ApiError::invalid(format!("events are JSON objects with a `type`: {e}"));
                return self.refuse(&error, None).await;
            }
        };
        let event_id = value["event_id"].as_str().map(config::clip);
        let event_id = event_id.as_deref();
        let event = events::parse_value(&value);
        drop(value);
        let event = match event {
            Ok(event) => event,
            Err(error) => return self.refuse(&error, event_id).await,
        };
        if self.session.kind == Kind::Transcription && !event.transcribing() {
            let error = invalid(
                "type",
                "a transcription session takes session.update and input_audio_buffer events; \
                 conversation and response events need a realtime session"
                    .into(),
            );
            return self.refuse(&error, event_id).await;
        }
        let outcome = match event {
            ClientEvent::SessionUpdate(update) => {
                if text.contains("\"transcription_session.update\"")
                    || update.get("input_audio_format").is_some()
                {
                    self.beta = true;
                    self.transcript.set_beta(true);
                }
                self.update_session(&update).await
            }
            ClientEvent::Append(audio) => {
                if self.ears.is_none() {
                    // A caller the audio stream refuses (permission, limits) is done.
                    self.ears = Some(self.open_ears().await.map_err(Stop::Close)?);
                    self.started = true;
                }
                let frames = self.transcript.append(&audio);
                let sent = self.send_to_ears(frames).await;
                let clock = self.transcript.clock(self.session.format);
                if self
                    .hold
                    .as_ref()
                    .is_some_and(|hold| clock >= hold.audio_until)
                {
                    self.release_turn().await?;
                }
                sent
            }
            ClientEvent::Commit => match self.transcript.commit() {
                Ok(flush) => self.send_to_ears(vec![flush]).await,
                Err(error) => Err(error),
            },
            ClientEvent::Clear => {
                let flush = self.transcript.clear(self.session.format);
                let cleared = events::event("input_audio_buffer.cleared", json!({}));
                self.emit(cleared).await?;
                match self.ears.is_some() {
                    true => self.send_to_ears(vec![flush]).await,
                    false => Ok(()),
                }
            }
            ClientEvent::ItemCreate {
                item,
                previous_item_id,
            } => self.create_item(&item, previous_item_id.as_deref()).await,
            ClientEvent::ItemDelete { item_id } => match self.conversation.delete(&item_id) {
                Ok(()) => {
                    let deleted =
                        events::event("conversation.item.deleted", json!({"item_id": item_id}));
                    self.emit(deleted).await.map_err(Stop::from)?;
                    Ok(())
                }
                Err(error) => Err(error),
            },
            ClientEvent::ItemRetrieve { item_id } => match self.conversation.get(&item_id) {
                Some(item) => {
                    let retrieved = events::event(
                        "conversation.item.retrieved",
                        json!({"item": item.describe(self.beta)}),
                    );
                    self.emit(retrieved).await?;
                    Ok(())
                }
                None => Err(conversation::not_found(&item_id)),
            },
            ClientEvent::ItemTruncate {
                item_id,
                audio_end_ms,
            } => self.truncate(&item_id, audio_end_ms).await,
            ClientEvent::ResponseCreate(params) => {
                if self.active.is_some() || self.waiting.is_some() {
                    Err(invalid(
                        "type",
                        "the conversation already has an active response; cancel it or wait for \
                         its response.done"
                            .into(),
                    )
                    .with_field("reason", "conversation_already_has_active_response"))
                } else if self.transcript.awaiting > 0 {
                    // Committed audio is still being transcribed: the answer needs it.
                    self.waiting = Some(Waiting {
                        params,
                        event_id: event_id.map(str::to_owned),
                        until: tokio::time::Instant::now() + TRANSCRIPT_WAIT,
                    });
                    Ok(())
                } else {
                    return self.create_response(params, event_id).await;
                }
            }
            ClientEvent::ResponseCancel { response_id } => {
                let matches = self.active.as_ref().is_some_and(|active| {
                    response_id
                        .as_deref()
                        .is_none_or(|id| id == active.response.id)
                });
                match matches {
                    true => self.cancel("client_cancelled").await,
                    false => Err(invalid(
                        "response_id",
                        "there is no such response in progress".into(),
                    )
                    .with_field("reason", "response_cancel_not_active")),
                }
            }
            ClientEvent::OutputAudioClear => {
                if self.active.is_some() {
                    self.cancel("client_cancelled").await.map_err(Stop::Close)?;
                }
                let cleared = events::event("output_audio_buffer.cleared", json!({}));
                self.emit(cleared).await?;
                Ok(())
            }
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(error) => self.refuse(&error, event_id).await,
        }
    }

    async fn update_session(&mut self, update: &Value) -> ApiResult<()> {
        let mut next = self.session.clone();
        next.update(update)?;
        if self.ears.is_some()
            && (next.format != self.session.format
                || next.language != self.session.language
                || next.turn != self.session.turn)
        {
            return Err(invalid(
                "session",
                "the audio format, language and turn detection are fixed once audio has come; \
                 open a new session to change them"
                    .into(),
            ));
        }
        if self.started && next.kind != self.session.kind {
            return Err(invalid(
                "session.type",
                "a session's type is fixed once audio or a response has come".into(),
            ));
        }
        self.session = next;
        let updated = self.session_event("updated");
        self.emit(updated)
            .await
            .map_err(|_| ApiError::internal("gone"))?;
        Ok(())
    }

    /// A ScaiEcho stream session on a pipe for this caller, opened with the session's
    /// input settings.
    async fn open_ears(&mut self) -> ApiResult<Peer> {
        use crate::scaiecho::stream;
        let state = &self.products.scaiecho;
        let principal = self.principal.clone();
        stream::admit(state, &principal).await?;
        let slot = stream::take_slot(state, &principal.tenant_id).await?;
        let open = stream::protocol::parse_open(&self.session.open_frame())?;
        let session = stream::Session::open(state, principal, slot, open).await?;
        let (mut pipe, peer) = pipe::pipe();
        tokio::spawn(
            async move {
                let outcome = session.run_to_end(&mut pipe).await;
                ws::finish(&mut pipe, outcome).await;
            }
            .in_current_span(),
        );
        Ok(peer)
    }

    async fn send_to_ears(&mut self, frames: Vec<Message>) -> ApiResult<()> {
        let Some(ears) = &self.ears else {
            return Err(invalid(
                "input_audio_buffer",
                "the input audio buffer is empty: append audio first".into(),
            ));
        };
        for frame in frames {
            // A stream that ended says why on its way out (read in the main loop).
            if ears.to.send(frame).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    /// A frame of the ScaiEcho stream: its events, and what the conversation makes of it.
    async fn heard(&mut self, text: &str) -> Result<(), Stop> {
        let (mut out, heard) = self.transcript.frame(text);
        match heard {
            None => self.emit_all(out).await,
            Some(Heard::SpeechStarted) => {
                // The user went on: a turn held open is not over.
                self.hold = None;
                self.emit_all(out).await?;
                let interrupts =
                    self.session.interrupt_response && self.session.turn != Turn::Manual;
                if self.active.is_some() && interrupts && self.session.kind == Kind::Realtime {
                    self.cancel("turn_detected").await.map_err(Stop::Close)?;
                }
                Ok(())
            }
            Some(Heard::Completed {
                item_id,
                transcript,
                end,
            }) => {
                let previous = self.conversation.last_id();
                for event in &mut out {
                    let kind = event["type"].as_str().unwrap_or_default();
                    if kind == "input_audio_buffer.committed"
                        || kind == self.transcript.added_kind()
                    {
                        event["previous_item_id"] = json!(previous);
                    }
                }
                let item = Item::message(item_id, Role::User, transcript.clone(), true);
                let _ = self.conversation.insert(item, None);
                self.emit_all(out).await?;
                self.turn_ended(&transcript, end).await
            }
        }
    }

    /// A user's utterance was transcribed: a waiting `response.create` goes now; with
    /// turn detection's `create_response`, a response starts (with `semantic_vad`, once
    /// the pause its transcript calls for has passed).
    async fn turn_ended(&mut self, transcript: &str, end: f64) -> Result<(), Stop> {
        if self.session.kind != Kind::Realtime {
            return Ok(());
        }
        if self.transcript.awaiting == 0
            && let Some(waiting) = self.waiting.take()
        {
            return self
                .create_response(waiting.params, waiting.event_id.as_deref())
                .await;
        }
        let automatic = self.session.create_response && self.session.turn != Turn::Manual;
        if !automatic || transcript.is_empty() || self.active.is_some() || self.waiting.is_some() {
            return Ok(());
        }
        if let Turn::Semantic { eagerness } = self.session.turn {
            // The stream heard the short pause already; an open sentence waits longer.
            let extra = (turns::turn_pause(eagerness, transcript) - turns::short_pause(eagerness))
                .as_secs_f64();
            if extra > 0.0 {
                let audio_until = end + extra;
                let ahead = audio_until - self.transcript.clock(self.session.format);
                let wall_until =
                    tokio::time::Instant::now() + Duration::from_secs_f64(ahead.clamp(0.0, 10.0));
                self.hold = Some(Hold {
                    audio_until,
                    wall_until,
                });
                return Ok(());
            }
        }
        self.create_response(Value::Null, None).await
    }

    /// The pause a held turn waited for passed without new speech: it is answered.
    async fn release_turn(&mut self) -> Result<(), Stop> {
        self.hold = None;
        metrics::counter!("scaigrid_realtime_turns_held_total").increment(1);
        match self.active.is_none() && self.waiting.is_none() {
            true => self.create_response(Value::Null, None).await,
            false => Ok(()),
        }
    }

    async fn create_item(&mut self, item: &Value, previous: Option<&str>) -> ApiResult<()> {
        let item = Item::from_client(item)?;
        let shown = item.describe(self.beta);
        let previous = self.conversation.insert(item, previous)?;
        let added = events::event(
            self.transcript.added_kind(),
            json!({"previous_item_id": previous, "item": shown}),
        );
        let mut out = vec![added];
        if !self.beta {
            out.push(events::event(
                "conversation.item.done",
                json!({"item": shown}),
            ));
        }
        self.emit_all(out)
            .await
            .map_err(|_| ApiError::internal("gone"))
    }

    /// `conversation.item.truncate`: an answer's audio heard up to `audio_end_ms`; its
    /// transcript keeps what was heard. A response still under way ends there.
    async fn truncate(&mut self, item_id: &str, audio_end_ms: u64) -> ApiResult<()> {
        let active_message = self
            .active
            .as_ref()
            .is_some_and(|active| active.response.message_id() == Some(item_id));
        if active_message {
            let played = audio_end_ms as f64;
            return self
                .finish_active(Ending::Cancelled("client_cancelled"), Some(played))
                .await;
        }
        let Some(item) = self.conversation.get(item_id) else {
            return Err(conversation::not_found(item_id));
        };
        let Body::Message {
            role: Role::Assistant,
            audio: true,
            ..
        } = item.body
        else {
            return Err(invalid(
                "item_id",
                "only an assistant's audio can be truncated".into(),
            ));
        };
        let recent = self.recent.iter().find(|r| r.message_id() == Some(item_id));
        let audio_ms = recent.map_or(0.0, Response::audio_ms);
        if audio_end_ms as f64 > audio_ms + 1.0 {
            return Err(invalid(
                "audio_end_ms",
                format!("the item's audio is {} ms long", audio_ms as u64),
            ));
        }
        let heard = recent
            .map(|r| r.heard(audio_end_ms as f64))
            .unwrap_or_default();
        if let Some(item) = self.conversation.get_mut(item_id) {
            item.body = Body::Message {
                role: Role::Assistant,
                text: heard,
                audio: true,
            };
            item.complete = false;
        }
        let truncated = events::event(
            "conversation.item.truncated",
            json!({"item_id": item_id, "content_index": 0, "audio_end_ms": audio_end_ms}),
        );
        self.emit(truncated)
            .await
            .map_err(|_| ApiError::internal("gone"))
    }

    /// `response.create` (or a detected turn, `params` null): the model is asked with
    /// the conversation (or the response's own `input`).
    async fn create_response(&mut self, params: Value, event_id: Option<&str>) -> Result<(), Stop> {
        let (plan, response) =
            match plan::plan(&self.session, &self.conversation, self.beta, &params) {
                Ok(planned) => planned,
                Err(error) => return self.refuse(&error, event_id).await,
            };
        self.started = true;
        self.emit(response.created()).await?;
        let (task, pieces) = respond::start(self.products.clone(), self.principal.clone(), plan);
        metrics::counter!("scaigrid_realtime_responses_total").increment(1);
        self.active = Some(Active {
            response,
            task,
            pieces,
            truncated: false,
            failed: None,
        });
        Ok(())
    }

    /// What the response under way produced.
    async fn piece(&mut self, piece: Option<Piece>) -> Result<(), Stop> {
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        let conversation = &mut self.conversation;
        let out = match piece {
            Some(Piece::Text(text)) => active.response.text(conversation, &text),
            Some(Piece::Audio(audio)) => {
                active.response.audio(conversation, &audio, Instant::now())
            }
            Some(Piece::Spoken(characters)) => {
                active.response.spoken(characters);
                Vec::new()
            }
            Some(Piece::ToolCall {
                index,
                call_id,
                name,
            }) => active
                .response
                .tool_call(conversation, index, &call_id, &name),
            Some(Piece::ToolArguments { index, delta }) => {
                active.response.tool_arguments(index, &delta)
            }
            Some(Piece::Usage(usage)) => {
                active.response.set_usage(&usage);
                Vec::new()
            }
            Some(Piece::Truncated) => {
                active.truncated = true;
                Vec::new()
            }
            Some(Piece::Failed(error)) => {
                active.failed = Some(error);
                Vec::new()
            }
            Some(Piece::Finished) | None => {
                let ending = match (active.failed.take(), active.truncated) {
                    (Some(error), _) => Ending::Failed(error),
                    (None, true) => Ending::Incomplete,
                    (None, false) => Ending::Completed,
                };
                if let Ending::Failed(error) = &ending {
                    let error = events::error(error, None);
                    self.emit(error).await?;
                }
                return self.finish_active(ending, None).await.map_err(Stop::Close);
            }
        };
        self.emit_all(out).await
    }

    /// Cancels the response under way; its message keeps what was heard (played in
    /// real time from its first audio).
    async fn cancel(&mut self, reason: &'static str) -> ApiResult<()> {
        let played = self.active.as_ref().map(|active| {
            let since = active
                .response
                .first_audio
                .map_or(0.0, |first| first.elapsed().as_secs_f64() * 1000.0);
            since.min(active.response.audio_ms())
        });
        self.finish_active(Ending::Cancelled(reason), played).await
    }

    async fn finish_active(&mut self, ending: Ending, played: Option<f64>) -> ApiResult<()> {
        let Some(mut active) = self.active.take() else {
            return Ok(());
        };
        active.task.abort();
        let out = active
            .response
            .finish(&mut self.conversation, &ending, played);
        self.recent.push_back(active.response);
        if self.recent.len() > RECENT {
            self.recent.pop_front();
        }
        self.emit_all(out)
            .await
            .map_err(|_| ApiError::internal("gone"))
    }
}

async fn recv_from(ears: &mut Option<Peer>) -> Option<Message> {
    match ears {
        Some(peer) => peer.from.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_piece(active: &mut Option<Active>) -> Option<Piece> {
    match active {
        Some(active) => active.pieces.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(until: Option<tokio::time::Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}
