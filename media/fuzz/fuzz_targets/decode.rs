//! Whole-file decode (every container through sniffing, and raw PCM) must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::{DecodeOptions, Limits, RawPcm, decode, decode_mono};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::new(1 << 20, 60.0);
    let options = DecodeOptions {
        limits,
        raw_pcm: None,
        truncate: false,
    };
    let _ = decode(data, &options);
    let _ = decode_mono(
        data,
        &DecodeOptions {
            truncate: true,
            ..options
        },
        16_000,
    );
    // The declared shape comes from the input too (a client's `rate=`).
    let rate = data.first().map_or(16_000, |b| u32::from(*b) * 1_000 + 1);
    let raw = Some(RawPcm {
        sample_rate: rate,
        channels: 1,
    });
    let _ = decode_mono(
        data,
        &DecodeOptions {
            raw_pcm: raw,
            ..options
        },
        16_000,
    );
});
