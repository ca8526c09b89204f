//! The freeze policy: gradients reach the tail and only the tail.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::module::{AutodiffModule, Module, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use fairpo_vit::{ViT, ViTConfig};

fn flat<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec().unwrap()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// One AdamW step over the whole (re-joined) model: the tail's parameters move, the
/// trunk's (marked no_grad by `split`) stay exactly as they were.
#[test]
fn adamw_step_changes_tail_only() {
    type AB = Autodiff<Flex>;
    let dev = Default::default();
    let vit: ViT<AB> = ViTConfig::micro().init(&dev);
    let (trunk, tail) = vit.split(1);
    let px = Tensor::<AB, 4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &dev);
    let target = Tensor::<AB, 2>::random([2, 16], Distribution::Normal(0.0, 1.0), &dev);
    let loss = (tail.forward(trunk.forward(px)) - target)
        .powf_scalar(2.0)
        .mean();

    let trunk_w0 = flat(trunk.layers[0].intermediate.dense.weight.val());
    let trunk_emb0 = flat(trunk.embeddings.as_ref().unwrap().position_embeddings.val());
    let tail_w0 = flat(tail.layers[0].intermediate.dense.weight.val());
    let tail_ln0 = flat(tail.layernorm.as_ref().unwrap().gamma.val());

    let model = ViT::join(trunk, tail);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let mut optim = AdamWConfig::new().init::<AB, ViT<AB>>();
    let model = optim.step(1e-2, model, grads);
    let (trunk, tail) = model.split(1);

    assert_eq!(
        flat(trunk.layers[0].intermediate.dense.weight.val()),
        trunk_w0
    );
    assert_eq!(
        flat(trunk.embeddings.as_ref().unwrap().position_embeddings.val()),
        trunk_emb0
    );
    assert!(
        max_diff(
            &flat(tail.layers[0].intermediate.dense.weight.val()),
            &tail_w0
        ) > 1e-3
    );
    assert!(
        max_diff(
            &flat(tail.layernorm.as_ref().unwrap().gamma.val()),
            &tail_ln0
        ) > 1e-3
    );
}

/// `split_frozen`: the trunk runs on the inner backend (no graph); the tail's gradient from
/// autodiff equals a central finite difference on one tail weight (f64, NdArray).
#[test]
fn tail_gradient_matches_finite_difference() {
    type Inner = NdArray<f64>;
    type AB = Autodiff<Inner>;
    let dev = Default::default();
    let vit: ViT<AB> = ViTConfig::micro().init(&dev);
    let (trunk, tail) = vit.split_frozen(1);
    let px = Tensor::<Inner, 4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &dev);
    let proj = Tensor::<Inner, 2>::random([2, 16], Distribution::Normal(0.0, 1.0), &dev);
    let hidden = trunk.forward(px);

    // Loss = sum(cls ⊙ proj): a fixed random projection of the CLS output.
    let loss_of = |tail: &fairpo_vit::ViTTail<Inner>| -> f64 {
        flat((tail.forward(hidden.clone()) * proj.clone()).sum())[0]
    };
    let h_ad = Tensor::<AB, 3>::from_inner(hidden.clone());
    let loss = (tail.forward(h_ad) * Tensor::<AB, 2>::from_inner(proj.clone())).sum();
    let grads = loss.backward();
    let g = tail.layers[0]
        .intermediate
        .dense
        .weight
        .grad(&grads)
        .expect("the tail's weight receives a gradient");
    let g = flat(g);

    let inner = tail.valid();
    let w = flat(inner.layers[0].intermediate.dense.weight.val());
    let [rows, cols] = inner.layers[0].intermediate.dense.weight.dims();
    let eps = 1e-6;
    for &idx in &[0usize, 37, 200, rows * cols - 1] {
        let with = |delta: f64| {
            let mut t = inner.clone();
            let mut v = w.clone();
            v[idx] += delta;
            t.layers[0].intermediate.dense.weight =
                Param::from_tensor(Tensor::from_data(TensorData::new(v, [rows, cols]), &dev));
            loss_of(&t)
        };
        let fd = (with(eps) - with(-eps)) / (2.0 * eps);
        // f64 central difference: truncation O(eps²) ~1e-12, rounding ~1e-16/eps ~1e-10.
        // The backend's erf (used by GELU and its derivative) is a polynomial approximation
        // accurate to ~1e-7, so GELU' is not exactly the derivative of GELU: over 200 random
        // initialisations the mismatch reached 3e-5 relative. A missing or wrong term gives an
        // O(1) relative error, so 1e-3 relative still catches it.
        assert!(
            (fd - g[idx]).abs() <= 1e-3 * (1.0 + fd.abs()),
            "weight {idx}: autodiff {} vs finite difference {fd}",
            g[idx]
        );
    }
    // The trunk lives on the inner backend: it has no parameters that could receive a gradient.
    assert_eq!(trunk.num_layers(), 2);
    assert!(trunk.num_params() > 0);
}

/// With every layer trainable (k = L) the embeddings are in the tail and get gradients.
#[test]
fn all_trainable_split_trains_embeddings() {
    type AB = Autodiff<Flex>;
    let dev = Default::default();
    let vit: ViT<AB> = ViTConfig::micro().init(&dev);
    let (trunk, tail) = vit.split_frozen(3);
    assert_eq!(trunk.num_params(), 0);
    let px = Tensor::<Flex, 4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &dev);
    let patches = Tensor::<AB, 3>::from_inner(trunk.forward(px));
    assert_eq!(patches.dims(), [2, 4, 48]);
    let loss = tail.forward(patches).powf_scalar(2.0).sum();
    let grads = loss.backward();
    let emb = tail.embeddings.as_ref().unwrap();
    assert!(emb.cls_token.grad(&grads).is_some());
    assert!(emb
        .patch_embeddings
        .projection
        .weight
        .grad(&grads)
        .is_some());
}
