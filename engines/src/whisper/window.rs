//! A decoded window to text: its segments from the timestamp tokens, its word
//! timings aligned on the cross-attention, and the window's result.

use super::*;

impl Whisper {
    /// Word timings of one window's segments: the decoder reads `[sot sequence,
    /// no_timestamps, text…, eot]` over the window's cross-attention keys and values
    /// (row `index` of `cross`), and the alignment heads' scores over its `frames` audio
    /// frames are aligned by dynamic time warping.
    pub(super) fn align(
        &self,
        cross: &[DynValue],
        index: usize,
        sot_sequence: &[u32],
        segments: &[Segment],
        frames: usize,
    ) -> EngineResult<Vec<WordTiming>> {
        let text: Vec<u32> = segments.iter().flat_map(|s| s.tokens.clone()).collect();
        if text.is_empty() || frames == 0 {
            return Ok(Vec::new());
        }
        let t = &self.tokenizer;
        let mut prompt = sot_sequence.to_vec();
        prompt.push(t.no_timestamps);
        let sequence: Vec<i64> = prompt
            .iter()
            .chain(&text)
            .chain([&t.eot])
            .map(|id| i64::from(*id))
            .collect();
        let cross: Vec<DynValue> = cross
            .iter()
            .map(|value| gather_rows(value, &[index]))
            .collect::<EngineResult<_>>()?;
        let past = self.empty_past(1)?;
        let steps = sequence.len();
        let (logits, scores) = self.run_decoder(&sequence, 1, steps, past, &cross, |outputs| {
            let (_, logits) = outputs["logits"].try_extract_tensor::<f32>()?;
            let alignment =
                outputs
                    .get("alignment")
                    .ok_or_else(|| EngineError::ModelUnavailable {
                        id: self.variant.id.into(),
                        reason: "the decoder has no `alignment` output (run models/fetch)".into(),
                    })?;
            let (shape, scores) = alignment.try_extract_tensor::<f32>()?;
            let shape: Vec<usize> = shape.iter().map(|d| *d as usize).collect();
            Ok((logits.to_vec(), (shape, scores.to_vec())))
        })?;
        let (shape, scores) = scores;
        let [_, heads, rows, stride] = shape[..] else {
            return Err(EngineError::Inference(format!(
                "alignment output shape {shape:?}"
            )));
        };
        // Rows that predict the text tokens and the end of text: from the
        // no-timestamps position to the last text token.
        let matrix = align::attention_matrix(&scores, heads, rows, stride, frames);
        let first = prompt.len() - 1;
        let matrix = &matrix[first * frames.min(stride)..(steps - 1) * frames.min(stride)];
        // As the reference: probabilities among text tokens only.
        let vocab = t.vocab_size();
        let text_vocab = t.eot as usize;
        let token_probs: Vec<f32> = text
            .iter()
            .enumerate()
            .map(|(k, token)| {
                let mut row = logits[(first + k) * vocab..][..text_vocab].to_vec();
                rules::log_softmax(&mut row);
                row[*token as usize].exp()
            })
            .collect();
        let mut ids = text;
        ids.push(t.eot);
        let words = align::group_words(t.pieces(&ids));
        Ok(align::word_timings(
            &words,
            matrix,
            frames.min(stride),
            &token_probs,
        ))
    }

    pub(super) fn window_text(&self, row: Row, no_speech_prob: f32, duration: f32) -> WindowText {
        let avg_logprob = row.logprob / (row.tokens.len() as f32 + 1.0);
        if no_speech_prob > NO_SPEECH_THRESHOLD && avg_logprob < LOGPROB_THRESHOLD {
            return WindowText {
                language: String::new(),
                text: String::new(),
                segments: Vec::new(),
                tokens: Vec::new(),
                avg_logprob,
                no_speech_prob,
            };
        }
        let mut segments = self.segments(&row.tokens, duration);
        for segment in &mut segments {
            segment.avg_logprob = avg_logprob;
            segment.no_speech_prob = no_speech_prob;
        }
        let text = segments
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        WindowText {
            language: String::new(),
            text,
            segments,
            tokens: row.tokens,
            avg_logprob,
            no_speech_prob,
        }
    }

    /// Segments from timestamp pairs: `<|t0|> text <|t1|>`; text after the last
    /// timestamp runs to the window's end.
    pub(super) fn segments(&self, tokens: &[u32], duration: f32) -> Vec<Segment> {
        let t = &self.tokenizer;
        let time = |id: u32| (id - t.timestamp_begin) as f32 * TIME_PRECISION;
        let mut segments = Vec::new();
        let mut start: Option<f32> = None;
        let mut last_time = 0.0f32;
        let mut text: Vec<u32> = Vec::new();
        let mut push = |start: f32, end: f32, text: &[u32]| {
            let words = t.decode(text).trim().to_owned();
            if !words.is_empty() {
                segments.push(Segment {
                    start,
                    end: end.max(start),
                    text: words,
                    tokens: text.to_vec(),
                    seek: 0,
                    avg_logprob: 0.0,
                    no_speech_prob: 0.0,
                    words: Vec::new(),
                });
            }
        };
        for id in tokens {
            if t.is_timestamp(*id) {
                let at = time(*id);
                if text.is_empty() {
                    start = Some(at);
                } else {
                    push(start.unwrap_or(last_time), at, &text);
                    text.clear();
                    start = None;
                }
                last_time = at;
            } else if *id < t.eot {
                text.push(*id);
            }
        }
        if !text.is_empty() {
            push(start.unwrap_or(last_time), duration, &text);
        }
        segments
    }
}
