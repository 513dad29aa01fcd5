//! Backend B: the managed relay, an OpenAI-compatible `/v1/audio/speech` upstream. It is
//! asked for WAV (lossless, any rate) with the configured model and voice; the answer
//! is decoded here and re-encoded to what the caller asked for.

use serde_json::json;

use crate::config::SpeakConfig;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::speech::upstream::Upstream;

pub struct Relay {
    upstream: Upstream,
    voice: String,
}

fn unavailable(detail: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::SCAISPEAK_BACKEND_UNAVAILABLE,
        format!("managed relay failed: {detail}"),
    )
}

impl Relay {
    /// `None` unless both the URL and the key are configured.
    pub fn new(config: &SpeakConfig) -> anyhow::Result<Option<Relay>> {
        Ok(Upstream::from_config(&config.relay)?.map(|upstream| Relay {
            upstream,
            voice: config.relay_voice.clone(),
        }))
    }

    /// Mono samples and their rate for `text`.
    pub async fn speak(&self, text: &str, speed: f32) -> ApiResult<(Vec<f32>, u32)> {
        let body = json!({
            "model": self.upstream.model,
            "input": text,
            "voice": self.voice,
            "response_format": "wav",
            "speed": speed,
        });
        let response = self
            .upstream
            .post("/v1/audio/speech")
            .json(&body)
            .send()
            .await
            .map_err(unavailable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(unavailable(format_args!("upstream answered {status}")));
        }
        let bytes = response.bytes().await.map_err(unavailable)?;
        let decoded = tokio::task::spawn_blocking(move || {
            let audio = media::decode(&bytes, &media::DecodeOptions::default())?;
            let rate = audio.sample_rate;
            Ok::<_, media::MediaError>((media::resample::to_mono(&audio, rate)?, rate))
        })
        .await
        .map_err(ApiError::internal)?;
        decoded.map_err(|e| unavailable(format_args!("upstream audio: {e}")))
    }
}
