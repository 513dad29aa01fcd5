//! BERT's uncased WordPiece tokenizer, as the `tokenizer.json` of a sentence-embedding
//! model describes it (`BertNormalizer` with lowercase and accent stripping,
//! `BertPreTokenizer`, `WordPiece` with `##` continuations, `[CLS] … [SEP]`). Pure: the
//! vocabulary is read once, tokenizing is string work with no I/O.
//!
//! Punctuation is ASCII punctuation plus the Unicode punctuation blocks (general, CJK,
//! full-width, supplemental); the reference tokenizer asks the full Unicode category
//! table, so a rare punctuation mark outside those blocks may split differently.

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::error::{EngineError, EngineResult};

/// A word longer than this (in characters) is one `[UNK]`, as in the reference.
const MAX_WORD_CHARS: usize = 100;

pub struct WordPiece {
    vocab: HashMap<String, i64>,
    cls: i64,
    sep: i64,
    unk: i64,
}

/// A tokenized text: ids with `[CLS]` and `[SEP]`, truncated to the model's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    pub ids: Vec<i64>,
    /// Tokens of the text before truncation (without `[CLS]` and `[SEP]`): the usage.
    pub tokens: usize,
}

impl WordPiece {
    /// Reads the vocabulary of a `tokenizer.json` (a `WordPiece` model).
    pub fn from_json(text: &str) -> EngineResult<WordPiece> {
        let broken = |why: &str| EngineError::InvalidInput(format!("tokenizer.json: {why}"));
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| broken(&e.to_string()))?;
        let model = &value["model"];
        if model["type"] != "WordPiece" {
            return Err(broken("not a WordPiece model"));
        }
        let vocab: HashMap<String, i64> = model["vocab"]
            .as_object()
            .ok_or_else(|| broken("no vocabulary"))?
            .iter()
            .filter_map(|(token, id)| Some((token.clone(), id.as_i64()?)))
            .collect();
        let id = |token: &str| {
            vocab
                .get(token)
                .copied()
                .ok_or_else(|| broken(&format!("no {token} token")))
        };
        Ok(WordPiece {
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            unk: id("[UNK]")?,
            vocab,
        })
    }

    /// `[CLS]`, the text's word pieces (at most `max_len - 2`), `[SEP]`.
    pub fn encode(&self, text: &str, max_len: usize) -> Encoding {
        let mut ids = vec![self.cls];
        let mut tokens = 0;
        let room = max_len.saturating_sub(2);
        for word in pre_tokenize(&normalize(text)) {
            let pieces = self.pieces(&word);
            tokens += pieces.len();
            for piece in pieces {
                if ids.len() <= room {
                    ids.push(piece);
                }
            }
        }
        ids.push(self.sep);
        Encoding { ids, tokens }
    }

    /// Greedy longest-match-first pieces of one word (`[UNK]` when any part has none).
    fn pieces(&self, word: &str) -> Vec<i64> {
        let chars: Vec<char> = word.chars().collect();
        if chars.len() > MAX_WORD_CHARS {
            return vec![self.unk];
        }
        let mut out = Vec::new();
        let mut start = 0;
        let mut candidate = String::with_capacity(word.len() + 2);
        while start < chars.len() {
            let mut end = chars.len();
            let mut found = None;
            while start < end {
                candidate.clear();
                if start > 0 {
                    candidate.push_str("##");
                }
                candidate.extend(&chars[start..end]);
                if let Some(id) = self.vocab.get(&candidate) {
                    found = Some(*id);
                    break;
                }
                end -= 1;
            }
            match found {
                Some(id) => out.push(id),
                None => return vec![self.unk],
            }
            start = end;
        }
        out
    }
}

/// `BertNormalizer`: control characters dropped, whitespace made spaces, CJK ideographs
/// spaced apart, lowercase, accents stripped (NFD without combining marks).
fn normalize(text: &str) -> String {
    let mut cleaned = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || (is_control(c) && !c.is_whitespace()) {
            continue;
        }
        if c.is_whitespace() {
            cleaned.push(' ');
        } else if is_cjk(c) {
            cleaned.push(' ');
            cleaned.push(c);
            cleaned.push(' ');
        } else {
            cleaned.push(c);
        }
    }
    cleaned
        .to_lowercase()
        .nfd()
        .filter(|c| !is_combining_mark(*c))
        .collect()
}

/// `BertPreTokenizer`: split on whitespace, each punctuation mark its own word.
fn pre_tokenize(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    for chunk in text.split_whitespace() {
        let mut word = String::new();
        for c in chunk.chars() {
            if is_punctuation(c) {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                words.push(c.to_string());
            } else {
                word.push(c);
            }
        }
        if !word.is_empty() {
            words.push(word);
        }
    }
    words
}

fn is_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{feff}')
}

fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(c,
            '\u{00a1}' | '\u{00a7}' | '\u{00ab}' | '\u{00b6}' | '\u{00b7}' | '\u{00bb}' | '\u{00bf}'
            | '\u{2010}'..='\u{2027}' | '\u{2030}'..='\u{205e}'
            | '\u{2e00}'..='\u{2e7f}' | '\u{3001}'..='\u{3003}' | '\u{3008}'..='\u{3011}'
            | '\u{3014}'..='\u{301f}' | '\u{ff01}'..='\u{ff0f}' | '\u{ff1a}'..='\u{ff20}'
            | '\u{ff3b}'..='\u{ff3d}' | '\u{ff3f}' | '\u{ff5b}' | '\u{ff5d}' | '\u{ff5f}'..='\u{ff65}')
}

fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{4e00}'..='\u{9fff}' | '\u{3400}'..='\u{4dbf}' | '\u{20000}'..='\u{2a6df}'
        | '\u{2a700}'..='\u{2b73f}' | '\u{2b740}'..='\u{2b81f}' | '\u{2b820}'..='\u{2ceaf}'
        | '\u{f900}'..='\u{faff}' | '\u{2f800}'..='\u{2fa1f}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> WordPiece {
        let vocab = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", ",", "world", "!", "un", "##aff",
            "##able", "cafe", "你", "好",
        ];
        let map: serde_json::Map<String, serde_json::Value> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), serde_json::json!(i)))
            .collect();
        let json = serde_json::json!({"model": {"type": "WordPiece", "vocab": map}});
        WordPiece::from_json(&json.to_string()).unwrap()
    }

    #[test]
    fn words_split_into_pieces_with_punctuation_apart() {
        let t = tokenizer();
        assert_eq!(t.encode("Hello, WORLD!", 16).ids, vec![2, 4, 5, 6, 7, 3]);
        assert_eq!(t.encode("unaffable", 16).ids, vec![2, 8, 9, 10, 3]);
        // Accents stripped, CJK characters apart, unknown words one [UNK].
        assert_eq!(t.encode("Café 你好 zzz", 16).ids, vec![2, 11, 12, 13, 1, 3]);
        assert_eq!(t.encode("", 16).ids, vec![2, 3]);
    }

    #[test]
    fn long_texts_are_truncated_but_counted() {
        let t = tokenizer();
        let encoding = t.encode(&"hello ".repeat(50), 8);
        assert_eq!(encoding.ids.len(), 8);
        assert_eq!(encoding.ids[7], 3);
        assert_eq!(encoding.tokens, 50);
        let word = "a".repeat(MAX_WORD_CHARS + 1);
        assert_eq!(t.encode(&word, 8).ids, vec![2, 1, 3]);
    }

    #[test]
    fn a_tokenizer_file_must_be_wordpiece_with_its_special_tokens() {
        assert!(WordPiece::from_json("{}").is_err());
        assert!(WordPiece::from_json("not json").is_err());
        let bpe = serde_json::json!({"model": {"type": "BPE", "vocab": {}}});
        assert!(WordPiece::from_json(&bpe.to_string()).is_err());
    }
}
