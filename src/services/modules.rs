//! Modules (`scaiecho`, `scaispeak`, ...): the registry with dependencies, listing with
//! status, and per-tenant enablement.
//!
//! A module's status is `error` when it could not initialise in this process (its
//! `last_error` says why, e.g. no engine loaded and no relay configured), otherwise
//! `enabled` or `available` for the caller's tenant. Enabling a module needs its
//! dependencies enabled; disabling one refuses while an enabled module depends on it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Actor, admin_tenant, audit};
use crate::auth::Principal;
use crate::db::{Db, modules};
use crate::error::{ApiError, ApiResult, ErrorCode};

/// A module this build has.
pub struct ModuleSpec {
    pub id: &'static str,
    pub description: &'static str,
    /// Modules that must be enabled for a tenant before this one.
    pub depends_on: &'static [&'static str],
}

/// Every module of this build (`config::KNOWN_MODULES` lists the same ids).
pub const MODULES: &[ModuleSpec] = &[
    ModuleSpec {
        id: "scaiecho",
        description: "Speech to text: uploads, jobs, streams, diarization, speakers",
        depends_on: &[],
    },
    ModuleSpec {
        id: "scaispeak",
        description: "Text to speech: synthesis, streams, voice cloning, jobs",
        depends_on: &[],
    },
];

#[derive(Debug, Serialize, ToSchema)]
pub struct ModuleInfo {
    pub id: &'static str,
    pub description: &'static str,
    /// `available` (not enabled for the tenant), `enabled`, or `error` (it could not
    /// initialise in this process; see `last_error`).
    pub status: &'static str,
    /// Whether the caller's tenant has it enabled (also when `status` is `error`).
    pub enabled: bool,
    pub depends_on: &'static [&'static str],
    pub last_error: Option<String>,
}

/// Why enabling (`enable`) or disabling a module breaks a dependency, given the
/// tenant's enabled modules (pure).
pub fn dependency_problem(
    registry: &[ModuleSpec],
    id: &str,
    enable: bool,
    enabled: &[String],
) -> Option<String> {
    let is_on = |m: &str| enabled.iter().any(|e| e == m);
    match enable {
        true => {
            let spec = registry.iter().find(|m| m.id == id)?;
            let missing: Vec<&str> = spec
                .depends_on
                .iter()
                .copied()
                .filter(|d| !is_on(d))
                .collect();
            (!missing.is_empty())
                .then(|| format!("`{id}` depends on {}; enable it first", missing.join(", ")))
        }
        false => {
            let dependants: Vec<&str> = registry
                .iter()
                .filter(|m| m.depends_on.contains(&id) && is_on(m.id))
                .map(|m| m.id)
                .collect();
            (!dependants.is_empty()).then(|| {
                format!(
                    "{} depends on `{id}`; disable it first",
                    dependants.join(", ")
                )
            })
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModuleToggle {
    /// Another tenant (platform admins only).
    pub tenant_id: Option<String>,
}

fn known(id: &str) -> ApiResult<&'static str> {
    MODULES
        .iter()
        .map(|m| m.id)
        .find(|m| *m == id)
        .ok_or_else(|| ApiError::not_found("module"))
}

/// Every module with its status for the caller's tenant; `init_error` says why a
/// module could not initialise in this process.
pub fn list(principal: &Principal, init_error: impl Fn(&str) -> Option<String>) -> Vec<ModuleInfo> {
    statuses(&principal.modules, init_error)
}

/// Every module with its status for another tenant (platform admins; a tenant admin
/// naming their own tenant gets what [`list`] gives).
pub async fn list_for(
    db: &crate::db::Db,
    principal: &Principal,
    tenant_id: &str,
    init_error: impl Fn(&str) -> Option<String>,
) -> ApiResult<Vec<ModuleInfo>> {
    if tenant_id == principal.tenant_id {
        return Ok(list(principal, init_error));
    }
    let tenant_id = super::admin_tenant(Some(principal), Some(tenant_id))?;
    let mut conn = db.pool.acquire().await?;
    let enabled = crate::db::modules::enabled_for(&mut conn, &tenant_id).await?;
    Ok(statuses(&enabled, init_error))
}

fn statuses(enabled: &[String], init_error: impl Fn(&str) -> Option<String>) -> Vec<ModuleInfo> {
    MODULES
        .iter()
        .map(|spec| {
            let enabled = enabled.iter().any(|e| e == spec.id);
            let last_error = init_error(spec.id);
            ModuleInfo {
                id: spec.id,
                description: spec.description,
                status: match (&last_error, enabled) {
                    (Some(_), _) => "error",
                    (None, true) => "enabled",
                    (None, false) => "available",
                },
                enabled,
                depends_on: spec.depends_on,
                last_error,
            }
        })
        .collect()
}

pub fn get(
    principal: &Principal,
    id: &str,
    init_error: impl Fn(&str) -> Option<String>,
) -> ApiResult<ModuleInfo> {
    let id = known(id)?;
    list(principal, init_error)
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
    let current = modules::enabled_for(&mut tx, &tenant_id).await?;
    if let Some(problem) = dependency_problem(MODULES, id, enabled, &current) {
        return Err(ApiError::new(ErrorCode::CONFLICT, problem));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTRY: &[ModuleSpec] = &[
        ModuleSpec {
            id: "base",
            description: "",
            depends_on: &[],
        },
        ModuleSpec {
            id: "addon",
            description: "",
            depends_on: &["base"],
        },
    ];

    #[test]
    fn dependencies_are_enabled_first_and_disabled_last() {
        let none: Vec<String> = vec![];
        let base = vec!["base".to_owned()];
        let both = vec!["base".to_owned(), "addon".to_owned()];
        assert!(
            dependency_problem(REGISTRY, "addon", true, &none)
                .unwrap()
                .contains("base")
        );
        assert!(dependency_problem(REGISTRY, "addon", true, &base).is_none());
        assert!(
            dependency_problem(REGISTRY, "base", false, &both)
                .unwrap()
                .contains("addon")
        );
        assert!(dependency_problem(REGISTRY, "base", false, &base).is_none());
        assert!(dependency_problem(REGISTRY, "addon", false, &both).is_none());
    }

    #[test]
    fn the_registry_matches_the_known_ids() {
        let ids: Vec<&str> = MODULES.iter().map(|m| m.id).collect();
        assert_eq!(ids, crate::config::KNOWN_MODULES);
    }
}
