//! Exact (erf) GELU with a fast CPU kernel (see `dispatch.rs`).
//!
//! burn-flex's GELU (libm `erff`, one element at a time) was a large part of an encoder
//! layer's forward (`bench_vit_ops` measures both). This kernel uses Abramowitz & Stegun 7.1.26 for
//! erfc(|x|/√2) (absolute error ≤ 1.5e-7) and a Cody–Waite range-reduced exp; for x < 0 it
//! forms `0.5·x·erfc(|x|/√2)` directly, so the negative tail has no cancellation. Tested
//! against float64 values of GELU and its derivative to 1e-6.

use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::dispatch::{apply, HostOp};
use super::lanes::{exp_nonpositive, CHUNK};

/// `0.5·x·(1 + erf(x/√2))`, elementwise.
///
/// # Shapes
/// - x: any
/// - output: same as `x`
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    apply::<Gelu, B, D>(x, generic_gelu)
}

/// GELU on any other backend. burn 0.21's default `gelu_backward`, which every backend but
/// Flex uses (CUDA included), is the derivative of the tanh approximation, not of the exact
/// GELU its forward computes (off by up to 3e-4). Under autodiff the GELU is therefore built
/// from ops whose backward is exact; without autodiff burn's own op runs.
fn generic_gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if B::ad_enabled(&x.device()) {
        let one_plus_erf = (x.clone() * std::f32::consts::FRAC_1_SQRT_2).erf() + 1.0;
        x * one_plus_erf * 0.5
    } else {
        activation::gelu(x)
    }
}

#[derive(Debug)]
struct Gelu;

impl HostOp for Gelu {
    const SAVES_INPUT: bool = true;

    fn forward(values: &mut [f32], _: usize) {
        gelu_in_place(values);
    }

    fn backward(x: &[f32], grad: &mut [f32], _: usize) {
        grad.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(g, x)| {
                for (g, &x) in g.iter_mut().zip(x) {
                    *g *= gelu_derivative_f32(x);
                }
            });
    }
}

/// Applies [`gelu_f32`] to every element, in parallel chunks.
pub fn gelu_in_place(values: &mut [f32]) {
    values.par_chunks_mut(CHUNK).for_each(|chunk| {
        for v in chunk {
            *v = gelu_f32(*v);
        }
    });
}

/// Exact GELU of one f32, branch-free so that loops over it vectorise.
#[inline(always)]
pub fn gelu_f32(x: f32) -> f32 {
    let (erfc, _) = erfc_and_gauss(x);
    // 1 + erf(x/√2) is 2 − erfc(|x|/√2) for x ≥ 0 and erfc(|x|/√2) for x < 0.
    let one_plus_erf = if x < 0.0 { erfc } else { 2.0 - erfc };
    0.5 * x * one_plus_erf
}

/// d/dx GELU(x) = Φ(x) + x·φ(x).
#[inline(always)]
pub fn gelu_derivative_f32(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let (erfc, gauss) = erfc_and_gauss(x);
    let cdf = if x < 0.0 {
        0.5 * erfc
    } else {
        1.0 - 0.5 * erfc
    };
    cdf + x * INV_SQRT_2PI * gauss
}

/// `(erfc(|x|/√2), e^(−x²/2))`.
#[inline(always)]
fn erfc_and_gauss(x: f32) -> (f32, f32) {
    // A&S 7.1.26: erfc(a) ≈ t·(a1 + t·(a2 + t·(a3 + t·(a4 + t·a5))))·e^(−a²), t = 1/(1 + p·a).
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_8;
    const A4: f32 = -1.453_152_1;
    const A5: f32 = 1.061_405_4;
    let a = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5))));
    let gauss = exp_nonpositive(-a * a);
    (poly * gauss, gauss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex, NdArray};
    use burn::tensor::Distribution;

    #[test]
    fn matches_reference_values() {
        // (x, 0.5·x·erfc(−x/√2)), computed with Python's float64 math.erfc.
        let table: [(f32, f64); 9] = [
            (0.0, 0.0),
            (1.0, 0.841_344_746_068_542_9),
            (-1.0, -0.158_655_253_931_457_05),
            (0.5, 0.345_731_230_637_006_56),
            (-0.5, -0.154_268_769_362_993_44),
            (2.5, 2.484_475_836_685_559_7),
            (-2.5, -0.015_524_163_314_440_348),
            (-6.0, -5.919_525_870_226_207e-9),
            (8.0, 8.0),
        ];
        for (x, want) in table {
            let got = gelu_f32(x) as f64;
            assert!((got - want).abs() < 1e-6, "gelu({x}) = {got}, want {want}");
        }
        assert!(gelu_f32(-100.0).abs() < 1e-30);
        assert_eq!(gelu_f32(100.0), 100.0);
    }

    /// Against float64 values of Φ(x) + x·φ(x) from Python's math.erfc/math.exp, and a
    /// central difference of [`gelu_f32`]. (burn 0.21's own `gelu_backward` on NdArray is
    /// off by up to 3e-4 here, e.g. −0.10790 at x = −1.1258 where the exact value is −0.10820.)
    #[test]
    fn derivative_matches() {
        let table: [(f32, f64); 10] = [
            (0.0, 0.5),
            (1.0, 1.083_315_470_587_686_4),
            (-1.0, -0.083_315_470_587_686_29),
            (0.5, 0.867_495_124_656_162_9),
            (-0.5, 0.132_504_875_343_837_12),
            (2.5, 1.037_611_085_908_145),
            (-2.5, -0.037_611_085_908_145_214),
            (-1.125_836_6, -0.108_196_653_718_189_32),
            (-6.0, -3.546_870_945_390_201_5e-8),
            (8.0, 1.0),
        ];
        for (x, want) in table {
            let got = gelu_derivative_f32(x) as f64;
            assert!((got - want).abs() < 1e-6, "gelu'({x}) = {got}, want {want}");
        }
        let mut x = -8.0f64;
        while x < 8.0 {
            let h = 1e-2;
            let fd =
                (gelu_f32((x + h) as f32) as f64 - gelu_f32((x - h) as f32) as f64) / (2.0 * h);
            let got = gelu_derivative_f32(x as f32) as f64;
            assert!(
                (got - fd).abs() < 1e-3,
                "gelu'({x}) = {got}, central difference {fd}"
            );
            x += 0.0173;
        }
    }

    /// Under `Autodiff<Flex>` the fast path records its own backward op: the gradient of
    /// Σ w·gelu(1.5·x) is 1.5·w·gelu'(1.5·x) elementwise.
    #[test]
    fn autodiff_fast_path_gradient() {
        type AF = Autodiff<Flex>;
        let dev = Default::default();
        let x = Tensor::<AF, 3>::random([3, 11, 65], Distribution::Normal(0.0, 2.0), &dev)
            .require_grad();
        let w = Tensor::<AF, 3>::random([3, 11, 65], Distribution::Normal(0.0, 1.0), &dev);
        let y = gelu(x.clone() * 1.5) * w.clone();
        let grad = x.grad(&y.clone().sum().backward()).unwrap();

        let xs = x.into_data().into_vec::<f32>().unwrap();
        let ws = w.into_data().into_vec::<f32>().unwrap();
        let ys = y.into_data().into_vec::<f32>().unwrap();
        let gs = grad.into_data().into_vec::<f32>().unwrap();
        for i in 0..xs.len() {
            let u = 1.5 * xs[i];
            assert!((ys[i] - ws[i] * gelu_f32(u)).abs() < 1e-5);
            let want = 1.5 * ws[i] * gelu_derivative_f32(u);
            assert!(
                (gs[i] - want).abs() < 1e-5,
                "grad[{i}] = {}, want {want}",
                gs[i]
            );
        }
    }

    /// On other backends under autodiff the gradient is the exact GELU's, not burn's
    /// tanh-approximation derivative.
    #[test]
    fn generic_path_gradient_is_exact() {
        type AN = Autodiff<NdArray>;
        let dev = Default::default();
        let xs: Vec<f32> = (0..161).map(|i| -8.0 + 0.1 * i as f32).collect();
        let x = Tensor::<AN, 1>::from_floats(xs.as_slice(), &dev).require_grad();
        let grad = x.grad(&gelu(x.clone()).sum().backward()).unwrap();
        let gs = grad.into_data().into_vec::<f32>().unwrap();
        for (x, g) in xs.iter().zip(&gs) {
            let want = gelu_derivative_f32(*x);
            assert!((g - want).abs() < 1e-6, "gelu'({x}) = {g}, want {want}");
        }
        // The value the table above holds for x = -1.1258366: burn's own op misses it.
        let x = Tensor::<AN, 1>::from_floats([-1.125_836_6f32], &dev).require_grad();
        let burns = x
            .grad(&activation::gelu(x.clone()).sum().backward())
            .unwrap();
        let burns: f32 = burns.into_scalar();
        assert!(
            (burns as f64 + 0.108_196_653_718_189_32).abs() > 1e-4,
            "{burns}"
        );
        let ours = x.grad(&gelu(x.clone()).sum().backward()).unwrap();
        let ours: f32 = ours.into_scalar();
        assert!(
            (ours as f64 + 0.108_196_653_718_189_32).abs() < 1e-6,
            "{ours}"
        );
    }

    /// The Flex fast path and NdArray's libm-based gelu agree on a dense grid.
    #[test]
    fn fast_path_agrees_with_burn_gelu() {
        let x = Tensor::<NdArray, 2>::random(
            [64, 257],
            Distribution::Normal(0.0, 3.0),
            &Default::default(),
        );
        let want = activation::gelu(x.clone()).into_data();
        let xf = Tensor::<Flex, 2>::from_data(x.into_data(), &Default::default());
        let got = gelu(xf).into_data();
        got.assert_approx_eq::<f32>(&want, burn::tensor::Tolerance::absolute(1e-6));
    }
}
