//! espeak-ng in its own process: a text that aborts the library fails that text alone;
//! the next text gets a new child; the process that asked goes on.
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

mod common;

use engines::EngineError;
use engines::phonemizer::{Phonemizer, PhonemizerCommand};

fn unbounded() -> PhonemizerCommand {
    PhonemizerCommand {
        args: vec!["--unbounded".into()],
        ..common::phonemizer()
    }
}

#[test]
fn an_abort_inside_espeak_fails_one_text_and_the_next_child_answers() {
    let phonemizer = Phonemizer::start(unbounded()).unwrap();
    assert_eq!(phonemizer.starts(), 1);
    // `s'` × 220 aborts libespeak-ng (glibc: buffer overflow detected) when handed whole.
    let bomb = "s'".repeat(220);
    match phonemizer.phonemize(&bomb, "en-us") {
        Err(EngineError::TextRejected(reason)) => assert!(reason.contains("ended"), "{reason}"),
        other => panic!("expected the text to be rejected, got {other:?}"),
    }
    let ipa = phonemizer.phonemize("Hello world.", "en-us").unwrap();
    assert!(ipa.ends_with('.'), "{ipa}");
    assert_eq!(phonemizer.starts(), 2, "a new child after the abort");
}

#[test]
fn the_bounded_child_phonemizes_the_known_aborting_inputs() {
    let phonemizer = Phonemizer::start(common::phonemizer()).unwrap();
    for text in ["s'".repeat(220), "s.".repeat(220), "x".repeat(10_000)] {
        let ipa = phonemizer.phonemize(&text, "en-us").unwrap();
        assert!(!ipa.is_empty());
    }
    assert_eq!(phonemizer.starts(), 1, "no child died");
}

#[test]
fn a_child_that_dies_at_once_is_an_error_not_a_hang() {
    let dying = PhonemizerCommand {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), "head -c 1 >/dev/null; kill -ABRT $$".into()],
    };
    let phonemizer = Phonemizer::new(dying);
    for _ in 0..3 {
        assert!(matches!(
            phonemizer.phonemize("hello", "en-us"),
            Err(EngineError::TextRejected(_))
        ));
    }
    assert_eq!(phonemizer.starts(), 3);
    let oversized = "a".repeat(engines::phonemizer::MAX_TEXT_BYTES + 1);
    assert!(matches!(
        phonemizer.phonemize(&oversized, "en-us"),
        Err(EngineError::InvalidInput(_))
    ));
}
