//! The input side of a Realtime session: the client's audio-buffer events as ScaiEcho
//! stream frames, and the stream's `delta` frames as Realtime events. Pure: frames and
//! JSON in, frames and JSON out (the session does the I/O).
//!
//! Per utterance (a conversation item): `input_audio_buffer.speech_started` with its
//! first transcript, `conversation.item.input_audio_transcription.delta` for the words
//! two hypotheses in a row agree on (so partials only grow), and at its final
//! `speech_stopped`, `committed`, `conversation.item.added` (beta: `.created`), the last
//! delta, `completed` (with the audio's duration as usage) and `conversation.item.done`.

use std::collections::HashMap;

use axum::extract::ws::Message;
use serde_json::{Value, json};

use super::config::Format;
use super::events::{self, Stabilizer};
use crate::error::{ApiError, ErrorCode};
use crate::scaiecho::stream::protocol::{Delta, Sent};

/// Audio handed to the stream session per binary frame (its frame limit is larger).
const PIECE: usize = 64 * 1024;

/// What the session must act on besides sending the events.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    /// The user began speaking (a barge-in, when a response is playing).
    SpeechStarted,
    /// An utterance ended: its item, transcript, and where its speech ended (seconds
    /// of the stream).
    Completed {
        item_id: String,
        transcript: String,
        end: f64,
    },
}

/// One utterance of the stream: a conversation item.
#[derive(Default)]
struct Item {
    id: String,
    started: bool,
    words: Stabilizer,
}

pub struct Transcript {
    beta: bool,
    items: HashMap<u64, Item>,
    /// Utterances that began before this stream second were cleared: dropped.
    cleared_until: f64,
    /// Audio bytes appended in all (the stream's clock) and since the last final (a
    /// commit of nothing is an error).
    appended_total: usize,
    appended: usize,
    /// Commits whose final has not come yet.
    pub awaiting: usize,
}

impl Transcript {
    pub fn new(beta: bool) -> Transcript {
        Transcript {
            beta,
            items: HashMap::new(),
            cleared_until: 0.0,
            appended_total: 0,
            appended: 0,
            awaiting: 0,
        }
    }

    pub fn set_beta(&mut self, beta: bool) {
        self.beta = beta;
    }

    /// `input_audio_buffer.append`: binary frames for the stream session.
    pub fn append(&mut self, audio: &[u8]) -> Vec<Message> {
        self.appended += audio.len();
        self.appended_total += audio.len();
        audio
            .chunks(PIECE)
            .map(|p| Message::Binary(p.to_vec().into()))
            .collect()
    }

    /// `input_audio_buffer.commit`: the stream's `flush`, or an error when nothing was
    /// appended since the last turn.
    pub fn commit(&mut self) -> Result<Message, ApiError> {
        if self.appended == 0 {
            return Err(ApiError::invalid(
                "the input audio buffer is empty: append audio before committing it",
            )
            .with_field("param", "input_audio_buffer"));
        }
        self.awaiting += 1;
        Ok(Message::Text(r#"{"type":"flush"}"#.into()))
    }

    /// Seconds of audio appended in all (the stream's clock).
    pub fn clock(&self, format: Format) -> f64 {
        self.appended_total as f64 / format.bytes_per_second()
    }

    /// `input_audio_buffer.clear`: utterances that began before now are dropped; the
    /// stream is flushed so the next one starts fresh.
    pub fn clear(&mut self, format: Format) -> Message {
        self.cleared_until = self.appended_total as f64 / format.bytes_per_second();
        self.appended = 0;
        Message::Text(r#"{"type":"flush"}"#.into())
    }

    /// A frame of the stream session as the events it becomes, and what it means.
    pub fn frame(&mut self, text: &str) -> (Vec<Value>, Option<Heard>) {
        match Sent::read(text) {
            Sent::Delta(delta) => self.delta(&delta),
            Sent::SpeechStarted { utterance, start } => {
                if start < self.cleared_until {
                    return (Vec::new(), None);
                }
                let item = self.item(utterance);
                item.started = true;
                let started = events::event(
                    "input_audio_buffer.speech_started",
                    json!({"audio_start_ms": (start * 1000.0) as u64, "item_id": item.id}),
                );
                (vec![started], Some(Heard::SpeechStarted))
            }
            Sent::Error { code, message, .. } => {
                let code = ErrorCode::named_or(&code, ErrorCode::INTERNAL_ERROR);
                (
                    vec![events::error(&ApiError::new(code, message), None)],
                    None,
                )
            }
            // `ready` (the session was announced already) and `done`.
            Sent::Done { .. } | Sent::Other => (Vec::new(), None),
        }
    }

    fn delta(&mut self, delta: &Delta) -> (Vec<Value>, Option<Heard>) {
        if delta.start < self.cleared_until {
            if delta.is_final {
                self.items.remove(&delta.utterance);
                self.awaiting = self.awaiting.saturating_sub(1);
            }
            return (Vec::new(), None);
        }
        let mut out = Vec::new();
        let mut heard = None;
        let item = self.item(delta.utterance);
        let item_id = item.id.clone();
        if !item.started {
            item.started = true;
            heard = Some(Heard::SpeechStarted);
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
            return (out, heard);
        }
        let added = item.words.finish(&delta.text);
        self.items.remove(&delta.utterance);
        self.appended = 0;
        self.awaiting = self.awaiting.saturating_sub(1);
        let transcript = delta.text.trim();
        out.push(events::event(
            "input_audio_buffer.speech_stopped",
            json!({"audio_end_ms": (delta.end * 1000.0) as u64, "item_id": item_id}),
        ));
        // `previous_item_id`, the item's place in the conversation, is the session's
        // to fill in: it knows the conversation.
        out.push(events::event(
            "input_audio_buffer.committed",
            json!({"item_id": item_id}),
        ));
        out.push(events::event(
            self.added_kind(),
            json!({"item": user_item(&item_id, None, "in_progress")}),
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
                json!({"item": user_item(&item_id, Some(transcript), "completed")}),
            ));
        }
        let completed = Heard::Completed {
            item_id,
            transcript: transcript.to_owned(),
            end: delta.end,
        };
        (out, Some(completed))
    }

    /// The item of an utterance (made on its first frame).
    fn item(&mut self, utterance: u64) -> &mut Item {
        self.items.entry(utterance).or_insert_with(|| Item {
            id: format!("item_{}", uuid::Uuid::now_v7().simple()),
            ..Item::default()
        })
    }

    /// `conversation.item.added`, or the beta protocol's `conversation.item.created`.
    pub fn added_kind(&self) -> &'static str {
        match self.beta {
            true => "conversation.item.created",
            false => "conversation.item.added",
        }
    }
}

/// A user's spoken item as events show it.
fn user_item(id: &str, transcript: Option<&str>, status: &str) -> Value {
    json!({"id": id, "type": "message", "object": "realtime.item", "role": "user",
        "status": status, "content": [{"type": "input_audio", "transcript": transcript}]})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(utterance: u64, text: &str, is_final: bool, start: f64) -> String {
        json!({"type": "delta", "utterance": utterance, "text": text, "is_final": is_final,
            "start": start, "end": start + 1.5})
        .to_string()
    }

    #[test]
    fn an_utterance_becomes_an_item_whose_partials_only_grow() {
        let mut transcript = Transcript::new(false);
        assert!(transcript.commit().is_err(), "nothing appended");
        assert_eq!(transcript.append(&vec![0; PIECE + 1]).len(), 2);
        let (events, heard) = transcript.frame(&delta(0, "Ever tried", false, 0.5));
        assert_eq!(heard, Some(Heard::SpeechStarted));
        assert_eq!(events[0]["type"], "input_audio_buffer.speech_started");
        assert_eq!(events[0]["audio_start_ms"], 500);
        let (events, heard) = transcript.frame(&delta(0, "Ever tried, ever", false, 0.5));
        assert_eq!(heard, None);
        assert_eq!(events[0]["delta"], "Ever");
        let (events, heard) = transcript.frame(&delta(0, "Ever tried. Ever failed.", true, 0.5));
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "input_audio_buffer.speech_stopped",
                "input_audio_buffer.committed",
                "conversation.item.added",
                "conversation.item.input_audio_transcription.delta",
                "conversation.item.input_audio_transcription.completed",
                "conversation.item.done"
            ]
        );
        let Some(Heard::Completed {
            item_id,
            transcript: said,
            ..
        }) = heard
        else {
            panic!("{heard:?}")
        };
        assert_eq!(said, "Ever tried. Ever failed.");
        assert_eq!(events[0]["item_id"], item_id.as_str());
        assert!(transcript.commit().is_err(), "the turn took the audio");
    }

    #[test]
    fn the_vad_starts_an_item_before_its_first_transcript() {
        let mut transcript = Transcript::new(false);
        let started = json!({"type": "speech_started", "utterance": 0, "start": 0.25});
        let (events, heard) = transcript.frame(&started.to_string());
        assert_eq!(heard, Some(Heard::SpeechStarted));
        assert_eq!(events[0]["audio_start_ms"], 250);
        let item = events[0]["item_id"].clone();
        let (events, heard) = transcript.frame(&delta(0, "Hello there", false, 0.25));
        assert_eq!(heard, None, "announced once");
        assert!(
            events
                .iter()
                .all(|e| e["type"] != "input_audio_buffer.speech_started")
        );
        let (events, _) = transcript.frame(&delta(0, "Hello there.", true, 0.25));
        assert_eq!(events[0]["item_id"], item, "the same item");
    }

    #[test]
    fn cleared_utterances_are_dropped_and_errors_keep_their_code() {
        let mut transcript = Transcript::new(true);
        transcript.append(&[0; 48_000 * 2]);
        transcript.clear(Format::Pcm24k);
        let (events, heard) = transcript.frame(&delta(0, "gone", true, 1.0));
        assert!(events.is_empty() && heard.is_none());
        let (events, _) = transcript.frame(&delta(1, "kept", true, 2.5));
        assert!(
            events
                .iter()
                .any(|e| e["type"] == "conversation.item.created")
        );
        let error = json!({"type": "error", "code": "AUDIO_DECODE_FAILED", "message": "bad"});
        let (events, _) = transcript.frame(&error.to_string());
        assert_eq!(events[0]["error"]["code"], "AUDIO_DECODE_FAILED");
    }
}
