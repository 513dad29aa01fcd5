//! Encoders checked by decoding their output (ours and ffprobe's view of it).
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

mod fixtures;

use media::encode::{ogg_opus, pcm_s16le, wav_s16};
use media::{DecodeOptions, RawPcm, decode, resample};

fn speech_48k() -> Vec<f32> {
    let audio = decode(
        &fixtures::read("speech_16k_s16.wav"),
        &DecodeOptions::default(),
    )
    .unwrap();
    resample::to_mono(&audio, 48_000).unwrap()
}

fn rms(samples: &[f32]) -> f32 {
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32).sqrt()
}

/// How many 48 kHz mono samples ffmpeg decodes from `bytes` (it applies the Opus
/// pre-skip and the end trimming of the last granule position).
fn ffmpeg_samples(bytes: &[u8], suffix: &str) -> usize {
    let path = std::env::temp_dir().join(format!(
        "media-encode-{}-{suffix}.{suffix}",
        std::process::id()
    ));
    std::fs::write(&path, bytes).unwrap();
    let output = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "s16le", "-ac", "1", "-ar", "48000", "-"])
        .output()
        .expect("ffmpeg (scripts/setup installs it)");
    let _ = std::fs::remove_file(&path);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout.len() / 2
}

#[test]
fn ogg_opus_round_trips_and_other_tools_read_it() {
    let speech = speech_48k();
    let seconds = speech.len() as f64 / 48_000.0;
    let file = ogg_opus(&speech, 1, 32_000).unwrap();
    assert!(
        file.len() < speech.len() / 10,
        "not compressed: {} bytes",
        file.len()
    );

    let decoded = decode(&file, &DecodeOptions::default()).unwrap();
    assert_eq!((decoded.sample_rate, decoded.channels), (48_000, 1));
    // Ours ignores end trimming (whole 20 ms packets): at most one packet longer.
    let ours = decoded.duration_seconds();
    assert!(
        ours >= seconds && ours - seconds <= 0.021,
        "{ours} vs {seconds}"
    );
    let level = 20.0 * (rms(&decoded.samples) / rms(&speech)).log10();
    assert!(level.abs() < 1.5, "level changed by {level} dB");

    // ffmpeg honours the pre-skip and the final granule position: the exact length.
    assert_eq!(ffmpeg_samples(&file, "opus"), speech.len());
}

#[test]
fn wav_and_pcm_round_trip() {
    let speech = speech_48k();
    let wav = wav_s16(&speech, 48_000, 1);
    let back = decode(&wav, &DecodeOptions::default()).unwrap();
    assert_eq!(back.samples.len(), speech.len());
    let worst = back
        .samples
        .iter()
        .zip(&speech)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1.0 / 16_000.0, "worst error {worst}");
    assert_eq!(ffmpeg_samples(&wav, "wav"), speech.len());

    let raw = pcm_s16le(&speech);
    let options = DecodeOptions {
        raw_pcm: Some(RawPcm {
            sample_rate: 48_000,
            channels: 1,
        }),
        ..DecodeOptions::default()
    };
    assert_eq!(decode(&raw, &options).unwrap().samples, back.samples);
}

/// Real speech written piece by piece, as a synthesis stream does, in every format:
/// ffmpeg (another implementation) reads each back at the right length and level, and
/// nothing but the MP3 encoder's own delay and padding is added.
#[test]
fn streamed_files_of_every_format_read_back_in_ffmpeg() {
    use media::writer::{AudioWriter, Format};
    let speech = speech_48k();
    let at_22k = resample::resample_mono(&speech, 48_000, 22_050).unwrap();
    for (format, samples, rate, suffix) in [
        (Format::Wav, &at_22k, 22_050, "wav"),
        (Format::Flac, &at_22k, 22_050, "flac"),
        (Format::Mp3 { kbps: 64 }, &at_22k, 22_050, "mp3"),
        (Format::OggOpus { bitrate: 32_000 }, &speech, 48_000, "opus"),
    ] {
        let mut writer = AudioWriter::new(format, rate).unwrap();
        let mut file = Vec::new();
        for piece in samples.chunks(5_000) {
            writer.push(piece, &mut file).unwrap();
        }
        writer.finish(&mut file).unwrap();
        let expected = samples.len() * 48_000 / rate as usize;
        let heard = ffmpeg_samples(&file, suffix);
        // MP3 without a gapless tag: LAME's delay (576 + 529 samples) and the last
        // frame's padding stay in (under 2 × 1152 samples at 22 kHz, 105 ms).
        let slack = match format {
            Format::Mp3 { .. } => 5_100,
            _ => 2,
        };
        assert!(
            heard + 2 >= expected && heard <= expected + slack,
            "{suffix}: {heard} samples, {expected} expected"
        );
        let decoded = decode(&file, &DecodeOptions::default()).unwrap();
        let level = 20.0 * (rms(&decoded.samples) / rms(samples)).log10();
        assert!(level.abs() < 1.5, "{suffix}: level changed by {level} dB");
    }
}
