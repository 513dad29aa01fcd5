//! Synthesized audio to the stream's frames: resampled to the announced rate, then
//! 20 ms Opus packets or 20 ms of s16le PCM. The first clause of a stream is framed in
//! two steps so its first packet leaves sooner.

use media::encode::{OPUS_FRAME, OpusStreamEncoder};
use media::resample::StreamResampler;

use crate::error::{ApiError, ApiResult};
use crate::scaispeak::output::{Codec, OPUS_BITRATE, Output};

/// Encodes synthesized audio into the stream's frames.
pub(super) struct Framer {
    resampler: StreamResampler,
    opus: Option<OpusStreamEncoder>,
    /// Samples per 20 ms frame at the output rate (PCM).
    frame_len: usize,
    pending: Vec<f32>,
    resampled: Vec<f32>,
}

impl Framer {
    /// Samples come at `voice_rate`; frames carry `rate` (what `ready` announced).
    pub(super) fn new(output: &Output, voice_rate: u32, rate: u32) -> ApiResult<Framer> {
        let opus = match output.codec {
            Codec::Opus => Some(OpusStreamEncoder::new(1, OPUS_BITRATE)?),
            _ => None,
        };
        Ok(Framer {
            resampler: StreamResampler::new(voice_rate, rate)?,
            opus,
            frame_len: match output.codec {
                Codec::Opus => OPUS_FRAME,
                _ => rate as usize / 50,
            },
            pending: Vec::new(),
            resampled: Vec::new(),
        })
    }

    /// Frames of `samples` (at the voice's rate); `last` drains the filters.
    pub(super) fn frames(&mut self, samples: &[f32], last: bool) -> ApiResult<Vec<Vec<u8>>> {
        self.resampled.clear();
        self.resampler.push(samples, &mut self.resampled);
        if last {
            self.resampler.finish(&mut self.resampled);
        }
        let mut frames = Vec::new();
        match &mut self.opus {
            Some(encoder) => {
                encoder.push(&self.resampled, &mut |packet| frames.push(packet.to_vec()))?;
                if last {
                    encoder.finish(&mut |packet| frames.push(packet.to_vec()))?;
                }
            }
            None => {
                self.pending.extend_from_slice(&self.resampled);
                let whole = self.pending.len() / self.frame_len * self.frame_len;
                let cut = if last { self.pending.len() } else { whole };
                for chunk in self.pending[..cut].chunks(self.frame_len) {
                    frames.push(media::encode::pcm_s16le(chunk));
                }
                self.pending.drain(..cut);
            }
        }
        Ok(frames)
    }
}

/// A sentence synthesized and framed: its characters, seconds and frames. The framer
/// travels with the running sentence (one runs at a time) and comes back with it.
pub(super) struct Spoken {
    pub(super) characters: usize,
    pub(super) seconds: f64,
    pub(super) frames: Vec<Vec<u8>>,
    /// Samples still to frame (the rest of a first clause, framed after its head) and
    /// their rate.
    pub(super) rest: Vec<f32>,
    pub(super) rate: u32,
    /// The rest of a first clause still being synthesized, when its first piece came
    /// ahead of it from the engine.
    pub(super) pending: Option<Pending>,
}

/// The synthesis of a first clause's rest, running on after its first piece.
pub(super) type Pending = tokio::task::JoinHandle<ApiResult<Vec<f32>>>;

/// A stream's first clause is framed in two steps, its first 100 ms first, so its first
/// packet leaves before the whole clause is resampled and encoded (about 4.5 ms for a
/// 1.3 s clause, a tenth of the time to first audio on the bench).
pub(super) const HEAD_MS: usize = 100;

/// Resamples and encodes the first `head` of `samples` on a blocking thread (CPU work,
/// not the runtime's); the rest comes back unframed. `characters` and `seconds` are the
/// usage the piece accounts for.
pub(super) async fn frame(
    framer: Option<Framer>,
    (output, rate, out_rate): (Output, u32, u32),
    mut samples: Vec<f32>,
    (characters, seconds): (usize, f64),
    head: usize,
) -> (Option<Framer>, ApiResult<Spoken>) {
    let framed = tokio::task::spawn_blocking(move || {
        let mut framer = match framer {
            Some(framer) => framer,
            None => match Framer::new(&output, rate, out_rate) {
                Ok(framer) => framer,
                Err(error) => return (None, Err(error)),
            },
        };
        let rest = samples.split_off(head.min(samples.len()));
        let spoken = framer.frames(&samples, false).map(|frames| Spoken {
            characters,
            seconds,
            frames,
            rest,
            rate,
            pending: None,
        });
        (Some(framer), spoken)
    })
    .await;
    framed.unwrap_or_else(|error| (None, Err(ApiError::internal(error))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_frames_are_20_ms_packets_that_decode_back() {
        let output = Output {
            codec: Codec::Opus,
            sample_rate: None,
        };
        let mut framer = Framer::new(&output, 22_050, 48_000).unwrap();
        let tone: Vec<f32> = (0..22_050).map(|i| 0.3 * (i as f32 * 0.05).sin()).collect();
        let mut packets = framer.frames(&tone, false).unwrap();
        packets.extend(framer.frames(&[], true).unwrap());
        // One second is 50 packets, plus the encoder's look-ahead flushed at the end.
        assert!((50..=53).contains(&packets.len()), "{}", packets.len());
        let mut decoder = media::opus_decode::OpusPacketDecoder::new(1, 0).unwrap();
        let mut samples = Vec::new();
        for packet in &packets {
            samples.extend_from_slice(decoder.decode(packet).unwrap());
        }
        assert_eq!(samples.len(), packets.len() * OPUS_FRAME);
        assert_eq!(media::encode::OPUS_RATE / OPUS_FRAME as u32, 50);
    }

    #[test]
    fn pcm_frames_are_20_ms_at_the_asked_rate() {
        let output = Output {
            codec: Codec::PcmS16le,
            sample_rate: Some(16_000),
        };
        let mut framer = Framer::new(&output, 22_050, 16_000).unwrap();
        let tone = vec![0.1f32; 22_050];
        let mut frames = framer.frames(&tone, false).unwrap();
        frames.extend(framer.frames(&[], true).unwrap());
        let total: usize = frames.iter().map(Vec::len).sum();
        assert_eq!(total, 32_000);
        assert!(frames[..frames.len() - 1].iter().all(|f| f.len() == 640));
    }
}
