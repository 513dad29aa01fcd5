//! Opus packets through libopus, with the `OpusHead` pre-skip applied.

use crate::error::{MediaError, MediaResult};

/// Longest Opus frame: 120 ms at 48 kHz.
const MAX_FRAME: usize = 5760;

pub struct OpusPacketDecoder {
    decoder: opus::Decoder,
    channels: u16,
    /// Samples per channel still to drop at the start (encoder look-ahead).
    pre_skip_left: usize,
    buffer: Vec<f32>,
}

impl OpusPacketDecoder {
    /// From an `OpusHead` (Ogg identification header or Matroska CodecPrivate); without
    /// one, assume mono with no pre-skip.
    pub fn from_head(head: Option<&[u8]>) -> MediaResult<OpusPacketDecoder> {
        let (channels, pre_skip) = match head {
            Some(head) if head.len() >= 19 && head.starts_with(b"OpusHead") => {
                let mapping_family = head[18];
                if mapping_family != 0 {
                    return Err(MediaError::Unsupported(
                        "multichannel Opus (mapping family other than 0)".into(),
                    ));
                }
                (
                    u16::from(head[9]),
                    usize::from(u16::from_le_bytes([head[10], head[11]])),
                )
            }
            Some(_) => return Err(MediaError::Corrupt("malformed OpusHead".into())),
            None => (1, 0),
        };
        OpusPacketDecoder::new(channels, pre_skip)
    }

    pub fn new(channels: u16, pre_skip: usize) -> MediaResult<OpusPacketDecoder> {
        OpusPacketDecoder::at_rate(channels, pre_skip, 48_000)
    }

    /// Decodes straight to `rate` (8, 12, 16, 24 or 48 kHz): libopus's own decoder
    /// output stage, cheaper and with less delay than resampling 48 kHz afterwards.
    /// `pre_skip` is in 48 kHz samples, as `OpusHead` gives it.
    pub fn at_rate(channels: u16, pre_skip: usize, rate: u32) -> MediaResult<OpusPacketDecoder> {
        if ![8_000, 12_000, 16_000, 24_000, 48_000].contains(&rate) {
            return Err(MediaError::Unsupported(format!(
                "Opus decodes to 8, 12, 16, 24 or 48 kHz, not {rate} Hz"
            )));
        }
        let layout = match channels {
            1 => opus::Channels::Mono,
            2 => opus::Channels::Stereo,
            other => {
                return Err(MediaError::Unsupported(format!(
                    "Opus with {other} channels"
                )));
            }
        };
        let decoder = opus::Decoder::new(rate, layout)
            .map_err(|e| MediaError::Corrupt(format!("opus decoder: {e}")))?;
        Ok(OpusPacketDecoder {
            decoder,
            channels,
            pre_skip_left: pre_skip * rate as usize / 48_000,
            buffer: vec![0.0; MAX_FRAME * usize::from(channels)],
        })
    }

    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Decodes one packet; the returned slice is valid until the next call.
    pub fn decode(&mut self, packet: &[u8]) -> MediaResult<&[f32]> {
        let frames = self
            .decoder
            .decode_float(packet, &mut self.buffer, false)
            .map_err(|e| MediaError::Corrupt(format!("opus packet: {e}")))?;
        let skip = self.pre_skip_left.min(frames);
        self.pre_skip_left -= skip;
        let channels = usize::from(self.channels);
        Ok(&self.buffer[skip * channels..frames * channels])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::OpusStreamEncoder;

    #[test]
    fn decodes_straight_to_16_khz() {
        // One second of a 440 Hz tone, encoded at 48 kHz as WebRTC peers send it.
        let tone: Vec<f32> = (0..48_000)
            .map(|i| 0.5 * (i as f32 * 440.0 * std::f32::consts::TAU / 48_000.0).sin())
            .collect();
        let mut encoder = OpusStreamEncoder::new(1, 32_000).unwrap();
        let mut packets = Vec::new();
        encoder
            .push(&tone, &mut |packet| packets.push(packet.to_vec()))
            .unwrap();
        let mut decoder = OpusPacketDecoder::at_rate(1, 0, 16_000).unwrap();
        let mut samples = Vec::new();
        for packet in &packets {
            let decoded = decoder.decode(packet).unwrap();
            assert_eq!(decoded.len(), 320, "20 ms at 16 kHz");
            samples.extend_from_slice(decoded);
        }
        // The tone survives: its power, and its zero crossings (880 a second).
        let middle = &samples[4_000..12_000];
        let rms = (middle.iter().map(|s| s * s).sum::<f32>() / middle.len() as f32).sqrt();
        assert!((0.3..0.42).contains(&rms), "rms {rms}");
        let crossings = middle
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        assert!(
            (430..450).contains(&crossings),
            "{crossings} crossings in 0.5 s"
        );
        assert!(OpusPacketDecoder::at_rate(1, 0, 44_100).is_err());
    }
}
