//! A response being made: the gateway's chat model answers the conversation (streamed;
//! its rate limits, budgets, firewall and accounting apply as to any chat call) and,
//! when the answer is spoken, a ScaiSpeak stream session speaks its text as it comes.
//! What they produce comes back to the realtime session as [`Piece`]s, in order.
//!
//! The voice opens while the model is asked (both before the first token), and takes
//! the text token by token: it speaks each clause as soon as the clause is complete,
//! so the first audio follows the first clause, not the whole answer. Dropping the
//! task (a barge-in, `response.cancel`) ends both: the chat call settles what it used,
//! the voice session records what it spoke.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::Products;
use super::config::Format;
use super::pipe::{self, Peer};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::chat::{self, Reply};
use crate::gateway::sse;
use crate::ratelimit::Dimension;
use crate::scaispeak::stream as speak;

/// Characters per text frame to the voice (well under `inline_text_chars`).
const TEXT_FRAME_CHARS: usize = 256;
/// Audio frames (20 ms each) joined into one `output_audio.delta` at most.
const FRAMES_PER_DELTA: usize = 10;

/// What a response produced, in order.
#[derive(Debug)]
pub enum Piece {
    Text(String),
    /// Audio in the session's output format.
    Audio(Vec<u8>),
    /// The voice finished a clause of this many characters.
    Spoken(usize),
    ToolCall {
        index: usize,
        call_id: String,
        name: String,
    },
    ToolArguments {
        index: usize,
        delta: String,
    },
    Usage(Value),
    /// The model stopped at the most output tokens.
    Truncated,
    Failed(ApiError),
    /// Nothing more comes.
    Finished,
}

/// What to ask and how to say it.
pub struct Plan {
    /// The chat request (`model`, `messages`, tools ...), not yet streamed.
    pub body: Value,
    pub speech: Option<Speech>,
}

pub struct Speech {
    pub voice: String,
    pub speed: f32,
    pub format: Format,
}

/// Starts a response; its pieces arrive on the receiver, the last one `Finished`.
/// Aborting the handle stops it.
pub fn start(
    products: Arc<Products>,
    principal: Arc<Principal>,
    plan: Plan,
) -> (tokio::task::JoinHandle<()>, mpsc::Receiver<Piece>) {
    let (tx, rx) = mpsc::channel(64);
    let span = tracing::info_span!("response");
    let task = tokio::spawn(
        async move {
            if let Err(error) = respond(&products, principal, plan, &tx).await {
                let _ = tx.send(Piece::Failed(error)).await;
            }
            let _ = tx.send(Piece::Finished).await;
        }
        .instrument(span),
    );
    (task, rx)
}

async fn respond(
    products: &Arc<Products>,
    principal: Arc<Principal>,
    plan: Plan,
    tx: &mpsc::Sender<Piece>,
) -> ApiResult<()> {
    products
        .gate
        .limits
        .admit(&principal, &[Dimension::Tokens])
        .await?;
    let format = plan.speech.as_ref().map(|speech| speech.format);
    let voice = async {
        match plan.speech {
            Some(speech) => open_voice(products, principal.clone(), speech)
                .await
                .map(Some),
            None => Ok(None),
        }
    };
    let mut body = plan.body;
    body["stream"] = true.into();
    body["stream_options"] = json!({"include_usage": true});
    let bytes = serde_json::to_vec(&body).map_err(ApiError::internal)?;
    let asked = async {
        let admitted = products.gateway.admit()?;
        chat::complete(
            products.gateway.clone(),
            principal.clone(),
            (bytes.into(), false),
            admitted,
        )
        .await
    };
    let (voice, reply) = tokio::join!(voice, asked);
    let (reply, mut voice) = (reply?, voice?);
    let mut answer = Answer::default();
    let mut events = match reply {
        Reply::Streaming { events, .. } => events,
        // An answer that came whole (a cached one): one chunk of it all.
        Reply::Answered { body, .. } => {
            let (sender, events) = mpsc::channel(1);
            let _ = sender.try_send(sse::data(&whole_as_chunk(&body).to_string()).into());
            events
        }
    };
    let mut reader = sse::Reader::default();
    let mut chat_done = false;
    let mut voice_done = voice.is_none();
    while !(chat_done && voice_done) {
        tokio::select! {
            bytes = events.recv(), if !chat_done => {
                let Some(bytes) = bytes else {
                    chat_done = true;
                    if let Some(peer) = &voice {
                        let _ = peer.to.send(Message::Text(r#"{"type":"close"}"#.into())).await;
                    }
                    continue;
                };
                let read = reader
                    .push(&bytes)
                    .map_err(|e| ApiError::new(ErrorCode::BACKEND_ERROR, e))?;
                for event in read {
                    for piece in answer.event(&event)? {
                        if let (Piece::Text(text), Some(peer)) = (&piece, &voice) {
                            speak(peer, text).await;
                        }
                        send(tx, piece).await?;
                    }
                }
            }
            heard = next_from_voice(&mut voice, format), if !voice_done => {
                match heard? {
                    Some(pieces) => {
                        for piece in pieces {
                            send(tx, piece).await?;
                        }
                    }
                    None => voice_done = true,
                }
            }
        }
    }
    Ok(())
}

/// Text for the voice, in frames it takes (a whole answer can come at once).
async fn speak(peer: &Peer, text: &str) {
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(TEXT_FRAME_CHARS) {
        let piece: String = piece.iter().collect();
        let frame = json!({"type": "text", "text": piece}).to_string();
        if peer.to.send(Message::Text(frame.into())).await.is_err() {
            return;
        }
    }
}

/// Hands a piece to the session; `Err` when it is gone (nothing more is wanted).
async fn send(tx: &mpsc::Sender<Piece>, piece: Piece) -> ApiResult<()> {
    tx.send(piece)
        .await
        .map_err(|_| ApiError::internal("the realtime session is gone"))
}

/// A ScaiSpeak stream session for this response, on a pipe: PCM at the rate of the
/// session's output format, with clause marks.
async fn open_voice(
    products: &Arc<Products>,
    principal: Arc<Principal>,
    speech: Speech,
) -> ApiResult<Peer> {
    let state = &products.scaispeak;
    speak::admit(state, &principal).await?;
    let slot = speak::take_slot(state, &principal.tenant_id).await?;
    let open = json!({"type": "open", "voice": speech.voice, "speed": speech.speed,
        "output": {"codec": "pcm_s16le", "sample_rate": speech.format.sample_rate()}});
    let open = speak::parse_open(&open.to_string())?;
    let mut session = speak::Session::open(state, principal, slot, open, Duration::ZERO).await?;
    session.mark_sentences();
    let (mut pipe, peer) = pipe::pipe();
    tokio::spawn(
        async move {
            let outcome = session.run_to_end(&mut pipe).await;
            crate::ws::finish(&mut pipe, outcome).await;
        }
        .in_current_span(),
    );
    Ok(peer)
}

/// What the voice sent next, as pieces (consecutive audio frames joined); `None` once
/// it finished.
async fn next_from_voice(
    voice: &mut Option<Peer>,
    format: Option<Format>,
) -> ApiResult<Option<Vec<Piece>>> {
    let Some(peer) = voice else {
        return Ok(None);
    };
    let Some(first) = peer.from.recv().await else {
        return Ok(None);
    };
    let mut messages = vec![first];
    while messages.len() < FRAMES_PER_DELTA
        && matches!(messages.last(), Some(Message::Binary(_)))
        && let Ok(next) = peer.from.try_recv()
    {
        messages.push(next);
    }
    let mut pieces = Vec::new();
    let mut audio = Vec::new();
    for message in messages {
        match message {
            Message::Binary(frame) => audio.extend_from_slice(&frame),
            Message::Text(text) => {
                if !audio.is_empty() {
                    pieces.push(Piece::Audio(encode(std::mem::take(&mut audio), format)));
                }
                let frame: Value = serde_json::from_str(&text).unwrap_or_default();
                match frame["type"].as_str() {
                    Some("mark") => pieces.push(Piece::Spoken(
                        frame["characters"].as_u64().unwrap_or_default() as usize,
                    )),
                    Some("error") => return Err(voice_error(&frame)),
                    // `ready`, and `done` (its close follows).
                    _ => {}
                }
            }
            Message::Close(_) => {
                *voice = None;
                break;
            }
            _ => {}
        }
    }
    if !audio.is_empty() {
        pieces.push(Piece::Audio(encode(audio, format)));
    }
    Ok(Some(pieces))
}

/// The voice's PCM in the session's output format.
fn encode(pcm: Vec<u8>, format: Option<Format>) -> Vec<u8> {
    match format {
        Some(Format::Pcmu) => media::stream::g711_compress(media::stream::Law::Mu, &pcm),
        Some(Format::Pcma) => media::stream::g711_compress(media::stream::Law::A, &pcm),
        _ => pcm,
    }
}

fn voice_error(frame: &Value) -> ApiError {
    let code = frame["code"].as_str().unwrap_or_default();
    let code = ErrorCode::named_or(code, ErrorCode::INTERNAL_ERROR);
    ApiError::new(code, frame["message"].as_str().unwrap_or("speech failed"))
}

/// The chat stream read so far: which tool calls began.
#[derive(Default)]
struct Answer {
    /// Tool calls by the chat's index: begun (`true`) or waiting for a name.
    calls: HashMap<usize, bool>,
}

impl Answer {
    /// One server-sent event of the chat stream as pieces.
    fn event(&mut self, event: &sse::Event) -> ApiResult<Vec<Piece>> {
        if event.comment_only || event.data.trim() == "[DONE]" {
            return Ok(Vec::new());
        }
        let data: Value = serde_json::from_str(&event.data).map_err(|e| {
            ApiError::new(
                ErrorCode::BACKEND_ERROR,
                format!("a chat chunk is not JSON: {e}"),
            )
        })?;
        if event.name.as_deref() == Some("error") {
            let error = &data["error"];
            let code = error["code"].as_str().unwrap_or_default();
            let code = ErrorCode::named_or(code, ErrorCode::BACKEND_ERROR);
            return Err(ApiError::new(
                code,
                error["message"].as_str().unwrap_or("the model failed"),
            ));
        }
        Ok(self.chunk(&data))
    }

    fn chunk(&mut self, chunk: &Value) -> Vec<Piece> {
        let mut pieces = Vec::new();
        let choice = &chunk["choices"][0];
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            pieces.push(Piece::Text(text.to_owned()));
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap_or_default() as usize;
            let begun = self.calls.entry(index).or_default();
            if !*begun && let Some(name) = call["function"]["name"].as_str() {
                *begun = true;
                let call_id = call["id"].as_str().map_or_else(
                    || format!("call_{}", uuid::Uuid::now_v7().simple()),
                    str::to_owned,
                );
                pieces.push(Piece::ToolCall {
                    index,
                    call_id,
                    name: name.to_owned(),
                });
            }
            if let Some(arguments) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                pieces.push(Piece::ToolArguments {
                    index,
                    delta: arguments.to_owned(),
                });
            }
        }
        if choice["finish_reason"] == "length" {
            pieces.push(Piece::Truncated);
        }
        if chunk["usage"].is_object() {
            pieces.push(Piece::Usage(chunk["usage"].clone()));
        }
        pieces
    }
}

/// A whole chat answer as one streamed chunk.
fn whole_as_chunk(body: &serde_json::Map<String, Value>) -> Value {
    let choice = &body.get("choices").cloned().unwrap_or_default()[0];
    let message = &choice["message"];
    let calls: Vec<Value> = message["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(index, call)| {
            let mut call = call.clone();
            call["index"] = index.into();
            call
        })
        .collect();
    json!({
        "choices": [{"delta": {"content": message["content"], "tool_calls": calls},
            "finish_reason": choice["finish_reason"]}],
        "usage": body.get("usage").cloned().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &Value) -> sse::Event {
        sse::Event {
            name: None,
            data: data.to_string(),
            comment_only: false,
        }
    }

    #[test]
    fn chat_chunks_become_text_tool_calls_and_usage() {
        let mut answer = Answer::default();
        let pieces = answer
            .event(&event(&json!({"choices": [{"delta": {"content": "Hi"}}]})))
            .unwrap();
        assert!(matches!(&pieces[..], [Piece::Text(t)] if t == "Hi"));
        let pieces = answer.event(&event(&json!({"choices": [{"delta": {"tool_calls": [
                {"index": 0, "id": "call_9", "function": {"name": "get_weather", "arguments": ""}}]}}]})))
            .unwrap();
        assert!(
            matches!(&pieces[..], [Piece::ToolCall { index: 0, call_id, name }] if call_id == "call_9" && name == "get_weather")
        );
        let pieces = answer
            .event(&event(&json!({"choices": [{"delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": "{\"city\""}}]}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 3}})))
            .unwrap();
        assert!(matches!(
            &pieces[..],
            [
                Piece::ToolArguments { index: 0, .. },
                Piece::Truncated,
                Piece::Usage(_)
            ]
        ));
        let done = sse::Event {
            name: None,
            data: "[DONE]".into(),
            comment_only: false,
        };
        assert!(answer.event(&done).unwrap().is_empty());
        let failed = sse::Event {
            name: Some("error".into()),
            data:
                json!({"status": "error", "error": {"code": "BUDGET_EXCEEDED", "message": "spent"}})
                    .to_string(),
            comment_only: false,
        };
        let error = answer.event(&failed).err().unwrap();
        assert_eq!(error.code, ErrorCode::BUDGET_EXCEEDED);
        let junk = sse::Event {
            name: None,
            data: "{oops".into(),
            comment_only: false,
        };
        assert_eq!(
            answer.event(&junk).err().unwrap().code,
            ErrorCode::BACKEND_ERROR
        );
    }

    #[test]
    fn a_whole_answer_reads_as_one_chunk() {
        let body = json!({"choices": [{"message": {"content": "Sure.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 1, "completion_tokens": 2}});
        let chunk = whole_as_chunk(body.as_object().unwrap());
        let pieces = Answer::default().chunk(&chunk);
        assert!(matches!(
            &pieces[..],
            [
                Piece::Text(_),
                Piece::ToolCall { .. },
                Piece::ToolArguments { .. },
                Piece::Usage(_)
            ]
        ));
    }

    #[test]
    fn telephone_output_is_companded() {
        let pcm = media::encode::pcm_s16le(&[0.0, 0.5, -0.5]);
        assert_eq!(encode(pcm.clone(), Some(Format::Pcmu)).len(), 3);
        assert_eq!(encode(pcm.clone(), Some(Format::Pcm24k)), pcm);
    }
}
