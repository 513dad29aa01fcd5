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

pub(crate) async fn post_raw(
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
    // Empty body, unknown option values, no auth.
    let (status, body) =
        read(post_raw(&server, TRANSCRIBE, ADMIN_KEY, "audio/wav", Vec::new()).await).await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    for query in [
        "diarize=maybe",
        "timestamps=letter",
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
pub async fn upstream(key: &'static str) -> String {
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
            let mut reply = json!({"text": "relayed words", "language": "en",
                "segments": [{"start": 0.0, "end": 1.5, "text": " relayed words"}]});
            // OpenAI lists words apart from the segments, when asked.
            if body
                .windows(25)
                .any(|w| w == b"timestamp_granularities[]".as_slice())
            {
                reply["words"] = json!([{"word": "relayed", "start": 0.1, "end": 0.6},
                    {"word": "words", "start": 0.7, "end": 1.4}]);
            }
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
    assert!(body["segments"][0].get("words").is_none(), "{body}");
    // Word timings pass through from the upstream.
    let path = format!("{TRANSCRIBE}?backend_preference=prefer_managed&timestamps=word");
    let (status, body) =
        read(post_raw(&server, &path, ADMIN_KEY, "audio/wav", beckett()).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["segments"][0]["words"],
        json!([{"word": "relayed", "start": 0.1, "end": 0.6},
            {"word": "words", "start": 0.7, "end": 1.4}]),
        "{body}"
    );
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

/// Polls a job until it has ended.
async fn finished_job(server: &Server, token: &str, id: &str) -> serde_json::Value {
    for _ in 0..300 {
        let (status, job) = server
            .get(&format!("/v1/modules/scaiecho/jobs/{id}"), Some(token))
            .await;
        assert_eq!(status, 200, "{job}");
        if job["status"] == "succeeded" || job["status"] == "failed" {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("job {id} did not end");
}

#[tokio::test]
async fn async_jobs_run_are_listed_isolated_and_deleted() {
    let server = Server::start().await;
    let path = format!("{TRANSCRIBE}?async=true&diarize=true");
    let (status, job) =
        read(post_raw(&server, &path, ADMIN_KEY, "audio/wav", beckett()).await).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["object"], "transcription.job");
    let id = job["id"].as_str().unwrap().to_owned();
    let job = finished_job(&server, ADMIN_KEY, &id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(
        says_beckett(job["result"]["text"].as_str().unwrap()),
        "{job}"
    );
    assert!(
        job["result"]["segments"][0]["speaker_label"].is_string(),
        "{job}"
    );
    assert!((job["audio_seconds"].as_f64().unwrap() - 9.96).abs() < 0.1);
    let (_, list) = server
        .get("/v1/modules/scaiecho/jobs", Some(ADMIN_KEY))
        .await;
    assert_eq!(list["data"][0]["id"], id.as_str());
    // Another tenant cannot see or delete it.
    let tenant = server.tenant("echo-jobs").await;
    server
        .post(
            "/v1/modules/scaiecho/enable",
            Some(&tenant.admin_key),
            json!({}),
        )
        .await;
    let (status, body) = server
        .get(
            &format!("/v1/modules/scaiecho/jobs/{id}"),
            Some(&tenant.member_key),
        )
        .await;
    assert_error(status, &body, 404, "NOT_FOUND");
    let (_, list) = server
        .get("/v1/modules/scaiecho/jobs", Some(&tenant.member_key))
        .await;
    assert_eq!(list["data"], json!([]));
    let job_path = format!("/v1/modules/scaiecho/jobs/{id}");
    let (status, _) = server
        .send(
            reqwest::Method::DELETE,
            &job_path,
            Some(&tenant.member_key),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .send(reqwest::Method::DELETE, &job_path, Some(ADMIN_KEY), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = server.get(&job_path, Some(ADMIN_KEY)).await;
    assert_eq!(status, 404);
    // Undecodable audio sent async fails as a job with the documented reason, and the
    // failure event is in the outbox for webhooks.
    let (status, job) = read(
        post_raw(
            &server,
            &path,
            ADMIN_KEY,
            "audio/wav",
            b"not audio at all".to_vec(),
        )
        .await,
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let job = finished_job(&server, ADMIN_KEY, job["id"].as_str().unwrap()).await;
    assert_eq!(
        (job["status"].as_str(), job["status_reason"].as_str()),
        (Some("failed"), Some("decode failure")),
        "{job}"
    );
    // Seed 003: the stable reason and a line of detail beside the seed-002 words.
    assert_eq!(job["failure_reason"], "DECODE_FAILED", "{job}");
    assert!(!job["failure_detail"].as_str().unwrap().is_empty(), "{job}");
    let outbox = events(&server).await;
    assert!(
        outbox.contains(&"transcription.job.completed".to_owned()),
        "{outbox:?}"
    );
    assert!(
        outbox.contains(&"transcription.job.failed".to_owned()),
        "{outbox:?}"
    );
    // Over the tenant's inline threshold: a job without asking.
    server
        .send(
            reqwest::Method::PATCH,
            "/v1/modules/scaiecho/tenant-policy",
            Some(ADMIN_KEY),
            Some(json!({"inline_threshold_seconds": 5})),
        )
        .await;
    let (status, job) =
        read(post_raw(&server, TRANSCRIBE, ADMIN_KEY, "audio/wav", beckett()).await).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(
        finished_job(&server, ADMIN_KEY, job["id"].as_str().unwrap()).await["status"],
        "succeeded"
    );
}

/// Event names in the server's outbox.
async fn events(server: &Server) -> Vec<String> {
    use sqlx::{Connection, Row};
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}", server.database_path().display());
    let mut connection = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::query("SELECT name FROM event_outbox ORDER BY created_at")
        .fetch_all(&mut connection)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<String, _>("name"))
        .collect()
}

#[tokio::test]
async fn a_queued_job_survives_a_restart_and_a_worker_process_runs_it() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    // No in-process workers: the job stays queued.
    let no_workers = Options {
        data_dir: Some(data.clone()),
        config_toml: Some("[jobs]\nworkers = 0\n".into()),
        ..Options::default()
    };
    let server = Server::start_with(no_workers).await;
    let path = format!("{TRANSCRIBE}?async=true");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, job) =
            read(post_raw(&server, &path, ADMIN_KEY, "audio/wav", beckett()).await).await;
        assert_eq!(status, 202, "{job}");
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (_, job) = server
        .get(
            &format!("/v1/modules/scaiecho/jobs/{}", ids[0]),
            Some(ADMIN_KEY),
        )
        .await;
    assert_eq!(job["status"], "queued");
    drop(server);
    // A separate `scaigrid worker` process on the same database and objects runs them.
    let mut worker = Command::new(crate::support::binary())
        .arg("worker")
        .env("SCAIGRID_DATA_DIR", &data)
        .env_remove("SCAIGRID_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The restarted server (no workers of its own) serves the results.
    let server = Server::start_with(Options {
        data_dir: Some(data.clone()),
        config_toml: Some("[jobs]\nworkers = 0\n".into()),
        ..Options::default()
    })
    .await;
    for id in &ids {
        let job = finished_job(&server, ADMIN_KEY, id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert!(says_beckett(job["result"]["text"].as_str().unwrap()));
    }
    let _ = worker.kill();
    let _ = worker.wait();
}

/// Four workers and room for one waiting recording: jobs that find the speech-to-text
/// queue full are not failed but put back in the queue, and all of them end succeeded.
#[tokio::test]
async fn jobs_that_find_the_inference_queue_full_are_requeued_and_succeed() {
    let server = Server::start_with(Options {
        config_toml: Some("[engines]\nstt_queue = 1\n[jobs]\nworkers = 4\n".into()),
        ..Options::default()
    })
    .await;
    let path = format!("{TRANSCRIBE}?async=true");
    let posts = (0..4).map(|_| post_raw(&server, &path, ADMIN_KEY, "audio/wav", beckett()));
    let mut ids = Vec::new();
    for response in futures_util::future::join_all(posts).await {
        let (status, job) = read(response).await;
        assert_eq!(status, 202, "{job}");
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let job = finished_job(&server, ADMIN_KEY, id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert!(
            says_beckett(job["result"]["text"].as_str().unwrap()),
            "{job}"
        );
    }
    // One decodes, one waits: the other two claims found the queue full at least once.
    let metrics = server.metrics().await;
    let requeued: f64 = metrics
        .lines()
        .find(|line| line.starts_with("scaigrid_jobs_requeued_total{module=\"scaiecho\"}"))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(requeued >= 1.0, "{metrics}");
}

/// The official OpenAI Python SDK (`scripts/test` installs it into a venv) transcribes
/// a file against the server unchanged: only `base_url` and the key differ.
#[tokio::test]
async fn the_openai_python_sdk_transcribes_a_file() {
    let python = crate::support::python_with_openai_sdk();
    let server = Server::start().await;
    let script = r#"
import sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2])
with open("models/cache/test-audio/beckett.wav", "rb") as audio:
    result = client.audio.transcriptions.create(model="whisper-1", file=audio)
print(result.text)
with open("models/cache/test-audio/beckett.wav", "rb") as audio:
    srt = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="srt")
print(srt.splitlines()[1])
with open("models/cache/test-audio/beckett.wav", "rb") as audio:
    verbose = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="verbose_json")
s = verbose.segments[0]
print(len(s.tokens) > 0, s.avg_logprob < 0, 0 <= s.no_speech_prob <= 1, s.temperature == 0.0, 0 <= s.seek < 100, verbose.duration > 9)
with open("models/cache/test-audio/beckett.wav", "rb") as audio:
    timed = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="verbose_json", timestamp_granularities=["word", "segment"])
w = timed.words
print(len(w) >= 10, w[0].word.lower().startswith("ever"), all(a.end <= b.start + 1e-6 for a, b in zip(w, w[1:])), all(0 <= x.start <= x.end <= timed.duration for x in w), len(timed.segments) > 0)
"#;
    // The server is another process: blocking this test's thread is fine.
    let output = Command::new(&python)
        .args(["-c", script, &server.base, ADMIN_KEY])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines = stdout.lines();
    assert!(says_beckett(lines.next().unwrap_or_default()), "{stdout}");
    assert!(
        lines.next().unwrap_or_default().contains(" --> "),
        "{stdout}"
    );
    // verbose_json segments carry OpenAI's decoding fields, typed by the SDK.
    assert_eq!(
        lines.next().unwrap_or_default(),
        "True True True True True True",
        "{stdout}"
    );
    // `timestamp_granularities=["word", "segment"]`: top-level words, in order.
    assert_eq!(
        lines.next().unwrap_or_default(),
        "True True True True True",
        "{stdout}"
    );
}

/// `timestamps=word`: every segment lists its words with times inside the recording,
/// in order, and the words read as the segment's text; a diarized request labels each
/// word's speaker; a bad granularity is 400.
#[tokio::test]
async fn word_timestamps_come_with_each_segment() {
    let server = Server::start().await;
    let path = format!("{TRANSCRIBE}?timestamps=word&diarize=true");
    let (status, body) =
        read(post_raw(&server, &path, ADMIN_KEY, "audio/wav", beckett()).await).await;
    assert_eq!(status, 200, "{body}");
    let duration = body["duration"].as_f64().unwrap();
    let mut previous_end = 0.0;
    let mut all = Vec::new();
    for segment in body["segments"].as_array().unwrap() {
        let words = segment["words"]
            .as_array()
            .unwrap_or_else(|| panic!("{segment}"));
        assert!(!words.is_empty(), "{segment}");
        let joined: Vec<&str> = words.iter().map(|w| w["word"].as_str().unwrap()).collect();
        assert_eq!(
            joined.join(" "),
            segment["text"].as_str().unwrap(),
            "{segment}"
        );
        for word in words {
            let (start, end) = (
                word["start"].as_f64().unwrap(),
                word["end"].as_f64().unwrap(),
            );
            assert!(
                previous_end <= start + 1e-6 && start <= end && end <= duration,
                "{word}"
            );
            let probability = word["probability"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&probability), "{word}");
            assert!(word["speaker_label"].as_str().is_some(), "{word}");
            previous_end = end;
        }
        all.extend(joined);
    }
    assert!(says_beckett(&all.join(" ")), "{body}");
    // The first word starts where the speech does (beckett.wav: about 0.3 s in), not
    // at the window's start.
    let first = &body["segments"][0]["words"][0];
    assert!(first["start"].as_f64().unwrap() > 0.1, "{first}");
    // Without the option, no words.
    let (_, body) =
        read(post_raw(&server, TRANSCRIBE, ADMIN_KEY, "audio/wav", beckett()).await).await;
    assert!(body["segments"][0].get("words").is_none(), "{body}");
    let path = format!("{TRANSCRIBE}?timestamp_granularities[]=letter");
    let (status, body) =
        read(post_raw(&server, &path, ADMIN_KEY, "audio/wav", beckett()).await).await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
}

/// Speech made by espeak-ng in one of its voices, as WAV bytes.
pub(crate) fn espeak_wav(voice: &str, text: &str) -> Vec<u8> {
    let output = Command::new("espeak-ng")
        .args(["-v", voice, "--stdout", text])
        .output()
        .expect("espeak-ng (scripts/setup installs it)");
    assert!(output.status.success());
    output.stdout
}

/// `[engines] multilingual = true`: Whisper base is loaded beside tiny.en; a request
/// without `language` is detected (and answers with the language it heard), a
/// non-English `language` is served, English still reads. Without the option a
/// non-English language is a 400 that says how to get it.
#[tokio::test]
async fn other_languages_are_detected_and_transcribed_by_the_multilingual_model() {
    let server = Server::start_with(Options {
        config_toml: Some("[engines]\nmultilingual = true\n".into()),
        ..Options::default()
    })
    .await;
    let (_, nodes) = server.get("/v1/infra/nodes", Some(ADMIN_KEY)).await;
    let loaded = nodes["data"][0]["models_loaded"].to_string();
    assert!(
        loaded.contains("audio.stt.whisper-base") && loaded.contains("audio.stt.whisper-tiny-en"),
        "{nodes}"
    );
    let spanish = espeak_wav(
        "es",
        "Buenos días, me gustaría un café con leche. La biblioteca está cerrada los domingos.",
    );
    for path in [
        TRANSCRIBE.to_owned(),
        format!("{TRANSCRIBE}?language=es&timestamps=word"),
    ] {
        let (status, body) =
            read(post_raw(&server, &path, ADMIN_KEY, "audio/wav", spanish.clone()).await).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["language"], "es", "{path}: {body}");
        let text = body["text"].as_str().unwrap().to_lowercase();
        assert!(
            text.contains("biblioteca") && text.contains("domingos"),
            "{path}: {body}"
        );
    }
    let (status, body) = read(
        post_raw(
            &server,
            &format!("{TRANSCRIBE}?language=en"),
            ADMIN_KEY,
            "audio/wav",
            beckett(),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["language"].as_str()),
        (200, Some("en")),
        "{body}"
    );
    assert!(says_beckett(body["text"].as_str().unwrap()), "{body}");
    // A code no model knows.
    let (status, body) = read(
        post_raw(
            &server,
            &format!("{TRANSCRIBE}?language=zz"),
            ADMIN_KEY,
            "audio/wav",
            beckett(),
        )
        .await,
    )
    .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");

    // The default node (English only).
    let english = Server::start().await;
    let (status, body) = read(
        post_raw(
            &english,
            &format!("{TRANSCRIBE}?language=es"),
            ADMIN_KEY,
            "audio/wav",
            spanish,
        )
        .await,
    )
    .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("multilingual = true"),
        "{body}"
    );
}
