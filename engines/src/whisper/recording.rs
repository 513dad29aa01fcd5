//! A recording's side of transcription: the encoder context of its windows, where its
//! speech is, and its transcript assembled from its windows' segments.

use super::*;

/// Silence after the audio in a compact context, and the shortest context. Measured on
/// the ten espeak sentences (pooled WER): 1 s of padding gave 26.2 %, 2 s 7.1 %, 3 s
/// 7.1 %, full 30 s windows 8.3 %; the model was trained on padded windows and wants some
/// silence to end on. A one-second utterance ("In short," in two_cities.wav) looped
/// ("ensure ensure ...") in contexts of 3-4 s and read as one word from 6 s on.
pub(super) const COMPACT_PAD_SECONDS: usize = 2;
pub(super) const COMPACT_MIN_SECONDS: usize = 6;

/// Mel frames the encoder sees for a window of `samples`: a full 30 s window, or with
/// `compact` the audio plus `COMPACT_PAD_SECONDS` in whole seconds, at least
/// `COMPACT_MIN_SECONDS` (so nearby lengths share a context and batch together).
pub(super) fn context_frames(samples: usize, compact: bool) -> usize {
    if !compact {
        return mel::WINDOW_FRAMES;
    }
    let seconds =
        (samples.div_ceil(SAMPLE_RATE as usize) + COMPACT_PAD_SECONDS).max(COMPACT_MIN_SECONDS);
    (seconds * SAMPLE_RATE as usize / mel::HOP).min(mel::WINDOW_FRAMES)
}

/// A window's segments moved to the recording's time (`window_start` in samples), each
/// with the language the window was heard in.
pub(super) fn placed(
    text: WindowText,
    window_start: usize,
) -> impl Iterator<Item = (Segment, String)> {
    let offset = window_start as f32 / SAMPLE_RATE as f32;
    let seek = window_start / mel::HOP;
    let language = text.language;
    text.segments.into_iter().map(move |s| {
        let words = s
            .words
            .into_iter()
            .map(|w| WordTiming {
                start: w.start + offset,
                end: w.end + offset,
                ..w
            })
            .collect();
        let segment = Segment {
            start: s.start + offset,
            end: s.end + offset,
            seek,
            words,
            ..s
        };
        (segment, language.clone())
    })
}

/// A recording's transcript from its windows' segments: the main language, words (and
/// so their segments' edges) pulled into the `sound` regions when word timings were
/// asked for, segments in time order.
pub(super) fn assemble(
    heard: Vec<(Segment, String)>,
    samples: usize,
    sound: &[(f32, f32)],
) -> EngineResult<Transcript> {
    let (mut segments, languages): (Vec<Segment>, Vec<String>) = heard.into_iter().unzip();
    let language = main_language(&segments, &languages);
    if !sound.is_empty() {
        for segment in &mut segments {
            align::clip_to_speech(&mut segment.words, sound);
            if let (Some(first), Some(last)) = (segment.words.first(), segment.words.last()) {
                (segment.start, segment.end) = (first.start, last.end);
            }
        }
    }
    segments.sort_by(|a, b| a.start.total_cmp(&b.start));
    let text = segments
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Transcript {
        text,
        segments,
        duration: samples as f32 / SAMPLE_RATE as f32,
        language,
    })
}

/// The language of a transcript: the one with the most segment time.
pub(super) fn main_language(segments: &[Segment], languages: &[String]) -> Option<String> {
    let mut time: Vec<(&str, f32)> = Vec::new();
    for (segment, language) in segments.iter().zip(languages) {
        let length = (segment.end - segment.start).max(0.01);
        match time.iter_mut().find(|(l, _)| *l == language) {
            Some((_, total)) => *total += length,
            None => time.push((language, length)),
        }
    }
    time.into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(language, _)| language.to_owned())
}

/// The windows (sample ranges) of a recording's speech, and the VAD's per-frame
/// speech probabilities they came from.
#[allow(clippy::type_complexity)]
pub(super) fn speech_windows(
    vad: &SileroVad,
    samples: &[f32],
) -> EngineResult<(Vec<Range<usize>>, Vec<f32>)> {
    let probabilities = vad.probabilities(samples)?;
    let speech = segments::segments(
        &probabilities,
        silero::FRAME,
        SAMPLE_RATE,
        samples.len(),
        &SPEECH,
    );
    Ok((chunks::plan(&speech, mel::WINDOW_SAMPLES), probabilities))
}

/// Where the sound is (seconds), from the VAD's probabilities.
pub(super) fn speech_regions(probabilities: &[f32], samples: usize) -> Vec<(f32, f32)> {
    let seconds = |at: usize| at as f32 / SAMPLE_RATE as f32;
    segments::segments(probabilities, silero::FRAME, SAMPLE_RATE, samples, &SOUND)
        .into_iter()
        .map(|s| (seconds(s.start), seconds(s.end)))
        .collect()
}
