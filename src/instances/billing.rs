//! Billing of instances: a tenant's prepaid balance, debited while its instances run
//! (each node's `price_per_hour`, every `[instances] billing_interval_seconds` and pro
//! rata at the end, compare-and-set on `billed_until` so two monitors never bill one
//! stretch twice), and what happens when it is spent.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Instances;
use crate::auth::Principal;
use crate::db::balances;
use crate::db::instances::{self, InstanceRow};
use crate::error::{ApiError, ApiResult};
use crate::rbac::Permission;

/// Movements a balance view lists.
const ENTRIES: i64 = 50;
/// The largest single top-up.
const MAX_TOP_UP: f64 = 1e12;

/// A tenant's prepaid balance.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceView {
    /// Always `balance`.
    pub object: &'static str,
    pub tenant_id: String,
    /// Cost units left.
    pub balance: f64,
    /// What a launch needs (`[instances] launch_minimum`).
    pub launch_minimum: f64,
    /// What the tenant's running instances cost per hour.
    pub running_cost_per_hour: f64,
    /// The latest movements, newest first.
    pub entries: Vec<balances::Entry>,
}

/// `POST /v1/accounting/balance/top-up`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUp {
    pub tenant_id: String,
    /// Cost units to add.
    pub amount: f64,
}

impl Instances {
    /// Debits a running instance's cost since it was last billed: whole billing
    /// intervals, or (`to_now`, it ends) everything up to now. Whether the balance is
    /// now spent.
    pub(super) async fn bill(&self, row: &InstanceRow, to_now: bool) -> ApiResult<bool> {
        // At the end, from where it stands now (a monitor may have billed meanwhile).
        let fresh = match to_now {
            true => {
                let mut conn = self.db.pool.acquire().await?;
                instances::get(&mut conn, &row.tenant_id, &row.id).await?
            }
            false => None,
        };
        let row = fresh.as_ref().unwrap_or(row);
        let Some(from) = row.billed_until.filter(|_| row.hourly_cost > 0.0) else {
            return Ok(false);
        };
        let now = crate::db::now_ms();
        let interval = i64::try_from(self.config.billing_interval.as_millis()).unwrap_or(60_000);
        let to = match to_now {
            true => now,
            false => from + (now - from) / interval * interval,
        };
        if to <= from {
            return Ok(false);
        }
        let amount = row.hourly_cost * (to - from) as f64 / 3_600_000.0;
        let mut tx = self.db.begin().await?;
        // Another process billed this stretch already: nothing to do.
        if !instances::billed(&mut tx, &row.id, (from, to)).await? {
            return Ok(false);
        }
        let detail = format!(
            "{} ms of `{}` at {} an hour",
            to - from,
            row.model,
            row.hourly_cost
        );
        let balance = balances::add(
            &mut tx,
            &row.tenant_id,
            -amount,
            ("instance", Some(&row.id), &detail),
        )
        .await?;
        tx.commit().await?;
        metrics::counter!("scaigrid_instances_billed_ms_total").increment((to - from) as u64);
        Ok(balance <= 0.0)
    }

    /// The tenant's balance is spent: its priced running instances fail.
    pub(super) async fn exhausted(&self, tenant_id: &str) -> ApiResult<()> {
        let mut conn = self.db.pool.acquire().await?;
        let running = instances::in_state(&mut conn, "running").await?;
        let balance = balances::get(&mut conn, tenant_id).await?;
        drop(conn);
        let detail = format!("the balance ran out ({balance} cost units)");
        for row in running
            .iter()
            .filter(|row| row.tenant_id == tenant_id && row.hourly_cost > 0.0)
        {
            self.end(row, "BALANCE_EXHAUSTED", &detail).await?;
        }
        Ok(())
    }

    /// `GET /v1/accounting/balance`: the caller's tenant's (a platform admin may name
    /// another), with what its running instances cost and the latest movements.
    pub async fn balance(
        &self,
        principal: &Principal,
        tenant_id: Option<&str>,
    ) -> ApiResult<BalanceView> {
        principal.require(Permission::InstancesRead)?;
        let tenant_id = principal.target_tenant(tenant_id)?;
        let mut conn = self.db.pool.acquire().await?;
        Ok(BalanceView {
            object: "balance",
            balance: balances::get(&mut conn, &tenant_id).await?,
            launch_minimum: self.config.launch_minimum,
            running_cost_per_hour: instances::running_cost(&mut conn, &tenant_id).await?,
            entries: balances::entries(&mut conn, &tenant_id, ENTRIES).await?,
            tenant_id,
        })
    }

    /// `POST /v1/accounting/balance/top-up` (platform admins): adds to a tenant's
    /// balance.
    pub async fn top_up(&self, principal: &Principal, top_up: TopUp) -> ApiResult<BalanceView> {
        principal.require(Permission::PlatformAdmin)?;
        if !(top_up.amount.is_finite() && top_up.amount > 0.0 && top_up.amount <= MAX_TOP_UP) {
            return Err(ApiError::invalid(format!(
                "amount must be more than 0 and at most {MAX_TOP_UP}"
            ))
            .with_field("field", "amount"));
        }
        let mut conn = self.db.pool.acquire().await?;
        if crate::db::tenants::get(&mut conn, &top_up.tenant_id)
            .await?
            .is_none()
        {
            return Err(ApiError::not_found("tenant"));
        }
        let detail = format!("top-up by {}", principal.subject_id());
        balances::add(
            &mut conn,
            &top_up.tenant_id,
            top_up.amount,
            ("top_up", None, &detail),
        )
        .await?;
        drop(conn);
        tracing::info!(tenant = %top_up.tenant_id, amount = top_up.amount, "balance topped up");
        self.balance(principal, Some(&top_up.tenant_id)).await
    }
}
