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

    // A job's transcript is guarded when the worker has it: the job fails, no text kept.
    let (status, job) = server
        .post_wav_form(
            "/v1/modules/scaiecho/transcribe",
            admin,
            &[("async", "true")],
            wav.clone(),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let mut job = Value::Null;
    for _ in 0..600 {
        let (_, current) = server
            .get(&format!("/v1/modules/scaiecho/jobs/{id}"), Some(admin))
            .await;
        job = current;
        if job["status"] == "failed" || job["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["failure_reason"], "FIREWALL_BLOCKED", "{job}");
    assert_eq!(job["status_reason"], "blocked by the firewall", "{job}");
    assert!(!job.to_string().contains("Ever tried"), "{job}");
}

/// A backend on `upstream` serving `slug`.
async fn model_on(server: &Server, upstream: &Upstream, slug: &str) {
    let (status, backend) = server
        .post(
            "/v1/backends",
            Some(ADMIN_KEY),
            json!({"name": slug.replace('/', "-"), "kind": "openai", "base_url": upstream.base, "api_key": "k"}),
        )
        .await;
    assert_eq!(status, 201, "{backend}");
    crate::gateway::model(
        server,
        slug,
        json!([{"backend_id": backend["id"], "upstream_model": "up-model"}]),
        json!({}),
    )
    .await;
}

async fn stream_text(server: &Server, key: &str, slug: &str) -> String {
    let response = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": slug, "stream": true,
            "messages": [{"role": "user", "content": "who are you?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// A judge rule asks an evaluator model through the gateway: it blocks what the judge
/// scores at or above the threshold, passes the rest, holds a streamed answer back until
/// it has read it, and when the judge is down refuses in block mode (503
/// `JUDGE_UNREACHABLE`) and passes (recording it) in audit mode.
#[tokio::test]
async fn a_judge_model_decides_and_a_judge_that_is_down_blocks_or_passes_by_mode() {
    let server = server().await;
    let upstream = upstream::start("ada", "k").await;
    chat_model(&server, &upstream).await;
    let rude = upstream::start("stupid-bot", "k").await;
    model_on(&server, &rude, "acme/rude").await;
    let judge = upstream::start("judge", "k").await;
    judge.set_mode(upstream::Mode::Judge);
    model_on(&server, &judge, "acme/judge").await;
    let acme = server.tenant("acme").await;
    let (admin, member) = (acme.admin_key.as_str(), acme.member_key.as_str());

    let judged = policy(
        &server,
        admin,
        json!({"name": "tone", "mode": "block", "stages": ["chat_input"],
            "rules": [{"slug": "abuse", "kind": "judge", "model": "acme/judge",
                "criteria": "insults or abuse", "threshold": 0.5}]}),
    )
    .await;
    assert_eq!(judged["rules"][0]["threshold"], 0.5, "{judged}");
    assert_eq!(judged["rules"][0]["timeout_ms"], 10000, "{judged}");

    // The judge scores 0.9: refused before the chat upstream is called.
    let calls = upstream.chat_calls();
    let (status, body) = chat(&server, member, "you are STUPID").await;
    assert_error(status, &body, 403, "FIREWALL_BLOCKED");
    assert_eq!(body["error"]["matched_rules"], json!(["abuse"]), "{body}");
    assert_eq!(upstream.chat_calls(), calls);
    let prompt = judge.last_prompt();
    assert!(
        prompt.contains("insults or abuse") && prompt.contains("you are STUPID"),
        "{prompt}"
    );
    // It scores 0.1: the call passes.
    let (status, body) = chat(&server, member, "you are kind").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream.chat_calls(), calls + 1);
    // The judge's calls are the tenant's usage, under the `firewall` module.
    let query = format!(
        "SELECT COUNT(*) FROM usage_records WHERE module = 'firewall' AND tenant_id = '{}' \
         AND model = 'acme/judge'",
        acme.id
    );
    let mut billed = 0;
    for _ in 0..50 {
        billed = server.sql_count(&query).await;
        if billed >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(billed, 2, "the judge's calls are not in the usage");
    // The test endpoint asks the judge too and shows its score and timing.
    let (status, result) = server
        .post(
            "/v1/guardrails/test",
            Some(admin),
            json!({"text": "stupid idea", "policy": "tone"}),
        )
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["decision"], "block", "{result}");
    assert_eq!(result["matches"][0]["score"], 0.9, "{result}");
    assert_eq!(result["timings"][0]["rule"], "abuse", "{result}");

    // On a streamed answer a block judge reads the whole answer before a word goes out.
    policy(
        &server,
        admin,
        json!({"name": "tone-out", "mode": "block", "stages": ["chat_output"],
            "scope": "model", "scope_id": "acme/rude",
            "rules": [{"slug": "abuse-out", "kind": "judge", "model": "acme/judge",
                "criteria": "insults or abuse"}]}),
    )
    .await;
    let text = stream_text(&server, member, "acme/rude").await;
    assert!(
        text.contains("event: error") && text.contains("FIREWALL_BLOCKED"),
        "{text}"
    );
    assert!(text.contains("abuse-out"), "{text}");
    assert!(
        !text.contains("Hello") && !text.contains("[DONE]"),
        "{text}"
    );
    // A clean answer under the same kind of policy streams whole, ending in [DONE].
    let clean = policy(
        &server,
        admin,
        json!({"name": "tone-chat", "mode": "block", "stages": ["chat_output"],
            "scope": "model", "scope_id": "acme/chat",
            "rules": [{"slug": "abuse-chat", "kind": "judge", "model": "acme/judge",
                "criteria": "insults or abuse"}]}),
    )
    .await;
    let text = stream_text(&server, member, "acme/chat").await;
    assert!(text.contains("Hello") && text.contains("[DONE]"), "{text}");
    assert!(!text.contains("event: error"), "{text}");
    let (status, _) = server
        .send(
            reqwest::Method::DELETE,
            &format!("{POLICIES}/{}", clean["id"].as_str().unwrap()),
            Some(admin),
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "{status}");

    // The judge's backend is down: block mode refuses with 503, naming the rule.
    judge.set_mode(upstream::Mode::Fail(500));
    let (status, body) = chat(&server, member, "you are kind").await;
    assert_error(status, &body, 503, "JUDGE_UNREACHABLE");
    assert_eq!(body["error"]["judge_rules"], json!(["abuse"]), "{body}");
    let (status, body) = chat(&server, member, "you are kind").await;
    assert_error(status, &body, 503, "JUDGE_UNREACHABLE");
    // Audit mode passes and records that the judge was down.
    let id = judged["id"].as_str().unwrap();
    let (status, _) = server
        .send(
            reqwest::Method::PUT,
            &format!("{POLICIES}/{id}"),
            Some(admin),
            Some(
                json!({"name": "tone", "mode": "audit", "stages": ["chat_input"],
                "rules": [{"slug": "abuse", "kind": "judge", "model": "acme/judge",
                    "criteria": "insults or abuse"}]}),
            ),
        )
        .await;
    assert_eq!(status, 200);
    let before = server
        .sql_count("SELECT COUNT(*) FROM audit_log WHERE action = 'firewall.judge_unreachable'")
        .await;
    let (status, body) = chat(&server, member, "you are kind").await;
    assert_eq!(status, 200, "{body}");
    let after = server
        .sql_count("SELECT COUNT(*) FROM audit_log WHERE action = 'firewall.judge_unreachable'")
        .await;
    assert_eq!(after, before + 1);

    // A judge rule's settings are checked.
    for (rules, wanted) in [
        (
            json!([{"slug": "j", "kind": "judge", "model": "acme/judge"}]),
            "criteria",
        ),
        (
            json!([{"slug": "j", "kind": "judge", "model": "m", "criteria": "c", "threshold": 2}]),
            "threshold",
        ),
        (
            json!([{"slug": "j", "kind": "judge", "model": "m", "criteria": "c", "prompt": "no text"}]),
            "{text}",
        ),
        (
            json!([{"slug": "j", "kind": "judge", "model": "m", "criteria": "c", "keywords": ["x"]}]),
            "keywords",
        ),
    ] {
        let (status, body) = server
            .post(
                POLICIES,
                Some(admin),
                json!({"name": "bad", "mode": "block", "rules": rules}),
            )
            .await;
        assert_error(status, &body, 400, "INVALID_REQUEST");
        assert!(body.to_string().contains(wanted), "{body}");
    }
}

/// Opens a ScaiEcho stream as `key`, sends all of `two_cities.wav` and `close`: every
/// text frame until the close, and the close code.
async fn transcribe_stream(server: &Server, key: &str) -> (Vec<Value>, Option<u16>) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut socket = crate::stream::connect(server, crate::stream::Token::Header(key)).await;
    crate::stream::send_json(
        &mut socket,
        json!({"type": "open", "media_type": "audio/pcm;rate=16000", "language": "en",
            "chunk_seconds": 1.0, "timestamps": "word"}),
    )
    .await;
    assert_eq!(
        crate::stream::next_frame(&mut socket).await["type"],
        "ready"
    );
    let audio = crate::stream::pcm_16k("two_cities.wav");
    for chunk in audio.chunks(32_000) {
        // A closed socket (the stream ended on a block) takes no more audio.
        if socket
            .send(Message::Binary(chunk.to_vec().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = socket
        .send(Message::Text(json!({"type": "close"}).to_string().into()))
        .await;
    crate::stream::until_close(&mut socket).await
}

/// Speech streams are guarded as they go: a transcript stream's deltas are redacted (the
/// words of a redacted final dropped) or the stream ends with `FIREWALL_BLOCKED` (close
/// 4403) before the matching delta; a speak stream refuses a sentence before it is spoken.
#[tokio::test]
async fn speech_streams_are_guarded_as_they_go() {
    let server = Server::start().await;
    let acme = server.tenant("acme").await;
    let admin = acme.admin_key.as_str();
    server.enable_module(admin, "scaiecho").await;
    server.enable_module(admin, "scaispeak").await;
    // two_cities.wav: "It was the best of times, it was the worst of times, ..."
    let rules = json!([{"slug": "era", "kind": "regex", "patterns": ["(?i)\\btimes\\b"]}]);
    let created = policy(
        &server,
        admin,
        json!({"name": "times", "mode": "redact", "stages": ["transcript"], "rules": rules}),
    )
    .await;
    let (frames, code) = transcribe_stream(&server, admin).await;
    assert_eq!(code, Some(1000), "{frames:?}");
    let deltas: Vec<&Value> = frames.iter().filter(|f| f["type"] == "delta").collect();
    assert!(!deltas.is_empty(), "{frames:?}");
    for delta in &deltas {
        let text = delta["text"].as_str().unwrap().to_lowercase();
        assert!(!text.contains("times"), "{delta}");
    }
    let redacted: Vec<&&Value> = deltas
        .iter()
        .filter(|d| d["is_final"] == true && d["text"].as_str().unwrap().contains("[REDACTED:era]"))
        .collect();
    assert!(!redacted.is_empty(), "{frames:?}");
    assert!(
        redacted
            .iter()
            .all(|d| d.get("words").is_none_or(Value::is_null)),
        "{redacted:?}"
    );
    let audited = server
        .sql_count(&format!(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'firewall.matched' AND tenant_id = '{}'",
            acme.id
        ))
        .await;
    assert!(audited >= 1, "no audit row for the redacted finals");

    // Block: the stream ends with the refusal; no delta with the words goes out.
    let id = created["id"].as_str().unwrap();
    let (status, _) = server
        .send(
            reqwest::Method::PUT,
            &format!("{POLICIES}/{id}"),
            Some(admin),
            Some(
                json!({"name": "times", "mode": "block", "stages": ["transcript"], "rules": rules}),
            ),
        )
        .await;
    assert_eq!(status, 200);
    let (frames, code) = transcribe_stream(&server, admin).await;
    assert_eq!(code, Some(4403), "{frames:?}");
    let error = frames
        .iter()
        .find(|f| f["type"] == "error")
        .expect("an error frame");
    assert_eq!(error["code"], "FIREWALL_BLOCKED", "{error}");
    assert_eq!(error["matched_rules"], json!(["era"]), "{error}");
    assert!(
        frames
            .iter()
            .filter(|f| f["type"] == "delta")
            .all(|d| !d["text"].as_str().unwrap().to_lowercase().contains("times")),
        "{frames:?}"
    );
    // Another tenant's stream is not this tenant's policies' business.
    let (frames, code) = transcribe_stream(&server, ADMIN_KEY).await;
    assert_eq!(code, Some(1000), "{frames:?}");

    // Speak: the first sentence is spoken, the second refused before synthesis.
    policy(
        &server,
        admin,
        json!({"name": "words", "mode": "block", "stages": ["speech_input"],
            "rules": [{"slug": "forbidden", "kind": "keyword", "keywords": ["forbidden"]}]}),
    )
    .await;
    use crate::scaispeak::{Got, connect_speak_as, next, text};
    let mut socket = connect_speak_as(&server, admin).await;
    text(
        &mut socket,
        json!({"type": "open", "output": {"codec": "pcm_s16le"}}),
    )
    .await;
    let Got::Json(ready) = next(&mut socket).await else {
        panic!("no ready")
    };
    assert_eq!(ready["type"], "ready", "{ready}");
    text(
        &mut socket,
        json!({"type": "text", "text": "Hello there. "}),
    )
    .await;
    let mut audio = 0;
    loop {
        match next(&mut socket).await {
            Got::Audio(bytes) => {
                audio += bytes.len();
                if audio > 8_000 {
                    break;
                }
            }
            Got::Json(frame) => panic!("{frame}"),
            Got::Closed(code) => panic!("closed {code:?}"),
        }
    }
    text(
        &mut socket,
        json!({"type": "text", "text": "This sentence is forbidden. "}),
    )
    .await;
    let (error, code) = loop {
        match next(&mut socket).await {
            Got::Audio(_) => {}
            Got::Json(frame) if frame["type"] == "error" => {
                let Got::Closed(code) = next(&mut socket).await else {
                    panic!("not closed")
                };
                break (frame, code);
            }
            Got::Json(frame) => panic!("{frame}"),
            Got::Closed(code) => panic!("closed {code:?} with no error frame"),
        }
    };
    assert_eq!(error["code"], "FIREWALL_BLOCKED", "{error}");
    assert_eq!(error["matched_rules"], json!(["forbidden"]), "{error}");
    assert_eq!(code, Some(4403));
}
