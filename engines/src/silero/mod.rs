//! Silero VAD (v6): 32 ms frames (512 samples at 16 kHz) with 64 samples of context
//! carried over, per-stream recurrent state, and one batched run for any number of
//! streams. The network runs in Rust ([`net`]) on the weights of the pinned ONNX file:
//! measured against ONNX Runtime on the same file, the graph's overhead was most of a
//! frame's cost and batching streams gained nothing (`benches/engines_vs_peers.sh`).
//! `engines/tests/vad.rs` holds the two to the same probabilities and state.

mod net;
mod winograd;

use crate::error::{EngineError, EngineResult};
use crate::models::ModelDir;
use net::{HIDDEN, Net, WINDOW};

pub const ENGINE_ID: &str = "audio.vad.silero";
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples per decision (32 ms).
pub const FRAME: usize = 512;
const CONTEXT: usize = WINDOW - FRAME;

/// One stream's recurrent state (LSTM `h` then `c`) and trailing context.
#[derive(Clone)]
pub struct StreamState {
    state: [f32; 2 * HIDDEN],
    context: [f32; CONTEXT],
}

impl Default for StreamState {
    fn default() -> Self {
        StreamState {
            state: [0.0; 2 * HIDDEN],
            context: [0.0; CONTEXT],
        }
    }
}

impl StreamState {
    /// The LSTM state as the ONNX model's `state` input holds it: `h` then `c`.
    pub fn lstm(&self) -> &[f32] {
        &self.state
    }
}

/// The shared model: immutable after loading, so any number of threads may run it at
/// once; callers batch streams to share one pass.
pub struct SileroVad {
    net: Net,
}

impl SileroVad {
    pub fn load(models: &ModelDir) -> EngineResult<SileroVad> {
        let path = models.silero_vad()?;
        let unavailable = |reason: String| EngineError::ModelUnavailable {
            id: ENGINE_ID.into(),
            reason,
        };
        let bytes = std::fs::read(&path)
            .map_err(|e| unavailable(format!("reading {}: {e}", path.display())))?;
        let net = crate::onnx::constants(&bytes)
            .and_then(|constants| Net::from_constants(&constants))
            .map_err(unavailable)?;
        Ok(SileroVad { net })
    }

    /// Speech probability of one 512-sample frame for each stream, updating each
    /// stream's state. `streams[i]` goes with `frames[i]`.
    pub fn infer(
        &self,
        streams: &mut [&mut StreamState],
        frames: &[&[f32]],
    ) -> EngineResult<Vec<f32>> {
        let batch = streams.len();
        if batch == 0 || frames.len() != batch || frames.iter().any(|f| f.len() != FRAME) {
            return Err(EngineError::InvalidInput(format!(
                "need one {FRAME}-sample frame per stream"
            )));
        }
        let mut windows = Vec::with_capacity(batch * WINDOW);
        let mut hidden = Vec::with_capacity(batch * HIDDEN);
        for (stream, frame) in streams.iter().zip(frames) {
            windows.extend_from_slice(&stream.context);
            windows.extend_from_slice(frame);
            hidden.extend_from_slice(&stream.state[..HIDDEN]);
        }
        let mut gates = self.net.input_gates(&self.net.encode(&windows));
        self.net.add_hidden_gates(&hidden, &mut gates);
        let mut result = Vec::with_capacity(batch);
        let rows = gates.chunks_exact_mut(4 * HIDDEN);
        for ((stream, frame), gates) in streams.iter_mut().zip(frames).zip(rows) {
            let (h, c) = stream.state.split_at_mut(HIDDEN);
            result.push(self.net.cell(gates, h, c));
            stream.context.copy_from_slice(&frame[FRAME - CONTEXT..]);
        }
        Ok(result)
    }

    /// Probabilities for every whole frame of a 16 kHz mono signal, from a fresh state:
    /// equal to frame-by-frame `infer`, with the encoder and the input half of the LSTM
    /// run over a block of frames at once, and only the recurrence frame by frame.
    /// Blocks bound the memory an hour-long recording takes (the encoder's gathered
    /// taps are about three times the samples).
    pub fn probabilities(&self, samples: &[f32]) -> EngineResult<Vec<f32>> {
        /// Frames per block (8 s).
        const BLOCK: usize = 256;
        let frames = samples.len() / FRAME;
        let (mut h, mut c) = ([0.0f32; HIDDEN], [0.0f32; HIDDEN]);
        let mut step = vec![0.0f32; 4 * HIDDEN];
        let mut result = Vec::with_capacity(frames);
        let mut windows = Vec::with_capacity(BLOCK.min(frames) * WINDOW);
        for block in (0..frames).step_by(BLOCK) {
            windows.clear();
            for index in block..(block + BLOCK).min(frames) {
                match index {
                    0 => windows.extend_from_slice(&[0.0; CONTEXT]),
                    _ => {
                        windows.extend_from_slice(&samples[index * FRAME - CONTEXT..index * FRAME])
                    }
                }
                windows.extend_from_slice(&samples[index * FRAME..(index + 1) * FRAME]);
            }
            let gates = self.net.input_gates(&self.net.encode(&windows));
            for input in gates.chunks_exact(4 * HIDDEN) {
                step.copy_from_slice(input);
                self.net.add_hidden_gates(&h, &mut step);
                result.push(self.net.cell(&mut step, &mut h, &mut c));
            }
        }
        Ok(result)
    }
}

/// Silero behind the media crate's voice-activity trait (for preflight).
pub struct SileroDetector<'a> {
    pub vad: &'a SileroVad,
    pub threshold: f32,
}

impl media::vad::VoiceActivity for SileroDetector<'_> {
    fn detect(
        &mut self,
        samples: &[f32],
        sample_rate: u32,
    ) -> media::MediaResult<media::vad::VadFrames> {
        let resampled;
        let samples = if sample_rate == SAMPLE_RATE {
            samples
        } else {
            resampled = media::resample::resample_mono(samples, sample_rate, SAMPLE_RATE)?;
            &resampled
        };
        let probabilities = self
            .vad
            .probabilities(samples)
            .map_err(|error| media::MediaError::Analysis(error.to_string()))?;
        // Frame length in the caller's sample rate.
        let frame_len = FRAME * sample_rate as usize / SAMPLE_RATE as usize;
        Ok(media::vad::VadFrames {
            frame_len,
            speech: probabilities.iter().map(|p| *p >= self.threshold).collect(),
        })
    }
}
