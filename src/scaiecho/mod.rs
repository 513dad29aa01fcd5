//! ScaiEcho, speech to text: options, backend resolution, decoding, the local node or
//! the managed relay, diarization, usage, output formats. Handlers in `http::scaiecho`
//! stay thin; everything a request does is here.
//!
//! - [`policy`]: tenant policy and the backend resolver.
//! - backend A is the inference nodes, through [`crate::inference::pool::Dispatcher`].
//! - [`relay`]: backend B (an OpenAI-compatible upstream).
//! - [`format`]: json, text, srt, vtt.
//! - [`jobs`]: async transcription jobs (staged audio, the job view, processing).
//! - [`speakers`]: the speaker library (enrollment, warm registry, tombstones).
//! - [`stream`]: the WebSocket `/stream/transcribe` protocol, endpointing, scheduling.

pub mod deepgram;
pub mod format;
pub mod jobs;
pub mod policy;
pub mod relay;
pub mod speakers;
pub mod stream;

use std::sync::Arc;

use crate::accounting::UsageRecord;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::inference::pool::Dispatcher;
use crate::rbac::Permission;
use crate::services::modules::require_enabled;
use crate::speech::balancers::{self, Serves};
use crate::speech::intake::AudioIntake;
use crate::speech::upload::Upload;
use format::{ResponseFormat, SegmentOut, Transcription};
use policy::{Backend, Policy, Preference, Usable};

pub const MODULE: &str = "scaiecho";

/// ScaiEcho's context: the backends this process can use and the handles its requests,
/// streams and jobs need (nothing of ScaiSpeak, the gateway or the HTTP surface).
pub struct ScaiEcho {
    /// Backend A: the inference nodes.
    pub local: Option<Arc<Dispatcher>>,
    pub relay: Option<relay::Relay>,
    /// Open WebSocket streams per tenant.
    pub streams: Arc<crate::slots::StreamSlots>,
    /// The database, object store, intake, nodes, accounting, jobs, admission gate and
    /// stream settings.
    handles: crate::speech::Handles,
}

impl ScaiEcho {
    pub fn new(
        handles: crate::speech::Handles,
        local: Option<Arc<Dispatcher>>,
        relay: Option<relay::Relay>,
    ) -> ScaiEcho {
        ScaiEcho {
            local,
            relay,
            streams: crate::slots::StreamSlots::new(
                "scaigrid_scaiecho_streams_open",
                "scaiecho",
                handles.nodes.cluster(),
            ),
            handles,
        }
    }

    /// The audio intake (upload budget, decode slots) the HTTP boundary reads into.
    pub fn intake(&self) -> &AudioIntake {
        &self.handles.intake
    }

    pub fn usable(&self) -> Usable {
        Usable {
            local: self.local.as_ref().is_some_and(|d| d.can_transcribe()),
            relay: self.relay.is_some(),
        }
    }
}

/// Segment timestamps (Whisper's timestamp tokens), also word timings, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Timestamps {
    Segment,
    Word,
    None,
}

impl Timestamps {
    /// The `timestamps` option (form field, query parameter or stream `open`).
    pub fn parse(value: &str) -> ApiResult<Timestamps> {
        match value {
            "segment" | "true" => Ok(Timestamps::Segment),
            "word" => Ok(Timestamps::Word),
            "none" | "false" => Ok(Timestamps::None),
            other => Err(ApiError::invalid(format!(
                "timestamps `{other}` is not `segment`, `word` or `none`"
            ))
            .with_field("field", "timestamps")),
        }
    }
}

/// The options of one transcription request, validated (a queued job stores them as
/// they are, so its worker runs exactly what was accepted).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Options {
    pub language: Option<String>,
    pub diarize: bool,
    pub timestamps: Timestamps,
    pub response_format: ResponseFormat,
    pub backend_preference: Option<Preference>,
    pub run_async: bool,
    /// The request's `model`: a balancer's name binds the work to its instances' nodes
    /// (`speech::balancers`); any other name is OpenAI's (`whisper-1`) and changes
    /// nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Option fields (form fields or query parameters), empty values dropped.
pub struct Fields<'a>(pub &'a std::collections::HashMap<String, String>);

impl Fields<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

fn flag(fields: &Fields<'_>, name: &str) -> ApiResult<bool> {
    match fields.get(name) {
        None => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(other) => Err(ApiError::invalid(format!(
            "`{name}` must be true or false, not `{other}`"
        ))
        .with_field("field", name)),
    }
}

impl Options {
    pub fn from_upload(upload: &Upload) -> ApiResult<Options> {
        Options::from_fields(&Fields(&upload.fields))
    }

    pub fn from_fields(fields: &Fields<'_>) -> ApiResult<Options> {
        let timestamps = match fields.get("timestamps") {
            None => granularities(fields)?,
            Some(value) => Timestamps::parse(value)?,
        };
        let response_format = fields
            .get("response_format")
            .unwrap_or("json")
            .parse::<ResponseFormat>()
            .map_err(|e| ApiError::invalid(e).with_field("field", "response_format"))?;
        let language = fields.get("language").map(str::to_ascii_lowercase);
        if let Some(language) = &language
            && !(2..=3).contains(&language.len())
        {
            return Err(
                ApiError::invalid(format!("language `{language}` is not a language code"))
                    .with_field("field", "language"),
            );
        }
        Ok(Options {
            language,
            diarize: flag(fields, "diarize")?,
            timestamps,
            response_format,
            backend_preference: fields
                .get("backend_preference")
                .map(Preference::parse)
                .transpose()?,
            run_async: flag(fields, "async")?,
            model: fields.get("model").map(str::to_owned),
        })
    }
}

/// OpenAI's `timestamp_granularities[]` (`segment`, `word`; segments always come):
/// word timings when `word` is among them.
fn granularities(fields: &Fields<'_>) -> ApiResult<Timestamps> {
    let field = ["timestamp_granularities[]", "timestamp_granularities"]
        .into_iter()
        .find(|name| fields.get(name).is_some());
    let Some(field) = field else {
        return Ok(Timestamps::Segment);
    };
    let mut timestamps = Timestamps::Segment;
    for value in fields.get(field).unwrap_or_default().split(',') {
        match value.trim() {
            "word" => timestamps = Timestamps::Word,
            "segment" => {}
            other => {
                return Err(ApiError::invalid(format!(
                    "timestamp granularity `{other}` is not `segment` or `word`"
                ))
                .with_field("field", field));
            }
        }
    }
    Ok(timestamps)
}

/// The tenant's policy (defaults until it is patched).
pub async fn policy(state: &ScaiEcho, tenant_id: &str) -> ApiResult<Policy> {
    let mut conn = state.handles.db.pool.acquire().await?;
    Ok(crate::db::scaiecho::get_policy(&mut conn, tenant_id)
        .await?
        .unwrap_or_default())
}

/// `PATCH /tenant-policy` (tenant admins): the patched policy, stored with its audit
/// row in one transaction.
pub async fn patch_policy(
    state: &ScaiEcho,
    principal: &Principal,
    patch: policy::PolicyPatch,
) -> ApiResult<Policy> {
    require_enabled(principal, MODULE)?;
    principal.require_tenant_admin(&principal.tenant_id)?;
    let updated = policy(state, &principal.tenant_id).await?.apply(patch)?;
    let mut tx = state.handles.db.begin().await?;
    crate::db::scaiecho::put_policy(&mut tx, &principal.tenant_id, &updated).await?;
    crate::services::audit(
        &mut tx,
        Some(principal),
        Some(&principal.tenant_id),
        "scaiecho.policy.update",
        ("tenant", &principal.tenant_id),
        serde_json::to_value(&updated).ok(),
    )
    .await?;
    tx.commit().await?;
    Ok(updated)
}

/// Checks that come before any work: module, permissions.
pub fn authorize(principal: &Principal, options: &Options) -> ApiResult<()> {
    require_enabled(principal, MODULE)?;
    principal.require(Permission::ScaiechoTranscribe)?;
    if options.diarize {
        principal.require(Permission::ScaiechoDiarize)?;
    }
    Ok(())
}

/// How a transcription request ended: done here, or queued as a job for a worker.
pub enum Outcome {
    Done(Transcription, ResponseFormat),
    Queued(crate::jobs::JobView),
}

/// A transcription request whose upload was read: options, permissions, tenant policy,
/// then (in this order, so no work is done for a request that cannot be served) a
/// backend check, the decode, and the transcription here or a queued job (`async`, or
/// audio over the policy's inline threshold).
pub async fn transcribe_upload(
    state: &ScaiEcho,
    principal: &Principal,
    upload: Upload,
) -> ApiResult<Outcome> {
    let options = Options::from_upload(&upload)?;
    transcribe_with(state, principal, upload, options, true).await
}

/// [`transcribe_upload`] with options read elsewhere (Deepgram's `/v1/listen`).
/// `may_queue: false` transcribes inline however long the audio is (a protocol that
/// has no jobs), within `[limits] max_audio_seconds`.
pub async fn transcribe_with(
    state: &ScaiEcho,
    principal: &Principal,
    upload: Upload,
    options: Options,
    may_queue: bool,
) -> ApiResult<Outcome> {
    authorize(principal, &options)?;
    // Bound to a balancer's instance before any work; a queued job asks again when it
    // runs.
    let model = options.model.as_deref();
    let nodes = state
        .handles
        .bound(&principal.tenant_id, model, Serves::Transcription)
        .await?;
    let policy = policy(state, &principal.tenant_id).await?;
    // Before any work: some backend can take this, here or (queued) on a worker.
    let usable = state
        .handles
        .nodes
        .usable_for_jobs(state.usable(), "audio.stt.")
        .await?;
    policy::resolve(&policy, options.backend_preference, usable)?;
    let media_type = upload.media_type.as_deref();
    let audio_seconds = match options.run_async {
        // Decoded by the worker: an undecodable upload ends as a `decode failure` job.
        true => None,
        false => {
            let samples = state
                .handles
                .intake
                .decode_16k(upload.audio.clone(), media_type)
                .await?;
            let seconds = samples.len() as f64 / 16_000.0;
            if seconds <= policy.inline_threshold_seconds || !may_queue {
                // Inline work runs here: on this process's own backends (the nodes of a
                // balancer's instance, when bound to one).
                let preference = balancers::preference(&nodes, options.backend_preference);
                let backend = policy::resolve(&policy, preference, state.usable())?;
                let owner = Owner::of(principal);
                let work = transcribe(state, owner, samples, &options, backend);
                let mut transcription = crate::inference::pool::bound(nodes, work).await?;
                guard(state, principal, model, &mut transcription).await?;
                return Ok(Outcome::Done(transcription, options.response_format));
            }
            Some(seconds)
        }
    };
    let job = jobs::create(
        state,
        principal,
        upload.audio.clone(),
        media_type,
        &options,
        audio_seconds,
    )
    .await?;
    Ok(Outcome::Queued(job))
}

/// The firewall over a transcript before it is returned: blocked, 403 (the work was
/// done and is billed; the text is withheld); redacted, the text and every segment's
/// text carry `[REDACTED:<slug>]`, and the segments lose their words and decoder
/// details (a match can span words, and tokens spell what was said).
pub(super) async fn guard(
    state: &ScaiEcho,
    principal: &Principal,
    model: Option<&str>,
    transcription: &mut Transcription,
) -> ApiResult<()> {
    let format::Transcription { text, segments, .. } = transcription;
    let mut texts: Vec<&mut String> = std::iter::once(text)
        .chain(segments.iter_mut().map(|segment| &mut segment.text))
        .collect();
    let verdict = state
        .handles
        .firewall
        .guard(
            principal,
            model,
            crate::firewall::Stage::Transcript,
            &mut texts,
        )
        .await?;
    if verdict.redacted.is_some() {
        for segment in &mut transcription.segments {
            segment.words = None;
            segment.decoding = None;
        }
    }
    Ok(())
}

/// Whose usage a transcription is.
pub struct Owner<'a> {
    pub tenant_id: &'a str,
    pub subject: &'a str,
}

impl<'a> Owner<'a> {
    pub fn of(principal: &'a Principal) -> Owner<'a> {
        Owner {
            tenant_id: &principal.tenant_id,
            subject: principal.subject_id(),
        }
    }
}

/// Runs a transcription on the resolved backend, records usage.
pub async fn transcribe(
    state: &ScaiEcho,
    owner: Owner<'_>,
    samples: Vec<f32>,
    options: &Options,
    backend: Backend,
) -> ApiResult<Transcription> {
    let echo = state;
    let duration = samples.len() as f64 / 16_000.0;
    // Its cost held on the budgets before any work (a job's when a worker runs it:
    // spent meanwhile, it fails with `quota exceeded`), settled with the real usage.
    let accounting = &state.handles.accounting;
    let estimate = duration * accounting.prices.audio_second;
    let held = accounting
        .reserve_for(owner.tenant_id, owner.subject, estimate)
        .await?;
    let mut language = options.language.clone().unwrap_or_else(|| "en".to_owned());
    let segments = match (backend, &echo.local, &echo.relay) {
        (Backend::Local, Some(local), _) => {
            let samples = Arc::new(samples);
            let stt_options = engines::whisper::Options {
                beam_size: 1,
                timestamps: options.timestamps != Timestamps::None,
                language: options.language.clone(),
                compact: false,
                single_window: false,
                word_timestamps: options.timestamps == Timestamps::Word,
            };
            let transcript = local.transcribe(samples.clone(), stt_options);
            let enrolled = match options.diarize && local.can_diarize() {
                true => Some(speakers::enrolled(state, owner.tenant_id).await?),
                false => None,
            };
            let turns = async {
                match enrolled {
                    Some(enrolled) => local.diarize(samples.clone(), enrolled).await.map(Some),
                    None => Ok(None),
                }
            };
            let (transcript, turns) = tokio::join!(transcript, turns);
            let (transcript, turns) = (transcript?, turns?);
            if let Some(heard) = &transcript.language {
                language = heard.clone();
            }
            transcript
                .segments
                .into_iter()
                .enumerate()
                .map(|(id, s)| SegmentOut {
                    id,
                    start: round_ms(s.start.into()),
                    end: round_ms(s.end.into()),
                    speaker_label: turns
                        .as_ref()
                        .and_then(|t| format::speaker_for(t, s.start, s.end)),
                    words: (options.timestamps == Timestamps::Word).then(|| {
                        s.words
                            .iter()
                            .map(|w| {
                                let speaker = turns
                                    .as_ref()
                                    .and_then(|t| format::speaker_for(t, w.start, w.end));
                                format::WordOut::from_engine(w, speaker)
                            })
                            .collect()
                    }),
                    decoding: Some(format::Decoding {
                        seek: s.seek,
                        tokens: s.tokens,
                        temperature: 0.0,
                        avg_logprob: f64::from(s.avg_logprob),
                        no_speech_prob: f64::from(s.no_speech_prob),
                    }),
                    text: s.text,
                })
                .collect::<Vec<_>>()
        }
        (Backend::Relay, _, Some(relay)) => {
            let wav = media::encode::wav_s16(&samples, 16_000, 1);
            let words = options.timestamps == Timestamps::Word;
            let result = relay
                .transcribe(wav, options.language.as_deref(), words)
                .await?;
            if let Some(detected) = &result.language {
                language = detected.clone();
            }
            let mut segments: Vec<SegmentOut> = result
                .segments
                .into_iter()
                .enumerate()
                .map(|(id, (start, end, text))| SegmentOut {
                    id,
                    start,
                    end,
                    text,
                    speaker_label: None,
                    words: words.then(Vec::new),
                    decoding: None,
                })
                .collect();
            if segments.is_empty() && !result.text.is_empty() {
                segments.push(SegmentOut {
                    id: 0,
                    start: 0.0,
                    end: round_ms(duration),
                    text: result.text.clone(),
                    speaker_label: None,
                    words: words.then(Vec::new),
                    decoding: None,
                });
            }
            if words {
                format::place_words(&mut segments, result.words);
            }
            segments
        }
        _ => {
            return Err(ApiError::new(
                crate::error::ErrorCode::SCAIECHO_BACKEND_UNAVAILABLE,
                format!("backend {} is not usable", backend.as_str()),
            ));
        }
    };
    let text = segments
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    held.settle(usage_record(state, &owner, duration));
    Ok(Transcription {
        text,
        language,
        duration: round_ms(duration),
        segments,
        backend: backend.as_str().to_owned(),
    })
}

/// Seconds of audio heard for `owner`, as a usage record (under the current request id).
fn usage_record(state: &ScaiEcho, owner: &Owner<'_>, seconds: f64) -> UsageRecord {
    let kind = crate::accounting::subject_kind_of(owner.subject);
    let mut record = UsageRecord::for_subject(owner.tenant_id, kind, owner.subject, MODULE);
    record.audio_seconds = seconds;
    record.cost = seconds * state.handles.accounting.prices.audio_second;
    record
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}
