//! What the firewall costs a chat request: ten rules (keywords, regular expressions and
//! every PII detector) over a prompt of about 1 KiB and of about 16 KiB, clean and with
//! matches.
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

use criterion::{Criterion, criterion_group, criterion_main};
use scaigrid::firewall::policy::{Attachment, Mode, Policy, Stage, evaluate};
use scaigrid::firewall::rules::Rule;

fn policy() -> Policy {
    let rules: Vec<Rule> = serde_json::from_value(serde_json::json!([
        {"slug": "secrets", "kind": "regex", "patterns": ["sk-[A-Za-z0-9]{20,}", "AKIA[0-9A-Z]{16}"]},
        {"slug": "jwt", "kind": "regex", "patterns": ["eyJ[A-Za-z0-9_-]{10,}\\.[A-Za-z0-9_-]{10,}"]},
        {"slug": "private-key", "kind": "regex", "patterns": ["-----BEGIN [A-Z ]*PRIVATE KEY-----"]},
        {"slug": "competitors", "kind": "keyword", "keywords": ["Globex", "Initech", "Umbrella"]},
        {"slug": "email", "kind": "pii", "detectors": ["email"]},
        {"slug": "phone", "kind": "pii", "detectors": ["phone"]},
        {"slug": "card", "kind": "pii", "detectors": ["payment_card"]},
        {"slug": "iban", "kind": "pii", "detectors": ["iban"]},
        {"slug": "ip", "kind": "pii", "detectors": ["ip_address"]},
        {"slug": "size", "kind": "max_size", "max_chars": 100000}
    ]))
    .unwrap();
    Policy {
        id: "fwp_bench".into(),
        name: "bench".into(),
        mode: Mode::Block,
        attachment: Attachment::Tenant,
        stages: Stage::ALL.to_vec(),
        rules: Policy::compile(&rules).unwrap(),
    }
}

fn prompt(bytes: usize, dirty: bool) -> String {
    let sentence = "Please summarise the quarterly report for the board, with the revenue \
                    by region and the three largest risks, in plain language. ";
    let mut text = String::new();
    while text.len() < bytes {
        text.push_str(sentence);
    }
    if dirty {
        text.push_str("Mail ada@example.com or call +31 6 1234 5678 about 4111 1111 1111 1111.");
    }
    text
}

fn bench(c: &mut Criterion) {
    let policies = [policy()];
    let mut group = c.benchmark_group("firewall");
    for (name, bytes, dirty) in [
        ("10_rules_1k_clean", 1 << 10, false),
        ("10_rules_1k_matching", 1 << 10, true),
        ("10_rules_16k_clean", 16 << 10, false),
    ] {
        let text = prompt(bytes, dirty);
        group.bench_function(name, |b| {
            b.iter(|| evaluate(std::hint::black_box(&policies), &text))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
