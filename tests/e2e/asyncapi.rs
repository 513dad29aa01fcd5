//! The AsyncAPI document served at `/asyncapi.json` against the real protocols: every
//! frame a client sends here and every frame the server answers on `/stream/transcribe`
//! and `/stream/speak` (options, final deltas with words and speakers, usage,
//! barge-in, errors) must match the message schema of its `type` in the document, so the
//! document cannot drift from the server.

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::scaispeak::{Got, connect_speak, next, text};
use crate::stream::{Token, connect, pcm_16k, send_json, until_close};
use crate::support::{ADMIN_KEY, Server};

/// A small JSON Schema check, for what the document uses: `$ref`, `type`, `const`,
/// `enum`, `properties`, `required`, `additionalProperties: false`, `items`, `minimum`,
/// `maximum`. The problems found, with their paths.
fn check(document: &Value, schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>) {
    if let Some(target) = schema["$ref"].as_str() {
        let resolved = document
            .pointer(target.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("{target} does not resolve"));
        return check(document, resolved, value, path, problems);
    }
    let fits = match schema["type"].as_str() {
        None => true,
        Some("object") => value.is_object(),
        Some("string") => value.is_string(),
        Some("number") => value.is_number(),
        Some("integer") => value.is_u64() || value.is_i64(),
        Some("boolean") => value.is_boolean(),
        Some("array") => value.is_array(),
        Some(other) => panic!("type {other} not handled"),
    };
    if !fits {
        problems.push(format!("{path}: {value} is not {}", schema["type"]));
        return;
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        problems.push(format!("{path}: {value} is not {constant}"));
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        problems.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    if let (Some(minimum), Some(number)) = (schema["minimum"].as_f64(), value.as_f64())
        && number < minimum
    {
        problems.push(format!("{path}: {number} < {minimum}"));
    }
    if let (Some(maximum), Some(number)) = (schema["maximum"].as_f64(), value.as_f64())
        && number > maximum
    {
        problems.push(format!("{path}: {number} > {maximum}"));
    }
    if let Some(object) = value.as_object() {
        let properties = schema["properties"].as_object();
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap();
            if !object.contains_key(name) {
                problems.push(format!("{path}: `{name}` missing"));
            }
        }
        for (name, field) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(property) => check(
                    document,
                    property,
                    field,
                    &format!("{path}.{name}"),
                    problems,
                ),
                None if schema["additionalProperties"] == false => {
                    problems.push(format!("{path}: `{name}` is not in the document"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (index, item) in array.iter().enumerate() {
            check(document, items, item, &format!("{path}[{index}]"), problems);
        }
    }
}

/// The schema of the JSON message of `operation` whose `type` is `kind`.
fn message_schema<'a>(document: &'a Value, operation: &str, kind: &str) -> &'a Value {
    let messages = document["operations"][operation]["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no operation {operation}"));
    messages
        .iter()
        .map(|reference| {
            let channel_message = document
                .pointer(reference["$ref"].as_str().unwrap().trim_start_matches('#'))
                .unwrap();
            document
                .pointer(
                    channel_message["$ref"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches('#'),
                )
                .unwrap()
        })
        .find(|message| message["name"] == kind && message["contentType"] == "application/json")
        .map(|message| &message["payload"])
        .unwrap_or_else(|| panic!("{operation} has no `{kind}` message"))
}

/// Asserts that each of `frames` is a message of `operation`.
fn conforms(document: &Value, operation: &str, frames: &[Value]) {
    let mut problems = Vec::new();
    for frame in frames {
        let kind = frame["type"].as_str().expect("a frame has a type");
        let schema = message_schema(document, operation, kind);
        check(document, schema, frame, kind, &mut problems);
    }
    assert!(problems.is_empty(), "{operation}: {problems:#?}");
}

#[tokio::test]
async fn every_frame_of_both_streams_matches_the_asyncapi_document() {
    let server = Server::start().await;
    let response = server
        .http
        .get(server.url("/asyncapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["asyncapi"], "3.0.0");

    // Speech to text: options with words and speakers, a bad control frame (an error
    // that leaves the stream open), a flush, then close.
    let sent = vec![
        json!({"type": "open", "media_type": "audio/pcm;rate=16000", "language": "en",
            "diarize": true, "chunk_seconds": 1.0, "timestamps": "word",
            "backend_preference": "any", "speech_events": true}),
        json!({"type": "flush"}),
        json!({"type": "close"}),
    ];
    conforms(&document, "transcribeIn", &sent);
    let mut socket = connect(&server, Token::Header(ADMIN_KEY)).await;
    send_json(&mut socket, sent[0].clone()).await;
    let audio = pcm_16k("beckett.wav");
    let (head, tail) = audio.split_at((audio.len() / 2) & !1);
    for chunk in head.chunks(6400) {
        let chunk = Message::Binary(chunk.to_vec().into());
        socket.send(chunk).await.unwrap();
    }
    send_json(&mut socket, json!({"type": "bogus"})).await;
    send_json(&mut socket, sent[1].clone()).await;
    for chunk in tail.chunks(6400) {
        let chunk = Message::Binary(chunk.to_vec().into());
        socket.send(chunk).await.unwrap();
    }
    send_json(&mut socket, sent[2].clone()).await;
    let (frames, close) = until_close(&mut socket).await;
    assert_eq!(close, Some(1000));
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    for kind in ["ready", "speech_started", "delta", "error", "done"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    // Each utterance's start is announced once, before any of its deltas.
    let mut announced = std::collections::HashSet::new();
    for frame in &frames {
        match frame["type"].as_str() {
            Some("speech_started") => {
                assert!(
                    announced.insert(frame["utterance"].as_u64().unwrap()),
                    "{frame}"
                );
            }
            Some("delta") if !announced.is_empty() => {
                let utterance = frame["utterance"].as_u64().unwrap();
                assert!(
                    announced.contains(&utterance) || frame["is_final"] == true,
                    "a delta of utterance {utterance} before its speech_started"
                );
            }
            _ => {}
        }
    }
    let words = frames
        .iter()
        .find(|f| f["words"].is_array())
        .expect("a final with words");
    assert!(words["speaker_label"].is_string(), "{words}");
    conforms(&document, "transcribeOut", &frames);

    // Text to speech: PCM, a text, a barge-in, more text, close.
    let sent = vec![
        json!({"type": "open", "output": {"codec": "pcm_s16le", "sample_rate": 16000},
            "speed": 1.0, "pace": false, "backend_preference": "self_hosted"}),
        json!({"type": "text", "text": "It was the best of times, it was the worst of times. "}),
        json!({"type": "interrupt"}),
        json!({"type": "text", "text": "Again. ", "interrupt": true}),
        json!({"type": "flush"}),
        json!({"type": "close"}),
    ];
    conforms(&document, "speakIn", &sent);
    let mut socket = connect_speak(&server).await;
    let mut frames = Vec::new();
    let mut audio_frames = 0;
    text(&mut socket, sent[0].clone()).await;
    text(&mut socket, sent[1].clone()).await;
    // The barge-in once audio is coming.
    loop {
        match next(&mut socket).await {
            Got::Json(frame) => frames.push(frame),
            Got::Audio(_) => {
                audio_frames += 1;
                break;
            }
            Got::Closed(code) => panic!("closed early: {code:?}"),
        }
    }
    for frame in &sent[2..] {
        text(&mut socket, frame.clone()).await;
    }
    let close = loop {
        match next(&mut socket).await {
            Got::Json(frame) => frames.push(frame),
            Got::Audio(_) => audio_frames += 1,
            Got::Closed(code) => break code,
        }
    };
    assert_eq!(close, Some(1000));
    assert!(audio_frames > 1);
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    for kind in ["ready", "interrupted", "done"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    conforms(&document, "speakOut", &frames);

    // An error frame before a close (a bad `open`) is a message of the document too.
    let mut socket = connect_speak(&server).await;
    text(&mut socket, json!({"type": "open", "voice": "nobody"})).await;
    let Got::Json(error) = next(&mut socket).await else {
        panic!("no error frame")
    };
    assert!(matches!(next(&mut socket).await, Got::Closed(Some(4400))));
    conforms(&document, "speakOut", &[error]);

    // The checker itself catches drift: a field the document lacks, a wrong type.
    let mut problems = Vec::new();
    let delta = message_schema(&document, "transcribeOut", "delta");
    let drifted = json!({"type": "delta", "text": 1, "start": 0.0, "end": 1.0,
        "is_final": true, "utterance": 0, "confidence": 0.9});
    check(&document, delta, &drifted, "delta", &mut problems);
    assert_eq!(problems.len(), 2, "{problems:?}");
}
