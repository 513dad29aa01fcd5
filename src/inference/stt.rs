//! Speech to text on a node: a dispatcher (one inference thread, a bounded queue,
//! concurrent requests' windows batched in one decoder run); a full queue is `Busy`,
//! which the edge answers with `SERVICE_UNAVAILABLE` and `Retry-After` (async jobs
//! simply wait for their worker).

use std::sync::Arc;

use engines::batcher::Batcher;
use engines::node::Node;
use engines::whisper::{Options, Phase, Transcript, Whisper};
use engines::{EngineError, EngineResult};

/// Recordings decoded together at most.
const MAX_BATCH: usize = 8;

/// Shared with a diarization running beside it, so the audio is never copied. The span
/// it was submitted in: its batch's `vad` and `stt` spans are children of it.
type Request = (Arc<Vec<f32>>, Options, tracing::Span);

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
            for (index, (_, options, _)) in requests.iter().enumerate() {
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
                let spans: Vec<&tracing::Span> = indices.iter().map(|i| &requests[*i].2).collect();
                let mut phases = Phases::new(spans);
                let transcripts = whisper.transcribe_many_phased(vad, &refs, &mut |phase| {
                    phases.enter(phase);
                });
                drop(phases);
                for (index, result) in indices.into_iter().zip(transcripts) {
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
        let span = tracing::Span::current();
        self.batcher.submit((samples, options, span)).await
    }

    /// Recordings waiting for the inference thread.
    pub fn depth(&self) -> usize {
        self.batcher.depth()
    }
}

/// The phase spans of one batch: every request in it gets its own `vad` then `stt`
/// span (a child of the span it was submitted in), open while its batch is in that
/// phase, with the batch's size: a trace shows a request's share of the batch it rode.
struct Phases<'a> {
    parents: Vec<&'a tracing::Span>,
    open: Vec<tracing::Span>,
}

impl<'a> Phases<'a> {
    fn new(parents: Vec<&'a tracing::Span>) -> Phases<'a> {
        Phases {
            parents,
            open: Vec::new(),
        }
    }

    fn enter(&mut self, phase: Phase) {
        let batch = self.parents.len();
        // Closing the previous phase's spans ends them now.
        self.open = self
            .parents
            .iter()
            .map(|parent| match phase {
                Phase::Vad => tracing::info_span!(parent: *parent, "vad", batch),
                Phase::Decode => tracing::info_span!(parent: *parent, "stt", batch),
            })
            .collect();
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
