//! OpenAI's Realtime API (`/v1/realtime`, transcription sessions) end to end: OpenAI's
//! own Python SDK (unchanged but for its URLs and key) streams real speech and gets
//! growing partials and completed transcripts as good as the batch route's; raw
//! sockets check the beta protocol, manual commits, clearing, G.711 audio, the
//! browser's key subprotocol, and every refusal.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::stream::{Socket, says_beckett};
use crate::support::{ADMIN_KEY, Server, python_with_openai_sdk};

/// What `beckett.wav` says.
const BECKETT: &str = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.";

const SDK_SCRIPT: &str = r#"
import base64, json, sys, threading, time
from openai import OpenAI

base, key, pcm_path = sys.argv[1:4]
client = OpenAI(base_url=base + "/v1", api_key=key,
                websocket_base_url=base.replace("http://", "ws://") + "/v1")
pcm = open(pcm_path, "rb").read()
events = []
with client.realtime.connect(model="gpt-realtime") as connection:
    connection.session.update(session={"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 24000},
        "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}}})

    def read():
        try:
            for event in connection:
                events.append(json.loads(event.to_json()))
        except Exception:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    step = 4800  # 0.1 s of 24 kHz PCM16, in real time, then a second of silence
    for at in range(0, len(pcm), step):
        connection.input_audio_buffer.append(audio=base64.b64encode(pcm[at:at + step]).decode())
        time.sleep(0.1)
    for _ in range(10):
        connection.input_audio_buffer.append(audio=base64.b64encode(bytes(step)).decode())
        time.sleep(0.1)
    quiet_since, seen = time.time(), 0
    while time.time() - quiet_since < 3 and time.time() - quiet_since < 60:
        if len(events) != seen:
            seen, quiet_since = len(events), time.time()
        time.sleep(0.1)
print(json.dumps(events))
"#;

fn pcm_24k(file: &str) -> Vec<u8> {
    let bytes = std::fs::read(format!("models/cache/test-audio/{file}")).unwrap();
    let audio = media::decode(&bytes, &media::DecodeOptions::default()).unwrap();
    media::encode::pcm_s16le(&media::resample::to_mono(&audio, 24_000).unwrap())
}

#[tokio::test]
async fn the_openai_python_sdk_runs_a_transcription_session() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pcm_path = dir.path().join("beckett.s16le");
    std::fs::write(&pcm_path, pcm_24k("beckett.wav")).unwrap();
    let output = tokio::process::Command::new(python_with_openai_sdk())
        .args(["-c", SDK_SCRIPT, &server.base, ADMIN_KEY])
        .arg(&pcm_path)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let events: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"session.created"), "{kinds:?}");
    for kind in [
        "session.updated",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    assert!(!kinds.contains(&"error"), "{events:?}");
    let updated = events
        .iter()
        .find(|e| e["type"] == "session.updated")
        .unwrap();
    assert_eq!(
        updated["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"],
        400
    );
    // Per item: the deltas, appended, are the completed transcript (partials only grow).
    let completed: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "conversation.item.input_audio_transcription.completed")
        .collect();
    for done in &completed {
        let item = done["item_id"].as_str().unwrap();
        let appended: String = events
            .iter()
            .filter(|e| {
                e["type"] == "conversation.item.input_audio_transcription.delta"
                    && e["item_id"] == item
            })
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        let transcript = done["transcript"].as_str().unwrap();
        assert!(
            transcript.starts_with(&appended),
            "{appended:?} / {transcript:?}"
        );
        assert_eq!(done["usage"]["type"], "duration");
    }
    let heard = completed
        .iter()
        .map(|e| e["transcript"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(says_beckett(&heard), "{heard}");
    // As good as the batch route on the same audio (within 2 points of WER).
    let (status, batch) = crate::support::read(
        server
            .http
            .post(server.url("/v1/audio/transcriptions"))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "audio/wav")
            .body(std::fs::read("models/cache/test-audio/beckett.wav").unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{batch}");
    let live = engines::wer::wer(BECKETT, &heard);
    let whole = engines::wer::wer(BECKETT, batch["text"].as_str().unwrap());
    println!("realtime WER {live:.3}, batch WER {whole:.3}: {heard:?}");
    assert!(
        live <= whole + 0.02,
        "realtime {live:.3} vs batch {whole:.3}"
    );
    let metrics = server.metrics().await;
    let line = r#"scaigrid_compat_sessions_total{protocol="openai_realtime"} 1"#;
    assert!(metrics.contains(line), "{line} in /metrics");
}

async fn connect(server: &Server, headers: &[(&'static str, String)]) -> Socket {
    let url = format!(
        "{}/v1/realtime?model=gpt-realtime",
        server.base.replacen("http://", "ws://", 1)
    );
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

async fn send(socket: &mut Socket, event: Value) {
    socket
        .send(Message::Text(event.to_string().into()))
        .await
        .unwrap();
}

/// Events until one of `kind` (included), or until the server closes.
async fn until(socket: &mut Socket, kind: &str) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(60), socket.next())
            .await
            .expect("an event within a minute");
        match next {
            Some(Ok(Message::Text(text))) => {
                let event: Value = serde_json::from_str(&text).unwrap();
                let done = event["type"] == kind;
                events.push(event);
                if done {
                    return events;
                }
            }
            Some(Ok(Message::Close(frame))) => {
                events.push(json!({"type": "closed", "code": frame.map(|f| u16::from(f.code))}));
                return events;
            }
            Some(Ok(_)) => {}
            other => panic!("the socket ended: {other:?}"),
        }
    }
}

fn append(audio: &[u8]) -> Value {
    use base64::Engine;
    json!({"type": "input_audio_buffer.append",
        "audio": base64::engine::general_purpose::STANDARD.encode(audio)})
}

#[tokio::test]
async fn beta_names_manual_commits_clearing_telephone_audio_and_refusals() {
    let server = Server::start().await;
    let bearer = format!("Bearer {ADMIN_KEY}");

    // The beta protocol, μ-law audio (as a phone bridge sends it), manual turns.
    let mut socket = connect(
        &server,
        &[
            ("authorization", bearer.clone()),
            ("openai-beta", "realtime=v1".into()),
        ],
    )
    .await;
    let created = until(&mut socket, "transcription_session.created").await;
    assert_eq!(created.len(), 1, "{created:?}");
    send(
        &mut socket,
        json!({"type": "transcription_session.update", "event_id": "evt_update",
            "session": {"input_audio_format": "g711_ulaw",
                "input_audio_transcription": {"model": "whisper-1", "language": "en"},
                "turn_detection": null}}),
    )
    .await;
    let updated = until(&mut socket, "transcription_session.updated").await;
    assert_eq!(
        updated.last().unwrap()["session"]["audio"]["input"]["turn_detection"],
        Value::Null
    );
    // Committing nothing is an error naming the buffer; the session goes on.
    send(
        &mut socket,
        json!({"type": "input_audio_buffer.commit", "event_id": "evt_c0"}),
    )
    .await;
    let error = until(&mut socket, "error").await.pop().unwrap();
    assert_eq!(error["error"]["event_id"], "evt_c0", "{error}");
    let mulaw = crate::deepgram::ffmpeg_mulaw_8k();
    for chunk in mulaw.chunks(8000) {
        send(&mut socket, append(chunk)).await;
    }
    // A mistake mid-session is an error event; nothing is lost.
    send(
        &mut socket,
        json!({"type": "response.create", "event_id": "evt_r"}),
    )
    .await;
    send(
        &mut socket,
        json!({"type": "input_audio_buffer.append", "audio": "%%%"}),
    )
    .await;
    send(&mut socket, json!({"type": "input_audio_buffer.commit"})).await;
    let events = until(
        &mut socket,
        "conversation.item.input_audio_transcription.completed",
    )
    .await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(
        kinds.contains(&"conversation.item.created"),
        "beta name: {kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "error").count(),
        2,
        "{events:?}"
    );
    let refused = events
        .iter()
        .find(|e| e["error"]["event_id"] == "evt_r")
        .unwrap();
    assert_eq!(refused["error"]["type"], "invalid_request_error");
    let transcript = events.last().unwrap()["transcript"].as_str().unwrap();
    assert!(says_beckett(transcript), "one manual turn: {transcript}");
    // The format cannot change once audio came.
    send(
        &mut socket,
        json!({"type": "session.update", "session": {"input_audio_format": "pcm16"}}),
    )
    .await;
    let error = until(&mut socket, "error").await.pop().unwrap();
    assert_eq!(error["error"]["param"], "session", "{error}");
    // Cleared audio is not transcribed.
    for chunk in mulaw[..24_000].chunks(8000) {
        send(&mut socket, append(chunk)).await;
    }
    send(&mut socket, json!({"type": "input_audio_buffer.clear"})).await;
    until(&mut socket, "input_audio_buffer.cleared").await;
    let mut after = Vec::new();
    let quiet = tokio::time::sleep(std::time::Duration::from_secs(4));
    tokio::pin!(quiet);
    loop {
        tokio::select! {
            () = &mut quiet => break,
            next = socket.next() => match next {
                Some(Ok(Message::Text(text))) => after.push(serde_json::from_str::<Value>(&text).unwrap()),
                Some(Ok(_)) => {}
                _ => break,
            },
        }
    }
    assert!(
        after
            .iter()
            .all(|e| e["type"] != "conversation.item.input_audio_transcription.completed"),
        "cleared audio was transcribed: {after:?}"
    );
    drop(socket);

    // A browser's way: the key in a subprotocol, answered with `realtime`.
    let url = format!(
        "{}/v1/realtime",
        server.base.replacen("http://", "ws://", 1)
    );
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("realtime, openai-insecure-api-key.{ADMIN_KEY}")
            .parse()
            .unwrap(),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "realtime");
    let created = until(&mut socket, "session.created").await;
    assert_eq!(created.last().unwrap()["session"]["type"], "transcription");
    // A conversation session is not served yet: said, and the session goes on.
    send(
        &mut socket,
        json!({"type": "session.update", "session": {"type": "realtime"}}),
    )
    .await;
    let error = until(&mut socket, "error").await.pop().unwrap();
    assert_eq!(error["error"]["param"], "session.type", "{error}");
    // Binary frames are not the protocol's: an error event.
    socket
        .send(Message::Binary(vec![0; 320].into()))
        .await
        .unwrap();
    let error = until(&mut socket, "error").await.pop().unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("base64")
    );

    // No key, a wrong key: an error event, then 4401.
    for headers in [
        vec![],
        vec![("authorization", "Bearer sgk_wrong".to_owned())],
    ] {
        let mut socket = connect(&server, &headers).await;
        let events = until(&mut socket, "closed").await;
        assert_eq!(events.last().unwrap()["code"], 4401, "{events:?}");
        let error = events.iter().find(|e| e["type"] == "error").unwrap();
        assert!(
            error["error"]["code"]
                .as_str()
                .unwrap()
                .starts_with("AUTH_")
        );
    }
    let (status, _) = server.get("/health/ready", None).await;
    assert_eq!(status, 200);
}
