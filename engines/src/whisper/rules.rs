//! Whisper's logit rules, as the reference decoder applies them before choosing a token
//! (pure logic over one row of logits): blank and end-of-text suppressed at the first
//! sampled position, non-speech symbols and task tokens always, and with timestamps
//! the timestamp grammar (pairs, non-decreasing, the first token a timestamp no later
//! than 1 s, a timestamp forced when timestamps are jointly likelier than any text).

use super::tokenizer::Tokenizer;

/// Tokens suppressed at every step / at the first sampled step (from the model's
/// `config.json`: `suppress_ids`, `suppress_ids_begin`).
#[derive(Debug, Clone, Default)]
pub struct Suppress {
    pub always: Vec<u32>,
    pub at_begin: Vec<u32>,
}

/// Largest first timestamp, in 20 ms steps (1 s), as the reference.
const MAX_INITIAL_TIMESTAMP: u32 = 50;

/// Applies the rules to `logits` (one row) given the tokens sampled so far in this
/// window (`sampled`, prompt excluded).
pub fn apply(
    logits: &mut [f32],
    sampled: &[u32],
    tokenizer: &Tokenizer,
    suppress: &Suppress,
    timestamps: bool,
) {
    let vocab = logits.len();
    let mut block = |range: std::ops::Range<usize>| {
        for value in &mut logits[range.start.min(vocab)..range.end.min(vocab)] {
            *value = f32::NEG_INFINITY;
        }
    };
    if sampled.is_empty() {
        for id in &suppress.at_begin {
            block(*id as usize..*id as usize + 1);
        }
    }
    for id in &suppress.always {
        block(*id as usize..*id as usize + 1);
    }
    let ts = tokenizer.timestamp_begin as usize;
    let eot = tokenizer.eot as usize;
    // Special tokens other than the end of text (start of transcript, languages, tasks,
    // no-speech) are never sampled: a window's text is text and timestamps.
    block(eot + 1..ts);
    if !timestamps {
        block(ts..vocab);
        return;
    }
    block(tokenizer.no_timestamps as usize..tokenizer.no_timestamps as usize + 1);
    let is_ts = |id: &u32| tokenizer.is_timestamp(*id);
    let last_was_ts = sampled.last().is_some_and(is_ts);
    let penultimate_was_ts = sampled.len() < 2 || is_ts(&sampled[sampled.len() - 2]);
    if last_was_ts {
        if penultimate_was_ts {
            block(ts..vocab); // a pair just closed: text (or the end) comes next
        } else {
            block(0..eot); // a segment's text ended: its closing timestamp or the end
        }
    }
    if let Some(last) = sampled.iter().rev().find(|id| is_ts(id)) {
        // Timestamps never go back; within a new segment they strictly advance.
        let floor = if last_was_ts && !penultimate_was_ts {
            *last as usize
        } else {
            *last as usize + 1
        };
        block(ts..floor);
    }
    if sampled.is_empty() {
        block(0..ts);
        block(ts + MAX_INITIAL_TIMESTAMP as usize + 1..vocab);
    }
    // If the timestamps together are likelier than the best text token, take one (the
    // softmax normaliser is common to both sides, so raw logits compare the same).
    let text_max = logits[..ts]
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let ts_max = logits[ts..]
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    if log_sum_exp(&logits[ts..], ts_max) > text_max {
        for value in &mut logits[..ts] {
            *value = f32::NEG_INFINITY;
        }
    }
}

fn log_sum_exp(values: &[f32], max: f32) -> f32 {
    if max == f32::NEG_INFINITY {
        return f32::NEG_INFINITY;
    }
    max + values.iter().map(|v| (v - max).exp()).sum::<f32>().ln()
}

/// Log-softmax of one row, in place.
pub fn log_softmax(logits: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let norm = log_sum_exp(logits, max);
    for value in logits.iter_mut() {
        *value -= norm;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vocabulary: 0..4 text, 4 eot, 5 sot, 6 nocaptions, 7 notimestamps, 8.. timestamps.
    fn tokenizer() -> Tokenizer {
        let mut lines: Vec<String> = ["a", "b", "c", "d", "<|endoftext|>", "<|startoftranscript|>"]
            .map(String::from)
            .to_vec();
        lines.extend(["<|nocaptions|>", "<|notimestamps|>"].map(String::from));
        lines.extend((0..100).map(|i| format!("<|{:.2}|>", i as f32 * 0.02)));
        Tokenizer::from_lines(lines).unwrap()
    }

    fn allowed(logits: &[f32]) -> Vec<usize> {
        (0..logits.len())
            .filter(|i| logits[*i].is_finite())
            .collect()
    }

    #[test]
    fn the_first_token_is_an_early_timestamp() {
        let t = tokenizer();
        let mut logits = vec![0.0; t.vocab_size()];
        apply(&mut logits, &[], &t, &Suppress::default(), true);
        assert_eq!(allowed(&logits), (8..=8 + 50).collect::<Vec<_>>());
    }

    #[test]
    fn timestamps_pair_up_and_never_go_back() {
        let t = tokenizer();
        let ts = |i: u32| 8 + i;
        // After "<|0.20|> a b <|0.60|>": the closing one is taken again (pair) or end.
        let mut logits = vec![0.0; t.vocab_size()];
        logits[4] = 6.0; // the end is likely (else the timestamps together outweigh it)
        apply(
            &mut logits,
            &[ts(10), 0, 1, ts(30)],
            &t,
            &Suppress::default(),
            true,
        );
        let allowed = allowed(&logits);
        assert!(
            !allowed.iter().any(|i| *i < 4),
            "no text after a closing timestamp"
        );
        assert!(allowed.contains(&4) && allowed.contains(&(ts(30) as usize)));
        assert!(!allowed.contains(&(ts(29) as usize)));
        // After a pair: text or end, no timestamp.
        let mut logits = vec![0.0; t.vocab_size()];
        apply(
            &mut logits,
            &[ts(10), 0, ts(30), ts(30)],
            &t,
            &Suppress::default(),
            true,
        );
        assert!(allowed_ts(&logits).is_empty());
        // Inside a segment a later timestamp must be strictly later.
        let mut logits = vec![0.0; t.vocab_size()];
        logits[0] = 10.0; // keep text likelier so timestamps are not forced
        apply(&mut logits, &[ts(10), 0], &t, &Suppress::default(), true);
        assert_eq!(allowed_ts(&logits).first(), Some(&(ts(11) as usize)));
    }

    fn allowed_ts(logits: &[f32]) -> Vec<usize> {
        allowed(logits).into_iter().filter(|i| *i >= 8).collect()
    }

    #[test]
    fn likelier_timestamps_force_one_and_no_timestamps_mode_blocks_them() {
        let t = tokenizer();
        let mut logits = vec![0.0; t.vocab_size()];
        logits[0] = 2.0; // text "a" is the single best token, but 100 timestamps sum higher
        apply(&mut logits, &[8, 0], &t, &Suppress::default(), true);
        assert!(allowed(&logits).iter().all(|i| *i >= 8));
        let mut logits = vec![0.0; t.vocab_size()];
        let suppress = Suppress {
            always: vec![6],
            at_begin: vec![4],
        };
        apply(&mut logits, &[], &t, &suppress, false);
        // Text only: eot is suppressed at the start here, specials (5-7) always.
        assert_eq!(allowed(&logits), vec![0, 1, 2, 3]);
        let mut logits = vec![0.0; t.vocab_size()];
        apply(&mut logits, &[0], &t, &Suppress::default(), false);
        assert_eq!(allowed(&logits), vec![0, 1, 2, 3, 4]);
    }
}
