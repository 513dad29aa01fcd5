//! Job workers: in `serve` (the embedded default) and in `scaigrid worker` processes.
//!
//! Two ways to find work, one way to run it ([`crate::jobs::process`]):
//! - **Embedded default**: the database is the queue. A worker claims the oldest queued
//!   job (or one whose lease ran out, i.e. its worker died). Workers in the same process
//!   are woken at once when a job is queued; otherwise they poll every second.
//! - **Scaled** (Redis configured): one consumer per process reads the job stream
//!   ([`crate::cluster::queue`]) for as many jobs as it has free workers, takes over a
//!   dead worker's entries after the visibility timeout, and re-adds jobs whose entry
//!   was lost (the sweep).
//!
//! Stopping ([`Workers::stop`]) takes no new job, gives running ones the grace period,
//! and puts the rest back in the queue, so another worker starts them at once instead
//! of waiting for their lease to lapse.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{Semaphore, watch};

use crate::app::AppState;
use crate::cluster::queue::{self, Entry, Queue};
use crate::config::Config;
use crate::db::jobs::{Claim, JobRow};
use crate::error::{ApiError, ApiResult};
use crate::jobs::Processed;
use crate::records::Timestamp;

const POLL: Duration = Duration::from_secs(1);
/// Longest blocking read of the job stream (also how quickly a stop is noticed).
const BLOCK: Duration = Duration::from_secs(1);
/// A consumer (a worker process) quiet this long with nothing pending has stopped.
const CONSUMER_IDLE: Duration = Duration::from_secs(3600);
/// How often a worker process writes its row ([`crate::db::workers`]).
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A worker row not written for this long is a process that stopped without a word.
pub const HEARTBEAT_LOST: Duration = Duration::from_secs(20);
/// ... and after this long its row goes.
const HEARTBEAT_FORGOTTEN: Duration = Duration::from_secs(3600);

/// What this process's workers are doing.
#[derive(Default)]
struct Tracker {
    /// Jobs running now: job id → its stream entry (scaled deployment).
    jobs: Mutex<HashMap<String, Option<String>>>,
    /// Jobs taken and let go since the process started.
    handled: AtomicI64,
    /// A job started or ended: the heartbeat writes at once, so the list agrees with
    /// the jobs' statuses.
    changed: tokio::sync::Notify,
}

type InFlight = Arc<Tracker>;

/// The running workers of this process.
pub struct Workers {
    state: Arc<AppState>,
    in_flight: InFlight,
    stop: watch::Sender<bool>,
    /// Writes its row in the worker list (when it runs jobs at all); removes it at the stop.
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

/// Starts `count` workers on the current runtime (none when `count` is 0, or when this
/// process has no backend for any job: it would only take jobs from workers that can
/// run them and fail them).
pub fn spawn(state: &Arc<AppState>, count: usize) -> Workers {
    let (stop, stopped) = watch::channel(false);
    let in_flight: InFlight = Default::default();
    let runnable = crate::config::KNOWN_MODULES
        .iter()
        .any(|module| state.module_error(module).is_none());
    if count > 0 && !runnable {
        tracing::warn!(
            "no speech backend in this process (engines off, no relay): it runs no jobs; \
             set `[jobs] workers = 0` to say so, or enable the engines"
        );
    }
    let mut heartbeat_task = None;
    if count > 0 && runnable {
        let consumer = format!(
            "{}-{}-{}",
            state.config.engines.node_id,
            std::process::id(),
            &hex::encode(rand::random::<[u8; 3]>())
        );
        heartbeat_task = Some(tokio::spawn(heartbeat(
            state.clone(),
            consumer.clone(),
            count,
            in_flight.clone(),
            stopped.clone(),
        )));
        match state.jobs.stream().cloned() {
            Some(queue) => {
                tokio::spawn(consume(
                    state.clone(),
                    queue,
                    consumer,
                    count,
                    in_flight.clone(),
                    stopped,
                ));
            }
            None => {
                for index in 0..count {
                    tokio::spawn(poll(
                        state.clone(),
                        index,
                        in_flight.clone(),
                        stopped.clone(),
                    ));
                }
            }
        }
    }
    Workers {
        state: state.clone(),
        in_flight,
        stop,
        heartbeat: heartbeat_task,
    }
}

/// Writes this process's row in the worker list every [`HEARTBEAT`] until the stop,
/// then removes it; drops rows of processes gone for an hour.
async fn heartbeat(
    state: Arc<AppState>,
    id: String,
    capacity: usize,
    in_flight: InFlight,
    mut stop: watch::Receiver<bool>,
) {
    let mut row = crate::db::workers::WorkerRow {
        id,
        node_id: state.config.engines.node_id.clone(),
        host: crate::config::host_name(),
        pid: i64::from(std::process::id()),
        capacity: capacity as i64,
        busy: 0,
        jobs_handled: 0,
        started_at: Timestamp(crate::db::now_ms()),
        seen_at: Timestamp(0),
    };
    while !*stop.borrow() {
        row.busy = in_flight
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len() as i64;
        row.jobs_handled = in_flight.handled.load(Ordering::Relaxed);
        let written = async {
            let mut conn = state.db.pool.acquire().await?;
            crate::db::workers::beat(&mut conn, &row).await?;
            let forgotten = crate::db::now_ms() - HEARTBEAT_FORGOTTEN.as_millis() as i64;
            crate::db::workers::prune(&mut conn, forgotten).await
        }
        .await;
        if let Err(error) = written {
            tracing::warn!(%error, "worker heartbeat not written");
        }
        let _ = tokio::time::timeout(HEARTBEAT, async {
            tokio::select! {
                _ = stop.changed() => {}
                () = in_flight.changed.notified() => {}
            }
        })
        .await;
    }
    let removed = async {
        let mut conn = state.db.pool.acquire().await?;
        crate::db::workers::remove(&mut conn, &row.id).await
    }
    .await;
    if let Err(error) = removed {
        tracing::warn!(%error, "worker row not removed; it ages out");
    }
}

impl Workers {
    /// Takes no new job; waits up to `grace` for running jobs, then puts the rest back
    /// in the queue.
    pub async fn stop(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        if let Some(task) = self.heartbeat.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !self.running().is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (job_id, entry) in self.running() {
            let released = async {
                let mut conn = self.state.db.pool.acquire().await?;
                crate::db::jobs::release(&mut conn, &job_id).await?;
                if let (Some(queue), Some(entry)) = (self.state.jobs.stream(), entry) {
                    queue.enqueue(&job_id).await?;
                    queue
                        .done(&Entry {
                            entry_id: entry,
                            job_id: job_id.clone(),
                        })
                        .await?;
                }
                anyhow::Ok(())
            }
            .await;
            match released {
                Ok(()) => tracing::info!(%job_id, "job released at shutdown"),
                Err(error) => {
                    tracing::warn!(%job_id, %error, "job not released; its lease will lapse")
                }
            }
        }
    }

    fn running(&self) -> Vec<(String, Option<String>)> {
        let map = self
            .in_flight
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Registers a running job for [`Workers::stop`]; unregisters when dropped.
struct Running {
    in_flight: InFlight,
    job_id: String,
}

impl Running {
    fn new(in_flight: &InFlight, job_id: &str, entry: Option<&str>) -> Running {
        in_flight
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job_id.to_owned(), entry.map(str::to_owned));
        in_flight.changed.notify_one();
        Running {
            in_flight: in_flight.clone(),
            job_id: job_id.to_owned(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.in_flight
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.job_id);
        self.in_flight.handled.fetch_add(1, Ordering::Relaxed);
        self.in_flight.changed.notify_one();
    }
}

/// The embedded default's worker: claims from the database.
async fn poll(
    state: Arc<AppState>,
    index: usize,
    in_flight: InFlight,
    stop: watch::Receiver<bool>,
) {
    tracing::info!(worker = index, "job worker started");
    let lease_ms = state.config.jobs.lease.as_millis() as i64;
    while !*stop.borrow() {
        let claimed = match state.db.pool.acquire().await {
            Ok(mut conn) => crate::db::jobs::claim_next(&mut conn, lease_ms).await,
            Err(error) => Err(error),
        };
        match claimed {
            Ok(Some(id)) => {
                let _running = Running::new(&in_flight, &id, None);
                // `process` opens the job's span (a child of the request's trace).
                let outcome = crate::jobs::process(&state.jobs, &*state, &id).await;
                if let Err(error) = outcome {
                    tracing::error!(job_id = %id, error = %error.message, "job bookkeeping failed");
                }
            }
            Ok(None) => {
                let _ = tokio::time::timeout(POLL, state.jobs.queued_here()).await;
            }
            Err(error) => {
                tracing::warn!(%error, "claiming a job failed; retrying");
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// The scaled deployment's consumer: reads the stream for as many jobs as there are
/// free workers and runs each in its own task.
async fn consume(
    state: Arc<AppState>,
    queue: Arc<Queue>,
    consumer: String,
    workers: usize,
    in_flight: InFlight,
    stop: watch::Receiver<bool>,
) {
    let lease = state.config.jobs.lease;
    let free = Arc::new(Semaphore::new(workers));
    let mut blocking = match state.cluster.as_ref().map(|c| c.blocking_conn(BLOCK)) {
        Some(Ok(conn)) => conn,
        _ => {
            tracing::error!("no connection for the job stream; this process runs no jobs");
            return;
        }
    };
    let mut group_ready = false;
    let mut last_reclaim = Instant::now() - lease;
    let mut last_sweep = Instant::now() - lease;
    tracing::info!(%consumer, workers, "job consumer started");
    while !*stop.borrow() {
        if !group_ready {
            match queue.ensure_group().await {
                Ok(()) => {
                    group_ready = true;
                    // A new group may mean a Redis that lost its data: re-add at once.
                    last_sweep = Instant::now() - 2 * lease;
                }
                Err(error) => {
                    tracing::warn!(%error, "job stream unavailable; retrying");
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            }
        }
        if last_sweep.elapsed() >= lease {
            last_sweep = Instant::now();
            if let Err(error) = queue::sweep(&state.db, &queue, 2 * lease).await {
                tracing::warn!(%error, "queue sweep failed");
            }
            if let Err(error) = queue.prune_consumers(CONSUMER_IDLE).await {
                tracing::warn!(%error, "pruning stopped consumers failed");
            }
            if let Ok(depth) = queue.depth().await {
                metrics::gauge!("scaigrid_job_queue_depth").set(depth as f64);
            }
        }
        let Ok(first) = free.clone().acquire_owned().await else {
            return;
        };
        let mut permits = vec![first];
        while let Ok(permit) = free.clone().try_acquire_owned() {
            permits.push(permit);
        }
        let mut entries = Vec::new();
        if last_reclaim.elapsed() >= lease / 2 {
            last_reclaim = Instant::now();
            match queue.reclaim(&consumer, lease, permits.len()).await {
                Ok(taken) => {
                    for entry in &taken {
                        tracing::info!(job_id = %entry.job_id, "taking over a job whose worker stopped answering");
                    }
                    entries = taken;
                }
                Err(error) => tracing::warn!(%error, "reclaiming stalled jobs failed"),
            }
        }
        if entries.is_empty() {
            match queue
                .read(&mut blocking, &consumer, permits.len(), BLOCK)
                .await
            {
                Ok(read) => entries = read,
                Err(error) => {
                    if queue::group_missing(&error) {
                        group_ready = false;
                    } else {
                        tracing::warn!(%error, "reading the job stream failed; retrying");
                        tokio::time::sleep(POLL).await;
                    }
                    continue;
                }
            }
        }
        for (entry, permit) in entries.into_iter().zip(permits.drain(..)) {
            let (state, queue, consumer, in_flight) = (
                state.clone(),
                queue.clone(),
                consumer.clone(),
                in_flight.clone(),
            );
            // `process` opens the job's span (a child of the request's trace); the
            // lines before and after it name the job themselves.
            tokio::spawn(async move {
                run_entry(&state, &queue, &consumer, entry, &in_flight).await;
                drop(permit);
            });
        }
    }
}

/// Claims and runs the job of one stream entry, keeping the entry alive meanwhile.
async fn run_entry(
    state: &AppState,
    queue: &Queue,
    consumer: &str,
    entry: Entry,
    in_flight: &InFlight,
) {
    let lease = state.config.jobs.lease;
    let claim = async {
        let mut conn = state.db.pool.acquire().await?;
        crate::db::jobs::claim(&mut conn, &entry.job_id, lease.as_millis() as i64).await
    }
    .await;
    let finished = match claim {
        Err(error) => {
            // Left pending: taken over again after the visibility timeout.
            tracing::warn!(job_id = %entry.job_id, %error, "claiming a job failed");
            return;
        }
        // Another worker runs it; if that worker dies this entry comes back.
        Ok(Claim::Held) => return,
        Ok(Claim::Gone) => true,
        Ok(Claim::Claimed) => {
            let _running = Running::new(in_flight, &entry.job_id, Some(&entry.entry_id));
            let keep_alive = async {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    if let Err(error) = queue.touch(consumer, &entry.entry_id).await {
                        tracing::warn!(job_id = %entry.job_id, %error, "job entry not renewed");
                    }
                }
            };
            let outcome = tokio::select! {
                outcome = crate::jobs::process(&state.jobs, state, &entry.job_id) => outcome,
                () = keep_alive => unreachable!("the keep-alive loop never ends"),
            };
            match outcome {
                Ok(Processed::Ended) => true,
                Ok(Processed::Requeued) => queue.enqueue(&entry.job_id).await.is_ok(),
                Err(error) => {
                    // The row stays processing; its lease lapses and the entry comes back.
                    tracing::error!(job_id = %entry.job_id, error = %error.message,
                        "job bookkeeping failed");
                    false
                }
            }
        }
    };
    if finished && let Err(error) = queue.done(&entry).await {
        tracing::warn!(job_id = %entry.job_id, %error,
            "job entry not acknowledged; it will be seen again");
    }
}

/// Each module's work on its jobs, for [`crate::jobs::process`].
impl crate::jobs::Runner for AppState {
    async fn run(&self, job: &JobRow) -> ApiResult<(Value, f64)> {
        use crate::{scaiecho, scaispeak};
        match (job.module.as_str(), job.kind.as_str()) {
            (scaiecho::MODULE, scaiecho::jobs::KIND) => {
                scaiecho::jobs::run(&self.scaiecho, job).await
            }
            (scaispeak::MODULE, scaispeak::jobs::KIND) => {
                scaispeak::jobs::run(&self.scaispeak, job).await
            }
            (module, kind) => Err(ApiError::internal(format_args!(
                "no runner for {module} {kind} jobs"
            ))),
        }
    }

    async fn cleanup(&self, job: &JobRow) {
        if job.module == crate::scaiecho::MODULE {
            crate::scaiecho::jobs::cleanup(&self.scaiecho, job).await;
        }
    }
}

/// `scaigrid worker`: opens the state (database, object store, engines) and runs the
/// configured number of workers until a stop signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let workers = config.jobs.workers.max(1);
    let state = AppState::open(config).await?;
    let pool = spawn(&state, workers);
    crate::server::spawn_background(&state, false);
    tracing::info!(workers, "worker process started");
    crate::server::shutdown_signal().await;
    tracing::info!("stop requested; finishing or releasing running jobs");
    pool.stop(Duration::from_secs(state.config.shutdown_grace_seconds))
        .await;
    if let Err(error) = state.gate.accounting.flush().await {
        tracing::error!(%error, "usage records not written at shutdown");
    }
    tracing::info!("worker stopped");
    Ok(())
}
