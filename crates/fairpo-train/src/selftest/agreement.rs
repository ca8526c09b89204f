//! The `agreement` rows: the CPU backend with this project's host kernels against the device
//! under test, from the same seeded random ViT, heads and batch: the ViT's CLS output, and one
//! FairPO-CPO step of the last two layers + heads (loss, group losses, GRPO's α, every
//! parameter's gradient). Two layers, so that both host paths of a trainable layer run: the
//! full layer with its hand-written backward, and the CLS-only last layer.
//!
//! On `--device cpu` the other side is burn's `NdArray` backend, which runs none of the host
//! kernels, so the kernels are checked against an independent implementation of every op.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::SgdConfig;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fairpo_heads::HeadsConfig;
use fairpo_objectives::ObjectiveConfig;
use fairpo_vit::ViTConfig;
use rand::{Rng, SeedableRng};

use super::{parity::max_diff, Report, SelftestOptions};
use crate::config::TrainSettings;
use crate::device::{run_on, BackendTask, CpuBackend, DeviceSpec};
use crate::policy::Policy;
use crate::step::{self, Pairs, StepSettings};

const SECTION: &str = "agreement";
/// SGD's learning rate: the update is −LR·g, so g = (before − after)/LR with the rounding of
/// `before` divided by LR.
const LR: f64 = 1e3;
const BATCH: usize = 2;

/// The step's shapes: (ViT, labels, privileged, head widths).
pub(super) fn shapes(quick: bool) -> (ViTConfig, usize, usize, Vec<usize>) {
    if quick {
        (super::throughput::quick_vit(), 12, 3, vec![16, 4])
    } else {
        (ViTConfig::base_patch16_224(), 80, 16, vec![256, 64, 16, 4])
    }
}

/// Bounds, relative to the host side's largest magnitude: (CLS, losses, α, gradients).
/// CPU: two f32 implementations that differ in summation order; measured on the 2-core Xeon
/// (AVX-512): gradients 7.8e-7 (quick) and 3.4e-5 (ViT-B/16), CLS 1.8e-7 / 1.3e-6. With
/// burn's tanh-derivative GELU backward on the NdArray side (fixed in fairpo-vit) the
/// gradients of one trainable layer missed by 5.6e-5 / 3.3e-4, so the bounds catch that. CUDA: TF32 matmuls
/// (10-bit mantissa); not yet measured on a GPU.
fn bounds(device: DeviceSpec, quick: bool) -> [f64; 4] {
    match (device, quick) {
        (DeviceSpec::Cpu, true) => [1e-5, 1e-5, 1e-6, 1e-5],
        (DeviceSpec::Cpu, false) => [1e-4, 1e-5, 1e-6, 2e-4],
        (DeviceSpec::Cuda(_), _) => [5e-3, 1e-3, 1e-4, 2e-2],
    }
}

pub(super) fn check(opts: &SelftestOptions, report: &mut Report) {
    match compare(opts) {
        Ok(rows) => {
            let [b_cls, b_loss, b_alpha, b_grad] = bounds(opts.device, opts.quick);
            let other = match opts.device {
                DeviceSpec::Cpu => "NdArray".to_string(),
                d => d.to_string(),
            };
            report.at_most(
                SECTION,
                format!("CLS, host kernels vs {other} (relative)"),
                rows.cls,
                b_cls,
            );
            report.at_most(
                SECTION,
                "FairPO-CPO loss and group losses (relative)",
                rows.loss,
                b_loss,
            );
            report.at_most(
                SECTION,
                "GRPO α after the step (absolute)",
                rows.alpha,
                b_alpha,
            );
            report.at_most(
                SECTION,
                format!(
                    "gradients of the last 2 layers + heads, worst of {} tensors (relative)",
                    rows.tensors
                ),
                rows.grads,
                b_grad,
            );
        }
        Err(e) => report.outcome(SECTION, "host kernels vs device", Err(e)),
    }
}

struct Differences {
    cls: f64,
    loss: f64,
    alpha: f64,
    grads: f64,
    tensors: usize,
}

fn compare(opts: &SelftestOptions) -> Result<Differences> {
    let (cfg, ..) = shapes(opts.quick);
    let dir = tempfile::tempdir()?;
    crate::random_backbone::write_random_backbone(dir.path(), &cfg, 7)?;
    let task = CpoStep {
        weights: dir.path().to_path_buf(),
        quick: opts.quick,
    };
    let host = task.clone().run::<CpuBackend>(Default::default())?;
    let other = match opts.device {
        DeviceSpec::Cpu => {
            task.run::<burn::backend::Autodiff<burn::backend::NdArray>>(Default::default())?
        }
        DeviceSpec::Cuda(_) => run_on(&opts.device, task)??,
    };
    let rel = |a: &[f32], b: &[f32]| {
        let (d, s) = max_diff(a, b);
        d / s.max(f64::MIN_POSITIVE)
    };
    anyhow::ensure!(
        host.grads.len() == other.grads.len() && host.alpha.len() == other.alpha.len(),
        "the two sides have different parameters or groups"
    );
    let to_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    Ok(Differences {
        cls: rel(&other.cls, &host.cls),
        loss: rel(&to_f32(&other.losses), &to_f32(&host.losses)),
        alpha: max_diff(&to_f32(&other.alpha), &to_f32(&host.alpha)).0,
        grads: worst_gradient(&host.grads, &other.grads),
        tensors: host.grads.len(),
    })
}

/// The largest difference of any tensor's gradient, relative to that tensor's largest
/// gradient, floored at 1e-3 of the largest gradient of all: some gradients are zero in exact
/// arithmetic (the attention key's bias: softmax ignores a constant shift), so relative to
/// themselves they are rounding noise.
fn worst_gradient(reference: &[Vec<f32>], other: &[Vec<f32>]) -> f64 {
    if reference.len() != other.len() {
        return f64::INFINITY;
    }
    let scales: Vec<(f64, f64)> = reference
        .iter()
        .zip(other)
        .map(|(r, o)| max_diff(o, r))
        .collect();
    let floor = 1e-3 * scales.iter().map(|&(_, s)| s).fold(0.0, f64::max);
    scales
        .iter()
        .map(|&(d, s)| d / s.max(floor).max(f64::MIN_POSITIVE))
        .fold(0.0, f64::max)
}

/// What one backend computed.
struct StepResult {
    cls: Vec<f32>,
    /// `[loss, L_P, L_P̄]`.
    losses: Vec<f64>,
    alpha: Vec<f64>,
    grads: Vec<Vec<f32>>,
}

#[derive(Clone)]
struct CpoStep {
    weights: std::path::PathBuf,
    quick: bool,
}

impl BackendTask for CpoStep {
    type Output = Result<StepResult>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        cpo_step::<B>(&self.weights, self.quick, &device)
    }
}

fn cpo_step<B: AutodiffBackend>(
    weights: &Path,
    quick: bool,
    device: &B::Device,
) -> Result<StepResult> {
    let (cfg, t, p, hidden) = shapes(quick);
    let vit = fairpo_vit::load_hf_dir::<B>(weights, device)?.model;
    let pixels = Tensor::<B::InnerBackend, 4>::from_data(seeded_pixels(&cfg), device);
    let cls = vit.valid().forward(pixels.clone()).into_data();
    let (trunk, tail) = vit.split_frozen(2);
    let heads = HeadsConfig::new(t, cfg.hidden_size).with_hidden(hidden);
    let (policy, reference) = super::policy_and_reference(tail, &heads, device);
    let train = TrainSettings {
        lr: LR,
        grad_clip: 0.0,
        ..Default::default()
    };
    let objective = ObjectiveConfig::default(); // FairPO-CPO
    let privileged: Vec<bool> = (0..t).map(|i| i < p).collect();
    let settings = StepSettings::new(&train, &objective, &privileged);
    // The released code's first step (the raw losses move α), so α depends on the step's
    // losses already; the default first step leaves α at 0.5 whatever they are.
    let mut scheduler = fairpo_grpo::SchedulerConfig {
        first_step: fairpo_grpo::FirstStep::RawLoss,
        ..Default::default()
    }
    .init(2)?;
    // Every image has two true labels, one of them privileged, so both groups have pairs.
    let targets: Vec<u8> = (0..BATCH * t)
        .map(|i| {
            let (row, label) = (i / t, i % t);
            u8::from(label == row % p || label == p + (3 * row) % (t - p))
        })
        .collect();
    let before = parameters(&policy.valid())?;
    let mut optim = SgdConfig::new().init::<B, Policy<B>>();
    let mut rng = step::step_rng(0, 0);
    let (policy, out) = step::train_step(
        policy,
        &mut optim,
        Some(&mut scheduler),
        Some(step::Reference::Model(&reference)),
        trunk.forward(pixels),
        &targets,
        Pairs::Draw(&mut rng),
        &settings,
    )?;
    let after = parameters(&policy.valid())?;
    let grads = before
        .iter()
        .zip(&after)
        .map(|(b, a)| {
            b.iter()
                .zip(a)
                .map(|(b, a)| ((b - a) as f64 / LR) as f32)
                .collect()
        })
        .collect();
    Ok(StepResult {
        cls: cls.to_vec().map_err(|e| anyhow!("{e:?}"))?,
        losses: vec![out.loss, out.group_losses[0], out.group_losses[1]],
        alpha: out.alpha.context("GRPO gave no group weights")?,
        grads,
    })
}

/// A batch of pixels in the model's input range, the same on every backend.
fn seeded_pixels(cfg: &ViTConfig) -> TensorData {
    let n = BATCH * cfg.num_channels * cfg.image_size * cfg.image_size;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    TensorData::new(
        values,
        [BATCH, cfg.num_channels, cfg.image_size, cfg.image_size],
    )
}

/// Every float parameter's values, in the module's visiting order.
fn parameters<B: Backend, M: Module<B>>(m: &M) -> Result<Vec<Vec<f32>>> {
    struct Collect(Vec<Result<Vec<f32>>>);
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            let values = p.val().into_data().convert::<f32>().to_vec();
            self.0
                .push(values.map_err(|e| anyhow!("reading a parameter: {e:?}")));
        }
    }
    let mut c = Collect(Vec::new());
    m.visit(&mut c);
    c.0.into_iter().collect()
}
