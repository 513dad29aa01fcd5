//! Rate limits per API key and per tenant: requests, tokens and audio seconds per minute
//! (SPEC "Rate limits").
//!
//! Requests are taken when a limited route is entered (the [`gate::middleware`]); tokens and
//! audio seconds are only known after the work, so they are *charged* afterwards and the
//! next request is refused while a bucket is in debt. Each level (the key's own limits,
//! the tenant's) is checked; the tightest answer goes into the headers
//! `X-Scaigrid-Ratelimit-{Limit,Remaining,Reset,Scope}` and `X-RateLimit-*`, and a
//! refusal is 429 `RATE_LIMITED` with `Retry-After`.
//!
//! The counters live behind [`LimitStore`]: [`memory::MemoryStore`] in the embedded
//! default, Redis in scaled deployments.

pub mod gate;
pub mod gcra;
pub mod memory;

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::auth::Principal;
use crate::error::{ApiError, ErrorCode};
use crate::records::RateLimitSpec;
pub use gate::Gate;
pub use gcra::Decision;

/// Where the counters live. Keys are opaque strings; limits are per minute.
#[async_trait::async_trait]
pub trait LimitStore: Send + Sync {
    /// Takes `cost` units if they fit.
    async fn take(&self, key: &str, limit: u64, cost: f64) -> Result<Decision, ApiError>;
    /// Whether a unit is left, taking nothing.
    async fn peek(&self, key: &str, limit: u64) -> Result<Decision, ApiError>;
    /// Takes `cost` units whether they fit or not.
    async fn charge(&self, key: &str, limit: u64, cost: f64) -> Result<(), ApiError>;
}

/// What is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Requests,
    Tokens,
    AudioSeconds,
}

impl Dimension {
    fn as_str(self) -> &'static str {
        match self {
            Dimension::Requests => "requests",
            Dimension::Tokens => "tokens",
            Dimension::AudioSeconds => "audio_seconds",
        }
    }

    fn limit(self, spec: &RateLimitSpec) -> Option<u64> {
        match self {
            Dimension::Requests => spec.requests_per_minute,
            Dimension::Tokens => spec.tokens_per_minute,
            Dimension::AudioSeconds => spec.audio_seconds_per_minute,
        }
        .filter(|limit| *limit > 0)
    }
}

/// The answer that goes into the headers: the tightest of the levels checked.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    pub decision: Decision,
    pub scope: &'static str,
    pub dimension: Dimension,
}

impl Admission {
    fn tighter(self, other: Admission) -> Admission {
        let fraction = |a: &Admission| a.decision.remaining as f64 / a.decision.limit as f64;
        match (other.decision.allowed, self.decision.allowed) {
            (false, true) => other,
            (true, false) => self,
            _ if fraction(&other) < fraction(&self) => other,
            _ => self,
        }
    }

    /// Writes the rate-limit headers.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let d = &self.decision;
        let reset_at = (crate::db::now_ms() as f64 / 1000.0 + d.reset_seconds).ceil() as u64;
        let pairs: [(&str, String); 7] = [
            ("x-scaigrid-ratelimit-limit", d.limit.to_string()),
            ("x-scaigrid-ratelimit-remaining", d.remaining.to_string()),
            ("x-scaigrid-ratelimit-reset", reset_at.to_string()),
            (
                "x-scaigrid-ratelimit-scope",
                format!("{}:{}", self.scope, self.dimension.as_str()),
            ),
            ("x-ratelimit-limit", d.limit.to_string()),
            ("x-ratelimit-remaining", d.remaining.to_string()),
            ("x-ratelimit-reset", reset_at.to_string()),
        ];
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
    }

    fn refusal(&self) -> ApiError {
        let retry = self.decision.retry_after_seconds.ceil().max(1.0) as u64;
        let mut error = ApiError::new(
            ErrorCode::RATE_LIMITED,
            format!(
                "{} rate limit of {} {} per minute reached; retry in {retry} s",
                self.scope,
                self.decision.limit,
                self.dimension.as_str()
            ),
        )
        .with_field("limit", self.decision.limit)
        .with_field("scope", self.scope)
        .with_field("dimension", self.dimension.as_str())
        .with_header(header::RETRY_AFTER, HeaderValue::from(retry));
        let mut headers = HeaderMap::new();
        self.write_headers(&mut headers);
        for (name, value) in headers {
            if let Some(name) = name {
                error = error.with_header(name, value);
            }
        }
        error
    }
}

pub struct Limits {
    store: Arc<dyn LimitStore>,
}

impl Limits {
    pub fn new(store: Arc<dyn LimitStore>) -> Self {
        Limits { store }
    }

    /// The levels that limit a principal: its key's own limits and its tenant's.
    fn levels(
        principal: &Principal,
    ) -> impl Iterator<Item = (&'static str, String, &RateLimitSpec)> {
        let key = principal
            .rate_limit
            .as_ref()
            .and_then(|spec| match principal.subject {
                crate::auth::Subject::ApiKey { ref id, .. } => {
                    Some(("api_key", format!("k:{id}"), spec))
                }
                crate::auth::Subject::User { .. } => None,
            });
        let tenant = principal
            .tenant_rate_limit
            .as_ref()
            .map(|spec| ("tenant", format!("t:{}", principal.tenant_id), spec));
        key.into_iter().chain(tenant)
    }

    /// Takes one request and checks that the other `dimensions` are not in debt, at
    /// every level. `Ok(None)`: nothing limits this principal.
    pub async fn admit(
        &self,
        principal: &Principal,
        dimensions: &[Dimension],
    ) -> Result<Option<Admission>, ApiError> {
        let mut tightest: Option<Admission> = None;
        for (scope, id, spec) in Self::levels(principal) {
            for &dimension in std::iter::once(&Dimension::Requests).chain(dimensions) {
                let Some(limit) = dimension.limit(spec) else {
                    continue;
                };
                let key = format!("{id}:{}", dimension.as_str());
                let decision = match dimension {
                    Dimension::Requests => self.store.take(&key, limit, 1.0).await?,
                    _ => self.store.peek(&key, limit).await?,
                };
                let admission = Admission {
                    decision,
                    scope,
                    dimension,
                };
                if !decision.allowed {
                    return Err(admission.refusal());
                }
                tightest = Some(match tightest {
                    Some(current) => current.tighter(admission),
                    None => admission,
                });
            }
        }
        Ok(tightest)
    }

    /// Refuses with 429 when `dimension` is in debt at any level, taking nothing: a
    /// running stream's next stretch.
    pub async fn check(&self, principal: &Principal, dimension: Dimension) -> Result<(), ApiError> {
        for (scope, id, spec) in Self::levels(principal) {
            let Some(limit) = dimension.limit(spec) else {
                continue;
            };
            let key = format!("{id}:{}", dimension.as_str());
            let decision = self.store.peek(&key, limit).await?;
            if !decision.allowed {
                let admission = Admission {
                    decision,
                    scope,
                    dimension,
                };
                return Err(admission.refusal());
            }
        }
        Ok(())
    }

    /// Takes one request from a named counter (`limit` per minute), or refuses with 429.
    pub async fn take_named(
        &self,
        key: &str,
        scope: &'static str,
        limit: u64,
    ) -> Result<(), ApiError> {
        let decision = self.store.take(key, limit, 1.0).await?;
        Self::named_answer(decision, scope)
    }

    /// Refuses with 429 when a named counter has nothing left, taking nothing.
    pub async fn peek_named(
        &self,
        key: &str,
        scope: &'static str,
        limit: u64,
    ) -> Result<(), ApiError> {
        let decision = self.store.peek(key, limit).await?;
        Self::named_answer(decision, scope)
    }

    /// Takes one from a named counter whether it fits or not.
    pub async fn charge_named(&self, key: &str, limit: u64) {
        if let Err(error) = self.store.charge(key, limit, 1.0).await {
            tracing::warn!(key, error = %error.message, "rate-limit charge lost");
        }
    }

    fn named_answer(decision: Decision, scope: &'static str) -> Result<(), ApiError> {
        match decision.allowed {
            true => Ok(()),
            false => Err(Admission {
                decision,
                scope,
                dimension: Dimension::Requests,
            }
            .refusal()),
        }
    }

    /// Charges tokens or audio seconds used by a finished request.
    pub async fn charge(&self, principal: &Principal, dimension: Dimension, amount: f64) {
        if amount <= 0.0 {
            return;
        }
        for (_, id, spec) in Self::levels(principal) {
            if let Some(limit) = dimension.limit(spec) {
                let key = format!("{id}:{}", dimension.as_str());
                if let Err(error) = self.store.charge(&key, limit, amount).await {
                    tracing::warn!(key, error = %error.message, "rate-limit charge lost");
                }
            }
        }
    }
}

/// The routes a rate limit applies to, with the quantities they consume besides
/// requests. WebSocket routes check their limits themselves (they answer with close
/// code 4429, not an HTTP status): a `GET` is never limited here, as every limited
/// route is a `POST` and a `GET` on one (`/v1/listen`) is its WebSocket.
pub(crate) fn limited(method: &axum::http::Method, route: &str) -> Option<&'static [Dimension]> {
    if *method != axum::http::Method::POST {
        return None;
    }
    match route {
        "/v1/chat/completions" | "/v1/embeddings" => Some(&[Dimension::Tokens]),
        "/v1/modules/scaiecho/transcribe"
        | "/v1/audio/transcriptions"
        | "/v1/listen"
        | "/v1/modules/scaispeak/speak"
        | "/v1/audio/speech" => Some(&[Dimension::AudioSeconds]),
        _ => None,
    }
}

/// Set on a response by a speech handler: the audio seconds it heard or spoke, charged
/// to the audio rate limits after the response is built.
#[derive(Debug, Clone, Copy)]
pub struct Consumed {
    pub audio_seconds: f64,
}
