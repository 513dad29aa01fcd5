//! The scaled deployment: several `scaigrid` processes on one PostgreSQL, Redis and
//! S3-compatible server, all real and on loopback (`scripts/services/*`). Each test has
//! its own database, Redis key prefix and bucket, so tests run side by side.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{ADMIN_KEY, Options, Server, postgres_database, read, service};

pub(crate) const TRANSCRIBE: &str = "/v1/modules/scaiecho/transcribe";

/// One deployment's shared services.
pub(crate) struct Deployment {
    pub(crate) redis: String,
    pub(crate) database: String,
    pub(crate) s3: String,
    pub(crate) prefix: String,
}

impl Deployment {
    /// `None` only when a service truly cannot start here (said loudly).
    pub(crate) async fn new() -> Option<Deployment> {
        let redis = service("redis", "SCAIGRID_TEST_REDIS_URL")?;
        let s3 = service("s3", "SCAIGRID_TEST_S3_ENDPOINT")?;
        let database = postgres_database().await?;
        let prefix = format!("e2e{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        Some(Deployment {
            redis,
            database,
            s3,
            prefix,
        })
    }

    fn toml(&self, redis: &str, extra: &str) -> String {
        self.toml_tls(redis, "", extra)
    }

    /// `redis_lines`: more lines of the `[redis]` section (its TLS files).
    pub(crate) fn toml_tls(&self, redis: &str, redis_lines: &str, extra: &str) -> String {
        format!(
            "[redis]\nurl = \"{redis}\"\nkey_prefix = \"{prefix}\"\n{redis_lines}\
             [s3]\nbucket = \"{prefix}\"\nendpoint = \"{s3}\"\nregion = \"us-east-1\"\n\
             access_key_id = \"test\"\nsecret_access_key = \"test\"\ncreate_bucket = true\n{extra}",
            prefix = self.prefix,
            s3 = self.s3,
        )
    }

    /// An API process: no engines, so it runs no jobs (its default worker stays off:
    /// the stopping-worker test fails if it takes the released job).
    async fn api(&self) -> Server {
        self.api_on(&self.redis.clone(), None).await
    }

    pub(crate) async fn api_on(&self, redis: &str, database: Option<&str>) -> Server {
        self.api_with(redis, database, "").await
    }

    pub(crate) async fn api_with(&self, redis: &str, database: Option<&str>, more: &str) -> Server {
        let extra = format!("[engines]\nenabled = false\n[jobs]\nlease_seconds = 3\n{more}");
        Server::start_with(Options {
            database_url: Some(database.unwrap_or(&self.database).to_owned()),
            config_toml: Some(self.toml(redis, &extra)),
            ..Options::default()
        })
        .await
    }

    /// A `serve` process with the engines as node `node_id`; `jobs`: its `[jobs]` lines.
    pub(crate) async fn serve_with_engines(
        &self,
        redis: &str,
        database: &str,
        node_id: &str,
        jobs: &str,
    ) -> Server {
        let extra = format!("[engines]\nnode_id = \"{node_id}\"\n[jobs]\n{jobs}");
        Server::start_with(Options {
            database_url: Some(database.to_owned()),
            config_toml: Some(self.toml(redis, &extra)),
            ..Options::default()
        })
        .await
    }

    /// A `scaigrid worker` process with the engines, one job at a time.
    async fn worker(&self, node_id: &str) -> Server {
        self.worker_with(node_id, 3, "").await
    }

    /// `top`: top-level settings, before the sections.
    async fn worker_with(&self, node_id: &str, lease_seconds: u64, top: &str) -> Server {
        let extra = format!(
            "[engines]\nnode_id = \"{node_id}\"\n[jobs]\nworkers = 1\nlease_seconds = {lease_seconds}\n"
        );
        Server::start_with(Options {
            command: "worker",
            database_url: Some(self.database.clone()),
            config_toml: Some(format!("{top}{}", self.toml(&self.redis, &extra))),
            ..Options::default()
        })
        .await
    }
}

/// beckett.wav looped into two minutes of speech (long enough to kill a worker mid-job).
pub fn long_speech() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("long.wav");
    let status = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-stream_loop", "11", "-i"])
        .arg("models/cache/test-audio/beckett.wav")
        .arg(&out)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    std::fs::read(out).unwrap()
}

pub(crate) async fn job(server: &Server, id: &str) -> Value {
    let (status, job) = server
        .get(&format!("/v1/modules/scaiecho/jobs/{id}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(status, 200, "{job}");
    job
}

/// Polls until `done` holds for the job or `limit` passes (a guard against hangs).
pub(crate) async fn wait_job(
    server: &Server,
    id: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let job = job(server, id).await;
        if done(&job) || start.elapsed() > limit {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn two_apis_and_two_workers_share_jobs_keys_limits_and_nodes() {
    let Some(deployment) = Deployment::new().await else {
        return;
    };
    let api1 = deployment.api().await;
    let api2 = deployment.api().await;
    let mut worker1 = deployment.worker("w1").await;

    // A job submitted through one API process is read through the other; its worker is
    // killed mid-job and the second worker finishes it, once.
    let response = api1
        .http
        .post(api1.url(&format!("{TRANSCRIBE}?async=true")))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "audio/wav")
        .body(long_speech())
        .send()
        .await
        .unwrap();
    let (status, submitted) = read(response).await;
    assert_eq!(status, 202, "{submitted}");
    let id = submitted["id"].as_str().unwrap().to_owned();
    let running = wait_job(&api2, &id, Duration::from_secs(60), |j| {
        j["status"] != "queued"
    })
    .await;
    assert_eq!(running["status"], "processing", "{running}");
    worker1.kill();
    let _worker2 = deployment.worker("w2").await;
    let done = wait_job(&api2, &id, Duration::from_secs(120), |j| {
        j["status"] == "succeeded" || j["status"] == "failed"
    })
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    let text = done["result"]["text"].as_str().unwrap().to_lowercase();
    assert!(text.matches("fail better").count() >= 6, "{text}");
    let completions = api1
        .sql_count(&format!(
            "SELECT COUNT(*) FROM event_outbox WHERE name = 'transcription.job.completed' \
             AND payload LIKE '%{id}%'"
        ))
        .await;
    assert_eq!(completions, 1, "the job ended more than once");
    // The node registry knows the live worker.
    let (status, nodes) = api1.get("/v1/infra/nodes", Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{nodes}");
    let ids: Vec<&str> = nodes["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["node_id"].as_str())
        .collect();
    assert!(ids.contains(&"w2"), "{nodes}");
    // The worker list shows the live worker process and the job it handled (its
    // heartbeat comes every 5 s); the API processes run no jobs and are not in it.
    let handled = Instant::now();
    let workers = loop {
        let (status, workers) = api2.get("/v1/infra/workers", Some(ADMIN_KEY)).await;
        assert_eq!(status, 200, "{workers}");
        let w2 = workers["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["node_id"] == "w2")
            .cloned();
        if w2.as_ref().is_some_and(|w| w["jobs_handled"] == 1)
            || handled.elapsed() > Duration::from_secs(15)
        {
            break workers;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let rows = workers["data"].as_array().unwrap();
    let w2 = rows
        .iter()
        .find(|w| w["node_id"] == "w2")
        .expect("w2 listed");
    assert_eq!(
        (&w2["status"], &w2["capacity"], &w2["jobs_handled"]),
        (&json!("alive"), &json!(1), &json!(1)),
        "{workers}"
    );
    assert!(
        rows.iter()
            .all(|w| w["node_id"] == "w1" || w["node_id"] == "w2"),
        "{workers}"
    );

    // A key revoked through one API process is refused by the other within a second.
    let tenant = api1.tenant("scaled").await;
    let (status, key) = api1
        .post(
            "/v1/api-keys",
            Some(&tenant.admin_key),
            json!({"name": "short-lived", "roles": ["member"]}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let secret = key["key"].as_str().unwrap().to_owned();
    assert_eq!(api2.get("/v1/me", Some(&secret)).await.0, 200);
    let (status, _) = read(
        api1.http
            .delete(api1.url(&format!("/v1/api-keys/{}", key["id"].as_str().unwrap())))
            .bearer_auth(&tenant.admin_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(status == 200 || status == 204, "{status}");
    let revoked = Instant::now();
    let refused = loop {
        let (status, body) = api2.get("/v1/me", Some(&secret)).await;
        if status == 401 {
            break body;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "still accepted after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused["error"]["code"], "AUTH_TOKEN_REVOKED", "{refused}");

    // Rate limits hold across both API processes: 10 per minute in all.
    let (status, key) = api1
        .post(
            "/v1/api-keys",
            Some(&tenant.admin_key),
            json!({"name": "limited", "roles": ["member"], "rate_limit": {"requests_per_minute": 10}}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let limited = key["key"].as_str().unwrap().to_owned();
    let mut admitted = 0;
    for i in 0..24 {
        let api = if i % 2 == 0 { &api1 } else { &api2 };
        let response = api
            .http
            .post(api.url(TRANSCRIBE))
            .bearer_auth(&limited)
            .header("content-type", "audio/wav")
            .body("not audio")
            .send()
            .await
            .unwrap();
        if response.status() != 429 {
            admitted += 1;
        }
    }
    assert_eq!(
        admitted, 10,
        "the two processes together admitted {admitted}"
    );
}

/// Registers `up` (which takes `key`) as a backend and a chat model `slug` on it, priced
/// so that the upstream's answer (10 prompt + 5 completion tokens) costs 1.0, as does
/// the estimate of a short request.
pub(crate) async fn priced_model(
    api: &Server,
    up: &crate::upstream::Upstream,
    key: &str,
    slug: &str,
) {
    let (status, backend) = api
        .post(
            "/v1/backends",
            Some(ADMIN_KEY),
            json!({"name": up.shared.name, "kind": "openai", "base_url": up.base, "api_key": key}),
        )
        .await;
    assert_eq!(status, 201, "{backend}");
    let (status, body) = api
        .post(
            "/v1/models",
            Some(ADMIN_KEY),
            json!({"slug": slug, "routing": {"backends": [{"backend_id": backend["id"]}]},
                "pricing": {"input_per_1k": 50.0, "output_per_1k": 100.0}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// Polls readiness until it answers `status` (at most 15 s); the last answer.
pub(crate) async fn wait_ready(api: &Server, status: u16) -> (u16, Value) {
    let start = Instant::now();
    loop {
        let answer = api.get("/health/ready", None).await;
        if answer.0 == status || start.elapsed() > Duration::from_secs(15) {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn budgets_and_usage_are_shared_by_api_processes() {
    let Some(deployment) = Deployment::new().await else {
        return;
    };
    let fast_flush = "[accounting]\nflush_interval_ms = 100\n";
    let mut api1 = deployment
        .api_with(&deployment.redis, None, fast_flush)
        .await;
    let api2 = deployment
        .api_with(&deployment.redis, None, fast_flush)
        .await;
    let up = crate::upstream::start("shared", "ks").await;
    up.set_delay(Duration::from_millis(300));
    priced_model(&api1, &up, "ks", "test/priced").await;
    let tenant = api1.tenant("budgeted").await;
    let (status, budget) = api1
        .post(
            "/v1/accounting/budgets",
            Some(&tenant.admin_key),
            json!({"scope": "tenant", "scope_id": tenant.id, "period": "day", "limit": 6.0}),
        )
        .await;
    assert_eq!(status, 201, "{budget}");
    // The second process sees the catalogue and the budget once it re-reads them.
    let start = Instant::now();
    while api2.get("/v1/models/test/priced", Some(ADMIN_KEY)).await.0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "model never reached api2"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;

    // A concurrent burst through both processes: exactly what fits, no overshoot.
    let body = json!({"model": "test/priced",
        "messages": [{"role": "user", "content": "Say hello to the tests!!"}], "max_tokens": 5});
    let burst = (0..24).map(|i| {
        let api = if i % 2 == 0 { &api1 } else { &api2 };
        api.post(
            "/v1/chat/completions",
            Some(&tenant.member_key),
            body.clone(),
        )
    });
    let results = futures_util::future::join_all(burst).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    for (status, body) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 429, "{body}");
        assert_eq!(body["error"]["code"], "BUDGET_EXCEEDED", "{body}");
    }
    assert_eq!(ok, 6, "the two processes together admitted {ok}");
    assert_eq!(up.chat_calls(), 6);

    // What api1 recorded is shipped within a flush tick: killing it loses none of it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    api1.kill();
    let (status, usage) = api2
        .get(
            "/v1/accounting/usage?group_by=model",
            Some(&tenant.admin_key),
        )
        .await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["data"][0]["requests"], 6, "{usage}");
    assert_eq!(usage["data"][0]["cost"], 6.0, "{usage}");
    let (status, budgets) = api2
        .get("/v1/accounting/budgets", Some(&tenant.admin_key))
        .await;
    assert_eq!(status, 200, "{budgets}");
    assert_eq!(budgets["data"][0]["used"], 6.0, "{budgets}");
    assert_eq!(budgets["data"][0]["reserved"], 0.0, "{budgets}");
    let (status, body) = api2
        .post(
            "/v1/chat/completions",
            Some(&tenant.member_key),
            body.clone(),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    let events = api2
        .sql_count("SELECT COUNT(*) FROM event_outbox WHERE name = 'budget.exceeded'")
        .await;
    assert_eq!(events, 1);
}

#[tokio::test]
async fn a_stopping_worker_puts_its_job_back_for_another_at_once() {
    let Some(deployment) = Deployment::new().await else {
        return;
    };
    let api = deployment.api().await;
    // A lease of a minute: the job must not wait for it to lapse.
    let mut stopping = deployment
        .worker_with("s1", 60, "shutdown_grace_seconds = 1\n")
        .await;
    let (status, submitted) = read(
        api.http
            .post(api.url(&format!("{TRANSCRIBE}?async=true")))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "audio/wav")
            .body(long_speech())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{submitted}");
    let id = submitted["id"].as_str().unwrap().to_owned();
    let running = wait_job(&api, &id, Duration::from_secs(60), |j| {
        j["status"] != "queued"
    })
    .await;
    assert_eq!(running["status"], "processing", "{running}");
    stopping.send_sigterm();
    let exit = tokio::task::spawn_blocking(move || {
        let status = stopping.wait();
        (status, stopping)
    })
    .await
    .unwrap();
    assert!(exit.0.success(), "{:?}", exit.0);
    let released = job(&api, &id).await;
    assert_eq!(released["status"], "queued", "{released}");
    let _other = deployment.worker_with("s2", 60, "").await;
    let done = wait_job(&api, &id, Duration::from_secs(40), |j| {
        j["status"] == "succeeded" || j["status"] == "failed"
    })
    .await;
    assert_eq!(
        done["status"], "succeeded",
        "not taken up before the lease: {done}"
    );
    assert_eq!(done["attempts"], 2);
}

#[tokio::test]
async fn warm_node_ids_list_only_live_nodes() {
    let Some(deployment) = Deployment::new().await else {
        return;
    };
    let api = deployment.api().await;
    // A process with engines (node `n3`): enrolling there warms the profile on it.
    let mut engine_process = deployment
        .serve_with_engines(
            &deployment.redis,
            &deployment.database,
            "n3",
            "workers = 0\n",
        )
        .await;
    let beckett = std::fs::read("models/cache/test-audio/beckett.wav").unwrap();
    let (status, speaker) = engine_process
        .post_wav_form(
            "/v1/modules/scaiecho/speakers",
            ADMIN_KEY,
            &[("label", "Beckett")],
            beckett,
        )
        .await;
    assert_eq!(status, 201, "{speaker}");
    assert_eq!(speaker["warm_node_ids"], json!(["n3"]), "{speaker}");
    let path = format!(
        "/v1/modules/scaiecho/speakers/{}",
        speaker["id"].as_str().unwrap()
    );
    let (status, seen) = api.get(&path, Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["warm_node_ids"], json!(["n3"]), "{seen}");
    // The node dies: once the registry stops hearing from it, it holds nothing.
    engine_process.kill();
    let start = Instant::now();
    loop {
        let (_, seen) = api.get(&path, Some(ADMIN_KEY)).await;
        if seen["warm_node_ids"] == json!([]) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{seen}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A stream socket that took its slot (the slot comes before `open`) and holds it, or
/// the close code it got instead.
async fn hold_stream(
    edge: &Server,
    path: &str,
) -> Result<crate::stream::Socket, (Vec<Value>, Option<u16>)> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}{path}", edge.base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    let bearer = format!("Bearer {ADMIN_KEY}").parse().unwrap();
    request.headers_mut().insert("authorization", bearer);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    // A refused stream says so at once; a held one stays silent until `open`.
    let first = match tokio::time::timeout(Duration::from_millis(750), socket.next()).await {
        Err(_) => return Ok(socket),
        Ok(first) => first,
    };
    let mut frames = Vec::new();
    if let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) = first {
        frames.push(serde_json::from_str(&text).unwrap());
    }
    let (rest, code) = crate::stream::until_close(&mut socket).await;
    frames.extend(rest);
    Err((frames, code))
}

#[tokio::test]
async fn a_tenants_stream_cap_holds_across_edges() {
    let Some(deployment) = Deployment::new().await else {
        return;
    };
    let caps = "[scaiecho]\nmax_streams_per_tenant = 2\n\
                [scaispeak]\nstream_max_per_tenant = 1\n";
    let edge1 = deployment.api_with(&deployment.redis, None, caps).await;
    let edge2 = deployment.api_with(&deployment.redis, None, caps).await;
    let listen = "/v1/modules/scaiecho/stream/transcribe";
    let first = hold_stream(&edge1, listen).await.expect("first stream");
    let _second = hold_stream(&edge2, listen).await.expect("second stream");
    // Two streams open, one on each edge: a third is refused on either.
    for edge in [&edge1, &edge2] {
        let (frames, code) = hold_stream(edge, listen).await.expect_err("refused");
        assert_eq!(code, Some(4429), "{frames:?}");
        assert_eq!(frames[0]["code"], "RATE_LIMITED", "{frames:?}");
    }
    // Closing one on edge 1 frees its slot for edge 2.
    drop(first);
    let start = Instant::now();
    let _third = loop {
        match hold_stream(&edge2, listen).await {
            Ok(socket) => break socket,
            Err(refused) => {
                assert!(start.elapsed() < Duration::from_secs(10), "{refused:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // Speech streams have their own cap, shared the same way.
    let speak = "/v1/modules/scaispeak/stream/speak";
    let _speaking = hold_stream(&edge1, speak).await.expect("speech stream");
    let (frames, code) = hold_stream(&edge2, speak).await.expect_err("refused");
    assert_eq!(code, Some(4429), "{frames:?}");
}

#[tokio::test]
async fn processes_starting_together_migrate_a_fresh_database_once() {
    let Some(database) = postgres_database().await else {
        return;
    };
    // Edges and workers of a deployment start at once on an empty database.
    let runs: Vec<_> = (0..4)
        .map(|_| {
            tokio::process::Command::new(crate::support::binary())
                .arg("migrate")
                .env("SCAIGRID_DATABASE_URL", &database)
                .env("SCAIGRID_DATA_DIR", tempfile::tempdir().unwrap().keep())
                .output()
        })
        .collect();
    for output in futures_util::future::join_all(runs).await {
        let output = output.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
    }
}

/// An instance's state changes on one PostgreSQL connection, with and without a new
/// hourly cost: the cached statement must take both (a NULL there once made the next
/// number fail with "incorrect binary data format in bind parameter 9").
#[tokio::test]
async fn instance_state_changes_reuse_their_statement_on_postgres() {
    use scaigrid::db::instances::{self, Change};
    use sqlx::Connection;
    let Some(url) = crate::support::postgres_database().await else {
        return;
    };
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    for sql in [
        include_str!("../../src/db/migrations/0013_instances.sql"),
        include_str!("../../src/db/migrations/0014_balances.sql"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    instances::create(&mut conn, ("inst_pg", "tnt", "key"), ("m", "{}", 1))
        .await
        .unwrap();
    let steps: [(&str, &str, Option<f64>); 4] = [
        ("pending", "failed", None),
        ("failed", "pending", None),
        ("pending", "starting", Some(1.5)),
        ("starting", "failed", None),
    ];
    for (from, to, hourly_cost) in steps {
        let change = Change {
            hourly_cost,
            ..Change::default()
        };
        let moved = instances::transition(&mut conn, "inst_pg", (&[from], to), change)
            .await
            .unwrap();
        assert!(moved, "{from} -> {to}");
    }
    let row = instances::get(&mut conn, "tnt", "inst_pg")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.state.as_str(), row.hourly_cost), ("failed", 1.5));
}
