//! Silero's first convolution (kernel 3, padding 1, stride 1) over a window's 4 STFT
//! steps by Winograd's minimal filtering F(4,3): the 4 outputs from 6 products per
//! channel pair instead of 12. It is the network's largest layer (129 → 128 channels),
//! and this halves its multiply-adds, a quarter of a frame's.
//!
//! With the padding, a window's 4 steps are exactly one tile: `d = [0, x0, x1, x2, x3,
//! 0]`. `U = Bᵀd` per input channel, `V = G·g` per kernel (computed once, in f64),
//! `M_j = U_j · V_j` over the channels (six dense products), `y = Aᵀ M` (Lavin and Gray,
//! 2015). Against the direct convolution the error is about 5e-7 of the output's scale.

use crate::kernels::Dense;
use crate::onnx::Tensor;

/// Steps per window, the tile's outputs.
pub const STEPS: usize = 4;
/// `G`: the kernel transform, one row per product.
const G: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

pub struct Winograd {
    channels: usize,
    outputs: usize,
    /// `V_j` as `channels × outputs` dense layers, without bias.
    products: Vec<Dense>,
    bias: Vec<f32>,
}

impl Winograd {
    pub fn new(weight: &Tensor, bias: &Tensor) -> Result<Winograd, String> {
        let [outputs, channels, 3] = weight.dims[..] else {
            return Err(format!("conv weight of shape {:?}", weight.dims));
        };
        if bias.values.len() != outputs {
            return Err(format!(
                "{} biases for {outputs} outputs",
                bias.values.len()
            ));
        }
        let products = G
            .iter()
            .map(|g| {
                let kernel = |c: usize, o: usize| {
                    let taps = &weight.values[(o * channels + c) * 3..(o * channels + c) * 3 + 3];
                    g.iter()
                        .zip(taps)
                        .map(|(g, w)| g * f64::from(*w))
                        .sum::<f64>() as f32
                };
                Dense::new(channels, outputs, kernel, vec![0.0; outputs])
            })
            .collect();
        Ok(Winograd {
            channels,
            outputs,
            products,
            bias: bias.values.clone(),
        })
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// `input` is `windows × 4 steps × channels`; the result `windows × 4 × outputs`,
    /// after ReLU.
    pub fn forward(&self, input: &[f32]) -> Vec<f32> {
        let (c, o) = (self.channels, self.outputs);
        let windows = input.len() / (STEPS * c);
        // U_j = (Bᵀ d)_j for d = [0, x0, x1, x2, x3, 0]; channel by channel over whole
        // rows, so the loop vectorizes.
        let mut transformed = vec![vec![0.0f32; windows * c]; 6];
        let [u0, u1, u2, u3, u4, u5] = &mut transformed[..] else {
            unreachable!("six transforms")
        };
        let outputs = (u0.chunks_exact_mut(c).zip(u1.chunks_exact_mut(c)))
            .zip(u2.chunks_exact_mut(c).zip(u3.chunks_exact_mut(c)))
            .zip(u4.chunks_exact_mut(c).zip(u5.chunks_exact_mut(c)));
        for (x, (((u0, u1), (u2, u3)), (u4, u5))) in input.chunks_exact(STEPS * c).zip(outputs) {
            let (x0, rest) = x.split_at(c);
            let (x1, rest) = rest.split_at(c);
            let (x2, x3) = rest.split_at(c);
            for ch in 0..c {
                let (x0, x1, x2, x3) = (x0[ch], x1[ch], x2[ch], x3[ch]);
                u0[ch] = -5.0 * x1 + x3;
                u1[ch] = -4.0 * x0 - 4.0 * x1 + x2 + x3;
                u2[ch] = 4.0 * x0 - 4.0 * x1 - x2 + x3;
                u3[ch] = -2.0 * x0 - x1 + 2.0 * x2 + x3;
                u4[ch] = 2.0 * x0 - x1 - 2.0 * x2 + x3;
                u5[ch] = 4.0 * x0 - 5.0 * x2;
            }
        }
        let m: Vec<Vec<f32>> = self
            .products
            .iter()
            .zip(&transformed)
            .map(|(product, u)| {
                let mut out = vec![0.0; windows * o];
                product.forward(u, &mut out);
                out
            })
            .collect();
        // y = Aᵀ M, plus the bias, then ReLU.
        let mut y = vec![0.0f32; windows * STEPS * o];
        for (w, steps) in y.chunks_exact_mut(STEPS * o).enumerate() {
            let at = w * o;
            let (m0, m1, m2) = (&m[0][at..at + o], &m[1][at..at + o], &m[2][at..at + o]);
            let (m3, m4, m5) = (&m[3][at..at + o], &m[4][at..at + o], &m[5][at..at + o]);
            let (y0, rest) = steps.split_at_mut(o);
            let (y1, rest) = rest.split_at_mut(o);
            let (y2, y3) = rest.split_at_mut(o);
            for k in 0..o {
                let (a, b) = (m1[k] + m2[k], m1[k] - m2[k]);
                let (p, q) = (m3[k] + m4[k], m3[k] - m4[k]);
                let bias = self.bias[k];
                y0[k] = (bias + m0[k] + a + p).max(0.0);
                y1[k] = (bias + b + 2.0 * q).max(0.0);
                y2[k] = (bias + a + 4.0 * p).max(0.0);
                y3[k] = (bias + b + 8.0 * q + m5[k]).max(0.0);
            }
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(seed: usize) -> f32 {
        ((seed * 2_654_435_761) % 1000) as f32 / 500.0 - 1.0
    }

    /// Against the direct convolution with zero padding, on magnitudes like the STFT's.
    #[test]
    fn equals_the_direct_convolution() {
        let (c, o, windows) = (7, 32, 3);
        let weight = Tensor {
            dims: vec![o, c, 3],
            values: (0..o * c * 3).map(|i| value(i * 7 + 1) * 0.3).collect(),
        };
        let bias = Tensor {
            dims: vec![o],
            values: (0..o).map(|i| value(i + 500)).collect(),
        };
        let input: Vec<f32> = (0..windows * STEPS * c)
            .map(|i| value(i * 13 + 5).abs() * 20.0)
            .collect();
        let got = Winograd::new(&weight, &bias).unwrap().forward(&input);
        for w in 0..windows {
            for t in 0..STEPS {
                for out in 0..o {
                    let mut sum = bias.values[out];
                    for k in 0..3 {
                        let Some(step) = (t + k).checked_sub(1).filter(|s| *s < STEPS) else {
                            continue;
                        };
                        for ch in 0..c {
                            sum += weight.values[(out * c + ch) * 3 + k]
                                * input[(w * STEPS + step) * c + ch];
                        }
                    }
                    let want = sum.max(0.0);
                    let have = got[(w * STEPS + t) * o + out];
                    assert!(
                        (have - want).abs() < 1e-4,
                        "[{w}][{t}][{out}] {have} vs {want}"
                    );
                }
            }
        }
    }
}
