//! Model instances on the embedded default's node (seed 003's launch flow): a launch
//! that no node satisfies fails with its documented code and keeps the failed instance
//! with its reason and hint; one that fits runs (the node carries the model, speech
//! works), stops (the model is unloaded again, a node's own models stay), and a node
//! that does not load in time fails it with `PROVIDER_TIMEOUT`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ADMIN_KEY, Options, Server};

const INSTANCES: &str = "/v1/instances";
const PIPER: &str = "audio.tts.piper-joe";

/// Polls an instance until it leaves `starting` (at most two minutes).
pub(crate) async fn settled(server: &Server, key: &str, id: &str) -> Value {
    for _ in 0..1200 {
        let (status, instance) = server.get(&format!("{INSTANCES}/{id}"), Some(key)).await;
        assert_eq!(status, 200, "{instance}");
        if !["pending", "starting"].contains(&instance["state"].as_str().unwrap()) {
            return instance;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("instance {id} never settled");
}

/// Deletes what is at `at` (204), which is then gone (404).
async fn deleted(server: &Server, at: &str) {
    let (status, body) = server
        .send(reqwest::Method::DELETE, at, Some(ADMIN_KEY), None)
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = server.get(at, Some(ADMIN_KEY)).await;
    assert_eq!(status, 404);
}

async fn models_loaded(server: &Server) -> Vec<String> {
    let (_, nodes) = server.get("/v1/infra/nodes", Some(ADMIN_KEY)).await;
    serde_json::from_value(nodes["data"][0]["models_loaded"].clone()).unwrap()
}

async fn speak(server: &Server) -> u16 {
    let body = json!({ "text": "Instances speak." });
    server
        .post("/v1/modules/scaispeak/speak", Some(ADMIN_KEY), body)
        .await
        .0
}

#[tokio::test]
async fn instances_launch_run_stop_and_fail_with_their_reasons() {
    // Speech to text only at start; 700 MB for models (316 taken, 384 free); a launch
    // gets 8 s to load.
    let server = Server::start_with(Options {
        config_toml: Some(
            "[engines]\nnode_id = \"inst\"\nmemory_limit_mb = 700\nregion = \"eu-west\"\n\
             price_per_hour = 1.5\nmodels = [\"audio.stt.whisper-tiny-en\"]\n\
             [instances]\nlaunch_timeout_seconds = 8\n"
                .into(),
        ),
        ..Options::default()
    })
    .await;
    let (_, nodes) = server.get("/v1/infra/nodes", Some(ADMIN_KEY)).await;
    let node = &nodes["data"][0];
    assert_eq!(node["region"], "eu-west", "{node}");
    assert_eq!(node["capacity_tier"], "standard", "{node}");
    assert_eq!(node["price_per_hour"], 1.5, "{node}");
    // The node is priced: the platform tenant needs a balance to launch on it.
    let (_, me) = server.get("/v1/me", Some(ADMIN_KEY)).await;
    let top_up = json!({"tenant_id": me["tenant"]["id"], "amount": 100});
    let (status, topped) = server
        .post("/v1/accounting/balance/top-up", Some(ADMIN_KEY), top_up)
        .await;
    assert_eq!(status, 200, "{topped}");

    // Nothing in that region: SMART_NO_MATCH names it, and the instance is kept failed.
    let launch = json!({"model": PIPER, "smart": {"region": "us-east"}});
    let (status, refused) = server.post(INSTANCES, Some(ADMIN_KEY), launch).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "SMART_NO_MATCH", "{refused}");
    assert_eq!(refused["error"]["constraint"], "region", "{refused}");
    let id = refused["error"]["instance_id"].as_str().unwrap();
    let (_, failed) = server
        .get(&format!("{INSTANCES}/{id}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["failure_reason"], "SMART_NO_MATCH", "{failed}");
    assert!(
        failed["remediation"].as_str().unwrap().contains("Loosen"),
        "{failed}"
    );
    let too_dear = json!({"model": PIPER, "smart": {"max_price": 1.0}});
    let (status, refused) = server.post(INSTANCES, Some(ADMIN_KEY), too_dear).await;
    assert_eq!(
        (status, &refused["error"]["constraint"]),
        (409, &json!("max_price")),
        "{refused}"
    );

    // Whisper base (700 MB) fits nowhere: GPU_INCOMPATIBLE with the need and the room.
    let big = json!({"model": "audio.stt.whisper-base"});
    let (status, refused) = server.post(INSTANCES, Some(ADMIN_KEY), big).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "GPU_INCOMPATIBLE", "{refused}");
    assert_eq!(refused["error"]["needed_mb"], 700, "{refused}");
    assert!(
        refused["error"]["available_mb"].as_u64().unwrap() <= 384,
        "{refused}"
    );

    // Piper fits: the instance runs, the node carries it, speech works.
    assert_eq!(speak(&server).await, 502);
    let launch = json!({"model": PIPER, "smart": {"region": "eu-west", "max_price": 2}});
    let (status, started) = server.post(INSTANCES, Some(ADMIN_KEY), launch).await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["state"], "starting", "{started}");
    assert_eq!(started["node_ids"], json!(["inst"]), "{started}");
    let piper = started["id"].as_str().unwrap().to_owned();
    let running = settled(&server, ADMIN_KEY, &piper).await;
    assert_eq!(running["state"], "running", "{running}");
    assert!(running["started_at"].is_string(), "{running}");
    assert!(models_loaded(&server).await.contains(&PIPER.to_owned()));
    assert_eq!(speak(&server).await, 200);

    // An instance of a model the node carries of its own: stopping it leaves it there.
    let own = json!({"model": "audio.stt.whisper-tiny-en"});
    let (status, started) = server.post(INSTANCES, Some(ADMIN_KEY), own).await;
    assert_eq!(status, 202, "{started}");
    let tiny = started["id"].as_str().unwrap().to_owned();
    assert_eq!(settled(&server, ADMIN_KEY, &tiny).await["state"], "running");

    // A live instance is not deleted; a stopped one is. Stopping unloads what the
    // launch loaded, and only that.
    let at = format!("{INSTANCES}/{piper}");
    let (status, body) = server
        .send(reqwest::Method::DELETE, &at, Some(ADMIN_KEY), None)
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("CONFLICT")),
        "{body}"
    );
    for id in [&piper, &tiny] {
        let (status, stopped) = server
            .post(
                &format!("{INSTANCES}/{id}/stop"),
                Some(ADMIN_KEY),
                json!({}),
            )
            .await;
        assert_eq!(
            (status, &stopped["state"]),
            (200, &json!("stopped")),
            "{stopped}"
        );
    }
    let loaded = models_loaded(&server).await;
    assert!(!loaded.contains(&PIPER.to_owned()), "{loaded:?}");
    assert!(
        loaded.contains(&"audio.stt.whisper-tiny-en".to_owned()),
        "{loaded:?}"
    );
    assert_eq!(speak(&server).await, 502);
    deleted(&server, &at).await;

    // A node that does not answer while it should load: PROVIDER_TIMEOUT after 8 s.
    let pid = nodes["data"][0]["pid"].as_u64().unwrap();
    signal(pid, "STOP");
    let launch = json!({"model": PIPER});
    let (status, started) = server.post(INSTANCES, Some(ADMIN_KEY), launch).await;
    let id = started["id"].as_str().map(str::to_owned);
    let ended = match id {
        Some(id) => settled(&server, ADMIN_KEY, &id).await,
        None => Value::Null,
    };
    signal(pid, "CONT");
    assert_eq!(status, 202, "{started}");
    assert_eq!(ended["state"], "failed", "{ended}");
    assert_eq!(ended["failure_reason"], "PROVIDER_TIMEOUT", "{ended}");
    assert!(
        ended["remediation"].as_str().unwrap().contains("re-route"),
        "{ended}"
    );
    // The load the node got while it did not answer is undone once it does.
    for _ in 0..100 {
        if !models_loaded(&server).await.contains(&PIPER.to_owned()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!models_loaded(&server).await.contains(&PIPER.to_owned()));
    // Started again once the node answers: placed anew, and running.
    let id = ended["id"].as_str().unwrap();
    let mut restarted = Value::Null;
    for _ in 0..50 {
        let path = format!("{INSTANCES}/{id}/start");
        let (status, body) = server.post(&path, Some(ADMIN_KEY), json!({})).await;
        if status == 202 {
            restarted = settled(&server, ADMIN_KEY, id).await;
            break;
        }
        // The node may still count as not answering for a moment.
        assert_eq!(body["error"]["code"], "SMART_NO_MATCH", "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(restarted["state"], "running", "{restarted}");
    assert_eq!(restarted["failure_reason"], Value::Null, "{restarted}");
}

#[tokio::test]
async fn instances_are_the_tenants_own_and_launches_are_checked() {
    let server = Server::start().await;
    let tenant = server.tenant("inst-tenant").await;
    let other = server.tenant("inst-other").await;
    // A member may not launch; a tenant admin may.
    let launch = json!({"model": "audio.stt.whisper-tiny-en"});
    let (status, body) = server
        .post(INSTANCES, Some(&tenant.member_key), launch.clone())
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, started) = server
        .post(INSTANCES, Some(&tenant.admin_key), launch)
        .await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap();
    assert_eq!(
        settled(&server, &tenant.admin_key, id).await["state"],
        "running"
    );
    // Another tenant sees nothing of it.
    let (status, _) = server
        .get(&format!("{INSTANCES}/{id}"), Some(&other.admin_key))
        .await;
    assert_eq!(status, 404);
    let (_, listed) = server.get(INSTANCES, Some(&other.admin_key)).await;
    assert_eq!(listed["data"], json!([]), "{listed}");
    let (_, listed) = server.get(INSTANCES, Some(&tenant.admin_key)).await;
    assert_eq!(listed["data"][0]["id"], id, "{listed}");
    let path = format!("{INSTANCES}/{id}/stop");
    let (status, _) = server.post(&path, Some(&other.admin_key), json!({})).await;
    assert_eq!(status, 404);
    // Bad launches are refused before anything is kept.
    for (body, code) in [
        (json!({"model": "audio.stt.nope"}), "MODEL_NOT_FOUND"),
        (
            json!({"model": "audio.vad.silero", "replicas": 0}),
            "INVALID_REQUEST",
        ),
        (
            json!({"model": "audio.vad.silero", "replicas": 17}),
            "INVALID_REQUEST",
        ),
        (
            json!({"model": "audio.vad.silero", "smart": {"max_price": -1}}),
            "INVALID_REQUEST",
        ),
        (
            json!({"model": "audio.vad.silero", "smart": {"gpu": "a100"}}),
            "INVALID_REQUEST",
        ),
    ] {
        let (status, refused) = server.post(INSTANCES, Some(&tenant.admin_key), body).await;
        assert_eq!(refused["error"]["code"], code, "{status} {refused}");
    }
    let (_, listed) = server.get(INSTANCES, Some(&tenant.admin_key)).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    // Two replicas on a one-node deployment: too few nodes.
    let two = json!({"model": "audio.vad.silero", "replicas": 2});
    let (status, refused) = server.post(INSTANCES, Some(&tenant.admin_key), two).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["constraint"], "replicas", "{refused}");
}

fn signal(pid: u64, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

#[tokio::test]
async fn a_running_instance_serves_through_a_balancer_debits_the_balance_and_fails_when_it_runs_out()
 {
    const TOPPED: f64 = 6.0;
    // A node at 3,600 cost units an hour (one a second), billed every second; a
    // launch needs a balance of 1.
    let server = Server::start_with(Options {
        config_toml: Some(
            "[engines]\nprice_per_hour = 3600\n\
             [instances]\nlaunch_minimum = 1\nbilling_interval_seconds = 1\n"
                .into(),
        ),
        ..Options::default()
    })
    .await;
    let tenant = server.tenant("inst-billing").await;
    let balance = |key: &str| {
        let (server, key) = (&server, key.to_owned());
        async move {
            let (status, balance) = server.get("/v1/accounting/balance", Some(&key)).await;
            assert_eq!(status, 200, "{balance}");
            balance
        }
    };
    assert_eq!(balance(&tenant.admin_key).await["balance"], 0.0);

    // Below the launch threshold: 402, and the instance is kept, failed, with the hint.
    let launch = json!({"model": "audio.stt.whisper-tiny-en"});
    let (status, refused) = server
        .post(INSTANCES, Some(&tenant.admin_key), launch.clone())
        .await;
    assert_eq!(status, 402, "{refused}");
    assert_eq!(
        refused["error"]["code"], "BILLING_BELOW_MINIMUM",
        "{refused}"
    );
    assert_eq!(refused["error"]["minimum"], 1.0, "{refused}");
    let id = refused["error"]["instance_id"].as_str().unwrap();
    let (_, failed) = server
        .get(&format!("{INSTANCES}/{id}"), Some(&tenant.admin_key))
        .await;
    assert_eq!(
        failed["failure_reason"], "BILLING_BELOW_MINIMUM",
        "{failed}"
    );
    assert!(
        failed["remediation"].as_str().unwrap().contains("Top up"),
        "{failed}"
    );

    // Only a platform admin tops up, by a positive amount, a tenant that exists.
    let top_up = "/v1/accounting/balance/top-up";
    let (status, _) = server
        .post(
            top_up,
            Some(&tenant.admin_key),
            json!({"tenant_id": tenant.id, "amount": 5}),
        )
        .await;
    assert_eq!(status, 403);
    for amount in [json!(-5), json!(0), json!(1e13)] {
        let body = json!({"tenant_id": tenant.id, "amount": amount});
        let (status, refused) = server.post(top_up, Some(ADMIN_KEY), body).await;
        assert_eq!(status, 400, "{refused}");
    }
    let (status, _) = server
        .post(
            top_up,
            Some(ADMIN_KEY),
            json!({"tenant_id": "tnt_nope", "amount": 5}),
        )
        .await;
    assert_eq!(status, 404);
    let body = json!({"tenant_id": tenant.id, "amount": TOPPED});
    let (status, topped) = server.post(top_up, Some(ADMIN_KEY), body).await;
    assert_eq!(
        (status, &topped["balance"]),
        (200, &json!(TOPPED)),
        "{topped}"
    );

    // Running, it costs 3,600 an hour; billed each second, the balance lasts about
    // six seconds, in which it serves through a balancer.
    let (status, started) = server
        .post(INSTANCES, Some(&tenant.admin_key), launch)
        .await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["hourly_cost"], 3600.0, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    assert_eq!(
        settled(&server, &tenant.admin_key, &id).await["state"],
        "running"
    );
    assert_eq!(
        balance(&tenant.admin_key).await["running_cost_per_hour"],
        3600.0
    );
    server.enable_module(&tenant.admin_key, "scaiecho").await;
    let body = json!({"name": "paid", "instances": [{"instance_id": id}]});
    let (status, balancer) = server
        .post("/v1/balancers", Some(&tenant.admin_key), body)
        .await;
    assert_eq!(status, 201, "{balancer}");
    let paid = [("model", "paid")];
    let (status, body, node) = transcribe_as(&server, &tenant.admin_key, &paid).await;
    assert_eq!(
        (status, node.as_str()),
        (200, started["node_ids"][0].as_str().unwrap()),
        "{body}"
    );
    let mut ended = Value::Null;
    for _ in 0..300 {
        let (_, instance) = server
            .get(&format!("{INSTANCES}/{id}"), Some(&tenant.admin_key))
            .await;
        if instance["state"] == "failed" {
            ended = instance;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ended["failure_reason"], "BALANCE_EXHAUSTED", "{ended}");
    let account = balance(&tenant.admin_key).await;
    let left = account["balance"].as_f64().unwrap();
    // Overdrawn by less than two intervals' worth: the last whole interval billed, and
    // what ran of the next until the instance was stopped.
    assert!((-2.0..=0.0).contains(&left), "{account}");
    assert_eq!(account["running_cost_per_hour"], 0.0, "{account}");
    let entries = account["entries"].as_array().unwrap();
    let debits: f64 = entries
        .iter()
        .filter(|e| e["kind"] == "instance" && e["instance_id"] == id.as_str())
        .map(|e| e["amount"].as_f64().unwrap())
        .sum();
    assert!((debits - (left - TOPPED)).abs() < 1e-6, "{account}");
    // Its balancer has nothing left to serve with.
    let (status, body, _) = transcribe_as(&server, &tenant.admin_key, &paid).await;
    crate::support::assert_error(status, &body, 503, "MODEL_UNAVAILABLE");
    assert!(entries.iter().any(|e| e["kind"] == "top_up"), "{account}");
    // Another tenant's balance is not this one's business.
    let other = server.tenant("inst-billing-other").await;
    let path = format!("/v1/accounting/balance?tenant_id={}", tenant.id);
    let (status, _) = server.get(&path, Some(&other.admin_key)).await;
    assert_eq!(status, 404);
    let (status, seen) = server.get(&path, Some(ADMIN_KEY)).await;
    assert_eq!((status, &seen["balance"]), (200, &json!(left)), "{seen}");
}

/// A transcription of beckett.wav with form `fields`: the status, the body and the
/// nodes that served it (`X-Scaigrid-Node`).
async fn transcribe(server: &Server, fields: &[(&str, &str)]) -> (u16, Value, String) {
    transcribe_as(server, ADMIN_KEY, fields).await
}

/// [`transcribe`] with the key of another tenant.
async fn transcribe_as(
    server: &Server,
    key: &str,
    fields: &[(&str, &str)],
) -> (u16, Value, String) {
    let wav = std::fs::read("models/cache/test-audio/beckett.wav").unwrap();
    let part = reqwest::multipart::Part::bytes(wav)
        .file_name("a.wav")
        .mime_str("audio/wav")
        .unwrap();
    let mut form = reqwest::multipart::Form::new().part("file", part);
    for (name, value) in fields {
        form = form.text(name.to_string(), value.to_string());
    }
    let response = server
        .http
        .post(server.url("/v1/modules/scaiecho/transcribe"))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let node = response
        .headers()
        .get("x-scaigrid-node")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let (status, body) = crate::support::read(response).await;
    (status, body, node)
}

#[tokio::test]
async fn a_balancer_binds_transcriptions_to_its_instances_nodes() {
    let server = Server::start_with(Options {
        config_toml: Some("[engines]\nnode_processes = 2\nnode_id = \"bal\"\n".into()),
        ..Options::default()
    })
    .await;
    let tiny = "audio.stt.whisper-tiny-en";
    let (status, started) = server
        .post(INSTANCES, Some(ADMIN_KEY), json!({"model": tiny}))
        .await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let node = started["node_ids"][0].as_str().unwrap().to_owned();
    assert_eq!(settled(&server, ADMIN_KEY, &id).await["state"], "running");
    let body = json!({"name": "english", "instances": [{"instance_id": id}]});
    let (status, balancer) = server.post("/v1/balancers", Some(ADMIN_KEY), body).await;
    assert_eq!(status, 201, "{balancer}");
    assert_eq!(balancer["model"], tiny, "{balancer}");
    assert_eq!(balancer["healthy"], 1, "{balancer}");
    assert_eq!(balancer["members"][0]["weight"], 1, "{balancer}");

    // Through the balancer, every call goes to its instance's node; without it, ties
    // between the two idle nodes take turns.
    for _ in 0..6 {
        let (status, body, served) = transcribe(&server, &[("model", "english")]).await;
        assert_eq!((status, served.as_str()), (200, node.as_str()), "{body}");
    }
    let mut elsewhere = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (status, body, served) = transcribe(&server, &[("model", "whisper-1")]).await;
        assert_eq!(status, 200, "{body}");
        elsewhere.insert(served);
    }
    assert_eq!(elsewhere.len(), 2, "{elsewhere:?}");

    // Its only instance stopped: the balancer has nothing healthy and says so.
    let path = format!("{INSTANCES}/{id}/stop");
    let (status, _) = server.post(&path, Some(ADMIN_KEY), json!({})).await;
    assert_eq!(status, 200);
    let at = format!("/v1/balancers/{}", balancer["id"].as_str().unwrap());
    let (_, view) = server.get(&at, Some(ADMIN_KEY)).await;
    assert_eq!(view["healthy"], 0, "{view}");
    assert_eq!(view["members"][0]["state"], "stopped", "{view}");
    let (status, body, _) = transcribe(&server, &[("model", "english")]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "MODEL_UNAVAILABLE", "{body}");
    assert_eq!(body["error"]["balancer"], "english", "{body}");

    // Bad balancers are refused; another tenant's instances are not found.
    let vad = server
        .post(
            INSTANCES,
            Some(ADMIN_KEY),
            json!({"model": "audio.vad.silero"}),
        )
        .await
        .1;
    let vad = vad["id"].as_str().unwrap();
    let other = server.tenant("bal-other").await;
    for (body, status, code) in [
        (
            json!({"name": "english", "instances": [{"instance_id": id}]}),
            409,
            "CONFLICT",
        ),
        (
            json!({"name": "Bad Name", "instances": [{"instance_id": id}]}),
            400,
            "INVALID_REQUEST",
        ),
        (
            json!({"name": "none", "instances": []}),
            400,
            "INVALID_REQUEST",
        ),
        (
            json!({"name": "twice", "instances": [{"instance_id": id}, {"instance_id": id}]}),
            400,
            "INVALID_REQUEST",
        ),
        (
            json!({"name": "zero", "instances": [{"instance_id": id, "weight": 0}]}),
            400,
            "INVALID_REQUEST",
        ),
        (
            json!({"name": "mixed", "instances": [{"instance_id": id}, {"instance_id": vad}]}),
            400,
            "INVALID_REQUEST",
        ),
        (
            json!({"name": "ghost", "instances": [{"instance_id": "inst_nope"}]}),
            404,
            "NOT_FOUND",
        ),
    ] {
        let (got, refused) = server.post("/v1/balancers", Some(ADMIN_KEY), body).await;
        assert_eq!(
            (got, &refused["error"]["code"]),
            (status, &json!(code)),
            "{refused}"
        );
    }
    let theirs = json!({"name": "theirs", "instances": [{"instance_id": id}]});
    let (status, _) = server
        .post("/v1/balancers", Some(&other.admin_key), theirs)
        .await;
    assert_eq!(status, 404);
    let (status, _) = server.get(&at, Some(&other.admin_key)).await;
    assert_eq!(status, 404);
    deleted(&server, &at).await;
}

/// Calls each node has answered for the edge so far (`scaigrid_node_calls_total`).
async fn node_calls(server: &Server) -> std::collections::BTreeMap<String, f64> {
    let text = server.metrics().await;
    text.lines()
        .filter_map(|line| line.strip_prefix("scaigrid_node_calls_total{node=\""))
        .filter_map(|rest| rest.split_once("\"} "))
        .map(|(node, count)| (node.to_owned(), count.trim().parse().unwrap()))
        .collect()
}

/// The nodes whose call counts grew between two readings.
fn grew(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> Vec<String> {
    after
        .iter()
        .filter(|(node, count)| before.get(*node).copied().unwrap_or(0.0) < **count)
        .map(|(node, _)| node.clone())
        .collect()
}

/// Polls a job until it ends (at most two minutes).
async fn job_ended(server: &Server, path: &str) -> Value {
    for _ in 0..1200 {
        let (status, job) = server.get(path, Some(ADMIN_KEY)).await;
        assert_eq!(status, 200, "{job}");
        if ["succeeded", "failed"].contains(&job["status"].as_str().unwrap()) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {path} never ended");
}

/// Launches one instance of `model` and puts it behind a balancer named `name`: the
/// instance id and its node.
async fn balanced(server: &Server, model: &str, name: &str) -> (String, String) {
    let (status, started) = server
        .post(INSTANCES, Some(ADMIN_KEY), json!({"model": model}))
        .await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    assert_eq!(settled(server, ADMIN_KEY, &id).await["state"], "running");
    let body = json!({"name": name, "instances": [{"instance_id": id}]});
    let (status, balancer) = server.post("/v1/balancers", Some(ADMIN_KEY), body).await;
    assert_eq!(status, 201, "{balancer}");
    let node = started["node_ids"][0].as_str().unwrap().to_owned();
    (id, node)
}

#[tokio::test]
async fn a_balancer_binds_jobs_streams_speech_and_sessions_to_its_instances_nodes() {
    use crate::scaispeak::{Got, connect_speak, next, text};
    use crate::stream::{Token, connect, final_text, finish_pcm, next_frame, pcm_16k, send_json};

    let server = Server::start_with(Options {
        config_toml: Some("[engines]\nnode_processes = 2\nnode_id = \"every\"\n".into()),
        ..Options::default()
    })
    .await;
    let (ears, ears_node) = balanced(&server, "audio.stt.whisper-tiny-en", "ears").await;
    let (_, voice_node) = balanced(&server, PIPER, "voice").await;

    // Transcription: a queued job (bound again when it runs) and a live stream.
    let before = node_calls(&server).await;
    let (status, job, _) = transcribe(&server, &[("model", "ears"), ("async", "true")]).await;
    assert_eq!(status, 202, "{job}");
    let path = format!("/v1/modules/scaiecho/jobs/{}", job["id"].as_str().unwrap());
    let job = job_ended(&server, &path).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let mut socket = connect(&server, Token::Header(ADMIN_KEY)).await;
    let open = json!({"type": "open", "media_type": "audio/pcm;rate=16000", "language": "en",
        "model": "ears"});
    send_json(&mut socket, open).await;
    assert_eq!(next_frame(&mut socket).await["type"], "ready");
    let (frames, code) = finish_pcm(&mut socket, &pcm_16k("beckett.wav")).await;
    assert_eq!(code, Some(1000), "{frames:?}");
    assert!(!final_text(&frames).is_empty(), "{frames:?}");
    assert_eq!(
        grew(&before, &node_calls(&server).await),
        [ears_node.as_str()]
    );

    // Speech: inline, queued, OpenAI's alias and a stream.
    let before = node_calls(&server).await;
    let speak = "/v1/modules/scaispeak/speak";
    let body = json!({"text": "Bound to a balancer.", "model": "voice"});
    let (status, spoken) = server.post(speak, Some(ADMIN_KEY), body).await;
    assert_eq!(status, 200, "{spoken}");
    let body = json!({"text": "Queued and bound.", "model": "voice", "async": true});
    let (status, job) = server.post(speak, Some(ADMIN_KEY), body).await;
    assert_eq!(status, 202, "{job}");
    let path = format!("/v1/modules/scaispeak/jobs/{}", job["id"].as_str().unwrap());
    assert_eq!(job_ended(&server, &path).await["status"], "succeeded");
    let body = json!({"input": "The alias.", "model": "voice"});
    let (status, spoken) = server.post("/v1/audio/speech", Some(ADMIN_KEY), body).await;
    assert_eq!(status, 200, "{spoken}");
    let mut socket = connect_speak(&server).await;
    text(&mut socket, json!({"type": "open", "model": "voice"})).await;
    let Got::Json(ready) = next(&mut socket).await else {
        panic!("no ready")
    };
    assert_eq!(ready["type"], "ready", "{ready}");
    text(
        &mut socket,
        json!({"type": "text", "text": "A bound stream."}),
    )
    .await;
    text(&mut socket, json!({"type": "close"})).await;
    let mut audio = 0;
    let code = loop {
        match next(&mut socket).await {
            Got::Audio(bytes) => audio += bytes.len(),
            Got::Json(frame) => assert_ne!(frame["type"], "error", "{frame}"),
            Got::Closed(code) => break code,
        }
    };
    assert_eq!(code, Some(1000));
    assert!(audio > 0);
    assert_eq!(
        grew(&before, &node_calls(&server).await),
        [voice_node.as_str()]
    );

    // A balancer of the other kind is a bad request; a name that is no balancer
    // (OpenAI's) changes nothing.
    let body = json!({"text": "Wrong kind.", "model": "ears"});
    let (status, refused) = server.post(speak, Some(ADMIN_KEY), body).await;
    crate::support::assert_error(status, &refused, 400, "INVALID_REQUEST");
    assert_eq!(refused["error"]["field"], "model", "{refused}");
    // A model name past 256 bytes is refused before anything is stored.
    let long = "m".repeat(300);
    let body = json!({"text": "Too long a name.", "model": long, "async": true});
    let (status, refused) = server.post(speak, Some(ADMIN_KEY), body).await;
    crate::support::assert_error(status, &refused, 400, "INVALID_REQUEST");
    let (status, refused, _) = transcribe(&server, &[("model", &long), ("async", "true")]).await;
    crate::support::assert_error(status, &refused, 400, "INVALID_REQUEST");
    let body = json!({"input": "OpenAI's name.", "model": "tts-1"});
    assert_eq!(
        server
            .post("/v1/audio/speech", Some(ADMIN_KEY), body)
            .await
            .0,
        200
    );
    let mut socket = connect(&server, Token::Header(ADMIN_KEY)).await;
    send_json(&mut socket, json!({"type": "open", "model": "voice"})).await;
    let frame = next_frame(&mut socket).await;
    assert_eq!(frame["code"], "INVALID_REQUEST", "{frame}");

    // The transcription balancer's instance stopped: nothing healthy behind it, said
    // at once by every path (a WebRTC session at its creation).
    let path = format!("{INSTANCES}/{ears}/stop");
    assert_eq!(server.post(&path, Some(ADMIN_KEY), json!({})).await.0, 200);
    let (status, body, _) = transcribe(&server, &[("model", "ears"), ("async", "true")]).await;
    crate::support::assert_error(status, &body, 503, "MODEL_UNAVAILABLE");
    let mut socket = connect(&server, Token::Header(ADMIN_KEY)).await;
    let open = json!({"type": "open", "media_type": "audio/pcm;rate=16000", "model": "ears"});
    send_json(&mut socket, open).await;
    let frame = next_frame(&mut socket).await;
    assert_eq!(frame["code"], "MODEL_UNAVAILABLE", "{frame}");
    assert_eq!(frame["balancer"], "ears", "{frame}");
    let (_, code) = crate::stream::until_close(&mut socket).await;
    assert_eq!(code, Some(4502));
    let sessions = "/v1/modules/scaiecho/sessions";
    let (status, body) = server
        .post(sessions, Some(ADMIN_KEY), json!({"model": "ears"}))
        .await;
    crate::support::assert_error(status, &body, 503, "MODEL_UNAVAILABLE");
    let (status, body) = server
        .post(sessions, Some(ADMIN_KEY), json!({"model": "whisper-1"}))
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn an_inference_out_of_memory_fails_its_instance_with_oom_killed_and_the_node_lives_on() {
    // Debug builds fail a synthesis of this word as a device out of memory would.
    let server = Server::start_with(Options {
        env: vec![("SCAIGRID_TEST_NODE_OOM_ON".into(), "ballast".into())],
        ..Options::default()
    })
    .await;
    let (status, started) = server
        .post(INSTANCES, Some(ADMIN_KEY), json!({"model": PIPER}))
        .await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    assert_eq!(settled(&server, ADMIN_KEY, &id).await["state"], "running");
    assert_eq!(speak(&server).await, 200);

    let body = json!({ "text": "Too much ballast." });
    let (status, refused) = server
        .post("/v1/modules/scaispeak/speak", Some(ADMIN_KEY), body)
        .await;
    crate::support::assert_error(status, &refused, 503, "OOM_KILLED");
    // Billed: the speech that was made, not the one that failed before any audio.
    let speak_requests = || async {
        let row = server.module_usage(ADMIN_KEY, "scaispeak").await;
        row["requests"].as_u64().unwrap_or(0)
    };
    for _ in 0..50 {
        if speak_requests().await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past a flush interval (1 s): a record of the failed one would be there by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(speak_requests().await, 1);
    let mut failed = Value::Null;
    for _ in 0..100 {
        let (_, instance) = server
            .get(&format!("{INSTANCES}/{id}"), Some(ADMIN_KEY))
            .await;
        if instance["state"] == "failed" {
            failed = instance;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failed["failure_reason"], "OOM_KILLED", "{failed}");
    assert!(
        failed["remediation"].as_str().unwrap().contains("memory"),
        "{failed}"
    );
    assert!(
        failed["failure_detail"].as_str().unwrap().contains(PIPER),
        "{failed}"
    );
    // The request failed, not the node: speech goes on.
    assert_eq!(speak(&server).await, 200);
}
