//! Application state and router assembly.
//!
//! [`AppState::open`] does all start-up I/O (database, migrations, bootstrap, object
//! store, secrets) once; [`router`] is pure assembly so benches and tests can build the
//! whole stack in-process.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::db::Db;
use crate::error::{ApiError, ErrorCode};
use crate::gateway::Gateway;
use crate::jobs::Jobs;
use crate::ratelimit::Gate;
use crate::scaiecho::ScaiEcho;
use crate::scaispeak::ScaiSpeak;
use crate::speech::intake::AudioIntake;
use crate::speech::nodes::Nodes;
use crate::store::ObjectStore;
use crate::store::local::LocalStore;
use crate::webhooks::Webhooks;
use crate::webrtc::Webrtc;
use crate::{bootstrap, http, request_id, telemetry};

pub struct AppState {
    pub config: Config,
    pub db: Db,
    pub store: Arc<dyn ObjectStore>,
    pub auth: Arc<Authenticator>,
    /// Redis of the scaled deployment (`None` in the embedded default).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    pub metrics: PrometheusHandle,
    /// This process's node and (scaled) the registry's live ones.
    pub nodes: Nodes,
    /// The job rows and queue (the products queue, the workers process).
    pub jobs: Arc<Jobs>,
    /// ScaiEcho's context.
    pub scaiecho: Arc<ScaiEcho>,
    /// ScaiSpeak's context.
    pub scaispeak: Arc<ScaiSpeak>,
    /// The gateway core: catalogue, breakers, health, chat routing.
    pub gateway: Arc<Gateway>,
    /// Admission to limited work: auth, rate limits, budgets.
    pub gate: Gate,
    /// Webhooks: subscriptions and delivery.
    pub webhooks: Arc<Webhooks>,
    /// This process's WebRTC sessions and what they carry.
    pub webrtc: Arc<Webrtc>,
    /// Model instances on the nodes.
    pub instances: Arc<crate::instances::Instances>,
    /// Firewall policies and their checks.
    pub firewall: Arc<crate::firewall::Firewall>,
    /// The OpenAPI document, rendered once when the router is built.
    pub openapi: OnceLock<String>,
}

impl AppState {
    /// What a `/v1/realtime` session uses.
    pub fn realtime(&self) -> Arc<crate::realtime::Products> {
        Arc::new(crate::realtime::Products {
            scaiecho: self.scaiecho.clone(),
            scaispeak: self.scaispeak.clone(),
            gateway: self.gateway.clone(),
            gate: self.gate.clone(),
            stream: self.config.stream.clone(),
        })
    }

    /// Connects, migrates, bootstraps, opens the object store.
    pub async fn open(config: Config) -> anyhow::Result<Arc<AppState>> {
        let db = Db::connect(&config.database).await?;
        crate::db::migrate::run(&db).await?;
        bootstrap::run(&db, &config).await?;
        let vault = Arc::new(vault(&config)?);
        let resealed = crate::db::sealed::reseal(&db, &vault)
            .await
            .context("sealing stored secrets under secrets.key")?;
        if resealed.values > 0 {
            tracing::info!(
                values = resealed.values,
                from_plaintext = resealed.from_plaintext,
                key_id = vault.key_id(),
                "stored secrets sealed under the current key"
            );
        }
        let store: Arc<dyn ObjectStore> = match &config.s3 {
            Some(s3) => Arc::new(crate::store::s3::S3Store::open(s3).await?),
            None => Arc::new(LocalStore::open(&config.object_store_dir).with_context(|| {
                format!(
                    "opening the object store at {}",
                    config.object_store_dir.display()
                )
            })?),
        };
        let cluster = match &config.redis {
            Some(redis) => Some(Arc::new(crate::cluster::Cluster::open(redis)?)),
            None => None,
        };
        let queue = cluster
            .clone()
            .map(|cluster| Arc::new(crate::cluster::queue::Queue::new(cluster)));
        let limit_store: Arc<dyn crate::ratelimit::LimitStore> = match &cluster {
            Some(cluster) => Arc::new(crate::cluster::limits::RedisLimitStore::new(
                cluster.clone(),
            )),
            None => Arc::new(crate::ratelimit::memory::MemoryStore::default()),
        };
        let secret = jwt_secret(&config)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("scaigrid/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let auth = Arc::new(Authenticator::new(
            db.clone(),
            &config.auth,
            &secret,
            &http,
            cluster.clone(),
        )?);
        let (vad, engines) = match config.engines.enabled {
            true => {
                let (vad, engines) = start_engines(&config).await?;
                (Some(vad), Some(engines))
            }
            false => (None, None),
        };
        let nodes = Nodes::new(cluster.clone(), vad.clone(), engines.clone());
        nodes.discover_now(NODE_DISCOVERY).await;
        let accounting = Arc::new(crate::accounting::Accounting::new(
            db.clone(),
            &config.accounting,
            &config.data_dir,
            cluster
                .clone()
                .map(|cluster| Arc::new(crate::cluster::ledger::Ledger::new(cluster))),
        ));
        let gate = Gate {
            auth: auth.clone(),
            limits: Arc::new(crate::ratelimit::Limits::new(limit_store)),
            accounting: accounting.clone(),
        };
        let jobs = Arc::new(Jobs::new(db.clone(), queue, config.jobs.lease));
        let firewall = crate::firewall::Firewall::new(db.clone());
        let handles = crate::speech::Handles {
            db: db.clone(),
            store: store.clone(),
            intake: Arc::new(AudioIntake::new(&config.limits, vad)),
            nodes: nodes.clone(),
            accounting: accounting.clone(),
            jobs: jobs.clone(),
            gate: gate.clone(),
            stream: config.stream.clone(),
            firewall: firewall.clone(),
        };
        let scaiecho = Arc::new(ScaiEcho::new(
            handles.clone(),
            engines.clone(),
            crate::scaiecho::relay::Relay::new(&config.relay)?,
        ));
        let scaispeak = Arc::new(ScaiSpeak::new(
            handles,
            config.speak.clone(),
            engines,
            crate::scaispeak::relay::Relay::new(&config.speak)?,
        ));
        let gateway = Arc::new(Gateway::new(
            db.clone(),
            config.gateway.clone(),
            vault.clone(),
            (accounting, gate.limits.clone()),
            firewall.clone(),
            (nodes.clone(), cluster.clone()),
        )?);
        crate::gateway::judge::GatewayJudge::install(&gateway);
        let webhooks = Arc::new(Webhooks::new(
            db.clone(),
            vault.clone(),
            config.webhooks.clone(),
            cluster.clone(),
        )?);
        let webrtc = Arc::new(Webrtc::new(
            (config.webrtc.clone(), config.stream.clone()),
            db.clone(),
            auth.clone(),
            (scaiecho.clone(), scaispeak.clone()),
            cluster.clone(),
        ));
        let instances = Arc::new(crate::instances::Instances::new(
            db.clone(),
            nodes.clone(),
            config.instances.clone(),
        ));
        Ok(Arc::new(AppState {
            instances,
            firewall,
            gateway,
            gate,
            cluster,
            jobs,
            webhooks,
            scaiecho,
            scaispeak,
            config,
            db,
            store,
            auth,
            metrics: telemetry::metrics_handle(),
            nodes,
            openapi: OnceLock::new(),
            webrtc,
        }))
    }
}

impl crate::auth::AuthState for Arc<AppState> {
    fn authenticator(&self) -> &Authenticator {
        &self.auth
    }
}

impl AppState {
    /// Why a module could not initialise in this process (`None`: it can serve).
    /// Speech modules need at least one backend: an engine the node loaded, or a relay.
    pub fn module_error(&self, id: &str) -> Option<String> {
        let (usable, what) = match id {
            "scaiecho" => (self.scaiecho.usable(), "speech-to-text"),
            "scaispeak" => (self.scaispeak.usable(), "text-to-speech"),
            _ => return None,
        };
        if usable.local || usable.relay {
            return None;
        }
        let node = match self.nodes.engines() {
            None => "engines are disabled in this process".to_owned(),
            Some(engines) => {
                let problems = engines.problems();
                match problems.is_empty() {
                    true => "no inference node carries an engine for it".to_owned(),
                    false => format!("inference nodes report: {}", problems.join("; ")),
                }
            }
        };
        Some(format!(
            "no {what} backend: {node}, and no managed relay is configured"
        ))
    }
}

/// The edge's voice activity detector, and the inference nodes: started, supervised,
/// and waited for (a node loads its engines before it answers), so the server is ready
/// when it starts listening. A node that does not come up is reported by readiness.
async fn start_engines(
    config: &Config,
) -> anyhow::Result<(
    Arc<engines::node::Node>,
    Arc<crate::inference::pool::Dispatcher>,
)> {
    use crate::inference::{pool::Dispatcher, supervisor, token::Bearer};
    anyhow::ensure!(
        config.engines.node_processes > 0 || config.redis.is_some(),
        "engines.node_processes = 0 routes to the nodes of the registry: it needs [redis]"
    );
    let vad = Arc::new(crate::inference::serve::load(&config.engines, true).await?);
    let plan = supervisor::plan(&config.engines, &config.data_dir);
    let bearer = Bearer::new(config.engines.node_token.as_ref())?;
    let engines = Arc::new(Dispatcher::new(plan, bearer)?);
    let max_message = crate::inference::max_message_bytes(config.limits.max_audio_seconds);
    supervisor::spawn(&config.engines, max_message, &engines.members());
    engines.spawn_probes();
    if !engines.wait_all_ready(NODE_START).await {
        tracing::error!(problems = ?engines.problems(), "inference nodes not ready");
    }
    Ok((vad, engines))
}

/// How long a process waits for the registry's nodes to answer before it serves.
const NODE_DISCOVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How long the server waits for its nodes before it starts listening anyway.
const NODE_START: std::time::Duration = std::time::Duration::from_secs(180);

/// The configured JWT secret, or one generated once into `<data_dir>/jwt_secret` (0600).
fn jwt_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &config.auth.jwt_secret {
        return Ok(secret.expose().as_bytes().to_vec());
    }
    let path = config.data_dir.join("jwt_secret");
    let secret = generated_secret_file(&path)?;
    anyhow::ensure!(
        secret.len() >= 32,
        "{} is shorter than 32 bytes",
        path.display()
    );
    Ok(secret)
}

/// The vault of stored secrets: `secrets.key`, or (SQLite only) one generated once into
/// `<data_dir>/secrets_key` (0600). Losing that file loses the upstream API keys and
/// webhook secrets sealed with it. On PostgreSQL several processes share the rows, so
/// each must be given the same key: a generated one would differ per process.
fn vault(config: &Config) -> anyhow::Result<crate::vault::Vault> {
    let key = match config.secrets.key {
        Some(key) => key,
        None if matches!(
            config.database,
            crate::config::DatabaseConfig::Postgres { .. }
        ) =>
        {
            anyhow::bail!(
                "secrets.key (SCAIGRID_SECRETS_KEY): required with PostgreSQL, the same on \
                 every process (it seals upstream API keys and webhook secrets; \
                 `openssl rand -hex 32`)"
            )
        }
        None => {
            let path = config.data_dir.join("secrets_key");
            let text = generated_secret_file(&path)?;
            crate::vault::parse_key(&String::from_utf8_lossy(&text))
                .map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))?
        }
    };
    Ok(crate::vault::Vault::new(
        &key,
        &config.secrets.previous_keys,
    ))
}

/// The contents of a secret file in the data folder, created (0600, 32 random bytes in
/// hex) if it does not exist yet. Written beside and linked into place, so processes
/// starting together on one data folder all end up with the same, whole file.
fn generated_secret_file(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(existing) = std::fs::read(path) {
        return Ok(existing);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let secret = hex::encode(rand::random::<[u8; 32]>()).into_bytes();
    let draft = path.with_extension(format!("new-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&draft)
        .and_then(|mut file| file.write_all(&secret).and_then(|()| file.sync_all()))
        .with_context(|| format!("creating {}", draft.display()));
    let linked = written.and_then(|()| {
        std::fs::hard_link(&draft, path).or_else(|error| match error.kind() {
            std::io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(error).with_context(|| format!("creating {}", path.display())),
        })
    });
    let _ = std::fs::remove_file(&draft);
    linked?;
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// An error answer to a request with a body (refused for auth, size or format before the
/// body was read) closes the connection: the unread rest of the body would otherwise be
/// taken for the next request, and clients reusing the connection would fail.
async fn close_after_refused_body(request: Request, next: Next) -> Response {
    use axum::http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
    let headers = request.headers();
    let has_body = headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|length| length > 0);
    let mut response = next.run(request).await;
    if has_body && (response.status().is_client_error() || response.status().is_server_error()) {
        response
            .headers_mut()
            .insert(CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    response
}

/// Turns a panic inside a handler into an `INTERNAL_ERROR` response for that request
/// only; the server and every other request carry on.
async fn catch_panic(request: Request, next: Next) -> Response {
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            ApiError::internal(format_args!("handler panicked: {detail}")).into_response()
        }
    }
}

async fn route_not_found() -> ApiError {
    ApiError::new(ErrorCode::NOT_FOUND, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

/// The whole HTTP surface with its middleware stack.
pub fn router(state: Arc<AppState>) -> Router {
    let (routes, openapi) = http::routes().split_for_parts();
    let _ = state
        .openapi
        .set(openapi.to_json().unwrap_or_else(|_| "{}".to_owned()));
    routes
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(
            state.config.limits.max_json_body_bytes,
        ))
        .layer(middleware::from_fn_with_state(
            state.gate.clone(),
            crate::ratelimit::gate::middleware,
        ))
        .layer(middleware::from_fn(catch_panic))
        .layer(middleware::from_fn_with_state(
            (
                state.config.http.body_idle_timeout,
                state.config.http.body_timeout,
            ),
            crate::server::body::middleware,
        ))
        .layer(middleware::from_fn(close_after_refused_body))
        .layer(middleware::from_fn_with_state(
            std::sync::Arc::new(state.config.http.cors.clone()),
            crate::server::cors::middleware,
        ))
        .layer(middleware::from_fn(telemetry::middleware))
        .layer(middleware::from_fn(request_id::middleware))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    async fn boom() -> &'static str {
        panic!("handler bug")
    }

    fn guarded() -> Router {
        Router::new()
            .route("/boom", get(boom))
            .route("/ok", get(|| async { "fine" }))
            .layer(middleware::from_fn(catch_panic))
            .layer(middleware::from_fn(close_after_refused_body))
            .layer(middleware::from_fn(request_id::middleware))
    }

    #[tokio::test]
    async fn a_panicking_handler_fails_only_its_request() {
        let app = guarded();
        let response = app
            .clone()
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let id = response.headers()[request_id::SCAIGRID_HEADER]
            .to_str()
            .unwrap()
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "INTERNAL_ERROR");
        assert_eq!(body["error"]["request_id"], id.as_str());
        assert!(
            !body.to_string().contains("handler bug"),
            "panic detail leaked: {body}"
        );

        let response = app
            .oneshot(Request::get("/ok").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
