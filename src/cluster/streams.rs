//! Open-stream slots shared by every edge: a tenant's cap holds across the deployment,
//! not per process. Each open stream holds a *lease* in a sorted set per tenant and
//! kind (member: the lease id, score: when it runs out, on Redis's clock). Taking one
//! first drops the leases that ran out, then adds one if fewer than the cap are left,
//! atomically in a script. A live stream renews its lease; an edge that dies without
//! giving its leases back loses them within [`LEASE`].

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;

use super::Cluster;
use crate::error::ApiError;

/// How long a lease lives unrenewed.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often a live stream renews its lease.
const RENEW: Duration = Duration::from_secs(10);

/// KEYS: the set. ARGV: cap, lease ms, lease id. Returns 1 when taken, 0 at the cap.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
";

/// KEYS: the set. ARGV: lease ms, lease id. Extends a lease that still exists.
const RENEW_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
  return 1
end
return 0
";

/// The scripts, hashed once (they run by `EVALSHA`, loaded on first use).
static TAKE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE));
static RENEW_LEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RENEW_SCRIPT));

/// A stream's lease; dropping it gives it back.
pub struct Lease {
    cluster: Arc<Cluster>,
    key: String,
    id: String,
    renewer: tokio::task::JoinHandle<()>,
}

/// A lease on one of `cap` slots of `kind` streams of `tenant` (`None`: all are taken).
pub async fn take(
    cluster: &Arc<Cluster>,
    (kind, tenant): (&str, &str),
    cap: usize,
) -> Result<Option<Lease>, ApiError> {
    let key = cluster.key(&format!("streams:{kind}:{tenant}"));
    let id = uuid::Uuid::now_v7().simple().to_string();
    let taken: i64 = TAKE_SCRIPT
        .key(&key)
        .arg(cap)
        .arg(LEASE.as_millis() as u64)
        .arg(&id)
        .invoke_async(&mut cluster.conn())
        .await?;
    if taken == 0 {
        return Ok(None);
    }
    let renewer = {
        let (cluster, key, id) = (cluster.clone(), key.clone(), id.clone());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(RENEW);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let renewed: redis::RedisResult<i64> = RENEW_LEASE
                    .key(&key)
                    .arg(LEASE.as_millis() as u64)
                    .arg(&id)
                    .invoke_async(&mut cluster.conn())
                    .await;
                if let Err(error) = renewed {
                    tracing::warn!(%error, "renewing a stream lease failed");
                }
            }
        })
    };
    Ok(Some(Lease {
        cluster: cluster.clone(),
        key,
        id,
        renewer,
    }))
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
        let (cluster, key, id) = (self.cluster.clone(), self.key.clone(), self.id.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let gone: redis::RedisResult<i64> = redis::cmd("ZREM")
                    .arg(key)
                    .arg(id)
                    .query_async(&mut cluster.conn())
                    .await;
                if let Err(error) = gone {
                    tracing::warn!(%error, "giving back a stream lease failed (it runs out)");
                }
            });
        }
    }
}
