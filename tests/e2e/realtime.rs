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

/// Runs an OpenAI SDK `script` against the server with these file arguments; what it
/// printed, as JSON.
async fn sdk<T: serde::de::DeserializeOwned>(
    script: &str,
    server: &Server,
    files: &[&std::path::Path],
) -> T {
    let output = tokio::process::Command::new(python_with_openai_sdk())
        .args(["-c", script, &server.base, ADMIN_KEY])
        .args(files)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

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
    let events: Vec<Value> = sdk(SDK_SCRIPT, &server, &[pcm_path.as_path()]).await;
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
    connect_to(server, "intent=transcription", headers).await
}

async fn connect_to(server: &Server, query: &str, headers: &[(&'static str, String)]) -> Socket {
    let url = format!(
        "{}/v1/realtime?{query}",
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
    assert_eq!(created.last().unwrap()["session"]["type"], "realtime");
    // A session type that does not exist: said, and the session goes on.
    send(
        &mut socket,
        json!({"type": "session.update", "session": {"type": "translation"}}),
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

/// 24 kHz PCM16 of `text` spoken by the server's own voice.
async fn spoken_24k(server: &Server, text: &str) -> Vec<u8> {
    let response = server
        .http
        .post(server.url("/v1/audio/speech"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"model": "tts-1", "input": text, "voice": "alloy", "response_format": "wav"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let wav = response.bytes().await.unwrap();
    let audio = media::decode(&wav, &media::DecodeOptions::default()).unwrap();
    media::encode::pcm_s16le(&media::resample::to_mono(&audio, 24_000).unwrap())
}

/// What `audio` (24 kHz PCM16) says, by the batch route.
async fn transcribed(server: &Server, pcm: &[u8]) -> String {
    let samples: Vec<f32> = pcm
        .chunks_exact(2)
        .map(|p| f32::from(i16::from_le_bytes([p[0], p[1]])) / 32_768.0)
        .collect();
    let (status, body) = crate::support::read(
        server
            .http
            .post(server.url("/v1/audio/transcriptions"))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "audio/wav")
            .body(media::encode::wav_s16(&samples, 24_000, 1))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["text"].as_str().unwrap().to_owned()
}

/// A gateway model `realtime/chat` on a mock upstream that answers "Hello from Paris".
async fn chat_model(server: &Server) -> crate::upstream::Upstream {
    let up = crate::upstream::start("Paris", "realtime-up-key").await;
    let id = crate::gateway::backend(server, &up, "realtime-up-key").await;
    crate::gateway::model(
        server,
        "realtime/chat",
        json!([{"backend_id": id}]),
        json!({}),
    )
    .await;
    up
}

const CONVERSATION_SCRIPT: &str = r#"
import base64, json, sys, threading, time
from openai import OpenAI

base, key, pcm_path, out_path = sys.argv[1:5]
client = OpenAI(base_url=base + "/v1", api_key=key,
                websocket_base_url=base.replace("http://", "ws://") + "/v1")
pcm = open(pcm_path, "rb").read()
events, audio, responses = [], bytearray(), []
done = threading.Event()
with client.realtime.connect(model="realtime/chat") as connection:
    connection.session.update(session={"type": "realtime", "instructions": "Answer briefly.",
        "output_modalities": ["audio"],
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}},
                  "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"}}})

    def read():
        try:
            for event in connection:
                e = json.loads(event.to_json())
                if e["type"] == "response.output_audio.delta":
                    audio.extend(base64.b64decode(e["delta"]))
                    e["delta"] = len(e["delta"])
                events.append(e)
                if e["type"] == "response.done":
                    responses.append(e)
                    done.set()
        except Exception as error:
            events.append({"type": "reader_failed", "error": repr(error)})
            done.set()

    threading.Thread(target=read, daemon=True).start()
    # A spoken question in real time, then silence: the turn ends, the answer comes.
    step = 4800
    for at in range(0, len(pcm), step):
        connection.input_audio_buffer.append(audio=base64.b64encode(pcm[at:at + step]).decode())
        time.sleep(0.1)
    for _ in range(12):
        connection.input_audio_buffer.append(audio=base64.b64encode(bytes(step)).decode())
        time.sleep(0.1)
    assert done.wait(60), "no spoken answer"
    done.clear()
    # A typed question whose answer is a tool call; the call's output answered in text.
    connection.session.update(session={"type": "realtime", "tools": [{"type": "function",
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]})
    connection.conversation.item.create(item={"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "What is the weather in Paris?"}]})
    connection.response.create()
    assert done.wait(60), "no tool call"
    done.clear()
    call = [o for o in responses[-1]["response"]["output"] if o["type"] == "function_call"][0]
    connection.conversation.item.create(item={"type": "function_call_output",
        "call_id": call["call_id"], "output": "sunny"})
    connection.response.create(response={"output_modalities": ["text"]})
    assert done.wait(60), "no answer to the tool output"
open(out_path, "wb").write(audio)
print(json.dumps(events))
"#;

#[tokio::test]
async fn the_openai_python_sdk_holds_a_voice_conversation_with_a_tool_call() {
    let server = Server::start().await;
    let up = chat_model(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let question = dir.path().join("question.s16le");
    std::fs::write(
        &question,
        spoken_24k(&server, "Tell me something about the sea.").await,
    )
    .unwrap();
    let answer = dir.path().join("answer.s16le");
    let events: Vec<Value> = sdk(
        CONVERSATION_SCRIPT,
        &server,
        &[question.as_path(), answer.as_path()],
    )
    .await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(!kinds.contains(&"error"), "{events:?}");
    assert_eq!(kinds[0], "session.created");
    assert_eq!(events[0]["session"]["type"], "realtime");
    // The spoken turn: heard, answered by the chat model, spoken back.
    for kind in [
        "input_audio_buffer.speech_started",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_text.delta",
        "response.output_text.done",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let heard = events
        .iter()
        .find(|e| e["type"] == "conversation.item.input_audio_transcription.completed")
        .unwrap()["transcript"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(heard.contains("sea"), "{heard}");
    let done: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "response.done")
        .collect();
    assert_eq!(done.len(), 3, "{kinds:?}");
    let spoken = &done[0]["response"];
    assert_eq!(spoken["status"], "completed", "{spoken}");
    assert_eq!(spoken["usage"]["output_tokens"], 5);
    let transcript = spoken["output"][0]["content"][0]["transcript"]
        .as_str()
        .unwrap();
    assert_eq!(transcript, "Hello from Paris");
    // Billed as it ran, each part by its product: the turn heard (ScaiEcho), the
    // answers spoken (ScaiSpeak; the question was made with 32 characters of speech),
    // the three chat calls.
    let mut rows = (Value::Null, Value::Null, Value::Null);
    for _ in 0..50 {
        rows = (
            server.module_usage(ADMIN_KEY, "scaiecho").await,
            server.module_usage(ADMIN_KEY, "scaispeak").await,
            server.module_usage(ADMIN_KEY, "chat").await,
        );
        let heard = rows.0["audio_seconds"].as_f64().unwrap_or_default();
        let spoken = rows.1["characters"].as_u64().unwrap_or_default();
        let chats = rows.2["requests"].as_u64().unwrap_or_default();
        if heard > 2.0 && spoken >= 32 + 16 && chats >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        rows.0["audio_seconds"].as_f64().unwrap_or_default() > 2.0,
        "{rows:?}"
    );
    assert!(
        rows.1["characters"].as_u64().unwrap_or_default() >= 32 + 16,
        "{rows:?}"
    );
    assert!(
        rows.2["requests"].as_u64().unwrap_or_default() >= 3,
        "{rows:?}"
    );
    let audio = std::fs::read(&answer).unwrap();
    assert!(audio.len() > 24_000, "{} bytes of answer", audio.len());
    // The answer's audio is the answer: it says it ("Hello" is often heard as "below" by
    // the tiny model, from this route and the speech route alike), and it is as long as
    // the speech route's audio of the same text (nothing cut or doubled).
    let back = transcribed(&server, &audio).await.to_lowercase();
    assert!(back.contains("from paris"), "{back}");
    let reference = spoken_24k(&server, "Hello from Paris").await.len() as f64;
    let ratio = audio.len() as f64 / reference;
    assert!(
        (0.85..1.15).contains(&ratio),
        "{} bytes vs {reference}",
        audio.len()
    );
    // The tool call round-trips: the model saw the tool and then its output.
    let call = &done[1]["response"]["output"][0];
    assert_eq!(call["type"], "function_call", "{call}");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["arguments"], r#"{"city":"Paris"}"#);
    let text = &done[2]["response"]["output"][0];
    assert_eq!(
        text["content"][0]["text"], "The weather is sunny.",
        "{text}"
    );
    let messages = up.last_messages();
    let roles: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "user", "assistant", "tool"],
        "{messages}"
    );
    assert_eq!(messages[0]["content"], "Answer briefly.");
    assert_eq!(messages[2]["content"], "Hello from Paris");
    assert_eq!(
        messages[4]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("scaigrid_realtime_responses_total 3"),
        "responses in /metrics"
    );
}

type Events = futures_util::stream::SplitStream<Socket>;

/// The next event (audio deltas replaced by their decoded length, kept in `audio`).
async fn next_event(events: &mut Events, audio: &mut Vec<u8>) -> Value {
    use base64::Engine;
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(60), events.next())
            .await
            .expect("an event within a minute");
        let Some(Ok(Message::Text(text))) = next else {
            match next {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("the socket ended: {other:?}"),
            }
        };
        let mut event: Value = serde_json::from_str(&text).unwrap();
        if event["type"] == "response.output_audio.delta" {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(event["delta"].as_str().unwrap())
                .unwrap();
            event["delta"] = json!(bytes.len());
            audio.extend(bytes);
        }
        return event;
    }
}

async fn next_of(events: &mut Events, audio: &mut Vec<u8>, kind: &str) -> (Value, Vec<Value>) {
    let mut seen = Vec::new();
    loop {
        let event = next_event(events, audio).await;
        if event["type"] == kind {
            return (event, seen);
        }
        seen.push(event);
    }
}

type Sink = futures_util::stream::SplitSink<Socket, Message>;

/// A conversation session on `model`, its `session.created` read.
async fn open_conversation(server: &Server, model: &str) -> (Sink, Events) {
    let socket = connect_to(
        server,
        &format!("model={model}"),
        &[("authorization", format!("Bearer {ADMIN_KEY}"))],
    )
    .await;
    let (sink, mut events) = socket.split();
    next_of(&mut events, &mut Vec::new(), "session.created").await;
    (sink, events)
}

/// Appends `audio` (24 kHz PCM16) in real time, a tenth of a second at a time, from its
/// own task (events are read meanwhile); the sink comes back when all is sent.
fn speak_in_real_time(mut sink: Sink, audio: Vec<u8>) -> tokio::task::JoinHandle<Sink> {
    tokio::spawn(async move {
        for chunk in audio.chunks(4_800) {
            sink.send(Message::Text(append(chunk).to_string().into()))
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        sink
    })
}

#[tokio::test]
async fn speech_during_an_answer_cancels_it_and_the_answer_keeps_what_was_heard() {
    use crate::upstream::{LONG_ANSWER, Mode};
    let server = Server::start().await;
    let up = chat_model(&server).await;
    up.set_mode(Mode::Long);
    let interruption = spoken_24k(&server, "Stop, that is enough, thank you.").await;
    let (mut sink, mut events) = open_conversation(&server, "realtime/chat").await;
    let mut audio = Vec::new();
    let out = |event: Value| Message::Text(event.to_string().into());
    sink.send(out(json!({"type": "session.update", "session": {"type": "realtime",
        "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}}}})))
        .await
        .unwrap();
    next_of(&mut events, &mut audio, "session.updated").await;
    // Nothing to cancel, nothing to truncate: errors naming what is wrong.
    sink.send(out(json!({"type": "response.cancel", "event_id": "evt_c"})))
        .await
        .unwrap();
    let (error, _) = next_of(&mut events, &mut audio, "error").await;
    assert_eq!(error["error"]["event_id"], "evt_c", "{error}");
    sink.send(out(
        json!({"type": "conversation.item.truncate", "item_id": "nope",
        "content_index": 0, "audio_end_ms": 10}),
    ))
    .await
    .unwrap();
    let (error, _) = next_of(&mut events, &mut audio, "error").await;
    assert_eq!(error["error"]["param"], "item_id", "{error}");

    // A typed question, a long spoken answer.
    sink.send(out(
        json!({"type": "conversation.item.create", "item": {"type": "message",
        "role": "user", "content": [{"type": "input_text", "text": "Count to twelve."}]}}),
    ))
    .await
    .unwrap();
    next_of(&mut events, &mut audio, "conversation.item.added").await;
    sink.send(out(json!({"type": "response.create"})))
        .await
        .unwrap();
    let (created, _) = next_of(&mut events, &mut audio, "response.created").await;
    let first_id = created["response"]["id"].as_str().unwrap().to_owned();
    while audio.len() < 48_000 {
        next_event(&mut events, &mut audio).await;
    }
    // One response at a time.
    sink.send(out(
        json!({"type": "response.create", "event_id": "evt_busy"}),
    ))
    .await
    .unwrap();
    let (busy, _) = next_of(&mut events, &mut audio, "error").await;
    assert_eq!(busy["error"]["event_id"], "evt_busy", "{busy}");

    // The user speaks over it, in real time.
    let mut speech = interruption;
    speech.extend(vec![0; 48_000]);
    let speaker = speak_in_real_time(sink, speech);
    let (done, seen) = next_of(&mut events, &mut audio, "response.done").await;
    let kinds: Vec<&str> = seen.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(
        kinds.contains(&"input_audio_buffer.speech_started"),
        "{kinds:?}"
    );
    assert_eq!(done["response"]["id"], first_id.as_str());
    assert_eq!(done["response"]["status"], "cancelled", "{done}");
    assert_eq!(
        done["response"]["status_details"]["reason"],
        "turn_detected"
    );
    let answer = &done["response"]["output"][0];
    assert_eq!(answer["status"], "incomplete");
    let kept = answer["content"][0]["transcript"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !kept.is_empty() && LONG_ANSWER.starts_with(&kept) && kept.len() < LONG_ANSWER.len(),
        "what was heard: {kept:?}"
    );
    let truncated = seen
        .iter()
        .find(|e| e["type"] == "conversation.item.truncated")
        .unwrap_or_else(|| panic!("no truncation in {kinds:?}"));
    assert_eq!(truncated["item_id"], answer["id"]);
    let end_ms = truncated["audio_end_ms"].as_u64().unwrap();
    let sent_ms = (audio.len() / 48) as u64;
    assert!(end_ms > 0 && end_ms <= sent_ms, "{end_ms} of {sent_ms} ms");

    // The user's turn is answered, with the cut answer in the conversation the model
    // reads; the client cancels this one.
    let (completed, _) = next_of(
        &mut events,
        &mut audio,
        "conversation.item.input_audio_transcription.completed",
    )
    .await;
    assert!(
        completed["transcript"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("enough"),
        "{completed}"
    );
    let (created, _) = next_of(&mut events, &mut audio, "response.created").await;
    let second_id = created["response"]["id"].as_str().unwrap().to_owned();
    let mut sink = speaker.await.unwrap();
    let messages = up.last_messages();
    let assistant = messages
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "assistant")
        .unwrap();
    assert_eq!(assistant["content"], kept.as_str(), "{messages}");
    sink.send(out(
        json!({"type": "response.cancel", "response_id": second_id}),
    ))
    .await
    .unwrap();
    let (done, _) = next_of(&mut events, &mut audio, "response.done").await;
    assert_eq!(
        done["response"]["status_details"]["reason"],
        "client_cancelled"
    );

    // An answer in telephone audio (μ-law) out of the conversation.
    up.set_mode(Mode::Ok);
    audio.clear();
    sink.send(out(
        json!({"type": "response.create", "response": {"conversation": "none",
        "audio": {"output": {"format": {"type": "audio/pcmu"}}}}}),
    ))
    .await
    .unwrap();
    let (done, seen) = next_of(&mut events, &mut audio, "response.done").await;
    assert_eq!(done["response"]["status"], "completed", "{done}");
    assert!(
        !seen.iter().any(|e| e["type"] == "conversation.item.added"),
        "out of band"
    );
    let (status, listened) = crate::support::read(
        server
            .http
            .post(server.url("/v1/listen?encoding=mulaw&sample_rate=8000"))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "audio/mulaw")
            .body(audio.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{listened}");
    let back = listened["results"]["channels"][0]["alternatives"][0]["transcript"]
        .as_str()
        .unwrap()
        .to_lowercase();
    // "Hello from Paris" at 8 kHz: the tiny model hears it roughly ("below from pairs").
    assert!(back.contains("from"), "μ-law answer heard as {back:?}");
    let seconds = audio.len() as f64 / 8_000.0;
    assert!((0.6..3.0).contains(&seconds), "{seconds} s of μ-law");
}

const BETA_SCRIPT: &str = r#"
import base64, json, sys, threading, time
from openai import OpenAI

base, key, pcm_path = sys.argv[1:4]
client = OpenAI(base_url=base + "/v1", api_key=key,
                websocket_base_url=base.replace("http://", "ws://") + "/v1")
pcm = open(pcm_path, "rb").read()
events, audio = [], bytearray()
done = threading.Event()
with client.beta.realtime.connect(model="realtime/chat") as connection:
    connection.session.update(session={"modalities": ["audio", "text"], "voice": "alloy",
        "instructions": "Answer briefly.", "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}})

    def read():
        try:
            for event in connection:
                e = json.loads(event.to_json())
                if e["type"] == "response.audio.delta":
                    audio.extend(base64.b64decode(e["delta"]))
                    e["delta"] = len(e["delta"])
                events.append(e)
                if e["type"] == "response.done":
                    done.set()
        except Exception as error:
            events.append({"type": "reader_failed", "error": repr(error)})
            done.set()

    threading.Thread(target=read, daemon=True).start()
    step = 4800
    for at in range(0, len(pcm), step):
        connection.input_audio_buffer.append(audio=base64.b64encode(pcm[at:at + step]).decode())
        time.sleep(0.1)
    for _ in range(12):
        connection.input_audio_buffer.append(audio=base64.b64encode(bytes(step)).decode())
        time.sleep(0.1)
    assert done.wait(60), "no spoken answer"
    done.clear()
    connection.conversation.item.create(item={"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "And in writing?"}]})
    connection.response.create(response={"modalities": ["text"]})
    assert done.wait(60), "no written answer"
print(json.dumps({"events": events, "audio": len(audio)}))
"#;

#[tokio::test]
async fn a_client_on_the_beta_sdk_holds_the_same_conversation() {
    let server = Server::start().await;
    chat_model(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let question = dir.path().join("question.s16le");
    std::fs::write(
        &question,
        spoken_24k(&server, "Tell me something about the sea.").await,
    )
    .unwrap();
    let got: Value = sdk(BETA_SCRIPT, &server, &[question.as_path()]).await;
    let events = got["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(!kinds.contains(&"error"), "{events:?}");
    let created = &events[0];
    assert_eq!(created["type"], "session.created");
    assert_eq!(
        created["session"]["input_audio_format"], "pcm16",
        "beta shape"
    );
    // The beta names, and none of the current ones that differ.
    for kind in [
        "conversation.item.created",
        "response.audio_transcript.delta",
        "response.audio.delta",
        "response.audio.done",
        "response.text.delta",
        "response.text.done",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    for kind in [
        "conversation.item.added",
        "conversation.item.done",
        "response.output_audio.delta",
    ] {
        assert!(!kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let done: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "response.done")
        .collect();
    assert_eq!(done.len(), 2, "{kinds:?}");
    assert_eq!(done[0]["response"]["modalities"], json!(["audio"]));
    assert_eq!(
        done[0]["response"]["output"][0]["content"][0],
        json!({"type": "audio", "transcript": "Hello from Paris"})
    );
    assert_eq!(
        done[1]["response"]["output"][0]["content"][0],
        json!({"type": "text", "text": "Hello from Paris"})
    );
    assert!(got["audio"].as_u64().unwrap() > 24_000, "{got}");
}

#[tokio::test]
async fn floods_and_bad_conversation_events_are_errors_and_the_session_goes_on() {
    let server = Server::start().await;
    let (mut sink, mut events) = open_conversation(&server, "no/such-model").await;
    let mut audio = Vec::new();
    let out = |event: Value| Message::Text(event.to_string().into());
    // Each bad event names its parameter; none ends the session.
    let bad = [
        (
            json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "x".repeat(70_000)}]}}),
            "item.content",
        ),
        (
            json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
            "content": [{"type": "input_audio", "audio": "AAAA"}]}}),
            "item.content[0].transcript",
        ),
        (
            json!({"type": "conversation.item.create", "previous_item_id": "nowhere",
            "item": {"role": "user", "content": [{"type": "input_text", "text": "hi"}]}}),
            "previous_item_id",
        ),
        (
            json!({"type": "session.update", "session": {"instructions": "x".repeat(70_000)}}),
            "instructions",
        ),
        (
            json!({"type": "session.update", "session": {"tools": [{"type": "function", "name": "has space"}]}}),
            "session.tools[0].name",
        ),
        (
            json!({"type": "response.create", "response": {"conversation": "elsewhere"}}),
            "response.conversation",
        ),
        (
            json!({"type": "response.create", "response": {"input": [{"type": "item_reference", "id": "gone"}]}}),
            "item_id",
        ),
        (
            json!({"type": "conversation.item.retrieve", "item_id": "gone"}),
            "item_id",
        ),
        (json!({"type": "conversation.item.delete"}), "item_id"),
        (json!({"type": "output_audio_buffer.dance"}), "type"),
    ];
    for (index, (event, param)) in bad.iter().enumerate() {
        let mut event = event.clone();
        event["event_id"] = json!(format!("evt_{index}"));
        sink.send(out(event)).await.unwrap();
        let (error, _) = next_of(&mut events, &mut audio, "error").await;
        assert_eq!(
            error["error"]["event_id"],
            format!("evt_{index}"),
            "{error}"
        );
        assert_eq!(error["error"]["param"], *param, "{error}");
    }
    // A flood of items: each is answered, and the conversation keeps the newest 1,024.
    let mut first = None;
    for index in 0..1_100 {
        let item = json!({"type": "conversation.item.create", "item": {"id": format!("it_{index}"),
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}});
        sink.send(out(item)).await.unwrap();
        let (added, _) = next_of(&mut events, &mut audio, "conversation.item.added").await;
        first.get_or_insert(added["item"]["id"].clone());
    }
    assert_eq!(first.unwrap(), "it_0");
    sink.send(out(
        json!({"type": "conversation.item.retrieve", "item_id": "it_0"}),
    ))
    .await
    .unwrap();
    next_of(&mut events, &mut audio, "error").await;
    sink.send(out(
        json!({"type": "conversation.item.retrieve", "item_id": "it_1099"}),
    ))
    .await
    .unwrap();
    next_of(&mut events, &mut audio, "conversation.item.retrieved").await;
    // A model that does not exist: the response fails with the gateway's code.
    sink.send(out(json!({"type": "response.create"})))
        .await
        .unwrap();
    let (done, seen) = next_of(&mut events, &mut audio, "response.done").await;
    assert_eq!(done["response"]["status"], "failed", "{done}");
    assert_eq!(
        done["response"]["status_details"]["error"]["code"],
        "MODEL_NOT_FOUND"
    );
    assert!(seen.iter().any(|e| e["type"] == "error"), "{seen:?}");
    // Binary frames are not the protocol: said, and the session still answers.
    sink.send(Message::Binary(vec![1; 64].into()))
        .await
        .unwrap();
    next_of(&mut events, &mut audio, "error").await;
    sink.send(out(
        json!({"type": "session.update", "session": {"instructions": "ok"}}),
    ))
    .await
    .unwrap();
    let (updated, _) = next_of(&mut events, &mut audio, "session.updated").await;
    assert_eq!(updated["session"]["instructions"], "ok");
    let (status, _) = server.get("/health/ready", None).await;
    assert_eq!(status, 200);
}

/// Events of a spoken `audio` (real time, then silence) until the answer after its
/// second completed utterance is done; `turn_detection` as given.
async fn turns_of(server: &Server, turn_detection: Value, audio: Vec<u8>) -> Vec<Value> {
    let (mut sink, mut events) = open_conversation(server, "realtime/chat").await;
    let mut ignored = Vec::new();
    let update = json!({"type": "session.update", "session": {"type": "realtime",
        "output_modalities": ["text"], "audio": {"input": {"turn_detection": turn_detection}}}});
    sink.send(Message::Text(update.to_string().into()))
        .await
        .unwrap();
    next_of(&mut events, &mut ignored, "session.updated").await;
    let speaker = speak_in_real_time(sink, audio);
    let mut seen = Vec::new();
    let mut completed = 0;
    loop {
        let event = next_event(&mut events, &mut ignored).await;
        let kind = event["type"].as_str().unwrap().to_owned();
        seen.push(event);
        if kind == "conversation.item.input_audio_transcription.completed" {
            completed += 1;
        }
        if kind == "response.done" && completed >= 2 {
            break;
        }
    }
    speaker.abort();
    seen
}

#[tokio::test]
async fn semantic_vad_holds_a_turn_whose_sentence_is_open() {
    let server = Server::start().await;
    chat_model(&server).await;
    // "I would like to book a table for" ... half a second ... "two people tonight."
    let mut audio = spoken_24k(&server, "I would like to book a table for").await;
    audio.extend(vec![0; 24_000]);
    audio.extend(spoken_24k(&server, "two people tonight.").await);
    audio.extend(vec![0; 48_000 * 3]);
    let count = |events: &[Value], kind: &str| events.iter().filter(|e| e["type"] == kind).count();
    let before_second = |events: &[Value]| {
        let second = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e["type"] == "conversation.item.input_audio_transcription.completed")
            .nth(1)
            .unwrap()
            .0;
        count(&events[..second], "response.created")
    };
    // A fixed short pause answers the fragment, and the rest of the sentence barges in.
    let fixed = turns_of(
        &server,
        json!({"type": "server_vad", "silence_duration_ms": 250}),
        audio.clone(),
    )
    .await;
    let heard: Vec<&str> = fixed
        .iter()
        .filter(|e| e["type"] == "conversation.item.input_audio_transcription.completed")
        .map(|e| e["transcript"].as_str().unwrap())
        .collect();
    assert_eq!(heard.len(), 2, "two utterances: {heard:?}");
    assert_eq!(
        before_second(&fixed),
        1,
        "the fragment was answered: {heard:?}"
    );
    // semantic_vad (high eagerness: the same 250 ms utterance pause) waits for the rest.
    let semantic = turns_of(
        &server,
        json!({"type": "semantic_vad", "eagerness": "high"}),
        audio,
    )
    .await;
    assert_eq!(
        count(
            &semantic,
            "conversation.item.input_audio_transcription.completed"
        ),
        2
    );
    assert_eq!(before_second(&semantic), 0, "held through the pause");
    assert_eq!(count(&semantic, "response.created"), 1);
    let done = semantic
        .iter()
        .find(|e| e["type"] == "response.done")
        .unwrap();
    assert_eq!(done["response"]["status"], "completed", "{done}");
}

#[tokio::test]
async fn a_conversation_outlives_the_audio_streams_idle_timeout() {
    let server = Server::start_with(crate::support::Options {
        config_toml: Some(
            "[scaiecho]\nstream_idle_timeout_seconds = 2\nstream_keepalive_seconds = 1\n".into(),
        ),
        ..crate::support::Options::default()
    })
    .await;
    let (mut sink, mut events) = open_conversation(&server, "realtime/chat").await;
    let mut ignored = Vec::new();
    let update = json!({"type": "session.update", "session": {"type": "realtime",
        "audio": {"input": {"turn_detection": null}}}});
    sink.send(Message::Text(update.to_string().into()))
        .await
        .unwrap();
    next_of(&mut events, &mut ignored, "session.updated").await;
    // Audio opens the stream; then the client says nothing for twice its idle timeout.
    let speech = spoken_24k(&server, "Good morning.").await;
    for chunk in speech.chunks(48_000) {
        sink.send(Message::Text(append(chunk).to_string().into()))
            .await
            .unwrap();
    }
    // While it is quiet the audio stream neither ends nor drains (a manual turn ends
    // only on commit): no error, no completed turn, no close.
    let quiet_until = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(quiet_until, events.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Text(text))))
                if !text.contains("\"error\"") && !text.contains("transcription.completed") => {}
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("while idle: {other:?}"),
        }
    }
    // Still open: the turn is committed and transcribed.
    sink.send(Message::Text(
        json!({"type": "input_audio_buffer.commit"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let (completed, seen) = next_of(
        &mut events,
        &mut ignored,
        "conversation.item.input_audio_transcription.completed",
    )
    .await;
    assert!(seen.iter().all(|e| e["type"] != "error"), "{seen:?}");
    assert!(
        completed["transcript"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("morning"),
        "{completed}"
    );
}
