//! Users of a tenant (local-issuer logins and identities of external issuers).

use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::page::{Order, Page};
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

/// A page of the users of one tenant (of one `status`, if given), oldest first.
pub async fn list(
    conn: &mut AnyConnection,
    tenant_id: &str,
    status: Option<&str>,
    page: &Page,
) -> Result<Vec<UserRow>, sqlx::Error> {
    let mut sql = format!("SELECT {COLUMNS} FROM users WHERE tenant_id = $1");
    if status.is_some() {
        sql.push_str(" AND status = $2");
    }
    sql.push_str(&page.sql("users", 2 + usize::from(status.is_some()), Order::Oldest));
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(tenant_id);
    if let Some(status) = status {
        query = query.bind(status);
    }
    page.bind(query)
        .fetch_all(conn)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

pub const DISABLED: &str = "disabled";

/// Sets `active` or `disabled`.
pub async fn set_status(
    conn: &mut AnyConnection,
    id: &str,
    status: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET status = $1, updated_at = $2 WHERE id = $3")
        .bind(status)
        .bind(now_ms())
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_password(
    conn: &mut AnyConnection,
    id: &str,
    password_hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(password_hash)
        .bind(now_ms())
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes a user with its logins, role assignments and direct grants (the audit log
/// keeps its id).
pub async fn delete(conn: &mut AnyConnection, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM refresh_tokens WHERE user_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    for table in ["subject_roles", "grants"] {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE subject_kind = 'user' AND subject_id = $1"
        )))
        .bind(id)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
