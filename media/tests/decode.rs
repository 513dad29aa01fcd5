//! Whole-file decode of every format, limits, and broken input.
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

mod fixtures;

use media::{DecodeOptions, LimitKind, Limits, MediaError, RawPcm, decode};

/// Duration of the reference speech, from the 16 kHz WAV every other file was made from.
fn reference_seconds() -> f64 {
    decode(
        &fixtures::read("speech_16k_s16.wav"),
        &DecodeOptions::default(),
    )
    .unwrap()
    .duration_seconds()
}

#[test]
fn every_format_decodes_to_the_right_rate_and_duration() {
    let reference = reference_seconds();
    assert!(reference > 4.0, "reference speech is {reference} s");
    // (file, rate, channels, duration tolerance in seconds: lossy codecs pad a little)
    let cases = [
        ("speech_16k_s16.wav", 16_000, 1, 0.001),
        ("speech_8bit.wav", 16_000, 1, 0.001),
        ("speech_22k_s24.wav", 22_050, 1, 0.001),
        ("speech_24k_s32.wav", 24_000, 1, 0.001),
        ("speech_48k_f32.wav", 48_000, 1, 0.001),
        ("speech.flac", 16_000, 1, 0.001),
        ("speech.mp3", 44_100, 2, 0.06),
        ("speech.ogg", 44_100, 2, 0.03),
        ("speech.opus", 48_000, 2, 0.03),
        ("speech.webm", 48_000, 2, 0.03),
        ("speech.m4a", 44_100, 2, 0.1),
    ];
    for (name, rate, channels, tolerance) in cases {
        let audio = decode(&fixtures::read(name), &DecodeOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(audio.sample_rate, rate, "{name}");
        assert_eq!(audio.channels, channels, "{name}");
        let seconds = audio.duration_seconds();
        assert!(
            (seconds - reference).abs() <= tolerance,
            "{name}: {seconds:.4} s, reference {reference:.4} s"
        );
        let peak = audio.samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!(peak > 0.3 && peak <= 1.01, "{name}: peak {peak}");
    }
}

#[test]
fn raw_pcm_needs_its_shape_declared() {
    let bytes = fixtures::read("speech_16k_mono.s16le");
    let error = decode(&bytes, &DecodeOptions::default()).unwrap_err();
    assert!(matches!(error, MediaError::Unsupported(_)), "{error:?}");
    let options = DecodeOptions {
        raw_pcm: Some(RawPcm {
            sample_rate: 16_000,
            channels: 1,
        }),
        ..DecodeOptions::default()
    };
    let audio = decode(&bytes, &options).unwrap();
    assert!((audio.duration_seconds() - reference_seconds()).abs() < 0.001);
    let wav = decode(
        &fixtures::read("speech_16k_s16.wav"),
        &DecodeOptions::default(),
    )
    .unwrap();
    assert_eq!(
        audio.samples, wav.samples,
        "raw and WAV hold the same samples"
    );
}

#[test]
fn broken_inputs_get_typed_errors() {
    type Expect = fn(&MediaError) -> bool;
    let cases: [(&str, Expect); 4] = [
        ("truncated.wav", |e| matches!(e, MediaError::Truncated(_))),
        ("truncated.mp3", |e| matches!(e, MediaError::Truncated(_))),
        ("corrupt.flac", |e| matches!(e, MediaError::Corrupt(_))),
        ("not_audio.bin", |e| matches!(e, MediaError::Unsupported(_))),
    ];
    for (name, expected) in cases {
        let error = decode(&fixtures::read(name), &DecodeOptions::default()).unwrap_err();
        assert!(expected(&error), "{name}: got {error:?}");
    }
    assert!(matches!(
        decode(b"", &DecodeOptions::default()).unwrap_err(),
        MediaError::Truncated(_)
    ));
}

#[test]
fn streamed_wavs_with_placeholder_sizes_decode() {
    // espeak-ng --stdout writes a 0x7FFFF000 data size; recorders write 0 or 0xFFFFFFFF.
    let wav = fixtures::read("speech_16k_s16.wav");
    let reference = decode(&wav, &DecodeOptions::default()).unwrap();
    for placeholder in [0x7FFF_F000u32, 0xFFFF_FFFF, 0] {
        let mut streamed = wav.clone();
        streamed[4..8].copy_from_slice(&placeholder.saturating_add(36).to_le_bytes());
        streamed[40..44].copy_from_slice(&placeholder.to_le_bytes());
        let audio = decode(&streamed, &DecodeOptions::default())
            .unwrap_or_else(|e| panic!("placeholder {placeholder:#x}: {e}"));
        assert_eq!(
            audio.samples, reference.samples,
            "placeholder {placeholder:#x}"
        );
    }
}

#[test]
fn limits_stop_decoding_early() {
    let bytes = fixtures::read("long_30s.opus");
    let limits = Limits::new(1 << 30, 10.0);
    let error = decode(
        &bytes,
        &DecodeOptions {
            limits,
            ..DecodeOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        error,
        MediaError::TooLarge {
            kind: LimitKind::Seconds,
            limit: 10
        }
    );
    let limits = Limits::new(1000, 1e9);
    let error = decode(
        &bytes,
        &DecodeOptions {
            limits,
            ..DecodeOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        error,
        MediaError::TooLarge {
            kind: LimitKind::Bytes,
            limit: 1000
        }
    );
    let audio = decode(&bytes, &DecodeOptions::default()).unwrap();
    assert!(
        (audio.duration_seconds() - 30.0).abs() < 0.05,
        "{}",
        audio.duration_seconds()
    );
}

#[test]
fn random_bytes_never_panic() {
    // A small deterministic generator (xorshift) so failures reproduce.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seeds: Vec<Vec<u8>> = [
        "speech.mp3",
        "speech.flac",
        "speech.ogg",
        "speech.opus",
        "speech.webm",
        "speech.m4a",
        "speech_16k_s16.wav",
    ]
    .iter()
    .map(|name| fixtures::read(name))
    .collect();
    for round in 0..300 {
        let seed = &seeds[round % seeds.len()];
        let mut data = seed[..seed.len().min(4096 + (next() % 8192) as usize)].to_vec();
        let flips = 1 + next() % 64;
        for _ in 0..flips {
            let at = (next() as usize) % data.len();
            data[at] = next() as u8;
        }
        // Any result is fine; a panic is not.
        let _ = decode(&data, &DecodeOptions::default());
    }
    for length in [1usize, 2, 4, 12, 64, 1000] {
        let data: Vec<u8> = (0..length).map(|_| next() as u8).collect();
        let _ = decode(&data, &DecodeOptions::default());
    }
}
