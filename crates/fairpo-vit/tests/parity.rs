//! Parity with Hugging Face `transformers` (fixtures from scripts/fixtures/vit_reference.py).
//!
//! Tolerance: 1e-4 absolute in f32. The reference is the same fp32 computation in PyTorch;
//! differences come only from summation order in matmuls/LayerNorm (observed ~1e-6 for
//! activations of magnitude ~1-10), so 1e-4 leaves margin while any wrong key, transpose,
//! norm order or GELU variant moves outputs by >1e-2.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData, Tolerance};
use fairpo_vit::{cls, load_hf_dir, load_hf_weights, AttentionKind, ViTConfig, VitError};

type B = Flex;
const TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read_npy(name: &str) -> (Vec<usize>, npyz::NpyFile<std::io::BufReader<std::fs::File>>) {
    let path = fixtures().join(name);
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(std::io::BufReader::new(f)).unwrap();
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy)
}

fn npy_f32(name: &str) -> TensorData {
    let (shape, npy) = read_npy(name);
    TensorData::new(npy.into_vec::<f32>().unwrap(), shape)
}

/// Committed u8 pixels → model input, (p/255 - 0.5)/0.5 in f32 exactly as the script.
fn input(name: &str) -> Tensor<B, 4> {
    let (shape, npy) = read_npy(name);
    let v: Vec<f32> = npy
        .into_vec::<u8>()
        .unwrap()
        .into_iter()
        .map(|p| (p as f32 / 255.0 - 0.5) / 0.5)
        .collect();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

fn assert_close(got: TensorData, want: TensorData, what: &str) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let g: Vec<f32> = got.to_vec().unwrap();
    let w: Vec<f32> = want.to_vec().unwrap();
    let max = g
        .iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("{what}: max abs diff {max:.2e}");
    assert!(max <= TOL, "{what}: max abs diff {max} > {TOL}");
}

#[test]
fn tiny_safetensors_matches_transformers() {
    let dev = Default::default();
    let loaded = load_hf_dir::<B>(&fixtures().join("vit_tiny"), &dev).unwrap();
    assert!(loaded.weights_path.ends_with("model.safetensors"));
    let vit = loaded.model;
    let x = input("tiny_input_u8.npy");
    assert_close(
        vit.forward(x.clone()).into_data(),
        npy_f32("tiny_cls.npy"),
        "tiny CLS",
    );
    let out = vit.forward_hidden_states(x.clone());
    assert_close(
        out.last_hidden_state.into_data(),
        npy_f32("tiny_last_hidden.npy"),
        "tiny last_hidden_state",
    );
    for (n, h) in out.hidden_states.into_iter().enumerate() {
        assert_close(
            h.into_data(),
            npy_f32(&format!("tiny_hidden_{n}.npy")),
            &format!("tiny hidden_states[{n}]"),
        );
    }
    // burn's fused attention op (the non-default path) gives the same answer.
    assert_eq!(vit.attention_kind(), AttentionKind::Matmul);
    let vit = vit.with_attention(AttentionKind::Fused);
    assert_close(
        vit.forward(x).into_data(),
        npy_f32("tiny_cls.npy"),
        "tiny CLS (fused attention op)",
    );
}

#[test]
fn tiny_pytorch_bin_matches_transformers() {
    let dev = Default::default();
    let dir = fixtures().join("vit_tiny");
    let cfg = ViTConfig::load(&dir.join("config.json")).unwrap();
    let vit = load_hf_weights::<B>(&cfg, &dir.join("pytorch_model.bin"), &dev).unwrap();
    assert_close(
        vit.forward(input("tiny_input_u8.npy")).into_data(),
        npy_f32("tiny_cls.npy"),
        "tiny CLS from .bin",
    );
}

#[test]
fn image_classification_layout_224_matches_transformers() {
    let dev = Default::default();
    let loaded = load_hf_dir::<B>(&fixtures().join("vit_cls224"), &dev).unwrap();
    assert!(loaded.weights_path.ends_with("pytorch_model.bin"));
    assert_eq!(loaded.config.seq_len(), 197);
    assert!((loaded.config.layer_norm_eps - 1e-6).abs() < 1e-18);
    let x = input("cls224_input_u8.npy");
    let out = loaded.model.forward_hidden_states(x.clone());
    assert_close(
        cls(out.last_hidden_state.clone()).into_data(),
        npy_f32("cls224_cls.npy"),
        "224 CLS",
    );
    assert_close(
        out.last_hidden_state.into_data(),
        npy_f32("cls224_last_hidden.npy"),
        "224 last_hidden_state",
    );
    assert_close(
        out.hidden_states[1].clone().into_data(),
        npy_f32("cls224_hidden_1.npy"),
        "224 hidden_states[1]",
    );
    // Trunk + tail (paper setting: last layer trainable) compute the same CLS.
    let (trunk, tail) = loaded.model.split(1);
    assert_close(
        tail.forward(trunk.forward(x)).into_data(),
        npy_f32("cls224_cls.npy"),
        "224 CLS through split(1)",
    );
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

#[test]
fn config_weights_mismatch_lists_every_problem() {
    let dev = Default::default();
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("vit_tiny"), tmp.path());
    // Claim 3 layers and a wider MLP than the checkpoint has.
    let cfg_path = tmp.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["num_hidden_layers"] = 3.into();
    cfg["intermediate_size"] = 256.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = load_hf_dir::<B>(tmp.path(), &dev).unwrap_err();
    match &err {
        VitError::WeightsMismatch { path, problems } => {
            assert!(path.ends_with("model.safetensors"));
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains("missing tensor encoder.layer.2.")),
                "{problems:?}"
            );
            assert!(
                problems.iter().any(|p| p
                    .contains("encoder.layer.0.intermediate.dense.weight has shape [128, 64]")
                    && p.contains("[256, 64]")),
                "{problems:?}"
            );
        }
        other => panic!("expected WeightsMismatch, got {other}"),
    }
    // Fewer layers in the config than in the file: the extra layer is unexpected.
    cfg["num_hidden_layers"] = 1.into();
    cfg["intermediate_size"] = 128.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = load_hf_dir::<B>(tmp.path(), &dev).unwrap_err().to_string();
    assert!(
        err.contains("unexpected tensor encoder.layer.1.attention.attention.query.weight"),
        "{err}"
    );
}

#[test]
fn missing_dir_and_files_are_clear_errors() {
    let dev = Default::default();
    let err = load_hf_dir::<B>(Path::new("/nonexistent/vit"), &dev)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/vit") && err.contains("does not exist"),
        "{err}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let err = load_hf_dir::<B>(tmp.path(), &dev).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");

    std::fs::copy(
        fixtures().join("vit_tiny/config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let err = load_hf_dir::<B>(tmp.path(), &dev).unwrap_err().to_string();
    assert!(
        err.contains("model.safetensors or pytorch_model.bin"),
        "{err}"
    );

    std::fs::write(
        tmp.path().join("model.safetensors"),
        b"not a safetensors file",
    )
    .unwrap();
    let err = load_hf_dir::<B>(tmp.path(), &dev).unwrap_err();
    assert!(matches!(err, VitError::WeightsUnreadable { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn unsupported_activation_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("vit_tiny/config.json")).unwrap(),
    )
    .unwrap();
    cfg["hidden_act"] = "gelu_new".into();
    let p = tmp.path().join("config.json");
    std::fs::write(&p, cfg.to_string()).unwrap();
    let err = ViTConfig::load(&p).unwrap_err().to_string();
    assert!(
        err.contains("gelu_new") && err.contains("config.json"),
        "{err}"
    );
}

#[test]
fn checkpoint_round_trip_preserves_outputs() {
    let dev = Default::default();
    let loaded = load_hf_dir::<B>(&fixtures().join("vit_tiny"), &dev).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("vit.mpk");
    let x = input("tiny_input_u8.npy");
    let want = loaded.model.forward(x.clone()).into_data();
    fairpo_vit::save_checkpoint(loaded.model, &path).unwrap();
    let fresh = loaded.config.init::<B>(&dev);
    // A fresh random model differs, so the comparison below is meaningful.
    let before: Vec<f32> = fresh.forward(x.clone()).into_data().to_vec().unwrap();
    let w: Vec<f32> = want.to_vec().unwrap();
    let diff = before
        .iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff > 1e-2, "fresh model should differ, max diff {diff}");
    let restored = fairpo_vit::load_checkpoint(fresh, &path, &dev).unwrap();
    // Not bit-exact: the HF loader leaves Linear weights as transposed views and the restored
    // ones are contiguous, and gemm may sum the two layouts in a different order (~1e-7).
    restored
        .forward(x)
        .into_data()
        .assert_approx_eq::<f32>(&want, Tolerance::absolute(1e-6));
}

/// A weights file cut short (an interrupted download) is a clear error naming the file, for
/// both formats, at several cut points (inside the header, inside the tensor data).
#[test]
fn truncated_weights_files_are_clear_errors() {
    let dev = Default::default();
    for file in ["model.safetensors", "pytorch_model.bin"] {
        let full = std::fs::read(fixtures().join("vit_tiny").join(file)).unwrap();
        for cut in [4, 64, full.len() / 2, full.len() - 1] {
            let tmp = tempfile::tempdir().unwrap();
            std::fs::copy(
                fixtures().join("vit_tiny/config.json"),
                tmp.path().join("config.json"),
            )
            .unwrap();
            std::fs::write(tmp.path().join(file), &full[..cut]).unwrap();
            let err = load_hf_dir::<B>(tmp.path(), &dev)
                .map(|_| ())
                .expect_err(&format!("{file} cut at {cut} bytes loaded"));
            let msg = err.to_string();
            assert!(msg.contains(file), "{file} cut at {cut}: {msg}");
        }
    }
}
