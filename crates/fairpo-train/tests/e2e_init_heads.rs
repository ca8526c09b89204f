//! `fairpo train` end to end with `model.init_from`: by default the policy starts as a copy
//! of the init run, heads included (the paper's Algorithm 2, line 1), so a run that barely
//! moves (lr 1e-12) reproduces the init run's test scores; with `init_heads = "fresh"` it
//! does not. Tiny generated data and a tiny scratch ViT keep this to seconds.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fairpo");

fn fairpo(args: &[&str]) {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "fairpo {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shared part of a config; `top` holds top-level keys, `train` more `[train]` keys.
fn common(dir: &Path, name: &str, top: &str, train: &str) -> String {
    let d = dir.display();
    format!(
        "name = \"{name}\"\nrun_dir = \"{d}/runs/{name}\"\n{top}\
         [data]\nformat = \"coco\"\nroot = \"{d}/data\"\n[data.preprocess]\nsize = 16\n\
         [train]\nbatch_size = 32\nepochs = 1\npatience = 1\nworkers = 1\n\
         cache_dir = \"{d}/cache\"\n{train}"
    )
}

fn train(dir: &Path, name: &str, text: &str) -> fairpo_io::Matrix<f32> {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, text).unwrap();
    fairpo(&["train", "--config", cfg.to_str().unwrap()]);
    fairpo_io::read_npy_scores(dir.join("runs").join(name).join("scores.npy")).unwrap()
}

fn max_abs_diff(a: &fairpo_io::Matrix<f32>, b: &fairpo_io::Matrix<f32>) -> f32 {
    assert_eq!((a.rows, a.cols), (b.rows, b.cols));
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn init_from_starts_the_policy_as_a_copy_of_the_init_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    fairpo(&[
        "data",
        "generate",
        "--out",
        data.to_str().unwrap(),
        "--images",
        "160",
        "--size",
        "16",
    ]);
    let scratch = "[model]\ntrainable_layers = \"all\"\nheads_hidden = [4]\n\
                   [model.scratch]\nhidden_size = 16\nnum_hidden_layers = 2\n\
                   num_attention_heads = 2\nintermediate_size = 32\npatch_size = 4\n\
                   image_size = 16\n[objective]\nmethod = \"bce\"\n";
    let sft = train(
        dir,
        "sft",
        &format!("{}{scratch}", common(dir, "sft", "", "lr = 1e-3\n")),
    );

    // CPO from the SFT run with a learning rate too small to move any weight measurably:
    // its test scores are the SFT run's iff the whole policy (tail and heads) was copied.
    let cpo = |name: &str, init_heads: &str| {
        let d = dir.display();
        train(
            dir,
            name,
            &format!(
                "{}[model]\ninit_from = \"{d}/runs/sft\"\ntrainable_layers = 1\n\
                 heads_hidden = [4]\n{init_heads}[objective]\nmethod = \"cpo\"\n",
                common(
                    dir,
                    name,
                    &format!("reference = \"{d}/runs/sft\"\n"),
                    "lr = 1e-12\nweight_decay = 0.0\n"
                )
            ),
        )
    };
    let copied = cpo("cpo-copied", "");
    // Tolerance: sigmoid scores after <= 1 epoch of 1e-12-sized AdamW steps; f32 noise only.
    let d = max_abs_diff(&copied, &sft);
    assert!(d < 1e-5, "heads not copied: scores differ by {d}");

    let fresh = cpo("cpo-fresh", "init_heads = \"fresh\"\n");
    let d = max_abs_diff(&fresh, &sft);
    assert!(
        d > 1e-3,
        "fresh heads reproduced the init run's scores ({d})"
    );
}
