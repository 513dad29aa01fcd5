//! WAV as it streams: the RIFF header and chunks in order, then PCM frames. A data size
//! of 0 or 0xFFFFFFFF (what live recorders write) means "until the stream ends".

use super::{Parser, convert_pcm};
use crate::error::{MediaError, MediaResult};

#[derive(Debug, Clone, Copy)]
struct Format {
    channels: u16,
    sample_rate: u32,
    bits: u16,
    float: bool,
}

enum State {
    Riff,
    Chunks,
    Skip(u64),
    Data { left: Option<u64> },
    Done,
}

pub struct WavParser {
    state: State,
    format: Option<Format>,
}

impl WavParser {
    pub fn new() -> Self {
        WavParser {
            state: State::Riff,
            format: None,
        }
    }
}

fn parse_fmt(body: &[u8]) -> MediaResult<Format> {
    if body.len() < 16 {
        return Err(MediaError::Corrupt("WAV fmt chunk too short".into()));
    }
    let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
    let mut tag = u16_at(0);
    if tag == 0xFFFE && body.len() >= 26 {
        tag = u16_at(24);
    }
    let format = Format {
        channels: u16_at(2),
        sample_rate: u32::from_le_bytes([body[4], body[5], body[6], body[7]]),
        bits: u16_at(14),
        float: tag == 3,
    };
    let supported = matches!((tag, format.bits), (1, 8 | 16 | 24 | 32) | (3, 32));
    if !supported || format.channels == 0 || format.sample_rate == 0 {
        return Err(MediaError::Unsupported(format!(
            "WAV format tag {tag} with {} bits",
            format.bits
        )));
    }
    Ok(format)
}

impl Parser for WavParser {
    fn parse(&mut self, data: &[u8], out: &mut Vec<f32>) -> MediaResult<usize> {
        let mut at = 0;
        loop {
            let rest = &data[at..];
            match &mut self.state {
                State::Riff => {
                    if rest.len() < 12 {
                        return Ok(at);
                    }
                    if &rest[..4] != b"RIFF" || &rest[8..12] != b"WAVE" {
                        return Err(MediaError::Corrupt("not a RIFF/WAVE stream".into()));
                    }
                    at += 12;
                    self.state = State::Chunks;
                }
                State::Chunks => {
                    if rest.len() < 8 {
                        return Ok(at);
                    }
                    let size = u64::from(u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]));
                    match &rest[..4] {
                        b"fmt " => {
                            let padded = (size + (size & 1)) as usize;
                            if size > 256 {
                                return Err(MediaError::Corrupt("WAV fmt chunk too large".into()));
                            }
                            if rest.len() < 8 + padded {
                                return Ok(at);
                            }
                            self.format = Some(parse_fmt(&rest[8..8 + size as usize])?);
                            at += 8 + padded;
                        }
                        b"data" => {
                            if self.format.is_none() {
                                return Err(MediaError::Corrupt("WAV data before fmt".into()));
                            }
                            at += 8;
                            let left = (size != 0 && size != 0xFFFF_FFFF).then_some(size);
                            self.state = State::Data { left };
                        }
                        _ => {
                            at += 8;
                            self.state = State::Skip(size + (size & 1));
                        }
                    }
                }
                State::Skip(left) => {
                    let take = (*left).min(rest.len() as u64);
                    *left -= take;
                    at += take as usize;
                    if *left > 0 {
                        return Ok(at);
                    }
                    self.state = State::Chunks;
                }
                State::Data { left } => {
                    let Some(format) = self.format else {
                        return Ok(at);
                    };
                    let frame = usize::from(format.channels) * usize::from(format.bits / 8);
                    let mut available = rest.len() / frame * frame;
                    if let Some(left) = left {
                        available = available.min(*left as usize);
                    }
                    convert_pcm(&rest[..available], format.bits, format.float, out);
                    at += available;
                    if let Some(left) = left {
                        *left -= available as u64;
                        if *left == 0 {
                            self.state = State::Done;
                            continue;
                        }
                    }
                    return Ok(at);
                }
                // Trailing chunks after the data (LIST, id3) are ignored.
                State::Done => return Ok(data.len()),
            }
        }
    }

    fn shape(&self) -> Option<(u32, u16)> {
        self.format.map(|f| (f.sample_rate, f.channels))
    }

    fn at_boundary(&self) -> bool {
        matches!(self.state, State::Data { left: None } | State::Done)
    }
}
