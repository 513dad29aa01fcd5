//! Deepgram's speech-to-text API on ScaiEcho: `/v1/listen` as a WebSocket (live audio)
//! and as a POST (a file), with Deepgram's query parameters, messages and response body,
//! so an application written against Deepgram (its SDKs included) works with only its
//! base URL and key changed. The work is ScaiEcho's: the same stream session, the same
//! transcription, limits, budgets, firewall and metering.

pub mod link;
pub mod options;
pub mod shape;

use media::stream::{StreamDecoder, StreamFormat, StreamLimits};
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::speech::upload::Upload;
use options::Listen;

use super::{Outcome, ScaiEcho};

/// A file (`POST /v1/listen`): transcribed inline, however long (Deepgram answers files
/// on the request; `callback` is refused), as Deepgram's response body.
pub async fn transcribe_file(
    state: &ScaiEcho,
    principal: &Principal,
    upload: Upload,
    listen: &Listen,
) -> ApiResult<serde_json::Value> {
    let created = shape::now();
    // Hashing and expanding up to `max_upload_bytes` of audio: off the async runtime.
    let raw = listen.clone();
    let (sha256, upload) = tokio::task::spawn_blocking(move || {
        let sha256 = hex::encode(Sha256::digest(&upload.audio));
        raw_encoding(upload, &raw).map(|upload| (sha256, upload))
    })
    .await
    .map_err(ApiError::internal)??;
    let options = listen.request();
    let outcome = super::transcribe_with(state, principal, upload, options, false).await?;
    let Outcome::Done(transcription, _) = outcome else {
        return Err(ApiError::internal("a file for /v1/listen was queued"));
    };
    let request_id = crate::request_id::current().unwrap_or_default();
    let facts = shape::Facts {
        request_id: &request_id,
        sha256: &sha256,
        created: &created,
        duration: transcription.duration,
        channels: listen.channels,
    };
    Ok(shape::response(
        &transcription,
        &facts,
        listen.punctuate,
        listen.utterances,
        listen.language.is_none(),
    ))
}

/// A file in a raw encoding named by `encoding` (it has no header to tell): linear16 is
/// read as the PCM it is; μ-law and A-law are expanded to 16-bit PCM first. Containers
/// keep their declared type (and are told by their bytes anyway).
fn raw_encoding(mut upload: Upload, listen: &Listen) -> ApiResult<Upload> {
    let declared = listen.media_type.as_str();
    if declared.starts_with("audio/pcm;") {
        upload.media_type = Some(declared.to_owned());
    } else if declared.starts_with("audio/pcmu;") || declared.starts_with("audio/pcma;") {
        let format = StreamFormat::from_media_type(declared).map_err(ApiError::from)?;
        let limits = StreamLimits {
            max_unit_bytes: 1 << 16,
            max_seconds: f64::INFINITY,
        };
        let mut decoder = StreamDecoder::new(format, limits);
        let mut samples = Vec::with_capacity(upload.audio.len());
        decoder
            .push(&upload.audio, &mut samples)
            .map_err(ApiError::from)?;
        decoder.finish().map_err(ApiError::from)?;
        upload.audio = media::encode::pcm_s16le(&samples).into();
        upload.media_type = Some(format!(
            "audio/pcm;rate={};channels={}",
            decoder.shape().map_or(8_000, |(rate, _)| rate),
            listen.channels
        ));
    }
    Ok(upload)
}
