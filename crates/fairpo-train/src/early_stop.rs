//! Early stopping on a validation metric, with its state kept in checkpoints.

use serde::{Deserialize, Serialize};

/// What an epoch's validation result means for training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EpochVerdict {
    /// The metric improved: this epoch's model is the new best.
    Improved,
    /// No improvement, but patience is not exhausted yet.
    Wait,
    /// No improvement for `patience` epochs in a row: stop.
    Stop,
}

/// Tracks the best validation value (higher is better) and the epochs since it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct EarlyStopping {
    /// Epochs without improvement tolerated before stopping (0 = never stop early).
    pub patience: usize,
    /// Best value seen so far.
    pub best: Option<f64>,
    /// Epoch (0-based) of the best value.
    pub best_epoch: Option<usize>,
    /// Epochs since the last improvement.
    pub epochs_without_improvement: usize,
}

impl EarlyStopping {
    /// A fresh tracker.
    pub(crate) fn new(patience: usize) -> Self {
        Self {
            patience,
            best: None,
            best_epoch: None,
            epochs_without_improvement: 0,
        }
    }

    /// Records the metric of `epoch`. A NaN value never counts as an improvement.
    pub(crate) fn observe(&mut self, epoch: usize, value: f64) -> EpochVerdict {
        let improved = match self.best {
            _ if value.is_nan() => false,
            None => true,
            Some(best) => value > best,
        };
        if improved {
            self.best = Some(value);
            self.best_epoch = Some(epoch);
            self.epochs_without_improvement = 0;
            EpochVerdict::Improved
        } else {
            self.epochs_without_improvement += 1;
            if self.patience > 0 && self.epochs_without_improvement >= self.patience {
                EpochVerdict::Stop
            } else {
                EpochVerdict::Wait
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_patience_epochs_without_improvement() {
        let mut es = EarlyStopping::new(2);
        assert_eq!(es.observe(0, 0.5), EpochVerdict::Improved);
        assert_eq!(es.observe(1, 0.6), EpochVerdict::Improved);
        assert_eq!(es.observe(2, 0.6), EpochVerdict::Wait); // equal is not better
        assert_eq!(es.observe(3, 0.7), EpochVerdict::Improved);
        assert_eq!(es.observe(4, 0.1), EpochVerdict::Wait);
        assert_eq!(es.observe(5, 0.65), EpochVerdict::Stop);
        assert_eq!(es.best, Some(0.7));
        assert_eq!(es.best_epoch, Some(3));
    }

    #[test]
    fn nan_never_improves_and_zero_patience_never_stops() {
        let mut es = EarlyStopping::new(0);
        assert_eq!(es.observe(0, f64::NAN), EpochVerdict::Wait);
        assert_eq!(es.best, None);
        for e in 1..10 {
            assert_ne!(es.observe(e, 0.0 - e as f64), EpochVerdict::Stop);
        }
        assert_eq!(es.best_epoch, Some(1));
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut es = EarlyStopping::new(5);
        es.observe(0, 0.3);
        es.observe(1, 0.2);
        let back: EarlyStopping =
            serde_json::from_str(&serde_json::to_string(&es).unwrap()).unwrap();
        assert_eq!(back, es);
    }
}
