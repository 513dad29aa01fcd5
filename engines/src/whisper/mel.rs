//! Whisper's log-mel front end, as `whisper.audio.log_mel_spectrogram`: 16 kHz, 400-point
//! STFT with a periodic Hann window, hop 160, centred with reflect padding, last frame
//! dropped, power spectrum, 80 Slaney mels, `log10(max(x, 1e-10))` clamped to 8 below
//! the maximum, then `(x + 4) / 4`.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use crate::fbank::mel_filterbank;

pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
pub const N_MELS: usize = 80;
/// Samples in one 30 s window, and its mel frames.
pub const WINDOW_SAMPLES: usize = 480_000;
pub const WINDOW_FRAMES: usize = WINDOW_SAMPLES / HOP;

/// Build once and share: the FFT plan, window and filters are reused.
pub struct LogMel {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    filters: Vec<f32>,
}

impl Default for LogMel {
    fn default() -> Self {
        LogMel::new()
    }
}

impl LogMel {
    pub fn new() -> LogMel {
        let window = (0..N_FFT)
            .map(|n| {
                let phase = 2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64;
                (0.5 - 0.5 * phase.cos()) as f32
            })
            .collect();
        LogMel {
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT),
            window,
            filters: mel_filterbank(N_MELS, N_FFT, 16_000.0),
        }
    }

    /// Features `[N_MELS, WINDOW_FRAMES]` (row-major, the encoder's layout) of up to
    /// 30 s of 16 kHz mono audio, zero-padded to 30 s as Whisper pads every window.
    pub fn window(&self, samples: &[f32]) -> Vec<f32> {
        self.frames(samples, WINDOW_FRAMES)
    }

    /// Features `[N_MELS, frames]`: the audio zero-padded (or cut) to `frames` hops, for
    /// an encoder run on less than a full window.
    pub fn frames(&self, samples: &[f32], frames: usize) -> Vec<f32> {
        let frames = frames.min(WINDOW_FRAMES);
        let padded = frames * HOP;
        let samples = &samples[..samples.len().min(padded)];
        let bins = N_FFT / 2 + 1;
        let half = N_FFT / 2;
        // Sample `i` of the reflect-padded, zero-extended signal.
        let at = |i: isize| -> f32 {
            let len = padded as isize;
            let j = if i < 0 {
                -i
            } else if i >= len {
                2 * (len - 1) - i
            } else {
                i
            };
            samples.get(j as usize).copied().unwrap_or(0.0)
        };
        // Frames whose whole span lies in the zero padding have no energy.
        let silent_from = (samples.len() + half).div_ceil(HOP);
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut power = vec![0.0f32; bins];
        let mut mel = vec![0.0f32; N_MELS * frames];
        let mut max = f32::NEG_INFINITY;
        for frame in 0..frames {
            let energies: Vec<f32> = if frame >= silent_from {
                vec![1e-10; N_MELS]
            } else {
                let start = (frame * HOP) as isize - half as isize;
                for (n, slot) in input.iter_mut().enumerate() {
                    *slot = at(start + n as isize) * self.window[n];
                }
                if self.fft.process(&mut input, &mut spectrum).is_err() {
                    return mel;
                }
                for (p, c) in power.iter_mut().zip(&spectrum) {
                    *p = c.norm_sqr();
                }
                self.filters
                    .chunks_exact(bins)
                    .map(|row| row.iter().zip(&power).map(|(w, p)| w * p).sum::<f32>())
                    .collect()
            };
            for (m, energy) in energies.into_iter().enumerate() {
                let value = energy.max(1e-10).log10();
                max = max.max(value);
                mel[m * frames + frame] = value;
            }
        }
        let floor = max - 8.0;
        for value in &mut mel {
            *value = (value.max(floor) + 4.0) / 4.0;
        }
        mel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_flat_and_padding_matches_computed_silence() {
        let mel = LogMel::new();
        let features = mel.window(&[]);
        assert_eq!(features.len(), N_MELS * WINDOW_FRAMES);
        // log10(1e-10) = -10 everywhere, so the floor is -18 and nothing is clamped.
        assert!(
            features
                .iter()
                .all(|v| (v - (-10.0 + 4.0) / 4.0).abs() < 1e-6)
        );
        // A frame computed from explicit zeros equals a skipped padding frame.
        let zeros = mel.window(&vec![0.0; 16_000]);
        assert_eq!(zeros, features);
    }

    #[test]
    fn a_tone_lands_in_its_mel_band_and_the_dynamic_range_is_eight() {
        let tone: Vec<f32> = (0..16_000)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin())
            .collect();
        let features = LogMel::new().window(&tone);
        let frame = 50;
        let column: Vec<f32> = (0..N_MELS)
            .map(|m| features[m * WINDOW_FRAMES + frame])
            .collect();
        let peak = column
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        // 1 kHz is mel 15 on the Slaney scale; Whisper's 80 bands span 0-8 kHz, so
        // its band is around index 80 * 15 / 45.2 ≈ 26.
        assert!((24..=28).contains(&peak), "peak band {peak}");
        let max = features.iter().copied().fold(f32::MIN, f32::max);
        let min = features.iter().copied().fold(f32::MAX, f32::min);
        assert!((max - min - 2.0).abs() < 1e-5, "range {}", max - min);
    }
}
