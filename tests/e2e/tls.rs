//! Verified TLS from the scaled deployment's processes to PostgreSQL and Redis (the
//! loopback servers of `scripts/services/*`, signed by `scripts/services/tls`'s CA).

use crate::scaled::{Deployment, wait_ready};
use crate::support::{Options, Server, refused_start, service, service_with};

/// TLS to PostgreSQL (`sslmode=verify-full`) and Redis (`rediss://` with a CA file): the
/// server's connections are encrypted and verified; a CA that did not sign the servers'
/// certificates is refused (PostgreSQL: the process does not start; Redis: readiness
/// names it).
#[tokio::test]
async fn postgres_and_redis_over_verified_tls() {
    let Some(deployment) = Deployment::new().await else {
        return;
    };
    let Some(tls) = service("tls", "SCAIGRID_TEST_TLS_DIR") else {
        return;
    };
    let Some(rediss) = service_with("redis", &["tls"], "SCAIGRID_TEST_REDIS_TLS_URL") else {
        return;
    };
    let verified = |ca: &str| {
        format!(
            "{}?sslmode=verify-full&sslrootcert={tls}/{ca}.pem",
            deployment.database
        )
    };
    let redis_ca = |ca: &str| format!("tls_ca_file = \"{tls}/{ca}.pem\"\n");
    let extra = "[engines]\nenabled = false\n[jobs]\nworkers = 0\n";
    let api = Server::start_with(Options {
        database_url: Some(verified("ca")),
        config_toml: Some(deployment.toml_tls(&rediss, &redis_ca("ca"), extra)),
        ..Options::default()
    })
    .await;
    let (status, body) = wait_ready(&api, 200).await;
    assert_eq!(status, 200, "{body}");
    // Work that needs both: a tenant (PostgreSQL) and a rate-limited key (Redis).
    let tenant = api.tenant("tls").await;
    let (status, _) = api.get("/v1/models", Some(&tenant.member_key)).await;
    assert_eq!(status, 200);
    // PostgreSQL says the server's connections to this database are TLS.
    let name = deployment.database.rsplit('/').next().unwrap().to_owned();
    let base = deployment.database.rsplit_once('/').unwrap().0.to_owned();
    let (tls_connections, plain_connections) = {
        use sqlx::{Connection, Row};
        let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres"))
            .await
            .unwrap();
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
        )
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        (row.get::<i64, _>(0), row.get::<i64, _>(1))
    };
    assert!(tls_connections >= 1, "no TLS connection from the server");
    assert_eq!(plain_connections, 0);
    drop(api);

    // Redis behind a certificate the CA file did not sign: readiness names Redis.
    let api = Server::start_with(Options {
        database_url: Some(verified("ca")),
        config_toml: Some(deployment.toml_tls(&rediss, &redis_ca("other-ca"), extra)),
        ..Options::default()
    })
    .await;
    let (status, body) = wait_ready(&api, 503).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["dependency"], "redis", "{body}");
    drop(api);

    // PostgreSQL behind a certificate the root file did not sign: no start, and why.
    let temp = tempfile::tempdir().unwrap();
    let config = temp.path().join("config.toml");
    std::fs::write(
        &config,
        deployment.toml_tls(&rediss, &redis_ca("ca"), extra),
    )
    .unwrap();
    let stderr = refused_start(
        config,
        temp.path().join("data"),
        vec![
            ("SCAIGRID_DATABASE_URL", verified("other-ca")),
            (
                "SCAIGRID_SECRETS_KEY",
                crate::support::SECRETS_KEY.to_owned(),
            ),
        ],
    )
    .await
    .to_lowercase();
    assert!(stderr.contains("certificate"), "{stderr}");
}
