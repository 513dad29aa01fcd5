//! Sentence embeddings against the reference pipeline: the same token ids and vectors
//! (cosine ≥ 0.9999) as the model's own `tokenizer.json` through Hugging Face
//! `tokenizers` 0.22 and onnxruntime 1.23 with mean pooling and L2 (the recipe of the
//! package that ships the model), computed once into `data/minilm_reference.json`; and
//! paraphrases closer than unrelated texts.
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

mod common;

use engines::embedder::cosine;
use engines::text_embed::{DIM, MAX_TOKENS, TextEmbedder};
use engines::wordpiece::WordPiece;

#[derive(serde::Deserialize)]
struct Reference {
    text: String,
    ids: Vec<i64>,
    vector: Vec<f32>,
}

fn references() -> Vec<Reference> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/minilm_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn tokens_and_vectors_match_the_reference() {
    let models = common::models();
    let vocab = models
        .file("t", "minilm-l6/tokenizer.json")
        .map(|path| std::fs::read_to_string(path).unwrap())
        .unwrap();
    let tokenizer = WordPiece::from_json(&vocab).unwrap();
    let embedder = TextEmbedder::load(&common::runtime(), &models).unwrap();
    let references = references();
    for reference in &references {
        let encoding = tokenizer.encode(&reference.text, MAX_TOKENS);
        assert_eq!(encoding.ids, reference.ids, "{:?}", reference.text);
    }
    // All at once (padded runs) and one at a time give the reference vectors.
    let texts: Vec<String> = references.iter().map(|r| r.text.clone()).collect();
    let together = embedder.embed(&texts).unwrap();
    for (reference, vector) in references.iter().zip(&together.vectors) {
        assert_eq!(vector.len(), DIM);
        let alone = &embedder
            .embed(std::slice::from_ref(&reference.text))
            .unwrap()
            .vectors[0];
        for got in [vector, alone] {
            let similarity = cosine(got, &reference.vector);
            assert!(similarity > 0.9999, "{similarity} for {:?}", reference.text);
        }
    }
    assert!(together.tokens > 300, "{}", together.tokens);
}

#[test]
fn paraphrases_are_closer_than_unrelated_texts() {
    let embedder = TextEmbedder::load(&common::runtime(), &common::models()).unwrap();
    let texts = [
        "How do I reset my password?",
        "What is the way to change my password?",
        "The weather in Lisbon is sunny today.",
    ]
    .map(str::to_owned);
    let v = embedder.embed(&texts).unwrap().vectors;
    let (close, far) = (cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
    assert!(
        close > 0.6 && far < 0.3 && close > far + 0.4,
        "{close} {far}"
    );
}
