//! Request ids: every response carries `X-Scaigrid-Request-Id` and `X-Request-Id`, an
//! incoming `X-Request-Id` is honoured, and every log line of the request carries it.
//!
//! The id lives in a task-local for the duration of the request so that error envelopes
//! built deep inside a handler (or by an extractor's rejection) can include it without
//! threading it through every function.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const SCAIGRID_HEADER: HeaderName = HeaderName::from_static("x-scaigrid-request-id");
pub const GENERIC_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id we honour; longer or odd ones are replaced.
const MAX_INCOMING_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: String;
}

/// The request id of the request being served on this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Runs `future` with `id` as the current request id (used by WebSocket tasks and jobs
/// that outlive the HTTP request but still log and answer on its behalf).
pub async fn scope<F: Future>(id: String, future: F) -> F::Output {
    CURRENT.scope(id, future).await
}

/// A fresh id: UUID v7, so ids sort by time in logs.
pub fn generate() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// The client's id if it is printable ASCII of reasonable length.
fn incoming(request: &Request) -> Option<String> {
    let value = request.headers().get(&GENERIC_HEADER)?.to_str().ok()?;
    let usable = !value.is_empty()
        && value.len() <= MAX_INCOMING_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    usable.then(|| value.to_owned())
}

/// Middleware: assigns the id, opens the request's tracing span, sets the headers.
pub async fn middleware(request: Request, next: Next) -> Response {
    let id = incoming(&request).unwrap_or_else(generate);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        subject = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    crate::trace_context::kind(&span, "server");
    let carried = crate::trace_context::adopt(&span, request.headers());
    let served = CURRENT.scope(id.clone(), next.run(request));
    let mut response = crate::trace_context::carry(carried, served)
        .instrument(span)
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(SCAIGRID_HEADER, value.clone());
        response.headers_mut().insert(GENERIC_HEADER, value);
    }
    response
}
