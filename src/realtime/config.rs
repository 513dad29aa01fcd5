//! A Realtime session's settings: what `session.update` sets (the current shape and the
//! beta one) and how `session.created`/`session.updated` show them. Pure: JSON in,
//! JSON out.
//!
//! Two kinds of session: **transcription** (audio in, transcripts out) and **realtime**
//! (a conversation: a chat model of the gateway answers each turn, spoken by ScaiSpeak).
//! The kind is chosen at connect (`?intent=transcription`) and may be switched by a
//! `session.update` until the first audio or response.

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};

/// Largest `instructions` taken, in characters.
pub const MAX_INSTRUCTIONS_CHARS: usize = 64 * 1024;
/// Most tools a session (or a response) may define.
pub const MAX_TOOLS: usize = 128;

/// An audio format of the protocol (input or output).
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
    /// The ScaiEcho stream's media type for input in this format.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Pcm24k => "audio/pcm;rate=24000;channels=1",
            Format::Pcmu => "audio/pcmu;rate=8000",
            Format::Pcma => "audio/pcma;rate=8000",
        }
    }

    pub fn sample_rate(self) -> u32 {
        match self {
            Format::Pcm24k => 24_000,
            Format::Pcmu | Format::Pcma => 8_000,
        }
    }

    /// Bytes of one second of audio.
    pub fn bytes_per_second(self) -> f64 {
        match self {
            Format::Pcm24k => 48_000.0,
            Format::Pcmu | Format::Pcma => 8_000.0,
        }
    }

    fn describe(self, beta: bool) -> Value {
        match (self, beta) {
            (Format::Pcm24k, false) => json!({"type": "audio/pcm", "rate": 24000}),
            (Format::Pcmu, false) => json!({"type": "audio/pcmu"}),
            (Format::Pcma, false) => json!({"type": "audio/pcma"}),
            (Format::Pcm24k, true) => json!("pcm16"),
            (Format::Pcmu, true) => json!("g711_ulaw"),
            (Format::Pcma, true) => json!("g711_alaw"),
        }
    }

    /// The current shape (`{"type": "audio/pcm", "rate": 24000}`).
    pub fn parse(format: &Value, param: &str) -> ApiResult<Format> {
        match format["type"].as_str() {
            Some("audio/pcm") if format["rate"].as_u64().is_none_or(|r| r == 24_000) => {
                Ok(Format::Pcm24k)
            }
            Some("audio/pcmu") => Ok(Format::Pcmu),
            Some("audio/pcma") => Ok(Format::Pcma),
            _ => Err(invalid(
                param,
                format!("format {format} is not audio/pcm at 24000, audio/pcmu or audio/pcma"),
            )),
        }
    }

    /// The beta shape (`"pcm16"`).
    pub fn parse_beta(format: &str, param: &str) -> ApiResult<Format> {
        match format {
            "pcm16" => Ok(Format::Pcm24k),
            "g711_ulaw" => Ok(Format::Pcmu),
            "g711_alaw" => Ok(Format::Pcma),
            other => Err(invalid(
                param,
                format!("`{other}` is not pcm16, g711_ulaw or g711_alaw"),
            )),
        }
    }
}

/// When a turn (an utterance) ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// `server_vad`: this much silence (default 500 ms, as OpenAI's).
    Server { silence_ms: u32 },
    /// `semantic_vad`: its eagerness; the pause that ends a turn depends on whether the
    /// transcript so far ends a sentence (`turns`).
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
            // An utterance ends at the short pause; the session holds the turn longer
            // when its transcript leaves the sentence open (`turns`).
            Turn::Semantic { eagerness } => super::turns::short_pause(eagerness).as_millis() as u32,
            Turn::Manual => engines::endpoint::EndpointParams::default().max_utterance_ms,
        }
    }
}

/// What a session is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Transcription,
    /// A voice (or text) conversation with a chat model.
    Realtime,
}

/// A session's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: String,
    pub kind: Kind,
    /// The gateway's chat model that answers (realtime sessions; `?model=`).
    pub model: String,
    pub transcription_model: String,
    pub format: Format,
    /// `None`: detected.
    pub language: Option<String>,
    pub turn: Turn,
    /// A detected turn's end starts a response (`create_response`).
    pub create_response: bool,
    /// Speech during a response cancels it (`interrupt_response`).
    pub interrupt_response: bool,
    pub instructions: String,
    /// Answers are spoken (`output_modalities: ["audio"]`) or only written (`["text"]`).
    pub audio_out: bool,
    pub output_format: Format,
    pub voice: String,
    pub speed: f32,
    /// Function tools, as the session defines them (`{"type": "function", "name", ...}`).
    pub tools: Vec<Value>,
    pub tool_choice: Value,
    pub max_output_tokens: Option<u64>,
    pub temperature: Option<f64>,
}

impl Session {
    pub fn new(kind: Kind, model: Option<&str>) -> Session {
        Session {
            id: format!("sess_{}", uuid::Uuid::now_v7().simple()),
            kind,
            model: model.unwrap_or("gpt-realtime").to_owned(),
            transcription_model: "whisper-1".to_owned(),
            format: Format::Pcm24k,
            language: None,
            turn: Turn::Server { silence_ms: 500 },
            create_response: true,
            interrupt_response: true,
            instructions: String::new(),
            audio_out: true,
            output_format: Format::Pcm24k,
            voice: "alloy".to_owned(),
            speed: 1.0,
            tools: Vec::new(),
            tool_choice: json!("auto"),
            max_output_tokens: None,
            temperature: None,
        }
    }

    /// The session as `session.created` and `session.updated` show it (`beta`: the
    /// beta protocol's shape).
    pub fn describe(&self, beta: bool) -> Value {
        let transcription = json!({"model": self.transcription_model, "language": self.language});
        let turn = self.describe_turn();
        if self.kind == Kind::Transcription {
            return json!({
                "type": "transcription",
                "object": "realtime.transcription_session",
                "id": self.id,
                "audio": {"input": {
                    "format": self.format.describe(false),
                    "transcription": transcription,
                    "turn_detection": turn,
                    "noise_reduction": null,
                }},
                "include": [],
            });
        }
        let max_tokens = self.max_output_tokens.map_or(json!("inf"), Value::from);
        if beta {
            return json!({
                "id": self.id,
                "object": "realtime.session",
                "model": self.model,
                "modalities": if self.audio_out { json!(["audio", "text"]) } else { json!(["text"]) },
                "instructions": self.instructions,
                "voice": self.voice,
                "input_audio_format": self.format.describe(true),
                "output_audio_format": self.output_format.describe(true),
                "input_audio_transcription": transcription,
                "turn_detection": turn,
                "tools": self.tools,
                "tool_choice": self.tool_choice,
                "temperature": self.temperature.unwrap_or(0.8),
                "max_response_output_tokens": max_tokens,
                "speed": self.speed,
            });
        }
        json!({
            "type": "realtime",
            "object": "realtime.session",
            "id": self.id,
            "model": self.model,
            "output_modalities": if self.audio_out { ["audio"] } else { ["text"] },
            "instructions": self.instructions,
            "audio": {
                "input": {
                    "format": self.format.describe(false),
                    "transcription": transcription,
                    "turn_detection": turn,
                    "noise_reduction": null,
                },
                "output": {
                    "format": self.output_format.describe(false),
                    "voice": self.voice,
                    "speed": self.speed,
                },
            },
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "max_output_tokens": max_tokens,
            "tracing": null,
            "truncation": "auto",
            "prompt": null,
            "include": null,
        })
    }

    fn describe_turn(&self) -> Value {
        let mut turn = match self.turn {
            Turn::Server { silence_ms } => json!({"type": "server_vad",
                "silence_duration_ms": silence_ms, "threshold": 0.5, "prefix_padding_ms": 192}),
            Turn::Semantic { eagerness } => json!({"type": "semantic_vad", "eagerness":
            match eagerness {
                Eagerness::Low => "low",
                Eagerness::Medium => "medium",
                Eagerness::High => "high",
            }}),
            Turn::Manual => return Value::Null,
        };
        if self.kind == Kind::Realtime {
            turn["create_response"] = self.create_response.into();
            turn["interrupt_response"] = self.interrupt_response.into();
        }
        turn
    }

    /// The ScaiEcho stream `open` frame of these settings.
    pub fn open_frame(&self) -> String {
        // Partials every second for a transcript shown as it grows; a conversation
        // reads finals (speech starts come from the VAD), so it spends half the CPU on
        // partials.
        let chunk_seconds = match self.kind {
            Kind::Transcription => 1.0,
            Kind::Realtime => 2.0,
        };
        let mut open = json!({
            "type": "open",
            "media_type": self.format.media_type(),
            "chunk_seconds": chunk_seconds,
            "silence_ms": self.turn.silence_ms(),
            "speech_events": true,
        });
        if let Some(language) = &self.language {
            open["language"] = language.clone().into();
        }
        open.to_string()
    }

    /// Applies a `session.update`'s `session` object (the current shape or the beta
    /// one); fields it does not name stay as they were. On error nothing changed.
    pub fn update(&mut self, session: &Value) -> ApiResult<()> {
        let mut next = self.clone();
        next.apply(session)?;
        *self = next;
        Ok(())
    }

    fn apply(&mut self, session: &Value) -> ApiResult<()> {
        if !session.is_object() && !session.is_null() {
            return Err(invalid("session", "`session` is an object".into()));
        }
        match session["type"].as_str() {
            None => {}
            Some("transcription") => self.kind = Kind::Transcription,
            Some("realtime") => self.kind = Kind::Realtime,
            Some(other) => {
                return Err(invalid(
                    "session.type",
                    format!(
                        "session type `{}` is neither `realtime` nor `transcription`",
                        clip(other)
                    ),
                ));
            }
        }
        if let Some(model) = session["model"].as_str() {
            self.model = model.to_owned();
        }
        let input = &session["audio"]["input"];
        if let Some(format) = input.get("format").filter(|f| !f.is_null()) {
            self.format = Format::parse(format, "session.audio.input.format")?;
        }
        if let Some(format) = session["input_audio_format"].as_str() {
            self.format = Format::parse_beta(format, "session.input_audio_format")?;
        }
        let output = &session["audio"]["output"];
        if let Some(format) = output.get("format").filter(|f| !f.is_null()) {
            self.output_format = Format::parse(format, "session.audio.output.format")?;
        }
        if let Some(format) = session["output_audio_format"].as_str() {
            self.output_format = Format::parse_beta(format, "session.output_audio_format")?;
        }
        if let Some(voice) = output["voice"].as_str().or(session["voice"].as_str()) {
            self.voice = voice.chars().take(128).collect();
        }
        if let Some(speed) = output.get("speed").or(session.get("speed")) {
            self.speed = speed
                .as_f64()
                .filter(|s| (0.25..=1.5).contains(s))
                .ok_or_else(|| {
                    invalid(
                        "session.audio.output.speed",
                        "speed is a number from 0.25 to 1.5".into(),
                    )
                })? as f32;
        }
        let transcription = input
            .get("transcription")
            .or_else(|| session.get("input_audio_transcription"));
        if let Some(transcription) = transcription.filter(|t| !t.is_null()) {
            if let Some(model) = transcription["model"].as_str() {
                self.transcription_model = model.chars().take(128).collect();
            }
            if let Some(language) = transcription.get("language") {
                self.language = parse_language(language)?;
            }
        }
        let turn = match input.get("turn_detection") {
            Some(turn) => Some(turn),
            None => session.get("turn_detection"),
        };
        if let Some(turn) = turn {
            self.apply_turn(turn)?;
        }
        if let Some(instructions) = session.get("instructions") {
            self.instructions = parse_instructions(instructions)?;
        }
        let modalities = session
            .get("output_modalities")
            .or(session.get("modalities"));
        if let Some(modalities) = modalities {
            self.audio_out = parse_modalities(modalities, "session.output_modalities")?;
        }
        if let Some(tools) = session.get("tools") {
            self.tools = parse_tools(tools, "session.tools")?;
        }
        if let Some(choice) = session.get("tool_choice") {
            self.tool_choice = parse_tool_choice(choice, "session.tool_choice")?;
        }
        let max_tokens = session
            .get("max_output_tokens")
            .or(session.get("max_response_output_tokens"));
        if let Some(max) = max_tokens {
            self.max_output_tokens = parse_max_tokens(max, "session.max_output_tokens")?;
        }
        if let Some(temperature) = session.get("temperature") {
            self.temperature = Some(
                temperature
                    .as_f64()
                    .filter(|t| (0.0..=2.0).contains(t))
                    .ok_or_else(|| {
                        invalid(
                            "session.temperature",
                            "temperature is a number from 0 to 2".into(),
                        )
                    })?,
            );
        }
        Ok(())
    }

    fn apply_turn(&mut self, turn: &Value) -> ApiResult<()> {
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
                            format!("`{}` is not low, medium, high or auto", clip(other)),
                        ));
                    }
                },
            },
            _ => {
                return Err(invalid(
                    "session.audio.input.turn_detection",
                    format!(
                        "turn detection {} is not server_vad, semantic_vad or null",
                        clip(&turn.to_string())
                    ),
                ));
            }
        };
        for (name, flag) in [
            ("create_response", &mut self.create_response),
            ("interrupt_response", &mut self.interrupt_response),
        ] {
            match turn.get(name) {
                None | Some(Value::Null) => *flag = true,
                Some(Value::Bool(value)) => *flag = *value,
                Some(_) => {
                    return Err(invalid(
                        &format!("session.audio.input.turn_detection.{name}"),
                        format!("`{name}` is true or false"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A language tag's primary subtag (`en-US` → `en`); `null` detects.
fn parse_language(language: &Value) -> ApiResult<Option<String>> {
    let Some(tag) = language.as_str().map(str::to_ascii_lowercase) else {
        return Ok(None);
    };
    let primary = tag.split(['-', '_']).next().unwrap_or_default().to_owned();
    if !(2..=3).contains(&primary.len()) || !primary.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(invalid(
            "session.audio.input.transcription.language",
            format!("`{}` is not a language code", clip(&tag)),
        ));
    }
    Ok(Some(primary))
}

pub fn parse_instructions(value: &Value) -> ApiResult<String> {
    match value {
        Value::Null => Ok(String::new()),
        Value::String(text) if text.chars().count() <= MAX_INSTRUCTIONS_CHARS => Ok(text.clone()),
        Value::String(_) => Err(invalid(
            "instructions",
            format!("instructions are limited to {MAX_INSTRUCTIONS_CHARS} characters"),
        )),
        _ => Err(invalid("instructions", "instructions are a string".into())),
    }
}

/// `["audio"]` (spoken, with its transcript), `["text"]`; the beta `["text", "audio"]`
/// is audio. `true`: spoken.
pub fn parse_modalities(value: &Value, param: &str) -> ApiResult<bool> {
    let names: Option<Vec<&str>> = value
        .as_array()
        .and_then(|list| list.iter().map(Value::as_str).collect());
    match names.as_deref() {
        Some(names)
            if !names.is_empty() && names.iter().all(|n| matches!(*n, "audio" | "text")) =>
        {
            Ok(names.contains(&"audio"))
        }
        _ => Err(invalid(
            param,
            "output modalities are [\"audio\"] or [\"text\"]".into(),
        )),
    }
}

/// Function tools in the Realtime shape: `{"type": "function", "name", "description",
/// "parameters"}`, names as the chat API takes them.
pub fn parse_tools(value: &Value, param: &str) -> ApiResult<Vec<Value>> {
    let Some(tools) = value.as_array() else {
        return Err(invalid(param, "tools are a list".into()));
    };
    if tools.len() > MAX_TOOLS {
        return Err(invalid(param, format!("at most {MAX_TOOLS} tools")));
    }
    for (index, tool) in tools.iter().enumerate() {
        let at = format!("{param}[{index}]");
        if tool["type"].as_str().is_some_and(|t| t != "function") {
            return Err(invalid(&at, "only function tools are served".into()));
        }
        let name = tool["name"].as_str().unwrap_or_default();
        let named = (1..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !named {
            return Err(invalid(
                &format!("{at}.name"),
                "a tool's name is 1 to 64 letters, digits, `_` or `-`".into(),
            ));
        }
        if tool
            .get("parameters")
            .is_some_and(|p| !p.is_object() && !p.is_null())
        {
            return Err(invalid(
                &format!("{at}.parameters"),
                "a tool's parameters are a JSON schema object".into(),
            ));
        }
        if tool
            .get("description")
            .is_some_and(|d| !d.is_string() && !d.is_null())
        {
            return Err(invalid(
                &format!("{at}.description"),
                "a description is a string".into(),
            ));
        }
    }
    Ok(tools.clone())
}

/// `auto`, `none`, `required`, or `{"type": "function", "name": ...}`.
pub fn parse_tool_choice(value: &Value, param: &str) -> ApiResult<Value> {
    match value {
        Value::String(choice) if matches!(choice.as_str(), "auto" | "none" | "required") => {
            Ok(value.clone())
        }
        Value::Object(_) if value["type"] == "function" && value["name"].is_string() => {
            Ok(value.clone())
        }
        _ => Err(invalid(
            param,
            "tool_choice is auto, none, required or {\"type\": \"function\", \"name\": ...}".into(),
        )),
    }
}

/// A positive count, or `"inf"` (no limit).
pub fn parse_max_tokens(value: &Value, param: &str) -> ApiResult<Option<u64>> {
    match value {
        Value::String(inf) if inf == "inf" => Ok(None),
        Value::Null => Ok(None),
        _ => match value.as_u64() {
            Some(count) if (1..=1_000_000).contains(&count) => Ok(Some(count)),
            _ => Err(invalid(
                param,
                "the most output tokens is a count from 1 or \"inf\"".into(),
            )),
        },
    }
}

pub fn invalid(param: &str, message: String) -> ApiError {
    ApiError::invalid(message).with_field("param", param)
}

/// At most 64 characters of a caller's text in a message.
pub fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_current_and_a_beta_session_update_configure_alike() {
        let mut current = Session::new(Kind::Realtime, None);
        current
            .update(&json!({"type": "transcription", "audio": {"input": {
                "format": {"type": "audio/pcmu"},
                "transcription": {"model": "gpt-4o-transcribe", "language": "en-US"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}}}))
            .unwrap();
        let mut beta = Session::new(Kind::Transcription, None);
        beta.update(&json!({"input_audio_format": "g711_ulaw",
            "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}))
            .unwrap();
        for session in [&current, &beta] {
            assert_eq!(session.kind, Kind::Transcription);
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
        assert_eq!(current.turn.silence_ms(), 800);
        assert_eq!(
            current.describe(false)["audio"]["input"]["turn_detection"]["eagerness"],
            "low"
        );
    }

    #[test]
    fn a_conversation_session_takes_voice_tools_and_instructions_in_both_shapes() {
        let weather = json!({"type": "function", "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}});
        let mut current = Session::new(Kind::Realtime, Some("local-chat"));
        current
            .update(&json!({"type": "realtime", "instructions": "Be brief.",
                "output_modalities": ["text"],
                "audio": {"output": {"format": {"type": "audio/pcma"}, "voice": "marin"},
                    "input": {"turn_detection": {"type": "server_vad", "create_response": false}}},
                "tools": [weather], "tool_choice": "required", "max_output_tokens": 200}))
            .unwrap();
        let mut beta = Session::new(Kind::Realtime, Some("local-chat"));
        beta.update(&json!({"instructions": "Be brief.", "modalities": ["text"],
            "output_audio_format": "g711_alaw", "voice": "marin",
            "turn_detection": {"type": "server_vad", "create_response": false},
            "tools": [weather], "tool_choice": "required", "max_response_output_tokens": 200}))
            .unwrap();
        for session in [&current, &beta] {
            assert_eq!(session.instructions, "Be brief.");
            assert!(!session.audio_out);
            assert_eq!(session.output_format, Format::Pcma);
            assert_eq!(session.voice, "marin");
            assert!(!session.create_response && session.interrupt_response);
            assert_eq!(session.tools.len(), 1);
            assert_eq!(session.tool_choice, "required");
            assert_eq!(session.max_output_tokens, Some(200));
            assert_eq!(session.model, "local-chat");
        }
        let shown = current.describe(false);
        assert_eq!(shown["type"], "realtime");
        assert_eq!(shown["audio"]["output"]["format"]["type"], "audio/pcma");
        assert_eq!(
            shown["audio"]["input"]["turn_detection"]["create_response"],
            false
        );
        let shown = beta.describe(true);
        assert_eq!(shown["output_audio_format"], "g711_alaw");
        assert_eq!(shown["modalities"], json!(["text"]));
        assert_eq!(shown["max_response_output_tokens"], 200);
    }

    #[test]
    fn a_bad_setting_is_an_error_naming_it_and_changes_nothing() {
        let mut session = Session::new(Kind::Realtime, None);
        let before = session.clone();
        for update in [
            json!({"type": "translation"}),
            json!({"instructions": "fine", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}),
            json!({"input_audio_format": "opus"}),
            json!({"output_audio_format": "mp3"}),
            json!({"audio": {"input": {"turn_detection": {"type": "push_to_talk"}}}}),
            json!({"audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": "yes"}}}}),
            json!({"audio": {"input": {"transcription": {"language": "english"}}}}),
            json!({"output_modalities": []}),
            json!({"output_modalities": ["video"]}),
            json!({"tools": [{"type": "function", "name": "no spaces"}]}),
            json!({"tools": [{"type": "mcp", "name": "x"}]}),
            json!({"tools": [{"name": "f", "parameters": "object"}]}),
            json!({"tools": vec![json!({"name": "f"}); MAX_TOOLS + 1]}),
            json!({"tool_choice": "sometimes"}),
            json!({"max_output_tokens": 0}),
            json!({"temperature": 9}),
            json!({"speed": 4}),
            json!({"instructions": "x".repeat(MAX_INSTRUCTIONS_CHARS + 1)}),
            json!("not an object"),
        ] {
            let error = session.update(&update).unwrap_err();
            assert!(error.fields.get("param").is_some(), "{update}");
        }
        assert_eq!(session, before, "unchanged");
    }
}
