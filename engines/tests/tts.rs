//! Piper synthesis: real speech comes out (VAD), in one consistent voice (embeddings),
//! and speed changes the length.

mod common;

use engines::embedder::{SpeakerEmbedder, cosine};
use engines::piper::PiperVoice;
use engines::silero::SileroVad;
use media::resample;

#[test]
fn synthesizes_speech_in_one_voice_and_honours_speed() {
    let (runtime, models) = (common::runtime(), common::models());
    let voice = PiperVoice::load(&runtime, &models).unwrap();
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
