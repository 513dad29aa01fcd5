//! ScaiEcho's speaker library against the real server and models: enrollment with
//! preflight, listing, warm status and fan-out, tenant isolation, permissions, the
//! tombstone with its audit row and per-node `error_summary`, and `pending` profiles on
//! a process without engines.

use serde_json::{Value, json};

use crate::support::{ADMIN_KEY, Options, Server, assert_error};

const SPEAKERS: &str = "/v1/modules/scaiecho/speakers";

fn clip(file: &str) -> Vec<u8> {
    std::fs::read(format!("models/cache/test-audio/{file}")).unwrap()
}

async fn enroll(server: &Server, token: &str, label: &str, wav: Vec<u8>) -> (u16, Value) {
    server
        .post_wav_form(SPEAKERS, token, &[("label", label)], wav)
        .await
}

/// 16 kHz mono WAV of `samples`.
fn wav(samples: &[f32]) -> Vec<u8> {
    media::encode::wav_s16(samples, 16_000, 1)
}

#[tokio::test]
async fn speakers_enroll_warm_list_isolate_and_tombstone() {
    let server = Server::start().await;
    let (status, speaker) = enroll(&server, ADMIN_KEY, "Beckett", clip("beckett.wav")).await;
    assert_eq!(status, 201, "{speaker}");
    assert_eq!(speaker["enrollment_status"], "ready", "{speaker}");
    assert_eq!(speaker["label"], "Beckett");
    assert_eq!(speaker["preflight"]["passed"], true);
    let nodes = speaker["warm_node_ids"].as_array().unwrap().clone();
    assert_eq!(nodes.len(), 1, "{speaker}");
    let id = speaker["id"].as_str().unwrap().to_owned();
    // One live speaker per label.
    let (status, body) = enroll(&server, ADMIN_KEY, "Beckett", clip("beckett.wav")).await;
    assert_error(status, &body, 409, "CONFLICT");
    // Preflight: too short, and a clip with no speech in it.
    let (status, body) = enroll(&server, ADMIN_KEY, "Short", wav(&vec![0.1; 16_000])).await;
    assert_error(status, &body, 422, "SCAIECHO_SPEAKER_PREFLIGHT_FAILED");
    let reasons = body["error"]["preflight"]["fail_reasons"]
        .as_array()
        .unwrap();
    assert!(reasons.contains(&json!("duration_below_minimum")), "{body}");
    let hum: Vec<f32> = (0..16_000 * 6)
        .map(|i| 0.001 * (i as f32 * 0.05).sin())
        .collect();
    let (status, body) = enroll(&server, ADMIN_KEY, "Hum", wav(&hum)).await;
    assert_error(status, &body, 422, "SCAIECHO_SPEAKER_PREFLIGHT_FAILED");
    assert!(
        body["error"]["preflight"]["fail_reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("low_voice_activity_ratio")),
        "{body}"
    );
    let (status, body) = enroll(&server, ADMIN_KEY, "spk_3", clip("beckett.wav")).await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    // Listed, fetched, warm.
    let (status, list) = server.get(SPEAKERS, Some(ADMIN_KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    let (status, one) = server
        .get(&format!("{SPEAKERS}/{id}"), Some(ADMIN_KEY))
        .await;
    assert_eq!((status, &one["id"]), (200, &json!(id)));
    let (status, warm) = server
        .get(&format!("{SPEAKERS}/{id}/warm"), Some(ADMIN_KEY))
        .await;
    assert_eq!(status, 200);
    assert_eq!(warm["warm_node_ids"], json!(nodes));
    let (status, warm) = server
        .post(&format!("{SPEAKERS}/{id}/warm"), Some(ADMIN_KEY), json!({}))
        .await;
    assert_eq!(status, 200, "{warm}");
    assert_eq!(warm["warm_node_ids"], json!(nodes));
    assert_eq!(warm["error_summary"], json!({}));
    // Another tenant sees nothing; a viewer reads but cannot write.
    let other = server.tenant("speakers-other").await;
    let (status, _) = server
        .post(
            "/v1/modules/scaiecho/enable",
            Some(&other.admin_key),
            json!({}),
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = server
        .get(&format!("{SPEAKERS}/{id}"), Some(&other.admin_key))
        .await;
    assert_error(status, &body, 404, "NOT_FOUND");
    let (_, list) = server.get(SPEAKERS, Some(&other.admin_key)).await;
    assert_eq!(list["data"], json!([]));
    let viewer = server.key(&other.admin_key, &other.id, &["viewer"]).await;
    let (status, _) = server.get(SPEAKERS, Some(&viewer)).await;
    assert_eq!(status, 200);
    let (status, body) = enroll(&server, &viewer, "Viewer", clip("beckett.wav")).await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");
    let unenabled = server.tenant("speakers-off").await;
    let (status, body) = server.get(SPEAKERS, Some(&unenabled.admin_key)).await;
    assert_error(status, &body, 403, "MODULE_NOT_ENABLED");
    // A replica on another node holds the profile too; this process cannot reach it.
    server
        .sql(&format!(
            "INSERT INTO scaiecho_speaker_warm (speaker_id, node_id, warmed_at) \
             VALUES ('{id}', 'gpu-node-7', 0)"
        ))
        .await;
    // The node itself holds the profile (its `Warm` RPC), and drops it on delete. The
    // listing shows each node's info as of its last probe (every second).
    let warm_on_node = |nodes: Value| nodes["data"][0]["warm_speakers"].as_u64().unwrap();
    let mut held = 0;
    for _ in 0..50 {
        let (_, listed) = server.get("/v1/infra/nodes", Some(ADMIN_KEY)).await;
        held = warm_on_node(listed);
        if held >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(held >= 1, "no profile warm on the node");
    let (status, deleted) = server
        .send(
            reqwest::Method::DELETE,
            &format!("{SPEAKERS}/{id}"),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["deleted"], true);
    assert_eq!(deleted["evicted_node_ids"], json!(nodes));
    assert!(
        deleted["error_summary"]["gpu-node-7"].is_string(),
        "{deleted}"
    );
    for _ in 0..50 {
        let (_, listed) = server.get("/v1/infra/nodes", Some(ADMIN_KEY)).await;
        if warm_on_node(listed) == held - 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, listed) = server.get("/v1/infra/nodes", Some(ADMIN_KEY)).await;
    assert_eq!(
        warm_on_node(listed),
        held - 1,
        "the node kept the deleted profile"
    );
    // Tombstoned: still readable by id, gone from the list, audited, not deletable twice.
    let (_, one) = server
        .get(&format!("{SPEAKERS}/{id}"), Some(ADMIN_KEY))
        .await;
    assert!(one["deleted_at"].is_string(), "{one}");
    let (_, list) = server.get(SPEAKERS, Some(ADMIN_KEY)).await;
    assert_eq!(list["data"], json!([]));
    let audits = server
        .sql_count(&format!(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'scaiecho.speaker.delete' \
             AND target_id = '{id}'"
        ))
        .await;
    assert_eq!(audits, 1);
    // The voiceprint itself (biometric data) is gone, not just hidden.
    let embeddings = server
        .sql_count(&format!(
            "SELECT COUNT(*) FROM scaiecho_speakers WHERE id = '{id}' AND embedding IS NOT NULL"
        ))
        .await;
    assert_eq!(embeddings, 0, "a deleted speaker kept its embedding");
    let (status, body) = server
        .send(
            reqwest::Method::DELETE,
            &format!("{SPEAKERS}/{id}"),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_error(status, &body, 404, "NOT_FOUND");
    // The label is free again.
    let (status, _) = enroll(&server, ADMIN_KEY, "Beckett", clip("beckett.wav")).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn without_a_speaker_node_enrollment_stays_pending_with_a_note() {
    let server = Server::start_with(Options {
        config_toml: Some("[engines]\nenabled = false\n".into()),
        ..Options::default()
    })
    .await;
    let (status, speaker) = enroll(&server, ADMIN_KEY, "Nagg", clip("beckett.wav")).await;
    assert_eq!(status, 201, "{speaker}");
    assert_eq!(speaker["enrollment_status"], "pending");
    assert_eq!(speaker["warm_node_ids"], json!([]));
    assert!(
        speaker["note"].as_str().unwrap().contains("warm"),
        "{speaker}"
    );
    let id = speaker["id"].as_str().unwrap();
    let (status, warm) = server
        .post(&format!("{SPEAKERS}/{id}/warm"), Some(ADMIN_KEY), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(warm["enrollment_status"], "pending");
    assert_eq!(
        warm["error_summary"].as_object().unwrap().len(),
        1,
        "{warm}"
    );
}
