//! Helpers shared by the integration tests.
#![allow(dead_code)]

use burn::prelude::*;
use fairpo_objectives::{ObjectiveConfig, ObjectiveInputs};

/// A `[b, t]` tensor from row-major values.
pub(crate) fn tensor<B: Backend>(values: &[f64], b: usize, t: usize) -> Tensor<B, 2> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), [b, t]),
        &Default::default(),
    )
}

/// Inputs with the given values; reference optional.
pub(crate) fn inputs<'a, B: Backend>(
    s: &[f64],
    y: &[f64],
    reference: Option<&[f64]>,
    privileged: &'a [bool],
) -> ObjectiveInputs<'a, B> {
    let t = privileged.len();
    let b = s.len() / t;
    ObjectiveInputs {
        logits: tensor(s, b, t),
        targets: tensor(y, b, t),
        privileged,
        reference: reference.map(|r| tensor(r, b, t)),
    }
}

/// `ln(1 + e^x)` in plain f64 (hand formulas).
pub(crate) fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// `log sigmoid(x)`.
pub(crate) fn log_sigmoid(x: f64) -> f64 {
    -softplus(-x)
}

/// BCE of logit s against y.
pub(crate) fn bce(s: f64, y: f64) -> f64 {
    y * softplus(-s) + (1.0 - y) * softplus(s)
}

/// Every method and ablation variant (same list as the reference script).
pub(crate) fn variants() -> Vec<ObjectiveConfig> {
    let t = |s: &str| toml::from_str::<ObjectiveConfig>(s).expect(s);
    vec![
        t("method = \"bce\""),
        t("method = \"reweighted\"\nlambda_p = 3.0"),
        t("method = \"gdro\""),
        t("method = \"dpo\"\nbeta = 0.7\nepsilon = 0.05"),
        t("method = \"simpo\"\nbeta = 0.7\ngamma = 0.3"),
        t("method = \"cpo\"\nbeta = 0.7\nlambda_cpo = 0.4"),
        t("privileged_loss = \"bce\""),
        t("non_privileged_loss = \"bce\""),
        t("global = true"),
        t("confusing = \"negatives\""),
        t("bce_fallback = false"),
        t("method = \"dpo\"\nbce_fallback = false"),
        t("method = \"simpo\"\nconfusing = \"negatives\""),
        t("method = \"dpo\"\nlabel_sampling = \"one\""),
        t("label_sampling = \"one\""),
    ]
}
