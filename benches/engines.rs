//! Engine hot paths: Silero VAD on one stream and batched over 16 streams, and speaker
//! embeddings, on real speech (beckett.wav, 10 s). `benches/engines_vs_peers.sh` runs
//! this beside the Python onnxruntime Silero loop in the same command.

use criterion::{Criterion, criterion_group, criterion_main};
use engines::embedder::SpeakerEmbedder;
use engines::models::ModelDir;
use engines::piper::PiperVoice;
use engines::silero::{FRAME, SileroVad, StreamState};
use engines::{Device, Runtime, RuntimeConfig};
use media::{DecodeOptions, decode, resample};

/// A two-clause sentence (the TTS latency target's shape).
const TTS_TEXT: &str = "When the meeting ends, please send the notes to everyone on the team.";

fn bench(c: &mut Criterion) {
    let models = ModelDir::from_env();
    let runtime = Runtime::init(RuntimeConfig {
        library: models.onnxruntime_library().expect("models/fetch"),
        device: Device::Cpu,
        intra_threads: 1,
    })
    .unwrap();
    let path = models
        .file("test.speech.beckett", "test-audio/beckett.wav")
        .unwrap();
    let audio = decode(&std::fs::read(path).unwrap(), &DecodeOptions::default()).unwrap();
    let speech = resample::to_mono(&audio, 16_000).unwrap();
    println!(
        "audio_seconds beckett {:.4}",
        speech.len() as f64 / 16_000.0
    );

    let vad = SileroVad::load(&runtime, &models).unwrap();
    c.bench_function("vad/one_stream", |b| {
        b.iter(|| vad.probabilities(&speech).unwrap().len())
    });
    c.bench_function("vad/16_streams_batched", |b| {
        b.iter(|| {
            let mut states = vec![StreamState::default(); 16];
            let frames = speech.len() / FRAME;
            for index in 0..frames {
                let frame = &speech[index * FRAME..(index + 1) * FRAME];
                let inputs = vec![frame; 16];
                let mut refs: Vec<&mut StreamState> = states.iter_mut().collect();
                vad.infer(&mut refs, &inputs).unwrap();
            }
            frames
        })
    });

    let embedder = SpeakerEmbedder::load(&runtime, &models).unwrap();
    c.bench_function("embedding/beckett_10s", |b| {
        b.iter(|| embedder.embed(&speech).unwrap())
    });

    // Time to first audio: the first sentence of the text is all that must be
    // synthesized before audio can start.
    let voice = PiperVoice::load(&runtime, &models).unwrap();
    let first = PiperVoice::sentences(TTS_TEXT).remove(0);
    let seconds =
        voice.synthesize(&first, 1.0).unwrap().len() as f64 / f64::from(voice.sample_rate());
    println!("tts_audio_seconds {seconds:.4}");
    c.bench_function("tts/first_sentence", |b| {
        b.iter(|| voice.synthesize(&first, 1.0).unwrap().len())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
