//! The `end to end` rows: a generated set in the official COCO layout (the real 80 label
//! names), a seeded random ViT in the Hugging Face layout, then the `coco-sft` and `coco-cpo`
//! presets for one epoch each on the device, through the real loaders, augmentation and
//! evaluation; each must finish and write its files.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::AutodiffBackend;

use super::{Report, SelftestOptions};
use crate::config::RunConfig;
use crate::device::{run_on, BackendTask};
use crate::train::{self, TrainOptions, TrainOutcome};

const SECTION: &str = "end to end";

pub(super) fn check(opts: &SelftestOptions, report: &mut Report) {
    if let Err(e) = run(opts, report) {
        report.outcome(SECTION, "set-up", Err(e));
    }
}

fn run(opts: &SelftestOptions, report: &mut Report) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (cfg, images, batch) = if opts.quick {
        (super::throughput::quick_vit(), 48, 8)
    } else {
        (fairpo_vit::ViTConfig::base_patch16_224(), 160, 16)
    };
    let data = d.join("coco");
    fairpo_data::generate_demo(
        &data,
        &fairpo_data::DemoOptions {
            images,
            size: cfg.image_size,
            labels: fairpo_data::LabelSet::Coco,
            ..Default::default()
        },
    )?;
    let vit = d.join("vit");
    crate::random_backbone::write_random_backbone(&vit, &cfg, 0)?;
    let common = [
        format!("data.root={}", toml_string(&data)),
        format!("model.backbone={}", toml_string(&vit)),
        "train.epochs=1".into(),
        format!("train.batch_size={batch}"),
        format!("train.eval_batch_size={batch}"),
        "train.patience=0".into(),
        format!("train.cache_dir={}", toml_string(&d.join("cache"))),
    ];
    let sft = d.join("runs/coco-sft");
    let what = |preset: &str| {
        format!(
            "{preset} preset, 1 epoch, {images} generated {px} px COCO-layout images",
            px = cfg.image_size
        )
    };
    let first = train_preset(opts, "coco-sft.toml", &common, &[], &sft);
    let ok = first.is_ok();
    report.outcome(SECTION, what("coco-sft"), first);
    if !ok {
        return Ok(());
    }
    let reference = [
        format!("reference={}", toml_string(&sft)),
        format!("model.init_from={}", toml_string(&sft)),
    ];
    let cpo = d.join("runs/coco-cpo");
    let second = train_preset(opts, "coco-cpo.toml", &common, &reference, &cpo);
    report.outcome(SECTION, what("coco-cpo"), second);
    Ok(())
}

/// Trains `configs/<preset>` with the overrides into `run_dir`; says how long it took and
/// what it reached.
fn train_preset(
    opts: &SelftestOptions,
    preset: &str,
    common: &[String],
    extra: &[String],
    run_dir: &Path,
) -> Result<String> {
    let path = opts.root.join("configs").join(preset);
    let sets: Vec<String> = common.iter().chain(extra).cloned().collect();
    let mut cfg = RunConfig::load(std::slice::from_ref(&path), &sets)
        .with_context(|| format!("loading {}", path.display()))?;
    cfg.run_dir = Some(run_dir.to_path_buf());
    let t = Instant::now();
    let task = Train { cfg };
    let map = match run_on(&opts.device, task)?? {
        TrainOutcome::Finished { test, .. } => test.report.groups.all.map,
        TrainOutcome::Interrupted { step, .. } => bail!("interrupted at step {step}"),
    };
    let secs = t.elapsed().as_secs_f64();
    for f in [
        "model.ckpt",
        "metrics.json",
        "scores.npy",
        "report.md",
        "log.jsonl",
    ] {
        if !run_dir.join(f).is_file() {
            bail!("finished without writing {f}");
        }
    }
    let map = map.map_or("undefined".into(), |m| format!("{:.1}", 100.0 * m));
    Ok(format!(
        "finished in {secs:.1} s, test mAP {map} (random weights)"
    ))
}

/// `path` as a TOML string value for `--set`.
fn toml_string(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

struct Train {
    cfg: RunConfig,
}

impl BackendTask for Train {
    type Output = Result<TrainOutcome>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let opts = TrainOptions {
            resume: false,
            overwrite: true,
        };
        train::train::<B>(self.cfg, &opts, &device)
    }
}
