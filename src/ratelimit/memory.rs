//! The embedded default's limit store: TATs in sharded in-process maps.
//!
//! Sharding keeps lock holds short under concurrency; a shard drops entries whose TAT
//! has passed (a full bucket needs no entry) when it grows, so memory stays bounded by
//! the keys active in the last minute.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Instant;

use super::LimitStore;
use super::gcra::{self, Decision};
use crate::error::ApiError;

const SHARDS: usize = 16;
const SWEEP_AT: usize = 4096;

pub struct MemoryStore {
    started: Instant,
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<HashMap<String, f64>>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            started: Instant::now(),
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl MemoryStore {
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn with_entry<T>(&self, key: &str, f: impl FnOnce(Option<f64>, f64) -> (Option<f64>, T)) -> T {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let now = self.now();
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        let (next, out) = f(map.get(key).copied(), now);
        if let Some(tat) = next {
            map.insert(key.to_owned(), tat);
            if map.len() > SWEEP_AT {
                map.retain(|_, tat| *tat > now);
            }
        }
        out
    }
}

#[async_trait::async_trait]
impl LimitStore for MemoryStore {
    async fn take(&self, key: &str, limit: u64, cost: f64) -> Result<Decision, ApiError> {
        Ok(self.with_entry(key, |tat, now| {
            let (next, decision) = gcra::take(tat, now, limit, cost);
            (decision.allowed.then_some(next), decision)
        }))
    }

    async fn peek(&self, key: &str, limit: u64) -> Result<Decision, ApiError> {
        Ok(self.with_entry(key, |tat, now| (None, gcra::peek(tat, now, limit))))
    }

    async fn charge(&self, key: &str, limit: u64, cost: f64) -> Result<(), ApiError> {
        self.with_entry(key, |tat, now| {
            (Some(gcra::charge(tat, now, limit, cost)), ())
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_independent_and_limits_hold() {
        let store = MemoryStore::default();
        for _ in 0..3 {
            assert!(store.take("a", 3, 1.0).await.unwrap().allowed);
        }
        assert!(!store.take("a", 3, 1.0).await.unwrap().allowed);
        assert!(store.take("b", 3, 1.0).await.unwrap().allowed);
        store.charge("c", 60, 100.0).await.unwrap();
        assert!(!store.peek("c", 60).await.unwrap().allowed);
    }
}
