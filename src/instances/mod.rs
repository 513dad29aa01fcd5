//! Model instances on inference nodes (seed 003's launch flow). A tenant launches a
//! model with smart constraints and a replica count; the scheduler ([`placement`])
//! picks nodes from what they report (labels, free memory, load), and the instance
//! moves `pending → starting` (each node loads the model) `→ running`, later
//! `stopping → stopped`, or `failed` with a stable `failure_reason` (the seed's codes
//! where it names one), a one-line `failure_detail` and the remediation hint.
//!
//! A launch that nothing satisfies fails at once (409 `SMART_NO_MATCH` or
//! `GPU_INCOMPATIBLE`, the failed instance kept); a node that has not loaded the model
//! within `[instances] launch_timeout_seconds` fails it with `PROVIDER_TIMEOUT`. The
//! monitor ([`Instances::spawn_monitor`]) fails a running instance whose node left
//! (`NODE_LOST`) or stopped carrying the model (`MODEL_UNLOADED`); starting it again
//! places it anew, on the nodes that are up. Stopping unloads the model where the
//! launch loaded it, unless another instance still runs it there.
//!
//! Billing: a tenant's prepaid balance (`GET /v1/accounting/balance`, topped up by a
//! platform admin) must be at least `[instances] launch_minimum` to launch, and more
//! than 0 for a priced placement (else 402 `BILLING_BELOW_MINIMUM`). A running
//! instance is debited its nodes' `price_per_hour` every `billing_interval_seconds`
//! and for the rest when it ends; a balance run out fails the tenant's priced
//! instances (`BALANCE_EXHAUSTED`).

pub mod balancers;
mod billing;
pub mod placement;

pub use billing::{BalanceView, TopUp};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::config::InstancesConfig;
use crate::db::Db;
use crate::db::balances;
use crate::db::instances::{self, Change, InstanceRow};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::inference::member::Member;
use crate::rbac::Permission;
use crate::records::Timestamp;
use crate::speech::nodes::Nodes;
use placement::{Candidate, Refusal, Smart};

/// Replicas one instance may ask for.
const MAX_REPLICAS: usize = 16;
/// Instances one list shows.
const LIST_LIMIT: i64 = 500;
/// How often the monitor looks at running instances (and bills them: more often when
/// the billing interval is shorter).
const MONITOR_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// `POST /v1/instances`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Launch {
    /// An engine id (`audio.stt.whisper-base`).
    pub model: String,
    #[serde(default)]
    pub smart: Smart,
    /// Nodes to run it on (default 1, at most 16), each a different node.
    pub replicas: Option<usize>,
}

/// An instance as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceView {
    pub id: String,
    /// Always `instance`.
    pub object: &'static str,
    pub model: String,
    pub smart: Smart,
    pub replicas: i64,
    /// `pending`, `starting`, `running`, `stopping`, `stopped` or `failed`.
    pub state: String,
    /// The nodes its replicas run on (or were placed on).
    pub node_ids: Vec<String>,
    /// Why it failed: `SMART_NO_MATCH`, `GPU_INCOMPATIBLE`, `BILLING_BELOW_MINIMUM`,
    /// `PROVIDER_TIMEOUT`, `PROVIDER_ERROR`, `OOM_KILLED`, `NODE_LOST`,
    /// `MODEL_UNLOADED` or `BALANCE_EXHAUSTED`.
    pub failure_reason: Option<String>,
    /// One line on what happened.
    pub failure_detail: Option<String>,
    /// What to do about it.
    pub remediation: Option<&'static str>,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    /// What it costs per hour while it runs (its nodes' `price_per_hour`).
    pub hourly_cost: f64,
}

/// The remediation hint of a failure reason (seed 003's words where it has them).
pub fn remediation(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "SMART_NO_MATCH" => {
            "No node satisfies the smart constraints. Loosen the max price, region, or capacity tier."
        }
        "GPU_INCOMPATIBLE" => {
            "The model needs more memory than any matching node has free. Pick a node with more memory or a smaller model."
        }
        "PROVIDER_TIMEOUT" => {
            "The node did not load the model in time. Stop the instance and start it again; the scheduler will re-route."
        }
        "PROVIDER_ERROR" => {
            "The node refused to load the model (see the detail). Fix the node, then start the instance again."
        }
        "OOM_KILLED" => {
            "The runtime exceeded the available memory. Reduce the context size or pick a larger GPU."
        }
        "NODE_LOST" => {
            "A node running the instance went away. Start the instance again; the scheduler places it on the nodes that are up."
        }
        "MODEL_UNLOADED" => {
            "A node stopped carrying the model (it restarted, or an admin unloaded it). Start the instance again."
        }
        "BILLING_BELOW_MINIMUM" => {
            "Account balance is below the launch threshold. Top up and retry."
        }
        "BALANCE_EXHAUSTED" => {
            "The balance ran out while the instance ran. Top up, then start the instance again."
        }
        _ => return None,
    })
}

fn view(row: InstanceRow) -> InstanceView {
    InstanceView {
        smart: serde_json::from_str(&row.smart).unwrap_or_default(),
        remediation: row.failure_reason.as_deref().and_then(remediation),
        id: row.id,
        object: "instance",
        model: row.model,
        replicas: row.replicas,
        state: row.state,
        node_ids: row.node_ids,
        failure_reason: row.failure_reason,
        failure_detail: row.failure_detail,
        created_at: Timestamp(row.created_at).to_rfc3339(),
        updated_at: Timestamp(row.updated_at).to_rfc3339(),
        started_at: row.started_at.map(|at| Timestamp(at).to_rfc3339()),
        hourly_cost: row.hourly_cost,
    }
}

/// A failure: the stable reason, the detail, and the error a launch answers with.
struct Failure {
    reason: &'static str,
    detail: String,
    error: ApiError,
}

impl Failure {
    fn refusal(model: &str, refusal: &Refusal) -> Failure {
        match refusal {
            Refusal::NoMatch {
                constraint,
                excluded,
                eligible,
            } => {
                let detail = match *constraint {
                    "replicas" => format!(
                        "{eligible} node(s) meet the constraints; the replicas asked need more"
                    ),
                    constraint => {
                        format!("no node meets the constraints; `{constraint}` excluded the most")
                    }
                };
                let counts: serde_json::Map<String, serde_json::Value> = excluded
                    .iter()
                    .map(|(name, count)| ((*name).to_owned(), json!(count)))
                    .collect();
                Failure {
                    reason: "SMART_NO_MATCH",
                    error: ApiError::new(ErrorCode::SMART_NO_MATCH, detail.clone())
                        .with_field("constraint", *constraint)
                        .with_field("excluded", counts)
                        .with_field("eligible", *eligible),
                    detail,
                }
            }
            Refusal::TooLarge {
                needed_mb,
                best_available_mb,
                fitting,
            } => {
                let detail = format!(
                    "`{model}` needs {needed_mb} MB; the most any matching node has free is \
                     {best_available_mb} MB ({fitting} fit)"
                );
                Failure {
                    reason: "GPU_INCOMPATIBLE",
                    error: ApiError::new(ErrorCode::GPU_INCOMPATIBLE, detail.clone())
                        .with_field("model", model)
                        .with_field("needed_mb", *needed_mb)
                        .with_field("available_mb", *best_available_mb),
                    detail,
                }
            }
        }
    }
}

/// The instances context: its rows, the nodes it places on, its settings.
pub struct Instances {
    db: Db,
    nodes: Nodes,
    config: InstancesConfig,
    /// When the monitor first saw each (instance, node) not answering.
    silent_since: Mutex<HashMap<(String, String), Instant>>,
}

/// Whether `member` reported a runtime out-of-memory of the instance's model since it
/// started running.
fn ran_out_of_memory(member: &Member, row: &InstanceRow) -> bool {
    let Some(started) = row.started_at else {
        return false;
    };
    member.seen().info.is_some_and(|info| {
        info.oom_events
            .iter()
            .any(|event| event.engine == row.model && event.at_ms >= started)
    })
}

impl Instances {
    pub fn new(db: Db, nodes: Nodes, config: InstancesConfig) -> Instances {
        Instances {
            db,
            nodes,
            config,
            silent_since: Mutex::new(HashMap::new()),
        }
    }

    fn members(&self) -> Vec<Arc<Member>> {
        self.nodes
            .engines()
            .map(|engines| engines.members().to_vec())
            .unwrap_or_default()
    }

    async fn row(&self, principal: &Principal, id: &str) -> ApiResult<InstanceRow> {
        let mut conn = self.db.pool.acquire().await?;
        instances::get(&mut conn, &principal.tenant_id, id)
            .await?
            .ok_or_else(|| ApiError::not_found("instance"))
    }

    async fn reread(&self, principal: &Principal, id: &str) -> ApiResult<InstanceView> {
        self.row(principal, id).await.map(view)
    }

    /// `POST /v1/instances`: checks the request, keeps the instance, places it. A
    /// placement that fails is a failed instance and the launch's error (with
    /// `instance_id`); otherwise the instance is `starting` and comes up in the
    /// background.
    pub async fn launch(
        self: &Arc<Self>,
        principal: &Principal,
        launch: Launch,
    ) -> ApiResult<InstanceView> {
        principal.require(Permission::InstancesWrite)?;
        engines::node::with_needs(std::slice::from_ref(&launch.model))?;
        let replicas = launch.replicas.unwrap_or(1);
        if !(1..=MAX_REPLICAS).contains(&replicas) {
            return Err(
                ApiError::invalid(format!("replicas must be within 1..={MAX_REPLICAS}"))
                    .with_field("field", "replicas"),
            );
        }
        if launch
            .smart
            .max_price
            .is_some_and(|p| !(p.is_finite() && p >= 0.0))
        {
            return Err(ApiError::invalid("smart.max_price must be 0 or more")
                .with_field("field", "smart.max_price"));
        }
        for (field, value) in [
            ("smart.region", &launch.smart.region),
            ("smart.capacity_tier", &launch.smart.capacity_tier),
        ] {
            if value.as_ref().is_some_and(|v| v.is_empty() || v.len() > 64) {
                return Err(
                    ApiError::invalid(format!("{field} must be 1 to 64 characters"))
                        .with_field("field", field),
                );
            }
        }
        let id = crate::db::new_id("inst");
        let smart = serde_json::to_string(&launch.smart).unwrap_or_else(|_| "{}".into());
        let mut conn = self.db.pool.acquire().await?;
        instances::create(
            &mut conn,
            (&id, &principal.tenant_id, principal.subject_id()),
            (&launch.model, &smart, replicas as i64),
        )
        .await?;
        drop(conn);
        tracing::info!(instance = %id, model = %launch.model, replicas, "instance launched");
        self.place(
            (&id, &principal.tenant_id),
            &launch.model,
            (&launch.smart, replicas),
        )
        .await
        .map_err(|error| error.with_field("instance_id", id.clone()))?;
        self.reread(principal, &id).await
    }

    /// Places a `pending` instance: `starting` on the chosen nodes (brought up in the
    /// background), or `failed` with the refusal.
    async fn place(
        self: &Arc<Self>,
        (id, tenant_id): (&str, &str),
        model: &str,
        (smart, replicas): (&Smart, usize),
    ) -> ApiResult<()> {
        let members = self.members();
        let candidates: Vec<Candidate> = members.iter().map(|m| candidate(m, model)).collect();
        let needed_mb = engines::node::memory_mb(model);
        let chosen = match placement::place(&candidates, smart, needed_mb, replicas) {
            Ok(chosen) => chosen,
            Err(refusal) => {
                let failure = Failure::refusal(model, &refusal);
                self.fail(id, &["pending"], failure.reason, &failure.detail)
                    .await?;
                return Err(failure.error);
            }
        };
        let carried: Vec<String> = candidates
            .iter()
            .filter(|c| c.carries && chosen.contains(&c.node_id))
            .map(|c| c.node_id.clone())
            .collect();
        let hourly_cost: f64 = candidates
            .iter()
            .filter(|c| chosen.contains(&c.node_id))
            .map(|c| c.price_per_hour)
            .sum();
        let mut conn = self.db.pool.acquire().await?;
        let balance = balances::get(&mut conn, tenant_id).await?;
        let minimum = self.config.launch_minimum;
        if balance < minimum || (hourly_cost > 0.0 && balance <= 0.0) {
            drop(conn);
            let detail = format!(
                "the balance is {balance} cost units; a launch needs {} (this placement costs \
                 {hourly_cost} an hour)",
                match minimum > 0.0 {
                    true => format!("at least {minimum}"),
                    false => "more than 0".to_owned(),
                }
            );
            self.fail(id, &["pending"], "BILLING_BELOW_MINIMUM", &detail)
                .await?;
            return Err(ApiError::new(ErrorCode::BILLING_BELOW_MINIMUM, detail)
                .with_field("balance", balance)
                .with_field("minimum", minimum)
                .with_field("hourly_cost", hourly_cost));
        }
        let change = Change {
            node_ids: Some(&chosen),
            hourly_cost: Some(hourly_cost),
            ..Change::default()
        };
        if !instances::transition(&mut conn, id, (&["pending"], "starting"), change).await? {
            return Err(ApiError::new(
                ErrorCode::CONFLICT,
                "the instance changed while it was being placed",
            ));
        }
        drop(conn);
        tracing::info!(instance = %id, nodes = ?chosen, "instance placed");
        let this = self.clone();
        let (id, model) = (id.to_owned(), model.to_owned());
        tokio::spawn(async move {
            if let Err(error) = this.bring_up(&id, &model, chosen, carried).await {
                tracing::warn!(instance = %id, %error, "bringing an instance up failed");
            }
        });
        Ok(())
    }

    /// Loads the model on each chosen node (those that carry it already keep it), then
    /// `running`; a node that does not load it in time or refuses fails the instance.
    async fn bring_up(
        &self,
        id: &str,
        model: &str,
        nodes: Vec<String>,
        carried: Vec<String>,
    ) -> ApiResult<()> {
        let members = self.members();
        let timeout = self.config.launch_timeout;
        let loads = nodes.iter().filter(|n| !carried.contains(n)).map(|node| {
            let member = members.iter().find(|m| &m.id == node).cloned();
            async move {
                let Some(member) = member else {
                    let lost = Err(("NODE_LOST", format!("node `{node}` left")));
                    return (node.clone(), lost, false);
                };
                let change = tokio::time::timeout(timeout, member.change_model(model, true)).await;
                let timed_out = change.is_err();
                let outcome = match change {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(engines::EngineError::ModelTooLarge {
                        needed_mb,
                        available_mb,
                        ..
                    })) => Err((
                        "GPU_INCOMPATIBLE",
                        format!(
                            "node `{node}` has {available_mb} MB free; `{model}` needs {needed_mb} MB"
                        ),
                    )),
                    Ok(Err(engines::EngineError::NodeUnavailable { reason, .. })) => Err((
                        "PROVIDER_TIMEOUT",
                        format!("node `{node}` did not load `{model}`: {reason}"),
                    )),
                    Ok(Err(error)) => Err((
                        "PROVIDER_ERROR",
                        format!("node `{node}` refused `{model}`: {error}"),
                    )),
                    Err(_) => Err((
                        "PROVIDER_TIMEOUT",
                        format!(
                            "node `{node}` did not load `{model}` within {} s",
                            timeout.as_secs()
                        ),
                    )),
                };
                (node.clone(), outcome, timed_out)
            }
        });
        let outcomes = futures_util::future::join_all(loads).await;
        let loaded: Vec<String> = outcomes
            .iter()
            .filter(|(_, outcome, _)| outcome.is_ok())
            .map(|(node, _, _)| node.clone())
            .collect();
        // A load that timed out still runs on its node (a change is never left half
        // done) and lands later: the cleanup unloads it there too, after it.
        let late: Vec<String> = outcomes
            .iter()
            .filter(|(_, _, timed_out)| *timed_out)
            .map(|(node, _, _)| node.clone())
            .collect();
        let failed = outcomes
            .into_iter()
            .find_map(|(_, outcome, _)| outcome.err());
        let mut conn = self.db.pool.acquire().await?;
        let moved = match &failed {
            None => {
                let change = Change {
                    loaded_node_ids: Some(&loaded),
                    started: true,
                    ..Change::default()
                };
                instances::transition(&mut conn, id, (&["starting"], "running"), change).await?
            }
            Some((reason, detail)) => {
                tracing::warn!(instance = %id, reason, detail, "instance failed to start");
                let change = Change {
                    loaded_node_ids: Some(&loaded),
                    failure: Some((reason, detail)),
                    ..Change::default()
                };
                instances::transition(&mut conn, id, (&["starting"], "failed"), change).await?;
                false
            }
        };
        drop(conn);
        if moved {
            tracing::info!(instance = %id, "instance running");
            metrics::counter!("scaigrid_instances_started_total").increment(1);
        } else {
            // Failed, or stopped while it was coming up: what this launch loaded (or is
            // still loading) goes.
            let cleanup: Vec<String> = loaded.into_iter().chain(late).collect();
            self.unload(id, model, &cleanup).await;
        }
        Ok(())
    }

    /// Unloads `model` from `nodes` (best effort) where no live instance runs it: not
    /// another, nor this one when it was started again meanwhile (a late cleanup must
    /// not take the model from under its own restart).
    async fn unload(&self, id: &str, model: &str, nodes: &[String]) {
        let members = self.members();
        for node in nodes {
            let others = match self.db.pool.acquire().await {
                Ok(mut conn) => instances::others_on(&mut conn, (model, node), "")
                    .await
                    .unwrap_or(true),
                Err(_) => true,
            };
            let Some(member) = members.iter().find(|m| &m.id == node).filter(|_| !others) else {
                continue;
            };
            if let Err(error) = member.change_model(model, false).await {
                tracing::warn!(instance = %id, node = %node, %error, "unloading an instance's model failed");
            }
        }
    }

    async fn fail(&self, id: &str, from: &[&str], reason: &str, detail: &str) -> ApiResult<bool> {
        let mut conn = self.db.pool.acquire().await?;
        let change = Change {
            failure: Some((reason, detail)),
            ..Change::default()
        };
        let moved = instances::transition(&mut conn, id, (from, "failed"), change).await?;
        if moved {
            tracing::warn!(instance = %id, reason, detail, "instance failed");
            metrics::counter!("scaigrid_instances_failed_total", "reason" => reason.to_owned())
                .increment(1);
        }
        Ok(moved)
    }

    pub async fn get(&self, principal: &Principal, id: &str) -> ApiResult<InstanceView> {
        principal.require(Permission::InstancesRead)?;
        self.reread(principal, id).await
    }

    pub async fn list(&self, principal: &Principal) -> ApiResult<Vec<InstanceView>> {
        principal.require(Permission::InstancesRead)?;
        let mut conn = self.db.pool.acquire().await?;
        let rows = instances::list(&mut conn, &principal.tenant_id, LIST_LIMIT).await?;
        Ok(rows.into_iter().map(view).collect())
    }

    /// `POST /v1/instances/{id}/start`: a stopped or failed instance placed anew (the
    /// nodes up now, the constraints it was launched with).
    pub async fn start(
        self: &Arc<Self>,
        principal: &Principal,
        id: &str,
    ) -> ApiResult<InstanceView> {
        principal.require(Permission::InstancesWrite)?;
        let row = self.row(principal, id).await?;
        let mut conn = self.db.pool.acquire().await?;
        let change = Change {
            node_ids: Some(&[]),
            loaded_node_ids: Some(&[]),
            ..Change::default()
        };
        if !instances::transition(&mut conn, id, (&["stopped", "failed"], "pending"), change)
            .await?
        {
            return Err(ApiError::new(
                ErrorCode::CONFLICT,
                format!(
                    "the instance is {}; only a stopped or failed one starts",
                    row.state
                ),
            ));
        }
        drop(conn);
        let smart: Smart = serde_json::from_str(&row.smart).unwrap_or_default();
        let replicas = usize::try_from(row.replicas).unwrap_or(1);
        self.place((id, &row.tenant_id), &row.model, (&smart, replicas))
            .await
            .map_err(|error| error.with_field("instance_id", id))?;
        self.reread(principal, id).await
    }

    /// `POST /v1/instances/{id}/stop`: `stopping`, the model unloaded where its launch
    /// loaded it, `stopped`. Stopping a stopped one changes nothing.
    pub async fn stop(&self, principal: &Principal, id: &str) -> ApiResult<InstanceView> {
        principal.require(Permission::InstancesWrite)?;
        let row = self.row(principal, id).await?;
        if row.state == "stopped" {
            return Ok(view(row));
        }
        let mut conn = self.db.pool.acquire().await?;
        let live = ["pending", "starting", "running"];
        if !instances::transition(&mut conn, id, (&live, "stopping"), Change::default()).await? {
            return Err(ApiError::new(
                ErrorCode::CONFLICT,
                format!("the instance is {}; only a live one stops", row.state),
            ));
        }
        drop(conn);
        self.bill(&row, true).await?;
        self.unload(id, &row.model, &row.loaded_node_ids).await;
        let mut conn = self.db.pool.acquire().await?;
        instances::transition(&mut conn, id, (&["stopping"], "stopped"), Change::default()).await?;
        tracing::info!(instance = %id, "instance stopped");
        drop(conn);
        self.reread(principal, id).await
    }

    /// `DELETE /v1/instances/{id}`: an instance that is over goes; a live one must be
    /// stopped first (409).
    pub async fn delete(&self, principal: &Principal, id: &str) -> ApiResult<()> {
        principal.require(Permission::InstancesWrite)?;
        let row = self.row(principal, id).await?;
        let mut conn = self.db.pool.acquire().await?;
        if !instances::delete(&mut conn, &principal.tenant_id, id).await? {
            return Err(ApiError::new(
                ErrorCode::CONFLICT,
                format!("the instance is {}; stop it first", row.state),
            ));
        }
        Ok(())
    }

    /// Watches running instances for as long as the process runs (every process that
    /// calls nodes; the state changes are guarded, so several may watch at once).
    pub fn spawn_monitor(self: &Arc<Self>) {
        if self.nodes.engines().is_none() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let every = MONITOR_EVERY.min(this.config.billing_interval);
            let mut ticker = tokio::time::interval(every.max(Duration::from_millis(100)));
            loop {
                ticker.tick().await;
                if let Err(error) = this.watch().await {
                    tracing::warn!(%error, "instance monitor round failed");
                }
            }
        });
    }

    /// One look at every running instance's nodes.
    pub async fn watch(&self) -> ApiResult<()> {
        let mut conn = self.db.pool.acquire().await?;
        let running = instances::in_state(&mut conn, "running").await?;
        drop(conn);
        let members = self.members();
        for row in running {
            let mut failure = None;
            for node in &row.node_ids {
                match members.iter().find(|m| &m.id == node) {
                    None => {
                        failure = Some(("NODE_LOST", format!("node `{node}` left the deployment")));
                    }
                    Some(member) if member.ready() => {
                        self.heard(&row.id, node);
                        if !member.carries(&[row.model.as_str()]) {
                            failure = Some((
                                "MODEL_UNLOADED",
                                format!("node `{node}` no longer carries `{}`", row.model),
                            ));
                        } else if ran_out_of_memory(member, &row) {
                            failure = Some((
                                "OOM_KILLED",
                                format!(
                                    "an inference of `{}` ran out of memory on node `{node}`",
                                    row.model
                                ),
                            ));
                        }
                    }
                    Some(_) => {
                        let silent = self.silent_for(&row.id, node);
                        if silent >= self.config.node_grace {
                            failure = Some((
                                "NODE_LOST",
                                format!(
                                    "node `{node}` has not answered for {} s",
                                    silent.as_secs()
                                ),
                            ));
                        }
                    }
                }
                if failure.is_some() {
                    break;
                }
            }
            if let Some((reason, detail)) = failure {
                self.end(&row, reason, &detail).await?;
                continue;
            }
            if self.bill(&row, false).await? {
                self.exhausted(&row.tenant_id).await?;
            }
        }
        Ok(())
    }

    /// Fails a running instance: billed up to now, its model unloaded.
    async fn end(&self, row: &InstanceRow, reason: &str, detail: &str) -> ApiResult<()> {
        if self.fail(&row.id, &["running"], reason, detail).await? {
            if let Ok(mut silent) = self.silent_since.lock() {
                silent.retain(|(id, _), _| *id != row.id);
            }
            self.bill(row, true).await?;
            self.unload(&row.id, &row.model, &row.loaded_node_ids).await;
        }
        Ok(())
    }

    fn heard(&self, id: &str, node: &str) {
        if let Ok(mut silent) = self.silent_since.lock() {
            silent.remove(&(id.to_owned(), node.to_owned()));
        }
    }

    fn silent_for(&self, id: &str, node: &str) -> std::time::Duration {
        self.silent_since
            .lock()
            .map_or(std::time::Duration::ZERO, |mut silent| {
                silent
                    .entry((id.to_owned(), node.to_owned()))
                    .or_insert_with(Instant::now)
                    .elapsed()
            })
    }
}

/// A node as the scheduler sees it, from what it last reported.
fn candidate(member: &Member, model: &str) -> Candidate {
    let info = member.seen().info.unwrap_or_default();
    Candidate {
        node_id: member.id.clone(),
        ready: member.ready(),
        region: info.region,
        capacity_tier: info.capacity_tier,
        price_per_hour: info.price_per_hour,
        available_mb: info.memory_available_mb,
        carries: member.carries(&[model]),
        load: member.load(),
    }
}
