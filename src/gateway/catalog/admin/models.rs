//! The models' admin operations and per-tenant model access: routing and pricing
//! validated against the snapshot, writes with their audit rows, then a reload.

use std::collections::HashSet;
use std::sync::Arc;

use super::*;
use crate::auth::Principal;
use crate::db::gateway::{self as store};
use crate::db::{new_id, now_ms};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::rbac::Permission;
use crate::services::{Actor, audit};

impl Catalog {
    fn validate_routing(snapshot: &Snapshot, routing: &Routing) -> ApiResult<()> {
        if routing.backends.is_empty() || routing.backends.len() > 32 {
            return Err(ApiError::invalid(
                "`routing.backends` must list 1 to 32 backends",
            ));
        }
        for route in &routing.backends {
            if !snapshot.backends.contains_key(&route.backend_id) {
                return Err(ApiError::invalid(format!(
                    "`routing.backends`: no backend `{}`",
                    route.backend_id
                )));
            }
        }
        Ok(())
    }

    fn validate_pricing(pricing: &Pricing) -> ApiResult<()> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        match ok(pricing.input_per_1k) && ok(pricing.output_per_1k) {
            true => Ok(()),
            false => Err(ApiError::invalid("prices must be numbers zero or above")),
        }
    }

    /// A context size is a count of tokens a real model could have.
    fn validate_context_length(length: u64) -> ApiResult<()> {
        match (1..=10_000_000).contains(&length) {
            true => Ok(()),
            false => Err(ApiError::invalid(
                "`context_length` must be 1 to 10000000 tokens",
            )),
        }
    }

    pub async fn create_model(
        &self,
        actor: Actor<'_>,
        request: CreateModel,
    ) -> ApiResult<ModelView> {
        require_platform(actor)?;
        validate_slug(&request.slug)?;
        let snapshot = self.reload(true).await?;
        Self::validate_routing(&snapshot, &request.routing)?;
        let pricing = request.pricing.unwrap_or_default();
        Self::validate_pricing(&pricing)?;
        if let Some(length) = request.context_length {
            Self::validate_context_length(length)?;
        }
        if let Some(cache) = &request.cache {
            cache
                .check()
                .map_err(|e| ApiError::invalid(e).with_field("field", "cache"))?;
        }
        let row = spec_row(&ModelSpec {
            id: new_id("mdl"),
            slug: request.slug.clone(),
            tenant_id: request.tenant_id.clone(),
            capabilities: request.capabilities,
            routing: request.routing,
            pricing,
            context_length: request.context_length,
            cache: request.cache,
            created_at: now_ms(),
        })?;
        let mut tx = self.db.begin().await?;
        if let Some(tenant_id) = &request.tenant_id
            && crate::db::tenants::get(&mut tx, tenant_id).await?.is_none()
        {
            return Err(ApiError::not_found("tenant"));
        }
        store::insert_model(&mut tx, &row)
            .await
            .map_err(conflict_on_unique(
                "a model with this slug exists in this scope",
            ))?;
        audit(
            &mut tx,
            actor,
            request.tenant_id.as_deref(),
            "model.create",
            ("model", &row.slug),
            None,
        )
        .await?;
        tx.commit().await?;
        self.reloaded_view(&row.id).await
    }

    /// The admin view of a model just written, from a fresh snapshot.
    async fn reloaded_view(&self, id: &str) -> ApiResult<ModelView> {
        let snapshot = self.reload(true).await?;
        let model = snapshot
            .models
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| ApiError::not_found("model"))?;
        Ok(model_view(model, true))
    }

    /// The model a caller addresses: the platform admin may name a tenant's model with
    /// `tenant_id`; everyone else sees what their tenant sees.
    fn addressed(
        snapshot: &Snapshot,
        principal: &Principal,
        slug: &str,
        tenant_id: Option<&str>,
    ) -> ApiResult<Arc<ModelSpec>> {
        let found = match (principal.is_platform_admin(), tenant_id) {
            (true, Some(tenant)) => snapshot
                .models
                .iter()
                .find(|m| m.slug == slug && m.tenant_id.as_deref() == Some(tenant)),
            (true, None) => snapshot
                .models
                .iter()
                .find(|m| m.slug == slug && m.tenant_id.is_none())
                .or_else(|| snapshot.find(&principal.tenant_id, slug)),
            (false, _) => snapshot
                .visible(&principal.tenant_id)
                .into_iter()
                .find(|m| m.slug == slug)
                .as_ref()
                .and_then(|m| snapshot.models.iter().find(|x| x.id == m.id)),
        };
        found.cloned().ok_or_else(|| {
            ApiError::new(
                ErrorCode::MODEL_NOT_FOUND,
                format!("model `{slug}` does not exist"),
            )
        })
    }

    pub async fn get_model(
        &self,
        principal: &Principal,
        slug: &str,
        tenant_id: Option<&str>,
    ) -> ApiResult<ModelView> {
        principal.require(Permission::ModelsRead)?;
        let snapshot = self.snapshot().await?;
        let model = Self::addressed(&snapshot, principal, slug, tenant_id)?;
        Ok(model_view(&model, principal.is_platform_admin()))
    }

    pub async fn list_models(&self, principal: &Principal) -> ApiResult<ModelList> {
        principal.require(Permission::ModelsRead)?;
        let snapshot = self.snapshot().await?;
        let admin = principal.is_platform_admin();
        let data = match admin {
            true => snapshot
                .models
                .iter()
                .map(|m| model_view(m, true))
                .collect(),
            false => snapshot
                .visible(&principal.tenant_id)
                .iter()
                .map(|m| model_view(m, false))
                .collect(),
        };
        Ok(ModelList {
            object: "list",
            data,
        })
    }

    pub async fn update_model(
        &self,
        principal: &Principal,
        slug: &str,
        tenant_id: Option<&str>,
        request: UpdateModel,
    ) -> ApiResult<ModelView> {
        principal.require(Permission::PlatformAdmin)?;
        let snapshot = self.reload(true).await?;
        let model = Self::addressed(&snapshot, principal, slug, tenant_id)?;
        let mut updated = ModelSpec::clone(&model);
        if let Some(routing) = request.routing {
            updated.routing = routing;
        }
        Self::validate_routing(&snapshot, &updated.routing)?;
        match request.context_length {
            Some(0) => updated.context_length = None,
            Some(length) => {
                Self::validate_context_length(length)?;
                updated.context_length = Some(length);
            }
            None => {}
        }
        if let Some(pricing) = request.pricing {
            updated.pricing = pricing;
        }
        if let Some(cache) = request.cache {
            if let Some(policy) = &cache {
                policy
                    .check()
                    .map_err(|e| ApiError::invalid(e).with_field("field", "cache"))?;
            }
            updated.cache = cache;
        }
        Self::validate_pricing(&updated.pricing)?;
        if let Some(capabilities) = request.capabilities {
            updated.capabilities = capabilities;
        }
        let row = spec_row(&updated)?;
        let mut tx = self.db.begin().await?;
        store::update_model(&mut tx, &row).await?;
        audit(
            &mut tx,
            Some(principal),
            model.tenant_id.as_deref(),
            "model.update",
            ("model", slug),
            None,
        )
        .await?;
        tx.commit().await?;
        self.reloaded_view(&row.id).await
    }

    pub async fn delete_model(
        &self,
        principal: &Principal,
        slug: &str,
        tenant_id: Option<&str>,
    ) -> ApiResult<()> {
        principal.require(Permission::PlatformAdmin)?;
        let snapshot = self.reload(true).await?;
        let model = Self::addressed(&snapshot, principal, slug, tenant_id)?;
        let mut tx = self.db.begin().await?;
        store::delete_model(&mut tx, &model.id).await?;
        audit(
            &mut tx,
            Some(principal),
            model.tenant_id.as_deref(),
            "model.delete",
            ("model", slug),
            None,
        )
        .await?;
        tx.commit().await?;
        self.reload(true).await?;
        Ok(())
    }

    pub async fn model_access(
        &self,
        principal: &Principal,
        tenant_id: Option<&str>,
    ) -> ApiResult<ModelAccessView> {
        let tenant_id = principal.target_tenant(tenant_id)?;
        principal.require(Permission::ModelsRead)?;
        let snapshot = self.snapshot().await?;
        let access = snapshot.access.get(&tenant_id).cloned().unwrap_or_default();
        let sorted = |set: HashSet<String>| {
            let mut list: Vec<String> = set.into_iter().collect();
            list.sort();
            list
        };
        Ok(ModelAccessView {
            tenant_id,
            allow: sorted(access.allow),
            deny: sorted(access.deny),
        })
    }

    pub async fn put_model_access(
        &self,
        principal: &Principal,
        request: PutModelAccess,
    ) -> ApiResult<ModelAccessView> {
        let tenant_id =
            crate::services::admin_tenant(Some(principal), request.tenant_id.as_deref())?;
        let mut request = request;
        for list in [&mut request.allow, &mut request.deny] {
            list.sort();
            list.dedup();
        }
        for slug in request.allow.iter().chain(&request.deny) {
            validate_slug(slug)?;
            if request.allow.contains(slug) && request.deny.contains(slug) {
                return Err(ApiError::invalid(format!(
                    "`{slug}` is both allowed and denied"
                )));
            }
        }
        let mut tx = self.db.begin().await?;
        store::replace_access(&mut tx, &tenant_id, &request.allow, &request.deny).await?;
        audit(
            &mut tx,
            Some(principal),
            Some(&tenant_id),
            "model_access.put",
            ("tenant", &tenant_id),
            Some(serde_json::json!({"allow": request.allow, "deny": request.deny})),
        )
        .await?;
        tx.commit().await?;
        self.reload(true).await?;
        self.model_access(principal, Some(&tenant_id)).await
    }
}
