//! The node's side of the wire: the gRPC service over this process's engines. Each
//! call checks its input, runs on the engine's dispatcher or a blocking thread, and
//! answers engine errors as statuses ([`wire::status`]). A call whose client went away
//! is dropped, and its request leaves the dispatcher's queue unrun.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use engines::diarize::DiarizeParams;
use engines::node::Node;
use engines::{EngineError, EngineResult};
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::proto::{self, node_server};
use super::stt::Stt;
use super::tts::Tts;
use super::wire;
use crate::config::NodeLabels;

/// Longest text one synthesis request may carry (a sentence; the edge splits texts).
const MAX_TEXT_BYTES: usize = engines::phonemizer::MAX_TEXT_BYTES;
/// Profiles and voices a node keeps warm at most; more is refused (`Busy`).
const MAX_WARM: usize = 100_000;
/// Longest profile id.
const MAX_ID: usize = 128;
/// Texts one `EmbedText` call may carry (OpenAI's limit per embeddings request).
pub const MAX_TEXTS: usize = 2048;

/// The engines in service at one moment, with their dispatchers. Loading or
/// unloading a model replaces it whole; calls hold the one they started on, so they
/// finish there, and its dispatchers stop once their queues are empty.
struct Engines {
    node: Arc<Node>,
    stt: Option<Stt>,
    tts: Option<Tts>,
}

impl Engines {
    fn start(node: Arc<Node>, stt_queue: usize) -> EngineResult<Engines> {
        Ok(Engines {
            stt: Stt::start(node.clone(), stt_queue)?,
            tts: Tts::start(node.clone())?,
            node,
        })
    }
}

/// How long a reading of the device's free memory is reused (`nvidia-smi` is a
/// process start; `Info` is asked every couple of seconds by each edge).
const FREE_MEMORY_FRESH: Duration = Duration::from_secs(5);

/// The engines this process serves, and what it counts for `Info`.
pub struct NodeService {
    engines: Arc<RwLock<Arc<Engines>>>,
    /// One load or unload at a time.
    changing: Arc<tokio::sync::Mutex<()>>,
    stt_queue: usize,
    in_flight: Arc<AtomicU32>,
    /// `kind:id` of the speaker profiles and voices held warm here.
    warm: Mutex<HashSet<String>>,
    /// The last reading of what one more model may take, and when it was made.
    available: Arc<Mutex<Option<(Instant, u64)>>>,
    labels: NodeLabels,
    /// Recent runtime out-of-memory failures, reported in the info (the last 16).
    ooms: Ooms,
}

impl NodeService {
    /// Starts the dispatchers over a loaded node.
    pub fn start(
        node: Arc<Node>,
        stt_queue: usize,
        labels: NodeLabels,
    ) -> EngineResult<NodeService> {
        Ok(NodeService {
            engines: Arc::new(RwLock::new(Arc::new(Engines::start(node, stt_queue)?))),
            changing: Arc::new(tokio::sync::Mutex::new(())),
            stt_queue,
            in_flight: Arc::new(AtomicU32::new(0)),
            warm: Mutex::new(HashSet::new()),
            ooms: Arc::new(Mutex::new(std::collections::VecDeque::new())),
            available: Arc::new(Mutex::new(None)),
            labels,
        })
    }

    /// The engines now in service.
    fn engines(&self) -> Arc<Engines> {
        match self.engines.read() {
            Ok(engines) => engines.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn busy(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.in_flight.clone())
    }

    /// What one more model may take now (see [`Node::available_mb`]). Reading it
    /// starts `nvidia-smi` on a GPU, so it is never read on the async runtime after
    /// the first time: a reading older than [`FREE_MEMORY_FRESH`] is refreshed on a
    /// blocking thread and the last one answers meanwhile.
    fn available_mb(&self, node: &Arc<Node>) -> u64 {
        let Ok(mut last) = self.available.lock() else {
            return 0;
        };
        match *last {
            Some((at, mb)) if at.elapsed() < FREE_MEMORY_FRESH => mb,
            Some((_, mb)) => {
                // Marked fresh now, so one refresh runs at a time.
                *last = Some((Instant::now(), mb));
                let (node, available) = (node.clone(), self.available.clone());
                tokio::task::spawn_blocking(move || {
                    let mb = node.available_mb();
                    if let Ok(mut last) = available.lock() {
                        *last = Some((Instant::now(), mb));
                    }
                });
                mb
            }
            None => {
                let mb = node.available_mb();
                *last = Some((Instant::now(), mb));
                mb
            }
        }
    }

    pub(super) fn info(&self) -> proto::InfoReply {
        let engines = self.engines();
        let info = engines.node.info();
        let depth =
            engines.stt.as_ref().map_or(0, Stt::depth) + engines.tts.as_ref().map_or(0, Tts::depth);
        let (speakers, voices) = self.warm.lock().map_or((0, 0), |warm| {
            let speakers = warm.iter().filter(|k| k.starts_with("speaker:")).count();
            (speakers, warm.len() - speakers)
        });
        proto::InfoReply {
            node_id: info.node_id.clone(),
            status: info.status.to_owned(),
            device: info.device.clone(),
            models_loaded: info.models_loaded.clone(),
            memory_mb: info.memory_mb,
            failures: info
                .failures
                .iter()
                .map(|f| proto::EngineFailure {
                    engine: f.engine.clone(),
                    error: f.error.clone(),
                })
                .collect(),
            queue_depth: u32::try_from(depth).unwrap_or(u32::MAX),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            tts_sample_rate: engines.tts.as_ref().map_or(0, Tts::sample_rate),
            warm_speakers: u32::try_from(speakers).unwrap_or(u32::MAX),
            warm_voices: u32::try_from(voices).unwrap_or(u32::MAX),
            pid: std::process::id(),
            memory_limit_mb: info.memory_limit_mb,
            memory_available_mb: self.available_mb(&engines.node),
            region: self.labels.region.clone(),
            capacity_tier: self.labels.capacity_tier.clone(),
            price_per_hour: self.labels.price_per_hour,
            oom_events: self
                .ooms
                .lock()
                .map(|ooms| ooms.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// The wire status of an engine error of the kind whose engine ids start with
    /// `prefix` (see [`failed`]).
    fn failed(&self, prefix: &'static str, error: &EngineError) -> Status {
        failed(&self.ooms, (&self.engines().node, prefix), error)
    }

    /// Loads (`load`) or unloads a model: the node with it or without it is made on a
    /// blocking thread, its dispatchers started, and it replaces the engines in
    /// service. Runs to its end even when the caller goes away, so a load is never
    /// half done; one change at a time.
    async fn change(&self, model: String, load: bool) -> Result<proto::InfoReply, Status> {
        if model.is_empty() || model.len() > MAX_ID {
            return Err(invalid("model must be 1 to 128 bytes"));
        }
        let (engines, changing) = (self.engines.clone(), self.changing.clone());
        let (available, stt_queue) = (self.available.clone(), self.stt_queue);
        let task = tokio::spawn(async move {
            let _one_at_a_time = changing.lock_owned().await;
            let current = match engines.read() {
                Ok(engines) => engines.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            let (next, free) = tokio::task::spawn_blocking(move || {
                let node = match load {
                    true => current.node.with_model(&model)?,
                    false => current.node.without_model(&model)?,
                };
                // The room left after the change, read here, off the async runtime.
                let free = node.available_mb();
                if node.info().models_loaded == current.node.info().models_loaded {
                    return Ok((None, free));
                }
                tracing::info!(%model, load, models = ?node.info().models_loaded, "engines changed");
                Engines::start(Arc::new(node), stt_queue).map(|next| (Some(next), free))
            })
            .await
            .map_err(|e| EngineError::Inference(format!("loading task: {e}")))??;
            if let Some(next) = next
                && let Ok(mut engines) = engines.write()
            {
                *engines = Arc::new(next);
            }
            if let Ok(mut available) = available.lock() {
                *available = Some((Instant::now(), free));
            }
            Ok::<(), EngineError>(())
        });
        task.await
            .map_err(|e| Status::internal(format!("model change: {e}")))?
            .map_err(|e| wire::status(&e))?;
        Ok(self.info())
    }

    /// Runs `work` on the node's speaker engines on a blocking thread.
    async fn on_speaker_engines<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Node) -> EngineResult<T> + Send + 'static,
    ) -> Result<T, Status> {
        let node = self.engines().node.clone();
        tokio::task::spawn_blocking(move || work(&node))
            .await
            .map_err(|e| Status::internal(format!("speaker task: {e}")))?
            .map_err(|e| wire::status(&e))
    }
}

/// Counts a call in flight while it lives.
struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Debug builds only (the end-to-end tests; release builds have no such path): the
/// node aborts, as a fault in native code would, on a synthesis text containing
/// `SCAIGRID_TEST_NODE_ABORT_ON` or a transcription in that language.
#[cfg(debug_assertions)]
fn test_fault(text: &str, language: &str) {
    if let Ok(trigger) = std::env::var("SCAIGRID_TEST_NODE_ABORT_ON")
        && !trigger.is_empty()
        && (text.contains(&trigger) || language == trigger)
    {
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
fn test_fault(_text: &str, _language: &str) {}

/// Recent runtime out-of-memory failures of a node.
type Ooms = Arc<Mutex<std::collections::VecDeque<proto::OomEvent>>>;

/// The wire status of an engine error; a runtime out-of-memory is remembered against
/// each engine of the kind (`prefix`) loaded on `node`, for the info's `oom_events`.
fn failed(ooms: &Ooms, (node, prefix): (&Node, &str), error: &EngineError) -> Status {
    if matches!(error, EngineError::OutOfMemory)
        && let Ok(mut ooms) = ooms.lock()
    {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            });
        let info = node.info();
        for engine in info.models_loaded.iter().filter(|m| m.starts_with(prefix)) {
            tracing::error!(engine, "an inference ran out of memory");
            let engine = engine.clone();
            ooms.push_back(proto::OomEvent { engine, at_ms });
        }
        while ooms.len() > 16 {
            ooms.pop_front();
        }
    }
    wire::status(error)
}

/// Debug builds only: a synthesis text containing `SCAIGRID_TEST_NODE_OOM_ON` fails as
/// an inference that ran out of device memory would (what a GPU does under pressure).
#[cfg(debug_assertions)]
fn test_out_of_memory(text: &str) -> bool {
    std::env::var("SCAIGRID_TEST_NODE_OOM_ON")
        .is_ok_and(|trigger| !trigger.is_empty() && text.contains(&trigger))
}

#[cfg(not(debug_assertions))]
fn test_out_of_memory(_text: &str) -> bool {
    false
}

fn invalid(message: &str) -> Status {
    wire::status(&EngineError::InvalidInput(message.to_owned()))
}

fn missing(what: &str) -> Status {
    wire::status(&EngineError::ModelUnavailable {
        id: what.to_owned(),
        reason: "not loaded on this node".to_owned(),
    })
}

fn audio(pcm: &[u8]) -> Result<Arc<Vec<f32>>, Status> {
    wire::samples(pcm)
        .map(Arc::new)
        .map_err(|e| wire::status(&e))
}

type PieceStream = Pin<Box<dyn Stream<Item = Result<proto::AudioPiece, Status>> + Send>>;

#[tonic::async_trait]
impl node_server::Node for NodeService {
    async fn transcribe(
        &self,
        request: Request<proto::TranscribeRequest>,
    ) -> Result<Response<proto::TranscribeReply>, Status> {
        // The engines first: a call counted in flight holds the ones it runs on.
        let engines = self.engines();
        let _busy = self.busy();
        let request = request.into_inner();
        test_fault("", &request.language);
        let options = wire::options(&request).map_err(|e| wire::status(&e))?;
        let samples = audio(&request.pcm)?;
        let stt = engines
            .stt
            .as_ref()
            .ok_or_else(|| missing("speech to text"))?;
        let transcript = stt
            .transcribe(samples, options)
            .await
            .map_err(|e| self.failed("audio.stt.", &e))?;
        Ok(Response::new(wire::transcript_reply(transcript)))
    }

    async fn diarize(
        &self,
        request: Request<proto::DiarizeRequest>,
    ) -> Result<Response<proto::DiarizeReply>, Status> {
        let _busy = self.busy();
        let request = request.into_inner();
        let samples = audio(&request.pcm)?;
        let enrolled: Vec<(String, Vec<f32>)> = request
            .enrolled
            .into_iter()
            .map(|e| (e.label, e.embedding))
            .collect();
        let turns = self
            .on_speaker_engines(move |node| {
                let (Some(vad), Some(embedder)) = (&node.vad, &node.embedder) else {
                    return Err(EngineError::Inference("diarization not loaded".into()));
                };
                let params = DiarizeParams::default();
                engines::diarize::diarize(&samples, vad, embedder, &enrolled, &params)
            })
            .await?;
        Ok(Response::new(wire::turns_reply(turns)))
    }

    async fn embed(
        &self,
        request: Request<proto::AudioRequest>,
    ) -> Result<Response<proto::EmbeddingReply>, Status> {
        let _busy = self.busy();
        let samples = audio(&request.into_inner().pcm)?;
        let embedding = self
            .on_speaker_engines(move |node| match &node.embedder {
                Some(embedder) => embedder.embed(&samples),
                None => Err(EngineError::Inference("speaker embedder not loaded".into())),
            })
            .await?;
        Ok(Response::new(proto::EmbeddingReply { embedding }))
    }

    async fn profile(
        &self,
        request: Request<proto::AudioRequest>,
    ) -> Result<Response<proto::EmbeddingReply>, Status> {
        let _busy = self.busy();
        let samples = audio(&request.into_inner().pcm)?;
        let embedding = self
            .on_speaker_engines(move |node| match (&node.vad, &node.embedder) {
                (Some(vad), Some(embedder)) => engines::diarize::profile(&samples, vad, embedder),
                _ => Err(EngineError::Inference("speaker embedder not loaded".into())),
            })
            .await?;
        Ok(Response::new(proto::EmbeddingReply { embedding }))
    }

    async fn embed_text(
        &self,
        request: Request<proto::EmbedTextRequest>,
    ) -> Result<Response<proto::EmbedTextReply>, Status> {
        let _busy = self.busy();
        let texts = request.into_inner().texts;
        if texts.is_empty() || texts.len() > MAX_TEXTS {
            return Err(invalid(&format!("texts must be 1 to {MAX_TEXTS}")));
        }
        let embedded = self
            .on_speaker_engines(move |node| match &node.text_embedder {
                Some(embedder) => embedder.embed(&texts),
                None => Err(EngineError::ModelUnavailable {
                    id: engines::text_embed::ENGINE_ID.to_owned(),
                    reason: "not loaded on this node".into(),
                }),
            })
            .await?;
        Ok(Response::new(proto::EmbedTextReply {
            vectors: (embedded.vectors.into_iter())
                .map(|values| proto::TextVector { values })
                .collect(),
            tokens: embedded.tokens as u64,
        }))
    }

    type SynthesizeStream = PieceStream;

    async fn synthesize(
        &self,
        request: Request<proto::SynthesizeRequest>,
    ) -> Result<Response<PieceStream>, Status> {
        let request = request.into_inner();
        test_fault(&request.text, "");
        if test_out_of_memory(&request.text) {
            return Err(self.failed("audio.tts.", &EngineError::OutOfMemory));
        }
        if request.text.len() > MAX_TEXT_BYTES {
            return Err(invalid("text is longer than one request may carry"));
        }
        if !(request.speed.is_finite() && (0.25..=4.0).contains(&request.speed)) {
            return Err(invalid("speed must be within 0.25..=4"));
        }
        let engines = self.engines();
        let tts = engines
            .tts
            .as_ref()
            .ok_or_else(|| missing("text to speech"))?;
        let rate = tts.sample_rate();
        let piece = move |samples: Vec<f32>| proto::AudioPiece {
            pcm: wire::pcm(&samples),
            sample_rate: rate,
        };
        let busy = self.busy();
        let (ooms, node) = (self.ooms.clone(), engines.node.clone());
        let status = move |e: EngineError| failed(&ooms, (&node, "audio.tts."), &e);
        if !request.first_piece {
            let samples = tts
                .sentence(request.text, request.speed, request.urgent)
                .await
                .map_err(status)?;
            drop(busy);
            let only = futures_util::stream::once(std::future::ready(Ok(piece(samples))));
            return Ok(Response::new(Box::pin(only)));
        }
        let (first, rest) = tts
            .first_piece(request.text, request.speed)
            .await
            .map_err(status.clone())?;
        // The rest is queued now and decoded while the first piece travels; dropped
        // unrun if the client goes away.
        let rest = rest
            .map(|rest| tts.queue_rest(rest))
            .transpose()
            .map_err(status.clone())?;
        let rest = rest.map(|pending| async move {
            let _busy = busy;
            pending.await.map(piece).map_err(status)
        });
        let first = futures_util::stream::once(std::future::ready(Ok(piece(first))));
        let rest = futures_util::stream::iter(rest).then(|pending| pending);
        Ok(Response::new(Box::pin(first.chain(rest))))
    }

    async fn warm(
        &self,
        request: Request<proto::WarmRequest>,
    ) -> Result<Response<proto::WarmReply>, Status> {
        let request = request.into_inner();
        match request.kind.as_str() {
            "speaker" if !request.embedding.is_empty() => {}
            "voice" => {}
            _ => {
                return Err(invalid(
                    "kind must be `speaker` (with an embedding) or `voice`",
                ));
            }
        }
        if request.id.is_empty() || request.id.len() > MAX_ID {
            return Err(invalid("id must be 1 to 128 bytes"));
        }
        let mut warm = self
            .warm
            .lock()
            .map_err(|_| Status::internal("warm set poisoned"))?;
        let key = format!("{}:{}", request.kind, request.id);
        if warm.len() >= MAX_WARM && !warm.contains(&key) {
            return Err(wire::status(&EngineError::Busy));
        }
        warm.insert(key);
        Ok(Response::new(proto::WarmReply {
            resident: u32::try_from(warm.len()).unwrap_or(u32::MAX),
        }))
    }

    async fn evict(
        &self,
        request: Request<proto::EvictRequest>,
    ) -> Result<Response<proto::EvictReply>, Status> {
        let request = request.into_inner();
        let key = format!("{}:{}", request.kind, request.id);
        let evicted = self
            .warm
            .lock()
            .map_err(|_| Status::internal("warm set poisoned"))?
            .remove(&key);
        Ok(Response::new(proto::EvictReply { evicted }))
    }

    async fn info(
        &self,
        _request: Request<proto::InfoRequest>,
    ) -> Result<Response<proto::InfoReply>, Status> {
        Ok(Response::new(self.info()))
    }

    async fn load(
        &self,
        request: Request<proto::ModelRequest>,
    ) -> Result<Response<proto::InfoReply>, Status> {
        let info = self.change(request.into_inner().model, true).await?;
        Ok(Response::new(info))
    }

    async fn unload(
        &self,
        request: Request<proto::ModelRequest>,
    ) -> Result<Response<proto::InfoReply>, Status> {
        let info = self.change(request.into_inner().model, false).await?;
        Ok(Response::new(info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use node_server::Node as _;

    const TINY: &str = engines::whisper::ENGINE_ID;

    fn transcribe_request() -> proto::TranscribeRequest {
        let models = engines::models::ModelDir::from_env();
        let path = models.root().join("test-audio/two_cities.wav");
        let bytes = std::fs::read(&path).unwrap();
        let decoded =
            media::decode::decode_mono(&bytes, &media::decode::DecodeOptions::default(), 16_000)
                .unwrap();
        proto::TranscribeRequest {
            pcm: wire::pcm(&decoded.samples),
            language: "en".into(),
            ..proto::TranscribeRequest::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_model_unloaded_under_a_running_call_lets_it_finish_and_refuses_the_next() {
        let node = Node::load(&engines::node::NodeConfig {
            node_id: "swap".into(),
            models_dir: engines::models::ModelDir::from_env().root().to_path_buf(),
            device: engines::Device::Cpu,
            intra_threads: 1,
            models: vec![TINY.into()],
            memory_limit_mb: 0,
            phonemizer: engines::phonemizer::PhonemizerCommand {
                program: "/nonexistent".into(),
                args: Vec::new(),
            },
        });
        let service =
            Arc::new(NodeService::start(Arc::new(node), 4, NodeLabels::default()).unwrap());
        let request = transcribe_request();
        let running = {
            let (service, request) = (service.clone(), request.clone());
            tokio::spawn(async move { service.transcribe(Request::new(request)).await })
        };
        while service.in_flight.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let info = service.change(TINY.into(), false).await.unwrap();
        assert_eq!(info.models_loaded, [engines::silero::ENGINE_ID]);
        let finished = running.await.unwrap().unwrap().into_inner();
        assert!(
            finished.text.to_lowercase().contains("best of times"),
            "{}",
            finished.text
        );
        let refused = service
            .transcribe(Request::new(request.clone()))
            .await
            .unwrap_err();
        assert!(matches!(
            wire::engine_error(&refused, "swap"),
            EngineError::ModelUnavailable { .. }
        ));
        // And back.
        let info = service.change(TINY.into(), true).await.unwrap();
        assert!(info.models_loaded.iter().any(|m| m == TINY));
        let again = service.transcribe(Request::new(request)).await.unwrap();
        assert!(!again.into_inner().text.is_empty());
        let status = service.change(String::new(), true).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
