//! Raw s16le: whole frames out, a partial frame kept.

use super::{Parser, convert_pcm};
use crate::error::MediaResult;

pub struct PcmParser {
    sample_rate: u32,
    channels: u16,
}

impl PcmParser {
    pub fn new(sample_rate: u32, channels: u16) -> Self {
        PcmParser {
            sample_rate,
            channels,
        }
    }
}

impl Parser for PcmParser {
    fn parse(&mut self, data: &[u8], out: &mut Vec<f32>) -> MediaResult<usize> {
        let frame = 2 * usize::from(self.channels);
        let whole = data.len() / frame * frame;
        convert_pcm(&data[..whole], 16, false, out);
        Ok(whole)
    }

    fn shape(&self) -> Option<(u32, u16)> {
        Some((self.sample_rate, self.channels))
    }
}
