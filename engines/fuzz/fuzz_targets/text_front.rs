//! Everything text goes through before the phonemizer: normalisation (numbers, years,
//! currencies), clause splitting, long-token bounding and sentence pieces. None may
//! panic, and the bounds that keep espeak-ng's buffers safe must hold on any input.
#![no_main]

use engines::phonemize::{MAX_WORD_CHARS, bound_words, clauses};
use engines::piper::{MAX_SENTENCE_CHARS, bounded_pieces};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let normalized = engines::normalize::normalize(&text);
    let _ = clauses(&normalized);
    let bounded = bound_words(&normalized);
    for word in bounded.split_whitespace() {
        assert!(
            word.chars().count() <= MAX_WORD_CHARS,
            "a {}-character word reached the phonemizer",
            word.chars().count()
        );
    }
    for piece in bounded_pieces(&normalized) {
        assert!(piece.chars().count() <= MAX_SENTENCE_CHARS);
    }
});
