//! The d-vector embedder's front end, reproducing the training recipe (librosa
//! `melspectrogram`): 16 kHz, 512-point FFT, 400-sample periodic Hamming window centred
//! in the FFT frame, hop 160, no centring of the signal, power spectrum, 40 Slaney-scale
//! mels with Slaney area normalisation, then `log10(S + 1e-10)`.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

pub const N_FFT: usize = 512;
pub const WIN_LENGTH: usize = 400;
pub const HOP: usize = 160;
pub const N_MELS: usize = 40;
const SAMPLE_RATE: f64 = 16_000.0;

/// The Slaney mel scale: linear (`F_SP` Hz per mel) below 1 kHz, logarithmic above.
const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / log_step()
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (log_step() * (mel - MIN_LOG_MEL)).exp()
    } else {
        F_SP * mel
    }
}

/// `librosa.filters.mel(sr, n_fft, n_mels)`: (n_mels, n_fft/2+1), row-major.
pub fn mel_filterbank(n_mels: usize, n_fft: usize, sample_rate: f64) -> Vec<f32> {
    let bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..bins)
        .map(|i| i as f64 * sample_rate / n_fft as f64)
        .collect();
    let (low, high) = (hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0));
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(low + (high - low) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut weights = vec![0.0f32; n_mels * bins];
    for m in 0..n_mels {
        let (left, center, right) = (mel_f[m], mel_f[m + 1], mel_f[m + 2]);
        let norm = 2.0 / (right - left);
        for (k, f) in fft_freqs.iter().enumerate() {
            let lower = (f - left) / (center - left);
            let upper = (right - f) / (right - center);
            weights[m * bins + k] = (lower.min(upper).max(0.0) * norm) as f32;
        }
    }
    weights
}

/// Computes log-mel frames; build once and share (the FFT plan and window are reused).
pub struct Fbank {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    mel: Vec<f32>,
}

impl Default for Fbank {
    fn default() -> Self {
        Fbank::new()
    }
}

impl Fbank {
    pub fn new() -> Fbank {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        // Periodic Hamming of WIN_LENGTH, zero-padded on both sides to N_FFT.
        let mut window = vec![0.0f32; N_FFT];
        let offset = (N_FFT - WIN_LENGTH) / 2;
        for n in 0..WIN_LENGTH {
            let phase = 2.0 * std::f64::consts::PI * n as f64 / WIN_LENGTH as f64;
            window[offset + n] = (0.54 - 0.46 * phase.cos()) as f32;
        }
        Fbank {
            fft,
            window,
            mel: mel_filterbank(N_MELS, N_FFT, SAMPLE_RATE),
        }
    }

    /// Log-mel frames `(frames, N_MELS)` row-major of 16 kHz mono audio.
    pub fn compute(&self, samples: &[f32]) -> Vec<f32> {
        if samples.len() < N_FFT {
            return Vec::new();
        }
        let frames = 1 + (samples.len() - N_FFT) / HOP;
        let bins = N_FFT / 2 + 1;
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut power = vec![0.0f32; bins];
        let mut out = Vec::with_capacity(frames * N_MELS);
        for frame in 0..frames {
            let chunk = &samples[frame * HOP..frame * HOP + N_FFT];
            for ((slot, sample), weight) in input.iter_mut().zip(chunk).zip(&self.window) {
                *slot = sample * weight;
            }
            if self.fft.process(&mut input, &mut spectrum).is_err() {
                return Vec::new();
            }
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for m in 0..N_MELS {
                let row = &self.mel[m * bins..(m + 1) * bins];
                let energy: f32 = row.iter().zip(&power).map(|(w, p)| w * p).sum();
                out.push((energy + 1e-10).log10());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaney_scale_round_trips_and_filters_are_area_normalised() {
        for hz in [0.0, 500.0, 1000.0, 4000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-6);
        }
        let bank = mel_filterbank(N_MELS, N_FFT, SAMPLE_RATE);
        let bins = N_FFT / 2 + 1;
        // Every filter has weight, and the first filter peaks near its centre bin.
        for m in 0..N_MELS {
            assert!(
                bank[m * bins..(m + 1) * bins].iter().any(|w| *w > 0.0),
                "filter {m} empty"
            );
        }
        // Filter 0 spans 0 .. 73.57 .. 147.14 Hz; at bin 1 (31.25 Hz) librosa's recipe
        // gives 31.25 / 73.57 * 2 / 147.14.
        assert!(
            (f64::from(bank[1]) - 0.005_773_6).abs() < 1e-6,
            "{}",
            bank[1]
        );
    }

    #[test]
    fn frame_count_matches_no_centring() {
        let fbank = Fbank::new();
        let out = fbank.compute(&vec![0.1; 16_000]);
        assert_eq!(out.len() / N_MELS, 1 + (16_000 - N_FFT) / HOP);
    }
}
