//! `save_to`: synthesized audio written to the tenant's drive instead of coming back
//! inline. The drive is the object store, one folder per user
//! (`drive/<user id>/<folder>/<filename>`). Writing needs a user's JWT (API keys get
//! `SCAISPEAK_SAVE_TO_REQUIRES_JWT`), an existing file needs `overwrite: true`
//! (`SCAISPEAK_SCAIDRIVE_CONFLICT`), and a deployment with `[scaispeak] drive = false`
//! has none (`SCAISPEAK_SCAIDRIVE_NOT_AVAILABLE`). Names are sanitised: no separators,
//! no dot segments, no control characters.

use axum::body::Bytes;
use serde::Serialize;
use utoipa::ToSchema;

use super::SaveTo;
use super::output::Codec;
use crate::auth::{Principal, Subject};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::scaispeak::ScaiSpeak;
use crate::store::ObjectKey;

const NAME_MAX: usize = 120;

/// Where a file went.
#[derive(Debug, Serialize, ToSchema)]
pub struct Saved {
    /// `<folder>/<filename>` in the user's drive.
    pub path: String,
    pub bytes: usize,
    pub content_type: String,
}

/// One path segment, made safe: only letters, digits, `-`, `_`, `.` and spaces survive
/// (others become `_`), no leading dots, bounded length.
pub fn sanitize(segment: &str) -> String {
    let cleaned: String = segment
        .chars()
        .map(|c| match c.is_alphanumeric() || "-_. ".contains(c) {
            true => c,
            false => '_',
        })
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim();
    cleaned.chars().take(NAME_MAX).collect()
}

fn extension(codec: Codec) -> &'static str {
    match codec {
        Codec::Wav => "wav",
        Codec::PcmS16le => "pcm",
        Codec::Opus => "ogg",
        Codec::Mp3 => "mp3",
        Codec::Flac => "flac",
    }
}

/// The user's id, or the contract's refusal for keys.
pub fn user_id(principal: &Principal) -> ApiResult<&str> {
    match &principal.subject {
        Subject::User { id, .. } => Ok(id),
        Subject::ApiKey { .. } => Err(ApiError::new(
            ErrorCode::SCAISPEAK_SAVE_TO_REQUIRES_JWT,
            "save_to needs a user JWT; API keys cannot write to a drive",
        )),
    }
}

/// Checks that come before synthesis: a user, a drive, a valid target.
pub fn check(state: &ScaiSpeak, principal: &Principal, save_to: &SaveTo) -> ApiResult<()> {
    user_id(principal)?;
    if !state.config.drive {
        return Err(ApiError::new(
            ErrorCode::SCAISPEAK_SCAIDRIVE_NOT_AVAILABLE,
            "no drive is configured for this deployment",
        ));
    }
    if let Some(name) = &save_to.filename
        && sanitize(name).is_empty()
    {
        return Err(
            ApiError::invalid("save_to.filename has no usable characters")
                .with_field("field", "save_to.filename"),
        );
    }
    Ok(())
}

/// A file's place: its path in the user's drive and its object key.
struct Target {
    relative: String,
    key: ObjectKey,
}

impl Target {
    fn of(tenant_id: &str, user: &str, save_to: &SaveTo, codec: Codec) -> ApiResult<Target> {
        let mut path: Vec<String> = save_to
            .folder
            .as_deref()
            .unwrap_or("")
            .split(['/', '\\'])
            .map(sanitize)
            .filter(|s| !s.is_empty())
            .collect();
        path.push(match save_to.filename.as_deref().map(sanitize) {
            Some(name) if !name.is_empty() => name,
            _ => format!("speech-{}.{}", crate::db::now_ms(), extension(codec)),
        });
        let relative = path.join("/");
        let key = ObjectKey::new(tenant_id, &format!("drive/{user}/{relative}"))
            .map_err(|e| ApiError::invalid(format!("save_to path: {e}")))?;
        Ok(Target { relative, key })
    }

    /// `SCAISPEAK_SCAIDRIVE_CONFLICT` when the file exists and may not be replaced.
    async fn refuse_conflict(&self, state: &ScaiSpeak, overwrite: bool) -> ApiResult<()> {
        let exists = state
            .handles
            .store
            .exists(&self.key)
            .await
            .map_err(|e| e.api("drive"))?;
        if exists && !overwrite {
            return Err(ApiError::new(
                ErrorCode::SCAISPEAK_SCAIDRIVE_CONFLICT,
                format!(
                    "`{}` exists; pass overwrite: true or another filename",
                    self.relative
                ),
            )
            .with_field("path", self.relative.clone()));
        }
        Ok(())
    }
}

/// Before a synth job with `save_to` is queued: a named file that already exists (and
/// may not be replaced) is refused now rather than when the job ends. The job checks
/// again when it writes.
pub async fn check_queued(
    state: &ScaiSpeak,
    principal: &Principal,
    save_to: &SaveTo,
    codec: Codec,
) -> ApiResult<()> {
    if save_to.filename.is_none() {
        return Ok(());
    }
    Target::of(&principal.tenant_id, user_id(principal)?, save_to, codec)?
        .refuse_conflict(state, save_to.overwrite)
        .await
}

/// Writes the audio to `user`'s drive; refuses to replace a file unless `overwrite`.
pub async fn save(
    state: &ScaiSpeak,
    tenant_id: &str,
    user: &str,
    save_to: &SaveTo,
    codec: Codec,
    content_type: String,
    audio: Vec<u8>,
) -> ApiResult<Saved> {
    let target = Target::of(tenant_id, user, save_to, codec)?;
    target.refuse_conflict(state, save_to.overwrite).await?;
    let bytes = audio.len();
    state
        .handles
        .store
        .put(&target.key, Bytes::from(audio))
        .await
        .map_err(|e| e.api("drive"))?;
    Ok(Saved {
        path: target.relative,
        bytes,
        content_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_or_hide() {
        assert_eq!(sanitize("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(sanitize("..hidden"), "hidden");
        assert_eq!(sanitize("notes: day 1.wav"), "notes_ day 1.wav");
        assert_eq!(sanitize("a\u{0}b"), "a_b");
        assert_eq!(sanitize("..."), "");
        assert_eq!(sanitize(&"x".repeat(500)).len(), NAME_MAX);
    }
}
