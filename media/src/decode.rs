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

use crate::audio::{Audio, check_shape, mix_to_mono_into};
use crate::error::{LimitKind, MediaError, MediaResult};
use crate::opus_decode::OpusPacketDecoder;
use crate::resample::StreamResampler;
use crate::sniff::{Container, is_signature, sniff};
use crate::stream::{StreamDecoder, StreamFormat, StreamLimits};

/// Limits enforced while decoding (decoding stops as soon as one is exceeded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_seconds: f64,
    /// Decoded samples over every channel (frames × channels): the work a file costs,
    /// which its duration alone does not bound (32 channels at 192 kHz decode 96 times
    /// the samples of 16 kHz mono per second).
    pub max_samples: u64,
}

/// Samples per second of the duration limit that decoding may produce: 48 kHz stereo.
/// Denser input (many channels, high rates) stops early with a `Samples` limit.
pub const SAMPLE_BUDGET_PER_SECOND: u64 = 96_000;

impl Limits {
    /// `max_bytes` and `max_seconds`, with the sample budget that goes with that duration.
    pub fn new(max_bytes: u64, max_seconds: f64) -> Limits {
        Limits {
            max_bytes,
            max_seconds,
            max_samples: (max_seconds.max(0.0) * SAMPLE_BUDGET_PER_SECOND as f64).ceil() as u64,
        }
    }
}

impl Default for Limits {
    /// 100 MiB and two hours.
    fn default() -> Self {
        Limits::new(100 * 1024 * 1024, 7200.0)
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
    /// At the duration limit, stop and return what was decoded (marked `truncated`)
    /// instead of failing: a reference clip needs only its first seconds to be judged.
    pub truncate: bool,
}

/// A decode mixed to mono and resampled while decoding ([`decode_mono`]): memory is the
/// output's, whatever the source's channels and rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Mono samples at `rate`.
    pub samples: Vec<f32>,
    pub rate: u32,
    pub source_rate: u32,
    pub source_channels: u16,
    /// Largest magnitude of any sample on any channel, before mixing.
    pub peak: f32,
    /// Share of source samples (every channel) at full scale.
    pub clipped_share: f64,
    /// Decoding stopped at the duration limit (only with `DecodeOptions::truncate`).
    pub truncated: bool,
}

impl Decoded {
    pub fn duration_seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.rate.max(1))
    }
}

/// A sample this close to full scale counts as clipped.
pub const CLIP_LEVEL: f32 = 0.999;

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

/// Decodes a whole file held in memory, interleaved at the source's rate and channels.
pub fn decode(bytes: &[u8], options: &DecodeOptions) -> MediaResult<Audio> {
    let sink = run(bytes, options, Output::Interleaved(Vec::new()))?;
    let (rate, channels) = (sink.rate, sink.channels);
    match sink.output {
        Output::Interleaved(samples) => Ok(Audio::new(rate, channels, samples)),
        Output::Mono { .. } => Err(MediaError::InvalidParameters("wrong output".into())),
    }
}

/// Decodes a whole file to mono at `rate`, mixing and resampling as it decodes: a
/// multichannel or high-rate file never sits in memory at its source size.
pub fn decode_mono(bytes: &[u8], options: &DecodeOptions, rate: u32) -> MediaResult<Decoded> {
    let sink = run(
        bytes,
        options,
        Output::Mono {
            rate,
            resampler: None,
            mix: Vec::new(),
            samples: Vec::new(),
        },
    )?;
    let clipped_share = sink.clipped as f64 / sink.source_samples.max(1) as f64;
    let (source_rate, source_channels, peak, truncated) =
        (sink.rate, sink.channels, sink.peak, sink.truncated);
    match sink.output {
        Output::Mono { samples, .. } => Ok(Decoded {
            samples,
            rate,
            source_rate,
            source_channels,
            peak,
            clipped_share,
            truncated,
        }),
        Output::Interleaved(_) => Err(MediaError::InvalidParameters("wrong output".into())),
    }
}

/// Decodes under a panic guard: a fault of a decoder on hostile input is that input's
/// `Corrupt`, never the caller's thread.
fn run(bytes: &[u8], options: &DecodeOptions, output: Output) -> MediaResult<Sink> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_unguarded(bytes, options, output)
    }))
    .unwrap_or_else(|_| {
        Err(MediaError::Corrupt(
            "the decoder failed on this input".into(),
        ))
    })
}

fn run_unguarded(bytes: &[u8], options: &DecodeOptions, output: Output) -> MediaResult<Sink> {
    let limits = options.limits;
    if bytes.len() as u64 > limits.max_bytes {
        return Err(MediaError::TooLarge {
            kind: LimitKind::Bytes,
            limit: limits.max_bytes,
        });
    }
    let sink = Sink::new(limits, options.truncate, bytes.len(), output);
    // The bytes decide, except that a bare frame sync (which raw PCM can contain by
    // chance) does not override a declared raw PCM shape.
    match (sniff(bytes), options.raw_pcm) {
        (Some(container), raw) if raw.is_none() || is_signature(bytes, container) => {
            decode_container(bytes, container, sink)
        }
        (_, Some(raw)) => decode_raw_s16le(bytes, raw, sink),
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

/// Bytes of raw PCM or WAV data converted per step (the converted copy stays small).
const STEP_BYTES: usize = 1 << 16;

/// Raw `s16le` with a declared rate and channel count.
fn decode_raw_s16le(bytes: &[u8], raw: RawPcm, mut sink: Sink) -> MediaResult<Sink> {
    check_shape(raw.sample_rate, raw.channels)?;
    let frame_bytes = 2 * usize::from(raw.channels);
    if !bytes.len().is_multiple_of(frame_bytes) {
        return Err(MediaError::Truncated("raw PCM ends mid-frame".into()));
    }
    // Whole-length checks first: a declared shape must not cost work before it fails.
    let frames = (bytes.len() / frame_bytes) as u64;
    if !sink.truncate && frames > seconds_limit_frames(&sink.limits, raw.sample_rate) {
        return Err(too_long(&sink.limits));
    }
    sink.set_shape(raw.sample_rate, raw.channels)?;
    let mut converted = Vec::with_capacity(STEP_BYTES / 2);
    for piece in bytes.chunks(STEP_BYTES / frame_bytes * frame_bytes) {
        converted.clear();
        converted.extend(
            piece
                .chunks_exact(2)
                .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0),
        );
        if !sink.push(piece.len(), &converted)? {
            break;
        }
    }
    sink.finish(None)
}

fn decode_container(bytes: &[u8], container: Container, mut sink: Sink) -> MediaResult<Sink> {
    if container == Container::Wav {
        // The header's shape before symphonia sizes anything from it.
        if let Some((rate, channels)) = wav_shape(bytes) {
            check_shape(rate, channels)?;
        }
        if wav_length_unknown(bytes) {
            return decode_streamed_wav(bytes, sink);
        }
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
    // The header's shape is checked before a decoder is sized from it.
    if let Some(rate) = params.sample_rate {
        let channels = params.channels.as_ref().map_or(1, |c| c.count());
        check_shape(rate, u16::try_from(channels).unwrap_or(u16::MAX))?;
    }

    if params.codec == CODEC_ID_OPUS {
        let mut opus = OpusPacketDecoder::from_head(params.extra_data.as_deref())?;
        sink.set_shape(48_000, opus.channels())?;
        while let Some(packet) = next_packet_of(format.as_mut(), track.id)? {
            let keep_going = match opus.decode(&packet.data) {
                Ok(samples) => sink.push(packet.data.len(), samples)?,
                Err(_) => sink.bad_packet(),
            };
            if !keep_going {
                break;
            }
        }
        return sink.finish(None);
    }

    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(map_error)?;
    let mut interleaved: Vec<f32> = Vec::new();
    while let Some(packet) = next_packet_of(format.as_mut(), track.id)? {
        let keep_going = match decoder.decode(&packet) {
            Ok(buffer) => {
                let spec = buffer.spec();
                let channels = u16::try_from(spec.channels().count()).unwrap_or(u16::MAX);
                sink.set_shape(spec.rate(), channels)?;
                buffer.copy_to_vec_interleaved(&mut interleaved);
                sink.push(packet.data.len(), &interleaved)?
            }
            Err(SymphoniaError::DecodeError(_)) => sink.bad_packet(),
            Err(error) => return Err(map_error(error)),
        };
        if !keep_going {
            break;
        }
    }
    let declared = track.num_frames.filter(|_| !sink.truncated);
    sink.finish(declared)
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
fn decode_streamed_wav(bytes: &[u8], mut sink: Sink) -> MediaResult<Sink> {
    // The sink applies the duration and sample limits; the parser only bounds its units.
    let stream_limits = StreamLimits {
        max_unit_bytes: 1 << 16,
        max_seconds: f64::INFINITY,
    };
    let mut decoder = StreamDecoder::new(StreamFormat::Wav, stream_limits);
    let mut samples = Vec::with_capacity(STEP_BYTES / 2);
    for piece in bytes.chunks(STEP_BYTES) {
        samples.clear();
        decoder.push(piece, &mut samples)?;
        if let Some((rate, channels)) = decoder.shape() {
            sink.set_shape(rate, channels)?;
        }
        if !samples.is_empty() && !sink.push(piece.len(), &samples)? {
            break;
        }
    }
    if decoder.shape().is_none() {
        return Err(MediaError::Truncated("WAV header incomplete".into()));
    }
    sink.finish(None)
}

/// The rate and channels of a WAV's `fmt ` chunk, when the bytes have one.
fn wav_shape(bytes: &[u8]) -> Option<(u32, u16)> {
    let mut at = 12usize;
    while let Some(header) = bytes.get(at..at.checked_add(8)?) {
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if &header[..4] == b"fmt " {
            let body = bytes.get(at + 8..at + 8 + 8)?;
            let channels = u16::from_le_bytes([body[2], body[3]]);
            let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
            return Some((rate, channels));
        }
        at = at
            .checked_add(8)?
            .checked_add(size)?
            .checked_add(size & 1)?;
    }
    None
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

/// Where decoded samples go.
enum Output {
    /// Interleaved at the source's rate and channels ([`decode`]).
    Interleaved(Vec<f32>),
    /// Mixed to mono and resampled to `rate` as they arrive ([`decode_mono`]).
    Mono {
        rate: u32,
        resampler: Option<Box<StreamResampler>>,
        mix: Vec<f32>,
        samples: Vec<f32>,
    },
}

/// Collects decoded samples and applies the limits and the corruption rule.
struct Sink {
    limits: Limits,
    truncate: bool,
    truncated: bool,
    rate: u32,
    channels: u16,
    output: Output,
    /// Source frames and samples (every channel) taken so far.
    frames: u64,
    source_samples: u64,
    peak: f32,
    clipped: u64,
    good_packets: u64,
    bad_packets: u64,
    /// Bytes of the packets that decoded, against the input's size: tells a file that
    /// was cut short (most bytes decoded) from one that is damaged (most bytes skipped).
    good_bytes: u64,
    input_bytes: u64,
}

impl Sink {
    fn new(limits: Limits, truncate: bool, input_bytes: usize, output: Output) -> Self {
        Sink {
            limits,
            truncate,
            truncated: false,
            rate: 0,
            channels: 0,
            output,
            frames: 0,
            source_samples: 0,
            peak: 0.0,
            clipped: 0,
            good_packets: 0,
            bad_packets: 0,
            good_bytes: 0,
            input_bytes: input_bytes as u64,
        }
    }

    /// The shape of what follows; checked against the bounds, and fixed once set (a
    /// stream that changes rate or channels midway is corrupt).
    fn set_shape(&mut self, rate: u32, channels: u16) -> MediaResult<()> {
        if (rate, channels) == (self.rate, self.channels) {
            return Ok(());
        }
        if self.rate != 0 {
            return Err(MediaError::Corrupt(format!(
                "the shape changes midway: {} Hz × {} to {rate} Hz × {channels}",
                self.rate, self.channels
            )));
        }
        check_shape(rate, channels)?;
        if let Output::Mono {
            rate: to,
            resampler,
            ..
        } = &mut self.output
        {
            *resampler = Some(Box::new(StreamResampler::new(rate, *to)?));
        }
        self.rate = rate;
        self.channels = channels;
        Ok(())
    }

    /// Takes one packet's interleaved samples; `Ok(false)` when a truncating decode
    /// reached its duration limit (stop feeding).
    fn push(&mut self, packet_bytes: usize, samples: &[f32]) -> MediaResult<bool> {
        self.good_packets += 1;
        self.good_bytes += packet_bytes as u64;
        if self.rate == 0 {
            return Err(MediaError::Corrupt(
                "samples before the stream's shape".into(),
            ));
        }
        let channels = usize::from(self.channels);
        let mut samples = &samples[..samples.len() / channels * channels];
        let allowed_frames = seconds_limit_frames(&self.limits, self.rate);
        let frames = (samples.len() / channels) as u64;
        let mut keep_going = true;
        if self.frames + frames > allowed_frames {
            if !self.truncate {
                return Err(too_long(&self.limits));
            }
            let take = allowed_frames.saturating_sub(self.frames) as usize;
            samples = &samples[..take * channels];
            self.truncated = true;
            keep_going = false;
        }
        if self.source_samples + samples.len() as u64 > self.limits.max_samples {
            return Err(MediaError::TooLarge {
                kind: LimitKind::Samples,
                limit: self.limits.max_samples,
            });
        }
        self.frames += (samples.len() / channels) as u64;
        self.source_samples += samples.len() as u64;
        for sample in samples {
            let magnitude = sample.abs();
            self.peak = self.peak.max(magnitude);
            self.clipped += u64::from(magnitude >= CLIP_LEVEL);
        }
        match &mut self.output {
            Output::Interleaved(out) => out.extend_from_slice(samples),
            Output::Mono {
                resampler,
                mix,
                samples: out,
                ..
            } => {
                mix_to_mono_into(samples, channels, mix);
                if let Some(resampler) = resampler {
                    resampler.push(mix, out);
                }
            }
        }
        Ok(keep_going)
    }

    /// Counts a packet that failed to decode; always `true` (keep going).
    fn bad_packet(&mut self) -> bool {
        self.bad_packets += 1;
        true
    }

    fn finish(mut self, declared_frames: Option<u64>) -> MediaResult<Sink> {
        let total = self.good_packets + self.bad_packets;
        if total == 0 || self.good_packets == 0 || self.frames == 0 {
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
            && self.frames + u64::from(self.rate / 10) < declared
        {
            let detail = format!("{} of {declared} frames decodable", self.frames);
            return Err(if self.good_bytes * 2 < self.input_bytes {
                MediaError::Corrupt(detail)
            } else {
                MediaError::Truncated(detail)
            });
        }
        if let Output::Mono {
            resampler: Some(resampler),
            samples,
            ..
        } = &mut self.output
        {
            resampler.finish(samples);
        }
        Ok(self)
    }
}
