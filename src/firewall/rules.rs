//! Firewall rules: what a policy looks for in a text. Pure: a rule is compiled once
//! (its regular expressions bounded in size) and checked against text with no I/O.
//!
//! Kinds: `keyword` (any of a list, case-insensitive by default), `regex` (any of a
//! list), `pii` (e-mail, phone, payment card with the Luhn check, IBAN with its mod-97
//! check, IP address), `max_size` (more characters than allowed), `judge` (an
//! evaluator model's score: see [`super::judge`]; it finds nothing here, the firewall
//! asks the judge).

use std::net::IpAddr;
use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::judge::{self, JudgeSpec};

/// The largest compiled program a rule's regular expression may become (bytes): a
/// pattern cannot take the server's memory or time, whatever a tenant sends.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Patterns or keywords one rule may hold.
pub const MAX_PATTERNS: usize = 100;
/// Bytes one pattern or keyword may have.
pub const MAX_PATTERN_BYTES: usize = 1000;

/// A rule as written in a policy: `slug`, `kind` and the kind's fields (any other
/// field is refused, so a misspelt option is an error, not a rule that never matches).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "RawRule")]
pub struct Rule {
    /// Names the rule in `matched_rules` (lowercase letters, digits, `-`, `_`).
    pub slug: String,
    #[serde(flatten)]
    pub check: Check,
}

/// Every field any kind of rule has, for [`Rule`]'s strict reading.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    slug: String,
    kind: String,
    keywords: Option<Vec<String>>,
    case_sensitive: Option<bool>,
    patterns: Option<Vec<String>>,
    detectors: Option<Vec<Pii>>,
    max_chars: Option<usize>,
    model: Option<String>,
    criteria: Option<String>,
    prompt: Option<String>,
    threshold: Option<f64>,
    timeout_ms: Option<u64>,
}

impl TryFrom<RawRule> for Rule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Rule, String> {
        let extra = |allowed: &[&str]| -> Result<(), String> {
            let given = [
                ("keywords", raw.keywords.is_some()),
                ("case_sensitive", raw.case_sensitive.is_some()),
                ("patterns", raw.patterns.is_some()),
                ("detectors", raw.detectors.is_some()),
                ("max_chars", raw.max_chars.is_some()),
                ("model", raw.model.is_some()),
                ("criteria", raw.criteria.is_some()),
                ("prompt", raw.prompt.is_some()),
                ("threshold", raw.threshold.is_some()),
                ("timeout_ms", raw.timeout_ms.is_some()),
            ];
            match given
                .iter()
                .find(|(name, present)| *present && !allowed.contains(name))
            {
                Some((name, _)) => Err(format!("a `{}` rule has no `{name}`", raw.kind)),
                None => Ok(()),
            }
        };
        let missing = |name: &str| format!("a `{}` rule needs `{name}`", raw.kind);
        let check = match raw.kind.as_str() {
            "keyword" => {
                extra(&["keywords", "case_sensitive"])?;
                Check::Keyword {
                    keywords: raw.keywords.clone().ok_or_else(|| missing("keywords"))?,
                    case_sensitive: raw.case_sensitive.unwrap_or(false),
                }
            }
            "regex" => {
                extra(&["patterns"])?;
                Check::Regex {
                    patterns: raw.patterns.clone().ok_or_else(|| missing("patterns"))?,
                }
            }
            "pii" => {
                extra(&["detectors"])?;
                Check::Pii {
                    detectors: raw.detectors.clone().unwrap_or_default(),
                }
            }
            "max_size" => {
                extra(&["max_chars"])?;
                Check::MaxSize {
                    max_chars: raw.max_chars.ok_or_else(|| missing("max_chars"))?,
                }
            }
            "judge" => {
                extra(&["model", "criteria", "prompt", "threshold", "timeout_ms"])?;
                Check::Judge(JudgeSpec {
                    model: raw.model.clone().ok_or_else(|| missing("model"))?,
                    criteria: raw.criteria.clone().ok_or_else(|| missing("criteria"))?,
                    prompt: raw.prompt.clone(),
                    threshold: raw.threshold.unwrap_or(0.5),
                    timeout_ms: raw.timeout_ms.unwrap_or(judge::DEFAULT_TIMEOUT_MS),
                })
            }
            other => {
                return Err(format!(
                    "unknown variant `{other}`: a rule's `kind` is keyword, regex, pii, \
                     max_size or judge"
                ));
            }
        };
        Ok(Rule {
            slug: raw.slug,
            check,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Check {
    Keyword {
        keywords: Vec<String>,
        #[serde(default)]
        case_sensitive: bool,
    },
    Regex {
        patterns: Vec<String>,
    },
    Pii {
        /// `email`, `phone`, `payment_card`, `iban`, `ip_address`; empty: all of them.
        #[serde(default)]
        detectors: Vec<Pii>,
    },
    MaxSize {
        max_chars: usize,
    },
    Judge(JudgeSpec),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pii {
    Email,
    Phone,
    PaymentCard,
    Iban,
    IpAddress,
}

impl Pii {
    pub const ALL: [Pii; 5] = [
        Pii::Email,
        Pii::Phone,
        Pii::PaymentCard,
        Pii::Iban,
        Pii::IpAddress,
    ];
}

/// A rule ready to check text.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub slug: String,
    matcher: Matcher,
}

#[derive(Debug, Clone)]
enum Matcher {
    /// Keywords and patterns alike become one alternation.
    Pattern(Regex),
    Pii(Vec<Pii>),
    MaxSize(usize),
    /// Asked by the firewall, not found in the text here.
    Judge(JudgeSpec),
}

/// Where in the text a rule matched (byte offsets), for redaction.
pub type Span = (usize, usize);

fn valid_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug.len() <= 64
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn bounded(list: &[String], what: &str) -> Result<(), String> {
    if list.is_empty() || list.len() > MAX_PATTERNS {
        return Err(format!("a rule holds 1 to {MAX_PATTERNS} {what}"));
    }
    if list
        .iter()
        .any(|p| p.is_empty() || p.len() > MAX_PATTERN_BYTES)
    {
        return Err(format!(
            "each of the {what} is 1 to {MAX_PATTERN_BYTES} bytes"
        ));
    }
    Ok(())
}

fn build(pattern: &str, case_insensitive: bool) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("invalid regular expression: {e}"))
}

impl Rule {
    /// Checks and compiles the rule; the message says what is wrong with it.
    pub fn compile(&self) -> Result<Compiled, String> {
        if !valid_slug(&self.slug) {
            return Err(format!(
                "rule slug `{}` must be 1 to 64 of a-z, 0-9, - and _",
                self.slug
            ));
        }
        let matcher = match &self.check {
            Check::Keyword {
                keywords,
                case_sensitive,
            } => {
                bounded(keywords, "keywords")?;
                let alternation = keywords
                    .iter()
                    .map(|k| regex::escape(k))
                    .collect::<Vec<_>>()
                    .join("|");
                Matcher::Pattern(build(&alternation, !case_sensitive)?)
            }
            Check::Regex { patterns } => {
                bounded(patterns, "patterns")?;
                // Each on its own first, so the error names the broken one.
                for pattern in patterns {
                    build(pattern, false).map_err(|e| format!("pattern `{pattern}`: {e}"))?;
                }
                let alternation = patterns
                    .iter()
                    .map(|p| format!("(?:{p})"))
                    .collect::<Vec<_>>()
                    .join("|");
                Matcher::Pattern(build(&alternation, false)?)
            }
            Check::Pii { detectors } => Matcher::Pii(match detectors.is_empty() {
                true => Pii::ALL.to_vec(),
                false => detectors.clone(),
            }),
            Check::MaxSize { max_chars } => {
                if *max_chars == 0 {
                    return Err("`max_chars` must be at least 1".into());
                }
                Matcher::MaxSize(*max_chars)
            }
            Check::Judge(spec) => {
                spec.check()?;
                Matcher::Judge(spec.clone())
            }
        };
        Ok(Compiled {
            slug: self.slug.clone(),
            matcher,
        })
    }
}

impl Compiled {
    /// Where the rule matches `text` (empty: it does not). `max_size` matches as a whole.
    pub fn find(&self, text: &str) -> Vec<Span> {
        match &self.matcher {
            Matcher::Pattern(regex) => regex
                .find_iter(text)
                .map(|m| (m.start(), m.end()))
                .collect(),
            Matcher::Pii(detectors) => detectors.iter().flat_map(|d| pii(*d, text)).collect(),
            Matcher::MaxSize(max) => match text.chars().count() > *max {
                true => vec![(0, text.len())],
                false => Vec::new(),
            },
            Matcher::Judge(_) => Vec::new(),
        }
    }

    /// Whether the rule can redact what it found (PII, keywords and patterns can; a size
    /// limit or a judge's score cannot).
    pub fn redactable(&self) -> bool {
        !matches!(self.matcher, Matcher::MaxSize(_) | Matcher::Judge(_))
    }

    /// The judge's settings when the rule is a judge (its verdict comes from a model).
    pub fn judge(&self) -> Option<&JudgeSpec> {
        match &self.matcher {
            Matcher::Judge(spec) => Some(spec),
            _ => None,
        }
    }
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}\b")
        .expect("a fixed pattern compiles")
});
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\+|\b)\d(?:[\s\-.()]{0,2}\d){8,14}\b").expect("a fixed pattern compiles")
});
static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d(?:[ \-]?\d){12,18}\b").expect("a fixed pattern compiles"));
static IBAN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b").expect("a fixed pattern compiles")
});
static IP_CANDIDATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})\b")
        .expect("a fixed pattern compiles")
});

fn digits(text: &str) -> Vec<u32> {
    text.chars().filter_map(|c| c.to_digit(10)).collect()
}

/// The Luhn check of a card number's digits.
pub fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match i % 2 {
            1 => {
                let twice = d * 2;
                if twice > 9 { twice - 9 } else { twice }
            }
            _ => d,
        })
        .sum();
    digits.len() >= 13 && sum.is_multiple_of(10)
}

/// The ISO 13616 mod-97 check of an IBAN (spaces ignored).
pub fn iban_valid(text: &str) -> bool {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u64 = 0;
    for c in tail.chars().chain(head.chars()) {
        let value = match c.to_digit(36) {
            Some(value) => value as u64,
            None => return false,
        };
        remainder = match value {
            0..=9 => (remainder * 10 + value) % 97,
            _ => (remainder * 100 + value) % 97,
        };
    }
    remainder == 1
}

fn pii(detector: Pii, text: &str) -> Vec<Span> {
    let spans = |regex: &Regex, keep: &dyn Fn(&str) -> bool| -> Vec<Span> {
        regex
            .find_iter(text)
            .filter(|m| keep(m.as_str()))
            .map(|m| (m.start(), m.end()))
            .collect()
    };
    match detector {
        Pii::Email => spans(&EMAIL, &|_| true),
        // A card number is not a phone number.
        Pii::Phone => spans(&PHONE, &|m| !luhn(&digits(m)) || digits(m).len() < 13),
        Pii::PaymentCard => spans(&CARD, &|m| luhn(&digits(m))),
        Pii::Iban => spans(&IBAN, &iban_valid),
        Pii::IpAddress => spans(&IP_CANDIDATE, &|m| m.parse::<IpAddr>().is_ok()),
    }
}

/// `text` with every span replaced by `[REDACTED:<slug>]` (overlaps merged).
pub fn redact(text: &str, spans: &[(Span, &str)]) -> String {
    let mut spans: Vec<(Span, &str)> = spans.to_vec();
    spans.sort_by_key(|((start, end), _)| (*start, std::cmp::Reverse(*end)));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for ((start, end), slug) in spans {
        if start < at {
            at = at.max(end);
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(&format!("[REDACTED:{slug}]"));
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: serde_json::Value) -> Compiled {
        serde_json::from_value::<Rule>(json)
            .unwrap()
            .compile()
            .unwrap()
    }

    #[test]
    fn keywords_and_patterns_match_where_they_are() {
        let keywords = rule(
            serde_json::json!({"slug": "kw", "kind": "keyword", "keywords": ["Secret", "a.b"]}),
        );
        assert_eq!(keywords.find("my SECRET is"), vec![(3, 9)]);
        // Keywords are literal: `.` is a dot.
        assert!(keywords.find("axb").is_empty());
        assert_eq!(keywords.find("a.b").len(), 1);
        let patterns = rule(
            serde_json::json!({"slug": "re", "kind": "regex", "patterns": ["sk-[a-z0-9]{8}"]}),
        );
        assert_eq!(patterns.find("key sk-abcd1234!"), vec![(4, 15)]);
        let size = rule(serde_json::json!({"slug": "big", "kind": "max_size", "max_chars": 5}));
        assert!(size.find("héllo").is_empty());
        assert_eq!(size.find("héllo!").len(), 1);
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        let bad = |json: serde_json::Value| {
            serde_json::from_value::<Rule>(json)
                .map_err(|e| e.to_string())
                .and_then(|r| r.compile().map(|_| ()))
                .unwrap_err()
        };
        assert!(
            bad(serde_json::json!({"slug": "x", "kind": "regex", "patterns": ["("]}))
                .contains("pattern `(`")
        );
        assert!(
            bad(serde_json::json!({"slug": "Bad Slug", "kind": "max_size", "max_chars": 1}))
                .contains("slug")
        );
        assert!(
            bad(serde_json::json!({"slug": "x", "kind": "keyword", "keywords": []}))
                .contains("1 to")
        );
        assert!(
            bad(serde_json::json!({"slug": "x", "kind": "max_size", "max_chars": 0}))
                .contains("at least")
        );
        assert!(
            bad(serde_json::json!({"slug": "x", "kind": "telepathy"})).contains("unknown variant")
        );
        assert!(
            bad(serde_json::json!({"slug": "x", "kind": "regex", "keywords": ["a"]}))
                .contains("has no `keywords`")
        );
        assert!(
            bad(serde_json::json!({"slug": "x", "kind": "regex"})).contains("needs `patterns`")
        );
        assert!(
            bad(serde_json::json!({"slug": "x", "kind": "pii", "colour": 1}))
                .contains("unknown field")
        );
        // A pattern whose program would be huge is refused, not built.
        let huge =
            serde_json::json!({"slug": "x", "kind": "regex", "patterns": ["(\\w{100}){100}"]});
        assert!(bad(huge).contains("invalid regular expression"));
    }

    #[test]
    fn pii_detectors_check_what_they_find() {
        let pii = rule(serde_json::json!({"slug": "pii", "kind": "pii"}));
        let found = |text: &str| !pii.find(text).is_empty();
        assert!(found("write to ada.lovelace@example.co.uk today"));
        assert!(found("call +31 6 1234 5678"));
        assert!(found("card 4111 1111 1111 1111 exp 12/29"));
        assert!(found("IBAN NL91 ABNA 0417 1643 00 please"));
        assert!(found("from 192.168.10.4 and 2001:db8::1"));
        assert!(!found("the meeting is at 10:30 on 3 March, room 12"));
        let cards =
            rule(serde_json::json!({"slug": "c", "kind": "pii", "detectors": ["payment_card"]}));
        assert!(cards.find("4111 1111 1111 1112").is_empty(), "fails Luhn");
        let ibans = rule(serde_json::json!({"slug": "i", "kind": "pii", "detectors": ["iban"]}));
        assert!(
            ibans.find("NL92 ABNA 0417 1643 00").is_empty(),
            "fails mod-97"
        );
        let ips =
            rule(serde_json::json!({"slug": "ip", "kind": "pii", "detectors": ["ip_address"]}));
        assert!(ips.find("version 999.1.2.3").is_empty());
    }

    #[test]
    fn redaction_replaces_each_span_once() {
        let text = "mail ada@example.com or 4111111111111111";
        let pii = rule(serde_json::json!({"slug": "pii", "kind": "pii"}));
        let spans: Vec<(Span, &str)> = pii.find(text).into_iter().map(|s| (s, "pii")).collect();
        let out = redact(text, &spans);
        assert_eq!(out, "mail [REDACTED:pii] or [REDACTED:pii]");
        assert_eq!(
            redact("abc", &[((0, 3), "a"), ((1, 2), "b")]),
            "[REDACTED:a]"
        );
    }
}
