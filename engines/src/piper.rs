//! Piper (VITS) text-to-speech: normalised text → espeak-ng IPA phonemes → Piper phoneme ids
//! (`^ (phoneme _)* $`) → the voice's encoder (text encoder, durations, flow) once per
//! sentence → its HiFi-GAN decoder over the latent frames, at the voice's rate (22.05 kHz
//! for the fetched voice). Speed scales the length scale.
//!
//! `models/fetch` splits the voice's graph in two at the decoder (`convert_piper.py`).
//! The decoder is convolutions only, so a span of frames decodes on its own given
//! [`CONTEXT_FRAMES`] on each side: a stream's first audio waits for the encoder and
//! about 0.2 s of decoding, not the whole sentence's (the decoder is about 60% of it).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use ort::session::Session;
use ort::value::Tensor;
use serde::Deserialize;

use crate::error::{EngineError, EngineResult};
use crate::models::ModelDir;
use crate::normalize::normalize;
use crate::phonemizer::{Phonemizer, PhonemizerCommand};
use crate::runtime::Runtime;

pub const ENGINE_ID: &str = "audio.tts.piper-joe";

#[derive(Debug, Deserialize)]
struct VoiceConfig {
    audio: AudioConfig,
    inference: InferenceConfig,
    espeak: EspeakConfig,
    phoneme_id_map: HashMap<String, Vec<i64>>,
}

#[derive(Debug, Deserialize)]
struct AudioConfig {
    sample_rate: u32,
}

#[derive(Debug, Deserialize)]
struct InferenceConfig {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

#[derive(Debug, Deserialize)]
struct EspeakConfig {
    voice: String,
}

/// Splits a sentence after its first clause (at `,`, `;` or `:`) when both sides have
/// at least three words: the first audio of a stream comes from the short clause, not
/// the whole sentence (VITS time grows with the text), and a clause boundary is a pause
/// anyway.
pub fn first_clause(sentence: &str) -> Option<(String, String)> {
    let words = |text: &str| text.split_whitespace().count();
    sentence
        .char_indices()
        .filter(|(_, c)| matches!(c, ',' | ';' | ':'))
        .map(|(at, c)| {
            (
                &sentence[..at + c.len_utf8()],
                &sentence[at + c.len_utf8()..],
            )
        })
        .find(|(head, tail)| words(head) >= 3 && words(tail) >= 3)
        .map(|(head, tail)| (head.trim().to_owned(), tail.trim().to_owned()))
}

/// Longest text synthesized in one engine call. The encoder's work and memory grow with
/// the phonemes of one call, so a 10,000-character "sentence" (no full stop, or one
/// long token) is spoken as pieces of at most this length instead of one huge call.
pub const MAX_SENTENCE_CHARS: usize = 400;

/// `sentence` in pieces of at most [`MAX_SENTENCE_CHARS`] characters, cut after the last
/// clause mark (`,;:`) or else the last space before the limit, or hard at the limit.
pub fn bounded_pieces(sentence: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = sentence.trim();
    while rest.chars().count() > MAX_SENTENCE_CHARS {
        let limit = rest
            .char_indices()
            .nth(MAX_SENTENCE_CHARS)
            .map_or(rest.len(), |(at, _)| at);
        let window = &rest[..limit];
        let cut = window
            .rfind([',', ';', ':'])
            .map(|at| at + 1)
            .filter(|at| *at > limit / 2)
            .or_else(|| window.rfind(' ').filter(|at| *at > 0))
            .unwrap_or(limit);
        pieces.push(rest[..cut].trim().to_owned());
        rest = rest[cut..].trim_start();
    }
    if !rest.is_empty() {
        pieces.push(rest.to_owned());
    }
    pieces.retain(|piece| !piece.is_empty());
    pieces
}

/// Latent frames decoded on each side of a span for context. The decoder's receptive
/// field: with 12 a span's audio equals the whole decode within 1e-4 (with 8 it is off
/// by 6e-4; measured on this voice); `engines/tests/tts.rs` holds spans to the whole.
/// Every frame more is decoded twice at each cut (a stream's first piece has one).
pub const CONTEXT_FRAMES: usize = 12;

/// Frames decoded in one decoder call by [`PiperVoice::synthesize`] (about 6 s of
/// audio): spans decode to the same samples as the whole (`engines/tests/tts.rs`).
pub const DECODE_SPAN_FRAMES: usize = 512;

/// Frames in a stream's first piece of audio (0.23 s at 256 samples per frame and
/// 22.05 kHz): short to decode, and long enough to cover decoding the rest of a clause.
pub const FIRST_PIECE_FRAMES: usize = 20;

/// A sentence after the encoder: `channels × frames`, row-major.
pub struct Latent {
    channels: usize,
    frames: usize,
    values: Vec<f32>,
}

impl Latent {
    /// Frames of audio (each one decoder hop, 256 samples for Piper voices).
    pub fn frames(&self) -> usize {
        self.frames
    }
}

pub struct PiperVoice {
    encoder: Mutex<Session>,
    decoder: Mutex<Session>,
    config: VoiceConfig,
    /// espeak-ng in its own process: a fault there fails one text, not this process.
    phonemizer: Phonemizer,
}

impl PiperVoice {
    /// Loads the voice and starts its phonemizer child with `phonemizer`.
    pub fn load(
        runtime: &Runtime,
        models: &ModelDir,
        phonemizer: &PhonemizerCommand,
    ) -> EngineResult<PiperVoice> {
        let encoder = models.file(ENGINE_ID, "piper-joe/split/encoder.onnx")?;
        let decoder = models.file(ENGINE_ID, "piper-joe/split/decoder.onnx")?;
        let config_path = models.file(ENGINE_ID, "piper-joe/en_US-joe-medium.onnx.json")?;
        let unusable = |reason: String| EngineError::ModelUnavailable {
            id: ENGINE_ID.into(),
            reason,
        };
        let text = std::fs::read_to_string(&config_path).map_err(|e| unusable(e.to_string()))?;
        let config: VoiceConfig =
            serde_json::from_str(&text).map_err(|e| unusable(e.to_string()))?;
        for required in ["^", "_", "$"] {
            if !config.phoneme_id_map.contains_key(required) {
                return Err(unusable(format!("phoneme map lacks `{required}`")));
            }
        }
        let threads = runtime.latency_threads();
        Ok(PiperVoice {
            encoder: Mutex::new(runtime.session_threads(ENGINE_ID, &encoder, threads)?),
            decoder: Mutex::new(runtime.session_threads(ENGINE_ID, &decoder, threads)?),
            config,
            phonemizer: Phonemizer::start(phonemizer.clone())?,
        })
    }

    pub fn sample_rate(&self) -> u32 {
        self.config.audio.sample_rate
    }

    /// The voice's phonemizer (its restarts are worth watching).
    pub fn phonemizer(&self) -> &Phonemizer {
        &self.phonemizer
    }

    /// Piper phoneme ids of an IPA string; phonemes the voice does not know are skipped.
    pub fn phoneme_ids(&self, phonemes: &str) -> Vec<i64> {
        let map = &self.config.phoneme_id_map;
        let id = |symbol: &str| map.get(symbol).cloned().unwrap_or_default();
        let mut ids = id("^");
        let mut buffer = [0u8; 4];
        for phoneme in phonemes.chars() {
            if let Some(phoneme_ids) = map.get(phoneme.encode_utf8(&mut buffer) as &str) {
                ids.extend_from_slice(phoneme_ids);
                ids.extend(id("_"));
            }
        }
        ids.extend(id("$"));
        ids
    }

    /// Sentences of `text` (after normalisation, split at `.`, `!`, `?`, and any
    /// longer than [`MAX_SENTENCE_CHARS`] cut by [`bounded_pieces`]), for synthesis one
    /// at a time so streaming can start after the first.
    pub fn sentences(text: &str) -> Vec<String> {
        Self::unbounded_sentences(text)
            .iter()
            .flat_map(|sentence| bounded_pieces(sentence))
            .collect()
    }

    fn unbounded_sentences(text: &str) -> Vec<String> {
        let normalized = normalize(text);
        let mut sentences = Vec::new();
        let mut current = String::new();
        for (clause, mark) in crate::phonemize::clauses(&normalized) {
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(clause);
            if let Some(mark) = mark {
                current.push(mark);
            }
            if matches!(mark, Some('.' | '!' | '?') | None) {
                sentences.push(std::mem::take(&mut current));
            }
        }
        if !current.is_empty() {
            sentences.push(current);
        }
        sentences
    }

    /// Mono samples in [-1, 1] at `sample_rate()` for one sentence (or any short text).
    /// `speed` > 1 speaks faster.
    /// The decoder runs over spans of at most [`DECODE_SPAN_FRAMES`], so its activations
    /// (hundreds of channels at the audio rate) stay bounded however long the sentence.
    pub fn synthesize(&self, text: &str, speed: f32) -> EngineResult<Vec<f32>> {
        let Some(latent) = self.encode(text, speed)? else {
            return Ok(Vec::new());
        };
        let mut samples = Vec::new();
        for start in (0..latent.frames).step_by(DECODE_SPAN_FRAMES) {
            let end = (start + DECODE_SPAN_FRAMES).min(latent.frames);
            samples.extend(self.decode(&latent, start..end)?);
        }
        Ok(samples)
    }

    /// The encoder's latent for one sentence; `None` when it has nothing to say.
    pub fn encode(&self, text: &str, speed: f32) -> EngineResult<Option<Latent>> {
        if !(0.25..=4.0).contains(&speed) {
            return Err(EngineError::InvalidInput(format!(
                "speed {speed} outside 0.25..4"
            )));
        }
        let phonemes = self
            .phonemizer
            .phonemize(&normalize(text), &self.config.espeak.voice)?;
        let ids = self.phoneme_ids(&phonemes);
        if ids.len() <= 2 {
            return Ok(None);
        }
        let length = ids.len();
        let inference = &self.config.inference;
        let scales = vec![
            inference.noise_scale,
            inference.length_scale / speed,
            inference.noise_w,
        ];
        let inputs = ort::inputs![
            "input" => Tensor::from_array(([1usize, length], ids))?,
            "input_lengths" => Tensor::from_array(([1usize], vec![length as i64]))?,
            "scales" => Tensor::from_array(([3usize], scales))?,
        ];
        let mut session = lock(&self.encoder)?;
        let outputs = session.run(inputs)?;
        let (shape, values) = outputs["latent"].try_extract_tensor::<f32>()?;
        let &[1, channels, frames] = &shape[..] else {
            return Err(EngineError::Inference(format!("latent of shape {shape:?}")));
        };
        let (channels, frames) = (channels as usize, frames as usize);
        Ok((frames > 0).then(|| Latent {
            channels,
            frames,
            values: values.to_vec(),
        }))
    }

    /// The audio of `frames` of a latent, in [-1, 1]: decoded with up to
    /// [`CONTEXT_FRAMES`] more on each side, which are cut off again. Consecutive ranges
    /// join into the audio of their union.
    pub fn decode(&self, latent: &Latent, frames: Range<usize>) -> EngineResult<Vec<f32>> {
        if frames.is_empty() || frames.end > latent.frames {
            return Err(EngineError::InvalidInput(format!(
                "frames {frames:?} of a {}-frame latent",
                latent.frames
            )));
        }
        let span = frames.start.saturating_sub(CONTEXT_FRAMES)
            ..(frames.end + CONTEXT_FRAMES).min(latent.frames);
        let mut slice = Vec::with_capacity(latent.channels * span.len());
        for row in latent.values.chunks_exact(latent.frames) {
            slice.extend_from_slice(&row[span.clone()]);
        }
        let input = Tensor::from_array(([1usize, latent.channels, span.len()], slice))?;
        let mut session = lock(&self.decoder)?;
        let outputs = session.run(ort::inputs!["latent" => input])?;
        let (_, audio) = outputs["output"].try_extract_tensor::<f32>()?;
        let hop = audio.len() / span.len();
        let keep = (frames.start - span.start) * hop..(frames.end - span.start) * hop;
        Ok(audio[keep].iter().map(|s| s.clamp(-1.0, 1.0)).collect())
    }
}

fn lock(session: &Mutex<Session>) -> EngineResult<std::sync::MutexGuard<'_, Session>> {
    session
        .lock()
        .map_err(|_| EngineError::Inference("TTS session poisoned".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_clause_splits_off_when_both_sides_are_long_enough() {
        assert_eq!(
            first_clause("When the meeting ends, please send the notes to everyone."),
            Some((
                "When the meeting ends,".to_owned(),
                "please send the notes to everyone.".to_owned()
            ))
        );
        assert_eq!(first_clause("Yes, I will come tomorrow."), None);
        assert_eq!(first_clause("No clauses in this one."), None);
    }

    #[test]
    fn long_sentences_are_cut_into_bounded_pieces_without_losing_text() {
        let word = "x".repeat(10_000);
        let pieces = bounded_pieces(&word);
        assert_eq!(pieces.len(), 25);
        assert!(
            pieces
                .iter()
                .all(|p| p.chars().count() <= MAX_SENTENCE_CHARS)
        );
        assert_eq!(pieces.concat(), word);
        let words = "alpha beta, gamma delta ".repeat(100);
        let pieces = bounded_pieces(&words);
        assert!(
            pieces
                .iter()
                .all(|p| p.chars().count() <= MAX_SENTENCE_CHARS)
        );
        assert!(pieces[0].ends_with(','), "{}", pieces[0]);
        let rejoined: Vec<&str> = pieces.iter().flat_map(|p| p.split_whitespace()).collect();
        assert_eq!(rejoined, words.split_whitespace().collect::<Vec<_>>());
        assert_eq!(bounded_pieces("Short one."), vec!["Short one."]);
        assert!(bounded_pieces("  ").is_empty());
        // Multi-byte characters are counted as characters and never split.
        assert!(
            bounded_pieces(&"é".repeat(1_000))
                .iter()
                .all(|p| p.chars().count() <= 400)
        );
    }

    #[test]
    fn sentences_split_after_normalisation() {
        assert_eq!(
            PiperVoice::sentences("Dr. Smith paid $3.50, then left. Did he? Yes"),
            vec![
                "Doctor Smith paid three dollars fifty cents, then left.",
                "Did he?",
                "Yes"
            ]
        );
    }
}
