//! Sentence embeddings (`text.embed.minilm-l6`): all-MiniLM-L6-v2 with int8 weights,
//! the WordPiece tokens of each text (256 at most), mean pooling of the last hidden
//! state over the real tokens, then L2 normalisation: sentence-transformers' recipe for
//! this model, so the vectors compare by cosine (a dot product).

use std::sync::Mutex;

use ort::session::Session;
use ort::value::Tensor;

use crate::error::{EngineError, EngineResult};
use crate::models::ModelDir;
use crate::runtime::Runtime;
use crate::wordpiece::WordPiece;

pub const ENGINE_ID: &str = "text.embed.minilm-l6";
pub const DIM: usize = 384;
/// Tokens per text the model reads (sentence-transformers' `max_seq_length`); a longer
/// text is embedded on its first 254 word pieces.
pub const MAX_TOKENS: usize = 256;
/// Texts per ONNX run: padded to the longest of the run, so a run of similar lengths
/// costs about what each alone would.
const MAX_BATCH: usize = 32;

pub struct TextEmbedder {
    session: Mutex<Session>,
    tokenizer: WordPiece,
}

/// Embeddings of some texts and the word pieces they held (the usage).
#[derive(Debug, Clone)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

impl TextEmbedder {
    pub fn load(runtime: &Runtime, models: &ModelDir) -> EngineResult<TextEmbedder> {
        let path = models.file(ENGINE_ID, "minilm-l6/model.onnx")?;
        let vocab = models.file(ENGINE_ID, "minilm-l6/tokenizer.json")?;
        let text = std::fs::read_to_string(&vocab).map_err(|e| EngineError::ModelUnavailable {
            id: ENGINE_ID.to_owned(),
            reason: format!("{}: {e}", vocab.display()),
        })?;
        Ok(TextEmbedder {
            session: Mutex::new(runtime.session(ENGINE_ID, &path)?),
            tokenizer: WordPiece::from_json(&text)?,
        })
    }

    /// The L2-normalised embedding of each text, in order.
    pub fn embed(&self, texts: &[String]) -> EngineResult<Embedded> {
        let encodings: Vec<_> = texts
            .iter()
            .map(|text| self.tokenizer.encode(text, MAX_TOKENS))
            .collect();
        let tokens = encodings.iter().map(|e| e.tokens).sum();
        // Similar lengths together: less padding in each run.
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].ids.len());
        let mut vectors = vec![Vec::new(); encodings.len()];
        let mut session = self
            .session
            .lock()
            .map_err(|_| EngineError::Inference("text embedder session poisoned".into()))?;
        for run in order.chunks(MAX_BATCH) {
            let width = run
                .iter()
                .map(|&i| encodings[i].ids.len())
                .max()
                .unwrap_or(2);
            let mut ids = Vec::with_capacity(run.len() * width);
            let mut mask = Vec::with_capacity(run.len() * width);
            for &i in run {
                let row = &encodings[i].ids;
                ids.extend_from_slice(row);
                ids.resize(ids.len() + width - row.len(), 0);
                mask.extend(std::iter::repeat_n(1i64, row.len()));
                mask.extend(std::iter::repeat_n(0i64, width - row.len()));
            }
            let shape = [run.len(), width];
            let outputs = session.run(ort::inputs![
                "input_ids" => Tensor::from_array((shape, ids))?,
                "attention_mask" => Tensor::from_array((shape, mask.clone()))?,
                "token_type_ids" => Tensor::from_array((shape, vec![0i64; run.len() * width]))?,
            ])?;
            let (_, hidden) = outputs["last_hidden_state"].try_extract_tensor::<f32>()?;
            for (row, &i) in run.iter().enumerate() {
                let states = &hidden[row * width * DIM..(row + 1) * width * DIM];
                let mask = &mask[row * width..(row + 1) * width];
                vectors[i] = pool(states, mask);
            }
        }
        Ok(Embedded { vectors, tokens })
    }
}

/// Mean of the hidden states of the real tokens, L2-normalised.
fn pool(states: &[f32], mask: &[i64]) -> Vec<f32> {
    let mut sum = vec![0.0f32; DIM];
    let mut count = 0.0f32;
    for (state, &real) in states.chunks_exact(DIM).zip(mask) {
        if real == 1 {
            sum.iter_mut().zip(state).for_each(|(s, v)| *s += v);
            count += 1.0;
        }
    }
    let count = count.max(1e-9);
    sum.iter_mut().for_each(|s| *s /= count);
    let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    sum.iter_mut().for_each(|v| *v /= norm);
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_averages_real_tokens_only_and_normalises() {
        let mut states = vec![0.0f32; 3 * DIM];
        states[0] = 2.0; // token 0, dim 0
        states[DIM + 1] = 2.0; // token 1, dim 1
        states[2 * DIM + 2] = 100.0; // padding, ignored
        let v = pool(&states, &[1, 1, 0]);
        assert!((v[0] - v[1]).abs() < 1e-6 && v[2] == 0.0);
        let norm: f32 = v.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}
