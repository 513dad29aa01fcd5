//! Ogg/Opus as it streams: pages (CRC-checked) reassembled into packets; `OpusHead`
//! starts the decoder, `OpusTags` is skipped, every later packet is audio.

use super::Parser;
use crate::error::{MediaError, MediaResult};
use crate::ogg::parse_page;
use crate::opus_decode::OpusPacketDecoder;

pub struct OggOpusParser {
    /// The logical stream we follow (the first one seen).
    serial: Option<u32>,
    packet: Vec<u8>,
    packets_seen: u64,
    decoder: Option<OpusPacketDecoder>,
    max_packet: usize,
}

impl OggOpusParser {
    pub fn new(max_packet: usize) -> Self {
        OggOpusParser {
            serial: None,
            packet: Vec::new(),
            packets_seen: 0,
            decoder: None,
            max_packet,
        }
    }

    fn handle_packet(&mut self, out: &mut Vec<f32>) -> MediaResult<()> {
        let packet = std::mem::take(&mut self.packet);
        let index = self.packets_seen;
        self.packets_seen += 1;
        match index {
            0 if packet.starts_with(b"OpusHead") => {
                self.decoder = Some(OpusPacketDecoder::from_head(Some(&packet))?);
            }
            0 if packet.starts_with(b"\x01vorbis") => {
                return Err(MediaError::Unsupported(
                    "Vorbis in a stream (send Opus)".into(),
                ));
            }
            0 => {
                return Err(MediaError::Unsupported(
                    "Ogg stream that is not Opus".into(),
                ));
            }
            1 => {} // OpusTags
            _ => {
                let decoder = self
                    .decoder
                    .as_mut()
                    .ok_or_else(|| MediaError::Corrupt("no OpusHead".into()))?;
                out.extend_from_slice(decoder.decode(&packet)?);
            }
        }
        self.packet = packet;
        self.packet.clear();
        Ok(())
    }
}

impl Parser for OggOpusParser {
    fn parse(&mut self, data: &[u8], out: &mut Vec<f32>) -> MediaResult<usize> {
        let mut at = 0;
        while let Some((page, length)) = parse_page(&data[at..])? {
            at += length;
            let serial = *self.serial.get_or_insert(page.serial);
            if page.serial != serial {
                continue;
            }
            if !page.continued && !self.packet.is_empty() {
                // A packet was cut off by a lost page; drop it rather than decode garbage.
                self.packet.clear();
            }
            let mut offset = 0;
            for lace in page.lacing {
                let lace = usize::from(*lace);
                self.packet
                    .extend_from_slice(&page.body[offset..offset + lace]);
                offset += lace;
                if self.packet.len() > self.max_packet {
                    return Err(MediaError::Corrupt(
                        "Ogg packet larger than the limit".into(),
                    ));
                }
                if lace < 255 {
                    self.handle_packet(out)?;
                }
            }
        }
        Ok(at)
    }

    fn shape(&self) -> Option<(u32, u16)> {
        self.decoder.as_ref().map(|d| (48_000, d.channels()))
    }

    fn at_boundary(&self) -> bool {
        self.packet.is_empty()
    }
}
