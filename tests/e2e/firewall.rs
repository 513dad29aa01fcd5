//! The firewall: tenant policies that block, audit or redact chat input and output
//! (streamed answers cut as they are said), the guardrails test endpoint and its seed
//! alias, and policies that are wrong or not the caller's.

use serde_json::{Value, json};

use crate::support::{ADMIN_KEY, Options, Server, assert_error};
use crate::upstream::{self, Upstream};

const POLICIES: &str = "/v1/firewall/policies";

async fn server() -> Server {
    Server::start_with(Options {
        config_toml: Some("[engines]\nenabled = false\n".into()),
        ..Options::default()
    })
    .await
}

/// A model `acme/chat` on `upstream`.
async fn chat_model(server: &Server, upstream: &Upstream) {
    let (status, backend) = server
        .post(
            "/v1/backends",
            Some(ADMIN_KEY),
            json!({"name": "up", "kind": "openai", "base_url": upstream.base, "api_key": "k"}),
        )
        .await;
    assert_eq!(status, 201, "{backend}");
    crate::gateway::model(
        server,
        "acme/chat",
        json!([{"backend_id": backend["id"], "upstream_model": "up-model"}]),
        json!({}),
    )
    .await;
}

async fn chat(server: &Server, key: &str, content: &str) -> (u16, Value) {
    server
        .post(
            "/v1/chat/completions",
            Some(key),
            json!({"model": "acme/chat", "messages": [{"role": "user", "content": content}]}),
        )
        .await
}

async fn policy(server: &Server, key: &str, body: Value) -> Value {
    let (status, created) = server.post(POLICIES, Some(key), body).await;
    assert_eq!(status, 201, "{created}");
    created
}

#[tokio::test]
async fn policies_block_audit_and_redact_chat_and_cut_a_streamed_answer() {
    let server = server().await;
    // The upstream's answer names it: "Hello from ada@example.com".
    let upstream = upstream::start("ada@example.com", "k").await;
    chat_model(&server, &upstream).await;
    let acme = server.tenant("acme").await;
    let other = server.tenant("other").await;
    let admin = acme.admin_key.as_str();
    let member = acme.member_key.as_str();

    // Block: the request never reaches the upstream.
    policy(
        &server,
        admin,
        json!({"name": "secrets", "mode": "block", "stages": ["chat_input"],
            "rules": [{"slug": "no-secret-keys", "kind": "regex", "patterns": ["sk-[A-Za-z0-9]{8,}"]}]}),
    )
    .await;
    let calls = upstream.chat_calls();
    let (status, body) = chat(&server, member, "my key is sk-ABCDEF123456, keep it").await;
    assert_error(status, &body, 403, "FIREWALL_BLOCKED");
    assert_eq!(
        body["error"]["matched_rules"],
        json!(["no-secret-keys"]),
        "{body}"
    );
    assert_eq!(upstream.chat_calls(), calls);
    let (status, body) = chat(&server, member, "hello").await;
    assert_eq!(status, 200, "{body}");
    // Another tenant's calls are not this tenant's policies' business.
    let (status, body) = chat(&server, &other.member_key, "sk-ABCDEF123456").await;
    assert_eq!(status, 200, "{body}");

    // Audit: the call passes, the match is an audit row and a `firewall.matched` event.
    policy(
        &server,
        admin,
        json!({"name": "watch", "mode": "audit",
            "rules": [{"slug": "competitor", "kind": "keyword", "keywords": ["Globex"]}]}),
    )
    .await;
    let (status, body) = chat(&server, member, "what does globex sell?").await;
    assert_eq!(status, 200, "{body}");
    let audited = server
        .sql_count("SELECT COUNT(*) FROM audit_log WHERE action = 'firewall.matched'")
        .await;
    assert!(audited >= 1, "no audit row");
    let events = server
        .sql_count("SELECT COUNT(*) FROM event_outbox WHERE name = 'firewall.matched'")
        .await;
    assert!(events >= 1, "no event");

    // A redact rule whose match spans two messages cannot be redacted in place: refused.
    policy(
        &server,
        admin,
        json!({"name": "split", "mode": "redact", "stages": ["chat_input"],
            "rules": [{"slug": "pair", "kind": "regex", "patterns": ["alpha\\sbeta"]}]}),
    )
    .await;
    let (status, body) = chat(&server, member, "alpha beta in one").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post(
            "/v1/chat/completions",
            Some(member),
            json!({"model": "acme/chat", "messages": [
                {"role": "user", "content": "say alpha"},
                {"role": "user", "content": "beta now"}]}),
        )
        .await;
    assert_error(status, &body, 403, "FIREWALL_BLOCKED");
    assert_eq!(body["error"]["matched_rules"], json!(["pair"]), "{body}");

    // Redact on output: the answer comes back with the e-mail replaced.
    let redact = policy(
        &server,
        admin,
        json!({"name": "pii-out", "mode": "redact", "stages": ["chat_output"],
            "rules": [{"slug": "email", "kind": "pii", "detectors": ["email"]}]}),
    )
    .await;
    let (status, body) = chat(&server, member, "who are you?").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"], "Hello from [REDACTED:email]",
        "{body}"
    );

    // A streamed answer is cut where the rule matches; the e-mail never goes out.
    let id = redact["id"].as_str().unwrap();
    let (status, replaced) = server
        .send(
            reqwest::Method::PUT,
            &format!("{POLICIES}/{id}"),
            Some(admin),
            Some(
                json!({"name": "pii-out", "mode": "block", "stages": ["chat_output"],
                "rules": [{"slug": "email", "kind": "pii", "detectors": ["email"]}]}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{replaced}");
    let response = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(member)
        .json(&json!({"model": "acme/chat", "stream": true,
            "messages": [{"role": "user", "content": "who are you?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.contains("Hello"), "{text}");
    assert!(text.contains("event: error"), "{text}");
    assert!(
        text.contains("FIREWALL_BLOCKED") && text.contains("\"email\""),
        "{text}"
    );
    assert!(!text.contains("ada@example.com"), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    // Non-streamed, the same policy refuses the answer.
    let (status, body) = chat(&server, member, "who are you?").await;
    assert_error(status, &body, 403, "FIREWALL_BLOCKED");

    // The test endpoint and its seed alias; nothing is audited by a test.
    let before = server
        .sql_count("SELECT COUNT(*) FROM audit_log WHERE action = 'firewall.matched'")
        .await;
    for path in ["/v1/guardrails/test", "/api/v1/admin/guardrails/test"] {
        let (status, result) = server
            .post(
                path,
                Some(admin),
                json!({"text": "use sk-ABCDEFGH99 now", "policy": "secrets"}),
            )
            .await;
        assert_eq!(status, 200, "{result}");
        assert_eq!(result["decision"], "block", "{result}");
        assert_eq!(
            result["matched_rules"],
            json!(["no-secret-keys"]),
            "{result}"
        );
        assert_eq!(result["modes"], json!(["block"]), "{result}");
        assert!(
            result["timings"][0]["micros"].as_f64().is_some(),
            "{result}"
        );
    }
    let (_, all) = server
        .post(
            "/v1/guardrails/test",
            Some(admin),
            json!({"text": "Globex"}),
        )
        .await;
    assert_eq!(all["decision"], "audit", "{all}");
    let (_, clean) = server
        .post(
            "/v1/guardrails/test",
            Some(admin),
            json!({"text": "nothing to see", "policy": "secrets"}),
        )
        .await;
    assert_eq!(clean["decision"], "pass", "{clean}");
    let after = server
        .sql_count("SELECT COUNT(*) FROM audit_log WHERE action = 'firewall.matched'")
        .await;
    assert_eq!(before, after);
    let (status, body) = server
        .post(
            "/v1/guardrails/test",
            Some(admin),
            json!({"text": "x", "policy": "nope"}),
        )
        .await;
    assert_error(status, &body, 404, "NOT_FOUND");
    let (status, body) = server
        .post("/v1/guardrails/test", Some(member), json!({"text": "x"}))
        .await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");
}

#[tokio::test]
async fn policies_that_are_wrong_or_not_yours_are_refused() {
    let server = server().await;
    let acme = server.tenant("acme").await;
    let other = server.tenant("other").await;
    let admin = acme.admin_key.as_str();
    let rule = json!({"slug": "r", "kind": "keyword", "keywords": ["x"]});
    let many: Vec<String> = (0..101).map(|n| format!("p{n}")).collect();
    for (body, why) in [
        (
            json!({"name": "a", "mode": "block", "rules": []}),
            "no rules",
        ),
        (
            json!({"name": "a", "mode": "block", "rules": [{"slug": "r", "kind": "regex", "patterns": ["("]}]}),
            "bad regex",
        ),
        (
            json!({"name": "a", "mode": "block", "rules": [{"slug": "r", "kind": "regex", "patterns": ["(\\w{200}){200}"]}]}),
            "huge regex",
        ),
        (
            json!({"name": "a", "mode": "block", "rules": [{"slug": "r", "kind": "keyword", "keywords": many}]}),
            "too many",
        ),
        (
            json!({"name": "a", "mode": "block", "rules": [{"slug": "R R", "kind": "keyword", "keywords": ["x"]}]}),
            "bad slug",
        ),
        (
            json!({"name": "a", "mode": "block", "rules": [rule, rule]}),
            "same slug",
        ),
        (
            json!({"name": "a", "mode": "maybe", "rules": [rule]}),
            "bad mode",
        ),
        (
            json!({"name": "a", "mode": "block", "scope": "planet", "rules": [rule]}),
            "bad scope",
        ),
        (
            json!({"name": "a", "mode": "block", "scope": "model", "rules": [rule]}),
            "no scope_id",
        ),
        (
            json!({"name": "a", "mode": "block", "stages": [], "rules": [rule]}),
            "no stages",
        ),
        (
            json!({"name": "a", "mode": "block", "stages": ["dreams"], "rules": [rule]}),
            "bad stage",
        ),
        (
            json!({"name": "", "mode": "block", "rules": [rule]}),
            "no name",
        ),
        (
            json!({"name": "a", "mode": "block", "rules": [rule], "colour": "red"}),
            "unknown field",
        ),
    ] {
        let (status, body) = server.post(POLICIES, Some(admin), body).await;
        assert_error(status, &body, 400, "INVALID_REQUEST");
        assert!(!body.to_string().is_empty(), "{why}");
    }
    // A key of another tenant cannot be a scope here.
    let (_, keys) = server.get("/v1/api-keys", Some(&other.admin_key)).await;
    let foreign = keys[0]["id"].as_str().unwrap();
    let (status, body) = server
        .post(
            POLICIES,
            Some(admin),
            json!({"name": "a", "mode": "block", "scope": "api_key", "scope_id": foreign, "rules": [rule]}),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");

    let created = policy(
        &server,
        admin,
        json!({"name": "mine", "mode": "audit", "rules": [rule]}),
    )
    .await;
    let (status, body) = server
        .post(
            POLICIES,
            Some(admin),
            json!({"name": "mine", "mode": "audit", "rules": [rule]}),
        )
        .await;
    assert_error(status, &body, 409, "CONFLICT");
    let id = created["id"].as_str().unwrap();
    let path = format!("{POLICIES}/{id}");
    for key in [other.admin_key.as_str()] {
        let (status, body) = server.get(&path, Some(key)).await;
        assert_error(status, &body, 404, "NOT_FOUND");
        let (status, body) = server
            .send(reqwest::Method::DELETE, &path, Some(key), None)
            .await;
        assert_error(status, &body, 404, "NOT_FOUND");
    }
    let (status, body) = server.get(POLICIES, Some(&acme.member_key)).await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");
    let (status, listed) = server.get(POLICIES, Some(admin)).await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let (status, _) = server
        .send(reqwest::Method::DELETE, &path, Some(admin), None)
        .await;
    assert_eq!(status, 204);
    let (_, listed) = server.get(POLICIES, Some(admin)).await;
    assert_eq!(listed, json!([]));
}

#[tokio::test]
async fn texts_to_speak_and_transcripts_are_guarded() {
    let server = Server::start().await;
    let acme = server.tenant("acme").await;
    let admin = acme.admin_key.as_str();
    server.enable_module(admin, "scaiecho").await;
    server.enable_module(admin, "scaispeak").await;
    policy(
        &server,
        admin,
        json!({"name": "cards", "mode": "block", "stages": ["speech_input"],
            "rules": [{"slug": "card", "kind": "pii", "detectors": ["payment_card"]}]}),
    )
    .await;
    let speak = |text: &str| {
        server.post(
            "/v1/audio/speech",
            Some(admin),
            json!({"input": text, "response_format": "wav"}),
        )
    };
    let (status, body) = speak("Read my card: 4111 1111 1111 1111.").await;
    assert_error(status, &body, 403, "FIREWALL_BLOCKED");
    assert_eq!(body["error"]["matched_rules"], json!(["card"]), "{body}");
    let response = reqwest::Client::new()
        .post(server.url("/v1/audio/speech"))
        .bearer_auth(admin)
        .json(&json!({"input": "Hello there.", "response_format": "wav"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // beckett.wav: "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
    let (_, created) = server
        .post(
            POLICIES,
            Some(admin),
            json!({"name": "failures", "mode": "redact", "stages": ["transcript"],
                "rules": [{"slug": "fail", "kind": "regex", "patterns": ["(?i)\\bfail\\w*"]}]}),
        )
        .await;
    let wav = std::fs::read("models/cache/test-audio/beckett.wav").unwrap();
    let transcribe = |fields: &'static [(&'static str, &'static str)]| {
        server.post_wav_form(
            "/v1/modules/scaiecho/transcribe",
            admin,
            fields,
            wav.clone(),
        )
    };
    let (status, body) = transcribe(&[("timestamps", "word")]).await;
    assert_eq!(status, 200, "{body}");
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("[REDACTED:fail]"), "{body}");
    assert!(!text.to_lowercase().contains("fail "), "{body}");
    for segment in body["segments"].as_array().unwrap() {
        assert!(
            !segment["text"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("failed"),
            "{segment}"
        );
        assert!(segment.get("words").is_none(), "{segment}");
    }
    let id = created["id"].as_str().unwrap();
    let (status, _) = server
        .send(
            reqwest::Method::PUT,
            &format!("{POLICIES}/{id}"),
            Some(admin),
            Some(
                json!({"name": "failures", "mode": "block", "stages": ["transcript"],
                "rules": [{"slug": "fail", "kind": "regex", "patterns": ["(?i)\\bfail\\w*"]}]}),
            ),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = transcribe(&[]).await;
    assert_error(status, &body, 403, "FIREWALL_BLOCKED");
    assert!(!body.to_string().contains("Ever tried"), "{body}");
}
