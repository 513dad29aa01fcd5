//! Deepgram's messages and response body, built from ScaiEcho's deltas and transcripts.
//! Pure: JSON in, JSON out.

use serde_json::{Value, json};

use crate::scaiecho::format::{Transcription, WordOut};

/// The model this server names in Deepgram's `metadata` (Whisper, run by ScaiGrid).
pub const MODEL_UUID: &str = "5c416772-6964-4f77-6869-737065720001";

pub fn model_info() -> Value {
    json!({"name": "whisper", "version": env!("CARGO_PKG_VERSION"), "arch": "whisper"})
}

/// Now, as Deepgram's `created` (RFC 3339).
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Speaker labels (`spk_0`, an enrolled name) as Deepgram's numbers, in the order they
/// were first heard.
#[derive(Debug, Default)]
pub struct Speakers(Vec<String>);

impl Speakers {
    pub fn number(&mut self, label: &str) -> usize {
        match self.0.iter().position(|known| known == label) {
            Some(index) => index,
            None => {
                self.0.push(label.to_owned());
                self.0.len() - 1
            }
        }
    }
}

/// A word as Deepgram's `word` (lowercase, no punctuation) and `punctuated_word`.
fn word(word: &WordOut, speakers: Option<&mut Speakers>) -> Value {
    let punctuated = word.word.trim();
    let mut out = json!({
        "word": bare(punctuated),
        "start": word.start,
        "end": word.end,
        "confidence": word.probability.unwrap_or(1.0),
        "punctuated_word": punctuated,
    });
    if let (Some(speakers), Some(label)) = (speakers, &word.speaker_label) {
        out["speaker"] = speakers.number(label).into();
    }
    out
}

/// Lowercase, without the punctuation around or inside a word (apostrophes stay).
fn bare(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric() || *c == '\'' || c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A transcript as Deepgram gives it: Whisper's text with `punctuate`, bare words without.
pub fn transcript(text: &str, punctuate: bool) -> String {
    match punctuate {
        true => text.trim().to_owned(),
        false => bare(text),
    }
}

/// The mean of the words' probabilities (1 when there are none to say otherwise).
fn confidence(words: &[WordOut]) -> f64 {
    let known: Vec<f64> = words.iter().filter_map(|w| w.probability).collect();
    match known.is_empty() {
        true => 1.0,
        false => known.iter().sum::<f64>() / known.len() as f64,
    }
}

/// What a `Results` message says beyond the delta itself.
pub struct ResultsContext<'a> {
    pub request_id: &'a str,
    pub punctuate: bool,
    pub speech_final: bool,
    pub from_finalize: bool,
}

/// A ScaiEcho `delta` as Deepgram's `Results`.
pub fn results(
    delta: &crate::scaiecho::stream::protocol::Delta,
    context: &ResultsContext<'_>,
    speakers: Option<&mut Speakers>,
) -> Value {
    let words = delta.words.as_deref().unwrap_or_default();
    let mut speakers = speakers;
    let out_words: Vec<Value> = words
        .iter()
        .map(|w| {
            let mut w = w.clone();
            // A final's speaker names its words when the words carry none.
            if w.speaker_label.is_none() {
                w.speaker_label = delta.speaker_label.clone();
            }
            word(&w, speakers.as_deref_mut())
        })
        .collect();
    let mut message = json!({
        "type": "Results",
        "channel_index": [0, 1],
        "duration": round_ms(delta.end - delta.start),
        "start": delta.start,
        "is_final": delta.is_final,
        "speech_final": delta.is_final && context.speech_final,
        "channel": {"alternatives": [{
            "transcript": transcript(&delta.text, context.punctuate),
            "confidence": confidence(words),
            "words": out_words,
        }]},
        "metadata": {
            "request_id": context.request_id,
            "model_info": model_info(),
            "model_uuid": MODEL_UUID,
        },
        "from_finalize": context.from_finalize,
    });
    if let Some(language) = &delta.language {
        message["channel"]["alternatives"][0]["languages"] = json!([language]);
    }
    message
}

pub fn utterance_end(last_word_end: f64) -> Value {
    json!({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": last_word_end})
}

pub fn speech_started(timestamp: f64) -> Value {
    json!({"type": "SpeechStarted", "channel": [0, 1], "timestamp": timestamp})
}

/// The request's facts, as Deepgram's `metadata` (the last message of a stream, and
/// the head of a file's response).
pub struct Facts<'a> {
    pub request_id: &'a str,
    pub sha256: &'a str,
    /// RFC 3339.
    pub created: &'a str,
    pub duration: f64,
    pub channels: u16,
}

fn metadata(facts: &Facts<'_>) -> Value {
    json!({
        "transaction_key": "deprecated",
        "request_id": facts.request_id,
        "sha256": facts.sha256,
        "created": facts.created,
        "duration": facts.duration,
        "channels": facts.channels,
        "models": [MODEL_UUID],
        "model_info": {MODEL_UUID: model_info()},
    })
}

/// The `Metadata` message that ends a stream.
pub fn stream_metadata(facts: &Facts<'_>) -> Value {
    let mut message = metadata(facts);
    message["type"] = "Metadata".into();
    message
}

/// An error as Deepgram's `Error` message.
pub fn error(code: &str, message: &str, request_id: Option<&str>) -> Value {
    let mut out = json!({
        "type": "Error",
        "variant": "scaigrid",
        "code": code,
        "description": message,
        "message": message,
    });
    if let Some(id) = request_id {
        out["request_id"] = id.into();
    }
    out
}

/// A file's transcription as Deepgram's response body.
pub fn response(
    transcription: &Transcription,
    facts: &Facts<'_>,
    punctuate: bool,
    utterances: bool,
    detected: bool,
) -> Value {
    let mut speakers = Speakers::default();
    let words: Vec<WordOut> = transcription
        .segments
        .iter()
        .flat_map(|segment| {
            segment.words.iter().flatten().map(|w| {
                let mut w = w.clone();
                if w.speaker_label.is_none() {
                    w.speaker_label = segment.speaker_label.clone();
                }
                w
            })
        })
        .collect();
    let diarized = words.iter().any(|w| w.speaker_label.is_some());
    let out_words: Vec<Value> = words
        .iter()
        .map(|w| word(w, diarized.then_some(&mut speakers)))
        .collect();
    let mut alternative = json!({
        "transcript": transcript(&transcription.text, punctuate),
        "confidence": round_ms(confidence(&words)),
        "words": out_words,
    });
    if detected {
        alternative["languages"] = json!([transcription.language]);
    }
    let mut channel = json!({"alternatives": [alternative]});
    if detected {
        channel["detected_language"] = transcription.language.clone().into();
    }
    let mut results = json!({"channels": [channel]});
    if utterances {
        let list: Vec<Value> = transcription
            .segments
            .iter()
            .map(|segment| {
                let words: Vec<WordOut> = segment.words.clone().unwrap_or_default();
                let mut out = json!({
                    "id": uuid::Uuid::now_v7().to_string(),
                    "start": segment.start,
                    "end": segment.end,
                    "confidence": round_ms(confidence(&words)),
                    "channel": 0,
                    "transcript": transcript(&segment.text, punctuate),
                    "words": words.iter().map(|w| word(w, diarized.then_some(&mut speakers))).collect::<Vec<_>>(),
                });
                if let Some(label) = &segment.speaker_label {
                    out["speaker"] = speakers.number(label).into();
                }
                out
            })
            .collect();
        results["utterances"] = list.into();
    }
    json!({"metadata": metadata(facts), "results": results})
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaiecho::stream::protocol::Delta;

    fn spoken(word: &str, start: f64, probability: f64, speaker: Option<&str>) -> WordOut {
        WordOut {
            word: word.into(),
            start,
            end: start + 0.3,
            probability: Some(probability),
            speaker_label: speaker.map(str::to_owned),
        }
    }

    #[test]
    fn a_final_delta_becomes_deepgram_results_with_words_and_speakers() {
        let delta = Delta {
            text: " Ever tried. Ever failed.".into(),
            start: 1.0,
            end: 2.5,
            is_final: true,
            utterance: 0,
            speaker_label: Some("spk_1".into()),
            language: None,
            words: Some(vec![
                spoken(" Ever", 1.0, 0.9, None),
                spoken(" tried.", 1.3, 0.7, Some("alice")),
            ]),
        };
        let context = ResultsContext {
            request_id: "req",
            punctuate: false,
            speech_final: true,
            from_finalize: false,
        };
        let mut speakers = Speakers::default();
        let message = results(&delta, &context, Some(&mut speakers));
        assert_eq!(message["type"], "Results");
        assert_eq!(message["duration"], 1.5);
        assert_eq!(message["speech_final"], true);
        let alternative = &message["channel"]["alternatives"][0];
        assert_eq!(alternative["transcript"], "ever tried ever failed");
        assert!((alternative["confidence"].as_f64().unwrap() - 0.8).abs() < 1e-9);
        assert_eq!(alternative["words"][0]["word"], "ever");
        assert_eq!(alternative["words"][1]["punctuated_word"], "tried.");
        assert_eq!(
            alternative["words"][0]["speaker"], 0,
            "the delta's speaker, first heard"
        );
        assert_eq!(alternative["words"][1]["speaker"], 1);
        assert_eq!(message["metadata"]["model_uuid"], MODEL_UUID);
        // An interim is never speech-final; punctuation kept when asked for.
        let interim = Delta {
            is_final: false,
            words: None,
            ..delta
        };
        let context = ResultsContext {
            punctuate: true,
            ..context
        };
        let message = results(&interim, &context, None);
        assert_eq!(message["speech_final"], false);
        assert_eq!(
            message["channel"]["alternatives"][0]["transcript"],
            "Ever tried. Ever failed."
        );
        assert_eq!(message["channel"]["alternatives"][0]["words"], json!([]));
    }

    #[test]
    fn bare_words_keep_apostrophes_and_drop_the_rest() {
        assert_eq!(
            transcript("  Don't STOP, believing!", false),
            "don't stop believing"
        );
        assert_eq!(transcript(" Hello, world. ", true), "Hello, world.");
    }
}
