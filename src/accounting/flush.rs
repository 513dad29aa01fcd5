//! The way of usage records to SQL: buffered records and `budget.exceeded` events
//! written in one transaction per flush; scaled, shipped to the Redis usage stream first
//! (spending the shared counters) and drained from it into SQL. The flush lag is
//! exported as `scaigrid_accounting_flush_lag_seconds` (the oldest record not yet in
//! SQL, the spill file's included).

use std::sync::Arc;
use std::time::Duration;

use super::{Accounting, FLUSH_LAG, UsageRecord, store};
use crate::db::now_ms;

impl Accounting {
    /// Writes buffered records and events to SQL (scaled: ships them to the usage
    /// stream, then drains the stream into SQL). On failure they stay buffered (or in
    /// the stream) for the next attempt. Returns the records written to SQL.
    ///
    /// Then, when it worked, records spilled to disk are replayed; when it did not, the
    /// buffer's oldest records beyond its cap are spilled (see `spill`).
    pub async fn flush(&self) -> anyhow::Result<usize> {
        let _one_flusher = self.flushing.lock().await;
        let result = match self.book.flush(self).await {
            Ok(written) => self
                .replay_spilled()
                .await
                .map(|replayed| written + replayed),
            Err(error) => Err(error),
        };
        if result.is_err() {
            self.spill_excess().await;
        }
        metrics::gauge!(super::spill::BUFFERED).set(self.buffered() as f64);
        result
    }

    /// The buffered records, taken for a flush.
    pub(super) fn take_pending(&self) -> Vec<UsageRecord> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts records back in front of the buffer (a write failed).
    pub(super) fn restore(&self, records: Vec<UsageRecord>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let newer = std::mem::replace(&mut *pending, records);
        pending.extend(newer);
    }

    /// Writes records and the buffered events in one transaction; on failure the
    /// records go back to the buffer, or (when they came from the stream) stay there.
    pub(super) async fn write(&self, records: Vec<UsageRecord>) -> anyhow::Result<usize> {
        let events = std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()));
        if records.is_empty() && events.is_empty() {
            return Ok(0);
        }
        let written = async {
            let mut tx = self.db.begin().await?;
            let sqlite = self.db.kind == crate::db::DbKind::Sqlite;
            store::insert_batch(&mut tx, &records, sqlite).await?;
            for (tenant_id, payload) in &events {
                crate::db::events::emit(&mut tx, tenant_id, "budget.exceeded", payload).await?;
            }
            tx.commit().await
        }
        .await;
        match written {
            Ok(()) => Ok(records.len()),
            Err(error) => {
                if self.book.rebuffers() {
                    self.restore(records);
                }
                self.events
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .splice(0..0, events);
                Err(error.into())
            }
        }
    }

    /// Seconds since the oldest record still waiting to be written to SQL, in this
    /// process's buffer or (scaled) in the usage stream; 0 when none.
    pub async fn lag_seconds(&self) -> f64 {
        let local = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|r| r.created_at)
            .min();
        let shared = self.book.oldest().await;
        local
            .into_iter()
            .chain(shared)
            .chain(self.spill.oldest())
            .min()
            .map(|oldest| (now_ms() - oldest).max(0) as f64 / 1000.0)
            .unwrap_or(0.0)
    }

    /// Flushes every `interval` until the process ends, exporting the lag.
    pub fn spawn_flusher(self: &Arc<Self>, interval: Duration) {
        let accounting = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                if let Err(error) = accounting.flush().await {
                    tracing::error!(%error, "usage records not written; will retry");
                }
                metrics::gauge!(FLUSH_LAG).set(accounting.lag_seconds().await);
            }
        });
    }
}
