//! Streaming decode with random chunk boundaries equals the whole-file decode.
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

mod fixtures;

use media::stream::{StreamDecoder, StreamFormat, StreamLimits};
use media::{DecodeOptions, MediaError, decode};

/// Deterministic chunk sizes (xorshift), 1..=max bytes.
fn chunk_sizes(seed: u64, max: u64) -> impl FnMut() -> usize {
    let mut state = seed.max(1);
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (1 + state % max) as usize
    }
}

fn stream(
    bytes: &[u8],
    format: StreamFormat,
    seed: u64,
    max_chunk: u64,
) -> (Vec<f32>, Option<(u32, u16)>) {
    let mut decoder = StreamDecoder::new(format, StreamLimits::default());
    let mut out = Vec::new();
    let mut next = chunk_sizes(seed, max_chunk);
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + next()).min(bytes.len());
        decoder
            .push(&bytes[at..end], &mut out)
            .unwrap_or_else(|e| panic!("{format:?} at byte {at}: {e}"));
        at = end;
    }
    decoder
        .finish()
        .unwrap_or_else(|e| panic!("{format:?}: {e}"));
    (out, decoder.shape())
}

#[test]
fn exact_formats_equal_the_whole_file_decode_for_any_chunking() {
    let cases = [
        ("speech_16k_s16.wav", StreamFormat::Wav),
        ("speech_8bit.wav", StreamFormat::Wav),
        ("speech_22k_s24.wav", StreamFormat::Wav),
        ("speech_24k_s32.wav", StreamFormat::Wav),
        ("speech_48k_f32.wav", StreamFormat::Wav),
        ("speech.opus", StreamFormat::OggOpus),
        ("speech.webm", StreamFormat::WebmOpus),
    ];
    for (name, format) in cases {
        let bytes = fixtures::read(name);
        let whole = decode(&bytes, &DecodeOptions::default()).unwrap();
        for (seed, max_chunk) in [(1, 7), (2, 300), (3, 4096), (4, 65_536)] {
            let (samples, shape) = stream(&bytes, format, seed, max_chunk);
            assert_eq!(shape, Some((whole.sample_rate, whole.channels)), "{name}");
            assert_eq!(samples.len(), whole.samples.len(), "{name} seed {seed}");
            assert!(
                samples == whole.samples,
                "{name} seed {seed}: samples differ"
            );
        }
    }
}

#[test]
fn an_undeclared_container_is_recognised_from_its_first_bytes() {
    for (name, declared) in [
        ("speech_16k_s16.wav", StreamFormat::Wav),
        ("speech.opus", StreamFormat::OggOpus),
        ("speech.webm", StreamFormat::WebmOpus),
        ("speech.mp3", StreamFormat::Mpeg),
    ] {
        let bytes = fixtures::read(name);
        let (expected, shape) = stream(&bytes, declared, 11, 1 << 30);
        // Pieces smaller than the signature too.
        for (seed, max_chunk) in [(12, 3), (13, 4096)] {
            let (detected, detected_shape) = stream(&bytes, StreamFormat::Detect, seed, max_chunk);
            assert_eq!(detected_shape, shape, "{name}");
            assert!(detected == expected, "{name} seed {seed}: samples differ");
        }
    }
    // FLAC is recognised but not streamed: a clear refusal, not garbage.
    let mut decoder = StreamDecoder::new(StreamFormat::Detect, StreamLimits::default());
    let refused = decoder.push(b"fLaC\0\0\0\x22\x10\x00\x10\x00", &mut Vec::new());
    assert!(
        matches!(refused, Err(MediaError::Unsupported(_))),
        "{refused:?}"
    );
    // Fewer bytes than a signature, then the end: truncated, not a panic.
    let mut decoder = StreamDecoder::new(StreamFormat::Detect, StreamLimits::default());
    decoder.push(b"RIFF", &mut Vec::new()).unwrap();
    assert!(matches!(decoder.finish(), Err(MediaError::Truncated(_))));
}

#[test]
fn g711_streams_decode_both_laws() {
    // Silence, then full scale of each sign, in both laws, split anywhere.
    let mu = [0xFFu8, 0x7F, 0x80, 0x00];
    let a = [0xD5u8, 0x55, 0xAA, 0x2A];
    for (media_type, bytes, expected) in [
        ("audio/pcmu;rate=8000", mu, [0, 0, 32_124, -32_124]),
        ("audio/pcma;rate=8000", a, [8, -8, 32_256, -32_256]),
    ] {
        let format = StreamFormat::from_media_type(media_type).unwrap();
        let long: Vec<u8> = bytes.iter().copied().cycle().take(4_000).collect();
        let (samples, shape) = stream(&long, format, 21, 17);
        assert_eq!(shape, Some((8_000, 1)), "{media_type}");
        assert_eq!(samples.len(), 4_000);
        for (sample, want) in samples.iter().zip(expected.iter().cycle()) {
            assert_eq!(*sample, f32::from(*want as i16) / 32_768.0, "{media_type}");
        }
    }
}

#[test]
fn raw_pcm_streams() {
    let bytes = fixtures::read("speech_16k_mono.s16le");
    let wav = decode(
        &fixtures::read("speech_16k_s16.wav"),
        &DecodeOptions::default(),
    )
    .unwrap();
    let format = StreamFormat::from_media_type("audio/pcm;rate=16000").unwrap();
    let (samples, shape) = stream(&bytes, format, 9, 333);
    assert_eq!(shape, Some((16_000, 1)));
    assert!(samples == wav.samples);
}

#[test]
fn mp3_streams_like_the_whole_file() {
    let bytes = fixtures::read("speech.mp3");
    let whole = decode(&bytes, &DecodeOptions::default()).unwrap();
    let (one, shape) = stream(&bytes, StreamFormat::Mpeg, 5, 1 << 30);
    assert_eq!(shape, Some((whole.sample_rate, whole.channels)));
    for seed in [6, 7] {
        let (chunked, _) = stream(&bytes, StreamFormat::Mpeg, seed, 500);
        assert!(
            chunked == one,
            "chunking changed the MP3 output (seed {seed})"
        );
    }
    // Same start (encoder delay trimmed alike); the stream cannot know the end padding.
    let frames = |n: usize| n / usize::from(whole.channels);
    let extra = frames(one.len()) as i64 - frames(whole.samples.len()) as i64;
    assert!(
        (0..=1152).contains(&extra),
        "stream has {extra} frames more than the file"
    );
    let common = whole.samples.len().min(one.len());
    let worst = one[..common]
        .iter()
        .zip(&whole.samples[..common])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        worst < 1e-4,
        "streamed MP3 differs from the file by {worst}"
    );
}

#[test]
fn a_stream_cut_short_is_truncated() {
    for (name, format) in [
        ("speech_16k_s16.wav", StreamFormat::Wav),
        ("speech.opus", StreamFormat::OggOpus),
        ("speech.webm", StreamFormat::WebmOpus),
    ] {
        let bytes = fixtures::read(name);
        let mut decoder = StreamDecoder::new(format, StreamLimits::default());
        let mut out = Vec::new();
        decoder
            .push(&bytes[..bytes.len() * 2 / 3 + 1], &mut out)
            .unwrap();
        assert!(!out.is_empty(), "{name}: nothing decoded before the cut");
        assert!(
            matches!(decoder.finish(), Err(MediaError::Truncated(_))),
            "{name}"
        );
    }
}

#[test]
fn memory_stays_bounded_whatever_the_client_sends() {
    let limits = StreamLimits {
        max_unit_bytes: 64 * 1024,
        max_seconds: 3600.0,
    };
    // A WebM block claiming 100 MB.
    let mut webm = vec![
        0x1A, 0x45, 0xDF, 0xA3, 0x80, 0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xFF,
    ];
    webm.extend_from_slice(&[0xA3, 0x01, 0x00, 0x00, 0x00, 0x05, 0xF5, 0xE1, 0x00]);
    let mut decoder = StreamDecoder::new(StreamFormat::WebmOpus, limits);
    assert!(decoder.push(&webm, &mut Vec::new()).is_err());
    // An Ogg packet that never ends (255-byte lacing forever).
    let mut decoder = StreamDecoder::new(StreamFormat::OggOpus, limits);
    let head = media::encode::ogg_opus(&[0.0; 960], 1, 24_000).unwrap();
    decoder.push(&head, &mut Vec::new()).unwrap();
    let mut failed = false;
    for _ in 0..1000 {
        let mut page = vec![0u8; 27 + 255 + 255 * 255];
        page[..4].copy_from_slice(b"OggS");
        page[5] = 1;
        page[14..18].copy_from_slice(&0x5CA1_0001u32.to_le_bytes());
        page[26] = 255;
        for lace in &mut page[27..27 + 255] {
            *lace = 255;
        }
        let crc = media::ogg::crc(&page);
        page[22..26].copy_from_slice(&crc.to_le_bytes());
        if decoder.push(&page, &mut Vec::new()).is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "an endless packet was buffered without limit");
    // Garbage never panics, and a stream of junk is refused.
    let junk: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for format in [
        StreamFormat::Wav,
        StreamFormat::OggOpus,
        StreamFormat::WebmOpus,
        StreamFormat::Mpeg,
        StreamFormat::Detect,
    ] {
        let mut decoder = StreamDecoder::new(format, limits);
        let mut out = Vec::new();
        let result = junk
            .chunks(1000)
            .try_for_each(|c| decoder.push(c, &mut out));
        assert!(result.is_err(), "{format:?} accepted junk");
    }
}
