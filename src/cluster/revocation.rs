//! API-key revocation (and any role, grant or tenant change) reaches every process at
//! once: the process that made the change publishes on a Redis channel, and every
//! process drops its cached principals when the message arrives.
//!
//! A subscriber that lost its connection may have missed messages, so each
//! (re)subscription also drops the cache; the cache TTL bounds what a process can miss
//! while Redis is unreachable.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::Cluster;
use crate::auth::Authenticator;

const CHANNEL: &str = "auth:invalidate";

/// Tells every process to drop its cached principals.
pub async fn publish(cluster: &Cluster) -> redis::RedisResult<()> {
    let mut conn = cluster.conn();
    redis::cmd("PUBLISH")
        .arg(cluster.key(CHANNEL))
        .arg(std::process::id())
        .query_async::<i64>(&mut conn)
        .await
        .map(|_| ())
}

/// Listens for invalidations for as long as the process runs, reconnecting as needed.
pub fn spawn_listener(cluster: Arc<Cluster>, auth: Arc<Authenticator>) {
    tokio::spawn(async move {
        let channel = cluster.key(CHANNEL);
        loop {
            match cluster.client().get_async_pubsub().await {
                Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                    Ok(()) => {
                        auth.invalidate_local();
                        tracing::info!("listening for credential revocations");
                        let mut messages = pubsub.on_message();
                        while messages.next().await.is_some() {
                            auth.invalidate_local();
                        }
                        tracing::warn!("revocation channel closed; resubscribing");
                    }
                    Err(error) => tracing::warn!(%error, "subscribing to revocations failed"),
                },
                Err(error) => tracing::warn!(%error, "revocation listener cannot reach redis"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}
