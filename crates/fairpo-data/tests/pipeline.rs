//! The image pipeline against Pillow + numpy (+ Hugging Face's ViTImageProcessor) values computed
//! by `scripts/fixtures/data_pillow.py`, and the batch loader's determinism and error handling.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fairpo_data::preprocess::decode_rgb;
use fairpo_data::{
    BatchLoader, Dataset, LoaderConfig, PreprocessConfig, Preprocessor, ResampleFilter, ResizeMode,
};
use serde_json::Value;

fn pipeline_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline")
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(pipeline_dir().join("reference.json")).unwrap())
        .unwrap()
}

fn u8s(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u8)
        .collect()
}

/// Our resampling is a port of Pillow's fixed-point code, so it must agree exactly (tolerance 0).
#[test]
fn resize_matches_pillow_bit_for_bit() {
    let r = reference();
    let img = decode_rgb(&pipeline_dir().join("photo.png")).unwrap();
    for case in r["resize"].as_array().unwrap() {
        let cfg = PreprocessConfig {
            size: case["size"].as_u64().unwrap() as usize,
            resize: if case["mode"] == "direct" {
                ResizeMode::Direct
            } else {
                ResizeMode::ShorterSideCrop
            },
            resize_shorter: case["resize_shorter"].as_u64().map(|v| v as usize),
            filter: if case["filter"] == "bicubic" {
                ResampleFilter::Bicubic
            } else {
                ResampleFilter::Bilinear
            },
            ..PreprocessConfig::default()
        };
        let p = Preprocessor::new(cfg).unwrap();
        let ours = p.resize(&img, None);
        let want = u8s(&case["rgb"]);
        let max_diff = ours
            .iter()
            .zip(&want)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert_eq!(ours.len(), want.len());
        assert_eq!(
            max_diff, 0,
            "case {} {} {} differs from Pillow",
            case["mode"], case["size"], case["filter"]
        );
    }
}

/// Normalised [3,H,W] output vs ViTImageProcessor (Pillow resize, /255, (x-mean)/std in f32).
/// Tolerance 1e-5: both compute in f32, only the operation order differs.
#[test]
fn normalised_output_matches_hf_processor() {
    let r = reference();
    let n = &r["normalized"];
    let mean: Vec<f32> = n["mean"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let std: Vec<f32> = n["std"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let p = Preprocessor::new(PreprocessConfig {
        size: 16,
        mean: [mean[0], mean[1], mean[2]],
        std: [std[0], std[1], std[2]],
        ..PreprocessConfig::default()
    })
    .unwrap();
    let ours = p.load(&pipeline_dir().join("photo.png")).unwrap();
    let want: Vec<f64> = n["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(ours.len(), 3 * 16 * 16);
    for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
        assert!((f64::from(*a) - b).abs() < 1e-5, "element {i}: {a} vs {b}");
    }
}

/// JPEG decoders differ slightly (IDCT rounding and chroma upsampling): zune-jpeg vs Pillow's
/// libjpeg-turbo. Measured on these fixtures: mean |diff| 0.37 and max 3 grey levels for the
/// 4:2:0 colour JPEG, 0.02 / 1 for the greyscale and CMYK ones. Tolerances leave a little room
/// above that: colour mean < 1 and max <= 4; greyscale and CMYK (no chroma upsampling) mean < 0.1
/// and max <= 1.
#[test]
fn jpeg_decoding_close_to_pillow_including_grey_and_cmyk() {
    let r = reference();
    for (name, mean_tol, max_tol) in [
        ("photo.jpg", 1.0, 4u8),
        ("grey.jpg", 0.1, 1),
        ("cmyk.jpg", 0.1, 1),
    ] {
        let d = &r["decode"][name];
        let img = decode_rgb(&pipeline_dir().join(name)).unwrap();
        assert_eq!(
            (img.width as u64, img.height as u64),
            (d["width"].as_u64().unwrap(), d["height"].as_u64().unwrap())
        );
        let want = u8s(&d["rgb"]);
        assert_eq!(img.data.len(), want.len(), "{name}: RGB output");
        let diffs: Vec<u8> = img
            .data
            .iter()
            .zip(&want)
            .map(|(a, b)| a.abs_diff(*b))
            .collect();
        let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
        let max = *diffs.iter().max().unwrap();
        assert!(
            mean < mean_tol && max <= max_tol,
            "{name}: mean diff {mean:.3}, max {max} vs Pillow"
        );
    }
}

#[test]
fn corrupt_image_error_names_the_file() {
    let err = decode_rgb(&pipeline_dir().join("corrupt.jpg"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("corrupt.jpg") && err.contains("cannot decode"),
        "{err}"
    );
    let err = decode_rgb(&pipeline_dir().join("absent.jpg"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.jpg"), "{err}");
}

fn small_dataset(with_corrupt: bool) -> Dataset {
    let dir = pipeline_dir();
    let mut paths = vec![
        dir.join("photo.png"),
        dir.join("photo.jpg"),
        dir.join("grey.jpg"),
        dir.join("cmyk.jpg"),
        dir.join("photo.png"),
    ];
    if with_corrupt {
        paths.insert(2, dir.join("corrupt.jpg"));
    }
    let n = paths.len();
    let data: Vec<u8> = (0..n * 2).map(|i| (i % 3 == 0) as u8).collect();
    Dataset {
        split: "fixture".into(),
        labels: vec!["a".into(), "b".into()],
        paths,
        targets: fairpo_io::Matrix {
            rows: n,
            cols: 2,
            data,
        },
        report: Default::default(),
    }
}

fn collect(loader: &BatchLoader, idx: &[usize], epoch: u64) -> Vec<fairpo_data::Batch> {
    loader
        .epoch(idx, epoch)
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

#[test]
fn batch_loader_is_deterministic_and_matches_single_image_processing() {
    let ds = Arc::new(small_dataset(false));
    let pre = PreprocessConfig {
        size: 8,
        ..PreprocessConfig::default()
    };
    let cfg = LoaderConfig {
        batch_size: 2,
        seed: 3,
        threads: 2,
        ..LoaderConfig::default()
    };
    let loader = BatchLoader::new(Arc::clone(&ds), pre.clone(), cfg).unwrap();
    let idx: Vec<usize> = (0..5).collect();
    let shuffled = fairpo_data::epoch_order(&idx, true, 3, 0);
    let a = collect(&loader, &shuffled, 0);
    assert_eq!(a, collect(&loader, &shuffled, 0));
    assert_eq!(a.len(), 3);
    assert_eq!(
        a.iter().map(|b| b.batch_size).collect::<Vec<_>>(),
        vec![2, 2, 1]
    );
    let order: Vec<usize> = a.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(order, shuffled, "batches keep the order they are given");
    assert_ne!(order, idx, "seed 3 shuffles these five");
    // Batch contents equal per-image processing, rows and targets aligned.
    let single = Preprocessor::new(pre).unwrap();
    for b in &a {
        assert_eq!((b.height, b.width, b.num_labels), (8, 8, 2));
        for (k, &i) in b.indices.iter().enumerate() {
            assert_eq!(
                &b.pixels[k * 192..(k + 1) * 192],
                single.load(&ds.paths[i]).unwrap().as_slice()
            );
            assert_eq!(&b.targets[k * 2..(k + 1) * 2], ds.target_row(i));
        }
    }
    // Subsets and drop_last.
    let cfg = LoaderConfig {
        batch_size: 2,
        drop_last: true,
        pixels: false,
        ..LoaderConfig::default()
    };
    let l2 = BatchLoader::new(ds, PreprocessConfig::default(), cfg).unwrap();
    let b = collect(&l2, &[4, 1, 3], 0);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].indices, vec![4, 1]);
    assert!(b[0].pixels.is_empty());
    assert!(l2.epoch(&[9], 0).is_err());
}

#[test]
fn augmentation_is_seeded_per_image_and_epoch() {
    let ds = Arc::new(small_dataset(false));
    let mut pre = PreprocessConfig {
        size: 8,
        ..PreprocessConfig::default()
    };
    pre.augment.random_resized_crop = true;
    pre.augment.horizontal_flip = true;
    let mk = |threads| {
        BatchLoader::new(
            Arc::clone(&ds),
            pre.clone(),
            LoaderConfig {
                batch_size: 5,
                augment: true,
                threads,
                ..LoaderConfig::default()
            },
        )
        .unwrap()
    };
    let idx: Vec<usize> = (0..5).collect();
    let a = collect(&mk(1), &idx, 0);
    assert_eq!(a, collect(&mk(2), &idx, 0), "independent of thread count");
    assert_ne!(a, collect(&mk(1), &idx, 1), "differs per epoch");
    let plain = Preprocessor::new(PreprocessConfig {
        size: 8,
        ..PreprocessConfig::default()
    })
    .unwrap();
    assert_ne!(
        &a[0].pixels[..192],
        plain.load(&ds.paths[0]).unwrap().as_slice()
    );
}

#[test]
fn corrupt_images_error_or_are_skipped_and_counted() {
    let ds = Arc::new(small_dataset(true));
    let pre = PreprocessConfig {
        size: 4,
        ..PreprocessConfig::default()
    };
    let idx: Vec<usize> = (0..6).collect();
    let strict = BatchLoader::new(
        Arc::clone(&ds),
        pre.clone(),
        LoaderConfig {
            batch_size: 2,
            ..LoaderConfig::default()
        },
    )
    .unwrap();
    let items: Vec<_> = strict.epoch(&idx, 0).unwrap().collect();
    assert!(items[0].is_ok());
    let err = items[1].as_ref().unwrap_err().to_string();
    assert!(err.contains("corrupt.jpg"), "{err}");
    assert_eq!(items.len(), 2, "iteration stops after the error");

    let lenient = BatchLoader::new(
        ds,
        pre,
        LoaderConfig {
            batch_size: 2,
            skip_corrupt: true,
            ..LoaderConfig::default()
        },
    )
    .unwrap();
    let batches = collect(&lenient, &idx, 0);
    let seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(seen, vec![0, 1, 3, 4, 5]);
    assert_eq!(batches[1].batch_size, 1);
    // The surviving image's pixels moved to row 0 of its batch.
    let single = Preprocessor::new(PreprocessConfig {
        size: 4,
        ..PreprocessConfig::default()
    })
    .unwrap();
    assert_eq!(
        batches[1].pixels,
        single.load(&lenient.dataset().paths[3]).unwrap()
    );
    let s = lenient.skipped();
    assert_eq!(s.skipped, 1);
    assert!(s.examples[0].ends_with("corrupt.jpg"));
}
