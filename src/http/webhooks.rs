//! Webhook routes: CRUD and the delivery log. Handlers delegate to `webhooks`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::gateway::TenantQuery;
use crate::app::AppState;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::{Json, Query};
use crate::webhooks::{
    self, CreateWebhook, DeliveryFilter, DeliveryList, RotateSecret, UpdateWebhook, WebhookView,
};

type St = State<Arc<AppState>>;

/// Subscribes a URL to events; the answer carries the signing secret (only here).
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = WebhookView)), security(("bearer" = [])))]
pub async fn create_webhook(
    State(state): St,
    Auth(principal): Auth,
    Json(request): Json<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<WebhookView>)> {
    let webhook = webhooks::create(&state.webhooks, &principal, request).await?;
    Ok((StatusCode::CREATED, Json(webhook)))
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", params(TenantQuery),
    responses((status = 200, body = Vec<WebhookView>)), security(("bearer" = [])))]
pub async fn list_webhooks(
    State(state): St,
    Auth(principal): Auth,
    Query(query): Query<TenantQuery>,
) -> ApiResult<Json<Vec<WebhookView>>> {
    webhooks::list(&state.webhooks, &principal, query.tenant_id.as_deref())
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    responses((status = 200, body = WebhookView)), security(("bearer" = [])))]
pub async fn get_webhook(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookView>> {
    webhooks::get(&state.webhooks, &principal, &id)
        .await
        .map(Json)
}

#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", request_body = UpdateWebhook,
    responses((status = 200, body = WebhookView)), security(("bearer" = [])))]
pub async fn update_webhook(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
    Json(request): Json<UpdateWebhook>,
) -> ApiResult<Json<WebhookView>> {
    webhooks::update(&state.webhooks, &principal, &id, request)
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    responses((status = 204)), security(("bearer" = [])))]
pub async fn delete_webhook(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    webhooks::delete(&state.webhooks, &principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces the signing secret. The answer carries the new one (only here); the old one
/// goes on signing beside it for `overlap_seconds` (a second `v1=` in the signature).
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks",
    request_body = RotateSecret, responses((status = 200, body = WebhookView)),
    security(("bearer" = [])))]
pub async fn rotate_webhook_secret(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
    Json(request): Json<RotateSecret>,
) -> ApiResult<Json<WebhookView>> {
    webhooks::rotate_secret(&state.webhooks, &principal, &id, request)
        .await
        .map(Json)
}

/// The latest deliveries with status code, error and attempt.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", params(DeliveryFilter),
    responses((status = 200, body = DeliveryList)), security(("bearer" = [])))]
pub async fn list_deliveries(
    State(state): St,
    Auth(principal): Auth,
    Path(id): Path<String>,
    Query(filter): Query<DeliveryFilter>,
) -> ApiResult<Json<DeliveryList>> {
    webhooks::deliveries(&state.webhooks, &principal, &id, &filter)
        .await
        .map(Json)
}
