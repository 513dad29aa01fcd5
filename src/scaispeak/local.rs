//! Backend A: the node's Piper voice behind a dispatcher (one synthesis thread, a
//! bounded queue), so concurrent requests and streams share the engine fairly and a
//! full queue is back-pressure (`SERVICE_UNAVAILABLE`) rather than unbounded memory.

use std::sync::Arc;

use engines::batcher::Batcher;
use engines::node::Node;
use engines::{EngineError, EngineResult};

/// Sentences waiting for the synthesis thread at most.
const QUEUE: usize = 64;

/// One sentence and its speed.
type Request = (String, f32);

pub struct LocalTts {
    node: Arc<Node>,
    batcher: Batcher<Request, Vec<f32>>,
}

impl LocalTts {
    /// `None` when the node has no voice loaded.
    pub fn start(node: Arc<Node>) -> EngineResult<Option<LocalTts>> {
        if node.tts.is_none() {
            return Ok(None);
        }
        let worker_node = node.clone();
        let run = move |requests: Vec<Request>| -> Vec<EngineResult<Vec<f32>>> {
            requests
                .iter()
                .map(|(text, speed)| match &worker_node.tts {
                    Some(voice) => voice.synthesize(text, *speed),
                    None => Err(EngineError::Inference("no voice loaded".into())),
                })
                .collect()
        };
        // Piper runs one sentence per call: batches of one, the queue orders them.
        let batcher = Batcher::spawn("tts", 1, QUEUE, 1, Arc::new(run))?;
        Ok(Some(LocalTts { node, batcher }))
    }

    /// The voice's sample rate.
    pub fn sample_rate(&self) -> u32 {
        self.node.tts.as_ref().map_or(22_050, |v| v.sample_rate())
    }

    /// Mono samples of one sentence at `sample_rate()`. `urgent`: a stream's first
    /// audio, synthesized ahead of sentences that only keep a playing stream fed.
    pub async fn sentence(&self, text: String, speed: f32, urgent: bool) -> EngineResult<Vec<f32>> {
        match urgent {
            true => self.batcher.submit_urgent((text, speed)).await,
            false => self.batcher.submit((text, speed)).await,
        }
    }
}
