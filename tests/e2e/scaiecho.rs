//! ScaiEcho over HTTP against the real server and the real models: every input format,
//! every response format, the OpenAI alias, bad input, permissions, module enablement,
//! the tenant policy and backend B through a small upstream the test starts.

use std::process::Command;

use serde_json::json;

use crate::support::{ADMIN_KEY, Options, Server, assert_error, read};

const TRANSCRIBE: &str = "/v1/modules/scaiecho/transcribe";
const BECKETT_WORDS: [&str; 6] = ["ever", "tried", "failed", "matter", "again", "better"];

fn beckett() -> Vec<u8> {
    std::fs::read("models/cache/test-audio/beckett.wav").expect("models/fetch (scripts/setup)")
}

/// beckett.wav converted by ffmpeg (installed by scripts/setup) into another format.
fn converted(args: &[&str], extension: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("out.{extension}"));
    let status = Command::new("ffmpeg")
        .args([
            "-loglevel",
            "error",
            "-y",
            "-i",
            "models/cache/test-audio/beckett.wav",
        ])
        .args(args)
        .arg(&out)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    std::fs::read(out).unwrap()
}

async fn post_raw(
    server: &Server,
    path: &str,
    token: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    server
        .http
        .post(server.url(path))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

fn says_beckett(text: &str) -> bool {
    let lower = text.to_lowercase();
    BECKETT_WORDS.iter().filter(|w| lower.contains(*w)).count() >= 5
}

#[tokio::test]
async fn every_input_format_is_transcribed() {
    let server = Server::start().await;
    let inputs = [
        ("audio/wav", beckett()),
        (
            "audio/mpeg",
            converted(&["-c:a", "libmp3lame", "-b:a", "64k"], "mp3"),
        ),
        ("audio/flac", converted(&[], "flac")),
        ("audio/ogg", converted(&["-c:a", "libvorbis"], "ogg")),
        (
            "audio/ogg;codecs=opus",
            converted(&["-c:a", "libopus"], "opus"),
        ),
        (
            "audio/webm;codecs=opus",
            converted(&["-c:a", "libopus"], "webm"),
        ),
    ];
    for (content_type, bytes) in inputs {
        let (status, body) =
            read(post_raw(&server, TRANSCRIBE, ADMIN_KEY, content_type, bytes).await).await;
        assert_eq!(status, 200, "{content_type}: {body}");
        assert!(
            says_beckett(body["text"].as_str().unwrap()),
            "{content_type}: {body}"
        );
        assert_eq!(body["backend"], "A");
        assert!(
            (body["duration"].as_f64().unwrap() - 9.96).abs() < 0.1,
            "{body}"
        );
        let segments = body["segments"].as_array().unwrap();
        assert!(!segments.is_empty());
        assert!(
            segments
                .iter()
                .all(|s| s["end"].as_f64() >= s["start"].as_f64())
        );
    }
    // Raw PCM needs its shape in the media type.
    let audio = media::decode(&beckett(), &media::DecodeOptions::default()).unwrap();
    let pcm = media::encode::pcm_s16le(&media::resample::to_mono(&audio, 16_000).unwrap());
    let (status, body) =
        read(post_raw(&server, TRANSCRIBE, ADMIN_KEY, "audio/pcm;rate=16000", pcm).await).await;
    assert_eq!(status, 200, "{body}");
    assert!(says_beckett(body["text"].as_str().unwrap()), "{body}");
}

#[tokio::test]
async fn response_formats_multipart_and_the_openai_alias() {
    let server = Server::start().await;
    let form = |format: &str| {
        let part = reqwest::multipart::Part::bytes(beckett())
            .file_name("b.wav")
            .mime_str("audio/wav")
            .unwrap();
        reqwest::multipart::Form::new()
            .part("file", part)
            .text("response_format", format.to_owned())
            .text("model", "whisper-1")
    };
    let send = |path: &'static str, format: &'static str| {
        server
            .http
            .post(server.url(path))
            .bearer_auth(ADMIN_KEY)
            .multipart(form(format))
            .send()
    };
    let response = send(TRANSCRIBE, "text").await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(says_beckett(&response.text().await.unwrap()));
    let response = send(TRANSCRIBE, "srt").await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/x-subrip")
    );
    let srt = response.text().await.unwrap();
    assert!(srt.starts_with("1\n00:00:0"), "{srt}");
    assert!(srt.contains(" --> ") && says_beckett(&srt), "{srt}");
    let vtt = send(TRANSCRIBE, "vtt").await.unwrap().text().await.unwrap();
    assert!(
        vtt.starts_with("WEBVTT\n\n00:00:0") && vtt.contains(" --> "),
        "{vtt}"
    );
    // OpenAI's shapes: json is just the text, verbose_json has segments.
    let (status, body) = read(send("/v1/audio/transcriptions", "json").await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    assert!(says_beckett(body["text"].as_str().unwrap()));
    let (_, body) = read(
        send("/v1/audio/transcriptions", "verbose_json")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["task"], "transcribe");
    assert!(!body["segments"].as_array().unwrap().is_empty(), "{body}");
    let (status, _) = read(send(TRANSCRIBE, "xml").await.unwrap()).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn bad_input_gets_the_documented_codes() {
    let server = Server::start_with(Options {
        config_toml: Some("[limits]\nmax_upload_bytes = 400000\n".into()),
        ..Options::default()
    })
    .await;
    // Not audio at all.
    let (status, body) = read(
        post_raw(
            &server,
            TRANSCRIBE,
            ADMIN_KEY,
            "audio/wav",
            b"hello, this is text".to_vec(),
        )
        .await,
    )
    .await;
    assert_error(status, &body, 415, "AUDIO_FORMAT_UNSUPPORTED");
    // A WAV cut short after its header: damaged.
    let mut cut = beckett();
    cut.truncate(60);
    let (status, body) =
        read(post_raw(&server, TRANSCRIBE, ADMIN_KEY, "audio/wav", cut).await).await;
    assert!(status == 422 || status == 415, "{status} {body}");
    // Over the upload limit (beckett.wav is 319 kB; twice that is over 400 kB).
    let mut big = beckett();
    big.extend(beckett());
    let (status, body) =
        read(post_raw(&server, TRANSCRIBE, ADMIN_KEY, "audio/wav", big).await).await;
    assert_error(status, &body, 413, "CTX_TOO_LARGE");
    // Empty body, unknown option values, word timestamps, no auth.
    let (status, body) =
        read(post_raw(&server, TRANSCRIBE, ADMIN_KEY, "audio/wav", Vec::new()).await).await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    for query in [
        "diarize=maybe",
        "timestamps=word",
        "backend_preference=fastest",
        "response_format=doc",
    ] {
        let path = format!("{TRANSCRIBE}?{query}");
        let (status, body) =
            read(post_raw(&server, &path, ADMIN_KEY, "audio/wav", beckett()).await).await;
        assert_error(status, &body, 400, "INVALID_REQUEST");
    }
    let response = server
        .http
        .post(server.url(TRANSCRIBE))
        .body(beckett())
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_error(status, &body, 401, "AUTH_TOKEN_MISSING");
    // The server is fine afterwards.
    let (status, body) =
        read(post_raw(&server, TRANSCRIBE, ADMIN_KEY, "audio/wav", beckett()).await).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn module_and_permissions_are_checked_before_any_work() {
    let server = Server::start().await;
    let tenant = server.tenant("echo-perms").await;
    let (status, body) = read(
        post_raw(
            &server,
            TRANSCRIBE,
            &tenant.member_key,
            "audio/wav",
            beckett(),
        )
        .await,
    )
    .await;
    assert_error(status, &body, 403, "MODULE_NOT_ENABLED");
    let (status, body) = server
        .post(
            "/v1/modules/scaiecho/enable",
            Some(&tenant.admin_key),
            json!({}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = read(
        post_raw(
            &server,
            TRANSCRIBE,
            &tenant.member_key,
            "audio/wav",
            beckett(),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // A viewer may not transcribe; diarization needs its own permission.
    let viewer = server.key(&tenant.admin_key, &tenant.id, &["viewer"]).await;
    let (status, body) =
        read(post_raw(&server, TRANSCRIBE, &viewer, "audio/wav", beckett()).await).await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");
    let (status, role) = server
        .post(
            "/v1/roles",
            Some(&tenant.admin_key),
            json!({"name": "transcriber", "permissions": ["scaiecho:transcribe"]}),
        )
        .await;
    assert_eq!(status, 201, "{role}");
    let transcriber = server
        .key(&tenant.admin_key, &tenant.id, &["transcriber"])
        .await;
    let path = format!("{TRANSCRIBE}?diarize=true");
    let (status, body) =
        read(post_raw(&server, &path, &transcriber, "audio/wav", beckett()).await).await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");
    let (status, body) =
        read(post_raw(&server, &path, &tenant.member_key, "audio/wav", beckett()).await).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["segments"][0]["speaker_label"]
            .as_str()
            .unwrap()
            .starts_with("spk_"),
        "{body}"
    );
}

/// A small OpenAI-compatible upstream: checks the bearer key and the multipart upload,
/// answers verbose JSON. Returns its base URL.
async fn upstream(key: &'static str) -> String {
    use axum::extract::Request;
    use axum::http::StatusCode;
    let app = axum::Router::new().route(
        "/v1/audio/transcriptions",
        axum::routing::post(move |request: Request| async move {
            let auth = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let multipart = request
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .starts_with("multipart/form-data");
            let body = axum::body::to_bytes(request.into_body(), 10 << 20)
                .await
                .unwrap();
            if auth != format!("Bearer {key}")
                || !multipart
                || !body.windows(4).any(|w| w == b"RIFF")
            {
                return (StatusCode::UNAUTHORIZED, "no".to_owned());
            }
            let reply = json!({"text": "relayed words", "language": "en",
                "segments": [{"start": 0.0, "end": 1.5, "text": " relayed words"}]});
            (StatusCode::OK, reply.to_string())
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

#[tokio::test]
async fn tenant_policy_and_backend_b_through_an_upstream() {
    let relay = upstream("relay-key").await;
    let config = format!("[scaiecho]\nrelay_url = \"{relay}\"\nrelay_api_key = \"relay-key\"\n");
    let server = Server::start_with(Options {
        config_toml: Some(config),
        ..Options::default()
    })
    .await;
    let policy = "/v1/modules/scaiecho/tenant-policy";
    let (status, body) = server.get(policy, Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["allowed_backends"], json!(["A", "B"]));
    assert_eq!(body["backend_preference"], "any");
    // The request may prefer B; then the policy pins B.
    let path = format!("{TRANSCRIBE}?backend_preference=prefer_managed");
    let (status, body) =
        read(post_raw(&server, &path, ADMIN_KEY, "audio/wav", beckett()).await).await;
    assert_eq!(
        (status, body["backend"].as_str()),
        (200, Some("B")),
        "{body}"
    );
    assert_eq!(body["text"], "relayed words");
    let (status, body) = server
        .send(
            reqwest::Method::PATCH,
            policy,
            Some(ADMIN_KEY),
            Some(json!({"allowed_backends": ["B"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) =
        read(post_raw(&server, TRANSCRIBE, ADMIN_KEY, "audio/wav", beckett()).await).await;
    assert_eq!(body["backend"], "B", "{body}");
    // Pinned to A while only B is allowed: nothing resolves.
    let path = format!("{TRANSCRIBE}?backend_preference=self_hosted");
    let (status, body) =
        read(post_raw(&server, &path, ADMIN_KEY, "audio/wav", beckett()).await).await;
    assert_error(status, &body, 502, "SCAIECHO_BACKEND_UNAVAILABLE");
    let (status, body) = server
        .send(
            reqwest::Method::PATCH,
            policy,
            Some(ADMIN_KEY),
            Some(json!({"allowed_backends": []})),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let tenant = server.tenant("echo-policy").await;
    server
        .post(
            "/v1/modules/scaiecho/enable",
            Some(&tenant.admin_key),
            json!({}),
        )
        .await;
    let (status, body) = server
        .send(
            reqwest::Method::PATCH,
            policy,
            Some(&tenant.member_key),
            Some(json!({"inline_threshold_seconds": 5})),
        )
        .await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");
    // Another tenant's policy is its own (defaults), untouched by the platform's.
    let (_, body) = server.get(policy, Some(&tenant.member_key)).await;
    assert_eq!(body["allowed_backends"], json!(["A", "B"]));
}

#[tokio::test]
async fn backend_b_down_or_absent_is_a_502_and_a_falls_through() {
    // No engines in this process (an API-only node) and a relay that refuses the key.
    let relay = upstream("another-key").await;
    let config = format!(
        "[engines]\nenabled = false\n[scaiecho]\nrelay_url = \"{relay}\"\nrelay_api_key = \"wrong\"\n"
    );
    let server = Server::start_with(Options {
        config_toml: Some(config),
        ..Options::default()
    })
    .await;
    let (status, body) =
        read(post_raw(&server, TRANSCRIBE, ADMIN_KEY, "audio/wav", beckett()).await).await;
    assert_error(status, &body, 502, "SCAIECHO_BACKEND_UNAVAILABLE");
    let server = Server::start_with(Options {
        config_toml: Some("[engines]\nenabled = false\n".into()),
        ..Options::default()
    })
    .await;
    let (status, body) =
        read(post_raw(&server, TRANSCRIBE, ADMIN_KEY, "audio/wav", beckett()).await).await;
    assert_error(status, &body, 502, "SCAIECHO_BACKEND_UNAVAILABLE");
}
