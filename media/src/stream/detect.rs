//! A stream whose container is not declared (Deepgram's "containerized audio", or a
//! client that only says `application/octet-stream`): the first bytes say which it is,
//! then that format's parser takes over.

use super::{Parser, mpeg, ogg_opus, wav, webm};
use crate::error::{MediaError, MediaResult};
use crate::sniff::{Container, sniff};

/// Bytes enough for every signature `sniff` knows.
const HEAD: usize = 12;

pub struct DetectParser {
    max_unit_bytes: usize,
    inner: Option<Box<dyn Parser>>,
}

impl DetectParser {
    pub fn new(max_unit_bytes: usize) -> Self {
        DetectParser {
            max_unit_bytes,
            inner: None,
        }
    }

    fn choose(&self, head: &[u8]) -> MediaResult<Box<dyn Parser>> {
        match sniff(head) {
            Some(Container::Wav) => Ok(Box::new(wav::WavParser::new())),
            Some(Container::Ogg) => Ok(Box::new(ogg_opus::OggOpusParser::new(self.max_unit_bytes))),
            Some(Container::Matroska) => Ok(Box::new(webm::WebmParser::new(self.max_unit_bytes))),
            Some(Container::Mp3) => Ok(Box::new(mpeg::MpegParser::new())),
            Some(other) => Err(MediaError::Unsupported(format!(
                "{other:?} in a stream (WAV, Ogg/Opus, WebM/Opus, MP3 and raw audio with its \
                 encoding are)"
            ))),
            None => Err(MediaError::Unsupported(
                "an unrecognised stream: raw audio needs its encoding and sample rate".into(),
            )),
        }
    }
}

impl Parser for DetectParser {
    fn parse(&mut self, data: &[u8], out: &mut Vec<f32>) -> MediaResult<usize> {
        if self.inner.is_none() {
            if data.len() < HEAD {
                return Ok(0);
            }
            self.inner = Some(self.choose(&data[..HEAD])?);
        }
        match &mut self.inner {
            Some(inner) => inner.parse(data, out),
            None => Ok(0),
        }
    }

    fn shape(&self) -> Option<(u32, u16)> {
        self.inner.as_ref().and_then(|inner| inner.shape())
    }

    fn at_boundary(&self) -> bool {
        self.inner.as_ref().is_none_or(|inner| inner.at_boundary())
    }
}
