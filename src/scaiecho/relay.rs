//! Backend B: the managed relay, an OpenAI-compatible `/v1/audio/transcriptions`
//! upstream (URL and key from config). Audio goes up as 16 kHz mono WAV whatever the
//! client sent, so any upstream of that API accepts it. The relay has no diarization.

use serde::Deserialize;

use super::format::WordOut;
use crate::config::RelayConfig;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::speech::upstream::Upstream;

pub struct Relay {
    upstream: Upstream,
}

/// What the upstream said: text and segments (seconds from the start).
pub struct RelayResult {
    pub text: String,
    pub language: Option<String>,
    pub segments: Vec<(f64, f64, String)>,
    /// Word timings when asked for and the upstream gave them.
    pub words: Vec<WordOut>,
}

#[derive(Deserialize)]
struct Verbose {
    text: String,
    language: Option<String>,
    #[serde(default)]
    segments: Vec<VerboseSegment>,
    #[serde(default)]
    words: Vec<VerboseWord>,
}

#[derive(Deserialize)]
struct VerboseWord {
    word: String,
    start: f64,
    end: f64,
}

#[derive(Deserialize)]
struct VerboseSegment {
    start: f64,
    end: f64,
    text: String,
}

fn unavailable(detail: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::SCAIECHO_BACKEND_UNAVAILABLE,
        format!("managed relay failed: {detail}"),
    )
}

impl Relay {
    /// `None` unless both the URL and the key are configured.
    pub fn new(config: &RelayConfig) -> anyhow::Result<Option<Relay>> {
        Ok(Upstream::from_config(config)?.map(|upstream| Relay { upstream }))
    }

    /// `words`: ask the upstream for word timings too (`timestamp_granularities[]`).
    pub async fn transcribe(
        &self,
        wav: Vec<u8>,
        language: Option<&str>,
        words: bool,
    ) -> ApiResult<RelayResult> {
        let file = reqwest::multipart::Part::bytes(wav)
            .file_name("audio.wav")
            .mime_str("audio/wav")
            .map_err(unavailable)?;
        let mut form = reqwest::multipart::Form::new()
            .part("file", file)
            .text("model", self.upstream.model.clone())
            .text("response_format", "verbose_json");
        if let Some(language) = language {
            form = form.text("language", language.to_owned());
        }
        if words {
            form = form
                .text("timestamp_granularities[]", "segment")
                .text("timestamp_granularities[]", "word");
        }
        let response = self
            .upstream
            .post("/v1/audio/transcriptions")
            .multipart(form)
            .send()
            .await
            .map_err(unavailable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(unavailable(format_args!("upstream answered {status}")));
        }
        let body: Verbose = response.json().await.map_err(unavailable)?;
        Ok(RelayResult {
            text: body.text.trim().to_owned(),
            language: body.language,
            segments: body
                .segments
                .into_iter()
                .map(|s| (s.start, s.end, s.text.trim().to_owned()))
                .collect(),
            words: body
                .words
                .into_iter()
                .map(|w| WordOut {
                    word: w.word.trim().to_owned(),
                    start: w.start,
                    end: w.end,
                    probability: None,
                    speaker_label: None,
                })
                .collect(),
        })
    }
}
