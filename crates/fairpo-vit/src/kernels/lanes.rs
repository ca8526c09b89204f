//! Lane-parallel reductions and a branch-free `exp`, the inner loops of GELU, softmax and
//! layer norm on the host.

/// Elements per parallel task: enough to amortise rayon, small enough to balance.
pub(crate) const CHUNK: usize = 1 << 14;

/// Independent accumulators for reductions: a single running f32 sum or max is a serial
/// dependency the compiler may not reorder (it would change rounding), so it stays scalar;
/// `LANES` of them vectorise.
const LANES: usize = 16;

/// Σ f(x_i) over `x`, accumulated in `LANES` partial sums.
#[inline(always)]
pub(crate) fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().map(|&v| f(v)).sum::<f32>()
}

/// ⟨a, b⟩, accumulated in `LANES` partial sums.
#[inline(always)]
pub(crate) fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// max x (−∞ for an empty slice; NaNs are skipped, as by `f32::max`).
#[inline(always)]
pub(crate) fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    let m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    chunks.remainder().iter().copied().fold(m, f32::max)
}

/// `x_i := exp(x_i − shift)` for x_i ≤ shift, returning Σ of the new values.
#[inline(always)]
pub(crate) fn exp_shifted_sum(x: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *v = exp_nonpositive(*v - shift);
            *a += *v;
        }
    }
    let mut tail = 0.0;
    for v in chunks.into_remainder() {
        *v = exp_nonpositive(*v - shift);
        tail += *v;
    }
    acc.iter().sum::<f32>() + tail
}

/// e^y for y ≤ 0 (y below −87 gives ~0), relative error ~1e-7; branch-free.
#[inline(always)]
pub(crate) fn exp_nonpositive(y: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5·2^23: adding it rounds to the nearest integer, which lands in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let y = y.max(-87.0);
    let k = y * std::f32::consts::LOG2_E + ROUND;
    let n = k - ROUND;
    // |r| ≤ ln2/2; Taylor to r^7 then has a truncation error < 4e-9 relative.
    let r = (y - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    // 2^n for n in [−126, 0]: the biased exponent n + 127 placed in the exponent field.
    // (Wrapping ops: no overflow check in the loop, which would stop it vectorising.)
    let n_int = (k.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let scale = f32::from_bits((n_int.wrapping_add(127) as u32) << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lane reductions against plain f64 sums, on lengths around the lane count.
    #[test]
    fn lane_reductions() {
        for n in [0, 1, 15, 16, 17, 40, 197] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 23) as f32 * 0.37 - 3.0)
                .collect();
            let y: Vec<f32> = (0..n)
                .map(|i| ((i * 104_729) % 19) as f32 * 0.11 - 1.0)
                .collect();
            let sum: f64 = x.iter().map(|&v| f64::from(v) * 2.0).sum();
            let dot: f64 = x
                .iter()
                .zip(&y)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert!(
                (f64::from(lane_sum(&x, |v| v * 2.0)) - sum).abs() < 1e-4,
                "n={n}"
            );
            assert!((f64::from(lane_dot(&x, &y)) - dot).abs() < 1e-4, "n={n}");
            assert_eq!(lane_max(&x), max, "n={n}");
            let mut e = x.clone();
            let total = exp_shifted_sum(&mut e, 5.0);
            let want: f64 = x.iter().map(|&v| (f64::from(v) - 5.0).exp()).sum();
            assert!(
                (f64::from(total) - want).abs() < 1e-5 * want.max(1.0),
                "n={n}"
            );
            for (got, v) in e.iter().zip(&x) {
                assert!((f64::from(*got) - (f64::from(*v) - 5.0).exp()).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn exp_matches_std() {
        let mut y = -87.0f32;
        while y <= 0.0 {
            let got = exp_nonpositive(y);
            let want = y.exp();
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "exp({y}) = {got}, want {want}"
            );
            y += 0.0137;
        }
    }
}
