//! Job workers: in `serve` (the embedded default) and in `scaigrid worker` processes.
//!
//! The database is the queue: a worker claims the oldest queued job (or one whose lease
//! ran out, i.e. its worker died) and runs it to its end. Workers in the same process
//! are woken at once when a job is queued; otherwise they poll every second, which is
//! how jobs queued by other processes and jobs left by a restart are picked up.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use crate::app::AppState;
use crate::config::Config;

const POLL: Duration = Duration::from_secs(1);

/// Starts `count` worker tasks on the current runtime.
pub fn spawn(state: &Arc<AppState>, count: usize) {
    for index in 0..count {
        let state = state.clone();
        tokio::spawn(async move { work(state, index).await });
    }
}

async fn work(state: Arc<AppState>, index: usize) {
    tracing::info!(worker = index, "job worker started");
    loop {
        let claimed = match state.db.pool.acquire().await {
            Ok(mut conn) => {
                crate::db::jobs::claim_next(&mut conn, crate::jobs::LEASE.as_millis() as i64).await
            }
            Err(error) => Err(error),
        };
        match claimed {
            Ok(Some(id)) => {
                let span = tracing::info_span!("job", job_id = %id);
                let outcome = crate::jobs::process(&state, &id).instrument(span).await;
                if let Err(error) = outcome {
                    tracing::error!(job_id = %id, error = %error.message, "job bookkeeping failed");
                }
            }
            Ok(None) => {
                let _ = tokio::time::timeout(POLL, state.jobs_wakeup.notified()).await;
            }
            Err(error) => {
                tracing::warn!(%error, "claiming a job failed; retrying");
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// `scaigrid worker`: opens the state (database, object store, engines) and runs the
/// configured number of workers until a stop signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let workers = config.jobs_workers.max(1);
    let state = AppState::open(config).await?;
    spawn(&state, workers);
    state
        .accounting
        .spawn_flusher(state.config.accounting.flush_interval);
    tracing::info!(workers, "worker started");
    crate::server::shutdown_signal().await;
    if let Err(error) = state.accounting.flush().await {
        tracing::error!(%error, "usage records not written at shutdown");
    }
    tracing::info!("worker stopped");
    Ok(())
}
