//! Usage records and budget counters of the scaled deployment, in Redis.
//!
//! **Usage**: each process ships the records it made to a Redis stream every flush
//! tick (so a process that dies or loses its database loses nothing it shipped), and
//! any process drains the stream into SQL through a consumer group: insert (by record
//! id, so a redelivered entry is stored once), then acknowledge and delete. The flush
//! lag is the age of the oldest record not yet in SQL, wherever it waits.
//!
//! **Budgets**: one hash per budget and period, `used` and `reserved`, shared by every
//! process. Admission checks `used + reserved < limit` on every covering budget and
//! reserves the estimate in one script, so concurrent requests on different processes
//! cannot all pass on stale numbers (the rule of [`crate::accounting::budgets`]).
//! Shipping a record adds its cost to `used` in the same script that queues it. A
//! counter is installed from SQL (after draining the stream) the first time a period
//! needs it; a record shipped by another process in the instant between that drain
//! and the install is not counted, once per budget and period.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use redis::streams::{StreamAutoClaimReply, StreamReadReply};

use super::Cluster;
use crate::db::accounting::UsageRecord;

const STREAM: &str = "usage";
const GROUP: &str = "flushers";
/// A flusher that read entries and went quiet this long is presumed dead.
const DRAIN_IDLE: Duration = Duration::from_secs(30);

/// KEYS: counters. ARGV: estimate, then each counter's limit.
const RESERVE: &str = r"
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 0 then return {'missing', i} end
  local used = tonumber(redis.call('HGET', key, 'used') or '0')
  local reserved = tonumber(redis.call('HGET', key, 'reserved') or '0')
  if used + reserved >= tonumber(ARGV[i + 1]) then return {'exceeded', i, tostring(used)} end
end
for _, key in ipairs(KEYS) do redis.call('HINCRBYFLOAT', key, 'reserved', ARGV[1]) end
return {'ok'}
";

/// KEYS: counters. ARGV: the estimate to give back.
const RELEASE: &str = r"
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBYFLOAT', key, 'reserved', -tonumber(ARGV[1]))
  end
end
return 0
";

/// KEYS[1]: the stream. ARGV: per record `json, cost, n, counter_1, limit_1, ...`.
/// Returns the counters this batch pushed over their limit. The counter keys travel in
/// ARGV, which a single Redis allows; Redis Cluster would need them in KEYS, all under
/// one hash tag.
const SHIP: &str = r"
local crossed = {}
local i = 1
while i <= #ARGV do
  redis.call('XADD', KEYS[1], '*', 'r', ARGV[i])
  local cost = tonumber(ARGV[i + 1])
  local n = tonumber(ARGV[i + 2])
  for j = 0, n - 1 do
    local key = ARGV[i + 3 + 2 * j]
    local limit = tonumber(ARGV[i + 4 + 2 * j])
    if cost > 0 and redis.call('EXISTS', key) == 1 then
      local before = tonumber(redis.call('HGET', key, 'used') or '0')
      local after = tonumber(redis.call('HINCRBYFLOAT', key, 'used', cost))
      if before < limit and after >= limit then table.insert(crossed, key) end
    end
  end
  i = i + 3 + 2 * n
end
return crossed
";

/// A budget counter a record or a request touches.
#[derive(Debug, Clone)]
pub struct CounterRef {
    pub key: String,
    pub limit: f64,
}

/// What admission found.
#[derive(Debug, Clone, PartialEq)]
pub enum Admit {
    Reserved,
    /// The counter at this index is not installed for its period yet.
    Missing(usize),
    /// The counter at this index is spent; its `used`.
    Exceeded(usize, f64),
}

pub struct Ledger {
    cluster: Arc<Cluster>,
    stream: String,
    consumer: String,
    /// The drain's consumer group exists (created once, again after a Redis restart).
    group_ready: std::sync::atomic::AtomicBool,
    reserve: Script,
    release: Script,
    ship: Script,
}

impl Ledger {
    pub fn new(cluster: Arc<Cluster>) -> Ledger {
        Ledger {
            stream: cluster.key(STREAM),
            group_ready: Default::default(),
            consumer: format!(
                "{}-{}",
                std::process::id(),
                hex::encode(rand::random::<[u8; 3]>())
            ),
            cluster,
            reserve: Script::new(RESERVE),
            release: Script::new(RELEASE),
            ship: Script::new(SHIP),
        }
    }

    /// The counter key of a budget's period.
    pub fn counter_key(&self, budget_id: &str, period_start: i64) -> String {
        self.cluster
            .key(&format!("budget:{budget_id}:{period_start}"))
    }

    pub async fn admit(&self, counters: &[CounterRef], estimate: f64) -> redis::RedisResult<Admit> {
        let mut invocation = self.reserve.prepare_invoke();
        invocation.arg(estimate);
        for counter in counters {
            invocation.key(&counter.key).arg(counter.limit);
        }
        let reply: Vec<String> = invocation.invoke_async(&mut self.cluster.conn()).await?;
        let index = |i: usize| {
            reply
                .get(i)
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(1)
                .saturating_sub(1)
        };
        Ok(match reply.first().map(String::as_str) {
            Some("missing") => Admit::Missing(index(1)),
            Some("exceeded") => Admit::Exceeded(
                index(1),
                reply
                    .get(2)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_default(),
            ),
            _ => Admit::Reserved,
        })
    }

    pub async fn give_back(&self, keys: &[String], estimate: f64) -> redis::RedisResult<()> {
        let mut invocation = self.release.prepare_invoke();
        invocation.arg(estimate);
        for key in keys {
            invocation.key(key);
        }
        invocation
            .invoke_async::<i64>(&mut self.cluster.conn())
            .await
            .map(|_| ())
    }

    /// Installs a counter with what SQL says was used this period (kept if another
    /// process installed it first); it expires a day after the period ends.
    pub async fn install(&self, key: &str, used: f64, period_end: i64) -> redis::RedisResult<()> {
        redis::pipe()
            .atomic()
            .cmd("HSETNX")
            .arg(key)
            .arg("used")
            .arg(used)
            .ignore()
            .cmd("HSETNX")
            .arg(key)
            .arg("reserved")
            .arg(0)
            .ignore()
            .cmd("PEXPIREAT")
            .arg(key)
            .arg(period_end + 86_400_000)
            .ignore()
            .query_async::<()>(&mut self.cluster.conn())
            .await
    }

    /// `used` and `reserved` of a counter (`None` when not installed).
    pub async fn counter(&self, key: &str) -> redis::RedisResult<Option<(f64, f64)>> {
        let (used, reserved): (Option<f64>, Option<f64>) = redis::cmd("HMGET")
            .arg(key)
            .arg("used")
            .arg("reserved")
            .query_async(&mut self.cluster.conn())
            .await?;
        Ok(used.map(|used| (used, reserved.unwrap_or_default())))
    }

    /// Queues records for SQL and adds their cost to their counters, in one script.
    /// Returns the counters pushed over their limit.
    pub async fn ship(
        &self,
        records: &[(UsageRecord, Vec<CounterRef>)],
    ) -> redis::RedisResult<Vec<String>> {
        let mut crossed = Vec::new();
        for batch in records.chunks(200) {
            let mut invocation = self.ship.prepare_invoke();
            invocation.key(&self.stream);
            for (record, counters) in batch {
                invocation
                    .arg(serde_json::to_string(record).unwrap_or_default())
                    .arg(record.cost)
                    .arg(counters.len());
                for counter in counters {
                    invocation.arg(&counter.key).arg(counter.limit);
                }
            }
            let mut batch_crossed: Vec<String> =
                invocation.invoke_async(&mut self.cluster.conn()).await?;
            crossed.append(&mut batch_crossed);
        }
        Ok(crossed)
    }

    /// Up to `count` shipped records for this process to write to SQL: a dead
    /// flusher's first, then new ones. Pass the entry ids to [`Ledger::written`].
    pub async fn take(&self, count: usize) -> redis::RedisResult<Vec<(String, UsageRecord)>> {
        use std::sync::atomic::Ordering;
        if !self.group_ready.load(Ordering::Relaxed) {
            super::ensure_group(&self.cluster, &self.stream, GROUP).await?;
            self.group_ready.store(true, Ordering::Relaxed);
        }
        match self.take_from_group(count).await {
            // Redis restarted and lost the group: create it again and read once more.
            Err(error) if super::queue::group_missing(&error) => {
                super::ensure_group(&self.cluster, &self.stream, GROUP).await?;
                self.take_from_group(count).await
            }
            taken => taken,
        }
    }

    async fn take_from_group(
        &self,
        count: usize,
    ) -> redis::RedisResult<Vec<(String, UsageRecord)>> {
        let mut conn = self.cluster.conn();
        let stale: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(DRAIN_IDLE.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        let mut ids = stale.claimed;
        if ids.is_empty() {
            let fresh: Option<StreamReadReply> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(count)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(">")
                .query_async(&mut conn)
                .await?;
            ids = fresh
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default();
        }
        Ok(ids
            .into_iter()
            .filter_map(|id| {
                let text: String = id.get("r")?;
                let record = serde_json::from_str(&text).ok()?;
                Some((id.id, record))
            })
            .collect())
    }

    /// The entries are in SQL: acknowledge and delete them.
    pub async fn written(&self, entry_ids: &[String]) -> redis::RedisResult<()> {
        let ids: Vec<&str> = entry_ids.iter().map(String::as_str).collect();
        super::ack_delete(&self.cluster, &self.stream, GROUP, &ids).await
    }

    /// When the oldest record still in the stream was made (`None`: the stream is
    /// empty).
    pub async fn oldest(&self) -> redis::RedisResult<Option<i64>> {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.cluster.conn())
            .await?;
        Ok(reply.ids.first().and_then(|id| {
            let text: String = id.get("r")?;
            serde_json::from_str::<UsageRecord>(&text)
                .ok()
                .map(|r| r.created_at)
        }))
    }
}
