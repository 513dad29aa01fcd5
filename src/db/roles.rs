//! Roles, role assignments and direct grants of users and API keys.

use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{new_id, now_ms};
use crate::rbac::{BUILTIN_ROLES, Permission, PermissionSet};
use crate::records::Role;

/// Who holds roles and grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    User,
    ApiKey,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::User => "user",
            SubjectKind::ApiKey => "api_key",
        }
    }
}

/// Writes the permission catalogue and the built-in roles (idempotent; run at start-up
/// so a new release's built-ins replace the old ones).
pub async fn seed_builtins(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    for permission in Permission::ALL {
        sqlx::query(
            "INSERT INTO permissions (name, description) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET description = excluded.description",
        )
        .bind(permission.as_str())
        .bind(permission.description())
        .execute(&mut *conn)
        .await?;
    }
    for role in BUILTIN_ROLES {
        sqlx::query(
            "INSERT INTO roles (id, tenant_id, name, description, builtin, created_at) \
             VALUES ($1, NULL, $2, $3, 1, $4) \
             ON CONFLICT (id) DO UPDATE SET description = excluded.description",
        )
        .bind(role.id)
        .bind(role.name)
        .bind(role.description)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM role_permissions WHERE role_id = $1")
            .bind(role.id)
            .execute(&mut *conn)
            .await?;
        for permission in role.permissions {
            sqlx::query("INSERT INTO role_permissions (role_id, permission) VALUES ($1, $2)")
                .bind(role.id)
                .bind(*permission)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// Looks up roles by name as seen from a tenant (built-ins and the tenant's own).
/// Returns the `(id, name)` pairs, or the first unknown name.
pub async fn resolve(
    conn: &mut AnyConnection,
    tenant_id: &str,
    names: &[String],
) -> Result<Result<Vec<(String, String)>, String>, sqlx::Error> {
    let mut found = Vec::with_capacity(names.len());
    for name in names {
        let row = sqlx::query(
            "SELECT id FROM roles WHERE name = $1 AND (tenant_id IS NULL OR tenant_id = $2) \
             ORDER BY builtin DESC LIMIT 1",
        )
        .bind(name)
        .bind(tenant_id)
        .fetch_optional(&mut *conn)
        .await?;
        match row {
            Some(row) => found.push((row.try_get("id")?, name.clone())),
            None => return Ok(Err(name.clone())),
        }
    }
    Ok(Ok(found))
}

/// Permissions of the given roles (for checking that a creator covers them).
pub async fn permissions_of(
    conn: &mut AnyConnection,
    role_ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    let mut out = Vec::new();
    for role_id in role_ids {
        let rows = sqlx::query("SELECT permission FROM role_permissions WHERE role_id = $1")
            .bind(role_id)
            .fetch_all(&mut *conn)
            .await?;
        for row in rows {
            out.push(row.try_get("permission")?);
        }
    }
    Ok(out)
}

pub async fn assign(
    conn: &mut AnyConnection,
    kind: SubjectKind,
    subject_id: &str,
    role_ids: &[String],
) -> Result<(), sqlx::Error> {
    for role_id in role_ids {
        sqlx::query(
            "INSERT INTO subject_roles (subject_kind, subject_id, role_id) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(kind.as_str())
        .bind(subject_id)
        .bind(role_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub async fn grant(
    conn: &mut AnyConnection,
    kind: SubjectKind,
    subject_id: &str,
    permissions: &[String],
) -> Result<(), sqlx::Error> {
    for permission in permissions {
        sqlx::query(
            "INSERT INTO grants (subject_kind, subject_id, permission, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(kind.as_str())
        .bind(subject_id)
        .bind(permission)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Role names and direct grants of a subject.
pub async fn assignments(
    conn: &mut AnyConnection,
    kind: SubjectKind,
    subject_id: &str,
) -> Result<(Vec<String>, Vec<String>), sqlx::Error> {
    let roles = sqlx::query(
        "SELECT r.name FROM subject_roles sr JOIN roles r ON r.id = sr.role_id \
         WHERE sr.subject_kind = $1 AND sr.subject_id = $2 ORDER BY r.name",
    )
    .bind(kind.as_str())
    .bind(subject_id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|row| row.try_get("name"))
    .collect::<Result<Vec<String>, _>>()?;
    let grants = sqlx::query(
        "SELECT permission FROM grants WHERE subject_kind = $1 AND subject_id = $2 \
         ORDER BY permission",
    )
    .bind(kind.as_str())
    .bind(subject_id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|row| row.try_get("permission"))
    .collect::<Result<Vec<String>, _>>()?;
    Ok((roles, grants))
}

/// Role names and the effective permission set (roles' permissions plus grants).
pub async fn effective(
    conn: &mut AnyConnection,
    kind: SubjectKind,
    subject_id: &str,
) -> Result<(Vec<String>, PermissionSet), sqlx::Error> {
    let (roles, mut permissions) = assignments(&mut *conn, kind, subject_id).await?;
    let rows = sqlx::query(
        "SELECT rp.permission FROM subject_roles sr \
         JOIN role_permissions rp ON rp.role_id = sr.role_id \
         WHERE sr.subject_kind = $1 AND sr.subject_id = $2",
    )
    .bind(kind.as_str())
    .bind(subject_id)
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        permissions.push(row.try_get("permission")?);
    }
    Ok((roles, PermissionSet::new(permissions)))
}

fn role_from_row(row: &AnyRow) -> Result<Role, sqlx::Error> {
    Ok(Role {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        builtin: row.try_get::<i64, _>("builtin")? != 0,
        permissions: Vec::new(),
    })
}

async fn with_permissions(conn: &mut AnyConnection, mut role: Role) -> Result<Role, sqlx::Error> {
    let mut permissions = permissions_of(conn, std::slice::from_ref(&role.id)).await?;
    permissions.sort();
    role.permissions = permissions;
    Ok(role)
}

/// Built-in roles and the tenant's custom roles.
pub async fn list(conn: &mut AnyConnection, tenant_id: &str) -> Result<Vec<Role>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, tenant_id, name, description, builtin FROM roles \
         WHERE tenant_id IS NULL OR tenant_id = $1 ORDER BY builtin DESC, name",
    )
    .bind(tenant_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut roles = Vec::with_capacity(rows.len());
    for row in &rows {
        roles.push(with_permissions(&mut *conn, role_from_row(row)?).await?);
    }
    Ok(roles)
}

/// A custom role in a tenant; `None` when the name is taken there (or by a built-in).
pub async fn create_custom(
    conn: &mut AnyConnection,
    tenant_id: &str,
    name: &str,
    description: &str,
    permissions: &[String],
) -> Result<Option<Role>, sqlx::Error> {
    let taken = sqlx::query(
        "SELECT id FROM roles WHERE name = $1 AND (tenant_id IS NULL OR tenant_id = $2)",
    )
    .bind(name)
    .bind(tenant_id)
    .fetch_optional(&mut *conn)
    .await?;
    if taken.is_some() {
        return Ok(None);
    }
    let id = new_id("role");
    sqlx::query(
        "INSERT INTO roles (id, tenant_id, name, description, builtin, created_at) \
         VALUES ($1, $2, $3, $4, 0, $5)",
    )
    .bind(&id)
    .bind(tenant_id)
    .bind(name)
    .bind(description)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    for permission in permissions {
        sqlx::query(
            "INSERT INTO role_permissions (role_id, permission) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(permission)
        .execute(&mut *conn)
        .await?;
    }
    let mut permissions = permissions.to_vec();
    permissions.sort();
    permissions.dedup();
    Ok(Some(Role {
        id,
        tenant_id: Some(tenant_id.to_owned()),
        name: name.to_owned(),
        description: description.to_owned(),
        builtin: false,
        permissions,
    }))
}

/// Deletes a custom role of the tenant (and its assignments). Returns whether it existed.
pub async fn delete_custom(
    conn: &mut AnyConnection,
    tenant_id: &str,
    role_id: &str,
) -> Result<bool, sqlx::Error> {
    let exists =
        sqlx::query("SELECT id FROM roles WHERE id = $1 AND tenant_id = $2 AND builtin = 0")
            .bind(role_id)
            .bind(tenant_id)
            .fetch_optional(&mut *conn)
            .await?;
    if exists.is_none() {
        return Ok(false);
    }
    for table in ["subject_roles", "role_permissions"] {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE role_id = $1"
        )))
        .bind(role_id)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("DELETE FROM roles WHERE id = $1")
        .bind(role_id)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

/// Changes a custom role of the tenant: its description and/or its permissions (all
/// replaced). Returns whether it existed.
pub async fn update_custom(
    conn: &mut AnyConnection,
    tenant_id: &str,
    role_id: &str,
    description: Option<&str>,
    permissions: Option<&[String]>,
) -> Result<bool, sqlx::Error> {
    let exists =
        sqlx::query("SELECT id FROM roles WHERE id = $1 AND tenant_id = $2 AND builtin = 0")
            .bind(role_id)
            .bind(tenant_id)
            .fetch_optional(&mut *conn)
            .await?;
    if exists.is_none() {
        return Ok(false);
    }
    if let Some(description) = description {
        sqlx::query("UPDATE roles SET description = $1 WHERE id = $2")
            .bind(description)
            .bind(role_id)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(permissions) = permissions {
        sqlx::query("DELETE FROM role_permissions WHERE role_id = $1")
            .bind(role_id)
            .execute(&mut *conn)
            .await?;
        for permission in permissions {
            sqlx::query(
                "INSERT INTO role_permissions (role_id, permission) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(role_id)
            .bind(permission)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(true)
}

/// Takes roles and direct grants away from a subject.
pub async fn unassign(
    conn: &mut AnyConnection,
    kind: SubjectKind,
    subject_id: &str,
    role_ids: &[String],
    permissions: &[String],
) -> Result<(), sqlx::Error> {
    for role_id in role_ids {
        sqlx::query(
            "DELETE FROM subject_roles WHERE subject_kind = $1 AND subject_id = $2 AND role_id = $3",
        )
        .bind(kind.as_str())
        .bind(subject_id)
        .bind(role_id)
        .execute(&mut *conn)
        .await?;
    }
    for permission in permissions {
        sqlx::query(
            "DELETE FROM grants WHERE subject_kind = $1 AND subject_id = $2 AND permission = $3",
        )
        .bind(kind.as_str())
        .bind(subject_id)
        .bind(permission)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A role by id as seen from a tenant (its own or a built-in).
pub async fn get(
    conn: &mut AnyConnection,
    tenant_id: &str,
    role_id: &str,
) -> Result<Option<Role>, sqlx::Error> {
    Ok(list(conn, tenant_id)
        .await?
        .into_iter()
        .find(|role| role.id == role_id))
}
