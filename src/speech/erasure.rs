//! The erasure reconciler: a speaker profile or a voice deleted while one of its nodes
//! was away (offline, partitioned) is still warm there. Deletion records what each
//! such node owes (`db::evictions`); this loop sends those evictions as soon as the
//! node answers again, and settles them. Eviction is idempotent, so several processes
//! running the loop at once do no harm.

use std::sync::Arc;
use std::time::Duration;

use crate::db::{Db, evictions, speakers};
use crate::inference::pool::Dispatcher;

/// How often owed evictions are looked for.
const EVERY: Duration = Duration::from_secs(2);
/// Evictions sent per round at most.
const BATCH: i64 = 200;

/// Runs the reconciler for as long as the process runs.
pub fn spawn(db: Db, engines: Arc<Dispatcher>) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(EVERY);
        loop {
            ticker.tick().await;
            if let Err(error) = round(&db, &engines).await {
                tracing::warn!(%error, "erasure reconciler round failed");
            }
        }
    });
}

/// Sends what the ready nodes owe; returns how many evictions settled.
pub async fn round(db: &Db, engines: &Dispatcher) -> Result<usize, sqlx::Error> {
    let ready: Vec<String> = engines
        .members()
        .iter()
        .filter(|m| m.ready())
        .map(|m| m.id.clone())
        .collect();
    let mut conn = db.pool.acquire().await?;
    let owed = evictions::owed_by(&mut conn, &ready, BATCH).await?;
    let mut settled = 0;
    for owed in owed {
        match engines
            .evict_on(&owed.node_id, &owed.kind, &owed.item_id)
            .await
        {
            Ok(()) => {
                if owed.kind == "speaker" {
                    speakers::remove_warm(&mut conn, &owed.item_id, &owed.node_id).await?;
                }
                evictions::settle(&mut conn, &owed).await?;
                tracing::info!(node = %owed.node_id, kind = %owed.kind, id = %owed.item_id,
                    "owed eviction sent to a node that is back");
                metrics::counter!("scaigrid_node_evictions_reconciled_total").increment(1);
                settled += 1;
            }
            Err(error) => evictions::failed(&mut conn, &owed, &error).await?,
        }
    }
    Ok(settled)
}
