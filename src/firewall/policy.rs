//! Policies and their verdict on a text. Pure: the policies that apply to a call are
//! chosen and evaluated here; storing them, auditing matches and answering the caller
//! is the context's (`mod.rs`).

use std::time::Instant;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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

    pub fn decision(&self) -> &'static str {
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
        for rule in &policy.rules {
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
