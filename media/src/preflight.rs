//! Preflight of a reference clip (voice cloning, speaker enrollment): measures the clip
//! and names every check it fails, with exactly the contract's reason names.

use serde::Serialize;

use crate::audio::Audio;
use crate::decode::{CLIP_LEVEL, Decoded};
use crate::error::{MediaError, MediaResult};
use crate::resample;
use crate::vad::{VoiceActivity, power_dbfs};

/// Rate the analysis runs at (what the VAD and speech engines use).
const ANALYSIS_RATE: u32 = 16_000;
/// SNR reported when the non-speech parts are digital silence.
const MAX_SNR_DB: f64 = 100.0;

/// Thresholds; the defaults are the contract's for voice references.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Thresholds {
    pub min_duration_seconds: f64,
    pub max_duration_seconds: f64,
    pub min_voice_activity_ratio: f64,
    pub max_peak_dbfs: f64,
    pub min_snr_db: f64,
    pub min_sample_rate: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_duration_seconds: 5.0,
            max_duration_seconds: 25.0,
            min_voice_activity_ratio: 0.4,
            max_peak_dbfs: -0.3,
            min_snr_db: 15.0,
            min_sample_rate: 16_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub duration_seconds: f64,
    pub sample_rate: u32,
    pub channels: u16,
    pub peak_dbfs: f64,
    pub rms_dbfs: f64,
    pub clipping_ratio: f64,
    pub voice_activity_ratio: f64,
    pub snr_db: f64,
}

/// The contract's `preflight` block.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preflight {
    pub passed: bool,
    pub fail_reasons: Vec<&'static str>,
    pub metrics: Metrics,
    pub thresholds: Thresholds,
}

pub const DURATION_BELOW_MINIMUM: &str = "duration_below_minimum";
pub const DURATION_ABOVE_MAXIMUM: &str = "duration_above_maximum";
pub const LOW_VOICE_ACTIVITY_RATIO: &str = "low_voice_activity_ratio";
pub const PEAK_DBFS_ABOVE_THRESHOLD: &str = "peak_dbfs_above_threshold";
pub const SNR_BELOW_THRESHOLD: &str = "snr_below_threshold";
pub const SAMPLE_RATE_BELOW_MINIMUM: &str = "sample_rate_below_minimum";

fn dbfs(amplitude: f64) -> f64 {
    (20.0 * amplitude.max(1e-6).log10()).max(-120.0)
}

/// Measures `audio` and checks it against `thresholds`.
pub fn analyse(
    audio: &Audio,
    thresholds: &Thresholds,
    vad: &mut dyn VoiceActivity,
) -> MediaResult<Preflight> {
    let peak = audio.samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    let clipped = audio
        .samples
        .iter()
        .filter(|s| s.abs() >= CLIP_LEVEL)
        .count();
    let source = Source {
        duration_seconds: audio.duration_seconds(),
        sample_rate: audio.sample_rate,
        channels: audio.channels,
        peak,
        clipping_ratio: clipped as f64 / audio.samples.len().max(1) as f64,
    };
    let mono = resample::to_mono(audio, ANALYSIS_RATE)?;
    measure(&mono, &source, thresholds, vad)
}

/// Measures a clip decoded by [`crate::decode::decode_mono`] at the analysis rate (16 kHz).
/// A clip cut at the decode's duration limit reports the duration it was cut at, which
/// is above any maximum the limit was set past.
pub fn analyse_decoded(
    decoded: &Decoded,
    thresholds: &Thresholds,
    vad: &mut dyn VoiceActivity,
) -> MediaResult<Preflight> {
    if decoded.rate != ANALYSIS_RATE {
        return Err(MediaError::InvalidParameters(format!(
            "preflight analyses {ANALYSIS_RATE} Hz, not {} Hz",
            decoded.rate
        )));
    }
    let source = Source {
        duration_seconds: decoded.duration_seconds(),
        sample_rate: decoded.source_rate,
        channels: decoded.source_channels,
        peak: decoded.peak,
        clipping_ratio: decoded.clipped_share,
    };
    measure(&decoded.samples, &source, thresholds, vad)
}

/// What the checks need of the source besides its mono analysis signal.
struct Source {
    duration_seconds: f64,
    sample_rate: u32,
    channels: u16,
    peak: f32,
    clipping_ratio: f64,
}

fn measure(
    mono: &[f32],
    source: &Source,
    thresholds: &Thresholds,
    vad: &mut dyn VoiceActivity,
) -> MediaResult<Preflight> {
    let rms_dbfs = f64::from(power_dbfs(mono));

    let frames = vad.detect(mono, ANALYSIS_RATE)?;
    let (mut speech_power, mut speech_n, mut noise_power, mut noise_n) =
        (0.0f64, 0usize, 0.0f64, 0usize);
    for (frame, is_speech) in mono.chunks(frames.frame_len.max(1)).zip(&frames.speech) {
        let power = frame
            .iter()
            .map(|s| f64::from(*s) * f64::from(*s))
            .sum::<f64>()
            / frame.len() as f64;
        if *is_speech {
            speech_power += power;
            speech_n += 1;
        } else {
            noise_power += power;
            noise_n += 1;
        }
    }
    let snr_db = match (speech_n, noise_n) {
        (0, _) => 0.0,
        (_, 0) => MAX_SNR_DB,
        _ => {
            let speech = speech_power / speech_n as f64;
            let noise = noise_power / noise_n as f64;
            if noise <= 1e-12 {
                MAX_SNR_DB
            } else {
                (10.0 * (speech / noise).log10()).clamp(-MAX_SNR_DB, MAX_SNR_DB)
            }
        }
    };

    let metrics = Metrics {
        duration_seconds: source.duration_seconds,
        sample_rate: source.sample_rate,
        channels: source.channels,
        peak_dbfs: dbfs(f64::from(source.peak)),
        rms_dbfs,
        clipping_ratio: source.clipping_ratio,
        voice_activity_ratio: frames.speech_ratio(),
        snr_db,
    };
    let checks = [
        (
            metrics.duration_seconds < thresholds.min_duration_seconds,
            DURATION_BELOW_MINIMUM,
        ),
        (
            metrics.duration_seconds > thresholds.max_duration_seconds,
            DURATION_ABOVE_MAXIMUM,
        ),
        (
            metrics.voice_activity_ratio < thresholds.min_voice_activity_ratio,
            LOW_VOICE_ACTIVITY_RATIO,
        ),
        (
            metrics.peak_dbfs > thresholds.max_peak_dbfs,
            PEAK_DBFS_ABOVE_THRESHOLD,
        ),
        (metrics.snr_db < thresholds.min_snr_db, SNR_BELOW_THRESHOLD),
        (
            metrics.sample_rate < thresholds.min_sample_rate,
            SAMPLE_RATE_BELOW_MINIMUM,
        ),
    ];
    let fail_reasons: Vec<&'static str> = checks
        .iter()
        .filter(|(failed, _)| *failed)
        .map(|(_, name)| *name)
        .collect();
    Ok(Preflight {
        passed: fail_reasons.is_empty(),
        fail_reasons,
        metrics,
        thresholds: *thresholds,
    })
}
