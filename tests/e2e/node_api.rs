//! `scaigrid node` on its own, over TCP, as another machine's edge would reach it: the
//! gRPC health service says SERVING, `Info` names what it carries, and bad input (ragged
//! or non-finite PCM, wrong options, oversized messages, floods) gets its status while
//! the node lives on and keeps answering.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use scaigrid::inference::proto::node_client::NodeClient;
use scaigrid::inference::{proto, wire};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::binary;

struct Node {
    child: Child,
    channel: Channel,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node on a free loopback port, taking requests of at most `max_message` bytes and
/// queueing at most `queue` recordings; waits until it answers.
async fn start(max_message: usize, queue: usize) -> Node {
    start_with(max_message, queue, None).await
}

/// [`start`], with a node token (`SCAIGRID_NODE_TOKEN`).
async fn start_with(max_message: usize, queue: usize, token: Option<&str>) -> Node {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    #[expect(clippy::zombie_processes, reason = "reaped in `Node`'s drop")]
    let child = Command::new(binary())
        .args(["node", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--node-id",
            "solo",
            "--max-message-bytes",
            &max_message.to_string(),
        ])
        .args(["--stt-queue", &queue.to_string()])
        .env("SCAIGRID_DATA_DIR", tempfile::tempdir().unwrap().keep())
        .env_remove("SCAIGRID_NODE_TOKEN")
        .envs(token.map(|token| ("SCAIGRID_NODE_TOKEN", token)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    for _ in 0..600 {
        if let Ok(channel) = endpoint.connect().await {
            return Node { child, channel };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the node did not start");
}

fn client(node: &Node) -> NodeClient<Channel> {
    NodeClient::new(node.channel.clone()).max_encoding_message_size(usize::MAX)
}

fn beckett() -> Vec<f32> {
    let bytes = std::fs::read("models/cache/test-audio/beckett.wav").unwrap();
    let audio = media::decode(&bytes, &media::DecodeOptions::default()).unwrap();
    media::resample::to_mono(&audio, 16_000).unwrap()
}

fn transcribe(pcm: bytes::Bytes) -> proto::TranscribeRequest {
    proto::TranscribeRequest {
        pcm,
        language: "en".into(),
        timestamps: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_standalone_node_is_healthy_and_refuses_bad_input_without_falling_over() {
    let node = start(2 * 1024 * 1024, 2).await;
    let health = HealthClient::new(node.channel.clone())
        .check(HealthCheckRequest {
            service: "scaigrid.node.v1.Node".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);
    let mut client = client(&node);
    let info = client
        .info(proto::InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "solo");
    assert!(
        info.models_loaded
            .iter()
            .any(|m| m.starts_with("audio.stt.")),
        "{info:?}"
    );
    assert_eq!(info.pid, node.child.id());

    // Bad input: each its status and the engine's kind, never a dead node.
    let ragged = transcribe(bytes::Bytes::from_static(&[0, 0, 0]));
    let nan = transcribe(wire::pcm(&[0.0, f32::NAN]));
    let mut beams = transcribe(wire::pcm(&[0.0; 1600]));
    beams.beam_size = 1000;
    let mut language = transcribe(wire::pcm(&[0.0; 1600]));
    language.language = "en\n; rm".into();
    for request in [ragged, nan, beams, language] {
        let status = client.transcribe(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(!wire::node_lost(&status), "{status:?}");
    }
    for (text, speed) in [("Hello.".to_owned(), 0.0), ("x".repeat(70_000), 1.0)] {
        let request = proto::SynthesizeRequest {
            text,
            speed,
            ..Default::default()
        };
        let status = client.synthesize(request).await.err().unwrap();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    let warm = proto::WarmRequest {
        kind: "everything".into(),
        id: "x".into(),
        ..Default::default()
    };
    assert_eq!(
        client.warm(warm).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // Over the node's message limit: refused before any work.
    let huge = transcribe(wire::pcm(&vec![0.0; 1024 * 1024]));
    let status = client.transcribe(huge).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{status:?}"
    );

    // A flood: more at once than the queue holds; the overflow is `busy`, the rest work.
    let audio = wire::pcm(&beckett());
    let calls = (0..12).map(|_| {
        let mut client = client.clone();
        let request = transcribe(audio.clone());
        async move { client.transcribe(request).await }
    });
    let results = futures_util::future::join_all(calls).await;
    let done = results.iter().filter(|r| r.is_ok()).count();
    let busy = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
        .count();
    assert!(
        done >= 1 && busy >= 1 && done + busy == 12,
        "{done} done, {busy} busy"
    );
    let heard = results
        .into_iter()
        .find_map(Result::ok)
        .unwrap()
        .into_inner();
    assert!(heard.text.to_lowercase().contains("fail"), "{heard:?}");

    // Still up, and the same process.
    let info = client
        .info(proto::InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.pid, node.child.id());
    assert_eq!(info.in_flight, 0);
}

#[tokio::test]
async fn a_node_beyond_loopback_needs_a_token_and_refuses_calls_without_it() {
    // Listening on every interface without a token: it does not start.
    let output = tokio::process::Command::new(binary())
        .args(["node", "--listen", "0.0.0.0:0", "--node-id", "open"])
        .env("SCAIGRID_DATA_DIR", tempfile::tempdir().unwrap().keep())
        .env_remove("SCAIGRID_NODE_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("node_token"), "{stderr}");
    // A short token is refused too.
    let output = tokio::process::Command::new(binary())
        .args(["node", "--listen", "127.0.0.1:0"])
        .env("SCAIGRID_DATA_DIR", tempfile::tempdir().unwrap().keep())
        .env("SCAIGRID_NODE_TOKEN", "short")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least 16"));

    // With a token, every call must carry it, the health check included.
    let token = "node-api-token-0123456789abcdef";
    let node = start_with(2 * 1024 * 1024, 2, Some(token)).await;
    let check = || HealthCheckRequest {
        service: "scaigrid.node.v1.Node".into(),
    };
    let refused = HealthClient::new(node.channel.clone())
        .check(check())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let wrong = scaigrid::config::Secret::new("a-wrong-token-of-enough-length!!");
    let bearer = |secret: &scaigrid::config::Secret| {
        scaigrid::inference::token::Bearer::new(Some(secret)).unwrap()
    };
    let mut client = NodeClient::with_interceptor(node.channel.clone(), bearer(&wrong));
    let refused = client.info(proto::InfoRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let right = scaigrid::config::Secret::new(token);
    let mut health = HealthClient::with_interceptor(node.channel.clone(), bearer(&right));
    let serving = loop {
        let status = health.check(check()).await.unwrap().into_inner().status;
        if status == ServingStatus::Serving as i32 {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(serving, ServingStatus::Serving as i32);
    let mut client = NodeClient::with_interceptor(node.channel.clone(), bearer(&right));
    let info = client
        .info(proto::InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "solo");
}
