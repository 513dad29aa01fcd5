//! Output formats of synthesis: the codec and rate a caller asks for, validated, and
//! the encoding of synthesized samples into them. Pure apart from the codecs.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// RIFF/WAVE, 16-bit PCM.
    Wav,
    /// Raw signed 16-bit little-endian mono.
    PcmS16le,
    /// An Ogg/Opus file (48 kHz); on `/stream/speak`, raw 20 ms Opus packets.
    Opus,
    /// Named by the contract "where an encoder is available": not in this build.
    Mp3,
}

impl Codec {
    pub fn parse(text: &str) -> ApiResult<Codec> {
        serde_json::from_value(serde_json::Value::String(text.to_ascii_lowercase())).map_err(|_| {
            ApiError::invalid(format!("codec `{text}` is not one of wav, pcm_s16le, opus"))
                .with_field("field", "output.codec")
        })
    }

    pub fn content_type(self, sample_rate: u32) -> String {
        match self {
            Codec::Wav => "audio/wav".to_owned(),
            Codec::PcmS16le => format!("audio/pcm;rate={sample_rate};channels=1"),
            Codec::Opus => "audio/ogg;codecs=opus".to_owned(),
            Codec::Mp3 => "audio/mpeg".to_owned(),
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
        if codec == Codec::Mp3 {
            return Err(ApiError::invalid(
                "mp3 output is not available in this build; use wav, pcm_s16le or opus",
            )
            .with_field("field", "output.codec"));
        }
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

/// Encodes mono samples at `rate` (the voice's) into the output's file format.
pub fn encode(samples: &[f32], rate: u32, output: &Output) -> ApiResult<Vec<u8>> {
    let target = output.rate(rate);
    let samples = to_rate(samples, rate, target)?;
    Ok(match output.codec {
        Codec::Wav => media::encode::wav_s16(&samples, target, 1),
        Codec::PcmS16le => media::encode::pcm_s16le(&samples),
        Codec::Opus => media::encode::ogg_opus(&samples, 1, OPUS_BITRATE)?,
        Codec::Mp3 => return Err(ApiError::invalid("mp3 output is not available")),
    })
}

/// Speech at 32 kb/s: transparent for a 22 kHz voice, a tenth of 16-bit PCM.
pub const OPUS_BITRATE: i32 = 32_000;

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
        assert!(out(Some(Codec::Mp3), None).is_err());
        assert!(out(Some(Codec::Opus), Some(16_000)).is_err());
        assert!(out(None, Some(1_000)).is_err());
        assert!(Codec::parse("flac").is_err());
        assert_eq!(Codec::parse("PCM_S16LE").unwrap(), Codec::PcmS16le);
    }

    #[test]
    fn every_codec_decodes_back_to_the_same_length() {
        let tone: Vec<f32> = (0..22_050).map(|i| 0.3 * (i as f32 * 0.05).sin()).collect();
        for codec in [Codec::Wav, Codec::Opus] {
            let output = Output {
                codec,
                sample_rate: None,
            };
            let bytes = encode(&tone, 22_050, &output).unwrap();
            let audio = media::decode(&bytes, &media::DecodeOptions::default()).unwrap();
            let seconds = audio.duration_seconds();
            assert!((seconds - 1.0).abs() < 0.03, "{codec:?}: {seconds}");
        }
        let pcm = Output {
            codec: Codec::PcmS16le,
            sample_rate: Some(16_000),
        };
        assert_eq!(encode(&tone, 22_050, &pcm).unwrap().len(), 32_000);
    }
}
