//! The Vision Transformer: modules named after the Hugging Face keys, so that
//! `encoder.layer.3.attention.attention.query` here is `encoder.layer.3.attention.attention.query`
//! in a `ViTModel` checkpoint.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Distribution, FloatDType, Tensor};

use crate::config::ViTConfig;
use crate::error::VitError;
use crate::kernels::{self, gelu, softmax_last, try_layer_forward, LayerParams};
use crate::precision::{cast_floats, AppliedPrecision, TrunkPrecision};

/// How multi-head attention is computed.
///
/// `Matmul` spells out `softmax(QKᵀ/√d)·V` with batched matmuls. `Fused` calls burn 0.21's
/// `module::attention` op (Flex has a fused CPU kernel: naive per-head gemms for short
/// sequences, flash-style tiling for long ones; under `Autodiff` burn falls back to the
/// matmul-softmax form anyway). Both compute the same thing (tested to 1e-5).
/// `Matmul` is the default. On Flex f32 outside autodiff (the frozen trunk, evaluation,
/// `fairpo features`) it runs the whole layer as the host kernel of `kernels/layer.rs`, whose
/// attention works per (image, head) in cache; `examples/bench_vit.rs` reports both kinds
/// (ViT-B/16, batch 8, 2 threads: 8.8 img/s vs 5.5 for `Fused`), so the choice can be
/// revisited per machine/backend (e.g. CUDA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttentionKind {
    /// burn's fused scaled-dot-product attention op.
    Fused,
    /// Explicit matmul, softmax, matmul.
    #[default]
    Matmul,
}

/// A `Linear` applied to every row of `[B, S, D_in]`, computed as one 2-D matmul on the
/// flattened `[B·S, D_in]` (a free reshape: the inputs here are contiguous).
///
/// Why: burn's `Linear` on a 3-D input broadcasts the weight to `[1, D_in, D_out]` and runs a
/// batched matmul, i.e. B separate gemms of `[S, D_in] x [D_in, D_out]` that each re-pack the
/// weight; its weight gradient is B gemms into a `[B, D_in, D_out]` buffer then summed over B.
/// One tall gemm avoids both (`examples/bench_vit_ops.rs` compares the two). Caveat: while
/// another process keeps a core busy, the tall gemm (which gemm parallelises internally, in
/// lockstep) can be slower than the batched form (whose per-matrix tasks are work-stolen).
/// Give a training run its cores, or set `RAYON_NUM_THREADS` to the free cores.
///
/// # Shapes
/// - x: `[B, S, D_in]`
/// - output: `[B, S, D_out]`
fn linear_rows<B: Backend>(linear: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, s, d] = x.dims();
    let y = linear.forward(x.reshape([b * s, d]));
    let out = y.dims()[1];
    y.reshape([b, s, out])
}

/// Cut pixels into flattened patches, in the order (channel, row, column) inside a patch,
/// which is the order of a flattened `Conv2d` kernel `[D, C, p, p]`.
///
/// # Shapes
/// - pixels: `[B, C, H, W]` with H, W multiples of `patch`
/// - output: `[B, (H/p)·(W/p), C·p·p]`, patches in row-major order
pub fn patchify<B: Backend>(pixels: Tensor<B, 4>, patch: usize) -> Tensor<B, 3> {
    let [b, c, h, w] = pixels.dims();
    let (gh, gw) = (h / patch, w / patch);
    pixels
        .reshape([b, c, gh, patch, gw, patch])
        .permute([0, 2, 4, 1, 3, 5])
        .reshape([b, gh * gw, c * patch * patch])
}

/// [`patchify`] after checking that `pixels` is `[B, num_channels, image_size, image_size]`.
///
/// # Panics
/// If the channels or the side differ from the model's.
fn checked_patchify<B: Backend>(
    pixels: Tensor<B, 4>,
    num_channels: usize,
    image_size: usize,
    patch_size: usize,
) -> Tensor<B, 3> {
    let [_, c, h, w] = pixels.dims();
    assert!(
        c == num_channels && h == image_size && w == image_size,
        "ViT expects pixels [B, {num_channels}, {image_size}, {image_size}], got [B, {c}, {h}, {w}]"
    );
    patchify(pixels, patch_size)
}

/// Patch projection: the HF `Conv2d(C, D, kernel = stride = p)` as a matmul on patches.
#[derive(Module, Debug)]
pub struct PatchEmbeddings<B: Backend> {
    /// Weight `[C·p·p, D]` (the conv kernel flattened and transposed), bias `[D]`.
    pub projection: Linear<B>,
}

/// CLS token, patch projection and position embeddings.
#[derive(Module, Debug)]
pub struct Embeddings<B: Backend> {
    /// Learned CLS token `[1, 1, D]`.
    pub cls_token: Param<Tensor<B, 3>>,
    /// Learned position embeddings `[1, N+1, D]` (CLS first).
    pub position_embeddings: Param<Tensor<B, 3>>,
    /// Patch projection.
    pub patch_embeddings: PatchEmbeddings<B>,
}

impl<B: Backend> Embeddings<B> {
    /// Embed flattened patches (see [`patchify`]).
    ///
    /// # Shapes
    /// - patches: `[B, N, C·p·p]`
    /// - output: `[B, N+1, D]`
    pub fn forward(&self, patches: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = linear_rows(&self.patch_embeddings.projection, patches);
        let [b, _, d] = x.dims();
        let cls = self.cls_token.val().expand([b, 1, d]);
        Tensor::cat(vec![cls, x], 1) + self.position_embeddings.val()
    }
}

/// Query, key and value projections (HF `attention.attention`).
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// Query projection `[D, D]`.
    pub query: Linear<B>,
    /// Key projection `[D, D]`.
    pub key: Linear<B>,
    /// Value projection `[D, D]`.
    pub value: Linear<B>,
    #[module(skip)]
    num_heads: usize,
    #[module(skip)]
    kind: AttentionKind,
}

impl<B: Backend> SelfAttention<B> {
    /// Number of attention heads.
    pub(crate) fn num_heads(&self) -> usize {
        self.num_heads
    }

    /// Multi-head scaled-dot-product self-attention (no mask, no dropout).
    ///
    /// # Shapes
    /// - x: `[B, S, D]`
    /// - output: `[B, S, D]` (heads concatenated, before the output projection)
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward_queries(x.clone(), x)
    }

    /// Attention of the tokens `queries` over all tokens `x` (its keys and values): the rows
    /// of [`SelfAttention::forward`] for a subset of the tokens, computing only those rows.
    ///
    /// # Shapes
    /// - queries: `[B, Q, D]` (LayerNorm'd, as `x`)
    /// - x: `[B, S, D]`
    /// - output: `[B, Q, D]`
    pub fn forward_queries(&self, queries: Tensor<B, 3>, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, s, d] = x.dims();
        let nq = queries.dims()[1];
        let h = self.num_heads;
        let hd = d / h;
        let split = |t: Tensor<B, 3>, n: usize| t.reshape([b, n, h, hd]).swap_dims(1, 2);
        let q = split(linear_rows(&self.query, queries), nq);
        let k = split(linear_rows(&self.key, x.clone()), s);
        let v = split(linear_rows(&self.value, x), s);
        let ctx = match self.kind {
            AttentionKind::Fused => {
                attention(q, k, v, None, None, AttentionModuleOptions::default())
            }
            AttentionKind::Matmul => {
                let scale = (hd as f64).sqrt().recip();
                let scores = q.matmul(k.swap_dims(2, 3)) * scale;
                softmax_last(scores).matmul(v)
            }
        };
        ctx.swap_dims(1, 2).reshape([b, nq, d])
    }
}

/// Output projection of the attention block (HF `attention.output`).
#[derive(Module, Debug)]
pub struct SelfOutput<B: Backend> {
    /// `[D, D]`.
    pub dense: Linear<B>,
}

/// Attention block (HF `attention`).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Q, K, V projections.
    pub attention: SelfAttention<B>,
    /// Output projection.
    pub output: SelfOutput<B>,
}

/// First MLP layer (HF `intermediate`).
#[derive(Module, Debug)]
pub struct Intermediate<B: Backend> {
    /// `[D, I]`.
    pub dense: Linear<B>,
}

/// Second MLP layer (HF `output`).
#[derive(Module, Debug)]
pub struct Output<B: Backend> {
    /// `[I, D]`.
    pub dense: Linear<B>,
}

/// One pre-norm encoder layer (HF `ViTLayer`):
/// `h = x + Attn(LN_before(x))`, `y = h + W2·GELU(W1·LN_after(h))`.
#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    /// Attention block.
    pub attention: Attention<B>,
    /// MLP input layer.
    pub intermediate: Intermediate<B>,
    /// MLP output layer.
    pub output: Output<B>,
    /// Norm before attention.
    pub layernorm_before: LayerNorm<B>,
    /// Norm before the MLP.
    pub layernorm_after: LayerNorm<B>,
    /// Epsilon of both norms (burn's `LayerNorm` keeps its own private).
    #[module(skip)]
    layer_norm_eps: f64,
}

impl<B: Backend> EncoderLayer<B> {
    /// On Flex f32 (plain or under `Autodiff`) this runs the host kernel of
    /// `kernels/layer.rs` (same maths, fewer passes and allocations; under autodiff one node with
    /// a hand-written backward); elsewhere, burn's ops.
    ///
    /// # Shapes
    /// - x: `[B, S, D]`
    /// - output: `[B, S, D]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        if self.attention.attention.kind == AttentionKind::Matmul {
            match try_layer_forward(self.params(), x) {
                Ok(y) => y,
                Err(x) => self.forward_generic(x),
            }
        } else {
            self.forward_generic(x)
        }
    }

    /// The CLS row of [`EncoderLayer::forward`], computing only what it depends on: keys
    /// and values of every token, but the query, output projection and MLP of the CLS token
    /// alone (about a sixth of the layer's work for ViT-B/16). Used for the last layer
    /// wherever only the CLS vector is wanted.
    ///
    /// # Shapes
    /// - x: `[B, S, D]`
    /// - output: `[B, D]`
    pub fn forward_cls(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, _, d] = x.dims();
        let n = self.layernorm_before.forward(x.clone());
        let n_cls = n.clone().slice([0..b, 0..1, 0..d]);
        let a = self.attention.attention.forward_queries(n_cls, n);
        let h = cls(x) + self.attention.output.dense.forward(a.reshape([b, d]));
        let m = gelu(
            self.intermediate
                .dense
                .forward(self.layernorm_after.forward(h.clone())),
        );
        h + self.output.dense.forward(m)
    }

    /// The view of this layer's parameters that the host kernels read.
    pub(crate) fn params(&self) -> LayerParams<'_, B> {
        let attention = &self.attention.attention;
        LayerParams {
            norm_before: &self.layernorm_before,
            query: &attention.query,
            key: &attention.key,
            value: &attention.value,
            attn_out: &self.attention.output.dense,
            norm_after: &self.layernorm_after,
            mlp_in: &self.intermediate.dense,
            mlp_out: &self.output.dense,
            heads: attention.num_heads(),
            eps: self.layer_norm_eps,
        }
    }

    /// This layer with its six dense weights in bf16 for the AMX host kernel, when attention
    /// is `Matmul` and every one of them can be (see `kernels::bf16_host_weight`).
    fn to_bf16_host(&self) -> Option<Self> {
        if self.attention.attention.kind != AttentionKind::Matmul {
            return None;
        }
        let mut layer = self.clone();
        let attention = &mut layer.attention.attention;
        let dense = [
            &mut attention.query,
            &mut attention.key,
            &mut attention.value,
            &mut layer.attention.output.dense,
            &mut layer.intermediate.dense,
            &mut layer.output.dense,
        ];
        for linear in dense {
            let w = kernels::bf16_host_weight(&linear.weight.val())?;
            linear.weight = linear.weight.clone().map(|_| w);
        }
        Some(layer)
    }

    /// The layer in burn's ops, on any backend.
    pub(crate) fn forward_generic(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let a = self
            .attention
            .attention
            .forward(self.layernorm_before.forward(x.clone()));
        let h = x + linear_rows(&self.attention.output.dense, a);
        let m = gelu(linear_rows(
            &self.intermediate.dense,
            self.layernorm_after.forward(h.clone()),
        ));
        h + linear_rows(&self.output.dense, m)
    }
}

/// Runs `x` through `layers` in order.
///
/// # Shapes
/// - x: `[B, S, D]`
/// - output: `[B, S, D]`
fn forward_layers<B: Backend>(layers: &[EncoderLayer<B>], x: Tensor<B, 3>) -> Tensor<B, 3> {
    layers.iter().fold(x, |x, l| l.forward(x))
}

/// The CLS vector after running `x` through `layers` (the last one CLS-only, see
/// [`EncoderLayer::forward_cls`]); `x`'s CLS when there are no layers.
///
/// # Shapes
/// - x: `[B, S, D]`
/// - output: `[B, D]`
fn forward_layers_cls<B: Backend>(layers: &[EncoderLayer<B>], x: Tensor<B, 3>) -> Tensor<B, 2> {
    match layers.split_last() {
        Some((last, rest)) => last.forward_cls(forward_layers(rest, x)),
        None => cls(x),
    }
}

/// Applies the final LayerNorm when this half of a split model holds it.
fn forward_norm_if_held<B: Backend, const D: usize>(
    layernorm: &Option<LayerNorm<B>>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    match layernorm {
        Some(ln) => ln.forward(x),
        None => x,
    }
}

/// The encoder stack (HF `encoder`).
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// Layers 0..L.
    pub layer: Vec<EncoderLayer<B>>,
}

/// A Vision Transformer backbone (HF `ViTModel` without the pooler).
#[derive(Module, Debug)]
pub struct ViT<B: Backend> {
    /// Patch + CLS + position embeddings.
    pub embeddings: Embeddings<B>,
    /// Encoder layers.
    pub encoder: Encoder<B>,
    /// Final LayerNorm.
    pub layernorm: LayerNorm<B>,
    #[module(skip)]
    patch_size: usize,
    #[module(skip)]
    image_size: usize,
    #[module(skip)]
    num_channels: usize,
}

/// Hidden states of every layer, as HF's `output_hidden_states=True`.
#[derive(Debug, Clone)]
pub struct ViTOutput<B: Backend> {
    /// Output of the final LayerNorm `[B, N+1, D]`.
    pub last_hidden_state: Tensor<B, 3>,
    /// `hidden_states[n]` = output after `n` encoder layers (0 = embeddings), before the
    /// final LayerNorm; L+1 entries, each `[B, N+1, D]`.
    pub hidden_states: Vec<Tensor<B, 3>>,
}

impl ViTConfig {
    /// Build a randomly initialised model (truncated-normal-like init: N(0, 0.02) weights,
    /// zero biases, unit LayerNorm, as HF `_init_weights`).
    pub fn init<B: Backend>(&self, device: &B::Device) -> ViT<B> {
        self.try_init(device)
            .unwrap_or_else(|e| panic!("ViTConfig::init: {e}"))
    }

    /// Like [`ViTConfig::init`], returning an error for an invalid configuration.
    pub fn try_init<B: Backend>(&self, device: &B::Device) -> Result<ViT<B>, VitError> {
        self.validate()
            .map_err(|reason| VitError::InvalidConfig { path: None, reason })?;
        Ok(self.init_with(device, AttentionKind::default()))
    }

    fn init_with<B: Backend>(&self, device: &B::Device, kind: AttentionKind) -> ViT<B> {
        let d = self.hidden_size;
        let normal = |shape: Vec<usize>| -> Tensor<B, 2> {
            Tensor::random(shape, Distribution::Normal(0.0, 0.02), device)
        };
        let linear = |d_in: usize, d_out: usize, bias: bool| -> Linear<B> {
            let mut l = LinearConfig::new(d_in, d_out).with_bias(bias).init(device);
            l.weight = Param::from_tensor(normal(vec![d_in, d_out]));
            l.bias = l
                .bias
                .map(|_| Param::from_tensor(Tensor::zeros([d_out], device)));
            l
        };
        let ln = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let patch_in = self.num_channels * self.patch_size * self.patch_size;
        let embeddings = Embeddings {
            cls_token: Param::from_tensor(Tensor::random(
                [1, 1, d],
                Distribution::Normal(0.0, 0.02),
                device,
            )),
            position_embeddings: Param::from_tensor(Tensor::random(
                [1, self.seq_len(), d],
                Distribution::Normal(0.0, 0.02),
                device,
            )),
            patch_embeddings: PatchEmbeddings {
                projection: linear(patch_in, d, true),
            },
        };
        let layer = (0..self.num_hidden_layers)
            .map(|_| EncoderLayer {
                attention: Attention {
                    attention: SelfAttention {
                        query: linear(d, d, self.qkv_bias),
                        key: linear(d, d, self.qkv_bias),
                        value: linear(d, d, self.qkv_bias),
                        num_heads: self.num_attention_heads,
                        kind,
                    },
                    output: SelfOutput {
                        dense: linear(d, d, true),
                    },
                },
                intermediate: Intermediate {
                    dense: linear(d, self.intermediate_size, true),
                },
                output: Output {
                    dense: linear(self.intermediate_size, d, true),
                },
                layernorm_before: ln(),
                layernorm_after: ln(),
                layer_norm_eps: self.layer_norm_eps,
            })
            .collect();
        ViT {
            embeddings,
            encoder: Encoder { layer },
            layernorm: ln(),
            patch_size: self.patch_size,
            image_size: self.image_size,
            num_channels: self.num_channels,
        }
    }
}

impl<B: Backend> ViT<B> {
    /// Number of encoder layers L.
    pub fn num_layers(&self) -> usize {
        self.encoder.layer.len()
    }

    /// Width D of the CLS vector.
    pub fn hidden_size(&self) -> usize {
        self.layernorm.gamma.dims()[0]
    }

    /// Expected input side in pixels.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Patch side in pixels.
    pub fn patch_size(&self) -> usize {
        self.patch_size
    }

    /// Choose how attention is computed (see [`AttentionKind`]).
    pub fn with_attention(mut self, kind: AttentionKind) -> Self {
        for l in self.encoder.layer.iter_mut() {
            l.attention.attention.kind = kind;
        }
        self
    }

    /// Which attention implementation the model uses.
    pub fn attention_kind(&self) -> AttentionKind {
        self.encoder
            .layer
            .first()
            .map(|l| l.attention.attention.kind)
            .unwrap_or_default()
    }

    /// CLS token after the final LayerNorm.
    ///
    /// # Shapes
    /// - pixels: `[B, C, H, W]`, H = W = `image_size`, normalised as the model expects
    /// - output: `[B, D]`
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        // LayerNorm is per token, so normalising the CLS row alone is the same.
        let x = forward_layers_cls(&self.encoder.layer, self.embed(pixels));
        self.layernorm.forward(x)
    }

    /// CLS token after the first `n` encoder layers, before the final LayerNorm
    /// (`n = 0`: the embeddings' CLS); equals HF `hidden_states[n][:, 0]`.
    /// Only the first `n` layers are computed.
    ///
    /// # Shapes
    /// - pixels: `[B, C, H, W]`
    /// - output: `[B, D]`
    ///
    /// # Panics
    /// If `n > L`.
    pub fn forward_cls_after(&self, pixels: Tensor<B, 4>, n: usize) -> Tensor<B, 2> {
        assert!(
            n <= self.num_layers(),
            "layer {n} > number of layers {}",
            self.num_layers()
        );
        forward_layers_cls(&self.encoder.layer[..n], self.embed(pixels))
    }

    /// Every hidden state, as HF `ViTModel(..., output_hidden_states=True)`.
    ///
    /// # Shapes
    /// - pixels: `[B, C, H, W]`
    /// - output: L+1 hidden states and the final normed sequence, each `[B, N+1, D]`
    pub fn forward_hidden_states(&self, pixels: Tensor<B, 4>) -> ViTOutput<B> {
        let mut x = self.embed(pixels);
        let mut hidden_states = vec![x.clone()];
        for l in &self.encoder.layer {
            x = l.forward(x);
            hidden_states.push(x.clone());
        }
        ViTOutput {
            last_hidden_state: self.layernorm.forward(x),
            hidden_states,
        }
    }

    fn embed(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        self.embeddings.forward(checked_patchify(
            pixels,
            self.num_channels,
            self.image_size,
            self.patch_size,
        ))
    }

    /// Split for the freeze policy: the last `trainable_layers` = k layers (and the final
    /// LayerNorm) form the trainable tail, the rest the frozen trunk.
    ///
    /// - `0 < k < L`: trunk = embeddings + layers `0..L-k`; tail = layers `L-k..L` + final LN.
    /// - `k = 0` (heads only): the whole backbone is frozen, final LayerNorm included;
    ///   the trunk outputs the normed sequence and the tail only picks the CLS token.
    /// - `k = L` (all trainable, from-scratch training): the embeddings are trainable too
    ///   and move to the tail; the trunk only cuts pixels into patches (no parameters) and
    ///   outputs `[B, N, C·p·p]`.
    ///
    /// The trunk's parameters are marked `no_grad`; to run it without autodiff at all use
    /// [`ViT::split_frozen`]. [`ViT::join`] puts the halves back together.
    ///
    /// # Panics
    /// If `k > L`.
    pub fn split(self, trainable_layers: usize) -> (ViTTrunk<B>, ViTTail<B>) {
        let l = self.num_layers();
        let k = trainable_layers;
        assert!(k <= l, "trainable_layers = {k} > number of layers {l}");
        let mut layers = self.encoder.layer;
        let tail_layers = layers.split_off(l - k);
        let (trunk_emb, tail_emb) = if k == l {
            (None, Some(self.embeddings))
        } else {
            (Some(self.embeddings), None)
        };
        let (trunk_ln, tail_ln) = if k == 0 {
            (Some(self.layernorm), None)
        } else {
            (None, Some(self.layernorm))
        };
        let trunk = ViTTrunk {
            embeddings: trunk_emb,
            layers,
            layernorm: trunk_ln,
            patch_size: self.patch_size,
            image_size: self.image_size,
            num_channels: self.num_channels,
            bf16_tensors: false,
        }
        .no_grad();
        let tail = ViTTail {
            embeddings: tail_emb,
            layers: tail_layers,
            layernorm: tail_ln,
        };
        (trunk, tail)
    }

    /// Put a split model back together (e.g. to save a checkpoint of the whole model).
    /// The trunk's parameters stay marked `no_grad`.
    ///
    /// # Panics
    /// If the halves do not come from one `split` (e.g. both or neither hold the embeddings).
    pub fn join(trunk: ViTTrunk<B>, tail: ViTTail<B>) -> Self {
        let embeddings = match (trunk.embeddings, tail.embeddings) {
            (Some(e), None) | (None, Some(e)) => e,
            _ => panic!("ViT::join: exactly one half must hold the embeddings"),
        };
        let layernorm = match (trunk.layernorm, tail.layernorm) {
            (Some(n), None) | (None, Some(n)) => n,
            _ => panic!("ViT::join: exactly one half must hold the final LayerNorm"),
        };
        let mut layer = trunk.layers;
        layer.extend(tail.layers);
        ViT {
            embeddings,
            encoder: Encoder { layer },
            layernorm,
            patch_size: trunk.patch_size,
            image_size: trunk.image_size,
            num_channels: trunk.num_channels,
        }
    }
}

impl<B: burn::tensor::backend::AutodiffBackend> ViT<B> {
    /// [`ViT::split`] with the trunk moved to the inner (non-autodiff) backend: it records
    /// no graph and keeps no activations. Bring its output into the autodiff backend with
    /// `Tensor::from_inner` before calling the tail.
    pub fn split_frozen(self, trainable_layers: usize) -> (ViTTrunk<B::InnerBackend>, ViTTail<B>) {
        use burn::module::AutodiffModule;
        let (trunk, tail) = self.split(trainable_layers);
        (trunk.valid(), tail)
    }
}

/// Select the CLS token.
///
/// # Shapes
/// - x: `[B, S, D]`
/// - output: `[B, D]`
pub fn cls<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 2> {
    let [b, _, d] = x.dims();
    x.slice([0..b, 0..1, 0..d]).reshape([b, d])
}

/// The frozen part of a split ViT (see [`ViT::split`]).
#[derive(Module, Debug)]
pub struct ViTTrunk<B: Backend> {
    /// Embeddings, unless every layer is trainable.
    pub embeddings: Option<Embeddings<B>>,
    /// Frozen encoder layers `0..L-k`.
    pub layers: Vec<EncoderLayer<B>>,
    /// Final LayerNorm, only when k = 0.
    pub layernorm: Option<LayerNorm<B>>,
    #[module(skip)]
    patch_size: usize,
    #[module(skip)]
    image_size: usize,
    #[module(skip)]
    num_channels: usize,
    /// Whether the parameters are bf16 tensors, so that forward casts in and out.
    #[module(skip)]
    bf16_tensors: bool,
}

impl<B: Backend> ViTTrunk<B> {
    /// This trunk computing in `precision`, and what that meant on this backend and machine
    /// (see [`TrunkPrecision`]). The weights are converted once, here; `self` is unchanged
    /// (keep it for saving and fingerprints: the converted copy holds rounded weights).
    pub fn with_precision(&self, precision: TrunkPrecision) -> (Self, AppliedPrecision) {
        let unchanged =
            |fallback: Option<String>| (self.clone(), AppliedPrecision::F32 { fallback });
        if precision == TrunkPrecision::F32 || self.bf16_tensors {
            return unchanged(None);
        }
        if !kernels::is_flex::<B>() {
            return (self.to_bf16_tensors(), AppliedPrecision::Bf16Tensors);
        }
        if let Err(why) = kernels::amx_status() {
            return unchanged(Some(format!(
                "{why}: the CPU path has no bf16 speed-up without AMX"
            )));
        }
        let mut layers = 0;
        let converted = self
            .layers
            .iter()
            .map(|l| match l.to_bf16_host() {
                Some(bf16) => {
                    layers += 1;
                    bf16
                }
                None => l.clone(),
            })
            .collect();
        if layers == 0 {
            return unchanged(Some(
                "no trunk layer has shapes the AMX kernel takes (width and MLP size multiples of 32, matmul attention)".into(),
            ));
        }
        let trunk = Self {
            layers: converted,
            ..self.clone()
        };
        (trunk, AppliedPrecision::Bf16Amx { layers })
    }

    /// Every parameter cast to bf16; forward then casts its input to bf16 and its output
    /// back to f32.
    pub(crate) fn to_bf16_tensors(&self) -> Self {
        let mut trunk = cast_floats(self.clone(), FloatDType::BF16);
        trunk.bf16_tensors = true;
        trunk
    }

    /// Run the frozen part.
    ///
    /// # Shapes
    /// - pixels: `[B, C, H, W]`
    /// - output: hidden states `[B, N+1, D]` after layer `L-k-1` (after the final LN when
    ///   k = 0); when k = L, the flattened patches `[B, N, C·p·p]`.
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let patches = checked_patchify(pixels, self.num_channels, self.image_size, self.patch_size);
        let Some(emb) = &self.embeddings else {
            return patches;
        };
        if self.bf16_tensors {
            let x = forward_layers(&self.layers, emb.forward(patches.cast(FloatDType::BF16)));
            return forward_norm_if_held(&self.layernorm, x).cast(FloatDType::F32);
        }
        let x = forward_layers(&self.layers, emb.forward(patches));
        forward_norm_if_held(&self.layernorm, x)
    }

    /// Number of encoder layers in the trunk.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}

/// The trainable part of a split ViT (see [`ViT::split`]).
#[derive(Module, Debug)]
pub struct ViTTail<B: Backend> {
    /// Embeddings, only when every layer is trainable.
    pub embeddings: Option<Embeddings<B>>,
    /// Trainable encoder layers `L-k..L`.
    pub layers: Vec<EncoderLayer<B>>,
    /// Final LayerNorm, unless k = 0.
    pub layernorm: Option<LayerNorm<B>>,
}

impl<B: Backend> ViTTail<B> {
    /// Run the trainable part on the trunk's output and return the CLS vector.
    ///
    /// # Shapes
    /// - hidden: the trunk's output (`[B, N+1, D]`, or `[B, N, C·p·p]` when k = L)
    /// - output: `[B, D]`
    pub fn forward(&self, hidden: Tensor<B, 3>) -> Tensor<B, 2> {
        let x = match &self.embeddings {
            Some(emb) => emb.forward(hidden),
            None => hidden,
        };
        // LayerNorm is per token, so normalising the CLS row alone is the same.
        forward_norm_if_held(&self.layernorm, forward_layers_cls(&self.layers, x))
    }

    /// Number of encoder layers in the tail (k).
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type TB = Flex;

    #[test]
    fn patchify_orders_channel_row_column() {
        let dev = Default::default();
        // [1, 2, 4, 4] with value = c*100 + y*10 + x
        let vals: Vec<f32> = (0..2)
            .flat_map(|c| {
                (0..4).flat_map(move |y| (0..4).map(move |x| (c * 100 + y * 10 + x) as f32))
            })
            .collect();
        let px = Tensor::<TB, 1>::from_floats(vals.as_slice(), &dev).reshape([1, 2, 4, 4]);
        let p = patchify(px, 2);
        assert_eq!(p.dims(), [1, 4, 8]);
        let v: Vec<f32> = p.into_data().to_vec().unwrap();
        // Patch 1 = row block 0, column block 1: pixels (y, x) in {0,1} x {2,3}.
        assert_eq!(
            &v[8..16],
            &[2.0, 3.0, 12.0, 13.0, 102.0, 103.0, 112.0, 113.0]
        );
    }

    #[test]
    fn fused_and_matmul_attention_agree() {
        let dev = Default::default();
        let vit: ViT<TB> = ViTConfig::micro().init(&dev);
        let px = Tensor::<TB, 4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &dev);
        let a = vit.forward(px.clone());
        let vit = vit.with_attention(AttentionKind::Matmul);
        let b = vit.forward(px);
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), burn::tensor::Tolerance::absolute(1e-5));
    }

    #[test]
    fn split_then_forward_equals_forward_for_every_k() {
        let dev = Default::default();
        let vit: ViT<TB> = ViTConfig::micro().init(&dev);
        let px = Tensor::<TB, 4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &dev);
        let full = vit.forward(px.clone()).into_data();
        let mut vit = vit;
        for k in 0..=3 {
            let (trunk, tail) = vit.split(k);
            assert_eq!(tail.num_layers(), k);
            assert_eq!(trunk.num_layers(), 3 - k);
            let out = tail.forward(trunk.forward(px.clone()));
            out.into_data()
                .assert_approx_eq::<f32>(&full, burn::tensor::Tolerance::absolute(1e-6));
            vit = ViT::join(trunk, tail);
        }
    }

    #[test]
    fn forward_cls_after_matches_hidden_states() {
        let dev = Default::default();
        let vit: ViT<TB> = ViTConfig::micro().init(&dev);
        let px = Tensor::<TB, 4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &dev);
        let out = vit.forward_hidden_states(px.clone());
        assert_eq!(out.hidden_states.len(), 4);
        for n in 0..=3 {
            let a = vit.forward_cls_after(px.clone(), n).into_data();
            a.assert_approx_eq::<f32>(
                &cls(out.hidden_states[n].clone()).into_data(),
                burn::tensor::Tolerance::absolute(1e-6),
            );
        }
        cls(out.last_hidden_state)
            .into_data()
            .assert_approx_eq::<f32>(
                &vit.forward(px).into_data(),
                burn::tensor::Tolerance::absolute(1e-6),
            );
    }

    #[test]
    fn invalid_config_is_an_error() {
        let dev = Default::default();
        let mut cfg = ViTConfig::micro();
        cfg.hidden_act = "relu".into();
        cfg.num_attention_heads = 3;
        let err = cfg.try_init::<TB>(&dev).unwrap_err().to_string();
        assert!(
            err.contains("hidden_act") && err.contains("divisible"),
            "{err}"
        );
    }
}
