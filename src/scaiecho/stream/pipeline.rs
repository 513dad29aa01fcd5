//! One stream's audio path: bytes in any stream media type → decoded samples → mono →
//! 16 kHz → VAD frames → the endpointer's snapshots. Runs on a blocking thread (the
//! VAD is an ONNX model); the driver moves the pipeline in and back out per message.
//!
//! The node's Silero VAD finds speech; a process without engines (relay only) falls
//! back to a frame energy gate so utterances still end on pauses.

use std::sync::Arc;

use engines::endpoint::{EndpointParams, Endpointer, Snapshot};
use engines::node::Node;
use engines::silero::StreamState;
use media::resample::StreamResampler;
use media::stream::{StreamDecoder, StreamFormat, StreamLimits};

use crate::error::{ApiError, ApiResult};

const RATE: u32 = 16_000;

pub struct Pipeline {
    decoder: StreamDecoder,
    resampler: Option<StreamResampler>,
    channels: usize,
    detector: Detector,
    endpointer: Endpointer,
    /// 16 kHz samples produced so far.
    samples: u64,
    /// Scratch buffers, reused across messages.
    decoded: Vec<f32>,
    mono: Vec<f32>,
    resampled: Vec<f32>,
}

impl Pipeline {
    pub fn new(
        format: StreamFormat,
        limits: StreamLimits,
        node: Option<Arc<Node>>,
        params: EndpointParams,
    ) -> Pipeline {
        Pipeline {
            decoder: StreamDecoder::new(format, limits),
            resampler: None,
            channels: 1,
            detector: match node {
                Some(node) if node.vad.is_some() => Detector::Silero(node, Box::default()),
                _ => Detector::Energy,
            },
            endpointer: Endpointer::new(params),
            samples: 0,
            decoded: Vec::new(),
            mono: Vec::new(),
            resampled: Vec::new(),
        }
    }

    /// Seconds of audio received (at 16 kHz).
    pub fn seconds(&self) -> f64 {
        self.samples as f64 / f64::from(RATE)
    }

    /// Feeds one binary frame; returns the snapshots it completed.
    pub fn push(&mut self, bytes: &[u8]) -> ApiResult<Vec<Snapshot>> {
        self.decoded.clear();
        self.decoder.push(bytes, &mut self.decoded)?;
        self.convert(false)?;
        self.run_vad()
    }

    /// End of audio: drains the decoder and resampler, then ends the open utterance. A
    /// stream that stops inside a unit (a cut-off last page or frame) loses only that
    /// unit: what was heard before it still comes out.
    pub fn finish(&mut self) -> ApiResult<Vec<Snapshot>> {
        if let Err(error) = self.decoder.finish() {
            tracing::info!("stream ended inside a unit: {error}");
        }
        self.decoded.clear();
        self.convert(true)?;
        let mut snapshots = self.run_vad()?;
        snapshots.extend(self.endpointer.flush());
        Ok(snapshots)
    }

    /// Ends the open utterance now (`flush`).
    /// The utterance under way, once it is speech: its number and start (seconds).
    pub fn speaking(&self) -> Option<(u64, f64)> {
        self.endpointer
            .speaking()
            .map(|(number, start)| (number, start as f64 / f64::from(RATE)))
    }

    pub fn flush(&mut self) -> Option<Snapshot> {
        self.endpointer.flush()
    }

    /// Decoded interleaved samples → 16 kHz mono in `resampled`.
    fn convert(&mut self, last: bool) -> ApiResult<()> {
        self.resampled.clear();
        if self.resampler.is_none() {
            let Some((rate, channels)) = self.decoder.shape() else {
                return Ok(());
            };
            self.channels = usize::from(channels.max(1));
            self.resampler = Some(StreamResampler::new(rate, RATE).map_err(ApiError::from)?);
        }
        let Some(resampler) = &mut self.resampler else {
            return Ok(());
        };
        let mono: &[f32] = if self.channels == 1 {
            &self.decoded
        } else {
            self.mono.clear();
            let scale = 1.0 / self.channels as f32;
            self.mono.extend(
                self.decoded
                    .chunks_exact(self.channels)
                    .map(|frame| frame.iter().sum::<f32>() * scale),
            );
            &self.mono
        };
        resampler.push(mono, &mut self.resampled);
        if last {
            resampler.finish(&mut self.resampled);
        }
        self.samples += self.resampled.len() as u64;
        Ok(())
    }

    fn run_vad(&mut self) -> ApiResult<Vec<Snapshot>> {
        let mut snapshots = Vec::new();
        for frame in self.endpointer.push(&self.resampled) {
            let probability = self.detector.probability(&frame)?;
            snapshots.extend(self.endpointer.frame(&frame, probability));
        }
        Ok(snapshots)
    }
}

/// Speech probability of a 512-sample frame.
enum Detector {
    Silero(Arc<Node>, Box<StreamState>),
    /// Louder than -45 dBFS counts as speech.
    Energy,
}

impl Detector {
    fn probability(&mut self, frame: &[f32]) -> ApiResult<f32> {
        match self {
            Detector::Silero(node, state) => {
                let Some(vad) = &node.vad else {
                    return Ok(0.0);
                };
                Ok(vad.infer(&mut [&mut **state], &[frame])?[0])
            }
            Detector::Energy => Ok(match media::vad::power_dbfs(frame) > -45.0 {
                true => 0.9,
                false => 0.05,
            }),
        }
    }
}
