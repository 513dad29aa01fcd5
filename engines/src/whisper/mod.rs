//! Whisper speech-to-text over the ONNX graphs `models/convert_whisper.py` writes: the
//! log-mel front end here, one encoder run for a batch of 30 s windows (which also
//! computes every decoder layer's cross-attention keys and values once), then a decoder
//! with a KV cache stepping all windows of the batch together, greedy or beam search,
//! with Whisper's timestamp grammar giving segment times.
//!
//! Windows decode in lockstep as one batch: the decoder's per-step cost is mostly
//! reading its weights, so N windows cost little more than one.

pub mod align;
pub mod chunks;
mod graphs;
pub mod mel;
mod recording;
pub mod rules;
pub mod search;
pub mod tokenizer;
mod window;

use graphs::gather_rows;
use recording::{assemble, context_frames, placed, speech_regions, speech_windows};

use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};

use crate::error::{EngineError, EngineResult};
use crate::models::ModelDir;
use crate::runtime::Runtime;
use crate::segments::{self, SegmentParams};
use crate::silero::{self, SileroVad};
use align::WordTiming;
use mel::LogMel;
use rules::Suppress;
use search::{Row, Search};
use tokenizer::Tokenizer;

pub const ENGINE_ID: &str = "audio.stt.whisper-tiny-en";
pub const BASE_ENGINE_ID: &str = "audio.stt.whisper-base";

/// A Whisper model on disk: its engine id and its folder under the models directory
/// (`ct2/` with the vocabulary and config, `onnx/` with the converted graphs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub id: &'static str,
    pub dir: &'static str,
}

/// English-only tiny: the default, fastest.
pub const TINY_EN: Variant = Variant {
    id: ENGINE_ID,
    dir: "whisper-tiny-en",
};
/// Multilingual base (99 languages, language detection).
pub const BASE: Variant = Variant {
    id: BASE_ENGINE_ID,
    dir: "whisper-base",
};
pub const SAMPLE_RATE: u32 = 16_000;
/// Seconds per timestamp token.
pub const TIME_PRECISION: f32 = 0.02;
/// Vocabulary size from which a model is multilingual (51864 English-only, 51865 and up
/// multilingual), as the reference's `is_multilingual`.
const MULTILINGUAL_VOCAB: usize = 51_865;
/// Tokens sampled per window at most (half the text context, as the reference).
const MAX_SAMPLED: usize = 224;
/// The reference's silence rule: a window whose no-speech probability is above this and
/// whose average log-probability is below `LOGPROB_THRESHOLD` is treated as silent.
const NO_SPEECH_THRESHOLD: f32 = 0.6;
const LOGPROB_THRESHOLD: f32 = -1.0;

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// 1 = greedy; more = beam search with that many beams.
    pub beam_size: usize,
    /// Timestamp tokens (segment times); without them a window is one segment.
    pub timestamps: bool,
    /// Language code; English-only models accept only `en` (or none); multilingual
    /// models detect the language of each window when none is given.
    pub language: Option<String>,
    /// Encode only as much context as the audio needs (its length plus two seconds,
    /// at least six, in whole seconds) instead of a zero-padded 30 s window: a short
    /// utterance costs a fifth of the encoder time, which is what live streaming needs;
    /// batch transcription keeps the reference's full windows.
    pub compact: bool,
    /// The audio is one utterance of at most 30 s (a stream's endpointer cut it): decode
    /// it as one window, without the VAD pass that finds speech in recordings.
    pub single_window: bool,
    /// Word timings in every segment (one more decoder pass per window, over its text,
    /// whose alignment heads' attention is aligned to the audio).
    pub word_timestamps: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            beam_size: 1,
            timestamps: true,
            language: None,
            compact: false,
            single_window: false,
            word_timestamps: false,
        }
    }
}

/// A stretch of text with its times in seconds (from the window's start in a window's
/// decoding, from the recording's start in a transcript), its text tokens, and its
/// window's decoding statistics (what OpenAI's `verbose_json` segments carry).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start: f32,
    pub end: f32,
    pub text: String,
    pub tokens: Vec<u32>,
    /// Where its window starts, in 10 ms mel frames of the recording.
    pub seek: usize,
    pub avg_logprob: f32,
    pub no_speech_prob: f32,
    /// With `word_timestamps`: its words, times on the same clock as the segment's.
    pub words: Vec<WordTiming>,
}

/// The decoding of one window.
#[derive(Debug, Clone)]
pub struct WindowText {
    /// The language it was decoded as (given, detected, or `en` for English-only).
    pub language: String,
    pub text: String,
    pub segments: Vec<Segment>,
    pub tokens: Vec<u32>,
    pub avg_logprob: f32,
    pub no_speech_prob: f32,
}

/// A whole recording's transcript; segment times are from the recording's start.
#[derive(Debug, Clone)]
pub struct Transcript {
    pub text: String,
    pub segments: Vec<Segment>,
    pub duration: f32,
    /// The language of most of the speech (given, detected, or `en` for English-only);
    /// `None` when nothing was heard.
    pub language: Option<String>,
}

/// Windows encoded and decoded together at most (memory: about 40 MB each).
const WINDOW_BATCH: usize = 8;

/// Voice activity settings for cutting long audio: generous padding so word edges
/// survive, pauses of 300 ms or more split.
const SPEECH: SegmentParams = SegmentParams {
    threshold: 0.5,
    min_speech_ms: 250,
    min_silence_ms: 300,
    pad_ms: 200,
};

/// Where the sound is, for word edges: every stretch of speech however short, split at
/// 100 ms pauses, with a little padding for the Silero frame (32 ms).
const SOUND: SegmentParams = SegmentParams {
    threshold: 0.5,
    min_speech_ms: 0,
    min_silence_ms: 100,
    pad_ms: 40,
};

pub struct Whisper {
    variant: Variant,
    /// Language codes and their tokens (empty for English-only models).
    languages: Vec<(String, u32)>,
    encoder: Mutex<Session>,
    decoder: Mutex<Session>,
    tokenizer: Tokenizer,
    mel: LogMel,
    suppress: Suppress,
    layers: usize,
    heads: usize,
    head_dim: usize,
}

/// `suppress_ids` and `suppress_ids_begin` of the model's `config.json`.
fn suppress_lists(config: &Path) -> EngineResult<Suppress> {
    #[derive(serde::Deserialize)]
    struct Config {
        suppress_ids: Vec<u32>,
        suppress_ids_begin: Vec<u32>,
    }
    let text = std::fs::read_to_string(config).map_err(|e| EngineError::ModelUnavailable {
        id: ENGINE_ID.into(),
        reason: format!("{}: {e}", config.display()),
    })?;
    let config: Config =
        serde_json::from_str(&text).map_err(|e| EngineError::ModelUnavailable {
            id: ENGINE_ID.into(),
            reason: format!("{}: {e}", config.display()),
        })?;
    Ok(Suppress {
        always: config.suppress_ids,
        at_begin: config.suppress_ids_begin,
    })
}

/// The steps of a transcription, for [`Whisper::transcribe_many_phased`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Finding the speech (Silero VAD).
    Vad,
    /// Whisper's encoder and decoder over the speech windows.
    Decode,
}

impl Whisper {
    /// The English-only tiny model.
    pub fn load(runtime: &Runtime, models: &ModelDir) -> EngineResult<Whisper> {
        Whisper::load_variant(runtime, models, TINY_EN)
    }

    /// The multilingual base model.
    pub fn load_base(runtime: &Runtime, models: &ModelDir) -> EngineResult<Whisper> {
        Whisper::load_variant(runtime, models, BASE)
    }

    pub fn load_variant(
        runtime: &Runtime,
        models: &ModelDir,
        variant: Variant,
    ) -> EngineResult<Whisper> {
        let file = |name: &str| models.file(variant.id, &format!("{}/{name}", variant.dir));
        let encoder = runtime.session(ENGINE_ID, &file("onnx/encoder.onnx")?)?;
        let decoder = runtime.session(ENGINE_ID, &file("onnx/decoder.onnx")?)?;
        let tokenizer = Tokenizer::load(&file("ct2/vocabulary.txt")?)?;
        let suppress = suppress_lists(&file("ct2/config.json")?)?;
        let layers = encoder
            .outputs()
            .iter()
            .filter(|o| o.name().starts_with("cross_k_"))
            .count();
        let unexpected = |reason: String| EngineError::ModelUnavailable {
            id: variant.id.into(),
            reason,
        };
        let shape = decoder
            .inputs()
            .iter()
            .find(|i| i.name() == "past_k_0")
            .and_then(|i| i.dtype().tensor_shape().map(|s| s.to_vec()))
            .ok_or_else(|| unexpected("decoder has no past_k_0 input".into()))?;
        let (heads, head_dim) = match shape.as_slice() {
            [_, heads, _, dim] if *heads > 0 && *dim > 0 => (*heads as usize, *dim as usize),
            other => return Err(unexpected(format!("past_k_0 shape {other:?}"))),
        };
        if layers == 0 {
            return Err(unexpected("encoder has no cross_k outputs".into()));
        }
        // English-only vocabularies carry the language tokens too but never use them;
        // the reference tells the two apart by size.
        let languages = match tokenizer.vocab_size() >= MULTILINGUAL_VOCAB {
            true => tokenizer.language_tokens(),
            false => Vec::new(),
        };
        if !languages.is_empty() && tokenizer.transcribe.is_none() {
            return Err(unexpected(
                "multilingual vocabulary without <|transcribe|>".into(),
            ));
        }
        Ok(Whisper {
            variant,
            languages,
            encoder: Mutex::new(encoder),
            decoder: Mutex::new(decoder),
            tokenizer,
            mel: LogMel::new(),
            suppress,
            layers,
            heads,
            head_dim,
        })
    }

    /// Transcribes a recording of any length (16 kHz mono): the VAD finds speech,
    /// speech is packed into windows of at most 30 s, the windows decode in batches.
    /// Audio without speech gives an empty transcript without running Whisper.
    pub fn transcribe(
        &self,
        vad: &SileroVad,
        samples: &[f32],
        options: &Options,
    ) -> EngineResult<Transcript> {
        self.transcribe_many(vad, &[(samples, options)])
            .pop()
            .unwrap_or_else(|| Err(EngineError::Inference("no result".into())))
    }

    /// Transcribes several recordings at once (concurrent requests): the windows of all
    /// of them with the same options decode as one batch. One result per recording; a
    /// failure fails only the recordings whose windows were in the failed batch.
    pub fn transcribe_many(
        &self,
        vad: &SileroVad,
        requests: &[(&[f32], &Options)],
    ) -> Vec<EngineResult<Transcript>> {
        self.transcribe_many_phased(vad, requests, &mut |_| {})
    }

    /// [`Whisper::transcribe_many`], telling `phase` when the VAD starts and when the
    /// decoding does (a caller times the two, e.g. as trace spans).
    pub fn transcribe_many_phased(
        &self,
        vad: &SileroVad,
        requests: &[(&[f32], &Options)],
        phase: &mut dyn FnMut(Phase),
    ) -> Vec<EngineResult<Transcript>> {
        phase(Phase::Vad);
        let mut results: Vec<EngineResult<Vec<(Segment, String)>>> = requests
            .iter()
            .map(|(_, options)| self.check(options).map(|()| Vec::new()))
            .collect();
        // (recording, window range) of every window to decode.
        let mut pending: Vec<(usize, Range<usize>)> = Vec::new();
        // Per recording with word timestamps: its speech regions in seconds.
        let mut sound: Vec<Vec<(f32, f32)>> = vec![Vec::new(); requests.len()];
        for (index, (samples, options)) in requests.iter().enumerate() {
            if results[index].is_err() {
                continue;
            }
            if options.single_window {
                let end = samples.len().min(mel::WINDOW_SAMPLES);
                pending.push((index, 0..end));
                if options.word_timestamps {
                    // Words still snap to where the sound is (a stream's utterance).
                    match vad.probabilities(&samples[..end]) {
                        Ok(probabilities) => sound[index] = speech_regions(&probabilities, end),
                        Err(error) => results[index] = Err(error),
                    }
                }
                continue;
            }
            match speech_windows(vad, samples) {
                Ok((windows, probabilities)) => {
                    pending.extend(windows.into_iter().map(|w| (index, w)));
                    if options.word_timestamps {
                        sound[index] = speech_regions(&probabilities, samples.len());
                    }
                }
                Err(error) => results[index] = Err(error),
            }
        }
        phase(Phase::Decode);
        // Windows batch when their options and encoder context agree.
        let key = |(index, window): &(usize, Range<usize>)| {
            let options = requests[*index].1;
            (options, context_frames(window.len(), options.compact))
        };
        while let Some(first) = pending.first() {
            let (options, frames) = key(first);
            let (group, rest): (Vec<_>, Vec<_>) = pending
                .into_iter()
                .partition(|window| key(window) == (options, frames));
            pending = rest;
            for batch in group.chunks(WINDOW_BATCH) {
                let audio: Vec<&[f32]> = batch
                    .iter()
                    .map(|(index, window)| &requests[*index].0[window.clone()])
                    .collect();
                match self.transcribe_windows(&audio, options) {
                    Ok(texts) => {
                        for ((index, window), text) in batch.iter().zip(texts) {
                            if let Ok(segments) = &mut results[*index] {
                                segments.extend(placed(text, window.start));
                            }
                        }
                    }
                    Err(error) => {
                        for (index, _) in batch {
                            results[*index] = Err(error.clone());
                        }
                    }
                }
            }
        }
        results
            .into_iter()
            .zip(requests)
            .zip(sound)
            .map(|((result, (samples, _)), sound)| assemble(result?, samples.len(), &sound))
            .collect()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Whether it knows other languages than English (and detects them).
    pub fn multilingual(&self) -> bool {
        !self.languages.is_empty()
    }

    /// The language codes it accepts.
    pub fn languages(&self) -> Vec<String> {
        match self.multilingual() {
            true => self
                .languages
                .iter()
                .map(|(code, _)| code.clone())
                .collect(),
            false => vec!["en".to_owned()],
        }
    }

    /// Options this model can honour.
    fn check(&self, options: &Options) -> EngineResult<()> {
        match &options.language {
            Some(language) if self.language_token(language).is_none() => {
                Err(EngineError::InvalidInput(match self.multilingual() {
                    true => format!("language `{language}` is not one this model knows"),
                    false => {
                        format!("language `{language}` is not supported by the English-only model")
                    }
                }))
            }
            _ => Ok(()),
        }
    }

    /// The token of a language code; English-only models know `en` without one.
    fn language_token(&self, language: &str) -> Option<Option<u32>> {
        match self.multilingual() {
            true => self
                .languages
                .iter()
                .find(|(code, _)| code == language)
                .map(|(_, id)| Some(*id)),
            false => (language == "en").then_some(None),
        }
    }

    /// Each window's most likely language: the decoder reads `<|startoftranscript|>`
    /// and the language tokens' logits at that position are compared, as the
    /// reference's `detect_language`.
    fn detect_languages(&self, cross: &[DynValue], windows: usize) -> EngineResult<Vec<u32>> {
        let tokens = vec![i64::from(self.tokenizer.sot); windows];
        let past = self.empty_past(windows)?;
        let vocab = self.tokenizer.vocab_size();
        self.run_decoder(&tokens, windows, 1, past, cross, |outputs| {
            let (_, logits) = outputs["logits"].try_extract_tensor::<f32>()?;
            Ok(logits
                .chunks_exact(vocab)
                .map(|row| {
                    self.languages
                        .iter()
                        .map(|(_, id)| *id)
                        .max_by(|a, b| row[*a as usize].total_cmp(&row[*b as usize]))
                        .unwrap_or(self.tokenizer.sot)
                })
                .collect())
        })
    }

    fn language_code(&self, token: Option<u32>) -> String {
        token
            .and_then(|id| self.languages.iter().find(|(_, t)| *t == id))
            .map_or_else(|| "en".to_owned(), |(code, _)| code.clone())
    }

    /// Transcribes up to 30 s windows of 16 kHz mono audio as one batch.
    pub fn transcribe_windows(
        &self,
        windows: &[&[f32]],
        options: &Options,
    ) -> EngineResult<Vec<WindowText>> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        self.check(options)?;
        let longest = windows.iter().map(|w| w.len()).max().unwrap_or(0);
        let cross = self.encode(windows, context_frames(longest, options.compact))?;
        // The start of each window's prompt: `<|startoftranscript|>`, then for a
        // multilingual model the language (given or detected) and the task.
        let languages: Vec<Option<u32>> = match (&options.language, self.multilingual()) {
            (_, false) => vec![None; windows.len()],
            (Some(language), true) => {
                vec![self.language_token(language).flatten(); windows.len()]
            }
            (None, true) => self
                .detect_languages(&cross, windows.len())?
                .into_iter()
                .map(Some)
                .collect(),
        };
        let sot_sequences: Vec<Vec<u32>> = languages
            .iter()
            .map(|language| {
                let mut sequence = vec![self.tokenizer.sot];
                if let Some(language) = language {
                    sequence.push(*language);
                    sequence.extend(self.tokenizer.transcribe);
                }
                sequence
            })
            .collect();
        // Beam search reorders the cross-attention rows; the alignment pass needs the
        // windows' own.
        let kept = match options.word_timestamps {
            true => Some(
                cross
                    .iter()
                    .map(|value| gather_rows(value, &(0..windows.len()).collect::<Vec<_>>()))
                    .collect::<EngineResult<Vec<_>>>()?,
            ),
            false => None,
        };
        let prompts: Vec<Vec<u32>> = sot_sequences
            .iter()
            .map(|sequence| {
                let mut prompt = sequence.clone();
                if !options.timestamps {
                    prompt.push(self.tokenizer.no_timestamps);
                }
                prompt
            })
            .collect();
        let search = Search::new(windows.len(), options.beam_size.max(1), MAX_SAMPLED);
        let results = self.decode(&prompts, cross, search, options)?;
        let mut texts: Vec<WindowText> = results
            .into_iter()
            .zip(windows)
            .zip(&languages)
            .map(|(((row, no_speech_prob), window), language)| {
                let duration = window.len() as f32 / SAMPLE_RATE as f32;
                let mut text = self.window_text(row, no_speech_prob, duration);
                text.language = self.language_code(*language);
                text
            })
            .collect();
        if let Some(cross) = kept {
            for (index, (text, window)) in texts.iter_mut().zip(windows).enumerate() {
                let frames = window.len() / mel::HOP / 2;
                let sequence = &sot_sequences[index];
                let words = self.align(&cross, index, sequence, &text.segments, frames)?;
                align::place_words(&mut text.segments, words);
            }
        }
        Ok(texts)
    }
}
