//! Per-label MLP heads (FairPO paper, appendix E.2), evaluated for all labels at once.
//!
//! Every label `t` has its own MLP `D -> 256 -> 64 -> 16 -> 4 -> 1` with ReLU after each hidden
//! layer (hidden sizes configurable). Instead of T separate modules, the weights of all heads are
//! stacked as `[T, in, out]` per layer and every layer is one batched matmul over the T heads
//! (the features `[B, D]` are broadcast to `[T, B, D]` for the first layer).
//!
//! Why not the first layer as one `[D, T*H1]` matmul: on burn-flex (CPU) that wide matmul,
//! and its weight gradient, are slower than the batched form at the paper's shapes (B = 32,
//! T = 80, D = 768); `cargo xtask bench objectives` measures both.
//!
//! Initialisation follows PyTorch's `nn.Linear` default: weights come from
//! `kaiming_uniform_(a = sqrt(5))`, which is `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, and biases
//! from `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, with `fan_in` the layer's input size. The values
//! are drawn on the host from a `ChaCha8Rng` seeded with [`HeadsConfig::seed`] (order: layer,
//! then label, then the `[in, out]` weight row-major, then the bias), so a seed gives the same
//! heads on every backend.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::activation::relu;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Configuration of the per-label heads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeadsConfig {
    /// Number of labels T (one head each).
    pub num_labels: usize,
    /// Input feature size D (768 for ViT-B).
    pub input_dim: usize,
    /// Hidden layer sizes of every head; default `[256, 64, 16, 4]` (paper E.2). May be empty
    /// (then each head is a single linear layer `D -> 1`).
    #[serde(default = "default_hidden")]
    pub hidden: Vec<usize>,
    /// Seed of the initialisation.
    #[serde(default)]
    pub seed: u64,
}

fn default_hidden() -> Vec<usize> {
    vec![256, 64, 16, 4]
}

impl HeadsConfig {
    /// Heads for `num_labels` labels on `input_dim` features with the paper's hidden sizes.
    pub fn new(num_labels: usize, input_dim: usize) -> Self {
        Self {
            num_labels,
            input_dim,
            hidden: default_hidden(),
            seed: 0,
        }
    }

    /// Sets the hidden sizes.
    pub fn with_hidden(mut self, hidden: Vec<usize>) -> Self {
        self.hidden = hidden;
        self
    }

    /// Sets the initialisation seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Layer sizes `[D, hidden..., 1]`.
    pub fn layer_sizes(&self) -> Vec<usize> {
        let mut s = vec![self.input_dim];
        s.extend(&self.hidden);
        s.push(1);
        s
    }

    /// Builds seeded heads with PyTorch `nn.Linear` default initialisation (see the crate docs).
    ///
    /// # Panics
    /// If [`HeadsConfig::validate`] fails (see [`HeadsConfig::try_init`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Heads<B> {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Total weights and biases of all heads, `None` on overflow.
    pub fn num_parameters(&self) -> Option<u64> {
        let sizes = self.layer_sizes();
        let per_head = sizes.windows(2).try_fold(0u64, |acc, io| {
            let (i, o) = (io[0] as u64, io[1] as u64);
            acc.checked_add(i.checked_mul(o)?.checked_add(o)?)
        })?;
        per_head.checked_mul(self.num_labels as u64)
    }

    /// Checks the sizes: every one > 0, and at most [`MAX_PARAMETERS`] in all (a corrupt or
    /// mistyped size must be an error, not an allocation failure).
    pub fn validate(&self) -> Result<(), String> {
        if self.num_labels == 0 || self.layer_sizes().contains(&0) {
            return Err(format!(
                "HeadsConfig: num_labels, input_dim and hidden sizes must be > 0, got {self:?}"
            ));
        }
        match self.num_parameters() {
            Some(n) if n <= MAX_PARAMETERS => Ok(()),
            n => Err(format!(
                "HeadsConfig: {} parameters exceed the limit of {MAX_PARAMETERS} (got {self:?})",
                n.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
            )),
        }
    }

    /// Like [`HeadsConfig::init`], returning an error for invalid sizes.
    pub fn try_init<B: Backend>(&self, device: &B::Device) -> Result<Heads<B>, String> {
        self.validate()?;
        let sizes = self.layer_sizes();
        let t = self.num_labels;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let layers = sizes
            .windows(2)
            .map(|io| {
                let (fan_in, out) = (io[0], io[1]);
                let bound = 1.0 / (fan_in as f32).sqrt();
                let mut w = Vec::with_capacity(t * fan_in * out);
                let mut b = Vec::with_capacity(t * out);
                for _ in 0..t {
                    w.extend((0..fan_in * out).map(|_| rng.random_range(-bound..bound)));
                    b.extend((0..out).map(|_| rng.random_range(-bound..bound)));
                }
                (
                    Tensor::<B, 3>::from_data(TensorData::new(w, [t, fan_in, out]), device),
                    Tensor::<B, 2>::from_data(TensorData::new(b, [t, out]), device),
                )
            })
            .collect();
        Ok(Heads::from_stacked(layers))
    }
}

/// Largest heads [`HeadsConfig::validate`] accepts: 1 billion parameters (the paper's heads
/// for 81 labels on ViT-B have 17 million).
pub const MAX_PARAMETERS: u64 = 1_000_000_000;

/// T independent MLP heads, stored stacked so all labels are evaluated with a few batched matmuls.
#[derive(Module, Debug)]
pub struct Heads<B: Backend> {
    /// Layer weights, `[T, in, out]` each, first layer first.
    weights: Vec<Param<Tensor<B, 3>>>,
    /// Layer biases, `[T, 1, out]` each.
    biases: Vec<Param<Tensor<B, 3>>>,
}

impl<B: Backend> Heads<B> {
    /// Builds heads from per-label stacked layers: `(weight [T, in, out], bias [T, out])` for
    /// each layer, first to last (the last has `out = 1`). The layout of a PyTorch
    /// `nn.Linear(in, out)` weight `[out, in]` is the transpose of one slice `weight[t]`.
    ///
    /// # Panics
    /// If the shapes do not chain or the last layer's output is not 1.
    pub fn from_stacked(layers: Vec<(Tensor<B, 3>, Tensor<B, 2>)>) -> Self {
        assert!(!layers.is_empty(), "Heads: at least one layer is needed");
        let [t, d, _] = layers[0].0.dims();
        let mut prev = d;
        for (i, (w, b)) in layers.iter().enumerate() {
            let [tw, inp, out] = w.dims();
            assert!(
                tw == t && inp == prev && b.dims() == [t, out],
                "Heads: layer {i} has weight {:?} and bias {:?}; expected [{t}, {prev}, _] and [{t}, out]",
                w.dims(),
                b.dims()
            );
            prev = out;
        }
        assert_eq!(prev, 1, "Heads: the last layer must have one output");
        let (weights, biases) = layers
            .into_iter()
            .map(|(w, b)| {
                let [t, _, out] = w.dims();
                (
                    Param::from_tensor(w),
                    Param::from_tensor(b.reshape([t, 1, out])),
                )
            })
            .unzip();
        Self { weights, biases }
    }

    /// The weights as per-label stacks `(weight [T, in, out], bias [T, out])`, first layer first:
    /// the inverse of [`Heads::from_stacked`].
    pub fn to_stacked(&self) -> Vec<(Tensor<B, 3>, Tensor<B, 2>)> {
        self.weights
            .iter()
            .zip(&self.biases)
            .map(|(w, b)| {
                let [t, _, o] = b.dims();
                (w.val(), b.val().reshape([t, o]))
            })
            .collect()
    }

    /// Number of labels T.
    pub fn num_labels(&self) -> usize {
        self.weights[0].dims()[0]
    }

    /// Input feature size D.
    pub fn input_dim(&self) -> usize {
        self.weights[0].dims()[1]
    }

    /// Logits of every label's head.
    ///
    /// # Shapes
    /// - `z`: `[B, D]` features (the ViT CLS vector)
    /// - returns: `[B, T]` logits, column t from head t
    pub fn forward(&self, z: Tensor<B, 2>) -> Tensor<B, 2> {
        let [b, d] = z.dims();
        let t = self.num_labels();
        // Every head reads the same features: [B, D] -> [T, B, D] (a broadcast view), then one
        // batched matmul per layer over the T stacked weight matrices.
        let mut h = z.unsqueeze::<3>().expand([t, b, d]);
        let last = self.weights.len() - 1;
        for (i, (w, bias)) in self.weights.iter().zip(&self.biases).enumerate() {
            h = h.matmul(w.val()) + bias.val();
            if i < last {
                h = relu(h);
            }
        }
        // [T, B, 1] -> [B, T]
        h.reshape([t, b]).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    type B64 = NdArray<f64>;
    /// One layer on the host: weight values, weight shape, bias values, bias shape.
    type HostLayer = (Vec<f64>, [usize; 3], Vec<f64>, [usize; 2]);

    fn to_vec<const D: usize, BB: Backend>(x: Tensor<BB, D>) -> Vec<f64> {
        x.into_data().iter::<f64>().collect()
    }

    /// Head t evaluated on its own, with plain per-label 2-D matmuls (what a loop over T
    /// `nn.Linear` stacks computes).
    fn single_head(
        layers: &[(Tensor<B64, 3>, Tensor<B64, 2>)],
        t: usize,
        z: Tensor<B64, 2>,
    ) -> Tensor<B64, 2> {
        let mut h = z;
        for (i, (w, b)) in layers.iter().enumerate() {
            let [_, inp, out] = w.dims();
            let wt = w
                .clone()
                .slice([t..t + 1, 0..inp, 0..out])
                .reshape([inp, out]);
            let bt = b.clone().slice([t..t + 1, 0..out]);
            h = h.matmul(wt) + bt;
            if i + 1 < layers.len() {
                h = relu(h);
            }
        }
        h
    }

    #[test]
    fn batched_heads_equal_a_loop_over_independent_heads() {
        let device = Default::default();
        for hidden in [vec![256, 64, 16, 4], vec![5, 3], vec![]] {
            let cfg = HeadsConfig::new(7, 12).with_hidden(hidden).with_seed(3);
            let heads = cfg.init::<B64>(&device);
            let z = Tensor::<B64, 2>::random(
                [5, 12],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &device,
            );
            let got = to_vec(heads.forward(z.clone()));
            let layers = heads.to_stacked();
            for t in 0..7 {
                let want = to_vec(single_head(&layers, t, z.clone()));
                for i in 0..5 {
                    let g = got[i * 7 + t];
                    assert!(
                        (g - want[i]).abs() < 1e-12,
                        "label {t} row {i}: {g} vs {}",
                        want[i]
                    );
                }
            }
        }
    }

    #[test]
    fn init_is_seeded_and_within_pytorch_bounds() {
        let device = Default::default();
        let cfg = HeadsConfig::new(4, 9).with_hidden(vec![6, 2]).with_seed(11);
        let a = cfg.init::<B64>(&device).to_stacked();
        let b = cfg.init::<B64>(&device).to_stacked();
        let c = cfg.clone().with_seed(12).init::<B64>(&device).to_stacked();
        for (fan_in, ((wa, ba), ((wb, bb), (wc, _)))) in [9usize, 6, 2]
            .into_iter()
            .zip(a.iter().zip(b.iter().zip(&c)))
        {
            let (wa, ba) = (to_vec(wa.clone()), to_vec(ba.clone()));
            assert_eq!(wa, to_vec(wb.clone()));
            assert_eq!(ba, to_vec(bb.clone()));
            assert_ne!(wa, to_vec(wc.clone()));
            let bound = 1.0 / (fan_in as f64).sqrt();
            let max = wa.iter().chain(&ba).fold(0f64, |m, v| m.max(v.abs()));
            assert!(max <= bound, "fan_in {fan_in}: max |w| {max} > {bound}");
            // Uniform on [-bound, bound]: the largest of many draws is close to the bound.
            if wa.len() > 30 {
                assert!(
                    max > 0.8 * bound,
                    "fan_in {fan_in}: max |w| {max} far below {bound}"
                );
            }
        }
    }

    #[test]
    fn stacked_roundtrip_and_dims() {
        let device = Default::default();
        let heads = HeadsConfig::new(3, 8)
            .with_hidden(vec![4])
            .init::<B64>(&device);
        assert_eq!(heads.num_labels(), 3);
        assert_eq!(heads.input_dim(), 8);
        let again = Heads::from_stacked(heads.to_stacked());
        let z = Tensor::<B64, 2>::ones([2, 8], &device);
        assert_eq!(to_vec(heads.forward(z.clone())), to_vec(again.forward(z)));
    }

    /// Central finite differences (f64, h = 1e-6) vs autodiff for every head parameter of a
    /// small config; the loss is a fixed random linear functional of the logits plus a square so
    /// the second layer matters. Tolerance 1e-6 relative: the FD truncation error is O(h^2)
    /// and round-off about 1e-16/h = 1e-10.
    #[test]
    fn parameter_gradients_match_finite_differences() {
        type AD = Autodiff<B64>;
        let device = Default::default();
        let cfg = HeadsConfig::new(3, 4).with_hidden(vec![5, 2]).with_seed(5);
        let base: Vec<HostLayer> = cfg
            .init::<B64>(&device)
            .to_stacked()
            .into_iter()
            .map(|(w, b)| (w.dims(), b.dims(), to_vec(w), to_vec(b)))
            .map(|(wd, bd, w, b)| (w, wd, b, bd))
            .collect();
        let z: Vec<f64> = (0..8).map(|i| ((i * 37 % 11) as f64 - 5.0) / 3.0).collect();
        let coef: Vec<f64> = (0..6).map(|i| ((i * 5 % 7) as f64 - 3.0) / 2.0).collect();
        let loss_of = |layers: &[HostLayer]| {
            let stacked: Vec<(Tensor<AD, 3>, Tensor<AD, 2>)> = layers
                .iter()
                .map(|(w, wd, b, bd)| {
                    (
                        Tensor::<AD, 3>::from_data(TensorData::new(w.clone(), *wd), &device),
                        Tensor::<AD, 2>::from_data(TensorData::new(b.clone(), *bd), &device),
                    )
                })
                .collect();
            let heads = Heads::from_stacked(stacked);
            let zt = Tensor::<AD, 2>::from_data(TensorData::new(z.clone(), [2, 4]), &device);
            let c = Tensor::<AD, 2>::from_data(TensorData::new(coef.clone(), [2, 3]), &device);
            let s = heads.forward(zt);
            (
                (s.clone() * c).sum() + (s.clone() * s).sum().mul_scalar(0.1),
                heads,
            )
        };
        let (loss, heads) = loss_of(&base);
        let grads = loss.backward();
        // Gradients of the module's own parameters (biases stored [T, 1, out]).
        let analytic: Vec<(Vec<f64>, Vec<f64>)> = heads
            .weights
            .iter()
            .zip(&heads.biases)
            .map(|(w, b)| {
                (
                    to_vec(w.grad(&grads).expect("weight grad")),
                    to_vec(b.grad(&grads).expect("bias grad")),
                )
            })
            .collect();
        let h = 1e-6;
        let (mut checked, mut nonzero) = (0, 0);
        for (li, (gw, gb)) in analytic.into_iter().enumerate() {
            for (is_bias, g) in [(false, gw), (true, gb)] {
                for (k, &analytic) in g.iter().enumerate() {
                    let eval = |delta: f64| {
                        let mut p = base.clone();
                        if is_bias {
                            p[li].2[k] += delta;
                        } else {
                            p[li].0[k] += delta;
                        }
                        loss_of(&p).0.into_scalar()
                    };
                    let fd = (eval(h) - eval(-h)) / (2.0 * h);
                    assert!(
                        (fd - analytic).abs() <= 1e-6 * (1.0 + fd.abs()),
                        "layer {li} {} [{k}]: fd {fd} vs autodiff {analytic}",
                        if is_bias { "bias" } else { "weight" }
                    );
                    checked += 1;
                    nonzero += usize::from(analytic.abs() > 1e-9);
                }
            }
        }
        assert_eq!(checked, 3 * (4 * 5 + 5 + 5 * 2 + 2 + 2 + 1));
        // Dead ReLUs would make the check vacuous: most parameters must get a gradient.
        assert!(
            nonzero * 2 > checked,
            "only {nonzero} of {checked} gradients are non-zero"
        );
    }

    /// The input gradient (what reaches a trainable backbone layer) against central finite
    /// differences, same tolerance reasoning as above.
    #[test]
    fn input_gradient_matches_finite_differences() {
        type AD = Autodiff<B64>;
        let device = Default::default();
        let heads = HeadsConfig::new(3, 4)
            .with_hidden(vec![6, 3])
            .with_seed(9)
            .init::<AD>(&device);
        let z: Vec<f64> = (0..8).map(|i| ((i * 29 % 13) as f64 - 6.0) / 4.0).collect();
        let coef: Vec<f64> = (0..6).map(|i| ((i * 3 % 5) as f64 - 2.0) / 2.0).collect();
        let c = Tensor::<AD, 2>::from_data(TensorData::new(coef, [2, 3]), &device);
        let loss = |z: &[f64]| {
            let zt = Tensor::<AD, 2>::from_data(TensorData::new(z.to_vec(), [2, 4]), &device)
                .require_grad();
            let s = heads.forward(zt.clone());
            (
                (s.clone() * c.clone()).sum() + (s.clone() * s).sum().mul_scalar(0.1),
                zt,
            )
        };
        let (l, zt) = loss(&z);
        let g = to_vec(zt.grad(&l.backward()).expect("input grad"));
        assert!(g.iter().filter(|v| v.abs() > 1e-9).count() >= 4, "{g:?}");
        let h = 1e-6;
        for k in 0..8 {
            let mut p = z.clone();
            p[k] += h;
            let mut m = z.clone();
            m[k] -= h;
            let fd = (loss(&p).0.into_scalar() - loss(&m).0.into_scalar()) / (2.0 * h);
            assert!(
                (fd - g[k]).abs() <= 1e-6 * (1.0 + fd.abs()),
                "z[{k}]: fd {fd} vs {}",
                g[k]
            );
        }
    }
}
