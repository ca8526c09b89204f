//! The host layer kernel under `Autodiff<Flex>`: the trainable tail's path.
//!
//! The forward is the frozen path's, keeping what the backward needs (the norms' x̂ and
//! 1/σ, Q/K/V, the attention probabilities, the context, the MLP's pre-activation and
//! activation); the backward is written out with gemm, as one autodiff node whose parents are
//! the input and the layer's 16 parameters. burn's generic form of the same layer records ~40
//! nodes and runs attention's backward over `[B, H, S, S]` tensors out of cache.
//!
//! Tested against burn's autodiff of the generic path (every parameter's gradient and the
//! input's) below.

use std::fmt;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Param};
use burn::nn::{LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::attention::{attention, attention_backward};
use super::dispatch::cast;
use super::gelu::{gelu_derivative_f32, gelu_f32};
use super::gemm::{gemm_into, In, Out};
use super::lanes::{lane_dot, lane_sum, CHUNK};
use super::layer::{contiguous, with_scratch, Norm, Weights};
use super::LayerParams;

type AD = Autodiff<Flex>;

/// Runs `layer` on `x` with the host kernel when the backend is `Autodiff<Flex>`, everything
/// is f32 and every bias is present; otherwise gives `x` back.
pub(crate) fn try_forward<B: Backend>(
    layer: LayerParams<'_, B>,
    x: Tensor<B, 3>,
) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    let Some(ad) = layer.downcast::<AD>() else {
        return Err(x);
    };
    if x.dtype() != DType::F32 {
        return Err(x);
    }
    let valid = InnerLayer::of(&ad);
    let Some(weights) =
        Weights::of(&valid.params(&ad)).filter(|w| w.has_every_bias() && w.is_f32())
    else {
        return Err(x);
    };
    let Some(params) = parameter_tensors(&ad) else {
        return Err(x);
    };
    // B is Autodiff<Flex>: the downcast above has shown it.
    let x: Tensor<AD, 3> = cast(x);
    let [b, s, d] = x.dims();
    let x = x.into_primitive().tensor();
    let parents = std::array::from_fn(|i| match i {
        0 => x.node.clone(),
        i => params[i - 1].node.clone(),
    });
    let input = contiguous(x.primitive);
    let input = &input.storage::<f32>()[..b * s * d];
    let out = match LayerBackward
        .prepare::<NoCheckpointing>(parents)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let shapes = params.map(|p| p.primitive.shape());
            let (y, saved) = forward_saving(weights, shapes, input, s);
            prep.finish(Arc::new(saved), to_tensor(y, [b, s, d]))
        }
        OpsKind::UnTracked(prep) => {
            let mut y = input.to_vec();
            with_scratch(|scratch| weights.forward(&mut y, s, scratch));
            prep.finish(to_tensor(y, [b, s, d]))
        }
    };
    Ok(cast(Tensor::<AD, 3>::from_primitive(
        TensorPrimitive::Float(out),
    )))
}

/// The layer's modules on the inner backend (`valid()`), owned so that a view can borrow them.
struct InnerLayer {
    norms: [LayerNorm<Flex>; 2],
    dense: [Linear<Flex>; 6],
}

impl InnerLayer {
    fn of(layer: &LayerParams<'_, AD>) -> Self {
        let dense = [
            layer.query,
            layer.key,
            layer.value,
            layer.attn_out,
            layer.mlp_in,
            layer.mlp_out,
        ];
        Self {
            norms: [layer.norm_before, layer.norm_after].map(|n| n.clone().valid()),
            dense: dense.map(|l| l.clone().valid()),
        }
    }

    fn params(&self, layer: &LayerParams<'_, AD>) -> LayerParams<'_, Flex> {
        let [norm_before, norm_after] = &self.norms;
        let [query, key, value, attn_out, mlp_in, mlp_out] = &self.dense;
        LayerParams {
            norm_before,
            query,
            key,
            value,
            attn_out,
            norm_after,
            mlp_in,
            mlp_out,
            heads: layer.heads,
            eps: layer.eps,
        }
    }
}

/// The layer's 16 parameters as autodiff tensors, in the order of [`Grads::params`]; `None`
/// when a bias is absent.
fn parameter_tensors(layer: &LayerParams<'_, AD>) -> Option<[FloatTensor<AD>; 16]> {
    fn one(p: &Param<Tensor<AD, 1>>) -> FloatTensor<AD> {
        p.val().into_primitive().tensor()
    }
    fn two(p: &Param<Tensor<AD, 2>>) -> FloatTensor<AD> {
        p.val().into_primitive().tensor()
    }
    let dense = |l: &Linear<AD>| Some((two(&l.weight), one(l.bias.as_ref()?)));
    let (wq, bq) = dense(layer.query)?;
    let (wk, bk) = dense(layer.key)?;
    let (wv, bv) = dense(layer.value)?;
    let (wo, bo) = dense(layer.attn_out)?;
    let (w1, b1) = dense(layer.mlp_in)?;
    let (w2, b2) = dense(layer.mlp_out)?;
    let ln1 = layer.norm_before;
    let ln2 = layer.norm_after;
    Some([
        one(&ln1.gamma),
        one(ln1.beta.as_ref()?),
        wq,
        bq,
        wk,
        bk,
        wv,
        bv,
        wo,
        bo,
        one(&ln2.gamma),
        one(ln2.beta.as_ref()?),
        w1,
        b1,
        w2,
        b2,
    ])
}

fn to_tensor<const N: usize>(values: Vec<f32>, shape: [usize; N]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// What the backward pass needs from the forward.
struct Saved {
    weights: Weights,
    /// Shapes of the 16 parameters, for their gradients.
    shapes: [Shape; 16],
    seq: usize,
    /// LN_before output, its x̂ and 1/σ per row.
    n1: Vec<f32>,
    xhat1: Vec<f32>,
    rstd1: Vec<f32>,
    /// `[q/√hd | k | v]` per token.
    qkv: Vec<f32>,
    /// Softmax probabilities `[B·H, S, S]`.
    probs: Vec<f32>,
    /// Heads-concatenated attention output.
    context: Vec<f32>,
    /// LN_after output, its x̂ and 1/σ per row.
    n2: Vec<f32>,
    xhat2: Vec<f32>,
    rstd2: Vec<f32>,
    /// MLP pre-activation `n2·W1 + b1` and its GELU.
    pre: Vec<f32>,
    act: Vec<f32>,
}

impl fmt::Debug for Saved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Saved")
            .field("rows", &self.rstd1.len())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// The forward of [`Weights::forward`], keeping its intermediates.
fn forward_saving(w: Weights, shapes: [Shape; 16], x: &[f32], seq: usize) -> (Vec<f32>, Saved) {
    let d = w.query.weight.rows;
    let inner = w.mlp_in.weight.cols;
    let rows = x.len() / d;
    let hd = d / w.heads;
    let scale = (hd as f32).sqrt().recip();
    let per_task = (CHUNK / d).max(1);
    let zeros = |n: usize| vec![0.0f32; n];
    let mut y = x.to_vec();
    let (mut n1, mut xhat1, mut rstd1) = (zeros(rows * d), zeros(rows * d), zeros(rows));
    let mut qkv = zeros(rows * 3 * d);
    n1.par_chunks_mut(per_task * d)
        .zip(xhat1.par_chunks_mut(per_task * d))
        .zip(rstd1.par_chunks_mut(per_task))
        .zip(qkv.par_chunks_mut(per_task * 3 * d))
        .zip(y.par_chunks_mut(per_task * d))
        .for_each(|((((n, xh), rs), qkv), y)| {
            for ((((n, xh), rs), qkv), y) in n
                .chunks_mut(d)
                .zip(xh.chunks_mut(d))
                .zip(rs.iter_mut())
                .zip(qkv.chunks_mut(3 * d))
                .zip(y.chunks_mut(d))
            {
                *rs = w.norm_before.row_saving(y, n, xh);
                w.fill_biases(qkv, y, scale);
            }
        });
    w.project_qkv(&n1, &mut qkv, scale);

    let images = rows / seq;
    let mut probs = zeros(images * w.heads * seq * seq);
    let mut context = zeros(rows * d);
    attention(&qkv, &mut context, seq, w.heads, hd, Some(&mut probs));
    w.attn_out.matmul_into(&context, &mut y, d, true, 1.0);

    let (mut n2, mut xhat2, mut rstd2) = (zeros(rows * d), zeros(rows * d), zeros(rows));
    n2.par_chunks_mut(per_task * d)
        .zip(xhat2.par_chunks_mut(per_task * d))
        .zip(rstd2.par_chunks_mut(per_task))
        .zip(y.par_chunks_mut(per_task * d))
        .for_each(|(((n, xh), rs), y)| {
            for (((n, xh), rs), y) in n
                .chunks_mut(d)
                .zip(xh.chunks_mut(d))
                .zip(rs.iter_mut())
                .zip(y.chunks_mut(d))
            {
                *rs = w.norm_after.row_saving(y, n, xh);
                w.mlp_out.add_bias(y);
            }
        });
    let mut pre = zeros(rows * inner);
    w.mlp_in.matmul_into(&n2, &mut pre, inner, false, 1.0);
    let mut act = zeros(rows * inner);
    pre.par_chunks_mut(per_task * inner)
        .zip(act.par_chunks_mut(per_task * inner))
        .for_each(|(p, a)| {
            for (p, a) in p.chunks_mut(inner).zip(a.chunks_mut(inner)) {
                w.mlp_in.add_bias(p);
                for (a, p) in a.iter_mut().zip(p.iter()) {
                    *a = gelu_f32(*p);
                }
            }
        });
    w.mlp_out.matmul_into(&act, &mut y, d, true, 1.0);
    let saved = Saved {
        weights: w,
        shapes,
        seq,
        n1,
        xhat1,
        rstd1,
        qkv,
        probs,
        context,
        n2,
        xhat2,
        rstd2,
        pre,
        act,
    };
    (y, saved)
}

/// Gradients of the layer's input (when asked) and of its 16 parameters.
struct Grads {
    input: Option<Vec<f32>>,
    /// In the order of [`parameter_tensors`].
    params: [Vec<f32>; 16],
}

impl Saved {
    /// Backward of the layer from `dy = ∂L/∂y` `[B·S, D]`.
    fn backward(&self, dy: &[f32], want_input: bool) -> Grads {
        let w = &self.weights;
        let d = w.query.weight.rows;
        let inner = w.mlp_in.weight.cols;
        let rows = dy.len() / d;
        let hd = d / w.heads;
        let scale = (hd as f32).sqrt().recip();
        let per_task = (CHUNK / d).max(1);

        // y = h + act·W2 + b2.
        let dw2 = weight_grad(&self.act, inner, In::rows(dy, d), d, 1.0);
        let db2 = column_sums(dy, d, 0, d);
        let mut dpre = vec![0.0f32; rows * inner];
        w.mlp_out.input_grad(In::rows(dy, d), &mut dpre, false, 1.0);
        // act = GELU(pre), pre = n2·W1 + b1.
        dpre.par_chunks_mut(per_task * inner)
            .zip(self.pre.par_chunks(per_task * inner))
            .for_each(|(g, p)| {
                for (g, &p) in g.iter_mut().zip(p) {
                    *g *= gelu_derivative_f32(p);
                }
            });
        let dw1 = weight_grad(&self.n2, d, In::rows(&dpre, inner), inner, 1.0);
        let db1 = column_sums(&dpre, inner, 0, inner);
        let mut dn2 = vec![0.0f32; rows * d];
        w.mlp_in
            .input_grad(In::rows(&dpre, inner), &mut dn2, false, 1.0);
        drop(dpre);
        // n2 = LN_after(h); the residual passes dy on to h.
        let (dgamma2, dbeta2) = norm_param_grads(&dn2, &self.xhat2, d);
        let mut dh = dy.to_vec();
        norm_input_grad(&w.norm_after, &dn2, &self.xhat2, &self.rstd2, &mut dh);

        // h = x + context·Wo + bo.
        let dwo = weight_grad(&self.context, d, In::rows(&dh, d), d, 1.0);
        let dbo = column_sums(&dh, d, 0, d);
        let mut dcontext = dn2;
        w.attn_out
            .input_grad(In::rows(&dh, d), &mut dcontext, false, 1.0);
        let dqkv = attention_backward(&self.qkv, &self.probs, &dcontext, self.seq, w.heads, hd);

        // [q/√hd | k | v] = n1·[Wq/√hd | Wk | Wv] + [bq/√hd | bk | bv].
        let part = |c: usize| In {
            data: &dqkv[c * d..],
            rs: 3 * d,
            cs: 1,
        };
        let dwq = weight_grad(&self.n1, d, part(0), d, scale);
        let dwk = weight_grad(&self.n1, d, part(1), d, 1.0);
        let dwv = weight_grad(&self.n1, d, part(2), d, 1.0);
        let mut dbq = column_sums(&dqkv, 3 * d, 0, d);
        dbq.iter_mut().for_each(|g| *g *= scale);
        let dbk = column_sums(&dqkv, 3 * d, d, d);
        let dbv = column_sums(&dqkv, 3 * d, 2 * d, d);
        let mut dn1 = dcontext;
        for (c, dense, s) in [(0, &w.query, scale), (1, &w.key, 1.0), (2, &w.value, 1.0)] {
            dense.input_grad(part(c), &mut dn1, c > 0, s);
        }
        let (dgamma1, dbeta1) = norm_param_grads(&dn1, &self.xhat1, d);
        let input = want_input.then(|| {
            norm_input_grad(&w.norm_before, &dn1, &self.xhat1, &self.rstd1, &mut dh);
            dh
        });
        Grads {
            input,
            params: [
                dgamma1, dbeta1, dwq, dbq, dwk, dbk, dwv, dbv, dwo, dbo, dgamma2, dbeta2, dw1, db1,
                dw2, db2,
            ],
        }
    }
}

/// `scale · Aᵀ·G` `[a_width, g_width]`: the weight gradient of `y = A·W` for A
/// `[rows, a_width]` row-major and G = ∂L/∂y `[rows, g_width]` in any strides.
fn weight_grad(a: &[f32], a_width: usize, g: In<'_>, g_width: usize, scale: f32) -> Vec<f32> {
    let rows = a.len() / a_width;
    let mut out = vec![0.0f32; a_width * g_width];
    gemm_into(
        a_width,
        g_width,
        rows,
        Out::new(&mut out, g_width),
        false,
        In::rows(a, a_width).t(),
        g,
        scale,
    );
    out
}

/// `Σ_r x[r, first + c]` for c < `cols`, over the rows of `x` `[rows, width]`.
fn column_sums(x: &[f32], width: usize, first: usize, cols: usize) -> Vec<f32> {
    let per_task = (CHUNK / width).max(1) * width;
    let add = |mut a: Vec<f32>, b: Vec<f32>| {
        a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
        a
    };
    x.par_chunks(per_task)
        .map(|rows| {
            let mut acc = vec![0.0f32; cols];
            for row in rows.chunks(width) {
                let row = &row[first..first + cols];
                acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
            }
            acc
        })
        // Collected and summed in order, not `reduce`d: rayon's reduction tree depends on
        // scheduling, and a resumed run must repeat an uninterrupted one bit for bit.
        .collect::<Vec<_>>()
        .into_iter()
        .fold(vec![0.0f32; cols], add)
}

/// `(∂L/∂γ, ∂L/∂β) = (Σ_r dn ⊙ x̂, Σ_r dn)` of a LayerNorm `n = x̂·γ + β`.
fn norm_param_grads(dn: &[f32], xhat: &[f32], d: usize) -> (Vec<f32>, Vec<f32>) {
    let per_task = (CHUNK / d).max(1) * d;
    let add = |(mut g, mut b): (Vec<f32>, Vec<f32>), (g2, b2): (Vec<f32>, Vec<f32>)| {
        g.iter_mut().zip(&g2).for_each(|(x, y)| *x += y);
        b.iter_mut().zip(&b2).for_each(|(x, y)| *x += y);
        (g, b)
    };
    dn.par_chunks(per_task)
        .zip(xhat.par_chunks(per_task))
        .map(|(dn, xh)| {
            let (mut dg, mut db) = (vec![0.0f32; d], vec![0.0f32; d]);
            for (dn, xh) in dn.chunks(d).zip(xh.chunks(d)) {
                for (((g, b), &dn), &xh) in dg.iter_mut().zip(db.iter_mut()).zip(dn).zip(xh) {
                    *g += dn * xh;
                    *b += dn;
                }
            }
            (dg, db)
        })
        // In order, as in `column_sums`.
        .collect::<Vec<_>>()
        .into_iter()
        .fold((vec![0.0f32; d], vec![0.0f32; d]), add)
}

/// `dx += rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂))` per row, `g = dn ⊙ γ`: the input
/// gradient of a LayerNorm.
fn norm_input_grad(norm: &Norm, dn: &[f32], xhat: &[f32], rstd: &[f32], dx: &mut [f32]) {
    let gamma = norm.gamma.values();
    let d = gamma.len();
    let per_task = (CHUNK / d).max(1);
    dx.par_chunks_mut(per_task * d)
        .zip(dn.par_chunks(per_task * d))
        .zip(xhat.par_chunks(per_task * d))
        .zip(rstd.par_chunks(per_task))
        .for_each_init(
            || vec![0.0f32; d],
            |g, (((dx, dn), xh), rs)| {
                let rows = dx.chunks_mut(d).zip(dn.chunks(d)).zip(xh.chunks(d)).zip(rs);
                for (((dx, dn), xh), &rs) in rows {
                    for ((g, dn), gm) in g.iter_mut().zip(dn).zip(gamma) {
                        *g = dn * gm;
                    }
                    let mean_g = lane_sum(g, |v| v) / d as f32;
                    let mean_gx = lane_dot(g, xh) / d as f32;
                    for ((dx, g), xh) in dx.iter_mut().zip(g.iter()).zip(xh) {
                        *dx += rs * (g - mean_g - xh * mean_gx);
                    }
                }
            },
        );
}

/// The layer's autodiff node.
#[derive(Debug)]
struct LayerBackward;

impl Backward<Flex, 17> for LayerBackward {
    type State = Arc<Saved>;

    fn backward(self, ops: Ops<Self::State, 17>, grads: &mut Gradients, _: &mut Checkpointer) {
        let saved = ops.state;
        let d = saved.weights.query.weight.rows;
        let rows = saved.rstd1.len();
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let [node_x, param_nodes @ ..] = ops.parents;
        let g = saved.backward(&dy.storage::<f32>()[..rows * d], node_x.is_some());
        if let (Some(node), Some(dx)) = (node_x, g.input) {
            grads.register::<Flex>(node.id, to_tensor(dx, [rows / saved.seq, saved.seq, d]));
        }
        for ((node, grad), shape) in param_nodes.into_iter().zip(g.params).zip(&saved.shapes) {
            if let Some(node) = node {
                let grad = FlexTensor::from_data(TensorData::new(grad, shape.clone()));
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// Every parameter's gradient (and the input's, when it is tracked) from the host
    /// kernel equals burn's autodiff of the generic layer, for `Σ w ⊙ layer(x)`.
    #[test]
    fn gradients_match_burn_autodiff() {
        let dev = Default::default();
        let layer = super::super::layer::tests::layer::<AD>(true);
        let x0 = Tensor::<Flex, 3>::random([2, 17, 24], Distribution::Normal(0.0, 1.0), &dev);
        let w = Tensor::<AD, 3>::random([2, 17, 24], Distribution::Normal(0.0, 1.0), &dev);
        for track_input in [true, false] {
            let run = |host: bool| -> Vec<(String, Vec<f32>)> {
                let mut x = Tensor::<AD, 3>::from_inner(x0.clone());
                if track_input {
                    x = x.require_grad();
                }
                let y = if host {
                    try_forward(layer.params(), x.clone())
                        .expect("Autodiff<Flex> f32 takes the host path")
                } else {
                    layer.forward_generic(x.clone())
                };
                let grads = (y * w.clone()).sum().backward();
                let mut out = Vec::new();
                if let Some(g) = x.grad(&grads) {
                    out.push(("x".to_string(), g.into_data().to_vec::<f32>().unwrap()));
                }
                let one = |name: &str, p: &Param<Tensor<AD, 1>>| {
                    let g = p
                        .grad(&grads)
                        .unwrap_or_else(|| panic!("no gradient for {name}"));
                    (name.to_string(), g.into_data().to_vec::<f32>().unwrap())
                };
                let two = |name: &str, p: &Param<Tensor<AD, 2>>| {
                    let g = p
                        .grad(&grads)
                        .unwrap_or_else(|| panic!("no gradient for {name}"));
                    (name.to_string(), g.into_data().to_vec::<f32>().unwrap())
                };
                let a = &layer.attention.attention;
                let linears = [
                    ("query", &a.query),
                    ("key", &a.key),
                    ("value", &a.value),
                    ("attn_out", &layer.attention.output.dense),
                    ("mlp_in", &layer.intermediate.dense),
                    ("mlp_out", &layer.output.dense),
                ];
                for (name, l) in linears {
                    out.push(two(&format!("{name}.weight"), &l.weight));
                    out.push(one(&format!("{name}.bias"), l.bias.as_ref().unwrap()));
                }
                for (name, ln) in [
                    ("ln1", &layer.layernorm_before),
                    ("ln2", &layer.layernorm_after),
                ] {
                    out.push(one(&format!("{name}.gamma"), &ln.gamma));
                    out.push(one(&format!("{name}.beta"), ln.beta.as_ref().unwrap()));
                }
                out
            };
            let (host, generic) = (run(true), run(false));
            assert_eq!(host.len(), generic.len());
            assert_eq!(host.len(), 16 + usize::from(track_input));
            for ((name, h), (name2, g)) in host.iter().zip(&generic) {
                assert_eq!(name, name2);
                assert_eq!(h.len(), g.len(), "{name}");
                let scale = g.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
                let diff = h
                    .iter()
                    .zip(g)
                    .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    diff <= 2e-5 * scale,
                    "{name}: max |diff| {diff}, max |grad| {scale}"
                );
            }
        }
    }
}
