//! Gateway core end to end: models and access, routing weights, fallback, circuit
//! breakers and health probes, chat (plain and SSE, cut streams, timeouts), rate limits,
//! budgets under a concurrent burst, usage totals, and the OpenAI Python SDK, against
//! upstreams the tests start (`upstream.rs`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ADMIN_KEY, Options, Server, assert_error};
use crate::upstream::{self, Mode, Upstream};

const CONFIG: &str = "[engines]\nenabled = false\n[gateway]\nbreaker_failure_threshold = 3\n\
                      breaker_open_seconds = 2\nhealth_interval_seconds = 3600\n";

async fn server() -> Server {
    server_with("").await
}

async fn server_with(extra: &str) -> Server {
    Server::start_with(Options {
        config_toml: Some(format!("{CONFIG}{extra}")),
        ..Options::default()
    })
    .await
}

/// Registers an upstream as a backend; returns its id.
pub(crate) async fn backend(server: &Server, upstream: &Upstream, key: &str) -> String {
    let (status, body) = server
        .post(
            "/v1/backends",
            Some(ADMIN_KEY),
            json!({"name": upstream.shared.name, "kind": "openai", "base_url": upstream.base,
                "api_key": key, "timeout_s": 5}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["has_api_key"], true);
    assert!(
        !body.to_string().contains(key),
        "the credential leaked: {body}"
    );
    body["id"].as_str().unwrap().to_owned()
}

pub(crate) async fn model(server: &Server, slug: &str, routes: Value, extra: Value) {
    let mut request = json!({"slug": slug, "routing": {"backends": routes}});
    for (k, v) in extra.as_object().unwrap() {
        request[k] = v.clone();
    }
    let (status, body) = server.post("/v1/models", Some(ADMIN_KEY), request).await;
    assert_eq!(status, 201, "{body}");
}

pub(crate) fn chat_body(slug: &str) -> Value {
    json!({"model": slug, "messages": [{"role": "user", "content": "Say hello to the tests!!"}],
        "max_tokens": 5})
}

async fn chat(server: &Server, key: &str, slug: &str) -> (u16, Value) {
    server
        .post("/v1/chat/completions", Some(key), chat_body(slug))
        .await
}

#[tokio::test]
async fn models_tenant_scope_and_access_rules() {
    let server = server().await;
    let up = upstream::start("alpha", "alpha-key").await;
    let id = backend(&server, &up, "alpha-key").await;
    let acme = server.tenant("acme").await;
    let other = server.tenant("other").await;
    model(
        &server,
        "scailabs/poolnoodle-omni",
        json!([{"backend_id": id}]),
        json!({}),
    )
    .await;
    model(
        &server,
        "acme/private",
        json!([{"backend_id": id, "upstream_model": "up-private"}]),
        json!({"tenant_id": acme.id, "pricing": {"input_per_1k": 1.0, "output_per_1k": 2.0}}),
    )
    .await;

    // OpenAI's list shape; the tenant's own model only for that tenant.
    let (status, list) = server.get("/v1/models", Some(&acme.member_key)).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["object"], "list");
    let slugs = |list: &Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(slugs(&list), ["acme/private", "scailabs/poolnoodle-omni"]);
    assert_eq!(list["data"][1]["object"], "model");
    assert_eq!(list["data"][1]["owned_by"], "scailabs");
    assert!(
        list["data"][0].get("routing").is_none(),
        "routing is for admins"
    );
    let (_, list) = server.get("/v1/models", Some(&other.member_key)).await;
    assert_eq!(slugs(&list), ["scailabs/poolnoodle-omni"]);
    let (status, body) = chat(&server, &other.member_key, "acme/private").await;
    assert_error(status, &body, 404, "MODEL_NOT_FOUND");
    let (status, body) = chat(&server, &other.member_key, "poolnoodle-omni").await;
    assert_error(status, &body, 404, "MODEL_NOT_FOUND");
    let (status, body) = server
        .get("/v1/models/acme/private", Some(&acme.member_key))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pricing"]["output_per_1k"], 2.0);

    // The upstream hears its own model name; the client sees the slug.
    let (status, body) = chat(&server, &acme.member_key, "acme/private").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["model"], "acme/private");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from alpha");
    assert_eq!(*up.shared.last_model.lock().unwrap(), "up-private");
    let (_, _) = chat(&server, &acme.member_key, "scailabs/poolnoodle-omni").await;
    assert_eq!(*up.shared.last_model.lock().unwrap(), "poolnoodle-omni");

    // Access rules: deny blocks and hides; an allow list admits only its slugs.
    let (status, body) = server
        .send(
            reqwest::Method::PUT,
            "/v1/model-access",
            Some(&acme.admin_key),
            Some(json!({"deny": ["scailabs/poolnoodle-omni"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deny"], json!(["scailabs/poolnoodle-omni"]));
    let (status, body) = chat(&server, &acme.member_key, "scailabs/poolnoodle-omni").await;
    assert_error(status, &body, 403, "MODEL_ACCESS_DENIED");
    let (_, list) = server.get("/v1/models", Some(&acme.member_key)).await;
    assert_eq!(slugs(&list), ["acme/private"]);
    let (status, _) = chat(&server, &other.member_key, "scailabs/poolnoodle-omni").await;
    assert_eq!(status, 200, "other tenants are not affected");
    let (status, body) = server
        .send(
            reqwest::Method::PUT,
            "/v1/model-access",
            Some(&acme.admin_key),
            Some(json!({"allow": ["scailabs/poolnoodle-omni"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = chat(&server, &acme.member_key, "acme/private").await;
    assert_error(status, &body, 403, "MODEL_ACCESS_DENIED");
    // Members may not change access, nor create models or backends.
    let (status, body) = server
        .send(
            reqwest::Method::PUT,
            "/v1/model-access",
            Some(&acme.member_key),
            Some(json!({"allow": []})),
        )
        .await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");
    let (status, body) = server
        .post(
            "/v1/models",
            Some(&acme.admin_key),
            json!({"slug": "x/y", "routing": {"backends": [{"backend_id": id}]}}),
        )
        .await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");
    let (status, body) = server
        .post(
            "/v1/models",
            Some(ADMIN_KEY),
            json!({"slug": "nope", "routing": {"backends": [{"backend_id": id}]}}),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, body) = server
        .post(
            "/v1/models",
            Some(ADMIN_KEY),
            json!({"slug": "a/b", "routing": {"backends": [{"backend_id": "bk_missing"}]}}),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    // A backend a model routes to cannot be deleted from under it.
    let (status, body) = server
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/backends/{id}"),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_error(status, &body, 409, "CONFLICT");
    // Bad chat bodies are refused before any upstream call.
    let calls = up.chat_calls();
    let (status, body) = server
        .post(
            "/v1/chat/completions",
            Some(&other.member_key),
            json!({"model": "scailabs/poolnoodle-omni", "messages": []}),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    assert_eq!(up.chat_calls(), calls);
}

#[tokio::test]
async fn weights_fallback_breaker_and_health_probe() {
    let server = server().await;
    let a = upstream::start("alpha", "ka").await;
    let b = upstream::start("beta", "kb").await;
    let id_a = backend(&server, &a, "ka").await;
    let id_b = backend(&server, &b, "kb").await;
    model(
        &server,
        "test/weighted",
        json!([{"backend_id": id_a, "weight": 3}, {"backend_id": id_b, "weight": 1}]),
        json!({}),
    )
    .await;

    // Weights: 3:1 within tolerance over many calls.
    for _ in 0..200 {
        let (status, body) = chat(&server, ADMIN_KEY, "test/weighted").await;
        assert_eq!(status, 200, "{body}");
    }
    let share = a.chat_calls() as f64 / 200.0;
    assert!((0.65..=0.85).contains(&share), "alpha took {share}");
    assert_eq!(a.chat_calls() + b.chat_calls(), 200);

    // Alpha fails: every call still succeeds through beta (fallback before the first
    // byte), and after 3 failures alpha's breaker opens and it is no longer called.
    a.set_mode(Mode::Fail(500));
    let before = a.chat_calls();
    for _ in 0..20 {
        let (status, body) = chat(&server, ADMIN_KEY, "test/weighted").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], "Hello from beta");
    }
    assert_eq!(
        a.chat_calls() - before,
        3,
        "the breaker stops calls after 3 failures"
    );
    let (_, view) = server
        .get(&format!("/v1/backends/{id_a}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(view["breaker"], "open", "{view}");

    // After the open interval one half-open probe goes through; it fails: open again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, view) = server
        .get(&format!("/v1/backends/{id_a}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(view["breaker"], "half_open", "{view}");
    for _ in 0..10 {
        chat(&server, ADMIN_KEY, "test/weighted").await;
    }
    assert_eq!(a.chat_calls() - before, 4, "exactly one half-open probe");
    let (_, view) = server
        .get(&format!("/v1/backends/{id_a}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(view["breaker"], "open");

    // Alpha recovers; the half-open probe after the interval closes the breaker.
    a.set_mode(Mode::Ok);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for _ in 0..40 {
        chat(&server, ADMIN_KEY, "test/weighted").await;
    }
    let (_, view) = server
        .get(&format!("/v1/backends/{id_a}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(view["breaker"], "closed");
    assert!(a.chat_calls() - before > 10, "alpha takes traffic again");

    // Open it again, then probe its health: a healthy probe closes it at once.
    a.set_mode(Mode::Fail(503));
    while server
        .get(&format!("/v1/backends/{id_a}"), Some(ADMIN_KEY))
        .await
        .1["breaker"]
        != "open"
    {
        chat(&server, ADMIN_KEY, "test/weighted").await;
    }
    let (status, report) = server
        .get(&format!("/v1/backends/{id_a}/health"), Some(ADMIN_KEY))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["status"], "unhealthy");
    assert_eq!(report["breaker"], "open");
    a.set_mode(Mode::Ok);
    let (_, report) = server
        .get(&format!("/v1/backends/{id_a}/health"), Some(ADMIN_KEY))
        .await;
    assert_eq!(report["status"], "healthy", "{report}");
    assert_eq!(report["breaker"], "closed");
    let before = a.chat_calls();
    for _ in 0..20 {
        chat(&server, ADMIN_KEY, "test/weighted").await;
    }
    assert!(a.chat_calls() > before);

    // Per-backend latency and breaker state are exported.
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(&format!("backend_id=\"{id_a}\""))
            && metrics.contains("scaigrid_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scaigrid_backend_circuit_state"),
        "{metrics}"
    );
}

#[tokio::test]
async fn model_unavailable_when_every_backend_is_open_and_client_errors_pass_through() {
    let server = server().await;
    let a = upstream::start("solo", "ks").await;
    let id = backend(&server, &a, "ks").await;
    model(&server, "test/solo", json!([{"backend_id": id}]), json!({})).await;

    // The upstream refuses the request itself: the caller's error, no breaker count.
    a.set_mode(Mode::BadRequest);
    for _ in 0..5 {
        let (status, body) = chat(&server, ADMIN_KEY, "test/solo").await;
        assert_error(status, &body, 400, "INVALID_REQUEST");
        assert_eq!(body["error"]["upstream_status"], 400);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("max_tokens")
        );
    }
    let (_, view) = server
        .get(&format!("/v1/backends/{id}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(view["breaker"], "closed");

    a.set_mode(Mode::Fail(502));
    for _ in 0..3 {
        let (status, body) = chat(&server, ADMIN_KEY, "test/solo").await;
        assert_error(status, &body, 502, "BACKEND_ERROR");
    }
    let calls = a.chat_calls();
    let (status, body) = chat(&server, ADMIN_KEY, "test/solo").await;
    assert_error(status, &body, 503, "MODEL_UNAVAILABLE");
    assert_eq!(a.chat_calls(), calls, "an open breaker is not called");

    // A backend the health probe finds failing is skipped too.
    a.set_mode(Mode::Ok);
    let (_, report) = server
        .get(&format!("/v1/backends/{id}/health"), Some(ADMIN_KEY))
        .await;
    assert_eq!(report["breaker"], "closed");
    let (status, _) = chat(&server, ADMIN_KEY, "test/solo").await;
    assert_eq!(status, 200);
    a.set_mode(Mode::Fail(500));
    let (_, report) = server
        .get(&format!("/v1/backends/{id}/health"), Some(ADMIN_KEY))
        .await;
    assert_eq!(report["status"], "unhealthy");
    let (_, view) = server
        .get(&format!("/v1/backends/{id}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(view["health"], "unhealthy");
    let (status, body) = chat(&server, ADMIN_KEY, "test/solo").await;
    assert_error(status, &body, 503, "MODEL_UNAVAILABLE");
}

/// Reads an SSE response to its end: (headers, `data:` payloads, error event payloads).
async fn sse(
    server: &Server,
    key: &str,
    slug: &str,
) -> (reqwest::header::HeaderMap, Vec<String>, Vec<Value>) {
    let mut body = chat_body(slug);
    body["stream"] = json!(true);
    let response = server
        .http
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let mut data = Vec::new();
    let mut errors = Vec::new();
    for event in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
        let is_error = event.lines().any(|l| l == "event: error");
        let payload: String = event
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect::<Vec<_>>()
            .join("\n");
        if is_error {
            errors.push(serde_json::from_str(&payload).unwrap());
        } else {
            data.push(payload);
        }
    }
    (headers, data, errors)
}

#[tokio::test]
async fn streaming_passthrough_cut_streams_fallback_and_timeout() {
    let server = server_with("stream_timeout_seconds = 2\n").await;
    let a = upstream::start("alpha", "ka").await;
    let b = upstream::start("beta", "kb").await;
    let id_a = backend(&server, &a, "ka").await;
    let id_b = backend(&server, &b, "kb").await;
    model(
        &server,
        "test/stream",
        json!([{"backend_id": id_a, "priority": 0}, {"backend_id": id_b, "priority": 1}]),
        json!({}),
    )
    .await;

    let (headers, data, errors) = sse(&server, ADMIN_KEY, "test/stream").await;
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["connection"], "close");
    assert!(headers.contains_key("x-scaigrid-request-id"));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(data.last().unwrap(), "[DONE]");
    let text: String = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .inspect(|v| assert_eq!(v["model"], "test/stream"))
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "Hello from alpha");

    // Alpha's stream dies before its first byte: beta answers, the client sees no seam.
    a.set_mode(Mode::EmptyStream);
    let (_, data, errors) = sse(&server, ADMIN_KEY, "test/stream").await;
    assert!(errors.is_empty());
    assert!(data.iter().any(|d| d.contains("beta")), "{data:?}");

    // Cut after the first byte: no fallback, an SSE error event with BACKEND_ERROR.
    a.set_mode(Mode::CutAfterFirst);
    let b_calls = b.chat_calls();
    let (headers, data, errors) = sse(&server, ADMIN_KEY, "test/stream").await;
    assert_eq!(data.len(), 1, "{data:?}");
    assert!(!data.contains(&"[DONE]".to_owned()));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["error"]["code"], "BACKEND_ERROR");
    assert_eq!(
        errors[0]["error"]["request_id"],
        headers["x-scaigrid-request-id"].to_str().unwrap()
    );
    assert_eq!(b.chat_calls(), b_calls, "no fallback after the first byte");

    // A stream that outlives DISPATCH_STREAM_TIMEOUT_S (2 s here) is ended with an error.
    a.set_mode(Mode::StallAfterFirst);
    let started = std::time::Instant::now();
    let (_, data, errors) = sse(&server, ADMIN_KEY, "test/stream").await;
    assert_eq!(data.len(), 1);
    assert_eq!(errors[0]["error"]["code"], "BACKEND_ERROR");
    assert!(
        errors[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DISPATCH_STREAM_TIMEOUT_S"),
        "{errors:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn rate_limits_per_key_and_tenant_with_headers() {
    let server = server().await;
    let up = upstream::start("alpha", "ka").await;
    let id = backend(&server, &up, "ka").await;
    model(
        &server,
        "test/limited",
        json!([{"backend_id": id}]),
        json!({}),
    )
    .await;
    let tenant = server.tenant("limited").await;
    let (status, key) = server
        .post(
            "/v1/api-keys",
            Some(&tenant.admin_key),
            json!({"name": "svc", "roles": ["member"], "rate_limit": {"requests_per_minute": 3}}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().unwrap().to_owned();

    for remaining in ["2", "1", "0"] {
        let response = server
            .http
            .post(server.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&chat_body("test/limited"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let h = response.headers();
        assert_eq!(h["x-scaigrid-ratelimit-limit"], "3");
        assert_eq!(h["x-scaigrid-ratelimit-remaining"], remaining);
        assert_eq!(h["x-ratelimit-remaining"], remaining);
        let reset: u64 = h["x-scaigrid-ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(reset >= now && reset <= now + 61, "{reset} vs {now}");
    }
    let calls = up.chat_calls();
    let response = server
        .http
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&chat_body("test/limited"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let h = response.headers().clone();
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(h["x-scaigrid-ratelimit-limit"], "3");
    assert_eq!(h["x-scaigrid-ratelimit-remaining"], "0");
    assert_eq!(h["x-scaigrid-ratelimit-scope"], "api_key:requests");
    let body: Value = response.json().await.unwrap();
    assert_error(429, &body, 429, "RATE_LIMITED");
    assert_eq!(
        up.chat_calls(),
        calls,
        "a limited call never reaches upstream"
    );
    // Another key of the tenant is not limited by this key's limit.
    let (status, _) = chat(&server, &tenant.member_key, "test/limited").await;
    assert_eq!(status, 200);

    // Tenant level: tokens per minute. Each call uses 15 tokens; 20 per minute admits
    // two calls (the second puts the bucket in debt), then refuses.
    let (status, body) = server
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/tenants/{}", tenant.id),
            Some(ADMIN_KEY),
            Some(json!({"rate_limit": {"tokens_per_minute": 20}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let other_key = server.key(&tenant.admin_key, &tenant.id, &["member"]).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(chat(&server, &other_key, "test/limited").await);
    }
    assert_eq!(statuses[0].0, 200, "{:?}", statuses[0]);
    assert_eq!(statuses[1].0, 200, "{:?}", statuses[1]);
    assert_error(statuses[2].0, &statuses[2].1, 429, "RATE_LIMITED");
    assert_eq!(statuses[2].1["error"]["dimension"], "tokens");
    assert_eq!(statuses[2].1["error"]["scope"], "tenant");
    // Routes without limits (admin, health) carry no rate-limit headers.
    let response = server
        .http
        .get(server.url("/v1/models"))
        .bearer_auth(&other_key)
        .send()
        .await
        .unwrap();
    assert!(
        !response
            .headers()
            .contains_key("x-scaigrid-ratelimit-limit")
    );
}

#[tokio::test]
async fn a_concurrent_burst_never_overshoots_a_budget_and_usage_adds_up() {
    let server = server().await;
    let up = upstream::start("alpha", "ka").await;
    up.set_delay(Duration::from_millis(300));
    let id = backend(&server, &up, "ka").await;
    // 10 prompt + 5 completion tokens at these prices cost exactly 1.0 per call, and the
    // request's estimate (24 characters + 4 per message, max_tokens 5) is also 1.0.
    model(
        &server,
        "test/priced",
        json!([{"backend_id": id}]),
        json!({"pricing": {"input_per_1k": 50.0, "output_per_1k": 100.0}}),
    )
    .await;
    let tenant = server.tenant("budgeted").await;
    let (status, budget) = server
        .post(
            "/v1/accounting/budgets",
            Some(&tenant.admin_key),
            json!({"scope": "tenant", "scope_id": tenant.id, "period": "day", "limit": 5.0}),
        )
        .await;
    assert_eq!(status, 201, "{budget}");
    assert_eq!(budget["used"], 0.0);
    assert_eq!(budget["remaining"], 5.0);

    let burst = (0..20).map(|_| chat(&server, &tenant.member_key, "test/priced"));
    let results = futures_util::future::join_all(burst).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    for (status, body) in results.iter().filter(|(s, _)| *s != 200) {
        assert_error(*status, body, 429, "BUDGET_EXCEEDED");
        assert_eq!(body["error"]["limit"], 5.0);
    }
    assert_eq!(ok, 5, "exactly what fits: no overshoot, no false refusal");
    let (status, body) = chat(&server, &tenant.member_key, "test/priced").await;
    assert_error(status, &body, 429, "BUDGET_EXCEEDED");
    assert_eq!(up.chat_calls(), 5);

    let (status, budgets) = server
        .get("/v1/accounting/budgets", Some(&tenant.admin_key))
        .await;
    assert_eq!(status, 200, "{budgets}");
    let b = &budgets["data"][0];
    assert_eq!(b["used"], 5.0, "{budgets}");
    assert_eq!(b["remaining"], 0.0);
    assert!(b["resets_at"].as_str().unwrap().ends_with("T00:00:00Z"));

    // Usage totals equal the sum of the requests, grouped every way.
    let (status, usage) = server
        .get(
            "/v1/accounting/usage?group_by=model",
            Some(&tenant.admin_key),
        )
        .await;
    assert_eq!(status, 200, "{usage}");
    let row = &usage["data"][0];
    assert_eq!(row["key"], "test/priced");
    assert_eq!(row["requests"], 5);
    assert_eq!(row["input_tokens"], 50);
    assert_eq!(row["output_tokens"], 25);
    assert_eq!(row["cost"], 5.0);
    let (_, usage) = server
        .get(
            "/v1/accounting/usage?group_by=module",
            Some(&tenant.admin_key),
        )
        .await;
    assert_eq!(usage["data"][0]["key"], "chat");
    let (_, usage) = server
        .get("/v1/accounting/usage?group_by=day", Some(&tenant.admin_key))
        .await;
    assert_eq!(usage["data"][0]["requests"], 5);
    assert_eq!(usage["data"][0]["key"].as_str().unwrap().len(), 10);
    let (_, usage) = server
        .get(
            "/v1/accounting/usage?group_by=api_key",
            Some(&tenant.admin_key),
        )
        .await;
    assert!(
        usage["data"][0]["key"]
            .as_str()
            .unwrap()
            .starts_with("key_")
    );
    let (status, body) = server
        .get(
            "/v1/accounting/usage?group_by=color",
            Some(&tenant.admin_key),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    // Another tenant sees none of it.
    let other = server.tenant("nosy").await;
    let (_, usage) = server
        .get("/v1/accounting/usage", Some(&other.admin_key))
        .await;
    assert_eq!(usage["data"], json!([]));
    let (status, body) = server
        .get(
            &format!("/v1/accounting/usage?tenant_id={}", tenant.id),
            Some(&other.admin_key),
        )
        .await;
    assert_error(status, &body, 404, "NOT_FOUND");

    // Crossing the limit emitted one budget.exceeded event for webhooks.
    let events = server
        .sql_count("SELECT COUNT(*) FROM event_outbox WHERE name = 'budget.exceeded'")
        .await;
    assert_eq!(events, 1);

    // Usage without upstream `usage` is counted: about 4 characters per token.
    up.set_usage(false);
    up.set_delay(Duration::ZERO);
    let (status, _) = chat(&server, ADMIN_KEY, "test/priced").await;
    assert_eq!(status, 200);
    let (_, usage) = server.get("/v1/accounting/usage", Some(ADMIN_KEY)).await;
    let row = &usage["data"][0];
    assert_eq!(row["input_tokens"], 10, "{usage}");
    assert_eq!(
        row["output_tokens"], 4,
        "\"Hello from alpha\" is 16 characters"
    );
}

/// The official OpenAI Python SDK does chat and streaming chat unchanged.
#[tokio::test]
async fn the_openai_python_sdk_chats_and_streams() {
    let python = crate::support::python_with_openai_sdk();
    let server = server().await;
    let up = upstream::start("alpha", "ka").await;
    let id = backend(&server, &up, "ka").await;
    model(
        &server,
        "scailabs/poolnoodle-omni",
        json!([{"backend_id": id}]),
        json!({}),
    )
    .await;
    let script = r#"
import sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2])
print([m.id for m in client.models.list().data])
r = client.chat.completions.create(model="scailabs/poolnoodle-omni",
    messages=[{"role": "user", "content": "hi"}])
print(r.choices[0].message.content, r.usage.total_tokens)
parts = []
for chunk in client.chat.completions.create(model="scailabs/poolnoodle-omni",
        messages=[{"role": "user", "content": "hi"}], stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
print("".join(parts))
try:
    client.chat.completions.create(model="scailabs/missing", messages=[{"role": "user", "content": "hi"}])
except Exception as e:
    print(type(e).__name__, e.status_code)
"#;
    let run = |script: &'static str| {
        let (python, base) = (python.clone(), server.base.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(&python)
                .args(["-c", script, &base, ADMIN_KEY])
                .output()
                .unwrap()
        })
    };
    let output = run(script).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "['scailabs/poolnoodle-omni']",
            "Hello from alpha 15",
            "Hello from alpha",
            "NotFoundError 404"
        ],
        "{stdout}"
    );

    // An upstream that dies mid-stream: the SDK gets the text so far, then raises the
    // gateway's `error` event instead of ending as if the answer were complete.
    up.set_mode(upstream::Mode::CutAfterFirst);
    let cut = r#"
import sys
from openai import OpenAI, APIError
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
parts = []
try:
    for chunk in client.chat.completions.create(model="scailabs/poolnoodle-omni",
            messages=[{"role": "user", "content": "hi"}], stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    print("completed", "".join(parts))
except APIError as e:
    print("raised", type(e).__name__, repr("".join(parts)), e.body.get("code") if isinstance(e.body, dict) else e.body)
"#;
    let output = run(cut).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("raised APIError 'Hello"), "{stdout}");
    assert!(stdout.trim_end().ends_with("BACKEND_ERROR"), "{stdout}");
}

/// The gateway's SQL (catalogue, budgets, usage grouping, webhooks) on PostgreSQL.
#[tokio::test]
async fn gateway_accounting_and_webhooks_on_postgres() {
    let Some(database_url) = crate::support::postgres_database().await else {
        return;
    };
    let server = Server::start_with(Options {
        database_url: Some(database_url),
        config_toml: Some(format!(
            "{CONFIG}[webhooks]\nallow_private_targets = true\nretry_base_ms = 100\n"
        )),
        ..Options::default()
    })
    .await;
    let up = upstream::start("alpha", "ka").await;
    let id = backend(&server, &up, "ka").await;
    model(
        &server,
        "test/pg",
        json!([{"backend_id": id}]),
        json!({"pricing": {"input_per_1k": 50.0, "output_per_1k": 100.0}}),
    )
    .await;
    let tenant = server.tenant("pg").await;
    let (status, _) = server
        .post(
            "/v1/accounting/budgets",
            Some(&tenant.admin_key),
            json!({"scope": "tenant", "scope_id": tenant.id, "period": "month", "limit": 2.0}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, webhook) = server
        .post(
            "/v1/webhooks",
            Some(&tenant.admin_key),
            json!({"url": format!("{}/models", up.base), "events": ["budget.exceeded"]}),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    for _ in 0..2 {
        let (status, body) = chat(&server, &tenant.member_key, "test/pg").await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = chat(&server, &tenant.member_key, "test/pg").await;
    assert_error(status, &body, 429, "BUDGET_EXCEEDED");
    for group in ["model", "api_key", "module", "day"] {
        let (status, usage) = server
            .get(
                &format!("/v1/accounting/usage?group_by={group}"),
                Some(&tenant.admin_key),
            )
            .await;
        assert_eq!(status, 200, "{usage}");
        assert_eq!(usage["data"][0]["requests"], 2, "{group}: {usage}");
        assert_eq!(usage["data"][0]["cost"], 2.0, "{group}: {usage}");
    }
    // The upstream's GET-only /models answers the POST with 405: a failed delivery,
    // logged with its status, retried.
    let id = webhook["id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, list) = server
            .get(
                &format!("/v1/webhooks/{id}/deliveries"),
                Some(&tenant.admin_key),
            )
            .await;
        if list["data"][0]["attempt"].as_i64().unwrap_or(0) >= 2 {
            assert_eq!(list["data"][0]["status_code"], 405, "{list}");
            assert_eq!(list["data"][0]["event"], "budget.exceeded");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Beyond `gateway.max_in_flight` chat calls, new ones are shed at once with 503 and
/// `Retry-After` (never reaching upstream); the calls in flight finish normally and
/// their places are given back.
#[tokio::test]
async fn calls_beyond_the_in_flight_limit_are_shed_with_retry_after() {
    let server = server_with("max_in_flight = 2\n").await;
    let up = upstream::start("slow", "ks").await;
    up.set_delay(Duration::from_millis(1500));
    let id = backend(&server, &up, "ks").await;
    model(&server, "test/slow", json!([{"backend_id": id}]), json!({})).await;
    let (first, second) = (
        tokio::spawn({
            let (http, url) = (server.http.clone(), server.url("/v1/chat/completions"));
            async move { call_raw(&http, &url).await }
        }),
        tokio::spawn({
            let (http, url) = (server.http.clone(), server.url("/v1/chat/completions"));
            async move { call_raw(&http, &url).await }
        }),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while up.chat_calls() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the two calls never reached upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = server
        .http
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(ADMIN_KEY)
        .json(&chat_body("test/slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_error(503, &body, 503, "SERVICE_UNAVAILABLE");
    assert_eq!(body["error"]["limit"], 2, "{body}");
    assert_eq!(up.chat_calls(), 2, "a shed call never reaches upstream");
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(second.await.unwrap(), 200);
    up.set_delay(Duration::ZERO);
    let (status, body) = chat(&server, ADMIN_KEY, "test/slow").await;
    assert_eq!(status, 200, "the places were given back: {body}");
    assert!(
        server
            .metrics()
            .await
            .contains("scaigrid_gateway_shed_total 1"),
        "the shed call is counted"
    );
}

async fn call_raw(http: &reqwest::Client, url: &str) -> u16 {
    http.post(url)
        .bearer_auth(ADMIN_KEY)
        .json(&chat_body("test/slow"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_prompt_over_the_models_context_is_413_with_the_limit() {
    let server = server().await;
    let up = upstream::start("ctx", "ctx-key").await;
    let id = backend(&server, &up, "ctx-key").await;
    let routes = json!([{"backend_id": id}]);
    // Context sizes a model could have, and nothing else.
    for bad in [json!(0), json!(10_000_001), json!(-5), json!("big")] {
        let request = json!({"slug": "ctx/bad", "routing": {"backends": routes.clone()},
            "context_length": bad});
        let (status, body) = server.post("/v1/models", Some(ADMIN_KEY), request).await;
        assert_eq!(status, 400, "{body}");
    }
    model(&server, "ctx/small", routes, json!({"context_length": 64})).await;
    let (status, listed) = server.get("/v1/models/ctx/small", Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["context_length"], 64, "{listed}");
    let long = "word ".repeat(400);
    let chat = |content: &str, max_tokens: u64| {
        json!({"model": "ctx/small", "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens})
    };
    let (status, body) = server
        .post("/v1/chat/completions", Some(ADMIN_KEY), chat(&long, 5))
        .await;
    assert_error(status, &body, 413, "CTX_TOO_LARGE");
    assert_eq!(body["error"]["limit"], 64, "{body}");
    assert!(
        body["error"]["prompt_tokens"].as_u64().unwrap() > 64,
        "{body}"
    );
    // The completion asked for counts too.
    let (status, body) = server
        .post("/v1/chat/completions", Some(ADMIN_KEY), chat("Hi.", 100))
        .await;
    assert_error(status, &body, 413, "CTX_TOO_LARGE");
    let (status, body) = server
        .post("/v1/chat/completions", Some(ADMIN_KEY), chat("Hi.", 5))
        .await;
    assert_eq!(status, 200, "{body}");
    // 0 removes the limit.
    let (status, body) = server
        .send(
            reqwest::Method::PATCH,
            "/v1/models/ctx/small",
            Some(ADMIN_KEY),
            Some(json!({"context_length": 0})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["context_length"], Value::Null, "{body}");
    let (status, body) = server
        .post("/v1/chat/completions", Some(ADMIN_KEY), chat(&long, 5))
        .await;
    assert_eq!(status, 200, "{body}");
}

/// The router health view: per backend its breaker, probe and last-minutes calls
/// (requests, error rate, p50/p99), per model whether it answers now, and which models
/// are `MODEL_UNAVAILABLE`; tenants see their models only, not the backends.
#[tokio::test]
async fn router_health_shows_breakers_windows_and_unavailable_models() {
    let server = server().await;
    let up = upstream::start("alpha", "alpha-key").await;
    let id = backend(&server, &up, "alpha-key").await;
    model(
        &server,
        "acme/health",
        json!([{"backend_id": id}]),
        json!({}),
    )
    .await;
    let acme = server.tenant("acme").await;
    for _ in 0..4 {
        assert_eq!(chat(&server, &acme.member_key, "acme/health").await.0, 200);
    }
    let health = |key: &str, path: &str| {
        let (server, key, path) = (&server, key.to_owned(), path.to_owned());
        async move {
            let (status, body) = server.get(&path, Some(&key)).await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let view = health(ADMIN_KEY, "/v1/router/health").await;
    assert_eq!(view["window_seconds"], 300, "{view}");
    let alpha = &view["backends"][0];
    assert_eq!(
        (&alpha["id"], &alpha["breaker"], &alpha["usable"]),
        (&json!(id), &json!("closed"), &json!(true)),
        "{view}"
    );
    assert_eq!(
        (&alpha["requests"], &alpha["errors"]),
        (&json!(4), &json!(0)),
        "{view}"
    );
    assert!(
        alpha["p50_ms"].as_f64().is_some() && alpha["p99_ms"].as_f64().is_some(),
        "{view}"
    );
    let health_model = view["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["slug"] == "acme/health")
        .unwrap()
        .clone();
    assert_eq!(
        (&health_model["status"], &health_model["requests"]),
        (&json!("available"), &json!(4)),
        "{view}"
    );
    assert_eq!(view["unavailable_models"], json!([]), "{view}");

    // The upstream fails: three failures open the breaker and the model is unavailable.
    up.set_mode(Mode::Fail(500));
    for _ in 0..3 {
        let (status, body) = chat(&server, &acme.member_key, "acme/health").await;
        assert_error(status, &body, 502, "BACKEND_ERROR");
    }
    let (status, body) = chat(&server, &acme.member_key, "acme/health").await;
    assert_error(status, &body, 503, "MODEL_UNAVAILABLE");
    for path in ["/v1/router/health", "/api/v1/admin/router/health"] {
        let view = health(ADMIN_KEY, path).await;
        let alpha = &view["backends"][0];
        assert_eq!(
            (&alpha["breaker"], &alpha["usable"]),
            (&json!("open"), &json!(false)),
            "{view}"
        );
        assert_eq!(
            (&alpha["requests"], &alpha["errors"]),
            (&json!(7), &json!(3)),
            "{view}"
        );
        let rate = alpha["error_rate"].as_f64().unwrap();
        assert!((rate - 3.0 / 7.0).abs() < 1e-9, "{view}");
        assert_eq!(view["unavailable_models"], json!(["acme/health"]), "{view}");
        let m = view["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["slug"] == "acme/health")
            .unwrap()
            .clone();
        assert_eq!(
            (&m["status"], &m["backends_usable"], &m["errors"]),
            (&json!("unavailable"), &json!(0), &json!(4)),
            "{view}"
        );
    }
    // A tenant sees its models' health, not the platform's backends.
    let view = health(&acme.member_key, "/v1/router/health").await;
    assert!(view.get("backends").is_none(), "{view}");
    assert_eq!(view["unavailable_models"], json!(["acme/health"]), "{view}");
    let (status, body) = server.get("/v1/router/health", None).await;
    assert_error(status, &body, 401, "AUTH_TOKEN_MISSING");
}
