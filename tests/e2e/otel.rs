//! OpenTelemetry end to end: the traces of a chat call, a transcription (its node's
//! spans included) and a queued job with its webhook reach an OTLP collector the test
//! runs (HTTP/protobuf, and gRPC), in the caller's trace; the `traceparent` reaches the
//! chat upstream and the webhook receiver; without an exporter an incoming
//! `traceparent` is passed on as it came.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use serde_json::{Value, json};

use crate::gateway::{backend, chat_body, model};
use crate::support::{ADMIN_KEY, Options, Server};
use crate::upstream;
use crate::webhooks::{deliveries_when, receiver, subscribe};

/// One span as the collector got it, with its process's `scaigrid.role`.
#[derive(Debug, Clone)]
struct Got {
    role: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: Vec<(String, String)>,
}

impl Got {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Got>>>,
    /// `content-type` of the HTTP exports.
    content_types: Arc<Mutex<Vec<String>>>,
}

fn text(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Any::StringValue(s)) => s.clone(),
                Some(Any::IntValue(i)) => i.to_string(),
                Some(Any::DoubleValue(d)) => d.to_string(),
                Some(Any::BoolValue(b)) => b.to_string(),
                _ => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

impl Collector {
    fn take(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.resource_spans {
            let attributes = text(&resource.resource.map(|r| r.attributes).unwrap_or_default());
            let role = attributes
                .iter()
                .find(|(k, _)| k == "scaigrid.role")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(Got {
                        role: role.clone(),
                        name: span.name,
                        trace_id: hex::encode(span.trace_id),
                        span_id: hex::encode(span.span_id),
                        parent: hex::encode(span.parent_span_id),
                        attributes: text(&span.attributes),
                    });
                }
            }
        }
    }

    /// The spans of `trace_id` once every name in `names` is among them.
    async fn trace(&self, trace_id: &str, names: &[&str]) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans: Vec<Got> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect();
            if names.iter().all(|n| spans.iter().any(|s| s.name == *n)) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "trace {trace_id} lacks some of {names:?}: {:?}",
                spans.iter().map(|s| (&s.role, &s.name)).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A collector on OTLP/HTTP (`POST /v1/traces`, protobuf); its base URL.
async fn http_collector(collector: Collector) -> String {
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let collector = collector.clone();
                async move {
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    collector.content_types.lock().unwrap().push(content_type);
                    collector.take(ExportTraceServiceRequest::decode(body).unwrap());
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A collector on OTLP/gRPC; its URL.
async fn grpc_collector(collector: Collector) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector))
            .serve_with_incoming(incoming),
    );
    format!("http://{address}")
}

/// A fresh caller context: (trace id, parent span id, the `traceparent`).
fn caller() -> (String, String, String) {
    let trace = uuid::Uuid::now_v7().simple().to_string();
    let parent = uuid::Uuid::now_v7().simple().to_string()[16..].to_owned();
    let header = format!("00-{trace}-{parent}-01");
    (trace, parent, header)
}

/// The parts of a `traceparent`: (trace id, parent id).
fn parts(traceparent: &str) -> (String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    (fields[1].to_owned(), fields[2].to_owned())
}

fn named<'a>(spans: &'a [Got], name: &str) -> &'a Got {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no {name} span"))
}

/// Whether `span` descends from the span `ancestor` within `spans`.
fn descends(spans: &[Got], span: &Got, ancestor: &Got) -> bool {
    let mut at = span;
    for _ in 0..spans.len() {
        if at.parent == ancestor.span_id {
            return true;
        }
        match spans.iter().find(|s| s.span_id == at.parent) {
            Some(parent) => at = parent,
            None => return false,
        }
    }
    false
}

async fn chat_with(server: &Server, traceparent: &str) -> (String, Value) {
    let response = server
        .http
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(ADMIN_KEY)
        .header("traceparent", traceparent)
        .header("tracestate", "caller=1")
        .json(&chat_body("otel/chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    (request_id, response.json().await.unwrap())
}

async fn chat_model(server: &Server) -> upstream::Upstream {
    let up = upstream::start("otel-up", "otel-up-key").await;
    let id = backend(server, &up, "otel-up-key").await;
    model(server, "otel/chat", json!([{"backend_id": id}]), json!({})).await;
    up
}

fn exporting(endpoint: &str, protocol: &str) -> Vec<(String, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.into()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), protocol.into()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
    ]
}

#[tokio::test]
async fn traces_of_a_chat_call_a_transcription_and_a_job_reach_the_collector() {
    let collector = Collector::default();
    let endpoint = http_collector(collector.clone()).await;
    let server = Server::start_with(Options {
        env: exporting(&endpoint, "http/protobuf"),
        config_toml: Some(
            "[webhooks]\nallow_private_targets = true\n[gateway]\nhealth_interval_seconds = 3600\n"
                .into(),
        ),
        ..Options::default()
    })
    .await;
    let up = chat_model(&server).await;

    // A chat call: request ─ auth, route, upstream; the upstream gets the context of
    // the `upstream` span, in the caller's trace.
    let (trace, parent, traceparent) = caller();
    let (request_id, _) = chat_with(&server, &traceparent).await;
    let spans = collector
        .trace(&trace, &["request", "auth", "route", "upstream"])
        .await;
    let request = named(&spans, "request");
    assert_eq!(request.parent, parent, "the caller's span is the parent");
    assert_eq!(request.role, "serve");
    assert_eq!(request.attribute("request_id"), Some(request_id.as_str()));
    for name in ["auth", "route", "upstream"] {
        assert!(
            descends(&spans, named(&spans, name), request),
            "{name}: {spans:?}"
        );
    }
    let upstream_span = named(&spans, "upstream");
    assert!(
        upstream_span.attribute("backend_id").is_some(),
        "{upstream_span:?}"
    );
    let (got_trace, got_parent) = parts(&up.last_traceparent().expect("a traceparent upstream"));
    assert_eq!(got_trace, trace);
    assert_eq!(
        got_parent, upstream_span.span_id,
        "the upstream call's own span"
    );
    assert!(
        collector
            .content_types
            .lock()
            .unwrap()
            .iter()
            .all(|c| c == "application/x-protobuf"),
        "OTLP/HTTP protobuf"
    );

    // A transcription: decode on the edge, the node call, and on the node its RPC, the
    // VAD and Whisper, all in the caller's trace.
    let (trace, _, traceparent) = caller();
    let audio = std::fs::read("models/cache/test-audio/beckett.wav").unwrap();
    let answer = server
        .http
        .post(server.url("/v1/modules/scaiecho/transcribe"))
        .bearer_auth(ADMIN_KEY)
        .header("traceparent", &traceparent)
        .header("content-type", "audio/wav")
        .body(audio.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let spans = collector
        .trace(
            &trace,
            &[
                "request",
                "auth",
                "decode",
                "inference",
                "node",
                "vad",
                "stt",
            ],
        )
        .await;
    let request = named(&spans, "request");
    let inference = named(&spans, "inference");
    let node = named(&spans, "node");
    assert_eq!(node.role, "node", "the node process exports its own spans");
    assert_eq!(
        node.parent, inference.span_id,
        "the node call is the edge's child"
    );
    assert_eq!(node.attribute("rpc"), Some("Transcribe"));
    assert_eq!(
        node.attribute("request_id"),
        request.attribute("request_id")
    );
    for name in ["vad", "stt"] {
        assert_eq!(named(&spans, name).parent, node.span_id, "{name}");
    }
    for name in ["decode", "inference"] {
        assert!(descends(&spans, named(&spans, name), request), "{name}");
    }

    // A queued job runs in the trace of the request that queued it, and its
    // completion's webhook delivery carries that trace on to the receiver.
    let hook = receiver(0).await;
    let webhook = subscribe(
        &server,
        ADMIN_KEY,
        &hook.url,
        &["transcription.job.completed"],
    )
    .await;
    let (trace, _, traceparent) = caller();
    let queued = server
        .http
        .post(server.url("/v1/modules/scaiecho/transcribe?async=true"))
        .bearer_auth(ADMIN_KEY)
        .header("traceparent", &traceparent)
        .header("content-type", "audio/wav")
        .body(audio)
        .send()
        .await
        .unwrap();
    if queued.status() != 202 {
        for line in server.stderr.lock().unwrap().iter() {
            eprintln!("{line}");
        }
    }
    assert_eq!(queued.status(), 202, "{}", queued.text().await.unwrap());
    let id = webhook["id"].as_str().unwrap();
    deliveries_when(&server, ADMIN_KEY, id, |list| {
        list["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["status"] == "succeeded"))
    })
    .await;
    let spans = collector
        .trace(&trace, &["request", "job", "inference", "node", "webhook"])
        .await;
    let job = named(&spans, "job");
    assert!(descends(&spans, job, named(&spans, "request")));
    assert!(descends(&spans, named(&spans, "inference"), job));
    let delivery = named(&spans, "webhook");
    assert!(
        descends(&spans, delivery, job),
        "the event came from the job"
    );
    let seen = hook.seen.lock().unwrap().clone();
    let headers = &seen.last().unwrap().0;
    let (got_trace, got_parent) = parts(headers["traceparent"].to_str().unwrap());
    assert_eq!(got_trace, trace);
    assert_eq!(got_parent, delivery.span_id);
}

#[tokio::test]
async fn the_grpc_exporter_delivers_the_same_trace() {
    let collector = Collector::default();
    let endpoint = grpc_collector(collector.clone()).await;
    let server = Server::start_with(Options {
        env: exporting(&endpoint, "grpc"),
        config_toml: Some(
            "[engines]\nenabled = false\n[gateway]\nhealth_interval_seconds = 3600\n".into(),
        ),
        ..Options::default()
    })
    .await;
    let up = chat_model(&server).await;
    let (trace, parent, traceparent) = caller();
    chat_with(&server, &traceparent).await;
    let spans = collector
        .trace(&trace, &["request", "auth", "route", "upstream"])
        .await;
    assert_eq!(named(&spans, "request").parent, parent);
    assert_eq!(parts(&up.last_traceparent().unwrap()).0, trace);
}

#[tokio::test]
async fn without_an_exporter_the_callers_traceparent_is_passed_on_as_it_came() {
    let server = Server::start_with(Options {
        config_toml: Some(
            "[engines]\nenabled = false\n[gateway]\nhealth_interval_seconds = 3600\n".into(),
        ),
        ..Options::default()
    })
    .await;
    let up = chat_model(&server).await;
    let (_, _, traceparent) = caller();
    chat_with(&server, &traceparent).await;
    assert_eq!(up.last_traceparent().as_deref(), Some(traceparent.as_str()));
    // A malformed one is dropped, not passed on; none, none.
    server
        .http
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(ADMIN_KEY)
        .header("traceparent", "00-not-a-trace-01")
        .json(&chat_body("otel/chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(up.last_traceparent(), None);
    let (status, _) = server
        .post(
            "/v1/chat/completions",
            Some(ADMIN_KEY),
            chat_body("otel/chat"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(up.last_traceparent(), None);
}
