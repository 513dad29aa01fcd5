//! The firewall on a speech stream: each piece of text (a ScaiEcho delta, a sentence a
//! ScaiSpeak stream is about to speak) is checked as it comes, with the policies that
//! applied when the stream opened.
//!
//! - Local rules run on every piece (microseconds); judges only on pieces that are
//!   final (a transcript's final, a sentence to speak), never on a partial.
//! - Block: the piece is not sent or spoken; the stream ends with `FIREWALL_BLOCKED`
//!   (`matched_rules`, close 4403), or `JUDGE_UNREACHABLE` (close 4503).
//! - Redact: the piece goes on with `[REDACTED:<slug>]` in place of what matched.
//! - Matches of final pieces (and the block that ends a stream) are audited; partials
//!   that only audit or redact are not (they would repeat the final's rows).

use std::sync::Arc;

use super::{Firewall, Mode, Policy, Stage, Verdict, policy};
use crate::auth::Principal;
use crate::error::ApiResult;

pub struct StreamGuard {
    firewall: Arc<Firewall>,
    principal: Arc<Principal>,
    model: Option<String>,
    stage: Stage,
    policies: Vec<Policy>,
}

impl StreamGuard {
    /// The guard of a stream opened now, or `None` when no policy guards it.
    pub async fn open(
        firewall: &Arc<Firewall>,
        principal: &Arc<Principal>,
        model: Option<&str>,
        stage: Stage,
    ) -> ApiResult<Option<Arc<StreamGuard>>> {
        let policies = firewall.guarding(principal, model, stage).await?;
        Ok((!policies.is_empty()).then(|| {
            Arc::new(StreamGuard {
                firewall: firewall.clone(),
                principal: principal.clone(),
                model: model.map(str::to_owned),
                stage,
                policies,
            })
        }))
    }

    /// Whether partial pieces must be held back: a block (or redact) policy's judge
    /// decides on finals only, and a partial would show the text before it has.
    pub fn holds_partials(&self) -> bool {
        policy::judges(&self.policies)
            .iter()
            .any(|(policy, _, _)| policy.mode != Mode::Audit)
    }

    /// Checks one piece in place (redactions written into it). `Err`: the stream ends
    /// with that error; `Ok` with the verdict otherwise (`redacted` set when it was).
    pub async fn piece(&self, text: &mut String, is_final: bool) -> ApiResult<Verdict> {
        let mut verdict = policy::evaluate(&self.policies, text);
        if is_final && !verdict.blocked {
            let policies: Vec<&Policy> = self.policies.iter().collect();
            self.firewall
                .ask_judges(&self.principal, &policies, text, &mut verdict)
                .await;
        }
        let refusal = super::refusal(&verdict);
        let noted = !verdict.matches.is_empty() || !verdict.judge_failures.is_empty();
        if noted && (is_final || refusal.is_some()) {
            self.firewall
                .record(&self.principal, self.model.as_deref(), self.stage, &verdict)
                .await?;
        }
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        if let Some(redacted) = &verdict.redacted {
            text.clone_from(redacted);
        }
        Ok(verdict)
    }
}
