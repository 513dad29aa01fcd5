//! Live endpointing: turns a stream of 16 kHz audio with one speech probability per
//! 512-sample frame into transcription work for a streaming recognizer. Pure logic (the
//! caller runs the VAD), so every rule is testable without a model.
//!
//! An utterance starts when a frame reaches `threshold` (with `pad` of audio from before
//! it) and ends after `silence` below `threshold - 0.15`. While it lasts the caller is
//! asked for a partial every `chunk` of new audio. When silence begins and has lasted
//! `tentative`, the utterance so far is handed out as a *candidate*: if the silence goes
//! on to `silence` with no new speech, the final is that same audio, so a caller that
//! started transcribing the candidate has the final's text early (final latency is the
//! silence wait, not the silence wait plus the recognizer). Utterances longer than
//! `max_utterance` are cut at their quietest recent frame, since the recognizer's window
//! is bounded.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::silero::FRAME;

const RATE: usize = 16_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndpointParams {
    pub threshold: f32,
    /// Silence that ends an utterance.
    pub silence_ms: u32,
    /// Silence after which the utterance so far is handed out as a final candidate.
    pub tentative_ms: u32,
    /// Audio kept from before the first speech frame.
    pub pad_ms: u32,
    /// Speech shorter than this (in frames above the threshold) is not an utterance.
    pub min_speech_ms: u32,
    /// New audio between partials.
    pub chunk_ms: u32,
    /// Longest utterance; longer ones are cut.
    pub max_utterance_ms: u32,
}

impl Default for EndpointParams {
    fn default() -> Self {
        EndpointParams {
            threshold: 0.5,
            // Eight VAD frames: long enough to ride over most pauses inside a sentence,
            // short enough for finals well under half a second after speech ends.
            silence_ms: 256,
            tentative_ms: 96,
            pad_ms: 192,
            min_speech_ms: 96,
            chunk_ms: 2000,
            // Whisper's window is 30 s and a compact context adds 2 s of padding.
            max_utterance_ms: 26_000,
        }
    }
}

/// What a snapshot of the utterance is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Interim text while speech goes on.
    Partial,
    /// Silence has begun: likely the final; `Final` with the same key confirms it.
    Candidate,
    /// The utterance is over.
    Final,
}

/// Audio of the current utterance to transcribe.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub kind: Kind,
    /// Utterance number in the stream, from 0.
    pub utterance: u64,
    /// The utterance's audio from its start (with the pre-speech pad) to `end`.
    pub audio: Arc<Vec<f32>>,
    /// Stream time of the first and one past the last sample, in samples.
    pub start: u64,
    pub end: u64,
    /// Stream sample where the speech in `audio` last was: a candidate and a final with
    /// the same `(utterance, speech_end)` hold the same speech.
    pub speech_end: u64,
}

impl Snapshot {
    pub fn key(&self) -> (u64, u64) {
        (self.utterance, self.speech_end)
    }

    pub fn start_seconds(&self) -> f64 {
        self.start as f64 / RATE as f64
    }

    pub fn end_seconds(&self) -> f64 {
        self.end as f64 / RATE as f64
    }
}

struct Utterance {
    number: u64,
    start: u64,
    audio: Vec<f32>,
    /// One probability per frame of the utterance (for cutting at a quiet frame).
    probabilities: Vec<f32>,
    speech_frames: usize,
    /// Stream sample one past the last speech frame.
    speech_end: u64,
    /// Frames of silence since the last speech frame.
    silent_frames: usize,
    /// Audio length at the last partial.
    partial_at: usize,
    candidate_sent: bool,
}

pub struct Endpointer {
    params: EndpointParams,
    /// Samples not yet a whole frame.
    pending: Vec<f32>,
    /// Recent frames before any utterance (the pre-speech pad).
    before: VecDeque<f32>,
    utterance: Option<Utterance>,
    /// Stream position of the next frame, in samples.
    position: u64,
    next_number: u64,
}

fn frames(ms: u32) -> usize {
    (ms as usize * RATE / 1000).div_ceil(FRAME)
}

impl Endpointer {
    pub fn new(params: EndpointParams) -> Endpointer {
        Endpointer {
            params,
            pending: Vec::new(),
            before: VecDeque::new(),
            utterance: None,
            position: 0,
            next_number: 0,
        }
    }

    /// Adds samples; returns the whole frames now ready for the VAD (the caller passes
    /// each with its probability to [`Endpointer::frame`], in order).
    pub fn push(&mut self, samples: &[f32]) -> Vec<Vec<f32>> {
        self.pending.extend_from_slice(samples);
        let whole = self.pending.len() / FRAME * FRAME;
        let ready: Vec<Vec<f32>> = self.pending[..whole]
            .chunks_exact(FRAME)
            .map(<[f32]>::to_vec)
            .collect();
        self.pending.drain(..whole);
        ready
    }

    /// The utterance under way once it has enough speech to be one (`min_speech`): its
    /// number and first sample. A transport can say "speech started" from this, long
    /// before the utterance's first transcript.
    pub fn speaking(&self) -> Option<(u64, u64)> {
        self.utterance
            .as_ref()
            .filter(|u| u.speech_frames >= frames(self.params.min_speech_ms))
            .map(|u| (u.number, u.start))
    }

    /// Whether an utterance is under way.
    pub fn in_speech(&self) -> bool {
        self.utterance.is_some()
    }

    /// Samples of the stream consumed as frames so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// One frame and its speech probability; at most one snapshot comes out.
    pub fn frame(&mut self, frame: &[f32], probability: f32) -> Option<Snapshot> {
        let p = self.params;
        let at = self.position;
        self.position += frame.len() as u64;
        let speech = probability >= p.threshold;
        let quiet = probability < (p.threshold - 0.15).max(0.01);
        let Some(utterance) = &mut self.utterance else {
            if speech {
                let mut audio: Vec<f32> = self.before.drain(..).collect();
                let start = at - audio.len() as u64;
                audio.extend_from_slice(frame);
                let mut probabilities = vec![0.0; audio.len().div_ceil(FRAME) - 1];
                probabilities.push(probability);
                self.utterance = Some(Utterance {
                    number: self.next_number,
                    start,
                    audio,
                    probabilities,
                    speech_frames: 1,
                    speech_end: at + frame.len() as u64,
                    silent_frames: 0,
                    partial_at: 0,
                    candidate_sent: false,
                });
                self.next_number += 1;
            } else {
                self.before.extend(frame);
                let keep = frames(p.pad_ms) * FRAME;
                while self.before.len() > keep {
                    self.before.pop_front();
                }
            }
            return None;
        };
        utterance.audio.extend_from_slice(frame);
        utterance.probabilities.push(probability);
        if speech {
            utterance.speech_frames += 1;
            utterance.speech_end = at + frame.len() as u64;
            utterance.silent_frames = 0;
            utterance.candidate_sent = false;
        } else if quiet || utterance.silent_frames > 0 {
            utterance.silent_frames += 1;
        }
        let long_enough = utterance.speech_frames >= frames(p.min_speech_ms);
        if utterance.silent_frames >= frames(p.silence_ms) {
            let done = self.utterance.take()?;
            return long_enough.then(|| self.snapshot_of(&done, Kind::Final));
        }
        if utterance.audio.len() >= p.max_utterance_ms as usize * RATE / 1000 {
            return self.cut();
        }
        if utterance.silent_frames >= frames(p.tentative_ms) && !utterance.candidate_sent {
            utterance.candidate_sent = true;
            return long_enough.then(|| self.snapshot(Kind::Candidate))?;
        }
        let chunk = p.chunk_ms as usize * RATE / 1000;
        if utterance.silent_frames == 0 && utterance.audio.len() - utterance.partial_at >= chunk {
            utterance.partial_at = utterance.audio.len();
            return long_enough.then(|| self.snapshot(Kind::Partial))?;
        }
        None
    }

    /// Ends the current utterance now (`flush`, end of stream): its final, if it had
    /// enough speech.
    pub fn flush(&mut self) -> Option<Snapshot> {
        let done = self.utterance.take()?;
        (done.speech_frames >= frames(self.params.min_speech_ms))
            .then(|| self.snapshot_of(&done, Kind::Final))
    }

    fn snapshot(&self, kind: Kind) -> Option<Snapshot> {
        self.utterance.as_ref().map(|u| self.snapshot_of(u, kind))
    }

    fn snapshot_of(&self, utterance: &Utterance, kind: Kind) -> Snapshot {
        Snapshot {
            kind,
            utterance: utterance.number,
            audio: Arc::new(utterance.audio.clone()),
            start: utterance.start,
            end: utterance.start + utterance.audio.len() as u64,
            speech_end: utterance.speech_end,
        }
    }

    /// Cuts an over-long utterance at its quietest frame of the last two seconds: the
    /// part before is final, the rest starts the next utterance.
    fn cut(&mut self) -> Option<Snapshot> {
        let mut utterance = self.utterance.take()?;
        let frames_total = utterance.probabilities.len();
        let window = frames(2000).min(frames_total.saturating_sub(1));
        let quietest = (frames_total - window..frames_total)
            .min_by(|a, b| utterance.probabilities[*a].total_cmp(&utterance.probabilities[*b]))
            .unwrap_or(frames_total);
        // The audio may start mid-frame (a short pre-speech pad): cut on sample offsets.
        let offset = utterance.audio.len() - frames_total * FRAME;
        let cut_at = offset + quietest * FRAME;
        let rest = utterance.audio.split_off(cut_at);
        let rest_probabilities = utterance.probabilities.split_off(quietest);
        let cut_sample = utterance.start + cut_at as u64;
        utterance.speech_end = utterance.speech_end.min(cut_sample);
        let final_part = self.snapshot_of(&utterance, Kind::Final);
        let speech_frames = rest_probabilities
            .iter()
            .filter(|p| **p >= self.params.threshold)
            .count();
        self.utterance = Some(Utterance {
            number: self.next_number,
            start: cut_sample,
            audio: rest,
            probabilities: rest_probabilities,
            speech_frames: speech_frames.max(1),
            speech_end: self.position,
            silent_frames: 0,
            partial_at: 0,
            candidate_sent: false,
        });
        self.next_number += 1;
        Some(final_part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pattern` (one probability per frame) and collects the snapshots with the
    /// frame index at which each came out.
    fn run(endpointer: &mut Endpointer, pattern: &[f32]) -> Vec<(usize, Snapshot)> {
        let mut out = Vec::new();
        for (index, probability) in pattern.iter().enumerate() {
            let frame = vec![*probability; FRAME];
            for ready in endpointer.push(&frame) {
                if let Some(snapshot) = endpointer.frame(&ready, *probability) {
                    out.push((index, snapshot));
                }
            }
        }
        out
    }

    fn speech(frames: usize) -> Vec<f32> {
        vec![0.9; frames]
    }

    fn silence(frames: usize) -> Vec<f32> {
        vec![0.05; frames]
    }

    #[test]
    fn an_utterance_gives_a_candidate_then_the_same_speech_as_final() {
        let mut e = Endpointer::new(EndpointParams::default());
        let pattern = [silence(20), speech(40), silence(20)].concat();
        let out = run(&mut e, &pattern);
        let kinds: Vec<Kind> = out.iter().map(|(_, s)| s.kind).collect();
        assert_eq!(kinds, [Kind::Candidate, Kind::Final]);
        let (candidate_at, candidate) = &out[0];
        let (final_at, last) = &out[1];
        // Candidate after 3 silent frames, final after 8.
        assert_eq!(*candidate_at, 20 + 40 + 2);
        assert_eq!(*final_at, 20 + 40 + 7);
        assert_eq!(candidate.key(), last.key());
        // The pre-speech pad is 6 frames (192 ms).
        assert_eq!(last.start, (14 * FRAME) as u64);
        assert_eq!(last.speech_end, (60 * FRAME) as u64);
        assert_eq!(last.end, (68 * FRAME) as u64);
        assert_eq!(last.audio.len() as u64, last.end - last.start);
    }

    #[test]
    fn speech_resuming_after_a_candidate_changes_the_final_key() {
        let mut e = Endpointer::new(EndpointParams::default());
        let pattern = [speech(20), silence(4), speech(20), silence(10)].concat();
        let out = run(&mut e, &pattern);
        let kinds: Vec<Kind> = out.iter().map(|(_, s)| s.kind).collect();
        assert_eq!(kinds, [Kind::Candidate, Kind::Candidate, Kind::Final]);
        assert_ne!(out[0].1.key(), out[2].1.key());
        assert_eq!(out[1].1.key(), out[2].1.key());
        assert_eq!(out[2].1.utterance, 0);
    }

    #[test]
    fn partials_come_every_chunk_while_speech_goes_on() {
        let mut e = Endpointer::new(EndpointParams {
            chunk_ms: 640,
            ..EndpointParams::default()
        });
        // 2 s of speech: partials at 20 and 40 frames of utterance audio (no pad here).
        let out = run(&mut e, &speech(63));
        let at: Vec<usize> = out.iter().map(|(i, _)| *i).collect();
        assert_eq!(at, [19, 39, 59]);
        assert!(out.iter().all(|(_, s)| s.kind == Kind::Partial));
        assert!(e.in_speech());
        let last = e.flush().expect("a final on flush");
        assert_eq!(last.kind, Kind::Final);
        assert_eq!(last.audio.len(), 63 * FRAME);
        assert!(e.flush().is_none());
    }

    #[test]
    fn clicks_shorter_than_min_speech_make_nothing() {
        let mut e = Endpointer::new(EndpointParams::default());
        let pattern = [silence(10), speech(2), silence(30)].concat();
        assert!(run(&mut e, &pattern).is_empty());
        assert!(!e.in_speech());
    }

    #[test]
    fn long_speech_is_cut_at_its_quietest_recent_frame() {
        let mut e = Endpointer::new(EndpointParams {
            max_utterance_ms: 3200,
            ..EndpointParams::default()
        });
        // 100 frames reach 3.2 s; a dip (0.4: not silence) at frame 80.
        let mut pattern = speech(120);
        pattern[80] = 0.4;
        let out = run(&mut e, &pattern);
        let finals: Vec<&Snapshot> = out
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.kind == Kind::Final)
            .collect();
        assert_eq!(finals.len(), 1);
        assert_eq!(finals[0].end, (80 * FRAME) as u64);
        let rest = e.flush().unwrap();
        assert_eq!(rest.start, (80 * FRAME) as u64);
        assert_eq!(rest.end, (120 * FRAME) as u64);
        assert_eq!(rest.utterance, 1);
    }

    #[test]
    fn odd_sized_pushes_make_the_same_frames() {
        let mut e = Endpointer::new(EndpointParams::default());
        let samples: Vec<f32> = (0..5000).map(|i| i as f32).collect();
        let mut frames = Vec::new();
        for piece in samples.chunks(333) {
            frames.extend(e.push(piece));
        }
        assert_eq!(frames.len(), 5000 / FRAME);
        assert_eq!(frames.concat(), samples[..frames.len() * FRAME]);
    }
}
