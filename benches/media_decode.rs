//! Media hot paths on one core: whole-file decode to 16 kHz mono per format, streaming
//! decode against whole-file decode, and preflight of a 25 s clip.
//!
//! Fixtures come from `media/fixtures/make.sh`. `benches/media_vs_ffmpeg.sh` runs this
//! with ffmpeg on the same files in the same command and prints the ratios.
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

use criterion::{Criterion, criterion_group, criterion_main};
use media::preflight::{Thresholds, analyse};
use media::stream::{StreamDecoder, StreamFormat, StreamLimits};
use media::vad::EnergyVad;
use media::{Audio, DecodeOptions, decode, resample};

/// Reads a generated fixture; `make.sh` runs once per bench process.
fn fixture(name: &str) -> Vec<u8> {
    static GENERATED: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = GENERATED.get_or_init(|| {
        let root = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
            .join("media/fixtures");
        let status = std::process::Command::new(root.join("make.sh"))
            .status()
            .unwrap();
        assert!(status.success());
        root.join("generated")
    });
    std::fs::read(dir.join(name)).unwrap()
}

fn to_16k_mono(bytes: &[u8]) -> Vec<f32> {
    let audio = decode(bytes, &DecodeOptions::default()).unwrap();
    resample::to_mono(&audio, 16_000).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_to_16k_mono");
    for name in [
        "speech_16k_s16.wav",
        "speech_48k_f32.wav",
        "speech.mp3",
        "speech.flac",
        "speech.ogg",
        "speech.opus",
        "speech.webm",
        "speech.m4a",
    ] {
        let bytes = fixture(name);
        let seconds = decode(&bytes, &DecodeOptions::default())
            .unwrap()
            .duration_seconds();
        println!("audio_seconds {name} {seconds:.4}");
        group.bench_function(name, |b| b.iter(|| to_16k_mono(&bytes)));
    }
    group.finish();

    let mut group = c.benchmark_group("stream_vs_whole");
    for (name, format) in [
        ("speech.opus", StreamFormat::OggOpus),
        ("speech.webm", StreamFormat::WebmOpus),
        ("speech.mp3", StreamFormat::Mpeg),
        ("speech_16k_s16.wav", StreamFormat::Wav),
    ] {
        let bytes = fixture(name);
        group.bench_function(format!("whole/{name}"), |b| {
            b.iter(|| {
                decode(&bytes, &DecodeOptions::default())
                    .unwrap()
                    .samples
                    .len()
            })
        });
        group.bench_function(format!("stream_4k_chunks/{name}"), |b| {
            let mut out = Vec::with_capacity(1 << 20);
            b.iter(|| {
                out.clear();
                let mut decoder = StreamDecoder::new(format, StreamLimits::default());
                for chunk in bytes.chunks(4096) {
                    decoder.push(chunk, &mut out).unwrap();
                }
                out.len()
            })
        });
    }
    group.finish();

    let long = decode(&fixture("long_30s.opus"), &DecodeOptions::default()).unwrap();
    let mono = long.to_mono();
    let clip = Audio::new(long.sample_rate, 1, mono[..25 * 48_000].to_vec());
    let clip_16k = Audio::new(16_000, 1, resample::to_mono(&clip, 16_000).unwrap());
    c.bench_function("preflight_25s_clip_16k", |b| {
        b.iter(|| {
            analyse(&clip_16k, &Thresholds::default(), &mut EnergyVad::default())
                .unwrap()
                .passed
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
