//! MPEG audio (MP3) as it streams: an ID3v2 tag is skipped, frames are found by their
//! headers (resynchronising over junk), the Xing/Info frame is skipped and its LAME
//! encoder delay trimmed like the whole-file decoder does, and each frame is decoded
//! with symphonia's MP3 decoder.

use symphonia::core::codecs::audio::well_known::CODEC_ID_MP3;
use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia::core::packet::Packet;
use symphonia::core::units::{Duration, Timestamp};

use super::Parser;
use crate::error::{MediaError, MediaResult};

/// The MP3 decoder's own delay, trimmed with the encoder delay (as gapless players do).
const DECODER_DELAY: usize = 529;
/// Junk tolerated while looking for a frame before the stream counts as not MP3.
const MAX_RESYNC: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
struct Header {
    length: usize,
    sample_rate: u32,
    channels: u16,
    mpeg1: bool,
}

fn parse_header(b: &[u8]) -> Option<Header> {
    if b.len() < 4 || b[0] != 0xFF || b[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = (b[1] >> 3) & 3;
    let layer = (b[1] >> 1) & 3;
    let bitrate_index = usize::from(b[2] >> 4);
    let rate_index = usize::from((b[2] >> 2) & 3);
    if version == 1 || layer != 1 || bitrate_index == 0 || bitrate_index == 15 || rate_index == 3 {
        return None; // reserved values, or not Layer III
    }
    let mpeg1 = version == 3;
    const MPEG1: [u32; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const MPEG2: [u32; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    let bitrate = 1000
        * if mpeg1 {
            MPEG1[bitrate_index]
        } else {
            MPEG2[bitrate_index]
        };
    let base = [44_100, 48_000, 32_000][rate_index];
    let sample_rate = match version {
        3 => base,
        2 => base / 2,
        _ => base / 4,
    };
    let padding = usize::from((b[2] >> 1) & 1);
    let coefficient = if mpeg1 { 144 } else { 72 };
    Some(Header {
        length: (coefficient * bitrate / sample_rate) as usize + padding,
        sample_rate,
        channels: if b[3] >> 6 == 3 { 1 } else { 2 },
        mpeg1,
    })
}

/// If `frame` is a Xing/Info frame, the LAME encoder delay it records (0 without one).
fn info_frame_delay(frame: &[u8], header: &Header) -> Option<usize> {
    let side_info = match (header.mpeg1, header.channels) {
        (true, 1) => 17,
        (true, _) => 32,
        (false, 1) => 9,
        (false, _) => 17,
    };
    let crc = if frame[1] & 1 == 0 { 2 } else { 0 };
    let at = 4 + crc + side_info;
    let tag = frame.get(at..at + 8)?;
    if &tag[..4] != b"Xing" && &tag[..4] != b"Info" {
        return None;
    }
    let flags = u32::from_be_bytes([tag[4], tag[5], tag[6], tag[7]]);
    let fields = [(1, 4), (2, 4), (4, 100), (8, 4)]
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, len)| len)
        .sum::<usize>();
    let lame = at + 8 + fields;
    Some(match frame.get(lame..lame + 24) {
        Some(ext) => (usize::from(ext[21]) << 4) | (usize::from(ext[22]) >> 4),
        None => 0,
    })
}

pub struct MpegParser {
    decoder: Option<Box<dyn AudioDecoder>>,
    shape: Option<(u32, u16)>,
    /// Bytes of an ID3v2 tag still to skip.
    skip: usize,
    first: bool,
    trim_left: usize,
    resynced: usize,
    scratch: Vec<f32>,
}

impl MpegParser {
    pub fn new() -> Self {
        MpegParser {
            decoder: None,
            shape: None,
            skip: 0,
            first: true,
            trim_left: 0,
            resynced: 0,
            scratch: Vec::new(),
        }
    }

    fn decode_frame(
        &mut self,
        frame: &[u8],
        header: Header,
        out: &mut Vec<f32>,
    ) -> MediaResult<()> {
        if self.first {
            self.first = false;
            if let Some(delay) = info_frame_delay(frame, &header) {
                self.trim_left = delay + DECODER_DELAY;
                return Ok(());
            }
        }
        if self.decoder.is_none() {
            let mut params = AudioCodecParameters::new();
            params.codec = CODEC_ID_MP3;
            self.decoder = Some(
                symphonia::default::get_codecs()
                    .make_audio_decoder(&params, &AudioDecoderOptions::default())
                    .map_err(|e| MediaError::Unsupported(e.to_string()))?,
            );
            self.shape = Some((header.sample_rate, header.channels));
        }
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(());
        };
        let packet = Packet::new(
            0,
            Timestamp::new(0),
            Duration::from(1152u64),
            frame.to_vec(),
        );
        match decoder.decode(&packet) {
            Ok(buffer) => {
                buffer.copy_to_vec_interleaved(&mut self.scratch);
                let channels = usize::from(header.channels);
                let frames = self.scratch.len() / channels;
                let skip = self.trim_left.min(frames);
                self.trim_left -= skip;
                out.extend_from_slice(&self.scratch[skip * channels..]);
            }
            // A damaged frame is dropped; the stream goes on (as players do).
            Err(symphonia::core::errors::Error::DecodeError(_)) => {}
            Err(e) => return Err(MediaError::Corrupt(e.to_string())),
        }
        Ok(())
    }
}

impl Parser for MpegParser {
    fn parse(&mut self, data: &[u8], out: &mut Vec<f32>) -> MediaResult<usize> {
        let mut at = 0;
        loop {
            if self.skip > 0 {
                let take = self.skip.min(data.len() - at);
                self.skip -= take;
                at += take;
                if self.skip > 0 {
                    return Ok(at);
                }
            }
            let rest = &data[at..];
            if rest.len() < 10 {
                return Ok(at);
            }
            if rest.starts_with(b"ID3") {
                let size = rest[6..10]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 7) | usize::from(b & 0x7F));
                self.skip = 10 + size;
                continue;
            }
            let Some(header) = parse_header(rest) else {
                at += 1;
                self.resynced += 1;
                if self.resynced > MAX_RESYNC && self.shape.is_none() {
                    return Err(MediaError::Corrupt("no MPEG audio frame found".into()));
                }
                continue;
            };
            if rest.len() < header.length {
                return Ok(at);
            }
            // A real frame is followed by another frame header (or the data so far ends).
            let follower = &rest[header.length..];
            if follower.len() >= 4
                && parse_header(follower).is_none()
                && !follower.starts_with(b"TAG")
            {
                at += 1;
                self.resynced += 1;
                continue;
            }
            self.decode_frame(&rest[..header.length], header, out)?;
            at += header.length;
        }
    }

    fn shape(&self) -> Option<(u32, u16)> {
        self.shape
    }
}
