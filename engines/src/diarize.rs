//! Diarization: VAD speech segments cut into overlapping windows, one speaker embedding
//! per window, agglomerative clustering (average linkage on cosine similarity) with an
//! automatic speaker count set by a threshold, and clusters matched to enrolled
//! profiles by cosine (others are `spk_0`, `spk_1`, ... in order of first speech).

use crate::embedder::{SpeakerEmbedder, cosine};
use crate::error::EngineResult;
use crate::segments::{SegmentParams, segments};
use crate::silero::{FRAME, SileroVad};

const RATE: usize = 16_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiarizeParams {
    pub window_seconds: f32,
    pub hop_seconds: f32,
    /// Clusters merge while their average similarity is at least this.
    pub merge_threshold: f32,
    /// A cluster takes an enrolled label when its centroid is at least this close.
    pub match_threshold: f32,
}

impl Default for DiarizeParams {
    fn default() -> Self {
        DiarizeParams {
            // On the two-voice test conversation every window of 1.5-3 s with a merge
            // threshold of 0.3-0.4 found exactly two speakers (0.5 split one voice at
            // 1.5 s windows); the defaults sit in the middle of that range.
            window_seconds: 2.0,
            hop_seconds: 1.0,
            merge_threshold: 0.4,
            match_threshold: 0.6,
        }
    }
}

/// A stretch of speech by one speaker, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub start: f32,
    pub end: f32,
    pub label: String,
}

/// Average-linkage agglomerative clustering; returns a cluster index per item, numbered
/// in order of first appearance.
pub fn agglomerative(embeddings: &[Vec<f32>], merge_threshold: f32) -> Vec<usize> {
    let n = embeddings.len();
    let mut members: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    let similarity: Vec<Vec<f32>> = embeddings
        .iter()
        .map(|a| embeddings.iter().map(|b| cosine(a, b)).collect())
        .collect();
    let similarity = &similarity;
    let average = |x: &[usize], y: &[usize]| {
        let total: f32 = x
            .iter()
            .flat_map(|i| y.iter().map(move |j| similarity[*i][*j]))
            .sum();
        total / (x.len() * y.len()) as f32
    };
    loop {
        let mut best: Option<(f32, usize, usize)> = None;
        for a in 0..members.len() {
            for b in a + 1..members.len() {
                let s = average(&members[a], &members[b]);
                if best.is_none_or(|(top, _, _)| s > top) {
                    best = Some((s, a, b));
                }
            }
        }
        match best {
            Some((s, a, b)) if s >= merge_threshold => {
                let merged = members.remove(b);
                members[a].extend(merged);
            }
            _ => break,
        }
    }
    members.sort_by_key(|m| m.iter().copied().min().unwrap_or(usize::MAX));
    let mut labels = vec![0; n];
    for (cluster, items) in members.iter().enumerate() {
        for item in items {
            labels[*item] = cluster;
        }
    }
    labels
}

/// Who spoke when in 16 kHz mono audio. `enrolled` are `(label, embedding)` profiles.
pub fn diarize(
    samples: &[f32],
    vad: &SileroVad,
    embedder: &SpeakerEmbedder,
    enrolled: &[(String, Vec<f32>)],
    params: &DiarizeParams,
) -> EngineResult<Vec<Turn>> {
    let probabilities = vad.probabilities(samples)?;
    let speech = segments(
        &probabilities,
        FRAME,
        RATE as u32,
        samples.len(),
        &SegmentParams::default(),
    );
    let window = (params.window_seconds * RATE as f32) as usize;
    let hop = (params.hop_seconds * RATE as f32) as usize;
    // (start, end) of each window, in samples; short segments are one window.
    let mut spans = Vec::new();
    for segment in &speech {
        let mut start = segment.start;
        loop {
            let end = (start + window).min(segment.end);
            spans.push((start, end));
            if end >= segment.end {
                break;
            }
            start += hop;
        }
    }
    let mut embeddings = Vec::with_capacity(spans.len());
    for (start, end) in &spans {
        embeddings.push(embedder.embed(&samples[*start..*end])?);
    }
    let clusters = agglomerative(&embeddings, params.merge_threshold);
    let count = clusters.iter().copied().max().map_or(0, |m| m + 1);
    // Cluster centroids, matched to enrolled profiles.
    let mut labels = Vec::with_capacity(count);
    let mut unknown = 0;
    for cluster in 0..count {
        let mut centroid = vec![0.0f32; embeddings.first().map_or(0, Vec::len)];
        for (embedding, _) in embeddings
            .iter()
            .zip(&clusters)
            .filter(|(_, c)| **c == cluster)
        {
            centroid
                .iter_mut()
                .zip(embedding)
                .for_each(|(c, e)| *c += e);
        }
        let best = enrolled
            .iter()
            .map(|(label, profile)| (cosine(&centroid, profile), label))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        match best {
            Some((score, label)) if score >= params.match_threshold => labels.push(label.clone()),
            _ => {
                labels.push(format!("spk_{unknown}"));
                unknown += 1;
            }
        }
    }
    // Each window owns the time from its start to the next window's start (the last to
    // its end); adjacent stretches of one label merge.
    let mut turns: Vec<Turn> = Vec::new();
    for (index, ((start, end), cluster)) in spans.iter().zip(&clusters).enumerate() {
        let owned_end = match spans.get(index + 1) {
            Some((next, _)) if *next < *end => *next,
            _ => *end,
        };
        let turn = Turn {
            start: *start as f32 / RATE as f32,
            end: owned_end as f32 / RATE as f32,
            label: labels[*cluster].clone(),
        };
        match turns.last_mut() {
            Some(last) if last.label == turn.label && turn.start - last.end < 0.5 => {
                last.end = turn.end
            }
            _ => turns.push(turn),
        }
    }
    Ok(turns)
}

/// The profile embedding of one speaker's reference clip (16 kHz mono): its speech only,
/// found by the VAD, so pauses do not dilute it. Speechless audio is `InvalidInput`.
pub fn profile(
    samples: &[f32],
    vad: &SileroVad,
    embedder: &SpeakerEmbedder,
) -> EngineResult<Vec<f32>> {
    let probabilities = vad.probabilities(samples)?;
    let speech: Vec<f32> = segments(
        &probabilities,
        FRAME,
        RATE as u32,
        samples.len(),
        &SegmentParams::default(),
    )
    .iter()
    .flat_map(|segment| samples[segment.start..segment.end].iter().copied())
    .collect();
    if speech.is_empty() {
        return Err(crate::EngineError::InvalidInput(
            "the reference has no speech".into(),
        ));
    }
    embedder.embed(&speech)
}

/// Speaker labels in a live stream, one utterance at a time. An utterance takes the
/// enrolled label its embedding matches (cosine at least `match_threshold`), else the
/// session speaker whose centroid is closest if at least `merge_threshold` (the
/// centroid then takes it in), else a new `spk_N`. A label once given is never changed,
/// so labels are stable within the session.
pub struct OnlineSpeakers {
    enrolled: Vec<(String, Vec<f32>)>,
    /// Sum of the member embeddings of each session speaker (the centroid's direction).
    speakers: Vec<Vec<f32>>,
    params: DiarizeParams,
}

impl OnlineSpeakers {
    pub fn new(enrolled: Vec<(String, Vec<f32>)>, params: DiarizeParams) -> OnlineSpeakers {
        OnlineSpeakers {
            enrolled,
            speakers: Vec::new(),
            params,
        }
    }

    pub fn label(&mut self, embedding: &[f32]) -> String {
        let best = |candidates: &mut dyn Iterator<Item = (usize, &Vec<f32>)>| {
            candidates
                .map(|(index, profile)| (cosine(embedding, profile), index))
                .max_by(|a, b| a.0.total_cmp(&b.0))
        };
        let enrolled = best(&mut self.enrolled.iter().map(|(_, e)| e).enumerate());
        if let Some((score, index)) = enrolled
            && score >= self.params.match_threshold
        {
            return self.enrolled[index].0.clone();
        }
        match best(&mut self.speakers.iter().enumerate()) {
            Some((score, index)) if score >= self.params.merge_threshold => {
                let sum = &mut self.speakers[index];
                sum.iter_mut().zip(embedding).for_each(|(s, e)| *s += e);
                format!("spk_{index}")
            }
            _ => {
                self.speakers.push(embedding.to_vec());
                format!("spk_{}", self.speakers.len() - 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_labels_are_stable_and_enrolled_speakers_get_their_label() {
        let params = DiarizeParams::default();
        let mut speakers =
            OnlineSpeakers::new(vec![("alice".to_owned(), vec![0.0, 0.0, 1.0])], params);
        assert_eq!(speakers.label(&[1.0, 0.0, 0.0]), "spk_0");
        assert_eq!(speakers.label(&[0.0, 1.0, 0.0]), "spk_1");
        assert_eq!(speakers.label(&[0.9, 0.2, 0.0]), "spk_0");
        assert_eq!(speakers.label(&[0.1, 0.0, 0.95]), "alice");
        assert_eq!(speakers.label(&[0.1, 0.9, 0.1]), "spk_1");
    }

    #[test]
    fn clusters_by_similarity_with_automatic_count() {
        let a = vec![1.0, 0.0, 0.0];
        let a2 = vec![0.95, 0.1, 0.0];
        let b = vec![0.0, 1.0, 0.0];
        let b2 = vec![0.1, 0.9, 0.1];
        let c = vec![0.0, 0.0, 1.0];
        let labels = agglomerative(&[b.clone(), a.clone(), b2, a2, c], 0.6);
        assert_eq!(labels, vec![0, 1, 0, 1, 2]);
        assert_eq!(
            agglomerative(&[a, b], -1.0),
            vec![0, 0],
            "a low threshold merges all"
        );
        assert!(agglomerative(&[], 0.5).is_empty());
    }
}
