//! Whole-file decode: sniff the container from the bytes, demux with symphonia, decode
//! with symphonia's codecs (or libopus for Opus), enforce limits while decoding.

use std::io::Cursor;

use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::{AudioDecoderOptions, well_known::CODEC_ID_OPUS};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::packet::Packet;

use crate::audio::Audio;
use crate::error::{LimitKind, MediaError, MediaResult};
use crate::opus_decode::OpusPacketDecoder;
use crate::sniff::{Container, is_signature, sniff};
use crate::stream::{StreamDecoder, StreamFormat, StreamLimits};

/// Limits enforced while decoding (decoding stops as soon as one is exceeded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_seconds: f64,
}

impl Default for Limits {
    /// 100 MiB and two hours.
    fn default() -> Self {
        Limits {
            max_bytes: 100 * 1024 * 1024,
            max_seconds: 7200.0,
        }
    }
}

/// Raw signed 16-bit little-endian PCM has no header: its shape must be declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPcm {
    pub sample_rate: u32,
    pub channels: u16,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecodeOptions {
    pub limits: Limits,
    /// Used only when the bytes are not a recognised container.
    pub raw_pcm: Option<RawPcm>,
}

/// Share of packets that may fail to decode (and be skipped) before the whole input
/// counts as corrupt.
const MAX_BAD_PACKET_SHARE: f64 = 0.1;

fn map_error(error: SymphoniaError) -> MediaError {
    match error {
        SymphoniaError::Unsupported(what) => MediaError::Unsupported(what.to_owned()),
        SymphoniaError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            MediaError::Truncated("the data ends early".into())
        }
        other => MediaError::Corrupt(other.to_string()),
    }
}

/// Decodes a whole file held in memory.
pub fn decode(bytes: &[u8], options: &DecodeOptions) -> MediaResult<Audio> {
    let limits = options.limits;
    if bytes.len() as u64 > limits.max_bytes {
        return Err(MediaError::TooLarge {
            kind: LimitKind::Bytes,
            limit: limits.max_bytes,
        });
    }
    // The bytes decide, except that a bare frame sync (which raw PCM can contain by
    // chance) does not override a declared raw PCM shape.
    match (sniff(bytes), options.raw_pcm) {
        (Some(container), raw) if raw.is_none() || is_signature(bytes, container) => {
            decode_container(bytes, container, &limits)
        }
        (_, Some(raw)) => decode_raw_s16le(bytes, raw, &limits),
        (None, None) if bytes.is_empty() => Err(MediaError::Truncated("no data".into())),
        (_, None) => Err(MediaError::Unsupported(
            "not a recognised audio container (WAV, MP3, FLAC, Ogg, WebM/Matroska, MP4/M4A, AAC)"
                .into(),
        )),
    }
}

fn seconds_limit_frames(limits: &Limits, rate: u32) -> u64 {
    (limits.max_seconds * f64::from(rate)).ceil() as u64
}

fn too_long(limits: &Limits) -> MediaError {
    MediaError::TooLarge {
        kind: LimitKind::Seconds,
        limit: limits.max_seconds.ceil() as u64,
    }
}

/// Raw `s16le` with a declared rate and channel count.
pub fn decode_raw_s16le(bytes: &[u8], raw: RawPcm, limits: &Limits) -> MediaResult<Audio> {
    if raw.sample_rate == 0 || raw.channels == 0 {
        return Err(MediaError::InvalidParameters(
            "raw PCM needs a rate and channel count".into(),
        ));
    }
    let frame_bytes = 2 * usize::from(raw.channels);
    if !bytes.len().is_multiple_of(frame_bytes) {
        return Err(MediaError::Truncated("raw PCM ends mid-frame".into()));
    }
    if (bytes.len() / frame_bytes) as u64 > seconds_limit_frames(limits, raw.sample_rate) {
        return Err(too_long(limits));
    }
    let samples = bytes
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect();
    Ok(Audio::new(raw.sample_rate, raw.channels, samples))
}

fn decode_container(bytes: &[u8], container: Container, limits: &Limits) -> MediaResult<Audio> {
    if container == Container::Wav && wav_length_unknown(bytes) {
        return decode_streamed_wav(bytes, limits);
    }
    let source = MediaSourceStream::new(
        Box::new(Cursor::new(bytes)),
        MediaSourceStreamOptions::default(),
    );
    let mut hint = Hint::new();
    hint.with_extension(match container {
        Container::Wav => "wav",
        Container::Mp3 => "mp3",
        Container::Flac => "flac",
        Container::Ogg => "ogg",
        Container::Matroska => "webm",
        Container::Mp4 => "m4a",
        Container::Adts => "aac",
    });
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            source,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(map_error)?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| MediaError::Unsupported("no audio track".into()))?
        .clone();
    let Some(CodecParameters::Audio(params)) = track.codec_params.clone() else {
        return Err(MediaError::Unsupported("no audio codec parameters".into()));
    };

    let mut sink = Sink::new(limits, bytes.len());
    if params.codec == CODEC_ID_OPUS {
        let mut opus = OpusPacketDecoder::from_head(params.extra_data.as_deref())?;
        sink.rate = 48_000;
        sink.channels = opus.channels();
        while let Some(packet) = next_packet_of(format.as_mut(), track.id)? {
            match opus.decode(&packet.data) {
                Ok(samples) => sink.push(packet.data.len(), samples)?,
                Err(_) => sink.bad_packet(),
            }
        }
        return sink.finish(None);
    }

    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(map_error)?;
    let mut interleaved: Vec<f32> = Vec::new();
    while let Some(packet) = next_packet_of(format.as_mut(), track.id)? {
        match decoder.decode(&packet) {
            Ok(buffer) => {
                let spec = buffer.spec();
                sink.rate = spec.rate();
                sink.channels = spec.channels().count() as u16;
                buffer.copy_to_vec_interleaved(&mut interleaved);
                sink.push(packet.data.len(), &interleaved)?;
            }
            Err(SymphoniaError::DecodeError(_)) => sink.bad_packet(),
            Err(error) => return Err(map_error(error)),
        }
    }
    sink.finish(track.num_frames)
}

/// The next packet of one track (others are skipped), `None` at the end.
fn next_packet_of(format: &mut dyn FormatReader, track_id: u32) -> MediaResult<Option<Packet>> {
    loop {
        match format.next_packet().map_err(map_error)? {
            Some(packet) if packet.track_id != track_id => continue,
            other => return Ok(other),
        }
    }
}

/// A WAV written as a stream (placeholder sizes): decoded by the stream parser, which
/// takes the data as long as it is, with the same sample conversion as symphonia.
fn decode_streamed_wav(bytes: &[u8], limits: &Limits) -> MediaResult<Audio> {
    let stream_limits = StreamLimits {
        max_unit_bytes: 1 << 16,
        max_seconds: limits.max_seconds,
    };
    let mut decoder = StreamDecoder::new(StreamFormat::Wav, stream_limits);
    let mut samples = Vec::with_capacity(bytes.len() / 2);
    decoder.push(bytes, &mut samples)?;
    let (rate, channels) = decoder
        .shape()
        .ok_or_else(|| MediaError::Truncated("WAV header incomplete".into()))?;
    if samples.is_empty() {
        return Err(MediaError::Truncated("no audio data".into()));
    }
    Ok(Audio::new(rate, channels, samples))
}

/// Whether a WAV's data chunk carries a placeholder size instead of a real one: 0, or
/// 2 GiB and up (0x7FFFF000 from espeak-ng, 0xFFFFFFFF from live recorders). Such files
/// were written as a stream; their length is what is there, not cut short.
fn wav_length_unknown(bytes: &[u8]) -> bool {
    let mut at = 12;
    while let Some(header) = bytes.get(at..at + 8) {
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if &header[..4] == b"data" {
            return size == 0 || size >= 0x7FFF_0000;
        }
        at += 8 + size as usize + (size as usize & 1);
    }
    false
}

/// Collects decoded samples and applies the limits and the corruption rule.
struct Sink<'a> {
    limits: &'a Limits,
    rate: u32,
    channels: u16,
    samples: Vec<f32>,
    good_packets: u64,
    bad_packets: u64,
    /// Bytes of the packets that decoded, against the input's size: tells a file that
    /// was cut short (most bytes decoded) from one that is damaged (most bytes skipped).
    good_bytes: u64,
    input_bytes: u64,
}

impl<'a> Sink<'a> {
    fn new(limits: &'a Limits, input_bytes: usize) -> Self {
        Sink {
            good_bytes: 0,
            input_bytes: input_bytes as u64,
            limits,
            rate: 0,
            channels: 0,
            samples: Vec::new(),
            good_packets: 0,
            bad_packets: 0,
        }
    }

    fn frames(&self) -> u64 {
        (self.samples.len() / usize::from(self.channels.max(1))) as u64
    }

    fn push(&mut self, packet_bytes: usize, samples: &[f32]) -> MediaResult<()> {
        self.good_packets += 1;
        self.good_bytes += packet_bytes as u64;
        self.samples.extend_from_slice(samples);
        if self.rate > 0 && self.frames() > seconds_limit_frames(self.limits, self.rate) {
            return Err(too_long(self.limits));
        }
        Ok(())
    }

    fn bad_packet(&mut self) {
        self.bad_packets += 1;
    }

    fn finish(self, declared_frames: Option<u64>) -> MediaResult<Audio> {
        let total = self.good_packets + self.bad_packets;
        if total == 0 || self.good_packets == 0 {
            return Err(if self.bad_packets > 0 {
                MediaError::Corrupt("no packet could be decoded".into())
            } else {
                MediaError::Truncated("no audio data".into())
            });
        }
        if self.bad_packets as f64 > MAX_BAD_PACKET_SHARE * total as f64 {
            return Err(MediaError::Corrupt(format!(
                "{} of {total} packets could not be decoded",
                self.bad_packets
            )));
        }
        // The container promised more frames than decoded: cut short, or damaged.
        if let Some(declared) = declared_frames
            && self.frames() + u64::from(self.rate / 10) < declared
        {
            let detail = format!("{} of {declared} frames decodable", self.frames());
            return Err(if self.good_bytes * 2 < self.input_bytes {
                MediaError::Corrupt(detail)
            } else {
                MediaError::Truncated(detail)
            });
        }
        Ok(Audio::new(self.rate, self.channels, self.samples))
    }
}
