//! Word timestamps (pure): Whisper's cross-attention alignment as the reference
//! (`whisper/timing.py`). The decoder reads the window again with the text it decoded;
//! the attention of the model's alignment heads from each text token to the audio
//! frames, normalised and smoothed, is a cost matrix, and dynamic time warping through
//! it gives the frame where each token starts. Words are the tokens grouped at spaces
//! and punctuation; a word starts where its first token does and ends where the next
//! word starts.

use super::Segment;

/// Encoder frames per second (20 ms each).
pub const FRAMES_PER_SECOND: f32 = 50.0;
/// The reference's median filter width over frames.
const MEDIAN_WIDTH: usize = 7;
/// Punctuation joined to the following word, and to the preceding one.
const PREPENDED: &str = "\"'“¿([{-";
const APPENDED: &str = "\"'.。,，!！?？:：”)]}、";
const SENTENCE_ENDS: &str = ".。!！?？";
/// Python's `string.punctuation`; a subword whose stripped text is a substring of it
/// starts a word of its own (the reference's test, quirks included).
const ASCII_PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// One word with its times in seconds from the window's start and the mean
/// probability of its tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct WordTiming {
    pub word: String,
    pub tokens: Vec<u32>,
    pub start: f32,
    pub end: f32,
    pub probability: f32,
}

/// The token-by-frame cost matrix from the alignment heads' scores.
///
/// `scores` is `[heads, rows, stride]` (scaled, before the softmax), of which the first
/// `frames` columns are audio (the rest is the padding of the window). Per head: a
/// softmax over the audio frames, each frame standardised across tokens, a median
/// filter along frames; then the mean over heads. Returns `rows × frames`.
pub fn attention_matrix(
    scores: &[f32],
    heads: usize,
    rows: usize,
    stride: usize,
    frames: usize,
) -> Vec<f32> {
    let frames = frames.min(stride);
    let mut mean = vec![0.0f32; rows * frames];
    if frames == 0 || rows == 0 || heads == 0 {
        return mean;
    }
    let mut head = vec![0.0f32; rows * frames];
    for h in 0..heads {
        for r in 0..rows {
            let source = &scores[(h * rows + r) * stride..][..frames];
            let target = &mut head[r * frames..][..frames];
            target.copy_from_slice(source);
            softmax(target);
        }
        for f in 0..frames {
            let column = (0..rows).map(|r| head[r * frames + f]);
            let average = column.clone().sum::<f32>() / rows as f32;
            let variance = column.map(|v| (v - average).powi(2)).sum::<f32>() / rows as f32;
            let deviation = variance.sqrt().max(1e-10);
            for r in 0..rows {
                let value = &mut head[r * frames + f];
                *value = (*value - average) / deviation;
            }
        }
        for r in 0..rows {
            let row = &mut head[r * frames..][..frames];
            median_filter(row, MEDIAN_WIDTH);
            for (m, v) in mean[r * frames..][..frames].iter_mut().zip(row.iter()) {
                *m += v / heads as f32;
            }
        }
    }
    mean
}

fn softmax(values: &mut [f32]) {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in values.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in values.iter_mut() {
        *v /= sum;
    }
}

/// Median over a sliding window of odd `width`, with reflected edges (the reference's
/// `F.pad(mode="reflect")`); rows no longer than half the width stay as they are.
pub fn median_filter(row: &mut [f32], width: usize) {
    let pad = width / 2;
    if row.len() <= pad {
        return;
    }
    let n = row.len() as isize;
    let reflect = |i: isize| -> usize {
        let i = if i < 0 { -i } else { i };
        (if i >= n { 2 * (n - 1) - i } else { i }) as usize
    };
    let source = row.to_vec();
    let mut window = vec![0.0f32; width];
    for (i, value) in row.iter_mut().enumerate() {
        for (k, slot) in window.iter_mut().enumerate() {
            *slot = source[reflect(i as isize + k as isize - pad as isize)];
        }
        window.sort_by(f32::total_cmp);
        *value = window[pad];
    }
}

/// Dynamic time warping through `cost` (`rows × cols`, lower is better) from the top
/// left to the bottom right with diagonal, down and right moves; returns the path as
/// (row, column) index lists. Ties prefer moving right, as the reference.
pub fn dtw(cost: &[f32], rows: usize, cols: usize) -> (Vec<usize>, Vec<usize>) {
    let width = cols + 1;
    let mut total = vec![f32::INFINITY; (rows + 1) * width];
    let mut trace = vec![0u8; (rows + 1) * width];
    total[0] = 0.0;
    for j in 1..=cols {
        for i in 1..=rows {
            let diagonal = total[(i - 1) * width + j - 1];
            let down = total[(i - 1) * width + j];
            let right = total[i * width + j - 1];
            let (best, step) = if diagonal < down && diagonal < right {
                (diagonal, 0)
            } else if down < diagonal && down < right {
                (down, 1)
            } else {
                (right, 2)
            };
            total[i * width + j] = cost[(i - 1) * cols + j - 1] + best;
            trace[i * width + j] = step;
        }
    }
    let (mut i, mut j) = (rows, cols);
    let (mut text, mut time) = (Vec::new(), Vec::new());
    while i > 0 || j > 0 {
        text.push(i.saturating_sub(1));
        time.push(j.saturating_sub(1));
        let step = match (i, j) {
            (0, _) => 2,
            (_, 0) => 1,
            _ => trace[i * width + j],
        };
        match step {
            0 => (i, j) = (i - 1, j - 1),
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    text.reverse();
    time.reverse();
    (text, time)
}

/// Groups decoded subwords (each a piece of text and its tokens, special tokens being
/// their own pieces) into words: a piece that starts with a space, is punctuation or is
/// special starts a new word; any other piece continues the last one.
pub fn group_words(pieces: Vec<(String, Vec<u32>, bool)>) -> Vec<(String, Vec<u32>)> {
    let mut words: Vec<(String, Vec<u32>)> = Vec::new();
    for (text, tokens, special) in pieces {
        let stripped = text.trim();
        let punctuation = ASCII_PUNCTUATION.contains(stripped);
        match words.last_mut() {
            Some(last) if !(special || text.starts_with(' ') || punctuation) => {
                last.0.push_str(&text);
                last.1.extend(tokens);
            }
            _ => words.push((text, tokens)),
        }
    }
    words
}

/// Word timings from an alignment.
///
/// `words` are the text's words followed by the end-of-text token as its own word;
/// `matrix` is `rows × frames` with one row per text token and one for the end of text
/// (the positions that predict them); `token_probs` the probability of each text token.
pub fn word_timings(
    words: &[(String, Vec<u32>)],
    matrix: &[f32],
    frames: usize,
    token_probs: &[f32],
) -> Vec<WordTiming> {
    let rows = words.iter().map(|(_, tokens)| tokens.len()).sum::<usize>();
    if words.len() <= 1 || frames == 0 || matrix.len() < rows * frames {
        return Vec::new();
    }
    let negated: Vec<f32> = matrix[..rows * frames].iter().map(|v| -v).collect();
    let (text, time) = dtw(&negated, rows, frames);
    // The frame where each row is first reached.
    let mut jumps = Vec::with_capacity(rows);
    for (k, (&row, &frame)) in text.iter().zip(&time).enumerate() {
        if k == 0 || row != text[k - 1] {
            jumps.push(frame as f32 / FRAMES_PER_SECOND);
        }
    }
    let mut timings = Vec::with_capacity(words.len() - 1);
    let mut boundary = 0;
    for (word, tokens) in &words[..words.len() - 1] {
        let next = boundary + tokens.len();
        let probs = &token_probs[boundary.min(token_probs.len())..next.min(token_probs.len())];
        timings.push(WordTiming {
            word: word.clone(),
            tokens: tokens.clone(),
            start: jumps.get(boundary).copied().unwrap_or(0.0),
            end: jumps.get(next).copied().unwrap_or(0.0),
            probability: match probs.len() {
                0 => 0.0,
                n => probs.iter().sum::<f32>() / n as f32,
            },
        });
        boundary = next;
    }
    truncate_long_words(&mut timings);
    merge_punctuation(&mut timings);
    timings.retain(|timing| !timing.word.is_empty());
    timings
}

/// Pulls word edges that lie in silence back to the speech they belong to: a word's
/// start moves to the start of the first speech region it overlaps and its end to the
/// end of the last one (`speech` in seconds, in order). The attention alignment tends
/// to start a word early after a pause and to stretch the last word of a sentence over
/// the pause after it; the voice activity detector knows where the sound is. A word
/// that overlaps no speech keeps its times. Words stay in order and last at least
/// `SHORTEST_WORD`: one squeezed to nothing by its region's edge (or aligned to a
/// single frame) still has a time span a speaker or a caption can be matched to.
pub fn clip_to_speech(words: &mut [WordTiming], speech: &[(f32, f32)]) {
    let mut floor = f32::NEG_INFINITY;
    for word in words {
        let mut overlapping = speech
            .iter()
            .filter(|(start, end)| *start < word.end && word.start < *end);
        if let Some(first) = overlapping.next() {
            let last = overlapping.next_back().unwrap_or(first);
            word.start = word.start.max(first.0);
            word.end = word.end.min(last.1);
        }
        word.start = word.start.max(floor);
        word.end = word.end.max(word.start + SHORTEST_WORD);
        floor = word.end;
    }
}

/// The shortest word, in seconds.
const SHORTEST_WORD: f32 = 0.1;

/// Hands a window's words to its segments in token order (each segment takes words
/// until it has as many tokens as its text), then, as the reference, lets the words
/// correct the segment's edges: a segment starts at its first word and ends at its last
/// one, unless that word overruns the segment's own time by more than half a second,
/// in which case the word is cut to the segment instead.
pub fn place_words(segments: &mut [Segment], words: Vec<WordTiming>) {
    let median = median_word(&words);
    let mut words = words.into_iter();
    for segment in segments.iter_mut() {
        let mut taken = 0;
        while taken < segment.tokens.len() {
            let Some(word) = words.next() else { break };
            taken += word.tokens.len();
            segment.words.push(word);
        }
    }
    for segment in segments.iter_mut() {
        let (Some(first), Some(last)) = (segment.words.first(), segment.words.last()) else {
            continue;
        };
        let (first_start, first_end, last_start, last_end) =
            (first.start, first.end, last.start, last.end);
        if segment.start < first_end && segment.start - 0.5 > first_start {
            segment.words[0].start = (first_end - median).min(segment.start).max(first_start);
        } else {
            segment.start = first_start;
        }
        if segment.end > last_start && segment.end + 0.5 < last_end {
            if let Some(last) = segment.words.last_mut() {
                last.end = (last_start + median).max(segment.end).min(last_end);
            }
        } else {
            segment.end = last_end;
        }
    }
}

/// The median length of the words that have one, at most 0.7 s (0 without any): the
/// reference's yardstick for words stretched over a pause.
fn median_word(words: &[WordTiming]) -> f32 {
    let mut durations: Vec<f32> = words
        .iter()
        .map(|w| w.end - w.start)
        .filter(|d| *d > 0.0)
        .collect();
    if durations.is_empty() {
        return 0.0;
    }
    durations.sort_by(f32::total_cmp);
    let middle = durations.len() / 2;
    let median = match durations.len() % 2 {
        1 => durations[middle],
        _ => (durations[middle - 1] + durations[middle]) / 2.0,
    };
    median.min(0.7)
}

/// The reference's heuristic: a word lasting over twice the median word (at most
/// 0.7 s) next to a sentence end is cut to that length, since the model tends to stretch
/// the token at a pause over the silence.
fn truncate_long_words(timings: &mut [WordTiming]) {
    let median = median_word(timings);
    if median == 0.0 {
        return;
    }
    let longest = median * 2.0;
    let ends = |word: &str| !word.is_empty() && SENTENCE_ENDS.contains(word);
    for i in 1..timings.len() {
        if timings[i].end - timings[i].start > longest {
            if ends(&timings[i].word) {
                timings[i].end = timings[i].start + longest;
            } else if ends(&timings[i - 1].word) {
                timings[i].start = timings[i].end - longest;
            }
        }
    }
}

/// Opening punctuation joins the word after it, closing punctuation the word before
/// (the emptied entry is dropped by the caller).
fn merge_punctuation(timings: &mut [WordTiming]) {
    let is = |set: &str, word: &str| !word.is_empty() && set.contains(word);
    if timings.len() >= 2 {
        let mut following = timings.len() - 1;
        for i in (0..timings.len() - 1).rev() {
            if timings[i].word.starts_with(' ') && is(PREPENDED, timings[i].word.trim()) {
                let previous = std::mem::take(&mut timings[i].word);
                let tokens = std::mem::take(&mut timings[i].tokens);
                let next = &mut timings[following];
                next.word = previous + &next.word;
                next.tokens = tokens.into_iter().chain(next.tokens.drain(..)).collect();
            } else {
                following = i;
            }
        }
    }
    let mut previous = 0;
    for j in 1..timings.len() {
        if !timings[previous].word.ends_with(' ') && is(APPENDED, &timings[j].word) {
            let word = std::mem::take(&mut timings[j].word);
            let tokens = std::mem::take(&mut timings[j].tokens);
            timings[previous].word.push_str(&word);
            timings[previous].tokens.extend(tokens);
        } else {
            previous = j;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_filter_reflects_at_the_edges() {
        let mut row = vec![5.0, 1.0, 9.0, 2.0, 8.0];
        median_filter(&mut row, 3);
        // Padded: [1, 5, 1, 9, 2, 8, 2].
        assert_eq!(row, vec![1.0, 5.0, 2.0, 8.0, 2.0]);
        let mut short = vec![3.0, 1.0];
        median_filter(&mut short, 7);
        assert_eq!(short, vec![3.0, 1.0]);
    }

    #[test]
    fn dtw_follows_the_cheap_cells() {
        // Row 0 is cheap on columns 0-1, row 1 on columns 2-4.
        #[rustfmt::skip]
        let cost = [
            0.0, 0.0, 9.0, 9.0, 9.0,
            9.0, 9.0, 0.0, 0.0, 0.0,
        ];
        let (text, time) = dtw(&cost, 2, 5);
        assert_eq!(time, vec![0, 1, 2, 3, 4]);
        assert_eq!(text, vec![0, 0, 1, 1, 1]);
    }

    #[test]
    fn words_start_at_spaces_and_punctuation_and_specials() {
        let pieces = vec![
            (" Hello".to_owned(), vec![1], false),
            (",".to_owned(), vec![2], false),
            (" wor".to_owned(), vec![3], false),
            ("ld".to_owned(), vec![4], false),
            ("<eot>".to_owned(), vec![9], true),
        ];
        let words = group_words(pieces);
        let texts: Vec<&str> = words.iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(texts, vec![" Hello", ",", " world", "<eot>"]);
        assert_eq!(words[2].1, vec![3, 4]);
    }

    #[test]
    fn timings_come_from_where_each_word_first_takes_the_path() {
        let words = vec![
            (" Hello".to_owned(), vec![1]),
            (",".to_owned(), vec![2]),
            (" world".to_owned(), vec![3, 4]),
            ("<eot>".to_owned(), vec![9]),
        ];
        // Five rows (four text tokens and the end of text) over 50 frames (one second):
        // row r is hot on frames 10r..10r+9.
        let frames = 50;
        let mut matrix = vec![0.0f32; 5 * frames];
        for r in 0..5 {
            for f in 10 * r..10 * r + 10 {
                matrix[r * frames + f] = 1.0;
            }
        }
        let timings = word_timings(&words, &matrix, frames, &[0.9, 0.5, 0.8, 0.6]);
        let texts: Vec<&str> = timings.iter().map(|t| t.word.as_str()).collect();
        // The comma joins the word before it.
        assert_eq!(texts, vec![" Hello,", " world"]);
        // The reference's DTW (numpy, same matrix) reaches rows 0-4 at frames
        // 0, 9, 19, 29, 39: on a tie it steps down a frame early.
        assert!((timings[0].start - 0.0).abs() < 1e-6);
        assert!((timings[0].end - 0.18).abs() < 1e-6, "{timings:?}");
        assert!((timings[1].start - 0.38).abs() < 1e-6 && (timings[1].end - 0.78).abs() < 1e-6);
        assert!((timings[1].probability - 0.7).abs() < 1e-6);
        assert_eq!(timings[0].tokens, vec![1, 2]);
    }

    #[test]
    fn word_edges_in_silence_move_to_the_speech() {
        let word = |start, end| WordTiming {
            word: " w".into(),
            tokens: vec![1],
            start,
            end,
            probability: 1.0,
        };
        let speech = [(0.5, 1.0), (1.2, 2.0), (3.0, 4.0)];
        let mut words = vec![
            word(0.3, 0.8), // starts early
            word(0.8, 1.4), // across a short pause: keeps both sides
            word(1.5, 2.7), // stretched over the pause
            word(2.7, 2.8), // in silence only: keeps its times
        ];
        clip_to_speech(&mut words, &speech);
        let times: Vec<(f32, f32)> = words.iter().map(|w| (w.start, w.end)).collect();
        assert_eq!(times, vec![(0.5, 0.8), (0.8, 1.4), (1.5, 2.0), (2.7, 2.8)]);
        // A word almost all in the silence before its region, and a word of one
        // frame, are not squeezed to nothing, and the next word starts after them.
        let mut words = vec![word(2.5, 3.02), word(3.02, 3.02), word(3.02, 3.5)];
        clip_to_speech(&mut words, &speech);
        let times: Vec<(f32, f32)> = words
            .iter()
            .map(|w| ((w.start * 100.0).round(), (w.end * 100.0).round()))
            .collect();
        assert_eq!(times, vec![(300.0, 310.0), (310.0, 320.0), (320.0, 350.0)]);
    }

    #[test]
    fn opening_punctuation_joins_the_next_word() {
        let word = |w: &str, start: f32| WordTiming {
            word: w.into(),
            tokens: vec![0],
            start,
            end: start + 0.2,
            probability: 1.0,
        };
        let mut timings = vec![word(" He", 0.0), word(" \"", 0.2), word("said", 0.4)];
        merge_punctuation(&mut timings);
        timings.retain(|t| !t.word.is_empty());
        let texts: Vec<&str> = timings.iter().map(|t| t.word.as_str()).collect();
        assert_eq!(texts, vec![" He", " \"said"]);
    }

    #[test]
    fn the_matrix_is_normalised_per_frame_and_averaged_over_heads() {
        // One head, two rows, three frames of which two are audio.
        let scores = [0.0, 5.0, 100.0, 5.0, 0.0, 100.0];
        let matrix = attention_matrix(&scores, 1, 2, 3, 2);
        assert_eq!(matrix.len(), 4);
        // Row 0 attends to frame 1, row 1 to frame 0: after standardising each frame
        // across rows, the hot cells are +1 and the cold ones -1.
        assert!(matrix[1] > 0.99 && matrix[2] > 0.99);
        assert!(matrix[0] < -0.99 && matrix[3] < -0.99);
    }
}
