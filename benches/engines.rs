//! Engine hot paths: Silero VAD on one stream and batched over 16 streams, speaker
//! embeddings (beckett.wav, 10 s), diarization clustering of 500, 2,000 and 7,200
//! windows (a two-hour file; sampled past `MAX_CLUSTERED`), sentence embeddings (one
//! question, 32 sentences), Whisper on a 44 s clip (two_cities.wav), Piper's
//! time to first audio and real-time factor. `benches/engines_vs_peers.sh` runs
//! this beside the Python onnxruntime Silero loop in the same command.
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

use criterion::{Criterion, criterion_group, criterion_main};
use engines::embedder::SpeakerEmbedder;
use engines::models::ModelDir;
use engines::piper::{FIRST_PIECE_FRAMES, PiperVoice};
use engines::silero::{FRAME, SileroVad, StreamState};
use engines::wer::wer;
use engines::whisper::{Options, Whisper};
use engines::{Device, Runtime, RuntimeConfig};
use media::{DecodeOptions, decode, resample};

/// What `two_cities.wav` says.
const TWO_CITIES: &str = include_str!("../engines/tests/data/two_cities.txt");

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

    let vad = SileroVad::load(&models).unwrap();
    c.bench_function("vad/one_stream", |b| {
        b.iter(|| vad.probabilities(&speech).unwrap().len())
    });
    // A live stream as the server runs it: one `infer` per 32 ms frame.
    c.bench_function("vad/one_stream_live", |b| {
        b.iter(|| streams_live(&vad, &speech, 1))
    });
    c.bench_function("vad/16_streams_batched", |b| {
        b.iter(|| streams_live(&vad, &speech, 16))
    });
    // The same 16 streams as two batches of 8 on two threads (the model is shared
    // without a lock). `engines_vs_peers.sh` runs this one on two cores.
    c.bench_function("vad/16_streams_two_threads", |b| {
        b.iter(|| {
            std::thread::scope(|scope| {
                let half = scope.spawn(|| streams_live(&vad, &speech, 8));
                streams_live(&vad, &speech, 8) + half.join().unwrap()
            })
        })
    });

    let embedder = SpeakerEmbedder::load(&runtime, &models).unwrap();
    let mut group = c.benchmark_group("diarize_cluster");
    group.sample_size(10);
    for windows in [500, 2000, 7200] {
        let embeddings = three_voices(windows);
        group.bench_function(format!("{windows}_windows"), |b| {
            b.iter(|| engines::diarize::agglomerative(&embeddings, 0.4))
        });
    }
    group.finish();
    c.bench_function("embedding/beckett_10s", |b| {
        b.iter(|| embedder.embed(&speech).unwrap())
    });

    // Sentence embeddings: one short text (a cache lookup's), and 32 sentences of one
    // run (a batch request); the lines of two_cities.txt as the texts.
    let text_embedder = engines::text_embed::TextEmbedder::load(&runtime, &models).unwrap();
    let sentences: Vec<String> = TWO_CITIES
        .split_inclusive(['.', ',', ';'])
        .map(|s| s.trim().to_owned())
        .filter(|s| s.len() > 10)
        .cycle()
        .take(32)
        .collect();
    let one = vec!["How do I reset my password?".to_owned()];
    c.bench_function("text_embed/one_question", |b| {
        b.iter(|| text_embedder.embed(&one).unwrap())
    });
    c.bench_function("text_embed/32_sentences", |b| {
        b.iter(|| text_embedder.embed(&sentences).unwrap())
    });

    // Speech to text on a 44 s clip, greedy with timestamps, as a server request runs.
    let whisper = Whisper::load(&runtime, &models).unwrap();
    let path = models
        .file("test.speech.beckett", "test-audio/two_cities.wav")
        .unwrap();
    let audio = decode(&std::fs::read(path).unwrap(), &DecodeOptions::default()).unwrap();
    let long = resample::to_mono(&audio, 16_000).unwrap();
    let options = Options::default();
    let transcript = whisper.transcribe(&vad, &long, &options).unwrap();
    println!(
        "audio_seconds two_cities {:.4}",
        long.len() as f64 / 16_000.0
    );
    println!("stt_wer {:.4}", wer(TWO_CITIES, &transcript.text));
    // Three real recordings (44 + 28 + 10 s) arriving together, as concurrent requests
    // reach the server's Whisper dispatcher: their windows decode as one batch.
    let clips: Vec<Vec<f32>> = ["two_cities.wav", "endgame_nagg_nell.wav", "beckett.wav"]
        .iter()
        .map(|name| {
            let path = models
                .file("test.speech.beckett", &format!("test-audio/{name}"))
                .unwrap();
            let audio = decode(&std::fs::read(path).unwrap(), &DecodeOptions::default()).unwrap();
            resample::to_mono(&audio, 16_000).unwrap()
        })
        .collect();
    let total: usize = clips.iter().map(Vec::len).sum();
    println!("audio_seconds three_clips {:.4}", total as f64 / 16_000.0);
    let requests: Vec<(&[f32], &Options)> =
        clips.iter().map(|c| (c.as_slice(), &options)).collect();
    let mut group = c.benchmark_group("stt");
    group.sample_size(10);
    group.bench_function("two_cities_44s", |b| {
        b.iter(|| {
            whisper
                .transcribe(&vad, &long, &options)
                .unwrap()
                .segments
                .len()
        })
    });
    // The same with word timestamps: the extra alignment pass per window.
    let words = Options {
        word_timestamps: true,
        ..options.clone()
    };
    group.bench_function("two_cities_44s_words", |b| {
        b.iter(|| {
            whisper
                .transcribe(&vad, &long, &words)
                .unwrap()
                .segments
                .len()
        })
    });
    group.bench_function("three_clips_concurrent", |b| {
        b.iter(|| whisper.transcribe_many(&vad, &requests).len())
    });
    group.finish();

    // Time to first audio as a stream produces it: a sentence's first clause is
    // synthesized on its own (`piper::first_clause`), and its first piece of audio
    // leaves after the encoder and a short span of the decoder. And the whole sentence,
    // for the real-time factor (its length varies from run to run: the mean of ten).
    let voice = PiperVoice::load(
        &runtime,
        &models,
        &engines::phonemizer::PhonemizerCommand {
            program: env!("CARGO_BIN_EXE_scaigrid").into(),
            args: vec!["phonemizer".into()],
        },
    )
    .unwrap();
    let sentence = PiperVoice::sentences(TTS_TEXT).remove(0);
    let (clause, _) = engines::piper::first_clause(&sentence).expect("a two-clause sentence");
    let samples: usize = (0..10)
        .map(|_| voice.synthesize(&sentence, 1.0).unwrap().len())
        .sum();
    let seconds = samples as f64 / 10.0 / f64::from(voice.sample_rate());
    println!("tts_audio_seconds {seconds:.4}");
    c.bench_function("tts/first_audio", |b| {
        b.iter(|| {
            let latent = voice.encode(&clause, 1.0).unwrap().unwrap();
            let first = FIRST_PIECE_FRAMES.min(latent.frames());
            voice.decode(&latent, 0..first).unwrap().len()
        })
    });
    c.bench_function("tts/sentence", |b| {
        b.iter(|| voice.synthesize(&sentence, 1.0).unwrap().len())
    });
}

/// `streams` live streams fed the same clip frame by frame, each frame of all streams in
/// one batched call; the number of stream-frames run.
fn streams_live(vad: &SileroVad, speech: &[f32], streams: usize) -> usize {
    let mut states = vec![StreamState::default(); streams];
    let frames = speech.len() / FRAME;
    for index in 0..frames {
        let frame = &speech[index * FRAME..(index + 1) * FRAME];
        let inputs = vec![frame; streams];
        let mut refs: Vec<&mut StreamState> = states.iter_mut().collect();
        vad.infer(&mut refs, &inputs).unwrap();
    }
    frames * streams
}

/// Speaker-embedding-sized vectors (256) around three directions, deterministic.
fn three_voices(count: usize) -> Vec<Vec<f32>> {
    let mut state = 7u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let centres: Vec<Vec<f32>> = (0..3).map(|_| (0..256).map(|_| next()).collect()).collect();
    (0..count)
        .map(|i| centres[i % 3].iter().map(|c| c + 0.3 * next()).collect())
        .collect()
}

criterion_group!(benches, bench);
criterion_main!(benches);
