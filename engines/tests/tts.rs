//! Piper synthesis: real speech comes out (VAD), in one consistent voice (embeddings),
//! and speed changes the length.
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

mod common;

use engines::embedder::{SpeakerEmbedder, cosine};
use engines::piper::PiperVoice;
use engines::silero::SileroVad;
use media::resample;

#[test]
fn synthesizes_speech_in_one_voice_and_honours_speed() {
    let (runtime, models) = (common::runtime(), common::models());
    let voice = PiperVoice::load(&runtime, &models, &common::phonemizer()).unwrap();
    assert_eq!(voice.sample_rate(), 22_050);
    let one = voice
        .synthesize("The quick brown fox jumps over the lazy dog.", 1.0)
        .unwrap();
    let two = voice
        .synthesize(
            "Please remember to bring the documents to the meeting on Friday.",
            1.0,
        )
        .unwrap();
    let seconds = one.len() as f32 / 22_050.0;
    assert!((1.5..6.0).contains(&seconds), "{seconds} s");
    let peak = one.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    assert!(peak > 0.1, "peak {peak}");

    let to_16k = |samples: &[f32]| resample::resample_mono(samples, 22_050, 16_000).unwrap();
    let vad = SileroVad::load(&models).unwrap();
    let probabilities = vad.probabilities(&to_16k(&one)).unwrap();
    let speech =
        probabilities.iter().filter(|p| **p >= 0.5).count() as f32 / probabilities.len() as f32;
    assert!(speech > 0.6, "speech ratio {speech}");

    // VITS samples noise (durations and timbre vary run to run), so the checks are
    // relative: the voice is closer to itself than to another voice saying the same.
    let embedder = SpeakerEmbedder::load(&runtime, &models).unwrap();
    let embed = |samples: &[f32]| embedder.embed(samples).unwrap();
    let (a, b) = (embed(&to_16k(&one)), embed(&to_16k(&two)));
    let other = embed(&common::espeak(
        "en-us+f3",
        75,
        "The quick brown fox jumps over the lazy dog.",
    ));
    let (same, different) = (cosine(&a, &b), cosine(&a, &other).max(cosine(&b, &other)));
    assert!(
        same > different + 0.1,
        "same voice {same}, another voice {different}"
    );

    let fast = voice
        .synthesize("The quick brown fox jumps over the lazy dog.", 1.5)
        .unwrap();
    let ratio = one.len() as f32 / fast.len() as f32;
    assert!(
        (1.2..1.9).contains(&ratio),
        "speed 1.5 gave a length ratio of {ratio}"
    );
    assert!(voice.synthesize("", 1.0).unwrap().is_empty());
    assert!(voice.synthesize("x", 9.0).is_err());
}

/// A sentence decoded in spans (a stream's short first piece, then the rest; or many
/// small ones) is the sentence decoded whole: the spans' context frames make the seams
/// invisible. Spans too short for context on both sides and a bad range are covered.
#[test]
fn decoding_in_spans_equals_decoding_whole() {
    let (runtime, models) = (common::runtime(), common::models());
    let voice = PiperVoice::load(&runtime, &models, &common::phonemizer()).unwrap();
    let latent = voice
        .encode(
            "When the meeting ends, please send the notes to everyone.",
            1.0,
        )
        .unwrap()
        .expect("speech");
    let frames = latent.frames();
    assert!(frames > 100, "{frames} frames");
    let whole = voice.decode(&latent, 0..frames).unwrap();
    assert_eq!(whole.len() % frames, 0);
    for cuts in [
        vec![20],
        vec![3, 40, 41, frames - 2],
        (7..frames).step_by(7).collect(),
    ] {
        let mut bounds = vec![0];
        bounds.extend(&cuts);
        bounds.push(frames);
        let mut joined = Vec::new();
        for span in bounds.windows(2) {
            joined.extend(voice.decode(&latent, span[0]..span[1]).unwrap());
        }
        assert_eq!(joined.len(), whole.len());
        let worst = joined
            .iter()
            .zip(&whole)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "spans at {cuts:?} differ by {worst}");
    }
    assert!(voice.decode(&latent, 5..5).is_err());
    assert!(voice.decode(&latent, 0..frames + 1).is_err());
}
