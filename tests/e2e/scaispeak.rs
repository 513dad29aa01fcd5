//! ScaiSpeak against the real server and models: every codec decodes back to speech
//! whose transcript (ScaiEcho on the same server) matches the text; bad input; voices,
//! policy, readiness and backend B through an upstream the test starts; the WebSocket
//! with word-by-word text producing Opus packets as each sentence completes; the OpenAI
//! Python SDK.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{ADMIN_KEY, Options, Server, assert_error, read};

const SPEAK: &str = "/v1/modules/scaispeak/speak";
/// Piper samples its noise, so each synthesis differs a little; these sentences read
/// back reliably ("The weather" sometimes came back "But whether").
const TEXT: &str = "Our meeting has been moved to the second floor. \
    Please call me back when you get this message.";

pub(crate) async fn speak(server: &Server, token: &str, body: Value) -> reqwest::Response {
    server
        .http
        .post(server.url(SPEAK))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// What ScaiEcho on the same server hears in 16 kHz mono samples.
async fn hear(server: &Server, samples: &[f32]) -> String {
    let response = server
        .http
        .post(server.url("/v1/modules/scaiecho/transcribe"))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "audio/pcm;rate=16000")
        .body(media::encode::pcm_s16le(samples))
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, 200, "{body}");
    body["text"].as_str().unwrap().to_owned()
}

fn to_16k(bytes: &[u8]) -> Vec<f32> {
    let audio = media::decode(bytes, &media::DecodeOptions::default()).unwrap();
    media::resample::to_mono(&audio, 16_000).unwrap()
}

#[tokio::test]
async fn every_codec_decodes_back_to_the_spoken_text() {
    let server = Server::start().await;
    // The whole file at once (`stream: false`): its length and audio seconds in headers.
    let response = speak(
        &server,
        ADMIN_KEY,
        json!({"text": TEXT, "output": {"codec": "wav"}, "stream": false}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let seconds: f64 = headers["x-scaigrid-audio-seconds"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    assert_eq!(headers["content-length"], bytes.len().to_string().as_str());
    let whole = to_16k(&bytes).len() as f64 / 16_000.0;
    assert!((whole - seconds).abs() < 0.1, "{whole} vs {seconds}");
    assert!((3.0..12.0).contains(&seconds), "{seconds} s");
    // Streamed (the default): chunked, every codec decodes to the same speech.
    for (output, content_type) in [
        (json!({"codec": "wav"}), "audio/wav"),
        (
            json!({"codec": "pcm_s16le", "sample_rate": 16000}),
            "audio/pcm;rate=16000;channels=1",
        ),
        (json!({"codec": "opus"}), "audio/ogg;codecs=opus"),
        (json!({"codec": "mp3"}), "audio/mpeg"),
        (json!({"codec": "flac"}), "audio/flac"),
    ] {
        let response = speak(&server, ADMIN_KEY, json!({"text": TEXT, "output": output})).await;
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], content_type);
        assert_eq!(headers["x-scaigrid-backend"], "A");
        assert!(headers.get("content-length").is_none(), "{headers:?}");
        assert!(headers.get("x-scaigrid-audio-seconds").is_none());
        let bytes = response.bytes().await.unwrap();
        let samples = match output["codec"].as_str() {
            Some("pcm_s16le") => bytes
                .chunks_exact(2)
                .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
                .collect(),
            _ => to_16k(&bytes),
        };
        let decoded = samples.len() as f64 / 16_000.0;
        // The same text, so about the same length (the voice's pauses vary from one
        // synthesis to the next; MP3 adds its encoder's delay).
        assert!(
            (decoded - seconds).abs() < 0.1 * seconds + 0.15,
            "{output}: {decoded} s streamed, {seconds} s whole"
        );
        let heard = hear(&server, &samples).await;
        let error = engines::wer::wer(TEXT, &heard);
        println!("{output}: {heard:?} WER {error:.3}");
        assert!(error <= 0.2, "{output}: {heard:?}");
    }
    // Accounting has one record per request with the characters spoken (a streamed one
    // settles when its body ends, just after the client has read it).
    let mut speak_row = Value::Null;
    for _ in 0..50 {
        speak_row = server.module_usage(ADMIN_KEY, "scaispeak").await;
        if speak_row["requests"] == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(speak_row["requests"], 6, "{speak_row}");
    assert_eq!(speak_row["characters"], 6 * TEXT.chars().count());
    assert!(speak_row["audio_seconds"].as_f64().unwrap() > 6.0 * 3.0);
}

/// A client that leaves mid-body: the synthesis stops at once (it does not go on for
/// nobody), what was spoken is billed, and the server serves the next request.
#[tokio::test]
async fn a_client_that_leaves_mid_speech_stops_the_synthesis_and_pays_what_was_spoken() {
    let server = Server::start().await;
    let long = TEXT.repeat(8);
    let mut response = server
        .http
        .post(server.url("/v1/audio/speech"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"model": "tts-1", "input": long, "response_format": "pcm"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(response);
    let mut row = Value::Null;
    for _ in 0..100 {
        row = server.module_usage(ADMIN_KEY, "scaispeak").await;
        if !row.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let characters = row["characters"]
        .as_u64()
        .unwrap_or_else(|| panic!("{row}"));
    assert!(
        characters > 0 && characters < long.chars().count() as u64 / 2,
        "{characters} of {} characters billed",
        long.chars().count()
    );
    assert!(row["audio_seconds"].as_f64().unwrap() > 0.2, "{row}");
    let (status, _) = server
        .post(
            SPEAK,
            Some(ADMIN_KEY),
            json!({"text": "Still here.", "stream": false}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_junk_is_not_spoken() {
    let server = Server::start_with(Options {
        config_toml: Some("[scaispeak]\nmax_text_chars = 200\n".into()),
        ..Options::default()
    })
    .await;
    let cases = [
        (json!({"text": "   "}), 400, "INVALID_REQUEST"),
        (json!({"text": "x".repeat(201)}), 413, "CTX_TOO_LARGE"),
        (json!({"text": "Hi.", "voice": "nobody"}), 404, "NOT_FOUND"),
        (
            json!({"text": "Hi.", "output": {"codec": "aac"}}),
            400,
            "INVALID_REQUEST",
        ),
        (
            json!({"text": "Hi.", "output": {"codec": "mp3", "sample_rate": 1000}}),
            400,
            "INVALID_REQUEST",
        ),
        (
            json!({"text": "Hi.", "stream": "yes"}),
            400,
            "INVALID_REQUEST",
        ),
        (json!({"text": "Hi.", "speed": 10}), 400, "INVALID_REQUEST"),
        (json!({"text": "Hi.", "pitch": 2}), 400, "INVALID_REQUEST"),
        (
            json!({"text": "Hi.", "save_to": {"filename": "a.wav"}}),
            403,
            "SCAISPEAK_SAVE_TO_REQUIRES_JWT",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer) = read(speak(&server, ADMIN_KEY, body.clone()).await).await;
        assert_error(got, &answer, status, code);
        if code == "CTX_TOO_LARGE" {
            assert_eq!(answer["error"]["limit"], 200, "{answer}");
        }
    }
    // Markup and control characters are dropped, not read out.
    let junk = "<speak>Good\u{7} morning <break time=\"2s\"/> everyone.</speak>";
    let response = speak(&server, ADMIN_KEY, json!({"text": junk})).await;
    assert_eq!(response.status(), 200);
    let heard = hear(&server, &to_16k(&response.bytes().await.unwrap())).await;
    let lower = heard.to_lowercase();
    assert!(
        lower.contains("morning") && !lower.contains("speak") && !lower.contains("break"),
        "{heard}"
    );
    // Module and permission.
    let tenant = server.tenant("speak-perms").await;
    let (status, body) =
        read(speak(&server, &tenant.member_key, json!({"text": "Hi."})).await).await;
    assert_error(status, &body, 403, "MODULE_NOT_ENABLED");
    let (status, _) = server
        .post(
            "/v1/modules/scaispeak/enable",
            Some(&tenant.admin_key),
            json!({}),
        )
        .await;
    assert_eq!(status, 204);
    let viewer = server.key(&tenant.admin_key, &tenant.id, &["viewer"]).await;
    let (status, body) = read(speak(&server, &viewer, json!({"text": "Hi."})).await).await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");
    let (status, voices) = server
        .get("/v1/modules/scaispeak/voices", Some(&viewer))
        .await;
    assert_eq!(status, 200, "{voices}");
}

/// A small OpenAI-compatible `/v1/audio/speech` upstream answering a WAV of a tone.
async fn speech_upstream(key: &'static str) -> String {
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new().route(
        "/v1/audio/speech",
        axum::routing::post(
            move |headers: HeaderMap, body: axum::Json<Value>| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if auth != format!("Bearer {key}") || body["response_format"] != "wav" {
                    return (StatusCode::UNAUTHORIZED, Vec::new());
                }
                let tone: Vec<f32> = (0..24_000).map(|i| 0.2 * (i as f32 * 0.06).sin()).collect();
                (StatusCode::OK, media::encode::wav_s16(&tone, 24_000, 1))
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

#[tokio::test]
async fn voices_policy_readiness_and_backend_b() {
    let relay = speech_upstream("speech-key").await;
    let server = Server::start_with(Options {
        config_toml: Some(format!(
            "[scaispeak]\nrelay_url = \"{relay}\"\nrelay_api_key = \"speech-key\"\n"
        )),
        ..Options::default()
    })
    .await;
    let (status, voices) = server
        .get("/v1/modules/scaispeak/voices", Some(ADMIN_KEY))
        .await;
    assert_eq!(status, 200);
    let data = voices["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{voices}");
    assert_eq!(data[0]["scope"], "global");
    assert_eq!(data[0]["embedding_status"], "ready");
    let id = data[0]["id"].as_str().unwrap();
    let (status, one) = server
        .get(
            &format!("/v1/modules/scaispeak/voices/{id}"),
            Some(ADMIN_KEY),
        )
        .await;
    assert_eq!((status, &one["id"]), (200, &json!(id)));
    let (_, tenant_voices) = server
        .get("/v1/modules/scaispeak/voices?scope=tenant", Some(ADMIN_KEY))
        .await;
    assert_eq!(tenant_voices["data"], json!([]));
    let (status, body) = server
        .get(
            "/v1/modules/scaispeak/voices?scope=everyone",
            Some(ADMIN_KEY),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, ready) = server.get("/v1/modules/scaispeak/readyz", None).await;
    assert_eq!(status, 200);
    assert_eq!(ready["backends"], json!({"A": true, "B": true}));
    // Pinned to B: the relay speaks (a tone here), re-encoded to what was asked.
    let (status, policy) = server
        .send(
            reqwest::Method::PATCH,
            "/v1/modules/scaispeak/admin/policy",
            Some(ADMIN_KEY),
            Some(json!({"allowed_backends": ["B", "B"]})),
        )
        .await;
    assert_eq!(status, 200, "{policy}");
    assert_eq!(policy["allowed_backends"], json!(["B"]));
    let response = speak(
        &server,
        ADMIN_KEY,
        json!({"text": "Hello.", "output": {"codec": "wav", "sample_rate": 16000}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-scaigrid-backend"], "B");
    let audio = media::decode(
        &response.bytes().await.unwrap(),
        &media::DecodeOptions::default(),
    )
    .unwrap();
    assert_eq!(audio.sample_rate, 16_000);
    assert!((audio.duration_seconds() - 1.0).abs() < 0.02);
    // Pinned to A with no voice loaded (engines off): 502, readiness says why.
    let bare = Server::start_with(Options {
        config_toml: Some("[engines]\nenabled = false\n".into()),
        ..Options::default()
    })
    .await;
    let (status, body) = read(speak(&bare, ADMIN_KEY, json!({"text": "Hello."})).await).await;
    assert_error(status, &body, 502, "SCAISPEAK_BACKEND_UNAVAILABLE");
    let (status, body) = bare.get("/v1/modules/scaispeak/readyz", None).await;
    assert_error(status, &body, 503, "SERVICE_UNAVAILABLE");
}

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn connect_speak(server: &Server) -> Socket {
    connect_speak_as(server, ADMIN_KEY).await
}

pub(crate) async fn connect_speak_as(server: &Server, key: &str) -> Socket {
    let url = format!(
        "{}/v1/modules/scaispeak/stream/speak",
        server.base.replacen("http://", "ws://", 1)
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

pub(crate) async fn text(socket: &mut Socket, value: Value) {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

/// The next message (text as JSON, binary as bytes), or the close code.
pub(crate) enum Got {
    Json(Value),
    Audio(Vec<u8>),
    Closed(Option<u16>),
}

pub(crate) async fn next(socket: &mut Socket) -> Got {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .expect("an answer within a minute");
        return match message {
            Some(Ok(Message::Text(t))) => Got::Json(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Binary(b))) => Got::Audio(b.to_vec()),
            Some(Ok(Message::Close(frame))) => Got::Closed(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => Got::Closed(None),
        };
    }
}

#[tokio::test]
async fn streamed_words_come_back_as_opus_packets_sentence_by_sentence() {
    let server = Server::start().await;
    let mut socket = connect_speak(&server).await;
    text(&mut socket, json!({"type": "open"})).await;
    let Got::Json(ready) = next(&mut socket).await else {
        panic!("no ready")
    };
    assert_eq!(ready["type"], "ready", "{ready}");
    assert_eq!(ready["codec"], "opus");
    assert_eq!(ready["sample_rate"], 48_000);
    let (first, second) = TEXT.split_at(TEXT.find(". ").unwrap() + 2);
    for word in first.split_inclusive(' ') {
        text(&mut socket, json!({"type": "text", "text": word})).await;
    }
    // Audio of the first sentence comes before any of the second is sent.
    let mut packets = Vec::new();
    match next(&mut socket).await {
        Got::Audio(packet) => packets.push(packet),
        _ => panic!("expected audio after the first sentence"),
    }
    for word in second.split_inclusive(' ') {
        text(&mut socket, json!({"type": "text", "text": word})).await;
    }
    text(&mut socket, json!({"type": "close"})).await;
    let done = loop {
        match next(&mut socket).await {
            Got::Audio(packet) => packets.push(packet),
            Got::Json(frame) if frame["type"] == "done" => break frame,
            Got::Json(frame) => panic!("unexpected {frame}"),
            Got::Closed(code) => panic!("closed early: {code:?}"),
        }
    };
    assert!(matches!(next(&mut socket).await, Got::Closed(Some(1000))));
    // The spoken sentences' characters (the space between them is not spoken).
    let characters = done["usage"]["characters"].as_u64().unwrap() as usize;
    assert!(characters.abs_diff(TEXT.chars().count()) <= 1, "{done}");
    let mut decoder = media::opus_decode::OpusPacketDecoder::new(1, 0).unwrap();
    let mut samples = Vec::new();
    for packet in &packets {
        assert!(packet.len() < 400, "one 20 ms packet per frame");
        samples.extend_from_slice(decoder.decode(packet).unwrap());
    }
    assert_eq!(samples.len(), packets.len() * 960);
    let speech = media::resample::resample_mono(&samples, 48_000, 16_000).unwrap();
    let heard = hear(&server, &speech).await;
    let error = engines::wer::wer(TEXT, &heard);
    println!("stream: {heard:?} WER {error:.3}");
    assert!(error <= 0.2, "{heard:?}");
}

#[tokio::test]
async fn speak_stream_closes_with_4400_and_4502_and_paces_pcm() {
    let server = Server::start().await;
    for open in [
        json!({"type": "open", "voice": "nobody"}),
        json!({"type": "open", "output": {"codec": "wav"}}),
        json!({"type": "hello"}),
    ] {
        let mut socket = connect_speak(&server).await;
        text(&mut socket, open.clone()).await;
        let Got::Json(error) = next(&mut socket).await else {
            panic!("no error frame for {open}")
        };
        assert_eq!(error["type"], "error");
        assert!(
            matches!(next(&mut socket).await, Got::Closed(Some(4400))),
            "{open}"
        );
    }
    // Paced PCM: frames leave at playback speed.
    let mut socket = connect_speak(&server).await;
    text(
        &mut socket,
        json!({"type": "open", "output": {"codec": "pcm_s16le", "sample_rate": 16000}, "pace": true}),
    )
    .await;
    assert!(matches!(next(&mut socket).await, Got::Json(_)));
    text(
        &mut socket,
        json!({"type": "text", "text": "One two three four five."}),
    )
    .await;
    text(&mut socket, json!({"type": "close"})).await;
    let started = std::time::Instant::now();
    let mut bytes = 0;
    loop {
        match next(&mut socket).await {
            Got::Audio(frame) => bytes += frame.len(),
            Got::Json(frame) => {
                assert_eq!(frame["type"], "done");
                break;
            }
            Got::Closed(code) => panic!("closed: {code:?}"),
        }
    }
    let seconds = bytes as f64 / 32_000.0;
    let took = started.elapsed().as_secs_f64();
    assert!(
        took >= seconds - 0.5,
        "{seconds} s of audio sent in {took} s"
    );
    // Policy pinned to B, no relay: 4502 right after `open`.
    let (status, _) = server
        .send(
            reqwest::Method::PATCH,
            "/v1/modules/scaispeak/admin/policy",
            Some(ADMIN_KEY),
            Some(json!({"allowed_backends": ["B"]})),
        )
        .await;
    assert_eq!(status, 200);
    let mut socket = connect_speak(&server).await;
    text(&mut socket, json!({"type": "open"})).await;
    let Got::Json(error) = next(&mut socket).await else {
        panic!("no error frame")
    };
    assert_eq!(error["code"], "SCAISPEAK_BACKEND_UNAVAILABLE");
    assert!(matches!(next(&mut socket).await, Got::Closed(Some(4502))));
}

#[tokio::test]
async fn barge_in_drops_what_is_playing_and_speaks_the_new_text() {
    let server = Server::start().await;
    let mut socket = connect_speak(&server).await;
    text(&mut socket, json!({"type": "open", "pace": true})).await;
    assert!(matches!(next(&mut socket).await, Got::Json(_)));
    let long = "The first sentence is long enough to keep the speaker busy for a while. \
        The second sentence goes on about nothing in particular at all. \
        The third sentence should never be heard by anyone.";
    text(&mut socket, json!({"type": "text", "text": long})).await;
    let mut before = 0;
    while before < 10 {
        match next(&mut socket).await {
            Got::Audio(_) => before += 1,
            other => panic!("expected audio, got {}", matches!(other, Got::Json(_))),
        }
    }
    text(
        &mut socket,
        json!({"type": "text", "text": "Stop here, please.", "interrupt": true}),
    )
    .await;
    text(&mut socket, json!({"type": "close"})).await;
    // Frames already sent may still arrive; then `interrupted`, then the new text only.
    let interrupted = loop {
        match next(&mut socket).await {
            Got::Audio(_) => before += 1,
            Got::Json(frame) => break frame,
            Got::Closed(code) => panic!("closed: {code:?}"),
        }
    };
    assert_eq!(interrupted["type"], "interrupted", "{interrupted}");
    assert!(
        interrupted["dropped_frames"].as_u64().unwrap() > 0,
        "{interrupted}"
    );
    let mut after = Vec::new();
    let done = loop {
        match next(&mut socket).await {
            Got::Audio(packet) => after.push(packet),
            Got::Json(frame) => break frame,
            Got::Closed(code) => panic!("closed: {code:?}"),
        }
    };
    assert_eq!(done["type"], "done", "{done}");
    let mut decoder = media::opus_decode::OpusPacketDecoder::new(1, 0).unwrap();
    let mut samples = Vec::new();
    for packet in &after {
        samples.extend_from_slice(decoder.decode(packet).unwrap());
    }
    let speech = media::resample::resample_mono(&samples, 48_000, 16_000).unwrap();
    let heard = hear(&server, &speech).await.to_lowercase();
    assert!(heard.contains("stop here"), "after barge-in: {heard:?}");
    assert!(!heard.contains("third"), "after barge-in: {heard:?}");
    // Far less than the long text was played: a second or so before the barge-in.
    assert!(before < 150, "{before} frames before the barge-in");
}

#[tokio::test]
async fn the_openai_python_sdk_speaks() {
    let python = crate::support::python_with_openai_sdk();
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("speech.mp3");
    let long = dir.path().join("long.pcm");
    // The default format is MP3 (as OpenAI's); a long text read with the SDK's streaming
    // response arrives in pieces, the first long before the last.
    let script = r#"
import sys, time
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2])
speech = client.audio.speech.create(model="tts-1", voice="alloy",
    input="Please call me back when you get this message.")
speech.write_to_file(sys.argv[3])
start = time.perf_counter()
chunks = []
with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy",
        input=sys.argv[5], response_format="pcm") as response:
    with open(sys.argv[4], "wb") as out:
        for chunk in response.iter_bytes():
            chunks.append((time.perf_counter() - start, len(chunk)))
            out.write(chunk)
print(len(chunks), round(chunks[0][0] * 1000), round(chunks[-1][0] * 1000))
"#;
    let output = std::process::Command::new(&python)
        .args(["-c", script, &server.base, ADMIN_KEY])
        .arg(&short)
        .arg(&long)
        .arg(TEXT)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    println!("chunks, first ms, last ms: {printed}");
    let chunks: usize = printed.split_whitespace().next().unwrap().parse().unwrap();
    assert!(chunks > 1, "{printed}");

    let mp3 = std::fs::read(&short).unwrap();
    // An MPEG audio frame (sync word), no RIFF header.
    assert!(mp3[0] == 0xFF && mp3[1] & 0xE0 == 0xE0, "{:?}", &mp3[..4]);
    let heard = hear(&server, &to_16k(&mp3)).await;
    assert!(
        engines::wer::wer("Please call me back when you get this message.", &heard) <= 0.2,
        "{heard}"
    );
    let pcm: Vec<f32> = std::fs::read(&long)
        .unwrap()
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect();
    let at_16k = media::resample::resample_mono(&pcm, 24_000, 16_000).unwrap();
    let heard = hear(&server, &at_16k).await;
    assert!(engines::wer::wer(TEXT, &heard) <= 0.2, "{heard}");
}

const VOICES: &str = "/v1/modules/scaispeak/voices";

async fn create_voice(server: &Server, token: &str, name: &str, wav: Vec<u8>) -> (u16, Value) {
    server
        .post_wav_form(VOICES, token, &[("name", name)], wav)
        .await
}

/// Every file under the tenant's voice folder in the object store.
fn voice_objects(server: &Server, tenant_id: &str) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    let root = server
        .data_dir
        .join("objects/tenants")
        .join(tenant_id)
        .join("scaispeak/voices");
    walk(&root, &mut out);
    out
}

#[tokio::test]
async fn voice_intake_preflight_lifecycle_and_erasure() {
    let server = Server::start().await;
    let (_, me) = server.get("/v1/me", Some(ADMIN_KEY)).await;
    let tenant_id = me["tenant"]["id"].as_str().expect("tenant.id").to_owned();
    let beckett = to_16k(&std::fs::read("models/cache/test-audio/beckett.wav").unwrap());
    let wav = |samples: &[f32], rate: u32| media::encode::wav_s16(samples, rate, 1);
    // Every preflight fail reason, each storing nothing.
    let noisy: Vec<f32> = beckett
        .iter()
        .enumerate()
        .map(|(i, s)| s + 0.2 * (((i * 7919) % 1000) as f32 / 500.0 - 1.0))
        .collect();
    let quiet_then_silent: Vec<f32> = beckett[..16_000 * 2]
        .iter()
        .copied()
        .chain(std::iter::repeat_n(0.0, 16_000 * 6))
        .collect();
    let loud: Vec<f32> = beckett
        .iter()
        .map(|s| (s * 20.0).clamp(-1.0, 1.0))
        .collect();
    let two_cities = to_16k(&std::fs::read("models/cache/test-audio/two_cities.wav").unwrap());
    let cases = [
        (
            wav(&beckett[..16_000 * 3], 16_000),
            "duration_below_minimum",
        ),
        (wav(&two_cities, 16_000), "duration_above_maximum"),
        (wav(&quiet_then_silent, 16_000), "low_voice_activity_ratio"),
        (wav(&loud, 16_000), "peak_dbfs_above_threshold"),
        (wav(&noisy, 16_000), "snr_below_threshold"),
        (
            wav(
                &media::resample::resample_mono(&beckett, 16_000, 8_000).unwrap(),
                8_000,
            ),
            "sample_rate_below_minimum",
        ),
    ];
    for (clip, reason) in cases {
        let (status, body) = create_voice(&server, ADMIN_KEY, "Bad", clip).await;
        assert_error(status, &body, 422, "SCAISPEAK_VOICE_PREFLIGHT_FAILED");
        let reasons = body["error"]["preflight"]["fail_reasons"]
            .as_array()
            .unwrap();
        assert!(reasons.contains(&json!(reason)), "{reason}: {body}");
        assert!(body["error"]["preflight"]["metrics"]["snr_db"].is_number());
    }
    assert!(voice_objects(&server, &tenant_id).is_empty());
    let (_, tenant_list) = server
        .get(&format!("{VOICES}?scope=tenant"), Some(ADMIN_KEY))
        .await;
    assert_eq!(tenant_list["data"], json!([]), "{tenant_list}");
    // A clean reference lands at `ready`, warm on this node.
    let (status, voice) = create_voice(&server, ADMIN_KEY, "Beckett", wav(&beckett, 16_000)).await;
    assert_eq!(status, 201, "{voice}");
    assert_eq!(voice["scope"], "tenant");
    assert_eq!(voice["embedding_status"], "ready", "{voice}");
    assert_eq!(voice["preflight"]["passed"], true);
    assert_eq!(voice["warm_node_ids"].as_array().unwrap().len(), 1);
    let id = voice["id"].as_str().unwrap().to_owned();
    assert_eq!(voice_objects(&server, &tenant_id).len(), 1);
    let ready_events = server
        .sql_count("SELECT COUNT(*) FROM event_outbox WHERE name = 'voice.ready'")
        .await;
    assert_eq!(ready_events, 1);
    // It speaks (conditioned base voice) and stays intelligible.
    let response = speak(&server, ADMIN_KEY, json!({"text": TEXT, "voice": id})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-scaigrid-backend"], "A");
    let heard = hear(&server, &to_16k(&response.bytes().await.unwrap())).await;
    let error = engines::wer::wer(TEXT, &heard);
    println!("cloned voice: {heard:?} WER {error:.3}");
    assert!(error <= 0.3, "{heard}");
    // Warm is a no-op 200 on a ready voice; evict drops this node.
    let path = |action: &str| format!("{VOICES}/{id}/{action}");
    let (status, warm) = server.post(&path("warm"), Some(ADMIN_KEY), json!({})).await;
    assert_eq!(status, 200, "{warm}");
    let (status, evicted) = server
        .post(&path("evict"), Some(ADMIN_KEY), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(evicted["warm_node_ids"], json!([]));
    // Another tenant cannot see or touch it.
    let other = server.tenant("voices-other").await;
    let (status, _) = server
        .post(
            "/v1/modules/scaispeak/enable",
            Some(&other.admin_key),
            json!({}),
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = server
        .get(&format!("{VOICES}/{id}"), Some(&other.admin_key))
        .await;
    assert_error(status, &body, 404, "NOT_FOUND");
    let (status, body) = read(
        speak(
            &server,
            &other.admin_key,
            json!({"text": "Hi.", "voice": id}),
        )
        .await,
    )
    .await;
    assert_error(status, &body, 404, "NOT_FOUND");
    // The reference vanishes from storage: repromote fails the voice, warm is refused.
    for file in voice_objects(&server, &tenant_id) {
        std::fs::remove_file(file).unwrap();
    }
    let (status, failed) = server
        .post(&path("repromote"), Some(ADMIN_KEY), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(failed["embedding_status"], "failed");
    assert_eq!(failed["embedding_status_reason"], "reference_unavailable");
    let failed_events = server
        .sql_count("SELECT COUNT(*) FROM event_outbox WHERE name = 'voice.failed'")
        .await;
    assert_eq!(failed_events, 1);
    let (status, body) = server.post(&path("warm"), Some(ADMIN_KEY), json!({})).await;
    assert_error(status, &body, 409, "SCAISPEAK_VOICE_NOT_READY_FOR_WARMING");
    let (status, body) =
        read(speak(&server, ADMIN_KEY, json!({"text": "Hi.", "voice": id})).await).await;
    assert_error(status, &body, 409, "CONFLICT");
    // Erasure: row, profile, warm entries, audit row kept; global voices stay.
    let (status, erased) = server
        .send(
            reqwest::Method::DELETE,
            &format!("{VOICES}/{id}"),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["deleted"], true);
    let (status, _) = server.get(&format!("{VOICES}/{id}"), Some(ADMIN_KEY)).await;
    assert_eq!(status, 404);
    let rows = server
        .sql_count(&format!(
            "SELECT COUNT(*) FROM scaispeak_voices WHERE id = '{id}'"
        ))
        .await;
    assert_eq!(rows, 0);
    let audits = server
        .sql_count(&format!(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'scaispeak.voice.delete' AND target_id = '{id}'"
        ))
        .await;
    assert_eq!(audits, 1);
    assert!(voice_objects(&server, &tenant_id).is_empty());
    let (status, body) = server
        .send(
            reqwest::Method::DELETE,
            &format!("{VOICES}/en_US-joe-medium"),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_error(status, &body, 409, "CONFLICT");
}

#[tokio::test]
async fn long_or_async_texts_become_synth_jobs_with_downloadable_audio() {
    let server = Server::start_with(Options {
        config_toml: Some("[scaispeak]\ninline_text_chars = 60\n".into()),
        ..Options::default()
    })
    .await;
    // Over the inline limit: a job (202), not inline audio.
    let (status, job) = read(speak(&server, ADMIN_KEY, json!({"text": TEXT})).await).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["object"], "synth.job");
    let id = job["id"].as_str().unwrap().to_owned();
    let (status, short) = read(
        speak(
            &server,
            ADMIN_KEY,
            json!({"text": "Hello there.", "async": true, "output": {"codec": "opus"}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 202, "{short}");
    let mut done = Value::Null;
    for _ in 0..120 {
        let (_, view) = server
            .get(&format!("/v1/modules/scaispeak/jobs/{id}"), Some(ADMIN_KEY))
            .await;
        if view["status"] == "succeeded" || view["status"] == "failed" {
            done = view;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(done["status"], "succeeded", "{done}");
    let url = done["result"]["audio_url"].as_str().unwrap().to_owned();
    let response = server
        .http
        .get(server.url(&url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "audio/wav");
    let heard = hear(&server, &to_16k(&response.bytes().await.unwrap())).await;
    assert!(engines::wer::wer(TEXT, &heard) <= 0.2, "{heard}");
    let events = server
        .sql_count("SELECT COUNT(*) FROM event_outbox WHERE name = 'synth.job.completed'")
        .await;
    assert!(events >= 1);
    // Listed; another tenant cannot see it; deleting removes the audio.
    let (_, list) = server
        .get("/v1/modules/scaispeak/jobs", Some(ADMIN_KEY))
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "{list}");
    let other = server.tenant("synth-other").await;
    server
        .post(
            "/v1/modules/scaispeak/enable",
            Some(&other.admin_key),
            json!({}),
        )
        .await;
    let (status, _) = server
        .get(
            &format!("/v1/modules/scaispeak/jobs/{id}"),
            Some(&other.admin_key),
        )
        .await;
    assert_eq!(status, 404);
    // Another module's job route neither sees nor deletes it.
    let (status, _) = server
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/modules/scaiecho/jobs/{id}"),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .get(&format!("/v1/modules/scaispeak/jobs/{id}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/modules/scaispeak/jobs/{id}"),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = server.get(&url, Some(ADMIN_KEY)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn save_to_writes_the_users_drive_with_its_rules() {
    let server = Server::start().await;
    let (tenant, user, jwt) = drive_user(&server, "drive").await;
    let body = |overwrite: bool| {
        json!({"text": "Hello there.", "save_to": {"folder": "../notes/", "filename": "hello.wav",
            "overwrite": overwrite}})
    };
    let (status, saved) = read(speak(&server, &jwt, body(false)).await).await;
    assert_eq!(status, 201, "{saved}");
    assert_eq!(saved["file"]["path"], "notes/hello.wav");
    let file = drive_file(&server, &tenant, &user, "notes/hello.wav");
    let audio = media::decode(&std::fs::read(&file).unwrap(), &Default::default()).unwrap();
    assert!(audio.duration_seconds() > 0.3);
    let (status, body_) = read(speak(&server, &jwt, body(false)).await).await;
    assert_error(status, &body_, 409, "SCAISPEAK_SCAIDRIVE_CONFLICT");
    let (status, _) = read(speak(&server, &jwt, body(true)).await).await;
    assert_eq!(status, 201);
    // Keys cannot; a deployment without a drive says so.
    let (status, body_) = read(speak(&server, &tenant.member_key, body(true)).await).await;
    assert_error(status, &body_, 403, "SCAISPEAK_SAVE_TO_REQUIRES_JWT");
    let queued = |filename: &str, overwrite: bool| {
        json!({"text": "Saved by a job.", "async": true, "output": {"codec": "opus"},
            "save_to": {"folder": "jobs", "filename": filename, "overwrite": overwrite}})
    };
    let mut key_job = queued("k.ogg", false);
    key_job["text"] = json!("A key cannot queue this either.");
    let (status, body_) = read(speak(&server, &tenant.member_key, key_job).await).await;
    assert_error(status, &body_, 403, "SCAISPEAK_SAVE_TO_REQUIRES_JWT");
    // A synth job writes the drive too, and its result says where; an existing file is
    // refused before the job is queued.
    let (status, job) = read(speak(&server, &jwt, queued("job.ogg", false)).await).await;
    assert_eq!(status, 202, "{job}");
    let done = finished_job(&server, &jwt, job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["file"]["path"], "jobs/job.ogg", "{done}");
    assert_eq!(
        done["result"]["file"]["content_type"],
        "audio/ogg;codecs=opus"
    );
    let (status, body_) = server
        .get(
            &format!(
                "/v1/modules/scaispeak/jobs/{}/audio",
                job["id"].as_str().unwrap()
            ),
            Some(&jwt),
        )
        .await;
    assert_error(status, &body_, 404, "NOT_FOUND");
    let saved = std::fs::read(
        file.parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("jobs/job.ogg"),
    );
    let audio = media::decode(&saved.unwrap(), &Default::default()).unwrap();
    assert!(audio.duration_seconds() > 0.5);
    let (status, body_) = read(speak(&server, &jwt, queued("job.ogg", false)).await).await;
    assert_error(status, &body_, 409, "SCAISPEAK_SCAIDRIVE_CONFLICT");
    let (status, job) = read(speak(&server, &jwt, queued("job.ogg", true)).await).await;
    assert_eq!(status, 202, "{job}");
    let done = finished_job(&server, &jwt, job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let no_drive = Server::start_with(Options {
        config_toml: Some("[scaispeak]\ndrive = false\n".into()),
        ..Options::default()
    })
    .await;
    let tenant = no_drive.tenant("nodrive").await;
    no_drive
        .post(
            "/v1/modules/scaispeak/enable",
            Some(&tenant.admin_key),
            json!({}),
        )
        .await;
    no_drive
        .post(
            "/v1/users",
            Some(ADMIN_KEY),
            json!({"email": "w@nodrive.test", "password": "correct horse battery",
                "tenant_id": tenant.id, "roles": ["member"]}),
        )
        .await;
    let (_, login) = no_drive
        .post(
            "/v1/auth/token",
            None,
            json!({"email": "w@nodrive.test", "password": "correct horse battery"}),
        )
        .await;
    let jwt = login["access_token"].as_str().unwrap();
    let (status, body_) = read(speak(&no_drive, jwt, body(false)).await).await;
    assert_error(status, &body_, 404, "SCAISPEAK_SCAIDRIVE_NOT_AVAILABLE");
}

/// A file that appears in the drive while a `save_to` job waits for a worker fails the
/// job (`drive conflict`) and is left as it was: the overwrite rule is checked again when
/// the job writes, not only when it is queued. The job waits because the API process
/// runs no workers; a separate `scaigrid worker` on the same data picks it up.
#[tokio::test]
async fn a_file_that_appears_while_a_save_to_job_waits_fails_the_job() {
    let server = Server::start_with(Options {
        config_toml: Some("[jobs]\nworkers = 0\n".into()),
        ..Options::default()
    })
    .await;
    let (tenant, user, jwt) = drive_user(&server, "late").await;
    let save_to = json!({"folder": "jobs", "filename": "late.wav", "overwrite": false});
    let (status, job) = read(
        speak(
            &server,
            &jwt,
            json!({"text": "Queued first, written last.", "async": true, "save_to": save_to}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    // The same name, written now by a request that does not wait.
    let (status, saved) = read(
        speak(
            &server,
            &jwt,
            json!({"text": "I was here first.", "save_to": save_to}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{saved}");
    let file = drive_file(&server, &tenant, &user, "jobs/late.wav");
    let before = std::fs::read(&file).unwrap();
    let (_, waiting) = server
        .get(&format!("/v1/modules/scaispeak/jobs/{id}"), Some(&jwt))
        .await;
    assert_eq!(waiting["status"], "queued", "{waiting}");

    let _worker = Server::start_with(Options {
        command: "worker",
        data_dir: Some(server.data_dir.clone()),
        config_toml: Some("[jobs]\nworkers = 1\n".into()),
        ..Options::default()
    })
    .await;
    let done = finished_job(&server, &jwt, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["status_reason"], "drive conflict", "{done}");
    assert_eq!(done["failure_reason"], "DRIVE_CONFLICT", "{done}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the file was overwritten"
    );
}

/// A tenant `slug` with ScaiSpeak enabled and a member who signed in: the tenant, the
/// user and the member's JWT (`save_to` takes JWTs only).
async fn drive_user(server: &Server, slug: &str) -> (crate::support::TestTenant, Value, String) {
    let tenant = server.tenant(slug).await;
    server
        .post(
            "/v1/modules/scaispeak/enable",
            Some(&tenant.admin_key),
            json!({}),
        )
        .await;
    let email = format!("writer@{slug}.test");
    let user = server.user(&tenant.id, &email, &["member"]).await;
    let (status, login) = server
        .post(
            "/v1/auth/token",
            None,
            json!({"email": email, "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let jwt = login["access_token"].as_str().unwrap().to_owned();
    (tenant, user, jwt)
}

/// Where the local object store keeps `relative` in `user`'s drive.
fn drive_file(
    server: &Server,
    tenant: &crate::support::TestTenant,
    user: &Value,
    relative: &str,
) -> std::path::PathBuf {
    let user_id = user["id"].as_str().unwrap();
    let drive = format!("objects/tenants/{}/drive/{user_id}", tenant.id);
    server.data_dir.join(drive).join(relative)
}

/// A synth job's view once it has succeeded or failed.
async fn finished_job(server: &Server, token: &str, id: &str) -> Value {
    for _ in 0..240 {
        let (_, view) = server
            .get(&format!("/v1/modules/scaispeak/jobs/{id}"), Some(token))
            .await;
        if view["status"] == "succeeded" || view["status"] == "failed" {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("synth job {id} did not finish");
}

/// A reference sent as raw PCM (its shape only in the media type) can be taken through
/// the intake again: the media type is kept with the staged clip.
#[tokio::test]
async fn a_raw_pcm_reference_can_be_repromoted() {
    let server = Server::start().await;
    let beckett = to_16k(&std::fs::read("models/cache/test-audio/beckett.wav").unwrap());
    let response = server
        .http
        .post(server.url(&format!("{VOICES}?name=Raw")))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "audio/pcm;rate=16000")
        .body(media::encode::pcm_s16le(&beckett))
        .send()
        .await
        .unwrap();
    let (status, voice) = read(response).await;
    assert_eq!(status, 201, "{voice}");
    assert_eq!(voice["embedding_status"], "ready");
    let id = voice["id"].as_str().unwrap();
    let (status, again) = server
        .post(
            &format!("{VOICES}/{id}/repromote"),
            Some(ADMIN_KEY),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["embedding_status"], "ready", "{again}");
}

/// A client that sends minutes of text and never reads: once the socket's buffers are
/// full, a send that cannot finish in the write timeout (10 s) drops that stream, its
/// usage is still recorded, and another session on the same server is served normally
/// meanwhile.
#[tokio::test]
async fn a_speak_client_that_never_reads_is_dropped_and_others_go_on() {
    let server = Server::start().await;
    let mut stuck = connect_speak(&server).await;
    text(
        &mut stuck,
        json!({"type": "open", "output": {"codec": "pcm_s16le", "sample_rate": 48000}}),
    )
    .await;
    // About 1,500 characters per frame: 48 kHz PCM of all three is over 25 MB, more
    // than loopback's socket buffers hold.
    let paragraph = "The committee met again on Tuesday to talk about the new library, \
        and everyone agreed that the reading room should stay open until late in the evening. "
        .repeat(9);
    let mut sent_chars = 0;
    for _ in 0..3 {
        text(&mut stuck, json!({"type": "text", "text": paragraph})).await;
        sent_chars += paragraph.chars().count();
    }
    text(&mut stuck, json!({"type": "flush"})).await;
    // Meanwhile another session speaks and finishes.
    let mut other = connect_speak(&server).await;
    text(&mut other, json!({"type": "open"})).await;
    assert!(matches!(next(&mut other).await, Got::Json(_)));
    text(
        &mut other,
        json!({"type": "text", "text": "I am still here."}),
    )
    .await;
    text(&mut other, json!({"type": "close"})).await;
    let mut packets = 0;
    let done = loop {
        match next(&mut other).await {
            Got::Audio(_) => packets += 1,
            Got::Json(frame) if frame["type"] == "done" => break frame,
            Got::Json(_) => {}
            Got::Closed(code) => panic!("closed {code:?} before done"),
        }
    };
    assert!(packets > 20, "{packets} packets, {done}");
    // The stuck stream is dropped (counted), without anyone reading it.
    let dropped = |metrics: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with("scaigrid_stream_clients_dropped_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let metrics = server.metrics().await;
        if dropped(&metrics) >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stuck stream was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Its usage counts what it was given to speak up to the drop.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, usage) = server
            .get("/v1/accounting/usage?group_by=module", Some(ADMIN_KEY))
            .await;
        assert_eq!(status, 200, "{usage}");
        let row = usage["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["key"] == "scaispeak")
            .cloned();
        let requests = row
            .as_ref()
            .map_or(0, |r| r["requests"].as_u64().unwrap_or(0));
        if requests == 2 {
            let characters = row.unwrap()["characters"].as_u64().unwrap();
            let mine = "I am still here.".len() as u64;
            assert!(
                characters > mine && characters <= mine + sent_chars as u64,
                "{usage}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{usage}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(stuck);
}

/// Reads past audio to the next JSON frame, or the close.
async fn next_frame(socket: &mut Socket) -> Got {
    loop {
        match next(socket).await {
            Got::Audio(_) => continue,
            other => return other,
        }
    }
}

#[tokio::test]
async fn speech_streams_are_capped_per_tenant_and_in_characters() {
    let server = Server::start_with(crate::support::Options {
        config_toml: Some(
            "[scaispeak]\nstream_max_per_tenant = 2\nstream_max_chars = 3000\n".into(),
        ),
        ..Default::default()
    })
    .await;
    let ready = async |socket: &mut Socket| {
        text(socket, json!({"type": "open"})).await;
        match next_frame(socket).await {
            Got::Json(frame) => assert_eq!(frame["type"], "ready", "{frame}"),
            _ => panic!("no ready frame"),
        }
    };
    let mut first = connect_speak(&server).await;
    ready(&mut first).await;
    let mut second = connect_speak(&server).await;
    ready(&mut second).await;
    // The tenant's third stream is refused before its `open` is read.
    let mut third = connect_speak(&server).await;
    let Got::Json(error) = next_frame(&mut third).await else {
        panic!("no error frame for the third stream")
    };
    assert_eq!(error["code"], "RATE_LIMITED", "{error}");
    assert!(matches!(
        next_frame(&mut third).await,
        Got::Closed(Some(4429))
    ));

    // More text than a stream takes: 4413, whatever was being spoken.
    let piece = "la ".repeat(533);
    text(&mut second, json!({"type": "text", "text": piece})).await;
    text(&mut second, json!({"type": "text", "text": piece})).await;
    let Got::Json(error) = next_frame(&mut second).await else {
        panic!("no error frame past the character limit")
    };
    assert_eq!(error["code"], "CTX_TOO_LARGE", "{error}");
    assert_eq!(error["limit"], 3000, "{error}");
    assert!(matches!(
        next_frame(&mut second).await,
        Got::Closed(Some(4413))
    ));

    // Its slot came back: another stream opens.
    let mut fourth = connect_speak(&server).await;
    ready(&mut fourth).await;
    text(&mut first, json!({"type": "close"})).await;
    text(&mut fourth, json!({"type": "close"})).await;
}
