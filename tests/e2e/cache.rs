//! The chat answer cache: exact hits without reaching the upstream, paraphrases above
//! the model's threshold as semantic hits (the local embedding model), misses below it,
//! tenants apart, streamed hits replayed as SSE, opting out per request, hits billed at
//! the configured fraction (zero).

use serde_json::{Value, json};

use crate::support::{ADMIN_KEY, Server, assert_error};
use crate::upstream::{self, Upstream};

const MODEL: &str = "acme/cached";

async fn ask(
    server: &Server,
    key: &str,
    question: &str,
    extra: Value,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, String) {
    let mut body = json!({"model": MODEL, "messages": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": question}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let mut request = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("x-scaigrid-cache")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, cache, response.text().await.unwrap())
}

async fn cached_model(server: &Server, upstream: &Upstream) -> String {
    let backend = crate::gateway::backend(server, upstream, "cache-secret-7").await;
    crate::gateway::model(
        server,
        MODEL,
        json!([{"backend_id": backend}]),
        json!({"cache": {"ttl_seconds": 300, "semantic_threshold": 0.9}}),
    )
    .await;
    backend
}

#[tokio::test]
async fn answers_come_back_from_the_cache_exactly_or_by_meaning_per_tenant() {
    let server = Server::start().await;
    let up = upstream::start("alpha", "cache-secret-7").await;
    let backend = cached_model(&server, &up).await;
    let acme = server.tenant("acme").await;
    let other = server.tenant("other").await;
    let key = acme.member_key.as_str();
    let calls = || up.chat_calls();

    let (status, cache, first) =
        ask(&server, key, "How do I reset my password?", json!({}), &[]).await;
    assert_eq!((status, cache.as_deref()), (200, Some("miss")), "{first}");
    assert_eq!(calls(), 1);
    // The same request (spacing aside): a hit, the upstream not called.
    let (status, cache, again) = ask(
        &server,
        key,
        "How do I  reset my password? ",
        json!({}),
        &[],
    )
    .await;
    assert_eq!((status, cache.as_deref()), (200, Some("hit")), "{again}");
    let (first, again): (Value, Value) = (
        serde_json::from_str(&first).unwrap(),
        serde_json::from_str(&again).unwrap(),
    );
    assert_eq!(again["choices"], first["choices"]);
    assert_eq!(calls(), 1);
    // A paraphrase above the threshold (cosine 0.99): a semantic hit.
    let (_, cache, _) = ask(&server, key, "How can I reset my password?", json!({}), &[]).await;
    assert_eq!(cache.as_deref(), Some("semantic-hit"));
    assert_eq!(calls(), 1);
    // Below it (0.53): a miss that reaches the upstream.
    let (_, cache, _) = ask(&server, key, "How do I reset my router?", json!({}), &[]).await;
    assert_eq!(cache.as_deref(), Some("miss"));
    assert_eq!(calls(), 2);
    // Other parameters are another request.
    let (_, cache, _) = ask(
        &server,
        key,
        "How do I reset my password?",
        json!({"temperature": 1.5}),
        &[],
    )
    .await;
    assert_eq!(cache.as_deref(), Some("miss"));
    assert_eq!(calls(), 3);
    // Another tenant never gets this tenant's answers.
    let (_, cache, _) = ask(
        &server,
        &other.member_key,
        "How do I reset my password?",
        json!({}),
        &[],
    )
    .await;
    assert_eq!(cache.as_deref(), Some("miss"));
    assert_eq!(calls(), 4);

    // A streamed request is answered from the cache as a valid stream.
    let (status, cache, text) = ask(
        &server,
        key,
        "How do I reset my password?",
        json!({"stream": true,
        "stream_options": {"include_usage": true}}),
        &[],
    )
    .await;
    assert_eq!((status, cache.as_deref()), (200, Some("hit")), "{text}");
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"), "{text}");
    let said: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e.trim_start_matches("data: ")).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(said, "Hello from alpha", "{text}");
    assert!(text.contains("\"usage\""), "{text}");
    assert_eq!(calls(), 4);
    // A streamed miss is kept too, and answers the next asking whole.
    let (_, cache, text) = ask(&server, key, "Tell me a joke", json!({"stream": true}), &[]).await;
    assert_eq!(cache.as_deref(), Some("miss"), "{text}");
    assert_eq!(calls(), 5);
    // Kept once the stream ended: the store counter says so (5 answers kept by now).
    for _ in 0..100 {
        if server
            .metrics()
            .await
            .contains("scaigrid_gateway_cache_stores_total 5")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (_, cache, kept) = ask(&server, key, "Tell me a joke", json!({}), &[]).await;
    assert_eq!(cache.as_deref(), Some("hit"), "{kept}");
    assert_eq!(calls(), 5);
    let kept: Value = serde_json::from_str(&kept).unwrap();
    assert_eq!(
        kept["choices"][0]["message"]["content"], "Hello from alpha",
        "{kept}"
    );

    // Opting out: neither read nor filled.
    let before = calls();
    let (_, cache, _) = ask(
        &server,
        key,
        "How do I reset my password?",
        json!({}),
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(cache, None);
    let (_, cache, _) = ask(
        &server,
        key,
        "How do I reset my password?",
        json!({"cache": false}),
        &[],
    )
    .await;
    assert_eq!(cache, None);
    assert_eq!(calls(), before + 2);
    let (status, _, body) = ask(&server, key, "hi", json!({"cache": "yes"}), &[]).await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_error(status, &body, 400, "INVALID_REQUEST");

    // Hits are billed at the configured fraction: nothing by default.
    let query = format!(
        "SELECT COUNT(*) FROM usage_records WHERE backend_id = 'cache' AND tenant_id = '{}' AND cost = 0",
        acme.id
    );
    let mut hits = 0;
    for _ in 0..50 {
        hits = server.sql_count(&query).await;
        if hits >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The exact, the semantic, the streamed and the joke's hits.
    assert_eq!(hits, 4);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("scaigrid_gateway_cache_lookups_total{result=\"semantic-hit\"} 1"),
        "{metrics}"
    );

    // The policy is part of the model, checked when set.
    let (status, model) = server
        .get(&format!("/v1/models/{MODEL}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(
        model["cache"],
        json!({"ttl_seconds": 300, "semantic_threshold": 0.9}),
        "{model}"
    );
    let (status, body) = server
        .post(
            "/v1/models",
            Some(ADMIN_KEY),
            json!({"slug": "acme/bad-cache", "routing": {"backends": [{"backend_id": backend}]},
                "cache": {"semantic_threshold": 0.1}}),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    assert_eq!(body["error"]["field"], "cache", "{body}");
    let (status, body) = server
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/models/{MODEL}"),
            Some(ADMIN_KEY),
            Some(json!({"cache": null})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cache"], Value::Null, "{body}");
    let (_, cache, _) = ask(&server, key, "How do I reset my password?", json!({}), &[]).await;
    assert_eq!(cache, None);
}

/// Scaled: answers live in Redis, so an answer kept through one edge is a hit through
/// another, and a paraphrase finds a question another request kept (the partition's
/// embeddings in Redis).
#[tokio::test]
async fn edges_of_a_deployment_share_the_cache() {
    let Some(deployment) = crate::scaled::Deployment::new().await else {
        return;
    };
    let (redis, database) = (deployment.redis.clone(), deployment.database.clone());
    let plain = deployment.api_on(&redis, Some(&database)).await;
    let embedding = deployment
        .serve_with_engines(&redis, &database, "cache-edge", "workers = 0\n")
        .await;
    let up = upstream::start("alpha", "cache-secret-7").await;
    cached_model(&plain, &up).await;
    // The catalogue is SQL: the other edge sees the model within its refresh.
    let (mut status, mut cache) = (0, None);
    for _ in 0..100 {
        (status, cache, _) = ask(
            &embedding,
            ADMIN_KEY,
            "How do I reset my password?",
            json!({}),
            &[],
        )
        .await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!((status, cache.as_deref()), (200, Some("miss")));
    assert_eq!(up.chat_calls(), 1);
    let (status, cache, body) = ask(
        &plain,
        ADMIN_KEY,
        "How do I  reset my password?",
        json!({}),
        &[],
    )
    .await;
    assert_eq!((status, cache.as_deref()), (200, Some("hit")), "{body}");
    let (_, cache, _) = ask(
        &embedding,
        ADMIN_KEY,
        "How can I reset my password?",
        json!({}),
        &[],
    )
    .await;
    assert_eq!(cache.as_deref(), Some("semantic-hit"));
    let (_, cache, _) = ask(
        &embedding,
        ADMIN_KEY,
        "How do I reset my router?",
        json!({}),
        &[],
    )
    .await;
    assert_eq!(cache.as_deref(), Some("miss"));
    assert_eq!(up.chat_calls(), 2);
    let (_, cache, _) = ask(
        &plain,
        ADMIN_KEY,
        "How do I reset my router?",
        json!({}),
        &[],
    )
    .await;
    assert_eq!(cache.as_deref(), Some("hit"));
    assert_eq!(up.chat_calls(), 2);
}
