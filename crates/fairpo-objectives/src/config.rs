//! The `[objective]` table: which loss, its hyper-parameters and the ablation switches.

use serde::{Deserialize, Serialize};

use crate::ObjectiveError;

/// Training objective (paper Tables 1-2).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// BCE-SFT: mean BCE over all (i, t) (appendix D.1). Also how the reference model is trained.
    Bce,
    /// BCE with weight `lambda_p` on privileged labels, normalised by the weight sum (D.2).
    Reweighted,
    /// Group DRO: mean BCE per group, combined by GDRO weights from fairpo-grpo (D.3).
    Gdro,
    /// FairPO-DPO: privileged DPO preference loss (Eq. 8/9/11, needs reference logits).
    Dpo,
    /// FairPO-SimPO: privileged SimPO preference loss with margin `gamma` (Eq. 12).
    Simpo,
    /// FairPO-CPO: privileged CPO preference loss plus `lambda_cpo` * BCE (Eq. 13/14). Default.
    #[default]
    Cpo,
}

impl Method {
    /// Whether this is one of the FairPO methods (preference loss on P, constraint on P-bar).
    pub fn is_fairpo(self) -> bool {
        matches!(self, Method::Dpo | Method::Simpo | Method::Cpo)
    }
}

/// Which (instance, label) pairs enter the losses of a batch.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LabelSampling {
    /// Every (i, t): each privileged label of each instance is a privileged pair (default; the
    /// batched form of the expectations in Eq. 11/14/17).
    #[default]
    All,
    /// Algorithm 2 literally: one label r drawn uniformly per instance; the pair (i, r) goes to
    /// L_P if r is privileged, else to L_P-bar.
    One,
}

/// The privileged-group loss of a FairPO method (Table 3 "w/o preference loss").
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PrivilegedLoss {
    /// The method's preference loss on confusing labels (default).
    #[default]
    Preference,
    /// Plain mean BCE over the privileged pairs.
    Bce,
}

/// The non-privileged-group loss of a FairPO method (Table 3 "w/o P-bar constraint").
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum NonPrivilegedLoss {
    /// Eq. 17: `max(0, BCE(s) - BCE(s_ref) - epsilon)` (default; needs reference logits).
    #[default]
    Hinge,
    /// Plain mean BCE over the non-privileged pairs.
    Bce,
}

/// Which confusing sets are used (Table 4 "only confusing negatives").
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConfusingSet {
    /// S_neg for y = 1 pairs and S_pos for y = 0 pairs (default).
    #[default]
    Both,
    /// Only S_neg: y = 0 privileged pairs never get a preference term (their set counts as empty).
    Negatives,
}

/// Over which privileged pairs CPO's preference term is averaged (its `lambda_cpo * BCE` term
/// is always the mean over every privileged pair).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum CpoPreferenceMean {
    /// Over every privileged pair; a pair without a confusing label adds 0 (Eq. 14 as an
    /// expectation over all pairs; default).
    #[default]
    AllPairs,
    /// Over the pairs that have a confusing label only (the released code's CPO; 0 when no
    /// pair of the batch has one).
    WithConfusing,
}

/// Objective settings, embedded by the trainer as the `[objective]` TOML table.
///
/// Every field is optional; the defaults are FairPO-CPO with the paper's MS-COCO values
/// (Table 5: beta 0.5, lambda_cpo 0.5, epsilon 0.01; SimPO gamma 0.1; RW lambda_p 5):
/// ```toml
/// [objective]
/// method = "cpo"             # bce | reweighted | gdro | dpo | simpo | cpo
/// beta = 0.5                 # preference strength (DPO, SimPO, CPO)
/// gamma = 0.1                # SimPO margin
/// lambda_cpo = 0.5           # CPO weight of the BCE (NLL) term
/// epsilon = 0.01             # slack of the non-privileged hinge (Eq. 17)
/// lambda_p = 5.0             # re-weighted BCE: weight of privileged labels
/// label_sampling = "all"     # all | one (Algorithm 2 literally)
/// # ablation switches (paper Tables 3 and 4); the scheduler switch is `[scheduler] kind = "fixed"`
/// privileged_loss = "preference"  # preference | bce
/// non_privileged_loss = "hinge"   # hinge | bce
/// global = false             # CPO over all labels as privileged, no split, no group weights
/// confusing = "both"         # both | negatives
/// bce_fallback = true        # false: no loss at all for pairs without a confusing label
/// cpo_preference_mean = "all_pairs"  # all_pairs | with_confusing (the released code's CPO)
/// ```
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectiveConfig {
    /// The objective. Default `cpo`.
    pub method: Method,
    /// Preference strength beta (> 0). Default 0.5.
    pub beta: f64,
    /// SimPO target margin gamma. Default 0.1.
    pub gamma: f64,
    /// CPO weight of the always-on BCE term (>= 0). Default 0.5.
    pub lambda_cpo: f64,
    /// Slack epsilon of the non-privileged hinge (>= 0). Default 0.01.
    pub epsilon: f64,
    /// Re-weighted BCE: weight of privileged labels (> 0; non-privileged labels weigh 1). Default 5.
    pub lambda_p: f64,
    /// Which pairs enter the losses. Default `all`.
    pub label_sampling: LabelSampling,
    /// FairPO privileged loss. Default `preference`.
    pub privileged_loss: PrivilegedLoss,
    /// FairPO non-privileged loss. Default `hinge`.
    pub non_privileged_loss: NonPrivilegedLoss,
    /// Global variant (Table 3): the privileged loss over all labels, no P/P-bar split, no group
    /// weights. Default false.
    pub global: bool,
    /// Confusing sets used. Default `both`.
    pub confusing: ConfusingSet,
    /// BCE fallback for privileged pairs without a confusing label (DPO, SimPO: BCE instead of
    /// the preference term; CPO: the lambda_cpo * BCE term is kept). `false` = such pairs give no
    /// loss at all (they still count in the mean). Default true.
    pub bce_fallback: bool,
    /// CPO: the pairs its preference term is averaged over (other methods ignore it; not with
    /// `global`). Default `all_pairs`.
    pub cpo_preference_mean: CpoPreferenceMean,
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        Self {
            method: Method::Cpo,
            beta: 0.5,
            gamma: 0.1,
            lambda_cpo: 0.5,
            epsilon: 0.01,
            lambda_p: 5.0,
            label_sampling: LabelSampling::All,
            privileged_loss: PrivilegedLoss::Preference,
            non_privileged_loss: NonPrivilegedLoss::Hinge,
            global: false,
            confusing: ConfusingSet::Both,
            bce_fallback: true,
            cpo_preference_mean: CpoPreferenceMean::AllPairs,
        }
    }
}

impl ObjectiveConfig {
    /// Config for `method` with every other field at its default.
    pub fn new(method: Method) -> Self {
        Self {
            method,
            ..Self::default()
        }
    }

    /// Checks value ranges and switch combinations.
    pub fn validate(&self) -> Result<(), ObjectiveError> {
        let bad = |field: &'static str, reason: String| {
            Err(ObjectiveError::InvalidConfig { field, reason })
        };
        let finite = |field, v: f64, min: f64, strict: bool| {
            if !v.is_finite() || v < min || (strict && v == min) {
                bad(
                    field,
                    format!(
                        "a finite value {} {min}, got {v}",
                        if strict { ">" } else { ">=" }
                    ),
                )
            } else {
                Ok(())
            }
        };
        finite("beta", self.beta, 0.0, true)?;
        finite("lambda_cpo", self.lambda_cpo, 0.0, false)?;
        finite("epsilon", self.epsilon, 0.0, false)?;
        finite("lambda_p", self.lambda_p, 0.0, true)?;
        if !self.gamma.is_finite() {
            return bad("gamma", format!("a finite value, got {}", self.gamma));
        }
        if self.cpo_preference_mean == CpoPreferenceMean::WithConfusing && self.global {
            // Under `global` the preference mean would be over all labels, not the group's.
            return bad(
                "cpo_preference_mean",
                "\"with_confusing\" cannot be combined with `global`".into(),
            );
        }
        if self.global && !self.method.is_fairpo() {
            return bad(
                "global",
                format!("only applies to dpo, simpo and cpo, not {:?}", self.method),
            );
        }
        Ok(())
    }

    /// Whether reference logits must be passed: DPO's preference term, or the hinge constraint
    /// of any FairPO method (unless `global` or `non_privileged_loss = "bce"`).
    pub fn needs_reference(&self) -> bool {
        if !self.method.is_fairpo() {
            return false;
        }
        let dpo_pref =
            self.method == Method::Dpo && self.privileged_loss == PrivilegedLoss::Preference;
        let hinge = !self.global && self.non_privileged_loss == NonPrivilegedLoss::Hinge;
        dpo_pref || hinge
    }

    /// Whether the two group losses are meant to be combined with scheduler weights alpha
    /// (GDRO and non-global FairPO). Otherwise the objective returns its own `total`.
    pub fn uses_group_weights(&self) -> bool {
        self.method == Method::Gdro || (self.method.is_fairpo() && !self.global)
    }

    /// Whether privileged pairs get a preference term on confusing labels (needs the RNG).
    pub fn uses_preference(&self) -> bool {
        self.method.is_fairpo() && self.privileged_loss == PrivilegedLoss::Preference
    }
}
