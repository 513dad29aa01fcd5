//! The ONNX graphs of a Whisper variant: the encoder (one window per run, cross-attention
//! keys and values out) and the KV-cached decoder stepped over a batch of windows.

use super::*;

impl Whisper {
    /// Runs the encoder on each window: the decoder's cross-attention keys and values,
    /// `[cross_k_0, cross_v_0, cross_k_1, ...]`, each with one row per window.
    ///
    /// One window per call: the encoder's int8 layers quantize activations per tensor,
    /// so a batch would make one window's result depend on the others; on a CPU its
    /// large matrices gain nothing from batching anyway. The decoder, whose steps are
    /// bound by reading weights, is where windows are batched.
    pub(super) fn encode(&self, windows: &[&[f32]], frames: usize) -> EngineResult<Vec<DynValue>> {
        let mut parts: Vec<Vec<f32>> = vec![Vec::new(); 2 * self.layers];
        let mut shapes: Vec<Vec<usize>> = vec![Vec::new(); 2 * self.layers];
        for window in windows {
            let features = self.mel.frames(window, frames);
            let input = Tensor::from_array(([1, mel::N_MELS, frames], features))?;
            let mut session = lock(&self.encoder)?;
            let outputs = session.run(ort::inputs!["mel" => input])?;
            for layer in 0..self.layers {
                for (k, kind) in ["k", "v"].iter().enumerate() {
                    let name = format!("cross_{kind}_{layer}");
                    let (shape, data) = outputs
                        .get(&name)
                        .ok_or_else(|| {
                            EngineError::Inference(format!("encoder output {name} missing"))
                        })?
                        .try_extract_tensor::<f32>()?;
                    parts[2 * layer + k].extend_from_slice(data);
                    shapes[2 * layer + k] = shape.iter().map(|d| *d as usize).collect();
                }
            }
        }
        parts
            .into_iter()
            .zip(shapes)
            .map(|(data, mut shape)| {
                shape[0] = windows.len();
                Ok(Tensor::from_array((shape, data))?.into_dyn())
            })
            .collect()
    }

    /// The decoding loop: a prompt step for every window, then one step per token for
    /// all live rows together. Returns each window's best row and its no-speech
    /// probability.
    pub(super) fn decode(
        &self,
        prompts: &[Vec<u32>],
        mut cross: Vec<DynValue>,
        mut search: Search,
        options: &Options,
    ) -> EngineResult<Vec<(Row, f32)>> {
        let windows = search.windows();
        let mut past = self.empty_past(windows)?;
        // Prompts differ only in their language token, so they share one length.
        let mut steps = prompts.first().map_or(1, Vec::len);
        let mut tokens: Vec<i64> = Vec::with_capacity(windows * steps);
        for prompt in prompts {
            debug_assert_eq!(prompt.len(), steps);
            tokens.extend(prompt.iter().map(|t| i64::from(*t)));
        }
        let mut no_speech = vec![0.0f32; windows];
        let mut first = true;
        loop {
            let rows = tokens.len() / steps;
            let (sot_rows, mut last_rows, present) =
                self.step(&tokens, rows, steps, first, past, &cross)?;
            past = present;
            // The start-of-transcript position predicts "no speech".
            for (probability, mut sot) in no_speech.iter_mut().zip(sot_rows) {
                rules::log_softmax(&mut sot);
                *probability = sot[self.tokenizer.no_speech as usize].exp();
            }
            first = false;
            for (row, logits) in last_rows.iter_mut().enumerate() {
                rules::apply(
                    logits,
                    search.sampled(row),
                    &self.tokenizer,
                    &self.suppress,
                    options.timestamps,
                );
                rules::log_softmax(logits);
            }
            let parents = search.advance(&last_rows, self.tokenizer.eot);
            if search.done() {
                break;
            }
            if !is_identity(&parents, rows) {
                past = past
                    .iter()
                    .map(|value| gather_rows(value, &parents))
                    .collect::<EngineResult<_>>()?;
                let mut reordered = Vec::with_capacity(cross.len());
                let sources = search.cross_rows();
                for value in &cross {
                    reordered.push(gather_rows(value, &sources)?);
                }
                cross = reordered;
                search.cross_reindexed();
            }
            tokens = search.last_tokens().into_iter().map(i64::from).collect();
            steps = 1;
        }
        Ok(search.finish().into_iter().zip(no_speech).collect())
    }

    /// An empty KV cache for `rows` rows.
    pub(super) fn empty_past(&self, rows: usize) -> EngineResult<Vec<DynValue>> {
        (0..2 * self.layers)
            .map(|_| {
                let empty = Tensor::<f32>::from_array((
                    [rows, self.heads, 0, self.head_dim],
                    Vec::<f32>::new(),
                ))?;
                Ok(empty.into_dyn())
            })
            .collect()
    }

    /// One decoder run: each row's logits at its first position (when `first`) and at
    /// its last position, and the new KV cache.
    #[allow(clippy::type_complexity)]
    pub(super) fn step(
        &self,
        tokens: &[i64],
        rows: usize,
        steps: usize,
        first: bool,
        past: Vec<DynValue>,
        cross: &[DynValue],
    ) -> EngineResult<(Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<DynValue>)> {
        self.run_decoder(tokens, rows, steps, past, cross, |outputs| {
            let (_, logits) = outputs["logits"].try_extract_tensor::<f32>()?;
            let vocab = self.tokenizer.vocab_size();
            let row_logits = |position: usize| -> Vec<Vec<f32>> {
                logits
                    .chunks_exact(steps * vocab)
                    .map(|row| row[position * vocab..(position + 1) * vocab].to_vec())
                    .collect()
            };
            let sot_rows = if first { row_logits(0) } else { Vec::new() };
            let last_rows = row_logits(steps - 1);
            let mut present = Vec::with_capacity(2 * self.layers);
            for layer in 0..self.layers {
                for kind in ["k", "v"] {
                    let name = format!("present_{kind}_{layer}");
                    present.push(outputs.remove(&name).ok_or_else(|| {
                        EngineError::Inference(format!("decoder output {name} missing"))
                    })?);
                }
            }
            Ok((sot_rows, last_rows, present))
        })
    }

    /// Runs the decoder on `tokens` (`rows × steps`) after `past`, and hands its
    /// outputs to `read` while the session is held.
    pub(super) fn run_decoder<T>(
        &self,
        tokens: &[i64],
        rows: usize,
        steps: usize,
        past: Vec<DynValue>,
        cross: &[DynValue],
        read: impl FnOnce(&mut ort::session::SessionOutputs<'_>) -> EngineResult<T>,
    ) -> EngineResult<T> {
        let mut inputs: Vec<(String, SessionInputValue<'_>)> =
            Vec::with_capacity(1 + 2 * past.len());
        inputs.push((
            "tokens".into(),
            Tensor::from_array(([rows, steps], tokens.to_vec()))?.into(),
        ));
        for (index, value) in past.into_iter().enumerate() {
            let (kind, layer) = (["k", "v"][index % 2], index / 2);
            inputs.push((format!("past_{kind}_{layer}"), value.into()));
        }
        for (index, value) in cross.iter().enumerate() {
            let (kind, layer) = (["k", "v"][index % 2], index / 2);
            inputs.push((format!("cross_{kind}_{layer}"), value.into()));
        }
        let mut session = lock(&self.decoder)?;
        let mut outputs = session.run(inputs)?;
        read(&mut outputs)
    }
}

pub(super) fn lock(session: &Mutex<Session>) -> EngineResult<std::sync::MutexGuard<'_, Session>> {
    session
        .lock()
        .map_err(|_| EngineError::Inference("Whisper session poisoned".into()))
}

fn is_identity(parents: &[usize], rows: usize) -> bool {
    parents.len() == rows && parents.iter().enumerate().all(|(i, p)| i == *p)
}

/// A new tensor made of the given rows (first axis) of `value`, in that order.
pub(super) fn gather_rows(value: &DynValue, rows: &[usize]) -> EngineResult<DynValue> {
    let (shape, data) = value.try_extract_tensor::<f32>()?;
    let dims: Vec<usize> = shape.iter().map(|d| *d as usize).collect();
    let stride: usize = dims[1..].iter().product();
    let mut out = Vec::with_capacity(rows.len() * stride);
    for row in rows {
        out.extend_from_slice(&data[row * stride..(row + 1) * stride]);
    }
    let mut new_dims = dims;
    new_dims[0] = rows.len();
    Ok(Tensor::from_array((new_dims, out))?.into_dyn())
}
