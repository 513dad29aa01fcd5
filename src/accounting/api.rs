//! The accounting surface: budgets (`/v1/accounting/budgets`) and usage reports
//! (`/v1/accounting/usage`), validated and authorized here; handlers stay thin.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::budgets::Period;
use super::{Accounting, BudgetView};
use crate::auth::Principal;
use crate::db::accounting::{GroupBy, UsageFilter, UsageTotals};
use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::rbac::Permission;
use crate::records::Timestamp;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBudget {
    /// `tenant` or `api_key`.
    pub scope: String,
    /// The tenant id or the API key id.
    pub scope_id: String,
    /// `day` or `month` (UTC).
    pub period: String,
    /// In cost units.
    pub limit: f64,
}

#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// `model` (default), `api_key`, `module` or `day`.
    pub group_by: Option<String>,
    /// RFC 3339; default the start of the current month (UTC).
    pub from: Option<String>,
    /// RFC 3339, exclusive; default now.
    pub to: Option<String>,
    /// Another tenant (platform admins only).
    pub tenant_id: Option<String>,
    /// Only this model's usage.
    pub model: Option<String>,
    /// Only this module's usage (`gateway`, `scaiecho`, `scaispeak`).
    pub module: Option<String>,
    /// Only this API key's usage.
    pub api_key_id: Option<String>,
    /// Groups a page holds, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `next_after` of the previous page (a group's key).
    pub after: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    pub object: &'static str,
    pub tenant_id: String,
    pub group_by: String,
    pub from: Timestamp,
    pub to: Timestamp,
    pub data: Vec<UsageTotals>,
    pub has_more: bool,
    /// The cursor of the next page (send it back as `after`).
    pub next_after: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetList {
    pub object: &'static str,
    pub data: Vec<BudgetView>,
}

/// Creates or replaces a budget: tenant admins for their tenant and its keys.
pub async fn put_budget(
    accounting: &Accounting,
    db: &Db,
    principal: &Principal,
    request: CreateBudget,
) -> ApiResult<BudgetView> {
    let period = Period::parse(&request.period)
        .ok_or_else(|| ApiError::invalid("`period` must be `day` or `month`"))?;
    if !request.limit.is_finite() || request.limit < 0.0 {
        return Err(ApiError::invalid("`limit` must be a number zero or above"));
    }
    let tenant_id = match request.scope.as_str() {
        "tenant" => crate::services::admin_tenant(Some(principal), Some(&request.scope_id))?,
        "api_key" => {
            // The key's tenant, found without revealing keys of other tenants.
            let own = crate::services::admin_tenant(Some(principal), None)?;
            let mut conn = db.pool.acquire().await?;
            let in_own = crate::db::api_keys::get_in_tenant(&mut conn, &own, &request.scope_id)
                .await?
                .map(|k| k.tenant_id);
            let found = match (in_own, principal.is_platform_admin()) {
                (Some(tenant), _) => Some(tenant),
                (None, true) => crate::db::api_keys::get_by_id(&mut conn, &request.scope_id)
                    .await?
                    .map(|k| k.tenant_id),
                (None, false) => None,
            };
            found.ok_or_else(|| ApiError::not_found("api key"))?
        }
        _ => return Err(ApiError::invalid("`scope` must be `tenant` or `api_key`")),
    };
    accounting
        .put_budget(
            &tenant_id,
            (&request.scope, &request.scope_id),
            period,
            request.limit,
            principal.is_platform_admin(),
        )
        .await
}

pub async fn list_budgets(
    accounting: &Accounting,
    principal: &Principal,
    tenant_id: Option<&str>,
) -> ApiResult<BudgetList> {
    principal.require(Permission::AccountingRead)?;
    let tenant_id = principal.target_tenant(tenant_id)?;
    Ok(BudgetList {
        object: "list",
        data: accounting.budgets(&tenant_id).await?,
    })
}

pub async fn delete_budget(
    accounting: &Accounting,
    principal: &Principal,
    id: &str,
    tenant_id: Option<&str>,
) -> ApiResult<()> {
    let tenant_id = crate::services::admin_tenant(Some(principal), tenant_id)?;
    accounting
        .delete_budget(&tenant_id, id, principal.is_platform_admin())
        .await
}

pub async fn usage(
    accounting: &Accounting,
    principal: &Principal,
    query: UsageQuery,
) -> ApiResult<UsageReport> {
    principal.require(Permission::AccountingRead)?;
    let tenant_id = principal.target_tenant(query.tenant_id.as_deref())?;
    let (name, group_by) = match query.group_by.as_deref().unwrap_or("model") {
        "model" => ("model", GroupBy::Model),
        "api_key" => ("api_key", GroupBy::ApiKey),
        "module" => ("module", GroupBy::Module),
        "day" => ("day", GroupBy::Day),
        other => {
            return Err(ApiError::invalid(format!(
                "`group_by` `{other}` is not one of model, api_key, module, day"
            )));
        }
    };
    let time = |field: &str, text: Option<&str>, default: i64| match text {
        None => Ok(default),
        Some(text) => Timestamp::parse_rfc3339(text)
            .map(|t| t.0)
            .ok_or_else(|| ApiError::invalid(format!("`{field}` is not an RFC 3339 time"))),
    };
    let now = now_ms();
    let from = time("from", query.from.as_deref(), Period::Month.bounds(now).0)?;
    let to = time("to", query.to.as_deref(), now + 1)?;
    if from >= to {
        return Err(ApiError::invalid("`from` must be before `to`"));
    }
    let page = crate::db::page::Page::parse(query.limit, query.after)?;
    let filter = UsageFilter {
        model: query.model,
        module: query.module,
        api_key_id: query.api_key_id,
    };
    let data = accounting
        .usage(&tenant_id, (from, to), group_by, &filter)
        .await?;
    let (data, next) = page.slice(data, |row| row.key.as_deref().unwrap_or(""));
    Ok(UsageReport {
        object: "list",
        tenant_id,
        group_by: name.to_owned(),
        from: Timestamp(from),
        to: Timestamp(to),
        data,
        has_more: next.is_some(),
        next_after: next,
    })
}
