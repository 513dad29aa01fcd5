//! Voice activity: the small trait preflight (and later streaming) uses, and the
//! energy-based detector that serves until the Silero engine plugs in from `engines/`.

use crate::error::MediaResult;

/// Per-frame speech decisions over a mono signal.
#[derive(Debug, Clone, PartialEq)]
pub struct VadFrames {
    /// Samples per decision.
    pub frame_len: usize,
    pub speech: Vec<bool>,
}

impl VadFrames {
    pub fn speech_ratio(&self) -> f64 {
        if self.speech.is_empty() {
            return 0.0;
        }
        self.speech.iter().filter(|s| **s).count() as f64 / self.speech.len() as f64
    }
}

/// A voice-activity detector over mono audio at `sample_rate` (16 kHz in practice).
/// A model-backed detector can fail; the error says why (`MediaError::Analysis`).
pub trait VoiceActivity {
    fn detect(&mut self, samples: &[f32], sample_rate: u32) -> MediaResult<VadFrames>;
}

/// Frame energy against an adaptive noise floor: a frame is speech when it is louder
/// than the quiet end of the clip (10th percentile) by a margin and louder than
/// `absolute_floor_dbfs`. The margin is `margin_db`, narrowed to half the clip's dynamic
/// range (10th to 90th percentile, at least `min_margin_db`) so speech in steady noise
/// is still found.
#[derive(Debug, Clone, Copy)]
pub struct EnergyVad {
    pub frame_ms: u32,
    pub margin_db: f32,
    pub min_margin_db: f32,
    pub absolute_floor_dbfs: f32,
}

impl Default for EnergyVad {
    fn default() -> Self {
        EnergyVad {
            frame_ms: 30,
            margin_db: 10.0,
            min_margin_db: 3.0,
            absolute_floor_dbfs: -45.0,
        }
    }
}

/// Mean power of a frame in dBFS (a full-scale sine is -3 dBFS); silence is -120.
pub fn power_dbfs(frame: &[f32]) -> f32 {
    if frame.is_empty() {
        return -120.0;
    }
    let power = frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32;
    (10.0 * power.max(1e-12).log10()).max(-120.0)
}

impl VoiceActivity for EnergyVad {
    fn detect(&mut self, samples: &[f32], sample_rate: u32) -> MediaResult<VadFrames> {
        let frame_len = (sample_rate as usize * self.frame_ms as usize / 1000).max(1);
        let energies: Vec<f32> = samples.chunks(frame_len).map(power_dbfs).collect();
        // The noise floor: the 10th percentile of frame energies.
        let mut sorted = energies.clone();
        sorted.sort_by(f32::total_cmp);
        let percentile = |p: usize| {
            sorted
                .get(sorted.len() * p / 100)
                .copied()
                .unwrap_or(-120.0)
        };
        let (floor, loud) = (percentile(10), percentile(90));
        let margin = (0.5 * (loud - floor)).clamp(self.min_margin_db, self.margin_db);
        let threshold = (floor + margin).max(self.absolute_floor_dbfs);
        Ok(VadFrames {
            frame_len,
            speech: energies.iter().map(|e| *e > threshold).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_bursts_in_silence_are_speech() {
        let rate = 16_000;
        let mut samples = vec![0.0f32; rate as usize];
        for (i, s) in samples.iter_mut().enumerate().skip(4000).take(8000) {
            *s = (i as f32 * 0.1).sin() * 0.3;
        }
        let frames = EnergyVad::default().detect(&samples, rate).unwrap();
        let ratio = frames.speech_ratio();
        assert!((ratio - 0.5).abs() < 0.06, "ratio {ratio}");
        assert!(!frames.speech[0] && frames.speech[frames.speech.len() / 2]);
    }

    #[test]
    fn steady_noise_alone_is_not_speech() {
        let mut state = 1u32;
        let noise: Vec<f32> = (0..16_000)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect();
        let ratio = EnergyVad::default()
            .detect(&noise, 16_000)
            .unwrap()
            .speech_ratio();
        assert!(ratio < 0.05, "ratio {ratio}");
    }

    #[test]
    fn silence_has_no_speech() {
        let frames = EnergyVad::default().detect(&[0.0; 16_000], 16_000).unwrap();
        assert_eq!(frames.speech_ratio(), 0.0);
    }
}
