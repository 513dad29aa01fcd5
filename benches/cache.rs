//! The chat answer cache's lookups: the keys of a typical request (canonical JSON and
//! two SHA-256 digests), an exact lookup among 10,000 entries, and the semantic scan of
//! a partition holding 1,000 questions (384-dimensional dot products).
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use scaigrid::gateway::cache::{ChatCache, keys};
use serde_json::{Map, Value, json};

fn request(question: &str) -> Map<String, Value> {
    json!({"model": "acme/chat", "temperature": 0.2, "max_tokens": 200,
        "messages": [{"role": "system", "content": "You are a helpful support agent for Acme. Answer briefly and politely."},
                     {"role": "user", "content": "Hi, I bought a router last week."},
                     {"role": "assistant", "content": "Thanks for your purchase! How can I help?"},
                     {"role": "user", "content": question}]})
    .as_object()
    .unwrap()
    .clone()
}

fn answer() -> (Map<String, Value>, (u64, u64)) {
    let body = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "acme/chat",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hold reset for 10 s."},
            "finish_reason": "stop"}]});
    (body.as_object().unwrap().clone(), (40, 8))
}

/// A deterministic unit vector per seed.
fn vector(seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut v: Vec<f32> = (0..384)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / u32::MAX as f32) - 0.25
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn bench(c: &mut Criterion) {
    let ttl = Duration::from_secs(3600);
    let cache = ChatCache::new(20_000);
    for i in 0..10_000 {
        let k = keys(
            &format!("tenant-{}", i % 50),
            "acme/chat",
            &request(&format!("question {i}")),
        );
        cache.put(&k, None, answer(), ttl);
    }
    // One partition (one conversation, one tenant) with 1,000 questions embedded.
    for i in 0..1_000 {
        let k = keys(
            "t-semantic",
            "acme/chat",
            &request(&format!("how do I reset it, take {i}")),
        );
        cache.put(&k, Some(vector(i)), answer(), ttl);
    }
    let typical = request("How do I reset my router to factory settings?");
    c.bench_function("cache/keys", |b| {
        b.iter(|| keys("tenant-7", "acme/chat", &typical))
    });
    let present = keys("tenant-7", "acme/chat", &request("question 7"));
    c.bench_function("cache/exact_hit_of_10k", |b| {
        b.iter(|| cache.exact(&present).unwrap())
    });
    let absent = keys("tenant-7", "acme/chat", &typical);
    c.bench_function("cache/exact_miss_of_10k", |b| {
        b.iter(|| cache.exact(&absent))
    });
    let paraphrase = keys(
        "t-semantic",
        "acme/chat",
        &request("how do I reset it, please"),
    );
    let probe = vector(5_000);
    c.bench_function("cache/semantic_scan_1000", |b| {
        b.iter(|| cache.nearest(&paraphrase, &probe, 0.99))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
