//! The firewall: tenant policies of rules (keywords, regular expressions, PII, size)
//! that audit, block or redact what goes into and comes out of chat and speech.
//!
//! Policies are stored per tenant (`/v1/firewall/policies`) and attached to the tenant,
//! an API key or a model; each guards the stages it names. A call's text is checked by
//! [`Firewall::guard`]: no policy applies, nothing is done; a match is an audit row and
//! a `firewall.matched` event; a block is 403 `FIREWALL_BLOCKED` with `matched_rules`.
//! Compiled policies are cached per tenant for [`CACHE_TTL`] (a change here clears this
//! process's copy at once; the other processes of a scaled deployment within the TTL).

pub mod judge;
pub mod policy;
pub mod rules;
pub mod stream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Principal, Subject};
use crate::db::firewall::{self as store, PolicyFields, PolicyRow};
use crate::db::{Db, api_keys};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::records::Timestamp;
use crate::services::{admin_tenant, audit};
pub use judge::Judge;
pub use policy::{Attachment, Match, Mode, Policy, Stage, Verdict};
pub use rules::Rule;

/// How long a process keeps a tenant's compiled policies.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// A tenant's compiled policies and when they were loaded.
type Cached = (Instant, Arc<Vec<Policy>>);

pub struct Firewall {
    db: Db,
    cache: Mutex<HashMap<String, Cached>>,
    /// Asks judge rules' evaluator models (the gateway's, set at assembly; absent, a
    /// judge rule cannot be answered and counts as unreachable).
    judge: OnceLock<Arc<dyn Judge>>,
}

/// `POST /v1/firewall/policies` and `PUT .../{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    pub name: String,
    /// `audit`, `block` or `redact`.
    pub mode: Mode,
    /// `tenant` (default), `api_key` or `model`.
    pub scope: Option<String>,
    /// The key id or the model slug (not for `tenant`).
    pub scope_id: Option<String>,
    /// The stages it guards (default all): `chat_input`, `chat_output`,
    /// `speech_input`, `transcript`.
    pub stages: Option<Vec<Stage>>,
    pub rules: Vec<Rule>,
    /// Another tenant (platform admins only).
    pub tenant_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub mode: Mode,
    pub scope: String,
    pub scope_id: Option<String>,
    pub stages: Vec<Stage>,
    pub rules: Vec<Rule>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// `POST /v1/guardrails/test`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardrailsTest {
    pub text: String,
    /// A policy's id or name; absent: every policy of the tenant.
    pub policy: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GuardrailsResult {
    /// `pass`, `audit`, `redact` or `block`.
    pub decision: &'static str,
    /// The modes of the policies tested.
    pub modes: Vec<Mode>,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub matched_rules: Vec<String>,
}

/// Texts one guarded call may hold, in bytes (the request limits bound them before).
const MAX_TEXT: usize = 4 << 20;

fn stored(row: PolicyRow) -> ApiResult<(PolicyView, Policy)> {
    let corrupt = |what: &str| ApiError::internal(format!("firewall policy {}: {what}", row.id));
    let rules: Vec<Rule> = serde_json::from_str(&row.rules).map_err(|_| corrupt("rules"))?;
    let stages: Vec<Stage> = serde_json::from_str(&row.stages).map_err(|_| corrupt("stages"))?;
    let mode: Mode = serde_json::from_value(serde_json::Value::String(row.mode.clone()))
        .map_err(|_| corrupt("mode"))?;
    let attachment = match (row.scope.as_str(), &row.scope_id) {
        ("tenant", _) => Attachment::Tenant,
        ("api_key", Some(id)) => Attachment::ApiKey(id.clone()),
        ("model", Some(slug)) => Attachment::Model(slug.clone()),
        _ => return Err(corrupt("scope")),
    };
    let compiled = Policy::compile(&rules).map_err(|e| corrupt(&e))?;
    let policy = Policy {
        id: row.id.clone(),
        name: row.name.clone(),
        mode,
        attachment,
        stages: stages.clone(),
        rules: compiled,
    };
    let view = PolicyView {
        id: row.id,
        tenant_id: row.tenant_id,
        name: row.name,
        mode,
        scope: row.scope,
        scope_id: row.scope_id,
        stages,
        rules,
        created_at: Timestamp(row.created_at),
        updated_at: Timestamp(row.updated_at),
    };
    Ok((view, policy))
}

impl Firewall {
    pub fn new(db: Db) -> Arc<Firewall> {
        Arc::new(Firewall {
            db,
            cache: Mutex::new(HashMap::new()),
            judge: OnceLock::new(),
        })
    }

    /// Plugs in what asks judge rules' models (once; the gateway at assembly).
    pub fn set_judge(&self, judge: Arc<dyn Judge>) {
        let _ = self.judge.set(judge);
    }

    /// Asks every judge rule of `policies` about `text` at once and folds the answers
    /// into `verdict`.
    async fn ask_judges(
        &self,
        principal: &Principal,
        policies: &[&Policy],
        text: &str,
        verdict: &mut Verdict,
    ) {
        let judges = policy::judges(policies.iter().copied());
        if judges.is_empty() {
            return;
        }
        let asked = judges.iter().map(|(_, _, spec)| async move {
            let started = Instant::now();
            let answer = match self.judge.get() {
                None => Err("no judge in this process (the gateway is not assembled)".into()),
                Some(judge) => {
                    let ask = judge.ask(principal, &spec.model, spec.render(text));
                    match tokio::time::timeout(spec.timeout(), ask).await {
                        Err(_) => Err(format!("the judge took over {} ms", spec.timeout_ms)),
                        Ok(Err(reason)) => Err(reason),
                        Ok(Ok(answer)) => judge::parse_score(&answer).ok_or_else(|| {
                            let start: String = answer.chars().take(100).collect();
                            format!("the judge's answer holds no score: {start:?}")
                        }),
                    }
                }
            };
            let outcome = match &answer {
                Ok(score) if *score >= spec.threshold => "match",
                Ok(_) => "pass",
                Err(_) => "failed",
            };
            metrics::counter!("scaigrid_firewall_judge_calls_total", "outcome" => outcome)
                .increment(1);
            (answer, started.elapsed().as_secs_f64() * 1e6)
        });
        let answers = futures_util::future::join_all(asked).await;
        for (judge, (answer, micros)) in judges.into_iter().zip(answers) {
            if let Err(reason) = &answer {
                tracing::warn!(rule = %judge.1.slug, model = %judge.2.model, %reason, "firewall judge gave no score");
            }
            policy::judged(verdict, judge, answer, micros);
        }
    }

    /// The judge rules' verdict on a text checked as it streamed (the local rules saw
    /// it as it came; a judge is asked once, on the whole text).
    pub async fn judge_whole(
        &self,
        principal: &Principal,
        policies: &[Policy],
        text: &str,
    ) -> Verdict {
        let policies: Vec<&Policy> = policies.iter().collect();
        let mut verdict = Verdict::default();
        self.ask_judges(principal, &policies, text, &mut verdict)
            .await;
        verdict
    }

    fn forget(&self, tenant_id: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(tenant_id);
        }
    }

    /// The tenant's compiled policies (cached for [`CACHE_TTL`]).
    pub async fn policies(&self, tenant_id: &str) -> ApiResult<Arc<Vec<Policy>>> {
        if let Ok(cache) = self.cache.lock()
            && let Some((at, policies)) = cache.get(tenant_id)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(policies.clone());
        }
        let rows = {
            let mut conn = self.db.pool.acquire().await?;
            store::list(&mut conn, tenant_id).await?
        };
        let mut policies = Vec::with_capacity(rows.len());
        for row in rows {
            policies.push(stored(row)?.1);
        }
        let policies = Arc::new(policies);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(tenant_id.to_owned(), (Instant::now(), policies.clone()));
        }
        Ok(policies)
    }

    /// Checks `texts` (one call's, e.g. every message) at `stage`: `Ok` with the verdict
    /// when it passes (redactions already applied to `texts`), 403 `FIREWALL_BLOCKED`
    /// with `matched_rules` when a block rule matched. Every match is audited.
    pub async fn guard(
        &self,
        principal: &Principal,
        model: Option<&str>,
        stage: Stage,
        texts: &mut [&mut String],
    ) -> ApiResult<Verdict> {
        let policies = self.policies(&principal.tenant_id).await?;
        let applicable = applicable(&policies, principal, model, stage);
        if applicable.is_empty() {
            return Ok(Verdict::default());
        }
        let joined = texts
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        if joined.len() > MAX_TEXT {
            return Err(ApiError::too_large("guarded text", MAX_TEXT as u64));
        }
        let mut verdict = policy::evaluate(applicable.iter().copied(), &joined);
        if !verdict.blocked {
            self.ask_judges(principal, &applicable, &joined, &mut verdict)
                .await;
        }
        if verdict.matches.is_empty() && verdict.judge_failures.is_empty() {
            return Ok(verdict);
        }
        self.record(principal, model, stage, &verdict).await?;
        if let Some(refusal) = refusal(&verdict) {
            return Err(refusal);
        }
        if verdict.redacted.is_some() {
            // Redact matches found text by text; fewer than in the joined text means a
            // match spans two texts (e.g. two chat messages), which no text can be
            // redacted for in place: that blocks rather than passes.
            let redacting = |verdict: &Verdict| -> usize {
                verdict
                    .matches
                    .iter()
                    .filter(|m| m.mode == Mode::Redact)
                    .map(|m| m.count)
                    .sum()
            };
            let mut found = 0;
            for text in texts.iter_mut() {
                let alone = policy::evaluate(applicable.iter().copied(), text);
                found += redacting(&alone);
                if let Some(redacted) = alone.redacted {
                    **text = redacted;
                }
            }
            if found < redacting(&verdict) {
                return Err(blocked(&verdict));
            }
        }
        Ok(verdict)
    }

    /// The policies that guard a call at `stage` (for a check made as a text streams).
    pub async fn guarding(
        &self,
        principal: &Principal,
        model: Option<&str>,
        stage: Stage,
    ) -> ApiResult<Vec<Policy>> {
        let policies = self.policies(&principal.tenant_id).await?;
        Ok(applicable(&policies, principal, model, stage)
            .into_iter()
            .cloned()
            .collect())
    }

    /// The audit rows of a verdict with matches or judges that gave no score, and the
    /// `firewall.matched` event of one with matches.
    pub async fn record(
        &self,
        principal: &Principal,
        model: Option<&str>,
        stage: Stage,
        verdict: &Verdict,
    ) -> ApiResult<()> {
        let detail = serde_json::json!({
            "stage": stage.as_str(),
            "model": model,
            "decision": verdict.decision(),
            "matches": verdict.matches,
            "judge_failures": verdict.judge_failures,
            "request_id": crate::request_id::current(),
        });
        let mut tx = self.db.begin().await?;
        let matched = verdict
            .matches
            .iter()
            .map(|m| ("firewall.matched", &m.policy_id));
        let failed =
            (verdict.judge_failures.iter()).map(|f| ("firewall.judge_unreachable", &f.policy_id));
        for (action, policy_id) in matched
            .chain(failed)
            .collect::<std::collections::BTreeSet<_>>()
        {
            audit(
                &mut tx,
                Some(principal),
                Some(&principal.tenant_id),
                action,
                ("firewall_policy", policy_id),
                Some(detail.clone()),
            )
            .await?;
        }
        if !verdict.matches.is_empty() {
            crate::db::events::emit(&mut tx, &principal.tenant_id, "firewall.matched", &detail)
                .await?;
        }
        tx.commit().await?;
        metrics::counter!(
            "scaigrid_firewall_matches_total",
            "stage" => stage.as_str(),
            "decision" => verdict.decision()
        )
        .increment(1);
        Ok(())
    }

    /// Runs a policy (or every policy of the tenant) over a text, without auditing it.
    pub async fn test(
        &self,
        principal: &Principal,
        request: GuardrailsTest,
    ) -> ApiResult<GuardrailsResult> {
        principal.require_tenant_admin(&principal.tenant_id)?;
        if request.text.len() > MAX_TEXT {
            return Err(ApiError::too_large("text", MAX_TEXT as u64));
        }
        let policies = self.policies(&principal.tenant_id).await?;
        let chosen: Vec<&Policy> = match &request.policy {
            Some(wanted) => {
                let found: Vec<&Policy> = policies
                    .iter()
                    .filter(|p| &p.id == wanted || &p.name == wanted)
                    .collect();
                if found.is_empty() {
                    return Err(ApiError::not_found("firewall policy"));
                }
                found
            }
            None => policies.iter().collect(),
        };
        let mut verdict = policy::evaluate(chosen.iter().copied(), &request.text);
        self.ask_judges(principal, &chosen, &request.text, &mut verdict)
            .await;
        Ok(GuardrailsResult {
            decision: verdict.decision(),
            modes: chosen.iter().map(|p| p.mode).collect(),
            matched_rules: verdict.matches.iter().map(|m| m.rule.clone()).collect(),
            verdict,
        })
    }

    async fn validate(
        &self,
        conn: &mut sqlx::AnyConnection,
        tenant_id: &str,
        request: &PolicyRequest,
    ) -> ApiResult<(String, Option<String>, String, String)> {
        let name = request.name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(ApiError::invalid("`name` must be 1 to 100 characters"));
        }
        Policy::compile(&request.rules)
            .map_err(|e| ApiError::invalid(e).with_field("field", "rules"))?;
        let scope = request.scope.clone().unwrap_or_else(|| "tenant".into());
        let scope_id = match (scope.as_str(), &request.scope_id) {
            ("tenant", None) => None,
            ("api_key", Some(id)) => {
                api_keys::get_in_tenant(conn, tenant_id, id)
                    .await?
                    .ok_or_else(|| ApiError::invalid(format!("no API key `{id}` in the tenant")))?;
                Some(id.clone())
            }
            ("model", Some(slug)) if !slug.is_empty() && slug.len() <= 400 => Some(slug.clone()),
            _ => {
                return Err(ApiError::invalid(
                    "`scope` is `tenant` (no `scope_id`), `api_key` or `model` (with `scope_id`)",
                ));
            }
        };
        let stages = request
            .stages
            .clone()
            .unwrap_or_else(|| Stage::ALL.to_vec());
        if stages.is_empty() {
            return Err(ApiError::invalid("`stages` must name at least one stage"));
        }
        let stages = serde_json::to_string(&stages).map_err(ApiError::internal)?;
        let rules = serde_json::to_string(&request.rules).map_err(ApiError::internal)?;
        Ok((scope, scope_id, stages, rules))
    }

    pub async fn create(
        &self,
        principal: &Principal,
        request: PolicyRequest,
    ) -> ApiResult<PolicyView> {
        let tenant_id = admin_tenant(Some(principal), request.tenant_id.as_deref())?;
        let mut tx = self.db.begin().await?;
        let (scope, scope_id, stages, rules) = self.validate(&mut tx, &tenant_id, &request).await?;
        let mode = mode_name(request.mode);
        let fields = PolicyFields {
            name: request.name.trim(),
            mode,
            scope: &scope,
            scope_id: scope_id.as_deref(),
            stages: &stages,
            rules: &rules,
        };
        let row = store::create(&mut tx, &tenant_id, &fields)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::CONFLICT, "a policy with this name exists"))?;
        audit(
            &mut tx,
            Some(principal),
            Some(&tenant_id),
            "firewall.policy.create",
            ("firewall_policy", &row.id),
            None,
        )
        .await?;
        tx.commit().await?;
        self.forget(&tenant_id);
        Ok(stored(row)?.0)
    }

    pub async fn update(
        &self,
        principal: &Principal,
        id: &str,
        request: PolicyRequest,
    ) -> ApiResult<PolicyView> {
        let tenant_id = admin_tenant(Some(principal), request.tenant_id.as_deref())?;
        let mut tx = self.db.begin().await?;
        let (scope, scope_id, stages, rules) = self.validate(&mut tx, &tenant_id, &request).await?;
        let fields = PolicyFields {
            name: request.name.trim(),
            mode: mode_name(request.mode),
            scope: &scope,
            scope_id: scope_id.as_deref(),
            stages: &stages,
            rules: &rules,
        };
        store::get(&mut tx, &tenant_id, id)
            .await?
            .ok_or_else(|| ApiError::not_found("firewall policy"))?;
        let row = store::update(&mut tx, &tenant_id, id, &fields)
            .await
            .map_err(|e| {
                match e
                    .as_database_error()
                    .is_some_and(|d| d.is_unique_violation())
                {
                    true => ApiError::new(ErrorCode::CONFLICT, "a policy with this name exists"),
                    false => e.into(),
                }
            })?
            .ok_or_else(|| ApiError::not_found("firewall policy"))?;
        audit(
            &mut tx,
            Some(principal),
            Some(&tenant_id),
            "firewall.policy.update",
            ("firewall_policy", id),
            None,
        )
        .await?;
        tx.commit().await?;
        self.forget(&tenant_id);
        Ok(stored(row)?.0)
    }

    pub async fn list(
        &self,
        principal: &Principal,
        tenant_id: Option<&str>,
    ) -> ApiResult<Vec<PolicyView>> {
        let tenant_id = admin_tenant(Some(principal), tenant_id)?;
        let mut conn = self.db.pool.acquire().await?;
        let mut out = Vec::new();
        for row in store::list(&mut conn, &tenant_id).await? {
            out.push(stored(row)?.0);
        }
        Ok(out)
    }

    /// A policy of a tenant the caller administers (404 for other tenants').
    pub async fn get(
        &self,
        principal: &Principal,
        tenant_id: Option<&str>,
        id: &str,
    ) -> ApiResult<PolicyView> {
        let tenant_id = admin_tenant(Some(principal), tenant_id)?;
        let mut conn = self.db.pool.acquire().await?;
        let row = store::get(&mut conn, &tenant_id, id)
            .await?
            .ok_or_else(|| ApiError::not_found("firewall policy"))?;
        Ok(stored(row)?.0)
    }

    pub async fn delete(
        &self,
        principal: &Principal,
        tenant_id: Option<&str>,
        id: &str,
    ) -> ApiResult<()> {
        let tenant_id = admin_tenant(Some(principal), tenant_id)?;
        let mut tx = self.db.begin().await?;
        if !store::delete(&mut tx, &tenant_id, id).await? {
            return Err(ApiError::not_found("firewall policy"));
        }
        audit(
            &mut tx,
            Some(principal),
            Some(&tenant_id),
            "firewall.policy.delete",
            ("firewall_policy", id),
            None,
        )
        .await?;
        tx.commit().await?;
        self.forget(&tenant_id);
        Ok(())
    }
}

fn applicable<'p>(
    policies: &'p [Policy],
    principal: &Principal,
    model: Option<&str>,
    stage: Stage,
) -> Vec<&'p Policy> {
    let key_id = match &principal.subject {
        Subject::ApiKey { id, .. } => Some(id.as_str()),
        Subject::User { .. } => None,
    };
    policies
        .iter()
        .filter(|p| p.applies(key_id, model, stage))
        .collect()
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Audit => "audit",
        Mode::Block => "block",
        Mode::Redact => "redact",
    }
}

/// Why a verdict stops the text: 403 `FIREWALL_BLOCKED`, or 503 `JUDGE_UNREACHABLE`
/// when a block policy's judge could not answer; `None` when it passes.
pub fn refusal(verdict: &Verdict) -> Option<ApiError> {
    if verdict.blocked {
        return Some(blocked(verdict));
    }
    if !verdict.judge_unreachable() {
        return None;
    }
    let rules = verdict.unreachable_judges();
    let reasons: Vec<&str> = (verdict.judge_failures.iter())
        .filter(|f| f.mode != Mode::Audit)
        .map(|f| f.reason.as_str())
        .collect();
    Some(
        ApiError::new(
            ErrorCode::JUDGE_UNREACHABLE,
            format!(
                "the firewall's judge could not answer ({}): {}",
                rules.join(", "),
                reasons.join("; ")
            ),
        )
        .with_field("judge_rules", rules),
    )
}

/// 403 `FIREWALL_BLOCKED` naming the rules that blocked.
pub fn blocked(verdict: &Verdict) -> ApiError {
    let rules = verdict.blocking_rules();
    ApiError::new(
        ErrorCode::FIREWALL_BLOCKED,
        format!("blocked by the firewall: {}", rules.join(", ")),
    )
    .with_field("matched_rules", rules)
}
