//! One response of a realtime session, as Realtime events: what the model wrote and the
//! voice spoke, the items that leaves in the conversation, and how it ended. Pure: the
//! session feeds it what came (text, audio, tool calls, marks) and sends what it returns.
//!
//! An answer is an assistant message item (spoken: `output_audio` with its transcript;
//! written: `output_text`); each tool call is a `function_call` item. When a response
//! is cut short (barge-in, `response.cancel`) its message keeps only the transcript of
//! the audio that was heard, found from the voice's marks (the characters each clause
//! spoke and where its audio ended).

use std::time::Instant;

use base64::Engine;
use serde_json::{Value, json};

use super::config::Format;
use super::conversation::{Body, Conversation, Item, Role, new_id};
use super::events;
use crate::error::ApiError;

/// How a response ended.
#[derive(Debug)]
pub enum Ending {
    Completed,
    /// `turn_detected` or `client_cancelled`.
    Cancelled(&'static str),
    /// Cut at the most output tokens.
    Incomplete,
    Failed(ApiError),
}

struct Output {
    item: Item,
    /// The chat's index of a tool call.
    call: Option<usize>,
}

pub struct Response {
    pub id: String,
    beta: bool,
    audio: bool,
    format: Format,
    /// Items go into the conversation (`conversation: "auto"`), else out of band.
    in_conversation: bool,
    metadata: Value,
    outputs: Vec<Output>,
    /// The assistant message's place in `outputs`, once it opened.
    message: Option<usize>,
    text: String,
    usage: Value,
    /// Audio sent, in milliseconds, and the marks: where each spoken clause's audio
    /// ended and the characters spoken by then.
    audio_ms: f64,
    marks: Vec<(f64, usize)>,
    spoken_chars: usize,
    pub first_audio: Option<Instant>,
}

impl Response {
    pub fn new(
        beta: bool,
        audio: bool,
        format: Format,
        in_conversation: bool,
        metadata: Value,
    ) -> Response {
        Response {
            id: format!("resp_{}", uuid::Uuid::now_v7().simple()),
            beta,
            audio,
            format,
            in_conversation,
            metadata,
            outputs: Vec::new(),
            message: None,
            text: String::new(),
            usage: Value::Null,
            audio_ms: 0.0,
            marks: Vec::new(),
            spoken_chars: 0,
            first_audio: None,
        }
    }

    fn name(&self, current: &'static str, beta: &'static str) -> &'static str {
        match self.beta {
            true => beta,
            false => current,
        }
    }

    fn event(&self, kind: &str, mut fields: Value) -> Value {
        fields["response_id"] = self.id.clone().into();
        events::event(kind, fields)
    }

    /// The response object of `response.created` and `response.done`.
    pub fn describe(&self, status: &str, details: &Value) -> Value {
        let modalities = match self.audio {
            true => json!(["audio"]),
            false => json!(["text"]),
        };
        let mut response = json!({
            "id": self.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": self.outputs.iter().map(|o| o.item.describe(self.beta)).collect::<Vec<_>>(),
            "conversation_id": if self.in_conversation { json!("conv_default") } else { Value::Null },
            "usage": self.usage,
            "metadata": self.metadata,
        });
        let key = self.name("output_modalities", "modalities");
        response[key] = modalities;
        response
    }

    pub fn created(&self) -> Value {
        events::event(
            "response.created",
            json!({"response": self.describe("in_progress", &Value::Null)}),
        )
    }

    /// An item of this response begins: `response.output_item.added`, and in the
    /// conversation `conversation.item.added` (beta: `.created`).
    fn open(
        &mut self,
        conversation: &mut Conversation,
        item: Item,
        call: Option<usize>,
    ) -> Vec<Value> {
        let index = self.outputs.len();
        let mut shown = item.describe(self.beta);
        shown["status"] = "in_progress".into();
        let mut out = vec![self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": shown}),
        )];
        if self.in_conversation {
            let previous = conversation.insert(item.clone(), None).ok().flatten();
            let kind = self.name("conversation.item.added", "conversation.item.created");
            out.push(events::event(
                kind,
                json!({"previous_item_id": previous, "item": shown}),
            ));
        }
        self.outputs.push(Output { item, call });
        out
    }

    /// The assistant message, opened on the first text or audio.
    fn message(&mut self, conversation: &mut Conversation) -> (usize, Vec<Value>) {
        if let Some(index) = self.message {
            return (index, Vec::new());
        }
        let item = Item::message(new_id(), Role::Assistant, String::new(), self.audio);
        let mut out = self.open(conversation, item, None);
        let index = self.outputs.len() - 1;
        self.message = Some(index);
        let part = match self.audio {
            true => json!({"type": "audio", "transcript": ""}),
            false => json!({"type": "text", "text": ""}),
        };
        let item_id = self.outputs[index].item.id.clone();
        out.push(self.event(
            "response.content_part.added",
            json!({"item_id": item_id, "output_index": index, "content_index": 0, "part": part}),
        ));
        (index, out)
    }

    /// Text the model wrote: the transcript (spoken) or the text (written).
    pub fn text(&mut self, conversation: &mut Conversation, delta: &str) -> Vec<Value> {
        let (index, mut out) = self.message(conversation);
        self.text.push_str(delta);
        let kind = match self.audio {
            true => self.name(
                "response.output_audio_transcript.delta",
                "response.audio_transcript.delta",
            ),
            false => self.name("response.output_text.delta", "response.text.delta"),
        };
        let item_id = self.outputs[index].item.id.clone();
        out.push(self.event(
            kind,
            json!({"item_id": item_id, "output_index": index, "content_index": 0, "delta": delta}),
        ));
        out
    }

    /// Audio the voice spoke, in the session's output format.
    pub fn audio(
        &mut self,
        conversation: &mut Conversation,
        bytes: &[u8],
        now: Instant,
    ) -> Vec<Value> {
        let (index, mut out) = self.message(conversation);
        self.first_audio.get_or_insert(now);
        self.audio_ms += bytes.len() as f64 * 1000.0 / self.format.bytes_per_second();
        let item_id = self.outputs[index].item.id.clone();
        let delta = base64::engine::general_purpose::STANDARD.encode(bytes);
        let kind = self.name("response.output_audio.delta", "response.audio.delta");
        out.push(self.event(
            kind,
            json!({"item_id": item_id, "output_index": index, "content_index": 0, "delta": delta}),
        ));
        out
    }

    /// The voice finished a clause of this many characters (its audio all sent).
    pub fn spoken(&mut self, characters: usize) {
        self.spoken_chars += characters;
        self.marks.push((self.audio_ms, self.spoken_chars));
    }

    /// The id of the response's message, once it opened.
    pub fn message_id(&self) -> Option<&str> {
        self.message
            .map(|index| self.outputs[index].item.id.as_str())
    }

    /// Milliseconds of audio sent so far.
    pub fn audio_ms(&self) -> f64 {
        self.audio_ms
    }

    /// The model called a tool (its chat `index`).
    pub fn tool_call(
        &mut self,
        conversation: &mut Conversation,
        index: usize,
        call_id: &str,
        name: &str,
    ) -> Vec<Value> {
        let item = Item {
            id: new_id(),
            body: Body::FunctionCall {
                call_id: call_id.to_owned(),
                name: name.to_owned(),
                arguments: String::new(),
            },
            complete: true,
        };
        self.open(conversation, item, Some(index))
    }

    /// More of a tool call's arguments.
    pub fn tool_arguments(&mut self, index: usize, delta: &str) -> Vec<Value> {
        let Some(at) = self.outputs.iter().position(|o| o.call == Some(index)) else {
            return Vec::new();
        };
        let output = &mut self.outputs[at];
        let Body::FunctionCall {
            call_id, arguments, ..
        } = &mut output.item.body
        else {
            return Vec::new();
        };
        arguments.push_str(delta);
        let fields = json!({"item_id": output.item.id, "output_index": at, "call_id": call_id,
            "delta": delta});
        vec![self.event("response.function_call_arguments.delta", fields)]
    }

    /// The chat's usage (`prompt_tokens`, `completion_tokens`) as Realtime usage.
    pub fn set_usage(&mut self, usage: &Value) {
        let input = usage["prompt_tokens"].as_u64().unwrap_or_default();
        let output = usage["completion_tokens"].as_u64().unwrap_or_default();
        self.usage = json!({
            "total_tokens": input + output,
            "input_tokens": input,
            "output_tokens": output,
            "input_token_details": {"text_tokens": input, "audio_tokens": 0, "cached_tokens": 0},
            "output_token_details": {"text_tokens": output, "audio_tokens": 0},
        });
    }

    /// The part of the transcript heard by `audio_end_ms`: whole clauses whose audio
    /// ended by then, and of the clause playing, its share of words.
    pub fn heard(&self, audio_end_ms: f64) -> String {
        let mut chars = 0usize;
        let mut from = (0.0, 0usize);
        for &(end_ms, spoken) in &self.marks {
            if end_ms <= audio_end_ms {
                chars = spoken;
                from = (end_ms, spoken);
                continue;
            }
            let span = end_ms - from.0;
            if span > 0.0 {
                let share = ((audio_end_ms - from.0) / span).clamp(0.0, 1.0);
                chars = from.1 + ((spoken - from.1) as f64 * share) as usize;
            }
            break;
        }
        cut_at_word(&self.text, chars)
    }

    /// Ends the response: each item's closing events, its final text in the
    /// conversation, then `response.done`. `played_ms`: the audio heard when it was
    /// cut short (its message keeps what was heard).
    pub fn finish(
        &mut self,
        conversation: &mut Conversation,
        ending: &Ending,
        played_ms: Option<f64>,
    ) -> Vec<Value> {
        let complete = matches!(ending, Ending::Completed);
        let mut out = Vec::new();
        let mut truncated = None;
        if let Some(index) = self.message {
            let mut text = self.text.clone();
            if let (Some(played), true) = (played_ms, self.audio && !complete) {
                text = self.heard(played);
                truncated = Some((self.outputs[index].item.id.clone(), played));
            }
            let item = &mut self.outputs[index].item;
            item.complete = complete;
            item.body = Body::Message {
                role: Role::Assistant,
                text: text.clone(),
                audio: self.audio,
            };
            let item_id = item.id.clone();
            let at = json!({"item_id": item_id, "output_index": index, "content_index": 0});
            let with = |mut fields: Value, key: &str, value: Value| {
                fields[key] = value;
                fields
            };
            if self.audio {
                let done = self.name("response.output_audio.done", "response.audio.done");
                out.push(self.event(done, at.clone()));
                let kind = self.name(
                    "response.output_audio_transcript.done",
                    "response.audio_transcript.done",
                );
                out.push(self.event(kind, with(at.clone(), "transcript", text.clone().into())));
                let part = json!({"type": "audio", "transcript": text});
                out.push(self.event("response.content_part.done", with(at, "part", part)));
            } else {
                let kind = self.name("response.output_text.done", "response.text.done");
                out.push(self.event(kind, with(at.clone(), "text", text.clone().into())));
                let part = json!({"type": "text", "text": text});
                out.push(self.event("response.content_part.done", with(at, "part", part)));
            }
        }
        for index in 0..self.outputs.len() {
            let output = &mut self.outputs[index];
            output.item.complete &= complete;
            if let Body::FunctionCall {
                call_id,
                name,
                arguments,
            } = &output.item.body
            {
                let fields = json!({"item_id": output.item.id, "output_index": index,
                    "call_id": call_id, "name": name, "arguments": arguments});
                out.push(self.event("response.function_call_arguments.done", fields));
            }
            let item = self.outputs[index].item.clone();
            out.push(self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": item.describe(self.beta)}),
            ));
            if self.in_conversation {
                if let Some(kept) = conversation.get_mut(&item.id) {
                    *kept = item.clone();
                }
                if !self.beta {
                    out.push(events::event(
                        "conversation.item.done",
                        json!({"item": item.describe(self.beta)}),
                    ));
                }
            }
        }
        if let (Some((item_id, played)), true) = (truncated, self.in_conversation) {
            out.push(events::event(
                "conversation.item.truncated",
                json!({"item_id": item_id, "content_index": 0, "audio_end_ms": played as u64}),
            ));
        }
        let (status, details) = match ending {
            Ending::Completed => ("completed", Value::Null),
            Ending::Cancelled(reason) => {
                ("cancelled", json!({"type": "cancelled", "reason": reason}))
            }
            Ending::Incomplete => (
                "incomplete",
                json!({"type": "incomplete", "reason": "max_output_tokens"}),
            ),
            Ending::Failed(error) => (
                "failed",
                json!({"type": "failed", "error": {"type": error_type(error),
                    "code": error.code.as_str(), "message": error.message}}),
            ),
        };
        out.push(events::event(
            "response.done",
            json!({"response": self.describe(status, &details)}),
        ));
        out
    }
}

fn error_type(error: &ApiError) -> &'static str {
    match error.code.status().is_client_error() {
        true => "invalid_request_error",
        false => "server_error",
    }
}

/// `text` cut to about `chars` characters, at the end of a word.
pub fn cut_at_word(text: &str, chars: usize) -> String {
    if chars == 0 {
        return String::new();
    }
    if chars >= text.chars().count() {
        return text.to_owned();
    }
    let at = text
        .char_indices()
        .nth(chars)
        .map_or(text.len(), |(at, _)| at);
    // The word under the cut was being said: keep it whole.
    let end = text[at..]
        .find(char::is_whitespace)
        .map_or(text.len(), |space| at + space);
    text[..end].trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(events: &[Value]) -> Vec<String> {
        events
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn a_spoken_answer_opens_its_item_streams_and_closes_in_order() {
        let mut conversation = Conversation::default();
        let mut response = Response::new(false, true, Format::Pcm24k, true, Value::Null);
        assert_eq!(response.created()["response"]["status"], "in_progress");
        let mut events = response.text(&mut conversation, "Hello");
        events.extend(response.audio(&mut conversation, &[0; 4800], Instant::now()));
        response.spoken(5);
        events.extend(response.text(&mut conversation, " there."));
        response.set_usage(&json!({"prompt_tokens": 10, "completion_tokens": 3}));
        events.extend(response.finish(&mut conversation, &Ending::Completed, None));
        assert_eq!(
            kinds(&events),
            [
                "response.output_item.added",
                "conversation.item.added",
                "response.content_part.added",
                "response.output_audio_transcript.delta",
                "response.output_audio.delta",
                "response.output_audio_transcript.delta",
                "response.output_audio.done",
                "response.output_audio_transcript.done",
                "response.content_part.done",
                "response.output_item.done",
                "conversation.item.done",
                "response.done",
            ]
        );
        let done = events.last().unwrap();
        assert_eq!(done["response"]["status"], "completed");
        assert_eq!(done["response"]["usage"]["total_tokens"], 13);
        assert_eq!(
            done["response"]["output"][0]["content"][0]["transcript"],
            "Hello there."
        );
        assert_eq!(response.audio_ms(), 100.0);
        let messages = conversation.messages("");
        assert_eq!(
            messages,
            [json!({"role": "assistant", "content": "Hello there."})]
        );
    }

    #[test]
    fn a_cut_answer_keeps_what_was_heard_and_beta_names_differ() {
        let mut conversation = Conversation::default();
        let mut response = Response::new(true, true, Format::Pcmu, true, Value::Null);
        let now = Instant::now();
        response.text(&mut conversation, "One two three. Four five six seven.");
        response.audio(&mut conversation, &[0; 8000], now); // 1 s
        response.spoken(14); // "One two three."
        response.audio(&mut conversation, &[0; 8000], now); // 2 s
        response.spoken(21);
        assert_eq!(response.heard(1000.0), "One two three.");
        assert_eq!(response.heard(1500.0), "One two three. Four five");
        assert_eq!(response.heard(0.0), "");
        let events = response.finish(
            &mut conversation,
            &Ending::Cancelled("turn_detected"),
            Some(1000.0),
        );
        let kinds = kinds(&events);
        assert!(
            kinds.contains(&"response.audio.done".to_owned()),
            "{kinds:?}"
        );
        assert!(kinds.contains(&"conversation.item.truncated".to_owned()));
        assert!(
            !kinds.contains(&"conversation.item.done".to_owned()),
            "beta"
        );
        let done = events.last().unwrap();
        assert_eq!(done["response"]["status"], "cancelled");
        assert_eq!(
            done["response"]["status_details"]["reason"],
            "turn_detected"
        );
        assert_eq!(done["response"]["modalities"], json!(["audio"]));
        assert_eq!(done["response"]["output"][0]["status"], "incomplete");
        assert_eq!(
            conversation.messages(""),
            [json!({"role": "assistant", "content": "One two three."})]
        );
    }

    #[test]
    fn tool_calls_are_items_with_streamed_arguments() {
        let mut conversation = Conversation::default();
        let mut response = Response::new(false, false, Format::Pcm24k, true, json!({"k": "v"}));
        let mut events = response.tool_call(&mut conversation, 0, "call_1", "get_weather");
        events.extend(response.tool_arguments(0, r#"{"city":"#));
        events.extend(response.tool_arguments(0, r#""Paris"}"#));
        events.extend(response.tool_arguments(7, "ignored"));
        events.extend(response.finish(&mut conversation, &Ending::Completed, None));
        let done = events
            .iter()
            .find(|e| e["type"] == "response.function_call_arguments.done")
            .unwrap();
        assert_eq!(done["arguments"], r#"{"city":"Paris"}"#);
        assert_eq!(done["name"], "get_weather");
        assert_eq!(done["call_id"], "call_1");
        let last = events.last().unwrap();
        assert_eq!(last["response"]["output"][0]["type"], "function_call");
        assert_eq!(last["response"]["metadata"]["k"], "v");
        let output = Item::from_client(
            &json!({"type": "function_call_output", "call_id": "call_1", "output": "sunny"}),
        )
        .unwrap();
        conversation.insert(output, None).unwrap();
        assert_eq!(
            conversation.messages("")[0]["tool_calls"][0]["id"],
            "call_1"
        );
        // Out of band: nothing joins the conversation.
        let mut conversation = Conversation::default();
        let mut response = Response::new(false, false, Format::Pcm24k, false, Value::Null);
        let events = response.text(&mut conversation, "aside");
        assert!(!kinds(&events).contains(&"conversation.item.added".to_owned()));
        let failed = response.finish(
            &mut conversation,
            &Ending::Failed(ApiError::invalid("no")),
            None,
        );
        assert_eq!(
            failed.last().unwrap()["response"]["status_details"]["error"]["code"],
            "INVALID_REQUEST"
        );
        assert!(conversation.messages("").is_empty());
    }

    #[test]
    fn a_cut_ends_at_a_word() {
        assert_eq!(cut_at_word("Hello there friend", 7), "Hello there");
        assert_eq!(cut_at_word("Hello there", 5), "Hello");
        assert_eq!(cut_at_word("Hello", 50), "Hello");
        assert_eq!(cut_at_word("", 0), "");
    }
}
