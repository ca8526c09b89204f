//! A/B of layouts for the first (largest) layer of the 80 per-label heads, `[B, D] -> [T, B, H1]`,
//! B=32, D=768, H1=256, T=80 on burn-flex, forward and forward+backward. Variants are
//! interleaved round by round and the median reported (the machine is shared and noisy).
//!
//! `cargo run -p fairpo-objectives --example bench_heads_ops -- [--rounds 7]`

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};

// glibc hands large freed buffers back to the OS, so every fresh tensor page-faults; see
// the workspace Cargo.toml.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

type AD = Autodiff<Flex>;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut rounds = 7;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rounds N")
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let (b, d, h, t) = (32usize, 768usize, 256usize, 80usize);
    let dev = Default::default();
    let rnd3 = |s: [usize; 3]| {
        Tensor::<AD, 3>::random(s, Distribution::Normal(0.0, 0.03), &dev).require_grad()
    };
    // [T, D, H] (the crate's storage), [T, H, D] (PyTorch nn.Linear layout per head).
    let w_tdh = rnd3([t, d, h]);
    let w_thd = rnd3([t, h, d]);
    let w_dth =
        Tensor::<AD, 2>::random([d, t * h], Distribution::Normal(0.0, 0.03), &dev).require_grad();
    let z = Tensor::<AD, 2>::random([b, d], Distribution::Normal(0.0, 1.0), &dev).require_grad();

    // Each variant returns [T, B, H].
    let expand_tdh = || {
        z.clone()
            .unsqueeze::<3>()
            .expand([t, b, d])
            .matmul(w_tdh.clone())
    };
    let repeat_tdh = || {
        z.clone()
            .unsqueeze::<3>()
            .repeat_dim(0, t)
            .matmul(w_tdh.clone())
    };
    // W [T,H,D] x z^T [D,B] -> [T,H,B] -> [T,B,H]
    let thd_zt = || {
        w_thd
            .clone()
            .matmul(z.clone().transpose().unsqueeze::<3>())
            .swap_dims(1, 2)
    };
    // Same product from the [T,D,H] storage through a transposed view (no copy on Flex).
    let tdh_view_zt = || {
        w_tdh
            .clone()
            .swap_dims(1, 2)
            .matmul(z.clone().transpose().unsqueeze::<3>())
            .swap_dims(1, 2)
    };
    let wide = || {
        z.clone()
            .matmul(w_dth.clone())
            .reshape([b, t, h])
            .swap_dims(0, 1)
    };
    type Case<'a> = (&'static str, Box<dyn Fn() -> Tensor<AD, 3> + 'a>);
    let cases: Vec<Case> = vec![
        ("expand z, [T,D,H] (current)", Box::new(expand_tdh)),
        ("repeat z, [T,D,H]", Box::new(repeat_tdh)),
        ("[T,H,D] x z^T", Box::new(thd_zt)),
        ("[T,D,H] viewed as [T,H,D], x z^T", Box::new(tdh_view_zt)),
        ("wide [D, T*H]", Box::new(wide)),
    ];
    let mut fwd = vec![Vec::new(); cases.len()];
    let mut bwd = vec![Vec::new(); cases.len()];
    for (_, f) in &cases {
        let _ = f().sum().backward();
    }
    for _ in 0..rounds {
        for (c, (_, f)) in cases.iter().enumerate() {
            let s = Instant::now();
            let _ = f().inner().into_data();
            fwd[c].push(s.elapsed().as_secs_f64() * 1e3);
            let s = Instant::now();
            let _ = burn::tensor::activation::relu(f()).sum().backward();
            bwd[c].push(s.elapsed().as_secs_f64() * 1e3);
        }
    }
    println!(
        "heads layer 1, B={b} D={d} H1={h} T={t}, Flex f32, median of {rounds} interleaved rounds"
    );
    println!("| variant | fwd ms | fwd+bwd ms |");
    println!("|---|---|---|");
    for (c, (name, _)) in cases.iter().enumerate() {
        println!(
            "| {name} | {:.1} | {:.1} |",
            median(fwd[c].clone()),
            median(bwd[c].clone())
        );
    }
}
