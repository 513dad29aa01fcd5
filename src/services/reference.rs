//! Reference clips (speaker enrollment, voice cloning): decoded against the upload
//! limit and measured by the media preflight, with the node's Silero VAD where it has
//! one and the energy detector otherwise.

use axum::body::Bytes;
use media::preflight::{self, Thresholds};
use serde_json::Value;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

/// The preflight block of a clip, and its 16 kHz mono samples when it passed.
pub async fn check(
    state: &AppState,
    bytes: Bytes,
    media_type: Option<&str>,
    thresholds: Thresholds,
) -> ApiResult<(Value, Option<Vec<f32>>)> {
    let options = media::DecodeOptions {
        limits: media::Limits {
            max_bytes: state.config.limits.max_upload_bytes as u64,
            ..media::Limits::default()
        },
        raw_pcm: crate::scaiecho::upload::raw_pcm(media_type),
    };
    let node = state.node.clone();
    tokio::task::spawn_blocking(move || -> ApiResult<(Value, Option<Vec<f32>>)> {
        let audio = media::decode(&bytes, &options)?;
        let report = match node.as_ref().and_then(|n| n.vad.as_ref()) {
            Some(vad) => preflight::analyse(
                &audio,
                &thresholds,
                &mut engines::silero::SileroDetector {
                    vad,
                    threshold: 0.5,
                },
            ),
            None => preflight::analyse(&audio, &thresholds, &mut media::vad::EnergyVad::default()),
        }?;
        let block = serde_json::to_value(&report).unwrap_or(Value::Null);
        let samples = match report.passed {
            true => Some(media::resample::to_mono(&audio, 16_000)?),
            false => None,
        };
        Ok((block, samples))
    })
    .await
    .map_err(ApiError::internal)?
}
