//! The edge's side of the nodes: the [`Dispatcher`] every speech path calls, over the
//! nodes it knows ([`Member`]s).
//!
//! The dispatcher sends a call to a ready node that carries the model: the least
//! loaded (its calls in flight from here and the other edges' share of what it
//! reported), ties taking turns. Its nodes are the ones this server supervises and,
//! in a scaled deployment, those the registry announces ([`Dispatcher::discovered`]).
//! When that node is lost mid-call (its process
//! died, the connection broke), a retry-safe call waits for a node to be ready again
//! (another one, or this one restarted) and is sent once more; a second loss is
//! `NodeUnavailable` naming the node. A probe per node keeps its readiness and info
//! current.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use engines::diarize::Turn;
use engines::whisper::{Options, Transcript};
use engines::{EngineError, EngineResult};
use tokio::sync::Notify;
use tonic::{Request, Status};
use tracing::Instrument;

use super::member::{Call, Client};
pub use super::member::{Member, Seen};
use super::token::Bearer;
use super::{Address, proto, wire};

/// How long a call waits for a node to be ready (a restarted node loads its engines).
const READY_WAIT: Duration = Duration::from_secs(60);
/// How often each node is asked for its info (and so its readiness).
const PROBE_EVERY: Duration = Duration::from_secs(1);

tokio::task_local! {
    /// Set while a job runs: the job queue retries a job whose node died (counting it
    /// toward failing a poison input), so its calls are not retried here as well.
    static SINGLE_ATTEMPT: ();
    /// Set while a request is bound to some nodes (a balancer's instances): calls go
    /// to those nodes only.
    static ONLY: Arc<[String]>;
    /// Set while a request's calls are watched ([`observed`]): the nodes that served.
    static SERVED: std::sync::Mutex<Vec<String>>;
}

/// Runs `work` with its node calls bound to `nodes` (a balancer's instances).
pub async fn within<F: Future>(nodes: Vec<String>, work: F) -> F::Output {
    ONLY.scope(nodes.into(), work).await
}

/// Runs `work` bound to `nodes` when there are some (see [`within`]), else as it is.
pub async fn bound<F: Future>(nodes: Option<Vec<String>>, work: F) -> F::Output {
    match nodes {
        Some(nodes) => within(nodes, work).await,
        None => work.await,
    }
}

/// Runs `work` and names the nodes that served its calls (each once, in order), for
/// the response's `X-Scaigrid-Node`.
pub async fn observed<F: Future>(work: F) -> (F::Output, Vec<String>) {
    SERVED
        .scope(std::sync::Mutex::new(Vec::new()), async {
            let output = work.await;
            let served = SERVED
                .try_with(|served| served.lock().map(|s| s.clone()).unwrap_or_default())
                .unwrap_or_default();
            (output, served)
        })
        .await
}

/// Whether calls made here may go to `member` (see [`within`]).
fn in_scope(member: &Member) -> bool {
    ONLY.try_with(|only| only.contains(&member.id))
        .unwrap_or(true)
}

fn served_by(node: &str) {
    let _ = SERVED.try_with(|served| {
        if let Ok(mut served) = served.lock()
            && !served.iter().any(|n| n == node)
        {
            served.push(node.to_owned());
        }
    });
}

/// Runs `work` with one attempt per node call (see [`SINGLE_ATTEMPT`]).
pub async fn single_attempt<F: Future>(work: F) -> F::Output {
    SINGLE_ATTEMPT.scope((), work).await
}

/// Engine ids the dispatcher routes by.
const STT: &[&str] = &[
    engines::whisper::ENGINE_ID,
    engines::whisper::BASE_ENGINE_ID,
];
/// Other languages than English, and language detection.
const MULTILINGUAL: &[&str] = &[engines::whisper::BASE_ENGINE_ID];
const ENGLISH: &[&str] = &[engines::whisper::ENGINE_ID];
pub(super) const TTS: &[&str] = &[engines::piper::ENGINE_ID];
pub(super) const SPEAKER: &[&str] = &[engines::embedder::ENGINE_ID];
const TEXT_EMBED: &[&str] = &[engines::text_embed::ENGINE_ID];

/// Audio seconds of `samples` at 16 kHz, for deadlines.
fn seconds(samples: &[f32]) -> u64 {
    samples.len() as u64 / 16_000
}

/// The one client of the nodes that every speech path calls.
pub struct Dispatcher {
    /// The nodes it routes to: its own (supervised) ones, then those the registry
    /// announced. Replaced whole when the registry changes; calls hold their member.
    members: RwLock<Arc<Vec<Arc<Member>>>>,
    bearer: Bearer,
    /// Calls routed so far: the turn that breaks ties between equally busy nodes.
    turn: AtomicUsize,
    changed: Arc<Notify>,
}

/// A node announced in the registry, reachable from every edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    pub id: String,
    pub address: Address,
}

impl Dispatcher {
    /// A dispatcher over the nodes `(id, address)` this server supervises; nothing is
    /// connected yet. `bearer`: the node token every call carries.
    pub fn new(nodes: Vec<(String, Address)>, bearer: Bearer) -> anyhow::Result<Dispatcher> {
        let changed = Arc::new(Notify::new());
        let members = nodes
            .into_iter()
            .map(|node| Member::new(node, true, bearer.clone(), changed.clone()).map(Arc::new))
            .collect::<anyhow::Result<_>>()?;
        Ok(Dispatcher {
            members: RwLock::new(Arc::new(members)),
            bearer,
            turn: AtomicUsize::new(0),
            changed,
        })
    }

    /// The nodes it knows now.
    pub fn members(&self) -> Arc<Vec<Arc<Member>>> {
        self.members
            .read()
            .map(|members| members.clone())
            .unwrap_or_default()
    }

    /// Takes the registry's nodes as they are now: new ones are added (and probed),
    /// ones that left it (stopped heartbeating) or moved are let go. Supervised nodes
    /// stay whatever the registry says.
    pub fn discovered(&self, announced: &[Announced]) {
        let current = self.members();
        let known = |a: &Announced| {
            current
                .iter()
                .any(|m| m.id == a.id && (m.supervised || m.address == a.address))
        };
        let stays = |m: &Arc<Member>| {
            m.supervised
                || announced
                    .iter()
                    .any(|a| a.id == m.id && a.address == m.address)
        };
        let fresh: Vec<&Announced> = announced.iter().filter(|a| !known(a)).collect();
        if fresh.is_empty() && current.iter().all(stays) {
            return;
        }
        let mut next: Vec<Arc<Member>> = Vec::new();
        for member in current.iter() {
            match stays(member) {
                true => next.push(member.clone()),
                false => {
                    tracing::info!(node = %member.id, "inference node left the registry");
                    member.forget();
                }
            }
        }
        for node in fresh {
            let member = Member::new(
                (node.id.clone(), node.address.clone()),
                false,
                self.bearer.clone(),
                self.changed.clone(),
            );
            match member {
                Ok(member) => {
                    tracing::info!(node = %node.id, address = %node.address,
                        "inference node joined from the registry");
                    let member = Arc::new(member);
                    spawn_probe(&member);
                    next.push(member);
                }
                Err(error) => tracing::warn!(node = %node.id, %error, "unusable node address"),
            }
        }
        if let Ok(mut members) = self.members.write() {
            *members = Arc::new(next);
        }
        self.changed.notify_waiters();
    }

    /// What is wrong, node by node: engines that failed to load, nodes not answering.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for member in self.members().iter() {
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

    /// Probes every node every second, for as long as the process runs (a node the
    /// registry announces later gets its probe then).
    pub fn spawn_probes(&self) {
        for member in self.members().iter() {
            spawn_probe(member);
        }
    }

    /// Waits until every node has answered once, at most `timeout`.
    pub async fn wait_all_ready(&self, timeout: Duration) -> bool {
        let all = async {
            loop {
                let changed = self.changed.notified();
                if self.members().iter().all(|m| m.ready()) {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, all).await.is_ok()
    }

    /// Whether some node carries one of `models` (ready or restarting).
    fn carried(&self, models: &[&str]) -> bool {
        self.members()
            .iter()
            .any(|m| in_scope(m) && m.carries(models))
    }

    /// Some node carrying one of `models` is ready now.
    fn ready_with(&self, models: &[&str]) -> bool {
        self.members()
            .iter()
            .any(|m| in_scope(m) && m.ready() && m.carries(models))
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
        self.members()
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
        // Ties go round: idle nodes take turns (each stays warm, none takes it all).
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let pick = || {
            let members = self.members();
            let ready = || {
                let count = members.len().max(1);
                members
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| in_scope(m) && m.ready() && m.carries(models))
                    .map(move |(index, m)| ((index + count - turn % count) % count, m))
            };
            let least = |(order, m): &(usize, &Arc<Member>)| (m.load(), *order);
            ready()
                .filter(|(_, m)| Some(m.id.as_str()) != avoid)
                .min_by_key(least)
                .or_else(|| ready().min_by_key(least))
                .map(|(_, m)| m.clone())
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
            .map_err(|_| EngineError::NoNodeReady {
                nodes: self
                    .members()
                    .iter()
                    .filter(|m| in_scope(m) && m.carries(models))
                    .map(|m| m.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Runs `call` on a node carrying `models`; when the node is lost, once more on
    /// the next ready one (the same node once restarted, in the embedded default).
    async fn call<T, F, Fut>(&self, models: &[&str], call: F) -> EngineResult<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        Ok(self.call_on(models, call).await?.1)
    }

    /// [`Dispatcher::call`], and the id of the node that answered: the `inference` span
    /// of a trace (the node's own `node` span is its child).
    async fn call_on<T, F, Fut>(&self, models: &[&str], call: F) -> EngineResult<(String, T)>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let span = tracing::info_span!(
            "inference",
            model = models.first().copied().unwrap_or_default(),
            node = tracing::field::Empty,
            otel.kind = tracing::field::Empty,
        );
        crate::trace_context::kind(&span, "client");
        self.attempts(models, call).instrument(span).await
    }

    async fn attempts<T, F, Fut>(&self, models: &[&str], call: F) -> EngineResult<(String, T)>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut lost: Option<String> = None;
        loop {
            let member = self.member(models, lost.as_deref()).await?;
            tracing::Span::current().record("node", member.id.as_str());
            let _call = Call::start(&member);
            match call(member.client.clone()).await {
                Ok(value) => {
                    served_by(&member.id);
                    metrics::counter!("scaigrid_node_calls_total", "node" => member.id.clone())
                        .increment(1);
                    return Ok((member.id.clone(), value));
                }
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
        // Per-model routing: English goes to a node carrying tiny.en (the fastest) when
        // one is ready, else to any speech-to-text node; another language, or
        // detection, to a node carrying the multilingual model when one does (else a
        // node explains what is missing).
        let models = match options.language.as_deref() {
            Some("en") if self.ready_with(ENGLISH) => ENGLISH,
            Some("en") => STT,
            _ if self.carried(MULTILINGUAL) => MULTILINGUAL,
            _ => STT,
        };
        let reply = self
            .call(models, |mut client| {
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

    /// Whether some node carries the sentence-embedding model.
    pub fn can_embed_text(&self) -> bool {
        self.carried(TEXT_EMBED)
    }

    /// Sentence embeddings of `texts` (L2-normalised, in order) and the word pieces
    /// they held.
    pub async fn embed_text(&self, texts: Vec<String>) -> EngineResult<(Vec<Vec<f32>>, u64)> {
        let message = proto::EmbedTextRequest { texts };
        let reply = self
            .call(TEXT_EMBED, |mut client| {
                let request = Request::new(message.clone());
                async move { client.embed_text(request).await }
            })
            .await?
            .into_inner();
        let vectors = reply.vectors.into_iter().map(|v| v.values).collect();
        Ok((vectors, reply.tokens))
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
}

/// Probes `member` every second until the dispatcher lets go of it.
fn spawn_probe(member: &Arc<Member>) {
    let member = Arc::downgrade(member);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(PROBE_EVERY);
        loop {
            ticker.tick().await;
            match member.upgrade() {
                Some(member) if !member.is_gone() => member.probe().await,
                _ => return,
            }
        }
    });
}

/// The rest of a sentence, coming from the node that made its first piece.
pub struct Continuation {
    node: String,
    pieces: tonic::Streaming<proto::AudioPiece>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announced(id: &str, address: &str) -> Announced {
        Announced {
            id: id.to_owned(),
            address: address.parse().unwrap(),
        }
    }

    fn ids(dispatcher: &Dispatcher) -> Vec<String> {
        dispatcher.members().iter().map(|m| m.id.clone()).collect()
    }

    #[tokio::test]
    async fn the_registry_adds_moves_and_removes_nodes_but_never_supervised_ones() {
        let own = vec![("own".to_owned(), "unix:/tmp/own.sock".parse().unwrap())];
        let dispatcher = Dispatcher::new(own, Bearer::default()).unwrap();
        let (a, b) = (
            announced("a", "10.0.0.1:7070"),
            announced("b", "10.0.0.2:7070"),
        );
        dispatcher.discovered(&[a.clone(), b.clone()]);
        assert_eq!(ids(&dispatcher), ["own", "a", "b"]);
        let first_a = dispatcher.members()[1].clone();
        // Nothing changed: the same members stay (their probes and counts with them).
        dispatcher.discovered(&[b.clone(), a]);
        assert!(Arc::ptr_eq(&dispatcher.members()[1], &first_a));
        // `a` moved: a new member at the new address; the old one is let go.
        dispatcher.discovered(&[announced("a", "10.0.0.9:7070"), b]);
        assert_eq!(ids(&dispatcher), ["own", "b", "a"]);
        assert!(first_a.is_gone() && !first_a.ready());
        assert_eq!(dispatcher.members()[2].address.to_string(), "10.0.0.9:7070");
        // The registry forgets everyone: only the supervised node stays.
        dispatcher.discovered(&[]);
        assert_eq!(ids(&dispatcher), ["own"]);
        // The registry's entry for a supervised node's id changes nothing.
        dispatcher.discovered(&[announced("own", "10.0.0.3:7070")]);
        assert_eq!(ids(&dispatcher), ["own"]);
        assert!(dispatcher.members()[0].supervised);
    }
}
