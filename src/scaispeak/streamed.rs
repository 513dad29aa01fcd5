//! Synthesis answered while it is made (`POST /speak`, `POST /v1/audio/speech`): the
//! text is spoken sentence by sentence and each piece of audio is encoded into the
//! output's file format and sent at once, so the body starts after the first clause, not
//! after the whole text.
//!
//! On the local voice the first clause of the first sentence comes out in two steps, as
//! on `/stream/speak`: the engine's first piece (about 0.23 s of audio, ready after the
//! encoder and a short span of the decoder) and then the rest of the clause.
//!
//! Errors before the first audio are the request's answer (status and code, as the
//! buffered path); the headers are only sent with that audio. A failure after it ends the
//! body unfinished (the connection is reset, so a client never takes a cut file for a
//! whole one) and is logged. A client that goes away stops the synthesis at its next
//! piece. Usage (characters, seconds) is what was spoken, settled when the body ends;
//! the audio seconds are charged to the rate limits then too.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::output::Encoder;
use super::{ScaiSpeak, Speak};
use crate::accounting::Reservation;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::speech::backends::Backend;

/// Pieces of the body a slow client may leave unread before synthesis waits for it
/// (each is a clause or a sentence of encoded audio).
const BUFFERED_PIECES: usize = 8;

/// How long a piece may wait for a client that reads nothing before the synthesis gives
/// up on it (a client that stops reading would otherwise hold the request forever).
const STALLED_CLIENT: std::time::Duration = std::time::Duration::from_secs(60);

/// A synthesis under way: its first bytes are ready, the rest arrive on `rest`.
pub struct Streamed {
    pub content_type: String,
    pub backend: Backend,
    pub first: Vec<u8>,
    /// The following pieces of the file; an `Err` means the audio broke off.
    pub rest: mpsc::Receiver<ApiResult<Vec<u8>>>,
}

/// Starts synthesizing a validated request and waits for its first audio. The work goes
/// on in its own task, which owns the reservation of the request's cost.
pub async fn start(
    state: Arc<ScaiSpeak>,
    principal: &Principal,
    speak: Speak,
) -> ApiResult<Streamed> {
    let preference = crate::speech::balancers::preference(&speak.nodes, speak.backend_preference);
    let backend = super::resolve(&state, &principal.tenant_id, preference, &speak.voice).await?;
    let held = super::hold(
        &state,
        &principal.tenant_id,
        principal.subject_id(),
        &speak.text,
    )
    .await?;
    let (head_tx, head_rx) = oneshot::channel();
    let (tx, rest) = mpsc::channel(BUFFERED_PIECES);
    let producer = Producer {
        state,
        principal: principal.clone(),
        backend,
        output: speak.output,
        head: Some(head_tx),
        tx,
        encoder: None,
        characters: 0,
        samples: 0,
        rate: 0,
    };
    let nodes = speak.nodes.clone();
    let work = crate::inference::pool::bound(nodes, producer.run(speak, held));
    tokio::spawn(work.instrument(tracing::Span::current()));
    let (content_type, first) = head_rx
        .await
        .map_err(|_| ApiError::internal("the synthesis ended before its first audio"))??;
    Ok(Streamed {
        content_type,
        backend,
        first,
        rest,
    })
}

/// The content type and the first bytes, which the handler answers with.
type Head = (String, Vec<u8>);

/// A piece's synthesis asked for ahead of its turn; dropped unawaited (the client left,
/// or an earlier piece failed), it is aborted.
struct Ahead {
    characters: usize,
    task: tokio::task::JoinHandle<ApiResult<(Vec<f32>, u32)>>,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why production stopped early.
enum Stop {
    Failed(ApiError),
    /// The client went away.
    Gone,
}

impl From<ApiError> for Stop {
    fn from(error: ApiError) -> Stop {
        Stop::Failed(error)
    }
}

struct Producer {
    state: Arc<ScaiSpeak>,
    principal: Principal,
    backend: Backend,
    output: super::output::Output,
    /// Where the first bytes and the content type go (taken once sent).
    head: Option<oneshot::Sender<ApiResult<Head>>>,
    tx: mpsc::Sender<ApiResult<Vec<u8>>>,
    /// Made at the first audio, when the voice's rate is known.
    encoder: Option<Encoder>,
    characters: usize,
    samples: usize,
    rate: u32,
}

impl Producer {
    async fn run(mut self, speak: Speak, held: Reservation) {
        let outcome = self.speak(&speak).await;
        if outcome.is_ok() {
            // All of it: the whole text's characters, as the buffered path bills (the
            // pieces' count leaves out the spaces between sentences).
            self.characters = speak.text.chars().count();
        }
        let seconds = self.samples as f64 / f64::from(self.rate.max(1));
        // A request that failed before any audio is not billed (its hold is released, as
        // on the buffered path); anything spoken is, even when the body broke off.
        if outcome.is_ok() || self.samples > 0 {
            let record = super::usage_record(
                &self.state,
                &self.principal.tenant_id,
                self.principal.subject_id(),
                (self.characters, seconds),
            );
            held.settle(record);
            self.state
                .handles
                .gate
                .charge_audio(&self.principal, seconds)
                .await;
        }
        match outcome {
            Ok(()) | Err(Stop::Gone) => {}
            Err(Stop::Failed(error)) => {
                if self.head.is_none() {
                    tracing::warn!(error = %error.message, seconds, "speech broke off mid-body");
                    metrics::counter!("scaigrid_scaispeak_http_broken_total").increment(1);
                }
                self.send(Err(error)).await.ok();
            }
        }
    }

    /// Every piece of the text, in order, then the end of the file. The next piece is
    /// asked for before the current one is encoded and sent, so the engine's queue
    /// holds it when the current one is done (no idle gap between sentences).
    async fn speak(&mut self, speak: &Speak) -> Result<(), Stop> {
        // Closed when the handler or the body is dropped: the client went away.
        let watch = self.tx.clone();
        let mut pieces: VecDeque<String> = match self.backend {
            Backend::Local => engines::piper::PiperVoice::sentences(&speak.text).into(),
            Backend::Relay => VecDeque::from([speak.text.clone()]),
        };
        let local = match self.backend {
            Backend::Local => self.state.local.clone(),
            Backend::Relay => None,
        };
        let mut ahead: Option<Ahead> = None;
        if let Some(local) = local
            && speak.voice.profile.is_none()
            && let Some(mut first) = pieces.pop_front()
        {
            if let Some((head, tail)) = engines::piper::first_clause(&first) {
                pieces.push_front(tail);
                first = head;
            }
            let rate = local
                .tts_sample_rate()
                .ok_or_else(|| super::backend_unavailable(Backend::Local))?;
            let characters = first.chars().count();
            let (audio, continuation) =
                unless_gone(&watch, local.first_piece(first, speak.speed)).await?;
            // Queued on the node behind the rest of this clause.
            ahead = pieces.pop_front().map(|piece| self.ask(speak, piece));
            self.emit(audio, rate, characters, false).await?;
            if let Some(continuation) = continuation {
                let rest = unless_gone(&watch, local.rest(continuation)).await?;
                self.emit(rest, rate, 0, false).await?;
            }
        }
        loop {
            let Some(mut current) = ahead
                .take()
                .or_else(|| pieces.pop_front().map(|piece| self.ask(speak, piece)))
            else {
                break;
            };
            ahead = pieces.pop_front().map(|piece| self.ask(speak, piece));
            let task = &mut current.task;
            let (audio, rate) =
                unless_gone(
                    &watch,
                    async move { task.await.map_err(ApiError::internal)? },
                )
                .await?;
            self.emit(audio, rate, current.characters, false).await?;
        }
        self.emit(Vec::new(), self.rate.max(1), 0, true).await
    }

    /// Asks for one piece's synthesis now, in its own task (bound to the request's
    /// nodes like the rest of it).
    fn ask(&self, speak: &Speak, piece: String) -> Ahead {
        let (state, backend, speed) = (self.state.clone(), self.backend, speak.speed);
        let profile = speak.voice.profile.clone();
        let characters = piece.chars().count();
        let work = async move {
            super::sentence(&state, backend, &piece, speed, profile.as_ref(), false).await
        };
        let work = crate::inference::pool::bound(speak.nodes.clone(), work);
        Ahead {
            characters,
            task: tokio::spawn(work.instrument(tracing::Span::current())),
        }
    }

    /// Encodes a piece of audio (on a blocking thread: CPU work) and sends its bytes.
    async fn emit(
        &mut self,
        audio: Vec<f32>,
        rate: u32,
        characters: usize,
        last: bool,
    ) -> Result<(), Stop> {
        if self.rate != 0 && rate != self.rate {
            return Err(ApiError::internal("sentences came back at different rates").into());
        }
        self.rate = rate;
        self.characters += characters;
        self.samples += audio.len();
        let output = self.output;
        let encoder = match self.encoder.take() {
            Some(encoder) => encoder,
            None => Encoder::new(&output, rate)?,
        };
        let (encoder, bytes) = tokio::task::spawn_blocking(move || {
            let mut encoder = encoder;
            let bytes = encoder.push(&audio, last);
            (encoder, bytes)
        })
        .instrument(tracing::info_span!("encode", codec = ?output.codec, last))
        .await
        .map_err(ApiError::internal)?;
        self.encoder = Some(encoder);
        let bytes = bytes?;
        if bytes.is_empty() && !last {
            return Ok(());
        }
        self.send(Ok(bytes)).await
    }

    /// The first bytes go with the content type to the waiting handler, the rest to the
    /// body; `Gone` when nobody reads any more.
    async fn send(&mut self, piece: ApiResult<Vec<u8>>) -> Result<(), Stop> {
        match self.head.take() {
            Some(head) => {
                let content_type = self.output.content_type(self.rate.max(1));
                head.send(piece.map(|bytes| (content_type, bytes)))
                    .map_err(|_| Stop::Gone)
            }
            None => match tokio::time::timeout(STALLED_CLIENT, self.tx.send(piece)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(Stop::Gone),
                Err(_) => {
                    tracing::warn!("the client stopped reading the speech; giving up on it");
                    Err(Stop::Gone)
                }
            },
        }
    }
}

/// `work`, unless the client goes away first (then it is dropped, and with it the call to
/// the engine).
async fn unless_gone<T, E: Into<ApiError>>(
    watch: &mpsc::Sender<ApiResult<Vec<u8>>>,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, Stop> {
    tokio::select! {
        biased;
        () = watch.closed() => Err(Stop::Gone),
        result = work => result.map_err(|error| Stop::Failed(error.into())),
    }
}
