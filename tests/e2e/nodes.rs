//! Inference nodes as their own processes: `kill -9` of the node during a batch
//! transcription, a live stream, a speech stream and an async job. The server and its
//! other requests live on, the supervisor restarts the node, and readiness comes back
//! by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::gateway::{backend, chat_body, model};
use crate::scaiecho::post_raw;
use crate::scaispeak::{Got, connect_speak, next, text};
use crate::stream::{
    Token, connect, final_text, finish_pcm, next_frame, pcm_16k, send_json, two_cities_underway,
    until_close,
};
use crate::support::{ADMIN_KEY, Options, Server, read};

const TRANSCRIBE: &str = "/v1/modules/scaiecho/transcribe";

/// The one node of the embedded default.
async fn node(server: &Server) -> Value {
    let (status, nodes) = server.get("/v1/infra/nodes", Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{nodes}");
    assert_eq!(nodes["data"].as_array().unwrap().len(), 1, "{nodes}");
    nodes["data"][0].clone()
}

fn kill_node(pid: u64) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {pid}");
}

/// Waits (at most a minute) until the node is back online under a new pid, and checks
/// that readiness and the metrics say so.
async fn restarted(server: &Server, old_pid: u64, restarts: u64) {
    for _ in 0..600 {
        let node = node(server).await;
        if node["status"] == "online" && node["pid"].as_u64() != Some(old_pid) {
            assert!(node["restarts"].as_u64().unwrap() >= restarts, "{node}");
            let (status, ready) = server.get("/health/ready", None).await;
            assert_eq!(status, 200, "{ready}");
            let metrics = server.metrics().await;
            assert!(
                metrics.contains("scaigrid_node_restarts_total"),
                "no restart counter in /metrics"
            );
            assert!(
                metrics.contains("scaigrid_node_queue_depth"),
                "no queue depth"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the node did not come back: {}", node(server).await);
}

/// `/v1/me` (and, given a model, a chat completion) over and over until stopped:
/// every answer must be 200.
fn keep_asking(
    server: &Server,
    chat_model: Option<&str>,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<(usize, usize)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (http, url, flag) = (server.http.clone(), server.url("/v1/me"), stop.clone());
    let chat = chat_model.map(|slug| (server.url("/v1/chat/completions"), chat_body(slug)));
    let asked = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(async move {
        let mut failed = 0;
        while !flag.load(Ordering::Relaxed) {
            let response = http.get(&url).bearer_auth(ADMIN_KEY).send().await;
            if !matches!(&response, Ok(r) if r.status() == 200) {
                failed += 1;
            }
            if let Some((url, body)) = &chat {
                let response = http
                    .post(url)
                    .bearer_auth(ADMIN_KEY)
                    .json(body)
                    .send()
                    .await;
                if !matches!(&response, Ok(r) if r.status() == 200) {
                    failed += 1;
                }
                asked.fetch_add(1, Ordering::Relaxed);
            }
            asked.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (asked.load(Ordering::Relaxed), failed)
    });
    (stop, task)
}

#[tokio::test]
async fn a_batch_transcription_survives_its_node_being_killed() {
    let server = Server::start().await;
    let before = node(&server).await;
    assert_eq!(before["restarts"], 0, "{before}");
    let pid = before["pid"].as_u64().unwrap();
    // Chat completions through the gateway go on beside the speech paths.
    let upstream = crate::upstream::start("chat", "chat-key").await;
    let id = backend(&server, &upstream, "chat-key").await;
    model(
        &server,
        "nodes/chat",
        json!([{"backend_id": id}]),
        json!({}),
    )
    .await;
    let wav = std::fs::read("models/cache/test-audio/two_cities.wav").unwrap();
    let (stop, control) = keep_asking(&server, Some("nodes/chat"));
    let request = post_raw(&server, TRANSCRIBE, ADMIN_KEY, "audio/wav", wav);
    let killer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        kill_node(pid);
    };
    let (response, ()) = tokio::join!(request, killer);
    let (status, body) = read(response).await;
    assert_eq!(status, 200, "{body}");
    let text = body["text"].as_str().unwrap().to_lowercase();
    assert!(text.contains("best of times"), "{text}");
    restarted(&server, pid, 1).await;
    stop.store(true, Ordering::Relaxed);
    let (asked, failed) = control.await.unwrap();
    assert!(asked > 0);
    assert_eq!(
        failed, 0,
        "{failed} of {asked} /v1/me and chat calls failed"
    );
    // The restarted node serves as before.
    let wav = std::fs::read("models/cache/test-audio/beckett.wav").unwrap();
    let (status, body) =
        read(post_raw(&server, TRANSCRIBE, ADMIN_KEY, "audio/wav", wav).await).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_live_stream_keeps_its_socket_when_its_node_dies() {
    let server = Server::start().await;
    let pid = node(&server).await["pid"].as_u64().unwrap();
    // A final is out: the stream is underway. Then its node dies.
    let (mut socket, _, rest) = two_cities_underway(&server).await;
    kill_node(pid);
    let (after, code) = finish_pcm(&mut socket, &rest).await;
    assert_eq!(code, Some(1000), "{after:?}");
    assert_eq!(after.last().unwrap()["type"], "done", "{after:?}");
    let later = final_text(&after).to_lowercase();
    assert!(
        later.contains("season") || later.contains("despair"),
        "{later:?}"
    );
    restarted(&server, pid, 1).await;
}

#[tokio::test]
async fn a_speech_stream_whose_node_dies_loses_one_sentence_at_most_and_goes_on() {
    let server = Server::start().await;
    let pid = node(&server).await["pid"].as_u64().unwrap();
    let mut socket = connect_speak(&server).await;
    text(&mut socket, json!({"type": "open"})).await;
    let Got::Json(ready) = next(&mut socket).await else {
        panic!("no ready")
    };
    assert_eq!(ready["type"], "ready", "{ready}");
    let long = "The node that speaks this may die at any moment. ".repeat(8);
    text(&mut socket, json!({"type": "text", "text": long})).await;
    text(&mut socket, json!({"type": "close"})).await;
    let (mut killed, mut errors, mut audio_after_error) = (false, 0, 0);
    let ending = loop {
        match next(&mut socket).await {
            Got::Audio(_) if !killed => {
                kill_node(pid);
                killed = true;
            }
            Got::Audio(_) => audio_after_error += usize::from(errors > 0),
            Got::Json(frame) if frame["type"] == "error" => {
                // The sentence cut mid-way is lost, and said so; the socket stays.
                assert_eq!(frame["code"], "SCAISPEAK_BACKEND_UNAVAILABLE", "{frame}");
                assert!(frame["node_id"].is_string(), "{frame}");
                assert_eq!(frame["resumes"], "next_sentence", "{frame}");
                println!("sentence lost: {frame}");
                errors += 1;
            }
            Got::Json(frame) if frame["type"] == "done" => {
                let Got::Closed(code) = next(&mut socket).await else {
                    panic!("no close after done")
                };
                break code;
            }
            Got::Json(_) => {}
            Got::Closed(code) => break code,
        }
    };
    assert!(killed, "no audio came before the end");
    // A death between sentences costs only latency; one mid-sentence costs that
    // sentence. Either way the later sentences are spoken and the stream ends normally.
    assert!(errors <= 1, "{errors} sentences lost");
    if errors == 1 {
        assert!(
            audio_after_error > 0,
            "nothing was spoken after the lost sentence"
        );
    }
    assert_eq!(ending, Some(1000));
    restarted(&server, pid, 1).await;
    let (status, _) = server
        .post(
            "/v1/modules/scaispeak/speak",
            Some(ADMIN_KEY),
            json!({"text": "Back again."}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_async_job_whose_node_dies_runs_again_and_succeeds() {
    let server = Server::start().await;
    let pid = node(&server).await["pid"].as_u64().unwrap();
    let wav = std::fs::read("models/cache/test-audio/two_cities.wav").unwrap();
    let path = format!("{TRANSCRIBE}?async=true");
    let (status, job) = read(post_raw(&server, &path, ADMIN_KEY, "audio/wav", wav).await).await;
    assert_eq!(status, 202, "{job}");
    let job_path = format!("/v1/modules/scaiecho/jobs/{}", job["id"].as_str().unwrap());
    let mut killed = false;
    for _ in 0..1200 {
        let (status, job) = server.get(&job_path, Some(ADMIN_KEY)).await;
        assert_eq!(status, 200, "{job}");
        if job["status"] == "processing" && !killed {
            kill_node(pid);
            killed = true;
        }
        if job["status"] == "succeeded" || job["status"] == "failed" {
            assert_eq!(job["status"], "succeeded", "{job}");
            let text = job["result"]["text"].as_str().unwrap().to_lowercase();
            assert!(text.contains("best of times"), "{text}");
            restarted(&server, pid, 1).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the job did not end");
}

/// The marker that makes a debug build's node abort (see `inference::service`).
const POISON: &str = "zqx";

fn poisoned_server() -> Options {
    Options {
        env: vec![("SCAIGRID_TEST_NODE_ABORT_ON".into(), POISON.into())],
        ..Options::default()
    }
}

#[tokio::test]
async fn a_text_that_kills_the_node_fails_alone_and_its_job_fails_after_three_crashes() {
    let server = Server::start_with(poisoned_server()).await;
    let (stop, control) = keep_asking(&server, None);
    // Killed twice (the call and its one retry): 503 naming the node.
    let speak = "/v1/modules/scaispeak/speak";
    let poison = json!({"text": format!("Say {POISON} now.")});
    let (status, body) = server.post(speak, Some(ADMIN_KEY), poison).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE", "{body}");
    assert_eq!(
        body["error"]["node_id"],
        node(&server).await["node_id"],
        "{body}"
    );
    // The rest of the server never noticed; speech works again once the node is back.
    let (status, body) = server
        .post(speak, Some(ADMIN_KEY), json!({"text": "Hello again."}))
        .await;
    assert_eq!(status, 200, "{body}");
    stop.store(true, Ordering::Relaxed);
    let (asked, failed) = control.await.unwrap();
    assert_eq!(failed, 0, "{failed} of {asked} /v1/me calls failed");
    // As a job it kills its node on every run: the third crash fails it.
    let job = json!({"text": format!("Again {POISON} here."), "async": true});
    let (status, job) = server.post(speak, Some(ADMIN_KEY), job).await;
    assert_eq!(status, 202, "{job}");
    let path = format!("/v1/modules/scaispeak/jobs/{}", job["id"].as_str().unwrap());
    for _ in 0..1800 {
        let (_, view) = server.get(&path, Some(ADMIN_KEY)).await;
        if view["status"] == "failed" || view["status"] == "succeeded" {
            assert_eq!(view["status"], "failed", "{view}");
            assert_eq!(view["status_reason"], "worker crashed", "{view}");
            // 2 deaths for the request, 3 for the job; the last restart may still be
            // in its backoff.
            for _ in 0..600 {
                let node = node(&server).await;
                if node["restarts"].as_u64().unwrap() >= 5 && node["status"] == "online" {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!(
                "the node was not restarted five times: {}",
                node(&server).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the poison job did not end");
}

#[tokio::test]
async fn a_stream_utterance_that_kills_the_node_twice_is_dropped_and_the_stream_goes_on() {
    let server = Server::start_with(poisoned_server()).await;
    let audio = pcm_16k("beckett.wav");
    let mut socket = connect(&server, Token::Header(ADMIN_KEY)).await;
    // No interims: the first transcription is the flushed final.
    send_json(
        &mut socket,
        json!({"type": "open", "media_type": "audio/pcm;rate=16000", "language": POISON,
            "chunk_seconds": 10.0}),
    )
    .await;
    assert_eq!(next_frame(&mut socket).await["type"], "ready");
    let three_seconds = &audio[..16_000 * 2 * 3];
    for chunk in three_seconds.chunks(3200) {
        socket
            .send(Message::Binary(chunk.to_vec().into()))
            .await
            .unwrap();
    }
    send_json(&mut socket, json!({"type": "flush"})).await;
    let error = next_frame(&mut socket).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "SERVICE_UNAVAILABLE", "{error}");
    assert!(error["node_id"].is_string(), "{error}");
    // The socket is still open and the session answers.
    send_json(&mut socket, json!({"type": "close"})).await;
    let (frames, code) = until_close(&mut socket).await;
    assert_eq!(code, Some(1000), "{frames:?}");
    assert_eq!(frames.last().unwrap()["type"], "done", "{frames:?}");
}

#[tokio::test]
async fn with_two_nodes_a_killed_one_costs_nothing_and_both_are_listed() {
    let server = Server::start_with(Options {
        config_toml: Some("[engines]\nnode_processes = 2\nnode_id = \"pair\"\n".into()),
        ..Options::default()
    })
    .await;
    let (status, nodes) = server.get("/v1/infra/nodes", Some(ADMIN_KEY)).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = nodes["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["pair-0", "pair-1"], "{nodes}");
    let victim = nodes["data"][0]["pid"].as_u64().unwrap();
    let wav = std::fs::read("models/cache/test-audio/two_cities.wav").unwrap();
    let request = post_raw(&server, TRANSCRIBE, ADMIN_KEY, "audio/wav", wav.clone());
    let second = post_raw(&server, TRANSCRIBE, ADMIN_KEY, "audio/wav", wav);
    let killer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        kill_node(victim);
    };
    let (first, second, ()) = tokio::join!(request, second, killer);
    for response in [first, second] {
        let (status, body) = read(response).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("best of times")
        );
    }
    for _ in 0..600 {
        let (_, nodes) = server.get("/v1/infra/nodes", Some(ADMIN_KEY)).await;
        let first = &nodes["data"][0];
        if first["status"] == "online" && first["pid"].as_u64() != Some(victim) {
            assert_eq!(first["restarts"], 1, "{first}");
            assert_eq!(nodes["data"][1]["restarts"], 0, "{nodes}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the killed node did not come back");
}

/// Loads (`POST`) or unloads (`DELETE`) a model on a node through the admin API.
async fn change_model(
    server: &Server,
    token: &str,
    node: &str,
    model: &str,
    load: bool,
) -> (u16, Value) {
    match load {
        true => {
            let path = format!("/v1/infra/nodes/{node}/models");
            server
                .post(&path, Some(token), json!({ "model": model }))
                .await
        }
        false => {
            let path = format!("/v1/infra/nodes/{node}/models/{model}");
            server
                .send(reqwest::Method::DELETE, &path, Some(token), None)
                .await
        }
    }
}

#[tokio::test]
async fn an_admin_loads_and_unloads_models_on_a_node_within_its_memory() {
    // Speech to text only at start, and 600 MB for models: 316 taken, 284 free.
    let server = Server::start_with(Options {
        config_toml: Some(
            "[engines]\nnode_id = \"slots\"\nmemory_limit_mb = 600\n\
             models = [\"audio.stt.whisper-tiny-en\"]\n"
                .into(),
        ),
        ..Options::default()
    })
    .await;
    let listed = node(&server).await;
    let id = listed["node_id"].as_str().unwrap().to_owned();
    assert_eq!(
        listed["models_loaded"],
        json!(["audio.vad.silero", "audio.stt.whisper-tiny-en"]),
        "{listed}"
    );
    assert_eq!(listed["memory_limit_mb"], 600, "{listed}");
    let speak = |text: &'static str| {
        let server = &server;
        async move {
            let body = json!({ "text": text });
            server
                .post("/v1/modules/scaispeak/speak", Some(ADMIN_KEY), body)
                .await
        }
    };
    let (status, body) = speak("Nothing speaks yet.").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "SCAISPEAK_BACKEND_UNAVAILABLE");

    // Loaded: routing sees it at once, and the node speaks.
    let (status, loaded) = change_model(&server, ADMIN_KEY, &id, "audio.tts.piper-joe", true).await;
    assert_eq!(status, 200, "{loaded}");
    assert!(
        loaded["models_loaded"]
            .as_array()
            .unwrap()
            .contains(&json!("audio.tts.piper-joe")),
        "{loaded}"
    );
    assert_eq!(loaded["memory_mb"], 566, "{loaded}");
    assert_eq!(loaded["status"], "online", "{loaded}");
    let (status, body) = speak("Now it speaks.").await;
    assert_eq!(status, 200, "{body}");

    // 34 MB left: the speaker embedder (64 MB) does not fit, and says so.
    let (status, refused) =
        change_model(&server, ADMIN_KEY, &id, "audio.analyze.pyannote", true).await;
    assert_eq!(status, 409, "{refused}");
    let error = &refused["error"];
    assert_eq!(error["code"], "GPU_INCOMPATIBLE", "{refused}");
    assert_eq!(error["needed_mb"], 64, "{refused}");
    assert!(error["available_mb"].as_u64().unwrap() <= 34, "{refused}");
    assert_eq!(error["model"], "audio.analyze.pyannote", "{refused}");

    // The detector under speech to text stays; unknown engines and nodes are 404.
    let (status, body) = change_model(&server, ADMIN_KEY, &id, "audio.vad.silero", false).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "CONFLICT", "{body}");
    let (status, body) =
        change_model(&server, ADMIN_KEY, &id, "audio.stt.whisper-huge", true).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "MODEL_NOT_FOUND", "{body}");
    let (status, body) =
        change_model(&server, ADMIN_KEY, "elsewhere", "audio.tts.piper-joe", true).await;
    assert_eq!(status, 404, "{body}");
    // Platform admins only; a tenant admin is refused before anything happens.
    let tenant = server.tenant("slots-tenant").await;
    for key in [&tenant.admin_key, &tenant.member_key] {
        let (status, body) = change_model(&server, key, &id, "audio.tts.piper-joe", false).await;
        assert_eq!(status, 403, "{body}");
    }
    let (status, body) = server
        .post(
            &format!("/v1/infra/nodes/{id}/models"),
            Some(ADMIN_KEY),
            json!({ "model": "audio.tts.piper-joe", "replicas": 3 }),
        )
        .await;
    assert!(status == 400 || status == 422, "{status} {body}");

    // Unloaded: speech has no backend again, transcription never stopped, and the
    // embedder fits now.
    let (status, unloaded) =
        change_model(&server, ADMIN_KEY, &id, "audio.tts.piper-joe", false).await;
    assert_eq!(status, 200, "{unloaded}");
    assert_eq!(unloaded["memory_mb"], 316, "{unloaded}");
    let (status, body) = speak("Silent again.").await;
    assert_eq!(status, 502, "{body}");
    let (status, body) = change_model(&server, ADMIN_KEY, &id, "audio.tts.piper-joe", false).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) =
        change_model(&server, ADMIN_KEY, &id, "audio.analyze.pyannote", true).await;
    assert_eq!(status, 200, "{body}");
    let wav = std::fs::read("models/cache/test-audio/beckett.wav").unwrap();
    let (status, body) =
        read(post_raw(&server, TRANSCRIBE, ADMIN_KEY, "audio/wav", wav).await).await;
    assert_eq!(status, 200, "{body}");
    let listed = node(&server).await;
    assert_eq!(
        listed["models_loaded"],
        json!([
            "audio.vad.silero",
            "audio.stt.whisper-tiny-en",
            "audio.analyze.pyannote"
        ]),
        "{listed}"
    );
}
