//! Trajectory parity: the trainer's step ([`fairpo_train::step::train_step`]) follows
//! PyTorch's training trajectory from the same start.
//!
//! `scripts/fixtures/train_reference.py` (torch + transformers) built a tiny ViT and heads,
//! saved them, and trained five cases for 30 steps with torch's AdamW and
//! `clip_grad_norm_` on committed batches (see that script). Here the same files are loaded,
//! the same batches are fed through the trainer's own step, and every step's loss, group
//! losses, α and gradient norm, and the final weights, must agree with PyTorch's.
//!
//! Measured agreement (f32, 30 steps, printed by each case): step values within 1.7e-6
//! relative in every case; final weights within 1e-4 of PyTorch's movement of each tensor, the
//! worst (3.3e-4) being an attention key bias, which moves by rounding noise only (see
//! `compare`). Deliberately wrong optimiser settings (burn's ε = 1e-5, per-tensor clipping,
//! L2-coupled weight decay, no clipping) are run too and must leave the bounds: they miss by
//! 1e-1 (steps) and 0.7–2.8 (weights), so the comparison sees exactly the things that make
//! training differ.
//!
//! `TRAJ_DIR=<dir>` runs the same comparison on fixtures written elsewhere by the script
//! (e.g. `TRAJ_SHAPE=demo TRAJ_OUT=<dir>` for the demo's model size; not committed).

use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::AdamConfig;
use burn::prelude::*;
use fairpo_grpo::{SchedulerConfig, SchedulerKind};
use fairpo_heads::Heads;
use fairpo_objectives::{Method, ObjectiveConfig, PairPlan};
use fairpo_train::replica::{number_parameters, run_replicas, Replica};
use fairpo_train::step::{self, Pairs, StepSettings};
use fairpo_train::ClipScope;
use fairpo_train::TrainSettings;
use fairpo_train::{read_heads_safetensors, Policy};
use fairpo_vit::{ViT, ViTConfig};
use serde_json::Value;

type Ad = burn::backend::Autodiff<burn::backend::Flex>;
type Inner = burn::backend::Flex;

/// Relative bound on every step's loss, group losses, α and gradient norm.
const STEP_TOL: f64 = 1e-4;
/// Bound on the final weights: max |Δ| over a tensor, relative to the largest change PyTorch
/// made to that tensor in the run.
const WEIGHT_TOL: f64 = 1e-3;

fn dir() -> PathBuf {
    match std::env::var_os("TRAJ_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trajectory"),
    }
}

struct Fixture {
    meta: Value,
    config: ViTConfig,
    pixels: Vec<f32>,
    targets: Vec<u8>,
    privileged: Vec<bool>,
    labels: usize,
}

fn fixture() -> Fixture {
    let d = dir();
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("trajectory.json")).unwrap()).unwrap();
    let config = ViTConfig::load(&d.join("init/config.json")).unwrap();
    let pixels = fairpo_io::read_npy_f32(d.join("pixels.npy")).unwrap().data;
    let targets = fairpo_io::read_npy_targets(d.join("targets.npy")).unwrap();
    let labels = targets.cols;
    let mut privileged = vec![false; labels];
    for p in meta["privileged"].as_array().unwrap() {
        privileged[p.as_u64().unwrap() as usize] = true;
    }
    Fixture {
        meta,
        config,
        pixels,
        targets: targets.data,
        privileged,
        labels,
    }
}

/// What a case may get wrong on purpose.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mutant {
    None,
    /// burn's default AdamW ε (1e-5) instead of PyTorch's 1e-8.
    BurnEpsilon,
    /// Each tensor clipped to norm 1 on its own.
    PerTensorClip,
    /// Adam with L2 weight decay added to the gradient (not AdamW's decoupled decay).
    CoupledDecay,
    /// No clipping at all.
    NoClip,
}

struct Outcome {
    steps: Vec<[f64; 5]>,
    vit: ViT<Inner>,
    heads: Heads<Inner>,
}

fn collect<B: Backend, M: Module<B>>(m: &M) -> Vec<Vec<f32>> {
    struct C(Vec<Vec<f32>>);
    impl<B: Backend> ModuleVisitor<B> for C {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            self.0
                .push(p.val().into_data().convert::<f32>().into_vec().unwrap());
        }
    }
    let mut c = C(Vec::new());
    m.visit(&mut c);
    c.0
}

/// One case on one device ([`Replica::SINGLE`]) or as one data-parallel replica, which
/// trains on its shard of each batch.
fn run_case(fx: &Fixture, name: &str, mutant: Mutant, replica: Replica) -> Outcome {
    let d = dir();
    let device = Default::default();
    let case = &fx.meta["cases"][name];
    let hp = &fx.meta["hyper"];
    let k = match &case["trainable_layers"] {
        Value::String(s) if s == "all" => fx.config.num_hidden_layers,
        v => v.as_u64().unwrap() as usize,
    };
    let loaded = fairpo_vit::load_hf_dir::<Ad>(&d.join("init"), &device).unwrap();
    let (trunk, tail) = loaded.model.split_frozen(k);
    let (heads, _) =
        read_heads_safetensors::<Ad>(&d.join("init_heads.safetensors"), &device).unwrap();
    let mut policy = number_parameters(Policy { tail, heads });
    let reference = {
        let init = fairpo_vit::load_hf_dir::<Inner>(&d.join("init"), &device).unwrap();
        let (_, ref_tail) = init.model.split(1);
        let (ref_heads, _) =
            read_heads_safetensors::<Inner>(&d.join("ref_heads.safetensors"), &device).unwrap();
        Policy {
            tail: ref_tail,
            heads: ref_heads,
        }
    };

    let mut train = TrainSettings {
        lr: hp["lr"].as_f64().unwrap(),
        weight_decay: hp["weight_decay"].as_f64().unwrap(),
        adam_epsilon: hp["eps"].as_f64().unwrap(),
        grad_clip: hp["grad_clip"].as_f64().unwrap(),
        ..TrainSettings::default()
    };
    match mutant {
        Mutant::BurnEpsilon => train.adam_epsilon = 1e-5,
        Mutant::PerTensorClip => train.grad_clip_scope = ClipScope::PerParameter,
        Mutant::NoClip => train.grad_clip = 0.0,
        Mutant::None | Mutant::CoupledDecay => {}
    }
    let (objective, scheduler) = match name {
        "sft_all" | "sft_last" => (
            ObjectiveConfig::new(Method::Bce),
            SchedulerConfig::default(),
        ),
        "rw_last" => (
            ObjectiveConfig {
                lambda_p: fx.meta["rw_lambda_p"].as_f64().unwrap(),
                ..ObjectiveConfig::new(Method::Reweighted)
            },
            SchedulerConfig::default(),
        ),
        "gdro_last" => (
            ObjectiveConfig::new(Method::Gdro),
            SchedulerConfig {
                kind: SchedulerKind::Gdro,
                eta_alpha: fx.meta["gdro_eta_alpha"].as_f64().unwrap(),
                ..SchedulerConfig::default()
            },
        ),
        "cpo_last" => {
            let c = &fx.meta["cpo"];
            let g = &fx.meta["grpo"];
            (
                ObjectiveConfig {
                    beta: c["beta"].as_f64().unwrap(),
                    lambda_cpo: c["lambda_cpo"].as_f64().unwrap(),
                    epsilon: c["epsilon"].as_f64().unwrap(),
                    ..ObjectiveConfig::new(Method::Cpo)
                },
                SchedulerConfig {
                    kind: SchedulerKind::Grpo,
                    eta_alpha: g["eta_alpha"].as_f64().unwrap(),
                    rho: g["rho"].as_f64().unwrap(),
                    delta: g["delta"].as_f64().unwrap(),
                    clamp: g["clamp"].as_f64().unwrap(),
                    ..SchedulerConfig::default()
                },
            )
        }
        other => panic!("unknown case {other}"),
    };
    let mut scheduler = scheduler.init(2).unwrap();
    let settings = StepSettings {
        replica,
        ..StepSettings::new(&train, &objective, &fx.privileged)
    };
    let reference = (name == "cpo_last").then_some(&reference);
    let reference = || reference.map(step::Reference::Model);

    let px_len = 3 * fx.config.image_size * fx.config.image_size;
    let t = fx.labels;
    let mut steps = Vec::new();
    let order = fx.meta["order"].as_array().unwrap();
    let mut adamw = step::adamw(&train).init::<Ad, Policy<Ad>>();
    let mut adam_l2 = AdamConfig::new()
        .with_epsilon(train.adam_epsilon as f32)
        .with_weight_decay(Some(burn::optim::decay::WeightDecayConfig::new(
            train.weight_decay as f32,
        )))
        .init::<Ad, Policy<Ad>>();
    for (s, idx) in order.iter().enumerate() {
        let idx: Vec<usize> = idx
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let rows = replica.shard(idx.len());
        let idx = &idx[rows.clone()];
        let b = idx.len();
        let mut px = Vec::with_capacity(b * px_len);
        let mut y = Vec::with_capacity(b * t);
        for &i in idx {
            px.extend_from_slice(&fx.pixels[i * px_len..(i + 1) * px_len]);
            y.extend_from_slice(&fx.targets[i * t..(i + 1) * t]);
        }
        let s_img = fx.config.image_size;
        let pixels =
            Tensor::<Inner, 4>::from_data(TensorData::new(px, [b, 3, s_img, s_img]), &device);
        let hidden = if b == 0 {
            Tensor::empty([0, 1, 1], &device)
        } else {
            trunk.forward(pixels)
        };
        let plan = case.get("plan").map(|p| PairPlan {
            sampled_labels: None,
            confusing: p[s].as_array().unwrap()[rows.start * t..rows.end * t]
                .iter()
                .map(|v| usize::try_from(v.as_i64().unwrap()).ok())
                .collect(),
        });
        let mut rng = fairpo_train::step::step_rng(0, s as u64);
        let pairs = match &plan {
            Some(p) => Pairs::Plan(p),
            None => Pairs::Draw(&mut rng),
        };
        let result = if b == 0 {
            step::idle_step(policy, &mut adamw, Some(&mut scheduler), &settings, &device)
        } else if mutant == Mutant::CoupledDecay {
            step::train_step(
                policy,
                &mut adam_l2,
                Some(&mut scheduler),
                reference(),
                hidden,
                &y,
                pairs,
                &settings,
            )
        } else {
            step::train_step(
                policy,
                &mut adamw,
                Some(&mut scheduler),
                reference(),
                hidden,
                &y,
                pairs,
                &settings,
            )
        };
        let (next, r) = result.unwrap_or_else(|e| panic!("{name} step {s}: {e:#}"));
        policy = next;
        let a = r.alpha.as_ref().map_or(f64::NAN, |a| a[0]);
        steps.push([
            r.loss,
            r.group_losses[0],
            r.group_losses[1],
            a,
            r.grad_norm.unwrap_or(f64::NAN),
        ]);
    }
    let valid = policy.valid();
    Outcome {
        steps,
        vit: ViT::join(trunk, valid.tail),
        heads: valid.heads,
    }
}

/// Largest relative differences of (per-step values, final weights) against PyTorch.
struct Agreement {
    step: f64,
    step_at: String,
    weights: f64,
    weights_at: String,
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-3)
}

fn compare(fx: &Fixture, name: &str, got: &Outcome) -> Agreement {
    let d = dir();
    let device = Default::default();
    let want = &fx.meta["cases"][name]["steps"];
    let mut worst = (0.0f64, String::new());
    for (s, g) in got.steps.iter().enumerate() {
        let w = &want[s];
        let mut fields = vec![
            ("loss", g[0], w["loss"].as_f64().unwrap()),
            (
                "loss_privileged",
                g[1],
                w["loss_privileged"].as_f64().unwrap(),
            ),
            (
                "loss_non_privileged",
                g[2],
                w["loss_non_privileged"].as_f64().unwrap(),
            ),
        ];
        // Not computed without global-norm clipping (the clipping mutants).
        if !g[4].is_nan() {
            fields.push(("grad_norm", g[4], w["grad_norm"].as_f64().unwrap()));
        }
        if let Some(a) = w["alpha"].as_array() {
            fields.push(("alpha_P", g[3], a[0].as_f64().unwrap()));
        }
        for (f, a, b) in fields {
            let r = rel(a, b);
            if r > worst.0 || r.is_nan() {
                worst = (
                    if r.is_nan() { f64::INFINITY } else { r },
                    format!("step {s} {f}: {a} vs {b}"),
                );
            }
        }
    }
    let want_vit = fairpo_vit::load_hf_weights::<Inner>(
        &fx.config,
        &d.join(name).join("model.safetensors"),
        &device,
    )
    .unwrap();
    let (want_heads, _) =
        read_heads_safetensors::<Inner>(&d.join(name).join("heads.safetensors"), &device).unwrap();
    let init_vit = fairpo_vit::load_hf_weights::<Inner>(
        &fx.config,
        &d.join("init/model.safetensors"),
        &device,
    )
    .unwrap();
    let (init_heads, _) =
        read_heads_safetensors::<Inner>(&d.join("init_heads.safetensors"), &device).unwrap();
    let mut wworst = (0.0f64, String::new());
    let vit = collect(&got.vit)
        .into_iter()
        .zip(collect(&want_vit))
        .zip(collect(&init_vit));
    let heads = collect(&got.heads)
        .into_iter()
        .zip(collect(&want_heads))
        .zip(collect(&init_heads));
    let tensors = vit.map(|t| ("vit", t)).chain(heads.map(|t| ("heads", t)));
    for (i, (part, ((a, b), start))) in tensors.enumerate() {
        assert_eq!(a.len(), b.len());
        // Relative to how far PyTorch moved the tensor (30 steps at lr 1e-3 move a trained
        // tensor by ~1e-2), floored at 1e-2 for the attention key biases: their exact gradient
        // is zero (softmax ignores a per-query constant), so AdamW moves them by rounding
        // noise only (~1e-6), differently on each side.
        let moved = b
            .iter()
            .zip(&start)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) as f64;
        let diff = a
            .iter()
            .zip(&b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) as f64;
        let r = diff / moved.max(1e-2);
        if r > wworst.0 {
            wworst = (
                r,
                format!("{part} tensor {i}: max |Δ| {diff:.3e}, PyTorch moved it by {moved:.3e}"),
            );
        }
    }
    Agreement {
        step: worst.0,
        step_at: worst.1,
        weights: wworst.0,
        weights_at: wworst.1,
    }
}

fn check(name: &str) {
    let fx = fixture();
    let got = run_case(&fx, name, Mutant::None, Replica::SINGLE);
    let a = compare(&fx, name, &got);
    println!(
        "{name}: worst step difference {:.2e} ({}); worst final weight {:.2e} ({})",
        a.step, a.step_at, a.weights, a.weights_at
    );
    assert!(
        a.step <= STEP_TOL,
        "{name}: step values differ from PyTorch by {:.2e} (> {STEP_TOL:e}) at {}",
        a.step,
        a.step_at
    );
    assert!(
        a.weights <= WEIGHT_TOL,
        "{name}: final weights differ from PyTorch by {:.2e} (> {WEIGHT_TOL:e}) at {}",
        a.weights,
        a.weights_at
    );
}

#[test]
fn bce_sft_every_layer_trainable() {
    check("sft_all");
}

#[test]
fn bce_last_layer_and_heads() {
    check("sft_last");
}

#[test]
fn fairpo_cpo_with_reference_and_grpo() {
    check("cpo_last");
}

#[test]
fn reweighted_bce() {
    check("rw_last");
}

#[test]
fn group_dro() {
    check("gdro_last");
}

/// The comparison can fail: each deliberately wrong optimiser setting leaves the bounds.
#[test]
fn wrong_optimiser_settings_are_caught() {
    let fx = fixture();
    for (name, mutant) in [
        ("sft_all", Mutant::BurnEpsilon),
        ("sft_all", Mutant::PerTensorClip),
        ("sft_all", Mutant::CoupledDecay),
        ("sft_all", Mutant::NoClip),
    ] {
        let a = compare(&fx, name, &run_case(&fx, name, mutant, Replica::SINGLE));
        println!(
            "{name} with {mutant:?}: step {:.2e} ({}), weights {:.2e} ({})",
            a.step, a.step_at, a.weights, a.weights_at
        );
        assert!(
            a.step > STEP_TOL || a.weights > WEIGHT_TOL,
            "{name} with {mutant:?} still matches PyTorch (step {:.2e}, weights {:.2e})",
            a.step,
            a.weights
        );
    }
}

/// Data parallelism: the batch of 8 split over 2 (4 + 4), 3 (2 + 3 + 3) or 9 (rank 0's shard
/// empty: it only takes part in the reductions) replicas joined by burn's collective
/// all-reduce follows the single-device trajectory step by step (loss,
/// group losses, α, gradient norm) and so still matches PyTorch's, and every replica ends
/// with the same weights.
#[test]
fn data_parallel_replicas_follow_the_single_device_trajectory() {
    let fx = fixture();
    for (name, world) in [
        ("sft_last", 2),
        ("cpo_last", 2),
        ("gdro_last", 2),
        ("rw_last", 3),
        ("gdro_last", 9),
    ] {
        let single = run_case(&fx, name, Mutant::None, Replica::SINGLE);
        let others = std::sync::Mutex::new(Vec::new());
        let lead = run_replicas::<Ad, _, _>(vec![Default::default(); world], |replica, _| {
            let got = run_case(&fx, name, Mutant::None, replica);
            if !replica.leads() {
                others.lock().unwrap().push(collect(&got.heads));
            }
            Ok(got)
        })
        .unwrap_or_else(|e| panic!("{name} on {world} replicas: {e:#}"));
        let mut worst = (0.0f64, String::new());
        for (s, (a, b)) in lead.steps.iter().zip(&single.steps).enumerate() {
            for (f, (x, y)) in ["loss", "L_P", "L_P̄", "alpha_P", "grad_norm"]
                .iter()
                .zip(a.iter().zip(b))
            {
                let r = if x.is_nan() && y.is_nan() {
                    0.0
                } else {
                    rel(*x, *y)
                };
                if r > worst.0 || r.is_nan() {
                    worst = (r, format!("step {s} {f}: {x} vs {y}"));
                }
            }
        }
        println!(
            "{name} on {world} replicas: worst step difference to one device {:.2e} ({})",
            worst.0, worst.1
        );
        assert!(
            worst.0 <= 1e-5,
            "{name}: {world} replicas leave the single-device trajectory: {}",
            worst.1
        );
        let lead_heads = collect(&lead.heads);
        for heads in others.lock().unwrap().iter() {
            assert_eq!(
                heads, &lead_heads,
                "{name}: replicas ended with different heads"
            );
        }
        let a = compare(&fx, name, &lead);
        assert!(
            a.step <= STEP_TOL && a.weights <= WEIGHT_TOL,
            "{name} on {world} replicas: PyTorch step {:.2e} ({}), weights {:.2e} ({})",
            a.step,
            a.step_at,
            a.weights,
            a.weights_at
        );
    }
}
