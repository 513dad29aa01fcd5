//! Incremental audio file writers: mono samples in as they are synthesized, the bytes of
//! a playable file out as soon as the format allows, so an HTTP body can start before the
//! audio is complete. One writer per format, behind [`AudioWriter`]:
//!
//! - WAV: a header whose sizes say "unknown length" (`0xFFFFFFFF`, as streamed WAV from
//!   OpenAI's speech API), then 16-bit PCM. [`encode_all`] writes the exact sizes instead.
//! - PCM: raw signed 16-bit little-endian.
//! - Ogg/Opus (48 kHz only): `OpusHead` and `OpusTags` pages first, then a page per push
//!   with its 20 ms packets; the last page carries the real end and the end-of-stream flag.
//! - MP3: LAME (vendored by `mp3lame-sys`), constant bit rate, no Xing/Info frame (its
//!   counts would only be known at the end); frames leave as LAME completes them.
//! - FLAC: `fLaC` and a STREAMINFO with the total left unknown, then fixed 2048-sample
//!   frames (flacenc); the tail frame is shorter.

use mp3lame_encoder::{FlushGap, MonoPcm};

use crate::encode::{OPUS_FRAME, OPUS_RATE, OpusStreamEncoder, pcm_s16le, wav_header};
use crate::error::{MediaError, MediaResult};
use crate::ogg::OggPages;

/// A file format an [`AudioWriter`] produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Wav,
    Pcm,
    /// Ogg/Opus at 48 kHz; `bitrate` in bits per second.
    OggOpus {
        bitrate: i32,
    },
    /// MP3 at `kbps` (constant bit rate).
    Mp3 {
        kbps: u16,
    },
    Flac,
}

/// Writes one mono file of `Format` at a fixed sample rate, piece by piece.
pub struct AudioWriter {
    inner: Inner,
    /// Samples pushed so far.
    samples: u64,
}

enum Inner {
    Wav { rate: u32, started: bool },
    Pcm,
    Opus(Box<OpusWriter>),
    Mp3(Box<mp3lame_encoder::Encoder>),
    Flac(Box<FlacWriter>),
}

impl AudioWriter {
    /// A writer of `format` for mono samples at `rate` (48 kHz for Ogg/Opus).
    pub fn new(format: Format, rate: u32) -> MediaResult<AudioWriter> {
        let invalid = |what: String| MediaError::InvalidParameters(what);
        if !(8_000..=48_000).contains(&rate) {
            return Err(invalid(format!(
                "sample rate {rate} is outside 8000..48000"
            )));
        }
        let inner = match format {
            Format::Wav => Inner::Wav {
                rate,
                started: false,
            },
            Format::Pcm => Inner::Pcm,
            Format::OggOpus { bitrate } => {
                if rate != OPUS_RATE {
                    return Err(invalid(format!("Ogg/Opus is written at {OPUS_RATE} Hz")));
                }
                Inner::Opus(Box::new(OpusWriter::new(1, bitrate)?))
            }
            Format::Mp3 { kbps } => Inner::Mp3(Box::new(mp3_encoder(rate, kbps)?)),
            Format::Flac => Inner::Flac(Box::new(FlacWriter::new(rate)?)),
        };
        Ok(AudioWriter { inner, samples: 0 })
    }

    /// Samples pushed so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Encodes `samples` (in -1..1); appends whatever bytes are ready to `out`.
    pub fn push(&mut self, samples: &[f32], out: &mut Vec<u8>) -> MediaResult<()> {
        self.samples += samples.len() as u64;
        match &mut self.inner {
            Inner::Wav { rate, started } => {
                if !std::mem::replace(started, true) {
                    out.extend_from_slice(&wav_header(*rate, 1, None));
                }
                out.extend_from_slice(&pcm_s16le(samples));
            }
            Inner::Pcm => out.extend_from_slice(&pcm_s16le(samples)),
            Inner::Opus(writer) => writer.push(samples, out)?,
            Inner::Mp3(encoder) => {
                out.reserve(mp3lame_encoder::max_required_buffer_size(samples.len()));
                encoder
                    .encode_to_vec(MonoPcm(samples), out)
                    .map_err(|e| MediaError::InvalidParameters(format!("mp3 encode: {e:?}")))?;
            }
            Inner::Flac(writer) => writer.push(samples, out)?,
        }
        Ok(())
    }

    /// Drains the encoder: the last bytes of the file.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> MediaResult<()> {
        match &mut self.inner {
            Inner::Wav { rate, started } => {
                if !std::mem::replace(started, true) {
                    out.extend_from_slice(&wav_header(*rate, 1, Some(0)));
                }
            }
            Inner::Pcm => {}
            Inner::Opus(writer) => writer.finish(out)?,
            Inner::Mp3(encoder) => {
                out.reserve(7200);
                encoder
                    .flush_to_vec::<FlushGap>(out)
                    .map_err(|e| MediaError::InvalidParameters(format!("mp3 flush: {e:?}")))?;
            }
            Inner::Flac(writer) => writer.finish(out)?,
        }
        Ok(())
    }
}

/// A whole file of `format` from `samples` at `rate`; WAV gets its exact sizes.
pub fn encode_all(format: Format, samples: &[f32], rate: u32) -> MediaResult<Vec<u8>> {
    if format == Format::Wav {
        let mut out = wav_header(rate, 1, Some((samples.len() * 2) as u32));
        out.extend_from_slice(&pcm_s16le(samples));
        return Ok(out);
    }
    let mut writer = AudioWriter::new(format, rate)?;
    let mut out = Vec::new();
    writer.push(samples, &mut out)?;
    writer.finish(&mut out)?;
    Ok(out)
}

/// Bit rates LAME takes for a mono voice.
fn mp3_bitrate(kbps: u16) -> MediaResult<mp3lame_encoder::Bitrate> {
    use mp3lame_encoder::Bitrate::*;
    Ok(match kbps {
        32 => Kbps32,
        48 => Kbps48,
        64 => Kbps64,
        96 => Kbps96,
        128 => Kbps128,
        other => {
            return Err(MediaError::InvalidParameters(format!(
                "mp3 at {other} kb/s (32, 48, 64, 96 or 128)"
            )));
        }
    })
}

fn mp3_encoder(rate: u32, kbps: u16) -> MediaResult<mp3lame_encoder::Encoder> {
    let fail = |e| MediaError::InvalidParameters(format!("mp3 encoder: {e:?}"));
    let mut builder = mp3lame_encoder::Builder::new()
        .ok_or_else(|| MediaError::InvalidParameters("mp3 encoder: LAME did not start".into()))?;
    builder.set_num_channels(1).map_err(fail)?;
    builder.set_sample_rate(rate).map_err(fail)?;
    builder.set_brate(mp3_bitrate(kbps)?).map_err(fail)?;
    builder
        .set_mode(mp3lame_encoder::Mode::Mono)
        .map_err(fail)?;
    // LAME's `-q 5`: its default speed/quality point; speech does not gain from slower.
    builder
        .set_quality(mp3lame_encoder::Quality::Good)
        .map_err(fail)?;
    builder.set_to_write_vbr_tag(false).map_err(fail)?;
    builder.build().map_err(fail)
}

/// Packets per Ogg page (one second of 20 ms packets keeps lacing under 255 entries).
const PACKETS_PER_PAGE: usize = 50;

/// Ogg/Opus, one page per push.
pub(crate) struct OpusWriter {
    encoder: OpusStreamEncoder,
    pages: OggPages,
    packets: Vec<Vec<u8>>,
    /// Granule of the packets paged so far.
    granule: u64,
}

impl OpusWriter {
    pub(crate) fn new(channels: u16, bitrate: i32) -> MediaResult<OpusWriter> {
        let encoder = OpusStreamEncoder::new(channels, bitrate)?;
        let mut pages = OggPages::new(0x5CA1_0001);
        let pre_skip = encoder.lookahead() as u16;
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1);
        head.push(channels as u8);
        head.extend_from_slice(&pre_skip.to_le_bytes());
        head.extend_from_slice(&OPUS_RATE.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes());
        head.push(0);
        let vendor = b"scaigrid";
        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        pages.page(&[head], 0, 0x02);
        pages.page(&[tags], 0, 0x00);
        Ok(OpusWriter {
            encoder,
            pages,
            packets: Vec::new(),
            granule: 0,
        })
    }

    pub(crate) fn push(&mut self, samples: &[f32], out: &mut Vec<u8>) -> MediaResult<()> {
        let packets = &mut self.packets;
        self.encoder
            .push(samples, &mut |packet| packets.push(packet.to_vec()))?;
        self.page(false, out);
        Ok(())
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) -> MediaResult<()> {
        let packets = &mut self.packets;
        self.encoder
            .finish(&mut |packet| packets.push(packet.to_vec()))?;
        self.page(true, out);
        Ok(())
    }

    /// Pages the packets waiting; the last page's granule is the real end (pre-skip plus
    /// every sample pushed), so players trim the padding.
    fn page(&mut self, last: bool, out: &mut Vec<u8>) {
        let packets = std::mem::take(&mut self.packets);
        let count = packets.chunks(PACKETS_PER_PAGE).count();
        if count == 0 && last {
            let end = self.encoder.lookahead() as u64 + self.encoder.samples_in();
            self.pages.page(&[], end, 0x04);
        }
        for (index, chunk) in packets.chunks(PACKETS_PER_PAGE).enumerate() {
            self.granule += (chunk.len() * OPUS_FRAME) as u64;
            let end = last && index + 1 == count;
            let granule = match end {
                true => self.encoder.lookahead() as u64 + self.encoder.samples_in(),
                false => self.granule,
            };
            self.pages
                .page(chunk, granule, if end { 0x04 } else { 0x00 });
        }
        out.extend_from_slice(&self.pages.take_bytes());
    }
}

/// Samples per FLAC frame: 93 ms at 22 kHz, so a frame leaves soon after its audio.
const FLAC_BLOCK: usize = 2048;

struct FlacWriter {
    config: flacenc::error::Verified<flacenc::config::Encoder>,
    info: flacenc::component::StreamInfo,
    frame: flacenc::source::FrameBuf,
    pending: Vec<i32>,
    frames: usize,
    header: Option<Vec<u8>>,
}

impl FlacWriter {
    fn new(rate: u32) -> MediaResult<FlacWriter> {
        use flacenc::error::Verify;
        let fail = |e: flacenc::error::VerifyError| {
            MediaError::InvalidParameters(format!("flac encoder: {e}"))
        };
        let config = flacenc::config::Encoder::default()
            .into_verified()
            .map_err(|(_, e)| fail(e))?;
        let mut info = flacenc::component::StreamInfo::new(rate as usize, 1, 16).map_err(fail)?;
        info.set_block_sizes(FLAC_BLOCK, FLAC_BLOCK).map_err(fail)?;
        let header = flac_bytes(&flacenc::component::Stream::with_stream_info(info.clone()))?;
        Ok(FlacWriter {
            config,
            info,
            frame: flacenc::source::FrameBuf::with_size(1, FLAC_BLOCK).map_err(fail)?,
            pending: Vec::with_capacity(FLAC_BLOCK * 2),
            frames: 0,
            header: Some(header),
        })
    }

    fn push(&mut self, samples: &[f32], out: &mut Vec<u8>) -> MediaResult<()> {
        if let Some(header) = self.header.take() {
            out.extend_from_slice(&header);
        }
        self.pending
            .extend(samples.iter().map(|s| i32::from(crate::encode::to_i16(*s))));
        let whole = self.pending.len() / FLAC_BLOCK * FLAC_BLOCK;
        for block in self.pending[..whole].chunks(FLAC_BLOCK) {
            encode_flac_frame(
                (&self.config, &self.info),
                &mut self.frame,
                block,
                self.frames,
                out,
            )?;
            self.frames += 1;
        }
        self.pending.drain(..whole);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> MediaResult<()> {
        self.push(&[], out)?;
        if self.pending.is_empty() {
            return Ok(());
        }
        // The shorter tail frame; FLAC's smallest block is 32 samples.
        let mut tail = std::mem::take(&mut self.pending);
        let size = tail.len().max(flacenc::constant::MIN_BLOCK_SIZE);
        tail.resize(size, 0);
        self.frame.resize(size);
        encode_flac_frame(
            (&self.config, &self.info),
            &mut self.frame,
            &tail,
            self.frames,
            out,
        )
    }
}

fn encode_flac_frame(
    (config, info): (
        &flacenc::error::Verified<flacenc::config::Encoder>,
        &flacenc::component::StreamInfo,
    ),
    frame: &mut flacenc::source::FrameBuf,
    block: &[i32],
    number: usize,
    out: &mut Vec<u8>,
) -> MediaResult<()> {
    use flacenc::source::Fill;
    frame
        .fill_interleaved(block)
        .map_err(|e| MediaError::InvalidParameters(format!("flac frame: {e}")))?;
    let encoded = flacenc::encode_fixed_size_frame(config, frame, number, info)
        .map_err(|e| MediaError::InvalidParameters(format!("flac frame: {e}")))?;
    out.extend_from_slice(&flac_bytes(&encoded)?);
    Ok(())
}

/// A FLAC component's bytes (every component here ends on a byte boundary).
fn flac_bytes(component: &impl flacenc::component::BitRepr) -> MediaResult<Vec<u8>> {
    let mut sink = flacenc::bitsink::ByteSink::with_capacity(component.count_bits());
    component
        .write(&mut sink)
        .map_err(|e| MediaError::InvalidParameters(format!("flac write: {e}")))?;
    Ok(sink.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, seconds: f32) -> Vec<f32> {
        (0..(rate as f32 * seconds) as usize)
            .map(|i| 0.4 * (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin())
            .collect()
    }

    /// Pushes `samples` in uneven pieces, as sentences arrive.
    fn written(format: Format, rate: u32, samples: &[f32]) -> Vec<u8> {
        let mut writer = AudioWriter::new(format, rate).unwrap();
        let mut out = Vec::new();
        for piece in samples.chunks(7_001) {
            writer.push(piece, &mut out).unwrap();
        }
        writer.finish(&mut out).unwrap();
        assert_eq!(writer.samples(), samples.len() as u64);
        out
    }

    fn decoded_seconds(bytes: &[u8]) -> f64 {
        let audio = crate::decode(bytes, &crate::DecodeOptions::default()).unwrap();
        audio.samples.len() as f64 / f64::from(audio.channels) / f64::from(audio.sample_rate)
    }

    #[test]
    fn every_format_written_in_pieces_decodes_to_the_same_length() {
        let cases = [
            (Format::Wav, 22_050),
            (Format::Mp3 { kbps: 64 }, 22_050),
            (Format::Mp3 { kbps: 64 }, 24_000),
            (Format::Flac, 22_050),
            (Format::OggOpus { bitrate: 32_000 }, 48_000),
        ];
        for (format, rate) in cases {
            let samples = tone(rate, 1.7);
            let bytes = written(format, rate, &samples);
            let seconds = decoded_seconds(&bytes);
            // MP3 decoders keep the encoder's delay and padding (no gapless tag in a
            // stream): at most two frames more.
            let slack = match format {
                Format::Mp3 { .. } => 0.11,
                // This crate's Ogg reader ignores end trimming: whole 20 ms packets.
                Format::OggOpus { .. } => 0.021,
                _ => 0.005,
            };
            assert!(
                (seconds - 1.7).abs() <= slack && seconds >= 1.7 - 0.005,
                "{format:?} at {rate}: {seconds} s"
            );
        }
    }

    #[test]
    fn flac_is_lossless() {
        let samples = tone(16_000, 0.9);
        let bytes = written(Format::Flac, 16_000, &samples);
        let audio = crate::decode(&bytes, &crate::DecodeOptions::default()).unwrap();
        assert_eq!(audio.samples.len(), samples.len());
        for (a, b) in audio.samples.iter().zip(&samples) {
            assert!((a - b).abs() < 1.0 / 16_000.0, "{a} vs {b}");
        }
        assert!(bytes.len() < samples.len() * 2, "FLAC compresses a tone");
    }

    #[test]
    fn streamed_wav_says_its_length_is_unknown_and_whole_wav_says_it() {
        let samples = tone(16_000, 0.5);
        let streamed = written(Format::Wav, 16_000, &samples);
        assert_eq!(&streamed[4..8], &u32::MAX.to_le_bytes());
        assert_eq!(&streamed[40..44], &u32::MAX.to_le_bytes());
        let whole = encode_all(Format::Wav, &samples, 16_000).unwrap();
        assert_eq!(&whole[40..44], &16_000u32.to_le_bytes());
        assert_eq!(&streamed[44..], &whole[44..]);
    }

    #[test]
    fn the_first_bytes_leave_before_the_end() {
        // A player can start on the first push: header and the first frames are out.
        for (format, rate) in [
            (Format::Wav, 22_050),
            (Format::Mp3 { kbps: 64 }, 22_050),
            (Format::Flac, 22_050),
            (Format::OggOpus { bitrate: 32_000 }, 48_000),
        ] {
            let mut writer = AudioWriter::new(format, rate).unwrap();
            let mut out = Vec::new();
            writer.push(&tone(rate, 0.25), &mut out).unwrap();
            assert!(out.len() > 200, "{format:?}: {} bytes", out.len());
        }
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(AudioWriter::new(Format::OggOpus { bitrate: 32_000 }, 22_050).is_err());
        assert!(AudioWriter::new(Format::Mp3 { kbps: 65 }, 22_050).is_err());
        assert!(AudioWriter::new(Format::Wav, 1_000).is_err());
        let mut empty = AudioWriter::new(Format::Wav, 16_000).unwrap();
        let mut out = Vec::new();
        empty.finish(&mut out).unwrap();
        assert_eq!(out.len(), 44);
    }
}
