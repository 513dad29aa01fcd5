//! Greedy and beam search over a batch of windows decoded in lockstep (pure logic: the
//! caller runs the model and hands over each live row's log-probabilities).
//!
//! Live rows are kept grouped by window. After each step `advance` says which previous
//! row each new row continues (`parents`), so the caller can reorder its KV cache; a
//! window leaves the batch as soon as it is finished. Beam search follows the reference:
//! each beam proposes its `beam + 1` best tokens, the best `beam` unfinished candidates
//! live on, finished ones are kept until `beam` of them exist, and the final choice is
//! the best log-probability per token.

/// One hypothesis: the tokens sampled after the prompt and their summed log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub window: usize,
    pub tokens: Vec<u32>,
    pub logprob: f32,
}

#[derive(Debug)]
pub struct Search {
    beam: usize,
    max_len: usize,
    rows: Vec<Row>,
    finished: Vec<Vec<Row>>,
    closed: Vec<bool>,
    /// The window of each row of the caller's cross-attention tensors.
    cross_windows: Vec<usize>,
}

/// Text tokens repeated this many times in a row end the window (Whisper's usual
/// hallucination on noise or music is a loop); one copy is kept.
const LOOP_REPEATS_SHORT: usize = 8;
const LOOP_REPEATS_LONG: usize = 4;
const LOOP_MAX_NGRAM: usize = 16;

impl Search {
    pub fn new(windows: usize, beam: usize, max_len: usize) -> Search {
        Search {
            beam: beam.max(1),
            max_len,
            rows: (0..windows)
                .map(|window| Row {
                    window,
                    tokens: Vec::new(),
                    logprob: 0.0,
                })
                .collect(),
            finished: vec![Vec::new(); windows],
            closed: vec![false; windows],
            cross_windows: (0..windows).collect(),
        }
    }

    pub fn windows(&self) -> usize {
        self.closed.len()
    }

    pub fn sampled(&self, row: usize) -> &[u32] {
        &self.rows[row].tokens
    }

    pub fn done(&self) -> bool {
        self.rows.is_empty()
    }

    /// The token each live row feeds next.
    pub fn last_tokens(&self) -> Vec<u32> {
        self.rows
            .iter()
            .map(|row| row.tokens.last().copied().unwrap_or_default())
            .collect()
    }

    /// For each live row, a row of the current cross-attention tensors of its window.
    pub fn cross_rows(&self) -> Vec<usize> {
        self.rows
            .iter()
            .map(|row| {
                self.cross_windows
                    .iter()
                    .position(|w| *w == row.window)
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The caller's cross-attention tensors now follow the live rows.
    pub fn cross_reindexed(&mut self) {
        self.cross_windows = self.rows.iter().map(|row| row.window).collect();
    }

    /// Takes one step: `logprobs[r]` is live row `r`'s log-softmax over the vocabulary
    /// (rules applied). Returns the parent row of every new live row.
    pub fn advance(&mut self, logprobs: &[Vec<f32>], eot: u32) -> Vec<usize> {
        let mut next = Vec::with_capacity(self.rows.len());
        let mut parents = Vec::with_capacity(self.rows.len());
        let mut start = 0;
        while start < self.rows.len() {
            let window = self.rows[start].window;
            let end = start
                + self.rows[start..]
                    .iter()
                    .take_while(|row| row.window == window)
                    .count();
            let mut candidates: Vec<(f32, usize, u32)> = Vec::new();
            for (offset, row_logprobs) in logprobs[start..end].iter().enumerate() {
                let row = start + offset;
                for (token, logprob) in top_k(row_logprobs, self.beam + 1) {
                    candidates.push((self.rows[row].logprob + logprob, row, token));
                }
            }
            candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut kept = Vec::new();
            for (score, row, token) in candidates {
                let parent = &self.rows[row];
                if token == eot {
                    self.finished[window].push(Row {
                        window,
                        tokens: parent.tokens.clone(),
                        logprob: score,
                    });
                } else {
                    let mut tokens = parent.tokens.clone();
                    tokens.push(token);
                    if let Some(cut) = loop_start(&tokens, eot) {
                        tokens.truncate(cut);
                        self.finished[window].push(Row {
                            window,
                            tokens,
                            logprob: score,
                        });
                    } else {
                        kept.push((
                            Row {
                                window,
                                tokens,
                                logprob: score,
                            },
                            row,
                        ));
                    }
                }
                if kept.len() == self.beam {
                    break;
                }
            }
            let full = kept
                .first()
                .is_some_and(|(row, _)| row.tokens.len() >= self.max_len);
            if self.finished[window].len() >= self.beam || full || kept.is_empty() {
                if self.finished[window].is_empty() {
                    self.finished[window].extend(kept.into_iter().map(|(row, _)| row));
                }
                self.closed[window] = true;
            } else {
                for (row, parent) in kept {
                    next.push(row);
                    parents.push(parent);
                }
            }
            start = end;
        }
        self.rows = next;
        parents
    }

    /// The best finished row of each window (by log-probability per token).
    pub fn finish(self) -> Vec<Row> {
        self.finished
            .into_iter()
            .enumerate()
            .map(|(window, rows)| {
                rows.into_iter()
                    .max_by(|a, b| per_token(a).total_cmp(&per_token(b)))
                    .unwrap_or(Row {
                        window,
                        tokens: Vec::new(),
                        logprob: 0.0,
                    })
            })
            .collect()
    }
}

fn per_token(row: &Row) -> f32 {
    row.logprob / row.tokens.len().max(1) as f32
}

/// The `k` largest entries, best first.
fn top_k(values: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    for (index, value) in values.iter().enumerate() {
        if !value.is_finite() || (best.len() == k && *value <= best[k - 1].1) {
            continue;
        }
        let at = best.partition_point(|(_, v)| *v >= *value);
        best.insert(at, (index as u32, *value));
        best.truncate(k);
    }
    best
}

/// Where a trailing loop of text tokens (timestamps ignored) starts repeating: the
/// length to keep so that one copy remains.
fn loop_start(tokens: &[u32], eot: u32) -> Option<usize> {
    let text: Vec<usize> = (0..tokens.len()).filter(|i| tokens[*i] < eot).collect();
    for n in 1..=LOOP_MAX_NGRAM {
        let repeats = if n <= 2 {
            LOOP_REPEATS_SHORT
        } else {
            LOOP_REPEATS_LONG
        };
        if text.len() < n * repeats {
            continue;
        }
        let tail = &text[text.len() - n * repeats..];
        let gram: Vec<u32> = tail[..n].iter().map(|i| tokens[*i]).collect();
        let repeating = tail
            .chunks_exact(n)
            .all(|chunk| chunk.iter().map(|i| tokens[*i]).eq(gram.iter().copied()));
        if repeating {
            return Some(tail[n]);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const EOT: u32 = 9;

    /// Log-probabilities over a 10-token vocabulary with the given winners.
    fn probs(entries: &[(u32, f32)]) -> Vec<f32> {
        let mut row = vec![-20.0; 10];
        for (token, p) in entries {
            row[*token as usize] = p.ln();
        }
        row
    }

    #[test]
    fn greedy_windows_decode_in_lockstep_and_leave_when_done() {
        let mut search = Search::new(2, 1, 100);
        let parents = search.advance(&[probs(&[(1, 0.9)]), probs(&[(2, 0.8)])], EOT);
        assert_eq!(parents, vec![0, 1]);
        assert_eq!(search.last_tokens(), vec![1, 2]);
        // Window 0 ends; window 1 continues alone as row 0, its parent was row 1.
        let parents = search.advance(&[probs(&[(EOT, 0.9)]), probs(&[(3, 0.7)])], EOT);
        assert_eq!(parents, vec![1]);
        assert_eq!(search.cross_rows(), vec![1]);
        search.cross_reindexed();
        assert_eq!(search.cross_rows(), vec![0]);
        search.advance(&[probs(&[(EOT, 0.9)])], EOT);
        assert!(search.done());
        let rows = search.finish();
        assert_eq!(rows[0].tokens, vec![1]);
        assert_eq!(rows[1].tokens, vec![2, 3]);
        assert!((rows[1].logprob - (0.8f32.ln() + 0.7f32.ln() + 0.9f32.ln())).abs() < 1e-5);
    }

    #[test]
    fn beam_search_keeps_the_sequence_greedy_misses() {
        // Greedy takes 1 (0.6) then is stuck with 0.3; beam 2 finds 2 (0.4) then 0.99.
        let mut search = Search::new(1, 2, 100);
        let parents = search.advance(&[probs(&[(1, 0.6), (2, 0.4)])], EOT);
        assert_eq!(parents, vec![0, 0]);
        assert_eq!(search.last_tokens(), vec![1, 2]);
        let step = [probs(&[(3, 0.3), (EOT, 0.3)]), probs(&[(EOT, 0.99)])];
        search.advance(&step, EOT);
        // Two finished candidates now: [2] (0.396) and [1] (0.18); done.
        assert!(search.done());
        assert_eq!(search.finish()[0].tokens, vec![2]);
    }

    #[test]
    fn the_length_limit_and_loops_end_a_window() {
        let mut search = Search::new(1, 1, 3);
        for _ in 0..3 {
            search.advance(&[probs(&[(4, 0.9)])], EOT);
        }
        assert!(search.done());
        assert_eq!(search.finish()[0].tokens, vec![4, 4, 4]);
        // "5 6 7" four times (timestamps 10+ in between ignored): one copy kept.
        let tokens = [1, 5, 6, 10, 7, 5, 6, 7, 5, 6, 7, 5, 6, 7];
        assert_eq!(loop_start(&tokens, EOT), Some(5));
        assert_eq!(loop_start(&tokens[..11], EOT), None);
    }
}
