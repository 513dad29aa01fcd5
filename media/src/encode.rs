//! Output encoding: WAV, raw PCM, Opus packets (20 ms at 48 kHz) for streaming, and an
//! Ogg/Opus file; the incremental writers of every format are in [`crate::writer`].

use crate::error::{MediaError, MediaResult};

pub(crate) fn to_i16(sample: f32) -> i16 {
    (sample.clamp(-1.0, 1.0) * 32767.0).round() as i16
}

/// Raw signed 16-bit little-endian PCM.
pub fn pcm_s16le(samples: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 2);
    for sample in samples {
        out.extend_from_slice(&to_i16(*sample).to_le_bytes());
    }
    out
}

/// The 44-byte header of a 16-bit PCM WAV file with `data_len` bytes of samples; `None`
/// writes the streaming form, whose sizes (`0xFFFFFFFF`) say "read to the end".
pub fn wav_header(sample_rate: u32, channels: u16, data_len: Option<u32>) -> Vec<u8> {
    let block_align = channels * 2;
    let (riff_len, data_len) = match data_len {
        Some(len) => (36u32.saturating_add(len), len),
        None => (u32::MAX, u32::MAX),
    };
    let mut out = Vec::with_capacity(44);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&riff_len.to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * u32::from(block_align)).to_le_bytes());
    out.extend_from_slice(&block_align.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out
}

/// A 16-bit PCM WAV file.
pub fn wav_s16(samples: &[f32], sample_rate: u32, channels: u16) -> Vec<u8> {
    let mut out = wav_header(sample_rate, channels, Some((samples.len() * 2) as u32));
    out.extend_from_slice(&pcm_s16le(samples));
    out
}

/// Opus works at 48 kHz here; 20 ms frames.
pub const OPUS_RATE: u32 = 48_000;
pub const OPUS_FRAME: usize = 960;
/// Largest packet we let the encoder produce.
const MAX_PACKET: usize = 4000;

/// Streams 48 kHz PCM into 20 ms Opus packets.
pub struct OpusStreamEncoder {
    encoder: opus::Encoder,
    channels: usize,
    pending: Vec<f32>,
    packet: Vec<u8>,
    lookahead: usize,
    samples_in: u64,
}

impl OpusStreamEncoder {
    /// `bitrate` in bits per second (e.g. 32_000 for speech).
    pub fn new(channels: u16, bitrate: i32) -> MediaResult<OpusStreamEncoder> {
        let layout = match channels {
            1 => opus::Channels::Mono,
            2 => opus::Channels::Stereo,
            other => {
                return Err(MediaError::InvalidParameters(format!(
                    "Opus with {other} channels"
                )));
            }
        };
        let fail = |e: opus::Error| MediaError::InvalidParameters(format!("opus encoder: {e}"));
        let mut encoder =
            opus::Encoder::new(OPUS_RATE, layout, opus::Application::Voip).map_err(fail)?;
        encoder
            .set_bitrate(opus::Bitrate::Bits(bitrate))
            .map_err(fail)?;
        let lookahead = encoder.get_lookahead().map_err(fail)?.max(0) as usize;
        let channels = usize::from(channels);
        Ok(OpusStreamEncoder {
            encoder,
            channels,
            pending: Vec::with_capacity(OPUS_FRAME * channels),
            packet: vec![0; MAX_PACKET],
            lookahead,
            samples_in: 0,
        })
    }

    /// Samples per channel the decoder must skip at the start (the Ogg pre-skip).
    pub fn lookahead(&self) -> usize {
        self.lookahead
    }

    /// Samples per channel pushed so far.
    pub fn samples_in(&self) -> u64 {
        self.samples_in
    }

    fn encode_pending(&mut self, on_packet: &mut impl FnMut(&[u8])) -> MediaResult<()> {
        let len = self
            .encoder
            .encode_float(&self.pending, &mut self.packet)
            .map_err(|e| MediaError::Corrupt(format!("opus encode: {e}")))?;
        on_packet(&self.packet[..len]);
        self.pending.clear();
        Ok(())
    }

    /// Encodes interleaved 48 kHz samples; calls `on_packet` for each full 20 ms frame.
    pub fn push(
        &mut self,
        mut samples: &[f32],
        on_packet: &mut impl FnMut(&[u8]),
    ) -> MediaResult<()> {
        self.samples_in += (samples.len() / self.channels) as u64;
        let frame_len = OPUS_FRAME * self.channels;
        while !samples.is_empty() {
            let take = (frame_len - self.pending.len()).min(samples.len());
            self.pending.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.pending.len() == frame_len {
                self.encode_pending(on_packet)?;
            }
        }
        Ok(())
    }

    /// Pads and encodes the last partial frame, then enough silence to flush the
    /// encoder's look-ahead, so every pushed sample is decodable.
    pub fn finish(&mut self, on_packet: &mut impl FnMut(&[u8])) -> MediaResult<()> {
        let frame_len = OPUS_FRAME * self.channels;
        let mut remaining = self.pending.len() / self.channels + self.lookahead;
        while remaining > 0 {
            self.pending.resize(frame_len, 0.0);
            self.encode_pending(on_packet)?;
            remaining = remaining.saturating_sub(OPUS_FRAME);
        }
        Ok(())
    }
}

/// Encodes interleaved 48 kHz samples into an Ogg/Opus file.
pub fn ogg_opus(samples: &[f32], channels: u16, bitrate: i32) -> MediaResult<Vec<u8>> {
    let mut writer = crate::writer::OpusWriter::new(channels, bitrate)?;
    let mut out = Vec::new();
    writer.push(samples, &mut out)?;
    writer.finish(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_header_is_consistent() {
        let wav = wav_s16(&[0.0, 0.5, -0.5, 1.0], 16_000, 1);
        assert_eq!(&wav[..4], b"RIFF");
        assert_eq!(wav.len(), 44 + 8);
        assert_eq!(u32::from_le_bytes(wav[40..44].try_into().unwrap()), 8);
        assert_eq!(i16::from_le_bytes([wav[46], wav[47]]), 16384);
    }

    #[test]
    fn stream_encoder_emits_20ms_packets() {
        let mut encoder = OpusStreamEncoder::new(1, 32_000).unwrap();
        let mut count = 0;
        encoder
            .push(&vec![0.1; 960 * 3 + 100], &mut |_| count += 1)
            .unwrap();
        assert_eq!(count, 3);
        encoder.finish(&mut |_| count += 1).unwrap();
        assert!(count >= 4);
    }
}
