//! The chat completion cache: answers kept per tenant and model for the model's TTL,
//! found again by the exact request (normalised) or, where the model sets a
//! `semantic_threshold`, by a question whose sentence embedding is that close to one
//! asked before in the same conversation and with the same parameters.
//!
//! Keys are SHA-256 digests over the tenant, the model and the canonical request (keys
//! sorted, whitespace runs in message texts collapsed, `stream`, `stream_options`,
//! `user` and the opt-out field left out), so one tenant's entries can never answer
//! another's. A semantic entry lives in a *partition*: the same digest without the
//! last user message, whose embedding is compared by cosine (the vectors are
//! normalised: a dot product).
//!
//! Embedded: in-process and bounded (`gateway.cache_max_entries`, the oldest evicted
//! first). Scaled: in Redis ([`crate::cluster::answers`]), shared by every edge, each
//! answer expiring with its TTL. Either way an answer over [`MAX_ANSWER_BYTES`] is not
//! kept, and a cache that fails (Redis away) is a miss, never a failed request.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::sse;

/// The largest answer kept (serialized bytes).
pub const MAX_ANSWER_BYTES: usize = 256 << 10;
/// The request field that opts one call out (`"cache": false`), taken off before the
/// request goes upstream.
pub const OPT_OUT_FIELD: &str = "cache";

/// A model's cache settings (absent on the model: its answers are not cached).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CachePolicy {
    /// How long an answer is kept (1 s to 7 days; default an hour).
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u64,
    /// A new question at least this close (cosine of sentence embeddings, 0.5 to 1) to
    /// one asked before is answered from the cache; absent: exact hits only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic_threshold: Option<f32>,
}

fn default_ttl() -> u64 {
    3600
}

impl CachePolicy {
    pub fn check(&self) -> Result<(), String> {
        if !(1..=7 * 24 * 3600).contains(&self.ttl_seconds) {
            return Err("`cache.ttl_seconds` is 1 to 604800".into());
        }
        if let Some(threshold) = self.semantic_threshold
            && !(0.5..=1.0).contains(&threshold)
        {
            return Err("`cache.semantic_threshold` is 0.5 to 1".into());
        }
        Ok(())
    }
}

pub type Digest32 = [u8; 32];

/// Where a request is looked up.
#[derive(Debug, Clone, PartialEq)]
pub struct Keys {
    pub exact: Digest32,
    pub partition: Digest32,
    /// The last user message's text (what a paraphrase is compared on).
    pub question: Option<String>,
}

/// A kept answer: the complete (non-streamed) completion body and its usage.
#[derive(Debug)]
pub struct Entry {
    pub body: Map<String, Value>,
    pub usage: (u64, u64),
    expires: Instant,
}

/// An answer as Redis keeps it.
#[derive(Serialize, Deserialize)]
struct Stored {
    body: Map<String, Value>,
    usage: (u64, u64),
}

/// Where answers are kept: this process (embedded), or Redis (scaled).
pub enum AnswerCache {
    Local(ChatCache),
    Shared(Arc<crate::cluster::Cluster>),
}

impl AnswerCache {
    /// The entry kept for exactly this request.
    pub async fn exact(&self, keys: &Keys) -> Option<Arc<Entry>> {
        match self {
            AnswerCache::Local(cache) => cache.exact(keys),
            AnswerCache::Shared(cluster) => fetch(cluster, &hex::encode(keys.exact)).await,
        }
    }

    /// The closest question of the partition at or above `threshold`.
    pub async fn nearest(&self, keys: &Keys, embedding: &[f32], threshold: f32) -> Option<Found> {
        let cluster = match self {
            AnswerCache::Local(cache) => return cache.nearest(keys, embedding, threshold),
            AnswerCache::Shared(cluster) => cluster,
        };
        let partition = hex::encode(keys.partition);
        let questions = crate::cluster::answers::questions(cluster, &partition)
            .await
            .inspect_err(|error| tracing::warn!(%error, "answer cache: partition not read"))
            .ok()?;
        let (score, key) = closest(&questions, embedding, threshold)?;
        let entry = fetch(cluster, key).await?;
        Some(Found::Semantic(entry, score))
    }

    /// Keeps an answer for `ttl` (see [`ChatCache::put`]). Returns whether it was.
    pub async fn put(
        &self,
        keys: &Keys,
        embedding: Option<Vec<f32>>,
        (body, usage): (Map<String, Value>, (u64, u64)),
        ttl: Duration,
    ) -> bool {
        let cluster = match self {
            AnswerCache::Local(cache) => return cache.put(keys, embedding, (body, usage), ttl),
            AnswerCache::Shared(cluster) => cluster,
        };
        let Ok(bytes) = serde_json::to_vec(&Stored { body, usage }) else {
            return false;
        };
        if bytes.len() > MAX_ANSWER_BYTES {
            return false;
        }
        let (exact, partition) = (hex::encode(keys.exact), hex::encode(keys.partition));
        let written = crate::cluster::answers::put(
            cluster,
            (&exact, &partition),
            embedding.as_deref(),
            &bytes,
            ttl,
        )
        .await;
        written
            .inspect_err(|error| tracing::warn!(%error, "answer cache: answer not kept"))
            .is_ok()
    }
}

/// An answer Redis keeps under `exact` (hex), if any.
async fn fetch(cluster: &crate::cluster::Cluster, exact: &str) -> Option<Arc<Entry>> {
    let bytes = crate::cluster::answers::answer(cluster, exact)
        .await
        .inspect_err(|error| tracing::warn!(%error, "answer cache: answer not read"))
        .ok()??;
    let stored: Stored = serde_json::from_slice(&bytes).ok()?;
    Some(Arc::new(Entry {
        body: stored.body,
        usage: stored.usage,
        // Redis expires it; here it lives as long as this request.
        expires: Instant::now() + Duration::from_secs(60),
    }))
}

/// What a lookup found.
pub enum Found {
    Hit(Arc<Entry>),
    /// A paraphrase, with its similarity.
    Semantic(Arc<Entry>, f32),
}

/// The request fields that do not change the answer.
const IGNORED: &[&str] = &["stream", "stream_options", "user", OPT_OUT_FIELD];

/// The cache keys of a chat request body (`model` already the slug).
pub fn keys(tenant_id: &str, slug: &str, body: &Map<String, Value>) -> Keys {
    let mut canonical = body.clone();
    for field in IGNORED {
        canonical.remove(*field);
    }
    let exact = digest(tenant_id, slug, &Value::Object(canonical.clone()));
    let mut question = None;
    if let Some(Value::Array(messages)) = canonical.get_mut("messages")
        && let Some(last) = messages
            .iter()
            .rposition(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    {
        let text = message_text(&messages[last]);
        if !text.trim().is_empty() {
            question = Some(text);
        }
        messages[last] = json!({"role": "user", "content": "\u{0}question"});
    }
    Keys {
        exact,
        partition: digest(tenant_id, slug, &Value::Object(canonical)),
        question,
    }
}

fn digest(tenant_id: &str, slug: &str, canonical: &Value) -> Digest32 {
    let mut hasher = Sha256::new();
    for part in [tenant_id.as_bytes(), b"\0", slug.as_bytes(), b"\0"] {
        hasher.update(part);
    }
    write_canonical(canonical, &mut hasher);
    hasher.finalize().into()
}

/// Canonical JSON: object keys sorted, text in messages with whitespace runs collapsed.
fn write_canonical(value: &Value, out: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.update(b"{");
            for key in keys {
                out.update(serde_json::to_string(key).unwrap_or_default().as_bytes());
                out.update(b":");
                write_canonical(&map[key], out);
                out.update(b",");
            }
            out.update(b"}");
        }
        Value::Array(items) => {
            out.update(b"[");
            for item in items {
                write_canonical(item, out);
                out.update(b",");
            }
            out.update(b"]");
        }
        Value::String(text) => {
            let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
            out.update(
                serde_json::to_string(&collapsed)
                    .unwrap_or_default()
                    .as_bytes(),
            );
        }
        other => out.update(other.to_string().as_bytes()),
    }
}

/// A message's text: `content` as a string, or its `text` parts.
fn message_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

pub struct ChatCache {
    inner: Mutex<Inner>,
    max_entries: usize,
}

#[derive(Default)]
struct Inner {
    exact: HashMap<Digest32, Arc<Entry>>,
    /// Insertion order, for eviction (a key may be here after its entry went).
    order: VecDeque<Digest32>,
    /// Per partition: each kept question's embedding and its entry's key.
    semantic: HashMap<Digest32, Vec<(Vec<f32>, Digest32)>>,
    /// Which partition an entry's embedding is in (to drop it with the entry).
    partition_of: HashMap<Digest32, Digest32>,
}

impl Inner {
    fn remove(&mut self, key: &Digest32) {
        self.exact.remove(key);
        if let Some(partition) = self.partition_of.remove(key)
            && let Some(vectors) = self.semantic.get_mut(&partition)
        {
            vectors.retain(|(_, k)| k != key);
            if vectors.is_empty() {
                self.semantic.remove(&partition);
            }
        }
    }

    fn live(&mut self, key: &Digest32, now: Instant) -> Option<Arc<Entry>> {
        let entry = self.exact.get(key)?.clone();
        if entry.expires <= now {
            self.remove(key);
            return None;
        }
        Some(entry)
    }
}

impl ChatCache {
    pub fn new(max_entries: usize) -> ChatCache {
        ChatCache {
            inner: Mutex::new(Inner::default()),
            max_entries: max_entries.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry kept for exactly this request.
    pub fn exact(&self, keys: &Keys) -> Option<Arc<Entry>> {
        self.lock().live(&keys.exact, Instant::now())
    }

    /// The closest question of the partition at or above `threshold`.
    pub fn nearest(&self, keys: &Keys, embedding: &[f32], threshold: f32) -> Option<Found> {
        let now = Instant::now();
        let mut inner = self.lock();
        let (score, key) = inner
            .semantic
            .get(&keys.partition)
            .and_then(|vectors| closest(vectors, embedding, threshold))
            .map(|(score, key)| (score, *key))?;
        inner
            .live(&key, now)
            .map(|entry| Found::Semantic(entry, score))
    }

    /// Keeps an answer (with its question's embedding for semantic lookups) for `ttl`;
    /// an answer too large is not kept. Returns whether it was.
    pub fn put(
        &self,
        keys: &Keys,
        embedding: Option<Vec<f32>>,
        (body, usage): (Map<String, Value>, (u64, u64)),
        ttl: Duration,
    ) -> bool {
        let size = serde_json::to_vec(&body).map_or(usize::MAX, |b| b.len());
        if size > MAX_ANSWER_BYTES {
            return false;
        }
        let entry = Arc::new(Entry {
            body,
            usage,
            expires: Instant::now() + ttl,
        });
        let mut inner = self.lock();
        inner.remove(&keys.exact);
        while inner.exact.len() >= self.max_entries {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.remove(&oldest);
        }
        inner.exact.insert(keys.exact, entry);
        inner.order.push_back(keys.exact);
        if inner.order.len() > 2 * self.max_entries {
            // Keys of entries replaced or expired pile up: keep only live ones.
            let Inner { exact, order, .. } = &mut *inner;
            order.retain(|key| exact.contains_key(key));
        }
        if let Some(embedding) = embedding {
            inner
                .semantic
                .entry(keys.partition)
                .or_default()
                .push((embedding, keys.exact));
            inner.partition_of.insert(keys.exact, keys.partition);
        }
        metrics::gauge!("scaigrid_gateway_cache_entries").set(inner.exact.len() as f64);
        true
    }
}

/// The question closest to `embedding` at or above `threshold`: its score and key.
fn closest<'a, K>(
    questions: &'a [(Vec<f32>, K)],
    embedding: &[f32],
    threshold: f32,
) -> Option<(f32, &'a K)> {
    questions
        .iter()
        .map(|(vector, key)| (dot(vector, embedding), key))
        .filter(|(score, _)| *score >= threshold)
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A kept answer as a stream: per choice a chunk with the role and the whole content,
/// then one with its finish reason; the usage chunk when asked for; `[DONE]`.
pub fn replay(body: &Map<String, Value>, include_usage: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let head = |choices: Value| {
        json!({
            "id": body.get("id").cloned().unwrap_or(Value::Null),
            "object": "chat.completion.chunk",
            "created": body.get("created").cloned().unwrap_or(Value::Null),
            "model": body.get("model").cloned().unwrap_or(Value::Null),
            "choices": choices,
        })
    };
    let choices = body.get("choices").and_then(Value::as_array);
    for (position, choice) in choices.into_iter().flatten().enumerate() {
        let index = choice.get("index").cloned().unwrap_or(json!(position));
        let message = choice.get("message").cloned().unwrap_or(json!({}));
        let delta = json!({
            "role": message.get("role").cloned().unwrap_or(json!("assistant")),
            "content": message.get("content").cloned().unwrap_or(json!("")),
        });
        let said = head(json!([{"index": index, "delta": delta, "finish_reason": null}]));
        out.extend(sse::data(&said.to_string()));
        let finish = choice
            .get("finish_reason")
            .cloned()
            .unwrap_or(json!("stop"));
        let ended = head(json!([{"index": index, "delta": {}, "finish_reason": finish}]));
        out.extend(sse::data(&ended.to_string()));
    }
    if include_usage && let Some(usage) = body.get("usage") {
        let mut last = head(json!([]));
        last["usage"] = usage.clone();
        out.extend(sse::data(&last.to_string()));
    }
    out.extend(sse::data("[DONE]"));
    out
}

/// A streamed answer, put together as the completion body it would have been.
pub fn assembled(
    slug: &str,
    content: &str,
    finish_reason: Option<String>,
    usage: (u64, u64),
) -> Map<String, Value> {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body = json!({
        "id": format!("chatcmpl-{}", uuid::Uuid::now_v7().simple()),
        "object": "chat.completion",
        "created": created,
        "model": slug,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
            "finish_reason": finish_reason.unwrap_or_else(|| "stop".into())}],
        "usage": {"prompt_tokens": usage.0, "completion_tokens": usage.1,
            "total_tokens": usage.0 + usage.1},
    });
    match body {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(question: &str) -> Map<String, Value> {
        let value = json!({"model": "m/x", "temperature": 0,
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": question}]});
        value.as_object().unwrap().clone()
    }

    #[test]
    fn keys_ignore_layout_and_streaming_but_not_tenant_or_parameters() {
        let a = keys("t1", "m/x", &body("What is   Rust?"));
        let mut streamed = body("What is Rust?");
        streamed.insert("stream".into(), json!(true));
        streamed.insert("cache".into(), json!(true));
        let b = keys("t1", "m/x", &streamed);
        assert_eq!(a.exact, b.exact);
        assert_ne!(a.exact, keys("t2", "m/x", &body("What is Rust?")).exact);
        assert_ne!(a.exact, keys("t1", "m/y", &body("What is Rust?")).exact);
        let mut warmer = body("What is Rust?");
        warmer.insert("temperature".into(), json!(1));
        assert_ne!(a.exact, keys("t1", "m/x", &warmer).exact);
        // A paraphrase: another exact key, the same partition.
        let c = keys("t1", "m/x", &body("Tell me what Rust is"));
        assert_ne!(a.exact, c.exact);
        assert_eq!(a.partition, c.partition);
        assert_eq!(c.question.as_deref(), Some("Tell me what Rust is"));
        assert_ne!(a.partition, keys("t1", "m/x", &warmer).partition);
    }

    fn answer(text: &str) -> (Map<String, Value>, (u64, u64)) {
        let body = json!({"id": "c1", "created": 1, "model": "m/x", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}});
        (body.as_object().unwrap().clone(), (3, 2))
    }

    #[test]
    fn entries_are_found_exactly_or_by_a_close_question_until_they_expire() {
        let cache = ChatCache::new(10);
        let asked = keys("t", "m/x", &body("q1"));
        let ttl = Duration::from_secs(60);
        assert!(cache.put(&asked, Some(vec![1.0, 0.0]), answer("a1"), ttl));
        assert!(cache.exact(&asked).is_some());
        let paraphrase = keys("t", "m/x", &body("q1 again"));
        assert!(cache.exact(&paraphrase).is_none());
        let close = [0.96f32, 0.28];
        match cache.nearest(&paraphrase, &close, 0.95) {
            Some(Found::Semantic(entry, score)) => {
                assert!((score - 0.96).abs() < 1e-6);
                assert_eq!(entry.usage, (3, 2));
            }
            _ => panic!("no semantic hit"),
        }
        assert!(cache.nearest(&paraphrase, &close, 0.97).is_none());
        // Another tenant's question, however close, is another partition.
        let other = keys("u", "m/x", &body("q1 again"));
        assert!(cache.nearest(&other, &[1.0, 0.0], 0.5).is_none());
        // Expired entries answer nothing.
        let short = keys("t", "m/x", &body("q2"));
        cache.put(&short, None, answer("a2"), Duration::ZERO);
        assert!(cache.exact(&short).is_none());
    }

    #[test]
    fn the_oldest_entries_go_first_and_large_answers_are_not_kept() {
        let cache = ChatCache::new(2);
        let ttl = Duration::from_secs(60);
        let k: Vec<Keys> = (0..3)
            .map(|i| keys("t", "m/x", &body(&format!("q{i}"))))
            .collect();
        for key in &k {
            cache.put(key, Some(vec![1.0]), answer("a"), ttl);
        }
        assert!(cache.exact(&k[0]).is_none());
        assert!(cache.exact(&k[1]).is_some() && cache.exact(&k[2]).is_some());
        assert!(cache.lock().semantic.values().map(Vec::len).sum::<usize>() == 2);
        let huge = answer(&"x".repeat(MAX_ANSWER_BYTES));
        assert!(!cache.put(&k[0], None, huge, ttl));
    }

    #[test]
    fn a_kept_answer_replays_as_a_valid_stream() {
        let (body, _) = answer("Hello there");
        let text = String::from_utf8(replay(&body, true)).unwrap();
        let events: Vec<&str> = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.trim_start_matches("data: "))
            .collect();
        assert_eq!(events.len(), 4, "{text}");
        let first: Value = serde_json::from_str(events[0]).unwrap();
        assert_eq!(first["choices"][0]["delta"]["content"], "Hello there");
        assert_eq!(first["object"], "chat.completion.chunk");
        let usage: Value = serde_json::from_str(events[2]).unwrap();
        assert_eq!(usage["usage"]["total_tokens"], 5);
        assert_eq!(events[3], "[DONE]");
        assert!(
            !String::from_utf8(replay(&body, false))
                .unwrap()
                .contains("usage")
        );
    }

    #[test]
    fn policies_are_checked() {
        let ok = CachePolicy {
            ttl_seconds: 60,
            semantic_threshold: Some(0.9),
        };
        assert!(ok.check().is_ok());
        assert!(
            CachePolicy {
                ttl_seconds: 0,
                ..ok
            }
            .check()
            .is_err()
        );
        assert!(
            CachePolicy {
                semantic_threshold: Some(0.2),
                ..ok
            }
            .check()
            .is_err()
        );
    }
}
