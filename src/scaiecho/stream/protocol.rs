//! The `/stream/transcribe` frames (SPEC "ScaiEcho"): the client's `open` and control
//! frames, parsed and validated; the server's `ready`, `delta` and `done` frames
//! serialized (`error` frames are `ws::error_frame`). Pure: no sockets.

use media::stream::StreamFormat;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::scaiecho::Timestamps;
use crate::scaiecho::format::WordOut;
use crate::scaiecho::policy::Preference;

/// Shortest and longest `chunk_seconds` honoured.
const CHUNK_SECONDS: std::ops::RangeInclusive<f64> = 0.5..=30.0;

/// Shortest and longest pause (`silence_ms`) that ends an utterance: two VAD frames, and
/// the longest utterance (then only `flush` or the utterance's length end one).
pub const SILENCE_MS: std::ops::RangeInclusive<u32> = 64..=26_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenFrame {
    #[serde(rename = "type")]
    _type: String,
    #[serde(default = "default_media_type")]
    media_type: String,
    language: Option<String>,
    #[serde(default)]
    diarize: bool,
    chunk_seconds: Option<f64>,
    backend_preference: Option<String>,
    timestamps: Option<String>,
    model: Option<String>,
    silence_ms: Option<u32>,
    #[serde(default)]
    speech_events: bool,
}

fn default_media_type() -> String {
    "audio/wav".to_owned()
}

/// A validated `open` frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Open {
    pub media_type: String,
    pub format: StreamFormat,
    pub language: Option<String>,
    pub diarize: bool,
    pub chunk_seconds: f64,
    pub backend_preference: Option<Preference>,
    /// `timestamps: "word"`: finals carry their words.
    pub words: bool,
    /// A balancer's name binds the stream to one of its instances (see
    /// `speech::balancers`).
    pub model: Option<String>,
    /// Silence that ends an utterance, when the client chose it (`silence_ms`;
    /// Deepgram's `endpointing`, OpenAI's turn detection); the endpointer's 256 ms
    /// otherwise.
    pub silence_ms: Option<u32>,
    /// `speech_events: true`: a `speech_started` frame as soon as the VAD hears an
    /// utterance begin (before its first transcript).
    pub speech_events: bool,
}

/// A client text frame after `open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// End the current utterance now (its final comes next).
    Flush,
    /// End of audio: finish every final, send `done`, close.
    Close,
}

/// Parses the first frame, which must be `open`.
pub fn parse_open(text: &str) -> ApiResult<Open> {
    let kind = crate::ws::frame_type(text)?;
    if kind != "open" {
        return Err(ApiError::invalid(format!(
            "the first frame must be `open`, not `{kind}`"
        )));
    }
    let frame: OpenFrame =
        serde_json::from_str(text).map_err(|e| ApiError::invalid(format!("bad `open`: {e}")))?;
    let format = StreamFormat::from_media_type(&frame.media_type).map_err(|e| {
        ApiError::new(ErrorCode::AUDIO_FORMAT_UNSUPPORTED, e.to_string())
            .with_field("field", "media_type")
    })?;
    let language = frame.language.map(|l| l.to_ascii_lowercase());
    if let Some(language) = &language
        && !(2..=3).contains(&language.len())
    {
        return Err(
            ApiError::invalid(format!("language `{language}` is not a language code"))
                .with_field("field", "language"),
        );
    }
    let chunk_seconds = frame.chunk_seconds.unwrap_or(2.0);
    if !CHUNK_SECONDS.contains(&chunk_seconds) {
        return Err(ApiError::invalid(format!(
            "chunk_seconds must be between {} and {}",
            CHUNK_SECONDS.start(),
            CHUNK_SECONDS.end()
        ))
        .with_field("field", "chunk_seconds"));
    }
    if let Some(silence) = frame.silence_ms
        && !SILENCE_MS.contains(&silence)
    {
        return Err(ApiError::invalid(format!(
            "silence_ms must be between {} and {}",
            SILENCE_MS.start(),
            SILENCE_MS.end()
        ))
        .with_field("field", "silence_ms"));
    }
    let timestamps = frame
        .timestamps
        .as_deref()
        .map(Timestamps::parse)
        .transpose()?;
    Ok(Open {
        words: timestamps == Some(Timestamps::Word),
        media_type: frame.media_type,
        format,
        language,
        diarize: frame.diarize,
        chunk_seconds,
        backend_preference: frame
            .backend_preference
            .as_deref()
            .map(Preference::parse)
            .transpose()?,
        model: frame.model,
        silence_ms: frame.silence_ms,
        speech_events: frame.speech_events,
    })
}

/// Parses a text frame after `open`.
pub fn parse_control(text: &str) -> ApiResult<Control> {
    match crate::ws::frame_type(text)?.as_str() {
        "flush" => Ok(Control::Flush),
        "close" => Ok(Control::Close),
        "open" => Err(ApiError::invalid("the stream is already open")),
        other => Err(ApiError::invalid(format!(
            "unknown control frame `{other}` (expected `flush` or `close`; audio goes in binary frames)"
        ))),
    }
}

/// A frame the server sends.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    Ready {
        session_id: String,
        backend: String,
        media_type: String,
        chunk_seconds: f64,
        diarize: bool,
    },
    Delta(Delta),
    /// The VAD heard utterance `utterance` begin at `start` (stream seconds); sent when
    /// `open` asked for `speech_events`.
    #[serde(rename = "speech_started")]
    SpeechStarted {
        utterance: u64,
        start: f64,
    },
    Done {
        usage: Usage,
        utterances: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Delta {
    pub text: String,
    /// Stream time in seconds.
    pub start: f64,
    pub end: f64,
    pub is_final: bool,
    /// Utterance number, from 0: interim deltas are replaced by later ones of the same
    /// utterance, the final closes it.
    pub utterance: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speaker_label: Option<String>,
    /// The language heard (detected by a multilingual model, else the one asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// A final's words on the stream clock, when `open` asked for `timestamps: "word"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<WordOut>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Usage {
    pub audio_seconds: f64,
}

/// A frame the session sent, read back by the links that speak another protocol over
/// the session (`scaiecho::deepgram`, `realtime`).
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    Delta(Delta),
    SpeechStarted {
        utterance: u64,
        start: f64,
    },
    Done {
        audio_seconds: f64,
    },
    Error {
        code: String,
        message: String,
        request_id: Option<String>,
    },
    /// `ready`, or anything not JSON.
    Other,
}

impl Sent {
    pub fn read(text: &str) -> Sent {
        let Ok(frame) = serde_json::from_str::<serde_json::Value>(text) else {
            return Sent::Other;
        };
        let text = |field: &str| frame[field].as_str().map(str::to_owned);
        match frame["type"].as_str() {
            Some("delta") => match serde_json::from_value::<Delta>(frame) {
                Ok(delta) => Sent::Delta(delta),
                Err(_) => Sent::Other,
            },
            Some("speech_started") => Sent::SpeechStarted {
                utterance: frame["utterance"].as_u64().unwrap_or_default(),
                start: frame["start"].as_f64().unwrap_or_default(),
            },
            Some("done") => Sent::Done {
                audio_seconds: frame["usage"]["audio_seconds"].as_f64().unwrap_or_default(),
            },
            Some("error") => Sent::Error {
                code: text("code").unwrap_or_else(|| "INTERNAL_ERROR".to_owned()),
                message: text("message").unwrap_or_default(),
                request_id: text("request_id"),
            },
            _ => Sent::Other,
        }
    }
}

impl ServerFrame {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"type":"error"}"#.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_takes_the_spec_example_and_defaults() {
        let open = parse_open(
            r#"{"type":"open","media_type":"audio/pcm;rate=16000","language":"EN",
                "diarize":true,"chunk_seconds":1.5,"backend_preference":"any"}"#,
        )
        .unwrap();
        assert_eq!(
            open.format,
            StreamFormat::Pcm {
                sample_rate: 16_000,
                channels: 1
            }
        );
        assert_eq!(open.language.as_deref(), Some("en"));
        assert!(open.diarize);
        assert_eq!(open.chunk_seconds, 1.5);
        assert_eq!(open.backend_preference, Some(Preference::Any));
        let minimal = parse_open(r#"{"type":"open"}"#).unwrap();
        assert_eq!(minimal.format, StreamFormat::Wav);
        assert_eq!(minimal.chunk_seconds, 2.0);
        assert!(!minimal.diarize);
    }

    #[test]
    fn bad_open_frames_are_invalid_request_or_unsupported() {
        let code = |text: &str| parse_open(text).unwrap_err().code;
        assert_eq!(code("not json"), ErrorCode::INVALID_REQUEST);
        assert_eq!(code(r#"{"type":"flush"}"#), ErrorCode::INVALID_REQUEST);
        assert_eq!(
            code(r#"{"type":"open","media_type":"video/mp4"}"#),
            ErrorCode::AUDIO_FORMAT_UNSUPPORTED
        );
        assert_eq!(
            code(r#"{"type":"open","chunk_seconds":0}"#),
            ErrorCode::INVALID_REQUEST
        );
        for silence in ["10", "26001", "-1", "\"long\""] {
            let open = format!(r#"{{"type":"open","silence_ms":{silence}}}"#);
            assert_eq!(code(&open), ErrorCode::INVALID_REQUEST, "{open}");
        }
        let open = parse_open(r#"{"type":"open","silence_ms":700}"#).unwrap();
        assert_eq!(open.silence_ms, Some(700));
        assert_eq!(
            code(r#"{"type":"open","language":"english"}"#),
            ErrorCode::INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"type":"open","backend_preference":"fastest"}"#),
            ErrorCode::INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"type":"open","sample_rate":8000}"#),
            ErrorCode::INVALID_REQUEST
        );
        // Both codes close the socket with 4400.
        assert_eq!(
            ErrorCode::AUDIO_FORMAT_UNSUPPORTED.ws_close_code(),
            Some(4400)
        );
    }

    #[test]
    fn control_frames_and_server_frames() {
        assert_eq!(
            parse_control(r#"{"type":"flush"}"#).unwrap(),
            Control::Flush
        );
        assert_eq!(
            parse_control(r#"{"type":"close"}"#).unwrap(),
            Control::Close
        );
        assert!(parse_control(r#"{"type":"open"}"#).is_err());
        assert!(parse_control("AAAA").is_err());
        let delta = ServerFrame::Delta(Delta {
            text: "hi".into(),
            start: 0.5,
            end: 1.25,
            is_final: true,
            utterance: 0,
            speaker_label: None,
            language: Some("en".into()),
            words: None,
        });
        let value: serde_json::Value = serde_json::from_str(&delta.to_json()).unwrap();
        assert_eq!(value["type"], "delta");
        assert_eq!(value["is_final"], true);
        assert_eq!(value["language"], "en");
        assert!(value.get("speaker_label").is_none());
        assert!(value.get("words").is_none());
        let done = ServerFrame::Done {
            usage: Usage { audio_seconds: 3.0 },
            utterances: 1,
        };
        assert!(done.to_json().contains(r#""type":"done""#));
    }
}
