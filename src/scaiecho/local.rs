//! Backend A: the local inference node. Speech to text goes through a dispatcher (one
//! inference thread, a bounded queue, concurrent requests' windows batched in one
//! decoder run); a full queue is `SERVICE_UNAVAILABLE` with `Retry-After` (async jobs
//! simply wait for their worker).

use std::sync::Arc;

use engines::batcher::Batcher;
use engines::diarize::{DiarizeParams, Turn};
use engines::node::Node;
use engines::whisper::{Options, Transcript, Whisper};
use engines::{EngineError, EngineResult};

/// Recordings decoded together at most.
const MAX_BATCH: usize = 8;

/// Shared with a diarization running beside it, so the audio is never copied.
type Request = (Arc<Vec<f32>>, Options);

pub struct LocalStt {
    node: Arc<Node>,
    batcher: Batcher<Request, Transcript>,
}

impl LocalStt {
    /// `None` when the node lacks Whisper or the VAD. `queue`: recordings waiting at
    /// most (`[engines] stt_queue`); each holds its decoded audio, up to
    /// `max_upload_bytes` worth, so the queue bounds that memory too.
    pub fn start(node: Arc<Node>, queue: usize) -> EngineResult<Option<LocalStt>> {
        if (node.whisper.is_none() && node.whisper_multilingual.is_none()) || node.vad.is_none() {
            return Ok(None);
        }
        let worker_node = node.clone();
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
        Ok(Some(LocalStt { node, batcher }))
    }

    pub async fn transcribe(
        &self,
        samples: Arc<Vec<f32>>,
        options: Options,
    ) -> EngineResult<Transcript> {
        self.batcher.submit((samples, options)).await
    }

    /// Whether diarization can run (the speaker embedder is loaded).
    pub fn can_diarize(&self) -> bool {
        self.node.embedder.is_some()
    }

    /// The speaker embedding of a stretch of speech (one speaker assumed).
    pub async fn embed(&self, samples: Arc<Vec<f32>>) -> EngineResult<Vec<f32>> {
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || {
            let Some(embedder) = &node.embedder else {
                return Err(EngineError::Inference("speaker embedder not loaded".into()));
            };
            embedder.embed(&samples)
        })
        .await
        .map_err(|e| EngineError::Inference(format!("embedding task: {e}")))?
    }

    /// Who spoke when; `enrolled` profiles give their labels.
    pub async fn diarize(
        &self,
        samples: Arc<Vec<f32>>,
        enrolled: Vec<(String, Vec<f32>)>,
    ) -> EngineResult<Vec<Turn>> {
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || {
            let (Some(vad), Some(embedder)) = (&node.vad, &node.embedder) else {
                return Err(EngineError::Inference("diarization not loaded".into()));
            };
            engines::diarize::diarize(
                &samples,
                vad,
                embedder,
                &enrolled,
                &DiarizeParams::default(),
            )
        })
        .await
        .map_err(|e| EngineError::Inference(format!("diarization task: {e}")))?
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

/// The label of the turn overlapping `[start, end)` the most, if any does.
pub fn speaker_for(turns: &[Turn], start: f32, end: f32) -> Option<String> {
    turns
        .iter()
        .map(|turn| (turn.end.min(end) - turn.start.max(start), turn))
        .filter(|(overlap, _)| *overlap > 0.0)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, turn)| turn.label.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_takes_the_speaker_it_overlaps_most() {
        let turn = |start, end, label: &str| Turn {
            start,
            end,
            label: label.into(),
        };
        let turns = [turn(0.0, 2.0, "spk_0"), turn(2.0, 5.0, "alice")];
        assert_eq!(speaker_for(&turns, 1.5, 4.0).as_deref(), Some("alice"));
        assert_eq!(speaker_for(&turns, 0.0, 2.5).as_deref(), Some("spk_0"));
        assert_eq!(speaker_for(&turns, 6.0, 7.0), None);
    }
}
