//! The accept loop: what one TCP connection may hold, whatever the client does.
//!
//! `axum::serve` has no header timeout, no connection cap and no bound on request heads,
//! so a few thousand clients that open a connection and send a header byte now and then
//! (slowloris) hold a task, a buffer and a file each for as long as they like. Here each
//! connection is served by hyper with a timer: its request head must arrive within
//! `[http] header_timeout_seconds` (which also ends keep-alive connections idle that
//! long), heads are bounded by `max_header_bytes`, and at most `max_connections` are open:
//! one over that is closed as soon as it is accepted, so the server keeps its files for
//! the connections it serves. Bodies are bounded by [`super::body`].

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt;

use crate::config::HttpConfig;

pub const CONNECTIONS: &str = "scaigrid_http_connections";
pub const REFUSED: &str = "scaigrid_http_connections_refused_total";

/// HTTP/2 pings: a peer that stops answering is dropped after the interval plus timeout.
const H2_KEEPALIVE: Duration = Duration::from_secs(20);
const H2_MAX_STREAMS: u32 = 256;

/// hyper's connection settings from the configuration.
fn builder(config: &HttpConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_buf_size(config.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(config.max_header_bytes as u32)
        .keep_alive_interval(H2_KEEPALIVE)
        .keep_alive_timeout(H2_KEEPALIVE);
    builder
}

/// Accepts and serves connections until `shutdown` resolves, then lets the open ones
/// finish (the caller bounds how long with its grace period).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: &HttpConfig,
    shutdown: impl Future<Output = ()>,
) -> GracefulShutdown {
    let builder = builder(config);
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    let mut refused_logged_at: Option<tokio::time::Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of files or similar: wait rather than spin on the error.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!(REFUSED).increment(1);
            if refused_logged_at.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                refused_logged_at = Some(tokio::time::Instant::now());
                tracing::warn!(
                    max = config.max_connections,
                    "connection limit reached; closing new connections ([http] max_connections)"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let started = Arc::new(Notify::new());
        let service = hyper::service::service_fn({
            let router = router.clone();
            let started = started.clone();
            move |mut request: hyper::Request<Incoming>| {
                started.notify_one();
                request.extensions_mut().insert(ConnectInfo(peer));
                let router = router.clone();
                async move {
                    Ok::<_, Infallible>(
                        router
                            .oneshot(request.map(axum::body::Body::new))
                            .await
                            .unwrap_or_else(|never| match never {}),
                    )
                }
            }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let header_timeout = config.header_timeout;
        tokio::spawn(async move {
            let gauge = metrics::gauge!(CONNECTIONS);
            gauge.increment(1.0);
            tokio::pin!(connection);
            // hyper's header timeout starts once it knows the protocol: a client that
            // sends nothing, or the first bytes of the HTTP/2 preface and then nothing,
            // would wait forever for it. The first request's head must come in time.
            let ended = tokio::select! {
                ended = &mut connection => Some(ended),
                () = started.notified() => None,
                () = tokio::time::sleep(header_timeout) => Some(Ok(())),
            };
            let ended = match ended {
                Some(ended) => ended,
                None => connection.await,
            };
            if let Err(error) = ended {
                tracing::debug!(%peer, error = %error, "connection ended with an error");
            }
            gauge.decrement(1.0);
            drop(permit);
        });
    }
    graceful
}
