//! Tenant isolation: tenant A's admin can neither read nor change B's objects, whether
//! by listing, by naming B's tenant id or by guessing B's object ids.

use reqwest::Method;
use serde_json::json;

use crate::support::{ADMIN_KEY, Backend, Server, assert_error};

#[tokio::test]
async fn tenants_never_see_each_other_sqlite() {
    tenant_isolation(Backend::Sqlite).await;
}

#[tokio::test]
async fn tenants_never_see_each_other_postgres() {
    tenant_isolation(Backend::Postgres).await;
}

async fn tenant_isolation(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    let a = server.tenant("tenant-a").await;
    let b = server.tenant("tenant-b").await;
    let (status, b_user) = server
        .post(
            "/v1/users",
            Some(&b.admin_key),
            json!({"email": "bob@b.example", "password": "long enough pw"}),
        )
        .await;
    assert_eq!(status, 201, "{b_user}");
    let b_user_id = b_user["id"].as_str().unwrap();
    let (_, b_keys) = server.get("/v1/api-keys", Some(&b.admin_key)).await;
    let b_key_id = b_keys[0]["id"].as_str().unwrap();

    // Lists are scoped to the caller's tenant.
    let (status, tenants) = server.get("/v1/tenants", Some(&a.admin_key)).await;
    assert_eq!(status, 200);
    assert_eq!(tenants.as_array().unwrap().len(), 1);
    assert_eq!(tenants[0]["id"], a.id.as_str());
    let (_, keys) = server.get("/v1/api-keys", Some(&a.admin_key)).await;
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .all(|k| k["tenant_id"] == a.id.as_str())
    );
    let (_, users) = server.get("/v1/users", Some(&a.admin_key)).await;
    assert!(users.as_array().unwrap().is_empty());

    // Naming B's tenant or guessing B's ids reads as "not found", never as B's data.
    let probes = [
        (Method::GET, format!("/v1/tenants/{}", b.id), None),
        (
            Method::PATCH,
            format!("/v1/tenants/{}", b.id),
            Some(json!({"name": "pwned"})),
        ),
        (Method::DELETE, format!("/v1/tenants/{}", b.id), None),
        (Method::GET, format!("/v1/users?tenant_id={}", b.id), None),
        (Method::GET, format!("/v1/users/{b_user_id}"), None),
        (
            Method::GET,
            format!("/v1/api-keys?tenant_id={}", b.id),
            None,
        ),
        (Method::GET, format!("/v1/api-keys/{b_key_id}"), None),
        (Method::DELETE, format!("/v1/api-keys/{b_key_id}"), None),
        (Method::GET, format!("/v1/roles?tenant_id={}", b.id), None),
        (
            Method::POST,
            "/v1/api-keys".to_owned(),
            Some(json!({"name": "x", "tenant_id": b.id})),
        ),
        (
            Method::POST,
            "/v1/users".to_owned(),
            Some(json!({"email": "m@a.example", "password": "long enough pw", "tenant_id": b.id})),
        ),
        (
            Method::POST,
            "/v1/grants".to_owned(),
            Some(
                json!({"subject_kind": "user", "subject_id": b_user_id, "roles": ["tenant_admin"]}),
            ),
        ),
        (
            Method::POST,
            "/v1/grants".to_owned(),
            Some(
                json!({"subject_kind": "api_key", "subject_id": b_key_id, "roles": ["tenant_admin"]}),
            ),
        ),
        (
            Method::POST,
            "/v1/modules/scaiecho/enable".to_owned(),
            Some(json!({"tenant_id": b.id})),
        ),
    ];
    for (method, path, body) in probes {
        let (status, response) = server
            .send(method.clone(), &path, Some(&a.admin_key), body)
            .await;
        assert_error(status, &response, 404, "NOT_FOUND");
        assert!(
            !response.to_string().contains("bob@b.example"),
            "{method} {path} leaked {response}"
        );
    }

    // B is untouched.
    let (status, _) = server.get("/v1/me", Some(&b.admin_key)).await;
    assert_eq!(status, 200);
    let (_, tenant) = server
        .get(&format!("/v1/tenants/{}", b.id), Some(ADMIN_KEY))
        .await;
    assert_eq!(tenant["name"], "tenant-b");
    let (_, me) = server.get("/v1/me", Some(&b.member_key)).await;
    assert_eq!(me["tenant"]["modules"], json!([]));
}

#[tokio::test]
async fn modules_enable_per_tenant() {
    let server = Server::start().await;
    let a = server.tenant("mods").await;
    let (status, modules) = server.get("/v1/modules", Some(&a.member_key)).await;
    assert_eq!(status, 200);
    assert!(
        modules
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["status"] == "available")
    );
    let (status, body) = server
        .post(
            "/v1/modules/scaiecho/enable",
            Some(&a.member_key),
            json!({}),
        )
        .await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");
    let response = server
        .http
        .post(server.url("/v1/modules/scaiecho/enable"))
        .bearer_auth(&a.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let (_, module) = server
        .get("/v1/modules/scaiecho", Some(&a.member_key))
        .await;
    assert_eq!(module["status"], "enabled");
    let (status, body) = server.get("/v1/modules/nope", Some(&a.member_key)).await;
    assert_error(status, &body, 404, "NOT_FOUND");
    // Calling a module the tenant has not enabled: MODULE_NOT_ENABLED.
    let (status, body) = server
        .post(
            "/v1/modules/scaispeak/speak",
            Some(&a.member_key),
            json!({"text": "hello"}),
        )
        .await;
    assert_error(status, &body, 403, "MODULE_NOT_ENABLED");
}

/// A module that cannot initialise (no engine loaded, no relay configured) shows
/// `error` with the reason; one with a relay configured is fine.
#[tokio::test]
async fn a_module_without_any_backend_is_in_error_with_its_reason() {
    let server = Server::start_with(crate::support::Options {
        config_toml: Some(
            "[engines]\nenabled = false\n[scaispeak]\nrelay_url = \"http://127.0.0.1:9\"\n\
             relay_api_key = \"k\"\n"
                .into(),
        ),
        ..crate::support::Options::default()
    })
    .await;
    let (status, module) = server
        .get("/v1/modules/scaiecho", Some(crate::support::ADMIN_KEY))
        .await;
    assert_eq!(status, 200, "{module}");
    assert_eq!(module["status"], "error");
    assert_eq!(module["enabled"], true);
    let reason = module["last_error"].as_str().unwrap();
    assert!(
        reason.contains("engines are disabled") && reason.contains("relay"),
        "{reason}"
    );
    let (_, module) = server
        .get("/v1/modules/scaispeak", Some(crate::support::ADMIN_KEY))
        .await;
    assert_eq!(module["status"], "enabled", "{module}");
    assert_eq!(module["last_error"], serde_json::Value::Null);
    assert_eq!(module["depends_on"], json!([]));
}
