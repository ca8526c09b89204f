//! The `throughput` rows: the ViT forward (both attention kinds, and with a bf16 trunk) and
//! the paper's training step (f32 and bf16 trunk)
//! (frozen trunk, trainable last layer + heads, reference tail + heads, FairPO-CPO with GRPO,
//! AdamW) at several batch sizes. Warm-up runs are not timed: kernels are compiled and
//! autotuned at first use on a GPU, and buffers are first allocated on every device.

use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use fairpo_grpo::Scheduler;
use fairpo_heads::HeadsConfig;
use fairpo_objectives::ObjectiveConfig;
use fairpo_vit::{AppliedPrecision, AttentionKind, TrunkPrecision, ViTConfig, ViTTrunk};

use super::{Report, SelftestOptions};
use crate::config::TrainSettings;
use crate::device::{run_on, BackendTask, DeviceSpec};
use crate::policy::Policy;
use crate::step::{self, Pairs, StepSettings};

const SECTION: &str = "throughput";

/// ViT-B/16's structure (patch 16, LayerNorm ε 1e-12) at a width that runs in milliseconds:
/// 32 px images, 2 layers of width 32.
pub fn quick_vit() -> ViTConfig {
    ViTConfig {
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 64,
        image_size: 32,
        ..ViTConfig::base_patch16_224()
    }
}

/// (ViT, forward batch sizes, training-step batch sizes, warm-up runs, timed runs).
fn plan(opts: &SelftestOptions) -> (ViTConfig, Vec<usize>, Vec<usize>, usize, usize) {
    match (opts.quick, opts.device) {
        (true, _) => (quick_vit(), vec![4], vec![4], 1, 1),
        (false, DeviceSpec::Cpu) => (
            ViTConfig::base_patch16_224(),
            vec![8, 32],
            vec![8, 32],
            1,
            2,
        ),
        (false, DeviceSpec::Cuda(_)) => (
            ViTConfig::base_patch16_224(),
            vec![32, 128, 256],
            vec![32, 128, 256],
            3,
            10,
        ),
    }
}

pub(super) fn measure(opts: &SelftestOptions, report: &mut Report) {
    let (cfg, forward, steps, warmup, timed) = plan(opts);
    let name = if opts.quick {
        "small ViT-B/16-shaped ViT"
    } else {
        "ViT-B/16"
    };
    for attention in [AttentionKind::Matmul, AttentionKind::Fused] {
        for &batch in &forward {
            let task = Measure {
                cfg: cfg.clone(),
                work: Work::Forward(attention),
                batch,
                warmup,
                timed,
            };
            let what = format!("{name} forward, batch {batch}, {attention:?} attention");
            row(report, what, batch, run_on(&opts.device, task));
        }
    }
    for &batch in &forward {
        let task = Measure {
            cfg: cfg.clone(),
            work: Work::ForwardBf16Trunk,
            batch,
            warmup,
            timed,
        };
        let what = format!("{name} forward, batch {batch}, bf16 trunk (all but the last layer)");
        row(report, what, batch, run_on(&opts.device, task));
    }
    for precision in [TrunkPrecision::F32, TrunkPrecision::Bf16] {
        for &batch in &steps {
            let task = Measure {
                cfg: cfg.clone(),
                work: Work::Step(precision),
                batch,
                warmup,
                timed,
            };
            let what = format!(
                "paper's training step ({name}, last layer + 80 heads, CPO + GRPO, AdamW), {} trunk, batch {batch}",
                precision.name()
            );
            row(report, what, batch, run_on(&opts.device, task));
        }
    }
}

fn row(
    report: &mut Report,
    what: String,
    batch: usize,
    measured: Result<Result<(f64, Option<AppliedPrecision>)>, crate::device::DeviceError>,
) {
    match measured.map_err(anyhow::Error::from).and_then(|r| r) {
        Ok((s, applied)) => {
            // A bf16 row that fell back says so, so that it is not read as a bf16 figure.
            let note = match applied {
                Some(AppliedPrecision::F32 {
                    fallback: Some(why),
                }) => {
                    format!("; ran in f32: {why}")
                }
                _ => String::new(),
            };
            report.push(
                SECTION,
                what,
                format!(
                    "{:.1} img/s ({:.1} ms per batch){note}",
                    batch as f64 / s,
                    1e3 * s
                ),
            )
        }
        Err(e) => report.outcome(SECTION, what, Err(e)),
    }
}

/// Mean seconds of `timed` runs of `f` after `warmup` untimed ones.
fn time(warmup: usize, timed: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let t = Instant::now();
    for _ in 0..timed {
        f()?;
    }
    Ok(t.elapsed().as_secs_f64() / timed.max(1) as f64)
}

/// What one throughput row times.
#[derive(Clone, Copy)]
enum Work {
    /// The ViT's inference forward with this attention kind.
    Forward(AttentionKind),
    /// The forward with every layer but the last as a bf16 trunk.
    ForwardBf16Trunk,
    /// [`PaperStep`] with 80 labels, 16 of them privileged, and this trunk precision.
    Step(TrunkPrecision),
}

struct Measure {
    cfg: ViTConfig,
    work: Work,
    batch: usize,
    warmup: usize,
    timed: usize,
}

impl BackendTask for Measure {
    /// Seconds per batch, and the trunk precision applied where one was asked for.
    type Output = Result<(f64, Option<AppliedPrecision>)>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let (warmup, timed) = (self.warmup, self.timed);
        let s = self.cfg.image_size;
        let x = || {
            Tensor::<B::InnerBackend, 4>::random(
                [self.batch, 3, s, s],
                Distribution::Normal(0.0, 1.0),
                &device,
            )
        };
        match self.work {
            Work::Forward(attention) => {
                let vit = self
                    .cfg
                    .try_init::<B::InnerBackend>(&device)?
                    .with_attention(attention);
                let x = x();
                let secs = time(warmup, timed, || {
                    // Reading the result back waits for the device.
                    let _ = vit.forward(x.clone()).into_data();
                    Ok(())
                })?;
                Ok((secs, None))
            }
            Work::ForwardBf16Trunk => {
                let (trunk, tail) = self.cfg.try_init::<B::InnerBackend>(&device)?.split(1);
                let (trunk, applied) = trunk.with_precision(TrunkPrecision::Bf16);
                let x = x();
                let secs = time(warmup, timed, || {
                    let _ = tail.forward(trunk.forward(x.clone())).into_data();
                    Ok(())
                })?;
                Ok((secs, Some(applied)))
            }
            Work::Step(precision) => {
                let mut step = PaperStep::<B>::new(&self.cfg, 80, 16, self.batch, &device)?;
                let applied = step.set_trunk_precision(precision);
                let mut n = 0;
                let secs = time(warmup, timed, || {
                    n += 1;
                    step.run(n).map(|_| ())
                })?;
                Ok((secs, Some(applied)))
            }
        }
    }
}

/// The paper's training step at COCO's shapes, on random weights and data: the frozen trunk's
/// forward, then [`step::train_step`] on the last layer + per-label heads with a reference
/// tail + heads, FairPO-CPO (Table 5's COCO values), GRPO and AdamW (lr 1e-4, weight decay
/// 0.01, global-norm clipping at 1), as `bench/train.py` does in PyTorch.
pub struct PaperStep<B: AutodiffBackend> {
    trunk: ViTTrunk<B::InnerBackend>,
    policy: Option<Policy<B>>,
    reference: Policy<B::InnerBackend>,
    optim: burn::optim::adaptor::OptimizerAdaptor<burn::optim::AdamW, Policy<B>, B>,
    scheduler: Scheduler,
    train: TrainSettings,
    objective: ObjectiveConfig,
    privileged: Vec<bool>,
    pixels: Tensor<B::InnerBackend, 4>,
    targets: Vec<u8>,
    width: usize,
}

impl<B: AutodiffBackend> PaperStep<B> {
    /// A step of batch `batch` over `labels` labels, the first `privileged` of them in P.
    pub fn new(
        cfg: &ViTConfig,
        labels: usize,
        privileged: usize,
        batch: usize,
        device: &B::Device,
    ) -> Result<Self> {
        B::seed(device, 0);
        let (trunk, tail) = cfg.try_init::<B>(device)?.split_frozen(1);
        let heads = HeadsConfig::new(labels, cfg.hidden_size);
        let (policy, reference) = super::policy_and_reference(tail, &heads, device);
        let train = TrainSettings {
            lr: 1e-4,
            ..Default::default()
        };
        let s = cfg.image_size;
        let pixels = Tensor::random([batch, 3, s, s], Distribution::Normal(0.0, 1.0), device);
        let targets = Tensor::<B::InnerBackend, 2>::random(
            [batch, labels],
            Distribution::Bernoulli(0.05),
            device,
        )
        .into_data()
        .iter::<f32>()
        .map(|v| u8::from(v > 0.5))
        .collect();
        Ok(Self {
            trunk,
            policy: Some(policy),
            reference,
            optim: step::adamw(&train).init(),
            scheduler: fairpo_grpo::SchedulerConfig::default().init(2)?,
            train,
            objective: ObjectiveConfig::default(),
            privileged: (0..labels).map(|i| i < privileged).collect(),
            pixels,
            targets,
            width: cfg.hidden_size,
        })
    }

    /// Runs the frozen trunk in `precision` from now on (converted from its f32 weights).
    pub fn set_trunk_precision(&mut self, precision: TrunkPrecision) -> AppliedPrecision {
        let (trunk, applied) = self.trunk.with_precision(precision);
        self.trunk = trunk;
        applied
    }

    /// Runs step `step_no` and waits for the device; returns the seconds spent in the frozen
    /// trunk and in the rest (tail, heads, loss, backward, clipping, AdamW).
    pub fn run(&mut self, step_no: u64) -> Result<(f64, f64)> {
        let t0 = Instant::now();
        let hidden = self.trunk.forward(self.pixels.clone());
        let _ = hidden.clone().into_data(); // waits, so the split timing is honest
        let t1 = Instant::now();
        let settings = StepSettings::new(&self.train, &self.objective, &self.privileged);
        let mut rng = step::step_rng(42, step_no);
        // A failed step consumed the policy; later calls say so instead of panicking.
        let policy = self
            .policy
            .take()
            .context("an earlier step of this benchmark failed")?;
        let (policy, _) = step::train_step(
            policy,
            &mut self.optim,
            Some(&mut self.scheduler),
            Some(step::Reference::Model(&self.reference)),
            hidden,
            &self.targets,
            Pairs::Draw(&mut rng),
            &settings,
        )?;
        // Reading one updated value back waits for the optimiser's kernels.
        let probe = Tensor::zeros([1, self.width], &self.pixels.device());
        let _ = policy.heads.clone().valid().forward(probe).into_data();
        self.policy = Some(policy);
        let t2 = Instant::now();
        Ok(((t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64()))
    }
}
