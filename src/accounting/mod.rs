//! Accounting: usage records, cost, and budgets, shared by chat and the speech modules.
//!
//! Requests hand their [`UsageRecord`] to [`Accounting::record`], which only appends to
//! a buffer and adds the cost to the hot budget counters; a background task writes the
//! buffer to SQL in batches every `flush_interval` (and on shutdown), and
//! `scaigrid_accounting_flush_lag_seconds` exports the age of the oldest unwritten
//! record. Reports flush first, so what a caller just spent is in what it reads.
//!
//! Budgets: [`Accounting::reserve`] admits a request against every budget covering its
//! key and tenant and holds its estimated cost until the [`Reservation`] is settled with
//! the real usage (or dropped, which gives it back). See [`budgets`] for the rule.
//!
//! In a scaled deployment the counters and the way to SQL are shared through Redis
//! ([`crate::cluster::ledger`]): the flush ships this process's records to a stream
//! (adding their cost to the shared counters) and drains the stream into SQL.

pub mod api;
pub mod budgets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Principal, Subject};
use crate::cluster::ledger::{Admit, CounterRef, Ledger};
pub use crate::db::accounting::UsageRecord;
use crate::db::accounting::{self as store, BudgetRow};
use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult, ErrorCode};
use budgets::{Budget, Counters, Exceeded, Period};

pub const FLUSH_LAG: &str = "scaigrid_accounting_flush_lag_seconds";
/// Budget definitions are re-read this often (other processes may change them).
const DEFS_TTL: Duration = Duration::from_secs(5);

pub use crate::config::Prices;

#[derive(Debug, Clone)]
struct Def {
    budget: Budget,
    row: BudgetRow,
}

struct Defs {
    by_scope: HashMap<String, Vec<Def>>,
    loaded: Option<Instant>,
}

pub struct Accounting {
    db: Db,
    pub prices: Prices,
    /// Shared counters and usage stream (scaled deployment).
    ledger: Option<Arc<Ledger>>,
    pending: Mutex<Vec<UsageRecord>>,
    /// Shared reservations settled by records still in `pending`: given back once those
    /// records are shipped (and their cost is in `used`), so a budget never shows the
    /// cost in neither.
    settled: Mutex<Vec<(Vec<String>, f64)>>,
    /// `budget.exceeded` events waiting for the next flush: (tenant, payload).
    events: Mutex<Vec<(String, serde_json::Value)>>,
    counters: Mutex<Counters>,
    defs: RwLock<Defs>,
    /// One loader of budget counters at a time (a load flushes, then sums).
    loading: tokio::sync::Mutex<()>,
    flushing: tokio::sync::Mutex<()>,
}

/// A budget with what it has spent, as `GET /v1/accounting/budgets` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BudgetView {
    pub id: String,
    pub tenant_id: String,
    /// `tenant` or `api_key`.
    pub scope: String,
    pub scope_id: String,
    /// `day` or `month` (UTC).
    pub period: String,
    pub limit: f64,
    pub used: f64,
    /// Cost held by requests in flight on this process.
    pub reserved: f64,
    pub remaining: f64,
    pub resets_at: crate::records::Timestamp,
}

impl UsageRecord {
    /// An empty record of `module` for the principal, under the current request id.
    pub fn of(principal: &Principal, module: &'static str) -> UsageRecord {
        UsageRecord::for_subject(
            &principal.tenant_id,
            principal.subject_kind(),
            principal.subject_id(),
            module,
        )
    }

    pub fn for_subject(
        tenant_id: &str,
        subject_kind: &'static str,
        subject_id: &str,
        module: &'static str,
    ) -> UsageRecord {
        UsageRecord {
            id: crate::db::new_id("use"),
            tenant_id: tenant_id.to_owned(),
            subject_kind: subject_kind.to_owned(),
            subject_id: subject_id.to_owned(),
            module: module.to_owned(),
            model: None,
            backend_id: None,
            input_tokens: 0,
            output_tokens: 0,
            audio_seconds: 0.0,
            characters: 0,
            cost: 0.0,
            request_id: crate::request_id::current(),
            created_at: now_ms(),
        }
    }
}

/// The subject kind of a stored subject id (`key_...` ids are API keys).
pub fn subject_kind_of(subject_id: &str) -> &'static str {
    match subject_id.starts_with("key_") {
        true => "api_key",
        false => "user",
    }
}

/// Estimated cost held for one request until it settles.
pub struct Reservation {
    accounting: Arc<Accounting>,
    /// Budget ids and period starts (in-process counters).
    held: Vec<(String, i64)>,
    /// Counter keys (shared counters).
    keys: Vec<String>,
    estimate: f64,
}

impl Reservation {
    /// Replaces the estimate with the real usage.
    pub fn settle(mut self, record: UsageRecord) {
        if !self.keys.is_empty() {
            let keys = std::mem::take(&mut self.keys);
            self.accounting
                .settled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((keys, self.estimate));
        }
        self.give_back();
        self.accounting.record(record);
    }

    fn give_back(&mut self) {
        if !self.held.is_empty() {
            self.accounting
                .lock_counters()
                .release(&self.held, self.estimate);
            self.held.clear();
        }
        if let (false, Some(ledger)) = (self.keys.is_empty(), &self.accounting.ledger) {
            let (ledger, keys, estimate) = (
                ledger.clone(),
                std::mem::take(&mut self.keys),
                self.estimate,
            );
            tokio::spawn(async move {
                if let Err(error) = ledger.give_back(&keys, estimate).await {
                    tracing::warn!(%error, "budget reservation not given back");
                }
            });
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.give_back();
    }
}

impl Accounting {
    pub fn new(db: Db, prices: Prices, ledger: Option<Arc<Ledger>>) -> Self {
        Accounting {
            db,
            prices,
            ledger,
            pending: Mutex::new(Vec::new()),
            settled: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            counters: Mutex::new(Counters::default()),
            defs: RwLock::new(Defs {
                by_scope: HashMap::new(),
                loaded: None,
            }),
            loading: tokio::sync::Mutex::new(()),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    fn lock_counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a record (written at the next flush) and spends its cost on the budgets
    /// that cover it.
    pub fn record(&self, record: UsageRecord) {
        // Shared counters are spent when the record is shipped (see `flush`).
        if record.cost > 0.0 && self.ledger.is_none() {
            let defs = self.covering(&record.tenant_id, &record.subject_id);
            let now = now_ms();
            let budgets: Vec<Budget> = defs.iter().map(|d| d.budget.clone()).collect();
            let crossed = self.lock_counters().spend(&budgets, record.cost, now);
            if !crossed.is_empty() {
                let counters = self.lock_counters();
                let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
                for def in defs.iter().filter(|d| crossed.contains(&d.row.id)) {
                    let used = counters
                        .get(&def.row.id)
                        .map(|c| c.used)
                        .unwrap_or_default();
                    events.push(Self::exceeded_event(def, used));
                }
            }
        }
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record);
    }

    /// The budget definitions covering a tenant and a subject (from the cache).
    fn covering(&self, tenant_id: &str, subject_id: &str) -> Vec<Def> {
        let defs = self.defs.read().unwrap_or_else(|e| e.into_inner());
        let tenant = defs.by_scope.get(&format!("tenant:{tenant_id}"));
        let key = defs.by_scope.get(&format!("api_key:{subject_id}"));
        tenant.into_iter().chain(key).flatten().cloned().collect()
    }

    /// Re-reads budget definitions when the cache is older than its TTL (or `force`).
    async fn refresh_defs(&self, force: bool) -> ApiResult<()> {
        let stale = {
            let defs = self.defs.read().unwrap_or_else(|e| e.into_inner());
            defs.loaded.is_none_or(|at| at.elapsed() > DEFS_TTL)
        };
        if !(stale || force) {
            return Ok(());
        }
        let rows = store::all_budgets(&mut *self.db.pool.acquire().await?).await?;
        let mut by_scope: HashMap<String, Vec<Def>> = HashMap::new();
        for row in rows {
            let Some(period) = Period::parse(&row.period) else {
                continue;
            };
            let budget = Budget {
                id: row.id.clone(),
                period,
                limit: row.limit,
            };
            by_scope
                .entry(format!("{}:{}", row.scope, row.scope_id))
                .or_default()
                .push(Def { budget, row });
        }
        *self.defs.write().unwrap_or_else(|e| e.into_inner()) = Defs {
            by_scope,
            loaded: Some(Instant::now()),
        };
        Ok(())
    }

    /// The budgets covering a principal, each with a counter for the current period
    /// (loaded from the records when missing).
    async fn budgets_of(&self, tenant_id: &str, subject_id: &str) -> ApiResult<Vec<Def>> {
        self.refresh_defs(false).await?;
        let defs = self.covering(tenant_id, subject_id);
        let now = now_ms();
        let missing: Vec<&Def> = {
            let counters = self.lock_counters();
            defs.iter()
                .filter(|d| !counters.is_current(&d.budget, now))
                .collect()
        };
        if let Some(ledger) = &self.ledger {
            self.install_shared(ledger, &defs, now).await?;
            return Ok(defs);
        }
        if !missing.is_empty() {
            let _one_loader = self.loading.lock().await;
            self.flush().await.map_err(ApiError::internal)?;
            let mut conn = self.db.pool.acquire().await?;
            for def in missing {
                let (start, _) = def.budget.period.bounds(now);
                let used =
                    store::cost_since(&mut conn, &def.row.scope, &def.row.scope_id, start).await?;
                self.lock_counters().install(&def.budget, start, used);
            }
        }
        Ok(defs)
    }

    /// Installs the shared counters of `defs` missing for the current period, from SQL
    /// after draining the usage stream into it.
    async fn install_shared(&self, ledger: &Ledger, defs: &[Def], now: i64) -> ApiResult<()> {
        let mut drained = false;
        for def in defs {
            let (start, end) = def.budget.period.bounds(now);
            let key = ledger.counter_key(&def.budget.id, start);
            if ledger.counter(&key).await?.is_some() {
                continue;
            }
            let _one_loader = self.loading.lock().await;
            if !drained {
                self.flush().await.map_err(ApiError::internal)?;
                drained = true;
            }
            let mut conn = self.db.pool.acquire().await?;
            let used =
                store::cost_since(&mut conn, &def.row.scope, &def.row.scope_id, start).await?;
            ledger.install(&key, used, end).await?;
        }
        Ok(())
    }

    /// The shared counters covering a tenant and subject at `at`.
    fn counter_refs(&self, ledger: &Ledger, defs: &[Def], at: i64) -> Vec<CounterRef> {
        defs.iter()
            .map(|def| CounterRef {
                key: ledger.counter_key(&def.budget.id, def.budget.period.bounds(at).0),
                limit: def.budget.limit,
            })
            .collect()
    }

    /// Admits a request of estimated cost `estimate` against the principal's budgets,
    /// or refuses with 429 `BUDGET_EXCEEDED`.
    pub async fn reserve(
        self: &Arc<Self>,
        principal: &Principal,
        estimate: f64,
    ) -> ApiResult<Reservation> {
        let defs = match self.ledger {
            // Shared counters: admission itself says when one is missing.
            Some(_) => {
                self.refresh_defs(false).await?;
                self.covering(&principal.tenant_id, principal.subject_id())
            }
            None => {
                self.budgets_of(&principal.tenant_id, principal.subject_id())
                    .await?
            }
        };
        let estimate = estimate.max(0.0);
        let mut reservation = Reservation {
            accounting: self.clone(),
            held: Vec::new(),
            keys: Vec::new(),
            estimate,
        };
        // No budget covers the caller: nothing to hold, nothing to ask Redis.
        if defs.is_empty() {
            return Ok(reservation);
        }
        if let Some(ledger) = &self.ledger {
            let now = now_ms();
            let counters = self.counter_refs(ledger, &defs, now);
            for _ in 0..3 {
                match ledger.admit(&counters, estimate).await? {
                    Admit::Reserved => {
                        reservation.keys = counters.into_iter().map(|c| c.key).collect();
                        return Ok(reservation);
                    }
                    // Expired or a new period began meanwhile: install and try again.
                    Admit::Missing(_) => self.install_shared(ledger, &defs, now).await?,
                    Admit::Exceeded(index, used) => {
                        let def = &defs[index.min(defs.len() - 1)];
                        return Err(Self::refusal(
                            &defs,
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
            return Err(ApiError::internal("budget counters could not be installed"));
        }
        let budgets: Vec<Budget> = defs.iter().map(|d| d.budget.clone()).collect();
        let held = self.lock_counters().reserve(&budgets, estimate, now_ms());
        match held {
            Ok(held) => {
                reservation.held = held;
                Ok(reservation)
            }
            Err(exceeded) => Err(Self::refusal(&defs, exceeded)),
        }
    }

    /// 429 `BUDGET_EXCEEDED` naming the spent budget.
    fn refusal(defs: &[Def], exceeded: Exceeded) -> ApiError {
        let def = defs.iter().find(|d| d.row.id == exceeded.budget_id);
        let (scope, period) = def
            .map(|d| (d.row.scope.as_str(), d.row.period.as_str()))
            .unwrap_or_default();
        let resets_at = crate::records::Timestamp(exceeded.resets_at).to_rfc3339();
        ApiError::new(
            ErrorCode::BUDGET_EXCEEDED,
            format!(
                "the {period} budget of this {} is spent ({:.4} of {:.4}); it resets at {resets_at}",
                scope.replace('_', " "),
                exceeded.used,
                exceeded.limit,
            ),
        )
        .with_field("budget_id", exceeded.budget_id)
        .with_field("limit", exceeded.limit)
        .with_field("used", exceeded.used)
        .with_field("resets_at", resets_at)
    }

    /// The `budget.exceeded` event of a budget that reached its limit.
    fn exceeded_event(def: &Def, used: f64) -> (String, serde_json::Value) {
        (
            def.row.tenant_id.clone(),
            serde_json::json!({
                "budget_id": def.row.id,
                "scope": def.row.scope,
                "scope_id": def.row.scope_id,
                "period": def.row.period,
                "limit": def.row.limit,
                "used": used,
            }),
        )
    }

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

    /// Creates or replaces a budget (validated and authorized by the caller).
    pub async fn put_budget(
        &self,
        tenant_id: &str,
        scope: &str,
        scope_id: &str,
        period: Period,
        limit: f64,
    ) -> ApiResult<BudgetView> {
        let period_name = match period {
            Period::Day => "day",
            Period::Month => "month",
        };
        let mut conn = self.db.pool.acquire().await?;
        let row =
            store::upsert_budget(&mut conn, tenant_id, scope, scope_id, period_name, limit).await?;
        drop(conn);
        self.refresh_defs(true).await?;
        self.view(row).await
    }

    pub async fn delete_budget(&self, tenant_id: &str, id: &str) -> ApiResult<()> {
        let mut conn = self.db.pool.acquire().await?;
        if !store::delete_budget(&mut conn, tenant_id, id).await? {
            return Err(ApiError::not_found("budget"));
        }
        drop(conn);
        self.refresh_defs(true).await
    }

    /// A tenant's budgets (all scopes) with what each has spent.
    pub async fn budgets(&self, tenant_id: &str) -> ApiResult<Vec<BudgetView>> {
        self.refresh_defs(true).await?;
        let rows: Vec<BudgetRow> = {
            let defs = self.defs.read().unwrap_or_else(|e| e.into_inner());
            let mut rows: Vec<BudgetRow> = defs
                .by_scope
                .values()
                .flatten()
                .filter(|d| d.row.tenant_id == tenant_id)
                .map(|d| d.row.clone())
                .collect();
            rows.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            rows
        };
        let mut views = Vec::with_capacity(rows.len());
        for row in rows {
            views.push(self.view(row).await?);
        }
        Ok(views)
    }

    async fn view(&self, row: BudgetRow) -> ApiResult<BudgetView> {
        let period = Period::parse(&row.period).unwrap_or(Period::Month);
        let subject = match row.scope.as_str() {
            "api_key" => row.scope_id.clone(),
            _ => String::new(),
        };
        self.budgets_of(&row.tenant_id, &subject).await?;
        let (start, end) = period.bounds(now_ms());
        let counter = match &self.ledger {
            Some(ledger) => {
                let (used, reserved) = ledger
                    .counter(&ledger.counter_key(&row.id, start))
                    .await?
                    .unwrap_or_default();
                budgets::Counter {
                    period_start: start,
                    used,
                    reserved,
                }
            }
            None => self.lock_counters().get(&row.id).unwrap_or_default(),
        };
        Ok(BudgetView {
            remaining: (row.limit - counter.used).max(0.0),
            used: counter.used,
            reserved: counter.reserved,
            resets_at: crate::records::Timestamp(end),
            id: row.id,
            tenant_id: row.tenant_id,
            scope: row.scope,
            scope_id: row.scope_id,
            period: row.period,
            limit: row.limit,
        })
    }

    /// Usage totals of a tenant, after writing what is buffered.
    pub async fn usage(
        &self,
        tenant_id: &str,
        from: i64,
        to: i64,
        group_by: store::GroupBy,
    ) -> ApiResult<Vec<store::UsageTotals>> {
        self.flush().await.map_err(ApiError::internal)?;
        let mut conn = self.db.pool.acquire().await?;
        Ok(store::totals(&mut conn, tenant_id, from, to, group_by).await?)
    }
}

/// The principal's API key id, if it is one (budgets of scope `api_key`).
pub fn key_id(principal: &Principal) -> Option<&str> {
    match &principal.subject {
        Subject::ApiKey { id, .. } => Some(id),
        Subject::User { .. } => None,
    }
}
