//! A ScaiEcho stream spoken in OpenAI's Realtime protocol (a transcription session):
//! this link sits between the WebSocket and the stream session, as Deepgram's does.
//!
//! In: `session.update` before any audio becomes the stream's `open` (format, language,
//! turn detection as the endpointer's pause); `input_audio_buffer.append` is decoded
//! from base64 into binary audio (in pieces the session takes); `.commit` ends the
//! turn now (`flush`); `.clear` ends it and drops the utterances that began before it
//! (by the stream clock of the audio appended). Out: `session.created`
//! first, then per utterance (an item) `input_audio_buffer.speech_started` with its first
//! transcript, `conversation.item.input_audio_transcription.delta` for the words two
//! hypotheses in a row agree on (so partials only grow), and at its final
//! `speech_stopped`, `committed`, `conversation.item.added`, the last delta, `completed`
//! (with the audio's duration as usage) and `conversation.item.done`. Errors are
//! `error` events; the fatal ones are followed by the close code of the error table.

use std::collections::{HashMap, VecDeque};

use axum::extract::ws::Message;
use serde_json::{Value, json};

use super::events::{self, ClientEvent, Format, Session, Stabilizer};
use crate::error::{ApiError, ErrorCode};
use crate::scaiecho::stream::protocol::{Delta, Sent};
use crate::ws::{End, Link};

/// Audio handed to the stream session per binary frame (its frame limit is larger).
const PIECE: usize = 64 * 1024;

/// One utterance of the stream: a conversation item.
#[derive(Default)]
struct Item {
    id: String,
    started: bool,
    words: Stabilizer,
}

pub struct RealtimeLink<L> {
    inner: L,
    session: Session,
    /// The beta protocol's names (`transcription_session.*`, `conversation.item.created`).
    beta: bool,
    greeted: bool,
    opened: bool,
    /// Frames for the stream session before the socket is read again.
    pending: VecDeque<Message>,
    items: HashMap<u64, Item>,
    previous_item: Option<String>,
    /// Utterances that began before this stream second were cleared: dropped.
    cleared_until: f64,
    /// Audio bytes appended in all (the stream's clock) and since the last final (a
    /// commit of nothing is an error).
    appended_total: usize,
    appended: usize,
}

impl<L: Link> RealtimeLink<L> {
    pub fn new(inner: L, beta: bool) -> RealtimeLink<L> {
        RealtimeLink {
            inner,
            session: Session::default(),
            beta,
            greeted: false,
            opened: false,
            pending: VecDeque::new(),
            items: HashMap::new(),
            previous_item: None,
            cleared_until: 0.0,
            appended_total: 0,
            appended: 0,
        }
    }

    async fn emit(&mut self, value: Value) -> Result<(), End> {
        self.inner
            .send(Message::Text(value.to_string().into()))
            .await
    }

    fn session_event(&self, what: &str) -> Value {
        let kind = match self.beta {
            true => format!("transcription_session.{what}"),
            false => format!("session.{what}"),
        };
        events::event(&kind, json!({"session": self.session.describe()}))
    }

    /// A client event, answered where it is the link's to answer; `Some` is what the
    /// stream session is handed.
    async fn client(&mut self, text: &str) -> Result<Option<Message>, End> {
        let event_id = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v["event_id"].as_str().map(str::to_owned));
        let event = match events::parse(text) {
            Ok(event) => event,
            Err(error) => {
                self.emit(events::error(&error, event_id.as_deref()))
                    .await?;
                return Ok(None);
            }
        };
        match event {
            ClientEvent::SessionUpdate(update) => {
                if text.contains("\"transcription_session.update\"")
                    || update.get("input_audio_format").is_some()
                {
                    self.beta = true;
                }
                let mut next = self.session.clone();
                let applied = next.update(&update).and_then(|()| {
                    let changed = next.format != self.session.format
                        || next.language != self.session.language
                        || next.turn != self.session.turn;
                    match self.opened && changed {
                        true => Err(ApiError::invalid(
                            "the audio format, language and turn detection are fixed once audio \
                             has come; open a new session to change them",
                        )
                        .with_field("param", "session")),
                        false => Ok(()),
                    }
                });
                match applied {
                    Ok(()) => {
                        self.session = next;
                        let updated = self.session_event("updated");
                        self.emit(updated).await?;
                    }
                    Err(error) => {
                        self.emit(events::error(&error, event_id.as_deref()))
                            .await?
                    }
                }
                Ok(None)
            }
            ClientEvent::Append(audio) => {
                self.appended += audio.len();
                self.appended_total += audio.len();
                let mut pieces = audio
                    .chunks(PIECE)
                    .map(|p| Message::Binary(p.to_vec().into()));
                let first = pieces.next();
                self.pending.extend(pieces);
                Ok(first)
            }
            ClientEvent::Commit => {
                if self.appended == 0 {
                    let error = ApiError::invalid(
                        "the input audio buffer is empty: append audio before committing it",
                    )
                    .with_field("param", "input_audio_buffer");
                    self.emit(events::error(&error, event_id.as_deref()))
                        .await?;
                    return Ok(None);
                }
                Ok(Some(Message::Text(r#"{"type":"flush"}"#.into())))
            }
            ClientEvent::Clear => {
                let bytes_per_second = match self.session.format {
                    Format::Pcm24k => 48_000.0,
                    Format::Pcmu | Format::Pcma => 8_000.0,
                };
                self.cleared_until = self.appended_total as f64 / bytes_per_second;
                self.appended = 0;
                self.emit(events::event("input_audio_buffer.cleared", json!({})))
                    .await?;
                Ok(Some(Message::Text(r#"{"type":"flush"}"#.into())))
            }
        }
    }

    /// A ScaiEcho frame as the events it becomes.
    fn translate(&mut self, text: &str) -> Vec<Value> {
        match Sent::read(text) {
            Sent::Delta(delta) => self.delta(&delta),
            Sent::Error { code, message, .. } => {
                let code = ErrorCode::ALL
                    .iter()
                    .find(|c| c.as_str() == code)
                    .copied()
                    .unwrap_or(ErrorCode::INTERNAL_ERROR);
                vec![events::error(&ApiError::new(code, message), None)]
            }
            // `ready` (the session was announced already) and `done`.
            Sent::Done { .. } | Sent::Other => Vec::new(),
        }
    }

    fn delta(&mut self, delta: &Delta) -> Vec<Value> {
        if delta.start < self.cleared_until {
            if delta.is_final {
                self.items.remove(&delta.utterance);
            }
            return Vec::new();
        }
        let mut out = Vec::new();
        let item = self.items.entry(delta.utterance).or_insert_with(|| Item {
            id: format!("item_{}", uuid::Uuid::now_v7().simple()),
            ..Item::default()
        });
        let item_id = item.id.clone();
        if !item.started {
            item.started = true;
            out.push(events::event(
                "input_audio_buffer.speech_started",
                json!({"audio_start_ms": (delta.start * 1000.0) as u64, "item_id": item_id}),
            ));
        }
        let piece = |text: String| {
            events::event(
                "conversation.item.input_audio_transcription.delta",
                json!({"item_id": item_id, "content_index": 0, "delta": text}),
            )
        };
        if !delta.is_final {
            if let Some(text) = item.words.interim(&delta.text) {
                out.push(piece(text));
            }
            return out;
        }
        let added = item.words.finish(&delta.text);
        self.items.remove(&delta.utterance);
        self.appended = 0;
        let previous = self.previous_item.replace(item_id.clone());
        let transcript = delta.text.trim();
        let user_item = |transcript: Option<&str>, status: &str| {
            json!({"id": item_id, "type": "message", "object": "realtime.item", "role": "user",
                "status": status, "content": [{"type": "input_audio", "transcript": transcript}]})
        };
        out.push(events::event(
            "input_audio_buffer.speech_stopped",
            json!({"audio_end_ms": (delta.end * 1000.0) as u64, "item_id": item_id}),
        ));
        out.push(events::event(
            "input_audio_buffer.committed",
            json!({"item_id": item_id, "previous_item_id": previous}),
        ));
        let added_kind = match self.beta {
            true => "conversation.item.created",
            false => "conversation.item.added",
        };
        out.push(events::event(
            added_kind,
            json!({"item": user_item(None, "in_progress"), "previous_item_id": previous}),
        ));
        if let Some(text) = added {
            out.push(piece(text));
        }
        out.push(events::event(
            "conversation.item.input_audio_transcription.completed",
            json!({"item_id": item_id, "content_index": 0, "transcript": transcript,
                "usage": {"type": "duration", "seconds": ((delta.end - delta.start) * 1000.0).round() / 1000.0}}),
        ));
        if !self.beta {
            out.push(events::event(
                "conversation.item.done",
                json!({"item": user_item(Some(transcript), "completed"), "previous_item_id": previous}),
            ));
        }
        out
    }
}

impl<L: Link> Link for RealtimeLink<L> {
    async fn recv(&mut self) -> Option<Message> {
        if !self.greeted {
            self.greeted = true;
            let created = self.session_event("created");
            if self.emit(created).await.is_err() {
                return None;
            }
        }
        loop {
            if let Some(message) = self.pending.pop_front() {
                return Some(message);
            }
            let message = self.inner.recv().await?;
            let handed = match message {
                Message::Text(text) => match self.client(&text).await {
                    Ok(handed) => handed,
                    Err(_) => return None,
                },
                Message::Binary(_) => {
                    let error = ApiError::invalid(
                        "audio goes in input_audio_buffer.append events (base64), not binary frames",
                    );
                    if self.emit(events::error(&error, None)).await.is_err() {
                        return None;
                    }
                    None
                }
                other => return Some(other),
            };
            // The stream session's first frame is its `open`: the session as set so far.
            if !self.opened && (handed.is_some() || !self.pending.is_empty()) {
                self.opened = true;
                if let Some(handed) = handed {
                    self.pending.push_front(handed);
                }
                return Some(Message::Text(self.session.open_frame().into()));
            }
            if let Some(handed) = handed {
                return Some(handed);
            }
        }
    }

    async fn send(&mut self, message: Message) -> Result<(), End> {
        match message {
            Message::Text(text) => {
                for value in self.translate(&text) {
                    self.emit(value).await?;
                }
                Ok(())
            }
            other => self.inner.send(other).await,
        }
    }
}
