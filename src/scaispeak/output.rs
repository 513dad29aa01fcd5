//! Output formats of synthesis: the codec and rate a caller asks for, validated, and
//! the encoding of synthesized samples into them. Pure apart from the codecs.

use media::resample::StreamResampler;
use media::writer::{AudioWriter, Format};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// RIFF/WAVE, 16-bit PCM (streamed: sizes `0xFFFFFFFF`, "read to the end").
    Wav,
    /// Raw signed 16-bit little-endian mono.
    PcmS16le,
    /// An Ogg/Opus file (48 kHz); on `/stream/speak`, raw 20 ms Opus packets.
    Opus,
    /// MPEG-1/2 Layer III, 64 kb/s constant bit rate (LAME).
    Mp3,
    /// FLAC, 16-bit, lossless.
    Flac,
}

impl Codec {
    pub fn parse(text: &str) -> ApiResult<Codec> {
        serde_json::from_value(serde_json::Value::String(text.to_ascii_lowercase())).map_err(|_| {
            ApiError::invalid(format!(
                "codec `{text}` is not one of wav, pcm_s16le, opus, mp3, flac"
            ))
            .with_field("field", "output.codec")
        })
    }

    pub fn content_type(self, sample_rate: u32) -> String {
        match self {
            Codec::Wav => "audio/wav".to_owned(),
            Codec::PcmS16le => format!("audio/pcm;rate={sample_rate};channels=1"),
            Codec::Opus => "audio/ogg;codecs=opus".to_owned(),
            Codec::Mp3 => "audio/mpeg".to_owned(),
            Codec::Flac => "audio/flac".to_owned(),
        }
    }

    /// The file format of the media crate's writers.
    fn format(self) -> Format {
        match self {
            Codec::Wav => Format::Wav,
            Codec::PcmS16le => Format::Pcm,
            Codec::Opus => Format::OggOpus {
                bitrate: OPUS_BITRATE,
            },
            Codec::Mp3 => Format::Mp3 { kbps: MP3_KBPS },
            Codec::Flac => Format::Flac,
        }
    }
}

/// The `output` block of a request.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputRequest {
    pub codec: Option<Codec>,
    pub sample_rate: Option<u32>,
}

/// A validated output: codec and the rate of the samples it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub codec: Codec,
    /// `None`: the voice's own rate (Opus is always 48 kHz).
    pub sample_rate: Option<u32>,
}

impl Output {
    pub fn from_request(request: OutputRequest, default: Codec) -> ApiResult<Output> {
        let codec = request.codec.unwrap_or(default);
        if let Some(rate) = request.sample_rate {
            if !(8_000..=48_000).contains(&rate) {
                return Err(ApiError::invalid(format!(
                    "sample_rate {rate} is outside 8000..48000"
                ))
                .with_field("field", "output.sample_rate"));
            }
            if codec == Codec::Opus && rate != media::encode::OPUS_RATE {
                return Err(
                    ApiError::invalid("Opus output is 48000 Hz; leave sample_rate out")
                        .with_field("field", "output.sample_rate"),
                );
            }
        }
        Ok(Output {
            codec,
            sample_rate: request.sample_rate,
        })
    }

    /// The rate the samples must have for this output, given the voice's rate.
    pub fn rate(&self, voice_rate: u32) -> u32 {
        match self.codec {
            Codec::Opus => media::encode::OPUS_RATE,
            _ => self.sample_rate.unwrap_or(voice_rate),
        }
    }

    pub fn content_type(&self, voice_rate: u32) -> String {
        self.codec.content_type(self.rate(voice_rate))
    }
}

/// Mono samples at `rate` converted to the output's rate.
pub fn to_rate(samples: &[f32], rate: u32, target: u32) -> ApiResult<Vec<f32>> {
    if rate == target {
        return Ok(samples.to_vec());
    }
    Ok(media::resample::resample_mono(samples, rate, target)?)
}

/// Encodes mono samples at `rate` (the voice's) into the output's file format (a whole
/// file: WAV with its exact sizes).
pub fn encode(samples: &[f32], rate: u32, output: &Output) -> ApiResult<Vec<u8>> {
    let target = output.rate(rate);
    let samples = to_rate(samples, rate, target)?;
    Ok(media::writer::encode_all(
        output.codec.format(),
        &samples,
        target,
    )?)
}

/// The output's file written as the audio comes: each piece of samples (at the voice's
/// rate) resampled to the output's rate and encoded; the bytes ready so far come back.
pub struct Encoder {
    resampler: StreamResampler,
    writer: AudioWriter,
    resampled: Vec<f32>,
}

impl Encoder {
    pub fn new(output: &Output, voice_rate: u32) -> ApiResult<Encoder> {
        let target = output.rate(voice_rate);
        Ok(Encoder {
            resampler: StreamResampler::new(voice_rate, target)?,
            writer: AudioWriter::new(output.codec.format(), target)?,
            resampled: Vec::new(),
        })
    }

    /// The bytes of `samples`; `last` drains the resampler and the encoder.
    pub fn push(&mut self, samples: &[f32], last: bool) -> ApiResult<Vec<u8>> {
        self.resampled.clear();
        self.resampler.push(samples, &mut self.resampled);
        if last {
            self.resampler.finish(&mut self.resampled);
        }
        let mut out = Vec::new();
        self.writer.push(&self.resampled, &mut out)?;
        if last {
            self.writer.finish(&mut out)?;
        }
        Ok(out)
    }
}

/// Speech at 32 kb/s: transparent for a 22 kHz voice, a tenth of 16-bit PCM.
pub const OPUS_BITRATE: i32 = 32_000;
/// MP3 of a 22 kHz voice at 64 kb/s: clean speech, a sixth of 16-bit PCM.
pub const MP3_KBPS: u16 = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_validated() {
        let out = |codec: Option<Codec>, rate: Option<u32>| {
            Output::from_request(
                OutputRequest {
                    codec,
                    sample_rate: rate,
                },
                Codec::Wav,
            )
        };
        assert_eq!(out(None, None).unwrap().rate(22_050), 22_050);
        assert_eq!(out(None, Some(16_000)).unwrap().rate(22_050), 16_000);
        assert_eq!(out(Some(Codec::Opus), None).unwrap().rate(22_050), 48_000);
        assert_eq!(out(Some(Codec::Mp3), None).unwrap().rate(22_050), 22_050);
        assert!(out(Some(Codec::Opus), Some(16_000)).is_err());
        assert!(out(None, Some(1_000)).is_err());
        assert_eq!(Codec::parse("flac").unwrap(), Codec::Flac);
        assert!(Codec::parse("aac").is_err());
        assert_eq!(Codec::parse("PCM_S16LE").unwrap(), Codec::PcmS16le);
    }

    #[test]
    fn every_codec_decodes_back_to_the_same_length() {
        let tone: Vec<f32> = (0..22_050).map(|i| 0.3 * (i as f32 * 0.05).sin()).collect();
        for codec in [Codec::Wav, Codec::Opus, Codec::Mp3, Codec::Flac] {
            let output = Output {
                codec,
                sample_rate: None,
            };
            let whole = encode(&tone, 22_050, &output).unwrap();
            // The same audio in three pieces through the streaming encoder.
            let mut encoder = Encoder::new(&output, 22_050).unwrap();
            let mut streamed = Vec::new();
            for (index, piece) in tone.chunks(8_000).enumerate() {
                streamed.extend(encoder.push(piece, index == 2).unwrap());
            }
            for bytes in [whole, streamed] {
                let audio = media::decode(&bytes, &media::DecodeOptions::default()).unwrap();
                let seconds = audio.duration_seconds();
                let slack = if codec == Codec::Mp3 { 0.11 } else { 0.03 };
                assert!(
                    seconds > 0.99 && (seconds - 1.0).abs() < slack,
                    "{codec:?}: {seconds}"
                );
            }
        }
        let pcm = Output {
            codec: Codec::PcmS16le,
            sample_rate: Some(16_000),
        };
        assert_eq!(encode(&tone, 22_050, &pcm).unwrap().len(), 32_000);
    }
}
