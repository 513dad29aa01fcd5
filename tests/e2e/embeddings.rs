//! `/v1/embeddings`: the local sentence-embedding model on the inference nodes and a
//! catalogue model's upstream, through the official OpenAI Python SDK too; bad inputs
//! are the documented code.

use serde_json::{Value, json};

use crate::support::{Server, assert_error};
use crate::upstream;

fn cosine(a: &Value, b: &Value) -> f64 {
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    a.iter()
        .zip(b)
        .map(|(x, y)| x.as_f64().unwrap() * y.as_f64().unwrap())
        .sum()
}

#[tokio::test]
async fn the_local_model_and_an_upstream_answer_embeddings() {
    let server = Server::start().await;
    let acme = server.tenant("acme").await;
    let member = acme.member_key.as_str();
    let texts = [
        "How do I reset my password?",
        "What is the way to change my password?",
        "The weather in Lisbon is sunny today.",
    ];
    let (status, body) = server
        .post(
            "/v1/embeddings",
            Some(member),
            json!({"model": "all-MiniLM-L6-v2", "input": texts}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "scaigrid/all-minilm-l6-v2");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    for (index, item) in data.iter().enumerate() {
        assert_eq!(
            (&item["object"], &item["index"]),
            (&json!("embedding"), &json!(index))
        );
        assert_eq!(item["embedding"].as_array().unwrap().len(), 384);
        let norm = cosine(&item["embedding"], &item["embedding"]);
        assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    }
    let (close, far) = (
        cosine(&data[0]["embedding"], &data[1]["embedding"]),
        cosine(&data[0]["embedding"], &data[2]["embedding"]),
    );
    assert!(close > far + 0.4, "{close} {far}");
    assert!(
        body["usage"]["prompt_tokens"].as_u64().unwrap() >= 20,
        "{body}"
    );
    // base64: the same floats, little-endian.
    let (status, encoded) = server
        .post(
            "/v1/embeddings",
            Some(member),
            json!({"model": "scaigrid/all-minilm-l6-v2", "input": texts[0], "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(status, 200, "{encoded}");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let first = f32::from_le_bytes(bytes[..4].try_into().unwrap()) as f64;
    assert!((first - data[0]["embedding"][0].as_f64().unwrap()).abs() < 1e-6);
    // The usage is the tenant's, under `embeddings`.
    let query = format!(
        "SELECT COUNT(*) FROM usage_records WHERE module = 'embeddings' AND tenant_id = '{}'",
        acme.id
    );
    let mut rows = 0;
    for _ in 0..50 {
        rows = server.sql_count(&query).await;
        if rows >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(rows, 2);

    // Bad requests: the documented code, and the server goes on.
    for (request, field) in [
        (json!({"model": "all-MiniLM-L6-v2", "input": ""}), "input"),
        (json!({"model": "all-MiniLM-L6-v2", "input": []}), "input"),
        (
            json!({"model": "all-MiniLM-L6-v2", "input": [1, 2, 3]}),
            "input",
        ),
        (
            json!({"model": "all-MiniLM-L6-v2", "input": [["a"]]}),
            "input",
        ),
        (
            json!({"model": "all-MiniLM-L6-v2", "input": "a", "dimensions": 128}),
            "dimensions",
        ),
        (
            json!({"model": "all-MiniLM-L6-v2", "input": "a", "encoding_format": "hex"}),
            "encoding_format",
        ),
    ] {
        let (status, body) = server
            .post("/v1/embeddings", Some(member), request.clone())
            .await;
        assert_error(status, &body, 400, "INVALID_REQUEST");
        assert_eq!(body["error"]["field"], field, "{request} {body}");
    }
    let (status, body) = server
        .post(
            "/v1/embeddings",
            Some(member),
            json!({"model": "acme/none", "input": "a"}),
        )
        .await;
    assert_error(status, &body, 404, "MODEL_NOT_FOUND");
    let (status, body) = server
        .post(
            "/v1/embeddings",
            None,
            json!({"model": "all-MiniLM-L6-v2", "input": "a"}),
        )
        .await;
    assert_error(status, &body, 401, "AUTH_TOKEN_MISSING");

    // A catalogue model goes to its upstream's /embeddings, named by its slug.
    let up = upstream::start("vectors", "kv").await;
    let backend = crate::gateway::backend(&server, &up, "kv").await;
    crate::gateway::model(
        &server,
        "acme/embed",
        json!([{"backend_id": backend, "upstream_model": "text-embedding-3-small"}]),
        json!({}),
    )
    .await;
    let (status, body) = server
        .post(
            "/v1/embeddings",
            Some(member),
            json!({"model": "acme/embed", "input": ["abc", "hello"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "acme/embed");
    assert_eq!(
        body["data"][1]["embedding"],
        json!([5.0, 1.0, 0.0, 0.0]),
        "{body}"
    );
    assert_eq!(
        *up.shared.last_model.lock().unwrap(),
        "text-embedding-3-small"
    );
    up.set_mode(upstream::Mode::Fail(500));
    let (status, body) = server
        .post(
            "/v1/embeddings",
            Some(member),
            json!({"model": "acme/embed", "input": "abc"}),
        )
        .await;
    assert_error(status, &body, 502, "BACKEND_ERROR");
    up.set_mode(upstream::Mode::Ok);

    // The official OpenAI Python SDK, on both.
    let python = crate::support::python_with_openai_sdk();
    let script = r#"
import sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
local = client.embeddings.create(model="all-MiniLM-L6-v2", input=["hello world", "hi there"])
print(len(local.data), len(local.data[0].embedding), local.model, local.usage.prompt_tokens > 0)
remote = client.embeddings.create(model="acme/embed", input="abcd")
print(remote.data[0].embedding, remote.model)
"#;
    let (base, key) = (server.base.clone(), member.to_owned());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .args(["-c", script, &base, &key])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "2 384 scaigrid/all-minilm-l6-v2 True",
            "[4.0, 1.0, 0.0, 0.0] acme/embed"
        ],
        "{stdout}"
    );
}
