//! The CPU (burn-flex) kernels: host loops that replace burn's op-by-op form where it is
//! slow on the CPU, each falling back to burn's own ops on any other backend or dtype.
//!
//! - `dispatch.rs`: recognising the Flex backend by downcast, and elementwise host ops with
//!   their own autodiff node ([`gelu`], [`softmax_last`]);
//! - `lanes.rs`: lane-parallel reductions and a branch-free `exp`;
//! - `amx.rs`: bf16 products on the AMX tile unit, for a trunk run in bf16;
//! - `gemm.rs`: the calls into `gemm` and the disjoint per-head blocks of parallel tasks — the
//!   only `unsafe` of the kernels;
//! - `attention.rs`: multi-head attention per (image, head), forward and backward;
//! - `layer.rs`: one encoder layer's forward (the frozen trunk's path);
//! - `layer_backward.rs`: the same forward under `Autodiff<Flex>` with a hand-written
//!   backward (the trainable tail's path).
//!
//! The kernels read a layer through [`LayerParams`], a borrowed view of its burn modules, so
//! they do not depend on the model's types.

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(not(target_arch = "x86_64"))]
#[path = "amx_unavailable.rs"]
mod amx;
mod attention;
mod dispatch;
mod gelu;
mod gemm;
mod lanes;
mod layer;
mod layer_backward;
mod softmax;

use burn::backend::Flex;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{bf16, Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;

pub use gelu::{gelu, gelu_derivative_f32, gelu_f32, gelu_in_place};
pub use softmax::softmax_last;

/// One encoder layer's parameters, borrowed from the model: what the layer kernels read.
pub(crate) struct LayerParams<'a, B: Backend> {
    pub(crate) norm_before: &'a LayerNorm<B>,
    pub(crate) query: &'a Linear<B>,
    pub(crate) key: &'a Linear<B>,
    pub(crate) value: &'a Linear<B>,
    pub(crate) attn_out: &'a Linear<B>,
    pub(crate) norm_after: &'a LayerNorm<B>,
    pub(crate) mlp_in: &'a Linear<B>,
    pub(crate) mlp_out: &'a Linear<B>,
    pub(crate) heads: usize,
    /// Epsilon of both norms.
    pub(crate) eps: f64,
}

impl<B: Backend> Clone for LayerParams<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for LayerParams<'_, B> {}

impl<'a, B: Backend> LayerParams<'a, B> {
    /// The same view typed for backend `C`, when `B` is `C`.
    fn downcast<C: Backend>(self) -> Option<LayerParams<'a, C>> {
        let norm = |n: &'a LayerNorm<B>| dispatch::downcast_ref::<_, LayerNorm<C>>(n);
        let dense = |l: &'a Linear<B>| dispatch::downcast_ref::<_, Linear<C>>(l);
        Some(LayerParams {
            norm_before: norm(self.norm_before)?,
            query: dense(self.query)?,
            key: dense(self.key)?,
            value: dense(self.value)?,
            attn_out: dense(self.attn_out)?,
            norm_after: norm(self.norm_after)?,
            mlp_in: dense(self.mlp_in)?,
            mlp_out: dense(self.mlp_out)?,
            heads: self.heads,
            eps: self.eps,
        })
    }
}

/// Runs one encoder layer with the host kernel when the backend is `Flex` or
/// `Autodiff<Flex>` and everything is f32; otherwise gives `x` back for burn's ops.
///
/// # Shapes
/// - x: `[B, S, D]`
/// - output: `[B, S, D]`
pub(crate) fn try_layer_forward<B: Backend>(
    layer: LayerParams<'_, B>,
    x: Tensor<B, 3>,
) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    layer::try_forward(layer, x).or_else(|x| layer_backward::try_forward(layer, x))
}

/// Whether the backend is burn-flex (the host kernels' backend).
pub(crate) fn is_flex<B: Backend>() -> bool {
    std::any::TypeId::of::<B>() == std::any::TypeId::of::<Flex>()
}

/// `Ok` when the bf16 host kernel can run in this process, else why not.
pub(crate) fn amx_status() -> Result<(), &'static str> {
    if amx::available() {
        Ok(())
    } else {
        Err(amx::unavailable_reason())
    }
}

/// A frozen dense weight `[in, out]` for the bf16 host kernel: its values rounded to bf16
/// and stored `[out, in]`, seen as `[in, out]`. `None` unless the backend is Flex, the AMX
/// kernel can run and the shape is whole tiles.
pub(crate) fn bf16_host_weight<B: Backend>(w: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
    let flex: &Tensor<Flex, 2> = dispatch::downcast_ref(w)?;
    let [k, n] = flex.dims();
    if !(amx::available() && amx::supports(n, k)) {
        return None;
    }
    let out_in = flex.clone().transpose().into_data().convert::<f32>();
    let out_in = out_in.as_slice::<f32>().ok()?;
    let bits: Vec<bf16> = out_in
        .iter()
        .map(|&v| bf16::from_bits(amx::bf16_bits(v)))
        .collect();
    let stored = FlexTensor::from_data(TensorData::new(bits, [n, k]));
    let t = Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(stored)).transpose();
    Some(dispatch::cast(t))
}
