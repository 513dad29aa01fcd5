//! Speech to text on a node: a dispatcher (one inference thread, a bounded queue,
//! concurrent requests' windows batched in one decoder run); a full queue is `Busy`,
//! which the edge answers with `SERVICE_UNAVAILABLE` and `Retry-After` (async jobs
//! simply wait for their worker).

use std::sync::Arc;

use engines::batcher::Batcher;
use engines::node::Node;
use engines::whisper::{Options, Transcript, Whisper};
use engines::{EngineError, EngineResult};

/// Recordings decoded together at most.
const MAX_BATCH: usize = 8;

/// Shared with a diarization running beside it, so the audio is never copied.
type Request = (Arc<Vec<f32>>, Options);

pub struct Stt {
    batcher: Batcher<Request, Transcript>,
}

impl Stt {
    /// `None` when the node lacks Whisper or the VAD. `queue`: recordings waiting at
    /// most (`[engines] stt_queue`); each holds its decoded audio, up to
    /// `max_upload_bytes` worth, so the queue bounds that memory too.
    pub fn start(node: Arc<Node>, queue: usize) -> EngineResult<Option<Stt>> {
        if (node.whisper.is_none() && node.whisper_multilingual.is_none()) || node.vad.is_none() {
            return Ok(None);
        }
        let worker_node = node;
        let run = move |requests: Vec<Request>| -> Vec<EngineResult<Transcript>> {
            let Some(vad) = &worker_node.vad else {
                let missing = EngineError::Inference("speech to text not loaded".into());
                return requests.iter().map(|_| Err(missing.clone())).collect();
            };
            // Each model decodes the requests it serves as one batch.
            let mut results: Vec<Option<EngineResult<Transcript>>> = Vec::new();
            let mut models: Vec<(&Whisper, Vec<usize>)> = Vec::new();
            for (index, (_, options)) in requests.iter().enumerate() {
                match model_for(&worker_node, options.language.as_deref()) {
                    Ok(whisper) => {
                        results.push(None);
                        match models.iter_mut().find(|(m, _)| std::ptr::eq(*m, whisper)) {
                            Some((_, indices)) => indices.push(index),
                            None => models.push((whisper, vec![index])),
                        }
                    }
                    Err(error) => results.push(Some(Err(error))),
                }
            }
            for (whisper, indices) in models {
                let refs: Vec<(&[f32], &Options)> = indices
                    .iter()
                    .map(|i| (requests[*i].0.as_slice(), &requests[*i].1))
                    .collect();
                for (index, result) in indices.into_iter().zip(whisper.transcribe_many(vad, &refs))
                {
                    results[index] = Some(result);
                }
            }
            results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(EngineError::Inference("no result".into()))))
                .collect()
        };
        let batcher = Batcher::spawn("stt", 1, queue, MAX_BATCH, Arc::new(run))?;
        Ok(Some(Stt { batcher }))
    }

    pub async fn transcribe(
        &self,
        samples: Arc<Vec<f32>>,
        options: Options,
    ) -> EngineResult<Transcript> {
        self.batcher.submit((samples, options)).await
    }

    /// Recordings waiting for the inference thread.
    pub fn depth(&self) -> usize {
        self.batcher.depth()
    }
}

/// The model that serves a language: English on the English-only model (the fastest);
/// other languages, and detection when no language is given, on the multilingual one
/// when it is loaded (`[engines] multilingual = true`).
pub fn model_for<'a>(node: &'a Node, language: Option<&str>) -> EngineResult<&'a Whisper> {
    match (language, &node.whisper, &node.whisper_multilingual) {
        (Some("en"), Some(english), _) => Ok(english),
        (_, _, Some(multilingual)) => Ok(multilingual),
        (None, Some(english), None) => Ok(english),
        (Some(language), Some(_), None) => Err(EngineError::InvalidInput(format!(
            "language `{language}` needs the multilingual model, which this node does not \
             load (`[engines] multilingual = true`)"
        ))),
        (_, None, None) => Err(EngineError::Inference("speech to text not loaded".into())),
    }
}
