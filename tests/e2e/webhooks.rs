//! Webhooks end to end: a real event (`budget.exceeded` from a chat call) delivered
//! signed to a receiver the test starts, retried with backoff, logged in the delivery
//! list, auto-disabled after repeated failures, surviving a restart; and targets that
//! are refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN_KEY, Options, Server, assert_error};
use crate::upstream;

/// A receiver that answers 500 to its first `fail_first` requests (all when
/// `usize::MAX`), then 200, and keeps every request.
#[derive(Clone)]
pub(crate) struct Receiver {
    pub(crate) url: String,
    pub(crate) seen: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    fail_first: Arc<AtomicUsize>,
}

pub(crate) async fn receiver(fail_first: usize) -> Receiver {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicUsize::new(fail_first));
    let (sink, left) = (seen.clone(), failures.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (sink, left) = (sink.clone(), left.clone());
            async move {
                sink.lock().unwrap().push((headers, body));
                let fail = left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                        0 => None,
                        usize::MAX => Some(usize::MAX),
                        n => Some(n - 1),
                    })
                    .is_ok();
                match fail {
                    true => StatusCode::INTERNAL_SERVER_ERROR,
                    false => StatusCode::OK,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        url: format!("http://{address}/hook"),
        seen,
        fail_first: failures,
    }
}

pub(crate) fn config(retry_base_ms: u64, extra: &str) -> String {
    format!(
        "[engines]\nenabled = false\n[webhooks]\nallow_private_targets = true\n\
         retry_base_ms = {retry_base_ms}\n{extra}"
    )
}

pub(crate) async fn deliveries_when(
    server: &Server,
    key: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, list) = server
            .get(&format!("/v1/webhooks/{id}/deliveries"), Some(key))
            .await;
        assert_eq!(status, 200, "{list}");
        if done(&list) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries never got there: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Subscribes `url` to `events` as `key`; the created webhook (with its secret).
pub(crate) async fn subscribe(server: &Server, key: &str, url: &str, events: &[&str]) -> Value {
    let (status, webhook) = server
        .post(
            "/v1/webhooks",
            Some(key),
            json!({"url": url, "events": events}),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    webhook
}

pub(crate) async fn add_event(server: &Server, id: &str, tenant_id: &str, name: &str) {
    server
        .sql(&format!(
            "INSERT INTO event_outbox (id, tenant_id, name, payload, created_at) \
             VALUES ('{id}', '{tenant_id}', '{name}', '{{\"n\":1}}', 1)"
        ))
        .await;
}

#[tokio::test]
async fn a_real_event_is_delivered_signed_after_retries() {
    let server = Server::start_with(Options {
        config_toml: Some(config(200, "max_attempts = 5\n")),
        ..Options::default()
    })
    .await;
    let hook = receiver(2).await;
    let tenant = server.tenant("hooked").await;

    // Names are case-sensitive and must be known.
    let (status, body) = server
        .post(
            "/v1/webhooks",
            Some(&tenant.admin_key),
            json!({"url": hook.url, "events": ["Budget.Exceeded"]}),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("budget.exceeded")
    );
    // Never the server itself, even with private targets allowed.
    let (status, body) = server
        .post(
            "/v1/webhooks",
            Some(&tenant.admin_key),
            json!({"url": server.url("/v1/models"), "events": ["budget.exceeded"]}),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    // Members cannot create webhooks.
    let (status, body) = server
        .post(
            "/v1/webhooks",
            Some(&tenant.member_key),
            json!({"url": hook.url, "events": ["budget.exceeded"]}),
        )
        .await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");

    let webhook = subscribe(
        &server,
        &tenant.admin_key,
        &hook.url,
        &["budget.exceeded", "voice.ready"],
    )
    .await;
    let id = webhook["id"].as_str().unwrap().to_owned();
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    assert_eq!(webhook["status"], "active");
    let (_, shown) = server
        .get(&format!("/v1/webhooks/{id}"), Some(&tenant.admin_key))
        .await;
    assert!(
        shown.get("secret").is_none(),
        "the secret is shown once: {shown}"
    );

    // A chat call that spends the tenant's budget emits budget.exceeded.
    let up = upstream::start("alpha", "ka").await;
    let (_, backend) = server
        .post(
            "/v1/backends",
            Some(ADMIN_KEY),
            json!({"name": "alpha", "kind": "openai", "base_url": up.base, "api_key": "ka"}),
        )
        .await;
    let (status, _) = server
        .post(
            "/v1/models",
            Some(ADMIN_KEY),
            json!({"slug": "test/priced", "routing": {"backends": [{"backend_id": backend["id"]}]},
                "pricing": {"input_per_1k": 100.0, "output_per_1k": 100.0}}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = server
        .post(
            "/v1/accounting/budgets",
            Some(&tenant.admin_key),
            json!({"scope": "tenant", "scope_id": tenant.id, "period": "month", "limit": 0.5}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = server
        .post(
            "/v1/chat/completions",
            Some(&tenant.member_key),
            json!({"model": "test/priced", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Two 500s, then 200: one delivery, three attempts, the last one logged.
    let list = deliveries_when(&server, &tenant.admin_key, &id, |list| {
        list["data"][0]["status"] == "succeeded"
    })
    .await;
    let delivery = &list["data"][0];
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(delivery["event"], "budget.exceeded");
    assert_eq!(delivery["attempt"], 3);
    assert_eq!(delivery["status_code"], 200);

    let seen = hook.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for (headers, body) in &seen {
        // Same idempotency id on every attempt; a valid signature over time and body.
        assert_eq!(
            headers["x-scaigrid-delivery"],
            delivery["id"].as_str().unwrap()
        );
        assert_eq!(
            headers["idempotency-key"],
            delivery["event_id"].as_str().unwrap()
        );
        assert_eq!(headers["x-scaigrid-event"], "budget.exceeded");
        let timestamp: i64 = headers["x-scaigrid-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            headers["x-scaigrid-signature"],
            scaigrid::webhooks::sign::signature(&[&secret], timestamp, body.as_bytes()).as_str()
        );
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!(event["type"], "budget.exceeded");
        assert_eq!(event["id"], delivery["event_id"]);
        assert_eq!(event["tenant_id"], tenant.id.as_str());
        assert_eq!(event["data"]["limit"], 0.5);
    }

    // Another tenant sees neither the webhook nor its deliveries.
    let other = server.tenant("other").await;
    let (status, body) = server
        .get(
            &format!("/v1/webhooks/{id}/deliveries"),
            Some(&other.admin_key),
        )
        .await;
    assert_error(status, &body, 404, "NOT_FOUND");
    let (_, list) = server.get("/v1/webhooks", Some(&other.admin_key)).await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn repeated_failures_disable_a_webhook() {
    let server = Server::start_with(Options {
        config_toml: Some(config(
            200,
            "max_attempts = 2\ndisable_after_failures = 3\n",
        )),
        ..Options::default()
    })
    .await;
    let hook = receiver(usize::MAX).await;
    let tenant = server.tenant("flaky").await;
    let webhook = subscribe(
        &server,
        &tenant.admin_key,
        &hook.url,
        &["transcription.job.completed"],
    )
    .await;
    let id = webhook["id"].as_str().unwrap().to_owned();
    add_event(&server, "evt_a", &tenant.id, "transcription.job.completed").await;
    add_event(&server, "evt_other_name", &tenant.id, "voice.ready").await;
    // Event one: two attempts, then `failed`; event two's first failure is the third
    // in a row and disables the webhook.
    let list = deliveries_when(&server, &tenant.admin_key, &id, |list| {
        list["data"][0]["status"] == "failed"
    })
    .await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "unsubscribed events skipped"
    );
    assert_eq!(list["data"][0]["attempt"], 2);
    assert_eq!(list["data"][0]["status_code"], 500);
    assert!(list["data"][0]["error"].as_str().unwrap().contains("500"));
    assert_eq!(list["data"][0]["failure_reason"], "RECEIVER_ERROR");
    assert_eq!(list["data"][0]["failure_detail"], list["data"][0]["error"]);
    add_event(&server, "evt_b", &tenant.id, "transcription.job.completed").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let shown = loop {
        let (_, shown) = server
            .get(&format!("/v1/webhooks/{id}"), Some(&tenant.admin_key))
            .await;
        if shown["status"] == "disabled" || Instant::now() > deadline {
            break shown;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(shown["status"], "disabled", "{shown}");
    assert!(
        shown["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("3 failed")
    );
    assert_eq!(hook.seen.lock().unwrap().len(), 3);
    // Nothing is sent to a disabled webhook, and events arriving meanwhile are not
    // queued for it.
    add_event(&server, "evt_c", &tenant.id, "transcription.job.completed").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(hook.seen.lock().unwrap().len(), 3);
    let (_, list) = server
        .get(
            &format!("/v1/webhooks/{id}/deliveries"),
            Some(&tenant.admin_key),
        )
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "{list}");

    // Re-enabled (failures forgotten), the pending delivery goes out again.
    hook.fail_first.store(0, Ordering::SeqCst);
    let (status, body) = server
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/webhooks/{id}"),
            Some(&tenant.admin_key),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["consecutive_failures"], 0);
    let list = deliveries_when(&server, &tenant.admin_key, &id, |list| {
        list["data"][0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(list["data"][0]["event_id"], "evt_b");
}

#[tokio::test]
async fn a_pending_delivery_survives_a_restart() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let options = || Options {
        data_dir: Some(data.clone()),
        config_toml: Some(config(3000, "max_attempts = 5\n")),
        ..Options::default()
    };
    let server = Server::start_with(options()).await;
    let hook = receiver(usize::MAX).await;
    let tenant = server.tenant("restarted").await;
    let webhook = subscribe(&server, &tenant.admin_key, &hook.url, &["voice.ready"]).await;
    let id = webhook["id"].as_str().unwrap().to_owned();
    add_event(&server, "evt_r", &tenant.id, "voice.ready").await;
    let list = deliveries_when(&server, &tenant.admin_key, &id, |list| {
        list["data"][0]["attempt"] == 1
    })
    .await;
    assert_eq!(list["data"][0]["status"], "pending");
    assert!(list["data"][0]["next_attempt_at"].is_string());
    // The server goes away with the retry still pending; the receiver recovers; the
    // next process delivers it.
    drop(server);
    hook.fail_first.store(0, Ordering::SeqCst);
    let server = Server::start_with(options()).await;
    let list = deliveries_when(&server, &tenant.admin_key, &id, |list| {
        list["data"][0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(list["data"][0]["attempt"], 2);
    assert_eq!(hook.seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn internal_targets_are_refused_by_default() {
    let server = Server::start_with(Options {
        config_toml: Some("[engines]\nenabled = false\n".into()),
        ..Options::default()
    })
    .await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.8/hook",
        "http://[::1]:8080/hook",
        "ftp://example.com/hook",
        "http://user:pw@example.com/hook",
    ] {
        let (status, body) = server
            .post(
                "/v1/webhooks",
                Some(ADMIN_KEY),
                json!({"url": url, "events": ["voice.ready"]}),
            )
            .await;
        assert_error(status, &body, 400, "INVALID_REQUEST");
    }
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_old_one_until_the_overlap_ends() {
    let server = Server::start_with(Options {
        config_toml: Some(config(200, "")),
        ..Options::default()
    })
    .await;
    let hook = receiver(0).await;
    let tenant = server.tenant("rotating").await;
    let webhook = subscribe(&server, &tenant.admin_key, &hook.url, &["voice.ready"]).await;
    let id = webhook["id"].as_str().unwrap().to_owned();
    let old = webhook["secret"].as_str().unwrap().to_owned();
    let rotate = format!("/v1/webhooks/{id}/rotate-secret");

    // Refused: a member, an overlap over a week, a short secret.
    let (status, body) = server
        .post(&rotate, Some(&tenant.member_key), json!({}))
        .await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");
    let (status, body) = server
        .post(
            &rotate,
            Some(&tenant.admin_key),
            json!({"overlap_seconds": 604801}),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, body) = server
        .post(&rotate, Some(&tenant.admin_key), json!({"secret": "short"}))
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");

    // Rotated with the default overlap: deliveries carry both signatures, new first.
    let (status, rotated) = server
        .post(&rotate, Some(&tenant.admin_key), json!({}))
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(
        rotated["previous_secret_expires_at"].is_string(),
        "{rotated}"
    );
    let (_, shown) = server
        .get(&format!("/v1/webhooks/{id}"), Some(&tenant.admin_key))
        .await;
    assert!(
        shown.get("secret").is_none(),
        "the secret is shown only once: {shown}"
    );
    add_event(&server, "evt_rot_1", &tenant.id, "voice.ready").await;
    deliveries_when(&server, &tenant.admin_key, &id, |list| {
        list["data"][0]["status"] == "succeeded"
    })
    .await;
    let signed = |index: usize| {
        let seen = hook.seen.lock().unwrap();
        let (headers, body) = &seen[index];
        let header = headers["x-scaigrid-signature"].to_str().unwrap().to_owned();
        let timestamp: i64 = header
            .split(',')
            .find_map(|part| part.strip_prefix("t="))
            .unwrap()
            .parse()
            .unwrap();
        (header, timestamp, body.clone())
    };
    let (header, timestamp, body) = signed(0);
    assert_eq!(
        header,
        scaigrid::webhooks::sign::signature(&[&new, &old], timestamp, body.as_bytes())
    );

    // Rotated again with no overlap: only the newest secret signs.
    let (status, again) = server
        .post(
            &rotate,
            Some(&tenant.admin_key),
            json!({"overlap_seconds": 0}),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    let newest = again["secret"].as_str().unwrap().to_owned();
    assert!(again["previous_secret_expires_at"].is_null(), "{again}");
    add_event(&server, "evt_rot_2", &tenant.id, "voice.ready").await;
    deliveries_when(&server, &tenant.admin_key, &id, |list| {
        list["data"].as_array().is_some_and(|d| d.len() == 2)
            && list["data"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["status"] == "succeeded")
    })
    .await;
    let (header, timestamp, body) = signed(1);
    assert_eq!(
        header,
        scaigrid::webhooks::sign::signature(&[&newest], timestamp, body.as_bytes())
    );
}
