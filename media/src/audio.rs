//! Decoded audio: interleaved f32 samples in [-1, 1] with their rate and channel count,
//! and the shapes any input may declare.

use crate::error::{MediaError, MediaResult};

/// Lowest sample rate taken from any input (declared PCM, container headers, streams).
pub const MIN_SAMPLE_RATE: u32 = 8_000;
/// Highest sample rate taken from any input. Bounding the rate bounds the resampler: its
/// FFT is sized from `rate / gcd(rate, target)`, so an unbounded declared rate sized it
/// from the attacker's number (`rate=4294967291` asked for gigabytes).
pub const MAX_SAMPLE_RATE: u32 = 192_000;
/// Most channels taken from any input (7.1 and ambisonics fit; a header claiming 65,535
/// channels does not).
pub const MAX_CHANNELS: u16 = 32;

/// Whether a declared shape is one this crate decodes: rates outside
/// [`MIN_SAMPLE_RATE`]..=[`MAX_SAMPLE_RATE`] or channels outside 1..=[`MAX_CHANNELS`] are
/// `Unsupported`, before any work is sized from them.
pub fn check_shape(sample_rate: u32, channels: u16) -> MediaResult<()> {
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&sample_rate) {
        return Err(MediaError::Unsupported(format!(
            "sample rate {sample_rate} Hz is outside {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE}"
        )));
    }
    if !(1..=MAX_CHANNELS).contains(&channels) {
        return Err(MediaError::Unsupported(format!(
            "{channels} channels is outside 1..={MAX_CHANNELS}"
        )));
    }
    Ok(())
}

/// Interleaved PCM.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    pub sample_rate: u32,
    pub channels: u16,
    /// Interleaved samples, `frames * channels` long.
    pub samples: Vec<f32>,
}

impl Audio {
    pub fn new(sample_rate: u32, channels: u16, samples: Vec<f32>) -> Audio {
        Audio {
            sample_rate,
            channels,
            samples,
        }
    }

    pub fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }

    pub fn duration_seconds(&self) -> f64 {
        if self.sample_rate == 0 {
            return 0.0;
        }
        self.frames() as f64 / f64::from(self.sample_rate)
    }

    /// Averages the channels into one.
    pub fn to_mono(&self) -> Vec<f32> {
        let channels = usize::from(self.channels.max(1));
        if channels == 1 {
            return self.samples.clone();
        }
        let scale = 1.0 / channels as f32;
        self.samples
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() * scale)
            .collect()
    }
}

/// Mixes interleaved frames down to mono into `out` (cleared first); no allocation
/// beyond `out`'s growth.
pub fn mix_to_mono_into(samples: &[f32], channels: usize, out: &mut Vec<f32>) {
    out.clear();
    if channels <= 1 {
        out.extend_from_slice(samples);
        return;
    }
    let scale = 1.0 / channels as f32;
    out.extend(
        samples
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() * scale),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_outside_the_bounds_are_unsupported() {
        for rate in [0, 1, 7, 7_999, 192_001, 999_999_937, 4_294_967_291] {
            assert!(
                matches!(check_shape(rate, 1), Err(MediaError::Unsupported(_))),
                "{rate}"
            );
        }
        for channels in [0, 33, u16::MAX] {
            assert!(matches!(
                check_shape(16_000, channels),
                Err(MediaError::Unsupported(_))
            ));
        }
        for (rate, channels) in [(8_000, 1), (44_100, 2), (192_000, 32)] {
            assert_eq!(check_shape(rate, channels), Ok(()));
        }
    }

    #[test]
    fn mono_mix_and_duration() {
        let audio = Audio::new(4, 2, vec![1.0, 0.0, 0.5, 0.5, -1.0, 1.0, 0.0, 0.0]);
        assert_eq!(audio.frames(), 4);
        assert_eq!(audio.duration_seconds(), 1.0);
        assert_eq!(audio.to_mono(), vec![0.5, 0.5, 0.0, 0.0]);
    }
}
