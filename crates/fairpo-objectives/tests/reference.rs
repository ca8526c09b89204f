//! Every loss and its gradient w.r.t. the logits against the independent PyTorch float64
//! reference `scripts/fixtures/objectives_reference.py` (fixture committed beside this file),
//! with the reference's own confusing-label choices. Tolerance 1e-5 absolute + relative: both
//! sides are float64, the only differences are summation order and log-sigmoid formulas
//! (~1e-13), so 1e-5 is loose and still catches any wrong term (the smallest terms are
//! lambda * BCE contributions of order 1e-2 or more).

use burn::backend::{Autodiff, NdArray};
use burn::prelude::*;
use fairpo_objectives::{compute_with_plan, ObjectiveConfig, ObjectiveInputs, PairPlan};
use serde::Deserialize;

type AD = Autodiff<NdArray<f64>>;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    logits: Vec<Vec<f64>>,
    reference: Vec<Vec<f64>>,
    targets: Vec<Vec<u8>>,
    privileged: Vec<bool>,
    variants: Vec<Variant>,
}

#[derive(Deserialize)]
struct Variant {
    config: ObjectiveConfig,
    plan: PairPlan,
    privileged: f64,
    non_privileged: f64,
    total: Option<f64>,
    grad_privileged: Vec<Vec<f64>>,
    grad_non_privileged: Vec<Vec<f64>>,
    grad_total: Option<Vec<Vec<f64>>>,
}

fn tensor(rows: &[Vec<f64>]) -> Tensor<AD, 2> {
    let (b, t) = (rows.len(), rows[0].len());
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [b, t]), &Default::default())
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-5 * (1.0 + want.abs())
}

#[test]
fn losses_and_gradients_match_pytorch_reference() {
    let text = include_str!("fixtures/objectives_reference.json");
    let fixture: Fixture = serde_json::from_str(text).expect("fixture parses");
    let mut compared = 0;
    for case in &fixture.cases {
        let targets: Vec<Vec<f64>> = case
            .targets
            .iter()
            .map(|r| r.iter().map(|&v| f64::from(v)).collect())
            .collect();
        for v in &case.variants {
            let ctx = format!("case {} config {:?}", case.name, v.config);
            // One forward per output so each backward has its own graph.
            for which in ["privileged", "non_privileged", "total"] {
                let logits = tensor(&case.logits).require_grad();
                let out = compute_with_plan(
                    &v.config,
                    ObjectiveInputs {
                        logits: logits.clone(),
                        targets: tensor(&targets),
                        privileged: &case.privileged,
                        reference: Some(tensor(&case.reference)),
                    },
                    &v.plan,
                )
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                let (loss, want, want_grad) = match which {
                    "privileged" => (
                        Some(out.losses.privileged),
                        Some(v.privileged),
                        Some(&v.grad_privileged),
                    ),
                    "non_privileged" => (
                        Some(out.losses.non_privileged),
                        Some(v.non_privileged),
                        Some(&v.grad_non_privileged),
                    ),
                    _ => (out.total, v.total, v.grad_total.as_ref()),
                };
                let (loss, want, want_grad) = match (loss, want, want_grad) {
                    (Some(l), Some(w), Some(g)) => (l, w, g),
                    (None, None, None) => continue,
                    (l, w, _) => panic!(
                        "{ctx}: {which}: rust has it: {}, reference has it: {}",
                        l.is_some(),
                        w.is_some()
                    ),
                };
                let got = loss.clone().into_scalar();
                assert!(got.is_finite(), "{ctx}: {which} not finite");
                assert!(close(got, want), "{ctx}: {which} = {got}, reference {want}");
                let grads = loss.backward();
                let g: Vec<f64> = match logits.grad(&grads) {
                    Some(g) => g.into_data().iter::<f64>().collect(),
                    None => vec![0.0; case.logits.len() * case.logits[0].len()],
                };
                let want_flat: Vec<f64> = want_grad.iter().flatten().copied().collect();
                for (p, (a, b)) in g.iter().zip(&want_flat).enumerate() {
                    assert!(a.is_finite(), "{ctx}: {which} grad[{p}] not finite");
                    assert!(
                        close(*a, *b),
                        "{ctx}: d{which}/ds[{p}] = {a}, reference {b}"
                    );
                }
                compared += 1;
            }
        }
    }
    // 6 cases x (16 variants x 2 group losses + 4 variants with a total: bce, rw x2, global).
    assert_eq!(compared, 6 * (16 * 2 + 4));
}
