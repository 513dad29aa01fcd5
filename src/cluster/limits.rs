//! Rate-limit counters in Redis, shared by every API process: the same GCRA as the
//! embedded store ([`crate::ratelimit::gcra`]), one TAT per key, updated atomically by a
//! Lua script on Redis's own clock (so processes with skewed clocks agree).
//!
//! The script only moves the TAT; the decision (remaining, reset, retry-after) is worked
//! out here from the TAT it saw, by the same pure functions the memory store uses.
//! Concurrent checks share the multiplexed connection, so they are pipelined.

use std::sync::Arc;

use redis::Script;

use super::Cluster;
use crate::error::ApiError;
use crate::ratelimit::LimitStore;
use crate::ratelimit::gcra::{self, Decision, WINDOW_SECONDS};

/// ARGV: op (`take`, `charge`, `peek`), seconds per unit, cost, window. Returns the TAT
/// before the call (or nil) and Redis's clock, as strings.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local old = tonumber(redis.call('GET', KEYS[1]))
local op = ARGV[1]
if op ~= 'peek' then
  local base = old or now
  if base < now then base = now end
  local nxt = base + tonumber(ARGV[3]) * tonumber(ARGV[2])
  if op == 'charge' or nxt - now - tonumber(ARGV[4]) <= 1e-9 then
    redis.call('SET', KEYS[1], string.format('%.6f', nxt), 'PX', math.ceil((nxt - now) * 1000) + 1000)
  end
end
return {old and string.format('%.6f', old) or false, string.format('%.6f', now)}
";

pub struct RedisLimitStore {
    cluster: Arc<Cluster>,
    script: Script,
}

impl RedisLimitStore {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        RedisLimitStore {
            cluster,
            script: Script::new(SCRIPT),
        }
    }

    /// Runs the script; the TAT before it and the time it ran.
    async fn call(
        &self,
        key: &str,
        op: &str,
        limit: u64,
        cost: f64,
    ) -> Result<(Option<f64>, f64), ApiError> {
        let mut conn = self.cluster.conn();
        let (old, now): (Option<String>, String) = self
            .script
            .key(self.cluster.key(&format!("rl:{key}")))
            .arg(op)
            .arg(WINDOW_SECONDS / limit.max(1) as f64)
            .arg(cost)
            .arg(WINDOW_SECONDS)
            .invoke_async(&mut conn)
            .await?;
        let parse = |text: &str| text.parse::<f64>().ok();
        let now = parse(&now).ok_or_else(|| ApiError::internal("redis clock unreadable"))?;
        Ok((old.as_deref().and_then(parse), now))
    }
}

#[async_trait::async_trait]
impl LimitStore for RedisLimitStore {
    async fn take(&self, key: &str, limit: u64, cost: f64) -> Result<Decision, ApiError> {
        let (tat, now) = self.call(key, "take", limit, cost).await?;
        Ok(gcra::take(tat, now, limit, cost).1)
    }

    async fn peek(&self, key: &str, limit: u64) -> Result<Decision, ApiError> {
        let (tat, now) = self.call(key, "peek", limit, 0.0).await?;
        Ok(gcra::peek(tat, now, limit))
    }

    async fn charge(&self, key: &str, limit: u64, cost: f64) -> Result<(), ApiError> {
        self.call(key, "charge", limit, cost).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::memory::MemoryStore;

    /// The Redis store decides as the memory store does, on the same sequence.
    #[tokio::test]
    async fn decides_like_the_memory_store() {
        let Some(cluster) = crate::cluster::test_cluster() else {
            return;
        };
        let redis = RedisLimitStore::new(cluster);
        let memory = MemoryStore::default();
        for store in [&redis as &dyn LimitStore, &memory] {
            for i in 0..5 {
                let d = store.take("k", 5, 1.0).await.unwrap();
                assert!(d.allowed, "request {i}");
                assert_eq!(d.remaining, 4 - i);
            }
            let refused = store.take("k", 5, 1.0).await.unwrap();
            assert!(!refused.allowed);
            assert!(
                (refused.retry_after_seconds - 12.0).abs() < 0.5,
                "{refused:?}"
            );
            assert!(store.take("other", 5, 1.0).await.unwrap().allowed);
            store.charge("debt", 60, 120.0).await.unwrap();
            assert!(!store.peek("debt", 60).await.unwrap().allowed);
            assert!(store.peek("fresh", 60).await.unwrap().allowed);
        }
    }

    /// Concurrent takes never admit more than the limit.
    #[tokio::test]
    async fn concurrent_takes_hold_the_limit() {
        let Some(cluster) = crate::cluster::test_cluster() else {
            return;
        };
        let store = Arc::new(RedisLimitStore::new(cluster));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.take("burst", 50, 1.0).await.unwrap().allowed })
            })
            .collect();
        let mut admitted = 0;
        for task in tasks {
            admitted += task.await.unwrap() as usize;
        }
        assert_eq!(admitted, 50);
    }
}
