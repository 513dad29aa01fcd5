//! The chat answer cache of a scaled deployment, in Redis so every edge answers from
//! what any edge kept: an answer under its exact key (with the model's TTL as the key's
//! expiry), and per semantic partition a capped list of the questions' embeddings with
//! their answers' keys. Similarity is computed by the edge over the partition it reads
//! (one conversation's questions for one tenant and model: at most [`PARTITION_CAP`]).

use std::time::Duration;

use super::Cluster;

/// Questions kept per partition (the newest).
pub const PARTITION_CAP: isize = 256;

fn answer_key(cluster: &Cluster, exact: &str) -> String {
    cluster.key(&format!("cache:a:{exact}"))
}

fn partition_key(cluster: &Cluster, partition: &str) -> String {
    cluster.key(&format!("cache:p:{partition}"))
}

/// The answer kept under `exact` (its serialized bytes), if still there.
pub async fn answer(cluster: &Cluster, exact: &str) -> redis::RedisResult<Option<Vec<u8>>> {
    let mut conn = cluster.conn();
    redis::cmd("GET")
        .arg(answer_key(cluster, exact))
        .query_async(&mut conn)
        .await
}

/// The partition's questions: each embedding (little-endian f32) and its answer's key.
pub async fn questions(
    cluster: &Cluster,
    partition: &str,
) -> redis::RedisResult<Vec<(Vec<f32>, String)>> {
    let mut conn = cluster.conn();
    let items: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(partition_key(cluster, partition))
        .arg(0)
        .arg(PARTITION_CAP - 1)
        .query_async(&mut conn)
        .await?;
    Ok(items.iter().filter_map(|item| decode(item)).collect())
}

/// Keeps an answer for `ttl`, and its question's embedding in its partition.
pub async fn put(
    cluster: &Cluster,
    (exact, partition): (&str, &str),
    embedding: Option<&[f32]>,
    answer: &[u8],
    ttl: Duration,
) -> redis::RedisResult<()> {
    let mut conn = cluster.conn();
    let ttl_ms = ttl.as_millis().max(1) as u64;
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(answer_key(cluster, exact))
        .arg(answer)
        .arg("PX")
        .arg(ttl_ms)
        .ignore();
    if let Some(embedding) = embedding {
        let key = partition_key(cluster, partition);
        pipe.cmd("LPUSH")
            .arg(&key)
            .arg(encode(embedding, exact))
            .ignore();
        pipe.cmd("LTRIM")
            .arg(&key)
            .arg(0)
            .arg(PARTITION_CAP - 1)
            .ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms).ignore();
    }
    pipe.query_async::<()>(&mut conn).await
}

/// `<exact key, 64 hex>` then the embedding as little-endian f32.
fn encode(embedding: &[f32], exact: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(exact.len() + 4 * embedding.len());
    out.extend_from_slice(exact.as_bytes());
    out.extend(embedding.iter().flat_map(|v| v.to_le_bytes()));
    out
}

fn decode(item: &[u8]) -> Option<(Vec<f32>, String)> {
    let (key, vector) = item.split_at_checked(64)?;
    if !vector.len().is_multiple_of(4) {
        return None;
    }
    let key = std::str::from_utf8(key).ok()?.to_owned();
    let vector = vector
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Some((vector, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_round_trip_and_garbage_is_skipped() {
        let key = "ab".repeat(32);
        let item = encode(&[0.5, -1.25], &key);
        assert_eq!(decode(&item), Some((vec![0.5, -1.25], key)));
        assert_eq!(decode(b"short"), None);
        assert_eq!(decode(&item[..item.len() - 1]), None);
    }
}
