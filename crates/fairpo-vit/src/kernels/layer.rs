//! One encoder layer on burn-flex f32 tensors, as host loops around gemm.
//!
//! Outside autodiff (this file) it is the frozen trunk's path: every layer in `fairpo features`
//! and in evaluation, all but the last k while training. Under `Autodiff<Flex>` the trainable
//! layers run the same forward with a hand-written backward (`layer_backward.rs`). A last
//! layer of which only the CLS row is used runs `EncoderLayer::forward_cls` (burn's ops, on one
//! row). burn's op-by-op form of a layer makes a dozen passes over
//! `[B·S, ·]` buffers, allocates every intermediate, and runs attention as batched matmuls over
//! a `[B, H, S, S]` score tensor that does not fit in cache. Here the maths is the same but:
//! - biases are pre-filled into the gemm destination and the gemm accumulates onto them, and
//!   the residual stream is the destination of the output projections, so no bias or residual
//!   pass of its own;
//! - 1/√d is folded into the query projection;
//! - attention runs per (image, head) in an `S×S` scratch that stays in cache, and writes the
//!   context straight into its heads-concatenated place;
//! - the first MLP's bias and GELU are one pass.
//!
//! Checked against the generic path (burn's ops) in the tests below and, through the model,
//! against `transformers` in `tests/parity.rs`.

use std::sync::Mutex;

use burn::backend::Flex;
use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{bf16, DType, Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::amx;
use super::attention::attention;
use super::dispatch::cast;
use super::gelu::gelu_f32;
use super::gemm::{gemm_into, In, Out};
use super::lanes::{lane_sum, CHUNK};
use super::LayerParams;

/// Runs `layer` on `x` here when the backend is Flex and everything is f32; otherwise gives
/// `x` back for the generic path.
pub(crate) fn try_forward<B: Backend>(
    layer: LayerParams<'_, B>,
    x: Tensor<B, 3>,
) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    let Some(flex) = layer.downcast::<Flex>() else {
        return Err(x);
    };
    if x.dtype() != DType::F32 {
        return Err(x);
    }
    let Some(weights) = Weights::of(&flex) else {
        return Err(x);
    };
    // B is Flex: the downcast above has shown it.
    let x: Tensor<Flex, 3> = cast(x);
    let [b, s, d] = x.dims();
    let n = b * s * d;
    // The residual stream is computed in x's own buffer when nothing else holds it.
    let mut x = contiguous(x.into_primitive().tensor());
    if x.try_storage_mut::<f32>().is_none() {
        let copy = x.storage::<f32>()[..n].to_vec();
        x = FlexTensor::from_data(TensorData::new(copy, [b, s, d]));
    }
    let stream = &mut x
        .try_storage_mut::<f32>()
        .expect("a fresh copy is not shared")[..n];
    with_scratch(|scratch| weights.forward(stream, s, scratch));
    Ok(cast(Tensor::<Flex, 3>::from_primitive(
        TensorPrimitive::Float(x),
    )))
}

/// Intermediate buffers, kept between calls: a fresh buffer of this size costs a page fault
/// per 4 KiB on first touch, which was ~10% of a ViT-B layer. Holds the largest layer run so
/// far: `[B·S, D + 3D + I]` floats (ViT-B/16, batch 32: 155 MB).
#[derive(Default)]
pub(super) struct Scratch {
    normed: Vec<f32>,
    qkv: Vec<f32>,
    mlp: Vec<f32>,
}

static SCRATCH: Mutex<Option<Scratch>> = Mutex::new(None);

/// Runs `f` with the shared scratch (or a new one while another thread holds it).
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    let taken = SCRATCH.lock().ok().and_then(|mut s| s.take());
    let mut scratch = taken.unwrap_or_default();
    let out = f(&mut scratch);
    if let Ok(mut s) = SCRATCH.lock() {
        *s = Some(scratch);
    }
    out
}

/// The first `len` elements of `buf`, grown if needed (contents unspecified).
fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

pub(super) fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() && t.layout().start_offset() == 0 {
        t
    } else {
        t.to_contiguous()
    }
}

/// A 2-D weight `[rows, cols]` = `[in, out]`: f32 in whatever strides it is stored with,
/// or bf16 stored `[out, in]` (see [`super::bf16_host_weight`]) for the AMX kernel.
pub(super) struct Matrix {
    tensor: FlexTensor,
    pub(super) rows: usize,
    pub(super) cols: usize,
    row_stride: usize,
    col_stride: usize,
    bf16: bool,
}

impl Matrix {
    fn of(param: &Param<Tensor<Flex, 2>>) -> Option<Self> {
        let tensor = param.val().into_primitive().tensor();
        let [rows, cols] = [tensor.layout().shape()[0], tensor.layout().shape()[1]];
        let strides = tensor.layout().strides();
        // Negative strides (a flipped view) are not worth supporting here.
        let row_stride = usize::try_from(strides[0]).ok()?;
        let col_stride = usize::try_from(strides[1]).ok()?;
        let bf16 = match tensor.dtype() {
            DType::F32 => false,
            DType::BF16 => {
                let out_in = row_stride == 1 && col_stride == rows;
                (out_in && amx::available() && amx::supports(cols, rows)).then_some(true)?
            }
            _ => return None,
        };
        Some(Self {
            tensor,
            rows,
            cols,
            row_stride,
            col_stride,
            bf16,
        })
    }

    fn view(&self) -> In<'_> {
        assert!(!self.bf16, "an f32 view of a bf16 weight");
        In {
            data: &self.tensor.storage::<f32>()[self.tensor.layout().start_offset()..],
            rs: self.row_stride,
            cs: self.col_stride,
        }
    }

    /// The bf16 values `[out, in]` row-major, when the weight is bf16.
    fn bf16_out_in(&self) -> Option<&[bf16]> {
        self.bf16.then(|| {
            let start = self.tensor.layout().start_offset();
            &self.tensor.storage::<bf16>()[start..start + self.rows * self.cols]
        })
    }
}

/// A contiguous f32 vector.
pub(super) struct Vector(FlexTensor);

impl Vector {
    fn of(param: &Param<Tensor<Flex, 1>>) -> Option<Self> {
        let t = contiguous(param.val().into_primitive().tensor());
        (t.dtype() == DType::F32).then_some(Self(t))
    }

    /// `Some(None)` for an absent parameter, `None` for one that is not f32.
    fn of_optional(param: Option<&Param<Tensor<Flex, 1>>>) -> Option<Option<Self>> {
        match param {
            Some(p) => Self::of(p).map(Some),
            None => Some(None),
        }
    }

    pub(super) fn values(&self) -> &[f32] {
        &self.0.storage::<f32>()[..self.0.layout().num_elements()]
    }
}

pub(super) struct Dense {
    pub(super) weight: Matrix,
    pub(super) bias: Option<Vector>,
}

impl Dense {
    fn of(linear: &Linear<Flex>) -> Option<Self> {
        Some(Self {
            weight: Matrix::of(&linear.weight)?,
            bias: Vector::of_optional(linear.bias.as_ref())?,
        })
    }

    /// Writes the bias times `scale` into `row` (zeros without a bias).
    fn fill_bias(&self, row: &mut [f32], scale: f32) {
        match &self.bias {
            Some(b) => row
                .iter_mut()
                .zip(b.values())
                .for_each(|(r, b)| *r = b * scale),
            None => row.fill(0.0),
        }
    }

    /// `row += bias` (nothing without a bias).
    pub(super) fn add_bias(&self, row: &mut [f32]) {
        if let Some(b) = &self.bias {
            row.iter_mut().zip(b.values()).for_each(|(r, b)| *r += b);
        }
    }

    /// `out[r, ..cols] (+)= scale · lhs[r, ..] · W` for every row r, where row r of `out`
    /// starts at `r · out_stride` and `accumulate` keeps what `out` holds.
    pub(super) fn matmul_into(
        &self,
        lhs: &[f32],
        out: &mut [f32],
        out_stride: usize,
        accumulate: bool,
        scale: f32,
    ) {
        let (k, n) = (self.weight.rows, self.weight.cols);
        let m = lhs.len() / k;
        if self.weight.bf16 {
            let packed = amx::PackedTokens::new(lhs, m, k);
            return self.matmul_packed(&packed, out, out_stride, accumulate, scale);
        }
        let out = Out::new(out, out_stride);
        gemm_into(
            m,
            n,
            k,
            out,
            accumulate,
            In::rows(lhs, k),
            self.weight.view(),
            scale,
        );
    }

    /// [`Dense::matmul_into`] of a bf16 weight on activations already packed for it.
    ///
    /// # Panics
    /// If the weight is f32.
    fn matmul_packed(
        &self,
        lhs: &amx::PackedTokens,
        out: &mut [f32],
        out_stride: usize,
        accumulate: bool,
        scale: f32,
    ) {
        let w = self.weight.bf16_out_in().expect("a bf16 weight");
        amx::dense(lhs, w, self.weight.cols, out, out_stride, accumulate, scale);
    }

    /// `out (+)= scale · g · Wᵀ` `[rows, in]`: the input gradient of `y = x·W` from
    /// `g = ∂L/∂y` `[rows, out]` in any strides.
    pub(super) fn input_grad(&self, g: In<'_>, out: &mut [f32], accumulate: bool, scale: f32) {
        let (d_in, d_out) = (self.weight.rows, self.weight.cols);
        let rows = out.len() / d_in;
        let out = Out::new(out, d_in);
        gemm_into(
            rows,
            d_in,
            d_out,
            out,
            accumulate,
            g,
            self.weight.view().t(),
            scale,
        );
    }
}

pub(super) struct Norm {
    pub(super) gamma: Vector,
    pub(super) beta: Option<Vector>,
    pub(super) eps: f32,
}

impl Norm {
    fn of(ln: &LayerNorm<Flex>, eps: f64) -> Option<Self> {
        Some(Self {
            gamma: Vector::of(&ln.gamma)?,
            beta: Vector::of_optional(ln.beta.as_ref())?,
            eps: eps as f32,
        })
    }

    /// `out = (x − mean) / √(var + eps) · γ + β`, biased variance (as torch and burn).
    fn row(&self, x: &[f32], out: &mut [f32]) {
        let (mean, rstd) = self.stats(x);
        let gamma = self.gamma.values();
        match &self.beta {
            Some(beta) => {
                for (((o, v), g), b) in out.iter_mut().zip(x).zip(gamma).zip(beta.values()) {
                    *o = (v - mean) * rstd * g + b;
                }
            }
            None => {
                for ((o, v), g) in out.iter_mut().zip(x).zip(gamma) {
                    *o = (v - mean) * rstd * g;
                }
            }
        }
    }

    /// [`Norm::row`] that also writes `x̂ = (x − mean)·rstd` and returns rstd, for backward.
    pub(super) fn row_saving(&self, x: &[f32], out: &mut [f32], xhat: &mut [f32]) -> f32 {
        let (mean, rstd) = self.stats(x);
        for (h, v) in xhat.iter_mut().zip(x) {
            *h = (v - mean) * rstd;
        }
        let gamma = self.gamma.values();
        for ((o, h), g) in out.iter_mut().zip(xhat.iter()).zip(gamma) {
            *o = h * g;
        }
        if let Some(beta) = &self.beta {
            out.iter_mut().zip(beta.values()).for_each(|(o, b)| *o += b);
        }
        rstd
    }

    /// `(mean, 1/√(var + eps))` of one row.
    fn stats(&self, x: &[f32]) -> (f32, f32) {
        let n = x.len() as f32;
        let mean = lane_sum(x, |v| v) / n;
        let var = lane_sum(x, |v| (v - mean) * (v - mean)) / n;
        (mean, 1.0 / (var + self.eps).sqrt())
    }
}

/// One layer's parameters, borrowed from the module without copying.
pub(super) struct Weights {
    pub(super) norm_before: Norm,
    pub(super) query: Dense,
    pub(super) key: Dense,
    pub(super) value: Dense,
    pub(super) attn_out: Dense,
    pub(super) norm_after: Norm,
    pub(super) mlp_in: Dense,
    pub(super) mlp_out: Dense,
    pub(super) heads: usize,
}

impl Weights {
    pub(super) fn of(layer: &LayerParams<'_, Flex>) -> Option<Self> {
        let eps = layer.eps;
        Some(Self {
            norm_before: Norm::of(layer.norm_before, eps)?,
            query: Dense::of(layer.query)?,
            key: Dense::of(layer.key)?,
            value: Dense::of(layer.value)?,
            attn_out: Dense::of(layer.attn_out)?,
            norm_after: Norm::of(layer.norm_after, eps)?,
            mlp_in: Dense::of(layer.mlp_in)?,
            mlp_out: Dense::of(layer.mlp_out)?,
            heads: layer.heads,
        })
    }

    /// Whether every Linear has a bias and every LayerNorm a β (the training path assumes so).
    pub(super) fn has_every_bias(&self) -> bool {
        self.dense().iter().all(|l| l.bias.is_some())
            && self.norm_before.beta.is_some()
            && self.norm_after.beta.is_some()
    }

    /// One token's biases, before the projections accumulate onto them:
    /// `qkv := [b_q/√hd | b_k | b_v]` and `x += b_o` (x becomes the residual stream h).
    pub(super) fn fill_biases(&self, qkv: &mut [f32], x: &mut [f32], scale: f32) {
        let d = x.len();
        self.query.fill_bias(&mut qkv[..d], scale);
        self.key.fill_bias(&mut qkv[d..2 * d], 1.0);
        self.value.fill_bias(&mut qkv[2 * d..], 1.0);
        self.attn_out.add_bias(x);
    }

    /// Whether every dense weight is f32 (what the training path's backward needs).
    pub(super) fn is_f32(&self) -> bool {
        self.dense().iter().all(|l| !l.weight.bf16)
    }

    fn dense(&self) -> [&Dense; 6] {
        [
            &self.query,
            &self.key,
            &self.value,
            &self.attn_out,
            &self.mlp_in,
            &self.mlp_out,
        ]
    }

    /// `qkv += n · [W_q/√hd | W_k | W_v]` for every token.
    pub(super) fn project_qkv(&self, normed: &[f32], qkv: &mut [f32], scale: f32) {
        let d = self.query.weight.rows;
        let bf16 = [&self.query, &self.key, &self.value].map(|l| l.weight.bf16);
        if bf16 == [true; 3] {
            // One packing of the normed tokens for the three products.
            let packed = amx::PackedTokens::new(normed, normed.len() / d, d);
            self.query.matmul_packed(&packed, qkv, 3 * d, true, scale);
            self.key
                .matmul_packed(&packed, &mut qkv[d..], 3 * d, true, 1.0);
            self.value
                .matmul_packed(&packed, &mut qkv[2 * d..], 3 * d, true, 1.0);
            return;
        }
        self.query.matmul_into(normed, qkv, 3 * d, true, scale);
        self.key
            .matmul_into(normed, &mut qkv[d..], 3 * d, true, 1.0);
        self.value
            .matmul_into(normed, &mut qkv[2 * d..], 3 * d, true, 1.0);
    }

    /// The layer on `stream` = x `[B·S, D]` row-major, in place; `seq` = S rows per image.
    pub(super) fn forward(&self, stream: &mut [f32], seq: usize, scratch: &mut Scratch) {
        let d = self.query.weight.rows;
        let inner = self.mlp_in.weight.cols;
        let rows = stream.len() / d;
        let hd = d / self.heads;
        let scale = (hd as f32).sqrt().recip();
        let rows_per_task = (CHUNK / d).max(1);
        let normed = sized(&mut scratch.normed, rows * d);
        let qkv = sized(&mut scratch.qkv, rows * 3 * d);
        let mlp = sized(&mut scratch.mlp, rows * inner);

        // n = LN_before(x); qkv = [b_q/√d | b_k | b_v]; h = x + b_o.
        normed
            .par_chunks_mut(rows_per_task * d)
            .zip(qkv.par_chunks_mut(rows_per_task * 3 * d))
            .zip(stream.par_chunks_mut(rows_per_task * d))
            .for_each(|((n, qkv), x)| {
                for ((n, qkv), x) in n
                    .chunks_mut(d)
                    .zip(qkv.chunks_mut(3 * d))
                    .zip(x.chunks_mut(d))
                {
                    self.norm_before.row(x, n);
                    self.fill_biases(qkv, x, scale);
                }
            });
        self.project_qkv(normed, qkv, scale);

        // h += attention(q, k, v) · W_o (the context reuses `normed`).
        let context = normed;
        attention(qkv, context, seq, self.heads, hd, None);
        self.attn_out.matmul_into(context, stream, d, true, 1.0);

        // n = LN_after(h); h += b_2; m = GELU(n · W_1 + b_1); h += m · W_2.
        let normed = context;
        normed
            .par_chunks_mut(rows_per_task * d)
            .zip(stream.par_chunks_mut(rows_per_task * d))
            .for_each(|(n, h)| {
                for (n, h) in n.chunks_mut(d).zip(h.chunks_mut(d)) {
                    self.norm_after.row(h, n);
                    self.mlp_out.add_bias(h);
                }
            });
        self.mlp_in.matmul_into(normed, mlp, inner, false, 1.0);
        mlp.par_chunks_mut(rows_per_task * inner).for_each(|rows| {
            for row in rows.chunks_mut(inner) {
                self.mlp_in.add_bias(row);
                row.iter_mut().for_each(|v| *v = gelu_f32(*v));
            }
        });
        self.mlp_out.matmul_into(mlp, stream, d, true, 1.0);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::ViTConfig;
    use crate::model::EncoderLayer;
    use burn::tensor::Distribution;

    /// A layer with uneven sizes (S = 17 tokens, 3 heads of 8, MLP 40) and non-trivial
    /// biases and norms, so that every bias, scale and stride is exercised.
    pub(crate) fn layer<B: Backend>(qkv_bias: bool) -> EncoderLayer<B> {
        let cfg = ViTConfig {
            hidden_size: 24,
            num_hidden_layers: 1,
            num_attention_heads: 3,
            intermediate_size: 40,
            image_size: 16,
            patch_size: 4,
            qkv_bias,
            layer_norm_eps: 1e-6,
            ..ViTConfig::tiny()
        };
        let mut vit = cfg.init::<B>(&Default::default());
        let mut layer = vit.encoder.layer.remove(0);
        let dev = Default::default();
        let noise = |shape: [usize; 1]| {
            Param::from_tensor(Tensor::<B, 1>::random(
                shape,
                Distribution::Normal(0.5, 0.3),
                &dev,
            ))
        };
        let rand_bias = |l: &mut Linear<B>| {
            let n = l.weight.dims()[1];
            if l.bias.is_some() {
                l.bias = Some(noise([n]));
            }
        };
        rand_bias(&mut layer.attention.attention.query);
        rand_bias(&mut layer.attention.attention.key);
        rand_bias(&mut layer.attention.attention.value);
        rand_bias(&mut layer.attention.output.dense);
        rand_bias(&mut layer.intermediate.dense);
        rand_bias(&mut layer.output.dense);
        for ln in [&mut layer.layernorm_before, &mut layer.layernorm_after] {
            ln.gamma = noise([24]);
            ln.beta = Some(noise([24]));
        }
        // A transposed weight view (as a loader might leave it) must be read in its strides.
        let w = layer.intermediate.dense.weight.val();
        let wt = w.clone().transpose().into_data();
        let wt = Tensor::<B, 2>::from_data(wt, &dev).transpose();
        layer.intermediate.dense.weight = Param::from_tensor(wt);
        layer
    }

    fn max_abs_diff(a: Tensor<Flex, 3>, b: Tensor<Flex, 3>) -> f32 {
        let (a, b) = (a.into_data().to_vec::<f32>().unwrap(), b.into_data());
        let b = b.to_vec::<f32>().unwrap();
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn matches_the_generic_path() {
        for qkv_bias in [true, false] {
            let layer = layer::<Flex>(qkv_bias);
            let x = Tensor::<Flex, 3>::random(
                [3, 17, 24],
                Distribution::Normal(0.0, 1.0),
                &Default::default(),
            );
            let fast =
                try_forward(layer.params(), x.clone()).expect("Flex f32 takes the fast path");
            let generic = layer.forward_generic(x);
            let diff = max_abs_diff(fast, generic);
            assert!(diff < 2e-5, "qkv_bias {qkv_bias}: max |diff| = {diff}");
        }
    }

    /// A non-contiguous input (a transposed view) gives the same result as its copy.
    #[test]
    fn reads_strided_inputs() {
        let layer = layer::<Flex>(true);
        let x = Tensor::<Flex, 3>::random(
            [17, 2, 24],
            Distribution::Normal(0.0, 1.0),
            &Default::default(),
        );
        let view = x.clone().swap_dims(0, 1);
        let copy = Tensor::<Flex, 3>::from_data(view.clone().into_data(), &Default::default());
        let a = try_forward(layer.params(), view).unwrap();
        let b = try_forward(layer.params(), copy).unwrap();
        assert_eq!(max_abs_diff(a, b), 0.0);
    }

    /// `forward_cls` (the CLS-only last layer) is the CLS row of the full layer, on Flex
    /// and on NdArray, and so are its gradients under autodiff.
    #[test]
    fn cls_only_layer_matches_the_full_layer() {
        use crate::model::cls;
        let dev = Default::default();
        let x = Tensor::<Flex, 3>::random([3, 17, 24], Distribution::Normal(0.0, 1.0), &dev);
        let flex = layer::<Flex>(true);
        let diff = max_abs_diff(
            flex.forward_cls(x.clone()).unsqueeze_dim(1),
            cls(flex.forward(x.clone())).unsqueeze_dim(1),
        );
        assert!(diff < 2e-5, "Flex: {diff}");

        type Nd = burn::backend::NdArray<f32>;
        let nd = layer::<Nd>(false);
        let xn = Tensor::<Nd, 3>::from_data(x.clone().into_data(), &Default::default());
        let a = nd
            .forward_cls(xn.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let b = cls(nd.forward(xn)).into_data().to_vec::<f32>().unwrap();
        let diff = a
            .iter()
            .zip(&b)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff < 2e-5, "NdArray: {diff}");

        type Ad = burn::backend::Autodiff<Flex>;
        let ad = layer::<Ad>(true);
        let grads_of = |y: Tensor<Ad, 2>| {
            let g = y.sin().sum().backward();
            let w = ad.intermediate.dense.weight.grad(&g).unwrap();
            let q = ad.attention.attention.query.weight.grad(&g).unwrap();
            (
                w.into_data().to_vec::<f32>().unwrap(),
                q.into_data().to_vec::<f32>().unwrap(),
            )
        };
        let xa = Tensor::<Ad, 3>::from_inner(x);
        let (w1, q1) = grads_of(ad.forward_cls(xa.clone()));
        let (w2, q2) = grads_of(cls(ad.forward(xa)));
        for (a, b) in [(w1, w2), (q1, q2)] {
            let diff = a
                .iter()
                .zip(&b)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff < 2e-5, "Autodiff: {diff}");
        }
    }

    /// Other backends take the generic path.
    #[test]
    fn other_backends_fall_through() {
        type Nd = burn::backend::NdArray<f32>;
        let vit = ViTConfig::tiny().init::<Nd>(&Default::default());
        let x = Tensor::<Nd, 3>::zeros([1, 5, ViTConfig::tiny().hidden_size], &Default::default());
        assert!(try_forward(vit.encoder.layer[0].params(), x).is_err());
    }
}
