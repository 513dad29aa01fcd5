//! OpenAI Realtime events of a transcription session: the client's, parsed (the current
//! names and shapes, and the beta ones: `transcription_session.update`,
//! `input_audio_format: "pcm16"`, `input_audio_transcription`), and the server's, built.
//! Pure: JSON in, JSON out.

use base64::Engine;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};

/// Largest `input_audio_buffer.append` taken, decoded (15 s of 24 kHz PCM16, as
/// OpenAI's own limit).
pub const MAX_APPEND_BYTES: usize = 15 * 1024 * 1024;

/// The input audio's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `audio/pcm` (beta `pcm16`): 16-bit little-endian mono at 24 kHz.
    Pcm24k,
    /// `audio/pcmu` (beta `g711_ulaw`): 8 kHz μ-law.
    Pcmu,
    /// `audio/pcma` (beta `g711_alaw`): 8 kHz A-law.
    Pcma,
}

impl Format {
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Pcm24k => "audio/pcm;rate=24000;channels=1",
            Format::Pcmu => "audio/pcmu;rate=8000",
            Format::Pcma => "audio/pcma;rate=8000",
        }
    }

    fn describe(self) -> Value {
        match self {
            Format::Pcm24k => json!({"type": "audio/pcm", "rate": 24000}),
            Format::Pcmu => json!({"type": "audio/pcmu"}),
            Format::Pcma => json!({"type": "audio/pcma"}),
        }
    }
}

/// When a turn (an utterance) ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// `server_vad`: this much silence (default 500 ms, as OpenAI's).
    Server { silence_ms: u32 },
    /// `semantic_vad`: its eagerness, as a pause length (`low` waits longest).
    Semantic { eagerness: Eagerness },
    /// `turn_detection: null`: only `input_audio_buffer.commit` ends a turn.
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eagerness {
    Low,
    Medium,
    High,
}

impl Turn {
    /// The silence that ends an utterance (manual turns: the longest utterance).
    pub fn silence_ms(self) -> u32 {
        match self {
            Turn::Server { silence_ms } => silence_ms,
            Turn::Semantic {
                eagerness: Eagerness::High,
            } => 250,
            Turn::Semantic {
                eagerness: Eagerness::Medium,
            } => 600,
            Turn::Semantic {
                eagerness: Eagerness::Low,
            } => 1_200,
            Turn::Manual => engines::endpoint::EndpointParams::default().max_utterance_ms,
        }
    }

    fn describe(self) -> Value {
        match self {
            Turn::Server { silence_ms } => {
                json!({"type": "server_vad", "silence_duration_ms": silence_ms,
                "threshold": 0.5, "prefix_padding_ms": 192})
            }
            Turn::Semantic { eagerness } => {
                json!({"type": "semantic_vad", "eagerness": match eagerness {
                Eagerness::Low => "low", Eagerness::Medium => "medium", Eagerness::High => "high" }})
            }
            Turn::Manual => Value::Null,
        }
    }
}

/// A transcription session's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: String,
    pub format: Format,
    /// `None`: detected.
    pub language: Option<String>,
    pub model: String,
    pub turn: Turn,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            id: format!("sess_{}", uuid::Uuid::now_v7().simple()),
            format: Format::Pcm24k,
            language: None,
            model: "whisper-1".to_owned(),
            turn: Turn::Server { silence_ms: 500 },
        }
    }
}

impl Session {
    /// The session as `session.created` and `session.updated` show it.
    pub fn describe(&self) -> Value {
        json!({
            "type": "transcription",
            "object": "realtime.transcription_session",
            "id": self.id,
            "audio": {"input": {
                "format": self.format.describe(),
                "transcription": {"model": self.model, "language": self.language},
                "turn_detection": self.turn.describe(),
                "noise_reduction": null,
            }},
            "include": [],
        })
    }

    /// The ScaiEcho stream `open` frame of these settings.
    pub fn open_frame(&self) -> String {
        let mut open = json!({
            "type": "open",
            "media_type": self.format.media_type(),
            "chunk_seconds": 1.0,
            "silence_ms": self.turn.silence_ms(),
        });
        if let Some(language) = &self.language {
            open["language"] = language.clone().into();
        }
        open.to_string()
    }

    /// Applies a `session.update`'s `session` object (the current shape or the beta
    /// one); fields it does not name stay as they were.
    pub fn update(&mut self, session: &Value) -> ApiResult<()> {
        if let Some(kind) = session["type"].as_str()
            && kind != "transcription"
        {
            return Err(invalid(
                "session.type",
                format!(
                    "session type `{kind}` is not served here yet: this endpoint runs \
                     transcription sessions (`\"type\": \"transcription\"`)"
                ),
            ));
        }
        let input = &session["audio"]["input"];
        if let Some(format) = input.get("format").filter(|f| !f.is_null()) {
            self.format = match format["type"].as_str() {
                Some("audio/pcm") if format["rate"].as_u64().is_none_or(|r| r == 24_000) => {
                    Format::Pcm24k
                }
                Some("audio/pcmu") => Format::Pcmu,
                Some("audio/pcma") => Format::Pcma,
                _ => {
                    return Err(invalid(
                        "session.audio.input.format",
                        format!(
                            "format {format} is not audio/pcm at 24000, audio/pcmu or audio/pcma"
                        ),
                    ));
                }
            };
        }
        if let Some(format) = session.get("input_audio_format").and_then(Value::as_str) {
            self.format = match format {
                "pcm16" => Format::Pcm24k,
                "g711_ulaw" => Format::Pcmu,
                "g711_alaw" => Format::Pcma,
                other => {
                    return Err(invalid(
                        "session.input_audio_format",
                        format!("`{other}` is not pcm16, g711_ulaw or g711_alaw"),
                    ));
                }
            };
        }
        let transcription = input
            .get("transcription")
            .or_else(|| session.get("input_audio_transcription"));
        if let Some(transcription) = transcription.filter(|t| !t.is_null()) {
            if let Some(model) = transcription["model"].as_str() {
                self.model = model.to_owned();
            }
            if let Some(language) = transcription.get("language") {
                self.language = match language.as_str().map(str::to_ascii_lowercase) {
                    None => None,
                    Some(tag) => {
                        let primary = tag.split(['-', '_']).next().unwrap_or_default().to_owned();
                        if !(2..=3).contains(&primary.len()) {
                            return Err(invalid(
                                "session.audio.input.transcription.language",
                                format!("`{tag}` is not a language code"),
                            ));
                        }
                        Some(primary)
                    }
                };
            }
        }
        let turn = match input.get("turn_detection") {
            Some(turn) => Some(turn),
            None => session.get("turn_detection"),
        };
        if let Some(turn) = turn {
            self.turn = match turn["type"].as_str() {
                _ if turn.is_null() => Turn::Manual,
                Some("server_vad") => Turn::Server {
                    silence_ms: turn["silence_duration_ms"]
                        .as_u64()
                        .map_or(500, |ms| ms.clamp(64, 5_000) as u32),
                },
                Some("semantic_vad") => Turn::Semantic {
                    eagerness: match turn["eagerness"].as_str() {
                        Some("low") => Eagerness::Low,
                        Some("high") => Eagerness::High,
                        None | Some("medium" | "auto") => Eagerness::Medium,
                        Some(other) => {
                            return Err(invalid(
                                "session.audio.input.turn_detection.eagerness",
                                format!("`{other}` is not low, medium, high or auto"),
                            ));
                        }
                    },
                },
                _ => {
                    return Err(invalid(
                        "session.audio.input.turn_detection",
                        format!("turn detection {turn} is not server_vad, semantic_vad or null"),
                    ));
                }
            };
        }
        Ok(())
    }
}

fn invalid(param: &str, message: String) -> ApiError {
    ApiError::invalid(message).with_field("param", param)
}

/// A client event.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// `session.update` (beta: `transcription_session.update`): its `session` object.
    SessionUpdate(Value),
    /// `input_audio_buffer.append`: the decoded audio.
    Append(Vec<u8>),
    Commit,
    Clear,
}

/// Parses a client event; an unusable one is an error the session answers with an
/// `error` event (and goes on).
pub fn parse(text: &str) -> ApiResult<ClientEvent> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::invalid(format!("events are JSON objects with a `type`: {e}")))?;
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
        Some(other) => Err(invalid(
            "type",
            format!(
                "`{}` is not served in a transcription session (session.update, \
                 input_audio_buffer.append, .commit and .clear are)",
                other.chars().take(64).collect::<String>()
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
    fn a_current_and_a_beta_session_update_configure_alike() {
        let mut current = Session::default();
        current
            .update(&json!({"type": "transcription", "audio": {"input": {
                "format": {"type": "audio/pcmu"},
                "transcription": {"model": "gpt-4o-transcribe", "language": "en-US"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}}}))
            .unwrap();
        let mut beta = Session::default();
        beta.update(&json!({"input_audio_format": "g711_ulaw",
            "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}))
            .unwrap();
        for session in [&current, &beta] {
            assert_eq!(session.format, Format::Pcmu);
            assert_eq!(session.language.as_deref(), Some("en"));
            assert_eq!(session.turn, Turn::Server { silence_ms: 300 });
        }
        let open = current.open_frame();
        let parsed = crate::scaiecho::stream::protocol::parse_open(&open).unwrap();
        assert_eq!(parsed.media_type, "audio/pcmu;rate=8000");
        assert_eq!(parsed.silence_ms, Some(300));
        // `null` turn detection: manual commits; semantic eagerness as a pause.
        current
            .update(&json!({"audio": {"input": {"turn_detection": null}}}))
            .unwrap();
        assert_eq!(current.turn, Turn::Manual);
        current
            .update(&json!({"turn_detection": {"type": "semantic_vad", "eagerness": "low"}}))
            .unwrap();
        assert_eq!(current.turn.silence_ms(), 1_200);
        assert_eq!(
            current.describe()["audio"]["input"]["turn_detection"]["eagerness"],
            "low"
        );
    }

    #[test]
    fn what_a_transcription_session_cannot_do_is_an_error_naming_the_parameter() {
        let mut session = Session::default();
        for update in [
            json!({"type": "realtime"}),
            json!({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}),
            json!({"input_audio_format": "opus"}),
            json!({"audio": {"input": {"turn_detection": {"type": "push_to_talk"}}}}),
            json!({"audio": {"input": {"transcription": {"language": "english"}}}}),
        ] {
            let error = session.update(&update).unwrap_err();
            assert!(error.fields.get("param").is_some(), "{update}");
        }
        assert_eq!(
            session,
            Session {
                id: session.id.clone(),
                ..Session::default()
            },
            "unchanged"
        );
        for bad in [
            "not json",
            r#"{"type":"input_audio_buffer.append"}"#,
            r#"{"type":"input_audio_buffer.append","audio":"***"}"#,
            r#"{"type":"response.create"}"#,
            r#"{}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse(r#"{"type":"input_audio_buffer.append","audio":"AAEC"}"#).unwrap(),
            ClientEvent::Append(vec![0, 1, 2])
        );
        let error = error(
            &parse(r#"{"type":"response.create"}"#).unwrap_err(),
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
