//! Silero VAD's 16 kHz network in Rust, with the weights of the pinned ONNX file:
//! a 256-point STFT (hop 128) over each 576-sample window (64 samples of context, then
//! the frame, reflect-padded by 64), four ReLU convolutions (kernel 3, padding 1,
//! strides 1, 2, 2, 1; the first by Winograd's F(4,3)) down to one 128-vector, an LSTM cell, and a 1×1 convolution with
//! a sigmoid.
//!
//! The encoder of every window is independent of the others, so any number of windows
//! (16 streams' current frames, or every frame of a clip) go through it as one batch;
//! only the LSTM cell runs frame by frame. The STFT is a real FFT of the windowed frame:
//! the model's Conv basis is exactly that (checked at load).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use crate::kernels::{self, Dense};
use crate::onnx::Tensor;

use super::winograd::{STEPS, Winograd};

/// Samples per window: 64 of context, then the 512-sample frame.
pub const WINDOW: usize = 576;
const PADDED: usize = WINDOW + 64;
const N_FFT: usize = 256;
const HOP: usize = 128;
const BINS: usize = N_FFT / 2 + 1;
// A window's STFT frames are Winograd's tile (`winograd::STEPS`).
const _: () = assert!((PADDED - N_FFT) / HOP + 1 == STEPS);
pub const HIDDEN: usize = 128;
/// Name prefix of the 16 kHz branch's constants in the ONNX file.
const BRANCH: &str = "If_0_then_branch__Inline_0__";

/// A convolution over a fixed number of time steps (padding 1 on both sides) as one
/// dense layer over the gathered taps. Taps that fall on padding for every output step
/// are left out of the product.
struct Conv {
    channels: usize,
    steps_in: usize,
    stride: usize,
    taps: Range<usize>,
    dense: Dense,
}

impl Conv {
    fn new(weight: &Tensor, bias: &Tensor, steps_in: usize, stride: usize) -> Result<Conv, String> {
        let [outputs, channels, 3] = weight.dims[..] else {
            return Err(format!("conv weight of shape {:?}", weight.dims));
        };
        let steps_out = (steps_in - 1) / stride + 1;
        // Input step of tap t for output step s is s·stride + t − 1.
        let used = |t: usize| (0..steps_out).any(|s| (1..=steps_in).contains(&(s * stride + t)));
        let first = (0..3).find(|t| used(*t)).unwrap_or(0);
        let last = (0..3).rev().find(|t| used(*t)).unwrap_or(0);
        let taps = first..last + 1;
        let dense = Dense::new(
            taps.len() * channels,
            outputs,
            |i, o| weight.values[(o * channels + i % channels) * 3 + taps.start + i / channels],
            bias.values.clone(),
        );
        Ok(Conv {
            channels,
            steps_in,
            stride,
            taps,
            dense,
        })
    }

    fn steps_out(&self) -> usize {
        (self.steps_in - 1) / self.stride + 1
    }

    /// `input` is `windows × steps_in × channels`; the result `windows × steps_out ×
    /// outputs`, after ReLU.
    fn forward(&self, input: &[f32]) -> Vec<f32> {
        let windows = input.len() / (self.steps_in * self.channels);
        let width = self.taps.len() * self.channels;
        let mut gathered = vec![0.0; windows * self.steps_out() * width];
        let mut rows = gathered.chunks_exact_mut(width);
        for window in input.chunks_exact(self.steps_in * self.channels) {
            for step in 0..self.steps_out() {
                let row = rows.next().expect("sized above");
                for (slot, tap) in row.chunks_exact_mut(self.channels).zip(self.taps.clone()) {
                    // Input step = step·stride + tap − 1; padding stays zero.
                    let at = step * self.stride + tap;
                    if (1..=self.steps_in).contains(&at) {
                        let at = at - 1;
                        slot.copy_from_slice(&window[at * self.channels..(at + 1) * self.channels]);
                    }
                }
            }
        }
        let mut out = vec![0.0; windows * self.steps_out() * self.dense.outputs()];
        self.dense.forward(&gathered, &mut out);
        for v in &mut out {
            *v = v.max(0.0);
        }
        out
    }
}

/// The network, built once from the model's constants.
pub struct Net {
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
    /// The first convolution by Winograd's F(4,3), for batches of windows: its six
    /// products of one row per window beat the direct one only from four windows on
    /// (one live stream's frame alone ran 35% slower with it).
    winograd: Winograd,
    /// The first convolution, direct: for fewer windows.
    first: Conv,
    /// The other three.
    encoder: [Conv; 3],
    /// `W_ih` with both LSTM biases.
    input_gates: Dense,
    hidden_gates: Dense,
    head: Vec<f32>,
    head_bias: f32,
}

impl Net {
    pub fn from_constants(constants: &HashMap<String, Tensor>) -> Result<Net, String> {
        let get = |name: &str| {
            constants
                .get(&format!("{BRANCH}{name}"))
                .ok_or_else(|| format!("the model has no constant `{name}`"))
        };
        let shaped = |name: &str, dims: &[usize]| {
            let tensor = get(name)?;
            if tensor.dims == dims {
                Ok(tensor)
            } else {
                Err(format!(
                    "`{name}` has shape {:?}, expected {dims:?}",
                    tensor.dims
                ))
            }
        };
        let basis = shaped("stft.forward_basis_buffer", &[2 * BINS, 1, N_FFT])?;
        let window = check_dft_basis(&basis.values)?;
        let conv = |layer: usize, steps_in, stride| {
            Conv::new(
                get(&format!("encoder.{layer}.reparam_conv.weight"))?,
                get(&format!("encoder.{layer}.reparam_conv.bias"))?,
                steps_in,
                stride,
            )
        };
        let winograd = Winograd::new(
            get("encoder.0.reparam_conv.weight")?,
            get("encoder.0.reparam_conv.bias")?,
        )?;
        let first = conv(0, STEPS, 1)?;
        let encoder = [conv(1, STEPS, 2)?, conv(2, 2, 2)?, conv(3, 1, 1)?];
        let widths: Vec<usize> = std::iter::once(winograd.channels())
            .chain(encoder.iter().map(|c| c.channels))
            .collect();
        if widths != [BINS, 128, 64, 64] || encoder[2].dense.outputs() != HIDDEN {
            return Err(format!("unexpected encoder widths {widths:?}"));
        }
        let gates = 4 * HIDDEN;
        let w_ih = shaped("decoder.rnn.weight_ih", &[gates, HIDDEN])?;
        let w_hh = shaped("decoder.rnn.weight_hh", &[gates, HIDDEN])?;
        let b_ih = shaped("decoder.rnn.bias_ih", &[gates])?;
        let b_hh = shaped("decoder.rnn.bias_hh", &[gates])?;
        let bias = b_ih
            .values
            .iter()
            .zip(&b_hh.values)
            .map(|(a, b)| a + b)
            .collect();
        let input_gates = Dense::new(HIDDEN, gates, |i, o| w_ih.values[o * HIDDEN + i], bias);
        let hidden_gates = Dense::new(
            HIDDEN,
            gates,
            |i, o| w_hh.values[o * HIDDEN + i],
            vec![0.0; gates],
        );
        let head = shaped("decoder.decoder.2.weight", &[1, HIDDEN, 1])?
            .values
            .clone();
        let head_bias = shaped("decoder.decoder.2.bias", &[1])?.values[0];
        Ok(Net {
            window,
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT),
            winograd,
            first,
            encoder,
            input_gates,
            hidden_gates,
            head,
            head_bias,
        })
    }

    /// The encoder's 128-vector for each window of `windows` (`n × WINDOW` samples).
    pub fn encode(&self, windows: &[f32]) -> Vec<f32> {
        let mut spectra = vec![0.0; windows.len() / WINDOW * STEPS * BINS];
        let mut padded = [0.0f32; PADDED];
        let mut frame = self.fft.make_input_vec();
        let mut spectrum = vec![Complex::default(); BINS];
        let mut scratch = self.fft.make_scratch_vec();
        let mut rows = spectra.chunks_exact_mut(BINS);
        for window in windows.chunks_exact(WINDOW) {
            padded[..WINDOW].copy_from_slice(window);
            // Reflect padding on the right: x[W], x[W+1], ... = x[W-2], x[W-3], ...
            for (i, slot) in padded[WINDOW..].iter_mut().enumerate() {
                *slot = window[WINDOW - 2 - i];
            }
            for step in 0..STEPS {
                let samples = &padded[step * HOP..step * HOP + N_FFT];
                for ((f, x), w) in frame.iter_mut().zip(samples).zip(&self.window) {
                    *f = x * w;
                }
                self.fft
                    .process_with_scratch(&mut frame, &mut spectrum, &mut scratch)
                    .expect("buffers sized by the plan");
                let row = rows.next().expect("sized above");
                for (m, c) in row.iter_mut().zip(&spectrum) {
                    // Not `norm()`: that is libm's hypot, a call per bin.
                    *m = (c.re * c.re + c.im * c.im).sqrt();
                }
            }
        }
        let first = match windows.len() / WINDOW {
            0..4 => self.first.forward(&spectra),
            _ => self.winograd.forward(&spectra),
        };
        self.encoder.iter().fold(first, |x, conv| conv.forward(&x))
    }

    /// The LSTM gates' input part (with both biases) for encoded windows.
    pub fn input_gates(&self, encoded: &[f32]) -> Vec<f32> {
        let mut gates = vec![0.0; encoded.len() / HIDDEN * 4 * HIDDEN];
        // Three quarters of the encoder's output are zero (its last ReLU).
        self.input_gates.forward_sparse(encoded, &mut gates);
        gates
    }

    /// Adds `W_hh·h` for each row of `hidden` to the rows of `gates`.
    pub fn add_hidden_gates(&self, hidden: &[f32], gates: &mut [f32]) {
        self.hidden_gates.accumulate(hidden, gates);
    }

    /// One LSTM cell step from complete gates (PyTorch order: input, forget, cell,
    /// output), which it overwrites: updates `h` and `c` and returns the speech
    /// probability.
    pub fn cell(&self, gates: &mut [f32], h: &mut [f32], c: &mut [f32]) -> f32 {
        let (input_forget, rest) = gates.split_at_mut(2 * HIDDEN);
        let (cell, output) = rest.split_at_mut(HIDDEN);
        kernels::sigmoid(input_forget);
        kernels::tanh(cell);
        kernels::sigmoid(output);
        let (input, forget) = input_forget.split_at(HIDDEN);
        for k in 0..HIDDEN {
            c[k] = forget[k] * c[k] + input[k] * cell[k];
        }
        h.copy_from_slice(c);
        kernels::tanh(h);
        let mut logit = self.head_bias;
        for k in 0..HIDDEN {
            h[k] *= output[k];
            logit += self.head[k] * h[k].max(0.0);
        }
        1.0 / (1.0 + (-logit).exp())
    }
}

/// The model's STFT is a Conv whose kernels are the real and imaginary parts of a
/// windowed DFT; the FFT stands in for it only if they are exactly that. Returns the
/// window (the kernel of bin 0's real part).
fn check_dft_basis(basis: &[f32]) -> Result<Vec<f32>, String> {
    let window = basis[..N_FFT].to_vec();
    for bin in 0..BINS {
        for n in 0..N_FFT {
            let angle = 2.0 * std::f64::consts::PI * (bin * n % N_FFT) as f64 / N_FFT as f64;
            let w = f64::from(window[n]);
            let real = f64::from(basis[bin * N_FFT + n]);
            let imaginary = f64::from(basis[(BINS + bin) * N_FFT + n]);
            if (real - w * angle.cos()).abs() > 1e-5 || (imaginary + w * angle.sin()).abs() > 1e-5 {
                return Err(format!(
                    "the STFT basis is not a windowed DFT at bin {bin}, sample {n}"
                ));
            }
        }
    }
    Ok(window)
}
