//! What the gateway routes: backends, models and per-tenant model access, kept as an
//! in-memory snapshot so the chat path reads no database.
//!
//! The snapshot is rebuilt after every local change and re-read every few seconds
//! (other API processes may change the catalogue); admin writes go to SQL first
//! (`admin`: backends, models and access, validated and audited).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

mod admin;

pub use admin::*;

use super::routing::Route;
use crate::config::Secret;
use crate::db::gateway::{self as store, BackendRow, ModelRow};
use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::vault::{Vault, VaultError, context};

const TTL: Duration = Duration::from_secs(5);

/// An upstream OpenAI-compatible HTTP API.
#[derive(Debug, Clone)]
pub struct BackendSpec {
    pub id: String,
    pub name: String,
    pub kind: String,
    /// Without a trailing `/`; paths such as `/chat/completions` are appended.
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub timeout: Duration,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Prices in cost units per 1,000 tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    #[serde(default)]
    pub input_per_1k: f64,
    #[serde(default)]
    pub output_per_1k: f64,
}

impl Pricing {
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input_per_1k + output_tokens as f64 * self.output_per_1k)
            / 1000.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    pub backends: Vec<Route>,
}

#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub id: String,
    pub slug: String,
    pub tenant_id: Option<String>,
    pub capabilities: Vec<String>,
    pub routing: Routing,
    pub pricing: Pricing,
    /// Tokens of prompt and completion together at most (seed 003's context size).
    pub context_length: Option<u64>,
    /// Its answers are cached (`None`: they are not).
    pub cache: Option<crate::gateway::cache::CachePolicy>,
    pub created_at: i64,
}

impl ModelSpec {
    /// The model name sent upstream through `route`.
    pub fn upstream_name<'a>(&'a self, route: &'a Route) -> &'a str {
        route.upstream_model.as_deref().unwrap_or_else(|| {
            self.slug
                .split_once('/')
                .map(|(_, n)| n)
                .unwrap_or(&self.slug)
        })
    }
}

#[derive(Debug, Default, Clone)]
struct Access {
    allow: HashSet<String>,
    deny: HashSet<String>,
}

/// One consistent view of the catalogue.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub backends: HashMap<String, Arc<BackendSpec>>,
    models: Vec<Arc<ModelSpec>>,
    access: HashMap<String, Access>,
}

impl Snapshot {
    /// The model a tenant means by `slug`: its own first, then the global one.
    pub fn find(&self, tenant_id: &str, slug: &str) -> Option<&Arc<ModelSpec>> {
        let own = self
            .models
            .iter()
            .find(|m| m.slug == slug && m.tenant_id.as_deref() == Some(tenant_id));
        own.or_else(|| {
            self.models
                .iter()
                .find(|m| m.slug == slug && m.tenant_id.is_none())
        })
    }

    fn allowed(&self, tenant_id: &str, slug: &str) -> bool {
        match self.access.get(tenant_id) {
            None => true,
            Some(access) => {
                !access.deny.contains(slug)
                    && (access.allow.is_empty() || access.allow.contains(slug))
            }
        }
    }

    /// Resolves a model for a call: `MODEL_NOT_FOUND` when the tenant cannot see it,
    /// `MODEL_ACCESS_DENIED` when `/v1/model-access` blocks it.
    pub fn resolve(&self, tenant_id: &str, slug: &str) -> ApiResult<Arc<ModelSpec>> {
        let model = self.find(tenant_id, slug).ok_or_else(|| {
            let hint = match slug.contains('/') {
                true => String::new(),
                false => " (slugs look like `vendor/name`)".to_owned(),
            };
            ApiError::new(
                ErrorCode::MODEL_NOT_FOUND,
                format!("model `{slug}` does not exist{hint}; GET /v1/models lists them"),
            )
        })?;
        if !self.allowed(tenant_id, slug) {
            return Err(ApiError::new(
                ErrorCode::MODEL_ACCESS_DENIED,
                format!("model `{slug}` is not enabled for this tenant (see /v1/model-access)"),
            ));
        }
        Ok(model.clone())
    }

    /// The models a tenant can call (its own shadow global ones of the same slug).
    pub fn visible(&self, tenant_id: &str) -> Vec<Arc<ModelSpec>> {
        let mut out: Vec<Arc<ModelSpec>> = Vec::new();
        for model in &self.models {
            let visible = match &model.tenant_id {
                Some(owner) => owner == tenant_id,
                None => !self
                    .models
                    .iter()
                    .any(|m| m.slug == model.slug && m.tenant_id.as_deref() == Some(tenant_id)),
            };
            if visible && self.allowed(tenant_id, &model.slug) {
                out.push(model.clone());
            }
        }
        out
    }

    pub fn models(&self) -> &[Arc<ModelSpec>] {
        &self.models
    }
}

pub struct Catalog {
    db: Db,
    /// Opens and seals backends' API keys (stored sealed).
    vault: Arc<Vault>,
    current: RwLock<(Arc<Snapshot>, Option<Instant>)>,
    reload: tokio::sync::Mutex<()>,
}

impl Catalog {
    pub fn new(db: Db, vault: Arc<Vault>) -> Self {
        Catalog {
            db,
            vault,
            current: RwLock::new((Arc::new(Snapshot::default()), None)),
            reload: tokio::sync::Mutex::new(()),
        }
    }

    /// The current snapshot (re-read when older than a few seconds).
    pub async fn snapshot(&self) -> ApiResult<Arc<Snapshot>> {
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.1.is_some_and(|at| at.elapsed() < TTL) {
                return Ok(current.0.clone());
            }
        }
        self.reload(false).await
    }

    /// Re-reads the catalogue (`force`: even if another caller just did).
    pub async fn reload(&self, force: bool) -> ApiResult<Arc<Snapshot>> {
        let _one = self.reload.lock().await;
        if !force {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.1.is_some_and(|at| at.elapsed() < TTL) {
                return Ok(current.0.clone());
            }
        }
        let mut conn = self.db.pool.acquire().await?;
        let backends = store::backends(&mut conn).await?;
        let models = store::models(&mut conn).await?;
        let rules = store::access_rules(&mut conn).await?;
        drop(conn);
        let mut snapshot = Snapshot::default();
        for row in backends {
            // Start-up re-sealed every key, so this fails only for a row changed behind
            // the server's back; that backend is left out rather than called without
            // its credential.
            match backend_spec(row, &self.vault) {
                Ok(backend) => {
                    snapshot
                        .backends
                        .insert(backend.id.clone(), Arc::new(backend));
                }
                Err((id, error)) => {
                    tracing::error!(backend = %id, %error, "backend API key cannot be opened; backend skipped")
                }
            }
        }
        for row in models {
            match model_spec(&row) {
                Some(model) => snapshot.models.push(Arc::new(model)),
                None => tracing::warn!(model = %row.slug, "unreadable model row skipped"),
            }
        }
        for (tenant_id, slug, rule) in rules {
            let access = snapshot.access.entry(tenant_id).or_default();
            match rule.as_str() {
                "allow" => access.allow.insert(slug),
                _ => access.deny.insert(slug),
            };
        }
        let snapshot = Arc::new(snapshot);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            (snapshot.clone(), Some(Instant::now()));
        Ok(snapshot)
    }
}

/// The table whose rows' `api_key` is sealed (the vault's context).
const BACKENDS: &str = "gateway_backends";

fn backend_spec(row: BackendRow, vault: &Vault) -> Result<BackendSpec, (String, VaultError)> {
    let api_key = match &row.api_key {
        Some(stored) => Some(Secret::new(
            vault
                .open(stored, &context(BACKENDS, &row.id))
                .map_err(|error| (row.id.clone(), error))?,
        )),
        None => None,
    };
    Ok(BackendSpec {
        id: row.id,
        name: row.name,
        kind: row.kind,
        base_url: row.base_url,
        api_key,
        timeout: Duration::from_secs(row.timeout_s.max(1) as u64),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn model_spec(row: &ModelRow) -> Option<ModelSpec> {
    Some(ModelSpec {
        id: row.id.clone(),
        slug: row.slug.clone(),
        tenant_id: row.tenant_id.clone(),
        capabilities: serde_json::from_str(&row.capabilities).ok()?,
        routing: serde_json::from_str(&row.routing).ok()?,
        pricing: match &row.pricing {
            Some(text) => serde_json::from_str(text).ok()?,
            None => Pricing::default(),
        },
        context_length: row.context_length.and_then(|n| u64::try_from(n).ok()),
        cache: match &row.cache {
            Some(text) => Some(serde_json::from_str(text).ok()?),
            None => None,
        },
        created_at: row.created_at,
    })
}

/// The row of a model (the inverse of [`model_spec`]); `updated_at` is now.
fn spec_row(spec: &ModelSpec) -> ApiResult<ModelRow> {
    fn json<T: Serialize>(value: &T) -> ApiResult<String> {
        serde_json::to_string(value).map_err(ApiError::internal)
    }
    Ok(ModelRow {
        id: spec.id.clone(),
        slug: spec.slug.clone(),
        tenant_id: spec.tenant_id.clone(),
        capabilities: json(&spec.capabilities)?,
        routing: json(&spec.routing)?,
        pricing: Some(json(&spec.pricing)?),
        context_length: spec.context_length.and_then(|n| i64::try_from(n).ok()),
        cache: spec.cache.as_ref().map(json).transpose()?,
        created_at: spec.created_at,
        updated_at: now_ms(),
    })
}
