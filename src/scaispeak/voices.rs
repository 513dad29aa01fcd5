//! The voice catalogue and the cloning intake.
//!
//! Global voices are the Piper voices the node loaded (today `en_US-joe-medium`).
//! Tenant voices come from `POST /voices`: the reference clip passes the contract's
//! preflight (or nothing is stored: 422 with the `preflight` block), is staged in the
//! object store, and the intake computes its conditioning profile (pitch, spectral
//! envelope; `engines::conditioning`) and, where the node has the embedder, its speaker
//! embedding; the voice lands at `ready`, or `failed` with `embedding_status_reason`.
//! A tenant voice speaks through the base voice conditioned on that profile, on backend
//! A only (the relay cannot clone). OpenAI's voice names (`alloy`, ...) mean the default
//! voice, so OpenAI clients work unchanged.

use axum::body::Bytes;
use engines::conditioning::VoiceProfile;
use media::preflight::{self, Thresholds};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::MODULE;
use crate::auth::Principal;
use crate::db::scaispeak::{self as db, NewVoice, VoiceRow};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::rbac::Permission;
use crate::records::Timestamp;
use crate::scaispeak::ScaiSpeak;
use crate::services::modules::require_enabled;
use crate::speech::upload::Upload;
use crate::store::ObjectKey;

pub const READ: Permission = Permission::ScaispeakVoiceRead;
pub const WRITE: Permission = Permission::ScaispeakVoiceWrite;
const NAME_MAX: usize = 64;

/// Voice names of OpenAI's speech API: all mean "the default voice" here.
const OPENAI_VOICES: &[&str] = &[
    "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
];

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Voice {
    pub id: String,
    pub object: &'static str,
    pub name: String,
    /// `global` (shipped with the models) or `tenant` (cloned).
    pub scope: &'static str,
    pub language: String,
    pub sample_rate: u32,
    /// `ready` | `processing` | `failed`.
    pub embedding_status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_status_reason: Option<String>,
    pub engine: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub preflight: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_node_ids: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// What conditioning matches (tenant voices).
    #[serde(skip)]
    pub profile: Option<VoiceProfile>,
}

impl Voice {
    pub fn is_cloned(&self) -> bool {
        self.scope == "tenant"
    }
}

fn base_rate(state: &ScaiSpeak) -> Option<u32> {
    state
        .handles
        .nodes
        .engines()
        .and_then(|engines| engines.tts_sample_rate())
}

/// The global voices this process can speak with on backend A.
pub fn global(state: &ScaiSpeak) -> Vec<Voice> {
    let Some(sample_rate) = base_rate(state) else {
        return Vec::new();
    };
    vec![Voice {
        id: "en_US-joe-medium".to_owned(),
        object: "scaispeak.voice",
        name: "Joe".to_owned(),
        scope: "global",
        language: "en-US".to_owned(),
        sample_rate,
        embedding_status: "ready".to_owned(),
        embedding_status_reason: None,
        engine: engines::piper::ENGINE_ID,
        preflight: None,
        warm_node_ids: None,
        created_at: None,
        profile: None,
    }]
}

fn tenant_voice(state: &ScaiSpeak, row: VoiceRow, warm: Vec<String>) -> Voice {
    Voice {
        object: "scaispeak.voice",
        name: row.name,
        scope: "tenant",
        language: "en-US".to_owned(),
        sample_rate: base_rate(state).unwrap_or(22_050),
        embedding_status: row.embedding_status,
        embedding_status_reason: row.embedding_status_reason,
        engine: "audio.tts.piper-joe+conditioning",
        preflight: serde_json::from_str(&row.preflight).ok(),
        warm_node_ids: Some(warm),
        created_at: Some(Timestamp(row.created_at).to_rfc3339()),
        profile: row
            .profile
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok()),
        id: row.id,
    }
}

async fn tenant_voices(state: &ScaiSpeak, tenant_id: &str) -> ApiResult<Vec<Voice>> {
    let mut conn = state.handles.db.pool.acquire().await?;
    let rows = db::list_voices(&mut conn, tenant_id).await?;
    let live = state.handles.nodes.live().await?;
    let mut voices = Vec::with_capacity(rows.len());
    for row in rows {
        let warm = live.keep(db::voice_warm_nodes(&mut conn, &row.id).await?);
        voices.push(tenant_voice(state, row, warm));
    }
    Ok(voices)
}

fn access(principal: &Principal, permission: Permission) -> ApiResult<()> {
    require_enabled(principal, MODULE)?;
    principal.require(permission)
}

/// Voices for `GET /voices`, filtered by `scope` and `embedding_status`.
pub async fn list(
    state: &ScaiSpeak,
    principal: &Principal,
    scope: Option<&str>,
    embedding_status: Option<&str>,
) -> ApiResult<Vec<Voice>> {
    access(principal, READ)?;
    if let Some(scope) = scope
        && !matches!(scope, "global" | "tenant")
    {
        return Err(
            ApiError::invalid(format!("scope `{scope}` is not global or tenant"))
                .with_field("field", "scope"),
        );
    }
    let mut voices = global(state);
    voices.extend(tenant_voices(state, &principal.tenant_id).await?);
    Ok(voices
        .into_iter()
        .filter(|v| scope.is_none_or(|s| s == v.scope))
        .filter(|v| embedding_status.is_none_or(|s| s == v.embedding_status))
        .collect())
}

async fn tenant_row(state: &ScaiSpeak, tenant_id: &str, id: &str) -> ApiResult<Option<Voice>> {
    let mut conn = state.handles.db.pool.acquire().await?;
    let Some(row) = db::get_voice(&mut conn, tenant_id, id).await? else {
        return Ok(None);
    };
    let warm = state
        .handles
        .nodes
        .live()
        .await?
        .keep(db::voice_warm_nodes(&mut conn, id).await?);
    Ok(Some(tenant_voice(state, row, warm)))
}

/// One voice, global or the tenant's.
pub async fn get(state: &ScaiSpeak, principal: &Principal, id: &str) -> ApiResult<Voice> {
    access(principal, READ)?;
    if let Some(voice) = global(state).into_iter().find(|v| v.id == id) {
        return Ok(voice);
    }
    tenant_row(state, &principal.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("voice"))
}

/// The voice a synthesis request names (`None`: the default voice). With no local
/// voice (a relay-only deployment) the default still resolves: the relay speaks with
/// its configured voice. A tenant voice must be `ready`.
pub async fn find(state: &ScaiSpeak, tenant_id: &str, id: Option<&str>) -> ApiResult<Voice> {
    let voices = global(state);
    let fallback = || Voice {
        id: "default".to_owned(),
        object: "scaispeak.voice",
        name: "Relay default".to_owned(),
        scope: "global",
        language: "en".to_owned(),
        sample_rate: 24_000,
        embedding_status: "ready".to_owned(),
        embedding_status_reason: None,
        engine: "relay",
        preflight: None,
        warm_node_ids: None,
        created_at: None,
        profile: None,
    };
    let id = match id {
        None | Some("default") => return Ok(voices.into_iter().next().unwrap_or_else(fallback)),
        Some(name) if OPENAI_VOICES.contains(&name) => {
            return Ok(voices.into_iter().next().unwrap_or_else(fallback));
        }
        Some(id) => id,
    };
    if let Some(voice) = voices.into_iter().find(|v| v.id == id) {
        return Ok(voice);
    }
    let voice = tenant_row(state, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("voice").with_field("field", "voice"))?;
    if voice.embedding_status != "ready" || voice.profile.is_none() {
        return Err(ApiError::new(
            ErrorCode::CONFLICT,
            format!(
                "voice {id} is `{}`{}; repromote it or pick another voice",
                voice.embedding_status,
                voice
                    .embedding_status_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        )
        .with_field("field", "voice"));
    }
    Ok(voice)
}

fn validate_name(name: Option<&str>) -> ApiResult<String> {
    let name = name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::invalid("`name` is required").with_field("field", "name"))?;
    if name.chars().count() > NAME_MAX || name.chars().any(char::is_control) {
        return Err(
            ApiError::invalid(format!("`name` is 1-{NAME_MAX} printable characters"))
                .with_field("field", "name"),
        );
    }
    Ok(name.to_owned())
}

/// What an intake produced from a clip that passed preflight.
struct Intake {
    profile: String,
    embedding: Option<String>,
}

/// Decodes and preflights a reference against the contract's voice thresholds.
async fn check(
    state: &ScaiSpeak,
    bytes: Bytes,
    media_type: Option<&str>,
) -> ApiResult<(Value, Option<Vec<f32>>)> {
    state
        .handles
        .intake
        .reference_clip(bytes, media_type, Thresholds::default())
        .await
}

/// The profile (and embedding where the node has the embedder) of passed samples;
/// `Err(reason)` for `embedding_status_reason`.
async fn intake(state: &ScaiSpeak, samples: Vec<f32>) -> Result<Intake, String> {
    let (profile, samples) = tokio::task::spawn_blocking(move || {
        let profile = engines::conditioning::profile(&samples, 16_000);
        (profile, samples)
    })
    .await
    .map_err(|e| format!("intake_crashed: {e}"))?;
    let profile = profile.ok_or_else(|| "reference_unvoiced".to_owned())?;
    // The speaker embedding comes from a node that carries the embedder, if any does.
    let embedding = match state.handles.nodes.engines() {
        Some(engines) if engines.can_diarize() => engines.profile(&samples).await.ok(),
        _ => None,
    };
    Ok(Intake {
        profile: serde_json::to_string(&profile).unwrap_or_default(),
        embedding: embedding.map(|e| serde_json::to_string(&e).unwrap_or_default()),
    })
}

/// Runs the intake and stores its outcome.
async fn finish_intake(
    state: &ScaiSpeak,
    tenant_id: &str,
    id: &str,
    samples: Vec<f32>,
) -> ApiResult<()> {
    let outcome = intake(state, samples).await;
    record_intake(state, tenant_id, id, outcome).await
}

/// The nodes of this process that took a voice's conditioning warm (`Warm` RPCs).
async fn warm_on_nodes(state: &ScaiSpeak, id: &str, profile: &str) -> Vec<String> {
    let Some(engines) = state.handles.nodes.engines() else {
        return Vec::new();
    };
    let (warm, failed) = engines.warm_voice(id, profile).await;
    for (node, reason) in failed {
        tracing::warn!(voice = %id, %node, %reason, "voice not warmed on a node");
    }
    warm
}

/// Stores an intake's outcome with `voice.ready` or `voice.failed` in the same
/// transaction; a ready voice is warm on the nodes that took it.
async fn record_intake(
    state: &ScaiSpeak,
    tenant_id: &str,
    id: &str,
    outcome: Result<Intake, String>,
) -> ApiResult<()> {
    let warm = match &outcome {
        Ok(done) => warm_on_nodes(state, id, &done.profile).await,
        Err(_) => Vec::new(),
    };
    let mut tx = state.handles.db.begin().await?;
    let (event, reason) = match outcome {
        Ok(done) => {
            db::set_intake(
                &mut tx,
                id,
                "ready",
                None,
                Some(&done.profile),
                done.embedding.as_deref(),
            )
            .await?;
            for node in &warm {
                db::set_voice_warm(&mut tx, id, node, true).await?;
            }
            ("voice.ready", None)
        }
        Err(reason) => {
            db::set_intake(&mut tx, id, "failed", Some(&reason), None, None).await?;
            ("voice.failed", Some(reason))
        }
    };
    let payload = json!({ "voice_id": id, "embedding_status_reason": reason });
    crate::db::events::emit(&mut tx, tenant_id, event, &payload).await?;
    tx.commit().await?;
    Ok(())
}

fn reference_key(tenant_id: &str, id: &str) -> ApiResult<ObjectKey> {
    ObjectKey::new(tenant_id, &format!("scaispeak/voices/{id}/reference"))
        .map_err(|e| ApiError::internal(format_args!("object key: {e}")))
}

/// `POST /voices`: `name` + reference clip. A clip failing preflight stores nothing.
pub async fn create(state: &ScaiSpeak, principal: &Principal, upload: Upload) -> ApiResult<Voice> {
    access(principal, WRITE)?;
    let name = validate_name(upload.field("name"))?;
    let (block, samples) = check(state, upload.audio.clone(), upload.media_type.as_deref()).await?;
    let Some(samples) = samples else {
        let reasons = block["fail_reasons"].clone();
        return Err(ApiError::new(
            ErrorCode::SCAISPEAK_VOICE_PREFLIGHT_FAILED,
            format!("the reference clip failed preflight: {reasons}"),
        )
        .with_field("preflight", block));
    };
    let id = crate::db::new_id("voice");
    let key = reference_key(&principal.tenant_id, &id)?;
    state
        .handles
        .store
        .put(&key, upload.audio.clone())
        .await
        .map_err(|e| e.api("staging the reference"))?;
    let created = async {
        let mut tx = state.handles.db.begin().await?;
        db::create_voice(
            &mut tx,
            &NewVoice {
                id: &id,
                tenant_id: &principal.tenant_id,
                name: &name,
                reference_key: key.path(),
                reference_media_type: upload.media_type.as_deref(),
                preflight: &block.to_string(),
                created_by: principal.subject_id(),
            },
        )
        .await?;
        crate::services::audit(
            &mut tx,
            Some(principal),
            Some(&principal.tenant_id),
            "scaispeak.voice.create",
            ("voice", &id),
            Some(json!({ "name": name })),
        )
        .await?;
        tx.commit().await?;
        Ok::<_, ApiError>(())
    }
    .await;
    if let Err(error) = created {
        // No orphan object for a row that does not exist.
        let _ = state.handles.store.delete(&key).await;
        return Err(error);
    }
    finish_intake(state, &principal.tenant_id, &id, samples).await?;
    get(state, principal, &id).await
}

async fn owned(state: &ScaiSpeak, principal: &Principal, id: &str) -> ApiResult<Voice> {
    if global(state).iter().any(|v| v.id == id) {
        return Err(ApiError::new(
            ErrorCode::CONFLICT,
            "global voices ship with the models; only tenant voices change",
        ));
    }
    tenant_row(state, &principal.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("voice"))
}

/// `POST /voices/{id}/repromote`: the intake again, from the staged reference.
pub async fn repromote(state: &ScaiSpeak, principal: &Principal, id: &str) -> ApiResult<Voice> {
    access(principal, WRITE)?;
    owned(state, principal, id).await?;
    let mut conn = state.handles.db.pool.acquire().await?;
    let row = db::get_voice(&mut conn, &principal.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("voice"))?;
    drop(conn);
    let bytes = match ObjectKey::new(&principal.tenant_id, &row.reference_key) {
        Ok(key) => state.handles.store.get(&key).await.ok(),
        Err(_) => None,
    };
    let tenant = principal.tenant_id.as_str();
    let failed = |reason: &str| record_intake(state, tenant, id, Err(reason.to_owned()));
    match bytes {
        None => failed("reference_unavailable").await?,
        Some(bytes) => match check(state, bytes, row.reference_media_type.as_deref()).await {
            Ok((_, Some(samples))) => {
                finish_intake(state, &principal.tenant_id, id, samples).await?
            }
            Ok((block, None)) => {
                let short = block["fail_reasons"]
                    .as_array()
                    .is_some_and(|r| r.contains(&json!(preflight::DURATION_BELOW_MINIMUM)));
                let reason = match short {
                    true => "reference_too_short".to_owned(),
                    false => format!("preflight_failed:{}", block["fail_reasons"]),
                };
                failed(&reason).await?
            }
            Err(_) => failed("reference_unavailable").await?,
        },
    }
    get(state, principal, id).await
}

/// `POST /voices/{id}/warm`: puts a ready voice on the warm list of every node of this
/// process that carries the voice (200); 409 on a voice that is not ready.
pub async fn warm(state: &ScaiSpeak, principal: &Principal, id: &str) -> ApiResult<Voice> {
    access(principal, WRITE)?;
    let voice = owned(state, principal, id).await?;
    if voice.embedding_status != "ready" {
        return Err(ApiError::new(
            ErrorCode::SCAISPEAK_VOICE_NOT_READY_FOR_WARMING,
            format!("voice {id} is `{}`, not `ready`", voice.embedding_status),
        ));
    }
    let profile = voice
        .profile
        .as_ref()
        .and_then(|p| serde_json::to_string(p).ok())
        .unwrap_or_default();
    let warm = warm_on_nodes(state, id, &profile).await;
    let mut conn = state.handles.db.pool.acquire().await?;
    for node in &warm {
        db::set_voice_warm(&mut conn, id, node, true).await?;
    }
    drop(conn);
    get(state, principal, id).await
}

/// `POST /voices/{id}/evict`: drops the voice from the warm list of every node of this
/// process that confirms it (`Evict` RPCs).
pub async fn evict(state: &ScaiSpeak, principal: &Principal, id: &str) -> ApiResult<Voice> {
    access(principal, WRITE)?;
    owned(state, principal, id).await?;
    let dropped = evict_on_nodes(state, id).await.0;
    let mut conn = state.handles.db.pool.acquire().await?;
    for node in &dropped {
        db::set_voice_warm(&mut conn, id, node, false).await?;
    }
    drop(conn);
    get(state, principal, id).await
}

/// `Evict` RPCs to every node of this process: those that dropped the voice, and the
/// others with why.
async fn evict_on_nodes(
    state: &ScaiSpeak,
    id: &str,
) -> (Vec<String>, std::collections::BTreeMap<String, String>) {
    match state.handles.nodes.engines() {
        Some(engines) => {
            let (dropped, failed) = engines.evict("voice", id).await;
            (dropped, failed.into_iter().collect())
        }
        None => (Vec::new(), std::collections::BTreeMap::new()),
    }
}

/// What an erasure did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Erased {
    pub id: String,
    pub object: &'static str,
    pub deleted: bool,
    pub evicted_node_ids: Vec<String>,
    /// Nodes (and the object store) that could not erase their copy, with why.
    pub error_summary: std::collections::BTreeMap<String, String>,
}

/// `DELETE /voices/{id}`: erasure. The row (profile, embedding) and warm entries go in
/// one transaction with the audit row; then the reference clip. Nodes this process
/// cannot reach are named in `error_summary`.
pub async fn erase(state: &ScaiSpeak, principal: &Principal, id: &str) -> ApiResult<Erased> {
    access(principal, WRITE)?;
    owned(state, principal, id).await?;
    let (dropped, failed) = evict_on_nodes(state, id).await;
    let mut tx = state.handles.db.begin().await?;
    let row = db::get_voice(&mut tx, &principal.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("voice"))?;
    let holders = db::voice_warm_nodes(&mut tx, id).await?;
    let mut evicted = Vec::new();
    let mut error_summary = std::collections::BTreeMap::new();
    for node in holders {
        match dropped.contains(&node) {
            true => evicted.push(node),
            false => {
                // Owed: the erasure reconciler evicts it when the node answers again.
                crate::db::evictions::owe(&mut tx, ("voice", id), &node, &principal.tenant_id)
                    .await?;
                let reason = failed.get(&node).cloned().unwrap_or_else(|| {
                    "node not reachable; the erasure reconciler evicts it when the node is back"
                        .to_owned()
                });
                error_summary.insert(node, reason);
            }
        }
    }
    db::erase_voice(&mut tx, id).await?;
    crate::services::audit(
        &mut tx,
        Some(principal),
        Some(&principal.tenant_id),
        "scaispeak.voice.delete",
        ("voice", id),
        Some(json!({ "name": row.name, "evicted_node_ids": evicted, "error_summary": error_summary })),
    )
    .await?;
    tx.commit().await?;
    if let Ok(key) = ObjectKey::new(&principal.tenant_id, &row.reference_key)
        && let Err(error) = state.handles.store.delete(&key).await
    {
        error_summary.insert("object_store".to_owned(), error.to_string());
    }
    Ok(Erased {
        id: id.to_owned(),
        object: "scaispeak.voice",
        deleted: true,
        evicted_node_ids: evicted,
        error_summary,
    })
}
