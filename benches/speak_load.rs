//! Load tool for ScaiSpeak's `/stream/speak` (run by `benches/speak_load.sh`, which
//! starts a release server and times piper-tts on the same sentence in the same run).
//!
//! For N concurrent sessions (each: open, then a paragraph sent as one `text` frame per
//! sentence, then `close`) it reports time to first audio — from the frame that
//! completes the first sentence to the first binary frame — p50/p95 over every session
//! and round, and the aggregate real-time factor: seconds of audio produced by all
//! sessions over the wall time.
//!
//! Usage: speak_load --url http://127.0.0.1:PORT --key KEY [--sessions 1,4] [--rounds 5]
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The first sentence is the TTFA sentence of `benches/engines.rs`.
const PARAGRAPH: [&str; 5] = [
    "When the meeting ends, please send the notes to everyone on the team.",
    "The weather will be sunny tomorrow afternoon.",
    "Our meeting has been moved to the second floor.",
    "Remember to lock the door when you leave.",
    "We need more time to finish the project.",
];

struct Args {
    url: String,
    key: String,
    sessions: Vec<usize>,
    rounds: usize,
    /// Session i of a round starts i × this late (0: all at once); a staggered start
    /// is a stream arriving while others are speaking.
    stagger: Duration,
}

fn args() -> Args {
    let mut args = Args {
        url: String::new(),
        key: String::new(),
        sessions: vec![1, 4],
        rounds: 5,
        stagger: Duration::ZERO,
    };
    let raw: Vec<String> = std::env::args().collect();
    let mut index = 1;
    while index < raw.len() {
        let value = raw.get(index + 1).cloned().unwrap_or_default();
        match raw[index].as_str() {
            "--url" => args.url = value,
            "--key" => args.key = value,
            "--sessions" => {
                args.sessions = value.split(',').filter_map(|n| n.parse().ok()).collect()
            }
            "--rounds" => args.rounds = value.parse().unwrap_or(5),
            "--stagger-ms" => args.stagger = Duration::from_millis(value.parse().unwrap_or(0)),
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

/// One session: (time to first audio, audio seconds).
async fn session(args: Arc<Args>) -> Result<(Duration, f64), String> {
    let url = format!(
        "{}/v1/modules/scaispeak/stream/speak",
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
    let send = |value: Value| Message::Text(value.to_string().into());
    sink.send(send(
        json!({"type": "open", "output": {"codec": "pcm_s16le"}}),
    ))
    .await
    .map_err(|e| e.to_string())?;
    let mut rate = 22_050.0;
    if let Some(Ok(Message::Text(ready))) = stream.next().await {
        let ready: Value = serde_json::from_str(&ready).unwrap_or_default();
        rate = ready["sample_rate"].as_f64().unwrap_or(rate);
    }
    let sent = Instant::now();
    for sentence in PARAGRAPH {
        sink.send(send(
            json!({"type": "text", "text": format!("{sentence} ")}),
        ))
        .await
        .map_err(|e| e.to_string())?;
    }
    sink.send(send(json!({"type": "close"})))
        .await
        .map_err(|e| e.to_string())?;
    let mut first = None;
    let mut bytes = 0usize;
    while let Some(Ok(message)) = stream.next().await {
        match message {
            Message::Binary(frame) => {
                first.get_or_insert_with(|| sent.elapsed());
                bytes += frame.len();
            }
            Message::Text(text) if text.contains("\"done\"") => break,
            Message::Text(text) if text.contains("\"error\"") => return Err(text.to_string()),
            _ => {}
        }
    }
    let first = first.ok_or("no audio")?;
    Ok((first, bytes as f64 / 2.0 / rate))
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values
        .get(((values.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

fn main() {
    let args = Arc::new(args());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Warm-up: the first synthesis loads espeak-ng data and ONNX Runtime arenas.
        let _ = session(args.clone()).await;
        for &n in &args.sessions {
            let bar = ProgressBar::new(args.rounds as u64).with_style(
                ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} rounds").unwrap(),
            );
            bar.set_prefix(format!("sessions={n}"));
            let mut ttfa = Vec::new();
            let mut audio = 0.0;
            let mut wall = Duration::ZERO;
            let mut errors = Vec::new();
            for _ in 0..args.rounds {
                let started = Instant::now();
                let tasks: Vec<_> = (0..n)
                    .map(|i| {
                        let (args, delay) = (args.clone(), args.stagger * i as u32);
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            session(args).await
                        })
                    })
                    .collect();
                for task in tasks {
                    match task.await.unwrap() {
                        Ok((first, seconds)) => {
                            ttfa.push(first.as_secs_f64());
                            audio += seconds;
                        }
                        Err(error) => errors.push(error),
                    }
                }
                wall += started.elapsed();
                bar.inc(1);
            }
            bar.finish_and_clear();
            println!(
                "sessions={n} stagger={}ms  TTFA p50 {:4.0} ms  p95 {:4.0} ms  aggregate {:4.1}x real time{}",
                args.stagger.as_millis(),
                percentile(&mut ttfa, 0.5) * 1000.0,
                percentile(&mut ttfa, 0.95) * 1000.0,
                audio / wall.as_secs_f64(),
                if errors.is_empty() {
                    String::new()
                } else {
                    format!("  errors: {errors:?}")
                }
            );
        }
    });
}
