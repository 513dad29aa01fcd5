//! `POST /v1/chat/completions`: OpenAI-compatible, routed across a model's backends.
//!
//! Order of work: permission, body shape, model (`MODEL_NOT_FOUND`,
//! `MODEL_ACCESS_DENIED`), budget reservation (`BUDGET_EXCEEDED`), then the backends in
//! routing order. A backend that fails before anything reached the client (refused,
//! timed out, 5xx, 429, bad credential, a stream that died before its first byte) is
//! reported to its breaker and the next one is tried; a client error from upstream
//! (400, 404, 422) is the caller's and is returned as `INVALID_REQUEST`. No backend
//! left to try: `MODEL_UNAVAILABLE` (all open or unhealthy) or `BACKEND_ERROR`.
//!
//! Streams are passed through event by event (the `model` field rewritten to the slug);
//! a failure after the first byte is sent as an `event: error` with `BACKEND_ERROR`, and
//! a stream is cut at `DISPATCH_STREAM_TIMEOUT_S`. Usage comes from upstream `usage`,
//! or is counted (about four characters per token) when upstream omits it; it is
//! recorded, charged to the token rate limits and settled against the budgets even when
//! the client goes away mid-stream.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use serde_json::{Map, Value};
use tracing::Instrument;

mod stream;

use stream::{Upstream, open_stream, stream_reply};

use super::Gateway;
use super::catalog::{BackendSpec, ModelSpec};
use super::{Admitted, Outcome, cache, routing, sse, upstream_error_text};
use crate::accounting::{Reservation, UsageRecord};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::firewall::Stage;
use crate::ratelimit::Dimension;
use crate::rbac::Permission;

/// How a chat call ended, for the HTTP layer to render.
pub enum Reply {
    /// A complete answer: the OpenAI body with `model` rewritten to the slug.
    Answered {
        body: Map<String, Value>,
        backend_id: String,
        /// The model's slug (for the per-model latency).
        model: String,
        /// `hit`, `semantic-hit` or `miss` when the model's answers are cached.
        cache: Option<&'static str>,
    },
    /// An answer streaming in: SSE bytes as they are ready (the call settles itself
    /// however the stream ends, the client going away included).
    Streaming {
        events: tokio::sync::mpsc::Receiver<Bytes>,
        backend_id: String,
        model: String,
        cache: Option<&'static str>,
    },
}

/// Upstream non-streaming bodies larger than this are refused as a backend error.
const MAX_UPSTREAM_BODY: usize = 32 << 20;

/// The parts of a chat request the gateway reads; the rest passes through untouched.
struct ChatRequest {
    body: Map<String, Value>,
    slug: String,
    stream: bool,
    prompt_tokens: u64,
    max_tokens: Option<u64>,
    /// The answer may come from (and go to) the cache: not opted out by `"cache":
    /// false` or `Cache-Control: no-cache`, and one choice asked for.
    cacheable: bool,
    /// `stream_options.include_usage` (a replayed stream ends with the usage too).
    include_usage: bool,
}

/// About four characters per token: the estimate used when upstream reports no usage.
pub fn estimate_tokens(characters: usize) -> u64 {
    characters.div_ceil(4) as u64
}

fn text_length(value: &Value) -> usize {
    match value {
        Value::String(text) => text.chars().count(),
        Value::Array(parts) => parts.iter().map(text_length).sum(),
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "text" | "content" | "arguments" | "name"))
            .map(|(_, v)| text_length(v))
            .sum(),
        _ => 0,
    }
}

fn parse(bytes: &[u8]) -> ApiResult<ChatRequest> {
    let mut body: Map<String, Value> = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("the body is not a JSON object: {e}")))?;
    let slug = match body.get("model") {
        Some(Value::String(slug)) if !slug.is_empty() => slug.clone(),
        _ => return Err(ApiError::invalid("`model` (a model slug) is required")),
    };
    let messages = match body.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        _ => return Err(ApiError::invalid("`messages` must be a non-empty array")),
    };
    if let Some(bad) = messages.iter().position(|m| !m.is_object()) {
        return Err(ApiError::invalid(format!(
            "`messages[{bad}]` is not an object"
        )));
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => *stream,
        Some(_) => return Err(ApiError::invalid("`stream` must be true or false")),
    };
    let max_tokens = match body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
    {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64() {
            Some(n) if n > 0 => Some(n),
            _ => return Err(ApiError::invalid("`max_tokens` must be a positive integer")),
        },
    };
    let characters: usize = messages.iter().map(text_length).sum();
    let prompt_tokens = estimate_tokens(characters) + 4 * messages.len() as u64;
    // Ours, not upstream's: taken off before the request goes on.
    let cache = match body.remove(cache::OPT_OUT_FIELD) {
        None | Some(Value::Null) => true,
        Some(Value::Bool(cache)) => cache,
        Some(_) => return Err(ApiError::invalid("`cache` must be true or false")),
    };
    let one_choice = body.get("n").and_then(Value::as_u64).unwrap_or(1) == 1;
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(ChatRequest {
        body,
        slug,
        stream,
        prompt_tokens,
        max_tokens,
        cacheable: cache && one_choice,
        include_usage,
    })
}

/// The text parts of a chat message (`content` as a string, or its `text` parts).
fn message_texts(message: &mut Value) -> Vec<&mut String> {
    match message.get_mut("content") {
        Some(Value::String(text)) => vec![text],
        Some(Value::Array(parts)) => parts
            .iter_mut()
            .filter_map(|part| match part.get_mut("text") {
                Some(Value::String(text)) => Some(text),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The firewall over the request's messages (redactions written back into them).
async fn guard_input(
    gateway: &Gateway,
    principal: &Principal,
    slug: &str,
    body: &mut Map<String, Value>,
) -> ApiResult<()> {
    let Some(Value::Array(messages)) = body.get_mut("messages") else {
        return Ok(());
    };
    let mut texts: Vec<&mut String> = messages.iter_mut().flat_map(message_texts).collect();
    gateway
        .firewall
        .guard(principal, Some(slug), Stage::ChatInput, &mut texts)
        .await
        .map(drop)
}

/// The firewall over a complete answer's choices.
async fn guard_output(
    gateway: &Gateway,
    principal: &Principal,
    slug: &str,
    body: &mut Map<String, Value>,
) -> ApiResult<()> {
    let Some(Value::Array(choices)) = body.get_mut("choices") else {
        return Ok(());
    };
    let mut texts: Vec<&mut String> = choices
        .iter_mut()
        .filter_map(|choice| choice.get_mut("message"))
        .flat_map(message_texts)
        .collect();
    gateway
        .firewall
        .guard(principal, Some(slug), Stage::ChatOutput, &mut texts)
        .await
        .map(drop)
}

/// Why one backend did not answer.
enum Attempt {
    /// Try the next backend.
    Failed(String),
    /// Upstream refused the request itself: the caller's error, no fallback.
    Refused(ApiError),
    /// A complete answer and its usage.
    Answered(Map<String, Value>, CallUsage),
    /// An upstream stream whose first bytes have arrived.
    Streaming(reqwest::Response, Bytes),
}

/// Everything a finished call needs to account for itself.
struct Settlement {
    /// The usage record's module: `chat`, or `firewall` for a judge's call.
    module: &'static str,
    gateway: Arc<Gateway>,
    principal: Arc<Principal>,
    model: Arc<ModelSpec>,
    backend_id: String,
    request_id: Option<String>,
    prompt_estimate: u64,
    reservation: Option<Reservation>,
}

impl Settlement {
    /// Records usage (upstream's, else the estimates), charges the token limits and
    /// settles the budget reservation.
    async fn settle(mut self, usage: Option<(u64, u64)>, completion_chars: usize) {
        let (input, output) =
            usage.unwrap_or((self.prompt_estimate, estimate_tokens(completion_chars)));
        let mut record = UsageRecord::of(&self.principal, self.module);
        record.model = Some(self.model.slug.clone());
        record.backend_id = Some(self.backend_id.clone());
        record.input_tokens = input;
        record.output_tokens = output;
        record.cost = self.model.pricing.cost(input, output);
        record.request_id = self.request_id.clone();
        self.gateway
            .limits
            .charge(&self.principal, Dimension::Tokens, (input + output) as f64)
            .await;
        match self.reservation.take() {
            Some(reservation) => reservation.settle(record),
            None => self.gateway.accounting.record(record),
        }
    }
}

fn usage_of(value: &Map<String, Value>) -> Option<(u64, u64)> {
    let usage = value.get("usage")?;
    Some((
        usage.get("prompt_tokens")?.as_u64()?,
        usage.get("completion_tokens")?.as_u64()?,
    ))
}

/// The error message of an upstream error body, if it has one.
fn upstream_message(bytes: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    let error = value.get("error")?;
    error
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| error.as_str())
        .map(|m| m.chars().take(500).collect())
}

async fn read_capped(
    response: &mut reqwest::Response,
    deadline: Instant,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, response.chunk()).await {
            Err(_) => return Err("upstream timed out".to_owned()),
            Ok(Err(error)) => return Err(upstream_error_text(&error)),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(chunk))) => {
                if body.len() + chunk.len() > MAX_UPSTREAM_BODY {
                    return Err("upstream body too large".to_owned());
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}

/// 413 `CTX_TOO_LARGE` with the `limit` when the prompt (estimated) and the completion
/// asked for exceed the model's context size, before any upstream is called.
fn fits_context(model: &ModelSpec, request: &ChatRequest) -> ApiResult<()> {
    let Some(limit) = model.context_length else {
        return Ok(());
    };
    let needed = request.prompt_tokens + request.max_tokens.unwrap_or(0);
    if needed <= limit {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::CTX_TOO_LARGE,
        format!(
            "about {} prompt tokens and {} completion tokens exceed the context of `{}` \
             ({limit} tokens); shorten the conversation or ask for fewer tokens",
            request.prompt_tokens,
            request.max_tokens.unwrap_or(0),
            model.slug
        ),
    )
    .with_field("limit", limit)
    .with_field("prompt_tokens", request.prompt_tokens))
}

/// Who a chat call is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// A client of `POST /v1/chat/completions`: its permission is checked and the
    /// firewall guards the call.
    Client,
    /// A firewall judge rule asking its evaluator on the tenant's behalf: not guarded
    /// (a judge judging itself would never end), billed under the `firewall` module.
    Judge,
}

/// Handles one chat completion call; `admitted` is held until its answer (or its
/// stream) ends.
/// `no_cache`: the request said `Cache-Control: no-cache` (or `no-store`).
pub async fn complete(
    gateway: Arc<Gateway>,
    principal: Arc<Principal>,
    (bytes, no_cache): (Bytes, bool),
    admitted: Admitted,
) -> ApiResult<Reply> {
    principal.require(Permission::ChatCreate)?;
    let mut request = parse(&bytes)?;
    request.cacheable &= !no_cache;
    run(gateway, principal, request, admitted, Caller::Client).await
}

/// A judge's question to `model`: one user message, a short non-streamed answer; the
/// answer's text.
pub(crate) async fn judge(
    gateway: Arc<Gateway>,
    principal: Arc<Principal>,
    model: &str,
    prompt: String,
) -> ApiResult<String> {
    let admitted = gateway.admit()?;
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 8,
        "temperature": 0,
    });
    let bytes = serde_json::to_vec(&body).map_err(ApiError::internal)?;
    let request = parse(&bytes)?;
    match run(gateway, principal, request, admitted, Caller::Judge).await? {
        Reply::Answered { body, .. } => Ok(body
            .get("choices")
            .and_then(|c| c.get(0))
            .and_then(|c| c.pointer("/message/content"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()),
        Reply::Streaming { .. } => Err(ApiError::internal("a judge's call streamed")),
    }
}

async fn run(
    gateway: Arc<Gateway>,
    principal: Arc<Principal>,
    mut request: ChatRequest,
    admitted: Admitted,
    caller: Caller,
) -> ApiResult<Reply> {
    let (snapshot, model) = async {
        let snapshot = gateway.catalog.snapshot().await?;
        let model = snapshot.resolve(&principal.tenant_id, &request.slug)?;
        ApiResult::Ok((snapshot, model))
    }
    .instrument(tracing::info_span!("route", model = %request.slug))
    .await?;
    let started = Instant::now();
    let guarded = caller == Caller::Client;
    if guarded {
        guard_input(&gateway, &principal, &model.slug, &mut request.body).await?;
    }
    let output_guard = match request.stream && guarded {
        true => {
            let policies = gateway
                .firewall
                .guarding(&principal, Some(&model.slug), Stage::ChatOutput)
                .await?;
            (!policies.is_empty()).then(|| stream::OutputGuard {
                firewall: gateway.firewall.clone(),
                principal: principal.clone(),
                model: model.slug.clone(),
                policies,
            })
        }
        false => None,
    };
    let mut output_guard = output_guard;
    fits_context(&model, &request)?;
    let mut fill = None;
    if let (Caller::Client, Some(policy), true) = (caller, model.cache, request.cacheable) {
        let keys = cache::keys(&principal.tenant_id, &model.slug, &request.body);
        let (found, embedding) = lookup(&gateway, &keys, policy).await;
        if let Some(found) = found {
            return serve_cached(&gateway, &principal, &model, found, &request).await;
        }
        metrics::counter!(CACHE_LOOKUPS, "result" => "miss").increment(1);
        fill = Some(Fill {
            keys,
            embedding,
            ttl: std::time::Duration::from_secs(policy.ttl_seconds),
        });
    }
    let cache_label = fill.as_ref().map(|_| "miss");
    let output_estimate = request
        .max_tokens
        .unwrap_or(gateway.config.default_max_tokens);
    let estimate = model.pricing.cost(request.prompt_tokens, output_estimate);
    let reservation = gateway.accounting.reserve(&principal, estimate).await?;
    let order = routing::order(
        &model.routing.backends,
        |id| snapshot.backends.contains_key(id) && gateway.usable(id),
        rand::random::<f64>,
    );
    let mut reservation = Some(reservation);
    let mut last_failure: Option<String> = None;
    for index in order {
        let route = &model.routing.backends[index];
        let Some(backend) = snapshot.backends.get(&route.backend_id) else {
            continue;
        };
        if !gateway.acquire(&backend.id) {
            continue;
        }
        let mut body = request.body.clone();
        body.insert("model".into(), Value::from(model.upstream_name(route)));
        let settlement = Settlement {
            module: match caller {
                Caller::Client => "chat",
                Caller::Judge => "firewall",
            },
            gateway: gateway.clone(),
            principal: principal.clone(),
            model: model.clone(),
            backend_id: backend.id.clone(),
            request_id: crate::request_id::current(),
            prompt_estimate: request.prompt_tokens,
            reservation: None,
        };
        let attempt_started = Instant::now();
        let attempt = match request.stream {
            false => call(&gateway, backend, &body, &model.slug).await,
            true => open_stream(&gateway, backend, &body).await,
        };
        let took = attempt_started.elapsed();
        match attempt {
            Attempt::Failed(reason) => {
                tracing::warn!(backend_id = %backend.id, %reason, "backend failed; trying the next");
                gateway.report(&backend.id, Outcome::Failure, Some(took));
                last_failure = Some(reason);
            }
            Attempt::Refused(error) => {
                gateway.report(&backend.id, Outcome::Neutral, Some(took));
                gateway.report_model(&model.id, Some(started.elapsed()), false);
                return Err(error);
            }
            Attempt::Answered(mut body, usage) => {
                gateway.report(&backend.id, Outcome::Success, Some(took));
                gateway.report_model(&model.id, Some(started.elapsed()), false);
                let mut settlement = settlement;
                settlement.reservation = reservation.take();
                settlement
                    .settle(usage.tokens, usage.completion_chars)
                    .await;
                // The answer was made (and is billed); the firewall decides whether
                // the caller sees it.
                if guarded {
                    guard_output(&gateway, &principal, &model.slug, &mut body).await?;
                }
                if let Some(fill) = fill.take() {
                    let tokens = usage.tokens.unwrap_or((
                        request.prompt_tokens,
                        estimate_tokens(usage.completion_chars),
                    ));
                    fill.put(&gateway, body.clone(), tokens).await;
                }
                return Ok(Reply::Answered {
                    body,
                    backend_id: backend.id.clone(),
                    model: model.slug.clone(),
                    cache: cache_label,
                });
            }
            Attempt::Streaming(upstream, first) => {
                gateway.report_model(&model.id, Some(started.elapsed()), false);
                let mut settlement = settlement;
                settlement.reservation = reservation.take();
                return Ok(stream_reply(
                    gateway.clone(),
                    Upstream {
                        response: upstream,
                        first,
                        backend: backend.clone(),
                        slug: model.slug.clone(),
                        opened: took,
                    },
                    settlement,
                    (admitted, output_guard.take(), fill.take()),
                ));
            }
        }
    }
    gateway.report_model(&model.id, None, true);
    Err(unanswered(&model.slug, last_failure))
}

/// No backend of `slug` answered: `BACKEND_ERROR` with the last failure, or (none
/// could be tried) `MODEL_UNAVAILABLE` with `Retry-After`.
pub(super) fn unanswered(slug: &str, last_failure: Option<String>) -> ApiError {
    match last_failure {
        Some(reason) => ApiError::new(
            ErrorCode::BACKEND_ERROR,
            format!("every backend of `{slug}` failed; last: {reason}"),
        ),
        None => ApiError::new(
            ErrorCode::MODEL_UNAVAILABLE,
            format!("all backends for `{slug}` are circuit-broken or failing health checks"),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("5")),
    }
}

pub const CACHE_LOOKUPS: &str = "scaigrid_gateway_cache_lookups_total";

/// What a cache miss keeps once the answer is made (and passed the firewall).
pub(super) struct Fill {
    keys: cache::Keys,
    embedding: Option<Vec<f32>>,
    ttl: std::time::Duration,
}

impl Fill {
    pub(super) async fn put(self, gateway: &Gateway, body: Map<String, Value>, usage: (u64, u64)) {
        let kept = gateway
            .cache
            .put(&self.keys, self.embedding, (body, usage), self.ttl)
            .await;
        if kept {
            metrics::counter!("scaigrid_gateway_cache_stores_total").increment(1);
        }
    }
}

/// The kept answer for `keys`: exact, or (with a threshold and a node that embeds) the
/// closest paraphrase; and the question's embedding, for keeping the answer to come.
async fn lookup(
    gateway: &Gateway,
    keys: &cache::Keys,
    policy: cache::CachePolicy,
) -> (Option<cache::Found>, Option<Vec<f32>>) {
    if let Some(entry) = gateway.cache.exact(keys).await {
        return (Some(cache::Found::Hit(entry)), None);
    }
    let (Some(threshold), Some(question)) = (policy.semantic_threshold, &keys.question) else {
        return (None, None);
    };
    match gateway.embed_texts(vec![question.clone()]).await {
        Some(Ok(mut vectors)) => {
            let embedding = vectors.pop();
            let found = match &embedding {
                Some(e) => gateway.cache.nearest(keys, e, threshold).await,
                None => None,
            };
            (found, embedding)
        }
        Some(Err(error)) => {
            tracing::warn!(error = %error.message, "semantic cache: the question was not embedded");
            (None, None)
        }
        None => (None, None),
    }
}

/// Answers from the cache: the kept answer (checked by today's firewall policies),
/// whole or replayed as a stream, billed at `gateway.cache_hit_cost_fraction` of its
/// price.
async fn serve_cached(
    gateway: &Arc<Gateway>,
    principal: &Principal,
    model: &ModelSpec,
    found: cache::Found,
    request: &ChatRequest,
) -> ApiResult<Reply> {
    let (entry, label) = match found {
        cache::Found::Hit(entry) => (entry, "hit"),
        cache::Found::Semantic(entry, _) => (entry, "semantic-hit"),
    };
    metrics::counter!(CACHE_LOOKUPS, "result" => label).increment(1);
    let mut body = entry.body.clone();
    guard_output(gateway, principal, &model.slug, &mut body).await?;
    let (input, output) = entry.usage;
    let mut record = UsageRecord::of(principal, "chat");
    record.model = Some(model.slug.clone());
    record.backend_id = Some("cache".to_owned());
    record.input_tokens = input;
    record.output_tokens = output;
    record.cost = model.pricing.cost(input, output) * gateway.config.cache_hit_cost_fraction;
    record.request_id = crate::request_id::current();
    gateway.accounting.record(record);
    let (backend_id, slug) = ("cache".to_owned(), model.slug.clone());
    if request.stream {
        let (tx, events) = tokio::sync::mpsc::channel(1);
        let _ = tx.try_send(Bytes::from(cache::replay(&body, request.include_usage)));
        return Ok(Reply::Streaming {
            events,
            backend_id,
            model: slug,
            cache: Some(label),
        });
    }
    Ok(Reply::Answered {
        body,
        backend_id,
        model: slug,
        cache: Some(label),
    })
}

/// Usage of a finished non-streaming call, handed from [`call`] to the settlement.
struct CallUsage {
    tokens: Option<(u64, u64)>,
    completion_chars: usize,
}

/// Classifies an upstream status: `None` when it is a success.
fn classify(status: reqwest::StatusCode, body: &[u8]) -> Option<Unanswered> {
    if status.is_success() {
        return None;
    }
    let message = upstream_message(body).unwrap_or_else(|| format!("upstream answered {status}"));
    Some(match status.as_u16() {
        400 | 404 | 413 | 422 => Unanswered::Refused(
            ApiError::invalid(format!("upstream refused the request: {message}"))
                .with_field("upstream_status", status.as_u16()),
        ),
        _ => Unanswered::Failed(format!("upstream answered {status}: {message}")),
    })
}

/// Why a backend gave no JSON answer.
pub(super) enum Unanswered {
    /// Try the next backend.
    Failed(String),
    /// Upstream refused the request itself: the caller's error, no fallback.
    Refused(ApiError),
}

/// POSTs `body` to the backend's `path` and reads its JSON answer (capped, within the
/// backend's timeout): what chat and embeddings calls share. The `upstream` span.
pub(super) async fn post_json(
    gateway: &Gateway,
    backend: &BackendSpec,
    path: &str,
    body: &Map<String, Value>,
) -> Result<Map<String, Value>, Unanswered> {
    let span = upstream_span(backend, path);
    async {
        let deadline = Instant::now() + backend.timeout;
        let sent = gateway
            .upstream(reqwest::Method::POST, backend, path)
            .json(body)
            .timeout(backend.timeout)
            .send()
            .await;
        let mut response = sent.map_err(|error| Unanswered::Failed(upstream_error_text(&error)))?;
        let status = response.status();
        let bytes = read_capped(&mut response, deadline)
            .await
            .map_err(Unanswered::Failed)?;
        if let Some(attempt) = classify(status, &bytes) {
            return Err(attempt);
        }
        serde_json::from_slice(&bytes).map_err(|_| {
            Unanswered::Failed("upstream answered something that is not JSON".to_owned())
        })
    }
    .instrument(span)
    .await
}

/// The span of a call to a backend (a client span in an exported trace).
fn upstream_span(backend: &BackendSpec, path: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "upstream",
        backend_id = %backend.id,
        path,
        otel.kind = tracing::field::Empty,
    );
    crate::trace_context::kind(&span, "client");
    span
}

async fn call(
    gateway: &Gateway,
    backend: &BackendSpec,
    body: &Map<String, Value>,
    slug: &str,
) -> Attempt {
    let mut value = match post_json(gateway, backend, "/chat/completions", body).await {
        Ok(value) => value,
        Err(Unanswered::Failed(reason)) => return Attempt::Failed(reason),
        Err(Unanswered::Refused(error)) => return Attempt::Refused(error),
    };
    let completion_chars = value
        .get("choices")
        .and_then(Value::as_array)
        .map(|choices| {
            choices
                .iter()
                .filter_map(|c| c.get("message"))
                .map(text_length)
                .sum()
        })
        .unwrap_or(0);
    let usage = usage_of(&value);
    value.insert("model".into(), Value::from(slug));
    value.insert("status".into(), Value::from("ok"));
    Attempt::Answered(
        value,
        CallUsage {
            tokens: usage,
            completion_chars,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_validated_before_any_work() {
        assert!(parse(b"[]").is_err());
        assert!(parse(br#"{"messages":[{"role":"user","content":"hi"}]}"#).is_err());
        assert!(parse(br#"{"model":"a/b","messages":[]}"#).is_err());
        assert!(parse(br#"{"model":"a/b","messages":["hi"]}"#).is_err());
        assert!(parse(br#"{"model":"a/b","messages":[{"content":"x"}],"stream":"yes"}"#).is_err());
        assert!(parse(br#"{"model":"a/b","messages":[{"content":"x"}],"max_tokens":0}"#).is_err());
        let ok = parse(br#"{"model":"a/b","messages":[{"role":"user","content":"12345678"}],"stream":true,"max_tokens":9,"temperature":0.2}"#).unwrap();
        assert!(ok.stream);
        assert_eq!(ok.max_tokens, Some(9));
        assert_eq!(
            ok.prompt_tokens,
            2 + 4,
            "8 characters of content and one message"
        );
        assert_eq!(ok.body["temperature"], 0.2, "unknown fields pass through");
    }
}
