//! The speaker library for diarization: enrollment (preflight, staged reference clip,
//! profile embedding), the warm registry (which nodes hold a profile), and deletion
//! (tombstone, audit row, eviction per node with an `error_summary`).
//!
//! A profile is *warm* on a node when the node has accepted it; that node's diarization
//! labels matching speech with the profile's label. Enrollment warms the profile on
//! this process's node when it has the speaker embedder; otherwise the profile stays
//! `pending` (with a note) until `POST /speakers/{id}/warm` finds a node that accepts.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use media::preflight::Thresholds;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::MODULE;
use crate::auth::Principal;
use crate::db::speakers::{self, NewSpeaker, SpeakerRow};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::rbac::Permission;
use crate::records::Timestamp;
use crate::scaiecho::ScaiEcho;
use crate::services::modules::require_enabled;
use crate::speech::upload::Upload;
use crate::store::ObjectKey;

pub const READ: Permission = Permission::ScaiechoSpeakerRead;
pub const WRITE: Permission = Permission::ScaiechoSpeakerWrite;
const LABEL_MAX: usize = 64;
/// Why a profile is `pending` when no node could take it.
const NO_NODE: &str = "no audio.analyze.pyannote node is online; POST /speakers/{id}/warm \
    once one is";

/// Reference-clip checks for speaker profiles: shorter and looser than voice cloning
/// (an embedding needs a few seconds of clean speech, not studio audio); telephone
/// audio (8 kHz) is accepted.
pub fn thresholds() -> Thresholds {
    Thresholds {
        min_duration_seconds: 3.0,
        max_duration_seconds: 120.0,
        min_voice_activity_ratio: 0.3,
        max_peak_dbfs: 0.0,
        min_snr_db: 10.0,
        min_sample_rate: 8_000,
    }
}

/// A profile as the API shows it (never the embedding).
#[derive(Debug, Serialize, ToSchema)]
pub struct SpeakerView {
    pub id: String,
    pub object: &'static str,
    pub label: String,
    /// `pending` | `ready` | `failed`.
    pub enrollment_status: String,
    pub status_reason: Option<String>,
    pub warm_node_ids: Vec<String>,
    #[schema(value_type = Object)]
    pub preflight: Value,
    pub created_at: String,
    pub updated_at: String,
    pub deleted_at: Option<String>,
    /// Why the profile is still `pending`, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn view(row: SpeakerRow, warm_node_ids: Vec<String>) -> SpeakerView {
    let time = |ms: i64| Timestamp(ms).to_rfc3339();
    let note = (row.enrollment_status == "pending").then(|| NO_NODE.replace("{id}", &row.id));
    SpeakerView {
        object: "scaiecho.speaker",
        label: row.label,
        enrollment_status: row.enrollment_status,
        status_reason: row.status_reason,
        warm_node_ids,
        preflight: serde_json::from_str(&row.preflight).unwrap_or(Value::Null),
        created_at: time(row.created_at),
        updated_at: time(row.updated_at),
        deleted_at: row.deleted_at.map(time),
        note,
        id: row.id,
    }
}

fn access(principal: &Principal, permission: Permission) -> ApiResult<()> {
    require_enabled(principal, MODULE)?;
    principal.require(permission)
}

fn validate_label(label: Option<&str>) -> ApiResult<String> {
    let label = label
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ApiError::invalid("`label` is required").with_field("field", "label"))?;
    let allowed = |c: char| c.is_alphanumeric() || " _-.'".contains(c);
    if label.chars().count() > LABEL_MAX || !label.chars().all(allowed) {
        return Err(ApiError::invalid(format!(
            "`label` is 1-{LABEL_MAX} letters, digits, spaces or _-.'"
        ))
        .with_field("field", "label"));
    }
    if label.starts_with("spk_") {
        return Err(
            ApiError::invalid("labels starting with `spk_` name unknown speakers")
                .with_field("field", "label"),
        );
    }
    Ok(label.to_owned())
}

fn reference_key(tenant_id: &str, id: &str) -> ApiResult<ObjectKey> {
    ObjectKey::new(tenant_id, &format!("scaiecho/speakers/{id}/reference"))
        .map_err(|e| ApiError::internal(format_args!("object key: {e}")))
}

/// Decodes the reference and runs the preflight; 16 kHz mono on success.
async fn check_reference(
    state: &ScaiEcho,
    bytes: Bytes,
    media_type: Option<&str>,
) -> ApiResult<(Vec<f32>, Value)> {
    let (block, samples) = state
        .handles
        .intake
        .reference_clip(bytes, media_type, thresholds())
        .await?;
    match samples {
        Some(samples) => Ok((samples, block)),
        None => Err(ApiError::new(
            ErrorCode::SCAIECHO_SPEAKER_PREFLIGHT_FAILED,
            format!(
                "the reference clip failed preflight: {}",
                block["fail_reasons"]
            ),
        )
        .with_field("preflight", block)),
    }
}

/// The profile embedding from a node that carries the embedder, if one does.
async fn embed(state: &ScaiEcho, samples: Arc<Vec<f32>>) -> Option<ApiResult<Vec<f32>>> {
    let engines = state.handles.nodes.engines()?;
    if !engines.can_diarize() {
        return None;
    }
    Some(engines.profile(&samples).await.map_err(ApiError::from))
}

/// The speaker's stored reference clip, decoded and checked again.
async fn stored_reference(state: &ScaiEcho, row: &SpeakerRow) -> Result<Vec<f32>, String> {
    let key = ObjectKey::new(&row.tenant_id, &row.reference_key).map_err(|e| e.to_string())?;
    let bytes = state
        .handles
        .store
        .get(&key)
        .await
        .map_err(|e| e.to_string())?;
    let media_type = row.reference_media_type.as_deref();
    let (samples, _) = check_reference(state, bytes, media_type)
        .await
        .map_err(|e| e.message)?;
    Ok(samples)
}

/// A database connection, its failure as the reason `warm_here` reports.
async fn connection(state: &ScaiEcho) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, String> {
    state
        .handles
        .db
        .pool
        .acquire()
        .await
        .map_err(|e| e.to_string())
}

/// Computes the profile on a node and warms it on every node of this process that
/// carries the embedder (`Warm` RPCs): the nodes that hold it, and why the others do
/// not. `Err(reason)` when none can take it (no node, no embedder, no speech).
async fn warm_here(
    state: &ScaiEcho,
    row: &SpeakerRow,
    samples: Option<Vec<f32>>,
) -> Result<(Vec<String>, Vec<(String, String)>), String> {
    let engines = state
        .handles
        .nodes
        .engines()
        .filter(|engines| engines.can_diarize())
        .ok_or_else(|| NO_NODE.replace("{id}", &row.id))?;
    let embedding = match (&row.embedding, samples) {
        (Some(embedding), _) => embedding.clone(),
        (None, samples) => {
            let samples = match samples {
                Some(samples) => samples,
                None => stored_reference(state, row).await?,
            };
            match embed(state, Arc::new(samples)).await {
                None => return Err(NO_NODE.replace("{id}", &row.id)),
                Some(Err(error)) => {
                    let mut conn = connection(state).await?;
                    speakers::set_enrollment(
                        &mut conn,
                        &row.id,
                        "failed",
                        Some(&error.message),
                        None,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                    return Err(error.message);
                }
                Some(Ok(embedding)) => embedding,
            }
        }
    };
    let mut conn = connection(state).await?;
    speakers::set_enrollment(&mut conn, &row.id, "ready", None, Some(&embedding))
        .await
        .map_err(|e| e.to_string())?;
    let (warm, failed) = engines.warm_speaker(&row.id, &embedding).await;
    for node in &warm {
        speakers::add_warm(&mut conn, &row.id, node)
            .await
            .map_err(|e| e.to_string())?;
    }
    if warm.is_empty() {
        let reasons: Vec<String> = failed.iter().map(|(n, e)| format!("{n}: {e}")).collect();
        return Err(reasons.join("; "));
    }
    Ok((warm, failed))
}

/// `POST /speakers`: label + reference clip (multipart `file` or raw body).
pub async fn enroll(
    state: &ScaiEcho,
    principal: &Principal,
    upload: Upload,
) -> ApiResult<SpeakerView> {
    access(principal, WRITE)?;
    let label = validate_label(upload.field("label"))?;
    let (samples, preflight_block) =
        check_reference(state, upload.audio.clone(), upload.media_type.as_deref()).await?;
    let id = crate::db::new_id("spkr");
    let key = reference_key(&principal.tenant_id, &id)?;
    state
        .handles
        .store
        .put(&key, upload.audio.clone())
        .await
        .map_err(|e| e.api("staging the reference"))?;
    let mut tx = state.handles.db.begin().await?;
    let created = speakers::create(
        &mut tx,
        &NewSpeaker {
            id: &id,
            tenant_id: &principal.tenant_id,
            label: &label,
            reference_key: key.path(),
            reference_media_type: upload.media_type.as_deref(),
            preflight: &preflight_block.to_string(),
            created_by: principal.subject_id(),
        },
    )
    .await?;
    if !created {
        drop(tx);
        let _ = state.handles.store.delete(&key).await;
        return Err(ApiError::new(
            ErrorCode::CONFLICT,
            format!("a speaker labelled `{label}` is already enrolled"),
        )
        .with_field("field", "label"));
    }
    crate::services::audit(
        &mut tx,
        Some(principal),
        Some(&principal.tenant_id),
        "scaiecho.speaker.create",
        ("speaker", &id),
        Some(json!({ "label": label })),
    )
    .await?;
    tx.commit().await?;
    let mut conn = state.handles.db.pool.acquire().await?;
    let row = speakers::get(&mut conn, &principal.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::internal("speaker vanished after insert"))?;
    drop(conn);
    if let Err(reason) = warm_here(state, &row, Some(samples)).await {
        tracing::info!(speaker = %id, "speaker enrolled, not warm: {reason}");
    }
    get(state, principal, &id).await
}

async fn live_row(state: &ScaiEcho, principal: &Principal, id: &str) -> ApiResult<SpeakerRow> {
    let mut conn = state.handles.db.pool.acquire().await?;
    speakers::get(&mut conn, &principal.tenant_id, id)
        .await?
        .filter(|row| row.deleted_at.is_none())
        .ok_or_else(|| ApiError::not_found("speaker"))
}

pub async fn get(state: &ScaiEcho, principal: &Principal, id: &str) -> ApiResult<SpeakerView> {
    access(principal, READ)?;
    let mut conn = state.handles.db.pool.acquire().await?;
    let row = speakers::get(&mut conn, &principal.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("speaker"))?;
    let live = state.handles.nodes.live().await?;
    let warm = live.keep(speakers::warm_nodes(&mut conn, id).await?);
    Ok(view(row, warm))
}

/// The tenant's live speakers (of one `enrollment_status`, if given), oldest first.
pub async fn list(
    state: &ScaiEcho,
    principal: &Principal,
    status: Option<&str>,
) -> ApiResult<Vec<SpeakerView>> {
    access(principal, READ)?;
    if let Some(status) = status
        && !["pending", "ready", "failed"].contains(&status)
    {
        return Err(ApiError::invalid(
            "`enrollment_status` must be pending, ready or failed",
        ));
    }
    let mut conn = state.handles.db.pool.acquire().await?;
    let rows: Vec<_> = speakers::list(&mut conn, &principal.tenant_id)
        .await?
        .into_iter()
        .filter(|row| status.is_none_or(|s| s == row.enrollment_status))
        .collect();
    let live = state.handles.nodes.live().await?;
    let mut views = Vec::with_capacity(rows.len());
    for row in rows {
        let warm = live.keep(speakers::warm_nodes(&mut conn, &row.id).await?);
        views.push(view(row, warm));
    }
    Ok(views)
}

/// The warm view: status, the nodes holding the profile, and per-node errors of a fan-out.
#[derive(Debug, Serialize, ToSchema)]
pub struct WarmView {
    pub speaker_id: String,
    pub enrollment_status: String,
    pub warm_node_ids: Vec<String>,
    pub error_summary: BTreeMap<String, String>,
}

pub async fn warm_status(state: &ScaiEcho, principal: &Principal, id: &str) -> ApiResult<WarmView> {
    access(principal, READ)?;
    let row = live_row(state, principal, id).await?;
    let mut conn = state.handles.db.pool.acquire().await?;
    Ok(WarmView {
        warm_node_ids: state
            .handles
            .nodes
            .live()
            .await?
            .keep(speakers::warm_nodes(&mut conn, id).await?),
        speaker_id: row.id,
        enrollment_status: row.enrollment_status,
        error_summary: BTreeMap::new(),
    })
}

/// `POST /speakers/{id}/warm`: fans the profile out to the nodes this process reaches
/// (its own); `ready` once at least one node holds it.
pub async fn warm(state: &ScaiEcho, principal: &Principal, id: &str) -> ApiResult<WarmView> {
    access(principal, WRITE)?;
    let row = live_row(state, principal, id).await?;
    let mut error_summary = BTreeMap::new();
    match warm_here(state, &row, None).await {
        Ok((_, failed)) => error_summary.extend(failed),
        Err(reason) => {
            let nodes = state.handles.nodes.node_ids();
            match nodes.is_empty() {
                true => error_summary.insert("none".to_owned(), reason),
                false => error_summary.insert(nodes.join(","), reason),
            };
        }
    }
    let mut view = warm_status(state, principal, id).await?;
    view.error_summary = error_summary;
    Ok(view)
}

/// What a delete did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub id: String,
    pub object: &'static str,
    pub deleted: bool,
    pub evicted_node_ids: Vec<String>,
    /// Nodes that could not evict the profile, with why.
    pub error_summary: BTreeMap<String, String>,
}

/// Why a node holding a deleted profile did not evict it, when no call was made.
const NOT_REACHED: &str =
    "node not reachable; the erasure reconciler evicts it when the node is back";

/// `DELETE /speakers/{id}`: tombstone and audit row first (they always happen), then
/// eviction from every node holding the profile; nodes this process cannot reach are
/// reported in `error_summary`.
pub async fn delete(state: &ScaiEcho, principal: &Principal, id: &str) -> ApiResult<Deleted> {
    access(principal, WRITE)?;
    let row = live_row(state, principal, id).await?;
    // Every node of this process drops the profile (`Evict` RPCs); a node that
    // cannot is named with why.
    let (dropped, failed) = match state.handles.nodes.engines() {
        Some(engines) => engines.evict("speaker", id).await,
        None => (Vec::new(), Vec::new()),
    };
    let failed: BTreeMap<String, String> = failed.into_iter().collect();
    let mut tx = state.handles.db.begin().await?;
    if !speakers::tombstone(&mut tx, id).await? {
        return Err(ApiError::not_found("speaker"));
    }
    let holders = speakers::warm_nodes(&mut tx, id).await?;
    let mut evicted = Vec::new();
    let mut error_summary = BTreeMap::new();
    for node in holders {
        if dropped.contains(&node) {
            speakers::remove_warm(&mut tx, id, &node).await?;
            evicted.push(node);
        } else {
            // Owed: the erasure reconciler evicts it when the node answers again.
            crate::db::evictions::owe(&mut tx, ("speaker", id), &node, &principal.tenant_id)
                .await?;
            let reason = failed
                .get(&node)
                .cloned()
                .unwrap_or_else(|| NOT_REACHED.to_owned());
            error_summary.insert(node, reason);
        }
    }
    crate::services::audit(
        &mut tx,
        Some(principal),
        Some(&principal.tenant_id),
        "scaiecho.speaker.delete",
        ("speaker", id),
        Some(json!({
            "label": row.label,
            "evicted_node_ids": evicted,
            "error_summary": error_summary,
        })),
    )
    .await?;
    tx.commit().await?;
    // The reference clip goes; the tombstone keeps the label and preflight for audits.
    if let Ok(key) = ObjectKey::new(&principal.tenant_id, &row.reference_key) {
        let _ = state.handles.store.delete(&key).await;
    }
    Ok(Deleted {
        id: id.to_owned(),
        object: "scaiecho.speaker",
        deleted: true,
        evicted_node_ids: evicted,
        error_summary,
    })
}

/// Enrolled `(label, embedding)` profiles warm on a node this process routes to, for
/// diarization (they travel with the request, so any node can label with them).
pub async fn enrolled(state: &ScaiEcho, tenant_id: &str) -> ApiResult<Vec<(String, Vec<f32>)>> {
    let nodes = state.handles.nodes.node_ids();
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = state.handles.db.pool.acquire().await?;
    Ok(speakers::warm_profiles(&mut conn, tenant_id, &nodes).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_checked() {
        assert_eq!(validate_label(Some(" Nagg ")).unwrap(), "Nagg");
        assert_eq!(validate_label(Some("O'Brien-2")).unwrap(), "O'Brien-2");
        for bad in [
            None,
            Some(""),
            Some("spk_0"),
            Some("a/b"),
            Some(&*"x".repeat(65)),
        ] {
            assert_eq!(
                validate_label(bad).unwrap_err().code,
                ErrorCode::INVALID_REQUEST,
                "{bad:?}"
            );
        }
    }
}
