//! One optimiser step: policy forward on the trunk's output → objective → group weights →
//! weighted loss → backward → clipping → AdamW. The trainer's loop, `bench_train` and the
//! trajectory-parity tests all call [`train_step`], so what they measure is what trains.

use anyhow::{bail, Result};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fairpo_grpo::Scheduler;
use fairpo_objectives::{Counts, Diagnostics, ObjectiveConfig, ObjectiveInputs, PairPlan};
use rand::SeedableRng;

use crate::clip::{clip_global_norm, ClipScope};
use crate::config::TrainSettings;
use crate::policy::Policy;
use crate::replica::{zero_gradients, Replica};

/// The RNG for the objective's random choices at `step`: a fresh ChaCha8 stream keyed by
/// (seed, step), so a resumed run draws exactly what an uninterrupted one would.
pub fn step_rng(seed: u64, step: u64) -> rand_chacha::ChaCha8Rng {
    replica_step_rng(seed, step, 0)
}

/// [`step_rng`] of data-parallel replica `rank` (rank 0's stream is [`step_rng`]'s, so a
/// single-device run draws what it always drew).
pub fn replica_step_rng(seed: u64, step: u64, rank: usize) -> rand_chacha::ChaCha8Rng {
    let seed = seed ^ (rank as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    rand_chacha::ChaCha8Rng::seed_from_u64(z ^ (z >> 31))
}

/// AdamW as `[train]` describes it (ε and betas as PyTorch's unless set; burn's per-tensor
/// clipping only with `grad_clip_scope = "per_parameter"`).
pub fn adamw(train: &TrainSettings) -> AdamWConfig {
    let mut c = AdamWConfig::new()
        .with_weight_decay(train.weight_decay as f32)
        .with_epsilon(train.adam_epsilon as f32)
        .with_beta_1(train.adam_betas[0] as f32)
        .with_beta_2(train.adam_betas[1] as f32);
    if train.grad_clip > 0.0 && train.grad_clip_scope == ClipScope::PerParameter {
        c = c.with_grad_clipping(Some(burn::grad_clipping::GradientClippingConfig::Norm(
            train.grad_clip as f32,
        )));
    }
    c
}

/// Where the objective's random choices come from.
pub enum Pairs<'a> {
    /// Drawn from this stream (training: [`step_rng`]).
    Draw(&'a mut rand_chacha::ChaCha8Rng),
    /// Given explicitly (parity tests against a reference implementation).
    Plan(&'a PairPlan),
}

/// What the reference model contributes to a step.
pub enum Reference<'a, B: Backend> {
    /// The frozen reference policy, run on the step's hidden states.
    Model(&'a Policy<B>),
    /// Its logits `[B, T]` for the batch, already known (the trunk store's cached reference
    /// outputs).
    Logits(Tensor<B, 2>),
}

/// The fixed settings of every step of a run.
#[derive(Clone, Copy, Debug)]
pub struct StepSettings<'a> {
    /// The objective.
    pub objective: &'a ObjectiveConfig,
    /// `privileged[t]` = label t is in P.
    pub privileged: &'a [bool],
    /// Learning rate.
    pub lr: f64,
    /// Global-norm clipping bound (PyTorch `clip_grad_norm_`), `None` = off.
    pub clip_global: Option<f64>,
    /// Which data-parallel worker steps ([`Replica::SINGLE`] for one device).
    pub replica: Replica,
}

impl<'a> StepSettings<'a> {
    /// The settings a run's `[train]` and `[objective]` give.
    pub fn new(
        train: &TrainSettings,
        objective: &'a ObjectiveConfig,
        privileged: &'a [bool],
    ) -> Self {
        let clip_global = (train.grad_clip > 0.0 && train.grad_clip_scope == ClipScope::Global)
            .then_some(train.grad_clip);
        Self {
            objective,
            privileged,
            lr: train.lr,
            clip_global,
            replica: Replica::SINGLE,
        }
    }
}

/// What one step did, on the host.
#[derive(Clone, Debug)]
pub struct StepReport {
    /// The loss that was minimised.
    pub loss: f64,
    /// `[L_P, L_P̄]`.
    pub group_losses: [f64; 2],
    /// The group weights used in this step's loss (after the scheduler's step), when the
    /// method uses them.
    pub alpha: Option<Vec<f64>>,
    /// Global L2 norm of the gradients before clipping, when global-norm clipping computed it
    /// (otherwise not computed: it costs a reduction and a host read per step).
    pub grad_norm: Option<f64>,
    /// The objective's pair counts.
    pub diagnostics: Diagnostics,
}

/// Trains `policy` on one batch and returns the updated policy.
///
/// `scheduler` is stepped on the group losses when the objective uses group weights
/// (GRPO, GDRO), and must then be given. With a data-parallel `settings.replica` the batch is
/// this replica's shard of the global batch: the objective's counts, the group losses and the
/// gradients are summed over the replicas (means over the global batch, the same α and the
/// same update everywhere), and clipping sees the summed gradients.
///
/// # Shapes
/// - hidden: the frozen trunk's output `[B, S, D]` (patches `[B, N, C·p·p]` when every layer
///   trains)
/// - targets: `B·T` 0/1 values, row-major
#[allow(clippy::too_many_arguments)]
pub fn train_step<B: AutodiffBackend, O: Optimizer<Policy<B>, B>>(
    policy: Policy<B>,
    optim: &mut O,
    scheduler: Option<&mut Scheduler>,
    reference: Option<Reference<'_, B::InnerBackend>>,
    hidden: Tensor<B::InnerBackend, 3>,
    targets: &[u8],
    pairs: Pairs<'_>,
    settings: &StepSettings<'_>,
) -> Result<(Policy<B>, StepReport)> {
    let [b, _, _] = hidden.dims();
    let device = hidden.device();
    let t = settings.privileged.len();
    if targets.len() != b * t {
        bail!(
            "a batch of {b} images has {} target values, expected {b}×{t}",
            targets.len()
        );
    }
    let logits = policy.forward(Tensor::<B, 3>::from_inner(hidden.clone()));
    if let Some(Reference::Logits(l)) = &reference {
        if l.dims() != [b, t] {
            bail!(
                "stored reference logits of shape {:?} for a batch of {b} images and {t} labels",
                l.dims()
            );
        }
    }
    let reference_logits = reference.map(|r| {
        Tensor::<B, 2>::from_inner(match r {
            Reference::Model(policy) => policy.forward(hidden),
            Reference::Logits(logits) => logits,
        })
    });
    let targets = Tensor::<B, 2>::from_data(
        TensorData::new(targets.iter().map(|&v| f32::from(v)).collect(), [b, t]),
        &device,
    );
    let inputs = ObjectiveInputs {
        logits,
        targets,
        privileged: settings.privileged,
        reference: reference_logits,
    };
    let prepared = match pairs {
        Pairs::Draw(rng) => fairpo_objectives::prepare(settings.objective, inputs, rng)?,
        Pairs::Plan(plan) => {
            fairpo_objectives::prepare_with_plan(settings.objective, inputs, plan)?
        }
    };
    let replica = settings.replica;
    let counts = Counts::from_array(
        replica.sum::<B::InnerBackend, 4>(prepared.counts().to_array(), &device)?,
    );
    let out = prepared.evaluate(&counts);
    let [l_p, l_np] = out.group_values();
    // (A host read only the replicas need.)
    let total = match &out.total {
        Some(t) if replica.is_parallel() => t.clone().into_scalar().elem::<f64>(),
        _ => 0.0,
    };
    let (group_losses, alpha, total) =
        global_losses::<B::InnerBackend>(scheduler, [l_p, l_np, total], settings, &device)?;
    let loss = out.combine(alpha.as_deref().unwrap_or(&[0.5, 0.5]));
    let loss_value = if replica.is_parallel() {
        global_loss(alpha.as_deref(), group_losses, total)
    } else {
        loss.clone().into_scalar().elem()
    };
    check_finite(loss_value)?;
    let grads = GradientsParams::from_grads(loss.backward(), &policy);
    let (policy, grad_norm) = update(policy, optim, grads, settings)?;
    Ok((
        policy,
        StepReport {
            loss: loss_value,
            group_losses,
            alpha,
            grad_norm,
            diagnostics: out.diagnostics,
        },
    ))
}

/// The step of a data-parallel replica whose shard of the global batch is empty (the last
/// batch of an epoch with fewer images than devices, or every image of the shard skipped): it
/// contributes nothing but takes part in every reduction, so it applies the same update as
/// the others.
pub fn idle_step<B: AutodiffBackend, O: Optimizer<Policy<B>, B>>(
    policy: Policy<B>,
    optim: &mut O,
    scheduler: Option<&mut Scheduler>,
    settings: &StepSettings<'_>,
    device: &B::Device,
) -> Result<(Policy<B>, StepReport)> {
    let replica = settings.replica;
    if !replica.is_parallel() {
        bail!("an empty batch on a single device");
    }
    replica.sum::<B::InnerBackend, 4>([0.0; 4], device)?;
    let (group_losses, alpha, total) =
        global_losses::<B::InnerBackend>(scheduler, [0.0; 3], settings, device)?;
    let loss_value = global_loss(alpha.as_deref(), group_losses, total);
    check_finite(loss_value)?;
    let grads = zero_gradients(&policy);
    let (policy, grad_norm) = update(policy, optim, grads, settings)?;
    Ok((
        policy,
        StepReport {
            loss: loss_value,
            group_losses,
            alpha,
            grad_norm,
            diagnostics: Diagnostics::default(),
        },
    ))
}

/// From this replica's `[L_P, L_P̄, total]` (each already divided by the global counts): the
/// global group losses, the scheduler's α (stepped on them) and the global `total`.
fn global_losses<B: Backend>(
    scheduler: Option<&mut Scheduler>,
    local: [f64; 3],
    settings: &StepSettings<'_>,
    device: &B::Device,
) -> Result<([f64; 2], Option<Vec<f64>>, f64)> {
    let [l_p, l_np, total] = settings.replica.sum::<B, 3>(local, device)?;
    let group_losses = [l_p, l_np];
    let alpha = match (settings.objective.uses_group_weights(), scheduler) {
        (true, Some(s)) => Some(s.try_step(&group_losses)?),
        (true, None) => bail!(
            "objective {:?} needs a group-weight scheduler",
            settings.objective.method
        ),
        (false, _) => None,
    };
    Ok((group_losses, alpha, total))
}

/// The loss of the global batch: `total` for methods that have one, else α·[L_P, L_P̄].
fn global_loss(alpha: Option<&[f64]>, [l_p, l_np]: [f64; 2], total: f64) -> f64 {
    match alpha {
        Some(a) => a[0] * l_p + a[1] * l_np,
        None => total,
    }
}

/// Every replica sees the same global loss, so all of them stop here together.
fn check_finite(loss: f64) -> Result<()> {
    if !loss.is_finite() {
        bail!("the training loss became {loss}; lower train.lr?");
    }
    Ok(())
}

/// Sums the gradients over the replicas, clips them and applies AdamW. Returns the norm
/// before clipping when global-norm clipping computed it.
fn update<B: AutodiffBackend, O: Optimizer<Policy<B>, B>>(
    policy: Policy<B>,
    optim: &mut O,
    grads: GradientsParams,
    settings: &StepSettings<'_>,
) -> Result<(Policy<B>, Option<f64>)> {
    let grads = settings.replica.sum_gradients::<B>(grads)?;
    let (grads, grad_norm) = match settings.clip_global {
        Some(max) => {
            let (g, n) = clip_global_norm(&policy, grads, max);
            (g, Some(n))
        }
        None => (grads, None),
    };
    Ok((optim.step(settings.lr, policy, grads), grad_norm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_rng_depends_on_seed_and_step_only() {
        use rand::Rng;
        let a: u64 = step_rng(42, 7).random();
        assert_eq!(a, step_rng(42, 7).random::<u64>());
        assert_ne!(a, step_rng(42, 8).random::<u64>());
        assert_ne!(a, step_rng(43, 7).random::<u64>());
    }
}
