//! Decoded audio: interleaved f32 samples in [-1, 1] with their rate and channel count.

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
    fn mono_mix_and_duration() {
        let audio = Audio::new(4, 2, vec![1.0, 0.0, 0.5, 0.5, -1.0, 1.0, 0.0, 0.0]);
        assert_eq!(audio.frames(), 4);
        assert_eq!(audio.duration_seconds(), 1.0);
        assert_eq!(audio.to_mono(), vec![0.5, 0.5, 0.0, 0.0]);
    }
}
