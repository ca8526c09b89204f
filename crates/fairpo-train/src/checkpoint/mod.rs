//! The resumable checkpoint (`checkpoints/last.ckpt`: trainer state, policy, AdamW moments)
//! and the best policy so far (`checkpoints/best.ckpt`), each one sections file (`sections.rs`) written atomically.

pub(crate) mod model_file;
pub(crate) mod sections;

use anyhow::{anyhow, Context, Result};
use burn::optim::Optimizer;
use burn::prelude::*;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use fairpo_grpo::SchedulerState;
use fairpo_vit::{record_from_bytes, record_to_bytes};
use serde::{Deserialize, Serialize};

use crate::checkpoint::sections::SectionFile;
use crate::early_stop::EarlyStopping;
use crate::policy::Policy;
use crate::run::RunPaths;

/// Everything that changes during training besides the weights and optimizer moments.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct TrainerState {
    /// Epoch in progress (0-based).
    pub epoch: usize,
    /// Batches of that epoch already trained.
    pub batches_done: usize,
    /// Optimiser steps so far.
    pub step: u64,
    /// Early-stopping tracker.
    pub early: EarlyStopping,
    /// Group-weight scheduler state.
    pub scheduler: SchedulerState,
    /// Bytes of `log.jsonl` that belong to the state (a resume truncates to this).
    pub log_len: u64,
    /// Running sums of the current epoch's training loss.
    pub epoch_loss_sum: f64,
    /// Steps in that sum.
    pub epoch_loss_steps: usize,
    /// Seconds spent in the current epoch before the checkpoint.
    pub epoch_seconds: f64,
    /// Total training seconds so far.
    pub train_seconds: f64,
    /// Training loop over (early stop or last epoch); only the final evaluation is left.
    pub done: bool,
    /// Seed the run was started with (pair sampling streams derive from it and the step).
    pub seed: u64,
    /// Steps each group's weight has spent below the collapse floor.
    #[serde(default)]
    pub collapse: crate::collapse::CollapseWatch,
}

pub(crate) fn save_last<B: AutodiffBackend, O: Optimizer<Policy<B>, B>>(
    paths: &RunPaths,
    state: &TrainerState,
    policy: &Policy<B>,
    optim: &O,
) -> Result<()> {
    let mut c = SectionFile::new();
    c.insert("state", serde_json::to_vec_pretty(state)?);
    c.insert(
        "policy",
        record_to_bytes(policy.clone()).map_err(|e| anyhow!("serialising the policy: {e}"))?,
    );
    let optim_bytes = BinBytesRecorder::<FullPrecisionSettings>::default()
        .record(optim.to_record(), ())
        .map_err(|e| anyhow!("serialising the optimizer state: {e}"))?;
    c.insert("optim", optim_bytes);
    fairpo_io::atomic_write(paths.last_checkpoint(), &c.encode())?;
    Ok(())
}

/// Reads `checkpoints/last.ckpt` into a policy and optimizer of the run's structure.
pub(crate) fn load_last<B: AutodiffBackend, O: Optimizer<Policy<B>, B>>(
    paths: &RunPaths,
    policy: Policy<B>,
    optim: O,
    device: &B::Device,
) -> Result<(TrainerState, Policy<B>, O)> {
    let p = paths.last_checkpoint();
    let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    let mut c = SectionFile::decode(&bytes).with_context(|| format!("{}", p.display()))?;
    let state: TrainerState = serde_json::from_slice(c.get("state")?)
        .with_context(|| format!("{}: state", p.display()))?;
    let policy = record_from_bytes(policy, c.take("policy")?, device)
        .map_err(|e| anyhow!("{}: policy: {e}", p.display()))?;
    let rec = BinBytesRecorder::<FullPrecisionSettings>::default()
        .load(c.take("optim")?, device)
        .map_err(|e| anyhow!("{}: optimizer state: {e}", p.display()))?;
    Ok((state, policy, optim.load_record(rec)))
}

/// Writes `checkpoints/best.ckpt` (the policy of `epoch`).
pub(crate) fn save_best<B: Backend>(
    paths: &RunPaths,
    epoch: usize,
    policy: &Policy<B>,
) -> Result<()> {
    let mut c = SectionFile::new();
    c.insert("epoch", epoch.to_string().into_bytes());
    c.insert(
        "policy",
        record_to_bytes(policy.clone()).map_err(|e| anyhow!("serialising the policy: {e}"))?,
    );
    fairpo_io::atomic_write(paths.best_checkpoint(), &c.encode())?;
    Ok(())
}

/// Reads `checkpoints/best.ckpt` into a policy of the run's structure.
pub(crate) fn load_best<B: Backend>(
    paths: &RunPaths,
    policy: Policy<B>,
    device: &B::Device,
) -> Result<Policy<B>> {
    let p = paths.best_checkpoint();
    let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    let mut c = SectionFile::decode(&bytes).with_context(|| format!("{}", p.display()))?;
    record_from_bytes(policy, c.take("policy")?, device)
        .map_err(|e| anyhow!("{}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::{AdamWConfig, GradientsParams};
    use fairpo_heads::HeadsConfig;

    use crate::checkpoint::model_file;

    type Ad = burn::backend::Autodiff<burn::backend::Flex>;

    fn tiny_policy(seed: u64) -> Policy<Ad> {
        let device = Default::default();
        let cfg = model_file::test_vit_config();
        <Ad as Backend>::seed(&device, seed);
        let (_, tail) = cfg.init::<Ad>(&device).split_frozen(1);
        Policy {
            tail,
            heads: HeadsConfig::new(3, 16)
                .with_hidden(vec![4])
                .with_seed(seed)
                .init(&device),
        }
    }

    fn step<O: Optimizer<Policy<Ad>, Ad>>(
        policy: Policy<Ad>,
        optim: &mut O,
        x: &Tensor<Ad, 3>,
    ) -> Policy<Ad> {
        let loss = policy.forward(x.clone()).powf_scalar(2.0).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &policy);
        optim.step(1e-2, policy, grads)
    }

    /// The policy's output on a fixed input: equal outputs <=> (here) equal weights.
    fn outputs(p: &Policy<Ad>) -> Vec<f32> {
        let x = Tensor::<Ad, 3>::ones([1, 5, 16], &Default::default());
        p.forward(x)
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn checkpoint_round_trip_continues_exactly() {
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let paths = RunPaths::new(dir.path());
        std::fs::create_dir_all(paths.checkpoints()).unwrap();
        let x = Tensor::<Ad, 3>::random(
            [4, 5, 16],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let adamw = AdamWConfig::new()
            .with_weight_decay(0.01)
            .with_grad_clipping(Some(burn::grad_clipping::GradientClippingConfig::Norm(1.0)));
        let mut optim = adamw.init::<Ad, Policy<Ad>>();
        let mut policy = tiny_policy(1);
        for _ in 0..3 {
            policy = step(policy, &mut optim, &x);
        }
        let state = TrainerState {
            epoch: 2,
            batches_done: 7,
            step: 3,
            early: EarlyStopping::new(5),
            scheduler: fairpo_grpo::SchedulerConfig::default()
                .init(2)
                .unwrap()
                .state()
                .clone(),
            log_len: 123,
            epoch_loss_sum: 1.5,
            epoch_loss_steps: 3,
            epoch_seconds: 2.0,
            train_seconds: 10.0,
            done: false,
            seed: 42,
            collapse: Default::default(),
        };
        save_last(&paths, &state, &policy, &optim).unwrap();

        // Uninterrupted: two more steps.
        let mut cont = policy;
        for _ in 0..2 {
            cont = step(cont, &mut optim, &x);
        }
        // Restored into a differently initialised policy (other weights, other param ids)
        // and a fresh optimizer: the same two steps give the same weights, which needs the
        // AdamW moments (keyed by param id) to come back with the weights.
        let (back_state, mut restored, mut optim2) = load_last(
            &paths,
            tiny_policy(2),
            adamw.init::<Ad, Policy<Ad>>(),
            &device,
        )
        .unwrap();
        assert_eq!(back_state, state);
        for _ in 0..2 {
            restored = step(restored, &mut optim2, &x);
        }
        assert_eq!(outputs(&restored), outputs(&cont));
        // Without the optimizer state the continuation differs (so the check can fail).
        let (_, mut p3, _) = load_last(
            &paths,
            tiny_policy(2),
            adamw.init::<Ad, Policy<Ad>>(),
            &device,
        )
        .unwrap();
        let mut optim3 = adamw.init::<Ad, Policy<Ad>>();
        for _ in 0..2 {
            p3 = step(p3, &mut optim3, &x);
        }
        assert_ne!(outputs(&p3), outputs(&cont));
    }
}
