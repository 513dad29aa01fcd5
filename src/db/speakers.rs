//! The speaker library: profiles (tenant-scoped, tombstoned on delete) and the warm
//! registry (which node holds which profile).

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::now_ms;

#[derive(Debug, Clone)]
pub struct SpeakerRow {
    pub id: String,
    pub tenant_id: String,
    pub label: String,
    pub enrollment_status: String,
    pub status_reason: Option<String>,
    pub embedding: Option<Vec<f32>>,
    pub reference_key: String,
    pub reference_media_type: Option<String>,
    pub preflight: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
}

const COLUMNS: &str = "id, tenant_id, label, enrollment_status, status_reason, embedding, \
    reference_key, reference_media_type, preflight, created_by, created_at, updated_at, \
    deleted_at";

fn from_row(row: &AnyRow) -> Result<SpeakerRow, sqlx::Error> {
    let embedding: Option<String> = row.try_get("embedding")?;
    Ok(SpeakerRow {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        label: row.try_get("label")?,
        enrollment_status: row.try_get("enrollment_status")?,
        status_reason: row.try_get("status_reason")?,
        embedding: embedding
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        reference_key: row.try_get("reference_key")?,
        reference_media_type: row.try_get("reference_media_type")?,
        preflight: row.try_get("preflight")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        deleted_at: row.try_get("deleted_at")?,
    })
}

pub struct NewSpeaker<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub label: &'a str,
    pub reference_key: &'a str,
    pub reference_media_type: Option<&'a str>,
    pub preflight: &'a str,
    pub created_by: &'a str,
}

/// Inserts a `pending` profile; `false` when a live speaker of the tenant has the label.
pub async fn create(conn: &mut AnyConnection, new: &NewSpeaker<'_>) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let result = sqlx::query(
        "INSERT INTO scaiecho_speakers (id, tenant_id, label, enrollment_status, \
         reference_key, preflight, created_by, created_at, updated_at, reference_media_type) \
         VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $7, $8) ON CONFLICT DO NOTHING",
    )
    .bind(new.id)
    .bind(new.tenant_id)
    .bind(new.label)
    .bind(new.reference_key)
    .bind(new.preflight)
    .bind(new.created_by)
    .bind(now)
    .bind(new.reference_media_type)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// A profile of the tenant (tombstoned ones too: they answer with `deleted_at`).
pub async fn get(
    conn: &mut AnyConnection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<SpeakerRow>, sqlx::Error> {
    let query = format!("SELECT {COLUMNS} FROM scaiecho_speakers WHERE tenant_id = $1 AND id = $2");
    sqlx::query(sqlx::AssertSqlSafe(query))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The tenant's live profiles, oldest first.
pub async fn list(
    conn: &mut AnyConnection,
    tenant_id: &str,
) -> Result<Vec<SpeakerRow>, sqlx::Error> {
    let query = format!(
        "SELECT {COLUMNS} FROM scaiecho_speakers WHERE tenant_id = $1 AND deleted_at IS NULL \
         ORDER BY created_at, id"
    );
    sqlx::query(sqlx::AssertSqlSafe(query))
        .bind(tenant_id)
        .fetch_all(conn)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// Live `ready` profiles of the tenant warm on one of `node_ids`, each once: the
/// enrolled labels diarization uses.
pub async fn warm_profiles(
    conn: &mut AnyConnection,
    tenant_id: &str,
    node_ids: &[String],
) -> Result<Vec<(String, Vec<f32>)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT s.id, s.label, s.embedding, w.node_id FROM scaiecho_speakers s \
         JOIN scaiecho_speaker_warm w ON w.speaker_id = s.id \
         WHERE s.tenant_id = $1 AND s.deleted_at IS NULL \
         AND s.enrollment_status = 'ready' ORDER BY s.created_at, s.id",
    )
    .bind(tenant_id)
    .fetch_all(conn)
    .await?;
    let mut profiles = Vec::with_capacity(rows.len());
    let mut seen = std::collections::HashSet::new();
    for row in rows {
        let node: String = row.try_get("node_id")?;
        if !node_ids.contains(&node) || !seen.insert(row.try_get::<String, _>("id")?) {
            continue;
        }
        let embedding: Option<String> = row.try_get("embedding")?;
        if let Some(embedding) = embedding.and_then(|e| serde_json::from_str(&e).ok()) {
            profiles.push((row.try_get("label")?, embedding));
        }
    }
    Ok(profiles)
}

/// Stores the embedding and the outcome (`ready` or `failed` with a reason); nothing for
/// a profile deleted while its enrollment ran (its embedding must not come back).
pub async fn set_enrollment(
    conn: &mut AnyConnection,
    id: &str,
    status: &str,
    reason: Option<&str>,
    embedding: Option<&[f32]>,
) -> Result<(), sqlx::Error> {
    let embedding = embedding.map(|e| serde_json::to_string(e).unwrap_or_default());
    sqlx::query(
        "UPDATE scaiecho_speakers SET enrollment_status = $1, status_reason = $2, \
         embedding = COALESCE($3, embedding), updated_at = $4 \
         WHERE id = $5 AND deleted_at IS NULL",
    )
    .bind(status)
    .bind(reason)
    .bind(embedding)
    .bind(now_ms())
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Tombstones a live profile; `false` if it was not live. The embedding goes with it
/// (biometric data): the tombstone keeps only the label, preflight and times for audits.
pub async fn tombstone(conn: &mut AnyConnection, id: &str) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let result = sqlx::query(
        "UPDATE scaiecho_speakers SET deleted_at = $1, updated_at = $1, embedding = NULL \
         WHERE id = $2 AND deleted_at IS NULL",
    )
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Nodes the profile is warm on.
pub async fn warm_nodes(conn: &mut AnyConnection, id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query("SELECT node_id FROM scaiecho_speaker_warm WHERE speaker_id = $1 ORDER BY node_id")
        .bind(id)
        .fetch_all(conn)
        .await?
        .iter()
        .map(|row| row.try_get("node_id"))
        .collect()
}

pub async fn add_warm(
    conn: &mut AnyConnection,
    id: &str,
    node_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO scaiecho_speaker_warm (speaker_id, node_id, warmed_at) VALUES ($1, $2, $3) \
         ON CONFLICT (speaker_id, node_id) DO UPDATE SET warmed_at = excluded.warmed_at",
    )
    .bind(id)
    .bind(node_id)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn remove_warm(
    conn: &mut AnyConnection,
    id: &str,
    node_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM scaiecho_speaker_warm WHERE speaker_id = $1 AND node_id = $2")
        .bind(id)
        .bind(node_id)
        .execute(conn)
        .await?;
    Ok(())
}
