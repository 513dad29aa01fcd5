//! Load tool for ScaiEcho's `/stream/transcribe` (run by `benches/stream_load.sh`,
//! which starts a release server): N WebSocket streams of real speech (two_cities.wav,
//! 44 s, 14 sentences), each paced in real time like a microphone (a frame is sent when
//! its audio would have been recorded), started staggered. For each N it reports:
//!
//! - final latency: from the end of an utterance's speech (found offline by Silero on
//!   the same audio, independent of the server's endpointer) to its final delta, p50 and
//!   p95 over every final of every stream;
//! - lag: how far a delta trails the audio it covers (receive time minus its `end`),
//!   p95 and max; and drain: from the `close` to `done`;
//! - real time: a run keeps up when final p95 and drain both stay under 2 s (a backlog
//!   shows in both and grows with the stream).
//!
//! Then the batch figure: a 10-minute recording (the clip 14 times) through
//! `POST /transcribe`, in x real time.
//!
//! Usage: stream_load --url http://127.0.0.1:PORT --key KEY [--streams 1,2,4,8]
//!                    [--frame-ms 40] [--batch true] [--batch-parallel 1]
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use engines::models::ModelDir;
use engines::segments::{SegmentParams, segments};
use engines::silero::{FRAME, SileroVad};
use futures_util::{SinkExt, StreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const RATE: usize = 16_000;
const STREAM: &str = "/v1/modules/scaiecho/stream/transcribe";

struct Args {
    url: String,
    key: String,
    streams: Vec<usize>,
    frame_ms: usize,
    batch: bool,
    /// Batch recordings sent at once (aggregate throughput across nodes).
    batch_parallel: usize,
}

fn args() -> Args {
    let mut args = Args {
        url: String::new(),
        key: String::new(),
        streams: vec![1, 2, 4, 8],
        frame_ms: 40,
        batch: true,
        batch_parallel: 1,
    };
    let raw: Vec<String> = std::env::args().collect();
    let mut index = 1;
    while index < raw.len() {
        let value = raw.get(index + 1).cloned().unwrap_or_default();
        match raw[index].as_str() {
            "--url" => args.url = value,
            "--key" => args.key = value,
            "--streams" => args.streams = value.split(',').filter_map(|n| n.parse().ok()).collect(),
            "--frame-ms" => args.frame_ms = value.parse().unwrap_or(40),
            "--batch" => args.batch = value == "true",
            "--batch-parallel" => args.batch_parallel = value.parse().unwrap_or(1).max(1),
            // `cargo bench` adds `--bench`; anything else unknown is ignored too.
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

/// The clip as 16 kHz mono and the ends of its speech (seconds), by Silero offline.
fn speech() -> (Vec<f32>, Vec<f64>) {
    let models = ModelDir::from_env();
    let path = models
        .file("test.speech.beckett", "test-audio/two_cities.wav")
        .expect("models/fetch");
    let audio = media::decode(&std::fs::read(path).unwrap(), &Default::default()).unwrap();
    let samples = media::resample::to_mono(&audio, RATE as u32).unwrap();
    let vad = SileroVad::load(&models).unwrap();
    let probabilities = vad.probabilities(&samples).unwrap();
    let params = SegmentParams {
        pad_ms: 0,
        ..SegmentParams::default()
    };
    let ends = segments(&probabilities, FRAME, RATE as u32, samples.len(), &params)
        .iter()
        .map(|s| s.end as f64 / RATE as f64)
        .collect();
    (samples, ends)
}

/// What one stream saw.
#[derive(Default)]
struct StreamResult {
    /// Seconds from speech end to final, per final matched to a speech end.
    final_latency: Vec<f64>,
    lag: Vec<f64>,
    drain: f64,
    finals: usize,
    errors: Vec<String>,
}

async fn one_stream(
    args: Arc<Args>,
    pcm: Arc<Vec<u8>>,
    ends: Arc<Vec<f64>>,
    delay: Duration,
    bar: ProgressBar,
) -> StreamResult {
    tokio::time::sleep(delay).await;
    let mut result = StreamResult::default();
    let url = format!("{}{STREAM}", args.url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", args.key).parse().unwrap(),
    );
    let (socket, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(connected) => connected,
        Err(error) => {
            result.errors.push(error.to_string());
            return result;
        }
    };
    let (mut sink, mut stream) = socket.split();
    let open = json!({"type": "open", "media_type": "audio/pcm;rate=16000", "language": "en",
        "chunk_seconds": 2.0});
    sink.send(Message::Text(open.to_string().into()))
        .await
        .unwrap();
    let frame_bytes = RATE * 2 * args.frame_ms / 1000;
    let frames = pcm.len().div_ceil(frame_bytes);
    let started = Instant::now();
    let sender = {
        let pcm = pcm.clone();
        let frame_ms = args.frame_ms as u64;
        let bar = bar.clone();
        tokio::spawn(async move {
            for (index, chunk) in pcm.chunks(frame_bytes).enumerate() {
                // A microphone delivers a frame once its audio has been recorded.
                let due = started + Duration::from_millis(frame_ms * (index as u64 + 1));
                tokio::time::sleep_until(due.into()).await;
                if sink
                    .send(Message::Binary(chunk.to_vec().into()))
                    .await
                    .is_err()
                {
                    break;
                }
                bar.inc(1);
            }
            let closed_at = Instant::now();
            let _ = sink
                .send(Message::Text(json!({"type": "close"}).to_string().into()))
                .await;
            (sink, closed_at)
        })
    };
    bar.set_length(frames as u64);
    let mut deltas: Vec<(Instant, Value)> = Vec::new();
    let mut done_at = None;
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let frame: Value = serde_json::from_str(&text).unwrap_or_default();
        match frame["type"].as_str() {
            Some("delta") => deltas.push((Instant::now(), frame)),
            Some("done") => {
                done_at = Some(Instant::now());
                break;
            }
            Some("error") => result.errors.push(frame.to_string()),
            _ => {}
        }
    }
    let Ok((_sink, closed_at)) = sender.await else {
        return result;
    };
    result.drain = done_at.map_or(f64::INFINITY, |d| (d - closed_at).as_secs_f64());
    for (at, delta) in &deltas {
        let elapsed = (*at - started).as_secs_f64();
        let (start, end) = (
            delta["start"].as_f64().unwrap_or(0.0),
            delta["end"].as_f64().unwrap_or(0.0),
        );
        result.lag.push(elapsed - end);
        if delta["is_final"] == true {
            result.finals += 1;
            let speech_end = ends
                .iter()
                .copied()
                .filter(|e| *e > start && *e <= end + 0.05)
                .fold(None, |best: Option<f64>, e| {
                    Some(best.map_or(e, |b| b.max(e)))
                });
            if let Some(speech_end) = speech_end {
                result.final_latency.push(elapsed - speech_end);
            }
        }
    }
    bar.finish();
    result
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let index = ((values.len() - 1) as f64 * p).round() as usize;
    values[index]
}

async fn run_streams(args: &Arc<Args>, n: usize, pcm: &Arc<Vec<u8>>, ends: &Arc<Vec<f64>>) -> bool {
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} frames").unwrap();
    let mut tasks = Vec::new();
    for index in 0..n {
        let bar = bars.add(ProgressBar::new(0).with_style(style.clone()));
        bar.set_prefix(format!("N={n} stream {index:2}"));
        // Staggered over two seconds, as independent callers would be.
        let delay = Duration::from_millis((2000 * index / n.max(1)) as u64);
        tasks.push(tokio::spawn(one_stream(
            args.clone(),
            pcm.clone(),
            ends.clone(),
            delay,
            bar,
        )));
    }
    let mut latency = Vec::new();
    let mut lag = Vec::new();
    let mut drain: f64 = 0.0;
    let mut finals = 0;
    let mut errors = Vec::new();
    for task in tasks {
        let result = task.await.unwrap();
        latency.extend(result.final_latency);
        lag.extend(result.lag);
        drain = drain.max(result.drain);
        finals += result.finals;
        errors.extend(result.errors);
    }
    bars.clear().ok();
    let p50 = percentile(&mut latency, 0.5);
    let p95 = percentile(&mut latency, 0.95);
    let real_time = p95 < 2.0 && drain < 2.0 && errors.is_empty();
    println!(
        "N={n:2}  finals {finals:3}  final latency p50 {:4.0} ms  p95 {:4.0} ms  lag p95 {:5.2} s  max {:5.2} s  drain {:5.2} s  {}{}",
        p50 * 1000.0,
        p95 * 1000.0,
        percentile(&mut lag, 0.95),
        lag.iter().copied().fold(f64::NAN, f64::max),
        drain,
        if real_time { "real time" } else { "BEHIND" },
        if errors.is_empty() {
            String::new()
        } else {
            format!("  errors: {}", errors.join("; "))
        },
    );
    real_time
}

async fn batch(args: &Args, samples: &[f32]) {
    let http = reqwest::Client::new();
    let policy = http
        .patch(format!("{}/v1/modules/scaiecho/tenant-policy", args.url))
        .bearer_auth(&args.key)
        .json(&json!({"inline_threshold_seconds": 3600}))
        .send()
        .await
        .unwrap();
    assert!(policy.status().is_success(), "policy: {}", policy.status());
    let long: Vec<f32> = std::iter::repeat_n(samples, 14)
        .flatten()
        .copied()
        .collect();
    let seconds = long.len() as f64 / RATE as f64;
    let wav = media::encode::wav_s16(&long, RATE as u32, 1);
    let spinner = ProgressBar::new_spinner().with_message(format!(
        "batch: {:.1} minutes through POST /transcribe",
        seconds / 60.0
    ));
    spinner.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let send = |wav: Vec<u8>| {
        let request = http
            .post(format!("{}/v1/modules/scaiecho/transcribe", args.url))
            .bearer_auth(&args.key)
            .header("content-type", "audio/wav")
            .body(wav);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or_default();
            (status, body)
        }
    };
    let answers =
        futures_util::future::join_all((0..args.batch_parallel).map(|_| send(wav.clone()))).await;
    let took = started.elapsed().as_secs_f64();
    spinner.finish_and_clear();
    let reference = include_str!("../engines/tests/data/two_cities.txt").repeat(14);
    for (status, body) in answers {
        let error = engines::wer::wer(&reference, body["text"].as_str().unwrap_or(""));
        println!("batch: status {status}, WER {:.1} %", error * 100.0);
    }
    let parallel = args.batch_parallel as f64;
    println!(
        "batch: {} x {:.1} min of audio in {took:.1} s = {:.1}x real time in all",
        args.batch_parallel,
        seconds / 60.0,
        parallel * seconds / took,
    );
}

fn main() {
    let args = Arc::new(args());
    let (samples, ends) = speech();
    let pcm = Arc::new(media::encode::pcm_s16le(&samples));
    let ends = Arc::new(ends);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "{} s of speech per stream, {} utterances, {} ms frames",
            samples.len() / RATE,
            ends.len(),
            args.frame_ms
        );
        let mut largest = 0;
        for n in args.streams.clone() {
            if run_streams(&args, n, &pcm, &ends).await {
                largest = largest.max(n);
            }
        }
        println!("largest N in real time: {largest}");
        if args.batch {
            batch(&args, &samples).await;
        }
    });
}
