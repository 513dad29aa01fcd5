//! Authentication: every failure code, API keys, local JWTs, refresh rotation, JWKS.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support::{ADMIN_KEY, Backend, JWT_SECRET, Server, assert_error};

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn local_jwt(secret: &str, sub: &str, tid: &str, exp: u64) -> String {
    let claims = json!({"iss": "scaigrid", "sub": sub, "tid": tid, "typ": "access",
        "iat": unix_now(), "exp": exp, "jti": "t"});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn create_user(server: &Server, tenant_id: &str, email: &str, roles: &[&str]) -> Value {
    server.user(tenant_id, email, roles).await
}

async fn login(server: &Server, email: &str, password: &str) -> (u16, Value) {
    server
        .post(
            "/v1/auth/token",
            None,
            json!({"email": email, "password": password}),
        )
        .await
}

#[tokio::test]
async fn api_key_failures_have_their_codes_sqlite() {
    api_key_failures(Backend::Sqlite).await;
}

#[tokio::test]
async fn api_key_failures_have_their_codes_postgres() {
    api_key_failures(Backend::Postgres).await;
}

async fn api_key_failures(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    let (status, body) = server.get("/v1/me", None).await;
    assert_error(status, &body, 401, "AUTH_TOKEN_MISSING");

    let response = server
        .http
        .get(server.url("/v1/me"))
        .header("Authorization", format!("Basic {ADMIN_KEY}"))
        .send()
        .await
        .unwrap();
    let (status, body) = crate::support::read(response).await;
    assert_error(status, &body, 401, "AUTH_TOKEN_INVALID");

    for garbage in [
        "hello",
        "sgk_not-a-real-key-at-all-000000000000",
        "a.b.c",
        "' OR 1=1 --",
    ] {
        let (status, body) = server.get("/v1/me", Some(garbage)).await;
        assert_error(status, &body, 401, "AUTH_TOKEN_INVALID");
    }

    let tenant = server.tenant("acme").await;
    let (status, _) = server.get("/v1/me", Some(&tenant.member_key)).await;
    assert_eq!(status, 200);

    // Revocation takes effect at once, although the key was just used (and cached).
    let (_, keys) = server
        .get(
            &format!("/v1/api-keys?tenant_id={}", tenant.id),
            Some(ADMIN_KEY),
        )
        .await;
    let member_id = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["roles"] == json!(["member"]))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, revoked) = server
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/api-keys/{member_id}"),
            Some(&tenant.admin_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    let (status, body) = server.get("/v1/me", Some(&tenant.member_key)).await;
    assert_error(status, &body, 401, "AUTH_TOKEN_REVOKED");

    // Expired key: age a fresh key in the database before its first use.
    let key = server.key(ADMIN_KEY, &tenant.id, &["viewer"]).await;
    let prefix: String = key.chars().take(12).collect();
    server
        .sql(&format!(
            "UPDATE api_keys SET expires_at = 1000 WHERE key_prefix = '{prefix}'"
        ))
        .await;
    let (status, body) = server.get("/v1/me", Some(&key)).await;
    assert_error(status, &body, 401, "AUTH_TOKEN_EXPIRED");

    // Keys of a deleted tenant stop working.
    let (status, _) = server
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/tenants/{}", tenant.id),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = server.get("/v1/me", Some(&tenant.admin_key)).await;
    assert_error(status, &body, 401, "AUTH_TOKEN_REVOKED");
}

#[tokio::test]
async fn me_lists_identity_tenant_roles_and_permissions() {
    let server = Server::start().await;
    let (status, me) = server.get("/v1/me", Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["identity"]["kind"], "api_key");
    assert_eq!(me["tenant"]["slug"], "platform");
    assert_eq!(me["roles"], json!(["platform_admin"]));
    assert_eq!(me["permissions"], json!(["*"]));
    assert_eq!(me["tenant"]["modules"], json!(["scaiecho", "scaispeak"]));

    let tenant = server.tenant("beta").await;
    let (_, me) = server.get("/v1/me", Some(&tenant.member_key)).await;
    assert_eq!(me["tenant"]["id"], tenant.id.as_str());
    assert_eq!(me["roles"], json!(["member"]));
    let permissions: Vec<&str> = me["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(permissions.contains(&"scaiecho:transcribe"));
    assert!(!permissions.contains(&"tenant:admin"));
    assert_eq!(
        me["tenant"]["modules"],
        json!([]),
        "new tenants start with default_modules (none)"
    );
}

#[tokio::test]
async fn local_login_refresh_rotation_and_jwt_failures_sqlite() {
    login_refresh_and_jwt_failures(Backend::Sqlite).await;
}

#[tokio::test]
async fn local_login_refresh_rotation_and_jwt_failures_postgres() {
    login_refresh_and_jwt_failures(Backend::Postgres).await;
}

async fn login_refresh_and_jwt_failures(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    let tenant = server.tenant("gamma").await;
    let user = create_user(&server, &tenant.id, "Ada@Example.com", &["member"]).await;
    assert_eq!(user["email"], "ada@example.com");

    // An unknown email and a wrong password get the same answer (no account discovery).
    let (status, unknown) = login(&server, "nobody@example.com", "whatever-password").await;
    assert_error(status, &unknown, 401, "AUTH_TOKEN_INVALID");
    let (status, wrong) = login(&server, "ada@example.com", "wrong password").await;
    assert_error(status, &wrong, 401, "AUTH_TOKEN_INVALID");
    assert_eq!(unknown["error"]["message"], wrong["error"]["message"]);

    let (status, tokens) = login(&server, "ADA@example.com", "correct horse battery").await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let (status, me) = server.get("/v1/me", Some(access)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["identity"]["kind"], "user");
    assert_eq!(me["identity"]["email"], "ada@example.com");
    assert_eq!(me["tenant"]["id"], tenant.id.as_str());

    // Rotation: the first refresh works and returns a different refresh token.
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (status, rotated) = server
        .post("/v1/auth/refresh", None, json!({"refresh_token": first}))
        .await;
    assert_eq!(status, 200, "{rotated}");
    let second = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let (status, _) = server
        .get("/v1/me", Some(rotated["access_token"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200);
    // Reusing the rotated-out token is theft: it fails, and so does its successor now.
    let (status, body) = server
        .post("/v1/auth/refresh", None, json!({"refresh_token": first}))
        .await;
    assert_error(status, &body, 401, "AUTH_TOKEN_REVOKED");
    let (status, body) = server
        .post("/v1/auth/refresh", None, json!({"refresh_token": second}))
        .await;
    assert_error(status, &body, 401, "AUTH_TOKEN_REVOKED");
    let (status, body) = server
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": "sgr_bogus"}),
        )
        .await;
    assert_error(status, &body, 401, "AUTH_TOKEN_INVALID");

    // Expired refresh token.
    let (_, tokens) = login(&server, "ada@example.com", "correct horse battery").await;
    server
        .sql("UPDATE refresh_tokens SET expires_at = 1000 WHERE revoked_at IS NULL")
        .await;
    let (status, body) = server
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": tokens["refresh_token"]}),
        )
        .await;
    assert_error(status, &body, 401, "AUTH_TOKEN_EXPIRED");

    // Logout ends the login.
    let (_, tokens) = login(&server, "ada@example.com", "correct horse battery").await;
    let (status, _) = server
        .post(
            "/v1/auth/logout",
            None,
            json!({"refresh_token": tokens["refresh_token"]}),
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = server
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": tokens["refresh_token"]}),
        )
        .await;
    assert_error(status, &body, 401, "AUTH_TOKEN_REVOKED");

    // Forged and expired access tokens.
    let user_id = user["id"].as_str().unwrap();
    let expired = local_jwt(JWT_SECRET, user_id, &tenant.id, unix_now() - 3600);
    let (status, body) = server.get("/v1/me", Some(&expired)).await;
    assert_error(status, &body, 401, "AUTH_TOKEN_EXPIRED");
    let forged = local_jwt(
        "another-secret-another-secret-another",
        user_id,
        &tenant.id,
        unix_now() + 600,
    );
    let (status, body) = server.get("/v1/me", Some(&forged)).await;
    assert_error(status, &body, 401, "AUTH_TOKEN_INVALID");
    let valid = local_jwt(JWT_SECRET, user_id, &tenant.id, unix_now() + 600);
    let (status, _) = server.get("/v1/me", Some(&valid)).await;
    assert_eq!(status, 200);
    let (header, payload) = {
        let mut parts = valid.split('.');
        (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
        )
    };
    let _ = header;
    use base64::Engine;
    let none_header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let (status, body) = server
        .get("/v1/me", Some(&format!("{none_header}.{payload}.")))
        .await;
    assert_error(status, &body, 401, "AUTH_TOKEN_INVALID");
}

#[tokio::test]
async fn permissions_are_enforced_and_never_escalated() {
    let server = Server::start().await;
    let tenant = server.tenant("delta").await;
    let (status, body) = server
        .post(
            "/v1/tenants",
            Some(&tenant.admin_key),
            json!({"name": "x", "slug": "xx"}),
        )
        .await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");
    assert_eq!(body["error"]["required_permission"], "platform:admin");

    let (status, body) = server
        .post(
            "/v1/api-keys",
            Some(&tenant.member_key),
            json!({"name": "mine"}),
        )
        .await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");

    // A tenant admin cannot mint a key with a permission it lacks.
    let (status, body) = server
        .post(
            "/v1/api-keys",
            Some(&tenant.admin_key),
            json!({"name": "x", "permissions": ["platform:admin"]}),
        )
        .await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");
    let (status, body) = server
        .post(
            "/v1/api-keys",
            Some(&tenant.admin_key),
            json!({"name": "x", "roles": ["platform_admin"]}),
        )
        .await;
    assert_eq!(
        status, 400,
        "platform_admin outside the platform tenant: {body}"
    );
    // Nor what it grants, given directly or through a custom role, even by a platform
    // admin who holds it: `*` and `platform:admin` stay in the platform tenant.
    let member = create_user(&server, &tenant.id, "held@example.com", &["member"]).await;
    for permission in ["*", "platform:admin", "platform:*"] {
        let (status, body) = server
            .post(
                "/v1/api-keys",
                Some(ADMIN_KEY),
                json!({"name": "x", "tenant_id": tenant.id, "permissions": [permission]}),
            )
            .await;
        assert_error(status, &body, 400, "INVALID_REQUEST");
        let (status, body) = server
            .post(
                "/v1/grants",
                Some(ADMIN_KEY),
                json!({"subject_kind": "user", "subject_id": member["id"], "permissions": [permission]}),
            )
            .await;
        assert_error(status, &body, 400, "INVALID_REQUEST");
        let (status, body) = server
            .post(
                "/v1/roles",
                Some(ADMIN_KEY),
                json!({"name": "everything", "tenant_id": tenant.id, "permissions": [permission]}),
            )
            .await;
        assert_error(status, &body, 400, "INVALID_REQUEST");
    }
    let (status, tokens) = login(&server, "held@example.com", "correct horse battery").await;
    assert_eq!(status, 200, "{tokens}");
    let (_, me) = server
        .get("/v1/me", Some(tokens["access_token"].as_str().unwrap()))
        .await;
    assert!(!me["permissions"].to_string().contains("platform"), "{me}");

    // A custom role, and a key holding only it.
    let (status, role) = server
        .post(
            "/v1/roles",
            Some(&tenant.admin_key),
            json!({"name": "transcriber", "permissions": ["scaiecho:transcribe"]}),
        )
        .await;
    assert_eq!(status, 201, "{role}");
    let (status, key) = server
        .post(
            "/v1/api-keys",
            Some(&tenant.admin_key),
            json!({"name": "t", "roles": ["transcriber"]}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().unwrap();
    let (_, me) = server.get("/v1/me", Some(key)).await;
    assert_eq!(me["permissions"], json!(["scaiecho:transcribe"]));
    let (status, body) = server
        .get(&format!("/v1/users?tenant_id={}", tenant.id), Some(key))
        .await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");

    // A direct grant applies at once (the principal cache is invalidated).
    let (_, keys) = server.get("/v1/api-keys", Some(&tenant.admin_key)).await;
    let key_id = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["roles"] == json!(["transcriber"]))
        .unwrap()["id"]
        .clone();
    let (status, body) = server
        .post("/v1/grants", Some(&tenant.admin_key), json!({"subject_kind": "api_key", "subject_id": key_id, "permissions": ["scaispeak:speak"]}))
        .await;
    assert_eq!(status, 204, "{body}");
    let (_, me) = server.get("/v1/me", Some(key)).await;
    assert_eq!(
        me["permissions"],
        json!(["scaiecho:transcribe", "scaispeak:speak"])
    );
}

/// A minimal JWKS issuer: serves one EC P-256 key.
async fn start_jwks(jwk: Value) -> String {
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let jwk = jwk.clone();
            async move { axum::Json(json!({ "keys": [jwk] })) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/jwks.json")
}

const EC_PRIVATE_PEM: &str = include_str!("../fixtures/jwks_ec_private.pem");
const EC_JWK: &str = include_str!("../fixtures/jwks_ec_public.json");

#[tokio::test]
async fn external_issuer_tokens_are_verified_by_jwks() {
    let jwk: Value = serde_json::from_str(EC_JWK).unwrap();
    let jwks_url = start_jwks(jwk.clone()).await;
    let config = format!(
        "[[auth.external_issuers]]\nissuer = \"https://id.example.test\"\naudience = \"scaigrid\"\n\
         jwks_url = \"{jwks_url}\"\nallow_http_jwks = true\ntenant = \"ext\"\n"
    );
    let server = Server::start_with(crate::support::Options {
        config_toml: Some(config),
        ..Default::default()
    })
    .await;
    let tenant = server.tenant("ext").await;
    create_user(&server, &tenant.id, "grace@example.com", &["viewer"]).await;

    let key = EncodingKey::from_ec_pem(EC_PRIVATE_PEM.as_bytes()).unwrap();
    let sign = |claims: Value, alg: Algorithm| {
        let mut header = Header::new(alg);
        header.kid = Some(jwk["kid"].as_str().unwrap().to_owned());
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let claims = |email: &str, aud: &str, exp: u64| json!({"iss": "https://id.example.test", "aud": aud, "sub": "ext-1", "email": email, "email_verified": true, "exp": exp});

    let good = sign(
        claims("grace@example.com", "scaigrid", unix_now() + 600),
        Algorithm::ES256,
    );
    let (status, me) = server.get("/v1/me", Some(&good)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["identity"]["email"], "grace@example.com");
    assert_eq!(me["roles"], json!(["viewer"]));

    let unknown = sign(
        claims("nobody@example.com", "scaigrid", unix_now() + 600),
        Algorithm::ES256,
    );
    let (status, body) = server.get("/v1/me", Some(&unknown)).await;
    assert_error(status, &body, 404, "AUTH_IDENTITY_NOT_FOUND");

    // The issuer signs users of its tenant in, no one else: not a user of the same email
    // in another tenant, and never the platform's administrator.
    let elsewhere = server.tenant("ext-elsewhere").await;
    create_user(&server, &elsewhere.id, "ada@example.com", &["tenant_admin"]).await;
    let (status, body) = server
        .get(
            "/v1/me",
            Some(&sign(
                claims("ada@example.com", "scaigrid", unix_now() + 600),
                Algorithm::ES256,
            )),
        )
        .await;
    assert_error(status, &body, 404, "AUTH_IDENTITY_NOT_FOUND");

    // An address the issuer did not verify maps to no one (false, absent, or not `true`).
    for verified in [Some(json!(false)), None, Some(json!("yes"))] {
        let mut unverified = claims("grace@example.com", "scaigrid", unix_now() + 600);
        match verified {
            Some(value) => unverified["email_verified"] = value,
            None => {
                unverified.as_object_mut().unwrap().remove("email_verified");
            }
        }
        let (status, body) = server
            .get("/v1/me", Some(&sign(unverified, Algorithm::ES256)))
            .await;
        assert_error(status, &body, 401, "AUTH_TOKEN_INVALID");
    }

    let wrong_audience = sign(
        claims("grace@example.com", "someone-else", unix_now() + 600),
        Algorithm::ES256,
    );
    let (status, body) = server.get("/v1/me", Some(&wrong_audience)).await;
    assert_error(status, &body, 401, "AUTH_TOKEN_INVALID");

    let expired = sign(
        claims("grace@example.com", "scaigrid", unix_now() - 3600),
        Algorithm::ES256,
    );
    let (status, body) = server.get("/v1/me", Some(&expired)).await;
    assert_error(status, &body, 401, "AUTH_TOKEN_EXPIRED");

    // Algorithm confusion: an HS256 token whose HMAC secret is the issuer's public key.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(jwk["kid"].as_str().unwrap().to_owned());
    let confused = jsonwebtoken::encode(
        &header,
        &claims("grace@example.com", "scaigrid", unix_now() + 600),
        &EncodingKey::from_secret(EC_JWK.as_bytes()),
    )
    .unwrap();
    let (status, body) = server.get("/v1/me", Some(&confused)).await;
    assert_error(status, &body, 401, "AUTH_TOKEN_INVALID");

    // An issuer nobody configured.
    let mut other = claims("grace@example.com", "scaigrid", unix_now() + 600);
    other["iss"] = json!("https://evil.example.test");
    let (status, body) = server
        .get("/v1/me", Some(&sign(other, Algorithm::ES256)))
        .await;
    assert_error(status, &body, 401, "AUTH_TOKEN_INVALID");
}
