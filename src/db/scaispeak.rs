//! ScaiSpeak tenant policies.

use sqlx::{AnyConnection, Row};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::now_ms;

/// The backends a tenant allows (the module's own backend type, stored as JSON).
pub async fn get_allowed<B: DeserializeOwned>(
    conn: &mut AnyConnection,
    tenant_id: &str,
) -> Result<Option<Vec<B>>, sqlx::Error> {
    let row = sqlx::query("SELECT allowed_backends FROM scaispeak_policies WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_optional(conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let allowed: String = row.try_get("allowed_backends")?;
    serde_json::from_str(&allowed)
        .map(Some)
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

pub async fn put_allowed<B: Serialize>(
    conn: &mut AnyConnection,
    tenant_id: &str,
    allowed: &[B],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO scaispeak_policies (tenant_id, allowed_backends, updated_at) \
         VALUES ($1, $2, $3) ON CONFLICT (tenant_id) DO UPDATE SET \
         allowed_backends = excluded.allowed_backends, updated_at = excluded.updated_at",
    )
    .bind(tenant_id)
    .bind(serde_json::to_string(allowed).map_err(|e| sqlx::Error::Encode(Box::new(e)))?)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// A tenant voice (cloning intake).
#[derive(Debug, Clone)]
pub struct VoiceRow {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub embedding_status: String,
    pub embedding_status_reason: Option<String>,
    pub reference_key: String,
    pub reference_media_type: Option<String>,
    pub preflight: String,
    pub profile: Option<String>,
    pub embedding: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const VOICE_COLUMNS: &str = "id, tenant_id, name, embedding_status, embedding_status_reason, \
    reference_key, reference_media_type, preflight, profile, embedding, created_at, updated_at";

fn voice_row(row: &sqlx::any::AnyRow) -> Result<VoiceRow, sqlx::Error> {
    Ok(VoiceRow {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        embedding_status: row.try_get("embedding_status")?,
        embedding_status_reason: row.try_get("embedding_status_reason")?,
        reference_key: row.try_get("reference_key")?,
        reference_media_type: row.try_get("reference_media_type")?,
        preflight: row.try_get("preflight")?,
        profile: row.try_get("profile")?,
        embedding: row.try_get("embedding")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub struct NewVoice<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub name: &'a str,
    pub reference_key: &'a str,
    pub reference_media_type: Option<&'a str>,
    pub preflight: &'a str,
    pub created_by: &'a str,
}

/// Inserts a voice at `processing`.
pub async fn create_voice(conn: &mut AnyConnection, new: &NewVoice<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO scaispeak_voices (id, tenant_id, name, embedding_status, reference_key, \
         preflight, created_by, created_at, updated_at, reference_media_type) \
         VALUES ($1, $2, $3, 'processing', $4, $5, $6, $7, $7, $8)",
    )
    .bind(new.id)
    .bind(new.tenant_id)
    .bind(new.name)
    .bind(new.reference_key)
    .bind(new.preflight)
    .bind(new.created_by)
    .bind(now_ms())
    .bind(new.reference_media_type)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_voice(
    conn: &mut AnyConnection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<VoiceRow>, sqlx::Error> {
    let query =
        format!("SELECT {VOICE_COLUMNS} FROM scaispeak_voices WHERE tenant_id = $1 AND id = $2");
    sqlx::query(sqlx::AssertSqlSafe(query))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(voice_row)
        .transpose()
}

pub async fn list_voices(
    conn: &mut AnyConnection,
    tenant_id: &str,
) -> Result<Vec<VoiceRow>, sqlx::Error> {
    let query = format!(
        "SELECT {VOICE_COLUMNS} FROM scaispeak_voices WHERE tenant_id = $1 ORDER BY created_at, id"
    );
    sqlx::query(sqlx::AssertSqlSafe(query))
        .bind(tenant_id)
        .fetch_all(conn)
        .await?
        .iter()
        .map(voice_row)
        .collect()
}

/// The intake's outcome: `ready` with the profile (and embedding), or `failed`.
pub async fn set_intake(
    conn: &mut AnyConnection,
    id: &str,
    status: &str,
    reason: Option<&str>,
    profile: Option<&str>,
    embedding: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE scaispeak_voices SET embedding_status = $1, embedding_status_reason = $2, \
         profile = $3, embedding = $4, updated_at = $5 WHERE id = $6",
    )
    .bind(status)
    .bind(reason)
    .bind(profile)
    .bind(embedding)
    .bind(now_ms())
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Erases a voice: its warm entries and its row (profile and embedding with it).
pub async fn erase_voice(conn: &mut AnyConnection, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM scaispeak_voice_warm WHERE voice_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM scaispeak_voices WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn voice_warm_nodes(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query("SELECT node_id FROM scaispeak_voice_warm WHERE voice_id = $1 ORDER BY node_id")
        .bind(id)
        .fetch_all(conn)
        .await?
        .iter()
        .map(|row| row.try_get("node_id"))
        .collect()
}

pub async fn set_voice_warm(
    conn: &mut AnyConnection,
    id: &str,
    node_id: &str,
    warm: bool,
) -> Result<(), sqlx::Error> {
    let query = match warm {
        true => {
            "INSERT INTO scaispeak_voice_warm (voice_id, node_id, warmed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (voice_id, node_id) DO UPDATE SET warmed_at = excluded.warmed_at"
        }
        false => {
            "DELETE FROM scaispeak_voice_warm WHERE voice_id = $1 AND node_id = $2 AND $3 >= 0"
        }
    };
    sqlx::query(query)
        .bind(id)
        .bind(node_id)
        .bind(now_ms())
        .execute(conn)
        .await?;
    Ok(())
}
