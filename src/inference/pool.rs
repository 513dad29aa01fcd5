//! The edge's side of the nodes: every node it knows ([`Member`]: address, client,
//! what it last reported), and the [`Dispatcher`] every speech path calls.
//!
//! The dispatcher sends a call to a ready node that carries the model (the one with
//! the fewest calls in flight from here). When that node is lost mid-call (its process
//! died, the connection broke), a retry-safe call waits for a node to be ready again
//! (another one, or this one restarted) and is sent once more; a second loss is
//! `NodeUnavailable` naming the node. A probe per node keeps its readiness and info
//! current.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use engines::diarize::Turn;
use engines::whisper::{Options, Transcript};
use engines::{EngineError, EngineResult};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::proto::node_client::NodeClient;
use super::{Address, proto, wire};

/// How long a call waits for a node to be ready (a restarted node loads its engines).
const READY_WAIT: Duration = Duration::from_secs(60);
/// How often each node is asked for its info (and so its readiness).
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A probe that takes longer than this counts as the node not answering.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

tokio::task_local! {
    /// Set while a job runs: the job queue retries a job whose node died (counting it
    /// toward failing a poison input), so its calls are not retried here as well.
    static SINGLE_ATTEMPT: ();
}

/// Runs `work` with one attempt per node call (see [`SINGLE_ATTEMPT`]).
pub async fn single_attempt<F: Future>(work: F) -> F::Output {
    SINGLE_ATTEMPT.scope((), work).await
}

/// The node service's name in the gRPC health protocol.
const SERVICE: &str = "scaigrid.node.v1.Node";

/// Engine ids the dispatcher routes by.
const STT: &[&str] = &[
    engines::whisper::ENGINE_ID,
    engines::whisper::BASE_ENGINE_ID,
];
const TTS: &[&str] = &[engines::piper::ENGINE_ID];
const SPEAKER: &[&str] = &[engines::embedder::ENGINE_ID];

/// What the edge knows of a node.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// It answered its last probe.
    pub ready: bool,
    /// Its last info (kept while it restarts: what it carries does not change).
    pub info: Option<proto::InfoReply>,
    /// Why it is not ready.
    pub error: Option<String>,
    /// Its process id, when this server supervises it.
    pub pid: Option<u32>,
}

/// One node the edge can call.
pub struct Member {
    pub id: String,
    pub address: Address,
    client: NodeClient<Channel>,
    channel: Channel,
    seen: RwLock<Seen>,
    in_flight: AtomicU32,
    restarts: AtomicU64,
    changed: Arc<Notify>,
}

impl Member {
    fn new(id: String, address: Address, changed: Arc<Notify>) -> anyhow::Result<Member> {
        let channel = channel(&address)?;
        let client = NodeClient::new(channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Ok(Member {
            id,
            address,
            client,
            channel,
            seen: RwLock::new(Seen::default()),
            in_flight: AtomicU32::new(0),
            restarts: AtomicU64::new(0),
            changed,
        })
    }

    pub fn seen(&self) -> Seen {
        self.seen.read().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Called by the supervisor each time it starts the node's process again.
    pub fn restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("scaigrid_node_restarts_total", "node" => self.id.clone()).increment(1);
    }

    pub fn set_pid(&self, pid: Option<u32>) {
        self.update(|seen| seen.pid = pid);
    }

    /// The node is not answering (`why`); calls wait for it or go elsewhere.
    pub fn lost(&self, why: &str) {
        self.update(|seen| {
            seen.ready = false;
            seen.error = Some(why.to_owned());
        });
    }

    fn update(&self, change: impl FnOnce(&mut Seen)) {
        if let Ok(mut seen) = self.seen.write() {
            change(&mut seen);
        }
        self.changed.notify_waiters();
    }

    fn carries(&self, models: &[&str]) -> bool {
        self.seen.read().is_ok_and(|seen| {
            seen.info.as_ref().is_some_and(|info| {
                info.models_loaded
                    .iter()
                    .any(|m| models.contains(&m.as_str()))
            })
        })
    }

    fn ready(&self) -> bool {
        self.seen.read().is_ok_and(|seen| seen.ready)
    }

    /// Asks the node whether it serves (the gRPC health protocol), then for its info:
    /// ready with it, or lost with why not.
    pub async fn probe(&self) {
        let mut check = Request::new(HealthCheckRequest {
            service: SERVICE.to_owned(),
        });
        check.set_timeout(PROBE_TIMEOUT);
        match HealthClient::new(self.channel.clone()).check(check).await {
            Ok(reply) if reply.get_ref().status == ServingStatus::Serving as i32 => {}
            Ok(reply) => {
                let status = reply.get_ref().status;
                return self.lost(&format!("health: not serving ({status})"));
            }
            Err(status) => {
                return self.lost(&format!("{:?}: {}", status.code(), status.message()));
            }
        }
        let mut request = Request::new(proto::InfoRequest {});
        request.set_timeout(PROBE_TIMEOUT);
        match self.client.clone().info(request).await {
            Ok(reply) => {
                let info = reply.into_inner();
                let queue = f64::from(info.queue_depth);
                metrics::gauge!("scaigrid_node_queue_depth", "node" => self.id.clone()).set(queue);
                self.update(|seen| {
                    seen.ready = true;
                    seen.error = None;
                    seen.info = Some(info);
                });
            }
            Err(status) => self.lost(&format!("{:?}: {}", status.code(), status.message())),
        }
    }

    /// The node's view for `GET /v1/infra/nodes` and readiness.
    pub fn view(&self) -> Value {
        let seen = self.seen();
        let info = seen.info.unwrap_or_default();
        let status = match seen.ready {
            true => info.status.as_str(),
            false => "offline",
        };
        json!({
            "node_id": self.id,
            "status": status,
            "address": self.address.to_string(),
            "device": info.device,
            "models_loaded": info.models_loaded,
            "memory_mb": info.memory_mb,
            "failures": info.failures.iter()
                .map(|f| json!({ "engine": f.engine, "error": f.error }))
                .collect::<Vec<_>>(),
            "queue_depth": info.queue_depth,
            "in_flight": info.in_flight,
            "version": info.version,
            "warm_speakers": info.warm_speakers,
            "warm_voices": info.warm_voices,
            "pid": seen.pid,
            "restarts": self.restarts(),
            "error": seen.error,
        })
    }
}

/// A lazily connected channel: it connects on the first call and again after the node
/// restarts.
fn channel(address: &Address) -> anyhow::Result<Channel> {
    Ok(match address {
        Address::Tcp(addr) => Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect_lazy(),
        Address::Unix(path) => {
            let path = path.clone();
            // The URI is required and unused: the connector dials the socket.
            Endpoint::from_static("http://node.invalid").connect_with_connector_lazy(
                tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                }),
            )
        }
    })
}

/// Counts a call in flight to a member while it lives.
struct Call(Arc<Member>);

impl Drop for Call {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Audio seconds of `samples` at 16 kHz, for deadlines.
fn seconds(samples: &[f32]) -> u64 {
    samples.len() as u64 / 16_000
}

/// The one client of the nodes that every speech path calls.
pub struct Dispatcher {
    members: Vec<Arc<Member>>,
    changed: Arc<Notify>,
}

impl Dispatcher {
    /// A dispatcher over nodes `(id, address)`; nothing is connected yet.
    pub fn new(nodes: Vec<(String, Address)>) -> anyhow::Result<Dispatcher> {
        let changed = Arc::new(Notify::new());
        let members = nodes
            .into_iter()
            .map(|(id, address)| Member::new(id, address, changed.clone()).map(Arc::new))
            .collect::<anyhow::Result<_>>()?;
        Ok(Dispatcher { members, changed })
    }

    pub fn members(&self) -> &[Arc<Member>] {
        &self.members
    }

    /// What is wrong, node by node: engines that failed to load, nodes not answering.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for member in &self.members {
            let seen = member.seen();
            if let Some(error) = seen.error.filter(|_| !seen.ready) {
                problems.push(format!("node {}: {error}", member.id));
            }
            let failures = seen.info.map(|info| info.failures).unwrap_or_default();
            for failure in failures {
                problems.push(format!(
                    "node {}: {}: {}",
                    member.id, failure.engine, failure.error
                ));
            }
        }
        problems
    }

    /// Probes every node every second, for as long as the process runs.
    pub fn spawn_probes(&self) {
        for member in &self.members {
            let member = member.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(PROBE_EVERY);
                loop {
                    ticker.tick().await;
                    member.probe().await;
                }
            });
        }
    }

    /// Waits until every node has answered once, at most `timeout`.
    pub async fn wait_all_ready(&self, timeout: Duration) -> bool {
        let all = async {
            loop {
                let changed = self.changed.notified();
                if self.members.iter().all(|m| m.ready()) {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, all).await.is_ok()
    }

    /// Whether some node carries one of `models` (ready or restarting).
    fn carried(&self, models: &[&str]) -> bool {
        self.members.iter().any(|m| m.carries(models))
    }

    pub fn can_transcribe(&self) -> bool {
        self.carried(STT)
    }

    pub fn can_speak(&self) -> bool {
        self.carried(TTS)
    }

    pub fn can_diarize(&self) -> bool {
        self.carried(SPEAKER)
    }

    /// The voice's sample rate, from a node that carries it.
    pub fn tts_sample_rate(&self) -> Option<u32> {
        self.members
            .iter()
            .filter_map(|m| m.seen().info)
            .map(|info| info.tts_sample_rate)
            .find(|rate| *rate > 0)
    }

    /// A ready node carrying one of `models`, the least busy from here, not `avoid`
    /// when another is ready; waits for one while a node that carries it restarts.
    async fn member(&self, models: &[&str], avoid: Option<&str>) -> EngineResult<Arc<Member>> {
        if !self.carried(models) {
            return Err(EngineError::ModelUnavailable {
                id: models.join(" or "),
                reason: "no inference node carries it".into(),
            });
        }
        let pick = || {
            let ready = || {
                self.members
                    .iter()
                    .filter(|m| m.ready() && m.carries(models))
            };
            let least = |m: &&Arc<Member>| m.in_flight.load(Ordering::Relaxed);
            ready()
                .filter(|m| Some(m.id.as_str()) != avoid)
                .min_by_key(least)
                .or_else(|| ready().min_by_key(least))
                .cloned()
        };
        let wait = async {
            loop {
                let changed = self.changed.notified();
                if let Some(member) = pick() {
                    return member;
                }
                changed.await;
            }
        };
        tokio::time::timeout(READY_WAIT, wait)
            .await
            .map_err(|_| EngineError::NodeUnavailable {
                node: self
                    .members
                    .iter()
                    .filter(|m| m.carries(models))
                    .map(|m| m.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                reason: "no node carrying the model became ready".into(),
            })
    }

    /// Runs `call` on a node carrying `models`; when the node is lost, once more on
    /// the next ready one (the same node once restarted, in the embedded default).
    async fn call<T, F, Fut>(&self, models: &[&str], call: F) -> EngineResult<T>
    where
        F: Fn(NodeClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        Ok(self.call_on(models, call).await?.1)
    }

    /// [`Dispatcher::call`], and the id of the node that answered.
    async fn call_on<T, F, Fut>(&self, models: &[&str], call: F) -> EngineResult<(String, T)>
    where
        F: Fn(NodeClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut lost: Option<String> = None;
        loop {
            let member = self.member(models, lost.as_deref()).await?;
            member.in_flight.fetch_add(1, Ordering::Relaxed);
            let _call = Call(member.clone());
            match call(member.client.clone()).await {
                Ok(value) => return Ok((member.id.clone(), value)),
                Err(status) if wire::node_lost(&status) => {
                    member.lost(status.message());
                    let retry = lost.is_none() && SINGLE_ATTEMPT.try_with(|()| ()).is_err();
                    if !retry {
                        return Err(wire::engine_error(&status, &member.id));
                    }
                    tracing::warn!(node = %member.id, status = %status.message(),
                        "inference node lost mid-call; trying once more");
                    metrics::counter!("scaigrid_node_retries_total", "node" => member.id.clone())
                        .increment(1);
                    lost = Some(member.id.clone());
                }
                Err(status) => return Err(wire::engine_error(&status, &member.id)),
            }
        }
    }

    /// Speech to text of a recording or an utterance (retried once on a lost node).
    pub async fn transcribe(
        &self,
        samples: Arc<Vec<f32>>,
        options: Options,
    ) -> EngineResult<Transcript> {
        let message = wire::transcribe_request(&samples, &options);
        let deadline = Duration::from_secs(120 + 2 * seconds(&samples));
        let reply = self
            .call(STT, |mut client| {
                let mut request = Request::new(message.clone());
                request.set_timeout(deadline);
                async move { client.transcribe(request).await }
            })
            .await?;
        Ok(wire::transcript(reply.into_inner()))
    }

    /// Who spoke when; `enrolled` profiles give their labels.
    pub async fn diarize(
        &self,
        samples: Arc<Vec<f32>>,
        enrolled: Vec<(String, Vec<f32>)>,
    ) -> EngineResult<Vec<Turn>> {
        let message = proto::DiarizeRequest {
            pcm: wire::pcm(&samples),
            enrolled: enrolled
                .into_iter()
                .map(|(label, embedding)| proto::Enrolled { label, embedding })
                .collect(),
        };
        let deadline = Duration::from_secs(120 + seconds(&samples));
        let reply = self
            .call(SPEAKER, |mut client| {
                let mut request = Request::new(message.clone());
                request.set_timeout(deadline);
                async move { client.diarize(request).await }
            })
            .await?;
        Ok(wire::turns(reply.into_inner()))
    }

    /// The speaker embedding of a stretch of speech (one speaker assumed).
    pub async fn embed(&self, samples: Arc<Vec<f32>>) -> EngineResult<Vec<f32>> {
        let message = proto::AudioRequest {
            pcm: wire::pcm(&samples),
        };
        let reply = self
            .call(SPEAKER, |mut client| {
                let request = Request::new(message.clone());
                async move { client.embed(request).await }
            })
            .await?;
        Ok(reply.into_inner().embedding)
    }

    /// The profile embedding of a reference clip (its speech only).
    pub async fn profile(&self, samples: &[f32]) -> EngineResult<Vec<f32>> {
        let message = proto::AudioRequest {
            pcm: wire::pcm(samples),
        };
        let reply = self
            .call(SPEAKER, |mut client| {
                let request = Request::new(message.clone());
                async move { client.profile(request).await }
            })
            .await?;
        Ok(reply.into_inner().embedding)
    }

    /// Mono samples of one sentence at the voice's rate. `urgent`: a stream's first
    /// audio, ahead of sentences that only keep a playing stream fed.
    pub async fn sentence(&self, text: String, speed: f32, urgent: bool) -> EngineResult<Vec<f32>> {
        let message = proto::SynthesizeRequest {
            text,
            speed,
            urgent,
            first_piece: false,
        };
        let (samples, _) = self.synthesize(message).await?;
        Ok(samples)
    }

    /// A stream's first audio: the first piece (about 0.23 s) of a sentence, and what
    /// is left of it, which the node decodes meanwhile ([`Dispatcher::rest`]).
    pub async fn first_piece(
        &self,
        text: String,
        speed: f32,
    ) -> EngineResult<(Vec<f32>, Option<Continuation>)> {
        let message = proto::SynthesizeRequest {
            text,
            speed,
            urgent: true,
            first_piece: true,
        };
        self.synthesize(message).await
    }

    /// Synthesis up to its first piece, retried once when the node is lost before any
    /// audio came; the rest of the pieces stay on that node's stream.
    async fn synthesize(
        &self,
        message: proto::SynthesizeRequest,
    ) -> EngineResult<(Vec<f32>, Option<Continuation>)> {
        let (node, (first, pieces)) = self
            .call_on(TTS, |mut client| {
                let mut request = Request::new(message.clone());
                request.set_timeout(Duration::from_secs(60));
                async move {
                    let mut pieces = client.synthesize(request).await?.into_inner();
                    let first = pieces
                        .message()
                        .await?
                        .ok_or_else(|| Status::internal("the node sent no audio"))?;
                    Ok((first, pieces))
                }
            })
            .await?;
        let first = wire::samples(&first.pcm)?;
        Ok((first, Some(Continuation { node, pieces })))
    }

    /// The rest of a sentence after its first piece (empty when there was none).
    pub async fn rest(&self, continuation: Continuation) -> EngineResult<Vec<f32>> {
        let Continuation { node, mut pieces } = continuation;
        let mut samples = Vec::new();
        loop {
            match pieces.message().await {
                Ok(Some(piece)) => samples.extend(wire::samples(&piece.pcm)?),
                Ok(None) => return Ok(samples),
                Err(status) => return Err(wire::engine_error(&status, &node)),
            }
        }
    }

    /// Asks every node carrying the speaker embedder to keep a speaker profile warm;
    /// the ids of those that did, and why the others did not.
    pub async fn warm_speaker(
        &self,
        id: &str,
        embedding: &[f32],
    ) -> (Vec<String>, Vec<(String, String)>) {
        let message = proto::WarmRequest {
            kind: "speaker".to_owned(),
            id: id.to_owned(),
            embedding: embedding.to_vec(),
            profile: bytes::Bytes::new(),
        };
        self.warm(SPEAKER, message).await
    }

    /// Asks every node carrying the voice to keep a cloned voice's conditioning
    /// (`profile`, as stored) warm; the ids of those that did, and why others did not.
    pub async fn warm_voice(
        &self,
        id: &str,
        profile: &str,
    ) -> (Vec<String>, Vec<(String, String)>) {
        let message = proto::WarmRequest {
            kind: "voice".to_owned(),
            id: id.to_owned(),
            embedding: Vec::new(),
            profile: bytes::Bytes::copy_from_slice(profile.as_bytes()),
        };
        self.warm(TTS, message).await
    }

    async fn warm(
        &self,
        models: &[&str],
        message: proto::WarmRequest,
    ) -> (Vec<String>, Vec<(String, String)>) {
        self.each(models, |mut client| {
            let request = Request::new(message.clone());
            async move { client.warm(request).await.map(|_| ()) }
        })
        .await
    }

    /// Asks every node to drop a warm profile; the ids that did, and why others did not.
    pub async fn evict(&self, kind: &str, id: &str) -> (Vec<String>, Vec<(String, String)>) {
        let message = proto::EvictRequest {
            kind: kind.to_owned(),
            id: id.to_owned(),
        };
        self.each(&[], |mut client| {
            let request = Request::new(message.clone());
            async move { client.evict(request).await.map(|_| ()) }
        })
        .await
    }

    /// Runs `call` on every node carrying `models` (all nodes when empty).
    async fn each<F, Fut>(&self, models: &[&str], call: F) -> (Vec<String>, Vec<(String, String)>)
    where
        F: Fn(NodeClient<Channel>) -> Fut,
        Fut: Future<Output = Result<(), Status>>,
    {
        let targets = self
            .members
            .iter()
            .filter(|m| models.is_empty() || m.carries(models));
        let results = futures_util::future::join_all(targets.map(|member| {
            let call = call(member.client.clone());
            async move { (member.id.clone(), call.await) }
        }))
        .await;
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for (id, result) in results {
            match result {
                Ok(()) => done.push(id),
                Err(status) => {
                    failed.push((id.clone(), wire::engine_error(&status, &id).to_string()))
                }
            }
        }
        (done, failed)
    }
}

/// The rest of a sentence, coming from the node that made its first piece.
pub struct Continuation {
    node: String,
    pieces: tonic::Streaming<proto::AudioPiece>,
}
