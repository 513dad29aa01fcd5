//! Text to speech on a node: the Piper voice behind a dispatcher (one synthesis
//! thread, a bounded queue), so concurrent requests and streams share the engine fairly
//! and a full queue is back-pressure (`Busy`) rather than unbounded memory.

use std::sync::Arc;

use engines::batcher::Batcher;
use engines::node::Node;
use engines::piper::{FIRST_PIECE_FRAMES, Latent};
use engines::{EngineError, EngineResult};

/// Sentences waiting for the synthesis thread at most.
const QUEUE: usize = 64;

enum Request {
    /// A whole sentence at a speed.
    Sentence(String, f32),
    /// A stream's first clause: the encoder and the first [`FIRST_PIECE_FRAMES`] only.
    FirstPiece(String, f32),
    /// The frames of a first clause after its first piece.
    Rest(Continuation),
}

/// What is left of a sentence after its first piece: the latent and the first frame
/// not yet decoded.
pub struct Continuation(Latent, usize);

/// Audio, and for a first piece what is left to decode.
type Response = (Vec<f32>, Option<Continuation>);

pub struct Tts {
    node: Arc<Node>,
    batcher: Batcher<Request, Response>,
}

impl Tts {
    /// `None` when the node has no voice loaded.
    pub fn start(node: Arc<Node>) -> EngineResult<Option<Tts>> {
        if node.tts.is_none() {
            return Ok(None);
        }
        let worker_node = node.clone();
        let run = move |requests: Vec<Request>| -> Vec<EngineResult<Response>> {
            requests
                .into_iter()
                .map(|request| match &worker_node.tts {
                    Some(voice) => synthesize(voice, request),
                    None => Err(EngineError::Inference("no voice loaded".into())),
                })
                .collect()
        };
        // Piper runs one sentence per call: batches of one, the queue orders them.
        let batcher = Batcher::spawn("tts", 1, QUEUE, 1, Arc::new(run))?;
        Ok(Some(Tts { node, batcher }))
    }

    /// Sentences waiting for the synthesis thread.
    pub fn depth(&self) -> usize {
        self.batcher.depth()
    }

    /// The voice's sample rate.
    pub fn sample_rate(&self) -> u32 {
        self.node.tts.as_ref().map_or(22_050, |v| v.sample_rate())
    }

    /// Mono samples of one sentence at `sample_rate()`. `urgent`: a stream's first
    /// audio, synthesized ahead of sentences that only keep a playing stream fed.
    pub async fn sentence(&self, text: String, speed: f32, urgent: bool) -> EngineResult<Vec<f32>> {
        let request = Request::Sentence(text, speed);
        let (samples, _) = match urgent {
            true => self.batcher.submit_urgent(request).await?,
            false => self.batcher.submit(request).await?,
        };
        Ok(samples)
    }

    /// A stream's first audio: the first piece (about 0.23 s) of a sentence, ahead of
    /// other streams' later sentences, and what is left of it. The rest is a separate
    /// turn on the engine ([`Tts::rest`]), so other streams' first pieces waiting
    /// in the urgent lane go before it.
    pub async fn first_piece(
        &self,
        text: String,
        speed: f32,
    ) -> EngineResult<(Vec<f32>, Option<Continuation>)> {
        self.batcher
            .submit_urgent(Request::FirstPiece(text, speed))
            .await
    }

    /// Queues the rest of a sentence after its first piece (urgent: its first piece is
    /// already playing) and gives its result to come; dropping that unrun takes the
    /// request out of the queue.
    pub fn queue_rest(
        &self,
        continuation: Continuation,
    ) -> EngineResult<impl Future<Output = EngineResult<Vec<f32>>> + Send + 'static> {
        let receiver = self
            .batcher
            .try_submit_urgent(Request::Rest(continuation))?;
        Ok(async move {
            let (samples, _) = receiver.await.map_err(|_| {
                EngineError::Inference("synthesis worker dropped the request".into())
            })??;
            Ok(samples)
        })
    }
}

fn synthesize(voice: &engines::piper::PiperVoice, request: Request) -> EngineResult<Response> {
    match request {
        Request::Sentence(text, speed) => Ok((voice.synthesize(&text, speed)?, None)),
        Request::FirstPiece(text, speed) => {
            let Some(latent) = voice.encode(&text, speed)? else {
                return Ok((Vec::new(), None));
            };
            let split = FIRST_PIECE_FRAMES.min(latent.frames());
            let first = voice.decode(&latent, 0..split)?;
            let rest = (split < latent.frames()).then_some(Continuation(latent, split));
            Ok((first, rest))
        }
        Request::Rest(Continuation(latent, from)) => {
            Ok((voice.decode(&latent, from..latent.frames())?, None))
        }
    }
}
