//! The command-line client (`scaigrid transcribe`, `scaigrid speak`) against a real
//! server: a folder of real speech in three formats to subtitles, a resumed and an
//! interrupted batch, long files through jobs, progress on a terminal, wrong keys and
//! broken files, and a text to an MP3 that transcribes back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ADMIN_KEY, Server, binary};

/// 16 kHz mono samples of a fixture, cut to `seconds`.
fn clip(name: &str, seconds: f32) -> Vec<f32> {
    let bytes = std::fs::read(format!("models/cache/test-audio/{name}")).unwrap();
    let audio = media::decode(&bytes, &media::DecodeOptions::default()).unwrap();
    let mut samples = media::resample::to_mono(&audio, 16_000).unwrap();
    samples.truncate((16_000.0 * seconds) as usize);
    samples
}

/// `calls/` with a WAV, and under `sub/` an MP3 and a FLAC, plus a file that is no audio
/// (skipped by extension) and a note.
fn batch(dir: &Path) -> PathBuf {
    use media::writer::{Format, encode_all};
    let calls = dir.join("calls");
    std::fs::create_dir_all(calls.join("sub")).unwrap();
    std::fs::copy(
        "models/cache/test-audio/beckett.wav",
        calls.join("beckett.wav"),
    )
    .unwrap();
    let endgame = encode_all(
        Format::Mp3 { kbps: 64 },
        &clip("endgame_nagg_nell.wav", 8.0),
        16_000,
    );
    std::fs::write(calls.join("sub/endgame.mp3"), endgame.unwrap()).unwrap();
    let cities = encode_all(Format::Flac, &clip("two_cities.wav", 8.0), 16_000).unwrap();
    std::fs::write(calls.join("sub/two_cities.flac"), cities).unwrap();
    std::fs::write(calls.join("notes.txt"), "not audio").unwrap();
    calls
}

fn client(server: &Server, key: &str, args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env("SCAIGRID_URL", &server.base)
        .env("SCAIGRID_API_KEY", key)
        .env_remove("SCAIGRID_BIND")
        .stdin(Stdio::null());
    command
}

fn run(mut command: Command) -> (Output, String) {
    let output = command.output().unwrap();
    let text = format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

/// The subtitles' text without numbers and times.
fn srt_words(path: &Path) -> String {
    let srt = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(srt.contains(" --> "), "{}: {srt}", path.display());
    srt.lines()
        .filter(|line| !line.contains(" --> ") && line.parse::<u32>().is_err())
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Transcriptions the server has billed to the admin's tenant.
async fn transcriptions(server: &Server) -> u64 {
    let row = server.module_usage(ADMIN_KEY, "scaiecho").await;
    row["requests"].as_u64().unwrap_or(0)
}

/// The names of the files under `root` (at any depth) ending in `extension`.
fn outputs(root: &Path, extension: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(extension) {
                found.push(name);
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn a_folder_becomes_subtitles_resumes_and_survives_an_interruption() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let calls = batch(dir.path());
    let out = dir.path().join("out");
    let args = ["transcribe", calls.to_str().unwrap(), "--format", "srt"];
    let mut command = client(&server, ADMIN_KEY, &args);
    command.args(["--out", out.to_str().unwrap(), "--concurrency", "2"]);
    let (output, text) = run(command);
    assert!(output.status.success(), "{text}");
    // Not a terminal: a line per file instead of a bar.
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).lines().count(),
        3,
        "{text}"
    );
    assert!(
        srt_words(&out.join("beckett.srt")).contains("fail better"),
        "{text}"
    );
    assert!(srt_words(&out.join("sub/endgame.srt")).len() > 20, "{text}");
    assert!(
        srt_words(&out.join("sub/two_cities.srt")).contains("best of times"),
        "{text}"
    );
    assert_eq!(outputs(&out, ".part"), Vec::<String>::new());
    assert_eq!(transcriptions(&server).await, 3);

    // Resumed: only the file whose subtitles are missing is sent again.
    std::fs::remove_file(out.join("sub/endgame.srt")).unwrap();
    let mut command = client(&server, ADMIN_KEY, &args);
    command.args(["--out", out.to_str().unwrap()]);
    let (output, text) = run(command);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("skipping 2 file(s) already transcribed"),
        "{text}"
    );
    assert!(
        text.contains("1 transcribed, 2 skipped, 0 failed"),
        "{text}"
    );
    assert!(out.join("sub/endgame.srt").exists(), "{text}");
    assert_eq!(transcriptions(&server).await, 4);

    // Files over the tenant's inline threshold are jobs: the client waits for them.
    let (status, policy) = server
        .send(
            reqwest::Method::PATCH,
            "/v1/modules/scaiecho/tenant-policy",
            Some(ADMIN_KEY),
            Some(json!({"inline_threshold_seconds": 5})),
        )
        .await;
    assert_eq!(status, 200, "{policy}");
    // Interrupted after its first file (one at a time), then run again: every file is
    // there and whole, and nothing half-written is left.
    let vtt = dir.path().join("vtt");
    let mut command = client(
        &server,
        ADMIN_KEY,
        &["transcribe", calls.to_str().unwrap(), "--format", "vtt"],
    );
    command.args(["--out", vtt.to_str().unwrap(), "--concurrency", "1"]);
    command.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    for _ in 0..600 {
        if !outputs(&vtt, ".vtt").is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let first = outputs(&vtt, ".vtt");
    assert!(!first.is_empty() && first.len() < 3, "{first:?}");
    let mut command = client(
        &server,
        ADMIN_KEY,
        &["transcribe", calls.to_str().unwrap(), "--format", "vtt"],
    );
    command.args(["--out", vtt.to_str().unwrap()]);
    let (output, text) = run(command);
    assert!(output.status.success(), "{text}");
    assert_eq!(
        outputs(&vtt, ".vtt"),
        ["beckett.vtt", "endgame.vtt", "two_cities.vtt"],
        "{text}"
    );
    assert_eq!(outputs(&vtt, ".part"), Vec::<String>::new());
    for name in ["beckett.vtt", "sub/endgame.vtt", "sub/two_cities.vtt"] {
        let vtt = std::fs::read_to_string(vtt.join(name)).unwrap();
        assert!(
            vtt.starts_with("WEBVTT") && vtt.contains(" --> "),
            "{name}: {vtt}"
        );
    }
    let (_, jobs) = server
        .get("/v1/modules/scaiecho/jobs?limit=100", Some(ADMIN_KEY))
        .await;
    let jobs = jobs["data"].as_array().unwrap();
    assert!(
        jobs.iter().any(|job| job["status"] == "succeeded"),
        "the 10 s file went through a job: {jobs:?}"
    );
}

#[tokio::test]
async fn broken_files_are_reported_and_a_wrong_key_stops_the_batch() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("mixed");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(
        "models/cache/test-audio/beckett.wav",
        folder.join("good.wav"),
    )
    .unwrap();
    std::fs::write(folder.join("broken.mp3"), vec![0x5a_u8; 4096]).unwrap();
    let args = ["transcribe", folder.to_str().unwrap(), "--format", "text"];
    let (output, text) = run(client(&server, ADMIN_KEY, &args));
    // One file failed: said with the server's code, the other written, status 1.
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("broken.mp3: AUDIO_"), "{text}");
    assert!(
        text.contains("1 transcribed, 0 skipped, 1 failed"),
        "{text}"
    );
    let good = std::fs::read_to_string(folder.join("good.txt")).unwrap();
    assert!(good.to_lowercase().contains("fail better"), "{good}");
    assert!(!folder.join("broken.txt").exists());

    // A wrong key would fail every file: the batch stops at the first with its code.
    std::fs::remove_file(folder.join("good.txt")).unwrap();
    let (output, text) = run(client(&server, "sgk_wrong_key_000000000000000000", &args));
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("stopped: AUTH_"), "{text}");
    // A server that is not there: a clear transport error, not a panic.
    let mut command = client(&server, ADMIN_KEY, &args);
    command.env("SCAIGRID_URL", "http://127.0.0.1:9");
    let (output, text) = run(command);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("UNREACHABLE"), "{text}");
    // Nothing named: clap's usage error.
    let (output, text) = run(client(&server, ADMIN_KEY, &["transcribe"]));
    assert_eq!(output.status.code(), Some(2), "{text}");
}

#[tokio::test]
async fn progress_shows_on_a_terminal() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let calls = batch(dir.path());
    let out = dir.path().join("out");
    // `script` runs the client under a pseudo-terminal and records what it drew.
    let command = format!(
        "{} transcribe {} --out {} --concurrency 1",
        binary(),
        calls.display(),
        out.display()
    );
    let mut script = Command::new("script");
    script
        .args(["-qefc", &command, "/dev/null"])
        .env("SCAIGRID_URL", &server.base)
        .env("SCAIGRID_API_KEY", ADMIN_KEY)
        .env("TERM", "xterm-256color")
        .env("COLUMNS", "160");
    let (output, text) = run(script);
    assert!(output.status.success(), "{text}");
    let drawn = String::from_utf8_lossy(&output.stdout);
    assert!(drawn.contains("/3 files"), "{text}");
    assert!(drawn.contains("3/3 files"), "{text}");
    // A bar redraws in place (carriage returns or cursor moves).
    assert!(drawn.contains('\r') || drawn.contains("\u{1b}["), "{text}");
    assert_eq!(outputs(&out, ".srt").len(), 3, "{text}");
}

#[tokio::test]
async fn a_text_becomes_an_mp3_that_says_it() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/hello.mp3");
    let text = "Please call me back when you get this message.";
    let (output, report) = run(client(
        &server,
        ADMIN_KEY,
        &["speak", text, "-o", path.to_str().unwrap()],
    ));
    assert!(output.status.success(), "{report}");
    let mp3 = std::fs::read(&path).unwrap();
    assert!(mp3[0] == 0xFF && mp3[1] & 0xE0 == 0xE0, "{report}");
    let audio = media::decode(&mp3, &media::DecodeOptions::default()).unwrap();
    let samples = media::resample::to_mono(&audio, 16_000).unwrap();
    let response = server
        .http
        .post(server.url("/v1/modules/scaiecho/transcribe"))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "audio/pcm;rate=16000")
        .body(media::encode::pcm_s16le(&samples))
        .send()
        .await
        .unwrap();
    let heard: Value = response.json().await.unwrap();
    let heard = heard["text"].as_str().unwrap();
    assert!(engines::wer::wer(text, heard) <= 0.2, "{heard}");
    assert!(!dir.path().join("nested/hello.mp3.part").exists());

    // An extension that names no format, and a voice that does not exist.
    let wrong = dir.path().join("x.aac");
    let (output, report) = run(client(
        &server,
        ADMIN_KEY,
        &["speak", "Hi.", "-o", wrong.to_str().unwrap()],
    ));
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(report.contains("--format"), "{report}");
    let (output, report) = run(client(
        &server,
        ADMIN_KEY,
        &[
            "speak",
            "Hi.",
            "-o",
            path.to_str().unwrap(),
            "--voice",
            "nobody",
        ],
    ));
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(report.contains("NOT_FOUND (404)"), "{report}");
}
