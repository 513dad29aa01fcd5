//! Text to IPA phonemes through the espeak-ng library, in a child process.
//!
//! espeak-ng aborts its process on some inputs: `s'` repeated 80 times or `s.` 220 times
//! ends in glibc's `*** buffer overflow detected ***` (or `stack smashing detected`) in
//! Debian's 1.51 (which carries the CVE-2023-4999x fixes) and in 1.52.0 alike. So the
//! library runs in a process of its own ([`serve_stdio`], started by [`Phonemizer`])
//! that answers one request at a time over pipes: a crash or a hang there fails that one
//! text, the next call starts a new child, and the server and its other streams go on.
//! Input shapes known to overflow are bounded before the call as well
//! ([`bound_words`]: no token longer than [`MAX_WORD_CHARS`] reaches the library).
//!
//! espeak-ng keeps global state and is not thread-safe: inside the child every call goes
//! through one lock.
//!
//! `espeak_TextToPhonemes` drops punctuation, which Piper's voices were trained with as
//! phonemes: the text is split into clauses here, each clause is phonemised on its own,
//! and the punctuation that ended it is appended.

#![expect(
    unsafe_code,
    reason = "FFI to libespeak-ng; every call is in `phonemize` below"
)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::Mutex;

pub use crate::phonemizer::{Phonemizer, PhonemizerCommand};

use crate::error::{EngineError, EngineResult};

const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
const ESPEAK_INITIALIZE_DONT_EXIT: c_int = 0x8000;
const ESPEAK_CHARS_UTF8: c_int = 1;
const ESPEAK_PHONEMES_IPA: c_int = 0x02;

unsafe extern "C" {
    fn espeak_Initialize(
        output: c_int,
        buflength: c_int,
        path: *const c_char,
        options: c_int,
    ) -> c_int;
    fn espeak_SetVoiceByName(name: *const c_char) -> c_int;
    fn espeak_TextToPhonemes(
        textptr: *mut *const c_void,
        textmode: c_int,
        phonememode: c_int,
    ) -> *const c_char;
}

/// Splits text into clauses at `.,;:!?` followed by whitespace or the end, keeping the
/// mark. Empty clauses are dropped.
pub fn clauses(text: &str) -> Vec<(&str, Option<char>)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((index, c)) = chars.next() {
        let at_break =
            ".,;:!?".contains(c) && chars.peek().is_none_or(|(_, next)| next.is_whitespace());
        if at_break {
            let clause = text[start..index].trim();
            if !clause.is_empty() {
                out.push((clause, Some(c)));
            }
            start = index + c.len_utf8();
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push((rest, None));
    }
    out
}

/// Longest token (run of non-whitespace) handed to espeak-ng. Its word buffers overflow
/// on long tokens made of short pieces joined by `'` or `.` (measured: `s'` × 80 aborts,
/// × 60 does not); real words are far shorter.
pub const MAX_WORD_CHARS: usize = 32;

/// Text with every token of more than [`MAX_WORD_CHARS`] characters broken up: first at
/// its inner punctuation, then into pieces of at most that length. Shorter tokens, and
/// so ordinary text, pass unchanged.
pub fn bound_words(text: &str) -> std::borrow::Cow<'_, str> {
    let too_long = |token: &str| token.chars().count() > MAX_WORD_CHARS;
    if !text.split_whitespace().any(too_long) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + text.len() / MAX_WORD_CHARS + 1);
    for token in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        if !too_long(token) {
            out.push_str(token);
            continue;
        }
        let spaced: String = token
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { ' ' })
            .collect();
        let mut first = true;
        for piece in spaced.split_whitespace() {
            let chars: Vec<char> = piece.chars().collect();
            for chunk in chars.chunks(MAX_WORD_CHARS) {
                if !first {
                    out.push(' ');
                }
                out.extend(chunk);
                first = false;
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `Some(voice)` once initialised with that voice.
static ESPEAK: Mutex<Option<String>> = Mutex::new(None);

/// Phonemes of `text` in espeak-ng `voice` (e.g. `en-us`), clause by clause, each
/// clause's phonemes followed by the punctuation that ended it.
///
/// This calls the library in this process: only the phonemizer child ([`serve_stdio`])
/// and tests call it; everything else goes through a [`Phonemizer`].
pub fn phonemize_in_process(text: &str, voice: &str) -> EngineResult<String> {
    phonemize_unbounded(&bound_words(text), voice)
}

/// [`phonemize_in_process`] without [`bound_words`]: for the tests that prove a fault of
/// the library stays in the child (`espeak-phonemizer --unbounded`).
pub fn phonemize_unbounded(text: &str, voice: &str) -> EngineResult<String> {
    let mut guard = ESPEAK
        .lock()
        .map_err(|_| EngineError::Inference("espeak-ng lock poisoned".into()))?;
    let c_voice =
        CString::new(voice).map_err(|_| EngineError::InvalidInput("bad voice name".into()))?;
    // SAFETY: espeak-ng is only ever called under ESPEAK's lock; the pointers passed live
    // until the calls return; espeak_TextToPhonemes returns a NUL-terminated buffer owned
    // by espeak that stays valid until the next call, and we copy it at once.
    unsafe {
        if guard.is_none() {
            if espeak_Initialize(
                AUDIO_OUTPUT_SYNCHRONOUS,
                0,
                std::ptr::null(),
                ESPEAK_INITIALIZE_DONT_EXIT,
            ) < 0
            {
                return Err(EngineError::Runtime(
                    "espeak-ng failed to initialise".into(),
                ));
            }
            *guard = Some(String::new());
        }
        if guard.as_deref() != Some(voice) {
            if espeak_SetVoiceByName(c_voice.as_ptr()) != 0 {
                return Err(EngineError::InvalidInput(format!(
                    "espeak-ng has no voice `{voice}`"
                )));
            }
            *guard = Some(voice.to_owned());
        }
        let mut out = String::new();
        for (clause, mark) in clauses(text) {
            let c_clause = CString::new(clause.replace('\0', " "))
                .map_err(|_| EngineError::InvalidInput("text contains NUL".into()))?;
            let mut pointer: *const c_void = c_clause.as_ptr().cast();
            let mut words = Vec::new();
            while !pointer.is_null() {
                let phonemes =
                    espeak_TextToPhonemes(&mut pointer, ESPEAK_CHARS_UTF8, ESPEAK_PHONEMES_IPA);
                if phonemes.is_null() {
                    break;
                }
                words.push(CStr::from_ptr(phonemes).to_string_lossy().trim().to_owned());
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&words.join(" "));
            if let Some(mark) = mark {
                out.push(mark);
            }
        }
        Ok(out.trim().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clause_splitting() {
        assert_eq!(
            clauses("Hello, world. It costs 3.50 today! Fine"),
            vec![
                ("Hello", Some(',')),
                ("world", Some('.')),
                ("It costs 3.50 today", Some('!')),
                ("Fine", None)
            ]
        );
        assert!(clauses("  ").is_empty());
    }

    #[test]
    fn english_to_ipa_with_punctuation() {
        let ipa = phonemize_in_process("Hello world. How are you?", "en-us").unwrap();
        assert!(ipa.contains('ə') || ipa.contains('ɛ'), "{ipa}");
        assert!(ipa.contains('.') && ipa.ends_with('?'), "{ipa}");
        assert!(ipa.contains("wˈɜːld") || ipa.contains("wˈɜːld"), "{ipa}");
        assert!(phonemize_in_process("x", "no-such-voice").is_err());
        assert_eq!(phonemize_in_process("", "en-us").unwrap(), "");
    }

    #[test]
    fn long_tokens_are_broken_up_and_short_ones_pass() {
        let text = "Hello, world. It's fine.";
        assert!(matches!(bound_words(text), std::borrow::Cow::Borrowed(_)));
        let bomb = "s'".repeat(220);
        let bounded = bound_words(&bomb);
        assert!(
            bounded
                .split_whitespace()
                .all(|t| t.chars().count() <= MAX_WORD_CHARS)
        );
        assert_eq!(bounded.split_whitespace().count(), 220);
        let word = "x".repeat(10_000);
        let bounded = bound_words(&word);
        assert!(
            bounded
                .split_whitespace()
                .all(|t| t.chars().count() <= MAX_WORD_CHARS)
        );
        assert_eq!(bounded.chars().filter(|c| *c == 'x').count(), 10_000);
        // Inputs that abort espeak-ng when handed over whole (see the module docs), here
        // in this test process: they must come back as phonemes.
        for text in ["s'".repeat(220), "s.".repeat(220), "x".repeat(10_000)] {
            assert!(!phonemize_in_process(&text, "en-us").unwrap().is_empty());
        }
    }
}
