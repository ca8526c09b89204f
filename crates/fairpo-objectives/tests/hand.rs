//! Hand-worked cases, numerical safety and input errors.

mod common;

use burn::backend::{Autodiff, Flex, NdArray};
use burn::prelude::*;
use common::{bce, inputs, log_sigmoid, softplus, variants};
use fairpo_objectives::{
    compute, compute_with_plan, CaseCounts, Method, ObjectiveConfig, ObjectiveError, PairPlan,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

type B64 = NdArray<f64>;

fn scalar(t: Tensor<B64, 1>) -> f64 {
    t.into_scalar()
}

fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(7)
}

/// T = 2, P = {0}. Row: y = [1, 0], s = [2, -1]: the privileged positive label already scores
/// above the only negative, so S_neg is empty and every FairPO method falls back.
#[test]
fn no_confusing_label_uses_bce_or_lambda_bce() {
    let (s, y, r) = ([2.0, -1.0], [1.0, 0.0], [1.5, -0.5]);
    let p = [true, false];
    for (method, want) in [
        (Method::Dpo, bce(2.0, 1.0)),
        (Method::Simpo, bce(2.0, 1.0)),
        (Method::Cpo, 0.5 * bce(2.0, 1.0)),
    ] {
        let cfg = ObjectiveConfig::new(method);
        let out = compute(&cfg, inputs::<B64>(&s, &y, Some(&r), &p), &mut rng()).unwrap();
        let got = scalar(out.losses.privileged);
        assert!((got - want).abs() < 1e-12, "{method:?}: {got} vs {want}");
        assert_eq!(
            out.diagnostics.positive,
            CaseCounts {
                pairs: 1,
                with_confusing: 0,
                fallback: 1,
                no_loss: 0
            }
        );
        // Without the fallback the pair gives no loss (CPO: no BCE either).
        let cfg = ObjectiveConfig {
            bce_fallback: false,
            ..cfg
        };
        let out = compute(&cfg, inputs::<B64>(&s, &y, Some(&r), &p), &mut rng()).unwrap();
        assert_eq!(scalar(out.losses.privileged), 0.0);
        assert_eq!(out.diagnostics.positive.no_loss, 1);
    }
}

/// Two rows, T = 2, P = {0}, both y = [1, 0]: row 1 (s = [0.5, 1.0]) has S_neg = {1}, row 2
/// (s = [2, -1]) has none. CPO's preference term over all pairs is halved by the pair without a
/// confusing label; the released code's mean (`with_confusing`) is over row 1 alone; the
/// lambda * BCE term is the mean over both rows either way.
#[test]
fn cpo_preference_mean_over_all_pairs_or_pairs_with_a_confusing_label() {
    let (s, y) = ([0.5, 1.0, 2.0, -1.0], [1.0, 0.0, 1.0, 0.0]);
    let p = [true, false];
    let pref = softplus(-0.5 * (log_sigmoid(0.5) - log_sigmoid(1.0)));
    let lam_bce = 0.5 * (bce(0.5, 1.0) + bce(2.0, 1.0)) / 2.0;
    for (mean, want) in [
        (
            fairpo_objectives::CpoPreferenceMean::AllPairs,
            pref / 2.0 + lam_bce,
        ),
        (
            fairpo_objectives::CpoPreferenceMean::WithConfusing,
            pref + lam_bce,
        ),
    ] {
        let cfg = ObjectiveConfig {
            non_privileged_loss: fairpo_objectives::NonPrivilegedLoss::Bce,
            cpo_preference_mean: mean,
            ..ObjectiveConfig::new(Method::Cpo)
        };
        let out = compute(&cfg, inputs::<B64>(&s, &y, None, &p), &mut rng()).unwrap();
        let got = scalar(out.losses.privileged);
        assert!((got - want).abs() < 1e-12, "{mean:?}: {got} vs {want}");
    }
    // No pair with a confusing label: the preference term is 0, the BCE term stays.
    let cfg = ObjectiveConfig {
        non_privileged_loss: fairpo_objectives::NonPrivilegedLoss::Bce,
        cpo_preference_mean: fairpo_objectives::CpoPreferenceMean::WithConfusing,
        ..ObjectiveConfig::new(Method::Cpo)
    };
    let (s, y) = ([2.0, -1.0], [1.0, 0.0]);
    let out = compute(&cfg, inputs::<B64>(&s, &y, None, &p), &mut rng()).unwrap();
    assert!((scalar(out.losses.privileged) - 0.5 * bce(2.0, 1.0)).abs() < 1e-12);
}

/// Same labels, s = [0.5, 1.0]: the negative label 1 outranks the positive privileged label 0,
/// so S_neg = {1}; preferred w = 0, dispreferred d = 1.
#[test]
fn confusing_negative_preference_terms_by_hand() {
    let (s, y, r) = ([0.5, 1.0], [1.0, 0.0], [0.2, 0.4]);
    let p = [true, false];
    let x = log_sigmoid(0.5) - log_sigmoid(1.0);
    let x_ref = log_sigmoid(0.2) - log_sigmoid(0.4);
    let (beta, gamma, lam) = (0.5, 0.1, 0.5);
    for (method, want) in [
        (Method::Dpo, softplus(-beta * (x - x_ref))),
        (Method::Simpo, softplus(-(beta * x - gamma))),
        (Method::Cpo, softplus(-beta * x) + lam * bce(0.5, 1.0)),
    ] {
        let cfg = ObjectiveConfig::new(method);
        let out = compute(&cfg, inputs::<B64>(&s, &y, Some(&r), &p), &mut rng()).unwrap();
        let got = scalar(out.losses.privileged);
        assert!((got - want).abs() < 1e-12, "{method:?}: {got} vs {want}");
        assert_eq!(out.diagnostics.positive.with_confusing, 1);
    }
}

/// y = [0, 1], s = [1.0, 0.5]: the privileged label 0 is a true negative scoring above the
/// positive label 1: S_pos = {1}, preferred w = 1, dispreferred d = 0. With
/// `confusing = "negatives"` the set is ignored and CPO keeps only lambda * BCE.
#[test]
fn confusing_positive_and_negatives_only_switch() {
    let (s, y) = ([1.0, 0.5], [0.0, 1.0]);
    let p = [true, false];
    let cfg = ObjectiveConfig {
        non_privileged_loss: fairpo_objectives::NonPrivilegedLoss::Bce,
        ..ObjectiveConfig::new(Method::Cpo)
    };
    let out = compute(&cfg, inputs::<B64>(&s, &y, None, &p), &mut rng()).unwrap();
    let x = log_sigmoid(0.5) - log_sigmoid(1.0);
    let want = softplus(-0.5 * x) + 0.5 * bce(1.0, 0.0);
    assert!((scalar(out.losses.privileged) - want).abs() < 1e-12);
    assert_eq!(out.diagnostics.negative.with_confusing, 1);
    let cfg = ObjectiveConfig {
        confusing: fairpo_objectives::ConfusingSet::Negatives,
        ..cfg
    };
    let out = compute(&cfg, inputs::<B64>(&s, &y, None, &p), &mut rng()).unwrap();
    assert!((scalar(out.losses.privileged) - 0.5 * bce(1.0, 0.0)).abs() < 1e-12);
    assert_eq!(out.diagnostics.negative.fallback, 1);
}

/// Eq. 17: zero (and no gradient) while the policy's BCE is within epsilon of the reference's,
/// `BCE - BCE_ref - epsilon` beyond.
#[test]
fn hinge_is_zero_within_epsilon() {
    type AD = Autodiff<B64>;
    let p = [false, false];
    let y = [1.0, 0.0];
    let r = [1.0, -1.0];
    let cfg = ObjectiveConfig {
        epsilon: 0.05,
        ..ObjectiveConfig::new(Method::Cpo)
    };
    // Slightly worse than the reference on both labels, by less than epsilon.
    let s = [0.97, -0.97];
    assert!(bce(0.97, 1.0) - bce(1.0, 1.0) < 0.05);
    let inp = inputs::<AD>(&s, &y, Some(&r), &p);
    let logits = inp.logits.clone().require_grad();
    let inp = fairpo_objectives::ObjectiveInputs {
        logits: logits.clone(),
        ..inp
    };
    let out = compute(&cfg, inp, &mut rng()).unwrap();
    assert_eq!(out.losses.non_privileged.clone().into_scalar(), 0.0);
    let g = logits.grad(&out.losses.non_privileged.backward()).unwrap();
    assert!(g.into_data().iter::<f64>().all(|v| v == 0.0));
    // Much worse: hinge = mean over both pairs of BCE - BCE_ref - epsilon.
    let s = [-1.0, 1.0];
    let out = compute(&cfg, inputs::<B64>(&s, &y, Some(&r), &p), &mut rng()).unwrap();
    let want = (bce(-1.0, 1.0) - bce(1.0, 1.0) - 0.05) * 2.0 / 2.0;
    assert!((scalar(out.losses.non_privileged) - want).abs() < 1e-12);
    assert!(out.diagnostics.privileged_empty);
    assert_eq!(scalar(out.losses.privileged), 0.0);
}

/// Baselines: BCE mean, re-weighted normalised by the weight sum, GDRO group means.
#[test]
fn baselines_by_hand() {
    let s = [0.3, -1.2, 2.0, 0.0];
    let y = [1.0, 0.0, 0.0, 1.0];
    let p = [true, false];
    let b: Vec<f64> = s.iter().zip(&y).map(|(&s, &y)| bce(s, y)).collect();
    let out = compute(
        &ObjectiveConfig::new(Method::Bce),
        inputs::<B64>(&s, &y, None, &p),
        &mut rng(),
    )
    .unwrap();
    assert!((scalar(out.total.unwrap()) - b.iter().sum::<f64>() / 4.0).abs() < 1e-12);
    let cfg = ObjectiveConfig {
        lambda_p: 5.0,
        ..ObjectiveConfig::new(Method::Reweighted)
    };
    let out = compute(&cfg, inputs::<B64>(&s, &y, None, &p), &mut rng()).unwrap();
    let want = (5.0 * (b[0] + b[2]) + b[1] + b[3]) / (5.0 * 2.0 + 2.0);
    assert!((scalar(out.total.unwrap()) - want).abs() < 1e-12);
    let out = compute(
        &ObjectiveConfig::new(Method::Gdro),
        inputs::<B64>(&s, &y, None, &p),
        &mut rng(),
    )
    .unwrap();
    assert!(out.total.is_none());
    assert!((scalar(out.losses.privileged.clone()) - (b[0] + b[2]) / 2.0).abs() < 1e-12);
    assert!((scalar(out.losses.non_privileged.clone()) - (b[1] + b[3]) / 2.0).abs() < 1e-12);
    let combined = scalar(out.combine(&[0.25, 0.75]));
    assert!((combined - (0.25 * (b[0] + b[2]) / 2.0 + 0.75 * (b[1] + b[3]) / 2.0)).abs() < 1e-12);
}

/// Logits of ±100 (f32 Flex backend, as in training): every variant gives finite values and
/// gradients, also with empty privileged or non-privileged groups.
#[test]
fn saturated_logits_are_finite_in_f32() {
    type AD = Autodiff<Flex>;
    let (b, t) = (4, 5);
    let s: Vec<f64> = (0..b * t)
        .map(|i| if (i * 7) % 3 == 0 { 100.0 } else { -100.0 })
        .collect();
    let r: Vec<f64> = (0..b * t)
        .map(|i| if (i * 5) % 4 == 0 { -100.0 } else { 100.0 })
        .collect();
    let y: Vec<f64> = (0..b * t).map(|i| f64::from((i * 3 % 5) < 2)).collect();
    for privileged in [
        vec![true, false, true, false, false],
        vec![false; 5],
        vec![true; 5],
    ] {
        for cfg in variants() {
            let inp = inputs::<AD>(&s, &y, Some(&r), &privileged);
            let logits = inp.logits.clone().require_grad();
            let inp = fairpo_objectives::ObjectiveInputs {
                logits: logits.clone(),
                ..inp
            };
            let out = compute(&cfg, inp, &mut rng()).unwrap();
            let loss = out.combine(&[0.5, 0.5])
                + out.losses.privileged.clone()
                + out.losses.non_privileged.clone();
            let v: f32 = loss.clone().into_scalar();
            assert!(v.is_finite(), "{cfg:?} {privileged:?}: loss {v}");
            let g = logits.grad(&loss.backward()).unwrap();
            assert!(
                g.into_data().iter::<f32>().all(f32::is_finite),
                "{cfg:?} {privileged:?}: gradient not finite"
            );
            if cfg.label_sampling == fairpo_objectives::LabelSampling::All {
                let p_empty = !privileged.contains(&true);
                let np_empty = !privileged.contains(&false);
                assert_eq!(out.diagnostics.privileged_empty, p_empty);
                assert_eq!(out.diagnostics.non_privileged_empty, np_empty);
            }
        }
    }
    // A wrong-sign logit of 100 has BCE exactly 100 (no overflow to inf, no rounding to 0).
    let out = compute(
        &ObjectiveConfig::new(Method::Bce),
        inputs::<Flex>(&[100.0, -100.0], &[0.0, 1.0], None, &[true, false]),
        &mut rng(),
    )
    .unwrap();
    let v: f32 = out.total.unwrap().into_scalar();
    assert!((v - 100.0).abs() < 1e-4, "{v}");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let p = [true, false];
    let cfg = ObjectiveConfig::new(Method::Dpo);
    let err = compute(
        &cfg,
        inputs::<B64>(&[0.0, 1.0], &[1.0, 0.0], None, &p),
        &mut rng(),
    )
    .unwrap_err();
    assert!(matches!(err, ObjectiveError::MissingReference(_)), "{err}");
    assert!(err.to_string().contains("reference"));
    let err = compute(
        &cfg,
        inputs::<B64>(&[0.0, 1.0], &[1.0, 0.5], Some(&[0.0, 0.0]), &p),
        &mut rng(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        ObjectiveError::InvalidTarget {
            row: 0,
            label: 1,
            value: 0.5
        }
    );
    let err = compute(
        &cfg,
        inputs::<B64>(&[f64::NAN, 1.0], &[1.0, 0.0], Some(&[0.0, 0.0]), &p),
        &mut rng(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("logits at row 0, label 0"),
        "{err}"
    );
    let mut inp = inputs::<B64>(&[0.0, 1.0], &[1.0, 0.0], Some(&[0.0, 0.0]), &p);
    inp.privileged = &[true];
    let err = compute(&cfg, inp, &mut rng()).unwrap_err();
    assert!(err.to_string().contains("privileged mask"), "{err}");
    // CPO with the hinge needs the reference too; CPO with a BCE constraint does not.
    let cpo = ObjectiveConfig::new(Method::Cpo);
    assert!(compute(
        &cpo,
        inputs::<B64>(&[0.0, 1.0], &[1.0, 0.0], None, &p),
        &mut rng()
    )
    .is_err());
    let cpo_bce = ObjectiveConfig {
        non_privileged_loss: fairpo_objectives::NonPrivilegedLoss::Bce,
        ..cpo
    };
    assert!(compute(
        &cpo_bce,
        inputs::<B64>(&[0.0, 1.0], &[1.0, 0.0], None, &p),
        &mut rng()
    )
    .is_ok());
    // An explicit plan naming a label outside the candidate set is rejected.
    let plan = PairPlan {
        sampled_labels: None,
        confusing: vec![Some(0), None],
    };
    let err = compute_with_plan(
        &cpo_bce,
        inputs::<B64>(&[0.0, 1.0], &[1.0, 0.0], None, &p),
        &plan,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("not in the candidate set [1]"),
        "{err}"
    );
    // Config ranges.
    let bad = ObjectiveConfig {
        beta: 0.0,
        ..cpo_bce.clone()
    };
    assert!(bad.validate().unwrap_err().to_string().contains("beta"));
    let bad = ObjectiveConfig {
        global: true,
        ..ObjectiveConfig::new(Method::Bce)
    };
    assert!(bad.validate().unwrap_err().to_string().contains("global"));
}

#[test]
fn toml_objective_table() {
    let cfg: ObjectiveConfig =
        toml::from_str("method = \"simpo\"\ngamma = 0.2\nlabel_sampling = \"one\"").unwrap();
    assert_eq!(cfg.method, Method::Simpo);
    assert_eq!(cfg.gamma, 0.2);
    assert_eq!(cfg.beta, 0.5);
    assert_eq!(
        toml::from_str::<ObjectiveConfig>("").unwrap(),
        ObjectiveConfig::default()
    );
    let err = toml::from_str::<ObjectiveConfig>("methd = \"cpo\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("methd"), "{err}");
    assert!(toml::from_str::<ObjectiveConfig>("method = \"ppo\"").is_err());
}
