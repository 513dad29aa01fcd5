//! The error envelope and request ids on every kind of response, and bad input.

use serde_json::json;

use crate::support::{ADMIN_KEY, Options, Server, assert_error};

#[tokio::test]
async fn request_ids_on_success_and_error() {
    let server = Server::start().await;
    let response = server
        .http
        .get(server.url("/health/live"))
        .send()
        .await
        .unwrap();
    let generated = response.headers()["x-scaigrid-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(response.headers()["x-request-id"], generated.as_str());
    assert!(generated.len() >= 16);

    let response = server
        .http
        .get(server.url("/v1/me"))
        .header("X-Request-Id", "client-chosen-id-42")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-scaigrid-request-id"],
        "client-chosen-id-42"
    );
    let (status, body) = crate::support::read(response).await;
    assert_error(status, &body, 401, "AUTH_TOKEN_MISSING");
    assert_eq!(body["error"]["request_id"], "client-chosen-id-42");

    // An unusable incoming id is replaced, not echoed.
    let response = server
        .http
        .get(server.url("/health/live"))
        .header("X-Request-Id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    assert_ne!(
        response.headers()["x-scaigrid-request-id"],
        "bad id with spaces"
    );

    // The id is in the request's log lines (the reader thread may lag a little).
    let mut logged = false;
    for _ in 0..200 {
        logged = server
            .stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("client-chosen-id-42"));
        if logged {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(logged, "request id missing from logs");
}

#[tokio::test]
async fn bad_input_gets_documented_codes() {
    let server = Server::start_with(Options {
        config_toml: Some("[limits]\nmax_json_body_bytes = 2048\n".into()),
        ..Default::default()
    })
    .await;
    let post_raw = |body: &'static str, content_type: &'static str| {
        server
            .http
            .post(server.url("/v1/tenants"))
            .bearer_auth(ADMIN_KEY)
            .header("Content-Type", content_type)
            .body(body)
            .send()
    };
    let (status, body) =
        crate::support::read(post_raw("{\"name\": ", "application/json").await.unwrap()).await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, body) =
        crate::support::read(post_raw("name=x", "text/plain").await.unwrap()).await;
    assert_error(status, &body, 415, "UNSUPPORTED_MEDIA_TYPE");

    let (status, body) = server
        .post(
            "/v1/tenants",
            Some(ADMIN_KEY),
            json!({"name": "x", "slug": "ok-slug", "colour": "red"}),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, body) = server
        .post(
            "/v1/tenants",
            Some(ADMIN_KEY),
            json!({"name": "x", "slug": "x'); DROP TABLE tenants;--"}),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, body) = server
        .post(
            "/v1/tenants",
            Some(ADMIN_KEY),
            json!({"name": "x", "slug": "../../etc"}),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");

    let big = "x".repeat(4096);
    let (status, body) = server
        .post(
            "/v1/tenants",
            Some(ADMIN_KEY),
            json!({"name": big, "slug": "big"}),
        )
        .await;
    assert_error(status, &body, 413, "CTX_TOO_LARGE");
    assert_eq!(body["error"]["limit"], 2048);

    let (status, tenant) = server
        .post(
            "/v1/tenants",
            Some(ADMIN_KEY),
            json!({"name": "Dup", "slug": "dup"}),
        )
        .await;
    assert_eq!(status, 201, "{tenant}");
    let (status, body) = server
        .post(
            "/v1/tenants",
            Some(ADMIN_KEY),
            json!({"name": "Dup", "slug": "dup"}),
        )
        .await;
    assert_error(status, &body, 409, "CONFLICT");

    let (status, body) = server.get("/v1/no-such-route", Some(ADMIN_KEY)).await;
    assert_error(status, &body, 404, "NOT_FOUND");
    let (status, body) = server
        .send(reqwest::Method::PUT, "/v1/me", Some(ADMIN_KEY), None)
        .await;
    assert_error(status, &body, 405, "METHOD_NOT_ALLOWED");

    let (status, body) = server
        .post(
            "/v1/api-keys",
            Some(ADMIN_KEY),
            json!({"name": "x", "expires_at": "tomorrow"}),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, body) = server
        .post(
            "/v1/api-keys",
            Some(ADMIN_KEY),
            json!({"name": "x", "permissions": ["Not A Permission"]}),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, body) = server
        .post(
            "/v1/users",
            Some(ADMIN_KEY),
            json!({"email": "not-an-email", "password": "long enough pw"}),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");

    // A failed create leaves nothing half-written: the user with an unknown role is absent.
    let (status, body) = server
        .post("/v1/users", Some(ADMIN_KEY), json!({"email": "half@example.com", "password": "long enough pw", "roles": ["member", "no-such-role"]}))
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, body) = server
        .post(
            "/v1/auth/token",
            None,
            json!({"email": "half@example.com", "password": "long enough pw"}),
        )
        .await;
    // No such user (answered like a wrong password: logins do not tell who exists).
    assert_error(status, &body, 401, "AUTH_TOKEN_INVALID");

    // The server is still healthy after all of it.
    let (status, _) = server.get("/health/ready", None).await;
    assert_eq!(status, 200);
}
