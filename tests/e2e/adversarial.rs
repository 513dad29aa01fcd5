//! Single requests that once took the whole server down, and their neighbours: each gets
//! its documented code, the server goes on serving others, and its memory stays bounded
//! (resident set growth read from `/proc/<pid>/status`).

use std::process::Command;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{ADMIN_KEY, Options, Server, assert_error, read};

pub(crate) const TRANSCRIBE: &str = "/v1/modules/scaiecho/transcribe";
const STREAM: &str = "/v1/modules/scaiecho/stream/transcribe";

/// Resident memory of the server process, in MiB.
pub(crate) fn rss_mib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

/// The server's resident memory grew by less than `limit` MiB since `before`.
pub(crate) fn assert_growth_below(server: &Server, before: u64, limit: u64) {
    let growth = rss_mib(server).saturating_sub(before);
    println!("resident memory grew by {growth} MiB (bound {limit} MiB)");
    assert!(growth < limit, "resident memory grew by {growth} MiB");
}

/// The server still answers a plain request (and so did not die or wedge).
pub(crate) async fn still_serving(server: &Server) {
    let (status, body) = server.get("/v1/me", Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{body}");
}

async fn post_audio(
    server: &Server,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let response = server
        .http
        .post(server.url(path))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    read(response).await
}

/// Audio made by ffmpeg (installed by scripts/setup) from a lavfi source.
fn ffmpeg(source: &str, seconds: u32, codec_args: &[&str], extension: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("out.{extension}"));
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i", source])
        .args(["-t", &seconds.to_string()])
        .args(codec_args)
        .arg(&out)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    std::fs::read(out).unwrap()
}

/// A 44-byte canonical WAV header declaring `rate` and `channels`, then `data`.
fn wav_with_header(rate: u32, channels: u16, data: &[u8]) -> Vec<u8> {
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&channels.to_le_bytes());
    wav.extend_from_slice(&rate.to_le_bytes());
    let block = u32::from(channels) * 2;
    wav.extend_from_slice(&rate.wrapping_mul(block).to_le_bytes());
    wav.extend_from_slice(&(block as u16).to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(data);
    wav
}

/// Opens a transcription stream with `media_type`; every text frame until the close, and
/// the close code.
async fn stream_open(server: &Server, media_type: &str) -> (Vec<Value>, Option<u16>) {
    let url = format!("{}{STREAM}", server.base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_KEY}").parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let open = json!({"type": "open", "media_type": media_type});
    socket
        .send(Message::Text(open.to_string().into()))
        .await
        .unwrap();
    socket
        .send(Message::Binary(vec![0u8; 64].into()))
        .await
        .ok();
    let mut frames = Vec::new();
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(60), socket.next())
            .await
            .expect("the server answers");
        match message {
            Some(Ok(Message::Text(text))) => frames.push(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => return (frames, frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return (frames, None),
        }
    }
}

#[tokio::test]
async fn declared_rates_outside_8_to_192_khz_are_unsupported_over_http_and_ws() {
    let server = Server::start().await;
    let before = rss_mib(&server);
    // The request that grew the server to 20 GB: a 4-byte body at rate 4294967291.
    for rate in ["4294967291", "999999937", "7", "1", "0", "192001"] {
        let content_type = format!("audio/pcm;rate={rate}");
        let (status, body) = post_audio(&server, TRANSCRIBE, &content_type, vec![0; 4]).await;
        assert_error(status, &body, 415, "AUDIO_FORMAT_UNSUPPORTED");
        let (frames, code) = stream_open(&server, &content_type).await;
        assert_eq!(code, Some(4400), "{rate}: {frames:?}");
        let error = frames.iter().find(|f| f["type"] == "error").unwrap();
        assert_eq!(error["code"], "AUDIO_FORMAT_UNSUPPORTED", "{rate}");
    }
    // The same rates in a WAV header, whole file and stream.
    for rate in [999_999_937u32, 7, 1] {
        let wav = wav_with_header(rate, 1, &[0u8; 3200]);
        let (status, body) = post_audio(&server, TRANSCRIBE, "audio/wav", wav.clone()).await;
        assert_error(status, &body, 415, "AUDIO_FORMAT_UNSUPPORTED");
    }
    // A header claiming 65,535 channels.
    let wav = wav_with_header(16_000, u16::MAX, &[0u8; 4096]);
    let (status, body) = post_audio(&server, TRANSCRIBE, "audio/wav", wav).await;
    assert_error(status, &body, 415, "AUDIO_FORMAT_UNSUPPORTED");
    // The lowest and highest accepted rates still work (silence: no text, no error).
    for rate in [8_000u32, 192_000] {
        let wav = wav_with_header(rate, 1, &vec![0u8; rate as usize * 2]);
        let (status, body) = post_audio(&server, TRANSCRIBE, "audio/wav", wav).await;
        assert_eq!(status, 200, "{rate}: {body}");
    }
    still_serving(&server).await;
    assert_growth_below(&server, before, 256);
}

/// A multipart body of the given text fields and a `file` part (boundary `b`).
fn form(fields: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    let parts = fields
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_slice()))
        .chain([("file", &b"RIFF"[..])]);
    for (name, value) in parts {
        body.extend_from_slice(
            format!("--b\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--b--\r\n");
    body
}

#[tokio::test]
async fn forms_of_many_or_huge_fields_are_refused_before_any_work() {
    let server = Server::start().await;
    let before = rss_mib(&server);
    let multipart = "multipart/form-data; boundary=b";
    // 100,000 tiny fields (a map of them would be many times the body).
    let many: Vec<(String, Vec<u8>)> = (0..100_000)
        .map(|i| (format!("f{i}"), vec![b'1']))
        .collect();
    let (status, body) = post_audio(&server, TRANSCRIBE, multipart, form(&many)).await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 256"),
        "{body}"
    );
    // One 10 MB option, and a list option grown past the bound 40 KB at a time.
    let huge = vec![("prompt".to_owned(), vec![b'x'; 10 << 20])];
    let (status, body) = post_audio(&server, TRANSCRIBE, multipart, form(&huge)).await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    assert_eq!(body["error"]["field"], "prompt", "{body}");
    let list: Vec<(String, Vec<u8>)> = (0..100)
        .map(|_| ("timestamp_granularities[]".to_owned(), vec![b'w'; 40_000]))
        .collect();
    let (status, body) = post_audio(&server, TRANSCRIBE, multipart, form(&list)).await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    // A broken body is a 400 too.
    let (status, body) = post_audio(
        &server,
        TRANSCRIBE,
        multipart,
        b"--b\r\nnot a part".to_vec(),
    )
    .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    still_serving(&server).await;
    assert_growth_below(&server, before, 256);
}

#[tokio::test]
async fn decompression_bombs_stop_at_the_sample_and_duration_limits() {
    let server = Server::start_with(Options {
        config_toml: Some("[limits]\nmax_audio_seconds = 60\n".into()),
        ..Options::default()
    })
    .await;
    let before = rss_mib(&server);
    // 8 channels (FLAC's most) of silence at 192 kHz, 40 s: a small FLAC, 61 M samples.
    let flac = ffmpeg("anullsrc=r=192000:cl=7.1", 40, &["-c:a", "flac"], "flac");
    assert!(flac.len() < 8 << 20, "{} bytes", flac.len());
    let (status, body) = post_audio(&server, TRANSCRIBE, "audio/flac", flac).await;
    assert_error(status, &body, 413, "CTX_TOO_LARGE");
    assert_eq!(body["error"]["limit_unit"], "samples", "{body}");
    // Ten minutes of Opus silence: small packets, long audio.
    let opus = ffmpeg(
        "anullsrc=r=48000:cl=stereo",
        600,
        &["-c:a", "libopus", "-b:a", "6k"],
        "opus",
    );
    let (status, body) = post_audio(&server, TRANSCRIBE, "audio/ogg", opus).await;
    assert_error(status, &body, 413, "CTX_TOO_LARGE");
    assert_eq!(body["error"]["limit_unit"], "seconds", "{body}");
    assert_eq!(body["error"]["limit"], 60, "{body}");
    still_serving(&server).await;
    assert_growth_below(&server, before, 256);
}

#[tokio::test]
async fn a_two_hour_reference_clip_is_judged_on_its_first_seconds() {
    let server = Server::start().await;
    let before = rss_mib(&server);
    // Two hours at 16 kHz (silence keeps the FLAC under the upload limit): the
    // preflight stops decoding 5 s past its 25 s maximum.
    let flac = ffmpeg("anullsrc=r=16000:cl=mono", 7200, &["-c:a", "flac"], "flac");
    let part = reqwest::multipart::Part::bytes(flac)
        .file_name("long.flac")
        .mime_str("audio/flac")
        .unwrap();
    let form = reqwest::multipart::Form::new()
        .text("name", "long")
        .part("file", part);
    let response = server
        .http
        .post(server.url("/v1/modules/scaispeak/voices"))
        .bearer_auth(ADMIN_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_error(status, &body, 422, "SCAISPEAK_VOICE_PREFLIGHT_FAILED");
    let preflight = &body["error"]["preflight"];
    let reasons = preflight["fail_reasons"].as_array().unwrap();
    assert!(
        reasons.iter().any(|r| r == "duration_above_maximum"),
        "{preflight}"
    );
    let measured = preflight["metrics"]["duration_seconds"].as_f64().unwrap();
    assert!((25.0..=31.0).contains(&measured), "decoded {measured} s");
    still_serving(&server).await;
    assert_growth_below(&server, before, 256);
}

#[tokio::test]
async fn texts_that_abort_espeak_are_spoken_and_the_server_stays_up() {
    let server = Server::start().await;
    let before = rss_mib(&server);
    let word = "x".repeat(10_000);
    for input in ["s'".repeat(220), "s.".repeat(220), word] {
        let response = server
            .http
            .post(server.url("/v1/audio/speech"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"model": "tts-1", "input": input, "response_format": "wav"}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        // Streamed audio. The long word, spelled out letter by letter, is over an hour
        // of speech: its first bytes, then the client leaves (which stops it).
        let mut response = response;
        let bytes = match input.len() > 1_000 {
            true => response.chunk().await.unwrap().unwrap_or_default(),
            false => response.bytes().await.unwrap(),
        };
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
        assert_eq!(&bytes[..4], b"RIFF");
    }
    // The same long text on `/speak` is over `inline_text_chars`: a synth job, which the
    // in-process worker takes (the test only sees it start; the request below is served
    // while it runs).
    let (status, job) = server
        .post(
            "/v1/modules/scaispeak/speak",
            Some(ADMIN_KEY),
            json!({"text": "x".repeat(10_000)}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let path = format!("/v1/modules/scaispeak/jobs/{}", job["id"].as_str().unwrap());
    let started = wait_for_job(&server, &path, |job| job["status"] != "queued").await;
    assert_eq!(started["status"], "processing", "{started}");
    // Another request in the same process is served normally afterwards.
    let (status, body) = server
        .post(
            "/v1/modules/scaispeak/speak",
            Some(ADMIN_KEY),
            json!({"text": "Still here.", "output": {"codec": "wav"}}),
        )
        .await;
    assert!(status == 200, "{status} {body}");
    still_serving(&server).await;
    // The stated bound: ONNX Runtime's arena keeps the largest encoder input it saw (a
    // 400-character piece spelled letter by letter), and the running job holds its
    // audio so far. Measured here: 678 MiB.
    assert_growth_below(&server, before, 1024);
}

/// `POST /v1/auth/token` from a given loopback address (127.0.0.0/8 is all this host).
async fn login_from(from: &str, server: &Server, email: &str, password: &str) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let response = client
        .post(server.url("/v1/auth/token"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    read(response).await
}

#[tokio::test]
async fn five_hundred_parallel_wrong_logins_are_limited_and_tell_nothing() {
    let server = Server::start_with(Options {
        config_toml: Some(
            "[engines]\nenabled = false\n[auth]\nlogin_attempts_per_minute_per_ip = 30\n\
             login_failures_per_minute_per_email = 10\n"
                .into(),
        ),
        ..Options::default()
    })
    .await;
    let tenant = server.tenant("logins").await;
    for email in ["ada@example.com", "grace@example.com"] {
        server.user(&tenant.id, email, &["member"]).await;
    }
    let before = rss_mib(&server);
    let attempts = (0..500).map(|n| {
        let server = &server;
        async move {
            let password = format!("guess number {n}");
            let response = server
                .http
                .post(server.url("/v1/auth/token"))
                .json(&json!({"email": "ada@example.com", "password": password}))
                .send()
                .await
                .unwrap();
            let retry_after = response.headers().contains_key("retry-after");
            let (status, body) = read(response).await;
            (status, body, retry_after)
        }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let (mut wrong, mut limited) = (0, 0);
    for (status, body, retry_after) in &answers {
        match status {
            401 => {
                assert_error(*status, body, 401, "AUTH_TOKEN_INVALID");
                wrong += 1;
            }
            429 => {
                assert_error(*status, body, 429, "RATE_LIMITED");
                assert!(retry_after, "a refused login without Retry-After: {body}");
                limited += 1;
            }
            other => panic!("login answered {other}: {body}"),
        }
    }
    println!("500 parallel wrong logins: {wrong} checked (401), {limited} refused (429)");
    assert!((1..=40).contains(&wrong), "{wrong} passwords were checked");
    assert_eq!(wrong + limited, 500);
    assert_growth_below(&server, before, 256);
    still_serving(&server).await;

    // The guessed account's failures are spent, from any address, even with the right
    // password (until they refill); another account from another address is untouched,
    // and an unknown email is answered exactly like a wrong password.
    let (status, body) = login_from(
        "127.0.0.2",
        &server,
        "ada@example.com",
        "correct horse battery",
    )
    .await;
    assert_error(status, &body, 429, "RATE_LIMITED");
    let (status, _) = login_from(
        "127.0.0.3",
        &server,
        "grace@example.com",
        "correct horse battery",
    )
    .await;
    assert_eq!(status, 200);
    let (status, wrong) =
        login_from("127.0.0.4", &server, "grace@example.com", "nope nope nope").await;
    assert_error(status, &wrong, 401, "AUTH_TOKEN_INVALID");
    let (status, unknown) =
        login_from("127.0.0.4", &server, "nobody@example.com", "nope nope nope").await;
    assert_error(status, &unknown, 401, "AUTH_TOKEN_INVALID");
    assert_eq!(wrong["error"]["message"], unknown["error"]["message"]);
}

#[tokio::test]
async fn a_job_that_kills_its_workers_fails_after_three_and_the_next_job_runs() {
    // The API process runs no jobs; worker processes share its database and store.
    let server = Server::start_with(Options {
        config_toml: Some("[jobs]\nworkers = 0\nlease_seconds = 2\n".into()),
        ..Options::default()
    })
    .await;
    let worker = || {
        Server::start_with(Options {
            command: "worker",
            data_dir: Some(server.data_dir.clone()),
            bootstrap_key: false,
            config_toml: Some("[jobs]\nworkers = 1\nlease_seconds = 2\n".into()),
            ..Options::default()
        })
    };
    let submit = async |audio: Vec<u8>| {
        let (status, job) = post_audio(
            &server,
            &format!("{TRANSCRIBE}?async=true"),
            "audio/wav",
            audio,
        )
        .await;
        assert_eq!(status, 202, "{job}");
        job["id"].as_str().unwrap().to_owned()
    };
    let poison = submit(crate::scaled::long_speech()).await;
    let path = format!("/v1/modules/scaiecho/jobs/{poison}");
    // Three workers die on it (SIGKILL mid-job, as a crash in native code would).
    for crash in 1..=3 {
        let mut doomed = worker().await;
        // This worker's claim: the job's attempt count moves to `crash`.
        let job = wait_for_job(&server, &path, |job| {
            job["status"] == "processing" && job["attempts"] == crash
        })
        .await;
        assert_eq!(job["attempts"], crash, "crash {crash}: {job}");
        doomed.kill();
    }
    // The fourth does not run it: the job fails with `worker crashed`, and the worker
    // goes on to the next job.
    let _survivor = worker().await;
    let ended = |job: &Value| job["status"] == "failed" || job["status"] == "succeeded";
    let job = wait_for_job(&server, &path, ended).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["status_reason"], "worker crashed", "{job}");
    assert_eq!(job["failure_reason"], "WORKER_CRASHED", "{job}");
    assert!(
        job["failure_detail"].as_str().unwrap().contains("died"),
        "{job}"
    );
    let beckett = std::fs::read("models/cache/test-audio/beckett.wav").unwrap();
    let next = submit(beckett).await;
    let job = wait_for_job(&server, &format!("/v1/modules/scaiecho/jobs/{next}"), ended).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    still_serving(&server).await;
}

/// Polls a job until `done` holds (two minutes at most).
async fn wait_for_job(server: &Server, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..4800 {
        let (status, job) = server.get(path, Some(ADMIN_KEY)).await;
        assert_eq!(status, 200, "{job}");
        if done(&job) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path} did not get there");
}
