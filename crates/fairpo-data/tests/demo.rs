//! The generated demo set: determinism, and that the COCO loader reads back what was drawn.

use std::path::Path;

use fairpo_data::{generate_demo, DatasetSpec, DemoOptions, Split};

fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_differs() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        seed: 5,
        images: 60,
        size: 24,
        ..DemoOptions::default()
    };
    generate_demo(a.path(), &opts).unwrap();
    generate_demo(b.path(), &opts).unwrap();
    generate_demo(
        c.path(),
        &DemoOptions {
            seed: 6,
            ..opts.clone()
        },
    )
    .unwrap();
    let fa = files_under(a.path());
    assert_eq!(fa.len(), 60 + 2);
    assert_eq!(fa, files_under(b.path()));
    assert_ne!(fa, files_under(c.path()));
}

#[test]
fn loader_reads_back_the_generated_labels() {
    let dir = tempfile::tempdir().unwrap();
    let summary = generate_demo(
        dir.path(),
        &DemoOptions {
            seed: 1,
            images: 400,
            size: 32,
            ..DemoOptions::default()
        },
    )
    .unwrap();
    assert_eq!((summary.train_images, summary.val_images), (320, 80));
    let spec = DatasetSpec {
        root: dir.path().to_path_buf(),
        ..DatasetSpec::default()
    };
    let train = spec.load_split(Split::Train).unwrap();
    let test = spec.load_split(Split::Test).unwrap();
    assert_eq!(train.len(), 320);
    assert_eq!(test.len(), 80);
    assert_eq!(train.labels, fairpo_data::demo::demo_label_names());
    // The generator counted labels from the objects it drew; the loader from the JSON.
    assert_eq!(train.label_counts(), summary.train_counts);
    // Long tail: the commonest label is far more frequent than the rarest.
    let counts = train.label_counts();
    assert!(counts[0] > 80, "{counts:?}");
    assert!(counts[15] < counts[0] / 5, "{counts:?}");
    // Several labels per image on average.
    let per_image = counts.iter().sum::<u64>() as f64 / train.len() as f64;
    assert!((1.5..3.5).contains(&per_image), "{per_image}");
    // Images decode at the requested size.
    let img = fairpo_data::preprocess::decode_rgb(&train.paths[0]).unwrap();
    assert_eq!((img.width, img.height), (32, 32));
}

#[test]
fn stand_ins_of_coco_and_nus_wide_load_through_the_real_loaders() {
    use fairpo_data::real_labels::{COCO_CATEGORIES, NUS_CONCEPTS};
    use fairpo_data::{DatasetFormat, LabelSet};
    for (labels, format, names) in [
        (
            LabelSet::Coco,
            DatasetFormat::Coco,
            COCO_CATEGORIES
                .iter()
                .map(|c| c.1.to_string())
                .collect::<Vec<_>>(),
        ),
        (
            LabelSet::NusWide,
            DatasetFormat::Nus,
            NUS_CONCEPTS.iter().map(|c| c.to_string()).collect(),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let summary = generate_demo(
            dir.path(),
            &DemoOptions {
                seed: 2,
                images: 50,
                size: 24,
                labels,
            },
        )
        .unwrap();
        let spec = DatasetSpec {
            root: dir.path().to_path_buf(),
            format,
            ..DatasetSpec::default()
        };
        let train = spec.load_split(Split::Train).unwrap();
        let test = spec.load_split(Split::Test).unwrap();
        assert_eq!((train.len(), test.len()), (40, 10), "{labels:?}");
        assert_eq!(train.labels, names, "{labels:?}");
        assert_eq!(train.label_counts(), summary.train_counts, "{labels:?}");
        let img = fairpo_data::preprocess::decode_rgb(&test.paths[0]).unwrap();
        assert_eq!((img.width, img.height), (24, 24));
    }
}
