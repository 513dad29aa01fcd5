//! Serving: binds, logs `listening on <addr>`, serves until a shutdown signal, then
//! drains in-flight requests (bounded by the configured grace period).

pub mod body;
pub mod client_ip;
pub mod conn;
pub mod cors;
mod fdlimit;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::app::{self, AppState};

/// Serves `state` on an already-bound listener until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let grace = Duration::from_secs(state.config.shutdown_grace_seconds);
    let accounting = state.gate.accounting.clone();
    let http = state.config.http.clone();
    let router = app::router(state);
    let connections = conn::serve(listener, router, &http, shutdown).await;
    tracing::info!("shutdown requested; draining in-flight requests");
    match tokio::time::timeout(grace, connections.shutdown()).await {
        Ok(()) => {}
        Err(_) => tracing::warn!(
            seconds = grace.as_secs(),
            "grace period over; stopping with requests in flight"
        ),
    }
    if let Err(error) = accounting.flush().await {
        tracing::error!(%error, "usage records not written at shutdown");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}

/// `scaigrid serve`: open everything, bind, announce, serve.
pub async fn serve(config: crate::config::Config) -> anyhow::Result<()> {
    let bind = config.bind;
    let mut config = config;
    config.http.max_connections = fdlimit::fit_connections(config.http.max_connections);
    let state = AppState::open(config).await?;
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("binding {bind}: {e}"))?;
    let address = listener.local_addr()?;
    let _ = state.webhooks.bound.set(address);
    state.webrtc.listening_at(state.config.edge_url(address));
    let workers = crate::worker::spawn(&state, state.config.jobs.workers);
    spawn_background(&state, true);
    tracing::info!("listening on {address}");
    let grace = Duration::from_secs(state.config.shutdown_grace_seconds);
    let served = run(listener, state, shutdown_signal()).await;
    workers.stop(grace).await;
    served
}

/// The background work of a process: heap trimming, usage flushing, webhook deliveries,
/// the heartbeat of this process's nodes and the discovery of the registry's (scaled),
/// and for API processes the backends' health probes and
/// the revocation listener.
pub fn spawn_background(state: &Arc<AppState>, api: bool) {
    crate::memory::spawn_trimmer();
    crate::webhooks::dispatch::spawn(&state.webhooks);
    state
        .gate
        .accounting
        .spawn_flusher(state.config.accounting.flush_interval);
    if let Some(engines) = state.nodes.engines() {
        crate::speech::erasure::spawn(state.db.clone(), engines.clone());
    }
    if let (Some(cluster), Some(engines)) = (&state.cluster, state.nodes.engines()) {
        state.nodes.spawn_discovery();
        for member in engines.members().iter().filter(|m| m.supervised) {
            let member = member.clone();
            crate::cluster::nodes::spawn_heartbeat(cluster.clone(), member.id.clone(), move || {
                member.view()
            });
        }
    }
    if api {
        state.instances.spawn_monitor();
        state.gateway.spawn_health_probes();
        if let Some(cluster) = &state.cluster {
            crate::cluster::revocation::spawn_listener(cluster.clone(), state.auth.clone());
        }
    }
}
