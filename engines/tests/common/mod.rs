//! Shared by the engines integration tests: the runtime, models, test speech, espeak-ng.

#![allow(dead_code)]

use engines::models::ModelDir;
use engines::{Device, Runtime, RuntimeConfig};
use media::{DecodeOptions, decode, resample};

pub fn models() -> ModelDir {
    ModelDir::from_env()
}

pub fn runtime() -> Runtime {
    let library = models()
        .onnxruntime_library()
        .expect("run models/fetch (scripts/setup does)");
    Runtime::init(RuntimeConfig {
        library,
        device: Device::Cpu,
        intra_threads: 1,
    })
    .unwrap()
}

/// The phonemizer child of these tests (`src/bin/espeak-phonemizer.rs`).
pub fn phonemizer() -> engines::phonemizer::PhonemizerCommand {
    engines::phonemizer::PhonemizerCommand {
        program: env!("CARGO_BIN_EXE_espeak-phonemizer").into(),
        args: Vec::new(),
    }
}

/// Any audio file's bytes as 16 kHz mono.
pub fn to_16k(bytes: &[u8]) -> Vec<f32> {
    let audio = decode(bytes, &DecodeOptions::default()).unwrap();
    resample::to_mono(&audio, 16_000).unwrap()
}

/// Real speech fetched with the models (`test-audio/<name>`), 16 kHz mono.
pub fn test_audio(name: &str) -> Vec<f32> {
    let path = models()
        .file("test.speech.beckett", &format!("test-audio/{name}"))
        .unwrap();
    to_16k(&std::fs::read(path).unwrap())
}

/// espeak-ng speech in a voice at a pitch, 16 kHz mono.
pub fn espeak(voice: &str, pitch: u32, text: &str) -> Vec<f32> {
    let output = std::process::Command::new("espeak-ng")
        .args(["-v", voice, "-p", &pitch.to_string(), "--stdout", text])
        .output()
        .expect("espeak-ng (scripts/setup installs it)");
    assert!(output.status.success());
    to_16k(&output.stdout)
}
