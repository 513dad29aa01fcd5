//! Silero VAD on real speech, silence and noise; batching equals one-by-one.
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

mod common;

use engines::models::ModelDir;
use engines::segments::{SegmentParams, segments};
use engines::silero::{FRAME, SileroDetector, SileroVad, StreamState};
use engines::{Device, Runtime, RuntimeConfig};
use media::vad::VoiceActivity;

fn vad() -> SileroVad {
    SileroVad::load(&common::models()).unwrap()
}

fn beckett() -> Vec<f32> {
    common::test_audio("beckett.wav")
}

fn noise(seconds: f32, amplitude: f32) -> Vec<f32> {
    let mut state = 12_345u32;
    (0..(16_000.0 * seconds) as usize)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 2.0 * amplitude
        })
        .collect()
}

fn ratio(probabilities: &[f32]) -> f32 {
    probabilities.iter().filter(|p| **p >= 0.5).count() as f32 / probabilities.len() as f32
}

#[test]
fn separates_speech_from_silence_and_noise() {
    let vad = vad();
    let speech = ratio(&vad.probabilities(&beckett()).unwrap());
    let silence = ratio(&vad.probabilities(&vec![0.0; 16_000 * 3]).unwrap());
    let hiss = ratio(&vad.probabilities(&noise(3.0, 0.1)).unwrap());
    // The reference Python loop (onnxruntime 1.31.1, same model) gives 0.4534 on this
    // clip: short phrases with pauses between them.
    assert!((speech - 0.4534).abs() < 0.01, "speech ratio {speech}");
    assert!(silence < 0.02, "silence ratio {silence}");
    assert!(hiss < 0.1, "noise ratio {hiss}");
}

#[test]
fn segments_surround_the_speech() {
    let vad = vad();
    let mut signal = vec![0.0; 16_000 * 2];
    signal.extend(beckett());
    signal.extend(vec![0.0; 16_000 * 2]);
    let probabilities = vad.probabilities(&signal).unwrap();
    let found = segments(
        &probabilities,
        FRAME,
        16_000,
        signal.len(),
        &SegmentParams::default(),
    );
    assert!(!found.is_empty());
    let first = found.first().unwrap().start as f32 / 16_000.0;
    let last = found.last().unwrap().end as f32 / 16_000.0;
    assert!((1.5..=3.0).contains(&first), "first speech at {first} s");
    let speech_end = signal.len() as f32 / 16_000.0 - 2.0;
    assert!(
        (speech_end - 1.5..=speech_end + 0.5).contains(&last),
        "last speech ends {last} s, audio {speech_end} s"
    );
}

/// The Rust network against ONNX Runtime running the same file (the reference
/// implementation), frame by frame over real speech and noise: the same probability and
/// the same recurrent state at every frame, in one stream and in a batch of three, and
/// the same probabilities from the whole-signal path.
#[test]
fn equals_onnx_runtime_on_the_same_model() {
    use ort::value::Tensor;

    let mut session = common::runtime()
        .session("silero-oracle", &common::models().silero_vad().unwrap())
        .unwrap();
    let vad = vad();
    let mut signal = beckett();
    signal.extend(noise(2.0, 0.1));
    let (mut state, mut context) = (vec![0.0f32; 2 * 128], vec![0.0f32; 64]);
    let mut ours = StreamState::default();
    let mut batch = vec![StreamState::default(); 3];
    let (mut worst_probability, mut worst_state) = (0.0f32, 0.0f32);
    // The whole-signal path (blocks of 8 s; this signal is 12 s) against the same.
    let offline = vad.probabilities(&signal).unwrap();
    for (frame, offline) in signal.chunks_exact(FRAME).zip(offline) {
        let mut input = context.clone();
        input.extend_from_slice(frame);
        let outputs = session
            .run(ort::inputs![
                "input" => Tensor::from_array(([1usize, 64 + FRAME], input)).unwrap(),
                "state" => Tensor::from_array(([2usize, 1, 128], state.clone())).unwrap(),
                "sr" => Tensor::from_array(ndarray::arr0(16_000i64)).unwrap(),
            ])
            .unwrap();
        let expected = outputs["output"].try_extract_tensor::<f32>().unwrap().1[0];
        state = outputs["stateN"]
            .try_extract_tensor::<f32>()
            .unwrap()
            .1
            .to_vec();
        context = frame[FRAME - 64..].to_vec();

        let probability = vad.infer(&mut [&mut ours], &[frame]).unwrap()[0];
        let mut refs: Vec<&mut StreamState> = batch.iter_mut().collect();
        let batched = vad.infer(&mut refs, &[frame; 3]).unwrap();
        for p in [probability, offline].into_iter().chain(batched) {
            worst_probability = worst_probability.max((p - expected).abs());
        }
        for lstm in std::iter::once(&ours).chain(&batch).map(StreamState::lstm) {
            let differs = lstm.iter().zip(&state).map(|(a, b)| (a - b).abs());
            worst_state = differs.fold(worst_state, f32::max);
        }
    }
    assert!(
        worst_probability < 1e-5,
        "probability differs by {worst_probability}"
    );
    assert!(worst_state < 1e-4, "state differs by {worst_state}");
}

#[test]
fn batched_streams_equal_single_streams() {
    let vad = vad();
    let speech = beckett();
    let hiss = noise(2.0, 0.05);
    let signals: Vec<&[f32]> = vec![
        &speech[..16_000 * 2],
        &hiss,
        &speech[16_000 * 3..16_000 * 5],
    ];
    let single: Vec<Vec<f32>> = signals
        .iter()
        .map(|s| vad.probabilities(s).unwrap())
        .collect();
    let mut states = vec![StreamState::default(); signals.len()];
    let mut batched = vec![Vec::new(); signals.len()];
    for index in 0..signals[0].len() / FRAME {
        let frames: Vec<&[f32]> = signals
            .iter()
            .map(|s| &s[index * FRAME..(index + 1) * FRAME])
            .collect();
        let mut refs: Vec<&mut StreamState> = states.iter_mut().collect();
        for (b, p) in vad
            .infer(&mut refs, &frames)
            .unwrap()
            .into_iter()
            .enumerate()
        {
            batched[b].push(p);
        }
    }
    for (b, (one, many)) in single.iter().zip(&batched).enumerate() {
        let worst = one
            .iter()
            .zip(many)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-4, "stream {b} differs by {worst} when batched");
    }
}

#[test]
fn plugs_into_media_preflight() {
    let vad = vad();
    let mut detector = SileroDetector {
        vad: &vad,
        threshold: 0.5,
    };
    let frames = detector.detect(&beckett(), 16_000).unwrap();
    assert_eq!(frames.frame_len, FRAME);
    assert!(
        (frames.speech_ratio() - 0.4534).abs() < 0.01,
        "{}",
        frames.speech_ratio()
    );
}

#[test]
fn cuda_without_a_cuda_build_is_a_clear_error() {
    let library = ModelDir::from_env().onnxruntime_library().unwrap();
    let error = Runtime::init(RuntimeConfig {
        library,
        device: Device::Cuda { device_id: 0 },
        intra_threads: 1,
    })
    .err()
    .expect("CUDA must be refused here");
    // The library loads; it was built without CUDA's execution provider.
    let text = error.to_string();
    assert!(text.contains("has no CUDA execution provider"), "{text}");
    assert!(text.contains("libonnxruntime.so"), "{text}");
}

/// Sixteen concurrent streams through the dispatcher: each stream's frames go in one at
/// a time with its state; the worker batches whatever streams are waiting into one run.
#[tokio::test]
async fn the_dispatcher_batches_concurrent_streams() {
    use engines::batcher::{BatchFn, Batcher};
    use std::sync::Arc;

    let vad = Arc::new(vad());
    let run_vad = vad.clone();
    type Request = (StreamState, Vec<f32>);
    type Response = (StreamState, f32, usize);
    let run: Arc<BatchFn<Request, Response>> =
        Arc::new(move |batch: Vec<(StreamState, Vec<f32>)>| {
            let size = batch.len();
            let (mut states, frames): (Vec<StreamState>, Vec<Vec<f32>>) = batch.into_iter().unzip();
            let mut refs: Vec<&mut StreamState> = states.iter_mut().collect();
            let frame_refs: Vec<&[f32]> = frames.iter().map(Vec::as_slice).collect();
            match run_vad.infer(&mut refs, &frame_refs) {
                Ok(probabilities) => states
                    .into_iter()
                    .zip(probabilities)
                    .map(|(s, p)| Ok((s, p, size)))
                    .collect(),
                Err(error) => (0..size)
                    .map(|_| Err(engines::EngineError::Inference(error.to_string())))
                    .collect(),
            }
        });
    let batcher = Arc::new(Batcher::spawn("vad", 1, 64, 16, run).unwrap());
    let speech = Arc::new(beckett());
    let mut tasks = Vec::new();
    for stream in 0..16usize {
        let (batcher, speech) = (batcher.clone(), speech.clone());
        tasks.push(tokio::spawn(async move {
            // Each stream starts at a different offset of the clip.
            let signal = &speech[stream * 4_000..stream * 4_000 + 3 * 16_000];
            let mut state = StreamState::default();
            let (mut probabilities, mut largest) = (Vec::new(), 0);
            for frame in signal.chunks_exact(FRAME) {
                let (next, probability, size) =
                    batcher.submit((state, frame.to_vec())).await.unwrap();
                state = next;
                probabilities.push(probability);
                largest = largest.max(size);
            }
            (stream, probabilities, largest)
        }));
    }
    let mut largest_batch = 0;
    for task in tasks {
        let (stream, probabilities, largest) = task.await.unwrap();
        let signal = &speech[stream * 4_000..stream * 4_000 + 3 * 16_000];
        let alone = vad.probabilities(signal).unwrap();
        let worst = alone
            .iter()
            .zip(&probabilities)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-4, "stream {stream} differs by {worst}");
        largest_batch = largest_batch.max(largest);
    }
    assert!(largest_batch > 1, "concurrent streams were never batched");
}
