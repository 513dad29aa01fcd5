//! A ScaiEcho stream spoken in Deepgram's live protocol: this link sits between the
//! WebSocket and the stream session and translates both ways, so the session (VAD,
//! interim and final transcripts, diarization, limits, metering) is the one every other
//! stream runs.
//!
//! In: binary audio as it is; `KeepAlive` keeps the stream from idling out;
//! `Finalize` ends the current utterance (ScaiEcho's `flush`); `CloseStream` (or an
//! empty binary frame, Deepgram's older way) ends the audio (`close`). Out: `ready` is
//! not Deepgram's and is dropped; each `delta` is a `Results` (interims only with
//! `interim_results`); with `vad_events`, `SpeechStarted` comes when the VAD hears an
//! utterance begin (ScaiEcho's `speech_started`, or its first delta), and a final is followed by `UtteranceEnd` with `utterance_end_ms`;
//! `done` is the closing `Metadata`; `error` is Deepgram's `Error`.
//!
//! Where Deepgram's meaning and ScaiEcho's differ: a final ends an utterance the
//! endpointer closed on a pause (`speech_final: true`), unless a `Finalize` forced it
//! (`from_finalize: true`, `speech_final: false`); `UtteranceEnd` follows that final at
//! once instead of waiting `utterance_end_ms` of word-free audio.

use axum::extract::ws::{Message, Utf8Bytes};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::options::Listen;
use super::shape::{self, Facts, ResultsContext, Speakers};
use crate::scaiecho::stream::protocol::{Delta, Sent};
use crate::ws::{End, Link};

/// ScaiEcho's control frames the session takes.
const FLUSH: Utf8Bytes = Utf8Bytes::from_static(r#"{"type":"flush"}"#);
const CLOSE: Utf8Bytes = Utf8Bytes::from_static(r#"{"type":"close"}"#);

/// A client's text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    KeepAlive,
    Finalize,
    CloseStream,
    /// Anything else: its `type`, or what it is instead.
    Unknown(String),
}

/// What a client's text message is (Deepgram's `type`s are case-sensitive).
pub fn inbound(text: &str) -> Inbound {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return Inbound::Unknown("not JSON".to_owned());
    };
    match value["type"].as_str() {
        Some("KeepAlive") => Inbound::KeepAlive,
        Some("Finalize") => Inbound::Finalize,
        Some("CloseStream") => Inbound::CloseStream,
        Some(other) => Inbound::Unknown(other.chars().take(64).collect()),
        None => Inbound::Unknown("JSON without a `type`".to_owned()),
    }
}

pub struct DeepgramLink<L> {
    inner: L,
    options: Listen,
    request_id: String,
    created: String,
    audio: Sha256,
    speakers: Speakers,
    /// Utterances below this number have had their `SpeechStarted`.
    started: u64,
    /// A `Finalize` came and its final has not yet.
    finalizing: bool,
}

impl<L: Link> DeepgramLink<L> {
    pub fn new(inner: L, options: Listen, request_id: String) -> DeepgramLink<L> {
        let created = shape::now();
        DeepgramLink {
            inner,
            options,
            request_id,
            created,
            audio: Sha256::new(),
            speakers: Speakers::default(),
            started: 0,
            finalizing: false,
        }
    }

    async fn send_json(&mut self, value: &Value) -> Result<(), End> {
        self.inner
            .send(Message::Text(value.to_string().into()))
            .await
    }

    /// One ScaiEcho frame as the Deepgram messages it becomes.
    fn translate(&mut self, text: &str) -> Vec<Value> {
        match Sent::read(text) {
            Sent::Delta(delta) => self.delta(&delta),
            Sent::SpeechStarted { utterance, start } => match utterance >= self.started {
                true => {
                    self.started = utterance + 1;
                    vec![shape::speech_started(start)]
                }
                false => Vec::new(),
            },
            Sent::Done { audio_seconds } => {
                let sha256 = hex::encode(self.audio.clone().finalize());
                let facts = Facts {
                    request_id: &self.request_id,
                    sha256: &sha256,
                    created: &self.created,
                    duration: audio_seconds,
                    channels: self.options.channels,
                };
                vec![shape::stream_metadata(&facts)]
            }
            Sent::Error {
                code,
                message,
                request_id,
            } => vec![shape::error(&code, &message, request_id.as_deref())],
            // `ready` is ScaiEcho's own.
            Sent::Other => Vec::new(),
        }
    }

    fn delta(&mut self, delta: &Delta) -> Vec<Value> {
        let mut out = Vec::new();
        if delta.utterance >= self.started {
            self.started = delta.utterance + 1;
            if self.options.vad_events {
                out.push(shape::speech_started(delta.start));
            }
        }
        if !delta.is_final && !self.options.interim_results {
            return out;
        }
        let from_finalize = delta.is_final && std::mem::take(&mut self.finalizing);
        let context = ResultsContext {
            request_id: &self.request_id,
            punctuate: self.options.punctuate,
            speech_final: !from_finalize,
            from_finalize,
        };
        let speakers = self.options.diarize.then_some(&mut self.speakers);
        out.push(shape::results(delta, &context, speakers));
        if delta.is_final && self.options.utterance_end_ms.is_some() {
            let last = delta
                .words
                .as_ref()
                .and_then(|words| words.last())
                .map_or(delta.end, |word| word.end);
            out.push(shape::utterance_end(last));
        }
        out
    }
}

impl<L: Link> Link for DeepgramLink<L> {
    async fn recv(&mut self) -> Option<Message> {
        loop {
            let message = self.inner.recv().await?;
            return Some(match message {
                Message::Binary(bytes) if bytes.is_empty() => Message::Text(CLOSE),
                Message::Binary(bytes) => {
                    self.audio.update(&bytes);
                    Message::Binary(bytes)
                }
                Message::Text(text) => {
                    match inbound(&text) {
                        // Activity the session counts, and otherwise ignores.
                        Inbound::KeepAlive => Message::Pong(Default::default()),
                        Inbound::Finalize => {
                            self.finalizing = true;
                            Message::Text(FLUSH)
                        }
                        Inbound::CloseStream => Message::Text(CLOSE),
                        Inbound::Unknown(said) => {
                            // Said here, in Deepgram's words; the stream goes on.
                            let error = shape::error(
                                "INVALID_REQUEST",
                                &format!(
                                    "unknown message `{said}` (KeepAlive, Finalize and \
                                     CloseStream are; audio goes in binary frames)"
                                ),
                                Some(&self.request_id),
                            );
                            if self.send_json(&error).await.is_err() {
                                return None;
                            }
                            continue;
                        }
                    }
                }
                other => other,
            });
        }
    }

    async fn send(&mut self, message: Message) -> Result<(), End> {
        match message {
            Message::Text(text) => {
                for value in self.translate(&text) {
                    self.send_json(&value).await?;
                }
                Ok(())
            }
            other => self.inner.send(other).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_are_deepgrams_three_or_named_in_the_error() {
        assert_eq!(inbound(r#"{"type":"KeepAlive"}"#), Inbound::KeepAlive);
        assert_eq!(
            inbound(r#"{"type": "Finalize", "channel": 0}"#),
            Inbound::Finalize
        );
        assert_eq!(inbound(r#"{"type":"CloseStream"}"#), Inbound::CloseStream);
        assert_eq!(
            inbound(r#"{"type":"keepalive"}"#),
            Inbound::Unknown("keepalive".into())
        );
        assert_eq!(inbound("KeepAlive"), Inbound::Unknown("not JSON".into()));
        assert_eq!(
            inbound("{}"),
            Inbound::Unknown("JSON without a `type`".into())
        );
        let long = format!(r#"{{"type":"{}"}}"#, "x".repeat(10_000));
        assert!(matches!(inbound(&long), Inbound::Unknown(said) if said.len() == 64));
    }
}
