//! Incremental stream decode for the WebSocket media types: bytes arrive in pieces split
//! anywhere (mid-header, mid-page, mid-packet); samples come out as soon as they are
//! decodable. Sans-IO: no sockets, no clocks, just `push` and `finish`.
//!
//! Memory is bounded: the decoder keeps at most one incomplete unit (a header, a page,
//! a block, a frame) of at most `max_unit_bytes`; elements it does not need are skipped
//! as they stream past, never buffered.

mod detect;
mod ebml;
mod g711;
mod mpeg;
mod ogg_opus;
mod pcm;
mod wav;
mod webm;

pub use g711::{Law, compress as g711_compress};

use crate::audio::check_shape;
use crate::error::{LimitKind, MediaError, MediaResult};

/// A stream's declared media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// `audio/pcm;rate=16000[;channels=1]`: signed 16-bit little-endian.
    Pcm { sample_rate: u32, channels: u16 },
    /// `audio/wav`
    Wav,
    /// `audio/ogg;codecs=opus`
    OggOpus,
    /// `audio/webm;codecs=opus` (MediaRecorder output)
    WebmOpus,
    /// `audio/mpeg`
    Mpeg,
    /// `audio/pcmu;rate=8000` (μ-law) or `audio/pcma;rate=8000` (A-law): G.711.
    G711 {
        law: Law,
        sample_rate: u32,
        channels: u16,
    },
    /// `application/octet-stream`: WAV, Ogg/Opus, WebM/Opus or MP3, told apart by its
    /// first bytes.
    Detect,
}

impl StreamFormat {
    /// Parses a media type such as `audio/pcm;rate=16000` or `audio/webm;codecs=opus`.
    pub fn from_media_type(media_type: &str) -> MediaResult<StreamFormat> {
        let mut parts = media_type.split(';').map(str::trim);
        let essence = parts.next().unwrap_or_default().to_ascii_lowercase();
        let mut rate = None;
        let mut channels = 1u16;
        let mut codecs = None;
        for parameter in parts {
            let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            let value = value.trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                "rate" => {
                    rate =
                        Some(value.parse().map_err(|_| {
                            MediaError::Unsupported(format!("sample rate `{value}`"))
                        })?)
                }
                "channels" => {
                    channels = value
                        .parse()
                        .map_err(|_| MediaError::InvalidParameters(format!("channels `{value}`")))?
                }
                "codecs" => codecs = Some(value.to_ascii_lowercase()),
                _ => {}
            }
        }
        let opus_or_default = |codecs: Option<String>| match codecs.as_deref() {
            None | Some("opus") => Ok(()),
            Some(other) => Err(MediaError::Unsupported(format!(
                "codec `{other}` in a stream"
            ))),
        };
        let g711 = |law: Law, rate: Option<u32>| {
            // `audio/basic` is 8 kHz μ-law by definition (RFC 2046).
            let sample_rate = rate.unwrap_or(8_000);
            check_shape(sample_rate, channels)?;
            Ok(StreamFormat::G711 {
                law,
                sample_rate,
                channels,
            })
        };
        match essence.as_str() {
            "audio/pcmu" | "audio/basic" | "audio/x-mulaw" | "audio/mulaw" | "audio/g711-ulaw" => {
                g711(Law::Mu, rate)
            }
            "audio/pcma" | "audio/x-alaw" | "audio/alaw" | "audio/g711-alaw" => g711(Law::A, rate),
            "application/octet-stream" => Ok(StreamFormat::Detect),
            "audio/pcm" | "audio/l16" | "audio/s16le" | "audio/x-raw" => {
                let sample_rate = rate.ok_or_else(|| {
                    MediaError::InvalidParameters(
                        "audio/pcm needs `rate=` (e.g. rate=16000)".into(),
                    )
                })?;
                check_shape(sample_rate, channels)?;
                Ok(StreamFormat::Pcm {
                    sample_rate,
                    channels,
                })
            }
            "audio/wav" | "audio/wave" | "audio/x-wav" | "audio/vnd.wave" => Ok(StreamFormat::Wav),
            "audio/ogg" | "audio/opus" => opus_or_default(codecs).map(|()| StreamFormat::OggOpus),
            "audio/webm" | "audio/x-matroska" | "video/webm" => {
                opus_or_default(codecs).map(|()| StreamFormat::WebmOpus)
            }
            "audio/mpeg" | "audio/mp3" => Ok(StreamFormat::Mpeg),
            other => Err(MediaError::Unsupported(format!(
                "stream media type `{other}`"
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamLimits {
    /// Largest incomplete unit kept while waiting for more bytes.
    pub max_unit_bytes: usize,
    /// Longest stream, in seconds of decoded audio.
    pub max_seconds: f64,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_unit_bytes: 1 << 20,
            max_seconds: 4.0 * 3600.0,
        }
    }
}

/// What every format's parser does: consume what it can from the front of `data`,
/// append decoded interleaved samples to `out`, say how many bytes it consumed.
trait Parser: Send {
    fn parse(&mut self, data: &[u8], out: &mut Vec<f32>) -> MediaResult<usize>;
    /// Sample rate and channels, once known.
    fn shape(&self) -> Option<(u32, u16)>;
    /// Whether the parser is between units (so the stream may end here).
    fn at_boundary(&self) -> bool {
        true
    }
}

pub struct StreamDecoder {
    parser: Box<dyn Parser>,
    limits: StreamLimits,
    pending: Vec<u8>,
    frames_out: u64,
    /// The parser's shape once it passed [`check_shape`].
    checked_shape: Option<(u32, u16)>,
}

impl StreamDecoder {
    pub fn new(format: StreamFormat, limits: StreamLimits) -> StreamDecoder {
        let parser: Box<dyn Parser> = match format {
            StreamFormat::Pcm {
                sample_rate,
                channels,
            } => Box::new(pcm::PcmParser::new(sample_rate, channels)),
            StreamFormat::Wav => Box::new(wav::WavParser::new()),
            StreamFormat::OggOpus => Box::new(ogg_opus::OggOpusParser::new(limits.max_unit_bytes)),
            StreamFormat::WebmOpus => Box::new(webm::WebmParser::new(limits.max_unit_bytes)),
            StreamFormat::Mpeg => Box::new(mpeg::MpegParser::new()),
            StreamFormat::G711 {
                law,
                sample_rate,
                channels,
            } => Box::new(g711::G711Parser::new(law, sample_rate, channels)),
            StreamFormat::Detect => Box::new(detect::DetectParser::new(limits.max_unit_bytes)),
        };
        StreamDecoder {
            parser,
            limits,
            pending: Vec::new(),
            frames_out: 0,
            checked_shape: None,
        }
    }

    /// Sample rate and channel count, once the stream has said (and they are within
    /// the bounds of [`check_shape`]).
    pub fn shape(&self) -> Option<(u32, u16)> {
        self.checked_shape
    }

    /// Feeds bytes; appends every sample that became decodable to `out` (interleaved).
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<f32>) -> MediaResult<()> {
        let before = out.len();
        if self.pending.is_empty() {
            // Fast path: parse straight from the caller's bytes, keep only the tail.
            let used = self.parser.parse(bytes, out)?;
            self.pending.extend_from_slice(&bytes[used..]);
        } else {
            self.pending.extend_from_slice(bytes);
            let used = self.parser.parse(&self.pending, out)?;
            self.pending.drain(..used);
        }
        if self.pending.len() > self.limits.max_unit_bytes {
            return Err(MediaError::TooLarge {
                kind: LimitKind::Bytes,
                limit: self.limits.max_unit_bytes as u64,
            });
        }
        if let Some((rate, channels)) = self.parser.shape() {
            if self.checked_shape != Some((rate, channels)) {
                if self.checked_shape.is_some() {
                    return Err(MediaError::Corrupt(
                        "the stream changes shape midway".into(),
                    ));
                }
                check_shape(rate, channels)?;
                self.checked_shape = Some((rate, channels));
            }
            self.frames_out += ((out.len() - before) / usize::from(channels.max(1))) as u64;
            if self.frames_out as f64 > self.limits.max_seconds * f64::from(rate) {
                return Err(MediaError::TooLarge {
                    kind: LimitKind::Seconds,
                    limit: self.limits.max_seconds.ceil() as u64,
                });
            }
        }
        Ok(())
    }

    /// The stream ended: fails with `Truncated` if it stopped inside a unit.
    pub fn finish(&mut self) -> MediaResult<()> {
        if !self.pending.is_empty() || !self.parser.at_boundary() {
            return Err(MediaError::Truncated(format!(
                "the stream ended inside a unit ({} bytes left over)",
                self.pending.len()
            )));
        }
        Ok(())
    }
}

/// Converts little-endian integer or float PCM to f32 the way the whole-file decoder
/// does (integers scaled by 2^(bits-1); 8-bit is unsigned).
pub(crate) fn convert_pcm(data: &[u8], bits: u16, float: bool, out: &mut Vec<f32>) {
    match (bits, float) {
        (8, false) => out.extend(data.iter().map(|b| (f32::from(*b) - 128.0) / 128.0)),
        (16, false) => out.extend(
            data.chunks_exact(2)
                .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0),
        ),
        (24, false) => out.extend(data.chunks_exact(3).map(|b| {
            let value = i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8;
            value as f32 / 8_388_608.0
        })),
        (32, false) => out.extend(data.chunks_exact(4).map(|b| {
            (f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])) / 2_147_483_648.0) as f32
        })),
        (32, true) => out.extend(
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(
            StreamFormat::from_media_type("audio/pcm;rate=16000").unwrap(),
            StreamFormat::Pcm {
                sample_rate: 16_000,
                channels: 1
            }
        );
        assert_eq!(
            StreamFormat::from_media_type("audio/pcm; rate=48000; channels=2").unwrap(),
            StreamFormat::Pcm {
                sample_rate: 48_000,
                channels: 2
            }
        );
        assert_eq!(
            StreamFormat::from_media_type("audio/wav").unwrap(),
            StreamFormat::Wav
        );
        assert_eq!(
            StreamFormat::from_media_type("audio/pcmu;rate=8000").unwrap(),
            StreamFormat::G711 {
                law: Law::Mu,
                sample_rate: 8_000,
                channels: 1
            }
        );
        assert_eq!(
            StreamFormat::from_media_type("audio/PCMA; rate=16000; channels=2").unwrap(),
            StreamFormat::G711 {
                law: Law::A,
                sample_rate: 16_000,
                channels: 2
            }
        );
        assert_eq!(
            StreamFormat::from_media_type("audio/basic").unwrap(),
            StreamFormat::G711 {
                law: Law::Mu,
                sample_rate: 8_000,
                channels: 1
            }
        );
        assert!(StreamFormat::from_media_type("audio/pcmu;rate=1").is_err());
        assert_eq!(
            StreamFormat::from_media_type("application/octet-stream").unwrap(),
            StreamFormat::Detect
        );
        assert_eq!(
            StreamFormat::from_media_type("audio/ogg;codecs=opus").unwrap(),
            StreamFormat::OggOpus
        );
        assert_eq!(
            StreamFormat::from_media_type("audio/webm;codecs=\"opus\"").unwrap(),
            StreamFormat::WebmOpus
        );
        assert_eq!(
            StreamFormat::from_media_type("audio/mpeg").unwrap(),
            StreamFormat::Mpeg
        );
        assert!(matches!(
            StreamFormat::from_media_type("audio/pcm"),
            Err(MediaError::InvalidParameters(_))
        ));
        for rate in [
            "1",
            "7",
            "7999",
            "192001",
            "999999937",
            "4294967291",
            "99999999999",
            "x",
        ] {
            assert!(
                matches!(
                    StreamFormat::from_media_type(&format!("audio/pcm;rate={rate}")),
                    Err(MediaError::Unsupported(_))
                ),
                "{rate}"
            );
        }
        assert!(matches!(
            StreamFormat::from_media_type("audio/ogg;codecs=vorbis"),
            Err(MediaError::Unsupported(_))
        ));
        assert!(matches!(
            StreamFormat::from_media_type("video/mp4"),
            Err(MediaError::Unsupported(_))
        ));
    }
}
