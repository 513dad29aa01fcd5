//! Whole-file decode (every container through sniffing, and raw PCM) must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::{DecodeOptions, Limits, RawPcm, decode};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_bytes: 1 << 20, max_seconds: 60.0 };
    let _ = decode(data, &DecodeOptions { limits, raw_pcm: None });
    let raw = Some(RawPcm { sample_rate: 16_000, channels: 1 });
    let _ = decode(data, &DecodeOptions { limits, raw_pcm: raw });
});
