//! Balancers: instances of one model behind one name, created, listed and deleted
//! here. A speech request whose `model` names a balancer of the caller's tenant runs
//! on the nodes of one of its healthy instances (running, every node answering and
//! carrying the model), picked by weight: `speech::balancers::resolve`, which every
//! speech path calls.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Instances, remediation};
use crate::auth::Principal;
use crate::db::balancers::{self, BalancerRow, Member};
use crate::db::instances;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::rbac::Permission;
use crate::records::Timestamp;
use crate::speech::balancers::{healthy, valid_name};

/// Instances one balancer may group.
const MAX_MEMBERS: usize = 16;
/// The largest weight.
const MAX_WEIGHT: u32 = 1000;

/// `POST /v1/balancers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBalancer {
    /// What requests name as their `model` (1 to 64 of a-z, 0-9, `-`, `_`, `.`).
    pub name: String,
    /// Instances of one model, each with its weight.
    pub instances: Vec<Member>,
}

/// One instance behind a balancer, as it stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub instance_id: String,
    pub weight: u32,
    /// The instance's state (`missing` once it was deleted).
    pub state: String,
    pub node_ids: Vec<String>,
    /// It takes requests: running, every node answering and carrying the model.
    pub healthy: bool,
    pub failure_reason: Option<String>,
    pub remediation: Option<&'static str>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BalancerView {
    pub id: String,
    /// Always `balancer`.
    pub object: &'static str,
    pub name: String,
    pub model: String,
    pub members: Vec<MemberView>,
    /// Members that take requests now.
    pub healthy: usize,
    pub created_at: String,
}

impl Instances {
    async fn balancer_view(&self, row: BalancerRow) -> ApiResult<BalancerView> {
        let mut conn = self.db.pool.acquire().await?;
        let live = self.members();
        let mut members = Vec::new();
        for member in row.members {
            let instance = instances::get(&mut conn, &row.tenant_id, &member.instance_id).await?;
            members.push(match instance {
                Some(instance) => MemberView {
                    healthy: healthy(&live, &instance),
                    remediation: instance.failure_reason.as_deref().and_then(remediation),
                    instance_id: member.instance_id,
                    weight: member.weight,
                    state: instance.state,
                    node_ids: instance.node_ids,
                    failure_reason: instance.failure_reason,
                },
                None => MemberView {
                    instance_id: member.instance_id,
                    weight: member.weight,
                    state: "missing".to_owned(),
                    node_ids: Vec::new(),
                    healthy: false,
                    failure_reason: None,
                    remediation: None,
                },
            });
        }
        Ok(BalancerView {
            id: row.id,
            object: "balancer",
            name: row.name,
            model: row.model,
            healthy: members.iter().filter(|m| m.healthy).count(),
            members,
            created_at: Timestamp(row.created_at).to_rfc3339(),
        })
    }

    /// `POST /v1/balancers`: instances of one model of the tenant behind a new name.
    pub async fn create_balancer(
        &self,
        principal: &Principal,
        request: CreateBalancer,
    ) -> ApiResult<BalancerView> {
        principal.require(Permission::InstancesWrite)?;
        if !valid_name(&request.name) {
            return Err(
                ApiError::invalid("name must be 1 to 64 of a-z, 0-9, `-`, `_`, `.`")
                    .with_field("field", "name"),
            );
        }
        let count = request.instances.len();
        let mut ids: Vec<&str> = request
            .instances
            .iter()
            .map(|m| m.instance_id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if !(1..=MAX_MEMBERS).contains(&count) || ids.len() != count {
            return Err(ApiError::invalid(format!(
                "instances must name 1 to {MAX_MEMBERS} different instances"
            ))
            .with_field("field", "instances"));
        }
        if request
            .instances
            .iter()
            .any(|m| !(1..=MAX_WEIGHT).contains(&m.weight))
        {
            return Err(
                ApiError::invalid(format!("weights must be within 1..={MAX_WEIGHT}"))
                    .with_field("field", "instances"),
            );
        }
        let mut conn = self.db.pool.acquire().await?;
        let mut model: Option<String> = None;
        for member in &request.instances {
            let instance = instances::get(&mut conn, &principal.tenant_id, &member.instance_id)
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(&format!("instance `{}`", member.instance_id))
                })?;
            match &model {
                Some(model) if *model != instance.model => {
                    return Err(ApiError::invalid(format!(
                        "the instances run different models (`{model}`, `{}`); a balancer \
                         groups one model",
                        instance.model
                    ))
                    .with_field("field", "instances"));
                }
                _ => model = Some(instance.model),
            }
        }
        let row = BalancerRow {
            id: crate::db::new_id("bal"),
            tenant_id: principal.tenant_id.clone(),
            name: request.name,
            model: model.unwrap_or_default(),
            members: request.instances,
            created_at: crate::db::now_ms(),
        };
        balancers::create(&mut conn, &row).await.map_err(|error| {
            match error
                .as_database_error()
                .is_some_and(|e| e.is_unique_violation())
            {
                true => ApiError::new(ErrorCode::CONFLICT, "a balancer with this name exists"),
                false => error.into(),
            }
        })?;
        drop(conn);
        tracing::info!(balancer = %row.id, name = %row.name, "balancer created");
        self.balancer_view(row).await
    }

    pub async fn balancers(&self, principal: &Principal) -> ApiResult<Vec<BalancerView>> {
        principal.require(Permission::InstancesRead)?;
        let mut conn = self.db.pool.acquire().await?;
        let rows = balancers::list(&mut conn, &principal.tenant_id).await?;
        drop(conn);
        let mut views = Vec::new();
        for row in rows {
            views.push(self.balancer_view(row).await?);
        }
        Ok(views)
    }

    async fn balancer_row(&self, principal: &Principal, id: &str) -> ApiResult<BalancerRow> {
        let mut conn = self.db.pool.acquire().await?;
        balancers::get(&mut conn, &principal.tenant_id, (id, false))
            .await?
            .ok_or_else(|| ApiError::not_found("balancer"))
    }

    pub async fn balancer(&self, principal: &Principal, id: &str) -> ApiResult<BalancerView> {
        principal.require(Permission::InstancesRead)?;
        let row = self.balancer_row(principal, id).await?;
        self.balancer_view(row).await
    }

    pub async fn delete_balancer(&self, principal: &Principal, id: &str) -> ApiResult<()> {
        principal.require(Permission::InstancesWrite)?;
        let mut conn = self.db.pool.acquire().await?;
        match balancers::delete(&mut conn, &principal.tenant_id, id).await? {
            true => Ok(()),
            false => Err(ApiError::not_found("balancer")),
        }
    }
}
