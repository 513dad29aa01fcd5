//! The `/stream/speak` frames (SPEC "ScaiSpeak"): the client's `open` and text
//! frames parsed into typed frames, the server's `ready`, `interrupted` and `done`
//! frames serialized (`error` frames are `ws::error_frame`). Pure: no sockets; fuzzed by
//! `fuzz/` `ws_frames`. The WebRTC control socket carries the same frames.

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::scaispeak::output::{Codec, OutputRequest};
use crate::speech::backends::Preference;

/// The `open` frame (WebRTC sessions take the same fields as their options).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenFrame {
    #[serde(rename = "type")]
    pub kind: String,
    pub voice: Option<String>,
    #[serde(default)]
    pub output: OutputRequest,
    pub speed: Option<f32>,
    pub backend_preference: Option<Preference>,
    #[serde(default)]
    pub pace: bool,
    /// A balancer's name binds the stream to one of its instances (see
    /// `speech::balancers`).
    pub model: Option<String>,
}

/// A text frame after `open`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientFrame {
    /// A piece of text; with `interrupt: true`, barge-in first.
    Text {
        #[serde(default)]
        text: String,
        #[serde(default)]
        interrupt: bool,
    },
    /// Barge-in: drop what is being spoken.
    Interrupt,
    /// Speak what is pending now.
    Flush,
    /// Speak the rest, then `done`.
    Close,
}

/// The `type`s [`ClientFrame`] takes.
const CLIENT_FRAMES: &[&str] = &["text", "interrupt", "flush", "close"];

/// Parses the `open` frame.
pub fn parse_open(text: &str) -> ApiResult<OpenFrame> {
    let frame: OpenFrame =
        serde_json::from_str(text).map_err(|e| ApiError::invalid(format!("bad `open`: {e}")))?;
    if frame.kind != "open" {
        return Err(ApiError::invalid(format!(
            "the first frame must be `open`, not `{}`",
            frame.kind
        )));
    }
    Ok(frame)
}

/// Parses a text frame after `open`.
pub fn parse_client_frame(text: &str) -> ApiResult<ClientFrame> {
    let kind = crate::ws::frame_type(text)?;
    if !CLIENT_FRAMES.contains(&kind.as_str()) {
        return Err(ApiError::invalid(format!(
            "unknown frame `{kind}` (expected `text`, `interrupt`, `flush` or `close`)"
        )));
    }
    serde_json::from_str(text).map_err(|e| ApiError::invalid(format!("bad `{kind}`: {e}")))
}

/// A frame the server sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    Ready {
        session_id: String,
        voice: String,
        backend: &'static str,
        codec: Codec,
        sample_rate: u32,
        frame_ms: u64,
        pace: bool,
    },
    /// Barge-in happened; this many frames were dropped unsent.
    Interrupted {
        dropped_frames: usize,
    },
    Done {
        usage: Usage,
    },
}

/// What a stream used, in its `done` frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Usage {
    pub characters: usize,
    /// Seconds of audio, to the millisecond.
    pub audio_seconds: f64,
}

impl ServerFrame {
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_are_typed_and_bad_ones_say_why() {
        assert_eq!(
            parse_client_frame(r#"{"type":"text","text":"Hi.","interrupt":true}"#).unwrap(),
            ClientFrame::Text {
                text: "Hi.".into(),
                interrupt: true
            }
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"text"}"#).unwrap(),
            ClientFrame::Text {
                text: String::new(),
                interrupt: false
            }
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"flush"}"#).unwrap(),
            ClientFrame::Flush
        );
        let unknown = parse_client_frame(r#"{"type":"shout"}"#).unwrap_err();
        assert!(
            unknown.message.contains("unknown frame `shout`"),
            "{}",
            unknown.message
        );
        let bad = parse_client_frame(r#"{"type":"text","text":7}"#).unwrap_err();
        assert!(bad.message.starts_with("bad `text`"), "{}", bad.message);
        assert!(parse_client_frame("not json").is_err());
        assert!(parse_open(r#"{"type":"text"}"#).is_err());
        assert!(
            parse_open(r#"{"type":"open","voice":"x","pace":true}"#)
                .unwrap()
                .pace
        );
    }

    #[test]
    fn server_frames_keep_their_wire_shape() {
        let ready = ServerFrame::Ready {
            session_id: "spk_1".into(),
            voice: "v".into(),
            backend: "A",
            codec: Codec::Opus,
            sample_rate: 48_000,
            frame_ms: 20,
            pace: false,
        };
        let value: serde_json::Value = serde_json::from_str(&ready.to_text()).unwrap();
        assert_eq!(value["type"], "ready");
        assert_eq!(value["codec"], "opus");
        assert_eq!(value["sample_rate"], 48_000);
        let done = ServerFrame::Done {
            usage: Usage {
                characters: 3,
                audio_seconds: 0.25,
            },
        };
        assert_eq!(
            done.to_text(),
            r#"{"type":"done","usage":{"characters":3,"audio_seconds":0.25}}"#
        );
        assert_eq!(
            ServerFrame::Interrupted { dropped_frames: 4 }.to_text(),
            r#"{"type":"interrupted","dropped_frames":4}"#
        );
    }
}
