//! Autodiff vs central finite differences for every loss w.r.t. the logits (f64 NdArray).
//!
//! The plan (confusing labels, sampled labels) is drawn once and reused for the perturbed
//! logits; the logits are spread so that no perturbation of h = 1e-6 reorders two labels or
//! crosses a hinge kink (checked: the plan stays valid). Tolerance 1e-6 (abs + rel): FD error is
//! O(h^2) ~ 1e-12 plus round-off ~1e-10.

mod common;

use burn::backend::{Autodiff, NdArray};
use common::{inputs, variants};
use fairpo_objectives::{compute_with_plan, host_batch, ObjectiveInputs, PairPlan};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type AD = Autodiff<NdArray<f64>>;

#[test]
fn every_loss_matches_finite_differences() {
    let (b, t) = (4, 6);
    let privileged = [true, false, false, true, false, true];
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // Distinct, well-separated logits: a shuffled grid with jitter.
    let s: Vec<f64> = (0..b * t)
        .map(|i| (i as f64 * 0.37) % 5.0 - 2.5 + rng.random_range(0.0..0.01))
        .collect();
    let r: Vec<f64> = s.iter().map(|v| v + rng.random_range(-1.0..1.0)).collect();
    let y: Vec<f64> = (0..b * t)
        .map(|_| f64::from(rng.random_bool(0.4)))
        .collect();
    let mut checked = 0;
    for cfg in variants() {
        let host = host_batch::<AD>(&common::tensor(&s, b, t), &common::tensor(&y, b, t)).unwrap();
        let plan = PairPlan::sample(&cfg, &host, &privileged, &mut rng);
        for which in 0..3 {
            let eval = |s: &[f64]| -> Option<(f64, Option<Vec<f64>>)> {
                let inp = inputs::<AD>(s, &y, Some(&r), &privileged);
                let logits = inp.logits.clone().require_grad();
                let out = compute_with_plan(
                    &cfg,
                    ObjectiveInputs {
                        logits: logits.clone(),
                        ..inp
                    },
                    &plan,
                )
                .unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
                let loss = match which {
                    0 => out.losses.privileged,
                    1 => out.losses.non_privileged,
                    _ => out.total?,
                };
                let v = loss.clone().into_scalar();
                let g = logits
                    .grad(&loss.backward())
                    .map(|g| g.into_data().iter::<f64>().collect());
                Some((v, g))
            };
            let Some((_, grad)) = eval(&s) else { continue };
            let grad = grad.unwrap_or_else(|| vec![0.0; b * t]);
            let h = 1e-6;
            for p in 0..b * t {
                let mut plus = s.clone();
                plus[p] += h;
                let mut minus = s.clone();
                minus[p] -= h;
                let fd = (eval(&plus).unwrap().0 - eval(&minus).unwrap().0) / (2.0 * h);
                assert!(
                    (fd - grad[p]).abs() <= 1e-6 * (1.0 + fd.abs()),
                    "{cfg:?} loss #{which} d/ds[{p}]: fd {fd} vs autodiff {}",
                    grad[p]
                );
            }
            checked += 1;
        }
    }
    // 15 variants x 2 group losses + 3 with a total (bce, reweighted, global).
    assert_eq!(checked, 15 * 2 + 3);
}
