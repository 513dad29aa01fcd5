//! The node process, `scaigrid node`: loads the engines, then serves the node API and
//! the gRPC health service on its address. Started by a server (`--supervised`) it
//! also watches its stdin, the write end of which only the server holds: when the
//! server dies, even by SIGKILL, the pipe closes and the node exits (no orphans).

use std::io::Read;
use std::sync::Arc;

use anyhow::Context;
use tokio_stream::wrappers::UnixListenerStream;

use super::Address;
use super::proto::node_server::NodeServer;
use super::service::NodeService;
use super::token::Guard;
use crate::config::{EnginesConfig, RedisConfig};

/// What a node loads and where it listens.
pub struct NodeOptions {
    pub address: Address,
    pub engines: EnginesConfig,
    /// Largest request (see [`super::max_message_bytes`]).
    pub max_message_bytes: usize,
    /// Exit when stdin closes (the supervising server is gone).
    pub supervised: bool,
    /// The scaled deployment's registry, where the node announces itself, and the
    /// address the edges reach it at (`None`: the listening address).
    pub registry: Option<(RedisConfig, Option<Address>)>,
}

/// Serves until `shutdown` resolves.
pub async fn run(
    options: NodeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    if options.supervised {
        std::thread::Builder::new()
            .name("parent-watch".into())
            .spawn(|| {
                let mut sink = [0u8; 64];
                // EOF (or an error) means the server that holds the other end is gone.
                while let Ok(1..) = std::io::stdin().read(&mut sink) {}
                std::process::exit(0);
            })
            .context("starting the parent watch")?;
    }
    let token = options.engines.node_token.as_ref();
    if token.is_none() && !options.address.is_local() {
        anyhow::bail!(
            "{} is reachable from other machines: set engines.node_token \
             (SCAIGRID_NODE_TOKEN, the same on the edges; `openssl rand -hex 32`)",
            options.address
        );
    }
    let node = Arc::new(load(&options.engines, false).await?);
    let service = Arc::new(NodeService::start(
        node,
        options.engines.stt_queue,
        options.engines.labels.clone(),
    )?);
    let server = NodeServer::from_arc(service.clone())
        .max_decoding_message_size(options.max_message_bytes)
        .max_encoding_message_size(usize::MAX);
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<NodeServer<NodeService>>().await;
    let router = tonic::transport::Server::builder()
        .trace_fn(call_span)
        .layer(tonic::service::InterceptorLayer::new(Guard::new(token)))
        .add_service(health)
        .add_service(server);
    match &options.address {
        Address::Unix(path) => {
            // A socket left by a node that died is in the way of its successor.
            let _ = std::fs::remove_file(path);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let listener = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("binding {}", path.display()))?;
            tracing::info!(address = %options.address, "node listening");
            announce(&options, &options.address, &service)?;
            router
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
                .await?;
        }
        Address::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            let bound = listener.local_addr()?;
            tracing::info!(address = %bound, "node listening");
            let reachable = match bound.ip().is_unspecified() {
                true => None,
                false => Some(Address::Tcp(bound.to_string())),
            };
            announce(
                &options,
                reachable.as_ref().unwrap_or(&options.address),
                &service,
            )?;
            // Without TCP_NODELAY a reply's headers, body and trailers wait on the
            // peer's delayed ACK: a small call over loopback took 6.5 ms instead of
            // 0.8 ms (`benches/routing.rs`).
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?;
        }
    }
    Ok(())
}

/// Announces the node in the scaled deployment's registry every heartbeat (its info
/// and the address edges reach it at), so every edge routes to it. A supervised node
/// is its server's alone: that server announces it.
fn announce(
    options: &NodeOptions,
    listening: &Address,
    service: &Arc<NodeService>,
) -> anyhow::Result<()> {
    let Some((redis, advertise)) = options.registry.as_ref().filter(|_| !options.supervised) else {
        return Ok(());
    };
    let address = advertise.clone().unwrap_or_else(|| listening.clone());
    if let Address::Tcp(text) = &address
        && text
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_unspecified())
    {
        anyhow::bail!(
            "listening on {address}: give --advertise host:port, the address edges reach \
             this node at"
        );
    }
    let cluster = Arc::new(crate::cluster::Cluster::open(redis)?);
    let (id, service) = (options.engines.node_id.clone(), service.clone());
    tracing::info!(node = %id, %address, "announcing the node in the registry");
    crate::cluster::nodes::spawn_heartbeat(cluster, id, move || {
        let mut view = super::member::info_view(&service.info());
        view.insert("address".into(), address.to_string().into());
        view.insert("shared".into(), true.into());
        view.insert("supervised".into(), false.into());
        serde_json::Value::Object(view)
    });
    Ok(())
}

/// Loads the engines on a blocking thread (`vad_only`: the edge's own voice activity
/// detector, for stream segmentation and preflight). Failures are kept in the node's
/// info (readiness and `/v1/infra/nodes` report them) rather than stopping the process.
pub async fn load(config: &EnginesConfig, vad_only: bool) -> anyhow::Result<engines::node::Node> {
    let node_config = engines::node::NodeConfig {
        node_id: config.node_id.clone(),
        models_dir: config.models_dir.clone(),
        device: config.device,
        intra_threads: config.intra_threads,
        models: match vad_only {
            true => vec![engines::silero::ENGINE_ID.to_owned()],
            false => config.boot_models(),
        },
        memory_limit_mb: config.memory_limit_mb,
        phonemizer: phonemizer_command()?,
    };
    let node = tokio::task::spawn_blocking(move || engines::node::Node::load(&node_config)).await?;
    let info = node.info();
    for failure in &info.failures {
        tracing::warn!(engine = %failure.engine, error = %failure.error, "engine not loaded");
    }
    tracing::info!(status = info.status, models = ?info.models_loaded, vad_only, "engines loaded");
    Ok(node)
}

/// This executable's hidden `phonemizer` subcommand: espeak-ng runs there, so a fault
/// in it ends that child, not the node.
pub fn phonemizer_command() -> anyhow::Result<engines::phonemizer::PhonemizerCommand> {
    Ok(engines::phonemizer::PhonemizerCommand {
        program: std::env::current_exe().context("locating this executable")?,
        args: vec!["phonemizer".to_owned()],
    })
}

/// The span of a call this node serves: `node`, a child of the edge's span that made
/// the call (its `traceparent`), with the edge's request id. Probes (health, `Info`)
/// get none: they come every second and carry no request.
fn call_span(request: &axum::http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    if path.starts_with("/grpc.health") || path.ends_with("/Info") {
        return tracing::Span::none();
    }
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "node",
        rpc = path.rsplit('/').next().unwrap_or(path),
        request_id,
        otel.kind = tracing::field::Empty,
    );
    crate::trace_context::kind(&span, "server");
    let _ = crate::trace_context::adopt(&span, request.headers());
    span
}
