//! The way of usage records to SQL: buffered records and `budget.exceeded` events
//! written in one transaction per flush; scaled, shipped to the Redis usage stream first
//! (spending the shared counters) and drained from it into SQL. The flush lag is
//! exported as `scaigrid_accounting_flush_lag_seconds`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Accounting, Def, FLUSH_LAG, UsageRecord, store};
use crate::cluster::ledger::{CounterRef, Ledger};
use crate::db::now_ms;

impl Accounting {
    /// Writes buffered records and events to SQL (scaled: ships them to the usage
    /// stream, then drains the stream into SQL). On failure they stay buffered (or in
    /// the stream) for the next attempt. Returns the records written to SQL.
    pub async fn flush(&self) -> anyhow::Result<usize> {
        let _one_flusher = self.flushing.lock().await;
        // Settled reservations first: their records are then surely in `pending`.
        let settled = std::mem::take(&mut *self.settled.lock().unwrap_or_else(|e| e.into_inner()));
        let records = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        match &self.ledger {
            None => self.write(records).await,
            Some(ledger) => {
                if let Err(error) = self.ship(ledger, records).await {
                    self.settled
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .splice(0..0, settled);
                    return Err(error);
                }
                for (keys, estimate) in settled {
                    if let Err(error) = ledger.give_back(&keys, estimate).await {
                        tracing::warn!(%error, "budget reservation not given back");
                    }
                }
                let mut written = 0;
                loop {
                    let taken = ledger.take(1000).await?;
                    let (ids, records): (Vec<String>, Vec<UsageRecord>) = taken.into_iter().unzip();
                    let count = records.len();
                    written += self.write(records).await?;
                    ledger.written(&ids).await?;
                    if count < 1000 {
                        return Ok(written);
                    }
                }
            }
        }
    }

    /// Ships records to the usage stream, spending their cost on the shared counters;
    /// queues `budget.exceeded` for the counters they pushed over.
    async fn ship(&self, ledger: &Ledger, records: Vec<UsageRecord>) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut defs_by_key: HashMap<String, Def> = HashMap::new();
        let batch: Vec<(UsageRecord, Vec<CounterRef>)> = records
            .iter()
            .map(|record| {
                let defs = self.covering(&record.tenant_id, &record.subject_id);
                let counters = self.counter_refs(ledger, &defs, record.created_at);
                for (counter, def) in counters.iter().zip(defs) {
                    defs_by_key.insert(counter.key.clone(), def);
                }
                (record.clone(), counters)
            })
            .collect();
        match ledger.ship(&batch).await {
            Ok(crossed) => {
                let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
                for key in crossed {
                    if let Some(def) = defs_by_key.get(&key) {
                        events.push(Self::exceeded_event(def, def.budget.limit));
                    }
                }
                Ok(())
            }
            Err(error) => {
                self.restore(records);
                Err(error.into())
            }
        }
    }

    /// Puts records back in front of the buffer (a write failed).
    fn restore(&self, records: Vec<UsageRecord>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let newer = std::mem::replace(&mut *pending, records);
        pending.extend(newer);
    }

    /// Writes records and the buffered events in one transaction; on failure the
    /// records go back to the buffer, or (when they came from the stream) stay there.
    async fn write(&self, records: Vec<UsageRecord>) -> anyhow::Result<usize> {
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
                if self.ledger.is_none() {
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
        let shared = match &self.ledger {
            Some(ledger) => ledger.oldest().await.ok().flatten(),
            None => None,
        };
        local
            .into_iter()
            .chain(shared)
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
