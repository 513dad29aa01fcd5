//! Webhooks: tenants subscribe URLs to events; the [`dispatch`] loop delivers events
//! from the outbox at least once, signed ([`sign`]), with retries and backoff, and
//! disables a webhook after repeated failures. Targets are checked ([`target`]).
//!
//! Delivery state lives in the database (`webhook_deliveries`), so it survives restarts
//! and any API process may deliver.

pub mod dispatch;
pub mod sign;
pub mod target;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::cluster::Cluster;
use crate::config::WebhooksConfig;
use crate::db::Db;
use crate::db::webhooks::{self as store, DeliveryRow, WebhookRow};
use crate::db::{new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::rbac::Permission;
use crate::records::Timestamp;
use crate::services::audit;
use crate::vault::context;

/// What webhooks use: the rows, the vault their signing secrets are sealed with, the
/// delivery client, and (scaled) the event bus.
pub struct Webhooks {
    db: Db,
    vault: Arc<crate::vault::Vault>,
    config: WebhooksConfig,
    /// Client for deliveries (no redirects: a receiver cannot bounce a delivery to an
    /// address the target check refused).
    http: reqwest::Client,
    /// Redis of the scaled deployment, where events are also published.
    cluster: Option<Arc<Cluster>>,
    /// The address `serve` listens on, once bound (webhooks must not call it).
    pub bound: OnceLock<SocketAddr>,
}

impl Webhooks {
    pub fn new(
        db: Db,
        vault: Arc<crate::vault::Vault>,
        config: WebhooksConfig,
        cluster: Option<Arc<Cluster>>,
    ) -> anyhow::Result<Webhooks> {
        let http = delivery_client(target::system_lookup(), config.allow_private_targets)?;
        Ok(Webhooks {
            db,
            vault,
            config,
            http,
            cluster,
            bound: OnceLock::new(),
        })
    }
}

/// Event names a webhook may subscribe to (case-sensitive).
pub const EVENTS: &[&str] = &[
    "transcription.job.completed",
    "transcription.job.failed",
    "voice.ready",
    "voice.failed",
    "synth.job.completed",
    "synth.job.failed",
    "budget.exceeded",
    "firewall.matched",
];

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    pub url: String,
    /// Event names, exactly as listed (case-sensitive).
    pub events: Vec<String>,
    /// The signing secret; generated (and shown once) when absent.
    pub secret: Option<String>,
    /// Another tenant (platform admins only).
    pub tenant_id: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `active` re-enables a disabled webhook (and forgets its failures); `disabled`
    /// pauses it.
    pub status: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    pub events: Vec<String>,
    /// `active` or `disabled`.
    pub status: String,
    pub disabled_reason: Option<String>,
    pub consecutive_failures: i64,
    /// Only in the answer to the create call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Until when the secret replaced last still signs deliveries (after a rotation).
    pub previous_secret_expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    /// Also sent as `X-Scaigrid-Delivery`.
    pub id: String,
    /// The event's id: the idempotency key receivers deduplicate on.
    pub event_id: String,
    pub event: String,
    /// `pending`, `succeeded` or `failed` (attempts exhausted).
    pub status: String,
    /// Attempts made so far.
    pub attempt: i64,
    /// The receiver's HTTP status of the last attempt.
    pub status_code: Option<i64>,
    /// The last attempt's failure in a line (also `failure_detail`).
    pub error: Option<String>,
    /// The last attempt's stable reason: `RECEIVER_ERROR` (a non-2xx answer),
    /// `TIMEOUT`, `CONNECT_FAILED`, `REQUEST_FAILED`, `TARGET_REFUSED`, `BAD_URL` or
    /// `SECRET_UNAVAILABLE`.
    pub failure_reason: Option<String>,
    pub failure_detail: Option<String>,
    pub next_attempt_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub object: &'static str,
    pub data: Vec<DeliveryView>,
    pub has_more: bool,
    /// The cursor of the next page (send it back as `after`).
    pub next_after: Option<String>,
}

/// The table whose rows' secrets are sealed (the vault's context): `secret` and
/// `previous_secret` share it, so a rotation moves the sealed value as it is.
pub const WEBHOOKS: &str = "webhooks";

/// The API's view; `secret` is the plaintext, given only by create and rotate.
fn view(row: WebhookRow, secret: Option<String>) -> WebhookView {
    WebhookView {
        events: serde_json::from_str(&row.events).unwrap_or_default(),
        secret,
        previous_secret_expires_at: row
            .previous_secret_until
            .filter(|until| *until > now_ms())
            .map(Timestamp),
        id: row.id,
        tenant_id: row.tenant_id,
        url: row.url,
        status: row.status,
        disabled_reason: row.disabled_reason,
        consecutive_failures: row.consecutive_failures,
        created_at: Timestamp(row.created_at),
        updated_at: Timestamp(row.updated_at),
    }
}

fn delivery_view(row: DeliveryRow) -> DeliveryView {
    DeliveryView {
        next_attempt_at: match row.status.as_str() {
            "pending" => row.next_attempt_at.map(Timestamp),
            _ => None,
        },
        id: row.id,
        event_id: row.event_id,
        event: row.event_name,
        status: row.status,
        attempt: row.attempt,
        status_code: row.status_code,
        failure_detail: row.error.clone(),
        error: row.error,
        failure_reason: row.failure_reason,
        created_at: Timestamp(row.created_at),
        updated_at: Timestamp(row.updated_at),
    }
}

fn validate_events(events: &[String]) -> ApiResult<()> {
    if events.is_empty() {
        return Err(ApiError::invalid("`events` must name at least one event"));
    }
    match events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        Some(unknown) => Err(ApiError::invalid(format!(
            "unknown event `{unknown}` (names are case-sensitive): {}",
            EVENTS.join(", ")
        ))
        .with_field("events", EVENTS.to_vec())),
        None => Ok(()),
    }
}

async fn validate_url(hooks: &Webhooks, url: &str) -> ApiResult<String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| ApiError::invalid(format!("`url` `{url}` is not a URL")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ApiError::invalid("`url` must be http(s)"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ApiError::invalid("`url` must not carry credentials"));
    }
    let config = &hooks.config;
    target::check(
        &target::system_lookup(),
        &parsed,
        hooks.bound.get().copied(),
        config.allow_private_targets,
    )
    .await
    .map_err(|reason| ApiError::invalid(format!("`url` is not an allowed target: {reason}")))?;
    Ok(parsed.to_string())
}

fn require_write(principal: &Principal, tenant_id: &str) -> ApiResult<()> {
    principal.require(Permission::WebhooksWrite)?;
    if tenant_id != principal.tenant_id && !principal.is_platform_admin() {
        return Err(ApiError::not_found("tenant"));
    }
    Ok(())
}

/// The client deliveries go out on: no redirects (a receiver cannot bounce a delivery to
/// an address the check refused), no proxy from the environment (the check is of the
/// receiver, not of a proxy), and names resolved only to checked addresses.
pub fn delivery_client(
    lookup: target::Lookup,
    allow_private: bool,
) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .user_agent(concat!("scaigrid-webhooks/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(target::PinnedResolver {
            lookup,
            allow_private,
        })
        .build()?)
}

pub async fn create(
    hooks: &Webhooks,
    principal: &Principal,
    request: CreateWebhook,
) -> ApiResult<WebhookView> {
    let tenant_id = principal.target_tenant(request.tenant_id.as_deref())?;
    require_write(principal, &tenant_id)?;
    validate_events(&request.events)?;
    let url = validate_url(hooks, &request.url).await?;
    let secret = new_secret(request.secret)?;
    let now = now_ms();
    let id = new_id("wh");
    let row = WebhookRow {
        secret: hooks.vault.seal(&secret, &context(WEBHOOKS, &id)),
        id,
        tenant_id: tenant_id.clone(),
        url,
        events: serde_json::to_string(&request.events).map_err(ApiError::internal)?,
        previous_secret: None,
        previous_secret_until: None,
        status: "active".to_owned(),
        disabled_reason: None,
        consecutive_failures: 0,
        created_at: now,
        updated_at: now,
    };
    let mut tx = hooks.db.begin().await?;
    store::insert(&mut tx, &row).await?;
    audit(
        &mut tx,
        Some(principal),
        Some(&tenant_id),
        "webhook.create",
        ("webhook", &row.id),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(view(row, Some(secret)))
}

async fn find(hooks: &Webhooks, principal: &Principal, id: &str) -> ApiResult<WebhookRow> {
    let mut conn = hooks.db.pool.acquire().await?;
    let own = store::get(&mut conn, &principal.tenant_id, id).await?;
    let found = match (own, principal.is_platform_admin()) {
        (Some(row), _) => Some(row),
        (None, true) => {
            let row = sqlx::query("SELECT tenant_id FROM webhooks WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            match row {
                Some(row) => {
                    let tenant: String = sqlx::Row::try_get(&row, "tenant_id")?;
                    store::get(&mut conn, &tenant, id).await?
                }
                None => None,
            }
        }
        (None, false) => None,
    };
    found.ok_or_else(|| ApiError::not_found("webhook"))
}

pub async fn get(hooks: &Webhooks, principal: &Principal, id: &str) -> ApiResult<WebhookView> {
    principal.require(Permission::WebhooksRead)?;
    find(hooks, principal, id).await.map(|row| view(row, None))
}

pub async fn list(
    hooks: &Webhooks,
    principal: &Principal,
    tenant_id: Option<&str>,
) -> ApiResult<Vec<WebhookView>> {
    principal.require(Permission::WebhooksRead)?;
    let tenant_id = principal.target_tenant(tenant_id)?;
    let mut conn = hooks.db.pool.acquire().await?;
    let rows = store::list(&mut conn, &tenant_id).await?;
    Ok(rows.into_iter().map(|row| view(row, None)).collect())
}

pub async fn update(
    hooks: &Webhooks,
    principal: &Principal,
    id: &str,
    request: UpdateWebhook,
) -> ApiResult<WebhookView> {
    let mut row = find(hooks, principal, id).await?;
    require_write(principal, &row.tenant_id)?;
    if let Some(events) = request.events {
        validate_events(&events)?;
        row.events = serde_json::to_string(&events).map_err(ApiError::internal)?;
    }
    if let Some(url) = request.url {
        row.url = validate_url(hooks, &url).await?;
    }
    match request.status.as_deref() {
        None => {}
        Some("active") => {
            row.status = "active".to_owned();
            row.disabled_reason = None;
            row.consecutive_failures = 0;
        }
        Some("disabled") => {
            row.status = "disabled".to_owned();
            row.disabled_reason = Some("disabled by a user".to_owned());
        }
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "`status` `{other}` must be `active` or `disabled`"
            )));
        }
    }
    let mut tx = hooks.db.begin().await?;
    store::update(&mut tx, &row).await?;
    audit(
        &mut tx,
        Some(principal),
        Some(&row.tenant_id),
        "webhook.update",
        ("webhook", id),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(view(row, None))
}

/// A given secret (16 to 200 characters) or a generated one.
fn new_secret(given: Option<String>) -> ApiResult<String> {
    match given {
        Some(secret) if (16..=200).contains(&secret.len()) => Ok(secret),
        Some(_) => Err(ApiError::invalid("`secret` must be 16 to 200 characters")),
        None => Ok(format!("whsec_{}", hex::encode(rand::random::<[u8; 24]>()))),
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// The new secret; generated (and shown once, in the answer) when absent.
    pub secret: Option<String>,
    /// How long the old secret goes on signing beside the new one (a second `v1=` in
    /// `X-Scaigrid-Signature`), so receivers can switch without a gap: default 86400
    /// (a day), at most 604800 (a week), 0 to stop it at once.
    pub overlap_seconds: Option<u64>,
}

/// The longest overlap of an old secret with its successor.
const MAX_OVERLAP_SECONDS: u64 = 7 * 24 * 3600;

/// Replaces the signing secret; the answer carries the new one (only here).
pub async fn rotate_secret(
    hooks: &Webhooks,
    principal: &Principal,
    id: &str,
    request: RotateSecret,
) -> ApiResult<WebhookView> {
    let mut row = find(hooks, principal, id).await?;
    require_write(principal, &row.tenant_id)?;
    let overlap = request.overlap_seconds.unwrap_or(24 * 3600);
    if overlap > MAX_OVERLAP_SECONDS {
        return Err(ApiError::invalid(format!(
            "`overlap_seconds` must be at most {MAX_OVERLAP_SECONDS}"
        ))
        .with_field("field", "overlap_seconds"));
    }
    let secret = new_secret(request.secret)?;
    let sealed = hooks.vault.seal(&secret, &context(WEBHOOKS, id));
    let (previous, until) = match overlap {
        0 => (None, None),
        seconds => (
            Some(std::mem::take(&mut row.secret)),
            Some(now_ms() + seconds as i64 * 1000),
        ),
    };
    let mut tx = hooks.db.begin().await?;
    store::rotate_secret(&mut tx, id, &sealed, previous.as_deref(), until).await?;
    audit(
        &mut tx,
        Some(principal),
        Some(&row.tenant_id),
        "webhook.rotate_secret",
        ("webhook", id),
        Some(serde_json::json!({ "overlap_seconds": overlap })),
    )
    .await?;
    tx.commit().await?;
    row.secret = sealed;
    row.previous_secret = previous;
    row.previous_secret_until = until;
    Ok(view(row, Some(secret)))
}

pub async fn delete(hooks: &Webhooks, principal: &Principal, id: &str) -> ApiResult<()> {
    let row = find(hooks, principal, id).await?;
    require_write(principal, &row.tenant_id)?;
    let mut tx = hooks.db.begin().await?;
    store::delete(&mut tx, &row.tenant_id, id).await?;
    audit(
        &mut tx,
        Some(principal),
        Some(&row.tenant_id),
        "webhook.delete",
        ("webhook", id),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn deliveries(
    hooks: &Webhooks,
    principal: &Principal,
    id: &str,
    filter: &DeliveryFilter,
) -> ApiResult<DeliveryList> {
    principal.require(Permission::WebhooksRead)?;
    let page = crate::db::page::Page::parse(filter.limit, filter.after.clone())?;
    if let Some(status) = filter.status.as_deref()
        && !["pending", "succeeded", "failed"].contains(&status)
    {
        return Err(ApiError::invalid(
            "`status` must be pending, succeeded or failed",
        ));
    }
    let row = find(hooks, principal, id).await?;
    let mut conn = hooks.db.pool.acquire().await?;
    let rows = store::deliveries(&mut conn, &row.id, filter.status.as_deref(), &page).await?;
    let (rows, next) = page.split(rows, |row| &row.id);
    Ok(DeliveryList {
        object: "list",
        data: rows.into_iter().map(delivery_view).collect(),
        has_more: next.is_some(),
        next_after: next,
    })
}

/// `GET /v1/webhooks/{id}/deliveries` query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveryFilter {
    /// `pending`, `succeeded` or `failed`.
    pub status: Option<String>,
    /// Deliveries a page holds, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `next_after` of the previous page.
    pub after: Option<String>,
}
