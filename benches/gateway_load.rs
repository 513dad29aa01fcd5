//! Gateway overhead under load: the same chat completion sent at a fixed rate (open
//! loop) first straight to an upstream and then through the gateway, in one run, with
//! auth, rate limits, a budget and accounting all on. Reports latency percentiles of
//! both and what the gateway adds. The upstream is a minimal OpenAI-compatible server
//! started in this process; `benches/gateway_load.sh` starts the release server.
//!
//! `cargo bench --bench gateway_load -- --gateway http://ADDR --key KEY [--seconds 20]
//!  [--rate 2000]`
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Args {
    gateway: String,
    key: String,
    seconds: u64,
    rate: u64,
    /// Only the gateway phase (a long run for memory growth).
    soak: bool,
}

fn args() -> Args {
    let mut args = Args {
        gateway: String::new(),
        key: String::new(),
        seconds: 20,
        rate: 2000,
        soak: false,
    };
    let list: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < list.len() {
        let value = list.get(i + 1).cloned().unwrap_or_default();
        match list[i].as_str() {
            "--gateway" => args.gateway = value,
            "--key" => args.key = value,
            "--seconds" => args.seconds = value.parse().expect("--seconds"),
            "--rate" => args.rate = value.parse().expect("--rate"),
            "--soak" => {
                args.soak = true;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    assert!(
        !args.gateway.is_empty(),
        "--gateway http://ADDR is required"
    );
    args
}

const ANSWER: &str = r#"{"id":"chatcmpl-load","object":"chat.completion","created":1,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, this is a short answer."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}"#;

async fn upstream() -> String {
    let app = axum::Router::new()
        .route(
            "/v1/chat/completions",
            axum::routing::post(|_body: axum::body::Bytes| async {
                ([("content-type", "application/json")], ANSWER)
            }),
        )
        .route(
            "/v1/models",
            axum::routing::get(|| async { axum::Json(json!({"object": "list", "data": []})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/v1")
}

async fn post(client: &reqwest::Client, url: &str, key: &str, body: Value) -> Value {
    let response = client
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{url}: {status} {body}");
    body
}

/// A tenant with limits and a budget, a backend, a priced model; returns a member key.
async fn setup(client: &reqwest::Client, gateway: &str, admin: &str, upstream: &str) -> String {
    let suffix = std::process::id();
    let backend = post(
        client,
        &format!("{gateway}/v1/backends"),
        admin,
        json!({"name": format!("load-{suffix}"), "kind": "openai", "base_url": upstream}),
    )
    .await;
    post(
        client,
        &format!("{gateway}/v1/models"),
        admin,
        json!({"slug": format!("load/model-{suffix}"),
            "routing": {"backends": [{"backend_id": backend["id"]}]},
            "pricing": {"input_per_1k": 0.001, "output_per_1k": 0.002}}),
    )
    .await;
    let tenant = post(
        client,
        &format!("{gateway}/v1/tenants"),
        admin,
        json!({"name": "load", "slug": format!("load-{suffix}")}),
    )
    .await;
    let tenant_id = tenant["id"].as_str().unwrap();
    let limits =
        json!({"requests_per_minute": 100_000_000u64, "tokens_per_minute": 10_000_000_000u64});
    let response = client
        .patch(format!("{gateway}/v1/tenants/{tenant_id}"))
        .bearer_auth(admin)
        .json(&json!({"rate_limit": limits}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    post(
        client,
        &format!("{gateway}/v1/accounting/budgets"),
        admin,
        json!({"scope": "tenant", "scope_id": tenant_id, "period": "month", "limit": 1e12}),
    )
    .await;
    let key = post(
        client,
        &format!("{gateway}/v1/api-keys"),
        admin,
        json!({"name": "load", "tenant_id": tenant_id, "roles": ["member"], "rate_limit": limits}),
    )
    .await;
    key["key"].as_str().unwrap().to_owned()
}

struct Phase {
    latencies: Vec<Duration>,
    errors: usize,
    elapsed: Duration,
    /// (seconds into the phase it was sent, latency) of answers slower than `SLOW`.
    slow: Vec<(f64, Duration)>,
}

/// Answers slower than this are listed with when they were sent, so a stall shows when.
const SLOW: Duration = Duration::from_millis(50);
/// Requests in flight at most.
const IN_FLIGHT: u32 = 4096;

/// Sends `rate` requests per second for `seconds`, each on its own task (open loop:
/// a slow answer does not slow the sender).
async fn run(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: &str,
    seconds: u64,
    rate: u64,
) -> Phase {
    let latencies = Arc::new(Mutex::new(Vec::with_capacity((seconds * rate) as usize)));
    let errors = Arc::new(Mutex::new(0usize));
    let slow = Arc::new(Mutex::new(Vec::new()));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT as usize));
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let total = seconds * rate;
    // No join handles kept: a finished task's memory goes at once, so a long soak does
    // not grow this process (which shares the machine with the server it measures).
    for _ in 0..total {
        ticker.tick().await;
        let permit = in_flight.clone().acquire_owned().await.unwrap();
        let (client, url, key, body) = (
            client.clone(),
            url.to_owned(),
            key.to_owned(),
            body.to_owned(),
        );
        let (latencies, errors, slow) = (latencies.clone(), errors.clone(), slow.clone());
        tokio::spawn(async move {
            let sent = Instant::now();
            let result = client
                .post(&url)
                .bearer_auth(&key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            let ok = match result {
                Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                Err(_) => false,
            };
            let took = sent.elapsed();
            match ok {
                true => latencies.lock().unwrap().push(took),
                false => *errors.lock().unwrap() += 1,
            }
            if took > SLOW {
                let at = (sent - started).as_secs_f64();
                slow.lock().unwrap().push((at, took));
            }
            drop(permit);
        });
    }
    // Every permit back: every request answered.
    let _all = in_flight.acquire_many(IN_FLIGHT).await.unwrap();
    let elapsed = started.elapsed();
    let mut slow = std::mem::take(&mut *slow.lock().unwrap());
    slow.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    latencies.sort();
    let errors = *errors.lock().unwrap();
    Phase {
        latencies,
        errors,
        elapsed,
        slow,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

fn report(name: &str, phase: &Phase) -> (f64, f64) {
    let (p50, p90, p99) = (
        percentile(&phase.latencies, 0.50),
        percentile(&phase.latencies, 0.90),
        percentile(&phase.latencies, 0.99),
    );
    let done = phase.latencies.len() + phase.errors;
    println!(
        "{name:>9}: {done} requests in {:.1} s ({:.0}/s), errors {}, p50 {p50:.3} ms, p90 {p90:.3} ms, p99 {p99:.3} ms, max {:.3} ms",
        phase.elapsed.as_secs_f64(),
        done as f64 / phase.elapsed.as_secs_f64(),
        phase.errors,
        phase
            .latencies
            .last()
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN),
    );
    if !phase.slow.is_empty() {
        // Per second of sending: how many were slow and the slowest.
        let mut seconds: Vec<(u64, usize, Duration)> = Vec::new();
        for (at, took) in &phase.slow {
            let second = *at as u64;
            match seconds.last_mut() {
                Some((s, count, worst)) if *s == second => {
                    *count += 1;
                    *worst = (*worst).max(*took);
                }
                _ => seconds.push((second, 1, *took)),
            }
        }
        let listed: Vec<String> = seconds
            .iter()
            .take(20)
            .map(|(s, count, worst)| format!("{s}s: {count} (max {} ms)", worst.as_millis()))
            .collect();
        println!(
            "{name:>9}: {} answers over {} ms, sent at {}{}",
            phase.slow.len(),
            SLOW.as_millis(),
            listed.join(", "),
            if seconds.len() > 20 { ", ..." } else { "" }
        );
    }
    (p50, p99)
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let upstream = upstream().await;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(4096)
            .tcp_nodelay(true)
            .build()
            .unwrap();
        let key = setup(&client, &args.gateway, &args.key, &upstream).await;
        let slug = format!("load/model-{}", std::process::id());
        let body = json!({"model": slug, "messages": [{"role": "user", "content": "Say hello in a short sentence."}],
            "max_tokens": 16})
        .to_string();
        let direct = format!("{upstream}/chat/completions");
        let through = format!("{}/v1/chat/completions", args.gateway);
        println!(
            "open loop at {} requests/s, {} s per phase; upstream {upstream}",
            args.rate, args.seconds
        );
        // Warm both paths (connection pools, caches).
        run(&client, &direct, &key, &body, 2, args.rate / 4).await;
        run(&client, &through, &key, &body, 2, args.rate / 4).await;
        if args.soak {
            let gateway = run(&client, &through, &key, &body, args.seconds, args.rate).await;
            report("gateway", &gateway);
            return;
        }
        let reference = run(&client, &direct, &key, &body, args.seconds, args.rate).await;
        let gateway = run(&client, &through, &key, &body, args.seconds, args.rate).await;
        let (d50, d99) = report("direct", &reference);
        let (g50, g99) = report("gateway", &gateway);
        println!(
            "added by the gateway: p50 {:.3} ms, p99 {:.3} ms (ratio p50 {:.2}x)",
            g50 - d50,
            g99 - d99,
            g50 / d50
        );
    });
}
