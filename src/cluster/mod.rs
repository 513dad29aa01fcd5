//! The scaled deployment's shared state in Redis: rate-limit counters ([`limits`]), the
//! job queue on Redis Streams ([`queue`]), the event bus ([`events`]), the node
//! registry ([`nodes`]), the API-key
//! revocation broadcast ([`revocation`]), the usage stream and budget counters
//! ([`ledger`]), and the chat answer cache ([`answers`]).
//!
//! [`Cluster`] owns the connections. Commands go over one multiplexed connection (a
//! `ConnectionManager` that reconnects by itself); blocking stream reads get their own
//! connection so they never stall the others. Every command has a short response
//! timeout: with Redis gone, a request fails fast with 503 `SERVICE_UNAVAILABLE`
//! (naming `redis`) instead of hanging, and works again as soon as Redis is back.

pub mod answers;
pub mod events;
pub mod ledger;
pub mod limits;
pub mod nodes;
pub mod queue;
pub mod revocation;
pub mod streams;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisConfig;
use crate::error::{ApiError, ErrorCode};

/// How long one command may take before it counts as Redis being down.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Cluster {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
}

/// The client of `redis.url`; a `rediss://` one trusts `redis.tls_ca_file` (else the
/// system's store) and presents the client certificate when one is configured.
fn client(config: &RedisConfig) -> anyhow::Result<redis::Client> {
    let url = config.url.expose();
    let named =
        |error: redis::RedisError| anyhow::anyhow!("redis.url (SCAIGRID_REDIS_URL): {error}");
    let tls = &config.tls;
    if tls.ca_file.is_none() && tls.client.is_none() {
        return redis::Client::open(url).map_err(named);
    }
    let read = |name: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|error| anyhow::anyhow!("{name} {}: {error}", path.display()))
    };
    let root_cert = match &tls.ca_file {
        Some(path) => Some(read("redis.tls_ca_file", path)?),
        None => None,
    };
    let client_tls = match &tls.client {
        Some((cert, key)) => Some(redis::ClientTlsConfig {
            client_cert: read("redis.tls_cert_file", cert)?,
            client_key: read("redis.tls_key_file", key)?,
        }),
        None => None,
    };
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(named)
}

fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

impl Cluster {
    /// Prepares the connections without waiting for Redis: a process may start before
    /// Redis does (readiness says so until it answers).
    pub fn open(config: &RedisConfig) -> anyhow::Result<Cluster> {
        let client = client(config)?;
        let conn = ConnectionManager::new_lazy_with_config(
            client.clone(),
            manager_config(RESPONSE_TIMEOUT),
        )?;
        Ok(Cluster {
            client,
            conn,
            prefix: config.key_prefix.clone(),
        })
    }

    /// The namespaced Redis key of `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// The shared multiplexed connection (cheap to clone).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A connection of its own for blocking reads that last up to `block`.
    pub fn blocking_conn(&self, block: Duration) -> redis::RedisResult<ConnectionManager> {
        ConnectionManager::new_lazy_with_config(
            self.client.clone(),
            manager_config(block + RESPONSE_TIMEOUT),
        )
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Readiness: Redis answers a PING.
    pub async fn check(&self) -> Result<(), String> {
        let mut conn = self.conn();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|error| error.to_string())
    }
}

/// Creates a stream and its consumer group if missing (after a Redis restart too).
pub(crate) async fn ensure_group(
    cluster: &Cluster,
    stream: &str,
    group: &str,
) -> redis::RedisResult<()> {
    let created: redis::RedisResult<String> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut cluster.conn())
        .await;
    match created {
        Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Acknowledges stream entries and deletes them (they are dealt with for good).
pub(crate) async fn ack_delete(
    cluster: &Cluster,
    stream: &str,
    group: &str,
    entry_ids: &[&str],
) -> redis::RedisResult<()> {
    if entry_ids.is_empty() {
        return Ok(());
    }
    redis::pipe()
        .atomic()
        .cmd("XACK")
        .arg(stream)
        .arg(group)
        .arg(entry_ids)
        .ignore()
        .cmd("XDEL")
        .arg(stream)
        .arg(entry_ids)
        .ignore()
        .query_async::<()>(&mut cluster.conn())
        .await
}

/// Redis down or failing: 503 `SERVICE_UNAVAILABLE` naming the dependency.
impl From<redis::RedisError> for ApiError {
    fn from(error: redis::RedisError) -> Self {
        tracing::warn!(%error, "redis command failed");
        ApiError::new(
            ErrorCode::SERVICE_UNAVAILABLE,
            format!("redis unavailable: {error}"),
        )
        .with_field("dependency", "redis")
    }
}

#[cfg(test)]
pub(crate) fn test_cluster() -> Option<std::sync::Arc<Cluster>> {
    let url = crate::test_support::service("redis", "SCAIGRID_TEST_REDIS_URL")?;
    let config = RedisConfig {
        url: crate::config::Secret::new(url),
        tls: Default::default(),
        key_prefix: format!("unit{}", uuid::Uuid::now_v7().simple()),
    };
    Some(std::sync::Arc::new(Cluster::open(&config).unwrap()))
}
