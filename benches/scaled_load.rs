//! The scaled deployment's shared state under load, against a real Redis (and
//! PostgreSQL) on loopback, started by `scripts/services/*` as the tests do:
//!
//! - **Rate-limit checks per second** through [`RedisLimitStore`] from many concurrent
//!   tasks (the multiplexed connection pipelines them), against the in-process
//!   [`MemoryStore`] in the same run as the reference.
//! - **Job queue round trip**: enqueue → a consumer has the entry (stream only), and
//!   enqueue → a worker has claimed the job row in PostgreSQL (what a worker does
//!   before it starts a job), with p50/p99 latency and jobs per second.
//!
//! `cargo bench --bench scaled_load -- [--seconds 5] [--jobs 20000]`
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use scaigrid::cluster::Cluster;
use scaigrid::cluster::limits::RedisLimitStore;
use scaigrid::cluster::queue::Queue;
use scaigrid::config::{RedisConfig, Secret};
use scaigrid::ratelimit::LimitStore;
use scaigrid::ratelimit::memory::MemoryStore;

const CONCURRENCY: usize = 64;

fn arg(name: &str, default: u64) -> u64 {
    let list: Vec<String> = std::env::args().collect();
    list.iter()
        .position(|a| a == name)
        .and_then(|i| list.get(i + 1))
        .map(|v| v.parse().expect(name))
        .unwrap_or(default)
}

fn service(name: &str) -> String {
    let script = format!("{}/scripts/services/{name}", env!("CARGO_MANIFEST_DIR"));
    let output = std::process::Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(output.status.success(), "{script} failed: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Checks per second from `CONCURRENCY` tasks for `seconds`.
async fn checks_per_second(store: Arc<dyn LimitStore>, seconds: u64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|task| {
            let (store, stop, count) = (store.clone(), stop.clone(), count.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("bench:{task}:{}", i % 100);
                    store.take(&key, 1_000_000, 1.0).await.expect("check");
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    // The in-process store never waits: let the timer run.
                    if i.is_multiple_of(256) {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Enqueues `jobs` ids while `consumers` read them; `claim` runs per entry before it
/// counts as started. `rate`: `None` floods from `CONCURRENCY` producers (throughput),
/// `Some(r)` sends `r` per second from one producer (latency below saturation).
/// Returns (p50 ms, p99 ms, jobs/s).
async fn round_trip<F, Fut>(
    cluster: Arc<Cluster>,
    jobs: usize,
    consumers: usize,
    ids: Arc<Vec<String>>,
    rate: Option<u64>,
    claim: F,
) -> (f64, f64, f64)
where
    F: Fn(String) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let queue = Arc::new(Queue::new(cluster.clone()));
    queue.ensure_group().await.unwrap();
    let started = Instant::now();
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(jobs)));
    let seen = Arc::new(AtomicU64::new(0));
    let consumer_tasks: Vec<_> = (0..consumers)
        .map(|c| {
            let (queue, cluster, latencies, seen, claim) = (
                queue.clone(),
                cluster.clone(),
                latencies.clone(),
                seen.clone(),
                claim.clone(),
            );
            tokio::spawn(async move {
                let mut conn = cluster.blocking_conn(Duration::from_millis(200)).unwrap();
                let name = format!("bench-consumer-{c}");
                while (seen.load(Ordering::Relaxed) as usize) < jobs {
                    let entries = queue
                        .read(&mut conn, &name, 64, Duration::from_millis(100))
                        .await
                        .unwrap();
                    let claims = entries.iter().map(|entry| {
                        let (claim, queue, latencies) =
                            (claim.clone(), queue.clone(), latencies.clone());
                        let entry = entry.clone();
                        async move {
                            // The id carries its enqueue time (µs since the run began).
                            let sent: u64 =
                                entry.job_id.rsplit('_').next().unwrap().parse().unwrap();
                            claim(entry.job_id.clone()).await;
                            let now = started.elapsed().as_micros() as u64;
                            latencies.lock().unwrap().push((now - sent) as f64 / 1000.0);
                            queue.done(&entry).await.unwrap();
                        }
                    });
                    let n = entries.len();
                    futures_util::future::join_all(claims).await;
                    seen.fetch_add(n as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let producer_count = if rate.is_some() { 1 } else { CONCURRENCY };
    let per_producer = jobs / producer_count;
    let producers: Vec<_> = (0..producer_count)
        .map(|p| {
            let (queue, ids) = (queue.clone(), ids.clone());
            tokio::spawn(async move {
                let mut ticker =
                    rate.map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / r as f64)));
                for i in 0..per_producer {
                    if let Some(ticker) = ticker.as_mut() {
                        ticker.tick().await;
                    }
                    let base = &ids[p * per_producer + i];
                    let id = format!("{base}_{}", started.elapsed().as_micros());
                    let queue = queue.clone();
                    // Paced sends do not wait for each other's answer (open loop).
                    let send = async move {
                        queue.enqueue(&id).await.unwrap();
                    };
                    match rate {
                        Some(_) => drop(tokio::spawn(send)),
                        None => send.await,
                    }
                }
            })
        })
        .collect();
    for task in producers {
        task.await.unwrap();
    }
    for task in consumer_tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort_by(f64::total_cmp);
    (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.len() as f64 / elapsed,
    )
}

#[tokio::main]
async fn main() {
    let seconds = arg("--seconds", 5);
    let jobs = (arg("--jobs", 20_000) as usize / CONCURRENCY) * CONCURRENCY;
    let redis = service("redis");
    let cluster = |prefix: &str| {
        Arc::new(
            Cluster::open(&RedisConfig {
                url: Secret::new(redis.clone()),
                key_prefix: format!("bench{prefix}{}", std::process::id()),
                tls: Default::default(),
            })
            .unwrap(),
        )
    };

    println!("rate-limit checks, {CONCURRENCY} concurrent tasks, {seconds} s each:");
    let memory = checks_per_second(Arc::new(MemoryStore::default()), seconds).await;
    let shared = checks_per_second(Arc::new(RedisLimitStore::new(cluster("rl"))), seconds).await;
    println!("  in-process (reference): {memory:>12.0} checks/s");
    println!(
        "  redis:                  {shared:>12.0} checks/s  ({:.3}x the reference)",
        shared / memory
    );

    println!("job queue round trip, {jobs} jobs from {CONCURRENCY} producers, 2 consumers:");
    let plain: Arc<Vec<String>> = Arc::new((0..jobs).map(|i| format!("job{i}")).collect());
    let (p50, p99, rate) = round_trip(
        cluster("q"),
        jobs,
        2,
        plain.clone(),
        None,
        |_id: String| async {},
    )
    .await;
    println!("  stream only, flooded:   p50 {p50:.2} ms  p99 {p99:.2} ms  {rate:.0} jobs/s");
    let paced = 3000.min(jobs);
    let (p50, p99, _) = round_trip(
        cluster("qp"),
        paced,
        2,
        plain,
        Some(1000),
        |_id: String| async {},
    )
    .await;
    println!("  stream only, 1000/s:    p50 {p50:.2} ms  p99 {p99:.2} ms");

    // The same with the worker's claim of the job row in PostgreSQL.
    let base = service("postgres");
    let name = format!("bench_{}", std::process::id());
    {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres"))
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let db = scaigrid::db::Db::connect(&scaigrid::config::DatabaseConfig::Postgres {
        url: Secret::new(format!("{base}/{name}")),
    })
    .await
    .unwrap();
    scaigrid::db::migrate::run(&db).await.unwrap();
    sqlx::query("INSERT INTO tenants (id, slug, name, status, created_at, updated_at) VALUES ('ten_bench', 'bench', 'bench', 'active', 0, 0)")
        .execute(&db.pool)
        .await
        .unwrap();
    let ids: Vec<String> = (0..jobs).map(|_| scaigrid::db::jobs::job_id()).collect();
    for id in &ids {
        let mut conn = db.pool.acquire().await.unwrap();
        scaigrid::db::jobs::create(
            &mut conn,
            &scaigrid::db::jobs::NewJob {
                id,
                tenant_id: "ten_bench",
                module: "scaiecho",
                kind: "transcription",
                subject: "bench",
                options: "{}",
                input_key: "x",
                media_type: None,
                audio_seconds: None,
            },
        )
        .await
        .unwrap();
    }
    let pool = db.pool.clone();
    let claim = move |id: String| {
        let pool = pool.clone();
        async move {
            let row_id = id
                .rsplit_once('_')
                .map(|(base, _)| base.to_owned())
                .unwrap();
            let mut conn = pool.acquire().await.unwrap();
            let claim = scaigrid::db::jobs::claim(&mut conn, &row_id, 60_000)
                .await
                .unwrap();
            assert_eq!(claim, scaigrid::db::jobs::Claim::Claimed);
        }
    };
    let (flood, paced_ids) = ids.split_at(jobs - paced);
    let (p50, p99, rate) = round_trip(
        cluster("qpg"),
        flood.len() / CONCURRENCY * CONCURRENCY,
        2,
        Arc::new(flood.to_vec()),
        None,
        claim.clone(),
    )
    .await;
    println!("  + row claim, flooded:   p50 {p50:.2} ms  p99 {p99:.2} ms  {rate:.0} jobs/s");
    let (p50, p99, _) = round_trip(
        cluster("qpgp"),
        paced,
        2,
        Arc::new(paced_ids.to_vec()),
        Some(1000),
        claim,
    )
    .await;
    println!("  + row claim, 1000/s:    p50 {p50:.2} ms  p99 {p99:.2} ms");
}
