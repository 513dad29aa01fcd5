//! Modules (`scaiecho`, `scaispeak`): listing and per-tenant enablement.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Actor, admin_tenant, audit};
use crate::auth::Principal;
use crate::config::KNOWN_MODULES;
use crate::db::{Db, modules};
use crate::error::{ApiError, ApiResult, ErrorCode};

#[derive(Debug, Serialize, ToSchema)]
pub struct ModuleInfo {
    pub id: &'static str,
    /// `available` (not enabled for the tenant) or `enabled`.
    pub status: &'static str,
    pub last_error: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModuleToggle {
    /// Another tenant (platform admins only).
    pub tenant_id: Option<String>,
}

fn known(id: &str) -> ApiResult<&'static str> {
    KNOWN_MODULES
        .iter()
        .copied()
        .find(|m| *m == id)
        .ok_or_else(|| ApiError::not_found("module"))
}

pub fn list(principal: &Principal) -> Vec<ModuleInfo> {
    let enabled = &principal.modules;
    KNOWN_MODULES
        .iter()
        .map(|id| ModuleInfo {
            id,
            status: if enabled.iter().any(|e| e == id) {
                "enabled"
            } else {
                "available"
            },
            last_error: None,
        })
        .collect()
}

pub fn get(principal: &Principal, id: &str) -> ApiResult<ModuleInfo> {
    let id = known(id)?;
    list(principal)
        .into_iter()
        .find(|m| m.id == id)
        .ok_or_else(|| ApiError::not_found("module"))
}

pub async fn set_enabled(
    db: &Db,
    actor: Actor<'_>,
    id: &str,
    enabled: bool,
    toggle: ModuleToggle,
) -> ApiResult<()> {
    let id = known(id)?;
    let tenant_id = admin_tenant(actor, toggle.tenant_id.as_deref())?;
    let mut tx = db.begin().await?;
    modules::set_enabled(&mut tx, &tenant_id, id, enabled).await?;
    let action = if enabled {
        "module.enable"
    } else {
        "module.disable"
    };
    audit(
        &mut tx,
        actor,
        Some(&tenant_id),
        action,
        ("module", id),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Fails with `MODULE_NOT_ENABLED` unless the caller's tenant has the module on.
pub fn require_enabled(principal: &Principal, id: &str) -> ApiResult<()> {
    if principal.modules.iter().any(|e| e == id) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::MODULE_NOT_ENABLED,
            format!("module `{id}` is not enabled for this tenant"),
        ))
    }
}
