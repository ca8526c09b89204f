//! The frozen trunk's number format: f32, or bf16 where the hardware makes it pay.
//!
//! The trunk (every layer but the trainable last k, ~90% of a ViT-B/16 step's work) needs no
//! gradients, so its products can run in bf16 while the trainable tail, heads, losses and
//! optimiser stay f32. [`crate::ViTTrunk::with_precision`] applies the choice and says what
//! it did ([`AppliedPrecision`]):
//! - on the CPU backend (burn-flex), the six dense products of every layer run on the AMX
//!   tile unit with bf16 operands and f32 accumulation; norms, attention, GELU and the
//!   residual stream stay f32. Without AMX the trunk stays f32 (bf16 through burn's CPU ops
//!   converts to f32 and back, slower than f32);
//! - on any other backend (CUDA), every trunk parameter and activation is cast to bf16 and
//!   burn's ops run on bf16 tensors; the output is cast back to f32 for the tail.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};
use serde::{Deserialize, Serialize};

/// The number format asked for the frozen trunk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrunkPrecision {
    /// f32 everywhere.
    #[default]
    F32,
    /// bf16 products (see the module docs for what stays f32 on each backend).
    Bf16,
}

impl TrunkPrecision {
    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }
}

impl std::str::FromStr for TrunkPrecision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            other => Err(format!(
                "unknown trunk precision {other:?}: expected f32 or bf16"
            )),
        }
    }
}

/// What [`crate::ViTTrunk::with_precision`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppliedPrecision {
    /// f32 everywhere: asked for, or the fallback from bf16 for the reason given.
    F32 {
        /// Why bf16 was asked for but not applied.
        fallback: Option<String>,
    },
    /// CPU: the dense products of `layers` layers in bf16 on the AMX tile unit.
    Bf16Amx {
        /// Layers converted (the others, of shapes the kernel does not take, stay f32).
        layers: usize,
    },
    /// Any other backend: every trunk parameter and activation in bf16.
    Bf16Tensors,
}

impl AppliedPrecision {
    /// Whether the trunk's output differs from the f32 trunk's.
    pub fn is_bf16(&self) -> bool {
        !matches!(self, Self::F32 { .. })
    }

    /// The format the trunk's outputs are computed in: part of any cache key.
    pub fn precision(&self) -> TrunkPrecision {
        if self.is_bf16() {
            TrunkPrecision::Bf16
        } else {
            TrunkPrecision::F32
        }
    }

    /// A short name of how the trunk computes, for store keys: `f32`, `bf16-amx-<layers>`
    /// or `bf16-tensors` (two bf16 paths give different outputs).
    pub fn key(&self) -> String {
        match self {
            Self::F32 { .. } => "f32".into(),
            Self::Bf16Amx { layers } => format!("bf16-amx-{layers}"),
            Self::Bf16Tensors => "bf16-tensors".into(),
        }
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        match self {
            Self::F32 { fallback: None } => "f32".into(),
            Self::F32 {
                fallback: Some(why),
            } => format!("f32 (bf16 was asked for, but {why})"),
            Self::Bf16Amx { layers } => format!(
                "bf16 products on the AMX tile unit in {layers} layer(s), f32 accumulation and everything else f32"
            ),
            Self::Bf16Tensors => "bf16 parameters and activations (burn's ops on bf16 tensors)".into(),
        }
    }
}

/// Casts every float parameter of a module to one dtype.
struct CastFloats(FloatDType);

impl<B: Backend> ModuleMapper<B> for CastFloats {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

/// `module` with every float parameter cast to `dtype`.
pub(crate) fn cast_floats<B: Backend, M: Module<B>>(module: M, dtype: FloatDType) -> M {
    module.map(&mut CastFloats(dtype))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AttentionKind, ViTConfig, ViTTrunk};
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    /// Whole-tile shapes (width 64, MLP 128), 17 tokens, 3 trunk layers.
    fn trunk(kind: AttentionKind) -> ViTTrunk<Flex> {
        let cfg = ViTConfig {
            hidden_size: 64,
            num_hidden_layers: 4,
            num_attention_heads: 2,
            intermediate_size: 128,
            image_size: 16,
            patch_size: 4,
            ..ViTConfig::tiny()
        };
        cfg.init::<Flex>(&Default::default())
            .with_attention(kind)
            .split(1)
            .0
    }

    fn pixels() -> Tensor<Flex, 4> {
        Tensor::random(
            [3, 3, 16, 16],
            Distribution::Normal(0.0, 1.0),
            &Default::default(),
        )
    }

    /// (max |a − b| / max |b|, smallest cosine of a token's vectors).
    fn compare(a: Tensor<Flex, 3>, b: Tensor<Flex, 3>) -> (f32, f32) {
        let d = a.dims()[2];
        let (a, b) = (
            a.into_data().to_vec::<f32>().unwrap(),
            b.into_data().to_vec::<f32>().unwrap(),
        );
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        let cosine = a
            .chunks(d)
            .zip(b.chunks(d))
            .map(|(x, y)| {
                let dot: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
                let norm = |v: &[f32]| v.iter().map(|p| p * p).sum::<f32>().sqrt();
                dot / (norm(x) * norm(y))
            })
            .fold(1f32, f32::min);
        (diff / scale, cosine)
    }

    #[test]
    fn f32_leaves_the_trunk_as_it_is() {
        let t = trunk(AttentionKind::Matmul);
        let (same, applied) = t.with_precision(TrunkPrecision::F32);
        assert_eq!(applied, AppliedPrecision::F32 { fallback: None });
        let x = pixels();
        assert_eq!(compare(same.forward(x.clone()), t.forward(x)).0, 0.0);
    }

    /// On the CPU: the AMX path when this machine has it (else the stated f32 fallback);
    /// its output is bf16-close to f32's but not equal to it (the kernel really ran).
    #[test]
    fn bf16_on_the_cpu_is_close_to_f32() {
        let t = trunk(AttentionKind::Matmul);
        let (bf16, applied) = t.with_precision(TrunkPrecision::Bf16);
        let x = pixels();
        let (rel, cosine) = compare(bf16.forward(x.clone()), t.forward(x));
        match applied {
            AppliedPrecision::Bf16Amx { layers } => {
                assert_eq!(layers, 3);
                assert!(rel > 0.0 && rel < 2e-2, "max relative difference {rel}");
                assert!(cosine > 0.9995, "cosine {cosine}");
            }
            AppliedPrecision::F32 {
                fallback: Some(why),
            } => {
                eprintln!("no AMX here ({why}): checked the fallback only");
                assert_eq!(rel, 0.0);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The other backends' path (every tensor bf16, burn's ops), run here on burn-flex.
    #[test]
    fn bf16_tensors_run_through_burn_ops() {
        for kind in [AttentionKind::Fused, AttentionKind::Matmul] {
            let t = trunk(kind);
            let bf16 = t.to_bf16_tensors();
            let x = pixels();
            let out = bf16.forward(x.clone());
            assert_eq!(out.dtype(), burn::tensor::DType::F32);
            let (rel, cosine) = compare(out, t.forward(x));
            assert!(
                rel > 0.0 && rel < 5e-2,
                "{kind:?}: max relative difference {rel}"
            );
            assert!(cosine > 0.999, "{kind:?}: cosine {cosine}");
        }
    }
}
