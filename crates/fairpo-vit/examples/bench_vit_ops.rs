//! Per-op timings of one ViT-B/16 encoder layer on burn-flex, to find where the forward time
//! goes and to A/B layout choices (variants are interleaved round by round and the median is
//! reported, because the benchmark machine is shared and noisy).
//!
//! `cargo run -p fairpo-vit --example bench_vit_ops -- [--batch 8] [--rounds 5]`

use std::time::Instant;

use burn::backend::{Autodiff, Flex, NdArray};
use burn::nn::{LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

// glibc hands large freed buffers back to the OS, so every fresh tensor page-faults; see
// the workspace Cargo.toml.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

type B = Flex;
type AD = Autodiff<Flex>;

fn sync<Bk: Backend, const N: usize>(t: Tensor<Bk, N>) {
    // Reading one element forces the computation.
    let _ = t.into_data();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// One ViT-B/16 encoder layer from plain modules, its linears applied either to the 3-D
/// input (burn's broadcast batched matmul) or to the flattened rows (one 2-D gemm each).
struct Layer<Bk: Backend> {
    q: Linear<Bk>,
    k: Linear<Bk>,
    v: Linear<Bk>,
    o: Linear<Bk>,
    fc1: Linear<Bk>,
    fc2: Linear<Bk>,
    ln1: burn::nn::LayerNorm<Bk>,
    ln2: burn::nn::LayerNorm<Bk>,
}

impl<Bk: Backend> Layer<Bk> {
    fn new(dev: &Bk::Device) -> Self {
        let lin = |a: usize, b: usize| LinearConfig::new(a, b).init(dev);
        Self {
            q: lin(768, 768),
            k: lin(768, 768),
            v: lin(768, 768),
            o: lin(768, 768),
            fc1: lin(768, 3072),
            fc2: lin(3072, 768),
            ln1: LayerNormConfig::new(768).init(dev),
            ln2: LayerNormConfig::new(768).init(dev),
        }
    }

    fn forward(&self, x: Tensor<Bk, 3>, flat: bool) -> Tensor<Bk, 3> {
        let [b, s, d] = x.dims();
        let (h, hd) = (12, d / 12);
        let ap = |l: &Linear<Bk>, t: Tensor<Bk, 3>| -> Tensor<Bk, 3> {
            if flat {
                let [bb, ss, dd] = t.dims();
                let y = l.forward(t.reshape([bb * ss, dd]));
                let o = y.dims()[1];
                y.reshape([bb, ss, o])
            } else {
                l.forward(t)
            }
        };
        let split = |t: Tensor<Bk, 3>| t.reshape([b, s, h, hd]).swap_dims(1, 2);
        let n = self.ln1.forward(x.clone());
        let (q, k, v) = (
            split(ap(&self.q, n.clone())),
            split(ap(&self.k, n.clone())),
            split(ap(&self.v, n)),
        );
        let scores = q.matmul(k.swap_dims(2, 3)) * (hd as f64).sqrt().recip();
        let c = softmax(scores, 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b, s, d]);
        let hh = x + ap(&self.o, c);
        let mm = gelu(ap(&self.fc1, self.ln2.forward(hh.clone())));
        hh + ap(&self.fc2, mm)
    }
}

fn main() {
    fairpo_vit::mimalloc_keep_freed_memory();
    let mut batch = 8;
    let mut rounds = 5;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--batch" => batch = args.next().and_then(|v| v.parse().ok()).expect("--batch N"),
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rounds N")
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let dev = Default::default();
    let (s, d, i, h) = (197usize, 768usize, 3072usize, 12usize);
    let hd = d / h;
    let lin = |a: usize, b: usize| -> Linear<B> { LinearConfig::new(a, b).init(&dev) };
    let q = lin(d, d);
    let k = lin(d, d);
    let v = lin(d, d);
    let qkv = lin(d, 3 * d);
    let fc1 = lin(d, i);
    let fc2 = lin(i, d);
    let ln = LayerNormConfig::new(d).init::<B>(&dev);
    let x = Tensor::<B, 3>::random([batch, s, d], Distribution::Normal(0.0, 1.0), &dev);
    let x2 = x.clone().reshape([batch * s, d]);
    let m = Tensor::<B, 2>::random([batch * s, i], Distribution::Normal(0.0, 1.0), &dev);

    let split = |t: Tensor<B, 3>| t.reshape([batch, s, h, hd]).swap_dims(1, 2);
    let attn = |qq: Tensor<B, 4>, kk: Tensor<B, 4>, vv: Tensor<B, 4>| {
        let scores = qq.matmul(kk.swap_dims(2, 3)) * (hd as f64).sqrt().recip();
        softmax(scores, 3).matmul(vv)
    };
    let qh = split(q.forward(x.clone()));
    let kh = split(k.forward(x.clone()));
    let vh = split(v.forward(x.clone()));

    let scores = qh.clone().matmul(kh.clone().swap_dims(2, 3));
    // Autodiff: weight gradient of one [D, I] linear, 3-D input vs flattened 2-D input.
    let fc1_ad: Linear<AD> = LinearConfig::new(d, i).init(&dev);
    let x_ad = Tensor::<AD, 3>::random([batch, s, d], Distribution::Normal(0.0, 1.0), &dev);

    let vit_layer = fairpo_vit::ViTConfig {
        num_hidden_layers: 1,
        ..fairpo_vit::ViTConfig::base_patch16_224()
    }
    .init::<B>(&dev)
    .encoder
    .layer
    .remove(0);
    let vit_layer_ad = fairpo_vit::ViTConfig {
        num_hidden_layers: 1,
        ..fairpo_vit::ViTConfig::base_patch16_224()
    }
    .init::<AD>(&dev)
    .encoder
    .layer
    .remove(0);
    let layer_b = Layer::<B>::new(&dev);
    let layer_ad = Layer::<AD>::new(&dev);
    let layer_nd = Layer::<NdArray<f32>>::new(&Default::default());
    let x_nd = Tensor::<NdArray<f32>, 3>::random(
        [batch, s, d],
        Distribution::Normal(0.0, 1.0),
        &Default::default(),
    );
    type Case<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let cases: Vec<Case> = vec![
        (
            "layer fwd, 3-D linears",
            Box::new(|| sync(layer_b.forward(x.clone(), false))),
        ),
        (
            "layer fwd, 2-D linears",
            Box::new(|| sync(layer_b.forward(x.clone(), true))),
        ),
        (
            "layer fwd, fairpo_vit::EncoderLayer (host kernel)",
            Box::new(|| sync(vit_layer.forward(x.clone()))),
        ),
        (
            "NdArray layer fwd, 2-D linears",
            Box::new(|| sync(layer_nd.forward(x_nd.clone(), true))),
        ),
        (
            "AD layer fwd+bwd, fairpo_vit::EncoderLayer (host kernel)",
            Box::new(|| {
                let _ = vit_layer_ad.forward(x_ad.clone()).sum().backward();
            }),
        ),
        (
            "AD layer fwd+bwd, 3-D linears",
            Box::new(|| {
                let _ = layer_ad.forward(x_ad.clone(), false).sum().backward();
            }),
        ),
        (
            "AD layer fwd+bwd, 2-D linears",
            Box::new(|| {
                let _ = layer_ad.forward(x_ad.clone(), true).sum().backward();
            }),
        ),
        (
            "fc1 linear 3-D [B,S,D]",
            Box::new(|| sync(fc1.forward(x.clone()))),
        ),
        (
            "fc1 linear 2-D [B*S,D]",
            Box::new(|| sync(fc1.forward(x2.clone()))),
        ),
        (
            "fc2 linear 2-D [B*S,I]",
            Box::new(|| sync(fc2.forward(m.clone()))),
        ),
        (
            "qkv 3 linears 3-D",
            Box::new(|| {
                sync(q.forward(x.clone()));
                sync(k.forward(x.clone()));
                sync(v.forward(x.clone()));
            }),
        ),
        (
            "qkv 3 linears 2-D",
            Box::new(|| {
                sync(q.forward(x2.clone()));
                sync(k.forward(x2.clone()));
                sync(v.forward(x2.clone()));
            }),
        ),
        (
            "qkv fused 2-D [D,3D]",
            Box::new(|| sync(qkv.forward(x2.clone()))),
        ),
        ("gelu [B*S,I], burn", Box::new(|| sync(gelu(m.clone())))),
        (
            "gelu [B*S,I], fairpo_vit::gelu",
            Box::new(|| sync(fairpo_vit::gelu(m.clone()))),
        ),
        (
            "layernorm [B,S,D]",
            Box::new(|| sync(ln.forward(x.clone()))),
        ),
        (
            "attention core (QK^T, softmax, AV, merge)",
            Box::new(|| {
                let c = attn(qh.clone(), kh.clone(), vh.clone());
                sync(c.swap_dims(1, 2).reshape([batch, s, d]));
            }),
        ),
        (
            "attention: Q·Kᵀ only",
            Box::new(|| sync(qh.clone().matmul(kh.clone().swap_dims(2, 3)))),
        ),
        (
            "attention: scale × scores",
            Box::new(|| sync(scores.clone() * 0.125)),
        ),
        (
            "attention: fairpo_vit::softmax_last",
            Box::new(|| sync(fairpo_vit::softmax_last(scores.clone()))),
        ),
        (
            "attention: P·V only",
            Box::new(|| sync(scores.clone().matmul(vh.clone()))),
        ),
        (
            "head split+merge copies",
            Box::new(|| {
                let c = split(x.clone()).swap_dims(1, 2).reshape([batch, s, d]);
                sync(c + 0.0);
            }),
        ),
        (
            "AD fc1 fwd+bwd 3-D",
            Box::new(|| {
                let y = fc1_ad.forward(x_ad.clone()).sum();
                let _ = y.backward();
            }),
        ),
        (
            "AD fc1 fwd+bwd 2-D",
            Box::new(|| {
                let y = fc1_ad.forward(x_ad.clone().reshape([batch * s, d])).sum();
                let _ = y.backward();
            }),
        ),
    ];
    let mut times = vec![Vec::new(); cases.len()];
    for (_, f) in &cases {
        f(); // warm-up
    }
    for _ in 0..rounds {
        for (c, (_, f)) in cases.iter().enumerate() {
            let t = Instant::now();
            f();
            times[c].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    println!("ViT-B/16 layer ops on Flex, batch {batch}, median of {rounds} interleaved rounds");
    println!("| op | ms |");
    println!("|---|---|");
    for ((name, _), t) in cases.iter().zip(times) {
        println!("| {name} | {:.1} |", median(t));
    }
}
