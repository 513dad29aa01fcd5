//! Budgets as the API shows them (with what each has spent and holds) and the usage
//! report, each after the buffered records are written.

use super::budgets::Period;
use super::{Accounting, BudgetView, store};
use crate::db::accounting::BudgetRow;
use crate::db::now_ms;
use crate::error::{ApiError, ApiResult, ErrorCode};

impl Accounting {
    /// Creates or replaces a budget (validated and authorized by the caller).
    /// `by_platform`: a platform admin sets it, and the tenant's admins may then lower
    /// it but not raise it (nor delete it).
    pub async fn put_budget(
        &self,
        tenant_id: &str,
        (scope, scope_id): (&str, &str),
        period: Period,
        limit: f64,
        by_platform: bool,
    ) -> ApiResult<BudgetView> {
        let period_name = match period {
            Period::Day => "day",
            Period::Month => "month",
        };
        let mut conn = self.db.pool.acquire().await?;
        let set_by = match store::budget_of(&mut conn, scope, scope_id, period_name).await? {
            _ if by_platform => PLATFORM,
            Some(platform) if platform.set_by == PLATFORM => {
                if limit > platform.limit {
                    return Err(set_by_platform("raised"));
                }
                PLATFORM
            }
            _ => "tenant",
        };
        let row = store::upsert_budget(
            &mut conn,
            tenant_id,
            scope,
            scope_id,
            period_name,
            (limit, set_by),
        )
        .await?;
        drop(conn);
        self.refresh_defs(true).await?;
        self.view(row).await
    }

    /// Deletes a budget; one a platform admin set only `by_platform`.
    pub async fn delete_budget(
        &self,
        tenant_id: &str,
        id: &str,
        by_platform: bool,
    ) -> ApiResult<()> {
        let mut conn = self.db.pool.acquire().await?;
        let row = store::budget(&mut conn, tenant_id, id).await?;
        if row.is_some_and(|row| row.set_by == PLATFORM) && !by_platform {
            return Err(set_by_platform("deleted"));
        }
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
        let counter = self.book.counter(&row.id, start).await?;
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
            set_by: row.set_by,
        })
    }

    /// Usage totals of a tenant, after writing what is buffered.
    pub async fn usage(
        &self,
        tenant_id: &str,
        range: (i64, i64),
        group_by: store::GroupBy,
        filter: &store::UsageFilter,
    ) -> ApiResult<Vec<store::UsageTotals>> {
        self.flush().await.map_err(ApiError::internal)?;
        let mut conn = self.db.pool.acquire().await?;
        Ok(store::totals(&mut conn, tenant_id, range, group_by, filter).await?)
    }
}

/// `set_by` of a budget a platform admin set.
const PLATFORM: &str = "platform";

/// 403 for a tenant admin changing a platform budget the way it may not.
fn set_by_platform(how: &str) -> ApiError {
    ApiError::new(
        ErrorCode::AUTHZ_PERMISSION_DENIED,
        format!(
            "this budget was set by the platform: a tenant admin may read and lower it, \
             not have it {how}"
        ),
    )
    .with_field("set_by", PLATFORM)
}
