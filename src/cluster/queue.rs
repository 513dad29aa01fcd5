//! The job queue of the scaled deployment on a Redis Stream with one consumer group.
//!
//! The database row stays the job's truth (status, lease, result); the stream carries
//! job ids to workers. A worker reads entries with `XREADGROUP`, claims the row (queued,
//! or processing with a lapsed lease), runs it, and acknowledges and deletes the entry.
//! While it runs, the worker renews the row's lease and re-claims its own entry (which
//! resets the entry's idle time), so live jobs are never taken over. When a worker dies,
//! its entry idles past the visibility timeout (the lease), another worker takes it over
//! with `XAUTOCLAIM`, claims the lapsed row and finishes the job. Completion is
//! conditional on the row still being `processing`, so a job ends (and its event is
//! emitted) once even when it ran twice.
//!
//! Entries can be lost (Redis restarted without persistence, or down while a job was
//! submitted); the [`sweep`] re-adds jobs the database holds as queued for long. A hash
//! (job id → its entry) lets the sweep skip jobs whose entry is still in the stream
//! (only waiting in a long backlog), so a backlog does not fill up with duplicates; a
//! duplicate that slips through anyway is harmless: its claim finds the row taken or
//! ended.

use std::sync::Arc;
use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

use super::Cluster;

const STREAM: &str = "jobs";
const GROUP: &str = "workers";
const ENTRIES: &str = "jobs:entries";

/// KEYS: stream, entries hash. ARGV: job id, `1` to add only when the job has no entry
/// left in the stream. Returns the new entry id, or nil when skipped.
const ENQUEUE: &str = r"
if ARGV[2] == '1' then
  local entry = redis.call('HGET', KEYS[2], ARGV[1])
  if entry and #redis.call('XRANGE', KEYS[1], entry, entry) > 0 then return false end
end
local id = redis.call('XADD', KEYS[1], '*', 'job', ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], id)
return id
";

/// KEYS: stream, entries hash. ARGV: group, entry id, job id.
const DONE: &str = r"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[2] then redis.call('HDEL', KEYS[2], ARGV[3]) end
return 0
";

/// One stream entry: which job it carries.
#[derive(Debug, Clone)]
pub struct Entry {
    pub entry_id: String,
    pub job_id: String,
}

fn entries(ids: Vec<StreamId>) -> Vec<Entry> {
    ids.into_iter()
        .filter_map(|id| {
            let job_id = id.get::<String>("job")?;
            Some(Entry {
                entry_id: id.id,
                job_id,
            })
        })
        .collect()
}

pub struct Queue {
    cluster: Arc<Cluster>,
    stream: String,
    entries: String,
    enqueue: redis::Script,
    done: redis::Script,
}

impl Queue {
    pub fn new(cluster: Arc<Cluster>) -> Queue {
        Queue {
            stream: cluster.key(STREAM),
            entries: cluster.key(ENTRIES),
            cluster,
            enqueue: redis::Script::new(ENQUEUE),
            done: redis::Script::new(DONE),
        }
    }

    async fn add(&self, job_id: &str, only_if_missing: bool) -> redis::RedisResult<Option<String>> {
        self.enqueue
            .key(&self.stream)
            .key(&self.entries)
            .arg(job_id)
            .arg(if only_if_missing { "1" } else { "0" })
            .invoke_async(&mut self.cluster.conn())
            .await
    }

    /// Creates the stream and its group if missing (after a Redis restart too).
    pub async fn ensure_group(&self) -> redis::RedisResult<()> {
        super::ensure_group(&self.cluster, &self.stream, GROUP).await
    }

    /// Adds a job id to the stream.
    pub async fn enqueue(&self, job_id: &str) -> redis::RedisResult<String> {
        Ok(self.add(job_id, false).await?.unwrap_or_default())
    }

    /// Adds a job id unless the stream still holds an entry for it; whether it added.
    pub async fn enqueue_if_missing(&self, job_id: &str) -> redis::RedisResult<bool> {
        Ok(self.add(job_id, true).await?.is_some())
    }

    /// Up to `count` new entries for `consumer`, waiting at most `block` for one.
    pub async fn read(
        &self,
        conn: &mut redis::aio::ConnectionManager,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> redis::RedisResult<Vec<Entry>> {
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(conn)
            .await?;
        Ok(reply
            .map(|reply| {
                reply
                    .keys
                    .into_iter()
                    .flat_map(|key| entries(key.ids))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Takes over up to `count` entries whose consumer has not touched them for
    /// `min_idle` (a dead worker's).
    pub async fn reclaim(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> redis::RedisResult<Vec<Entry>> {
        let mut conn = self.cluster.conn();
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        Ok(entries(reply.claimed))
    }

    /// Resets the entry's idle time: its job is still running here.
    pub async fn touch(&self, consumer: &str, entry_id: &str) -> redis::RedisResult<()> {
        let mut conn = self.cluster.conn();
        redis::cmd("XCLAIM")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(entry_id)
            .arg("JUSTID")
            .query_async::<redis::Value>(&mut conn)
            .await
            .map(|_| ())
    }

    /// The entry is dealt with: acknowledged and removed from the stream (and from the
    /// job's entry record, unless a newer entry replaced it there).
    pub async fn done(&self, entry: &Entry) -> redis::RedisResult<()> {
        self.done
            .key(&self.stream)
            .key(&self.entries)
            .arg(GROUP)
            .arg(&entry.entry_id)
            .arg(&entry.job_id)
            .invoke_async::<i64>(&mut self.cluster.conn())
            .await
            .map(|_| ())
    }

    /// Forgets consumers (worker processes that stopped) idle longer than `idle` with
    /// nothing pending, so the group does not grow with every restart. Returns how many.
    pub async fn prune_consumers(&self, idle: Duration) -> redis::RedisResult<usize> {
        let mut conn = self.cluster.conn();
        let info: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&self.stream)
            .arg(GROUP)
            .query_async(&mut conn)
            .await?;
        let mut pruned = 0;
        for consumer in info.consumers {
            if consumer.pending == 0 && consumer.idle as u128 > idle.as_millis() {
                redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&self.stream)
                    .arg(GROUP)
                    .arg(&consumer.name)
                    .query_async::<i64>(&mut conn)
                    .await?;
                pruned += 1;
            }
        }
        Ok(pruned)
    }

    /// Entries in the stream: not yet read, or read and not yet done (the
    /// `scaigrid_job_queue_depth` gauge).
    pub async fn depth(&self) -> redis::RedisResult<u64> {
        let mut conn = self.cluster.conn();
        redis::cmd("XLEN")
            .arg(&self.stream)
            .query_async(&mut conn)
            .await
    }
}

/// Whether an error means the group is gone (Redis restarted): recreate and sweep.
pub fn group_missing(error: &redis::RedisError) -> bool {
    error.code() == Some("NOGROUP")
}

/// Re-adds jobs the database holds as queued for longer than `older_than` (their entry
/// may have been lost); returns how many.
pub async fn sweep(
    db: &crate::db::Db,
    queue: &Queue,
    older_than: Duration,
) -> anyhow::Result<usize> {
    let ids = {
        let mut conn = db.pool.acquire().await?;
        crate::db::jobs::touch_stale_queued(&mut conn, older_than.as_millis() as i64, 1000).await?
    };
    let mut added = 0;
    for id in &ids {
        added += queue.enqueue_if_missing(id).await? as usize;
    }
    if added > 0 {
        tracing::info!(
            count = added,
            "queued jobs whose entry was lost re-added to the stream"
        );
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_are_read_once_taken_over_when_idle_and_gone_when_done() {
        let Some(cluster) = crate::cluster::test_cluster() else {
            return;
        };
        let queue = Queue::new(cluster.clone());
        queue.ensure_group().await.unwrap();
        queue.ensure_group().await.unwrap();
        queue.enqueue("job_1").await.unwrap();
        queue.enqueue("job_2").await.unwrap();
        let mut conn = cluster.blocking_conn(Duration::from_millis(100)).unwrap();
        let block = Duration::from_millis(50);
        let first = queue.read(&mut conn, "a", 1, block).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].job_id, "job_1");
        let second = queue.read(&mut conn, "b", 5, block).await.unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].job_id, "job_2");
        assert!(
            queue
                .read(&mut conn, "b", 5, block)
                .await
                .unwrap()
                .is_empty()
        );

        // `a` stops answering: its entry is taken over once idle long enough, not before.
        assert!(
            queue
                .reclaim("b", Duration::from_secs(60), 5)
                .await
                .unwrap()
                .is_empty()
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
        // `b` keeps its own entry alive.
        queue.touch("b", &second[0].entry_id).await.unwrap();
        let taken = queue
            .reclaim("b", Duration::from_millis(100), 5)
            .await
            .unwrap();
        assert_eq!(taken.len(), 1, "{taken:?}");
        assert_eq!(taken[0].job_id, "job_1");

        queue.done(&taken[0]).await.unwrap();
        // While its entry is in the stream, a job is not added again.
        assert!(!queue.enqueue_if_missing("job_2").await.unwrap());
        queue.done(&second[0]).await.unwrap();
        assert_eq!(queue.depth().await.unwrap(), 0);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(
            queue
                .reclaim("c", Duration::from_millis(100), 5)
                .await
                .unwrap()
                .is_empty()
        );

        // Consumers with nothing pending that went quiet are forgotten; busy ones stay.
        queue.enqueue("job_3").await.unwrap();
        assert_eq!(queue.read(&mut conn, "d", 1, block).await.unwrap().len(), 1);
        tokio::time::sleep(Duration::from_millis(120)).await;
        let names = || async {
            let info: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(&queue.stream)
                .arg(GROUP)
                .query_async(&mut cluster.conn())
                .await
                .unwrap();
            let mut names: Vec<String> = info.consumers.into_iter().map(|c| c.name).collect();
            names.sort();
            names
        };
        assert!(names().await.len() >= 3, "{:?}", names().await);
        queue
            .prune_consumers(Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(names().await, vec!["d"], "d has job_3 pending");
        assert_eq!(queue.prune_consumers(Duration::ZERO).await.unwrap(), 0);

        // Gone from the stream (done, or lost with a restarted Redis): added again.
        assert!(queue.enqueue_if_missing("job_2").await.unwrap());
        let mut conn2 = cluster.conn();
        let _: () = redis::cmd("DEL")
            .arg(&queue.stream)
            .query_async(&mut conn2)
            .await
            .unwrap();
        assert!(
            queue.enqueue_if_missing("job_3").await.unwrap(),
            "its entry was lost"
        );
    }
}
