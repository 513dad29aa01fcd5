//! The admission of a caller to limited work: authenticated, within its rate limits,
//! its budget not spent. HTTP routes pass through [`middleware`]; stream transports
//! (WebSocket, WebRTC) call [`Gate::admit_stream`] once before `ready`.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Consumed, Dimension, Limits, limited};
use crate::accounting::Accounting;
use crate::auth::{Authenticator, Principal};
use crate::error::ApiError;

/// The handles admission needs, and nothing else.
#[derive(Clone)]
pub struct Gate {
    pub auth: Arc<Authenticator>,
    pub limits: Arc<Limits>,
    pub accounting: Arc<Accounting>,
}

impl Gate {
    /// Rate limits and budgets for a stream, checked once before `ready` as the HTTP
    /// speech routes check them per request: one request taken, audio seconds not in
    /// debt, budget not spent.
    pub async fn admit_stream(&self, principal: &Principal) -> Result<(), ApiError> {
        self.limits
            .admit(principal, &[Dimension::AudioSeconds])
            .await?;
        self.accounting.reserve(principal, 0.0).await.map(drop)
    }

    /// Audio seconds a stream heard or spoke, charged to the audio rate limits.
    pub async fn charge_audio(&self, principal: &Principal, seconds: f64) {
        self.limits
            .charge(principal, Dimension::AudioSeconds, seconds)
            .await;
    }
}

/// Middleware: on limited routes, admits the caller (or answers 429 `RATE_LIMITED`, or
/// `BUDGET_EXCEEDED` on speech routes whose budget is spent) and puts the headers on
/// whatever the handler answers. Unauthenticated calls pass through: the handler
/// answers them with the right `AUTH_*` code.
pub async fn middleware(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let dimensions = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|path| limited(request.method(), path.as_str()));
    let Some(dimensions) = dimensions else {
        return next.run(request).await;
    };
    let principal = match gate.auth.credential(request.headers()) {
        Ok(token) => gate.auth.authenticate(token).await.ok(),
        Err(_) => None,
    };
    let Some(principal) = principal else {
        return next.run(request).await;
    };
    // The handler's `Auth` takes the principal from here instead of authenticating again.
    request
        .extensions_mut()
        .insert(crate::auth::Authenticated(principal.clone()));
    let admission = match gate.limits.admit(&principal, dimensions).await {
        Err(refusal) => return refusal.into_response(),
        Ok(admission) => admission,
    };
    // Chat reserves its estimated cost itself; speech is refused only once spent.
    if dimensions.contains(&Dimension::AudioSeconds)
        && let Err(refusal) = gate.accounting.reserve(&principal, 0.0).await
    {
        let mut response = refusal.into_response();
        if let Some(admission) = admission {
            admission.write_headers(response.headers_mut());
        }
        return response;
    }
    let mut response = next.run(request).await;
    if let Some(consumed) = response.extensions().get::<Consumed>().copied() {
        gate.charge_audio(&principal, consumed.audio_seconds).await;
    }
    if let Some(admission) = admission {
        admission.write_headers(response.headers_mut());
    }
    response
}
