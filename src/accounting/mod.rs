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
//! Where the counters live is the `book`'s business: this process in the embedded
//! default; in a scaled deployment Redis ([`crate::cluster::ledger`]), where the flush
//! ships this process's records to a stream (adding their cost to the shared counters)
//! and drains the stream into SQL.

pub mod api;
mod book;
pub mod budgets;
mod flush;
pub mod spill;
mod views;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Principal, Subject};
use crate::cluster::ledger::Ledger;
pub use crate::db::accounting::UsageRecord;
use crate::db::accounting::{self as store, BudgetRow};
use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult, ErrorCode};
use book::{Book, Held, LocalBook, SharedBook};
use budgets::{Budget, Exceeded, Period};

pub const FLUSH_LAG: &str = "scaigrid_accounting_flush_lag_seconds";
/// Budget definitions are re-read this often (other processes may change them).
const DEFS_TTL: Duration = Duration::from_secs(5);

use crate::config::AccountingConfig;
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
    /// How often a live stream records its usage (`[accounting]
    /// stream_checkpoint_seconds`; see `speech::meter`).
    pub stream_checkpoint: Duration,
    /// Where the budget counters live and how records reach SQL: this process, or
    /// (scaled) Redis.
    book: Box<dyn Book>,
    pending: Mutex<Vec<UsageRecord>>,
    /// `budget.exceeded` events waiting for the next flush: (tenant, payload).
    events: Mutex<Vec<(String, serde_json::Value)>>,
    defs: RwLock<Defs>,
    /// One loader of budget counters at a time (a load flushes, then sums).
    loading: tokio::sync::Mutex<()>,
    flushing: tokio::sync::Mutex<()>,
    /// Where records go while SQL is away and the buffer is full.
    spill: spill::Spill,
    /// A background refresh of the budget definitions is under way.
    refreshing: std::sync::atomic::AtomicBool,
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
    /// `platform` (a platform admin set it; the tenant's admins may read and lower it,
    /// not raise or delete it) or `tenant`.
    pub set_by: String,
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
            continues: false,
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
    held: Held,
    estimate: f64,
}

impl Reservation {
    /// Replaces the estimate with the real usage.
    pub fn settle(mut self, record: UsageRecord) {
        let held = std::mem::replace(&mut self.held, Held::Nothing);
        self.accounting.book.settle(held, self.estimate);
        self.accounting.record(record);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let held = std::mem::replace(&mut self.held, Held::Nothing);
        self.accounting.book.release(held, self.estimate);
    }
}

impl Accounting {
    /// Budgets counted in this process, or (with the scaled deployment's `ledger`) in
    /// Redis for every process.
    pub fn new(
        db: Db,
        config: &AccountingConfig,
        data_dir: &std::path::Path,
        ledger: Option<Arc<Ledger>>,
    ) -> Self {
        let book: Box<dyn Book> = match ledger {
            Some(ledger) => Box::new(SharedBook::new(ledger)),
            None => Box::new(LocalBook::default()),
        };
        Accounting {
            db,
            prices: config.prices,
            stream_checkpoint: config.stream_checkpoint,
            book,
            pending: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            defs: RwLock::new(Defs {
                by_scope: HashMap::new(),
                loaded: None,
            }),
            loading: tokio::sync::Mutex::new(()),
            flushing: tokio::sync::Mutex::new(()),
            spill: spill::Spill::new(data_dir, config.max_buffered_records),
            refreshing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Appends a record (written at the next flush) and spends its cost on the budgets
    /// that cover it.
    pub fn record(&self, record: UsageRecord) {
        if record.cost > 0.0 {
            self.book.spend_recorded(self, &record);
        }
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record);
    }

    /// Budget definitions for admission: loaded once, then a stale cache is refreshed
    /// in the background while the loaded definitions serve, so a database that is
    /// away (or slow) never holds a request or a stream's checkpoint up.
    async fn fresh_defs(self: &Arc<Self>) -> ApiResult<()> {
        let (loaded, stale) = {
            let defs = self.defs.read().unwrap_or_else(|e| e.into_inner());
            (
                defs.loaded.is_some(),
                defs.loaded.is_none_or(|at| at.elapsed() > DEFS_TTL),
            )
        };
        if !loaded {
            return self.refresh_defs(true).await;
        }
        if stale
            && !self
                .refreshing
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(error) = this.refresh_defs(true).await {
                    tracing::warn!(error = %error.message, "budget definitions not refreshed");
                }
                this.refreshing
                    .store(false, std::sync::atomic::Ordering::Release);
            });
        }
        Ok(())
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
        self.book.ensure(self, &defs).await?;
        Ok(defs)
    }

    /// Admits a request of estimated cost `estimate` against the principal's budgets,
    /// or refuses with 429 `BUDGET_EXCEEDED`.
    pub async fn reserve(
        self: &Arc<Self>,
        principal: &Principal,
        estimate: f64,
    ) -> ApiResult<Reservation> {
        self.reserve_for(&principal.tenant_id, principal.subject_id(), estimate)
            .await
    }

    /// [`Accounting::reserve`] for a subject of a tenant (a job's, run by a worker).
    pub async fn reserve_for(
        self: &Arc<Self>,
        tenant_id: &str,
        subject_id: &str,
        estimate: f64,
    ) -> ApiResult<Reservation> {
        self.fresh_defs().await?;
        let defs = self.covering(tenant_id, subject_id);
        let estimate = estimate.max(0.0);
        // No budget covers the caller: nothing to hold, nothing to ask the book.
        let held = match defs.is_empty() {
            true => Held::Nothing,
            false => self.book.hold(self, &defs, estimate).await?,
        };
        Ok(Reservation {
            accounting: self.clone(),
            held,
            estimate,
        })
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

    /// Queues the `budget.exceeded` event of a budget that reached its limit (written
    /// with the next flush).
    fn exceeded(&self, def: &Def, used: f64) {
        let event = (
            def.row.tenant_id.clone(),
            serde_json::json!({
                "budget_id": def.row.id,
                "scope": def.row.scope,
                "scope_id": def.row.scope_id,
                "period": def.row.period,
                "limit": def.row.limit,
                "used": used,
            }),
        );
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }
}

/// The principal's API key id, if it is one (budgets of scope `api_key`).
pub fn key_id(principal: &Principal) -> Option<&str> {
    match &principal.subject {
        Subject::ApiKey { id, .. } => Some(id),
        Subject::User { .. } => None,
    }
}
