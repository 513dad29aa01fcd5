//! `semantic_vad`: when a user's turn is over, from what they said. Pure.
//!
//! A pause after a finished sentence ends the turn soon; a pause after words that leave
//! the sentence open ("I'd like to book a table for", "and then,") waits longer for the
//! rest. Eagerness sets both waits. The stream ends an utterance at the short pause;
//! when its transcript is open, the session holds the turn until the long pause has
//! passed without new speech (`benches/turn_taking.sh` measures the false cut-ins per
//! minute this saves on real speech, against fixed pauses).

use std::time::Duration;

use super::config::Eagerness;

/// Words after which a sentence is not over, whatever the punctuation says (a
/// recognizer that hears an utterance alone often ends it with a period).
const OPEN_ENDINGS: &[&str] = &[
    "a", "an", "and", "as", "at", "because", "but", "by", "for", "from", "if", "in", "into", "is",
    "like", "my", "nor", "of", "on", "or", "our", "so", "than", "that", "the", "their", "then",
    "to", "uh", "um", "was", "were", "when", "which", "while", "who", "with", "your",
];

/// Whether `transcript` ends a sentence: a final `.`, `?` or `!` (not a trailing
/// `...`) after a word that can end one.
pub fn sentence_complete(transcript: &str) -> bool {
    let text = transcript.trim();
    if text.ends_with("...") || text.ends_with('…') {
        return false;
    }
    if !text.ends_with(['.', '?', '!']) {
        return false;
    }
    let last = text
        .split_whitespace()
        .next_back()
        .unwrap_or_default()
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase();
    !OPEN_ENDINGS.contains(&last.as_str())
}

/// The pause that ends an utterance (the stream's silence): the wait after a complete
/// sentence.
pub fn short_pause(eagerness: Eagerness) -> Duration {
    Duration::from_millis(match eagerness {
        Eagerness::High => 250,
        Eagerness::Medium => 500,
        Eagerness::Low => 800,
    })
}

/// The pause after the end of speech that ends the turn, given what was said.
pub fn turn_pause(eagerness: Eagerness, transcript: &str) -> Duration {
    if sentence_complete(transcript) {
        return short_pause(eagerness);
    }
    Duration::from_millis(match eagerness {
        Eagerness::High => 1_000,
        Eagerness::Medium => 2_000,
        Eagerness::Low => 4_000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_sentences_end_the_turn_sooner_than_open_ones() {
        for done in [
            "I'd like a table for two.",
            "Is it open on Sunday?",
            "Thanks!",
            "It was the best of times.",
        ] {
            assert!(sentence_complete(done), "{done}");
        }
        for open in [
            "I'd like a table for",
            "I'd like a table for.",
            "and then,",
            "It was the best of times, it was",
            "Well...",
            "Let me think, um.",
            "",
        ] {
            assert!(!sentence_complete(open), "{open}");
        }
        for eagerness in [Eagerness::Low, Eagerness::Medium, Eagerness::High] {
            let done = turn_pause(eagerness, "Book it.");
            let open = turn_pause(eagerness, "Book it for");
            assert_eq!(done, short_pause(eagerness));
            assert!(open >= done * 3, "{eagerness:?}");
        }
        assert!(
            turn_pause(Eagerness::Low, "x") > turn_pause(Eagerness::High, "x"),
            "low waits longest"
        );
    }
}
