//! Speaker embeddings: the d-vector embedder (`audio.analyze.pyannote` in the node
//! registry) over 80-frame log-mel windows with a 40-frame stride; each window's
//! embedding is L2-normalised, averaged, and normalised again (the training recipe).

use std::sync::Mutex;

use ort::session::Session;
use ort::value::Tensor;

use crate::error::{EngineError, EngineResult};
use crate::fbank::{Fbank, N_MELS};
use crate::models::ModelDir;
use crate::runtime::Runtime;

pub const ENGINE_ID: &str = "audio.analyze.pyannote";
pub const SAMPLE_RATE: u32 = 16_000;
pub const DIM: usize = 256;
const WINDOW: usize = 80;
const STRIDE: usize = 40;
/// Windows per ONNX run (bounds memory for long clips).
const MAX_BATCH: usize = 64;

pub struct SpeakerEmbedder {
    session: Mutex<Session>,
    fbank: Fbank,
}

fn normalise(vector: &mut [f32]) {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt() + 1e-12;
    vector.iter_mut().for_each(|v| *v /= norm);
}

/// Cosine similarity of two embeddings.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|v| v * v).sum::<f32>().sqrt();
    let nb = b.iter().map(|v| v * v).sum::<f32>().sqrt();
    dot / (na * nb + 1e-12)
}

impl SpeakerEmbedder {
    pub fn load(runtime: &Runtime, models: &ModelDir) -> EngineResult<SpeakerEmbedder> {
        let path = models.file(ENGINE_ID, "dvector/embedder.int8.onnx")?;
        Ok(SpeakerEmbedder {
            session: Mutex::new(runtime.session(ENGINE_ID, &path)?),
            fbank: Fbank::new(),
        })
    }

    /// The L2-normalised embedding of 16 kHz mono speech (at least ~0.1 s).
    pub fn embed(&self, samples: &[f32]) -> EngineResult<Vec<f32>> {
        let mut features = self.fbank.compute(samples);
        if features.is_empty() {
            return Err(EngineError::InvalidInput(
                "audio shorter than one analysis frame".into(),
            ));
        }
        // Short clips are padded to one window, as in training.
        let frames = (features.len() / N_MELS).max(WINDOW);
        features.resize(frames * N_MELS, 0.0);
        let windows = 1 + (frames - WINDOW) / STRIDE;
        let mut sum = vec![0.0f32; DIM];
        let mut session = self
            .session
            .lock()
            .map_err(|_| EngineError::Inference("embedder session poisoned".into()))?;
        for first in (0..windows).step_by(MAX_BATCH) {
            let batch = (windows - first).min(MAX_BATCH);
            let mut input = Vec::with_capacity(batch * WINDOW * N_MELS);
            for window in first..first + batch {
                let start = window * STRIDE * N_MELS;
                input.extend_from_slice(&features[start..start + WINDOW * N_MELS]);
            }
            let outputs = session.run(ort::inputs![
                "mel_window" => Tensor::from_array(([batch, WINDOW, N_MELS], input))?,
            ])?;
            let (_, embeddings) = outputs["embedding"].try_extract_tensor::<f32>()?;
            for row in embeddings.chunks_exact(DIM) {
                let mut row = row.to_vec();
                normalise(&mut row);
                sum.iter_mut().zip(&row).for_each(|(s, r)| *s += r);
            }
        }
        normalise(&mut sum);
        Ok(sum)
    }
}
