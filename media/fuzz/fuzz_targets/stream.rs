//! Streaming decode of every stream type, with chunk boundaries taken from the input,
//! must never panic and never buffer more than its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::stream::{Law, StreamDecoder, StreamFormat, StreamLimits};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let format = match selector % 8 {
        0 => StreamFormat::Pcm {
            sample_rate: 16_000,
            channels: 1,
        },
        1 => StreamFormat::Wav,
        2 => StreamFormat::OggOpus,
        3 => StreamFormat::WebmOpus,
        4 => StreamFormat::Mpeg,
        5 => StreamFormat::G711 {
            law: Law::Mu,
            sample_rate: 8_000,
            channels: 1,
        },
        6 => StreamFormat::G711 {
            law: Law::A,
            sample_rate: 8_000,
            channels: 2,
        },
        _ => StreamFormat::Detect,
    };
    let limits = StreamLimits {
        max_unit_bytes: 1 << 16,
        max_seconds: 60.0,
    };
    let mut decoder = StreamDecoder::new(format, limits);
    let mut out = Vec::new();
    let step = usize::from(selector / 8).max(1);
    for chunk in rest.chunks(step) {
        if decoder.push(chunk, &mut out).is_err() {
            return;
        }
        out.clear();
    }
    let _ = decoder.finish();
});
