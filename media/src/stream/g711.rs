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
    fn stereo_frames_stay_whole() {
        let mut parser = G711Parser::new(Law::Mu, 8_000, 2);
        let mut out = Vec::new();
        assert_eq!(parser.parse(&[0xFF, 0x00, 0x80], &mut out).unwrap(), 2);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], 0.0);
        assert!((out[1] + 32_124.0 / 32_768.0).abs() < 1e-6);
    }
}
