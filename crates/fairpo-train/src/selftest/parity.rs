//! The `parity` rows: the committed transformers fixtures (scripts/fixtures/vit_reference.py)
//! run on the device under test, CLS output against transformers' `ViTModel`, in f32 and
//! with a bf16 trunk.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use fairpo_vit::{AppliedPrecision, TrunkPrecision};

use super::{Report, SelftestOptions};
use crate::device::{run_on, BackendTask, DeviceSpec};

const SECTION: &str = "parity";

/// (what, model folder, input pixels, transformers' CLS output) under the fixtures folder.
const CASES: [(&str, &str, &str, &str); 2] = [
    (
        "tiny ViT (patch 4, 32 px)",
        "vit_tiny",
        "tiny_input_u8.npy",
        "tiny_cls.npy",
    ),
    (
        "ViT of ViT-B/16's geometry (patch 16, 224 px)",
        "vit_cls224",
        "cls224_input_u8.npy",
        "cls224_cls.npy",
    ),
];

/// The bound on the largest CLS difference from transformers, given the reference's largest
/// magnitude. CPU: f32 throughout, differences come from summation order only (measured
/// ~1e-6; 1e-4 is the fairpo-vit parity tests' bound). CUDA: burn's f32 matmul runs in TF32 (10-bit mantissa),
/// so relative errors near 1e-3 are expected.
pub(super) fn bound(device: DeviceSpec, scale: f64) -> f64 {
    match device {
        DeviceSpec::Cpu => 1e-4,
        DeviceSpec::Cuda(_) => 1e-4 + 5e-3 * scale,
    }
}

pub(super) fn fixtures(root: &Path) -> PathBuf {
    root.join("crates/fairpo-vit/tests/fixtures")
}

/// The bf16 trunk (every layer but the last) on the same fixtures: the largest CLS
/// difference from transformers' f32 output, relative to its largest value. bf16 keeps 8
/// bits of mantissa (relative rounding 4e-3 per operand). Measured on this project's CPU
/// (AMX: only the products' operands are bf16): 2.6e-4 (tiny) and 9.5e-5 (224 px). On
/// CUDA every trunk op is bf16, hence the margin.
const BF16_RELATIVE: f64 = 2e-2;

/// The f32 rows, then the bf16-trunk rows.
pub(super) fn check(opts: &SelftestOptions, report: &mut Report) {
    for precision in [TrunkPrecision::F32, TrunkPrecision::Bf16] {
        for (what, model, input, want) in CASES {
            let dir = fixtures(&opts.root);
            let task = Parity {
                model: dir.join(model),
                input: dir.join(input),
                want: dir.join(want),
                precision,
            };
            let check = match precision {
                TrunkPrecision::F32 => format!("{what}: max |CLS − transformers|"),
                TrunkPrecision::Bf16 => {
                    format!("{what}, bf16 trunk: max |CLS − transformers| / max |CLS|")
                }
            };
            let outcome = run_on(&opts.device, task)
                .map_err(anyhow::Error::from)
                .and_then(|r| r);
            match (precision, outcome) {
                (TrunkPrecision::F32, Ok((diff, scale, _))) => {
                    report.at_most(SECTION, check, diff, bound(opts.device, scale))
                }
                (
                    _,
                    Ok((
                        _,
                        _,
                        AppliedPrecision::F32 {
                            fallback: Some(why),
                        },
                    )),
                ) => report.push(SECTION, check, format!("not run: {why}")),
                (_, Ok((diff, scale, _))) => {
                    report.at_most(SECTION, check, diff / scale.max(1e-30), BF16_RELATIVE)
                }
                (_, Err(e)) => report.outcome(SECTION, check, Err(e)),
            }
        }
    }
}

struct Parity {
    model: PathBuf,
    input: PathBuf,
    want: PathBuf,
    /// The precision of every layer but the last.
    precision: TrunkPrecision,
}

impl BackendTask for Parity {
    /// (largest difference, largest reference magnitude, the trunk precision applied)
    type Output = Result<(f64, f64, AppliedPrecision)>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let vit = fairpo_vit::load_hf_dir::<B::InnerBackend>(&self.model, &device)?.model;
        let (shape, pixels) = read_npy::<u8>(&self.input)?;
        // The fixtures' normalisation: (p/255 − 0.5)/0.5 in f32.
        let x: Vec<f32> = pixels
            .into_iter()
            .map(|p| (p as f32 / 255.0 - 0.5) / 0.5)
            .collect();
        let x = Tensor::<B::InnerBackend, 4>::from_data(TensorData::new(x, shape), &device);
        let (trunk, tail) = vit.split(1);
        let (trunk, applied) = trunk.with_precision(self.precision);
        let got: Vec<f32> = tail
            .forward(trunk.forward(x))
            .into_data()
            .to_vec()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let (_, want) = read_npy::<f32>(&self.want)?;
        anyhow::ensure!(
            got.len() == want.len(),
            "{}: {} values, the model gave {}",
            self.want.display(),
            want.len(),
            got.len()
        );
        let (diff, scale) = max_diff(&got, &want);
        Ok((diff, scale, applied))
    }
}

/// (max |a − b|, max |b|); infinite when the lengths differ or a value is not finite, so
/// that a NaN can never pass a bound (`f64::max` would drop it).
pub(super) fn max_diff(a: &[f32], b: &[f32]) -> (f64, f64) {
    if a.len() != b.len() {
        return (f64::INFINITY, 0.0);
    }
    a.iter().zip(b).fold((0.0f64, 0.0f64), |(d, s), (x, y)| {
        let diff = (*x as f64 - *y as f64).abs();
        (
            if diff.is_finite() {
                d.max(diff)
            } else {
                f64::INFINITY
            },
            s.max((*y as f64).abs()),
        )
    })
}

fn read_npy<T: npyz::Deserialize>(path: &Path) -> Result<(Vec<usize>, Vec<T>)> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let npy = npyz::NpyFile::new(std::io::BufReader::new(f))
        .with_context(|| format!("reading {}", path.display()))?;
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    let values = npy
        .into_vec::<T>()
        .with_context(|| format!("reading the values of {}", path.display()))?;
    Ok((shape, values))
}

#[cfg(test)]
mod tests {
    use super::max_diff;

    #[test]
    fn nan_and_length_mismatches_never_pass() {
        assert_eq!(max_diff(&[1.0, 2.0], &[1.0, 2.5]), (0.5, 2.5));
        assert_eq!(max_diff(&[f32::NAN], &[1.0]).0, f64::INFINITY);
        assert_eq!(max_diff(&[1.0], &[f32::NAN]).0, f64::INFINITY);
        assert_eq!(max_diff(&[1.0], &[1.0, 2.0]).0, f64::INFINITY);
    }
}
