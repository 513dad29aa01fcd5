//! `POST /v1/embeddings` (OpenAI-compatible): a catalogue model routed to its upstream
//! backends like chat (breakers, fallback, budgets, usage), or the local sentence
//! embedding model served by the inference nodes (`scaigrid/all-minilm-l6-v2`, also
//! called `all-MiniLM-L6-v2` or `sentence-transformers/all-MiniLM-L6-v2`: 384
//! dimensions, L2-normalised, 256 word pieces per input at most, no charge).
//!
//! Order of work: permission, body (`input` a string or up to 2,048 of them; token
//! arrays pass to upstreams only), model, budget reservation, then the backends or the
//! nodes. A tenant's own catalogue model named like the local one wins over it.

use axum::body::Bytes;
use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::chat::{Unanswered, estimate_tokens, post_json};
use super::{Gateway, Outcome, routing};
use crate::accounting::UsageRecord;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ratelimit::Dimension;
use crate::rbac::Permission;

/// The local model's slug, and the names it also answers to.
pub const LOCAL_MODEL: &str = "scaigrid/all-minilm-l6-v2";
const LOCAL_NAMES: &[&str] = &[
    LOCAL_MODEL,
    "all-MiniLM-L6-v2",
    "sentence-transformers/all-MiniLM-L6-v2",
];
/// Inputs one request may carry (OpenAI's limit).
pub const MAX_INPUTS: usize = crate::inference::service::MAX_TEXTS;
/// Characters one input may have (the local model reads its first 256 word pieces;
/// upstreams have their own limits, about 8,192 tokens).
pub const MAX_INPUT_CHARS: usize = 100_000;

/// What the request asks to embed.
#[derive(Debug, Clone, PartialEq)]
enum Input {
    Texts(Vec<String>),
    /// Token ids (one array, or arrays): only an upstream can read them.
    Tokens(usize),
}

#[derive(Debug)]
struct EmbeddingsRequest {
    body: Map<String, Value>,
    slug: String,
    input: Input,
    base64: bool,
    dimensions: Option<u64>,
}

fn parse(bytes: &[u8]) -> ApiResult<EmbeddingsRequest> {
    let body: Map<String, Value> = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("the body is not a JSON object: {e}")))?;
    let slug = match body.get("model") {
        Some(Value::String(slug)) if !slug.is_empty() => slug.clone(),
        _ => return Err(ApiError::invalid("`model` (a model slug) is required")),
    };
    let input = parse_input(body.get("input"))?;
    let base64 = match body.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(format)) if format == "float" => false,
        Some(Value::String(format)) if format == "base64" => true,
        Some(_) => {
            return Err(invalid_field(
                "`encoding_format` is `float` or `base64`",
                "encoding_format",
            ));
        }
    };
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64() {
            Some(n) if n > 0 => Some(n),
            _ => {
                return Err(invalid_field(
                    "`dimensions` must be a positive integer",
                    "dimensions",
                ));
            }
        },
    };
    Ok(EmbeddingsRequest {
        body,
        slug,
        input,
        base64,
        dimensions,
    })
}

/// Reads a request body as the endpoint does, before any model is looked up: how many
/// inputs it holds, or the refusal (for the fuzz target).
pub fn check_request(bytes: &[u8]) -> ApiResult<usize> {
    let request = parse(bytes)?;
    Ok(match request.input {
        Input::Texts(texts) => texts.len(),
        Input::Tokens(count) => count,
    })
}

fn invalid_field(message: &str, field: &str) -> ApiError {
    ApiError::invalid(message).with_field("field", field)
}

fn parse_input(input: Option<&Value>) -> ApiResult<Input> {
    let bad = |message: &str| invalid_field(message, "input");
    let text = |value: &Value| -> ApiResult<String> {
        match value.as_str() {
            Some("") => Err(bad("an `input` string must not be empty")),
            Some(text) if text.chars().count() > MAX_INPUT_CHARS => Err(bad(&format!(
                "an `input` string is at most {MAX_INPUT_CHARS} characters"
            ))),
            Some(text) => Ok(text.to_owned()),
            None => Err(bad("`input` holds strings, or token ids")),
        }
    };
    let tokens = |value: &Value| {
        value
            .as_array()
            .is_some_and(|ids| !ids.is_empty() && ids.iter().all(Value::is_u64))
    };
    match input {
        Some(value @ Value::String(_)) => Ok(Input::Texts(vec![text(value)?])),
        Some(Value::Array(items)) if items.is_empty() || items.len() > MAX_INPUTS => {
            Err(bad(&format!("`input` holds 1 to {MAX_INPUTS} items")))
        }
        Some(value @ Value::Array(items)) => {
            if tokens(value) {
                return Ok(Input::Tokens(1));
            }
            if items.iter().all(tokens) {
                return Ok(Input::Tokens(items.len()));
            }
            Ok(Input::Texts(
                items.iter().map(text).collect::<ApiResult<_>>()?,
            ))
        }
        _ => Err(bad("`input` (a string or an array of strings) is required")),
    }
}

/// The OpenAI list of embeddings for `vectors`, as floats or base64 (little-endian f32).
fn answer(vectors: Vec<Vec<f32>>, base64: bool, slug: &str, tokens: u64) -> Map<String, Value> {
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = match base64 {
                false => json!(vector),
                true => {
                    let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": slug,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    match body {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

impl Gateway {
    /// One `/v1/embeddings` call: the answer body and the backend that made it (`local`
    /// for the nodes).
    pub async fn embeddings(
        &self,
        principal: &Principal,
        bytes: &Bytes,
    ) -> ApiResult<(Map<String, Value>, String)> {
        principal.require(Permission::ChatCreate)?;
        let request = parse(bytes)?;
        let snapshot = self.catalog.snapshot().await?;
        let own = snapshot.find(&principal.tenant_id, &request.slug).is_some();
        if !own && LOCAL_NAMES.contains(&request.slug.as_str()) {
            return self.embed_locally(principal, request).await;
        }
        let model = snapshot.resolve(&principal.tenant_id, &request.slug)?;
        let characters: usize = match &request.input {
            Input::Texts(texts) => texts.iter().map(|t| t.chars().count()).sum(),
            Input::Tokens(_) => 0,
        };
        let estimate = model.pricing.cost(estimate_tokens(characters), 0);
        let reservation = self.accounting.reserve(principal, estimate).await?;
        let order = routing::order(
            &model.routing.backends,
            |id| snapshot.backends.contains_key(id) && self.usable(id),
            rand::random::<f64>,
        );
        let mut last_failure: Option<String> = None;
        for index in order {
            let route = &model.routing.backends[index];
            let Some(backend) = snapshot.backends.get(&route.backend_id) else {
                continue;
            };
            if !self.acquire(&backend.id) {
                continue;
            }
            let mut body = request.body.clone();
            body.insert("model".into(), Value::from(model.upstream_name(route)));
            let started = std::time::Instant::now();
            let answered = post_json(self, backend, "/embeddings", &body).await;
            let took = Some(started.elapsed());
            match answered {
                Err(Unanswered::Failed(reason)) => {
                    tracing::warn!(backend_id = %backend.id, %reason, "backend failed; trying the next");
                    self.report(&backend.id, Outcome::Failure, took);
                    last_failure = Some(reason);
                }
                Err(Unanswered::Refused(error)) => {
                    self.report(&backend.id, Outcome::Neutral, took);
                    return Err(error);
                }
                Ok(mut answer) => {
                    self.report(&backend.id, Outcome::Success, took);
                    self.report_model(&model.id, took, false);
                    let tokens = answer
                        .get("usage")
                        .and_then(|u| u.get("prompt_tokens"))
                        .and_then(Value::as_u64)
                        .unwrap_or_else(|| estimate_tokens(characters));
                    let mut record = UsageRecord::of(principal, "embeddings");
                    record.model = Some(model.slug.clone());
                    record.backend_id = Some(backend.id.clone());
                    record.input_tokens = tokens;
                    record.cost = model.pricing.cost(tokens, 0);
                    record.request_id = crate::request_id::current();
                    self.limits
                        .charge(principal, Dimension::Tokens, tokens as f64)
                        .await;
                    reservation.settle(record);
                    answer.insert("model".into(), Value::from(model.slug.clone()));
                    return Ok((answer, backend.id.clone()));
                }
            }
        }
        self.report_model(&model.id, None, true);
        Err(super::chat::unanswered(&model.slug, last_failure))
    }

    async fn embed_locally(
        &self,
        principal: &Principal,
        request: EmbeddingsRequest,
    ) -> ApiResult<(Map<String, Value>, String)> {
        let texts = match request.input {
            Input::Texts(texts) => texts,
            Input::Tokens(_) => {
                return Err(invalid_field(
                    "the local model reads text, not token ids of another tokenizer",
                    "input",
                ));
            }
        };
        if request
            .dimensions
            .is_some_and(|d| d != engines::text_embed::DIM as u64)
        {
            return Err(invalid_field(
                &format!(
                    "`{LOCAL_MODEL}` has {} dimensions",
                    engines::text_embed::DIM
                ),
                "dimensions",
            ));
        }
        let Some(engines) = self.nodes.engines().filter(|e| e.can_embed_text()) else {
            return Err(ApiError::new(
                ErrorCode::MODEL_UNAVAILABLE,
                format!(
                    "no inference node carries `{}` (the engine of `{LOCAL_MODEL}`); load it \
                     with POST /v1/infra/nodes/{{id}}/models",
                    engines::text_embed::ENGINE_ID
                ),
            ));
        };
        let (vectors, tokens) = engines.embed_text(texts).await?;
        let mut record = UsageRecord::of(principal, "embeddings");
        record.model = Some(LOCAL_MODEL.to_owned());
        record.backend_id = Some("local".to_owned());
        record.input_tokens = tokens;
        record.request_id = crate::request_id::current();
        self.limits
            .charge(principal, Dimension::Tokens, tokens as f64)
            .await;
        self.accounting.record(record);
        Ok((
            answer(vectors, request.base64, LOCAL_MODEL, tokens),
            "local".to_owned(),
        ))
    }

    /// Sentence embeddings of `texts` on the nodes (the semantic cache's), or `None`
    /// when no node carries the model.
    pub async fn embed_texts(&self, texts: Vec<String>) -> Option<ApiResult<Vec<Vec<f32>>>> {
        let engines = self.nodes.engines().filter(|e| e.can_embed_text())?;
        Some(
            engines
                .embed_text(texts)
                .await
                .map(|(vectors, _)| vectors)
                .map_err(ApiError::from),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(value: &Value) -> ApiResult<Input> {
        parse_input(Some(value))
    }

    #[test]
    fn inputs_are_strings_or_token_ids() {
        assert_eq!(
            input(&json!("hi")).unwrap(),
            Input::Texts(vec!["hi".into()])
        );
        assert_eq!(
            input(&json!(["a", "b"])).unwrap(),
            Input::Texts(vec!["a".into(), "b".into()])
        );
        assert_eq!(input(&json!([1, 2, 3])).unwrap(), Input::Tokens(1));
        assert_eq!(input(&json!([[1], [2, 3]])).unwrap(), Input::Tokens(2));
        for bad in [
            json!(""),
            json!([]),
            json!(["a", ""]),
            json!(["a", 1]),
            json!([[1], ["x"]]),
            json!({"text": "a"}),
            json!(7),
            json!("x".repeat(MAX_INPUT_CHARS + 1)),
            json!(vec!["a"; MAX_INPUTS + 1]),
        ] {
            assert!(input(&bad).is_err(), "{bad}");
        }
        assert!(parse_input(None).is_err());
    }

    #[test]
    fn answers_carry_floats_or_little_endian_base64() {
        let floats = answer(vec![vec![1.0, -0.5]], false, "m", 3);
        assert_eq!(floats["data"][0]["embedding"], json!([1.0, -0.5]));
        assert_eq!(floats["usage"]["prompt_tokens"], 3);
        let encoded = answer(vec![vec![1.0, -0.5]], true, "m", 3);
        let text = encoded["data"][0]["embedding"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        assert_eq!(bytes.len(), 8);
        assert_eq!(f32::from_le_bytes(bytes[4..8].try_into().unwrap()), -0.5);
    }

    #[test]
    fn requests_are_checked() {
        assert!(parse(br#"{"input": "x"}"#).is_err());
        assert!(parse(br#"{"model": "m", "input": "x", "encoding_format": "hex"}"#).is_err());
        assert!(parse(br#"{"model": "m", "input": "x", "dimensions": 0}"#).is_err());
        let ok =
            parse(br#"{"model": "m", "input": "x", "encoding_format": "base64", "dimensions": 8}"#)
                .unwrap();
        assert!(ok.base64);
        assert_eq!(ok.dimensions, Some(8));
    }
}
