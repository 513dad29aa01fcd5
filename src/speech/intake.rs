//! Audio intake: how much uploaded audio may sit in memory at once, how many whole
//! files decode at once, and the two ways the speech products decode: a transcription's
//! input to 16 kHz mono, and a reference clip (speaker enrollment, voice cloning)
//! measured by the media preflight. The limits are bounded so a burst of large uploads
//! waits or gets 503 with `Retry-After` instead of growing the process until the kernel
//! kills it.
//!
//! Uploads reserve their size (the declared `Content-Length`, else the upload limit)
//! from a byte budget before the body is read, and keep it until the request ends.
//! Decodes take one of a fixed number of slots (by default one per core) for the
//! blocking decode; waiting for a slot is bounded by the upload budget, since every
//! waiter holds its reservation.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use media::preflight::{self, Thresholds};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::config::LimitsConfig;
use crate::error::{ApiError, ApiResult, ErrorCode};

/// The budget is counted in KiB (a semaphore holds at most `u32::MAX` permits per
/// acquire, and byte precision buys nothing here).
const UNIT: usize = 1024;

/// Seconds decoded past the preflight's maximum duration: enough to measure a clip
/// that is too long, without decoding hours of it first.
const DECODE_PAST_MAXIMUM_SECONDS: f64 = 5.0;

pub struct AudioIntake {
    upload_bytes: Arc<Semaphore>,
    upload_budget_units: usize,
    decodes: Arc<Semaphore>,
    /// `[limits] max_upload_bytes`: also the most bytes a decode reads.
    max_upload_bytes: usize,
    /// `[limits] max_audio_seconds`: where a transcription's decode stops.
    max_audio_seconds: f64,
    /// The edge's engines, for their Silero VAD in reference-clip preflights (the energy
    /// detector otherwise).
    node: Option<Arc<engines::node::Node>>,
}

/// An upload's reservation; released when dropped.
pub struct UploadReservation {
    _permit: OwnedSemaphorePermit,
}

/// A decode slot; released when dropped.
pub struct DecodeSlot {
    _permit: OwnedSemaphorePermit,
}

impl AudioIntake {
    pub fn new(limits: &LimitsConfig, node: Option<Arc<engines::node::Node>>) -> AudioIntake {
        let units = limits.upload_memory_bytes.div_ceil(UNIT).max(1);
        AudioIntake {
            upload_bytes: Arc::new(Semaphore::new(units)),
            upload_budget_units: units,
            decodes: Arc::new(Semaphore::new(limits.concurrent_decodes.max(1))),
            max_upload_bytes: limits.max_upload_bytes,
            max_audio_seconds: limits.max_audio_seconds,
            node,
        }
    }

    /// `[limits] max_upload_bytes`, which the HTTP boundary reads bodies against.
    pub fn max_upload_bytes(&self) -> usize {
        self.max_upload_bytes
    }

    /// Reserves `bytes` of the upload budget, or 503 `SERVICE_UNAVAILABLE` with
    /// `Retry-After` when the budget is taken by uploads in flight.
    pub fn reserve_upload(&self, bytes: usize) -> ApiResult<UploadReservation> {
        let units = bytes.div_ceil(UNIT).clamp(1, self.upload_budget_units);
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        match self.upload_bytes.clone().try_acquire_many_owned(units) {
            Ok(permit) => Ok(UploadReservation { _permit: permit }),
            Err(_) => {
                metrics::counter!("scaigrid_uploads_shed_total").increment(1);
                Err(ApiError::new(
                    ErrorCode::SERVICE_UNAVAILABLE,
                    "too many uploads in flight: retry shortly",
                )
                .with_field("limit", (self.upload_budget_units * UNIT) as u64)
                .with_field("limit_unit", "bytes")
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")))
            }
        }
    }

    /// Waits for a decode slot.
    pub async fn decode_slot(&self) -> ApiResult<DecodeSlot> {
        let permit = self
            .decodes
            .clone()
            .acquire_owned()
            .await
            .map_err(ApiError::internal)?;
        Ok(DecodeSlot { _permit: permit })
    }

    /// Decodes any supported input to 16 kHz mono (on a blocking thread, in one of the
    /// decode slots), mixing and resampling as it decodes so memory is the output's;
    /// stops at `[limits] max_audio_seconds` and at its sample budget.
    pub async fn decode_16k(&self, bytes: Bytes, media_type: Option<&str>) -> ApiResult<Vec<f32>> {
        let options = media::DecodeOptions {
            limits: media::Limits::new(self.max_upload_bytes as u64, self.max_audio_seconds),
            raw_pcm: super::upload::raw_pcm(media_type),
            truncate: false,
        };
        let _slot = self.decode_slot().await?;
        let span = tracing::info_span!(
            "decode",
            bytes = bytes.len(),
            seconds = tracing::field::Empty
        );
        let decoding = span.clone();
        let decoded = tokio::task::spawn_blocking(move || {
            let decoded = media::decode_mono(&bytes, &options, 16_000);
            if let Ok(decoded) = &decoded {
                decoding.record("seconds", decoded.samples.len() as f64 / 16_000.0);
            }
            decoded
        })
        .instrument(span);
        decoded
            .await
            .map_err(ApiError::internal)?
            .map(|decoded| decoded.samples)
            .map_err(ApiError::from)
    }

    /// A reference clip's preflight block, and its 16 kHz mono samples when it passed:
    /// decoded against the upload limit, measured with the node's Silero VAD where it
    /// has one and the energy detector otherwise.
    pub async fn reference_clip(
        &self,
        bytes: Bytes,
        media_type: Option<&str>,
        thresholds: Thresholds,
    ) -> ApiResult<(Value, Option<Vec<f32>>)> {
        let options = media::DecodeOptions {
            limits: media::Limits::new(
                self.max_upload_bytes as u64,
                thresholds.max_duration_seconds + DECODE_PAST_MAXIMUM_SECONDS,
            ),
            raw_pcm: super::upload::raw_pcm(media_type),
            truncate: true,
        };
        let node = self.node.clone();
        let _slot = self.decode_slot().await?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intake(upload_memory_bytes: usize, concurrent_decodes: usize) -> AudioIntake {
        let limits = LimitsConfig {
            max_json_body_bytes: 1 << 20,
            max_upload_bytes: 1 << 20,
            max_audio_seconds: 60.0,
            upload_memory_bytes,
            concurrent_decodes,
        };
        AudioIntake::new(&limits, None)
    }

    #[test]
    fn the_upload_budget_sheds_beyond_its_size_and_frees_on_drop() {
        let intake = intake(10 * UNIT, 1);
        let first = intake.reserve_upload(6 * UNIT).unwrap();
        let error = intake.reserve_upload(6 * UNIT).err().unwrap();
        assert_eq!(error.code, ErrorCode::SERVICE_UNAVAILABLE);
        assert!(
            error
                .headers
                .iter()
                .any(|(name, _)| name == header::RETRY_AFTER)
        );
        drop(first);
        // Larger than the whole budget: takes all of it rather than never fitting.
        let whole = intake.reserve_upload(1 << 30).unwrap();
        assert!(intake.reserve_upload(1).is_err());
        drop(whole);
        assert!(intake.reserve_upload(1).is_ok());
    }

    #[tokio::test]
    async fn decode_slots_are_bounded() {
        let intake = intake(UNIT, 2);
        let a = intake.decode_slot().await.unwrap();
        let _b = intake.decode_slot().await.unwrap();
        assert_eq!(
            intake.decodes.available_permits(),
            0,
            "a third decode waits"
        );
        drop(a);
        assert_eq!(intake.decodes.available_permits(), 1);
        intake.decode_slot().await.unwrap();
    }
}
