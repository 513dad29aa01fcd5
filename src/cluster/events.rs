//! The event bus: every event of the outbox (`transcription.job.completed`,
//! `budget.exceeded`, ...) is also appended, once, to the Redis stream `<prefix>:events`
//! as the webhook body (`id`, `type`, `tenant_id`, `created_at`, `data`), for services
//! of the deployment that follow events with `XREAD`. The stream is capped at about
//! [`MAX_LEN`] entries (approximate trimming, which Redis does in whole nodes, cheaply):
//! it is a live feed, the outbox in SQL is the record.

use super::Cluster;

pub const MAX_LEN: u64 = 100_000;
const STREAM: &str = "events";

pub async fn publish(cluster: &Cluster, name: &str, body: &str) -> redis::RedisResult<()> {
    publish_capped(cluster, name, body, MAX_LEN).await
}

async fn publish_capped(
    cluster: &Cluster,
    name: &str,
    body: &str,
    max_len: u64,
) -> redis::RedisResult<()> {
    redis::cmd("XADD")
        .arg(cluster.key(STREAM))
        .arg("MAXLEN")
        .arg("~")
        .arg(max_len)
        .arg("*")
        .arg("type")
        .arg(name)
        .arg("event")
        .arg(body)
        .query_async::<String>(&mut cluster.conn())
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_appended_in_order_and_the_stream_stays_bounded() {
        let Some(cluster) = crate::cluster::test_cluster() else {
            return;
        };
        for i in 0..3 {
            publish(&cluster, "test.event", &format!("{{\"n\":{i}}}"))
                .await
                .unwrap();
        }
        let mut conn = cluster.conn();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(cluster.key(STREAM))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        let bodies: Vec<String> = reply.ids.iter().filter_map(|id| id.get("event")).collect();
        assert_eq!(bodies, vec!["{\"n\":0}", "{\"n\":1}", "{\"n\":2}"]);
        // Past the cap, old entries go (in whole nodes of 100: approximate trimming).
        for i in 0..500 {
            publish_capped(&cluster, "test.event", &i.to_string(), 100)
                .await
                .unwrap();
        }
        let len: u64 = redis::cmd("XLEN")
            .arg(cluster.key(STREAM))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((100..=200).contains(&len), "{len} entries");
    }
}
