//! Load tool for WebRTC sessions (run by `benches/webrtc_load.sh`, which starts a
//! release server). The client is str0m over UDP on loopback, so only the server's
//! path is timed, not a browser's jitter buffer.
//!
//! For N concurrent sessions of each module it reports, p50/p95 over every session
//! and round:
//! - ScaiEcho mouth to transcript: beckett.wav as 20 ms Opus packets in real time,
//!   from the packet that ends the speech to the final `delta` on the control socket;
//! - ScaiSpeak text to first audio: from the `text` frame to the first RTP packet.
//!
//! The reference, in the same run: the same audio and text over the WebSocket streams
//! (`/stream/transcribe` with 20 ms PCM frames, `/stream/speak`).
//!
//! Usage: webrtc_load --url http://127.0.0.1:PORT --key KEY [--sessions 1,4] [--rounds 3]
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// The TTFA sentence of `benches/engines.rs` and `speak_load`.
const SENTENCE: &str = "When the meeting ends, please send the notes to everyone on the team.";
const FRAME_MS: u64 = 20;

struct Args {
    url: String,
    key: String,
    sessions: Vec<usize>,
    rounds: usize,
}

fn args() -> Args {
    let mut args = Args {
        url: String::new(),
        key: String::new(),
        sessions: vec![1, 4],
        rounds: 3,
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
            "--rounds" => args.rounds = value.parse().unwrap_or(3),
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

/// beckett.wav as 48 kHz Opus packets and 16 kHz PCM frames (both 20 ms), the index of
/// the frame that ends the speech, and one second of silence after it.
struct Clip {
    opus: Vec<Vec<u8>>,
    pcm: Vec<Vec<u8>>,
    speech_end: usize,
}

fn clip() -> Clip {
    let bytes = std::fs::read("models/cache/test-audio/beckett.wav").expect("models/fetch");
    let audio = media::decode(&bytes, &media::DecodeOptions::default()).unwrap();
    let mut speech = media::resample::to_mono(&audio, 16_000).unwrap();
    let speech_end = speech
        .chunks(320)
        .rposition(|w| (w.iter().map(|s| s * s).sum::<f32>() / w.len() as f32).sqrt() > 0.02)
        .unwrap();
    speech.truncate((speech_end + 1) * 320);
    speech.extend(std::iter::repeat_n(0.0, 32_000));
    let pcm = speech
        .chunks(320)
        .map(media::encode::pcm_s16le)
        .collect::<Vec<_>>();
    let high = media::resample::to_mono(&audio, 48_000).unwrap();
    let mut high = high[..((speech_end + 1) * 960).min(high.len())].to_vec();
    high.extend(std::iter::repeat_n(0.0, 96_000));
    let mut encoder = media::encode::OpusStreamEncoder::new(1, 32_000).unwrap();
    let mut opus = Vec::new();
    encoder
        .push(&high, &mut |packet| opus.push(packet.to_vec()))
        .unwrap();
    Clip {
        opus,
        pcm,
        speech_end,
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn websocket(args: &Args, path: &str) -> Result<Socket, String> {
    let url = format!(
        "{}{path}?token={}",
        args.url.replacen("http", "ws", 1),
        args.key
    );
    Ok(tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?
        .0)
}

/// The next JSON frame (binary frames are counted as `{"type":"binary"}`).
async fn next_json(socket: &mut Socket) -> Result<Value, String> {
    // One deadline for the frame, however many pings come meanwhile.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                return serde_json::from_str(&text).map_err(|e| e.to_string());
            }
            Ok(Some(Ok(Message::Binary(_)))) => return Ok(json!({"type": "binary"})),
            Ok(Some(Ok(_))) => continue,
            other => return Err(format!("socket ended: {other:?}")),
        }
    }
}

/// A str0m peer on loopback: the session's offer/answer done, its loop running.
/// Commands write Opus packets; `first_packet` fires on the first received RTP packet.
struct Peer {
    audio: mpsc::Sender<Vec<u8>>,
    first_packet: mpsc::Receiver<Instant>,
    control: Socket,
}

async fn peer(args: &Args, module: &str) -> Result<Peer, String> {
    let http = reqwest::Client::new();
    let session: Value = http
        .post(format!("{}/v1/modules/{module}/sessions", args.url))
        .bearer_auth(&args.key)
        .json(&json!({}))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let local = socket.local_addr().unwrap();
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let direction = match module {
        "scaiecho" => Direction::SendOnly,
        _ => Direction::RecvOnly,
    };
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Audio, direction, None, None, None);
    let (offer, pending) = change.apply().unwrap();
    let answer: Value = http
        .post(format!(
            "{}{}",
            args.url,
            session["offer_url"].as_str().ok_or(format!("{session}"))?
        ))
        .bearer_auth(&args.key)
        .json(&json!({"type": "offer", "sdp": offer.to_sdp_string()}))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let answer = SdpAnswer::from_sdp_string(answer["sdp"].as_str().ok_or(format!("{answer}"))?)
        .map_err(|e| e.to_string())?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| e.to_string())?;
    let (audio_tx, mut audio) = mpsc::channel::<Vec<u8>>(64);
    let (first_tx, first_packet) = mpsc::channel(1);
    let (connected_tx, mut connected) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 2048];
        let mut sent: u64 = 0;
        let mut first = Some(first_tx);
        let mut connected_tx = Some(connected_tx);
        loop {
            let timeout = loop {
                match rtc.poll_output() {
                    Ok(Output::Timeout(at)) => break at,
                    Ok(Output::Transmit(t)) => {
                        let _ = socket.try_send_to(&t.contents, t.destination);
                    }
                    Ok(Output::Event(Event::Connected)) => {
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.try_send(());
                        }
                    }
                    Ok(Output::Event(Event::MediaData(_))) => {
                        if let Some(tx) = first.take() {
                            let _ = tx.try_send(Instant::now());
                        }
                    }
                    Ok(Output::Event(_)) => {}
                    Err(_) => return,
                }
            };
            if !rtc.is_alive() {
                return;
            }
            let wait = tokio::time::Instant::from_std(timeout.max(Instant::now()));
            let input = tokio::select! {
                read = socket.recv_from(&mut buffer) => match read {
                    Ok((n, source)) => Some((n, source)),
                    Err(_) => return,
                },
                packet = audio.recv() => match packet {
                    Some(packet) => {
                        let pt = rtc.writer(mid).and_then(|w| {
                            w.payload_params().next().map(|p| p.pt())
                        });
                        if let (Some(pt), Some(writer)) = (pt, rtc.writer(mid)) {
                            let at = MediaTime::new(sent * 960, Frequency::FORTY_EIGHT_KHZ);
                            let _ = writer.write(pt, Instant::now(), at, packet);
                            sent += 1;
                        }
                        None
                    }
                    None => {
                        rtc.disconnect();
                        None
                    }
                },
                _ = tokio::time::sleep_until(wait) => None,
            };
            let result = match input {
                Some((n, source)) => match buffer[..n].try_into() {
                    Ok(contents) => rtc.handle_input(Input::Receive(
                        Instant::now(),
                        Receive {
                            proto: Protocol::Udp,
                            source,
                            destination: local,
                            contents,
                        },
                    )),
                    Err(_) => Ok(()),
                },
                None => rtc.handle_input(Input::Timeout(Instant::now())),
            };
            if result.is_err() {
                return;
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), connected.recv())
        .await
        .map_err(|_| "the peer did not connect in 10 s".to_owned())?;
    let control = websocket(args, session["control_url"].as_str().unwrap()).await?;
    Ok(Peer {
        audio: audio_tx,
        first_packet,
        control,
    })
}

/// Plays the clip in real time into `out`; returns when the speech ended.
async fn play(frames: &[Vec<u8>], speech_end: usize, out: &mpsc::Sender<Vec<u8>>) -> Instant {
    let start = tokio::time::Instant::now();
    let mut ended = Instant::now();
    for (index, frame) in frames.iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_millis(index as u64 * FRAME_MS)).await;
        let _ = out.send(frame.clone()).await;
        if index == speech_end {
            ended = Instant::now();
        }
    }
    ended
}

/// Every JSON frame with its arrival time, until `done` or an error.
fn collect(
    mut stream: futures_util::stream::SplitStream<Socket>,
) -> tokio::task::JoinHandle<Result<Vec<(Instant, Value)>, String>> {
    tokio::spawn(async move {
        let mut frames = Vec::new();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(60), stream.next())
                .await
                .map_err(|_| "no frame for 60 s".to_owned())?;
            let at = Instant::now();
            match message {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                    let last = matches!(frame["type"].as_str(), Some("done" | "error"));
                    frames.push((at, frame));
                    if last {
                        return Ok(frames);
                    }
                }
                Some(Ok(Message::Binary(_))) => frames.push((at, json!({"type": "binary"}))),
                Some(Ok(_)) => {}
                other => return Err(format!("socket ended: {other:?}")),
            }
        }
    })
}

/// From the end of speech to the last final.
fn mouth_to_final(frames: &[(Instant, Value)], ended: Instant) -> Result<Duration, String> {
    if let Some((_, error)) = frames.iter().find(|(_, f)| f["type"] == "error") {
        return Err(error.to_string());
    }
    let (at, _) = frames
        .iter()
        .rev()
        .find(|(_, f)| f["type"] == "delta" && f["is_final"] == true)
        .ok_or("no final")?;
    Ok(at.saturating_duration_since(ended))
}

fn close_frame() -> Message {
    Message::Text(json!({"type": "close"}).to_string().into())
}

async fn echo_webrtc(args: Arc<Args>, clip: Arc<Clip>) -> Result<Duration, String> {
    let peer = peer(&args, "scaiecho").await?;
    let (mut sink, stream) = peer.control.split();
    let frames = collect(stream);
    let ended = play(&clip.opus, clip.speech_end, &peer.audio).await;
    sink.send(close_frame()).await.map_err(|e| e.to_string())?;
    let frames = frames.await.map_err(|e| e.to_string())??;
    mouth_to_final(&frames, ended)
}

async fn echo_websocket(args: Arc<Args>, clip: Arc<Clip>) -> Result<Duration, String> {
    let mut socket = websocket(&args, "/v1/modules/scaiecho/stream/transcribe").await?;
    let open = json!({"type": "open", "media_type": "audio/pcm;rate=16000"});
    socket
        .send(Message::Text(open.to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    next_json(&mut socket).await?;
    let (mut sink, stream) = socket.split();
    let frames = collect(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let forward = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            let _ = sink.send(Message::Binary(frame.into())).await;
        }
        let _ = sink.send(close_frame()).await;
        sink
    });
    let ended = play(&clip.pcm, clip.speech_end, &tx).await;
    drop(tx);
    let _sink = forward.await.map_err(|e| e.to_string())?;
    let frames = frames.await.map_err(|e| e.to_string())??;
    mouth_to_final(&frames, ended)
}

/// The sentence and the space after it: a sentence is spoken once it has ended (as in
/// `speak_load`, where the next one follows).
fn text_frame() -> Message {
    let text = format!("{SENTENCE} ");
    Message::Text(json!({"type": "text", "text": text}).to_string().into())
}

async fn speak_webrtc(args: Arc<Args>) -> Result<Duration, String> {
    let mut peer = peer(&args, "scaispeak").await?;
    let ready = next_json(&mut peer.control).await?;
    if ready["type"] != "ready" {
        return Err(ready.to_string());
    }
    let sent = Instant::now();
    peer.control
        .send(text_frame())
        .await
        .map_err(|e| e.to_string())?;
    let first = tokio::time::timeout(Duration::from_secs(30), peer.first_packet.recv())
        .await
        .map_err(|_| "no audio in 30 s".to_owned())?
        .ok_or("the peer ended")?;
    let _ = peer.control.send(close_frame()).await;
    while next_json(&mut peer.control).await?["type"] != "done" {}
    Ok(first.saturating_duration_since(sent))
}

async fn speak_websocket(args: Arc<Args>) -> Result<Duration, String> {
    let mut socket = websocket(&args, "/v1/modules/scaispeak/stream/speak").await?;
    let open = json!({"type": "open", "pace": true});
    socket
        .send(Message::Text(open.to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    next_json(&mut socket).await?;
    let sent = Instant::now();
    socket.send(text_frame()).await.map_err(|e| e.to_string())?;
    while next_json(&mut socket).await?["type"] != "binary" {}
    let first = sent.elapsed();
    socket
        .send(close_frame())
        .await
        .map_err(|e| e.to_string())?;
    while next_json(&mut socket).await?["type"] != "done" {}
    Ok(first)
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values
        .get(((values.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// Runs `n` sessions at once, `rounds` times; p50 and p95 in ms.
async fn measure<F, Fut>(label: &str, n: usize, rounds: usize, run: F) -> (f64, f64)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Duration, String>> + Send + 'static,
{
    let bar = ProgressBar::new(rounds as u64)
        .with_style(ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} rounds").unwrap());
    bar.set_prefix(format!("{label} sessions={n}"));
    let mut times = Vec::new();
    let mut errors = Vec::new();
    for _ in 0..rounds {
        let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(run())).collect();
        for task in tasks {
            match task.await.unwrap() {
                Ok(time) => times.push(time.as_secs_f64() * 1000.0),
                Err(error) => errors.push(error),
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if !errors.is_empty() {
        println!("{label} sessions={n} errors: {errors:?}");
    }
    (percentile(&mut times, 0.5), percentile(&mut times, 0.95))
}

fn main() {
    let args = Arc::new(args());
    let clip = Arc::new(clip());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Warm-up: models, espeak-ng data, ONNX Runtime arenas.
        let _ = speak_websocket(args.clone()).await;
        let _ = speak_webrtc(args.clone()).await;
        for &n in &args.sessions {
            let rounds = args.rounds;
            let (a, c) = (args.clone(), clip.clone());
            let rtc = measure("echo webrtc", n, rounds, || echo_webrtc(a.clone(), c.clone())).await;
            let ws =
                measure("echo websocket", n, rounds, || echo_websocket(a.clone(), c.clone())).await;
            println!(
                "sessions={n}  mouth-to-final  webrtc p50 {:4.0} ms p95 {:4.0} ms | websocket p50 {:4.0} ms p95 {:4.0} ms | ratio p50 {:.2}",
                rtc.0, rtc.1, ws.0, ws.1, rtc.0 / ws.0
            );
            let rtc = measure("speak webrtc", n, rounds * 3, || speak_webrtc(a.clone())).await;
            let ws = measure("speak websocket", n, rounds * 3, || speak_websocket(a.clone())).await;
            println!(
                "sessions={n}  text-to-first-audio  webrtc p50 {:4.0} ms p95 {:4.0} ms | websocket p50 {:4.0} ms p95 {:4.0} ms | ratio p50 {:.2}",
                rtc.0, rtc.1, ws.0, ws.1, rtc.0 / ws.0
            );
        }
    });
}
