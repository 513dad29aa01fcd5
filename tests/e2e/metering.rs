//! Streams metered while they run (#26): usage recorded at checkpoints, the budget and
//! the audio rate limit enforced mid-stream (an `error` frame, close 4429), and a
//! killed server keeping every checkpoint it wrote, once.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::scaispeak::{Got, connect_speak_as, next};
use crate::stream::{Socket, Token, connect, next_frame, pcm_16k, send_json};
use crate::support::{ADMIN_KEY, Options, Server, TestTenant};

/// One cost unit per second of audio (and 0.01 a character), checkpoints every second.
pub(crate) const PRICED: &str = "[accounting]\naudio_second_cost = 1.0\ncharacter_cost = 0.01\n\
                      stream_checkpoint_seconds = 1.0\n";

/// A tenant with both speech modules and a daily budget of `limit`.
async fn budgeted(server: &Server, slug: &str, limit: f64) -> TestTenant {
    let tenant = server.tenant(slug).await;
    for module in ["scaiecho", "scaispeak"] {
        server.enable_module(&tenant.admin_key, module).await;
    }
    let body = json!({"scope": "tenant", "scope_id": tenant.id, "period": "day", "limit": limit});
    let (status, budget) = server
        .post("/v1/accounting/budgets", Some(&tenant.admin_key), body)
        .await;
    assert_eq!(status, 201, "{budget}");
    tenant
}

/// The tenant's usage of `module` so far: (audio seconds, characters, cost).
async fn usage_of(server: &Server, key: &str, module: &str) -> (f64, u64, f64) {
    let (status, usage) = server
        .get("/v1/accounting/usage?group_by=module", Some(key))
        .await;
    assert_eq!(status, 200, "{usage}");
    let rows = usage["data"].as_array().unwrap();
    rows.iter()
        .find(|row| row["key"] == module)
        .map(|row| {
            (
                row["audio_seconds"].as_f64().unwrap(),
                row["characters"].as_u64().unwrap(),
                row["cost"].as_f64().unwrap(),
            )
        })
        .unwrap_or_default()
}

/// Sends 16 kHz PCM as fast as the server takes it (0.1 s a frame) while reading its
/// frames: every text frame and the close code once the server closes.
async fn pour(socket: Socket, pcm: Vec<u8>) -> (Vec<Value>, Option<u16>) {
    send_while_reading(socket, pcm, None).await
}

/// [`pour`] at `speed` times real time, or as fast as the server takes it.
async fn send_while_reading(
    socket: Socket,
    pcm: Vec<u8>,
    speed: Option<f64>,
) -> (Vec<Value>, Option<u16>) {
    let (mut sink, mut source) = socket.split();
    let writer = tokio::spawn(async move {
        for chunk in pcm.chunks(3200) {
            let frame = Message::Binary(chunk.to_vec().into());
            if sink.send(frame).await.is_err() {
                return;
            }
            if let Some(speed) = speed {
                tokio::time::sleep(std::time::Duration::from_secs_f64(0.1 / speed)).await;
            }
        }
        let close = json!({"type": "close"}).to_string();
        let _ = sink.send(Message::Text(close.into())).await;
    });
    let mut frames = Vec::new();
    let deadline = std::time::Duration::from_secs(120);
    let code = loop {
        match tokio::time::timeout(deadline, source.next()).await.unwrap() {
            Some(Ok(Message::Text(text))) => frames.push(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            None | Some(Err(_)) => break None,
        }
    };
    writer.abort();
    (frames, code)
}

/// A stream on each of `servers` pours `pcm` at once: every one is closed with 4429
/// after an `error` frame `BUDGET_EXCEEDED`.
async fn all_refused(servers: &[&Server], key: &str, pcm: &[u8]) {
    let mut streams = Vec::new();
    for server in servers {
        let socket = open_pcm(server, key).await;
        streams.push(tokio::spawn(pour(socket, pcm.to_vec())));
    }
    for stream in streams {
        let (frames, code) = stream.await.unwrap();
        assert_eq!(code, Some(4429), "{frames:?}");
        let error = frames.iter().find(|f| f["type"] == "error").unwrap();
        assert_eq!(error["code"], "BUDGET_EXCEEDED", "{error}");
    }
}

async fn open_pcm(server: &Server, key: &str) -> Socket {
    let mut socket = connect(server, Token::Header(key)).await;
    let open = json!({"type": "open", "media_type": "audio/pcm;rate=16000", "language": "en"});
    send_json(&mut socket, open).await;
    let ready = next_frame(&mut socket).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    socket
}

#[tokio::test]
async fn streams_past_their_budget_or_audio_limit_close_with_4429_within_a_checkpoint() {
    let server = Server::start_with(Options {
        config_toml: Some(PRICED.into()),
        ..Options::default()
    })
    .await;
    // 30 s of audio for four streams of 44 s each, poured as fast as the server takes it.
    let limit = 30.0;
    let tenant = budgeted(&server, "metered", limit).await;
    let audio = pcm_16k("two_cities.wav");
    all_refused(&[&server; 4], &tenant.admin_key, &audio).await;
    // What was heard until then is recorded: at least what the holds let through, at
    // most the limit plus one checkpoint (and a frame) a stream.
    let (seconds, _, cost) = usage_of(&server, &tenant.admin_key, "scaiecho").await;
    eprintln!("metering: four streams on a budget of {limit} recorded {seconds:.2} s");
    assert!(
        (limit - 4.0..=limit + 4.0 * 1.1).contains(&seconds),
        "{seconds}"
    );
    assert!((cost - seconds).abs() < 1e-6, "{cost} {seconds}");
    // Many checkpoints, four requests.
    let (_, usage) = server
        .get(
            "/v1/accounting/usage?group_by=module",
            Some(&tenant.admin_key),
        )
        .await;
    assert_eq!(usage["data"][0]["requests"], 4, "{usage}");
    // Spent: the next stream is refused before `ready`.
    let mut socket = connect(&server, Token::Header(&tenant.admin_key)).await;
    let (frames, code) = crate::stream::until_close(&mut socket).await;
    assert_eq!(code, Some(4429), "{frames:?}");

    // A speech stream fed text without end: closed the same way; its characters and
    // seconds count.
    let limit = 8.0;
    let speaker = budgeted(&server, "metered-speech", limit).await;
    let mut socket = connect_speak_as(&server, &speaker.admin_key).await;
    let open = json!({"type": "open", "output": {"codec": "pcm_s16le"}});
    socket
        .send(Message::Text(open.to_string().into()))
        .await
        .unwrap();
    let mut sent = 0;
    let mut frames = Vec::new();
    // A sentence every 300 ms: more than the voice speaks, fewer than the queue holds.
    let mut last = std::time::Instant::now() - std::time::Duration::from_secs(1);
    let code = loop {
        if sent < 100 && last.elapsed().as_millis() >= 300 {
            last = std::time::Instant::now();
            let text = json!({"type": "text", "text": "The meter runs on. "});
            socket
                .send(Message::Text(text.to_string().into()))
                .await
                .unwrap();
            sent += 1;
        }
        match tokio::time::timeout(std::time::Duration::from_millis(50), next(&mut socket)).await {
            Ok(Got::Json(frame)) => frames.push(frame),
            Ok(Got::Audio(_)) | Err(_) => {}
            Ok(Got::Closed(code)) => break code,
        }
    };
    assert_eq!(code, Some(4429), "{frames:?}");
    let error = frames.iter().find(|f| f["type"] == "error").unwrap();
    assert_eq!(error["code"], "BUDGET_EXCEEDED", "{error}");
    let (seconds, characters, cost) = usage_of(&server, &speaker.admin_key, "scaispeak").await;
    eprintln!("metering: a speech stream on a budget of {limit} cost {cost:.2}");
    assert!(characters > 0 && seconds > 0.0, "{seconds} {characters}");
    assert!(
        (cost - (seconds + characters as f64 * 0.01)).abs() < 1e-6,
        "{cost}"
    );
    // One stream: at most the limit plus one stretch (a sentence of about 1.5 s here).
    assert!((limit - 2.0..=limit + 3.0).contains(&cost), "{cost}");

    // An audio rate limit of 5 s a minute on a key: the stream that hears more closes
    // with 4429 `RATE_LIMITED` at the checkpoint after it.
    let (status, key) = server
        .post(
            "/v1/api-keys",
            Some(ADMIN_KEY),
            json!({"name": "slow", "roles": ["member"],
                "rate_limit": {"audio_seconds_per_minute": 5}}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().unwrap();
    let socket = open_pcm(&server, key).await;
    let (frames, code) = pour(socket, audio).await;
    assert_eq!(code, Some(4429), "{frames:?}");
    let error = frames.iter().find(|f| f["type"] == "error").unwrap();
    assert_eq!(error["code"], "RATE_LIMITED", "{error}");
    assert_eq!(error["dimension"], "audio_seconds", "{error}");
}

#[tokio::test]
async fn a_killed_server_keeps_each_checkpoint_of_a_running_stream_once() {
    let temp = tempfile::tempdir().unwrap();
    let options = || Options {
        data_dir: Some(temp.path().join("data")),
        config_toml: Some(PRICED.into()),
        ..Options::default()
    };
    let mut server = Server::start_with(options()).await;
    let mut socket = open_pcm(&server, ADMIN_KEY).await;
    // Six and a half seconds heard, the stream left open: six checkpoints.
    let audio = pcm_16k("two_cities.wav");
    for chunk in audio[..6 * 32_000 + 16_000].chunks(3200) {
        let frame = Message::Binary(chunk.to_vec().into());
        socket.send(frame).await.unwrap();
    }
    let query = "SELECT COUNT(*) FROM usage_records WHERE module = 'scaiecho'";
    for _ in 0..200 {
        if server.sql_count(query).await >= 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // What the flusher wrote by the time the server dies (the lag is a second at most).
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let written = server
        .sql_texts("SELECT CAST(SUM(audio_seconds) AS TEXT) FROM usage_records")
        .await;
    let written: f64 = written[0].as_deref().unwrap().parse().unwrap();
    server.kill();
    drop(socket);

    // Every checkpoint written is there after the restart, once; together they are
    // all that was heard but the last unfinished stretch.
    let server = Server::start_with(options()).await;
    let (seconds, _, cost) = usage_of(&server, ADMIN_KEY, "scaiecho").await;
    assert!((seconds - written).abs() < 1e-6, "{seconds} {written}");
    assert!((5.5..=6.5).contains(&seconds), "{seconds}");
    assert!((cost - seconds).abs() < 1e-6, "{cost}");
    // One record a checkpoint, named by the stream and its number.
    let ids = server
        .sql_texts("SELECT id FROM usage_records WHERE module = 'scaiecho' ORDER BY id")
        .await;
    let ids: Vec<String> = ids.into_iter().map(Option::unwrap).collect();
    assert!((6..=7).contains(&ids.len()), "{ids:?}");
    let stream = ids[0].strip_suffix("_000000").unwrap();
    assert!(stream.starts_with("use_strm_"), "{ids:?}");
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(*id, format!("{stream}_{n:06}"));
    }
}

/// Queues an async transcription of beckett.wav: its id.
async fn queue_job(server: &Server, key: &str, query: &str) -> String {
    let wav = std::fs::read("models/cache/test-audio/beckett.wav").unwrap();
    let response = server
        .http
        .post(server.url(&format!(
            "/v1/modules/scaiecho/transcribe?async=true{query}"
        )))
        .bearer_auth(key)
        .header("content-type", "audio/wav")
        .body(wav)
        .send()
        .await
        .unwrap();
    let (status, job) = crate::support::read(response).await;
    assert_eq!(status, 202, "{job}");
    job["id"].as_str().unwrap().to_owned()
}

async fn ended_job(server: &Server, key: &str, id: &str) -> Value {
    for _ in 0..1200 {
        let (status, job) = server
            .get(&format!("/v1/modules/scaiecho/jobs/{id}"), Some(key))
            .await;
        assert_eq!(status, 200, "{job}");
        if ["succeeded", "failed"].contains(&job["status"].as_str().unwrap()) {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("job {id} never ended");
}

#[tokio::test]
async fn jobs_spent_or_unservable_by_the_time_they_run_fail_with_their_reasons() {
    // Jobs wait in the queue (no workers here) until a worker process starts.
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let config = format!("{PRICED}[jobs]\nworkers = 0\n");
    let server = Server::start_with(Options {
        data_dir: Some(data.clone()),
        config_toml: Some(config),
        ..Options::default()
    })
    .await;
    // One tenant's budget is spent between enqueue and dispatch (its admin lowers it
    // to nothing); another tenant's policy leaves its job no backend it may use.
    let spent = budgeted(&server, "job-spent", 100.0).await;
    let quota = queue_job(&server, &spent.admin_key, "").await;
    let body = json!({"scope": "tenant", "scope_id": spent.id, "period": "day", "limit": 0.0});
    let (status, budget) = server
        .post("/v1/accounting/budgets", Some(&spent.admin_key), body)
        .await;
    assert_eq!(status, 201, "{budget}");
    let pinned = budgeted(&server, "job-pinned", 100.0).await;
    let backend = queue_job(
        &server,
        &pinned.admin_key,
        "&backend_preference=self_hosted",
    )
    .await;
    let (status, policy) = server
        .send(
            reqwest::Method::PATCH,
            "/v1/modules/scaiecho/tenant-policy",
            Some(&pinned.admin_key),
            Some(json!({"allowed_backends": ["B"]})),
        )
        .await;
    assert_eq!(status, 200, "{policy}");

    let _worker = Server::start_with(Options {
        command: "worker",
        data_dir: Some(data),
        config_toml: Some(format!("{PRICED}[jobs]\nworkers = 1\n")),
        bootstrap_key: false,
        ..Options::default()
    })
    .await;
    let job = ended_job(&server, &spent.admin_key, &quota).await;
    assert_eq!(
        (
            &job["status"],
            &job["status_reason"],
            &job["failure_reason"]
        ),
        (
            &json!("failed"),
            &json!("quota exceeded"),
            &json!("QUOTA_EXCEEDED")
        ),
        "{job}"
    );
    let job = ended_job(&server, &pinned.admin_key, &backend).await;
    assert_eq!(
        (
            &job["status"],
            &job["status_reason"],
            &job["failure_reason"]
        ),
        (
            &json!("failed"),
            &json!("backend unavailable"),
            &json!("BACKEND_UNAVAILABLE")
        ),
        "{job}"
    );
    // Neither cost anything.
    for key in [&spent.admin_key, &pinned.admin_key] {
        assert_eq!(usage_of(&server, key, "scaiecho").await, (0.0, 0, 0.0));
    }
}

#[tokio::test]
async fn a_tenant_admin_reads_and_lowers_a_platform_budget_but_never_raises_or_deletes_it() {
    let server = Server::start().await;
    let tenant = server.tenant("under-platform").await;
    let budgets = "/v1/accounting/budgets";
    let body = |limit: f64| json!({"scope": "tenant", "scope_id": tenant.id, "period": "month", "limit": limit});
    let (status, set) = server.post(budgets, Some(ADMIN_KEY), body(50.0)).await;
    assert_eq!((status, &set["set_by"]), (201, &json!("platform")), "{set}");
    let (status, seen) = server.get(budgets, Some(&tenant.admin_key)).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["data"][0]["set_by"], "platform", "{seen}");
    assert_eq!(seen["data"][0]["limit"], 50.0, "{seen}");

    let (status, refused) = server
        .post(budgets, Some(&tenant.admin_key), body(60.0))
        .await;
    crate::support::assert_error(status, &refused, 403, "AUTHZ_PERMISSION_DENIED");
    assert_eq!(refused["error"]["set_by"], "platform", "{refused}");
    let (status, lowered) = server
        .post(budgets, Some(&tenant.admin_key), body(40.0))
        .await;
    assert_eq!(status, 201, "{lowered}");
    assert_eq!(
        (&lowered["limit"], &lowered["set_by"]),
        (&json!(40.0), &json!("platform"))
    );
    let (status, refused) = server
        .post(budgets, Some(&tenant.admin_key), body(45.0))
        .await;
    crate::support::assert_error(status, &refused, 403, "AUTHZ_PERMISSION_DENIED");
    let at = format!("{budgets}/{}", set["id"].as_str().unwrap());
    let (status, refused) = server
        .send(reqwest::Method::DELETE, &at, Some(&tenant.admin_key), None)
        .await;
    crate::support::assert_error(status, &refused, 403, "AUTHZ_PERMISSION_DENIED");
    // A member reads nothing it may not; the platform deletes its own.
    let (status, _) = server
        .post(budgets, Some(&tenant.member_key), body(1.0))
        .await;
    assert_eq!(status, 403);
    let platform_at = format!("{at}?tenant_id={}", tenant.id);
    let (status, _) = server
        .send(reqwest::Method::DELETE, &platform_at, Some(ADMIN_KEY), None)
        .await;
    assert_eq!(status, 204);

    // The tenant's own budget is its own to raise and delete.
    let (status, own) = server
        .post(budgets, Some(&tenant.admin_key), body(10.0))
        .await;
    assert_eq!((status, &own["set_by"]), (201, &json!("tenant")), "{own}");
    let (status, raised) = server
        .post(budgets, Some(&tenant.admin_key), body(20.0))
        .await;
    assert_eq!((status, &raised["limit"]), (201, &json!(20.0)), "{raised}");
    let at = format!("{budgets}/{}", own["id"].as_str().unwrap());
    let (status, _) = server
        .send(reqwest::Method::DELETE, &at, Some(&tenant.admin_key), None)
        .await;
    assert_eq!(status, 204);
}

/// Sends 16 kHz PCM at `speed` times real time while reading the stream's frames: the
/// `done` frame's audio seconds (`None` when the stream ended otherwise).
async fn pace(socket: Socket, pcm: Vec<u8>, speed: f64) -> Option<f64> {
    let (frames, _) = send_while_reading(socket, pcm, Some(speed)).await;
    assert!(frames.iter().all(|f| f["type"] != "error"), "{frames:?}");
    let done = frames.iter().find(|f| f["type"] == "done")?;
    done["usage"]["audio_seconds"].as_f64()
}

fn gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

#[tokio::test]
async fn usage_heard_while_the_database_is_down_spills_to_disk_and_is_all_written_after() {
    // A PostgreSQL of this test's own, to stop and start.
    let services = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        services.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let port = crate::scaled::free_port().to_string();
    let postgres = |action: &str| {
        let root = env!("CARGO_MANIFEST_DIR");
        std::process::Command::new(format!("{root}/scripts/services/postgres"))
            .arg(action)
            .env("SCAIGRID_TEST_SERVICES", services.path())
            .env("SCAIGRID_TEST_PG_PORT", &port)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let Some(base) = postgres("start") else {
        eprintln!("\n!!!!!!!! SKIPPED: PostgreSQL could not start on this machine !!!!!!!!\n");
        return;
    };
    let database = crate::support::postgres_database_on(&base).await.unwrap();
    // Four records in memory at most: the rest of an outage goes to the spill file.
    let server = Server::start_with(Options {
        database_url: Some(database),
        config_toml: Some(format!("{PRICED}max_buffered_records = 4\n")),
        ..Options::default()
    })
    .await;
    let spill = server.data_dir.join("accounting-spill.jsonl");
    let audio = pcm_16k("two_cities.wav");
    let mut streams = Vec::new();
    for _ in 0..3 {
        let socket = open_pcm(&server, ADMIN_KEY).await;
        streams.push(tokio::spawn(pace(socket, audio.clone(), 1.25)));
    }
    let rss_before = rss_kib(server.pid());
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    // Thirty seconds without the database, under three streams' checkpoints.
    postgres("stop").unwrap();
    let mut buffered: f64 = 0.0;
    let mut spilled: f64 = 0.0;
    for _ in 0..60 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let metrics = server.metrics().await;
        buffered = buffered.max(gauge(&metrics, "scaigrid_accounting_buffered_records"));
        spilled = spilled.max(gauge(&metrics, "scaigrid_accounting_spilled_records"));
    }
    assert!(spill.exists());
    assert!(spilled > 10.0, "{spilled}");
    // The cap, and what one flush interval of three streams adds (a checkpoint and a
    // quarter a second each; the bound leaves room for a slow flush).
    assert!(buffered <= 4.0 + 3.0 * 4.0 + 2.0, "{buffered}");
    let rss_outage = rss_kib(server.pid());
    postgres("start").unwrap();

    let mut heard = 0.0;
    for stream in streams {
        heard += stream.await.unwrap().expect("every stream ends with done");
    }
    // Everything heard is written, once; the file is gone.
    let (seconds, _, cost) = usage_of(&server, ADMIN_KEY, "scaiecho").await;
    assert!((seconds - heard).abs() < 0.01, "{seconds} of {heard}");
    assert!((cost - seconds).abs() < 1e-6);
    assert!(!spill.exists());
    let metrics = server.metrics().await;
    assert_eq!(gauge(&metrics, "scaigrid_accounting_spilled_records"), 0.0);
    eprintln!(
        "metering: {spilled} records spilled at most, {buffered} buffered at most; \
         RSS {rss_before} KiB before the outage, {rss_outage} KiB in it"
    );
    drop(server);
    postgres("stop");
}

#[tokio::test]
async fn streams_on_two_edges_share_one_budget_through_redis() {
    let Some(deployment) = crate::scaled::Deployment::new().await else {
        return;
    };
    let lines =
        "workers = 0\n[accounting]\naudio_second_cost = 1.0\nstream_checkpoint_seconds = 1.0\n";
    let (redis, database) = (deployment.redis.clone(), deployment.database.clone());
    let one = deployment
        .serve_with_engines(&redis, &database, "meter-a", lines)
        .await;
    let two = deployment
        .serve_with_engines(&redis, &database, "meter-b", lines)
        .await;
    let limit = 20.0;
    let tenant = budgeted(&one, "metered-scaled", limit).await;
    let audio = pcm_16k("two_cities.wav");
    all_refused(&[&one, &two, &one, &two], &tenant.admin_key, &audio).await;
    // Both edges' records reach SQL; together within four stretches of the limit.
    let (mut seen_one, _, _) = usage_of(&one, &tenant.admin_key, "scaiecho").await;
    let (seen_two, _, _) = usage_of(&two, &tenant.admin_key, "scaiecho").await;
    seen_one = seen_one.max(seen_two);
    eprintln!("metering: four streams on two edges, budget {limit}: {seen_one:.2} s");
    assert!(
        (limit - 4.0..=limit + 4.0 * 1.1).contains(&seen_one),
        "{seen_one}"
    );
}
