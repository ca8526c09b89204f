//! Every loss of the FairPO paper, batched over all (instance, label) pairs.
//!
//! [`ObjectiveConfig`] (the trainer's `[objective]` table) picks the method and switches;
//! [`compute`] turns logits `s [B,T]`, targets `y [B,T]`, the privileged mask and (when needed)
//! reference logits `s_ref [B,T]` into two group losses (scalar tensors carrying the graph),
//! an optional `total` for methods that are not group-weighted, and [`Diagnostics`].
//!
//! Formulas (all in log space, `log m = log_sigmoid(s)`, `log(1-m) = log_sigmoid(-s)`,
//! `softplus(x) = -log_sigmoid(-x)`; finite for any finite logits, tested at ±100):
//! - `BCE(s, y) = -(y log m + (1-y) log(1-m))`.
//! - Preference pairs: (i, l) with l privileged (every l under `global`). With confusing label k
//!   drawn from S_neg (y=1: w=l, d=k) or S_pos (y=0: w=k, d=l), `x = log m[w] - log m[d]`:
//!   DPO `softplus(-beta (x - x_ref))` (Eq. 8/9), SimPO `softplus(-(beta x - gamma))` (Eq. 12),
//!   CPO `softplus(-beta x)` (Eq. 13).
//! - Per privileged pair (Eq. 11/14): DPO, SimPO: the preference term if the set is non-empty,
//!   else BCE (fallback); CPO: the preference term if non-empty, plus `lambda_cpo * BCE`.
//!   With `bce_fallback = false` a pair with an empty set contributes 0 (CPO: no BCE either).
//!   `cpo_preference_mean = "with_confusing"` averages CPO's preference term over the pairs
//!   that have a confusing label only (the released code), its BCE term over all of them.
//! - Non-privileged (Eq. 17): `max(0, BCE(s) - BCE(s_ref) - epsilon)`.
//! - L_P, L_P-bar = means over the group's pairs; an empty group gives a 0 loss (reported in
//!   the diagnostics), never a division by zero.
//! - Baselines: BCE-SFT `total` = mean BCE over all pairs; re-weighted `total` =
//!   `sum w_t BCE / sum w_t` over the pairs (w = lambda_p on P, 1 on P-bar); GDRO: the two
//!   group mean BCEs, combined by the caller with GDRO weights.
//!
//! Randomness: the confusing labels (and, for `label_sampling = "one"`, the label per instance)
//! are drawn on the host from the detached logits by [`PairPlan::sample`] with the caller's RNG
//! (any `rand::Rng`; the trainer seeds a fresh `rand_chacha::ChaCha8Rng` from (seed, step) for
//! every step, so a resumed run draws what an uninterrupted one would). Tests and reference
//! fixtures pass explicit choices through [`compute_with_plan`].
//!
//! Data parallelism: [`prepare`] draws the choices and gives the batch's [`Counts`] (the
//! denominators of every mean); a replica evaluates its shard with the counts summed over all
//! shards, and the replicas' losses then add up to the global batch's.

mod config;
mod plan;

pub use config::{
    ConfusingSet, CpoPreferenceMean, LabelSampling, Method, NonPrivilegedLoss, ObjectiveConfig,
    PrivilegedLoss,
};
pub use plan::{HostBatch, PairPlan};

use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, relu};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Bad inputs to an objective.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ObjectiveError {
    /// A config field is out of range or a switch does not apply.
    #[error("objective: invalid `{field}`: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What was expected.
        reason: String,
    },
    /// Two inputs disagree in shape.
    #[error("objective: {what} has shape {got:?}, expected {expected:?}")]
    Shape {
        /// Which input.
        what: &'static str,
        /// Expected shape.
        expected: Vec<usize>,
        /// Actual shape.
        got: Vec<usize>,
    },
    /// The method needs reference logits and none were given.
    #[error("objective: {0} needs reference logits (a finished BCE-SFT run as `reference`), none were given")]
    MissingReference(String),
    /// A target is not 0 or 1.
    #[error("objective: target at row {row}, label {label} is {value}, expected 0 or 1")]
    InvalidTarget {
        /// Batch row.
        row: usize,
        /// Label index.
        label: usize,
        /// The value found.
        value: f64,
    },
    /// A logit is NaN or infinite.
    #[error("objective: {what} at row {row}, label {label} is {value} (not finite)")]
    NonFinite {
        /// `logits` or `reference logits`.
        what: &'static str,
        /// Batch row.
        row: usize,
        /// Label index.
        label: usize,
        /// The value found.
        value: f64,
    },
    /// An explicit [`PairPlan`] does not fit the batch.
    #[error("objective: pair plan invalid at row {row}, label {label}: {reason}")]
    InvalidPlan {
        /// Batch row.
        row: usize,
        /// Label index.
        label: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The inputs of one objective evaluation.
#[derive(Clone, Debug)]
pub struct ObjectiveInputs<'a, B: Backend> {
    /// Policy logits `s`, `[B, T]`, with graph.
    pub logits: Tensor<B, 2>,
    /// Targets `y`, `[B, T]`, float 0/1.
    pub targets: Tensor<B, 2>,
    /// `privileged[t]` = label t is in P; length T.
    pub privileged: &'a [bool],
    /// Reference logits `s_ref`, `[B, T]` (detached here); needed when
    /// [`ObjectiveConfig::needs_reference`].
    pub reference: Option<Tensor<B, 2>>,
}

/// Counts for privileged pairs of one target value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct CaseCounts {
    /// Preference pairs of this case.
    pub pairs: usize,
    /// ... whose confusing set was non-empty (a preference term was used).
    pub with_confusing: usize,
    /// ... with an empty set that used the BCE fallback.
    pub fallback: usize,
    /// ... with an empty set and no loss (`bce_fallback = false`).
    pub no_loss: usize,
}

/// What one evaluation did, for logs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics {
    /// Pairs averaged into L_P (labels in P).
    pub privileged_pairs: usize,
    /// Pairs averaged into L_P-bar (labels not in P).
    pub non_privileged_pairs: usize,
    /// L_P is 0 because the batch has no privileged pair.
    pub privileged_empty: bool,
    /// L_P-bar is 0 because the batch has no non-privileged pair.
    pub non_privileged_empty: bool,
    /// Preference pairs with y = 1 (confusing negatives).
    pub positive: CaseCounts,
    /// Preference pairs with y = 0 (confusing positives).
    pub negative: CaseCounts,
}

/// The two group losses, scalar tensors (`[1]`) with graph.
#[derive(Clone, Debug)]
pub struct GroupLosses<B: Backend> {
    /// L_P: mean loss over privileged pairs (0 if none).
    pub privileged: Tensor<B, 1>,
    /// L_P-bar: mean loss over non-privileged pairs (0 if none).
    pub non_privileged: Tensor<B, 1>,
}

/// Result of [`compute`].
#[derive(Clone, Debug)]
pub struct ObjectiveOutput<B: Backend> {
    /// Group losses. For BCE, re-weighted and global they are the per-group parts of the
    /// objective, for logging.
    pub losses: GroupLosses<B>,
    /// The loss to minimise for methods without group weights (bce, reweighted, global);
    /// `None` when the caller combines the group losses with scheduler weights.
    pub total: Option<Tensor<B, 1>>,
    /// Counts of what happened.
    pub diagnostics: Diagnostics,
}

impl<B: Backend> ObjectiveOutput<B> {
    /// The loss to backpropagate: `total` if the method has one, else
    /// `alpha[0] * L_P + alpha[1] * L_P-bar` (alpha from fairpo-grpo, constants).
    ///
    /// # Panics
    /// If `total` is `None` and `alpha` does not have two entries.
    pub fn combine(&self, alpha: &[f64]) -> Tensor<B, 1> {
        match &self.total {
            Some(t) => t.clone(),
            None => {
                assert_eq!(
                    alpha.len(),
                    2,
                    "combine: expected [alpha_P, alpha_Pbar], got {alpha:?}"
                );
                self.losses.privileged.clone().mul_scalar(alpha[0])
                    + self.losses.non_privileged.clone().mul_scalar(alpha[1])
            }
        }
    }

    /// Host values `[L_P, L_P-bar]` (what the scheduler steps on).
    pub fn group_values(&self) -> [f64; 2] {
        [
            self.losses.privileged.clone().into_scalar().elem::<f64>(),
            self.losses
                .non_privileged
                .clone()
                .into_scalar()
                .elem::<f64>(),
        ]
    }
}

/// `softplus(x) = log(1 + e^x)`, computed as `-log_sigmoid(-x)` (stable for any finite x;
/// burn's `softplus` overflows in f32 beyond x ≈ 88).
pub fn softplus<const D: usize, B: Backend>(x: Tensor<B, D>) -> Tensor<B, D> {
    -log_sigmoid(-x)
}

/// Evaluates the objective, drawing the random choices from `rng` (see [`PairPlan::sample`]).
pub fn compute<B: Backend, R: Rng + ?Sized>(
    cfg: &ObjectiveConfig,
    inputs: ObjectiveInputs<'_, B>,
    rng: &mut R,
) -> Result<ObjectiveOutput<B>, ObjectiveError> {
    Ok(prepare(cfg, inputs, rng)?.evaluate_local())
}

/// Evaluates the objective with explicit random choices (checked by [`PairPlan::validate`]).
pub fn compute_with_plan<B: Backend>(
    cfg: &ObjectiveConfig,
    inputs: ObjectiveInputs<'_, B>,
    plan: &PairPlan,
) -> Result<ObjectiveOutput<B>, ObjectiveError> {
    Ok(prepare_with_plan(cfg, inputs, plan)?.evaluate_local())
}

/// The first half of [`compute`]: checks the inputs and draws the random choices, so that the
/// caller can learn the batch's [`Counts`] (and sum them over data-parallel replicas) before
/// [`Prepared::evaluate`] divides by them.
pub fn prepare<'a, B: Backend, R: Rng + ?Sized>(
    cfg: &'a ObjectiveConfig,
    inputs: ObjectiveInputs<'a, B>,
    rng: &mut R,
) -> Result<Prepared<'a, B>, ObjectiveError> {
    let host = check_inputs(cfg, &inputs)?;
    let plan = PairPlan::sample(cfg, &host, inputs.privileged, rng);
    Ok(Prepared::new(cfg, inputs, host, plan))
}

/// [`prepare`] with explicit random choices (checked by [`PairPlan::validate`]).
pub fn prepare_with_plan<'a, B: Backend>(
    cfg: &'a ObjectiveConfig,
    inputs: ObjectiveInputs<'a, B>,
    plan: &PairPlan,
) -> Result<Prepared<'a, B>, ObjectiveError> {
    let host = check_inputs(cfg, &inputs)?;
    plan.validate(cfg, &host, inputs.privileged)?;
    Ok(Prepared::new(cfg, inputs, host, plan.clone()))
}

/// The denominators of an objective's means: the pair counts of one batch or, in
/// data-parallel training, their sums over every replica's shard of the global batch. Every
/// loss is linear in its per-pair terms once these are fixed, so the replicas' losses,
/// evaluated with the summed counts, add up to the loss of the global batch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    /// Pairs in L_P (active, label in P).
    pub privileged: f64,
    /// Pairs in L_P-bar (active, label not in P).
    pub non_privileged: f64,
    /// Preference pairs.
    pub preference: f64,
    /// Preference pairs with a confusing label.
    pub with_confusing: f64,
}

impl Counts {
    /// The counts as one vector (for an all-reduce).
    pub fn to_array(self) -> [f64; 4] {
        [
            self.privileged,
            self.non_privileged,
            self.preference,
            self.with_confusing,
        ]
    }

    /// The inverse of [`Counts::to_array`].
    pub fn from_array(a: [f64; 4]) -> Self {
        Self {
            privileged: a[0],
            non_privileged: a[1],
            preference: a[2],
            with_confusing: a[3],
        }
    }
}

/// A checked batch with its random choices drawn, waiting for the denominators
/// ([`prepare`]).
#[derive(Debug)]
pub struct Prepared<'a, B: Backend> {
    cfg: &'a ObjectiveConfig,
    inputs: ObjectiveInputs<'a, B>,
    host: HostBatch,
    plan: PairPlan,
    masks: plan::PairMasks,
}

impl<'a, B: Backend> Prepared<'a, B> {
    fn new(
        cfg: &'a ObjectiveConfig,
        inputs: ObjectiveInputs<'a, B>,
        host: HostBatch,
        plan: PairPlan,
    ) -> Self {
        let masks = plan::pair_masks(
            cfg,
            host.batch,
            host.labels,
            inputs.privileged,
            plan.sampled_labels.as_deref(),
        );
        Self {
            cfg,
            inputs,
            host,
            plan,
            masks,
        }
    }

    /// This batch's pair counts.
    pub fn counts(&self) -> Counts {
        let t = self.host.labels;
        let privileged = self.inputs.privileged;
        let mut c = Counts::default();
        for (p, &active) in self.masks.active.iter().enumerate() {
            if active && privileged[p % t] {
                c.privileged += 1.0;
            } else if active {
                c.non_privileged += 1.0;
            }
            if self.masks.preference[p] {
                c.preference += 1.0;
                if self.plan.confusing[p].is_some() {
                    c.with_confusing += 1.0;
                }
            }
        }
        c
    }

    /// The objective with its means divided by `counts` ([`Prepared::counts`] for this batch
    /// alone). The diagnostics count this batch's pairs.
    pub fn evaluate(self, counts: &Counts) -> ObjectiveOutput<B> {
        evaluate(
            self.cfg,
            self.inputs,
            &self.host,
            &self.plan,
            &self.masks,
            counts,
        )
    }

    fn evaluate_local(self) -> ObjectiveOutput<B> {
        let counts = self.counts();
        self.evaluate(&counts)
    }
}

/// Reads the detached logits and targets to the host, checking shapes and values.
pub fn host_batch<B: Backend>(
    logits: &Tensor<B, 2>,
    targets: &Tensor<B, 2>,
) -> Result<HostBatch, ObjectiveError> {
    let [b, t] = logits.dims();
    if targets.dims() != [b, t] {
        return Err(ObjectiveError::Shape {
            what: "targets",
            expected: vec![b, t],
            got: targets.dims().to_vec(),
        });
    }
    let s: Vec<f64> = logits.to_data().iter::<f64>().collect();
    if let Some(p) = s.iter().position(|v| !v.is_finite()) {
        return Err(ObjectiveError::NonFinite {
            what: "logits",
            row: p / t,
            label: p % t,
            value: s[p],
        });
    }
    let mut y = Vec::with_capacity(b * t);
    for (p, v) in targets.to_data().iter::<f64>().enumerate() {
        if v != 0.0 && v != 1.0 {
            return Err(ObjectiveError::InvalidTarget {
                row: p / t,
                label: p % t,
                value: v,
            });
        }
        y.push(v == 1.0);
    }
    Ok(HostBatch {
        batch: b,
        labels: t,
        logits: s,
        targets: y,
    })
}

fn check_inputs<B: Backend>(
    cfg: &ObjectiveConfig,
    inputs: &ObjectiveInputs<'_, B>,
) -> Result<HostBatch, ObjectiveError> {
    cfg.validate()?;
    let host = host_batch(&inputs.logits, &inputs.targets)?;
    let (b, t) = (host.batch, host.labels);
    if inputs.privileged.len() != t {
        return Err(ObjectiveError::Shape {
            what: "privileged mask",
            expected: vec![t],
            got: vec![inputs.privileged.len()],
        });
    }
    match &inputs.reference {
        Some(r) => {
            if r.dims() != [b, t] {
                return Err(ObjectiveError::Shape {
                    what: "reference logits",
                    expected: vec![b, t],
                    got: r.dims().to_vec(),
                });
            }
            if cfg.needs_reference() {
                if let Some((p, v)) = r
                    .to_data()
                    .iter::<f64>()
                    .enumerate()
                    .find(|(_, v)| !v.is_finite())
                {
                    return Err(ObjectiveError::NonFinite {
                        what: "reference logits",
                        row: p / t,
                        label: p % t,
                        value: v,
                    });
                }
            }
        }
        None if cfg.needs_reference() => {
            let what =
                if cfg.method == Method::Dpo && cfg.privileged_loss == PrivilegedLoss::Preference {
                    "FairPO-DPO".to_string()
                } else {
                    format!("the non-privileged hinge of {:?}", cfg.method)
                };
            return Err(ObjectiveError::MissingReference(what));
        }
        None => {}
    }
    Ok(host)
}

fn mask_tensor<B: Backend>(
    mask: impl Iterator<Item = bool>,
    b: usize,
    t: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let v: Vec<f32> = mask.map(|m| if m { 1.0 } else { 0.0 }).collect();
    Tensor::from_data(TensorData::new(v, [b, t]), device)
}

/// `sum(values * mask) / max(count, 1)`: the mean over the masked pairs, 0 when there are none.
fn masked_mean<B: Backend>(values: Tensor<B, 2>, mask: &Tensor<B, 2>, count: f64) -> Tensor<B, 1> {
    (values * mask.clone()).sum().div_scalar(count.max(1.0))
}

fn evaluate<B: Backend>(
    cfg: &ObjectiveConfig,
    inputs: ObjectiveInputs<'_, B>,
    host: &HostBatch,
    plan: &PairPlan,
    masks: &plan::PairMasks,
    counts: &Counts,
) -> ObjectiveOutput<B> {
    let (b, t) = (host.batch, host.labels);
    let device = inputs.logits.device();
    let privileged = inputs.privileged;

    let s = inputs.logits;
    let y = inputs.targets;
    let log_m = log_sigmoid(s.clone());
    let log_1m = log_sigmoid(-s);
    let bce = -(y.clone() * log_m.clone() + (-y.clone() + 1.0) * log_1m);

    // Group membership by the real partition (used for the reported group losses).
    let in_p: Vec<bool> = (0..b * t)
        .map(|p| masks.active[p] && privileged[p % t])
        .collect();
    let in_np: Vec<bool> = (0..b * t)
        .map(|p| masks.active[p] && !privileged[p % t])
        .collect();
    let local_p = in_p.iter().filter(|&&m| m).count();
    let local_np = in_np.iter().filter(|&&m| m).count();
    let (n_p, n_np) = (counts.privileged, counts.non_privileged);
    let n_all = n_p + n_np;
    let mask_p = mask_tensor::<B>(in_p.into_iter(), b, t, &device);
    let mask_np = mask_tensor::<B>(in_np.into_iter(), b, t, &device);

    let mut diagnostics = Diagnostics {
        privileged_pairs: local_p,
        non_privileged_pairs: local_np,
        privileged_empty: local_p == 0,
        non_privileged_empty: local_np == 0,
        ..Default::default()
    };

    let reference = inputs.reference.map(|r| r.detach());
    let (privileged_loss, non_privileged_loss, total) = match cfg.method {
        Method::Bce | Method::Gdro => {
            let total = (cfg.method == Method::Bce).then(|| {
                let all = mask_p.clone() + mask_np.clone();
                masked_mean(bce.clone(), &all, n_all)
            });
            (
                masked_mean(bce.clone(), &mask_p, n_p),
                masked_mean(bce, &mask_np, n_np),
                total,
            )
        }
        Method::Reweighted => {
            let weights = mask_p.clone().mul_scalar(cfg.lambda_p) + mask_np.clone();
            let weight_sum = cfg.lambda_p * n_p + n_np;
            let total = (bce.clone() * weights)
                .sum()
                .div_scalar(weight_sum.max(f64::MIN_POSITIVE));
            (
                masked_mean(bce.clone(), &mask_p, n_p),
                masked_mean(bce, &mask_np, n_np),
                Some(total),
            )
        }
        Method::Dpo | Method::Simpo | Method::Cpo => {
            let per_pref = privileged_pair_loss(
                cfg,
                host,
                plan,
                masks,
                counts,
                &log_m,
                &bce,
                reference.as_ref(),
                &mut diagnostics,
            );
            if cfg.global {
                let all = mask_p.clone() + mask_np.clone();
                let total = masked_mean(per_pref.clone(), &all, n_all);
                (
                    masked_mean(per_pref.clone(), &mask_p, n_p),
                    masked_mean(per_pref, &mask_np, n_np),
                    Some(total),
                )
            } else {
                let per_np = match cfg.non_privileged_loss {
                    NonPrivilegedLoss::Bce => bce,
                    NonPrivilegedLoss::Hinge => {
                        let r = reference.expect("checked: hinge needs the reference");
                        let y1 = -y.clone() + 1.0;
                        let bce_ref = -(y * log_sigmoid(r.clone()) + y1 * log_sigmoid(-r));
                        relu(bce - bce_ref - cfg.epsilon)
                    }
                };
                (
                    masked_mean(per_pref, &mask_p, n_p),
                    masked_mean(per_np, &mask_np, n_np),
                    None,
                )
            }
        }
    };
    ObjectiveOutput {
        losses: GroupLosses {
            privileged: privileged_loss,
            non_privileged: non_privileged_loss,
        },
        total,
        diagnostics,
    }
}

/// Per-pair loss of the privileged objective for every (i, l), `[B, T]`; only entries of
/// preference pairs (or, with `privileged_loss = "bce"`, any pair) are meaningful, the caller
/// masks the rest.
#[allow(clippy::too_many_arguments)]
fn privileged_pair_loss<B: Backend>(
    cfg: &ObjectiveConfig,
    host: &HostBatch,
    plan: &PairPlan,
    masks: &plan::PairMasks,
    counts: &Counts,
    log_m: &Tensor<B, 2>,
    bce: &Tensor<B, 2>,
    reference: Option<&Tensor<B, 2>>,
    diag: &mut Diagnostics,
) -> Tensor<B, 2> {
    if cfg.privileged_loss == PrivilegedLoss::Bce {
        return bce.clone();
    }
    let (b, t) = (host.batch, host.labels);
    let device = log_m.device();
    let mut w_idx = vec![0i64; b * t];
    let mut d_idx = vec![0i64; b * t];
    let mut has_k = vec![false; b * t];
    let mut fallback = vec![false; b * t];
    for p in 0..b * t {
        let l = p % t;
        w_idx[p] = l as i64;
        d_idx[p] = l as i64;
        if !masks.preference[p] {
            continue;
        }
        let positive = host.targets[p];
        let case = if positive {
            &mut diag.positive
        } else {
            &mut diag.negative
        };
        case.pairs += 1;
        match plan.confusing[p] {
            Some(k) => {
                case.with_confusing += 1;
                has_k[p] = true;
                if positive {
                    d_idx[p] = k as i64;
                } else {
                    w_idx[p] = k as i64;
                }
            }
            None if cfg.bce_fallback => {
                case.fallback += 1;
                fallback[p] = true;
            }
            None => case.no_loss += 1,
        }
    }
    let w_idx = Tensor::<B, 2, Int>::from_data(TensorData::new(w_idx, [b, t]), &device);
    let d_idx = Tensor::<B, 2, Int>::from_data(TensorData::new(d_idx, [b, t]), &device);
    let has_k = mask_tensor::<B>(has_k.into_iter(), b, t, &device);
    let fallback = mask_tensor::<B>(fallback.into_iter(), b, t, &device);

    let x = log_m.clone().gather(1, w_idx.clone()) - log_m.clone().gather(1, d_idx.clone());
    let pref = match cfg.method {
        Method::Dpo => {
            let r = log_sigmoid(reference.expect("checked: DPO needs the reference").clone());
            let x_ref = r.clone().gather(1, w_idx) - r.gather(1, d_idx);
            softplus((x - x_ref).mul_scalar(-cfg.beta))
        }
        Method::Simpo => softplus(-(x.mul_scalar(cfg.beta) - cfg.gamma)),
        Method::Cpo => softplus(x.mul_scalar(-cfg.beta)),
        _ => unreachable!("privileged_pair_loss is only called for FairPO methods"),
    };
    if cfg.method == Method::Cpo {
        // has_k * pref + lambda * BCE where a pair has a loss (has_k or fallback). The caller
        // divides by the number of preference pairs; scaling the preference entries by
        // n_pref / n_k turns that into a mean over the pairs with a confusing label.
        let pref = match cfg.cpo_preference_mean {
            CpoPreferenceMean::WithConfusing if counts.with_confusing > 0.0 => {
                pref.mul_scalar(counts.preference / counts.with_confusing)
            }
            // No pair with a confusing label: every preference entry is masked to 0 anyway.
            _ => pref,
        };
        has_k.clone() * pref + (has_k + fallback) * bce.clone().mul_scalar(cfg.lambda_cpo)
    } else {
        has_k * pref + fallback * bce.clone()
    }
}
