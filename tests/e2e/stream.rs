//! ScaiEcho's WebSocket `/stream/transcribe` against the real server and models: every
//! stream media type, partials and finals, flush, `done` with usage, every close code,
//! bad frames that lose nothing, diarized two-voice streams, backend B.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{ADMIN_KEY, Options, Server};

const STREAM: &str = "/v1/modules/scaiecho/stream/transcribe";

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How the token travels.
pub(crate) enum Token<'a> {
    Header(&'a str),
    Query(&'a str),
    None,
}

pub(crate) async fn connect(server: &Server, token: Token<'_>) -> Socket {
    let base = server.base.replacen("http://", "ws://", 1);
    let url = match token {
        Token::Query(token) => format!("{base}{STREAM}?token={token}"),
        _ => format!("{base}{STREAM}"),
    };
    let mut request = url.into_client_request().unwrap();
    if let Token::Header(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
}

/// `two_cities.wav` as 16 kHz PCM over a stream of `server`, split in two: the first
/// third is sent and its first final received, and the rest waits ([`finish_pcm`]).
/// The socket, the frames so far (none an error), and the rest of the audio.
pub(crate) async fn two_cities_underway(server: &Server) -> (Socket, Vec<Value>, Vec<u8>) {
    let audio = pcm_16k("two_cities.wav");
    let mut socket = connect(server, Token::Header(ADMIN_KEY)).await;
    send_json(
        &mut socket,
        json!({"type": "open", "media_type": "audio/pcm;rate=16000", "language": "en",
            "chunk_seconds": 1.0}),
    )
    .await;
    assert_eq!(next_frame(&mut socket).await["type"], "ready");
    let (head, tail) = audio.split_at((audio.len() / 3) & !1);
    for chunk in head.chunks(3200) {
        let chunk = Message::Binary(chunk.to_vec().into());
        socket.send(chunk).await.unwrap();
    }
    let mut frames = Vec::new();
    loop {
        let frame = next_frame(&mut socket).await;
        assert_ne!(frame["type"], "error", "{frame}");
        let is_final = frame["is_final"] == true;
        frames.push(frame);
        if is_final {
            return (socket, frames, tail.to_vec());
        }
    }
}

/// Sends the rest of a stream's PCM and `close`: the frames until the server closes,
/// and the close code.
pub(crate) async fn finish_pcm(socket: &mut Socket, rest: &[u8]) -> (Vec<Value>, Option<u16>) {
    for chunk in rest.chunks(3200) {
        let chunk = Message::Binary(chunk.to_vec().into());
        socket.send(chunk).await.unwrap();
    }
    send_json(socket, json!({"type": "close"})).await;
    until_close(socket).await
}

/// Every text frame until the server closes, and the close code.
pub(crate) async fn until_close(socket: &mut Socket) -> (Vec<Value>, Option<u16>) {
    let mut frames = Vec::new();
    let deadline = std::time::Duration::from_secs(120);
    loop {
        let message = tokio::time::timeout(deadline, socket.next())
            .await
            .expect("the server answers within two minutes");
        match message {
            Some(Ok(Message::Text(text))) => frames.push(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => {
                return (frames, frame.map(|f| u16::from(f.code)));
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return (frames, None),
        }
    }
}

pub(crate) async fn next_frame(socket: &mut Socket) -> Value {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Close(frame))) => panic!("closed: {frame:?}"),
            Some(Ok(_)) => continue,
            other => panic!("stream ended: {other:?}"),
        }
    }
}

pub(crate) async fn send_json(socket: &mut Socket, value: Value) {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

pub(crate) fn pcm_16k(file: &str) -> Vec<u8> {
    let bytes = std::fs::read(format!("models/cache/test-audio/{file}")).unwrap();
    let audio = media::decode(&bytes, &media::DecodeOptions::default()).unwrap();
    media::encode::pcm_s16le(&media::resample::to_mono(&audio, 16_000).unwrap())
}

pub(crate) fn finals(frames: &[Value]) -> Vec<&Value> {
    frames
        .iter()
        .filter(|f| f["type"] == "delta" && f["is_final"] == true)
        .collect()
}

pub(crate) fn final_text(frames: &[Value]) -> String {
    finals(frames)
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn says_beckett(text: &str) -> bool {
    let lower = text.to_lowercase();
    ["ever", "tried", "failed", "matter", "again", "better"]
        .iter()
        .filter(|w| lower.contains(*w))
        .count()
        >= 5
}

/// Opens a stream, sends `audio` in `piece`-byte binary frames, then `close`.
async fn stream_file(
    server: &Server,
    token: &str,
    open: Value,
    audio: &[u8],
    piece: usize,
) -> (Vec<Value>, Option<u16>) {
    let mut socket = connect(server, Token::Header(token)).await;
    send_json(&mut socket, open).await;
    let ready = next_frame(&mut socket).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    for chunk in audio.chunks(piece) {
        socket
            .send(Message::Binary(chunk.to_vec().into()))
            .await
            .unwrap();
    }
    send_json(&mut socket, json!({"type": "close"})).await;
    let (mut frames, code) = until_close(&mut socket).await;
    frames.insert(0, ready);
    (frames, code)
}

/// beckett.wav through ffmpeg into another container.
fn converted(args: &[&str], extension: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("out.{extension}"));
    let status = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg("models/cache/test-audio/beckett.wav")
        .args(args)
        .arg(&out)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    std::fs::read(out).unwrap()
}

#[tokio::test]
async fn every_stream_media_type_is_transcribed_with_finals_and_done() {
    let server = Server::start().await;
    let wav = std::fs::read("models/cache/test-audio/beckett.wav").unwrap();
    let inputs = [
        ("audio/pcm;rate=16000", pcm_16k("beckett.wav")),
        ("audio/wav", wav),
        (
            "audio/ogg;codecs=opus",
            converted(&["-c:a", "libopus"], "opus"),
        ),
        (
            "audio/webm;codecs=opus",
            converted(&["-c:a", "libopus"], "webm"),
        ),
        (
            "audio/mpeg",
            converted(&["-c:a", "libmp3lame", "-b:a", "64k"], "mp3"),
        ),
    ];
    for (media_type, audio) in inputs {
        let open = json!({"type": "open", "media_type": media_type, "language": "en",
            "chunk_seconds": 1.0});
        let (frames, code) = stream_file(&server, ADMIN_KEY, open, &audio, 3200).await;
        assert_eq!(code, Some(1000), "{media_type}: {frames:?}");
        let text = final_text(&frames);
        assert!(says_beckett(&text), "{media_type}: {text:?} {frames:?}");
        let done = frames.last().unwrap();
        assert_eq!(done["type"], "done", "{media_type}");
        let seconds = done["usage"]["audio_seconds"].as_f64().unwrap();
        assert!((seconds - 9.96).abs() < 0.15, "{media_type}: {done}");
        let finals = finals(&frames);
        assert_eq!(done["utterances"], finals.len() as u64);
        // Finals in order, numbered from 0, within the audio.
        let mut previous_end = 0.0;
        for (index, delta) in finals.iter().enumerate() {
            assert_eq!(delta["utterance"], index as u64, "{frames:?}");
            let (start, end) = (
                delta["start"].as_f64().unwrap(),
                delta["end"].as_f64().unwrap(),
            );
            assert!(
                start >= previous_end - 0.01 && end > start && end <= 10.1,
                "{delta}"
            );
            previous_end = end;
            assert!(delta.get("speaker_label").is_none());
        }
    }
}

#[tokio::test]
async fn partials_flush_and_bad_control_frames_lose_nothing() {
    let server = Server::start().await;
    let audio = pcm_16k("two_cities.wav");
    let mut socket = connect(&server, Token::Query(ADMIN_KEY)).await;
    send_json(
        &mut socket,
        json!({"type": "open", "media_type": "audio/pcm;rate=16000", "chunk_seconds": 1.0}),
    )
    .await;
    assert_eq!(next_frame(&mut socket).await["type"], "ready");
    // 6 s of speech paced in real time (partials come while it is spoken), then
    // `flush` mid-sentence: a final comes without waiting for a pause.
    let six_seconds = 6 * 32_000;
    let mut pace = tokio::time::interval(std::time::Duration::from_millis(100));
    for chunk in audio[..six_seconds].chunks(3200) {
        pace.tick().await;
        socket
            .send(Message::Binary(chunk.to_vec().into()))
            .await
            .unwrap();
    }
    // A text frame that is not a control: an error frame, and the stream goes on.
    socket
        .send(Message::Text("{\"type\":\"pause\"}".into()))
        .await
        .unwrap();
    send_json(&mut socket, json!({"type": "flush"})).await;
    let mut frames = Vec::new();
    loop {
        let frame = next_frame(&mut socket).await;
        frames.push(frame.clone());
        if frame["type"] == "delta"
            && frame["is_final"] == true
            && frame["end"].as_f64() > Some(5.5)
        {
            break;
        }
    }
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "error" && f["code"] == "INVALID_REQUEST"),
        "{frames:?}"
    );
    let interims = frames
        .iter()
        .filter(|f| f["type"] == "delta" && f["is_final"] == false)
        .count();
    assert!(interims >= 1, "partials every chunk_seconds: {frames:?}");
    // The rest of the clip, then close: every word of the clip arrives as finals.
    for chunk in audio[six_seconds..].chunks(3200) {
        socket
            .send(Message::Binary(chunk.to_vec().into()))
            .await
            .unwrap();
    }
    send_json(&mut socket, json!({"type": "close"})).await;
    let (rest, code) = until_close(&mut socket).await;
    assert_eq!(code, Some(1000));
    frames.extend(rest);
    let text = final_text(&frames).to_lowercase();
    let reference = include_str!("../../engines/tests/data/two_cities.txt");
    let error = engines::wer::wer(reference, &text);
    println!("stream two cities WER {error:.3}: {text}");
    assert!(error <= 0.15, "{error}: {text}");
}

#[tokio::test]
async fn auth_and_permission_failures_close_with_4401_and_4403() {
    let server = Server::start().await;
    let (frames, code) = until_close(&mut connect(&server, Token::None).await).await;
    assert_eq!(code, Some(4401));
    assert_eq!(frames[0]["code"], "AUTH_TOKEN_MISSING");
    let (frames, code) =
        until_close(&mut connect(&server, Token::Query("sgk_not_a_real_key")).await).await;
    assert_eq!(code, Some(4401));
    assert_eq!(frames[0]["type"], "error");
    let (_, code) = until_close(&mut connect(&server, Token::Header("garbage")).await).await;
    assert_eq!(code, Some(4401));
    // Module not enabled for the tenant: 4403.
    let tenant = server.tenant("stream-perms").await;
    let (frames, code) =
        until_close(&mut connect(&server, Token::Header(&tenant.member_key)).await).await;
    assert_eq!(code, Some(4403));
    assert_eq!(frames[0]["code"], "MODULE_NOT_ENABLED");
    let (status, _) = server
        .post(
            "/v1/modules/scaiecho/enable",
            Some(&tenant.admin_key),
            json!({}),
        )
        .await;
    assert_eq!(status, 204);
    // A viewer lacks scaiecho:transcribe.
    let viewer = server.key(&tenant.admin_key, &tenant.id, &["viewer"]).await;
    let (frames, code) = until_close(&mut connect(&server, Token::Header(&viewer)).await).await;
    assert_eq!(code, Some(4403));
    assert_eq!(frames[0]["code"], "AUTHZ_PERMISSION_DENIED");
    // Transcribe but not diarize: the `open` asking for diarization gets error + 4403.
    let (status, _) = server
        .post(
            "/v1/roles",
            Some(&tenant.admin_key),
            json!({"name": "transcriber", "permissions": ["scaiecho:transcribe"]}),
        )
        .await;
    assert_eq!(status, 201);
    let transcriber = server
        .key(&tenant.admin_key, &tenant.id, &["transcriber"])
        .await;
    let mut socket = connect(&server, Token::Query(&transcriber)).await;
    send_json(&mut socket, json!({"type": "open", "diarize": true})).await;
    let (frames, code) = until_close(&mut socket).await;
    assert_eq!(code, Some(4403));
    assert_eq!(frames[0]["type"], "error");
    assert_eq!(frames[0]["code"], "AUTHZ_PERMISSION_DENIED");
    // Without diarization the same key streams.
    let mut socket = connect(&server, Token::Query(&transcriber)).await;
    send_json(&mut socket, json!({"type": "open"})).await;
    assert_eq!(next_frame(&mut socket).await["type"], "ready");
}

#[tokio::test]
async fn bad_open_bad_audio_limits_and_idle_close_with_their_codes() {
    let server = Server::start_with(Options {
        config_toml: Some(
            "[scaiecho]\nmax_streams_per_tenant = 2\nstream_idle_timeout_seconds = 1\n\
             stream_max_frame_bytes = 65536\nstream_max_seconds = 3\n"
                .into(),
        ),
        ..Options::default()
    })
    .await;
    let opened = |media_type: &str| json!({"type": "open", "media_type": media_type});
    // 4400: not JSON, unknown media type, audio before `open`.
    for first in [
        Message::Text("hello".into()),
        Message::Text(opened("video/mp4").to_string().into()),
        Message::Binary(vec![0u8; 320].into()),
    ] {
        let mut socket = connect(&server, Token::Header(ADMIN_KEY)).await;
        socket.send(first).await.unwrap();
        let (frames, code) = until_close(&mut socket).await;
        assert_eq!(code, Some(4400), "{frames:?}");
        assert_eq!(frames[0]["type"], "error");
    }
    // Undecodable audio mid-stream: AUDIO_DECODE_FAILED, 4400.
    let mut socket = connect(&server, Token::Header(ADMIN_KEY)).await;
    send_json(&mut socket, opened("audio/ogg;codecs=opus")).await;
    assert_eq!(next_frame(&mut socket).await["type"], "ready");
    socket
        .send(Message::Binary(
            b"this is not an ogg page at all".repeat(50).into(),
        ))
        .await
        .unwrap();
    let (frames, code) = until_close(&mut socket).await;
    assert_eq!(code, Some(4400));
    assert_eq!(frames.last().unwrap()["code"], "AUDIO_DECODE_FAILED");
    // 4413: a frame over the frame limit; a stream over the seconds limit (3 s),
    // whose speech up to the limit still comes back as finals first.
    let mut socket = connect(&server, Token::Header(ADMIN_KEY)).await;
    send_json(&mut socket, opened("audio/pcm;rate=16000")).await;
    next_frame(&mut socket).await;
    socket
        .send(Message::Binary(vec![0u8; 100_000].into()))
        .await
        .unwrap();
    let (frames, code) = until_close(&mut socket).await;
    assert_eq!(code, Some(4413));
    assert_eq!(frames.last().unwrap()["code"], "CTX_TOO_LARGE");
    let mut socket = connect(&server, Token::Header(ADMIN_KEY)).await;
    send_json(&mut socket, opened("audio/pcm;rate=16000")).await;
    next_frame(&mut socket).await;
    for chunk in pcm_16k("beckett.wav").chunks(16_000) {
        if socket
            .send(Message::Binary(chunk.to_vec().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (frames, code) = until_close(&mut socket).await;
    assert_eq!(code, Some(4413), "{frames:?}");
    assert_eq!(frames.last().unwrap()["code"], "CTX_TOO_LARGE");
    assert!(
        final_text(&frames).to_lowercase().contains("ever"),
        "{frames:?}"
    );
    // 4429: a third concurrent stream of the tenant.
    let mut first = connect(&server, Token::Header(ADMIN_KEY)).await;
    send_json(&mut first, opened("audio/wav")).await;
    next_frame(&mut first).await;
    let mut second = connect(&server, Token::Header(ADMIN_KEY)).await;
    send_json(&mut second, opened("audio/wav")).await;
    next_frame(&mut second).await;
    let (frames, code) = until_close(&mut connect(&server, Token::Header(ADMIN_KEY)).await).await;
    assert_eq!(code, Some(4429));
    assert_eq!(frames[0]["code"], "RATE_LIMITED");
    // Idle: nothing sent for a second closes the stream (and frees the slot).
    let (frames, code) = until_close(&mut first).await;
    assert_eq!(code, Some(4400));
    assert_eq!(
        frames.last().unwrap()["reason"],
        "idle_timeout",
        "{frames:?}"
    );
    drop(second);
    let mut again = connect(&server, Token::Header(ADMIN_KEY)).await;
    send_json(&mut again, opened("audio/wav")).await;
    assert_eq!(next_frame(&mut again).await["type"], "ready");
}

#[tokio::test]
async fn pinned_to_an_unusable_backend_closes_with_4502() {
    let server = Server::start().await;
    let (status, body) = server
        .send(
            reqwest::Method::PATCH,
            "/v1/modules/scaiecho/tenant-policy",
            Some(ADMIN_KEY),
            Some(json!({"allowed_backends": ["B"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut socket = connect(&server, Token::Header(ADMIN_KEY)).await;
    send_json(&mut socket, json!({"type": "open"})).await;
    let (frames, code) = until_close(&mut socket).await;
    assert_eq!(code, Some(4502));
    assert_eq!(frames[0]["code"], "SCAIECHO_BACKEND_UNAVAILABLE");
}

#[tokio::test]
async fn a_diarized_two_voice_stream_labels_both_speakers() {
    let server = Server::start().await;
    let audio = pcm_16k("endgame_nagg_nell.wav");
    let open = json!({"type": "open", "media_type": "audio/pcm;rate=16000", "diarize": true});
    let (frames, code) = stream_file(&server, ADMIN_KEY, open, &audio, 6400).await;
    assert_eq!(code, Some(1000));
    assert_eq!(frames[0]["diarize"], true);
    let finals = finals(&frames);
    let labels: std::collections::BTreeSet<&str> = finals
        .iter()
        .map(|f| {
            f["speaker_label"]
                .as_str()
                .expect("every final is labelled")
        })
        .collect();
    println!(
        "{:?}",
        finals
            .iter()
            .map(|f| format!("{} {}", f["speaker_label"], f["text"]))
            .collect::<Vec<_>>()
    );
    assert!(
        labels.contains("spk_0") && labels.contains("spk_1"),
        "{labels:?}"
    );
    assert!(labels.iter().all(|l| l.starts_with("spk_")));
}

/// An enrolled speaker gets its label in a diarized stream: Nagg's turns from the first
/// run's first part become a reference clip, enrolled as "Nagg"; in a second run Nagg's
/// turns (and only his) carry that label.
#[tokio::test]
async fn an_enrolled_speaker_is_labelled_in_a_diarized_stream() {
    let server = Server::start().await;
    let audio = pcm_16k("endgame_nagg_nell.wav");
    let samples: Vec<i16> = audio
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let total = samples.len() as f64 / 16_000.0;
    let open = json!({"type": "open", "media_type": "audio/pcm;rate=16000", "diarize": true});
    let (first, _) = stream_file(&server, ADMIN_KEY, open.clone(), &audio, 6400).await;
    let first: Vec<Value> = finals(&first).into_iter().cloned().collect();
    // The speaker of the first utterance: the reference is their turns in the first 60 %.
    let nagg = first[0]["speaker_label"].as_str().unwrap().to_owned();
    let span = |f: &Value| (f["start"].as_f64().unwrap(), f["end"].as_f64().unwrap());
    let mut reference: Vec<f32> = Vec::new();
    for delta in first.iter().filter(|f| f["speaker_label"] == nagg.as_str()) {
        let (start, end) = span(delta);
        if end > total * 0.6 {
            break;
        }
        let range = (start * 16_000.0) as usize..((end * 16_000.0) as usize).min(samples.len());
        reference.extend(samples[range].iter().map(|s| f32::from(*s) / 32768.0));
    }
    let (status, speaker) = server
        .post_wav_form(
            "/v1/modules/scaiecho/speakers",
            ADMIN_KEY,
            &[("label", "Nagg")],
            media::encode::wav_s16(&reference, 16_000, 1),
        )
        .await;
    assert_eq!(status, 201, "{speaker}");
    assert_eq!(speaker["enrollment_status"], "ready");
    let (second, code) = stream_file(&server, ADMIN_KEY, open, &audio, 6400).await;
    assert_eq!(code, Some(1000));
    let second: Vec<Value> = finals(&second).into_iter().cloned().collect();
    println!(
        "{:?}",
        second
            .iter()
            .map(|f| format!("{} {}", f["speaker_label"], f["text"]))
            .collect::<Vec<_>>()
    );
    // Same audio, same endpointing: utterances line up between the runs.
    assert_eq!(first.len(), second.len());
    let (mut hits, mut nagg_turns, mut false_hits) = (0, 0, 0);
    for (before, after) in first.iter().zip(&second) {
        let was_nagg = before["speaker_label"] == nagg.as_str();
        let is_labelled = after["speaker_label"] == "Nagg";
        nagg_turns += usize::from(was_nagg);
        hits += usize::from(was_nagg && is_labelled);
        false_hits += usize::from(!was_nagg && is_labelled);
    }
    assert!(
        hits * 10 >= nagg_turns * 8,
        "{hits} of {nagg_turns} Nagg turns labelled"
    );
    assert!(
        false_hits <= 1,
        "{false_hits} turns of others labelled Nagg"
    );
}

/// Backend B on a stream: utterances go to the relay as WAV; its text comes back as
/// finals (the relay has no diarization, so `diarize` is a no-op there).
#[tokio::test]
async fn a_stream_on_backend_b_relays_each_utterance() {
    let relay = crate::scaiecho::upstream("relay-key").await;
    let server = Server::start_with(Options {
        config_toml: Some(format!(
            "[scaiecho]\nrelay_url = \"{relay}\"\nrelay_api_key = \"relay-key\"\n"
        )),
        ..Options::default()
    })
    .await;
    let open = json!({"type": "open", "media_type": "audio/pcm;rate=16000",
        "backend_preference": "managed", "diarize": true, "timestamps": "word"});
    let (frames, code) = stream_file(&server, ADMIN_KEY, open, &pcm_16k("beckett.wav"), 3200).await;
    assert_eq!(code, Some(1000), "{frames:?}");
    assert_eq!(frames[0]["backend"], "B");
    assert_eq!(frames[0]["diarize"], false);
    let finals = finals(&frames);
    assert!(!finals.is_empty());
    for delta in &finals {
        assert_eq!(delta["text"], "relayed words", "{frames:?}");
        assert_eq!(delta["language"], "en", "{delta}");
        // The upstream's words, moved from the utterance's clock to the stream's.
        let start = delta["start"].as_f64().unwrap();
        let words = delta["words"].as_array().expect("words");
        assert_eq!(words.len(), 2, "{delta}");
        assert_eq!(words[0]["word"], "relayed");
        assert!(
            (words[0]["start"].as_f64().unwrap() - (start + 0.1)).abs() < 0.002,
            "{delta}"
        );
    }
}

/// `timestamps: "word"` in `open`: every final carries its words on the stream clock,
/// inside the utterance and in order, with the language heard; interims stay lean.
#[tokio::test]
async fn finals_carry_their_words_and_language_when_asked() {
    let server = Server::start().await;
    let open = json!({"type": "open", "media_type": "audio/pcm;rate=16000",
        "chunk_seconds": 1.0, "timestamps": "word"});
    let (frames, code) = stream_file(&server, ADMIN_KEY, open, &pcm_16k("beckett.wav"), 3200).await;
    assert_eq!(code, Some(1000), "{frames:?}");
    let heard = finals(&frames);
    assert!(!heard.is_empty(), "{frames:?}");
    let mut spoken = Vec::new();
    let mut previous_end = 0.0;
    for delta in &heard {
        assert_eq!(delta["language"], "en", "{delta}");
        let (start, end) = (
            delta["start"].as_f64().unwrap(),
            delta["end"].as_f64().unwrap(),
        );
        let words = delta["words"].as_array().expect("a final's words");
        assert!(!words.is_empty(), "{delta}");
        for word in words {
            let (w_start, w_end) = (
                word["start"].as_f64().unwrap(),
                word["end"].as_f64().unwrap(),
            );
            assert!(
                w_start >= start - 0.05 && w_end <= end + 0.3 && w_end > w_start,
                "{word} outside {delta}"
            );
            assert!(
                w_start >= previous_end - 0.01,
                "{word} before {previous_end}: {delta}"
            );
            previous_end = w_end;
            spoken.push(word["word"].as_str().unwrap().to_owned());
        }
    }
    assert!(says_beckett(&spoken.join(" ")), "{spoken:?}");
    assert!(
        frames
            .iter()
            .filter(|f| f["type"] == "delta" && f["is_final"] == false)
            .all(|f| f.get("words").is_none()),
        "{frames:?}"
    );
    // Without the option, finals carry no words.
    let open = json!({"type": "open", "media_type": "audio/pcm;rate=16000"});
    let (frames, _) = stream_file(&server, ADMIN_KEY, open, &pcm_16k("beckett.wav"), 3200).await;
    assert!(
        finals(&frames).iter().all(|f| f.get("words").is_none()),
        "{frames:?}"
    );
    // A timestamps value that is not one is a bad `open`.
    let mut socket = connect(&server, Token::Header(ADMIN_KEY)).await;
    send_json(
        &mut socket,
        json!({"type": "open", "timestamps": "letters"}),
    )
    .await;
    let (frames, code) = until_close(&mut socket).await;
    assert_eq!(code, Some(4400), "{frames:?}");
    assert_eq!(frames[0]["code"], "INVALID_REQUEST", "{frames:?}");
}

/// Thousands of tiny frames (3 bytes each: samples split across frames) decode like one
/// stream, and a session beside it is unaffected.
#[tokio::test]
async fn thousands_of_tiny_frames_lose_nothing() {
    let server = Server::start().await;
    let audio = pcm_16k("beckett.wav");
    let open = json!({"type": "open", "media_type": "audio/pcm;rate=16000"});
    let tiny = stream_file(&server, ADMIN_KEY, open.clone(), &audio, 3);
    let normal = stream_file(&server, ADMIN_KEY, open, &audio, 32_000);
    let ((tiny, tiny_code), (normal, normal_code)) = tokio::join!(tiny, normal);
    assert_eq!((tiny_code, normal_code), (Some(1000), Some(1000)));
    assert!(says_beckett(&final_text(&tiny)), "{tiny:?}");
    assert!(says_beckett(&final_text(&normal)), "{normal:?}");
    let seconds = |frames: &[Value]| frames.last().unwrap()["usage"]["audio_seconds"].as_f64();
    assert_eq!(seconds(&tiny), seconds(&normal));
    // A stream cut inside its last sample still gives what was heard, then `done`.
    let open = json!({"type": "open", "media_type": "audio/pcm;rate=16000"});
    let (cut, code) =
        stream_file(&server, ADMIN_KEY, open, &audio[..audio.len() - 1], 32_000).await;
    assert_eq!(code, Some(1000), "{cut:?}");
    assert!(says_beckett(&final_text(&cut)), "{cut:?}");
}

#[tokio::test]
async fn streams_count_against_the_request_rate_limit() {
    let server = Server::start().await;
    let (status, key) = server
        .post(
            "/v1/api-keys",
            Some(ADMIN_KEY),
            json!({"name": "ws", "roles": ["member"], "rate_limit": {"requests_per_minute": 2}}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let mut socket = connect(&server, Token::Header(&key)).await;
        send_json(
            &mut socket,
            json!({"type": "open", "media_type": "audio/wav"}),
        )
        .await;
        let ready = next_frame(&mut socket).await;
        assert_eq!(ready["type"], "ready", "{ready}");
    }
    let (frames, code) = until_close(&mut connect(&server, Token::Header(&key)).await).await;
    assert_eq!(code, Some(4429), "{frames:?}");
    assert_eq!(frames[0]["code"], "RATE_LIMITED");
    assert_eq!(frames[0]["scope"], "api_key");
}
