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

/// Windows clustered at most. A two-hour file has about 7,200 windows: their full
/// similarity matrix alone is 200 MB, and the textbook loop (scan every pair of clusters
/// at every merge) is O(n³). Beyond this many, an evenly spaced sample is clustered and
/// every other window joins the cluster whose centroid it is closest to.
pub const MAX_CLUSTERED: usize = 2000;

/// Speakers one stream tells apart at most; past it a new voice takes the closest label.
pub const MAX_ONLINE_SPEAKERS: usize = 64;

/// Average-linkage agglomerative clustering (cosine similarity; clusters merge while
/// their average similarity is at least `merge_threshold`); returns a cluster index per
/// item, numbered in order of first appearance. O(m²) time and memory in the items
/// clustered, m at most [`MAX_CLUSTERED`].
pub fn agglomerative(embeddings: &[Vec<f32>], merge_threshold: f32) -> Vec<usize> {
    let n = embeddings.len();
    if n <= MAX_CLUSTERED {
        return first_appearance(&average_linkage(embeddings, merge_threshold));
    }
    let sample: Vec<usize> = (0..MAX_CLUSTERED).map(|i| i * n / MAX_CLUSTERED).collect();
    let sampled: Vec<Vec<f32>> = sample.iter().map(|&i| embeddings[i].clone()).collect();
    // Roots of the union-find, renumbered 0..count (one centroid per cluster).
    let sample_labels = first_appearance(&average_linkage(&sampled, merge_threshold));
    let count = sample_labels.iter().copied().max().map_or(0, |m| m + 1);
    let dimension = embeddings[0].len();
    let mut centroids = vec![vec![0.0f32; dimension]; count];
    for (embedding, &label) in sampled.iter().zip(&sample_labels) {
        centroids[label]
            .iter_mut()
            .zip(embedding)
            .for_each(|(c, e)| *c += e);
    }
    let labels: Vec<usize> = embeddings
        .iter()
        .map(|embedding| {
            centroids
                .iter()
                .enumerate()
                .map(|(label, centroid)| (similarity(embedding, centroid), label))
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map_or(0, |(_, label)| label)
        })
        .collect();
    first_appearance(&labels)
}

/// Cosine similarity, with NaN (a zero vector) as the least similar.
fn similarity(a: &[f32], b: &[f32]) -> f32 {
    let s = cosine(a, b);
    if s.is_nan() { f32::NEG_INFINITY } else { s }
}

/// Labels renumbered 0, 1, ... in order of first appearance.
fn first_appearance(labels: &[usize]) -> Vec<usize> {
    let mut renumbered = std::collections::HashMap::new();
    labels
        .iter()
        .map(|label| {
            let next = renumbered.len();
            *renumbered.entry(*label).or_insert(next)
        })
        .collect()
}

/// Average linkage by the nearest-neighbour chain (O(m²) time, one m×m matrix updated by
/// Lance-Williams): the complete dendrogram, then the merges at or above the threshold.
/// Average linkage is reducible, so its merge similarities never rise up the tree and
/// those merges are exactly the clusters of merging greedily down to the threshold.
fn average_linkage(embeddings: &[Vec<f32>], merge_threshold: f32) -> Vec<usize> {
    let m = embeddings.len();
    // Unit vectors once: each of the m²/2 similarities is then one dot product.
    let unit: Vec<Vec<f32>> = embeddings
        .iter()
        .map(|e| {
            let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt();
            e.iter()
                .map(|v| if norm > 0.0 { v / norm } else { 0.0 })
                .collect()
        })
        .collect();
    let mut sim = vec![0.0f32; m * m];
    for i in 0..m {
        for j in i + 1..m {
            let s: f32 = unit[i].iter().zip(&unit[j]).map(|(a, b)| a * b).sum();
            let s = if s.is_nan() { f32::NEG_INFINITY } else { s };
            sim[i * m + j] = s;
            sim[j * m + i] = s;
        }
    }
    let mut size = vec![1usize; m];
    let mut active = vec![true; m];
    let mut parent: Vec<usize> = (0..m).collect();
    let mut chain: Vec<usize> = Vec::with_capacity(m);
    for _ in 1..m {
        if chain.is_empty() {
            chain.push(active.iter().position(|a| *a).unwrap_or(0));
        }
        // Grow the chain until its last two are each other's nearest neighbours.
        let (a, b) = loop {
            let a = chain[chain.len() - 1];
            let previous = chain.len().checked_sub(2).map(|i| chain[i]);
            let mut best = previous;
            let mut best_s = previous.map_or(f32::NEG_INFINITY, |p| sim[a * m + p]);
            for k in 0..m {
                if active[k] && k != a && (best.is_none() || sim[a * m + k] > best_s) {
                    best = Some(k);
                    best_s = sim[a * m + k];
                }
            }
            let best = best.unwrap_or(a);
            if Some(best) == previous {
                chain.truncate(chain.len() - 2);
                break (a, best);
            }
            chain.push(best);
        };
        let merged_s = sim[a * m + b];
        // `a` becomes the union; `b` leaves.
        let (size_a, size_b) = (size[a] as f32, size[b] as f32);
        for k in 0..m {
            if active[k] && k != a && k != b {
                let s = (size_a * sim[a * m + k] + size_b * sim[b * m + k]) / (size_a + size_b);
                sim[a * m + k] = s;
                sim[k * m + a] = s;
            }
        }
        size[a] += size[b];
        active[b] = false;
        if merged_s >= merge_threshold {
            let (root_a, root_b) = (find(&mut parent, a), find(&mut parent, b));
            parent[root_b] = root_a;
        }
    }
    (0..m).map(|i| find(&mut parent, i)).collect()
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
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
            Some((score, index))
                if score >= self.params.merge_threshold
                    || self.speakers.len() >= MAX_ONLINE_SPEAKERS =>
            {
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

    /// The textbook algorithm: at every step, merge the most similar pair of clusters.
    fn greedy(embeddings: &[Vec<f32>], merge_threshold: f32) -> Vec<usize> {
        let n = embeddings.len();
        let mut members: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
        let average = |x: &[usize], y: &[usize]| {
            let total: f32 = x
                .iter()
                .flat_map(|i| {
                    y.iter()
                        .map(move |j| similarity(&embeddings[*i], &embeddings[*j]))
                })
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
        let mut labels = vec![0; n];
        for (cluster, items) in members.iter().enumerate() {
            for item in items {
                labels[*item] = cluster;
            }
        }
        first_appearance(&labels)
    }

    /// Deterministic embeddings around `speakers` random directions.
    fn voices(count: usize, speakers: usize, spread: f32, seed: u64) -> Vec<Vec<f32>> {
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let centres: Vec<Vec<f32>> = (0..speakers)
            .map(|_| (0..16).map(|_| next()).collect())
            .collect();
        (0..count)
            .map(|i| {
                let centre = &centres[(i * 7 / 5) % speakers];
                centre.iter().map(|c| c + spread * next()).collect()
            })
            .collect()
    }

    #[test]
    fn the_chain_finds_what_the_greedy_loop_finds() {
        for (count, speakers, spread, threshold) in [
            (40, 3, 0.3, 0.4),
            (60, 4, 0.6, 0.3),
            (30, 2, 1.0, 0.1),
            (50, 5, 0.2, 0.6),
        ] {
            let embeddings = voices(count, speakers, spread, count as u64);
            assert_eq!(
                agglomerative(&embeddings, threshold),
                greedy(&embeddings, threshold),
                "{count} items, {speakers} voices, spread {spread}, threshold {threshold}"
            );
        }
        // Zero vectors (no direction) stay apart instead of poisoning every average.
        let mut embeddings = voices(10, 2, 0.1, 9);
        embeddings.push(vec![0.0; 16]);
        let labels = agglomerative(&embeddings, 0.4);
        assert_eq!(labels, greedy(&embeddings, 0.4));
        assert_eq!(labels.iter().filter(|l| **l == labels[10]).count(), 1);
    }

    #[test]
    fn two_hours_of_windows_are_clustered_from_a_sample() {
        // 7,200 windows (a two-hour file at the default 1 s hop) of three voices.
        let embeddings = voices(7200, 3, 0.2, 7);
        let labels = agglomerative(&embeddings, 0.4);
        assert_eq!(labels.len(), 7200);
        assert_eq!(labels.iter().copied().max(), Some(2), "three voices");
        // Windows of one voice share a label, and no two voices share one.
        let mut label_of_voice = std::collections::HashMap::new();
        for (i, label) in labels.iter().enumerate() {
            let voice = (i * 7 / 5) % 3;
            assert_eq!(
                *label_of_voice.entry(voice).or_insert(*label),
                *label,
                "window {i}"
            );
        }
        let distinct: std::collections::HashSet<_> = label_of_voice.values().collect();
        assert_eq!(distinct.len(), 3);
    }

    #[test]
    fn a_stream_of_ever_new_voices_stays_within_the_label_cap() {
        let mut speakers = OnlineSpeakers::new(Vec::new(), DiarizeParams::default());
        let mut labels = std::collections::HashSet::new();
        // 200 voices at right angles to each other: each is new to the ones before.
        for voice in 0..200 {
            let mut embedding = vec![0.0f32; 200];
            embedding[voice] = 1.0;
            labels.insert(speakers.label(&embedding));
        }
        assert!(
            labels.len() <= MAX_ONLINE_SPEAKERS,
            "{} labels",
            labels.len()
        );
        assert_eq!(speakers.speakers.len(), MAX_ONLINE_SPEAKERS);
    }
}
