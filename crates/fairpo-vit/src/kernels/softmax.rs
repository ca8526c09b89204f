//! Softmax over the last dimension with a fast CPU kernel (see `dispatch.rs`).
//!
//! burn composes softmax from max, subtract, exp (libm, one element at a time, one thread),
//! sum and divide: five passes over ViT-B's `[B, 12, 197, 197]` attention scores. This kernel
//! does each row in one parallel task, with the vectorisable exp of `lanes.rs`.

use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::dispatch::{apply, HostOp};
use super::lanes::{exp_shifted_sum, lane_dot, lane_max, CHUNK};

/// `exp(x_i − max x) / Σ_j exp(x_j − max x)` along the last dimension.
///
/// # Shapes
/// - x: `[..., N]`
/// - output: same as `x`
pub fn softmax_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    apply::<Softmax, B, D>(x, |x| activation::softmax(x, D - 1))
}

#[derive(Debug)]
struct Softmax;

/// Rows per parallel task for rows of length `row`.
fn rows_per_task(row: usize) -> usize {
    (CHUNK / row).max(1) * row
}

impl HostOp for Softmax {
    const SAVES_INPUT: bool = false;

    fn forward(values: &mut [f32], row: usize) {
        values
            .par_chunks_mut(rows_per_task(row))
            .for_each(|rows| rows.chunks_mut(row).for_each(softmax_row));
    }

    /// ∂L/∂x = y ⊙ (g − ⟨g, y⟩) per row, with y the softmax output.
    fn backward(y: &[f32], grad: &mut [f32], row: usize) {
        let n = rows_per_task(row);
        grad.par_chunks_mut(n)
            .zip(y.par_chunks(n))
            .for_each(|(g, y)| {
                for (g, y) in g.chunks_mut(row).zip(y.chunks(row)) {
                    let dot = lane_dot(g, y);
                    for (g, &y) in g.iter_mut().zip(y) {
                        *g = y * (*g - dot);
                    }
                }
            });
    }
}

pub(crate) fn softmax_row(row: &mut [f32]) {
    let inv = exp_shifted_row(row).recip();
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// `row := exp(row − max row)`, returning the sum: softmax without its normalisation, for a
/// caller that can divide later on fewer values.
pub(crate) fn exp_shifted_row(row: &mut [f32]) -> f32 {
    let max = lane_max(row);
    if max == f32::NEG_INFINITY {
        // All −∞ (a fully masked row): burn yields NaN here too; keep it explicit.
        row.fill(f32::NAN);
        return f32::NAN;
    }
    exp_shifted_sum(row, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::Distribution;

    /// Hand-computed: softmax(0, ln 2, ln 3) = (1, 2, 3) / 6; shifting by 1000 does not
    /// overflow (the shifted f32 inputs are rounded to 6e-5, hence the looser check there).
    #[test]
    fn hand_values() {
        let dev = Default::default();
        let x = Tensor::<Flex, 2>::from_floats(
            [
                [0.0, 2f32.ln(), 3f32.ln()],
                [1000.0, 1000.0 + 2f32.ln(), 1000.0 + 3f32.ln()],
            ],
            &dev,
        );
        let y = softmax_last(x).into_data().into_vec::<f32>().unwrap();
        for (i, (got, want)) in y.iter().zip([1.0, 2.0, 3.0, 1.0, 2.0, 3.0]).enumerate() {
            let tol = if i < 3 { 1e-6 } else { 1e-4 };
            assert!((got - want / 6.0).abs() < tol, "{y:?}");
        }
    }

    /// Forward and gradient against float64 on the same f32 inputs:
    /// y = softmax(x), ∂(Σ w·y)/∂x = y ⊙ (w − ⟨w, y⟩) per row.
    #[test]
    fn agrees_with_float64_values_and_gradient() {
        let (rows, n) = (2 * 3 * 17, 29);
        let dev = Default::default();
        let x = Tensor::<Autodiff<Flex>, 4>::random(
            [2, 3, 17, n],
            Distribution::Normal(0.0, 4.0),
            &dev,
        )
        .require_grad();
        let w = Tensor::<Autodiff<Flex>, 4>::random(
            [2, 3, 17, n],
            Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let y = softmax_last(x.clone());
        let g = x.grad(&(y.clone() * w.clone()).sum().backward()).unwrap();
        let f64s = |t: Vec<f32>| t.into_iter().map(f64::from).collect::<Vec<_>>();
        let xs = f64s(x.into_data().into_vec::<f32>().unwrap());
        let ws = f64s(w.into_data().into_vec::<f32>().unwrap());
        let ys = y.into_data().into_vec::<f32>().unwrap();
        let gs = g.into_data().into_vec::<f32>().unwrap();
        for r in 0..rows {
            let xr = &xs[r * n..(r + 1) * n];
            let wr = &ws[r * n..(r + 1) * n];
            let max = xr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = xr.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            let y64: Vec<f64> = e.iter().map(|e| e / sum).collect();
            let dot: f64 = y64.iter().zip(wr).map(|(y, w)| y * w).sum();
            for i in 0..n {
                let (yi, gi) = (ys[r * n + i] as f64, gs[r * n + i] as f64);
                assert!((yi - y64[i]).abs() < 1e-6, "y[{r},{i}] {yi} vs {}", y64[i]);
                let g64 = y64[i] * (wr[i] - dot);
                assert!((gi - g64).abs() < 1e-6, "g[{r},{i}] {gi} vs {g64}");
            }
        }
    }

    /// The gradient against a central difference of the forward (float64 sums).
    #[test]
    fn gradient_matches_finite_differences() {
        let dev = Default::default();
        let xs = [0.3f32, -1.2, 2.0, 0.7, -0.4];
        let ws = [1.0f32, -2.0, 0.5, 3.0, -1.0];
        let loss = |xs: &[f32]| -> f64 {
            let mut v = xs.to_vec();
            softmax_row(&mut v);
            v.iter().zip(ws).map(|(y, w)| (*y as f64) * w as f64).sum()
        };
        let x = Tensor::<Autodiff<Flex>, 1>::from_floats(xs, &dev).require_grad();
        let l = (softmax_last(x.clone()) * Tensor::from_floats(ws, &dev)).sum();
        let g = x
            .grad(&l.backward())
            .unwrap()
            .into_data()
            .into_vec::<f32>()
            .unwrap();
        for i in 0..xs.len() {
            let h = 1e-3;
            let (mut p, mut m) = (xs, xs);
            p[i] += h;
            m[i] -= h;
            let fd = (loss(&p) - loss(&m)) / (2.0 * h as f64);
            assert!((g[i] as f64 - fd).abs() < 1e-3, "d/dx{i}: {} vs {fd}", g[i]);
        }
    }
}
