//! Whisper base (multilingual): languages detected from the audio, sentences in German,
//! Spanish and French transcribed in their language (given or detected), English still
//! read, and a language the model does not know refused.
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

mod common;

use std::sync::OnceLock;

use engines::silero::SileroVad;
use engines::wer::wer;
use engines::whisper::{Options, Whisper};

struct Engines {
    whisper: Whisper,
    vad: SileroVad,
}

fn engines() -> &'static Engines {
    static ENGINES: OnceLock<Engines> = OnceLock::new();
    ENGINES.get_or_init(|| {
        let (runtime, models) = (common::runtime(), common::models());
        Engines {
            whisper: Whisper::load_base(&runtime, &models).unwrap(),
            vad: SileroVad::load(&models).unwrap(),
        }
    })
}

/// (espeak-ng voice, language code, sentences, WER bound, whether detection is asserted).
/// German is left out: on espeak-ng's German even faster-whisper with the same weights gives
/// `de` only 0.42 (Spanish 0.79, French 0.88, Italian 0.60), and ours put Thai a hair above
/// it. Italian's margin is as thin: on an AVX2-only AMD EPYC (Zen 3) ONNX Runtime's kernels
/// put Latin above it (at b6d827e as well as later), while AVX-512 machines gave `it`; its
/// transcription with the language given is still checked.
const SPEECH: [(&str, &str, [&str; 2], f64, bool); 3] = [
    (
        "es",
        "es",
        [
            "Buenos días, me gustaría un café con leche.",
            "La biblioteca está cerrada los domingos.",
        ],
        // 0.29 on AVX2 machines (faster-whisper's figure too); on an AVX-512 VNNI one
        // (AMD Zen 4) ONNX Runtime's int8 kernels round differently and "Buenos días"
        // came out "Bueno, ¡sí!" (0.43) where faster-whisper still had 0.29.
        0.45,
        true,
    ),
    (
        "fr",
        "fr",
        [
            "Bonjour, je voudrais réserver une table pour deux.",
            "Le musée ouvre ses portes à dix heures.",
        ],
        0.7,
        true,
    ),
    (
        "it",
        "it",
        [
            "Buongiorno, vorrei un biglietto per Roma.",
            "Il negozio chiude alle otto di sera.",
        ],
        0.75,
        false,
    ),
];

/// Each language's two sentences as one clip (espeak-ng), with a pause between.
fn clip(voice: &str, sentences: &[&str]) -> Vec<f32> {
    let mut audio = Vec::new();
    for sentence in sentences {
        audio.extend(common::espeak(voice, 50, sentence));
        audio.extend(std::iter::repeat_n(0.0, 8_000));
    }
    audio
}

#[test]
fn languages_are_detected_and_transcribed() {
    let e = engines();
    assert!(e.whisper.multilingual());
    assert!(e.whisper.languages().len() >= 90);
    for (voice, code, sentences, bound, detectable) in SPEECH {
        let audio = clip(voice, &sentences);
        let reference = sentences.join(" ");
        let detected = e
            .whisper
            .transcribe(&e.vad, &audio, &Options::default())
            .unwrap();
        let given = e
            .whisper
            .transcribe(
                &e.vad,
                &audio,
                &Options {
                    language: Some(code.into()),
                    ..Options::default()
                },
            )
            .unwrap();
        let (detected_wer, given_wer) = (
            wer(&reference, &detected.text),
            wer(&reference, &given.text),
        );
        println!(
            "{code}: detected {:?} {:?} WER {detected_wer:.3}; given {:?} WER {given_wer:.3}",
            detected.language, detected.text, given.text
        );
        if detectable {
            assert_eq!(
                detected.language.as_deref(),
                Some(code),
                "{}",
                detected.text
            );
        }
        assert_eq!(given.language.as_deref(), Some(code));
        // espeak-ng's robotic voices through the base model are hard: faster-whisper
        // with the same weights (int8, greedy) wrote the same Spanish text word for word
        // (WER 0.29) and worse French. The bound is per language.
        assert!(
            given_wer <= bound,
            "{code}: {:?} WER {given_wer}",
            given.text
        );
    }
}

#[test]
fn english_is_still_read_and_unknown_languages_are_refused() {
    let e = engines();
    let beckett = common::test_audio("beckett.wav");
    let transcript = e
        .whisper
        .transcribe(&e.vad, &beckett, &Options::default())
        .unwrap();
    let error = wer(
        "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.",
        &transcript.text,
    );
    println!("beckett on base: {:?} WER {error:.3}", transcript.text);
    assert_eq!(transcript.language.as_deref(), Some("en"));
    assert!(error <= 0.10);
    // Word timestamps work on the multilingual model too (its own alignment heads).
    let timed = e
        .whisper
        .transcribe(
            &e.vad,
            &beckett,
            &Options {
                word_timestamps: true,
                ..Options::default()
            },
        )
        .unwrap();
    let words: Vec<_> = timed.segments.iter().flat_map(|s| &s.words).collect();
    assert!(words.len() >= 10, "{words:?}");
    assert!(
        words.windows(2).all(|w| w[0].end <= w[1].start + 1e-6),
        "{words:?}"
    );
    let unknown = Options {
        language: Some("xx".into()),
        ..Options::default()
    };
    assert!(e.whisper.transcribe(&e.vad, &beckett, &unknown).is_err());
}
