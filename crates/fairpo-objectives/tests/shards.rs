//! Data-parallel decomposition: a batch cut into shards, each shard evaluated with the counts
//! summed over all shards ([`Prepared::evaluate`]), gives group losses, totals and logit
//! gradients that add up to the whole batch's (f64, 1e-12). The whole batch's values are the
//! ones the hand, finite-difference and PyTorch tests check.

mod common;

use burn::backend::{Autodiff, NdArray};
use burn::prelude::*;
use common::{inputs, variants};
use fairpo_objectives::{host_batch, prepare_with_plan, Counts, ObjectiveInputs, PairPlan};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type AD = Autodiff<NdArray<f64>>;

/// Rows `rows` of a plan for a batch with `t` labels.
fn plan_rows(plan: &PairPlan, rows: std::ops::Range<usize>, t: usize) -> PairPlan {
    PairPlan {
        sampled_labels: plan
            .sampled_labels
            .as_ref()
            .map(|s| s[rows.clone()].to_vec()),
        confusing: plan.confusing[rows.start * t..rows.end * t].to_vec(),
    }
}

/// `[L_P, L_P̄, total]` and d(L_P + L_P̄ + total)/d logits of one evaluation.
fn evaluate(
    cfg: &fairpo_objectives::ObjectiveConfig,
    s: &[f64],
    y: &[f64],
    r: &[f64],
    privileged: &[bool],
    plan: &PairPlan,
    counts: Option<Counts>,
) -> ([f64; 3], Vec<f64>, Counts) {
    let inp = inputs::<AD>(s, y, Some(r), privileged);
    let logits = inp.logits.clone().require_grad();
    let prepared = prepare_with_plan(
        cfg,
        ObjectiveInputs {
            logits: logits.clone(),
            ..inp
        },
        plan,
    )
    .unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
    let local = prepared.counts();
    let out = prepared.evaluate(&counts.unwrap_or(local));
    let total = out
        .total
        .clone()
        .unwrap_or_else(|| Tensor::zeros([1], &Default::default()));
    let values = [
        out.losses.privileged.clone().into_scalar(),
        out.losses.non_privileged.clone().into_scalar(),
        total.clone().into_scalar(),
    ];
    let sum = out.losses.privileged + out.losses.non_privileged + total;
    let grad = logits
        .grad(&sum.backward())
        .map(|g| g.into_data().iter::<f64>().collect())
        .unwrap_or_else(|| vec![0.0; s.len()]);
    (values, grad, local)
}

#[test]
fn shards_with_summed_counts_add_up_to_the_whole_batch() {
    let (b, t) = (7, 5);
    let privileged = [true, false, true, false, false];
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let s: Vec<f64> = (0..b * t).map(|_| rng.random_range(-3.0..3.0)).collect();
    let r: Vec<f64> = s.iter().map(|v| v + rng.random_range(-1.0..1.0)).collect();
    let y: Vec<f64> = (0..b * t)
        .map(|_| f64::from(rng.random_bool(0.4)))
        .collect();
    // Uneven shards, as the last batch of an epoch gives.
    let cuts = [0..3, 3..7];
    for cfg in variants() {
        let host = host_batch::<AD>(&common::tensor(&s, b, t), &common::tensor(&y, b, t)).unwrap();
        let plan = PairPlan::sample(&cfg, &host, &privileged, &mut rng);
        let (whole, whole_grad, whole_counts) =
            evaluate(&cfg, &s, &y, &r, &privileged, &plan, None);
        let shard = |rows: &std::ops::Range<usize>| {
            (
                s[rows.start * t..rows.end * t].to_vec(),
                y[rows.start * t..rows.end * t].to_vec(),
                r[rows.start * t..rows.end * t].to_vec(),
                plan_rows(&plan, rows.clone(), t),
            )
        };
        // The shards' own counts sum to the whole batch's.
        let mut summed = [0.0; 4];
        for rows in &cuts {
            let (s, y, r, p) = shard(rows);
            let c = evaluate(&cfg, &s, &y, &r, &privileged, &p, None).2;
            for (a, v) in summed.iter_mut().zip(c.to_array()) {
                *a += v;
            }
        }
        assert_eq!(Counts::from_array(summed), whole_counts, "{cfg:?}");
        let mut values = [0.0; 3];
        let mut grad = Vec::new();
        for rows in &cuts {
            let (s, y, r, p) = shard(rows);
            let (v, g, _) = evaluate(&cfg, &s, &y, &r, &privileged, &p, Some(whole_counts));
            for (a, v) in values.iter_mut().zip(v) {
                *a += v;
            }
            grad.extend(g);
        }
        for (k, (got, want)) in values.iter().zip(whole).enumerate() {
            assert!(
                (got - want).abs() < 1e-12,
                "{cfg:?}: value {k}: shards {got} vs batch {want}"
            );
        }
        for (p, (got, want)) in grad.iter().zip(&whole_grad).enumerate() {
            assert!(
                (got - want).abs() < 1e-12,
                "{cfg:?}: gradient at {p}: shards {got} vs batch {want}"
            );
        }
    }
}
