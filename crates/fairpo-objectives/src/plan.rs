//! Which pairs enter the losses and which confusing label each privileged pair uses.
//!
//! Everything here runs on the host on detached values: the confusing sets depend only on the
//! order of the scores and on the targets, never on gradients.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::config::{ConfusingSet, LabelSampling, ObjectiveConfig};
use crate::ObjectiveError;

/// A batch on the host: detached logits and 0/1 targets, row-major `[B, T]`.
#[derive(Clone, Debug)]
pub struct HostBatch {
    /// Batch size B.
    pub batch: usize,
    /// Number of labels T.
    pub labels: usize,
    /// Logits `s[i, t]` at `i * T + t`.
    pub logits: Vec<f64>,
    /// Targets `y[i, t]`.
    pub targets: Vec<bool>,
}

impl HostBatch {
    /// Candidate confusing labels of pair `(i, l)` (paper section 3.1), in ascending label order:
    /// - `y[i,l] = 1`: S_neg = { k : y[i,k] = 0 and m[i,k] >= m[i,l] }
    /// - `y[i,l] = 0`: S_pos = { k : y[i,k] = 1 and m[i,k] <= m[i,l] } (empty under
    ///   `confusing = "negatives"`).
    ///
    /// `m = sigmoid(s)` is strictly increasing, so the comparison is made on the logits: the same
    /// sets as on exact probabilities, without the ties that rounding of a saturated sigmoid
    /// would create (in f32, sigmoid(17) == sigmoid(100) == 1).
    pub fn candidates(&self, i: usize, l: usize, mode: ConfusingSet) -> Vec<usize> {
        let t = self.labels;
        let row = &self.logits[i * t..(i + 1) * t];
        let y = &self.targets[i * t..(i + 1) * t];
        if y[l] {
            (0..t).filter(|&k| !y[k] && row[k] >= row[l]).collect()
        } else if mode == ConfusingSet::Both {
            (0..t).filter(|&k| y[k] && row[k] <= row[l]).collect()
        } else {
            Vec::new()
        }
    }
}

/// The random choices of one batch: the sampled label per instance (`label_sampling = "one"`)
/// and the confusing label of each preference pair. Built by [`PairPlan::sample`] from the RNG,
/// or by hand (tests, reference fixtures) and checked by [`PairPlan::validate`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PairPlan {
    /// `label_sampling = "one"`: the label r_i drawn for each instance; `None` for `"all"`.
    pub sampled_labels: Option<Vec<usize>>,
    /// Row-major `[B, T]`: `Some(k)` = pair (i, l) is a preference pair whose confusing set is
    /// non-empty and k was drawn from it; `None` otherwise.
    pub confusing: Vec<Option<usize>>,
}

/// Masks derived from a plan, row-major `[B, T]`.
#[derive(Clone, Debug)]
pub(crate) struct PairMasks {
    /// Pair enters some loss.
    pub active: Vec<bool>,
    /// Pair is a preference pair: active and its label treated as privileged (all labels under
    /// `global`), and the method uses a preference loss.
    pub preference: Vec<bool>,
}

pub(crate) fn pair_masks(
    cfg: &ObjectiveConfig,
    batch: usize,
    labels: usize,
    privileged: &[bool],
    sampled: Option<&[usize]>,
) -> PairMasks {
    let mut active = vec![sampled.is_none(); batch * labels];
    if let Some(r) = sampled {
        for (i, &ri) in r.iter().enumerate() {
            active[i * labels + ri] = true;
        }
    }
    let pref = cfg.uses_preference();
    let preference = (0..batch * labels)
        .map(|p| pref && active[p] && (cfg.global || privileged[p % labels]))
        .collect();
    PairMasks { active, preference }
}

impl PairPlan {
    /// Draws the plan of a batch from `rng`.
    ///
    /// Order of draws (so a seed gives one plan): for `label_sampling = "one"`, first r_i uniform
    /// over `0..T` for i = 0..B; then, for each preference pair in row-major order whose
    /// confusing set is non-empty, one index uniform over the set (`rng.random_range`, exact
    /// uniform). Pairs with an empty set draw nothing.
    pub fn sample<R: Rng + ?Sized>(
        cfg: &ObjectiveConfig,
        host: &HostBatch,
        privileged: &[bool],
        rng: &mut R,
    ) -> Self {
        let (b, t) = (host.batch, host.labels);
        let sampled_labels = match cfg.label_sampling {
            LabelSampling::All => None,
            LabelSampling::One => Some((0..b).map(|_| rng.random_range(0..t)).collect::<Vec<_>>()),
        };
        let masks = pair_masks(cfg, b, t, privileged, sampled_labels.as_deref());
        let confusing = (0..b * t)
            .map(|p| {
                if !masks.preference[p] {
                    return None;
                }
                let c = host.candidates(p / t, p % t, cfg.confusing);
                (!c.is_empty()).then(|| c[rng.random_range(0..c.len())])
            })
            .collect();
        PairPlan {
            sampled_labels,
            confusing,
        }
    }

    /// Checks a plan against a batch: shapes, sampled labels in range, and every confusing choice
    /// a member of its pair's candidate set (`None` exactly where the set is empty or the pair is
    /// not a preference pair).
    pub fn validate(
        &self,
        cfg: &ObjectiveConfig,
        host: &HostBatch,
        privileged: &[bool],
    ) -> Result<(), ObjectiveError> {
        let (b, t) = (host.batch, host.labels);
        let bad = |row: usize, label: usize, reason: String| {
            Err(ObjectiveError::InvalidPlan { row, label, reason })
        };
        match (cfg.label_sampling, &self.sampled_labels) {
            (LabelSampling::All, None) => {}
            (LabelSampling::All, Some(_)) => {
                return bad(
                    0,
                    0,
                    "sampled_labels given but label_sampling = \"all\"".into(),
                )
            }
            (LabelSampling::One, None) => {
                return bad(0, 0, "label_sampling = \"one\" needs sampled_labels".into())
            }
            (LabelSampling::One, Some(r)) => {
                if r.len() != b {
                    return bad(
                        0,
                        0,
                        format!("{} sampled labels for a batch of {b}", r.len()),
                    );
                }
                if let Some((i, &ri)) = r.iter().enumerate().find(|(_, &ri)| ri >= t) {
                    return bad(i, ri, format!("sampled label {ri} is not < T = {t}"));
                }
            }
        }
        if self.confusing.len() != b * t {
            return bad(
                0,
                0,
                format!(
                    "{} confusing entries, expected B*T = {}",
                    self.confusing.len(),
                    b * t
                ),
            );
        }
        let masks = pair_masks(cfg, b, t, privileged, self.sampled_labels.as_deref());
        for (p, choice) in self.confusing.iter().enumerate() {
            let (i, l) = (p / t, p % t);
            if !masks.preference[p] {
                if let Some(k) = choice {
                    return bad(
                        i,
                        l,
                        format!(
                            "confusing label {k} given for a pair that is not a preference pair"
                        ),
                    );
                }
                continue;
            }
            let c = host.candidates(i, l, cfg.confusing);
            match choice {
                Some(k) if !c.contains(k) => {
                    return bad(
                        i,
                        l,
                        format!("confusing label {k} is not in the candidate set {c:?}"),
                    )
                }
                None if !c.is_empty() => {
                    return bad(
                        i,
                        l,
                        format!("no confusing label given but the candidate set is {c:?}"),
                    )
                }
                _ => {}
            }
        }
        Ok(())
    }
}
