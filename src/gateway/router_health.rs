//! `GET /v1/router/health` (seed 004's `/api/v1/admin/router/health`): what routing sees
//! now. Per backend: breaker, last health probe, whether it takes calls, and its calls
//! of the last five minutes; per model: whether any of its backends takes calls (a
//! model with none answers `MODEL_UNAVAILABLE` now) and its calls of the last five
//! minutes. Windows and breakers are this process's (each edge routes by its own).

use serde::Serialize;
use utoipa::ToSchema;

use super::window::{MINUTES, WindowStats};
use super::{Gateway, HealthReport};
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::rbac::Permission;

#[derive(Debug, Serialize, ToSchema)]
pub struct BackendHealth {
    pub id: String,
    pub name: String,
    /// `closed`, `half_open` or `open`.
    pub breaker: &'static str,
    /// The last probe: `unknown` (none yet), `healthy` or `unhealthy`.
    pub health: &'static str,
    pub last_probe: Option<HealthReport>,
    /// Whether routing would send it a call now.
    pub usable: bool,
    #[serde(flatten)]
    pub window: WindowStats,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelHealth {
    pub slug: String,
    /// The owning tenant of a tenant's own model (absent: a platform model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// `available`, or `unavailable` (no backend takes calls: `MODEL_UNAVAILABLE`).
    pub status: &'static str,
    pub backends_total: usize,
    pub backends_usable: usize,
    #[serde(flatten)]
    pub window: WindowStats,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RouterHealth {
    pub object: &'static str,
    /// The span of the `requests`, `errors` and latency figures (the current minute and
    /// the four before it).
    pub window_seconds: u64,
    /// Platform admins only (backends are the platform's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<BackendHealth>>,
    /// The models the caller may use (every model for platform admins).
    pub models: Vec<ModelHealth>,
    /// The slugs among them that answer `MODEL_UNAVAILABLE` now.
    pub unavailable_models: Vec<String>,
}

impl Gateway {
    pub async fn router_health(&self, principal: &Principal) -> ApiResult<RouterHealth> {
        principal.require(Permission::ModelsRead)?;
        let snapshot = self.catalog.snapshot().await?;
        let admin = principal.is_platform_admin();
        let backends = admin.then(|| {
            let mut list: Vec<BackendHealth> = snapshot
                .backends
                .values()
                .map(|backend| {
                    let view = self.view(backend);
                    BackendHealth {
                        usable: self.usable(&backend.id),
                        window: self.backend_window(&backend.id),
                        id: view.id,
                        name: view.name,
                        breaker: view.breaker,
                        health: view.health,
                        last_probe: view.last_probe,
                    }
                })
                .collect();
            list.sort_by(|a, b| a.name.cmp(&b.name));
            list
        });
        let models = match admin {
            true => snapshot.models().to_vec(),
            false => snapshot.visible(&principal.tenant_id),
        };
        let models: Vec<ModelHealth> = models
            .iter()
            .map(|model| {
                let routes = &model.routing.backends;
                let usable = routes
                    .iter()
                    .filter(|r| snapshot.backends.contains_key(&r.backend_id))
                    .filter(|r| self.usable(&r.backend_id))
                    .count();
                ModelHealth {
                    slug: model.slug.clone(),
                    tenant_id: model.tenant_id.clone(),
                    status: if usable > 0 {
                        "available"
                    } else {
                        "unavailable"
                    },
                    backends_total: routes.len(),
                    backends_usable: usable,
                    window: self.model_window(&model.id),
                }
            })
            .collect();
        Ok(RouterHealth {
            object: "router.health",
            window_seconds: MINUTES * 60,
            backends,
            unavailable_models: models
                .iter()
                .filter(|m| m.status == "unavailable")
                .map(|m| m.slug.clone())
                .collect(),
            models,
        })
    }
}
