//! Deepgram's `/v1/listen` end to end: Deepgram's own Python SDK (unchanged but for the
//! base URL and key) streams real speech live and sends a file; raw sockets check what
//! the SDK does not: telephone μ-law, the `token` subprotocol, every refusal with its
//! message and close code, unknown messages that lose nothing, the empty-frame close.

use futures_util::SinkExt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::stream::{Socket, pcm_16k, says_beckett};
use crate::support::{ADMIN_KEY, Server, assert_error, python_with_openai_sdk};

const SDK_SCRIPT: &str = r#"
import json, os, sys, threading, time
from deepgram import DeepgramClient
from deepgram.core.events import EventType
from deepgram.environment import DeepgramClientEnvironment

base, key, pcm_path, wav_path = sys.argv[1:5]
ws = base.replace("http://", "ws://")
environment = DeepgramClientEnvironment(base=base, production=ws, agent=ws, agent_rest=base)
client = DeepgramClient(api_key=key, environment=environment)

def plain(message):
    return {"class": type(message).__name__, **json.loads(message.json())}

pcm = open(pcm_path, "rb").read()
live = []
with client.listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=16000,
        language="en-US", interim_results="true", punctuate="true", endpointing=300,
        utterance_end_ms="1000", vad_events="true", smart_format="true") as socket:
    socket.on(EventType.MESSAGE, lambda message: live.append(plain(message)))
    listener = threading.Thread(target=socket.start_listening, daemon=True)
    listener.start()
    step = 3200  # 0.1 s of 16 kHz s16le, sent in real time
    for at in range(0, len(pcm), step):
        socket.send_media(pcm[at:at + step])
        time.sleep(0.1)
    socket.send_keep_alive()
    socket.send_finalize()
    socket.send_close_stream()
    listener.join(timeout=120)

response = client.listen.v1.media.transcribe_file(request=open(wav_path, "rb").read(),
    model="nova-3", punctuate=True, utterances=True, diarize=True)
print(json.dumps({"live": live, "file": json.loads(response.json())}))
"#;

fn python_with_deepgram_sdk() -> String {
    // The same venv as the OpenAI SDK's (tests/requirements.txt).
    python_with_openai_sdk()
}

#[tokio::test]
async fn the_deepgram_python_sdk_streams_live_and_transcribes_a_file() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pcm = pcm_16k("beckett.wav");
    let pcm_path = dir.path().join("beckett.s16le");
    std::fs::write(&pcm_path, &pcm).unwrap();
    let python = python_with_deepgram_sdk();
    let output = tokio::process::Command::new(&python)
        .args(["-c", SDK_SCRIPT, &server.base, ADMIN_KEY])
        .arg(&pcm_path)
        .arg("models/cache/test-audio/beckett.wav")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let live = printed["live"].as_array().unwrap();
    let class = |m: &Value| m["class"].as_str().unwrap_or_default().to_owned();
    let classes: Vec<String> = live.iter().map(class).collect();
    // The SDK recognised every message as one of its own types.
    for expected in [
        "ListenV1Results",
        "ListenV1SpeechStarted",
        "ListenV1UtteranceEnd",
        "ListenV1Metadata",
    ] {
        assert!(
            classes.iter().any(|c| c == expected),
            "{expected} in {classes:?}"
        );
    }
    assert_eq!(classes.last().map(String::as_str), Some("ListenV1Metadata"));
    let results: Vec<&Value> = live.iter().filter(|m| m["type"] == "Results").collect();
    assert!(
        results.iter().any(|r| r["is_final"] == false),
        "interim results were asked for"
    );
    assert!(results.iter().any(|r| r["speech_final"] == true));
    let finals: Vec<&Value> = results
        .iter()
        .copied()
        .filter(|r| r["is_final"] == true)
        .collect();
    let text = finals
        .iter()
        .map(|r| {
            r["channel"]["alternatives"][0]["transcript"]
                .as_str()
                .unwrap()
        })
        .collect::<Vec<_>>()
        .join(" ");
    assert!(says_beckett(&text), "{text}");
    assert!(text.contains('.'), "punctuated: {text}");
    let word = &finals[0]["channel"]["alternatives"][0]["words"][0];
    assert!(word["start"].as_f64().unwrap() >= 0.0, "{word}");
    assert!(word["punctuated_word"].is_string(), "{word}");
    let metadata = live.last().unwrap();
    assert!(
        (metadata["duration"].as_f64().unwrap() - 9.96).abs() < 0.1,
        "{metadata}"
    );
    assert_eq!(metadata["sha256"], hex::encode(Sha256::digest(&pcm)));
    assert_eq!(metadata["channels"], 1);

    // The file: Deepgram's response body, with words and utterances.
    let file = &printed["file"];
    let alternative = &file["results"]["channels"][0]["alternatives"][0];
    let transcript = alternative["transcript"].as_str().unwrap();
    assert!(says_beckett(transcript), "{file}");
    assert!(!alternative["words"].as_array().unwrap().is_empty());
    assert!(
        alternative["words"][0]["speaker"].is_number(),
        "diarized: {alternative}"
    );
    assert!(!file["results"]["utterances"].as_array().unwrap().is_empty());
    assert!((file["metadata"]["duration"].as_f64().unwrap() - 9.96).abs() < 0.1);
    let wav = std::fs::read("models/cache/test-audio/beckett.wav").unwrap();
    assert_eq!(
        file["metadata"]["sha256"],
        hex::encode(Sha256::digest(&wav))
    );
    let metrics = server.metrics().await;
    for protocol in ["deepgram_live", "deepgram_file"] {
        let line = format!("scaigrid_compat_sessions_total{{protocol=\"{protocol}\"}} 1");
        assert!(metrics.contains(&line), "{line} in /metrics");
    }
    // Both were billed as ScaiEcho audio (usage is flushed every second).
    let mut usage = Value::Null;
    for _ in 0..50 {
        usage = server.module_usage(ADMIN_KEY, "scaiecho").await;
        if usage["audio_seconds"].as_f64().unwrap_or_default() > 19.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        usage["audio_seconds"].as_f64().unwrap_or_default() > 19.0,
        "{usage}"
    );
}

async fn listen(server: &Server, query: &str, auth: Option<(&'static str, &str)>) -> Socket {
    let url = format!(
        "{}/v1/listen?{query}",
        server.base.replacen("http://", "ws://", 1)
    );
    let mut request = url.into_client_request().unwrap();
    if let Some((name, value)) = auth {
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// Every text message until the close, and the close code.
async fn until_close(socket: &mut Socket) -> (Vec<Value>, Option<u16>) {
    crate::stream::until_close(socket).await
}

/// `beckett.wav` as raw 8 kHz μ-law, as a telephone line carries it (ffmpeg).
pub(crate) fn ffmpeg_mulaw_8k() -> Vec<u8> {
    let output = std::process::Command::new("ffmpeg")
        .args([
            "-loglevel",
            "error",
            "-i",
            "models/cache/test-audio/beckett.wav",
            "-ar",
            "8000",
            "-ac",
            "1",
            "-f",
            "mulaw",
            "-",
        ])
        .output()
        .expect("ffmpeg");
    assert!(output.status.success());
    output.stdout
}

#[tokio::test]
async fn telephone_audio_subprotocol_auth_and_bad_input_on_the_live_socket() {
    let server = Server::start().await;
    let token = format!("Token {ADMIN_KEY}");

    // μ-law at 8 kHz, as a phone line sends it; an unknown message is answered and
    // loses nothing; an empty binary frame ends the audio (Deepgram's older close).
    let mut socket = listen(
        &server,
        "encoding=mulaw&sample_rate=8000&model=nova-2-phonecall",
        Some(("authorization", &token)),
    )
    .await;
    let mulaw = ffmpeg_mulaw_8k();
    let (head, tail) = mulaw.split_at(mulaw.len() / 2);
    for chunk in head.chunks(1600) {
        socket
            .send(Message::Binary(chunk.to_vec().into()))
            .await
            .unwrap();
    }
    let configure = r#"{"type":"Configure","features":{}}"#;
    socket.send(Message::Text(configure.into())).await.unwrap();
    for chunk in tail.chunks(1600) {
        socket
            .send(Message::Binary(chunk.to_vec().into()))
            .await
            .unwrap();
    }
    socket
        .send(Message::Binary(Vec::new().into()))
        .await
        .unwrap();
    let (messages, close) = until_close(&mut socket).await;
    assert_eq!(close, Some(1000));
    let error = messages
        .iter()
        .find(|m| m["type"] == "Error")
        .expect("an Error");
    assert_eq!(error["code"], "INVALID_REQUEST", "{error}");
    assert!(error["description"].as_str().unwrap().contains("Configure"));
    let text: Vec<&str> = messages
        .iter()
        .filter(|m| m["type"] == "Results" && m["is_final"] == true)
        .map(|m| {
            m["channel"]["alternatives"][0]["transcript"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert!(says_beckett(&text.join(" ")), "{text:?}");
    // Without `punctuate`: Deepgram's bare lowercase words.
    assert!(
        text.iter()
            .all(|t| !t.contains('.') && t.to_lowercase() == *t),
        "{text:?}"
    );
    assert_eq!(messages.last().unwrap()["type"], "Metadata");

    // A browser's way to send the key: the `token` subprotocol, which is answered.
    let url = format!(
        "{}/v1/listen?encoding=linear16&sample_rate=16000",
        server.base.replacen("http://", "ws://", 1)
    );
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("token, {ADMIN_KEY}").parse().unwrap(),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "token");
    let pcm = pcm_16k("beckett.wav");
    for chunk in pcm.chunks(32_000) {
        socket
            .send(Message::Binary(chunk.to_vec().into()))
            .await
            .unwrap();
    }
    let close_stream = r#"{"type":"CloseStream"}"#;
    socket
        .send(Message::Text(close_stream.into()))
        .await
        .unwrap();
    let (messages, close) = until_close(&mut socket).await;
    assert_eq!(close, Some(1000), "{messages:?}");
    assert!(messages.iter().any(|m| m["type"] == "Results"));

    // Refusals: an Error message, then the close code of the error table.
    let wrong = "Token sgk_not_a_key";
    for (query, auth, code, close) in [
        ("", None, "AUTH_TOKEN_MISSING", 4401),
        (
            "",
            Some(("authorization", wrong)),
            "AUTH_TOKEN_INVALID",
            4401,
        ),
        (
            "encoding=amr-nb&sample_rate=8000",
            Some(("authorization", token.as_str())),
            "AUDIO_FORMAT_UNSUPPORTED",
            4400,
        ),
        (
            "encoding=linear16",
            Some(("authorization", token.as_str())),
            "INVALID_REQUEST",
            4400,
        ),
        (
            "interim_results=perhaps",
            Some(("authorization", token.as_str())),
            "INVALID_REQUEST",
            4400,
        ),
    ] {
        let mut socket = listen(&server, query, auth).await;
        let (messages, got) = until_close(&mut socket).await;
        assert_eq!(got, Some(close), "{query}: {messages:?}");
        assert_eq!(messages.len(), 1, "{query}: {messages:?}");
        assert_eq!(messages[0]["type"], "Error", "{query}");
        assert_eq!(messages[0]["code"], code, "{query}: {messages:?}");
    }
    // Garbage as audio with no encoding: refused as undecodable, the server unchanged.
    let mut socket = listen(&server, "", Some(("authorization", &token))).await;
    socket
        .send(Message::Binary(vec![0x42; 4096].into()))
        .await
        .unwrap();
    let (messages, got) = until_close(&mut socket).await;
    assert_eq!(got, Some(4400), "{messages:?}");
    assert_eq!(messages.last().unwrap()["type"], "Error");
    let (status, _) = server.get("/health/ready", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_file_route_refuses_what_it_cannot_honour() {
    let server = Server::start().await;
    let wav = std::fs::read("models/cache/test-audio/beckett.wav").unwrap();
    let post = |query: &str, content_type: &str, body: Vec<u8>, auth: &str| {
        server
            .http
            .post(server.url(&format!("/v1/listen?{query}")))
            .header("authorization", auth.to_owned())
            .header("content-type", content_type.to_owned())
            .body(body)
            .send()
    };
    let token = format!("Token {ADMIN_KEY}");
    let json = "application/json";
    let url_body = br#"{"url":"http://169.254.169.254/latest"}"#.to_vec();
    for (query, content_type, body, status, code) in [
        ("", json, url_body, 400, "INVALID_REQUEST"),
        (
            "callback=http://example.com/",
            "audio/wav",
            wav.clone(),
            400,
            "INVALID_REQUEST",
        ),
        (
            "encoding=speex",
            "audio/wav",
            wav.clone(),
            415,
            "AUDIO_FORMAT_UNSUPPORTED",
        ),
        (
            "",
            "application/octet-stream",
            b"not audio at all".to_vec(),
            415,
            "AUDIO_FORMAT_UNSUPPORTED",
        ),
    ] {
        let response = post(query, content_type, body, &token).await.unwrap();
        let (got, body) = crate::support::read(response).await;
        assert_error(got, &body, status, code);
    }
    let response = post("", "audio/wav", wav.clone(), "Token sgk_wrong")
        .await
        .unwrap();
    let (got, body) = crate::support::read(response).await;
    assert_error(got, &body, 401, "AUTH_TOKEN_INVALID");
    // Raw 8 kHz μ-law named by its encoding, as Deepgram takes it.
    let response = post(
        "encoding=mulaw&sample_rate=8000",
        "application/octet-stream",
        ffmpeg_mulaw_8k(),
        &token,
    )
    .await
    .unwrap();
    let (got, body) = crate::support::read(response).await;
    assert_eq!(got, 200, "{body}");
    let transcript = body["results"]["channels"][0]["alternatives"][0]["transcript"]
        .as_str()
        .unwrap();
    assert!(says_beckett(transcript), "{body}");
    assert!(body["results"].get("utterances").is_none());
}
