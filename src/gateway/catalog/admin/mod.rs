//! The catalogue's admin operations (platform admins; the CLI as the operator): the
//! request and view shapes, their validation, and the backends' CRUD (`models` has
//! the models' and per-tenant access). Each write is validated, written with its audit
//! row, and followed by a reload of the snapshot.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

mod models;

use super::*;
use crate::config::Secret;
use crate::db::gateway::{self as store, BackendRow};
use crate::db::{new_id, now_ms};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::cache::CachePolicy;
use crate::rbac::Permission;
use crate::records::Timestamp;
use crate::services::{Actor, audit, validate_name};
use crate::vault::context;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBackend {
    pub name: String,
    /// `openai` (an OpenAI-compatible HTTP API).
    pub kind: String,
    pub base_url: String,
    /// Sent upstream as `Authorization: Bearer`; stored, never returned.
    #[schema(value_type = Option<String>)]
    pub api_key: Option<Secret>,
    /// Per-request timeout, and the longest wait between streamed chunks (default 60).
    pub timeout_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBackend {
    pub name: Option<String>,
    pub base_url: Option<String>,
    /// `null` removes the credential.
    #[serde(default, deserialize_with = "crate::records::double_option")]
    #[schema(value_type = Option<String>)]
    pub api_key: Option<Option<Secret>>,
    pub timeout_s: Option<u64>,
}

/// A backend as the API shows it (the credential only as `has_api_key`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BackendView {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub base_url: String,
    pub has_api_key: bool,
    pub timeout_s: u64,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// `healthy`, `unhealthy` or `unknown` (not probed yet).
    pub health: &'static str,
    /// The last health probe in this process: latency, and the error when unhealthy.
    pub last_probe: Option<crate::gateway::HealthReport>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModel {
    /// `vendor/name`, e.g. `scailabs/poolnoodle-omni`.
    pub slug: String,
    /// A tenant-scoped model (visible to that tenant only); absent: global.
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    pub routing: Routing,
    pub pricing: Option<Pricing>,
    /// Tokens of prompt and completion together at most (1 to 10,000,000); a request
    /// over it is 413 `CTX_TOO_LARGE` with the limit. Absent: no limit.
    pub context_length: Option<u64>,
    /// Cache its answers (`ttl_seconds`, optional `semantic_threshold`); absent: not.
    pub cache: Option<CachePolicy>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateModel {
    pub capabilities: Option<Vec<String>>,
    pub routing: Option<Routing>,
    pub pricing: Option<Pricing>,
    /// A new context size; `0` removes the limit.
    pub context_length: Option<u64>,
    /// A new cache policy; `null` stops caching.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<CachePolicy>)]
    pub cache: Option<Option<CachePolicy>>,
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or set.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A model in the OpenAI list shape, with ScaiGrid's fields beside.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelView {
    /// The slug.
    pub id: String,
    pub object: &'static str,
    /// Unix seconds.
    pub created: i64,
    pub owned_by: String,
    /// `global` or `tenant`.
    pub scope: &'static str,
    pub tenant_id: Option<String>,
    pub capabilities: Vec<String>,
    pub pricing: Pricing,
    /// Tokens of prompt and completion together at most (`null`: no limit).
    pub context_length: Option<u64>,
    /// How its answers are cached (`null`: they are not).
    pub cache: Option<CachePolicy>,
    /// Only for platform admins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutModelAccess {
    /// Another tenant (platform admins only).
    pub tenant_id: Option<String>,
    /// When not empty, only these slugs are callable.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Never callable.
    #[serde(default)]
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelAccessView {
    pub tenant_id: String,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

pub fn model_view(model: &ModelSpec, with_routing: bool) -> ModelView {
    ModelView {
        id: model.slug.clone(),
        object: "model",
        created: model.created_at / 1000,
        owned_by: model
            .slug
            .split_once('/')
            .map(|(vendor, _)| vendor.to_owned())
            .unwrap_or_default(),
        scope: match model.tenant_id {
            Some(_) => "tenant",
            None => "global",
        },
        tenant_id: model.tenant_id.clone(),
        capabilities: model.capabilities.clone(),
        pricing: model.pricing,
        context_length: model.context_length,
        cache: model.cache,
        routing: with_routing.then(|| model.routing.clone()),
    }
}

fn require_platform(actor: Actor<'_>) -> ApiResult<()> {
    actor.map_or(Ok(()), |p| p.require(Permission::PlatformAdmin))
}

fn validate_url(url: &str) -> ApiResult<String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| ApiError::invalid(format!("`base_url` `{url}` is not a URL")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(ApiError::invalid(
            "`base_url` must be an http(s) URL with a host",
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn validate_timeout(timeout_s: Option<u64>) -> ApiResult<i64> {
    match timeout_s.unwrap_or(60) {
        t @ 1..=3600 => Ok(t as i64),
        _ => Err(ApiError::invalid("`timeout_s` must be 1 to 3600")),
    }
}

/// Slugs are `vendor/name`: lowercase letters, digits and `.-_:` on each side.
pub fn validate_slug(slug: &str) -> ApiResult<()> {
    let part = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'.' | b'-' | b'_' | b':')
            })
    };
    match slug.split_once('/') {
        Some((vendor, name)) if part(vendor) && part(name) => Ok(()),
        _ => Err(ApiError::invalid(format!(
            "`slug` `{slug}` must look like `vendor/name` (lowercase letters, digits, `.-_:`)"
        ))),
    }
}

/// Maps a unique-index violation to `CONFLICT` with `message`, other errors as usual.
fn conflict_on_unique(message: &'static str) -> impl FnOnce(sqlx::Error) -> ApiError {
    move |error| match &error {
        sqlx::Error::Database(e) if e.is_unique_violation() => {
            ApiError::new(ErrorCode::CONFLICT, message)
        }
        _ => error.into(),
    }
}

impl Catalog {
    pub async fn create_backend(
        &self,
        actor: Actor<'_>,
        request: CreateBackend,
    ) -> ApiResult<Arc<BackendSpec>> {
        require_platform(actor)?;
        validate_name("name", &request.name, 200)?;
        if request.kind != "openai" {
            return Err(ApiError::invalid("`kind` must be `openai`"));
        }
        let now = now_ms();
        let id = new_id("bk");
        let row = BackendRow {
            api_key: request
                .api_key
                .map(|k| self.vault.seal(k.expose(), &context(BACKENDS, &id))),
            id,
            name: request.name.trim().to_owned(),
            kind: request.kind,
            base_url: validate_url(&request.base_url)?,
            timeout_s: validate_timeout(request.timeout_s)?,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.db.begin().await?;
        store::insert_backend(&mut tx, &row)
            .await
            .map_err(conflict_on_unique("a backend with this name exists"))?;
        audit(
            &mut tx,
            actor,
            None,
            "backend.create",
            ("backend", &row.id),
            None,
        )
        .await?;
        tx.commit().await?;
        let id = row.id.clone();
        self.backend(actor, &id).await
    }

    pub async fn backend(&self, actor: Actor<'_>, id: &str) -> ApiResult<Arc<BackendSpec>> {
        require_platform(actor)?;
        let snapshot = self.reload(true).await?;
        snapshot
            .backends
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("backend"))
    }

    pub async fn backends(&self, actor: Actor<'_>) -> ApiResult<Vec<Arc<BackendSpec>>> {
        require_platform(actor)?;
        let snapshot = self.reload(true).await?;
        let mut all: Vec<_> = snapshot.backends.values().cloned().collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    pub async fn update_backend(
        &self,
        actor: Actor<'_>,
        id: &str,
        request: UpdateBackend,
    ) -> ApiResult<Arc<BackendSpec>> {
        let current = self.backend(actor, id).await?;
        let mut row = BackendRow {
            id: current.id.clone(),
            name: current.name.clone(),
            kind: current.kind.clone(),
            base_url: current.base_url.clone(),
            api_key: None,
            timeout_s: current.timeout.as_secs() as i64,
            created_at: current.created_at,
            updated_at: current.updated_at,
        };
        if let Some(name) = request.name {
            validate_name("name", &name, 200)?;
            row.name = name.trim().to_owned();
        }
        if let Some(url) = request.base_url {
            row.base_url = validate_url(&url)?;
        }
        let api_key = match request.api_key {
            Some(key) => key,
            None => current.api_key.clone(),
        };
        row.api_key = api_key.map(|k| self.vault.seal(k.expose(), &context(BACKENDS, id)));
        if request.timeout_s.is_some() {
            row.timeout_s = validate_timeout(request.timeout_s)?;
        }
        let mut tx = self.db.begin().await?;
        store::update_backend(&mut tx, &row)
            .await
            .map_err(conflict_on_unique("a backend with this name exists"))?;
        audit(
            &mut tx,
            actor,
            None,
            "backend.update",
            ("backend", id),
            None,
        )
        .await?;
        tx.commit().await?;
        self.backend(actor, id).await
    }

    /// Deletes a backend no model routes to (409 otherwise: the policy would dangle).
    pub async fn delete_backend(&self, actor: Actor<'_>, id: &str) -> ApiResult<()> {
        require_platform(actor)?;
        let snapshot = self.reload(true).await?;
        if let Some(model) = snapshot
            .models
            .iter()
            .find(|m| m.routing.backends.iter().any(|r| r.backend_id == id))
        {
            return Err(ApiError::new(
                ErrorCode::CONFLICT,
                format!(
                    "model `{}` routes to this backend; change its routing first",
                    model.slug
                ),
            ));
        }
        let mut tx = self.db.begin().await?;
        if !store::delete_backend(&mut tx, id).await? {
            return Err(ApiError::not_found("backend"));
        }
        audit(
            &mut tx,
            actor,
            None,
            "backend.delete",
            ("backend", id),
            None,
        )
        .await?;
        tx.commit().await?;
        self.reload(true).await?;
        Ok(())
    }
}
