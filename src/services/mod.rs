//! Business operations of the admin surface, shared by HTTP handlers, the `admin` CLI
//! and bootstrap. Each takes the acting principal (`None` for the operator at the CLI,
//! who is trusted) and does validation, authorization, the writes in one transaction,
//! and the audit row.

pub mod api_keys;
pub mod modules;
pub mod roles;
pub mod sessions;
pub mod tenants;
pub mod users;

use crate::auth::Principal;
use crate::db::audit::{self, AuditEntry};
use crate::error::{ApiError, ApiResult};
use crate::rbac::{self, PermissionSet};

/// Who performs an operation: an authenticated principal, or the operator (CLI).
pub type Actor<'a> = Option<&'a Principal>;

/// Writes an audit row for `actor`.
pub async fn audit(
    conn: &mut sqlx::AnyConnection,
    actor: Actor<'_>,
    tenant_id: Option<&str>,
    action: &str,
    target: (&str, &str),
    detail: Option<serde_json::Value>,
) -> Result<(), sqlx::Error> {
    let (actor_kind, actor_id) = match actor {
        Some(principal) => (principal.subject_kind(), principal.subject_id()),
        None => ("system", "cli"),
    };
    audit::record(
        conn,
        AuditEntry {
            tenant_id,
            actor_kind,
            actor_id,
            action,
            target_kind: target.0,
            target_id: target.1,
            detail,
        },
    )
    .await
}

/// The tenant an admin operation acts on: for a principal, its own tenant or (platform
/// admins only) the one it names, and only with admin rights there; for the operator at
/// the CLI, the one named (required).
pub fn admin_tenant(actor: Actor<'_>, requested: Option<&str>) -> ApiResult<String> {
    match actor {
        Some(principal) => {
            let tenant_id = principal.target_tenant(requested)?;
            principal.require_tenant_admin(&tenant_id)?;
            Ok(tenant_id)
        }
        None => requested
            .map(str::to_owned)
            .ok_or_else(|| ApiError::invalid("`tenant_id` is required")),
    }
}

/// Checks that every permission string is well formed.
pub fn validate_permissions(permissions: &[String]) -> ApiResult<()> {
    match permissions.iter().find(|p| !rbac::is_valid_permission(p)) {
        Some(bad) => Err(ApiError::invalid(format!(
            "`{bad}` is not a permission (expected `scope:action`, `scope:*` or `*`)"
        ))),
        None => Ok(()),
    }
}

/// "A key never gets permissions its creator lacks": every requested permission must be
/// covered by the actor's own set.
pub fn ensure_covered(actor: Actor<'_>, requested: &[String]) -> ApiResult<()> {
    let Some(principal) = actor else {
        return Ok(());
    };
    let set: &PermissionSet = &principal.permissions;
    match set.first_uncovered(requested.iter().map(String::as_str)) {
        Some(missing) => Err(ApiError::permission_denied(missing).with_field(
            "reason",
            "cannot grant a permission the caller does not hold",
        )),
        None => Ok(()),
    }
}

/// Validates a human-readable name field.
pub fn validate_name(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.trim().is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "`{field}` must be 1 to {max} characters without control characters"
        )));
    }
    Ok(())
}
