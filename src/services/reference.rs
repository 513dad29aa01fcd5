//! Reference clips (speaker enrollment, voice cloning): decoded against the upload
//! limit and measured by the media preflight, with the node's Silero VAD where it has
//! one and the energy detector otherwise.

use axum::body::Bytes;
use media::preflight::{self, Thresholds};
use serde_json::Value;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

/// Seconds decoded past the preflight's maximum duration: enough to measure a clip
/// that is too long, without decoding hours of it first.
const DECODE_PAST_MAXIMUM_SECONDS: f64 = 5.0;

/// The preflight block of a clip, and its 16 kHz mono samples when it passed.
pub async fn check(
    state: &AppState,
    bytes: Bytes,
    media_type: Option<&str>,
    thresholds: Thresholds,
) -> ApiResult<(Value, Option<Vec<f32>>)> {
    let options = media::DecodeOptions {
        limits: media::Limits::new(
            state.config.limits.max_upload_bytes as u64,
            thresholds.max_duration_seconds + DECODE_PAST_MAXIMUM_SECONDS,
        ),
        raw_pcm: crate::scaiecho::upload::raw_pcm(media_type),
        truncate: true,
    };
    let node = state.node.clone();
    let _slot = state.intake.decode_slot().await?;
    tokio::task::spawn_blocking(move || -> ApiResult<(Value, Option<Vec<f32>>)> {
        let decoded = media::decode_mono(&bytes, &options, 16_000)?;
        let report = match node.as_ref().and_then(|n| n.vad.as_ref()) {
            Some(vad) => preflight::analyse_decoded(
                &decoded,
                &thresholds,
                &mut engines::silero::SileroDetector {
                    vad,
                    threshold: 0.5,
                },
            ),
            None => preflight::analyse_decoded(
                &decoded,
                &thresholds,
                &mut media::vad::EnergyVad::default(),
            ),
        }?;
        let block = serde_json::to_value(&report).unwrap_or(Value::Null);
        let samples = report.passed.then_some(decoded.samples);
        Ok((block, samples))
    })
    .await
    .map_err(ApiError::internal)?
}
