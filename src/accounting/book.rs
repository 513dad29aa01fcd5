//! Where budget counters live, and how usage records reach SQL: [`LocalBook`] keeps
//! them in this process (the embedded default), [`SharedBook`] in Redis, shared by every
//! process of a scaled deployment ([`crate::cluster::ledger`]). `Accounting` asks its
//! book; it never asks which one it has.
//!
//! The two differ in when a cost is spent: in-process counters are spent when a record
//! is buffered; shared counters when the record is shipped to the usage stream, so a
//! reservation settled by a record still in the buffer is given back only after the
//! ship (a budget never shows the cost in neither).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::budgets::{Budget, Counter, Counters, Exceeded};
use super::{Accounting, Def, UsageRecord};
use crate::cluster::ledger::{Admit, CounterRef, Ledger};
use crate::db::accounting as store;
use crate::db::now_ms;
use crate::error::{ApiError, ApiResult};

/// What a reservation holds on its book's counters.
pub(super) enum Held {
    Nothing,
    /// Budget ids and period starts (in-process counters).
    Local(Vec<(String, i64)>),
    /// Counter keys (shared counters).
    Shared(Vec<String>),
}

#[async_trait::async_trait]
pub(super) trait Book: Send + Sync {
    /// Spends a just-buffered record's cost where counters are spent on record; the
    /// `budget.exceeded` events of the budgets it pushed over go to `accounting`.
    fn spend_recorded(&self, accounting: &Accounting, record: &UsageRecord);
    /// Makes sure `defs` have counters for the current period (from SQL when missing).
    async fn ensure(&self, accounting: &Accounting, defs: &[Def]) -> ApiResult<()>;
    /// Holds `estimate` on every counter of `defs`, or refuses with `BUDGET_EXCEEDED`.
    async fn hold(&self, accounting: &Accounting, defs: &[Def], estimate: f64) -> ApiResult<Held>;
    /// Gives a hold back now (its request failed or went away).
    fn release(&self, held: Held, estimate: f64);
    /// Gives back a hold whose record was just buffered: now, or once it is shipped.
    fn settle(&self, held: Held, estimate: f64);
    /// Moves the buffered records and events toward SQL; the records written to SQL.
    /// One flush runs at a time (the caller holds the flush lock).
    async fn flush(&self, accounting: &Accounting) -> anyhow::Result<usize>;
    /// Whether records whose SQL write failed go back to the buffer (rather than stay
    /// in the stream they came from).
    fn rebuffers(&self) -> bool;
    /// A budget's counter for the period starting at `start`.
    async fn counter(&self, budget_id: &str, start: i64) -> ApiResult<Counter>;
    /// The oldest record on its way to SQL outside this process's buffer.
    async fn oldest(&self) -> Option<i64>;
}

/// Counters in this process (the embedded default: one process owns the database).
#[derive(Default)]
pub(super) struct LocalBook {
    counters: Mutex<Counters>,
}

impl LocalBook {
    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Book for LocalBook {
    fn spend_recorded(&self, accounting: &Accounting, record: &UsageRecord) {
        let defs = accounting.covering(&record.tenant_id, &record.subject_id);
        let budgets: Vec<Budget> = defs.iter().map(|d| d.budget.clone()).collect();
        let crossed = self.counters().spend(&budgets, record.cost, now_ms());
        if crossed.is_empty() {
            return;
        }
        let counters = self.counters();
        for def in defs.iter().filter(|d| crossed.contains(&d.row.id)) {
            let used = counters
                .get(&def.row.id)
                .map(|c| c.used)
                .unwrap_or_default();
            accounting.exceeded(def, used);
        }
    }

    async fn ensure(&self, accounting: &Accounting, defs: &[Def]) -> ApiResult<()> {
        let now = now_ms();
        let missing: Vec<&Def> = {
            let counters = self.counters();
            defs.iter()
                .filter(|d| !counters.is_current(&d.budget, now))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let _one_loader = accounting.loading.lock().await;
        accounting.flush().await.map_err(ApiError::internal)?;
        let mut conn = accounting.db.pool.acquire().await?;
        for def in missing {
            let (start, _) = def.budget.period.bounds(now);
            let used =
                store::cost_since(&mut conn, &def.row.scope, &def.row.scope_id, start).await?;
            self.counters().install(&def.budget, start, used);
        }
        Ok(())
    }

    async fn hold(&self, accounting: &Accounting, defs: &[Def], estimate: f64) -> ApiResult<Held> {
        self.ensure(accounting, defs).await?;
        let budgets: Vec<Budget> = defs.iter().map(|d| d.budget.clone()).collect();
        let held = self.counters().reserve(&budgets, estimate, now_ms());
        match held {
            Ok(held) => Ok(Held::Local(held)),
            Err(exceeded) => Err(Accounting::refusal(defs, exceeded)),
        }
    }

    fn release(&self, held: Held, estimate: f64) {
        if let Held::Local(held) = held {
            self.counters().release(&held, estimate);
        }
    }

    fn settle(&self, held: Held, estimate: f64) {
        self.release(held, estimate);
    }

    async fn flush(&self, accounting: &Accounting) -> anyhow::Result<usize> {
        accounting.write(accounting.take_pending()).await
    }

    fn rebuffers(&self) -> bool {
        true
    }

    async fn counter(&self, budget_id: &str, _start: i64) -> ApiResult<Counter> {
        Ok(self.counters().get(budget_id).unwrap_or_default())
    }

    async fn oldest(&self) -> Option<i64> {
        None
    }
}

/// Counters and the way to SQL shared through Redis (a scaled deployment).
pub(super) struct SharedBook {
    ledger: Arc<Ledger>,
    /// Holds settled by records still in the buffer: given back once those records are
    /// shipped (and their cost is in `used`).
    settled: Mutex<Vec<(Vec<String>, f64)>>,
}

impl SharedBook {
    pub(super) fn new(ledger: Arc<Ledger>) -> SharedBook {
        SharedBook {
            ledger,
            settled: Mutex::new(Vec::new()),
        }
    }

    /// The shared counters of `defs` at `at`.
    fn counter_refs(&self, defs: &[Def], at: i64) -> Vec<CounterRef> {
        defs.iter()
            .map(|def| CounterRef {
                key: self
                    .ledger
                    .counter_key(&def.budget.id, def.budget.period.bounds(at).0),
                limit: def.budget.limit,
            })
            .collect()
    }

    /// Ships records to the usage stream, spending their cost on the shared counters;
    /// queues `budget.exceeded` for the counters they pushed over.
    async fn ship(&self, accounting: &Accounting, records: Vec<UsageRecord>) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut defs_by_key: HashMap<String, Def> = HashMap::new();
        let batch: Vec<(UsageRecord, Vec<CounterRef>)> = records
            .iter()
            .map(|record| {
                let defs = accounting.covering(&record.tenant_id, &record.subject_id);
                let counters = self.counter_refs(&defs, record.created_at);
                for (counter, def) in counters.iter().zip(defs) {
                    defs_by_key.insert(counter.key.clone(), def);
                }
                (record.clone(), counters)
            })
            .collect();
        match self.ledger.ship(&batch).await {
            Ok(crossed) => {
                for key in crossed {
                    if let Some(def) = defs_by_key.get(&key) {
                        accounting.exceeded(def, def.budget.limit);
                    }
                }
                Ok(())
            }
            Err(error) => {
                accounting.restore(records);
                Err(error.into())
            }
        }
    }

    fn settled(&self) -> std::sync::MutexGuard<'_, Vec<(Vec<String>, f64)>> {
        self.settled.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Book for SharedBook {
    fn spend_recorded(&self, _accounting: &Accounting, _record: &UsageRecord) {}

    async fn ensure(&self, accounting: &Accounting, defs: &[Def]) -> ApiResult<()> {
        let now = now_ms();
        let mut drained = false;
        for def in defs {
            let (start, end) = def.budget.period.bounds(now);
            let key = self.ledger.counter_key(&def.budget.id, start);
            if self.ledger.counter(&key).await?.is_some() {
                continue;
            }
            let _one_loader = accounting.loading.lock().await;
            if !drained {
                accounting.flush().await.map_err(ApiError::internal)?;
                drained = true;
            }
            let mut conn = accounting.db.pool.acquire().await?;
            let used =
                store::cost_since(&mut conn, &def.row.scope, &def.row.scope_id, start).await?;
            self.ledger.install(&key, used, end).await?;
        }
        Ok(())
    }

    async fn hold(&self, accounting: &Accounting, defs: &[Def], estimate: f64) -> ApiResult<Held> {
        let now = now_ms();
        let counters = self.counter_refs(defs, now);
        // Admission itself says when a counter is missing: install and try again.
        for _ in 0..3 {
            match self.ledger.admit(&counters, estimate).await? {
                Admit::Reserved => {
                    return Ok(Held::Shared(counters.into_iter().map(|c| c.key).collect()));
                }
                // Expired or a new period began meanwhile.
                Admit::Missing(_) => self.ensure(accounting, defs).await?,
                Admit::Exceeded(index, used) => {
                    let def = &defs[index.min(defs.len() - 1)];
                    return Err(Accounting::refusal(
                        defs,
                        Exceeded {
                            budget_id: def.budget.id.clone(),
                            limit: def.budget.limit,
                            used,
                            resets_at: def.budget.period.bounds(now).1,
                        },
                    ));
                }
            }
        }
        Err(ApiError::internal("budget counters could not be installed"))
    }

    fn release(&self, held: Held, estimate: f64) {
        if let Held::Shared(keys) = held {
            let ledger = self.ledger.clone();
            tokio::spawn(async move {
                if let Err(error) = ledger.give_back(&keys, estimate).await {
                    tracing::warn!(%error, "budget reservation not given back");
                }
            });
        }
    }

    fn settle(&self, held: Held, estimate: f64) {
        if let Held::Shared(keys) = held {
            self.settled().push((keys, estimate));
        }
    }

    async fn flush(&self, accounting: &Accounting) -> anyhow::Result<usize> {
        // Settled holds first: their records are then surely among those taken.
        let settled = std::mem::take(&mut *self.settled());
        let records = accounting.take_pending();
        if let Err(error) = self.ship(accounting, records).await {
            self.settled().splice(0..0, settled);
            return Err(error);
        }
        for (keys, estimate) in settled {
            if let Err(error) = self.ledger.give_back(&keys, estimate).await {
                tracing::warn!(%error, "budget reservation not given back");
            }
        }
        let mut written = 0;
        loop {
            let taken = self.ledger.take(1000).await?;
            let (ids, records): (Vec<String>, Vec<UsageRecord>) = taken.into_iter().unzip();
            let count = records.len();
            written += accounting.write(records).await?;
            self.ledger.written(&ids).await?;
            if count < 1000 {
                return Ok(written);
            }
        }
    }

    fn rebuffers(&self) -> bool {
        false
    }

    async fn counter(&self, budget_id: &str, start: i64) -> ApiResult<Counter> {
        let (used, reserved) = self
            .ledger
            .counter(&self.ledger.counter_key(budget_id, start))
            .await?
            .unwrap_or_default();
        Ok(Counter {
            period_start: start,
            used,
            reserved,
        })
    }

    async fn oldest(&self) -> Option<i64> {
        self.ledger.oldest().await.ok().flatten()
    }
}
