//! Long audio to Whisper windows (pure logic): speech segments from the VAD are packed
//! into windows of at most 30 s, each window spanning its segments and the pauses
//! between them (so times inside a window stay linear); silence between windows is
//! never decoded, which is also what keeps Whisper from hallucinating on it. A single
//! stretch of speech longer than a window is cut into window-sized pieces.

use std::ops::Range;

use crate::segments::Segment;

/// Windows of at most `max_len` samples covering the speech, as few as possible and
/// as even as possible: the windows of one recording decode as one batch, so the
/// longest window sets the number of decoding steps for all of them.
pub fn plan(speech: &[Segment], max_len: usize) -> Vec<Range<usize>> {
    let greedy = pack(speech, max_len);
    if greedy.len() < 2 {
        return greedy;
    }
    // The smallest limit that still needs no more windows (the count only grows as the
    // limit shrinks, so bisect).
    let (mut low, mut high) = (1, max_len);
    while low < high {
        let mid = (low + high) / 2;
        if pack(speech, mid).len() <= greedy.len() {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    pack(speech, high)
}

/// Greedy packing: each window takes segments while they fit.
fn pack(speech: &[Segment], max_len: usize) -> Vec<Range<usize>> {
    let mut windows: Vec<Range<usize>> = Vec::new();
    let mut current: Option<Range<usize>> = None;
    for segment in speech.iter().filter(|s| s.end > s.start) {
        let mut start = segment.start;
        while start < segment.end {
            let piece = start..segment.end.min(start + max_len);
            start = piece.end;
            current = match current.take() {
                Some(window) if piece.end - window.start <= max_len => {
                    Some(window.start..piece.end)
                }
                Some(window) => {
                    windows.push(window);
                    Some(piece)
                }
                None => Some(piece),
            };
        }
    }
    windows.extend(current);
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: usize, end: usize) -> Segment {
        Segment { start, end }
    }

    #[test]
    fn segments_pack_into_windows_of_at_most_the_limit() {
        let windows = pack(&[seg(10, 20), seg(25, 40), seg(45, 60), seg(95, 100)], 40);
        assert_eq!(windows, vec![10..40, 45..60, 95..100]);
        // One long stretch is cut into pieces; nothing is lost.
        assert_eq!(pack(&[seg(0, 95)], 40), vec![0..40, 40..80, 80..95]);
        // Planned windows are as many but balanced.
        assert_eq!(plan(&[seg(0, 95)], 40), vec![0..32, 32..64, 64..95]);
        let windows = plan(&[seg(0, 10), seg(12, 22), seg(24, 34), seg(36, 46)], 40);
        assert_eq!(windows, vec![0..22, 24..46]);
        assert!(plan(&[], 40).is_empty());
        // Everything fits: one window covering the pause.
        assert_eq!(plan(&[seg(0, 10), seg(30, 40)], 40), vec![0..40]);
    }
}
