//! Every layout on its hand-written fixture tree, and every malformed input → a clear error.

use std::path::{Path, PathBuf};

use fairpo_data::{
    coco, list, nus, DataError, DatasetFormat, DatasetSpec, LoadOptions, SelectOn, Split,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn keep_all() -> LoadOptions {
    LoadOptions::default()
}

#[test]
fn coco_official_ids_with_gaps_empty_images_and_duplicates() {
    let root = fixtures().join("coco");
    let d = coco::load_instances(
        &root.join("annotations/instances_train2014.json"),
        &root.join("train2014"),
        &keep_all(),
    )
    .unwrap();
    // Ascending category id 1, 3, 7 although the file lists 7, 1, 3.
    assert_eq!(d.labels, ["person", "car", "dog"]);
    assert_eq!(d.len(), 4);
    assert_eq!(d.split, "train2014");
    // Image 10: dog + person twice; 11: none; 12: car; 13: car + dog.
    assert_eq!(d.targets.data, vec![1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 1, 1]);
    assert_eq!(d.report.empty_kept, 1);
    assert_eq!(d.report.duplicate_labels, 1);
    assert!(d.paths[0].ends_with("train2014/COCO_train2014_000000000010.png"));
    assert_eq!(d.label_counts(), vec![1, 2, 2]);

    let dropped = coco::load_instances(
        &root.join("annotations/instances_train2014.json"),
        &root.join("train2014"),
        &LoadOptions {
            drop_empty: true,
            skip_missing: false,
        },
    )
    .unwrap();
    assert_eq!(dropped.len(), 3);
    assert_eq!(dropped.report.empty_dropped, 1);
    assert!(dropped
        .paths
        .iter()
        .all(|p| !p.ends_with("COCO_train2014_000000000011.png")));
}

#[test]
fn spec_loads_both_splits_and_holds_out_validation() {
    let spec = DatasetSpec {
        root: fixtures().join("coco"),
        val_fraction: 0.25,
        ..DatasetSpec::default()
    };
    let s = spec.load_splits().unwrap();
    assert_eq!((s.train.len(), s.test.len()), (4, 2));
    assert_eq!(s.val_indices.len(), 1);
    assert_eq!(s.train_indices.len(), 3);
    assert_eq!(s.test_indices(), vec![0, 1]);
    let again = spec.load_splits().unwrap();
    assert_eq!(again.val_indices, s.val_indices);
    let on_test = DatasetSpec {
        select_on: SelectOn::Test,
        ..spec.clone()
    }
    .load_splits()
    .unwrap();
    assert_eq!(on_test.train_indices, vec![0, 1, 2, 3]);
    assert!(on_test.val_indices.is_empty());
    // Partition from train frequencies person=1, car=2, dog=2: ceil(0.2*3) = 1 → person.
    assert_eq!(spec.partition(&s.train).unwrap().privileged, vec![0]);
}

#[test]
fn spec_from_toml_with_defaults_and_unknown_field() {
    let spec = DatasetSpec::from_toml_str(
        "format = \"nus-combined\"\nroot = \"x\"\nskip_missing = true\nprivileged = { count = 16 }\n[preprocess]\nsize = 32\nfilter = \"bicubic\"\n",
    )
    .unwrap();
    assert_eq!(spec.format, DatasetFormat::NusCombined);
    assert!(spec.skip_missing);
    assert_eq!(spec.val_fraction, 0.1);
    assert_eq!(spec.preprocess.size, 32);
    assert_eq!(spec.split_name(Split::Train), "Train");
    let err = DatasetSpec::from_toml_str("roots = \"x\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("roots"), "{err}");
    let err = DatasetSpec::from_toml_str("val_fraction = 1.5")
        .unwrap_err()
        .to_string();
    assert!(err.contains("val_fraction"), "{err}");
}

#[test]
fn coco_yolo_layout() {
    let spec = DatasetSpec {
        format: DatasetFormat::CocoYolo,
        root: fixtures().join("yolo"),
        ..DatasetSpec::default()
    };
    let d = spec.load_split(Split::Train).unwrap();
    assert_eq!(d.labels, ["person", "car", "dog"]);
    // a: person + dog; b: person (twice); c: no label file → empty.
    assert_eq!(d.targets.data, vec![1, 0, 1, 1, 0, 0, 0, 0, 0]);
    assert_eq!(d.report.duplicate_labels, 1);
    assert_eq!(d.report.empty_kept, 1);
}

#[test]
fn nus_official_backslashes_and_missing_image() {
    let root = fixtures().join("nus");
    let err = nus::load_official(&root, "Train", &root.join("Flickr"), &keep_all()).unwrap_err();
    match &err {
        DataError::MissingImages { count, first } => {
            assert_eq!(*count, 1);
            assert!(first.ends_with("water/0003_3.jpg"), "{}", first.display());
        }
        other => panic!("expected MissingImages, got {other}"),
    }
    assert!(err.to_string().contains("skip_missing"));
    let opts = LoadOptions {
        drop_empty: false,
        skip_missing: true,
    };
    let d = nus::load_official(&root, "Train", &root.join("Flickr"), &opts).unwrap();
    assert_eq!(d.labels, ["sky", "water", "animal"]);
    assert_eq!(d.len(), 3);
    assert_eq!(d.report.missing_skipped, 1);
    assert_eq!(d.targets.data, vec![1, 0, 0, 1, 1, 0, 0, 0, 0]);
    assert!(d.paths[0].ends_with("Flickr/sky/0001_1.jpg"));
    let test = nus::load_official(&root, "Test", &root.join("Flickr"), &opts).unwrap();
    assert_eq!(test.targets.data, vec![1, 0, 0, 0, 1, 1]);
}

#[test]
fn nus_combined_matches_official() {
    let root = fixtures().join("nus");
    let opts = LoadOptions {
        drop_empty: true,
        skip_missing: true,
    };
    let a = nus::load_official(&root, "Train", &root.join("Flickr"), &opts).unwrap();
    let b = nus::load_combined(&root, "train", &root.join("Flickr"), &opts).unwrap();
    assert_eq!(a.targets, b.targets);
    assert_eq!(a.paths, b.paths);
    assert_eq!(b.len(), 2); // one missing, one empty dropped
    assert_eq!(b.report.empty_dropped, 1);
}

#[test]
fn generic_csv_and_tsv() {
    let root = fixtures().join("list");
    let d = list::load_list(
        &root.join("train.csv"),
        &root.join("labels.txt"),
        &root,
        &keep_all(),
    )
    .unwrap();
    assert_eq!(d.labels, ["cat", "dog", "bird"]);
    assert_eq!(d.len(), 4);
    assert!(d.paths[1].ends_with("img/b, with comma.png"));
    assert!(d.paths[2].ends_with("img/c.png"), "backslash converted");
    assert_eq!(d.targets.data, vec![1, 1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0]);
    assert_eq!(d.report.duplicate_labels, 1);
    let spec = DatasetSpec {
        format: DatasetFormat::List,
        root: root.clone(),
        test_split: Some("test.tsv".into()),
        ..DatasetSpec::default()
    };
    let t = spec.load_split(Split::Test).unwrap();
    assert_eq!(t.targets.data, vec![0, 0, 1, 1, 0, 1]);
}

// ---------- malformed inputs ----------

fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn truncated_coco_json_names_the_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("train2014")).unwrap();
    let full =
        std::fs::read_to_string(fixtures().join("coco/annotations/instances_train2014.json"))
            .unwrap();
    let p = write(
        dir.path(),
        "annotations/instances_train2014.json",
        &full[..full.len() / 2],
    );
    let err = coco::load_instances(&p, &dir.path().join("train2014"), &keep_all())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("instances_train2014.json") && err.contains("line"),
        "{err}"
    );
}

#[test]
fn unknown_category_and_image_ids_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("imgs")).unwrap();
    let p = write(
        dir.path(),
        "a.json",
        r#"{"images":[{"id":1,"file_name":"x.png"}],"annotations":[{"image_id":1,"category_id":12}],"categories":[{"id":1,"name":"person"}]}"#,
    );
    let err = coco::load_instances(&p, &dir.path().join("imgs"), &keep_all())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a.json") && err.contains("unknown category_id 12"),
        "{err}"
    );
    let p = write(
        dir.path(),
        "b.json",
        r#"{"images":[{"id":1,"file_name":"x.png"}],"annotations":[{"image_id":9,"category_id":1}],"categories":[{"id":1,"name":"person"}]}"#,
    );
    let err = coco::load_instances(&p, &dir.path().join("imgs"), &keep_all())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("b.json") && err.contains("unknown image_id 9"),
        "{err}"
    );
    let p = write(dir.path(), "c.json", r#"{"images":[],"annotations":[]}"#);
    let err = coco::load_instances(&p, &dir.path().join("imgs"), &keep_all())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("c.json") && err.contains("categories"),
        "{err}"
    );
}

#[test]
fn missing_folders_and_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DatasetSpec {
        root: dir.path().join("nope"),
        ..DatasetSpec::default()
    };
    let err = spec.load_split(Split::Train).unwrap_err().to_string();
    assert!(
        err.contains("nope") && err.contains("folder not found"),
        "{err}"
    );
    let spec = DatasetSpec {
        root: dir.path().to_path_buf(),
        ..DatasetSpec::default()
    };
    let err = spec.load_split(Split::Train).unwrap_err().to_string();
    assert!(
        err.contains("instances_train2014.json") && err.contains("not found"),
        "{err}"
    );
    let spec = DatasetSpec {
        format: DatasetFormat::CocoYolo,
        root: fixtures().join("yolo"),
        ..DatasetSpec::default()
    };
    let err = spec.load_split(Split::Test).unwrap_err().to_string();
    assert!(
        err.contains("images/val2014") && err.contains("folder not found"),
        "{err}"
    );
    let spec = DatasetSpec {
        format: DatasetFormat::Nus,
        root: dir.path().to_path_buf(),
        ..DatasetSpec::default()
    };
    let err = spec.load_split(Split::Train).unwrap_err().to_string();
    assert!(err.contains("Concepts81.txt"), "{err}");
}

/// Copies the NUS fixture tree to a temp dir so single files can be broken.
fn nus_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("nus");
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(&src).unwrap();
            if p.is_dir() {
                std::fs::create_dir_all(dir.path().join(rel)).unwrap();
                stack.push(p);
            } else {
                std::fs::copy(&p, dir.path().join(rel)).unwrap();
            }
        }
    }
    dir
}

#[test]
fn nus_line_count_mismatch_and_non_binary_entries() {
    let opts = LoadOptions {
        drop_empty: false,
        skip_missing: true,
    };
    let dir = nus_copy();
    let root = dir.path();
    write(
        root,
        "Groundtruth/TrainTestLabels/Labels_water_Train.txt",
        "0\n1\n1\n",
    );
    let err = nus::load_official(root, "Train", &root.join("Flickr"), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Labels_water_Train.txt")
            && err.contains("3 label lines")
            && err.contains("4 images"),
        "{err}"
    );
    write(
        root,
        "Groundtruth/TrainTestLabels/Labels_water_Train.txt",
        "0\n1\n2\n0\n",
    );
    let err = nus::load_official(root, "Train", &root.join("Flickr"), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Labels_water_Train.txt:3") && err.contains("expected 0 or 1"),
        "{err}"
    );
    write(
        root,
        "Groundtruth/Labels_Train.txt",
        "1 0 0\n1 1 0\n0 1\n0 0 0\n",
    );
    let err = nus::load_combined(root, "Train", &root.join("Flickr"), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Labels_Train.txt:3") && err.contains("expected 3 values"),
        "{err}"
    );
    write(
        root,
        "Groundtruth/Labels_Train.txt",
        "1 0 0\n1 1 0\n0 1 0\n0 0 0\n1 1 1\n",
    );
    let err = nus::load_combined(root, "Train", &root.join("Flickr"), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("5 label lines"), "{err}");
    write(
        root,
        "Groundtruth/Labels_Train.txt",
        "1 0 0\n1 x 0\n0 1 0\n0 0 0\n",
    );
    let err = nus::load_combined(root, "Train", &root.join("Flickr"), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Labels_Train.txt:2") && err.contains("\"x\""),
        "{err}"
    );
}

#[test]
fn yolo_and_list_bad_lines_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "coco.names", "person\ncar\n");
    std::fs::create_dir_all(root.join("images/train2014")).unwrap();
    std::fs::copy(
        fixtures().join("yolo/images/train2014/a.jpg"),
        root.join("images/train2014/a.jpg"),
    )
    .unwrap();
    write(
        root,
        "labels/train2014/a.txt",
        "0 0.5 0.5 0.1 0.1\n5 0.5 0.5 0.1 0.1\n",
    );
    let names = root.join("coco.names");
    let err = coco::load_yolo(root, "train2014", &names, &keep_all())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a.txt:2") && err.contains("class 5 out of range"),
        "{err}"
    );
    write(root, "labels/train2014/a.txt", "0 0.5 0.5\n");
    let err = coco::load_yolo(root, "train2014", &names, &keep_all())
        .unwrap_err()
        .to_string();
    assert!(err.contains("a.txt:1") && err.contains("5 fields"), "{err}");

    write(root, "labels.txt", "cat\ndog\n");
    let lst = write(
        root,
        "l.csv",
        "images/train2014/a.jpg,cat\nimages/train2014/a.jpg,cow\n",
    );
    let err = list::load_list(&lst, &root.join("labels.txt"), root, &keep_all())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("l.csv:2") && err.contains("unknown label \"cow\""),
        "{err}"
    );
    write(root, "dup.txt", "cat\ndog\ncat\n");
    let err = list::load_list(&lst, &root.join("dup.txt"), root, &keep_all())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dup.txt:3") && err.contains("already listed on line 1"),
        "{err}"
    );
    let lst = write(root, "m.csv", "images/train2014/missing.jpg,cat\n");
    let err = list::load_list(&lst, &root.join("labels.txt"), root, &keep_all())
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.jpg"), "{err}");
}

#[test]
fn partition_ties_by_label_index_and_stats_json() {
    use fairpo_data::stats::{privileged_count, privileged_fraction};
    // counts: a=2, b=1, c=1, d=3 (4 images).
    let rows = [[1, 1, 0, 1], [1, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]];
    let d = fairpo_data::Dataset {
        split: "t".into(),
        labels: ["a", "b", "c", "d"].map(String::from).to_vec(),
        paths: vec![PathBuf::new(); 4],
        targets: fairpo_io::Matrix {
            rows: 4,
            cols: 4,
            data: rows.concat(),
        },
        report: Default::default(),
    };
    assert_eq!(d.label_counts(), vec![2, 1, 1, 3]);
    let one = fairpo_data::stats::partition(&d, &privileged_count(1)).unwrap();
    assert_eq!(
        one.privileged,
        vec![1],
        "tie between b and c goes to the lower index"
    );
    let half = fairpo_data::stats::partition(&d, &privileged_fraction(0.5)).unwrap();
    assert_eq!(half.privileged, vec![1, 2]);
    let three = fairpo_data::stats::partition(&d, &privileged_count(3)).unwrap();
    assert_eq!(three.privileged, vec![0, 1, 2]);
    let stats = fairpo_data::LabelStats::of(&d, &privileged_fraction(0.2)).unwrap();
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"labels": ["a", "b", "c", "d"], "counts": [2, 1, 1, 3], "num_images": 4, "privileged": [1]})
    );
    let hist = stats.histogram(10);
    assert!(
        hist.lines().nth(1).unwrap().contains(" d "),
        "most frequent first:\n{hist}"
    );
    assert!(hist.contains("1* b"), "{hist}");
}

/// The example `[data]` table in the crate docs parses and equals the defaults.
#[test]
fn documented_data_table_is_the_default() {
    let doc = include_str!("../src/lib.rs");
    let start = doc.find("//! [data]\n").unwrap();
    let end = doc[start..].find("//! ```").unwrap() + start;
    let toml_text: String = doc[start..end]
        .lines()
        .skip(1)
        .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
        .map(|l| format!("{l}\n"))
        .collect();
    let spec = DatasetSpec::from_toml_str(&toml_text.replace("[data.preprocess]", "[preprocess]"))
        .unwrap();
    assert_eq!(spec, DatasetSpec::default());
}

/// The COCO loader reads instance files as pycocotools does (scripts/fixtures/coco_pycocotools.py):
/// the same label names in ascending category-id order and, per image, the same label set
/// (crowd annotations included, repeats collapsed, images without annotations kept).
#[test]
fn coco_matches_pycocotools() {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("coco_pyc/expected.json")).unwrap(),
    )
    .unwrap();
    let mut compared = 0;
    for (rel, want) in expected.as_object().unwrap() {
        let json = fixtures().join(rel);
        let root = json.parent().unwrap().parent().unwrap();
        let split = if rel.contains("train2014") {
            "train2014"
        } else {
            "val2014"
        };
        let d = coco::load_instances(&json, &root.join(split), &keep_all()).unwrap();
        let labels: Vec<&str> = want["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(d.labels, labels, "{rel}: labels");
        let images = want["images"].as_array().unwrap();
        assert_eq!(d.len(), images.len(), "{rel}: image count");
        let t = d.labels.len();
        // Rows follow the file's image order; pycocotools' list is sorted by file name.
        for im in images {
            let file = im["file_name"].as_str().unwrap();
            let i = d
                .paths
                .iter()
                .position(|p| p.ends_with(file))
                .unwrap_or_else(|| panic!("{rel}: {file} is not in the dataset"));
            let got: Vec<usize> = (0..t).filter(|&j| d.targets.data[i * t + j] == 1).collect();
            let want: Vec<usize> = im["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(got, want, "{rel}: labels of {file}");
            compared += 1;
        }
    }
    assert!(compared >= 40, "only {compared} images compared");
}
