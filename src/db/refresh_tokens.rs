//! Rotating refresh tokens of the local issuer.
//!
//! Each login starts a family. A refresh marks the presented token revoked and replaced
//! and inserts its successor in the same family, in one transaction guarded by
//! `revoked_at IS NULL` so two concurrent refreshes cannot both win. A token presented
//! after it was replaced means it leaked: the whole family is revoked.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{new_id, now_ms};

#[derive(Debug, Clone)]
pub struct RefreshTokenRow {
    pub id: String,
    pub user_id: String,
    pub family_id: String,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub replaced_by: Option<String>,
}

fn from_row(row: &AnyRow) -> Result<RefreshTokenRow, sqlx::Error> {
    Ok(RefreshTokenRow {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        family_id: row.try_get("family_id")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        replaced_by: row.try_get("replaced_by")?,
    })
}

/// Inserts a token; returns its id.
pub async fn insert(
    conn: &mut AnyConnection,
    user_id: &str,
    family_id: &str,
    token_hash: &str,
    expires_at: i64,
) -> Result<String, sqlx::Error> {
    let id = new_id("rft");
    sqlx::query(
        "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(user_id)
    .bind(family_id)
    .bind(token_hash)
    .bind(now_ms())
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(id)
}

pub async fn get_by_hash(
    conn: &mut AnyConnection,
    token_hash: &str,
) -> Result<Option<RefreshTokenRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, user_id, family_id, expires_at, revoked_at, replaced_by \
         FROM refresh_tokens WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Marks a live token replaced by `successor_id`; false if someone else got there first.
pub async fn mark_replaced(
    conn: &mut AnyConnection,
    id: &str,
    successor_id: &str,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1, replaced_by = $2 \
         WHERE id = $3 AND revoked_at IS NULL",
    )
    .bind(now_ms())
    .bind(successor_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Revokes every live token of a family (logout or detected reuse).
pub async fn revoke_family(conn: &mut AnyConnection, family_id: &str) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
    )
    .bind(now_ms())
    .bind(family_id)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

/// Ends every login of a user (disabled, deleted, or a new password).
pub async fn revoke_user(conn: &mut AnyConnection, user_id: &str) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
    )
    .bind(now_ms())
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}
