//! G.711 (`audio/pcmu`, μ-law; `audio/pcma`, A-law): one byte per sample, telephony's
//! codec. Decoded with the reference expansion (ITU-T G.711, as in Sun's `g711.c`).

use super::Parser;
use crate::error::MediaResult;

/// Which companding law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// North America and Japan (`audio/pcmu`).
    Mu,
    /// Elsewhere (`audio/pcma`).
    A,
}

pub struct G711Parser {
    law: Law,
    sample_rate: u32,
    channels: u16,
}

impl G711Parser {
    pub fn new(law: Law, sample_rate: u32, channels: u16) -> Self {
        G711Parser {
            law,
            sample_rate,
            channels,
        }
    }
}

impl Parser for G711Parser {
    fn parse(&mut self, data: &[u8], out: &mut Vec<f32>) -> MediaResult<usize> {
        let frame = usize::from(self.channels.max(1));
        let whole = data.len() / frame * frame;
        let expand = match self.law {
            Law::Mu => mu_law,
            Law::A => a_law,
        };
        out.extend(
            data[..whole]
                .iter()
                .map(|byte| f32::from(expand(*byte)) / 32_768.0),
        );
        Ok(whole)
    }

    fn shape(&self) -> Option<(u32, u16)> {
        Some((self.sample_rate, self.channels))
    }
}

/// μ-law byte to 16-bit linear.
pub fn mu_law(byte: u8) -> i16 {
    const BIAS: i32 = 0x84;
    let byte = !byte;
    let magnitude = ((i32::from(byte & 0x0F) << 3) + BIAS) << ((byte >> 4) & 0x07);
    let linear = match byte & 0x80 {
        0 => magnitude - BIAS,
        _ => BIAS - magnitude,
    };
    linear as i16
}

/// A-law byte to 16-bit linear.
pub fn a_law(byte: u8) -> i16 {
    let byte = byte ^ 0x55;
    let mantissa = i32::from(byte & 0x0F) << 4;
    let linear = match (byte >> 4) & 0x07 {
        0 => mantissa + 8,
        segment => (mantissa + 0x108) << (segment - 1),
    };
    let linear = match byte & 0x80 {
        0 => -linear,
        _ => linear,
    };
    linear as i16
}

/// The segments' upper ends of both laws (16-bit magnitudes).
const SEGMENT_ENDS: [i32; 8] = [0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF];

fn segment(magnitude: i32) -> usize {
    SEGMENT_ENDS
        .iter()
        .position(|end| magnitude <= *end)
        .unwrap_or(8)
}

/// 16-bit linear to a μ-law byte (the reference compression, as Sun's `g711.c`).
pub fn to_mu_law(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32_635;
    let sample = i32::from(sample);
    let (magnitude, mask) = match sample < 0 {
        true => (-sample, 0x7F),
        false => (sample, 0xFF),
    };
    let magnitude = magnitude.min(CLIP) + BIAS;
    let segment = segment(magnitude).min(7);
    let code = ((segment as i32) << 4) | ((magnitude >> (segment + 3)) & 0x0F);
    (code ^ mask) as u8
}

/// 16-bit linear to an A-law byte (the reference compression).
pub fn to_a_law(sample: i16) -> u8 {
    let sample = i32::from(sample);
    let (magnitude, mask) = match sample >= 0 {
        true => (sample, 0xD5),
        false => ((-sample - 8).max(0), 0x55),
    };
    let segment = segment(magnitude);
    if segment >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let shift = if segment < 2 { 4 } else { segment + 3 };
    let code = ((segment as i32) << 4) | ((magnitude >> shift) & 0x0F);
    (code ^ mask) as u8
}

/// Little-endian 16-bit PCM compressed to one byte per sample.
pub fn compress(law: Law, pcm_s16le: &[u8]) -> Vec<u8> {
    let encode = match law {
        Law::Mu => to_mu_law,
        Law::A => to_a_law,
    };
    pcm_s16le
        .chunks_exact(2)
        .map(|pair| encode(i16::from_le_bytes([pair[0], pair[1]])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_values_expand_as_the_standard_says() {
        assert_eq!(mu_law(0xFF), 0);
        assert_eq!(mu_law(0x7F), 0);
        assert_eq!(mu_law(0x00), -32_124);
        assert_eq!(mu_law(0x80), 32_124);
        assert_eq!(a_law(0xD5), 8);
        assert_eq!(a_law(0x55), -8);
        assert_eq!(a_law(0xAA), 32_256);
        assert_eq!(a_law(0x2A), -32_256);
    }

    #[test]
    fn both_laws_are_monotonic_and_odd_symmetric() {
        // μ-law: 0x80..=0xFF is positive from loudest to silence; the low half mirrors it.
        let positive: Vec<i16> = (0x80..=0xFFu8).map(mu_law).collect();
        assert!(positive.windows(2).all(|w| w[0] > w[1]));
        for byte in 0x80..=0xFFu8 {
            assert_eq!(mu_law(byte), -mu_law(byte & 0x7F));
            assert_eq!(a_law(byte), -a_law(byte & 0x7F));
        }
        // A-law: with its even bits inverted back, a code rises with the magnitude.
        let levels: Vec<i16> = (0..0x80u8)
            .map(|code| a_law((code ^ 0x55) | 0x80))
            .collect();
        assert!(levels[0] > 0);
        assert!(levels.windows(2).all(|w| w[0] < w[1]), "{levels:?}");
    }

    #[test]
    fn compression_inverts_expansion_and_stays_within_a_step() {
        for byte in 0..=0xFFu8 {
            // μ-law has two zeros (0x7F, 0xFF): zero compresses to 0xFF.
            if byte != 0x7F {
                assert_eq!(to_mu_law(mu_law(byte)), byte, "μ {byte:#x}");
            }
            assert_eq!(to_a_law(a_law(byte)), byte, "A {byte:#x}");
        }
        for sample in (i16::MIN..=i16::MAX).step_by(7) {
            for (expand, compress) in [
                (mu_law as fn(u8) -> i16, to_mu_law as fn(i16) -> u8),
                (a_law, to_a_law),
            ] {
                let back = i32::from(expand(compress(sample)));
                let error = (back - i32::from(sample)).abs();
                // A step is 1/16 of its segment: at most 1/16 of the magnitude + 1 step of
                // the lowest segment.
                assert!(
                    error <= i32::from(sample).abs() / 16 + 132,
                    "{sample} -> {back}"
                );
            }
        }
        assert_eq!(
            compress(Law::Mu, &[0, 0, 0xFF]),
            vec![0xFF],
            "whole samples"
        );
    }

    #[test]
    fn stereo_frames_stay_whole() {
        let mut parser = G711Parser::new(Law::Mu, 8_000, 2);
        let mut out = Vec::new();
        assert_eq!(parser.parse(&[0xFF, 0x00, 0x80], &mut out).unwrap(), 2);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], 0.0);
        assert!((out[1] + 32_124.0 / 32_768.0).abs() < 1e-6);
    }
}
