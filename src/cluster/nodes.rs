//! The node registry: every process that loaded engines announces itself (its node
//! info: engines, device, status) every [`HEARTBEAT`]; `GET /v1/infra/nodes` lists the
//! nodes heard from within [`EXPIRY`]. A node that stops heartbeating (it died) drops
//! out of the list by itself.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Cluster;

pub const HEARTBEAT: Duration = Duration::from_secs(2);
pub const EXPIRY: Duration = Duration::from_secs(10);

/// Announces `info` (a node's JSON view) now and every heartbeat, for as long as the
/// process runs.
pub fn spawn_heartbeat(
    cluster: Arc<Cluster>,
    node_id: String,
    info: impl Fn() -> Value + Send + 'static,
) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(HEARTBEAT);
        loop {
            ticker.tick().await;
            if let Err(error) = announce(&cluster, &node_id, &info()).await {
                tracing::warn!(%error, "node heartbeat failed");
            }
        }
    });
}

async fn announce(cluster: &Cluster, node_id: &str, info: &Value) -> redis::RedisResult<()> {
    let now = crate::db::now_ms();
    let mut info = info.clone();
    if let Some(object) = info.as_object_mut() {
        object.insert("last_heartbeat_ms".into(), now.into());
    }
    let mut conn = cluster.conn();
    redis::pipe()
        .cmd("SET")
        .arg(cluster.key(&format!("node:{node_id}")))
        .arg(info.to_string())
        .arg("PX")
        .arg(EXPIRY.as_millis() as u64)
        .ignore()
        .cmd("ZADD")
        .arg(cluster.key("nodes"))
        .arg(now)
        .arg(node_id)
        .ignore()
        .cmd("ZREMRANGEBYSCORE")
        .arg(cluster.key("nodes"))
        .arg("-inf")
        .arg(now - EXPIRY.as_millis() as i64)
        .ignore()
        .query_async::<()>(&mut conn)
        .await
}

/// The live nodes' info, ordered by node id.
pub async fn list(cluster: &Cluster) -> redis::RedisResult<Vec<Value>> {
    let mut conn = cluster.conn();
    let since = crate::db::now_ms() - EXPIRY.as_millis() as i64;
    let mut ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(cluster.key("nodes"))
        .arg(since)
        .arg("+inf")
        .query_async(&mut conn)
        .await?;
    ids.sort();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = ids
        .iter()
        .map(|id| cluster.key(&format!("node:{id}")))
        .collect();
    let infos: Vec<Option<String>> = redis::cmd("MGET").arg(keys).query_async(&mut conn).await?;
    Ok(infos
        .into_iter()
        .flatten()
        .filter_map(|text| serde_json::from_str(&text).ok())
        .collect())
}
