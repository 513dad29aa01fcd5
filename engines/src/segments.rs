//! Speech segments from per-frame speech probabilities, the way Silero's reference
//! `get_speech_timestamps` does it: hysteresis (start above `threshold`, end below
//! `threshold - 0.15` for `min_silence_ms`), drop segments shorter than
//! `min_speech_ms`, pad each side by `pad_ms`. Pure logic; used for long-audio
//! segmentation and utterance ends in streams.

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentParams {
    pub threshold: f32,
    pub min_speech_ms: u32,
    pub min_silence_ms: u32,
    pub pad_ms: u32,
}

impl Default for SegmentParams {
    fn default() -> Self {
        SegmentParams {
            threshold: 0.5,
            min_speech_ms: 250,
            min_silence_ms: 100,
            pad_ms: 30,
        }
    }
}

/// A speech segment in samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start: usize,
    pub end: usize,
}

/// Segments of a signal of `total` samples whose frames of `frame` samples have the
/// given probabilities.
pub fn segments(
    probabilities: &[f32],
    frame: usize,
    sample_rate: u32,
    total: usize,
    params: &SegmentParams,
) -> Vec<Segment> {
    let ms = |ms: u32| (sample_rate as usize * ms as usize) / 1000;
    let negative = (params.threshold - 0.15).max(0.01);
    let mut raw = Vec::new();
    let mut start: Option<usize> = None;
    let mut silence_since: Option<usize> = None;
    for (index, probability) in probabilities.iter().enumerate() {
        let at = index * frame;
        match start {
            None if *probability >= params.threshold => {
                start = Some(at);
                silence_since = None;
            }
            Some(_) if *probability >= params.threshold => silence_since = None,
            Some(begin) if *probability < negative => {
                let since = *silence_since.get_or_insert(at);
                if at + frame - since >= ms(params.min_silence_ms) {
                    raw.push(Segment {
                        start: begin,
                        end: since,
                    });
                    start = None;
                    silence_since = None;
                }
            }
            _ => {}
        }
    }
    if let Some(begin) = start {
        raw.push(Segment {
            start: begin,
            end: total,
        });
    }
    let pad = ms(params.pad_ms);
    let mut out: Vec<Segment> = Vec::new();
    for segment in raw
        .into_iter()
        .filter(|s| s.end - s.start >= ms(params.min_speech_ms))
    {
        let padded = Segment {
            start: segment.start.saturating_sub(pad),
            end: (segment.end + pad).min(total),
        };
        match out.last_mut() {
            Some(last) if padded.start <= last.end => last.end = padded.end,
            _ => out.push(padded),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_min_lengths_and_padding() {
        // 32 ms frames at 16 kHz: 10 speech frames, 2 quiet (64 ms < 100 ms: bridged),
        // 10 speech, 10 quiet, 3 speech (96 ms < 250 ms: dropped), 5 quiet.
        let mut p = vec![0.9; 10];
        p.extend([0.1; 2]);
        p.extend([0.9; 10]);
        p.extend([0.1; 10]);
        p.extend([0.9; 3]);
        p.extend([0.1; 5]);
        let total = p.len() * 512;
        let found = segments(&p, 512, 16_000, total, &SegmentParams::default());
        assert_eq!(
            found,
            vec![Segment {
                start: 0,
                end: 22 * 512 + 480
            }]
        );
    }

    #[test]
    fn speech_running_to_the_end_is_closed() {
        let p = [0.1, 0.1, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9];
        let found = segments(&p, 512, 16_000, 5120, &SegmentParams::default());
        assert_eq!(
            found,
            vec![Segment {
                start: 1024 - 480,
                end: 5120
            }]
        );
    }
}
