//! Whisper's vocabulary (the CTranslate2 `vocabulary.txt`: line N is token N, GPT-2
//! byte-level BPE strings, then the special tokens) and the byte-level decoding of
//! token ids to text. Special tokens are found by name, so the English-only and the
//! multilingual vocabularies both work.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{EngineError, EngineResult};

#[derive(Debug, Clone)]
pub struct Tokenizer {
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    /// GPT-2's printable stand-in character for each byte, reversed.
    bytes: HashMap<char, u8>,
    pub eot: u32,
    pub sot: u32,
    pub no_timestamps: u32,
    /// `<|nocaptions|>` (English-only) or `<|nospeech|>` (multilingual).
    pub no_speech: u32,
    pub transcribe: Option<u32>,
    pub timestamp_begin: u32,
}

/// GPT-2's byte-to-unicode table: printable bytes stand for themselves, the others map
/// to code points from 256 up, in byte order.
fn byte_table() -> HashMap<char, u8> {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    let mut table = HashMap::with_capacity(256);
    let mut next = 256u32;
    for byte in 0..=255u8 {
        let ch = if printable(byte) {
            char::from(byte)
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap_or('\u{fffd}')
        };
        table.insert(ch, byte);
    }
    table
}

impl Tokenizer {
    pub fn load(vocabulary: &Path) -> EngineResult<Tokenizer> {
        let text =
            std::fs::read_to_string(vocabulary).map_err(|e| EngineError::ModelUnavailable {
                id: super::ENGINE_ID.into(),
                reason: format!("{}: {e}", vocabulary.display()),
            })?;
        Tokenizer::from_lines(text.lines().map(str::to_owned).collect())
    }

    pub fn from_lines(tokens: Vec<String>) -> EngineResult<Tokenizer> {
        let ids: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(id, token)| (token.clone(), id as u32))
            .collect();
        let find = |name: &str| {
            ids.get(name)
                .copied()
                .ok_or_else(|| EngineError::ModelUnavailable {
                    id: super::ENGINE_ID.into(),
                    reason: format!("vocabulary has no {name}"),
                })
        };
        Ok(Tokenizer {
            eot: find("<|endoftext|>")?,
            sot: find("<|startoftranscript|>")?,
            no_timestamps: find("<|notimestamps|>")?,
            no_speech: find("<|nocaptions|>").or_else(|_| find("<|nospeech|>"))?,
            transcribe: find("<|transcribe|>").ok(),
            timestamp_begin: find("<|0.00|>")?,
            bytes: byte_table(),
            tokens,
            ids,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The id of a special token such as `<|de|>`.
    pub fn special(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// Language tokens (`<|xx|>` between `<|startoftranscript|>` and `<|translate|>`),
    /// empty for English-only models.
    pub fn language_tokens(&self) -> Vec<(String, u32)> {
        let Some(translate) = self.special("<|translate|>") else {
            return Vec::new();
        };
        (self.sot + 1..translate)
            .map(|id| {
                let name = self.tokens[id as usize].trim_start_matches("<|");
                (name.trim_end_matches("|>").to_owned(), id)
            })
            .collect()
    }

    pub fn is_timestamp(&self, id: u32) -> bool {
        id >= self.timestamp_begin
    }

    /// The text of `ids` cut into pieces that are whole characters (a character may
    /// span tokens), each with its tokens and whether it is a special token (which is
    /// a piece of its own, named by its vocabulary entry).
    pub fn pieces(&self, ids: &[u32]) -> Vec<(String, Vec<u32>, bool)> {
        let mut pieces = Vec::new();
        let mut bytes = Vec::new();
        let mut tokens = Vec::new();
        for id in ids {
            if *id >= self.eot {
                if !tokens.is_empty() {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    pieces.push((text, std::mem::take(&mut tokens), false));
                    bytes.clear();
                }
                let name = self.tokens.get(*id as usize).cloned().unwrap_or_default();
                pieces.push((name, vec![*id], true));
                continue;
            }
            if let Some(token) = self.tokens.get(*id as usize) {
                bytes.extend(token.chars().filter_map(|ch| self.bytes.get(&ch)));
            }
            tokens.push(*id);
            if let Ok(text) = std::str::from_utf8(&bytes) {
                pieces.push((text.to_owned(), std::mem::take(&mut tokens), false));
                bytes.clear();
            }
        }
        if !tokens.is_empty() {
            pieces.push((String::from_utf8_lossy(&bytes).into_owned(), tokens, false));
        }
        pieces
    }

    /// Text of the text tokens among `ids` (special tokens and timestamps are skipped).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for id in ids.iter().filter(|id| **id < self.eot) {
            if let Some(token) = self.tokens.get(*id as usize) {
                bytes.extend(token.chars().filter_map(|ch| self.bytes.get(&ch)));
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Tokenizer {
        let mut lines: Vec<String> = ["Hello", "Ġworld", "Ċ", "Ã©", "<|endoftext|>"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        lines.extend(
            [
                "<|startoftranscript|>",
                "<|en|>",
                "<|de|>",
                "<|translate|>",
                "<|transcribe|>",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        lines
            .extend(["<|nospeech|>", "<|notimestamps|>", "<|0.00|>", "<|0.02|>"].map(String::from));
        Tokenizer::from_lines(lines).unwrap()
    }

    #[test]
    fn byte_level_tokens_decode_to_text_and_specials_are_skipped() {
        let t = tiny();
        assert_eq!(t.decode(&[0, 1, 2, 3, 4, 5, 12]), "Hello world\né");
        assert_eq!(
            (t.eot, t.sot, t.no_speech, t.timestamp_begin),
            (4, 5, 10, 12)
        );
        assert!(t.is_timestamp(13) && !t.is_timestamp(4));
        let pieces = t.pieces(&[0, 1, 3, 4]);
        assert_eq!(
            pieces,
            vec![
                ("Hello".to_owned(), vec![0], false),
                (" world".to_owned(), vec![1], false),
                ("é".to_owned(), vec![3], false),
                ("<|endoftext|>".to_owned(), vec![4], true),
            ]
        );
        assert_eq!(
            t.language_tokens(),
            vec![("en".to_owned(), 6), ("de".to_owned(), 7)]
        );
    }
}
