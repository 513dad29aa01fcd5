//! Shared dependencies of the scaled deployment going away and coming back: each outage
//! is named, fails fast (503 naming the service, no hang), and heals by itself.

use std::time::Duration;

use serde_json::json;

use crate::scaled::{Deployment, TRANSCRIBE, free_port, priced_model, wait_job, wait_ready};
use crate::support::{ADMIN_KEY, read};

#[tokio::test]
async fn dependency_outages_are_named_fail_fast_and_heal() {
    let Some(deployment) = Deployment::new().await else {
        return;
    };
    // A Redis and a PostgreSQL of this test's own, to stop and start.
    let services = tempfile::tempdir().unwrap();
    // PostgreSQL runs as `postgres` when the tests run as root: it must reach its folder.
    std::fs::set_permissions(
        services.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let base = services.path().to_owned();
    let own = |name: &'static str, port: u16| {
        let base = base.clone();
        move |action: &str| {
            let root = env!("CARGO_MANIFEST_DIR");
            let output = std::process::Command::new(format!("{root}/scripts/services/{name}"))
                .arg(action)
                .env("SCAIGRID_TEST_SERVICES", &base)
                .env("SCAIGRID_TEST_REDIS_PORT", port.to_string())
                .env("SCAIGRID_TEST_PG_PORT", port.to_string())
                .env("SCAIGRID_TEST_S3_PORT", port.to_string())
                .output()
                .unwrap();
            assert!(output.status.success(), "{output:?}");
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        }
    };
    let redis = own("redis", free_port());
    let postgres = own("postgres", free_port());
    let s3 = own("s3", free_port());
    let redis_url = redis("start");
    let Some(database) = crate::support::postgres_database_on(&postgres("start")).await else {
        panic!("the test's own PostgreSQL did not answer");
    };
    let deployment = Deployment {
        s3: s3("start"),
        ..deployment
    };
    let api = deployment.api_on(&redis_url, Some(&database)).await;
    // A process with engines and a worker, for a job submitted while Redis is away.
    let engine_process = deployment
        .serve_with_engines(
            &redis_url,
            &database,
            "e1",
            "workers = 1\nlease_seconds = 2\n",
        )
        .await;
    let tenant = api.tenant("outage").await;
    let (status, key) = api
        .post(
            "/v1/api-keys",
            Some(&tenant.admin_key),
            json!({"name": "limited", "roles": ["member"], "rate_limit": {"requests_per_minute": 1000}}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let limited = key["key"].as_str().unwrap().to_owned();
    let limited_request = || {
        api.http
            .post(api.url(TRANSCRIBE))
            .bearer_auth(&limited)
            .header("content-type", "audio/wav")
            .body("not audio")
            .send()
    };
    assert_eq!(api.get("/health/ready", None).await.0, 200);
    // A priced chat model, for usage made while Redis is away.
    let up = crate::upstream::start("outage", "ko").await;
    priced_model(&api, &up, "ko", "test/outage").await;
    let chat = json!({"model": "test/outage", "messages": [{"role": "user", "content": "hi"}]});

    // Redis down: readiness names it; a rate-limited request fails with 503 at once.
    redis("stop");
    let (status, body) = wait_ready(&api, 503).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["dependency"], "redis", "{body}");
    let (status, body) = read(limited_request().await.unwrap()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    // What needs no Redis still works, and its usage waits for Redis: none is lost.
    for _ in 0..3 {
        let (status, body) = api
            .post("/v1/chat/completions", Some(ADMIN_KEY), chat.clone())
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // A job accepted while Redis is away (its stream entry cannot be added) still runs
    // once Redis is back: the sweep adds it.
    let beckett = std::fs::read("models/cache/test-audio/beckett.wav").unwrap();
    let (status, submitted) = read(
        engine_process
            .http
            .post(engine_process.url(&format!("{TRANSCRIBE}?async=true")))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "audio/wav")
            .body(beckett)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{submitted}");
    let job_id = submitted["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis("start");
    let (status, body) = wait_ready(&api, 200).await;
    assert_eq!(status, 200, "did not recover: {body}");
    assert_ne!(read(limited_request().await.unwrap()).await.0, 503);
    let (status, usage) = api
        .get("/v1/accounting/usage?group_by=model", Some(ADMIN_KEY))
        .await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["data"][0]["key"], "test/outage", "{usage}");
    assert_eq!(usage["data"][0]["requests"], 3, "{usage}");
    let done = wait_job(&api, &job_id, Duration::from_secs(60), |j| {
        j["status"] == "succeeded" || j["status"] == "failed"
    })
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    drop(engine_process);

    // PostgreSQL down: the same, and requests that need it fail with 503.
    postgres("stop");
    let (status, body) = wait_ready(&api, 503).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["dependency"], "database", "{body}");
    let (status, body) = api.get("/v1/modules/scaiecho/jobs", Some(ADMIN_KEY)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    postgres("start");
    let (status, body) = wait_ready(&api, 200).await;
    assert_eq!(status, 200, "did not recover: {body}");
    assert_eq!(
        api.get("/v1/modules/scaiecho/jobs", Some(ADMIN_KEY))
            .await
            .0,
        200
    );

    // The object store down: readiness names it. (moto keeps buckets in memory, so its
    // restart is not a recovery to test.)
    s3("stop");
    let (status, body) = wait_ready(&api, 503).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["dependency"], "object_store", "{body}");
    drop(api);
    postgres("stop");
    redis("stop");
}
