//! Firewall policies as tenants write them (rules JSON, regular expressions included),
//! the texts they check, and judge answers as evaluator models give them. Never panics;
//! a compiled policy's redaction leaves no matched span behind, and a judge's score is
//! always within 0 to 1.

#![no_main]

use libfuzzer_sys::fuzz_target;
use scaigrid::firewall::judge::{JudgeSpec, parse_score};
use scaigrid::firewall::policy::{self, Attachment, Mode, Policy, Stage};
use scaigrid::firewall::rules::Rule;

fuzz_target!(|data: &[u8]| {
    // The first line is a rules array; the rest is the text they check (and, read as
    // an evaluator's answer, a judge's score).
    let text = String::from_utf8_lossy(data);
    let (rules, body) = text.split_once('\n').unwrap_or((&text, ""));
    if let Some(score) = parse_score(body) {
        assert!((0.0..=1.0).contains(&score), "{score}");
    }
    let spec = JudgeSpec {
        model: "m".into(),
        criteria: "c".into(),
        prompt: None,
        threshold: 0.5,
        timeout_ms: 1,
    };
    assert!(spec.render(body).contains("TEXT>>>"));
    let Ok(rules) = serde_json::from_str::<Vec<Rule>>(rules) else {
        return;
    };
    let Ok(compiled) = Policy::compile(&rules) else {
        return;
    };
    for mode in [Mode::Audit, Mode::Block, Mode::Redact] {
        let policy = Policy {
            id: "fwp".into(),
            name: "p".into(),
            mode,
            attachment: Attachment::Tenant,
            stages: Stage::ALL.to_vec(),
            rules: compiled.clone(),
        };
        let verdict = policy::evaluate([&policy], body);
        if let Some(redacted) = &verdict.redacted {
            assert_eq!(mode, Mode::Redact);
            assert!(!verdict.blocked);
            assert!(redacted.contains("[REDACTED:"));
        }
        if mode == Mode::Audit {
            assert!(!verdict.blocked && verdict.redacted.is_none());
        }
    }
});
