//! Diarization of a two-voice conversation with known turns.
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

mod common;

use common::espeak;
use engines::diarize::{DiarizeParams, Turn, diarize};
use engines::embedder::SpeakerEmbedder;
use engines::silero::SileroVad;

fn engines() -> (SileroVad, SpeakerEmbedder) {
    let (runtime, models) = (common::runtime(), common::models());
    (
        SileroVad::load(&models).unwrap(),
        SpeakerEmbedder::load(&runtime, &models).unwrap(),
    )
}

const ALICE: (&str, u32) = ("en-us", 40);
const BOB: (&str, u32) = ("en-us+f3", 75);

/// A conversation with 0.6 s pauses; returns the audio and the (start, end, speaker)
/// truth in seconds.
fn conversation() -> (Vec<f32>, Vec<(f32, f32, &'static str)>) {
    let lines = [
        (
            ALICE,
            "alice",
            "Good morning, did you get a chance to read the report I sent yesterday?",
        ),
        (
            BOB,
            "bob",
            "I did, and I think the numbers in the second section need another look.",
        ),
        (
            ALICE,
            "alice",
            "That is fair. The survey closed late, so some totals were estimated.",
        ),
        (
            BOB,
            "bob",
            "Then let us mark them as estimates and publish the rest on Monday.",
        ),
        (
            ALICE,
            "alice",
            "Agreed. I will update the tables this afternoon.",
        ),
    ];
    let mut audio = vec![0.0f32; 8_000];
    let mut truth = Vec::new();
    for ((voice, pitch), who, text) in lines {
        let start = audio.len() as f32 / 16_000.0;
        audio.extend(espeak(voice, pitch, text));
        truth.push((start, audio.len() as f32 / 16_000.0, who));
        audio.extend(vec![0.0f32; 9_600]);
    }
    (audio, truth)
}

/// Share of the true speech time whose label (under the best mapping of found labels
/// to true speakers) is right.
fn accuracy(turns: &[Turn], truth: &[(f32, f32, &str)], mapping: impl Fn(&str) -> String) -> f32 {
    let (mut right, mut total) = (0.0f32, 0.0f32);
    for (start, end, who) in truth {
        let mut t = *start;
        while t < *end {
            total += 0.01;
            let label = turns
                .iter()
                .find(|turn| turn.start <= t && t < turn.end)
                .map(|turn| turn.label.as_str());
            if label.map(&mapping).as_deref() == Some(*who) {
                right += 0.01;
            }
            t += 0.01;
        }
    }
    right / total
}

#[test]
fn two_voices_are_told_apart() {
    let (vad, embedder) = engines();
    let (audio, truth) = conversation();
    let turns = diarize(&audio, &vad, &embedder, &[], &DiarizeParams::default()).unwrap();
    let labels: std::collections::BTreeSet<&str> = turns.iter().map(|t| t.label.as_str()).collect();
    assert_eq!(labels.len(), 2, "found speakers {labels:?} in {turns:#?}");
    let straight = accuracy(&turns, &truth, |l| {
        if l == "spk_0" {
            "alice".into()
        } else {
            "bob".into()
        }
    });
    let swapped = accuracy(&turns, &truth, |l| {
        if l == "spk_0" {
            "bob".into()
        } else {
            "alice".into()
        }
    });
    let best = straight.max(swapped);
    eprintln!("speech time attributed right: {:.1} %", best * 100.0);
    assert!(best >= 0.9, "{:.1} % right: {turns:#?}", best * 100.0);
    assert_eq!(turns[0].label, "spk_0", "labels follow first speech");
}

#[test]
fn enrolled_speakers_get_their_label() {
    let (vad, embedder) = engines();
    let (audio, truth) = conversation();
    let (voice, pitch) = BOB;
    let profile = embedder
        .embed(&espeak(
            voice,
            pitch,
            "This is a separate recording made for enrollment, about five seconds long.",
        ))
        .unwrap();
    let enrolled = vec![("bob-enrolled".to_owned(), profile)];
    let turns = diarize(
        &audio,
        &vad,
        &embedder,
        &enrolled,
        &DiarizeParams::default(),
    )
    .unwrap();
    let right = accuracy(&turns, &truth, |l| match l {
        "bob-enrolled" => "bob".into(),
        "spk_0" => "alice".into(),
        other => other.into(),
    });
    eprintln!("with enrollment: {:.1} % right", right * 100.0);
    assert!(right >= 0.9, "{:.1} %: {turns:#?}", right * 100.0);
}
