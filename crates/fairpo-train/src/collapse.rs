//! Noticing a collapsed group-weight scheduler: a group whose weight α stays below
//! [`ALPHA_FLOOR`] for [`SUSTAINED_STEPS`] steps in a row has effectively stopped training.
//! With GRPO this is the known failure of its loss scaling, `(L − avg) / (|avg| + δ)`: when a
//! group's running average is near 0 (FairPO's non-privileged hinge is exactly 0 for a policy
//! copied from its reference), the first small rise is scaled into the clamp, and the other
//! group's weight is driven to the floor.

use serde::{Deserialize, Serialize};

/// A group weight below this counts as switched off.
pub(crate) const ALPHA_FLOOR: f64 = 0.02;
/// Consecutive steps below the floor before the run is warned about.
pub(crate) const SUSTAINED_STEPS: u64 = 50;

/// Per-group count of consecutive steps below the floor; part of the checkpointed trainer
/// state, so a resumed run warns exactly where an uninterrupted one would.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CollapseWatch {
    below: Vec<u64>,
    warned: Vec<bool>,
}

impl CollapseWatch {
    /// Records one step's weights; returns the groups that have just completed
    /// [`SUSTAINED_STEPS`] steps below the floor (each group is reported once per run).
    pub(crate) fn observe(&mut self, alpha: &[f64]) -> Vec<usize> {
        self.below.resize(alpha.len(), 0);
        self.warned.resize(alpha.len(), false);
        let mut out = Vec::new();
        for (g, &a) in alpha.iter().enumerate() {
            if a < ALPHA_FLOOR {
                self.below[g] += 1;
                if self.below[g] >= SUSTAINED_STEPS && !self.warned[g] {
                    self.warned[g] = true;
                    out.push(g);
                }
            } else {
                self.below[g] = 0;
            }
        }
        out
    }
}

/// The warning for `group` (0 = P, 1 = P̄) collapsing at `step` under a scheduler with `delta`.
pub(crate) fn message(
    group: usize,
    step: u64,
    kind: fairpo_grpo::SchedulerKind,
    delta: f64,
) -> String {
    let name = if group == 0 {
        "privileged (P)"
    } else {
        "non-privileged (P̄)"
    };
    let cause = match kind {
        fairpo_grpo::SchedulerKind::Grpo => format!(
            "likely GRPO's loss scaling with scheduler.delta = {delta:e}: a group loss whose running average is near 0 (the P̄ hinge of a policy copied from its reference starts at exactly 0) turns its first small rise into the clamp; raise scheduler.delta (e.g. 0.1) or start from fresh heads (model.init_heads = \"fresh\")"
        ),
        fairpo_grpo::SchedulerKind::Gdro => {
            "GDRO moves weight to the worse group; the other group's loss is much lower, or scheduler.eta_alpha is large".to_string()
        }
        fairpo_grpo::SchedulerKind::Fixed => "scheduler.weights gives it almost no weight".to_string(),
    };
    format!(
        "the {name} group's weight α has stayed below {ALPHA_FLOOR} for {SUSTAINED_STEPS} steps (up to step {step}): it has effectively stopped training; {cause}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_once_after_a_sustained_stretch_and_resets_on_recovery() {
        let mut w = CollapseWatch::default();
        for _ in 0..SUSTAINED_STEPS - 1 {
            assert!(w.observe(&[0.01, 0.99]).is_empty());
        }
        // A recovery resets the count.
        assert!(w.observe(&[0.5, 0.5]).is_empty());
        for _ in 0..SUSTAINED_STEPS - 1 {
            assert!(w.observe(&[0.01, 0.99]).is_empty());
        }
        assert_eq!(w.observe(&[0.01, 0.99]), vec![0]);
        // Reported once.
        for _ in 0..10 {
            assert!(w.observe(&[0.001, 0.999]).is_empty());
        }
        // Exactly at the floor is not below it.
        let mut w = CollapseWatch::default();
        for _ in 0..2 * SUSTAINED_STEPS {
            assert!(w.observe(&[ALPHA_FLOOR, 1.0 - ALPHA_FLOOR]).is_empty());
        }
    }

    #[test]
    fn the_message_names_group_step_and_cause() {
        let m = message(0, 123, fairpo_grpo::SchedulerKind::Grpo, 1e-6);
        assert!(
            m.contains("privileged (P)")
                && m.contains("step 123")
                && m.contains("scheduler.delta = 1e-6"),
            "{m}"
        );
    }
}
