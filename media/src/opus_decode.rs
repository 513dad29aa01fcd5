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
        let layout = match channels {
            1 => opus::Channels::Mono,
            2 => opus::Channels::Stereo,
            other => {
                return Err(MediaError::Unsupported(format!(
                    "Opus with {other} channels"
                )));
            }
        };
        let decoder = opus::Decoder::new(48_000, layout)
            .map_err(|e| MediaError::Corrupt(format!("opus decoder: {e}")))?;
        Ok(OpusPacketDecoder {
            decoder,
            channels,
            pre_skip_left: pre_skip,
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
