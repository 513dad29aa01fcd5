//! Requests for a session held by another edge (scaled deployment). A session's peer
//! state (its UDP sockets, the stream task) lives in the edge that created it, and
//! its row names that edge's URL. Any other edge that gets a request for it (a load
//! balancer without affinity, a client that reconnects elsewhere) passes the request
//! on with the caller's own credentials, and the answer back; the owner does every
//! check. A forwarded request carries [`FORWARDED`] and is never forwarded again.
//! An owner that cannot be reached is gone: the session is then lost, and the edge
//! answers as it does for a session whose process restarted.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{self as axum_ws, WebSocket};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

/// Marks a request one edge passed to another.
pub const FORWARDED: &str = "x-scaigrid-forwarded";

/// Connecting to the owner may take this long before it counts as gone.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A forwarded request (an offer is answered in well under a second).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The owner could not be reached: the session is lost.
#[derive(Debug)]
pub struct Unreachable(pub String);

/// The client that forwards requests to other edges.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// Whether this request came from another edge.
pub fn is_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED)
}

/// The headers that go with a forwarded request: the caller's credentials, the
/// body's type, the request id (one id across both edges' logs) and the mark.
fn pass_on(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(value) = headers.get(&name) {
            out.insert(name, value.clone());
        }
    }
    if let Some(id) = crate::request_id::current().and_then(|id| HeaderValue::from_str(&id).ok()) {
        out.insert("x-request-id", id);
    }
    out.insert(FORWARDED, HeaderValue::from_static("1"));
    crate::trace_context::outgoing().apply(&mut out);
    out
}

/// Sends the request to the edge at `edge` (same method, path and query, body) and
/// gives its answer back as it came.
pub async fn http(
    client: &reqwest::Client,
    edge: &str,
    (method, path_and_query): (Method, &str),
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, Unreachable> {
    let url = format!("{edge}{path_and_query}");
    let sent = client
        .request(method, &url)
        .headers(pass_on(headers))
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(error) => return Err(Unreachable(format!("{edge}: {error}"))),
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let body = answer
        .bytes()
        .await
        .map_err(|e| Unreachable(format!("{edge}: {e}")))?;
    let mut response = (status, body).into_response();
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    metrics::counter!("scaigrid_webrtc_forwarded_total", "kind" => "http").increment(1);
    Ok(response)
}

type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the control socket on the owner, with the caller's token.
pub async fn connect(
    edge: &str,
    path_and_query: &str,
    token: Option<&str>,
) -> Result<Upstream, Unreachable> {
    let url = match edge.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}{path_and_query}"),
        None => format!(
            "ws://{}{path_and_query}",
            edge.trim_start_matches("http://")
        ),
    };
    let unreachable = |e: &dyn std::fmt::Display| Unreachable(format!("{edge}: {e}"));
    let mut request = url.into_client_request().map_err(|e| unreachable(&e))?;
    let mut headers = HeaderMap::new();
    if let Some(token) = token
        && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
    {
        headers.insert(header::AUTHORIZATION, value);
    }
    request.headers_mut().extend(pass_on(&headers));
    let connecting = tokio_tungstenite::connect_async(request);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((upstream, _))) => Ok(upstream),
        Ok(Err(error)) => Err(unreachable(&error)),
        Err(_) => Err(unreachable(&"no answer in time")),
    }
}

/// Passes frames both ways between the caller's socket and the owner's until either
/// closes; the owner's close code reaches the caller.
pub async fn pipe(mut socket: WebSocket, mut upstream: Upstream) {
    metrics::counter!("scaigrid_webrtc_forwarded_total", "kind" => "control").increment(1);
    loop {
        tokio::select! {
            from_owner = upstream.next() => {
                let Some(Ok(message)) = from_owner else {
                    let _ = socket.send(axum_ws::Message::Close(None)).await;
                    return;
                };
                let closing = matches!(message, tungstenite::Message::Close(_));
                if let Some(message) = to_caller(message)
                    && socket.send(message).await.is_err()
                {
                    return;
                }
                if closing {
                    return;
                }
            }
            from_caller = socket.recv() => {
                let Some(Ok(message)) = from_caller else {
                    let _ = upstream.close(None).await;
                    return;
                };
                let closing = matches!(message, axum_ws::Message::Close(_));
                if upstream.send(to_owner(message)).await.is_err() || closing {
                    return;
                }
            }
        }
    }
}

fn to_caller(message: tungstenite::Message) -> Option<axum_ws::Message> {
    use tungstenite::Message as T;
    Some(match message {
        T::Text(text) => axum_ws::Message::Text(text.as_str().into()),
        T::Binary(bytes) => axum_ws::Message::Binary(bytes),
        T::Ping(bytes) => axum_ws::Message::Ping(bytes),
        T::Pong(bytes) => axum_ws::Message::Pong(bytes),
        T::Close(frame) => axum_ws::Message::Close(frame.map(|f| axum_ws::CloseFrame {
            code: f.code.into(),
            reason: f.reason.as_str().into(),
        })),
        T::Frame(_) => return None,
    })
}

fn to_owner(message: axum_ws::Message) -> tungstenite::Message {
    use tungstenite::Message as T;
    match message {
        axum_ws::Message::Text(text) => T::Text(text.as_str().into()),
        axum_ws::Message::Binary(bytes) => T::Binary(bytes),
        axum_ws::Message::Ping(bytes) => T::Ping(bytes),
        axum_ws::Message::Pong(bytes) => T::Pong(bytes),
        axum_ws::Message::Close(frame) => {
            T::Close(frame.map(|f| tungstenite::protocol::CloseFrame {
                code: f.code.into(),
                reason: f.reason.as_str().into(),
            }))
        }
    }
}
