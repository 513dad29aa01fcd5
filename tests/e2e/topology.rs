//! The scaled topology as processes (not containers): two edges that run no engines of
//! their own (`node_processes = 0`) and two `scaigrid node`s on loopback TCP with a
//! node token, on PostgreSQL, Redis and S3. The nodes announce themselves in the
//! registry, both edges route to both; `kill -9` of a node mid-stream costs the stream
//! nothing but latency; warm and evict fan out per node, and a node away at a deletion
//! evicts when it returns (the erasure reconciler).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use scaigrid::inference::proto::{self, node_client::NodeClient};
use scaigrid::inference::token::Bearer;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::scaispeak::{Got, connect_speak, next, text};
use crate::scaled::Deployment;
use crate::stream::{final_text, finish_pcm, says_beckett, two_cities_underway};
use crate::support::{ADMIN_KEY, Options, Server, binary};

const TOKEN: &str = "e2e-node-token-0123456789abcdef";
const TRANSCRIBE: &str = "/v1/modules/scaiecho/transcribe";
const SPEAKERS: &str = "/v1/modules/scaiecho/speakers";

/// A `scaigrid node` process on a loopback port, announced in the deployment's registry.
struct NodeProcess {
    id: String,
    port: u16,
    child: Child,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodeProcess {
    fn start(deployment: &Deployment, id: &str) -> NodeProcess {
        NodeProcess::start_with(deployment, id, &[])
    }

    /// [`NodeProcess::start`] with more `scaigrid node` flags.
    fn start_with(deployment: &Deployment, id: &str, flags: &[&str]) -> NodeProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap().keep();
        let config = dir.join("node.toml");
        let engines = format!("[engines]\nnode_token = \"{TOKEN}\"\n");
        std::fs::write(
            &config,
            deployment.toml_tls(&deployment.redis, "", &engines),
        )
        .unwrap();
        let child = Command::new(binary())
            .arg("node")
            .arg("--config")
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--node-id", id])
            .args(flags)
            .env("SCAIGRID_DATA_DIR", dir.join("data"))
            .env_remove("SCAIGRID_NODE_TOKEN")
            .stdout(Stdio::null())
            .stderr(match std::env::var_os("E2E_SERVER_LOGS") {
                Some(_) => Stdio::inherit(),
                None => Stdio::null(),
            })
            .spawn()
            .unwrap();
        NodeProcess {
            id: id.to_owned(),
            port,
            child,
        }
    }

    fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status();
    }

    /// What the node says of itself, asked directly with the token.
    async fn info(&self) -> Option<proto::InfoReply> {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", self.port))
                .unwrap()
                .connect()
                .await
                .ok()?;
        let bearer = Bearer::new(Some(&scaigrid::config::Secret::new(TOKEN))).unwrap();
        let mut client = NodeClient::with_interceptor(channel, bearer);
        let reply = client.info(proto::InfoRequest {}).await.ok()?;
        Some(reply.into_inner())
    }
}

/// An edge: speech goes to the registry's nodes; jobs run here too.
async fn edge(deployment: &Deployment) -> Server {
    edge_with_token(deployment, TOKEN).await
}

/// [`edge`] presenting `token` to the nodes.
async fn edge_with_token(deployment: &Deployment, token: &str) -> Server {
    let extra = format!(
        "[engines]\nnode_processes = 0\nnode_token = \"{token}\"\n[jobs]\nlease_seconds = 3\n\
         [webrtc]\nmax_sessions_per_tenant = 1\n[instances]\nnode_grace_seconds = 3\n"
    );
    Server::start_with(Options {
        database_url: Some(deployment.database.clone()),
        config_toml: Some(deployment.toml_tls(&deployment.redis, "", &extra)),
        ..Options::default()
    })
    .await
}

fn clip(file: &str) -> Vec<u8> {
    std::fs::read(format!("models/cache/test-audio/{file}")).unwrap()
}

async fn transcribe(server: &Server) -> (u16, Value) {
    server
        .post_wav_form(TRANSCRIBE, ADMIN_KEY, &[], clip("beckett.wav"))
        .await
}

/// Waits (at most two minutes) until the edge has found the nodes: the registry lists
/// them online, this edge has probed each (`reachable`), and it transcribes.
async fn sees(edge: &Server, nodes: &[&NodeProcess]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, listed) = edge.get("/v1/infra/nodes", Some(ADMIN_KEY)).await;
        assert_eq!(status, 200, "{listed}");
        let online = |id: &str| {
            listed["data"].as_array().unwrap().iter().any(|node| {
                node["node_id"] == id
                    && node["status"] == "online"
                    && node["shared"] == true
                    && node["reachable"] == true
            })
        };
        if nodes.iter().all(|node| online(&node.id)) && transcribe(edge).await.0 == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the edge did not find the nodes: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A WS stream of `two_cities.wav`; `kill` runs after the first final. The finals'
/// text, and the close code.
async fn two_cities_stream(edge: &Server, kill: Option<&NodeProcess>) -> (String, Option<u16>) {
    let (mut socket, mut frames, rest) = two_cities_underway(edge).await;
    if let Some(node) = kill {
        node.signal("KILL");
    }
    let (after, code) = finish_pcm(&mut socket, &rest).await;
    assert!(
        after.iter().all(|f| f["type"] != "error"),
        "an utterance was lost: {after:?}"
    );
    frames.extend(after);
    (final_text(&frames).to_lowercase(), code)
}

/// A short `/stream/speak` session: audio, then `done` and a normal close.
async fn speak_stream(edge: &Server) {
    let mut socket = connect_speak(edge).await;
    text(&mut socket, json!({"type": "open"})).await;
    let Got::Json(ready) = next(&mut socket).await else {
        panic!("no ready")
    };
    assert_eq!(ready["type"], "ready", "{ready}");
    let say = json!({"type": "text", "text": "Two edges, two nodes, one voice."});
    text(&mut socket, say).await;
    text(&mut socket, json!({"type": "close"})).await;
    let mut audio = 0;
    loop {
        match next(&mut socket).await {
            Got::Audio(bytes) => audio += bytes.len(),
            Got::Json(frame) if frame["type"] == "done" => break,
            Got::Json(frame) => assert_ne!(frame["type"], "error", "{frame}"),
            Got::Closed(code) => panic!("closed early: {code:?}"),
        }
    }
    assert!(audio > 1000, "no audio");
    assert!(matches!(next(&mut socket).await, Got::Closed(Some(1000))));
}

#[tokio::test]
async fn two_edges_and_two_nodes_serve_speech_and_a_node_death_costs_only_latency() {
    let Some(deployment) = Deployment::new().await else {
        return;
    };
    let n1 = NodeProcess::start(&deployment, &format!("{}-n1", deployment.prefix));
    let n2 = NodeProcess::start(&deployment, &format!("{}-n2", deployment.prefix));
    let (edge1, edge2) = (edge(&deployment).await, edge(&deployment).await);
    sees(&edge1, &[&n1, &n2]).await;
    sees(&edge2, &[&n1, &n2]).await;

    // Everything speech does, through either edge.
    for edge in [&edge1, &edge2] {
        let (status, body) = transcribe(edge).await;
        assert_eq!(status, 200, "{body}");
        assert!(says_beckett(body["text"].as_str().unwrap()), "{body}");
        let speak = json!({"text": "Served by a node on another process."});
        let (status, _) = edge
            .post("/v1/modules/scaispeak/speak", Some(ADMIN_KEY), speak)
            .await;
        assert_eq!(status, 200);
        speak_stream(edge).await;
    }

    // A tenant's WebRTC sessions are capped across the edges (1 here).
    let sessions = "/v1/modules/scaispeak/sessions";
    let (status, created) = edge1.post(sessions, Some(ADMIN_KEY), json!({})).await;
    assert_eq!(status, 201, "{created}");
    let (status, refused) = edge2.post(sessions, Some(ADMIN_KEY), json!({})).await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error"]["code"], "RATE_LIMITED", "{refused}");
    let session = format!("{sessions}/{}", created["id"].as_str().unwrap());
    let (status, _) = edge1
        .send(reqwest::Method::DELETE, &session, Some(ADMIN_KEY), None)
        .await;
    assert_eq!(status, 204);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = edge2.post(sessions, Some(ADMIN_KEY), json!({})).await;
        if status == 201 {
            break;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A speaker profile warms on every node, whichever edge is asked.
    let (status, speaker) = edge1
        .post_wav_form(
            SPEAKERS,
            ADMIN_KEY,
            &[("label", "Beckett")],
            clip("beckett.wav"),
        )
        .await;
    assert_eq!(status, 201, "{speaker}");
    let mut warm: Vec<&str> = speaker["warm_node_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    warm.sort();
    assert_eq!(warm, [n1.id.as_str(), n2.id.as_str()], "{speaker}");
    for node in [&n1, &n2] {
        assert_eq!(node.info().await.unwrap().warm_speakers, 1);
    }

    // An undisturbed stream, then the same one with a node killed mid-way: the socket
    // stays open, no utterance is lost, and the transcript is as good.
    let reference = include_str!("../../engines/tests/data/two_cities.txt");
    let (calm, code) = two_cities_stream(&edge2, None).await;
    assert_eq!(code, Some(1000));
    let (disturbed, code) = two_cities_stream(&edge2, Some(&n1)).await;
    assert_eq!(code, Some(1000));
    let (calm_wer, disturbed_wer) = (
        engines::wer::wer(reference, &calm),
        engines::wer::wer(reference, &disturbed),
    );
    println!("two cities WER undisturbed {calm_wer:.3}, node killed {disturbed_wer:.3}");
    assert!(
        disturbed_wer <= calm_wer + 0.02,
        "{disturbed_wer} vs {calm_wer}: {disturbed}"
    );

    // The survivor serves both edges; the dead node leaves the registry by itself.
    for edge in [&edge1, &edge2] {
        let (status, body) = transcribe(edge).await;
        assert_eq!(status, 200, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, listed) = edge1.get("/v1/infra/nodes", Some(ADMIN_KEY)).await;
        let ids: Vec<&str> = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["node_id"].as_str())
            .collect();
        if !ids.contains(&n1.id.as_str()) {
            assert!(ids.contains(&n2.id.as_str()), "{listed}");
            break;
        }
        assert!(Instant::now() < deadline, "the dead node is still listed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_node_away_at_a_deletion_evicts_the_profile_when_it_returns() {
    let Some(deployment) = Deployment::new().await else {
        return;
    };
    let n1 = NodeProcess::start(&deployment, &format!("{}-n1", deployment.prefix));
    let n2 = NodeProcess::start(&deployment, &format!("{}-n2", deployment.prefix));
    let edge = edge(&deployment).await;
    sees(&edge, &[&n1, &n2]).await;
    // An edge started beside running nodes serves speech from its first request.
    let late = self::edge(&deployment).await;
    let (status, body) = transcribe(&late).await;
    assert_eq!(status, 200, "{body}");
    drop(late);
    // An edge with the wrong token: the registry says the nodes are online, this edge
    // says it cannot reach them, and why; its speech gets no node.
    let stranger = edge_with_token(&deployment, "a-wrong-node-token-0123456789").await;
    let (_, listed) = stranger.get("/v1/infra/nodes", Some(ADMIN_KEY)).await;
    for node in listed["data"].as_array().unwrap() {
        assert_eq!(node["status"], "online", "{listed}");
        assert_eq!(node["reachable"], false, "{listed}");
        let why = node["unreachable_because"].as_str().unwrap_or_default();
        assert!(why.contains("Unauthenticated"), "{listed}");
    }
    assert_ne!(transcribe(&stranger).await.0, 200);
    drop(stranger);
    let (status, speaker) = edge
        .post_wav_form(
            SPEAKERS,
            ADMIN_KEY,
            &[("label", "Nagg")],
            clip("beckett.wav"),
        )
        .await;
    assert_eq!(status, 201, "{speaker}");
    assert_eq!(speaker["warm_node_ids"].as_array().unwrap().len(), 2);
    let id = speaker["id"].as_str().unwrap();

    // n1 stops answering (a partition: the process lives, its memory with it).
    n1.signal("STOP");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, deleted) = edge
        .send(
            reqwest::Method::DELETE,
            &format!("{SPEAKERS}/{id}"),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["evicted_node_ids"], json!([n2.id]), "{deleted}");
    assert!(deleted["error_summary"][&n1.id].is_string(), "{deleted}");
    assert_eq!(n2.info().await.unwrap().warm_speakers, 0);

    // n1 comes back: it still holds the profile until the reconciler evicts it.
    n1.signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let warm = n1.info().await.map(|info| info.warm_speakers);
        let (_, listed) = edge.get("/v1/infra/nodes", Some(ADMIN_KEY)).await;
        let owed = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node_id"] == n1.id.as_str())
            .map(|n| n["evictions_owed"].clone());
        if warm == Some(0) && owed == Some(json!(0)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n1 still holds the profile ({warm:?}, owed {owed:?})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn each_language_goes_to_a_node_carrying_its_model_loaded_by_an_admin() {
    let Some(deployment) = Deployment::new().await else {
        return;
    };
    // A node with every default engine in 820 MB (750 taken), and one that carries
    // speech to text only and has room to spare (a GPU node's part).
    let english = NodeProcess::start_with(
        &deployment,
        &format!("{}-en", deployment.prefix),
        &["--memory-limit-mb", "820"],
    );
    let roomy = NodeProcess::start_with(
        &deployment,
        &format!("{}-roomy", deployment.prefix),
        &["--models", "audio.stt.whisper-tiny-en"],
    );
    let edge = edge(&deployment).await;
    sees(&edge, &[&english, &roomy]).await;
    let spanish = crate::scaiecho::espeak_wav(
        "es",
        "Buenos días, me gustaría un café con leche. La biblioteca está cerrada los domingos.",
    );
    let in_spanish = || {
        edge.post_wav_form(
            TRANSCRIBE,
            ADMIN_KEY,
            &[("language", "es")],
            spanish.clone(),
        )
    };
    let (status, body) = in_spanish().await;
    assert_eq!(
        status, 400,
        "no node carries the multilingual model yet: {body}"
    );

    let base = "audio.stt.whisper-base";
    let load = |node: &str| {
        let path = format!("/v1/infra/nodes/{node}/models");
        let edge = &edge;
        async move {
            edge.post(&path, Some(ADMIN_KEY), json!({ "model": base }))
                .await
        }
    };
    let (status, refused) = load(&english.id).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "GPU_INCOMPATIBLE", "{refused}");
    assert_eq!(refused["error"]["needed_mb"], 700, "{refused}");
    assert!(
        refused["error"]["available_mb"].as_u64().unwrap() <= 70,
        "{refused}"
    );
    let (status, loaded) = load(&roomy.id).await;
    assert_eq!(status, 200, "{loaded}");
    let carried = roomy.info().await.unwrap().models_loaded;
    assert!(carried.iter().any(|m| m == base), "{carried:?}");

    // Round after round: ties between idle nodes take turns, so without per-model
    // routing every other Spanish request would land on the English-only node.
    for _ in 0..4 {
        let (status, body) = in_spanish().await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("biblioteca"),
            "{body}"
        );
        let (status, body) = transcribe(&edge).await;
        assert_eq!(status, 200, "{body}");
    }

    let path = format!("/v1/infra/nodes/{}/models/{base}", roomy.id);
    let (status, unloaded) = edge
        .send(reqwest::Method::DELETE, &path, Some(ADMIN_KEY), None)
        .await;
    assert_eq!(status, 200, "{unloaded}");
    let (status, body) = in_spanish().await;
    assert_eq!(status, 400, "the multilingual model is gone again: {body}");
    let (status, body) = transcribe(&edge).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn webrtc_sessions_run_through_either_edge_and_one_edge_forwards_to_the_other() {
    let Some(deployment) = Deployment::new().await else {
        return;
    };
    let node = NodeProcess::start(&deployment, &format!("{}-rtc", deployment.prefix));
    let (first, mut second) = (edge(&deployment).await, edge(&deployment).await);
    sees(&first, &[&node]).await;
    sees(&second, &[&node]).await;

    // A browser's microphone through each edge's own page: the node transcribes it.
    let dir = tempfile::tempdir().unwrap();
    let (microphone, speech_end_ms) = crate::webrtc::microphone_file(dir.path());
    let browser = crate::browser::Browser::start(&microphone).await;
    for edge in [&first, &second] {
        let heard = crate::webrtc::echo_from_the_page(&browser, edge, speech_end_ms).await;
        assert_eq!(heard["last"]["type"], "done", "{heard}");
        let text = crate::webrtc::finals_text(&heard["frames"]);
        assert!(says_beckett(&text), "through {}: {text}", edge.base);
        ended(edge, &format!("{ECHO}/{}", heard["id"].as_str().unwrap())).await;
    }

    // A session made on the first edge, answered, watched and ended through the second.
    let (status, session) = first.post(ECHO, Some(ADMIN_KEY), json!({})).await;
    assert_eq!(status, 201, "{session}");
    let at = format!("{ECHO}/{}", session["id"].as_str().unwrap());
    let (status, body) = second.get(&at, Some(ADMIN_KEY)).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("created")),
        "{body}"
    );
    let offer = json!({"type": "offer", "sdp": crate::webrtc::str0m_offer()});
    let (status, answer) = second
        .post(&format!("{at}/offer"), Some(ADMIN_KEY), offer)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["sdp"].as_str().unwrap().contains("a=candidate"),
        "{answer}"
    );
    let (_, body) = first.get(&at, Some(ADMIN_KEY)).await;
    assert_eq!(body["status"], "active", "the first edge holds it: {body}");
    // The owner checks the caller: a wrong key is refused, through either edge.
    let (status, body) = second.get(&at, Some("sgk_wrong")).await;
    assert_eq!(status, 401, "{body}");
    let mut control = crate::webrtc::control_socket(&second, &session, ADMIN_KEY).await;
    control
        .send(Message::Text(json!({"type": "close"}).to_string().into()))
        .await
        .unwrap();
    let (last, code, _) = crate::webrtc::refused(&mut control).await;
    assert_eq!((code, &last["type"]), (1000, &json!("done")), "{last}");
    ended(&second, &at).await;

    // An edge that dies takes its sessions with it: the other says they are lost.
    let (status, session) = second.post(ECHO, Some(ADMIN_KEY), json!({})).await;
    assert_eq!(status, 201, "{session}");
    let at = format!("{ECHO}/{}", session["id"].as_str().unwrap());
    let metrics = second.metrics().await;
    assert!(
        metrics.contains("scaigrid_webrtc_forwarded_total{kind=\"control\"}"),
        "no forwarding counted"
    );
    second.kill();
    let (status, body) = first.get(&at, Some(ADMIN_KEY)).await;
    assert_eq!((status, &body["status"]), (200, &json!("lost")), "{body}");
    let offer = json!({"type": "offer", "sdp": crate::webrtc::str0m_offer()});
    let (status, body) = first
        .post(&format!("{at}/offer"), Some(ADMIN_KEY), offer)
        .await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"]["code"], "SCAIECHO_WEBRTC_SESSION_STATE_LOST");
}

const ECHO: &str = "/v1/modules/scaiecho/sessions";

/// Waits (at most ten seconds) until the session at `at` says it ended.
async fn ended(edge: &Server, at: &str) {
    for _ in 0..100 {
        let (_, body) = edge.get(at, Some(ADMIN_KEY)).await;
        if body["status"] == "ended" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{at} did not end");
}

#[tokio::test]
async fn an_instance_whose_node_dies_fails_with_the_reason_and_starts_again_elsewhere() {
    let Some(deployment) = Deployment::new().await else {
        return;
    };
    // Two speech-to-text nodes with labels: the cheap one in eu, the dear one in us.
    let stt = "audio.stt.whisper-tiny-en";
    let cheap = NodeProcess::start_with(
        &deployment,
        &format!("{}-cheap", deployment.prefix),
        &["--models", stt, "--region", "eu", "--price-per-hour", "1"],
    );
    let dear = NodeProcess::start_with(
        &deployment,
        &format!("{}-dear", deployment.prefix),
        &["--models", stt, "--region", "us", "--price-per-hour", "3"],
    );
    let edge = edge(&deployment).await;
    sees(&edge, &[&cheap, &dear]).await;
    let (_, nodes) = edge.get("/v1/infra/nodes", Some(ADMIN_KEY)).await;
    let labels: Vec<(Value, Value)> = nodes["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["region"].clone(), n["price_per_hour"].clone()))
        .collect();
    assert!(labels.contains(&(json!("eu"), json!(1.0))), "{nodes}");
    assert!(labels.contains(&(json!("us"), json!(3.0))), "{nodes}");

    // Priced nodes: the platform tenant needs a balance.
    let (_, me) = edge.get("/v1/me", Some(ADMIN_KEY)).await;
    let top_up = json!({"tenant_id": me["tenant"]["id"], "amount": 100});
    let (status, topped) = edge
        .post("/v1/accounting/balance/top-up", Some(ADMIN_KEY), top_up)
        .await;
    assert_eq!(status, 200, "{topped}");

    // Nothing under 0.5 an hour. Unconstrained, the cheap node when both are ready (a
    // probe missed under load may leave only the dear one: the price order itself is
    // `instances::placement`'s unit test).
    let piper = "audio.tts.piper-joe";
    let launch = json!({"model": piper, "smart": {"max_price": 0.5}});
    let (status, refused) = edge.post("/v1/instances", Some(ADMIN_KEY), launch).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "SMART_NO_MATCH", "{refused}");
    assert_eq!(refused["error"]["constraint"], "max_price", "{refused}");
    let launch = json!({"model": piper});
    let (status, started) = edge.post("/v1/instances", Some(ADMIN_KEY), launch).await;
    assert_eq!(status, 202, "{started}");
    let (first, other) = match started["node_ids"][0].as_str() {
        Some(id) if id == cheap.id => (&cheap, &dear),
        _ => (&dear, &cheap),
    };
    assert_eq!(started["node_ids"], json!([first.id]), "{started}");
    let price = if first.id == cheap.id { 1.0 } else { 3.0 };
    assert_eq!(started["hourly_cost"], price, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let running = crate::instances::settled(&edge, ADMIN_KEY, &id).await;
    assert_eq!(running["state"], "running", "{running}");
    let speak = json!({"text": "Placed on a node."});
    let (status, body) = edge
        .post("/v1/modules/scaispeak/speak", Some(ADMIN_KEY), speak)
        .await;
    assert_eq!(status, 200, "{body}");

    // The node dies: the instance fails, says why, and starts again on the other.
    first.signal("KILL");
    let at = format!("/v1/instances/{id}");
    let mut failed = Value::Null;
    for _ in 0..300 {
        failed = edge.get(&at, Some(ADMIN_KEY)).await.1;
        if failed["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["failure_reason"], "NODE_LOST", "{failed}");
    assert!(
        failed["failure_detail"]
            .as_str()
            .unwrap()
            .contains(&first.id),
        "{failed}"
    );
    assert!(failed["remediation"].is_string(), "{failed}");
    // Started again: placed on the other node (given a few seconds should a probe of
    // it have been missed under load: the failed start says SMART_NO_MATCH meanwhile).
    let mut restarted = Value::Null;
    for _ in 0..50 {
        let (status, body) = edge
            .post(&format!("{at}/start"), Some(ADMIN_KEY), json!({}))
            .await;
        restarted = body;
        if status == 202 {
            break;
        }
        assert_eq!(restarted["error"]["code"], "SMART_NO_MATCH", "{restarted}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(restarted["node_ids"], json!([other.id]), "{restarted}");
    let running = crate::instances::settled(&edge, ADMIN_KEY, &id).await;
    assert_eq!(running["state"], "running", "{running}");
    let carried = other.info().await.unwrap().models_loaded;
    assert!(carried.iter().any(|m| m == piper), "{carried:?}");
    // Stopped: the model leaves the node it was loaded on.
    let (status, stopped) = edge
        .post(&format!("{at}/stop"), Some(ADMIN_KEY), json!({}))
        .await;
    assert_eq!(
        (status, &stopped["state"]),
        (200, &json!("stopped")),
        "{stopped}"
    );
    let carried = other.info().await.unwrap().models_loaded;
    assert!(!carried.iter().any(|m| m == piper), "{carried:?}");
}
