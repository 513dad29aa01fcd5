//! The HTTP surface: path → handler, and nothing else. Each handler unpacks what axum
//! injects and calls one service function; its `#[utoipa::path]` puts it in
//! `/openapi.json`, and registering it through `routes!` is the only way to route it, so
//! the document and the router cannot drift apart.

mod admin;
mod auth;
mod console;
mod errors;
mod firewall;
mod gateway;
mod health;
mod instances;
mod nodes;
mod realtime;
mod scaiecho;
mod scaispeak;
mod stats;
mod upload;
mod webhooks;
mod webrtc;
mod workers;

use std::sync::Arc;

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "ScaiGrid", description = "Audio-first real-time media server and multi-tenant AI gateway"),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// A page of a list in the `{"object": "list"}` shape: `has_more` and the cursor of the
/// next page (`next_after`, sent back as `after`).
fn page_of<T: serde::Serialize>(data: &[T], next: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "object": "list",
        "data": data,
        "has_more": next.is_some(),
        "next_after": next,
    })
}

/// A page of a list answered as a bare array (kept for the clients written against it):
/// the cursor of the next page goes in `X-Next-After` and a `Link: rel="next"`.
fn paged<T: serde::Serialize>(
    uri: &axum::http::Uri,
    data: Vec<T>,
    next: Option<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut response = crate::extract::Json(data).into_response();
    if let Some(next) = next
        && let Ok(value) = axum::http::HeaderValue::from_str(&next)
    {
        let mut query: Vec<(String, String)> = uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        query.retain(|(name, _)| name != "after");
        query.push(("after".into(), next.clone()));
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish();
        let link = format!("<{}?{query}>; rel=\"next\"", uri.path());
        let headers = response.headers_mut();
        headers.insert("x-next-after", value);
        if let Ok(link) = axum::http::HeaderValue::from_str(&link) {
            headers.insert(axum::http::header::LINK, link);
        }
    }
    response
}

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
        .routes(routes!(health::openapi))
        .routes(routes!(health::asyncapi))
        .routes(routes!(errors::list))
        .routes(routes!(stats::stats))
        .routes(routes!(firewall::create, firewall::list))
        .routes(routes!(firewall::get, firewall::replace, firewall::delete))
        .routes(routes!(firewall::test))
        .routes(routes!(firewall::test_alias))
        .routes(routes!(console::index))
        .routes(routes!(console::reference))
        .routes(routes!(console::asset))
        .routes(routes!(
            console::sign_in,
            console::current,
            console::sign_out
        ))
        .routes(routes!(console::refresh))
        .routes(routes!(auth::token))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::me))
        .routes(routes!(auth::change_password))
        .routes(routes!(admin::create_tenant, admin::list_tenants))
        .routes(routes!(
            admin::get_tenant,
            admin::update_tenant,
            admin::delete_tenant
        ))
        .routes(routes!(admin::create_user, admin::list_users))
        .routes(routes!(
            admin::get_user,
            admin::update_user,
            admin::delete_user
        ))
        .routes(routes!(admin::reset_password))
        .routes(routes!(admin::create_api_key, admin::list_api_keys))
        .routes(routes!(admin::get_api_key, admin::revoke_api_key))
        .routes(routes!(admin::create_role, admin::list_roles))
        .routes(routes!(admin::delete_role, admin::update_role))
        .routes(routes!(admin::create_grant))
        .routes(routes!(admin::revoke_grant))
        .routes(routes!(admin::list_modules))
        .routes(routes!(admin::get_module))
        .routes(routes!(admin::enable_module))
        .routes(routes!(admin::disable_module))
        .routes(routes!(gateway::create_backend, gateway::list_backends))
        .routes(routes!(gateway::router_health))
        .routes(routes!(gateway::embeddings))
        .routes(routes!(gateway::router_health_alias))
        .routes(routes!(
            gateway::get_backend,
            gateway::update_backend,
            gateway::delete_backend
        ))
        .routes(routes!(gateway::backend_health))
        .routes(routes!(gateway::create_model, gateway::list_models))
        .routes(routes!(
            gateway::get_model,
            gateway::update_model,
            gateway::delete_model
        ))
        .routes(routes!(
            gateway::get_model_access,
            gateway::put_model_access
        ))
        .routes(routes!(gateway::chat_completions))
        .routes(routes!(gateway::create_budget, gateway::list_budgets))
        .routes(routes!(gateway::delete_budget))
        .routes(routes!(gateway::usage))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(
            webhooks::get_webhook,
            webhooks::update_webhook,
            webhooks::delete_webhook
        ))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::rotate_webhook_secret))
        .routes(routes!(nodes::infra_nodes))
        .routes(routes!(nodes::admin_nodes))
        .routes(routes!(workers::list))
        .routes(routes!(nodes::load_model))
        .routes(routes!(nodes::unload_model))
        .routes(routes!(instances::launch, instances::list))
        .routes(routes!(instances::get, instances::delete))
        .routes(routes!(instances::start))
        .routes(routes!(instances::stop))
        .routes(routes!(instances::balance))
        .routes(routes!(instances::top_up))
        .routes(routes!(
            instances::create_balancer,
            instances::list_balancers
        ))
        .routes(routes!(instances::get_balancer, instances::delete_balancer))
        .routes(routes!(scaiecho::transcribe))
        .routes(routes!(scaiecho::openai_transcriptions))
        .routes(routes!(scaiecho::get_policy, scaiecho::patch_policy))
        .routes(routes!(scaiecho::list_jobs))
        .routes(routes!(scaiecho::get_job, scaiecho::delete_job))
        .routes(routes!(scaiecho::stream_transcribe))
        .routes(routes!(scaiecho::listen_stream, scaiecho::listen_file))
        .routes(routes!(realtime::realtime))
        .routes(routes!(scaiecho::create_speaker, scaiecho::list_speakers))
        .routes(routes!(scaiecho::get_speaker, scaiecho::delete_speaker))
        .routes(routes!(scaiecho::get_speaker_warm, scaiecho::warm_speaker))
        .routes(routes!(scaispeak::speak))
        .routes(routes!(scaispeak::openai_speech))
        .routes(routes!(scaispeak::list_voices, scaispeak::create_voice))
        .routes(routes!(scaispeak::get_voice, scaispeak::delete_voice))
        .routes(routes!(scaispeak::repromote_voice))
        .routes(routes!(scaispeak::warm_voice))
        .routes(routes!(scaispeak::evict_voice))
        .routes(routes!(scaispeak::get_policy, scaispeak::patch_policy))
        .routes(routes!(scaispeak::stream_speak))
        .routes(routes!(scaispeak::module_readyz))
        .routes(routes!(scaispeak::list_jobs))
        .routes(routes!(scaispeak::get_job, scaispeak::delete_job))
        .routes(routes!(scaispeak::job_audio))
        .routes(routes!(webrtc::create_session))
        .routes(routes!(webrtc::get_session, webrtc::delete_session))
        .routes(routes!(webrtc::offer))
        .routes(routes!(webrtc::control))
        .routes(routes!(webrtc::demo))
}
