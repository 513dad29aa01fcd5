//! Mouth-to-ear latency of a Realtime voice turn (run by `benches/realtime_turn.sh`,
//! which starts a release server with the real models).
//!
//! A mock chat model in this process answers in `--llm-ms` (50 ms) and streams its
//! sentence token by token. Each round opens `/v1/realtime`, speaks a question (the
//! server's own voice saying it, as 24 kHz PCM) in real time in 40 ms appends followed by
//! silence, and times from the end of the speech (its last sample above the noise floor
//! sent) to the first `response.output_audio.delta`. It also reports where the time went:
//! until `speech_stopped` (the endpointer's pause), until `response.created` (the final
//! transcription), until the first transcript delta of the answer (the model).
//!
//! Usage: realtime_turn --url http://127.0.0.1:PORT --key KEY [--rounds 10]
//!        [--silence-ms 200] [--llm-ms 50]
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const QUESTION: &str = "What will the weather be like in Paris tomorrow?";
const ANSWER: &str = "Tomorrow in Paris it will be sunny and mild. Take a light jacket.";
/// Appended per event: 40 ms of 24 kHz PCM16.
const STEP: usize = 1_920;

struct Args {
    url: String,
    key: String,
    rounds: usize,
    silence_ms: u64,
    llm: Duration,
}

fn args() -> Args {
    let mut args = Args {
        url: String::new(),
        key: String::new(),
        rounds: 10,
        silence_ms: 200,
        llm: Duration::from_millis(50),
    };
    let raw: Vec<String> = std::env::args().collect();
    let mut index = 1;
    while index < raw.len() {
        let value = raw.get(index + 1).cloned().unwrap_or_default();
        match raw[index].as_str() {
            "--url" => args.url = value,
            "--key" => args.key = value,
            "--rounds" => args.rounds = value.parse().unwrap_or(10),
            "--silence-ms" => args.silence_ms = value.parse().unwrap_or(200),
            "--llm-ms" => args.llm = Duration::from_millis(value.parse().unwrap_or(50)),
            _ => {
                index += 1;
                continue;
            }
        }
        index += 2;
    }
    assert!(
        !args.url.is_empty() && !args.key.is_empty(),
        "--url and --key are required"
    );
    args
}

/// The mock chat model: after `delay`, [`ANSWER`] streamed a word at a time.
async fn mock_llm(delay: Duration) -> String {
    async fn chat(
        axum::extract::State(delay): axum::extract::State<Duration>,
    ) -> axum::response::Response {
        tokio::time::sleep(delay).await;
        let mut events: Vec<String> = ANSWER
            .split_inclusive(' ')
            .map(|word| {
                let chunk = json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": null}]});
                format!("data: {chunk}\n\n")
            })
            .collect();
        events.push("data: [DONE]\n\n".to_owned());
        axum::response::Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::from(events.concat()))
            .unwrap()
    }
    async fn models() -> axum::Json<Value> {
        axum::Json(json!({"object": "list", "data": [{"id": "m", "object": "model"}]}))
    }
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .route("/v1/models", axum::routing::get(models))
        .with_state(delay);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/v1")
}

async fn post(http: &reqwest::Client, args: &Args, path: &str, body: Value) -> reqwest::Response {
    let response = http
        .post(format!("{}{path}", args.url))
        .bearer_auth(&args.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response
}

/// The question as 24 kHz PCM16, and where its speech ends (bytes).
async fn question(http: &reqwest::Client, args: &Args) -> (Vec<u8>, usize) {
    let wav = post(
        http,
        args,
        "/v1/audio/speech",
        json!({"model": "tts-1", "input": QUESTION, "voice": "alloy", "response_format": "wav"}),
    )
    .await
    .bytes()
    .await
    .unwrap();
    let audio = media::decode(&wav, &media::DecodeOptions::default()).unwrap();
    let samples = media::resample::to_mono(&audio, 24_000).unwrap();
    let loud = samples
        .iter()
        .rposition(|s| s.abs() > 0.02)
        .unwrap_or(samples.len());
    (media::encode::pcm_s16le(&samples), (loud + 1) * 2)
}

/// Milliseconds from the end of speech to: speech_stopped, response.created, the
/// answer's first transcript delta, its first audio.
type Turn = [f64; 4];

async fn turn(args: &Args, pcm: &[u8], speech_end: usize) -> Result<Turn, String> {
    let url = format!(
        "{}/v1/realtime?model=bench/chat",
        args.url.replacen("http", "ws", 1)
    );
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", args.key).parse().unwrap(),
    );
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sink, mut stream) = socket.split();
    let update = json!({"type": "session.update", "session": {"type": "realtime",
        "audio": {"input": {"turn_detection": {"type": "server_vad",
            "silence_duration_ms": args.silence_ms}}}}});
    sink.send(Message::Text(update.to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    let ended = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut audio = pcm.to_vec();
    audio.extend(vec![0; 48_000 * 3]);
    let speaker = {
        let ended = ended.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            for (index, chunk) in audio.chunks(STEP).enumerate() {
                let event = json!({"type": "input_audio_buffer.append",
                    "audio": base64::engine::general_purpose::STANDARD.encode(chunk)});
                if sink
                    .send(Message::Text(event.to_string().into()))
                    .await
                    .is_err()
                {
                    return;
                }
                if (index + 1) * STEP >= speech_end {
                    ended.lock().unwrap().get_or_insert_with(Instant::now);
                }
                // Real time: the next append leaves when its audio would have been heard.
                let due = start + Duration::from_millis(40 * (index as u64 + 1));
                tokio::time::sleep_until(due.into()).await;
            }
        })
    };
    let mut marks = [None::<Instant>; 4];
    let deadline = Instant::now() + Duration::from_secs(30);
    while marks[3].is_none() && Instant::now() < deadline {
        let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(Duration::from_secs(30), stream.next()).await
        else {
            break;
        };
        let event: Value = serde_json::from_str(&text).unwrap_or_default();
        let at = match event["type"].as_str().unwrap_or_default() {
            "input_audio_buffer.speech_stopped" => 0,
            "response.created" => 1,
            "response.output_audio_transcript.delta" => 2,
            "response.output_audio.delta" => 3,
            "error" => return Err(text.to_string()),
            _ => continue,
        };
        marks[at].get_or_insert_with(Instant::now);
    }
    speaker.abort();
    let end = ended.lock().unwrap().ok_or("the speech was not sent")?;
    let mut turn = [0.0; 4];
    for (slot, mark) in turn.iter_mut().zip(marks) {
        let mark = mark.ok_or("the turn was not answered")?;
        *slot = mark.saturating_duration_since(end).as_secs_f64() * 1000.0;
    }
    Ok(turn)
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values
        .get(((values.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let llm = mock_llm(args.llm).await;
        let backend: Value = post(&http, &args, "/v1/backends",
            json!({"name": "bench-llm", "kind": "openai", "base_url": llm, "api_key": "k"}))
        .await
        .json()
        .await
        .unwrap();
        post(&http, &args, "/v1/models", json!({"slug": "bench/chat",
            "routing": {"backends": [{"backend_id": backend["id"]}]}}))
        .await;
        let (pcm, speech_end) = question(&http, &args).await;
        // Warm-up: the first turn loads the engines' arenas.
        let _ = turn(&args, &pcm, speech_end).await;
        let bar = ProgressBar::new(args.rounds as u64)
            .with_style(ProgressStyle::with_template("{bar:30} {pos}/{len} turns").unwrap());
        let mut columns: [Vec<f64>; 4] = Default::default();
        let mut errors = Vec::new();
        for _ in 0..args.rounds {
            match turn(&args, &pcm, speech_end).await {
                Ok(times) => {
                    for (column, time) in columns.iter_mut().zip(times) {
                        column.push(time);
                    }
                }
                Err(error) => errors.push(error),
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        println!(
            "{} turns, silence_duration_ms {}, mock LLM {} ms, {} cores; ms after the end of speech:",
            columns[3].len(),
            args.silence_ms,
            args.llm.as_millis(),
            std::thread::available_parallelism().map_or(0, usize::from)
        );
        for (name, column) in
            ["speech_stopped", "response.created", "first transcript delta", "first audio (mouth-to-ear)"]
                .iter()
                .zip(columns.iter_mut())
        {
            println!(
                "  {name:28} p50 {:5.0}  p95 {:5.0}",
                percentile(column, 0.5),
                percentile(column, 0.95)
            );
        }
        if !errors.is_empty() {
            println!("  errors: {errors:?}");
        }
    });
}
