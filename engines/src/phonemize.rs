//! Text to IPA phonemes through the espeak-ng library (in-process, not a process per
//! request). espeak-ng keeps global state and is not thread-safe: every call goes
//! through one process-wide lock.
//!
//! `espeak_TextToPhonemes` drops punctuation, which Piper's voices were trained with as
//! phonemes: the text is split into clauses here, each clause is phonemised on its own,
//! and the punctuation that ended it is appended.

#![allow(unsafe_code)] // FFI to libespeak-ng; every call is in `phonemize` below.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::Mutex;

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

/// `Some(voice)` once initialised with that voice.
static ESPEAK: Mutex<Option<String>> = Mutex::new(None);

/// Phonemes of `text` in espeak-ng `voice` (e.g. `en-us`), clause by clause, each
/// clause's phonemes followed by the punctuation that ended it.
pub fn phonemize(text: &str, voice: &str) -> EngineResult<String> {
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
        let ipa = phonemize("Hello world. How are you?", "en-us").unwrap();
        assert!(ipa.contains('ə') || ipa.contains('ɛ'), "{ipa}");
        assert!(ipa.contains('.') && ipa.ends_with('?'), "{ipa}");
        assert!(ipa.contains("wˈɜːld") || ipa.contains("wˈɜːld"), "{ipa}");
        assert!(phonemize("x", "no-such-voice").is_err());
        assert_eq!(phonemize("", "en-us").unwrap(), "");
    }
}
