//! Health, readiness, metrics, OpenAPI, graceful shutdown, bootstrap and the admin CLI.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ADMIN_KEY, Options, Server, assert_error, binary};

#[tokio::test]
async fn readiness_names_the_failing_database() {
    let server = Server::start().await;
    let (status, body) = server.get("/health/ready", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["database"]["status"], "ok");
    assert_eq!(body["checks"]["object_store"]["status"], "ok");

    let path = server.database_path();
    let original = std::fs::metadata(&path).unwrap().permissions();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    let (status, body) = server.get("/health/ready", None).await;
    std::fs::set_permissions(&path, original).unwrap();
    assert_error(status, &body, 503, "SERVICE_UNAVAILABLE");
    assert_eq!(body["error"]["dependency"], "database");
    assert_eq!(body["error"]["checks"]["object_store"]["status"], "ok");

    let (status, _) = server.get("/health/ready", None).await;
    assert_eq!(status, 200);
    let (status, body) = server.get("/health/live", None).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let server = Server::start().await;
    server.get("/v1/me", Some(ADMIN_KEY)).await;
    server.get("/v1/me", None).await;
    let text = server.metrics().await;
    assert!(
        text.contains("scaigrid_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains(r#"route="/v1/me""#), "{text}");
    assert!(text.contains(r#"status="401""#), "{text}");
    assert!(text.contains("scaigrid_http_requests_in_flight"), "{text}");
}

/// Every route the server has is in `/openapi.json`, and every documented route is
/// served (not the 404 fallback).
#[tokio::test]
async fn openapi_documents_every_route() {
    let server = Server::start().await;
    let (status, document) = server.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    let paths = document["paths"].as_object().unwrap();
    for expected in [
        "/health/live",
        "/health/ready",
        "/metrics",
        "/openapi.json",
        "/v1/me",
        "/v1/auth/token",
        "/v1/auth/refresh",
        "/v1/tenants",
        "/v1/tenants/{id}",
        "/v1/users",
        "/v1/api-keys",
        "/v1/api-keys/{id}",
        "/v1/roles",
        "/v1/modules",
        "/v1/modules/{id}",
        "/v1/modules/{id}/enable",
        "/v1/modules/{id}/disable",
    ] {
        assert!(
            paths.contains_key(expected),
            "{expected} missing from the OpenAPI document"
        );
    }
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let Ok(method) = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            let concrete = path.replace("{id}", "probe");
            let (status, body) = server
                .send(method.clone(), &concrete, Some(ADMIN_KEY), None)
                .await;
            let fallback = body["error"]["message"] == "no such route" || status == 405;
            assert!(
                !fallback,
                "{method} {path} is documented but not routed ({status} {body})"
            );
        }
    }
}

/// SIGTERM while a request is in flight: the request completes, then the server exits.
#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mut server = Server::start().await;
    let address = server.base.trim_start_matches("http://").to_owned();
    let body = json!({"email": "nobody@example.com", "password": "irrelevant"}).to_string();
    let (first, rest) = body.split_at(10);
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "POST /v1/auth/token HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{first}",
        body.len()
    )
    .unwrap();
    stream.flush().unwrap();

    // Wait until the server is inside that request (the in-flight gauge counts it and
    // the /metrics request that reads it).
    let mut in_flight = 0.0;
    for _ in 0..500 {
        let text = server.metrics().await;
        in_flight = text
            .lines()
            .find(|l| l.starts_with("scaigrid_http_requests_in_flight"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if in_flight >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        in_flight >= 2.0,
        "the partial request never reached the server"
    );

    server.send_sigterm();
    stream.write_all(rest.as_bytes()).unwrap();
    stream.flush().unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 401"),
        "in-flight request was not answered: {response:?}"
    );
    assert!(response.contains("AUTH_TOKEN_INVALID"), "{response}");
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap();
    assert!(status.success(), "server exited with {status}");
}

#[tokio::test]
async fn first_start_prints_an_admin_key_once() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let options = || Options {
        bootstrap_key: false,
        data_dir: Some(data_dir.clone()),
        ..Options::default()
    };
    let server = Server::start_with(options()).await;
    let printed = server.stderr.lock().unwrap().join("\n");
    let key = printed
        .split_whitespace()
        .find(|w| w.starts_with("sgk_"))
        .expect("no key printed on first start")
        .to_owned();
    let (status, me) = server.get("/v1/me", Some(&key)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["roles"], json!(["platform_admin"]));
    drop(server);

    let again = Server::start_with(options()).await;
    let printed = again.stderr.lock().unwrap().join("\n");
    assert!(
        !printed.contains("sgk_"),
        "a second start printed a key again"
    );
    let (status, _) = again.get("/v1/me", Some(&key)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn admin_cli_works_on_the_same_database() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let run = |args: &[&str]| -> Value {
        let output = std::process::Command::new(binary())
            .args(args)
            .env("SCAIGRID_DATA_DIR", &data_dir)
            .env("SCAIGRID_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
            .env_remove("SCAIGRID_DATABASE_URL")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let status = std::process::Command::new(binary())
        .arg("migrate")
        .env("SCAIGRID_DATA_DIR", &data_dir)
        .status()
        .unwrap();
    assert!(status.success());
    let tenant = run(&[
        "admin",
        "create-tenant",
        "--name",
        "Cli Co",
        "--slug",
        "cli-co",
    ]);
    let tenant_id = tenant["id"].as_str().unwrap();
    let key = run(&[
        "admin",
        "create-key",
        "--tenant-id",
        tenant_id,
        "--name",
        "ops",
        "--role",
        "tenant_admin",
    ]);
    let key_value = key["key"].as_str().unwrap().to_owned();
    let listed = run(&["admin", "list-keys", "--tenant-id", tenant_id]);
    assert_eq!(listed[0]["id"], key["id"]);
    assert!(
        listed[0].get("key").is_none(),
        "the key must not be shown again"
    );

    let server = Server::start_with(Options {
        data_dir: Some(data_dir.clone()),
        ..Default::default()
    })
    .await;
    let (status, me) = server.get("/v1/me", Some(&key_value)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["tenant"]["slug"], "cli-co");
    run(&["admin", "revoke-key", key["id"].as_str().unwrap()]);
    drop(server);
    let server = Server::start_with(Options {
        data_dir: Some(data_dir),
        ..Default::default()
    })
    .await;
    let (status, body) = server.get("/v1/me", Some(&key_value)).await;
    assert_error(status, &body, 401, "AUTH_TOKEN_REVOKED");

    // A bad configuration is refused with a message naming the key.
    let output = std::process::Command::new(binary())
        .arg("serve")
        .env("SCAIGRID_BIND", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bind:"));
}

/// The embedded default is its own inference node: engines listed, readiness checks them.
#[tokio::test]
async fn the_server_is_an_inference_node() {
    let server = Server::start().await;
    for path in ["/v1/infra/nodes", "/v1/admin/nodes"] {
        let (status, body) = server.get(path, None).await;
        assert_error(status, &body, 401, "AUTH_TOKEN_MISSING");
        let (status, body) = server.get(path, Some(ADMIN_KEY)).await;
        assert_eq!(status, 200, "{body}");
        let node = &body["data"][0];
        assert_eq!(node["status"], "online", "{body}");
        assert_eq!(node["device"], "cpu");
        let loaded: Vec<&str> = node["models_loaded"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        assert_eq!(
            loaded,
            [
                "audio.vad.silero",
                "audio.stt.whisper-tiny-en",
                "audio.tts.piper-joe",
                "audio.analyze.pyannote",
                "text.embed.minilm-l6"
            ],
        );
        assert_eq!(node["memory_mb"], 16 + 300 + 250 + 64 + 120);
    }
    let (status, body) = server.get("/health/ready", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["engines"]["status"], "ok");
}

#[tokio::test]
async fn missing_models_make_readiness_name_the_engines() {
    let server = Server::start_with(Options {
        config_toml: Some("[engines]\nmodels_dir = \"/nonexistent/models\"\n".into()),
        ..Default::default()
    })
    .await;
    let (status, body) = server.get("/health/ready", None).await;
    assert_error(status, &body, 503, "SERVICE_UNAVAILABLE");
    assert_eq!(body["error"]["dependency"], "engines");
    assert_eq!(body["error"]["checks"]["database"]["status"], "ok");
    let (_, nodes) = server.get("/v1/infra/nodes", Some(ADMIN_KEY)).await;
    assert_eq!(nodes["data"][0]["status"], "offline");
    assert!(
        nodes["data"][0]["failures"][0]["error"]
            .as_str()
            .unwrap()
            .contains("models/fetch")
    );

    // An API-only process runs no engines and does not depend on them.
    let api_only = Server::start_with(Options {
        config_toml: Some("[engines]\nenabled = false\n".into()),
        ..Default::default()
    })
    .await;
    let (status, body) = api_only.get("/health/ready", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["checks"].get("engines").is_none());
    let (_, nodes) = api_only.get("/v1/infra/nodes", Some(ADMIN_KEY)).await;
    assert_eq!(nodes["data"], json!([]));
}

/// A process that runs jobs lists itself among the workers, with its capacity, while it
/// runs, and takes its row away when it stops.
#[tokio::test]
async fn the_worker_list_shows_this_process_until_it_stops() {
    let mut server = Server::start_with(Options {
        config_toml: Some("[jobs]\nworkers = 2\n".into()),
        ..Options::default()
    })
    .await;
    let mut list = Value::Null;
    for _ in 0..100 {
        let (status, body) = server.get("/v1/infra/workers", Some(ADMIN_KEY)).await;
        assert_eq!(status, 200, "{body}");
        list = body;
        if list["data"].as_array().is_some_and(|rows| !rows.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = list["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{list}");
    assert_eq!(rows[0]["status"], "alive", "{list}");
    assert_eq!(rows[0]["pid"], server.pid(), "{list}");
    assert_eq!(rows[0]["capacity"], 2, "{list}");
    assert_eq!(rows[0]["busy"], 0, "{list}");
    assert_eq!(
        (&list["capacity"], &list["idle"]),
        (&json!(2), &json!(2)),
        "{list}"
    );
    let (status, body) = server.get("/v1/infra/workers", None).await;
    assert_error(status, &body, 401, "AUTH_TOKEN_MISSING");

    server.send_sigterm();
    let status = server.wait();
    assert!(status.success(), "server exited with {status}");
    assert_eq!(
        server.sql_count("SELECT COUNT(*) FROM job_workers").await,
        0
    );
}

/// CORS: a configured origin's preflight is answered and its responses are readable; a
/// foreign origin's preflight and WebSocket handshake are refused; programs (no
/// `Origin`) and the server's own pages are not affected.
#[tokio::test]
async fn browser_origins_are_allowed_or_refused_as_configured() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = Server::start_with(Options {
        config_toml: Some(
            "[http]\ncors_allowed_origins = [\"https://app.example.com\"]\n[engines]\nenabled = false\n"
                .into(),
        ),
        ..Options::default()
    })
    .await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, server.url("/v1/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(allowed.status(), 204);
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let (status, body) = crate::support::read(refused).await;
    assert_error(status, &body, 403, "ORIGIN_NOT_ALLOWED");

    let get = |origin: Option<&'static str>| {
        let mut request = http.get(server.url("/v1/me")).bearer_auth(ADMIN_KEY);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let readable = get(Some("https://app.example.com")).await.unwrap();
    assert_eq!(readable.status(), 200);
    assert_eq!(
        readable.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        readable.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
    let foreign = get(Some("https://evil.example")).await.unwrap();
    assert_eq!(foreign.status(), 200);
    assert!(
        foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let program = get(None).await.unwrap();
    assert_eq!(program.status(), 200);
    assert!(
        program
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    // WebSocket handshakes: a foreign page refused before the upgrade; an allowed one,
    // the server's own page and a program go through.
    let base = server.base.replacen("http://", "ws://", 1);
    let handshake = |origin: Option<String>| {
        let mut request = format!("{base}/v1/modules/scaiecho/stream/transcribe?token={ADMIN_KEY}")
            .into_client_request()
            .unwrap();
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
    };
    match handshake(Some("https://evil.example".into())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!(
            "a foreign origin's handshake went through: {:?}",
            other.map(|_| ())
        ),
    }
    let own = server.base.clone();
    for origin in [Some("https://app.example.com".to_owned()), Some(own), None] {
        assert!(handshake(origin.clone()).await.is_ok(), "{origin:?}");
    }
}
