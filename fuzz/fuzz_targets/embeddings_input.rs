//! `/v1/embeddings` bodies as clients send them, and the local model's WordPiece
//! tokenizer over any text. Never panics; a request is read as 1 to 2,048 inputs or
//! refused with `INVALID_REQUEST`; a tokenized text is `[CLS] … [SEP]` within the
//! length asked for.

#![no_main]

use engines::wordpiece::WordPiece;
use libfuzzer_sys::fuzz_target;
use scaigrid::error::ErrorCode;
use scaigrid::gateway::embeddings::{MAX_INPUTS, check_request};
use std::sync::LazyLock;

static TOKENIZER: LazyLock<WordPiece> = LazyLock::new(|| {
    let vocab = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "a", "##s", "##ing", "word", "play", ",", ".",
        "!", "你", "cafe", "##e", "x",
    ];
    let map: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), serde_json::json!(i)))
        .collect();
    let json = serde_json::json!({"model": {"type": "WordPiece", "vocab": map}});
    WordPiece::from_json(&json.to_string()).unwrap()
});

fuzz_target!(|data: &[u8]| {
    match check_request(data) {
        Ok(inputs) => assert!((1..=MAX_INPUTS).contains(&inputs)),
        Err(error) => assert_eq!(error.code, ErrorCode::INVALID_REQUEST),
    }
    let text = String::from_utf8_lossy(data);
    let max_len = 2 + data.first().map_or(0, |b| usize::from(*b % 64));
    let encoding = TOKENIZER.encode(&text, max_len);
    assert!(encoding.ids.len() >= 2 && encoding.ids.len() <= max_len.max(2));
    assert_eq!(encoding.ids.first(), Some(&2));
    assert_eq!(encoding.ids.last(), Some(&3));
});
