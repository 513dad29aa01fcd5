//! ScaiSpeak, text to speech: request validation, voices, the tenant policy and backend
//! resolution, synthesis on the local node or the managed relay, output encoding and
//! usage. Handlers in `http::scaispeak` stay thin.
//!
//! - [`text`]: cleaning text and cutting it into sentences (also as it streams in).
//! - [`output`]: codecs and rates, encoding.
//! - [`voices`]: the voice catalogue (global voices of the node).
//! - backend A is the inference nodes, through [`crate::inference::pool::Dispatcher`].
//! - [`relay`]: backend B (an OpenAI-compatible `/v1/audio/speech` upstream).
//! - [`stream`]: the WebSocket `/stream/speak`.
//! - [`streamed`]: `/speak` and `/v1/audio/speech` answered while the audio is made.
//! - [`jobs`]: synth jobs for long texts or `async: true`.
//! - [`drive`]: `save_to`, the user's folder in the object store.

pub mod drive;
pub mod jobs;
pub mod output;
pub mod relay;
pub mod stream;
pub mod streamed;
pub mod text;
pub mod voices;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::Instrument;
use utoipa::ToSchema;

use crate::accounting::UsageRecord;
use crate::auth::Principal;
use crate::config::SpeakConfig;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::inference::pool::Dispatcher;
use crate::rbac::Permission;
use crate::services::modules::require_enabled;
use crate::speech::backends::{self, Backend, Preference, Usable};
use crate::speech::balancers::{self, Serves};
use crate::speech::intake::AudioIntake;
use output::{Codec, Output, OutputRequest};

pub const MODULE: &str = "scaispeak";
pub const SPEAK: Permission = Permission::ScaispeakSpeak;

/// ScaiSpeak's context: the backends this process can use and the handles its
/// requests, streams and jobs need (nothing of ScaiEcho, the gateway or the HTTP
/// surface).
pub struct ScaiSpeak {
    /// Backend A: the inference nodes.
    pub local: Option<Arc<Dispatcher>>,
    pub relay: Option<relay::Relay>,
    /// Open speech streams per tenant.
    pub streams: Arc<crate::slots::StreamSlots>,
    /// `[speak]`.
    config: SpeakConfig,
    /// The database, object store, intake, nodes, accounting, jobs, admission gate and
    /// stream settings.
    handles: crate::speech::Handles,
}

impl ScaiSpeak {
    pub fn new(
        handles: crate::speech::Handles,
        config: SpeakConfig,
        local: Option<Arc<Dispatcher>>,
        relay: Option<relay::Relay>,
    ) -> ScaiSpeak {
        ScaiSpeak {
            local,
            relay,
            streams: crate::slots::StreamSlots::new(
                "scaigrid_scaispeak_streams_open",
                "scaispeak",
                handles.nodes.cluster(),
            ),
            config,
            handles,
        }
    }

    /// The audio intake (upload budget, decode slots) the HTTP boundary reads into.
    pub fn intake(&self) -> &AudioIntake {
        &self.handles.intake
    }

    pub fn usable(&self) -> Usable {
        Usable {
            local: self.local.as_ref().is_some_and(|d| d.can_speak()),
            relay: self.relay.is_some(),
        }
    }
}

/// `save_to` of a request: where on the tenant's drive the audio should go.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveTo {
    pub folder: Option<String>,
    pub filename: Option<String>,
    #[serde(default)]
    pub overwrite: bool,
}

/// The body of `POST /speak`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpeakRequest {
    pub text: String,
    /// A voice id from `GET /voices`; the default voice when absent.
    pub voice: Option<String>,
    #[serde(default)]
    pub output: OutputRequest,
    /// 0.25 to 4; 1 is the voice's own pace.
    pub speed: Option<f32>,
    pub backend_preference: Option<Preference>,
    #[serde(default, rename = "async")]
    pub run_async: bool,
    pub save_to: Option<SaveTo>,
    /// A balancer's name binds the synthesis to one of its instances' nodes
    /// (`/v1/balancers`); any other name (OpenAI's `tts-1`) changes nothing.
    pub model: Option<String>,
    /// Inline audio is sent while it is made (default); `false` answers the whole file
    /// at once, with its length and `X-Scaigrid-Audio-Seconds`.
    pub stream: Option<bool>,
    /// Set by the OpenAI alias, whose clients expect audio whatever the length: a long
    /// text is streamed inline instead of becoming a synth job.
    #[serde(skip)]
    #[schema(ignore)]
    pub long_inline: bool,
}

/// A request, validated.
#[derive(Debug, Clone)]
pub struct Speak {
    pub text: String,
    pub voice: voices::Voice,
    pub output: Output,
    pub speed: f32,
    pub backend_preference: Option<Preference>,
    /// Queue as a synth job (`async: true`, or a text over `inline_text_chars`).
    pub run_async: bool,
    /// Write the audio to the user's drive instead of answering it.
    pub save_to: Option<SaveTo>,
    /// The request's `model` (a queued job binds to the balancer again when it runs).
    pub model: Option<String>,
    /// The nodes of the balancer's instance it runs on, when `model` names one.
    pub nodes: Option<Vec<String>>,
    /// Answer inline audio while it is made ([`streamed`]).
    pub stream: bool,
}

pub fn check_speed(speed: Option<f32>) -> ApiResult<f32> {
    let speed = speed.unwrap_or(1.0);
    if !(0.25..=4.0).contains(&speed) {
        return Err(
            ApiError::invalid(format!("speed {speed} is outside 0.25..4"))
                .with_field("field", "speed"),
        );
    }
    Ok(speed)
}

/// Module and permission checks that come before any work.
pub fn authorize(principal: &Principal) -> ApiResult<()> {
    require_enabled(principal, MODULE)?;
    principal.require(SPEAK)
}

impl Speak {
    pub async fn validate(
        state: &ScaiSpeak,
        principal: &Principal,
        request: SpeakRequest,
    ) -> ApiResult<Speak> {
        if let Some(save_to) = &request.save_to {
            drive::check(state, principal, save_to)?;
        }
        let text = text::validate(&request.text, state.config.max_text_chars)?;
        let stream = request.stream.unwrap_or(true);
        let long = text.chars().count() > state.config.inline_text_chars;
        let run_async = request.run_async || (long && !(stream && request.long_inline));
        let output = Output::from_request(request.output, Codec::Wav)?;
        if let Some(save_to) = request.save_to.as_ref().filter(|_| run_async) {
            drive::check_queued(state, principal, save_to, output.codec).await?;
        }
        let model = request.model.as_deref();
        let nodes = state
            .handles
            .bound(&principal.tenant_id, model, Serves::Speech)
            .await?;
        Ok(Speak {
            run_async,
            save_to: request.save_to,
            model: request.model,
            nodes,
            text,
            voice: voices::find(state, &principal.tenant_id, request.voice.as_deref()).await?,
            output,
            speed: check_speed(request.speed)?,
            backend_preference: request.backend_preference,
            stream,
        })
    }
}

/// The tenant's policy: which backends it allows (both until patched).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Policy {
    pub allowed_backends: Vec<Backend>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyPatch {
    pub allowed_backends: Vec<Backend>,
}

pub async fn policy(state: &ScaiSpeak, tenant_id: &str) -> ApiResult<Policy> {
    let mut conn = state.handles.db.pool.acquire().await?;
    let allowed = crate::db::scaispeak::get_allowed(&mut conn, tenant_id)
        .await?
        .unwrap_or_else(|| vec![Backend::Local, Backend::Relay]);
    Ok(Policy {
        allowed_backends: allowed,
    })
}

pub async fn patch_policy(
    state: &ScaiSpeak,
    principal: &Principal,
    patch: PolicyPatch,
) -> ApiResult<Policy> {
    require_enabled(principal, MODULE)?;
    principal.require_tenant_admin(&principal.tenant_id)?;
    let allowed = backends::allowed(patch.allowed_backends)?;
    let mut tx = state.handles.db.begin().await?;
    crate::db::scaispeak::put_allowed(&mut tx, &principal.tenant_id, &allowed).await?;
    crate::services::audit(
        &mut tx,
        Some(principal),
        Some(&principal.tenant_id),
        "scaispeak.policy.update",
        ("tenant", &principal.tenant_id),
        Some(serde_json::json!({ "allowed_backends": allowed })),
    )
    .await?;
    tx.commit().await?;
    Ok(Policy {
        allowed_backends: allowed,
    })
}

/// The backend for a request of this tenant. A cloned voice speaks on backend A only
/// (the relay cannot condition on a reference).
pub async fn resolve(
    state: &ScaiSpeak,
    tenant_id: &str,
    requested: Option<Preference>,
    voice: &voices::Voice,
) -> ApiResult<Backend> {
    let policy = policy(state, tenant_id).await?;
    let preference = match voice.is_cloned() {
        true => Preference::SelfHosted,
        false => requested.unwrap_or(Preference::Any),
    };
    backends::pick(
        &policy.allowed_backends,
        preference,
        state.usable(),
        ErrorCode::SCAISPEAK_BACKEND_UNAVAILABLE,
        "text to speech",
    )
}

/// Synthesizes one piece of text (a sentence, or a whole text on backend B) on the
/// backend: mono samples and their rate. A cloned voice's `profile` conditions the
/// base voice's output. `urgent` puts it ahead of other work on the local engine (a
/// stream's first audio).
pub async fn sentence(
    state: &ScaiSpeak,
    backend: Backend,
    text: &str,
    speed: f32,
    profile: Option<&engines::conditioning::VoiceProfile>,
    urgent: bool,
) -> ApiResult<(Vec<f32>, u32)> {
    match (backend, &state.local, &state.relay) {
        (Backend::Local, Some(local), _) => {
            let samples = local.sentence(text.to_owned(), speed, urgent).await?;
            let rate = local.tts_sample_rate().unwrap_or(22_050);
            let Some(profile) = profile.cloned() else {
                return Ok((samples, rate));
            };
            let conditioned = tokio::task::spawn_blocking(move || {
                engines::conditioning::condition(&samples, rate, &profile)
            })
            .await
            .map_err(ApiError::internal)?;
            Ok((conditioned, rate))
        }
        (Backend::Relay, _, Some(relay)) => relay.speak(text, speed).await,
        _ => Err(backend_unavailable(backend)),
    }
}

/// `SCAISPEAK_BACKEND_UNAVAILABLE` for a backend this process cannot use.
pub fn backend_unavailable(backend: Backend) -> ApiError {
    ApiError::new(
        ErrorCode::SCAISPEAK_BACKEND_UNAVAILABLE,
        format!("backend {} is not usable", backend.as_str()),
    )
}

/// The whole text on `backend`: the relay takes it in one call, the local voice one
/// sentence at a time.
async fn synthesize(
    state: &ScaiSpeak,
    backend: Backend,
    speak: &Speak,
) -> ApiResult<(Vec<f32>, u32)> {
    let pieces = match backend {
        Backend::Local => engines::piper::PiperVoice::sentences(&speak.text),
        Backend::Relay => vec![speak.text.clone()],
    };
    let mut samples = Vec::new();
    let mut rate = 0;
    for piece in &pieces {
        let (audio, piece_rate) = sentence(
            state,
            backend,
            piece,
            speak.speed,
            speak.voice.profile.as_ref(),
            false,
        )
        .await?;
        if rate != 0 && piece_rate != rate {
            return Err(ApiError::internal("sentences came back at different rates"));
        }
        rate = piece_rate;
        samples.extend(audio);
    }
    Ok((samples, rate.max(1)))
}

/// Finished audio of a `/speak` request.
pub struct Spoken {
    pub bytes: Vec<u8>,
    pub content_type: String,
    pub seconds: f64,
    pub backend: Backend,
}

/// How a speak request ended.
pub enum Outcome {
    /// The audio, to answer inline.
    Spoken(Spoken),
    /// The audio as it is made, to answer inline.
    Streamed(streamed::Streamed),
    /// The audio was written to the caller's drive (`save_to`).
    Saved {
        file: drive::Saved,
        seconds: f64,
        backend: Backend,
    },
    /// Queued as a synth job (`async: true`, or a long text).
    Queued(Box<crate::jobs::JobView>),
}

/// `POST /speak` and `/v1/audio/speech`: permissions, validation, then the audio
/// inline, written to the drive, or a queued job.
pub async fn speak_request(
    state: &Arc<ScaiSpeak>,
    principal: &Principal,
    request: SpeakRequest,
) -> ApiResult<Outcome> {
    authorize(principal)?;
    let mut speak = Speak::validate(state, principal, request).await?;
    // The text as the firewall lets it through (blocked: 403; redacted: spoken so).
    state
        .handles
        .firewall
        .guard(
            principal,
            speak.model.as_deref(),
            crate::firewall::Stage::SpeechInput,
            &mut [&mut speak.text],
        )
        .await?;
    if speak.run_async {
        return jobs::create(state, principal, &speak)
            .await
            .map(|job| Outcome::Queued(Box::new(job)));
    }
    if speak.stream && speak.save_to.is_none() {
        return streamed::start(state.clone(), principal, speak)
            .await
            .map(Outcome::Streamed);
    }
    let spoken = self::speak(state, &principal.tenant_id, principal.subject_id(), &speak).await?;
    let Some(save_to) = &speak.save_to else {
        return Ok(Outcome::Spoken(spoken));
    };
    let (seconds, backend) = (spoken.seconds, spoken.backend);
    let file = drive::save(
        state,
        &principal.tenant_id,
        drive::user_id(principal)?,
        save_to,
        speak.output.codec,
        spoken.content_type,
        spoken.bytes,
    )
    .await?;
    Ok(Outcome::Saved {
        file,
        seconds,
        backend,
    })
}

/// Synthesizes a validated request sentence by sentence, encodes it, records usage for
/// `subject` of `tenant_id`.
pub async fn speak(
    state: &ScaiSpeak,
    tenant_id: &str,
    subject: &str,
    speak: &Speak,
) -> ApiResult<Spoken> {
    let preference = balancers::preference(&speak.nodes, speak.backend_preference);
    let backend = resolve(state, tenant_id, preference, &speak.voice).await?;
    // Its cost held on the budgets before any work (a job's when a worker runs it:
    // spent meanwhile, it fails with `quota exceeded`), settled with the real usage.
    let characters = speak.text.chars().count();
    let held = hold(state, tenant_id, subject, &speak.text).await?;
    let work = synthesize(state, backend, speak);
    let (samples, rate) = crate::inference::pool::bound(speak.nodes.clone(), work).await?;
    let seconds = samples.len() as f64 / f64::from(rate);
    let output = speak.output;
    let bytes = tokio::task::spawn_blocking(move || output::encode(&samples, rate, &output))
        .instrument(tracing::info_span!("encode", codec = ?output.codec))
        .await
        .map_err(ApiError::internal)??;
    held.settle(usage_record(
        state,
        tenant_id,
        subject,
        (characters, seconds),
    ));
    Ok(Spoken {
        bytes,
        content_type: speak.output.content_type(rate),
        seconds,
        backend,
    })
}

/// Holds a text's estimated cost on the budgets before any work (about 15 characters
/// a second of speech); settled with the real usage.
async fn hold(
    state: &ScaiSpeak,
    tenant_id: &str,
    subject: &str,
    text: &str,
) -> ApiResult<crate::accounting::Reservation> {
    let characters = text.chars().count();
    let accounting = &state.handles.accounting;
    let prices = accounting.prices;
    let estimate = characters as f64 * (prices.character + prices.audio_second / 15.0);
    accounting.reserve_for(tenant_id, subject, estimate).await
}

/// Characters and audio seconds as a usage record (under the current request id).
fn usage_record(
    state: &ScaiSpeak,
    tenant_id: &str,
    subject: &str,
    (characters, seconds): (usize, f64),
) -> UsageRecord {
    let kind = crate::accounting::subject_kind_of(subject);
    let mut record = UsageRecord::for_subject(tenant_id, kind, subject, MODULE);
    record.characters = characters as u64;
    record.audio_seconds = seconds;
    let prices = state.handles.accounting.prices;
    record.cost = characters as f64 * prices.character + seconds * prices.audio_second;
    record
}
