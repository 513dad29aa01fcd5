//! Kernels for the small networks we run natively (Silero VAD): dense layers `x·W (+
//! bias)` with the weights packed once at load time into 16-column panels, so the kernel
//! streams them and keeps a 4-row × 16-column tile of results in registers; and sigmoid
//! and tanh over slices, on an exponential that vectorizes (libm's is one call per
//! value, and was a third of a VAD frame).
//!
//! Why not ONNX Runtime or a general GEMM: Silero's layers are a few hundred thousand
//! multiply-adds per 32 ms frame. ONNX Runtime spends as much on its graph (about 100
//! nodes, three levels of `If`) and runs its Conv once per batch item, and a general
//! GEMM packs both operands on every call. Here the weights are packed once and a call
//! is only the arithmetic.
//!
//! The `unsafe` blocks are the calls of the AVX2+FMA builds of these functions, made only
//! after the CPU was checked to have both features (other CPUs run the same Rust
//! without them), and the sparse kernel's loads and stores of bounds-checked slices.
#![cfg_attr(
    target_arch = "x86_64",
    expect(
        unsafe_code,
        reason = "AVX2+FMA builds called after the CPU check; bounds-checked slices' loads"
    )
)]

/// Columns per weight panel (two AVX2 registers).
const LANES: usize = 16;
/// Rows per register tile.
const TILE_ROWS: usize = 4;

/// A `inputs × outputs` weight matrix and a bias, packed for [`Dense::forward`].
#[derive(Debug, Clone)]
pub struct Dense {
    inputs: usize,
    outputs: usize,
    /// `outputs / LANES` panels, each `inputs` rows of `LANES` weights.
    panels: Vec<f32>,
    bias: Vec<f32>,
}

impl Dense {
    /// `weight(i, o)` is the weight from input `i` to output `o`. `outputs` must be a
    /// multiple of 16 (every layer of the models we run natively is).
    pub fn new(
        inputs: usize,
        outputs: usize,
        weight: impl Fn(usize, usize) -> f32,
        bias: Vec<f32>,
    ) -> Dense {
        assert!(
            outputs.is_multiple_of(LANES) && bias.len() == outputs && inputs > 0,
            "dense layer {inputs}×{outputs} with {} biases",
            bias.len()
        );
        let mut panels = Vec::with_capacity(inputs * outputs);
        for panel in 0..outputs / LANES {
            for i in 0..inputs {
                panels.extend((0..LANES).map(|lane| weight(i, panel * LANES + lane)));
            }
        }
        Dense {
            inputs,
            outputs,
            panels,
            bias,
        }
    }

    pub fn inputs(&self) -> usize {
        self.inputs
    }

    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// `out = x·W + bias` for every row of `x` (`rows × inputs`, row-major) into `out`
    /// (`rows × outputs`).
    pub fn forward(&self, x: &[f32], out: &mut [f32]) {
        for row in out.chunks_exact_mut(self.outputs) {
            row.copy_from_slice(&self.bias);
        }
        self.accumulate(x, out);
    }

    /// `out += x·W` (no bias).
    pub fn accumulate(&self, x: &[f32], out: &mut [f32]) {
        self.check_shapes(x, out);
        #[cfg(target_arch = "x86_64")]
        if avx2_fma() {
            // SAFETY: the CPU has both features `accumulate_avx2` is compiled for.
            unsafe { accumulate_avx2(self, x, out) };
            return;
        }
        accumulate_rows::<false>(self, x, out);
    }

    /// `out = x·W + bias` for rows that are mostly zero (a ReLU's output): each row's
    /// zero inputs are skipped. Only the AVX2 build skips; elsewhere this is
    /// [`Dense::forward`].
    pub fn forward_sparse(&self, x: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if avx2_fma() && self.outputs.is_multiple_of(SPARSE_GROUP * LANES) {
            self.check_shapes(x, out);
            for row in out.chunks_exact_mut(self.outputs) {
                row.copy_from_slice(&self.bias);
            }
            // SAFETY: the CPU has both features `sparse_avx2` is compiled for.
            unsafe { sparse_avx2(self, x, out) };
            return;
        }
        self.forward(x, out);
    }

    /// `x` must be whole rows of inputs and `out` the same number of rows of outputs.
    fn check_shapes(&self, x: &[f32], out: &[f32]) {
        let rows = x.len() / self.inputs;
        assert!(
            x.len() == rows * self.inputs && out.len() == rows * self.outputs,
            "{} inputs and {} outputs for a {}×{} layer",
            x.len(),
            out.len(),
            self.inputs,
            self.outputs
        );
    }
}

/// Panels the sparse kernel takes at once (64 outputs).
const SPARSE_GROUP: usize = 4;

/// Every row's nonzero inputs, then each group of four panels (64 outputs; 32 KB of
/// weights for 128 inputs, within L1) against every row, eight independent sums per
/// row. A row alone reuses no weight, so the rows go inside the group: streamed from L2
/// row after row, the weights cost what the skipped zeros saved. In intrinsics: written
/// plainly, the sums stayed in scalars on the stack.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sparse_avx2(dense: &Dense, x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::{__m256, _mm256_add_ps, _mm256_fmadd_ps, _mm256_loadu_ps};
    use std::arch::x86_64::{_mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps};
    let (k, n) = (dense.inputs, dense.outputs);
    let rows = x.len() / k;
    let mut nonzero: Vec<(usize, f32)> = Vec::with_capacity(x.len());
    let mut starts = Vec::with_capacity(rows + 1);
    for row in x.chunks_exact(k) {
        starts.push(nonzero.len());
        nonzero.extend(row.iter().copied().enumerate().filter(|(_, a)| *a != 0.0));
    }
    starts.push(nonzero.len());
    let width = SPARSE_GROUP * LANES;
    for (g, group) in dense
        .panels
        .chunks_exact(SPARSE_GROUP * k * LANES)
        .enumerate()
    {
        for r in 0..rows {
            let target = &mut out[r * n + g * width..r * n + (g + 1) * width];
            let mut acc: [__m256; 2 * SPARSE_GROUP] = [_mm256_setzero_ps(); 2 * SPARSE_GROUP];
            for &(i, a) in &nonzero[starts[r]..starts[r + 1]] {
                let a = _mm256_set1_ps(a);
                for q in 0..SPARSE_GROUP {
                    let at = (q * k + i) * LANES;
                    let weights = &group[at..at + LANES];
                    // SAFETY: `weights` holds 16 floats: two unaligned 8-float loads.
                    let (low, high) = unsafe {
                        (
                            _mm256_loadu_ps(weights.as_ptr()),
                            _mm256_loadu_ps(weights.as_ptr().add(8)),
                        )
                    };
                    acc[2 * q] = _mm256_fmadd_ps(a, low, acc[2 * q]);
                    acc[2 * q + 1] = _mm256_fmadd_ps(a, high, acc[2 * q + 1]);
                }
            }
            for (sums, slot) in acc.iter().zip(target.chunks_exact_mut(8)) {
                // SAFETY: `slot` holds 8 floats: one unaligned load and store.
                unsafe {
                    let value = _mm256_add_ps(_mm256_loadu_ps(slot.as_ptr()), *sums);
                    _mm256_storeu_ps(slot.as_mut_ptr(), value);
                }
            }
        }
    }
}

/// Whether the CPU has AVX2 and FMA (the standard library caches the answer).
#[cfg(target_arch = "x86_64")]
fn avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `x = 1 / (1 + e^-x)` for every value.
pub fn sigmoid(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has both features `sigmoid_avx2` is compiled for.
        unsafe { sigmoid_avx2(xs) };
        return;
    }
    sigmoid_values(xs);
}

/// `x = tanh(x)` for every value.
pub fn tanh(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has both features `tanh_avx2` is compiled for.
        unsafe { tanh_avx2(xs) };
        return;
    }
    tanh_values(xs);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sigmoid_avx2(xs: &mut [f32]) {
    sigmoid_values(xs);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn tanh_avx2(xs: &mut [f32]) {
    tanh_values(xs);
}

#[inline(always)]
fn sigmoid_values(xs: &mut [f32]) {
    for x in xs {
        *x = 1.0 / (1.0 + exp(-*x));
    }
}

#[inline(always)]
fn tanh_values(xs: &mut [f32]) {
    // 1 − 2/(e^2x + 1): exact at both saturations, absolute error ~1e-7 near 0.
    for x in xs {
        *x = 1.0 - 2.0 / (exp(2.0 * *x) + 1.0);
    }
}

/// e^x to about 2 ulp (Cephes' expf): x = n·ln 2 + r with |r| ≤ ln 2 / 2, a degree-6
/// polynomial for e^r, and 2^n through the exponent bits. No branches and no calls, so
/// loops over it vectorize.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, so that n·LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and removing 1.5·2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // n is in [-126, 127] after the clamp: a normal power of two. It is read from the
    // bits of `shifted` (whose last mantissa bits count in ones), not cast: `n as i32`
    // saturates, and its per-value compares kept the loops from vectorizing.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    e * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn accumulate_avx2(dense: &Dense, x: &[f32], out: &mut [f32]) {
    accumulate_rows::<true>(dense, x, out);
}

#[inline(always)]
fn accumulate_rows<const FMA: bool>(dense: &Dense, x: &[f32], out: &mut [f32]) {
    let (k, n) = (dense.inputs, dense.outputs);
    let mut x_tiles = x.chunks_exact(TILE_ROWS * k);
    let mut out_tiles = out.chunks_exact_mut(TILE_ROWS * n);
    for (x_tile, out_tile) in (&mut x_tiles).zip(&mut out_tiles) {
        tile::<TILE_ROWS, FMA>(dense, x_tile, out_tile);
    }
    let (x_rest, out_rest) = (x_tiles.remainder(), out_tiles.into_remainder());
    match x_rest.len() / k {
        0 => {}
        1 => tile::<1, FMA>(dense, x_rest, out_rest),
        2 => tile::<2, FMA>(dense, x_rest, out_rest),
        _ => tile::<3, FMA>(dense, x_rest, out_rest),
    }
}

/// `R` rows of `x` against every panel: the `R × 16` partial sums stay in registers
/// across the whole input dimension.
#[inline(always)]
fn tile<const R: usize, const FMA: bool>(dense: &Dense, x: &[f32], out: &mut [f32]) {
    let (k, n) = (dense.inputs, dense.outputs);
    let rows: [&[f32]; R] = std::array::from_fn(|r| &x[r * k..(r + 1) * k]);
    for (p, panel) in dense.panels.chunks_exact(k * LANES).enumerate() {
        let mut acc = [[0.0f32; LANES]; R];
        for (i, weights) in panel.chunks_exact(LANES).enumerate() {
            let weights: &[f32; LANES] = weights.try_into().expect("LANES");
            for r in 0..R {
                let a = rows[r][i];
                for lane in 0..LANES {
                    acc[r][lane] = if FMA {
                        a.mul_add(weights[lane], acc[r][lane])
                    } else {
                        a * weights[lane] + acc[r][lane]
                    };
                }
            }
        }
        for (r, sums) in acc.iter().enumerate() {
            let target = &mut out[r * n + p * LANES..r * n + (p + 1) * LANES];
            for (t, s) in target.iter_mut().zip(sums) {
                *t += s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sparse rows (a ReLU's output) give the dense product.
    #[test]
    fn sparse_rows_give_the_dense_product() {
        for n in [64, 80, 128] {
            let k = 45;
            let weight = |i: usize, o: usize| value(i * 31 + o * 5 + 1);
            let bias: Vec<f32> = (0..n).map(|o| value(o + 77)).collect();
            let dense = Dense::new(k, n, weight, bias);
            let x: Vec<f32> = (0..5 * k).map(|i| value(i * 13 + 2).max(0.0)).collect();
            assert!(x.iter().filter(|v| **v == 0.0).count() > x.len() / 4);
            let (mut want, mut got) = (vec![0.0; 5 * n], vec![f32::NAN; 5 * n]);
            dense.forward(&x, &mut want);
            dense.forward_sparse(&x, &mut got);
            for (w, g) in want.iter().zip(&got) {
                assert!((w - g).abs() < 1e-5, "{n} outputs: {g} vs {w}");
            }
        }
    }

    #[test]
    fn activations_match_the_standard_library() {
        let xs: Vec<f32> = (-2000..=2000)
            .map(|i| i as f32 / 50.0)
            .chain([-200.0, 200.0])
            .collect();
        let (mut s, mut t) = (xs.clone(), xs.clone());
        sigmoid(&mut s);
        tanh(&mut t);
        for ((x, s), t) in xs.iter().zip(&s).zip(&t) {
            let (want_s, want_t) = (1.0 / (1.0 + (-x).exp()), x.tanh());
            assert!(
                (s - want_s).abs() <= 2e-7,
                "sigmoid({x}) = {s}, not {want_s}"
            );
            assert!((t - want_t).abs() <= 4e-7, "tanh({x}) = {t}, not {want_t}");
        }
        for x in [-80.0f32, -10.0, -1.0, -0.01, 0.0, 0.3, 1.0, 20.0, 80.0] {
            let relative = (exp(x) - x.exp()).abs() / x.exp();
            assert!(relative < 3e-7, "exp({x}) off by {relative}");
        }
    }

    fn value(seed: usize) -> f32 {
        ((seed * 2_654_435_761) % 1000) as f32 / 500.0 - 1.0
    }

    /// Every row count through the 4-row tiles and their remainders, against the plain
    /// triple loop.
    #[test]
    fn equals_the_plain_product() {
        let (k, n) = (37, 48);
        let weight = |i: usize, o: usize| value(i * 131 + o * 7 + 3);
        let bias: Vec<f32> = (0..n).map(|o| value(o + 999)).collect();
        let dense = Dense::new(k, n, weight, bias.clone());
        for rows in 1..=9 {
            let x: Vec<f32> = (0..rows * k).map(|i| value(i * 17 + 1)).collect();
            let mut out = vec![f32::NAN; rows * n];
            dense.forward(&x, &mut out);
            for r in 0..rows {
                for o in 0..n {
                    let expected =
                        bias[o] + (0..k).map(|i| x[r * k + i] * weight(i, o)).sum::<f32>();
                    let got = out[r * n + o];
                    assert!(
                        (got - expected).abs() < 1e-4,
                        "{rows} rows: [{r}][{o}] {got} vs {expected}"
                    );
                }
            }
        }
    }
}
