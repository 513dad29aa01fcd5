//! Secrets at rest end to end: an upstream API key and a webhook signing secret are
//! stored sealed (nothing in the data folder holds them in plaintext), still work
//! (the upstream gets its key, deliveries verify), survive a key rotation across a
//! restart, legacy plaintext rows are sealed at start, and a process without the key
//! refuses to start instead of serving broken credentials.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::json;

use crate::support::{ADMIN_KEY, Options, Server, refused_start};
use crate::upstream;
use crate::webhooks::{add_event, config, deliveries_when, receiver, subscribe};

const UPSTREAM_KEY: &str = "sk-upstream-sealed-at-rest-0123456789";
const HOOK_SECRET: &str = "whsec_sealed_at_rest_0123456789";

/// Whether any file under `dir` contains `needle` (the database, its WAL, anything).
fn data_contains(dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        match path.is_dir() {
            true => data_contains(&path, needle),
            false => std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|window| window == needle.as_bytes()),
        }
    })
}

/// The key id of a sealed value (`sgv1:<id>:...`).
fn key_id(stored: &str) -> &str {
    assert!(stored.starts_with("sgv1:"), "not sealed: {stored}");
    stored.split(':').nth(1).unwrap()
}

async fn stored(server: &Server) -> (String, String) {
    let api_key = server
        .sql_texts("SELECT api_key FROM gateway_backends")
        .await
        .remove(0)
        .unwrap();
    let secret = server
        .sql_texts("SELECT secret FROM webhooks")
        .await
        .remove(0)
        .unwrap();
    (api_key, secret)
}

async fn chat_status(server: &Server, key: &str) -> u16 {
    let (status, _) = server
        .post(
            "/v1/chat/completions",
            Some(key),
            json!({"model": "sealed/model", "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 5}),
        )
        .await;
    status
}

#[tokio::test]
async fn upstream_keys_and_webhook_secrets_are_sealed_rotated_and_required() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let options = |env: Vec<(String, String)>| Options {
        data_dir: Some(data.clone()),
        config_toml: Some(config(200, "")),
        env,
        ..Options::default()
    };
    let server = Server::start_with(options(vec![])).await;
    let up = upstream::start("sealed", UPSTREAM_KEY).await;
    let (status, backend) = server
        .post(
            "/v1/backends",
            Some(ADMIN_KEY),
            json!({"name": "sealed", "kind": "openai", "base_url": up.base,
                "api_key": UPSTREAM_KEY}),
        )
        .await;
    assert_eq!(status, 201, "{backend}");
    let (status, body) = server
        .post(
            "/v1/models",
            Some(ADMIN_KEY),
            json!({"slug": "sealed/model", "routing": {"backends": [{"backend_id": backend["id"]}]}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let tenant = server.tenant("sealed").await;
    assert_eq!(chat_status(&server, &tenant.member_key).await, 200);
    let hook = receiver(0).await;
    let (status, webhook) = server
        .post(
            "/v1/webhooks",
            Some(&tenant.admin_key),
            json!({"url": hook.url, "events": ["voice.ready"], "secret": HOOK_SECRET}),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    assert_eq!(webhook["secret"], HOOK_SECRET, "shown once, in plaintext");
    let id = webhook["id"].as_str().unwrap().to_owned();

    // Sealed in the rows; in plaintext nowhere in the data folder; the generated key
    // file is readable by the owner only.
    let (api_key, secret) = stored(&server).await;
    let first_key_id = key_id(&api_key).to_owned();
    assert_eq!(key_id(&secret), first_key_id);
    let key_file = data.join("secrets_key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(server);
    for plaintext in [UPSTREAM_KEY, HOOK_SECRET] {
        assert!(
            !data_contains(&data, plaintext),
            "{plaintext} stored in plaintext"
        );
    }

    // Rotation: a new key, the old one as previous. Everything is re-sealed under the
    // new key at start, the upstream still gets its key, deliveries still verify.
    let old_key = std::fs::read_to_string(&key_file).unwrap();
    let new_key = "ab".repeat(32);
    let rotated = vec![
        ("SCAIGRID_SECRETS_KEY".to_owned(), new_key.clone()),
        ("SCAIGRID_SECRETS_PREVIOUS_KEYS".to_owned(), old_key.clone()),
    ];
    let server = Server::start_with(options(rotated.clone())).await;
    let (api_key, secret) = stored(&server).await;
    let second_key_id = key_id(&api_key).to_owned();
    assert_ne!(second_key_id, first_key_id);
    assert_eq!(key_id(&secret), second_key_id);
    assert_eq!(chat_status(&server, &tenant.member_key).await, 200);
    add_event(&server, "evt_sealed", &tenant.id, "voice.ready").await;
    deliveries_when(&server, &tenant.admin_key, &id, |list| {
        list["data"][0]["status"] == "succeeded"
    })
    .await;
    {
        let seen = hook.seen.lock().unwrap();
        let (headers, body) = &seen[0];
        let header = headers["x-scaigrid-signature"].to_str().unwrap();
        let timestamp: i64 = header
            .split(',')
            .find_map(|part| part.strip_prefix("t="))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            header,
            scaigrid::webhooks::sign::signature(&[HOOK_SECRET], timestamp, body.as_bytes())
        );
    }

    // A row written in plaintext (by an older version) is sealed by the next start.
    server
        .sql(&format!(
            "UPDATE gateway_backends SET api_key = '{UPSTREAM_KEY}'"
        ))
        .await;
    drop(server);
    let server = Server::start_with(options(vec![(
        "SCAIGRID_SECRETS_KEY".to_owned(),
        new_key.clone(),
    )]))
    .await;
    let (api_key, _) = stored(&server).await;
    assert_eq!(key_id(&api_key), second_key_id);
    assert_eq!(chat_status(&server, &tenant.member_key).await, 200);
    drop(server);
    assert!(!data_contains(&data, UPSTREAM_KEY));

    // The old key alone (the new one forgotten): the process refuses to start and says
    // which setting, rather than serving without the credentials.
    let stderr = refused_start(
        data.join("test-config.toml"),
        data.clone(),
        vec![("SCAIGRID_SECRETS_KEY", old_key.trim().to_owned())],
    )
    .await;
    assert!(stderr.contains("secrets.key"), "{stderr}");
    assert!(
        stderr.contains(&format!("sealed with key {second_key_id}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_webhook_secret_copied_into_another_row_does_not_sign() {
    let server = Server::start_with(Options {
        config_toml: Some(config(200, "max_attempts = 1\n")),
        ..Options::default()
    })
    .await;
    let hook = receiver(0).await;
    let tenant = server.tenant("copied").await;
    let a = subscribe(&server, &tenant.admin_key, &hook.url, &["voice.ready"]).await;
    let b = subscribe(&server, &tenant.admin_key, &hook.url, &["voice.ready"]).await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    // Someone with write access to the database copies A's sealed secret into B.
    server
        .sql(&format!(
            "UPDATE webhooks SET secret = (SELECT secret FROM webhooks WHERE id = '{a}') \
             WHERE id = '{b}'"
        ))
        .await;
    add_event(&server, "evt_copied", &tenant.id, "voice.ready").await;
    let list = deliveries_when(&server, &tenant.admin_key, b, |list| {
        list["data"][0]["status"] == "failed"
    })
    .await;
    let error = list["data"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("signing secret cannot be opened"), "{list}");
    deliveries_when(&server, &tenant.admin_key, a, |list| {
        list["data"][0]["status"] == "succeeded"
    })
    .await;
    // B's delivery never reached the receiver unsigned; A's did, signed.
    assert_eq!(hook.seen.lock().unwrap().len(), 1);
}

/// On PostgreSQL every process must be given the same key: `serve` without one refuses
/// to start and says which setting; `migrate` needs none.
#[tokio::test]
async fn on_postgres_serve_needs_the_key_and_migrate_does_not() {
    let Some(database) = crate::support::postgres_database().await else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let config = temp.path().join("config.toml");
    std::fs::write(&config, "[engines]\nenabled = false\n").unwrap();
    let stderr = refused_start(
        config,
        temp.path().join("data"),
        vec![("SCAIGRID_DATABASE_URL", database.clone())],
    )
    .await;
    assert!(
        stderr.contains("secrets.key (SCAIGRID_SECRETS_KEY): required with PostgreSQL"),
        "{stderr}"
    );
    let migrated = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::support::binary())
            .arg("migrate")
            .env("SCAIGRID_DATABASE_URL", database)
            .env_remove("SCAIGRID_SECRETS_KEY")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
}
