//! `/v1/stats`: what the console's overview shows that the usage report does not.

use std::sync::Arc;

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::admin::TenantFilter;
use crate::app::AppState;
use crate::auth::Auth;
use crate::error::ApiResult;
use crate::extract::{Json, Query};
use crate::rbac::Permission;
use crate::telemetry::stats::{self, RouteStats};

#[derive(Serialize, ToSchema)]
pub struct StreamsOpen {
    scaiecho: usize,
    scaispeak: usize,
}

#[derive(Serialize, ToSchema)]
pub struct Stats {
    object: &'static str,
    tenant_id: String,
    /// The tenant's streams open on this process (WebSocket and WebRTC).
    streams_open: StreamsOpen,
    /// Requests in flight on this process (platform admins).
    #[serde(skip_serializing_if = "Option::is_none")]
    requests_in_flight: Option<u64>,
    /// Per route and backend since this process started: requests, errors, p50 and p99
    /// (platform admins: the numbers are the whole process's, every tenant's).
    #[serde(skip_serializing_if = "Option::is_none")]
    routes: Option<Vec<RouteStats>>,
}

/// Open streams of the tenant; for platform admins also per-route request counts,
/// error counts and latency quantiles of this process.
#[utoipa::path(get, path = "/v1/stats", tag = "operations", params(TenantFilter),
    responses((status = 200, body = Stats)), security(("bearer" = [])))]
pub async fn stats(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    Query(f): Query<TenantFilter>,
) -> ApiResult<Json<Stats>> {
    principal.require(Permission::AccountingRead)?;
    let tenant_id = principal.target_tenant(f.tenant_id.as_deref())?;
    let platform = principal.is_platform_admin();
    let routes = platform.then(|| {
        let histogram = &*crate::telemetry::REQUEST_DURATION;
        stats::by_route(histogram.bounds(), &histogram.snapshot())
    });
    Ok(Json(Stats {
        object: "stats",
        streams_open: StreamsOpen {
            scaiecho: state.scaiecho.streams.open(&tenant_id),
            scaispeak: state.scaispeak.streams.open(&tenant_id),
        },
        tenant_id,
        requests_in_flight: platform.then(crate::telemetry::in_flight),
        routes,
    }))
}
