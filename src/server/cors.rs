//! Cross-origin access for browser apps on other origins (`[http] cors_allowed_origins`,
//! default none): preflights answered for allowed origins and refused for others,
//! allowed origins' responses readable (`Access-Control-Allow-Origin` and the headers a
//! client needs exposed), and WebSocket handshakes from a foreign origin refused (a
//! browser sends a page's cookies and no preflight with them; the Origin check is what
//! stops another site's page from opening a stream as its visitor).
//!
//! Same-origin requests (the console, the WebRTC page: `Origin` names the `Host` asked)
//! and requests without `Origin` (programs) are never affected. No credentials are
//! allowed cross-origin: bearer tokens go in `Authorization`, and the console's cookies
//! are `SameSite=Strict`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorCode};
use crate::net::origins::{Decision, Origins};

const METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
const ALLOWED_HEADERS: &str = "authorization, content-type, cache-control, x-request-id, \
     idempotency-key, traceparent, tracestate";
const EXPOSED_HEADERS: &str = "x-request-id, x-scaigrid-cache, x-scaigrid-node, \
     x-next-after, link, retry-after, content-disposition";

fn allow_origin(response: &mut Response, origin: &str) {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

pub async fn middleware(
    State(origins): State<Arc<Origins>>,
    request: Request,
    next: Next,
) -> Response {
    match origins.decide(request.method(), request.headers()) {
        Decision::Untouched | Decision::Unexposed => next.run(request).await,
        Decision::Refuse(origin) => {
            metrics::counter!("scaigrid_cors_refused_total").increment(1);
            ApiError::new(
                ErrorCode::ORIGIN_NOT_ALLOWED,
                format!("origin `{origin}` is not in http.cors_allowed_origins"),
            )
            .into_response()
        }
        Decision::Preflight(origin) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            allow_origin(&mut response, &origin);
            let headers = response.headers_mut();
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(METHODS),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOWED_HEADERS),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            response
        }
        Decision::Expose(origin) => {
            let mut response = next.run(request).await;
            allow_origin(&mut response, &origin);
            response.headers_mut().insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSED_HEADERS),
            );
            response
        }
    }
}
