//! A small OpenAI-compatible chat upstream the gateway tests start: it answers chat
//! completions (plain and streamed) and `GET /v1/models`, and on command fails with a
//! status, stalls, cuts a stream after its first event, or leaves out `usage`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    /// Every call (and the health probe) answers this status.
    Fail(u16),
    /// Chat calls answer 400 with an OpenAI error body (the client's fault).
    BadRequest,
    /// Streams send one event, then the connection breaks.
    CutAfterFirst,
    /// Streams answer 200 and end before any byte.
    EmptyStream,
    /// Streams send one event, then nothing for a long time.
    StallAfterFirst,
    /// A firewall judge: answers `0.9` when the last message holds "stupid" (any case),
    /// else `0.1`.
    Judge,
    /// A long answer (`LONG_ANSWER`), streamed a sentence every 150 ms.
    Long,
}

/// The answer of [`Mode::Long`]: twelve sentences.
pub const LONG_ANSWER: &str = "One is the first number. Two comes after one. Three is next in line. \
    Four follows three. Five is half of ten. Six is a small number. Seven days make a week. \
    Eight legs has a spider. Nine comes before ten. Ten is where we stop. Eleven is one more. \
    Twelve makes a dozen.";

pub struct Shared {
    pub name: String,
    key: String,
    mode: Mutex<Mode>,
    /// Delay before each chat answer.
    delay: Mutex<Duration>,
    usage: Mutex<bool>,
    pub chat_calls: AtomicUsize,
    pub probe_calls: AtomicUsize,
    /// The `model` of the last chat request.
    pub last_model: Mutex<String>,
    /// The content of the last chat request's last message.
    pub last_prompt: Mutex<String>,
    /// The `traceparent` header of the last chat request.
    pub last_traceparent: Mutex<Option<String>>,
    /// The `messages` of the last chat request.
    pub last_messages: Mutex<Value>,
}

#[derive(Clone)]
pub struct Upstream {
    pub base: String,
    pub shared: Arc<Shared>,
}

impl Upstream {
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    pub fn set_usage(&self, usage: bool) {
        *self.shared.usage.lock().unwrap() = usage;
    }

    pub fn chat_calls(&self) -> usize {
        self.shared.chat_calls.load(Ordering::SeqCst)
    }

    pub fn last_prompt(&self) -> String {
        self.shared.last_prompt.lock().unwrap().clone()
    }

    pub fn last_messages(&self) -> Value {
        self.shared.last_messages.lock().unwrap().clone()
    }

    pub fn last_traceparent(&self) -> Option<String> {
        self.shared.last_traceparent.lock().unwrap().clone()
    }
}

/// Starts an upstream named `name` that wants `key` as its bearer token.
pub async fn start(name: &str, key: &str) -> Upstream {
    let shared = Arc::new(Shared {
        name: name.to_owned(),
        key: key.to_owned(),
        mode: Mutex::new(Mode::Ok),
        delay: Mutex::new(Duration::ZERO),
        usage: Mutex::new(true),
        chat_calls: AtomicUsize::new(0),
        probe_calls: AtomicUsize::new(0),
        last_model: Mutex::new(String::new()),
        last_prompt: Mutex::new(String::new()),
        last_traceparent: Mutex::new(None),
        last_messages: Mutex::new(Value::Null),
    });
    let app = axum::Router::new()
        .route("/v1/models", axum::routing::get(models))
        .route("/v1/chat/completions", axum::routing::post(chat))
        .route("/v1/embeddings", axum::routing::post(embeddings))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Upstream {
        base: format!("http://{address}/v1"),
        shared,
    }
}

fn authorized(shared: &Shared, request: &Request) -> bool {
    request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {}", shared.key).as_str())
}

async fn models(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    shared.probe_calls.fetch_add(1, Ordering::SeqCst);
    if !authorized(&shared, &request) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if let Mode::Fail(status) = *shared.mode.lock().unwrap() {
        return StatusCode::from_u16(status).unwrap().into_response();
    }
    axum::Json(json!({"object": "list", "data": [{"id": "up-model", "object": "model"}]}))
        .into_response()
}

/// Embeddings: each input's vector is `[characters, 1, 0, 0]`, so a test can tell
/// which input came back where.
async fn embeddings(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    shared.chat_calls.fetch_add(1, Ordering::SeqCst);
    if !authorized(&shared, &request) {
        return (StatusCode::UNAUTHORIZED, "bad key").into_response();
    }
    if let Mode::Fail(status) = *shared.mode.lock().unwrap() {
        let error = json!({"error": {"message": format!("{} is down", shared.name)}});
        return (StatusCode::from_u16(status).unwrap(), axum::Json(error)).into_response();
    }
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    *shared.last_model.lock().unwrap() = body["model"].as_str().unwrap_or_default().to_owned();
    let inputs: Vec<String> = match &body["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or("").to_owned())
            .collect(),
        _ => return (StatusCode::BAD_REQUEST, "bad input").into_response(),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            json!({"object": "embedding", "index": index,
                "embedding": [text.chars().count() as f32, 1.0, 0.0, 0.0]})
        })
        .collect();
    axum::Json(
        json!({"object": "list", "data": data, "model": body["model"],
        "usage": {"prompt_tokens": 7, "total_tokens": 7}}),
    )
    .into_response()
}

fn chunk(model: &str, content: &str) -> String {
    let event = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}],
    });
    format!("data: {event}\n\n")
}

async fn chat(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    shared.chat_calls.fetch_add(1, Ordering::SeqCst);
    if !authorized(&shared, &request) {
        return (StatusCode::UNAUTHORIZED, "bad key").into_response();
    }
    *shared.last_traceparent.lock().unwrap() = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    *shared.last_model.lock().unwrap() = model.clone();
    let prompt = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    *shared.last_prompt.lock().unwrap() = prompt.clone();
    *shared.last_messages.lock().unwrap() = body["messages"].clone();
    // With tools: the first tool is called (`{"city":"Paris"}`); its output answered.
    let last_role = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .map(|m| m["role"].clone())
        .unwrap_or_default();
    let tool = body["tools"][0]["function"]["name"]
        .as_str()
        .filter(|_| last_role != "tool")
        .map(str::to_owned);
    let delay = *shared.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let mode = *shared.mode.lock().unwrap();
    let with_usage = *shared.usage.lock().unwrap();
    match mode {
        Mode::Fail(status) => {
            let error = json!({"error": {"message": format!("{} is down", shared.name)}});
            return (StatusCode::from_u16(status).unwrap(), axum::Json(error)).into_response();
        }
        Mode::BadRequest => {
            let error = json!({"error": {"message": "max_tokens is too large for this model"}});
            return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
        }
        _ => {}
    }
    let content = match mode {
        Mode::Judge if prompt.to_lowercase().contains("stupid") => "0.9".to_owned(),
        Mode::Judge => "0.1".to_owned(),
        _ if last_role == "tool" => format!("The weather is {prompt}."),
        Mode::Long => LONG_ANSWER.to_owned(),
        _ => format!("Hello from {}", shared.name),
    };
    if body["stream"] == json!(true)
        && (tool.is_some() || mode == Mode::Long || last_role == "tool")
    {
        return paced_stream(&model, &content, tool.as_deref(), with_usage);
    }
    if body["stream"] != json!(true) {
        let mut answer = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                "finish_reason": "stop"}],
        });
        if with_usage {
            answer["usage"] =
                json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15});
        }
        return axum::Json(answer).into_response();
    }
    let first = chunk(&model, "Hello");
    let rest = vec![
        chunk(&model, " from "),
        chunk(&model, &shared.name),
        match with_usage {
            true => format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model,
                    "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5,
                    "total_tokens": 15}})
            ),
            false => String::new(),
        },
        "data: [DONE]\n\n".to_owned(),
    ];
    let stream = async_stream(mode, first, rest);
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// A streamed answer a sentence at a time (150 ms apart), or a tool call.
fn paced_stream(model: &str, content: &str, tool: Option<&str>, with_usage: bool) -> Response {
    use futures_util::StreamExt;
    let event = |delta: Value, finish: Value| {
        let event = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {event}\n\n")
    };
    let mut events = match tool {
        Some(name) => vec![
            event(
                json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_mock1",
                    "type": "function", "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            ),
            event(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
                Value::Null,
            ),
            event(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
                json!("tool_calls"),
            ),
        ],
        None => content
            .split_inclusive(". ")
            .map(|sentence| event(json!({"content": sentence}), Value::Null))
            .collect(),
    };
    if with_usage {
        events.push(format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model,
                "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5,
                "total_tokens": 15}})
        ));
    }
    events.push("data: [DONE]\n\n".to_owned());
    let stream = futures_util::stream::iter(events).then(|event| async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        Ok::<_, std::io::Error>(event)
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn async_stream(
    mode: Mode,
    first: String,
    rest: Vec<String>,
) -> impl futures_util::Stream<Item = Result<String, std::io::Error>> {
    use futures_util::StreamExt;
    let head: Vec<Result<String, std::io::Error>> = match mode {
        Mode::EmptyStream => vec![],
        _ => vec![Ok(first)],
    };
    let tail = futures_util::stream::once(async move {
        match mode {
            Mode::CutAfterFirst => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                vec![Err(std::io::Error::other("cut"))]
            }
            Mode::StallAfterFirst => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                vec![]
            }
            Mode::EmptyStream => vec![],
            _ => rest.into_iter().map(Ok).collect(),
        }
    })
    .flat_map(futures_util::stream::iter);
    futures_util::stream::iter(head).chain(tail)
}
