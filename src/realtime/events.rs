//! OpenAI Realtime events: the client's, parsed (the current names and the beta ones,
//! such as `transcription_session.update`), and the server's envelope and `error`
//! event, built; the [`Stabilizer`] that keeps partial transcripts append-only. Pure:
//! JSON in, JSON out.

use base64::Engine;
use serde_json::{Value, json};

use super::config::{clip, invalid};
use crate::error::{ApiError, ApiResult};

/// Largest `input_audio_buffer.append` taken, decoded (15 s of 24 kHz PCM16, as
/// OpenAI's own limit).
pub const MAX_APPEND_BYTES: usize = 15 * 1024 * 1024;

/// A client event.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// `session.update` (beta: `transcription_session.update`): its `session` object.
    SessionUpdate(Value),
    /// `input_audio_buffer.append`: the decoded audio.
    Append(Vec<u8>),
    Commit,
    Clear,
    /// `conversation.item.create`: the item, and where it goes.
    ItemCreate {
        item: Value,
        previous_item_id: Option<String>,
    },
    ItemDelete {
        item_id: String,
    },
    ItemRetrieve {
        item_id: String,
    },
    /// `conversation.item.truncate`: an assistant item's audio heard up to here.
    ItemTruncate {
        item_id: String,
        audio_end_ms: u64,
    },
    /// `response.create`: its `response` object (`null` when none was sent).
    ResponseCreate(Value),
    ResponseCancel {
        response_id: Option<String>,
    },
    /// `output_audio_buffer.clear`: stop the response's audio (as a cancel).
    OutputAudioClear,
}

impl ClientEvent {
    /// Whether a transcription session takes this event.
    pub fn transcribing(&self) -> bool {
        matches!(
            self,
            ClientEvent::SessionUpdate(_)
                | ClientEvent::Append(_)
                | ClientEvent::Commit
                | ClientEvent::Clear
        )
    }
}

/// Parses a client event; an unusable one is an error the session answers with an
/// `error` event (and goes on).
pub fn parse(text: &str) -> ApiResult<ClientEvent> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::invalid(format!("events are JSON objects with a `type`: {e}")))?;
    parse_value(&value)
}

/// [`parse`] of an event already read as JSON.
pub fn parse_value(value: &Value) -> ApiResult<ClientEvent> {
    let id = |name: &str| {
        value[name]
            .as_str()
            .filter(|id| !id.is_empty() && id.len() <= 128)
            .map(str::to_owned)
            .ok_or_else(|| invalid(name, format!("`{name}` is missing")))
    };
    match value["type"].as_str() {
        Some("session.update" | "transcription_session.update") => {
            Ok(ClientEvent::SessionUpdate(value["session"].clone()))
        }
        Some("input_audio_buffer.append") => {
            let audio = value["audio"]
                .as_str()
                .ok_or_else(|| invalid("audio", "`audio` is missing: base64 audio".into()))?;
            if audio.len() > MAX_APPEND_BYTES / 3 * 4 + 4 {
                return Err(ApiError::too_large(
                    "an input_audio_buffer.append",
                    MAX_APPEND_BYTES as u64,
                )
                .with_field("param", "audio"));
            }
            base64::engine::general_purpose::STANDARD
                .decode(audio)
                .map(ClientEvent::Append)
                .map_err(|e| invalid("audio", format!("`audio` is not base64: {e}")))
        }
        Some("input_audio_buffer.commit") => Ok(ClientEvent::Commit),
        Some("input_audio_buffer.clear") => Ok(ClientEvent::Clear),
        Some("conversation.item.create") => {
            if !value["item"].is_object() {
                return Err(invalid("item", "`item` is missing".into()));
            }
            Ok(ClientEvent::ItemCreate {
                item: value["item"].clone(),
                previous_item_id: value["previous_item_id"].as_str().map(str::to_owned),
            })
        }
        Some("conversation.item.delete") => Ok(ClientEvent::ItemDelete {
            item_id: id("item_id")?,
        }),
        Some("conversation.item.retrieve") => Ok(ClientEvent::ItemRetrieve {
            item_id: id("item_id")?,
        }),
        Some("conversation.item.truncate") => Ok(ClientEvent::ItemTruncate {
            item_id: id("item_id")?,
            audio_end_ms: value["audio_end_ms"].as_u64().ok_or_else(|| {
                invalid(
                    "audio_end_ms",
                    "`audio_end_ms` is a count of milliseconds".into(),
                )
            })?,
        }),
        Some("response.create") => Ok(ClientEvent::ResponseCreate(value["response"].clone())),
        Some("response.cancel") => Ok(ClientEvent::ResponseCancel {
            response_id: value["response_id"].as_str().map(str::to_owned),
        }),
        Some("output_audio_buffer.clear") => Ok(ClientEvent::OutputAudioClear),
        Some(other) => Err(invalid(
            "type",
            format!(
                "`{}` is not a Realtime client event served here",
                clip(other)
            ),
        )),
        None => Err(invalid("type", "an event needs a `type`".into())),
    }
}

/// A server event with a fresh `event_id`.
pub fn event(kind: &str, mut fields: Value) -> Value {
    fields["type"] = kind.into();
    fields["event_id"] = format!("event_{}", uuid::Uuid::now_v7().simple()).into();
    fields
}

/// An `error` event: OpenAI's `type` (`invalid_request_error` for the caller's
/// mistakes, `server_error` for ours), ScaiGrid's code, the parameter at fault.
pub fn error(error: &ApiError, client_event_id: Option<&str>) -> Value {
    let kind = match error.code.status().is_client_error() {
        true => "invalid_request_error",
        false => "server_error",
    };
    event(
        "error",
        json!({"error": {
            "type": kind,
            "code": error.code.as_str(),
            "message": error.message,
            "param": error.fields.get("param").or_else(|| error.fields.get("field")),
            "event_id": client_event_id,
        }}),
    )
}

/// Partials that only grow: a revisable hypothesis becomes `delta` text once the
/// next hypothesis agrees with it (whole words), and the final adds what is left.
#[derive(Debug, Default)]
pub struct Stabilizer {
    said: String,
    last: String,
}

impl Stabilizer {
    /// A new interim hypothesis; the text to append, if any became stable.
    pub fn interim(&mut self, hypothesis: &str) -> Option<String> {
        let hypothesis = hypothesis.trim();
        let stable = common_words(&self.last, hypothesis);
        self.last = hypothesis.to_owned();
        self.advance(&stable)
    }

    /// The final text; what it adds to what was said (when it continues it).
    pub fn finish(&mut self, text: &str) -> Option<String> {
        let text = text.trim().to_owned();
        let added = self.advance(&text);
        *self = Stabilizer::default();
        added
    }

    fn advance(&mut self, to: &str) -> Option<String> {
        if to.len() <= self.said.len() || !to.starts_with(&self.said) {
            return None;
        }
        let added = to[self.said.len()..].to_owned();
        self.said = to.to_owned();
        Some(added)
    }
}

/// The longest run of whole words two texts start with.
fn common_words(a: &str, b: &str) -> String {
    let mut end = 0;
    for ((index, x), y) in a.char_indices().zip(b.chars()) {
        if x != y {
            break;
        }
        let next = index + x.len_utf8();
        let boundary_a = a[next..].starts_with(char::is_whitespace) || next == a.len();
        let boundary_b = b[next..].starts_with(char::is_whitespace) || next == b.len();
        if boundary_a && boundary_b {
            end = next;
        }
    }
    a[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_events_parse_and_bad_ones_say_which_parameter() {
        for bad in [
            "not json",
            r#"{"type":"input_audio_buffer.append"}"#,
            r#"{"type":"input_audio_buffer.append","audio":"***"}"#,
            r#"{"type":"conversation.item.create"}"#,
            r#"{"type":"conversation.item.delete"}"#,
            r#"{"type":"conversation.item.truncate","item_id":"i"}"#,
            r#"{"type":"conversation.item.truncate","item_id":"i","audio_end_ms":-1}"#,
            r#"{"type":"session.dance"}"#,
            r#"{}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse(r#"{"type":"input_audio_buffer.append","audio":"AAEC"}"#).unwrap(),
            ClientEvent::Append(vec![0, 1, 2])
        );
        assert_eq!(
            parse(r#"{"type":"conversation.item.truncate","item_id":"it","content_index":0,"audio_end_ms":1500}"#)
                .unwrap(),
            ClientEvent::ItemTruncate {
                item_id: "it".into(),
                audio_end_ms: 1500
            }
        );
        assert_eq!(
            parse(r#"{"type":"response.create"}"#).unwrap(),
            ClientEvent::ResponseCreate(Value::Null)
        );
        assert!(
            !parse(r#"{"type":"response.create"}"#)
                .unwrap()
                .transcribing()
        );
        assert!(
            parse(r#"{"type":"input_audio_buffer.commit"}"#)
                .unwrap()
                .transcribing()
        );
        let error = error(
            &parse(r#"{"type":"session.dance"}"#).unwrap_err(),
            Some("evt_1"),
        );
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert_eq!(error["error"]["param"], "type");
        assert_eq!(error["error"]["event_id"], "evt_1");
    }

    #[test]
    fn partials_only_grow_by_words_both_hypotheses_agree_on() {
        let mut words = Stabilizer::default();
        assert_eq!(words.interim("Ever tried"), None);
        assert_eq!(words.interim("Ever tried, ever"), Some("Ever".into()));
        assert_eq!(
            words.interim("Ever tried. Ever failed"),
            None,
            "`tried,` changed"
        );
        // `failed` then `failed.`: a word still changing is held back.
        assert_eq!(
            words.interim("Ever tried. Ever failed. No"),
            Some(" tried. Ever".into())
        );
        assert_eq!(
            words.finish("Ever tried. Ever failed. No matter."),
            Some(" failed. No matter.".into())
        );
        // A final that does not continue what was said adds nothing (completed has it).
        assert_eq!(words.interim("Hello there"), None);
        assert_eq!(
            words.interim("Hello there friend"),
            Some("Hello there".into())
        );
        assert_eq!(words.finish("Yellow chair"), None);
    }
}
