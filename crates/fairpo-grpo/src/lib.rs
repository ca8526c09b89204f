//! Group-weight schedulers for FairPO (paper section 3.4-3.5, appendix D.3).
//!
//! A [`Scheduler`] holds one weight `alpha_g` per group (FairPO: `[privileged, non_privileged]`)
//! and updates it from plain `f64` group losses once per training step, *before* the parameter
//! step; the returned weights enter the loss as constants. No tensors are involved.
//!
//! - [`SchedulerKind::Grpo`] (section 3.5, mirror ascent with loss scaling):
//!   `scaled_g = (L_g - avg_g) / (|avg_g| + delta)` where `avg_g` is the running average of the
//!   earlier steps' losses (on the first step `avg_g = L_g`, so `scaled_g = 0`; with
//!   `first_step = "raw_loss"`, as the paper's released code, `scaled_g = L_g` on that step);
//!   `alpha_g <- alpha_g * exp(clamp(eta_alpha * scaled_g, -clamp, clamp))`, normalise, then
//!   `avg_g <- rho * avg_g + (1 - rho) * L_g`.
//!   The paper writes `(L - avg)/(avg + delta)`; all FairPO group losses are non-negative, so
//!   `avg >= 0` and `|avg| = avg`: the two agree. `|avg|` only keeps the sign right if a caller
//!   ever feeds negative losses.
//! - [`SchedulerKind::Gdro`] (appendix D.3): `alpha_g <- alpha_g * exp(eta_alpha * L_g)`, normalise.
//!   The update is computed in log space (`log alpha_g + eta * L_g`, then a softmax), which is
//!   the same value without overflow for large losses.
//! - [`SchedulerKind::Fixed`]: alpha stays as configured (the Table 3 "w/o GRPO" ablation: 0.5/0.5).

use serde::{Deserialize, Serialize};

/// Which group-weight update rule a [`Scheduler`] uses.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerKind {
    /// GRPO mirror ascent on losses scaled against their running average (FairPO default).
    #[default]
    Grpo,
    /// Group DRO mirror ascent on the raw losses (GDRO + BCE baseline).
    Gdro,
    /// Constant weights.
    Fixed,
}

/// Settings of a group-weight scheduler; the trainer embeds this as the `[scheduler]` TOML table.
///
/// Every field has a default, so `[scheduler]` may be empty:
/// ```toml
/// [scheduler]
/// kind = "grpo"      # "grpo" | "gdro" | "fixed"
/// eta_alpha = 0.05   # mirror-ascent step size (paper E.3 / D.3)
/// rho = 0.9          # running-average decay (GRPO only)
/// delta = 1e-6       # scaling stabiliser (GRPO only)
/// clamp = 10.0       # bound on |eta_alpha * scaled loss| (GRPO only)
/// # weights = [0.5, 0.5]  # initial weights (GRPO/GDRO) or the constant ones (fixed); default uniform
/// first_step = "zero" # GRPO's first step: "zero" (weights stay) or "raw_loss" (released code)
/// ```
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Update rule. Default `grpo`.
    pub kind: SchedulerKind,
    /// Mirror-ascent step size eta_alpha. Default 0.05 (paper E.3, D.3).
    pub eta_alpha: f64,
    /// Decay of the GRPO running average of each group's loss. Default 0.9.
    pub rho: f64,
    /// Stabiliser in the GRPO loss scaling denominator. Default 1e-6.
    pub delta: f64,
    /// GRPO exponent bound: `eta_alpha * scaled` is clamped to `[-clamp, clamp]`. Default 10.
    pub clamp: f64,
    /// Initial weights (GRPO, GDRO) or the constant weights (fixed), one per group; they are
    /// normalised to sum 1. `None` (default) = uniform over the groups.
    pub weights: Option<Vec<f64>>,
    /// GRPO's first step, before any running average exists: `"zero"` (default) scales the
    /// losses against themselves, so the weights do not move; `"raw_loss"` uses the raw losses
    /// as the scaled values, as the paper's released code does.
    pub first_step: FirstStep,
}

/// What GRPO's first step scales (`[scheduler] first_step`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum FirstStep {
    /// `scaled_g = 0`: the running average starts at the first losses.
    #[default]
    Zero,
    /// `scaled_g = L_g` (the released code).
    RawLoss,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            kind: SchedulerKind::Grpo,
            eta_alpha: 0.05,
            rho: 0.9,
            delta: 1e-6,
            clamp: 10.0,
            weights: None,
            first_step: FirstStep::Zero,
        }
    }
}

/// A configuration or a step input the scheduler cannot use.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SchedulerError {
    /// A field of [`SchedulerConfig`] is out of range.
    #[error("scheduler: invalid `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What was expected.
        reason: String,
    },
    /// `step` got a different number of losses than there are groups.
    #[error("scheduler: expected {expected} group losses, got {got}")]
    WrongGroupCount {
        /// Number of groups of the scheduler.
        expected: usize,
        /// Number of losses passed.
        got: usize,
    },
    /// A group loss was NaN or infinite.
    #[error("scheduler: group {group} loss is not finite ({value})")]
    NonFiniteLoss {
        /// Group index.
        group: usize,
        /// The loss value.
        value: f64,
    },
}

impl SchedulerConfig {
    /// Checks every field; called by [`SchedulerConfig::init`].
    pub fn validate(&self, num_groups: usize) -> Result<(), SchedulerError> {
        let bad = |field, reason: String| Err(SchedulerError::InvalidConfig { field, reason });
        if num_groups == 0 {
            return bad("weights", "at least one group is needed".into());
        }
        if !(self.eta_alpha.is_finite() && self.eta_alpha >= 0.0) {
            return bad(
                "eta_alpha",
                format!("a finite value >= 0, got {}", self.eta_alpha),
            );
        }
        if !(0.0..=1.0).contains(&self.rho) {
            return bad("rho", format!("a value in [0, 1], got {}", self.rho));
        }
        if !(self.delta.is_finite() && self.delta > 0.0) {
            return bad("delta", format!("a finite value > 0, got {}", self.delta));
        }
        // Written so that NaN is rejected too.
        if self.clamp.is_nan() || self.clamp <= 0.0 {
            return bad("clamp", format!("a value > 0, got {}", self.clamp));
        }
        if let Some(w) = &self.weights {
            if w.len() != num_groups {
                return bad(
                    "weights",
                    format!("{num_groups} values (one per group), got {}", w.len()),
                );
            }
            if w.iter().any(|v| !(v.is_finite() && *v >= 0.0)) || w.iter().sum::<f64>() <= 0.0 {
                return bad(
                    "weights",
                    format!("finite non-negative values with a positive sum, got {w:?}"),
                );
            }
        }
        Ok(())
    }

    /// Builds a scheduler over `num_groups` groups (FairPO: 2, privileged first).
    pub fn init(&self, num_groups: usize) -> Result<Scheduler, SchedulerError> {
        self.validate(num_groups)?;
        let alpha = match &self.weights {
            Some(w) => normalise(w.clone()),
            None => vec![1.0 / num_groups as f64; num_groups],
        };
        Ok(Scheduler {
            config: self.clone(),
            state: SchedulerState {
                alpha,
                running_avg: None,
                steps: 0,
            },
        })
    }
}

/// The mutable part of a scheduler, saved in checkpoints to resume exactly.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SchedulerState {
    /// Current weights, one per group, summing to 1.
    pub alpha: Vec<f64>,
    /// GRPO running average of each group's loss; `None` before the first step.
    pub running_avg: Option<Vec<f64>>,
    /// Number of `step` calls so far.
    pub steps: u64,
}

/// A group-weight scheduler: see the crate docs for the update rules.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Scheduler {
    config: SchedulerConfig,
    state: SchedulerState,
}

impl Scheduler {
    /// Updates the weights from this step's group losses and returns them (the alpha to use for
    /// this step's parameter update).
    ///
    /// # Panics
    /// On a wrong number of losses or a non-finite loss (see [`Scheduler::try_step`] for the
    /// non-panicking form).
    pub fn step(&mut self, losses: &[f64]) -> Vec<f64> {
        self.try_step(losses).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Scheduler::step`] returning an error instead of panicking.
    ///
    /// # Errors
    /// A wrong number of losses or a non-finite loss; the state is left unchanged.
    pub fn try_step(&mut self, losses: &[f64]) -> Result<Vec<f64>, SchedulerError> {
        let n = self.state.alpha.len();
        if losses.len() != n {
            return Err(SchedulerError::WrongGroupCount {
                expected: n,
                got: losses.len(),
            });
        }
        if let Some((group, &value)) = losses.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(SchedulerError::NonFiniteLoss { group, value });
        }
        let c = &self.config;
        match c.kind {
            SchedulerKind::Fixed => {}
            SchedulerKind::Gdro => {
                let logits: Vec<f64> = self
                    .state
                    .alpha
                    .iter()
                    .zip(losses)
                    .map(|(a, l)| a.ln() + c.eta_alpha * l)
                    .collect();
                self.state.alpha = softmax(&logits);
            }
            SchedulerKind::Grpo => {
                let first = self.state.running_avg.is_none();
                let avg = self
                    .state
                    .running_avg
                    .clone()
                    .unwrap_or_else(|| losses.to_vec());
                let logits: Vec<f64> = (0..n)
                    .map(|g| {
                        let scaled = if first && c.first_step == FirstStep::RawLoss {
                            losses[g]
                        } else {
                            (losses[g] - avg[g]) / (avg[g].abs() + c.delta)
                        };
                        self.state.alpha[g].ln() + (c.eta_alpha * scaled).clamp(-c.clamp, c.clamp)
                    })
                    .collect();
                self.state.alpha = softmax(&logits);
                self.state.running_avg = Some(
                    (0..n)
                        .map(|g| c.rho * avg[g] + (1.0 - c.rho) * losses[g])
                        .collect(),
                );
            }
        }
        self.state.steps += 1;
        Ok(self.state.alpha.clone())
    }

    /// The current weights (before any step: the initial ones).
    pub fn weights(&self) -> &[f64] {
        &self.state.alpha
    }

    /// The configuration this scheduler was built from.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The state to put in a checkpoint.
    pub fn state(&self) -> &SchedulerState {
        &self.state
    }

    /// Restores a checkpointed state.
    ///
    /// # Errors
    /// The state has a different number of groups than this scheduler.
    pub fn restore(&mut self, state: SchedulerState) -> Result<(), SchedulerError> {
        let n = self.state.alpha.len();
        let avg_len = state.running_avg.as_ref().map_or(n, Vec::len);
        if state.alpha.len() != n || avg_len != n {
            return Err(SchedulerError::WrongGroupCount {
                expected: n,
                got: state.alpha.len().max(avg_len),
            });
        }
        self.state = state;
        Ok(())
    }
}

fn normalise(w: Vec<f64>) -> Vec<f64> {
    let s: f64 = w.iter().sum();
    w.into_iter().map(|v| v / s).collect()
}

/// Softmax of log-weights: `exp(x_g) / sum exp(x)`, shifted by the max so it never overflows.
/// A group whose weight is exactly 0 (log = -inf) stays at 0.
fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    normalise(logits.iter().map(|x| (x - max).exp()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
        }
    }

    /// GRPO for three steps, computed by hand (eta 0.05, rho 0.9, delta 1e-6).
    ///
    /// Step 1: losses (1, 2): avg = losses, scaled = 0, alpha stays (0.5, 0.5);
    ///   avg <- (1, 2).
    /// Step 2: losses (2, 2): scaled = ((2-1)/(1+1e-6), 0) = (0.999999, 0);
    ///   alpha ∝ (0.5 e^{0.04999995}, 0.5) → alpha_P = 1/(1+e^{-0.04999995}) = 0.512497...;
    ///   avg <- (0.9*1 + 0.1*2, 2) = (1.1, 2).
    /// Step 3: losses (1.1, 4): scaled = (0, 2/(2+1e-6)) = (0, 0.9999995);
    ///   log alpha = (ln a_P, ln a_Pbar + 0.049999975);
    ///   avg <- (1.1, 2.2).
    #[test]
    fn grpo_three_steps_by_hand() {
        let mut s = SchedulerConfig::default().init(2).unwrap();
        close(&s.step(&[1.0, 2.0]), &[0.5, 0.5], 1e-15);
        let e2: f64 = 0.05 * (1.0 / (1.0 + 1e-6));
        let a_p = 1.0 / (1.0 + (-e2).exp());
        close(&s.step(&[2.0, 2.0]), &[a_p, 1.0 - a_p], 1e-12);
        close(s.state().running_avg.as_ref().unwrap(), &[1.1, 2.0], 1e-12);
        let e3: f64 = 0.05 * (2.0 / (2.0 + 1e-6));
        let z = a_p + (1.0 - a_p) * e3.exp();
        let want = [a_p / z, (1.0 - a_p) * e3.exp() / z];
        close(&s.step(&[1.1, 4.0]), &want, 1e-12);
        close(s.state().running_avg.as_ref().unwrap(), &[1.1, 2.2], 1e-12);
        assert_eq!(s.state().steps, 3);
    }

    #[test]
    fn grpo_first_step_raw_loss_by_hand() {
        let cfg = SchedulerConfig {
            first_step: FirstStep::RawLoss,
            ..Default::default()
        };
        let mut s = cfg.init(2).unwrap();
        // Step 1: scaled = raw losses 1 and 2: alpha ∝ 0.5·e^{0.05}, 0.5·e^{0.1}.
        let (a, b) = ((0.05f64).exp(), (0.1f64).exp());
        close(&s.step(&[1.0, 2.0]), &[a / (a + b), b / (a + b)], 1e-15);
        close(s.state().running_avg.as_ref().unwrap(), &[1.0, 2.0], 1e-15);
        // Step 2 is the usual rule (the same losses: no change).
        close(&s.step(&[1.0, 2.0]), &[a / (a + b), b / (a + b)], 1e-12);
    }

    #[test]
    fn grpo_moves_weight_toward_group_whose_loss_rose() {
        let mut s = SchedulerConfig::default().init(2).unwrap();
        s.step(&[0.7, 0.3]);
        // privileged loss rises, non-privileged stays: weight shifts to privileged.
        let a = s.step(&[0.9, 0.3]);
        assert!(a[0] > 0.5 && a[1] < 0.5, "{a:?}");
        // now the non-privileged loss rises much more (relative to its average).
        let mut s = SchedulerConfig::default().init(2).unwrap();
        s.step(&[0.7, 0.3]);
        let a = s.step(&[0.7, 0.6]);
        assert!(a[1] > 0.5, "{a:?}");
    }

    #[test]
    fn grpo_clamp_bounds_a_huge_relative_jump() {
        let cfg = SchedulerConfig {
            eta_alpha: 1.0,
            clamp: 10.0,
            ..Default::default()
        };
        let mut s = cfg.init(2).unwrap();
        s.step(&[0.0, 1.0]);
        // scaled_P = 5 / 1e-6 = 5e6, clamped to 10: alpha_P = e^10 / (e^10 + 1).
        let a = s.step(&[5.0, 1.0]);
        let want = 10f64.exp() / (10f64.exp() + 1.0);
        close(&a, &[want, 1.0 - want], 1e-12);
    }

    /// GDRO by hand: alpha ∝ alpha * exp(0.05 * L).
    /// Step 1: L = (2, 1): alpha_P = e^{0.1}/(e^{0.1}+e^{0.05}) = 1/(1+e^{-0.05}).
    /// Step 2: L = (2, 1) again: log-ratio grows to 0.1: alpha_P = 1/(1+e^{-0.1}).
    /// Step 3: L = (0, 4): log-ratio 0.1 - 0.2 = -0.1: alpha_P = 1/(1+e^{0.1}).
    #[test]
    fn gdro_three_steps_by_hand() {
        let cfg = SchedulerConfig {
            kind: SchedulerKind::Gdro,
            ..Default::default()
        };
        let mut s = cfg.init(2).unwrap();
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        for (losses, r) in [([2.0, 1.0], 0.05), ([2.0, 1.0], 0.1), ([0.0, 4.0], -0.1)] {
            let a = s.step(&losses);
            close(&a, &[sig(r), 1.0 - sig(r)], 1e-12);
        }
    }

    #[test]
    fn gdro_survives_huge_losses() {
        let cfg = SchedulerConfig {
            kind: SchedulerKind::Gdro,
            ..Default::default()
        };
        let mut s = cfg.init(2).unwrap();
        let a = s.step(&[1e6, 0.0]);
        assert!(a.iter().all(|v| v.is_finite()));
        close(&a, &[1.0, 0.0], 1e-12);
    }

    #[test]
    fn fixed_stays_and_normalises() {
        let cfg = SchedulerConfig {
            kind: SchedulerKind::Fixed,
            weights: Some(vec![1.0, 3.0]),
            ..Default::default()
        };
        let mut s = cfg.init(2).unwrap();
        for l in [[1.0, 2.0], [5.0, 0.0], [0.0, 9.0]] {
            close(&s.step(&l), &[0.25, 0.75], 1e-15);
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut s = SchedulerConfig::default().init(2).unwrap();
        assert_eq!(
            s.try_step(&[1.0]),
            Err(SchedulerError::WrongGroupCount {
                expected: 2,
                got: 1
            })
        );
        assert!(matches!(
            s.try_step(&[f64::NAN, 1.0]),
            Err(SchedulerError::NonFiniteLoss { group: 0, .. })
        ));
        assert_eq!(s.state().steps, 0);
        let cfg = SchedulerConfig {
            weights: Some(vec![1.0]),
            ..Default::default()
        };
        let err = cfg.init(2).unwrap_err().to_string();
        assert!(err.contains("weights"), "{err}");
        let cfg = SchedulerConfig {
            rho: 1.5,
            ..Default::default()
        };
        assert!(cfg.init(2).unwrap_err().to_string().contains("rho"));
    }

    #[test]
    fn state_roundtrips_through_json_and_resumes_exactly() {
        let mut a = SchedulerConfig::default().init(2).unwrap();
        a.step(&[0.4, 0.2]);
        a.step(&[0.5, 0.1]);
        let json = serde_json::to_string(a.state()).unwrap();
        let mut b = SchedulerConfig::default().init(2).unwrap();
        b.restore(serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(a.step(&[0.3, 0.3]), b.step(&[0.3, 0.3]));
    }

    #[test]
    fn toml_table_parses_and_rejects_unknown_fields() {
        let c: SchedulerConfig = toml::from_str("kind = \"fixed\"\nweights = [0.5, 0.5]").unwrap();
        assert_eq!(c.kind, SchedulerKind::Fixed);
        assert_eq!(c.eta_alpha, 0.05);
        let c: SchedulerConfig = toml::from_str("").unwrap();
        assert_eq!(c, SchedulerConfig::default());
        assert!(toml::from_str::<SchedulerConfig>("eta = 1.0").is_err());
    }
}
