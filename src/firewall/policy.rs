//! Policies and their verdict on a text. Pure: the policies that apply to a call are
//! chosen and evaluated here; storing them, auditing matches and answering the caller
//! is the context's (`mod.rs`).

use std::time::Instant;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::judge::JudgeSpec;
use super::rules::{self, Compiled, Rule, Span};

/// What happens when a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Record the match and let the text pass.
    Audit,
    /// Refuse: 403 `FIREWALL_BLOCKED` with the matched slugs.
    Block,
    /// Replace what matched with `[REDACTED:<slug>]` and pass (a rule that cannot
    /// redact, such as `max_size`, blocks).
    Redact,
}

/// Where a text is on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// A chat request's messages.
    ChatInput,
    /// A chat answer (whole, or as it accumulates when streamed).
    ChatOutput,
    /// A text to be spoken.
    SpeechInput,
    /// A transcript about to be returned.
    Transcript,
}

impl Stage {
    pub const ALL: [Stage; 4] = [
        Stage::ChatInput,
        Stage::ChatOutput,
        Stage::SpeechInput,
        Stage::Transcript,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::ChatInput => "chat_input",
            Stage::ChatOutput => "chat_output",
            Stage::SpeechInput => "speech_input",
            Stage::Transcript => "transcript",
        }
    }
}

/// What a policy is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "scope", content = "scope_id", rename_all = "snake_case")]
pub enum Attachment {
    /// Every call of the tenant.
    Tenant,
    /// Calls made with this API key.
    ApiKey(String),
    /// Calls naming this model (a gateway slug, or a speech model or balancer).
    Model(String),
}

/// A stored policy, compiled.
#[derive(Debug, Clone)]
pub struct Policy {
    pub id: String,
    pub name: String,
    pub mode: Mode,
    pub attachment: Attachment,
    /// The stages it guards.
    pub stages: Vec<Stage>,
    pub rules: Vec<Compiled>,
}

impl Policy {
    /// Compiles stored rules; the message names the first broken one.
    pub fn compile(rules: &[Rule]) -> Result<Vec<Compiled>, String> {
        if rules.is_empty() || rules.len() > 50 {
            return Err("a policy holds 1 to 50 rules".into());
        }
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(rules.len());
        for rule in rules {
            if !seen.insert(rule.slug.as_str()) {
                return Err(format!("two rules are named `{}`", rule.slug));
            }
            out.push(rule.compile()?);
        }
        Ok(out)
    }

    /// Whether the policy guards a call with this key and model at this stage.
    pub fn applies(&self, key_id: Option<&str>, model: Option<&str>, stage: Stage) -> bool {
        self.stages.contains(&stage)
            && match &self.attachment {
                Attachment::Tenant => true,
                Attachment::ApiKey(id) => key_id == Some(id.as_str()),
                Attachment::Model(slug) => model == Some(slug.as_str()),
            }
    }
}

/// One rule that matched.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Match {
    pub policy_id: String,
    pub policy: String,
    pub rule: String,
    pub mode: Mode,
    /// How many places matched.
    pub count: usize,
    /// The evaluator's score (judge rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// A judge rule whose evaluator gave no score (unreachable, refused, timed out, or an
/// answer with no number in it).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct JudgeFailure {
    pub policy_id: String,
    pub policy: String,
    pub rule: String,
    pub mode: Mode,
    pub reason: String,
}

/// Time one rule took.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Timing {
    pub policy: String,
    pub rule: String,
    pub micros: f64,
}

/// The firewall's answer on one text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Verdict {
    pub matches: Vec<Match>,
    /// A block rule matched (or a redact rule that cannot redact).
    pub blocked: bool,
    /// The text with redactions applied, when a redact rule matched and nothing blocked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redacted: Option<String>,
    pub timings: Vec<Timing>,
    /// Judges that gave no score.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub judge_failures: Vec<JudgeFailure>,
}

impl Verdict {
    /// The slugs of the rules that block (for `matched_rules`).
    pub fn blocking_rules(&self) -> Vec<String> {
        let mut slugs: Vec<String> = self
            .matches
            .iter()
            .filter(|m| m.mode != Mode::Audit)
            .map(|m| m.rule.clone())
            .collect();
        slugs.dedup();
        slugs
    }

    /// A judge of a block (or redact) policy gave no score: the text cannot pass
    /// unjudged (503 `JUDGE_UNREACHABLE`); an audit policy's judge only records it.
    pub fn judge_unreachable(&self) -> bool {
        self.judge_failures.iter().any(|f| f.mode != Mode::Audit)
    }

    /// The slugs of the judge rules that could not answer and hold the text back.
    pub fn unreachable_judges(&self) -> Vec<String> {
        self.judge_failures
            .iter()
            .filter(|f| f.mode != Mode::Audit)
            .map(|f| f.rule.clone())
            .collect()
    }

    pub fn decision(&self) -> &'static str {
        if !self.blocked && self.judge_unreachable() {
            return "judge_unreachable";
        }
        match (self.blocked, &self.redacted, self.matches.is_empty()) {
            (true, _, _) => "block",
            (false, Some(_), _) => "redact",
            (false, None, false) => "audit",
            (false, None, true) => "pass",
        }
    }
}

/// Runs every policy over `text`.
pub fn evaluate<'a>(policies: impl IntoIterator<Item = &'a Policy>, text: &str) -> Verdict {
    let mut verdict = Verdict::default();
    let mut redactions: Vec<(Span, String)> = Vec::new();
    for policy in policies {
        for rule in policy.rules.iter().filter(|rule| rule.judge().is_none()) {
            let started = Instant::now();
            let spans = rule.find(text);
            verdict.timings.push(Timing {
                policy: policy.name.clone(),
                rule: rule.slug.clone(),
                micros: started.elapsed().as_secs_f64() * 1e6,
            });
            if spans.is_empty() {
                continue;
            }
            match policy.mode {
                Mode::Block => verdict.blocked = true,
                Mode::Redact if !rule.redactable() => verdict.blocked = true,
                Mode::Redact => {
                    redactions.extend(spans.iter().map(|span| (*span, rule.slug.clone())));
                }
                Mode::Audit => {}
            }
            verdict.matches.push(Match {
                policy_id: policy.id.clone(),
                policy: policy.name.clone(),
                rule: rule.slug.clone(),
                mode: policy.mode,
                count: spans.len(),
                score: None,
            });
        }
    }
    if !verdict.blocked && !redactions.is_empty() {
        let spans: Vec<(Span, &str)> = redactions
            .iter()
            .map(|(span, slug)| (*span, slug.as_str()))
            .collect();
        verdict.redacted = Some(rules::redact(text, &spans));
    }
    verdict
}

/// The judge rules of `policies`, for the firewall to ask.
pub fn judges<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
) -> Vec<(&'a Policy, &'a Compiled, &'a JudgeSpec)> {
    policies
        .into_iter()
        .flat_map(|policy| {
            policy
                .rules
                .iter()
                .filter_map(move |rule| rule.judge().map(|spec| (policy, rule, spec)))
        })
        .collect()
}

/// Folds one judge's answer (its score, or why there is none) into `verdict`.
pub fn judged(
    verdict: &mut Verdict,
    (policy, rule, spec): (&Policy, &Compiled, &JudgeSpec),
    answer: Result<f64, String>,
    micros: f64,
) {
    verdict.timings.push(Timing {
        policy: policy.name.clone(),
        rule: rule.slug.clone(),
        micros,
    });
    match answer {
        Ok(score) if score >= spec.threshold => {
            if policy.mode != Mode::Audit {
                // A judge's verdict covers the whole text: nothing to redact, it blocks.
                verdict.blocked = true;
                verdict.redacted = None;
            }
            verdict.matches.push(Match {
                policy_id: policy.id.clone(),
                policy: policy.name.clone(),
                rule: rule.slug.clone(),
                mode: policy.mode,
                count: 1,
                score: Some(score),
            });
        }
        Ok(_) => {}
        Err(reason) => verdict.judge_failures.push(JudgeFailure {
            policy_id: policy.id.clone(),
            policy: policy.name.clone(),
            rule: rule.slug.clone(),
            mode: policy.mode,
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, mode: Mode, rules: serde_json::Value) -> Policy {
        let rules: Vec<Rule> = serde_json::from_value(rules).unwrap();
        Policy {
            id: format!("fwp_{name}"),
            name: name.into(),
            mode,
            attachment: Attachment::Tenant,
            stages: Stage::ALL.to_vec(),
            rules: Policy::compile(&rules).unwrap(),
        }
    }

    #[test]
    fn block_audit_and_redact_decide_together() {
        let secrets = policy(
            "secrets",
            Mode::Block,
            serde_json::json!([{"slug": "api-key", "kind": "regex", "patterns": ["sk-[a-z]{4}"]}]),
        );
        let pii = policy(
            "pii",
            Mode::Redact,
            serde_json::json!([{"slug": "email", "kind": "pii", "detectors": ["email"]}]),
        );
        let watch = policy(
            "watch",
            Mode::Audit,
            serde_json::json!([{"slug": "mention", "kind": "keyword", "keywords": ["acme"]}]),
        );
        let all = [secrets, pii, watch];
        let clean = evaluate(&all, "hello there");
        assert_eq!(clean.decision(), "pass");
        assert_eq!(clean.timings.len(), 3);
        let audited = evaluate(&all, "ACME rocks");
        assert_eq!(audited.decision(), "audit");
        assert!(audited.blocking_rules().is_empty());
        let redacted = evaluate(&all, "mail bob@example.com about acme");
        assert_eq!(redacted.decision(), "redact");
        assert_eq!(
            redacted.redacted.as_deref(),
            Some("mail [REDACTED:email] about acme")
        );
        let blocked = evaluate(&all, "my key sk-abcd, mail bob@example.com");
        assert_eq!(blocked.decision(), "block");
        assert_eq!(blocked.blocking_rules(), vec!["api-key", "email"]);
        assert!(blocked.redacted.is_none());
    }

    #[test]
    fn policies_apply_by_attachment_and_stage() {
        let mut p = policy(
            "p",
            Mode::Block,
            serde_json::json!([{"slug": "s", "kind": "max_size", "max_chars": 3}]),
        );
        p.attachment = Attachment::Model("acme/chat".into());
        p.stages = vec![Stage::ChatInput];
        assert!(p.applies(None, Some("acme/chat"), Stage::ChatInput));
        assert!(!p.applies(None, Some("other"), Stage::ChatInput));
        assert!(!p.applies(None, Some("acme/chat"), Stage::Transcript));
        p.attachment = Attachment::ApiKey("key_1".into());
        assert!(p.applies(Some("key_1"), None, Stage::ChatInput));
        assert!(!p.applies(Some("key_2"), None, Stage::ChatInput));
        // A size rule cannot redact: in redact mode it blocks.
        p.mode = Mode::Redact;
        assert!(evaluate([&p], "toolong").blocked);
    }

    #[test]
    fn a_judge_blocks_audits_or_holds_the_text_back_when_it_cannot_answer() {
        let rules = serde_json::json!([
            {"slug": "email", "kind": "pii", "detectors": ["email"]},
            {"slug": "tone", "kind": "judge", "model": "j/m", "criteria": "insults", "threshold": 0.8}
        ]);
        let mut p = policy("p", Mode::Redact, rules);
        // Local rules are evaluated without the judge (the firewall asks it).
        let mut verdict = evaluate([&p], "mail bob@example.com");
        assert_eq!(verdict.decision(), "redact");
        assert_eq!(verdict.timings.len(), 1);
        let judge = judges([&p]);
        assert_eq!(judge.len(), 1);
        judged(&mut verdict, judge[0], Ok(0.79), 5.0);
        assert_eq!(verdict.decision(), "redact");
        judged(&mut verdict, judge[0], Ok(0.8), 5.0);
        assert_eq!(verdict.decision(), "block");
        assert_eq!(verdict.redacted, None);
        assert_eq!(verdict.blocking_rules(), vec!["email", "tone"]);
        assert_eq!(verdict.matches[1].score, Some(0.8));

        let mut down = evaluate([&p], "hello");
        judged(
            &mut down,
            judges([&p])[0],
            Err("connection refused".into()),
            5.0,
        );
        assert_eq!(down.decision(), "judge_unreachable");
        assert_eq!(down.unreachable_judges(), vec!["tone"]);
        p.mode = Mode::Audit;
        let mut audited = evaluate([&p], "hello");
        judged(
            &mut audited,
            judges([&p])[0],
            Err("connection refused".into()),
            5.0,
        );
        assert_eq!(audited.decision(), "pass");
        assert!(!audited.judge_unreachable());
        assert_eq!(audited.judge_failures.len(), 1);
    }

    #[test]
    fn a_policy_needs_rules_with_distinct_names() {
        let rules: Vec<Rule> = serde_json::from_value(serde_json::json!([
            {"slug": "a", "kind": "max_size", "max_chars": 3},
            {"slug": "a", "kind": "max_size", "max_chars": 4}
        ]))
        .unwrap();
        assert!(Policy::compile(&rules).unwrap_err().contains("two rules"));
        assert!(Policy::compile(&[]).is_err());
    }
}
