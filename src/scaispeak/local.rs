//! Backend A: the node's Piper voice behind a dispatcher (one synthesis thread, a
//! bounded queue), so concurrent requests and streams share the engine fairly and a
//! full queue is back-pressure (`SERVICE_UNAVAILABLE`) rather than unbounded memory.

use std::sync::Arc;

use engines::batcher::Batcher;
use engines::node::Node;
use engines::{EngineError, EngineResult};
use tokio::sync::oneshot;

/// Sentences waiting for the synthesis thread at most.
const QUEUE: usize = 64;

/// One sentence and its speed; with `first_piece`, its first piece of audio goes there
/// as soon as it is decoded and the response is the rest.
struct Request {
    text: String,
    speed: f32,
    first_piece: Option<oneshot::Sender<Vec<f32>>>,
}

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
                .into_iter()
                .map(|request| {
                    let Some(voice) = &worker_node.tts else {
                        return Err(EngineError::Inference("no voice loaded".into()));
                    };
                    match request.first_piece {
                        None => voice.synthesize(&request.text, request.speed),
                        Some(sender) => {
                            voice.synthesize_first_piece(&request.text, request.speed, |piece| {
                                sender.send(piece).is_ok()
                            })
                        }
                    }
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
        let request = Request {
            text,
            speed,
            first_piece: None,
        };
        match urgent {
            true => self.batcher.submit_urgent(request).await,
            false => self.batcher.submit(request).await,
        }
    }

    /// A stream's first audio: the sentence ahead of other streams' later sentences,
    /// its first piece (about 0.23 s) sent to `first_piece` once decoded, before the
    /// rest, which is the result. Nothing is sent when the text has nothing to say.
    pub async fn sentence_first_piece(
        &self,
        text: String,
        speed: f32,
        first_piece: oneshot::Sender<Vec<f32>>,
    ) -> EngineResult<Vec<f32>> {
        let request = Request {
            text,
            speed,
            first_piece: Some(first_piece),
        };
        self.batcher.submit_urgent(request).await
    }
}
