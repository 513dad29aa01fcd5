//! Users of a tenant (local-issuer logins and identities of external issuers).

use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{new_id, now_ms};

pub const ACTIVE: &str = "active";

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: String,
    pub tenant_id: String,
    pub email: String,
    pub password_hash: Option<String>,
    pub status: String,
    pub created_at: i64,
}

const COLUMNS: &str = "id, tenant_id, email, password_hash, status, created_at";

fn from_row(row: &AnyRow) -> Result<UserRow, sqlx::Error> {
    Ok(UserRow {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        status: row.try_get("status")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Emails are compared case-insensitively, so they are stored lowercased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Inserts a user; `None` when the email is taken.
pub async fn create(
    conn: &mut AnyConnection,
    tenant_id: &str,
    email: &str,
    password_hash: Option<&str>,
) -> Result<Option<UserRow>, sqlx::Error> {
    let now = now_ms();
    let row = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO users ({COLUMNS}, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) \
         ON CONFLICT (email) DO NOTHING RETURNING {COLUMNS}"
    )))
    .bind(new_id("usr"))
    .bind(tenant_id)
    .bind(normalize_email(email))
    .bind(password_hash)
    .bind(ACTIVE)
    .bind(now)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<UserRow>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn get_by_email(
    conn: &mut AnyConnection,
    email: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users WHERE email = $1"
    )))
    .bind(normalize_email(email))
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Users of one tenant, oldest first.
pub async fn list(conn: &mut AnyConnection, tenant_id: &str) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users WHERE tenant_id = $1 ORDER BY created_at, id"
    )))
    .bind(tenant_id)
    .fetch_all(conn)
    .await?
    .iter()
    .map(from_row)
    .collect()
}
