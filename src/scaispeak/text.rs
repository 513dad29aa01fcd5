//! Text before synthesis: cleaning what should never be spoken (control characters,
//! SSML-looking tags), the length limit, and cutting text that arrives in pieces (word
//! by word on `/stream/speak`) into complete sentences as soon as each one ends. Pure.

use crate::error::{ApiError, ApiResult, ErrorCode};

/// Words whose trailing period does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "no", "fig",
    "approx", "dept", "est", "inc", "ltd", "co", "mt",
];

/// Drops control characters (newlines and tabs become spaces) and anything between
/// `<` and `>` (SSML-looking markup is not read out), collapsing whitespace.
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if in_tag => {}
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Cleans a request's text and checks it is neither empty nor over `max_chars`.
pub fn validate(text: &str, max_chars: usize) -> ApiResult<String> {
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(ApiError::new(
            ErrorCode::CTX_TOO_LARGE,
            format!("the text has {chars} characters; the limit is {max_chars}"),
        )
        .with_field("limit", max_chars)
        .with_field("limit_unit", "characters"));
    }
    let clean = sanitize(text);
    if clean.is_empty() {
        return Err(ApiError::invalid("`text` has nothing to speak").with_field("field", "text"));
    }
    Ok(clean)
}

/// Whether the text up to and including the terminator at byte `end` ends a sentence.
fn ends_sentence(text: &str, end: usize) -> bool {
    let mark = text[..=end].chars().last().unwrap_or(' ');
    if mark != '.' {
        return matches!(mark, '!' | '?' | ';');
    }
    let word = text[..end]
        .rsplit(|c: char| c.is_whitespace())
        .next()
        .unwrap_or("")
        .trim_start_matches(['(', '"', '\'']);
    let lower = word.to_lowercase();
    // "J. Smith": a single capital is an initial.
    let initial = word.chars().count() == 1 && word.chars().all(char::is_uppercase);
    !(ABBREVIATIONS.contains(&lower.as_str()) || initial)
}

/// Text arriving in pieces, cut into sentences.
#[derive(Debug, Default)]
pub struct Sentences {
    pending: String,
}

impl Sentences {
    /// Adds a piece; returns every sentence it completed. A sentence is complete once
    /// its terminator is followed by whitespace (the next piece may continue "3." into
    /// "3.5"), or at a line break.
    pub fn push(&mut self, piece: &str) -> Vec<String> {
        self.pending.push_str(piece);
        let mut sentences = Vec::new();
        loop {
            let text = &self.pending;
            let cut = text.char_indices().find_map(|(at, c)| {
                let next = text[at + c.len_utf8()..].chars().next();
                match (c, next) {
                    ('\n', _) => Some(at + 1),
                    ('.' | '!' | '?' | ';', Some(n))
                        if n.is_whitespace() && ends_sentence(text, at) =>
                    {
                        Some(at + 1)
                    }
                    _ => None,
                }
            });
            let Some(cut) = cut else { break };
            let sentence = sanitize(&self.pending[..cut]);
            self.pending.drain(..cut);
            let spaces = self.pending.len() - self.pending.trim_start().len();
            self.pending.drain(..spaces);
            if !sentence.is_empty() {
                sentences.push(sentence);
            }
        }
        sentences
    }

    /// Whatever is pending, as a last sentence (`flush`, `close`).
    pub fn flush(&mut self) -> Option<String> {
        let rest = sanitize(&std::mem::take(&mut self.pending));
        (!rest.is_empty()).then_some(rest)
    }

    /// Characters waiting for their sentence to end.
    pub fn pending_chars(&self) -> usize {
        self.pending.chars().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_is_not_spoken() {
        assert_eq!(
            sanitize("<speak>Hello\u{0}\tthere <break time=\"1s\"/> friend.</speak>"),
            "Hello there friend."
        );
        assert_eq!(sanitize("a < b"), "a");
        assert_eq!(
            validate("  \n ", 10).unwrap_err().code,
            ErrorCode::INVALID_REQUEST
        );
        assert_eq!(
            validate("<p></p>", 10).unwrap_err().code,
            ErrorCode::INVALID_REQUEST
        );
        let long = validate(&"x".repeat(11), 10).unwrap_err();
        assert_eq!(long.code, ErrorCode::CTX_TOO_LARGE);
        assert_eq!(long.fields["limit"], 10);
    }

    #[test]
    fn word_by_word_text_comes_out_sentence_by_sentence() {
        let mut s = Sentences::default();
        let mut out = Vec::new();
        for word in "Dr. Smith paid 3.50 today. Did J. Doe come? Yes".split_inclusive(' ') {
            out.extend(s.push(word));
        }
        assert_eq!(out, ["Dr. Smith paid 3.50 today.", "Did J. Doe come?"]);
        assert_eq!(s.pending_chars(), 3);
        assert_eq!(s.flush().as_deref(), Some("Yes"));
        assert!(s.flush().is_none());
        // A terminator at the very end waits: the next piece might continue it.
        assert!(s.push("It costs 3.").is_empty());
        assert_eq!(s.push("5 euros.\n"), ["It costs 3.5 euros."]);
    }
}
