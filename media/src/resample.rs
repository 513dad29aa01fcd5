//! Sample-rate conversion with rubato's FFT resampler, as a streaming stage with
//! preallocated buffers: feed any number of samples, get the converted ones appended to
//! a caller-owned buffer. No allocation per call once the output buffer has grown.
//!
//! Mono only: every consumer here (analysis, STT at 16 kHz, engine outputs at
//! 22.05/24/48 kHz) works on one channel; mix down first with `audio::mix_to_mono_into`.

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler, WindowFunction};

use crate::audio::Audio;
use crate::error::{MediaError, MediaResult};

/// Input frames per resampler call: large enough for FFT efficiency, small enough for
/// streaming latency (64 ms at 16 kHz).
const CHUNK: usize = 1024;
/// FFTs per chunk: one large FFT is cheaper than rubato's default of several small ones.
const SUB_CHUNKS: usize = 1;

/// Highest rate the resampler takes (twice the highest input rate accepted).
const MAX_RESAMPLER_RATE: u32 = 2 * crate::audio::MAX_SAMPLE_RATE;

pub struct StreamResampler {
    from: u32,
    to: u32,
    /// `None` when the rates are equal (a copy, no filtering).
    inner: Option<Fft<f32>>,
    /// Input frames per resampler call.
    chunk: usize,
    /// Chunks of silence `finish` may feed to drain the filter: rubato collects a whole
    /// FFT's input (`from / gcd(from, to)` frames, a second of audio for coprime rates
    /// such as 44,101 → 16,000) before it produces anything.
    max_flush_chunks: usize,
    /// Input waiting for a full chunk.
    pending: Vec<f32>,
    /// One chunk of output.
    scratch: Vec<f32>,
    /// Output frames still to drop at the start (the filter's delay).
    delay_left: usize,
    frames_in: u64,
    frames_out: u64,
}

impl StreamResampler {
    pub fn new(from: u32, to: u32) -> MediaResult<StreamResampler> {
        // rubato sizes its FFTs from `rate / gcd(from, to)`: a rate from outside must pass
        // `audio::check_shape` first; this bound keeps any other caller from asking for
        // gigabytes as well.
        if !(1..=MAX_RESAMPLER_RATE).contains(&from) || !(1..=MAX_RESAMPLER_RATE).contains(&to) {
            return Err(MediaError::InvalidParameters(format!(
                "resampling {from} Hz to {to} Hz: rates must be within 1..={MAX_RESAMPLER_RATE}"
            )));
        }
        let inner = if from == to {
            None
        } else {
            Some(
                Fft::<f32>::new_custom(
                    from as usize,
                    to as usize,
                    CHUNK,
                    SUB_CHUNKS,
                    1,
                    WindowFunction::BlackmanHarris2,
                    FixedSync::Input,
                )
                .map_err(|e| MediaError::InvalidParameters(e.to_string()))?,
            )
        };
        let (scratch_len, delay, chunk) = match &inner {
            Some(r) => (
                r.output_frames_max(),
                r.output_delay(),
                r.input_frames_next(),
            ),
            None => (0, 0, CHUNK),
        };
        Ok(StreamResampler {
            from,
            to,
            inner,
            chunk,
            max_flush_chunks: 16
                + 2 * (from / gcd(from, to)) as usize / chunk.max(1)
                + delay * (from / to.max(1)) as usize / chunk.max(1),
            pending: Vec::with_capacity(chunk),
            scratch: vec![0.0; scratch_len],
            delay_left: delay,
            frames_in: 0,
            frames_out: 0,
        })
    }

    pub fn output_rate(&self) -> u32 {
        self.to
    }

    /// Output frames the input so far corresponds to.
    fn expected_out(&self) -> u64 {
        (self.frames_in as u128 * u128::from(self.to) / u128::from(self.from)) as u64
    }

    fn emit(&mut self, produced: usize, out: &mut Vec<f32>) {
        let skip = self.delay_left.min(produced);
        self.delay_left -= skip;
        let limit = self.expected_out().saturating_sub(self.frames_out) as usize;
        let take = (produced - skip).min(limit);
        out.extend_from_slice(&self.scratch[skip..skip + take]);
        self.frames_out += take as u64;
    }

    fn run_chunk(&mut self, partial_len: Option<usize>, out: &mut Vec<f32>) {
        let Some(resampler) = self.inner.as_mut() else {
            return;
        };
        let frames = self.pending.len();
        let input = match InterleavedSlice::new(&self.pending[..], 1, frames) {
            Ok(input) => input,
            Err(_) => return,
        };
        let scratch_frames = self.scratch.len();
        let Ok(mut output) = InterleavedSlice::new_mut(&mut self.scratch[..], 1, scratch_frames)
        else {
            return;
        };
        let indexing = Indexing {
            input_offset: 0,
            output_offset: 0,
            partial_len,
            active_channels_mask: None,
        };
        let produced = match resampler.process_into_buffer(&input, &mut output, Some(&indexing)) {
            Ok((_, produced)) => produced,
            Err(_) => 0,
        };
        self.emit(produced, out);
    }

    /// Converts `input`, appending what is ready to `out`.
    pub fn push(&mut self, mut input: &[f32], out: &mut Vec<f32>) {
        self.frames_in += input.len() as u64;
        if self.inner.is_none() {
            out.extend_from_slice(input);
            self.frames_out += input.len() as u64;
            return;
        }
        while !input.is_empty() {
            let take = (self.chunk - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() == self.chunk {
                self.run_chunk(None, out);
                self.pending.clear();
            }
        }
    }

    /// Ends the stream: converts what is pending and drains the filter, so the total
    /// output is exactly `input * to / from` frames.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        if self.inner.is_none() {
            return;
        }
        // Flush the partial chunk, then feed silence until the filter's delay is drained.
        let mut guard = 0;
        while self.frames_out < self.expected_out() && guard < self.max_flush_chunks {
            let real = self.pending.len();
            self.pending.resize(self.chunk, 0.0);
            self.run_chunk(Some(real), out);
            self.pending.clear();
            guard += 1;
        }
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// Converts a whole mono signal.
pub fn resample_mono(samples: &[f32], from: u32, to: u32) -> MediaResult<Vec<f32>> {
    let mut resampler = StreamResampler::new(from, to)?;
    let mut out = Vec::with_capacity(
        (samples.len() as u64 * u64::from(to) / u64::from(from.max(1))) as usize + CHUNK,
    );
    resampler.push(samples, &mut out);
    resampler.finish(&mut out);
    Ok(out)
}

/// Mono at `rate` (e.g. 16 kHz for analysis and speech-to-text).
pub fn to_mono(audio: &Audio, rate: u32) -> MediaResult<Vec<f32>> {
    resample_mono(&audio.to_mono(), audio.sample_rate, rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f32, seconds: f32) -> Vec<f32> {
        (0..(rate as f32 * seconds) as usize)
            .map(|i| (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    #[test]
    fn output_length_is_exact_and_tone_survives() {
        for (from, to) in [
            (44_100, 16_000),
            (16_000, 48_000),
            (22_050, 24_000),
            (48_000, 16_000),
        ] {
            let input = sine(from, 440.0, 1.3);
            let out = resample_mono(&input, from, to).unwrap();
            let expected = (input.len() as u64 * u64::from(to) / u64::from(from)) as usize;
            assert_eq!(out.len(), expected, "{from} -> {to}");
            // Same energy (RMS of a 0.5 sine is ~0.354) away from the edges.
            let mid = &out[out.len() / 4..out.len() * 3 / 4];
            let rms = (mid.iter().map(|s| s * s).sum::<f32>() / mid.len() as f32).sqrt();
            assert!((rms - 0.3536).abs() < 0.01, "{from} -> {to}: rms {rms}");
        }
    }

    #[test]
    fn chunking_does_not_change_the_result() {
        let input = sine(44_100, 300.0, 0.7);
        let whole = resample_mono(&input, 44_100, 16_000).unwrap();
        let mut resampler = StreamResampler::new(44_100, 16_000).unwrap();
        let mut out = Vec::new();
        for piece in input.chunks(333) {
            resampler.push(piece, &mut out);
        }
        resampler.finish(&mut out);
        assert_eq!(out.len(), whole.len());
        let diff = out
            .iter()
            .zip(&whole)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-5, "max diff {diff}");
    }

    #[test]
    fn unbounded_rates_are_refused_before_any_allocation() {
        for (from, to) in [(0, 16_000), (4_294_967_291, 16_000), (16_000, 999_999_937)] {
            assert!(matches!(
                StreamResampler::new(from, to),
                Err(MediaError::InvalidParameters(_))
            ));
        }
        // The worst ratio inside the bounds (coprime rates) still builds and converts.
        let out = resample_mono(&sine(191_999, 440.0, 0.5), 191_999, 16_000).unwrap();
        assert_eq!(out.len(), (95_999u64 * 16_000 / 191_999) as usize);
    }

    #[test]
    fn equal_rates_copy() {
        let input = sine(16_000, 100.0, 0.1);
        assert_eq!(resample_mono(&input, 16_000, 16_000).unwrap(), input);
    }
}
