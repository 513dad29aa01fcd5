//! Transcription output formats (pure): the JSON body, plain text, SubRip and WebVTT.

use std::fmt::Write;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `response_format` of `POST /transcribe` and the OpenAI alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    Json,
    /// OpenAI's `verbose_json`: the JSON body with segments (ours always has them).
    VerboseJson,
    Text,
    Srt,
    Vtt,
}

impl FromStr for ResponseFormat {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(match value {
            "json" => ResponseFormat::Json,
            "verbose_json" => ResponseFormat::VerboseJson,
            "text" => ResponseFormat::Text,
            "srt" => ResponseFormat::Srt,
            "vtt" => ResponseFormat::Vtt,
            other => {
                return Err(format!(
                    "unknown response_format `{other}` (json, verbose_json, text, srt, vtt)"
                ));
            }
        })
    }
}

impl ResponseFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ResponseFormat::Json | ResponseFormat::VerboseJson => "application/json",
            ResponseFormat::Text => "text/plain; charset=utf-8",
            ResponseFormat::Srt => "application/x-subrip; charset=utf-8",
            ResponseFormat::Vtt => "text/vtt; charset=utf-8",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SegmentOut {
    pub id: usize,
    pub start: f64,
    pub end: f64,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speaker_label: Option<String>,
    /// With `timestamps=word`: the segment's words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<WordOut>>,
    /// The decoder's view (backend A; OpenAI's `verbose_json` segment fields).
    #[serde(flatten)]
    pub decoding: Option<Decoding>,
}

/// A word and its times in seconds; `probability` is the mean of its tokens' (backend
/// A), `speaker_label` its speaker when diarizing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WordOut {
    pub word: String,
    pub start: f64,
    pub end: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speaker_label: Option<String>,
}

impl WordOut {
    /// An engine word, times and probability rounded to the millisecond.
    pub fn from_engine(
        word: &engines::whisper::align::WordTiming,
        speaker_label: Option<String>,
    ) -> WordOut {
        let ms = |seconds: f64| (seconds * 1000.0).round() / 1000.0;
        WordOut {
            word: word.word.trim().to_owned(),
            start: ms(word.start.into()),
            end: ms(word.end.into()),
            probability: Some(ms(word.probability.into())),
            speaker_label,
        }
    }
}

/// Hands words timed on the recording's clock (as an OpenAI-style upstream lists them,
/// apart from the segments) to the segment their middle falls in, else the nearest one.
pub fn place_words(segments: &mut [SegmentOut], words: Vec<WordOut>) {
    for word in words {
        let middle = (word.start + word.end) / 2.0;
        let distance = |s: &SegmentOut| {
            if middle < s.start {
                s.start - middle
            } else if middle > s.end {
                middle - s.end
            } else {
                0.0
            }
        };
        let nearest = segments
            .iter_mut()
            .min_by(|a, b| distance(a).total_cmp(&distance(b)));
        if let Some(segment) = nearest {
            segment.words.get_or_insert_with(Vec::new).push(word);
        }
    }
}

/// Every word of a transcription in order (OpenAI's top-level `words`).
pub fn all_words(transcription: &Transcription) -> Option<Vec<&WordOut>> {
    let mut any = false;
    let words = transcription
        .segments
        .iter()
        .filter_map(|s| s.words.as_ref())
        .inspect(|_| any = true)
        .flatten()
        .collect();
    any.then_some(words)
}

/// Decoding details of a segment: its window's start in 10 ms frames, its text tokens,
/// sampling temperature (0: greedy or beam), its window's average log-probability and
/// no-speech probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Decoding {
    pub seek: usize,
    pub tokens: Vec<u32>,
    pub temperature: f64,
    pub avg_logprob: f64,
    pub no_speech_prob: f64,
}

/// A finished transcription as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Transcription {
    pub text: String,
    pub language: String,
    /// Seconds of audio.
    pub duration: f64,
    pub segments: Vec<SegmentOut>,
    /// Which backend produced it (`A` local node, `B` managed relay).
    pub backend: String,
}

/// `HH:MM:SS<sep>mmm`.
fn clock(seconds: f64, separator: char) -> String {
    let millis = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{separator}{:03}",
        millis / 3_600_000,
        millis / 60_000 % 60,
        millis / 1000 % 60,
        millis % 1000
    )
}

fn cue_text(segment: &SegmentOut) -> String {
    match &segment.speaker_label {
        Some(label) => format!("[{label}] {}", segment.text),
        None => segment.text.clone(),
    }
}

pub fn srt(transcription: &Transcription) -> String {
    let mut out = String::new();
    for (index, segment) in transcription.segments.iter().enumerate() {
        let _ = write!(
            out,
            "{}\n{} --> {}\n{}\n\n",
            index + 1,
            clock(segment.start, ','),
            clock(segment.end, ','),
            cue_text(segment)
        );
    }
    out
}

pub fn vtt(transcription: &Transcription) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for segment in &transcription.segments {
        let _ = write!(
            out,
            "{} --> {}\n{}\n\n",
            clock(segment.start, '.'),
            clock(segment.end, '.'),
            cue_text(segment)
        );
    }
    out
}

/// The body in the requested format (JSON formats serialise `transcription`).
pub fn render(transcription: &Transcription, format: ResponseFormat) -> String {
    match format {
        ResponseFormat::Json | ResponseFormat::VerboseJson => {
            serde_json::to_string(transcription).unwrap_or_default()
        }
        ResponseFormat::Text => format!("{}\n", transcription.text),
        ResponseFormat::Srt => srt(transcription),
        ResponseFormat::Vtt => vtt(transcription),
    }
}

/// The label of the turn overlapping `[start, end)` the most, if any does.
pub fn speaker_for(turns: &[engines::diarize::Turn], start: f32, end: f32) -> Option<String> {
    turns
        .iter()
        .map(|turn| (turn.end.min(end) - turn.start.max(start), turn))
        .filter(|(overlap, _)| *overlap > 0.0)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, turn)| turn.label.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Transcription {
        Transcription {
            text: "Hello there. General Kenobi.".into(),
            language: "en".into(),
            duration: 3725.5,
            backend: "A".into(),
            segments: vec![
                SegmentOut {
                    id: 0,
                    start: 0.0,
                    end: 1.5,
                    text: "Hello there.".into(),
                    speaker_label: None,
                    words: None,
                    decoding: None,
                },
                SegmentOut {
                    id: 1,
                    start: 3723.25,
                    end: 3725.5,
                    text: "General Kenobi.".into(),
                    speaker_label: Some("spk_1".into()),
                    words: None,
                    decoding: None,
                },
            ],
        }
    }

    #[test]
    fn upstream_words_go_to_the_segment_they_fall_in() {
        let word = |w: &str, start, end| WordOut {
            word: w.into(),
            start,
            end,
            probability: None,
            speaker_label: None,
        };
        let mut transcription = sample();
        assert_eq!(all_words(&transcription), None);
        place_words(
            &mut transcription.segments,
            vec![
                word("Hello", 0.0, 0.6),
                word("there.", 0.6, 1.6),
                word("General", 3723.3, 3724.0),
                word("Kenobi.", 3724.0, 3726.0),
            ],
        );
        let texts = |s: &SegmentOut| -> Vec<String> {
            s.words.iter().flatten().map(|w| w.word.clone()).collect()
        };
        assert_eq!(texts(&transcription.segments[0]), ["Hello", "there."]);
        assert_eq!(texts(&transcription.segments[1]), ["General", "Kenobi."]);
        let all: Vec<&str> = all_words(&transcription)
            .unwrap()
            .iter()
            .map(|w| w.word.as_str())
            .collect();
        assert_eq!(all, ["Hello", "there.", "General", "Kenobi."]);
    }

    #[test]
    fn subrip_and_webvtt_cues() {
        assert_eq!(
            srt(&sample()),
            "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n\
             2\n01:02:03,250 --> 01:02:05,500\n[spk_1] General Kenobi.\n\n"
        );
        assert_eq!(
            vtt(&sample()),
            "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n\
             01:02:03.250 --> 01:02:05.500\n[spk_1] General Kenobi.\n\n"
        );
        assert_eq!(
            render(&sample(), ResponseFormat::Text),
            "Hello there. General Kenobi.\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&sample(), ResponseFormat::Json)).unwrap();
        assert_eq!(json["segments"][1]["speaker_label"], "spk_1");
        assert!(json["segments"][0].get("speaker_label").is_none());
        assert!("xml".parse::<ResponseFormat>().is_err());
    }

    #[test]
    fn a_segment_takes_the_speaker_it_overlaps_most() {
        let turn = |start, end, label: &str| engines::diarize::Turn {
            start,
            end,
            label: label.into(),
        };
        let turns = [turn(0.0, 2.0, "spk_0"), turn(2.0, 5.0, "alice")];
        assert_eq!(speaker_for(&turns, 1.5, 4.0).as_deref(), Some("alice"));
        assert_eq!(speaker_for(&turns, 0.0, 2.5).as_deref(), Some("spk_0"));
        assert_eq!(speaker_for(&turns, 6.0, 7.0), None);
    }
}
