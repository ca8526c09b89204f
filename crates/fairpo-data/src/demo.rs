//! The generated demo set: seeded synthetic multi-label images of coloured shapes, written in the
//! official COCO 2014 layout so the demo exercises the real loader.
//!
//! # What it contains
//!
//! 16 labels, each a shape in a colour (names below are the COCO category names; category ids
//! have gaps, as COCO's do). Labels are drawn independently per image with long-tailed
//! probabilities, one to four objects per image (about 2.2 on average; a few images end up
//! empty, as in COCO), on a noisy grey background, each object with a little colour jitter.
//!
//! | idx | label | looks like | P(image has it) |
//! |----:|-------|------------|----:|
//! | 0 | `red_circle` | red disc | 0.36 |
//! | 1 | `blue_square` | blue square | 0.30 |
//! | 2 | `green_triangle` | green triangle | 0.26 |
//! | 3 | `yellow_cross` | yellow plus sign | 0.22 |
//! | 4 | `purple_ring` | purple ring (hollow) | 0.18 |
//! | 5 | `cyan_diamond` | cyan diamond | 0.15 |
//! | 6 | `orange_bar` | orange horizontal bar | 0.13 |
//! | 7 | `white_triangle` | white triangle | 0.11 |
//! | 8 | `pink_square` | pink square | 0.09 |
//! | 9 | `brown_circle` | brown disc | 0.08 |
//! | 10 | `gray_cross` | light grey plus sign | 0.07 |
//! | 11 | `olive_diamond` | olive diamond | 0.06 |
//! | 12 | `crimson_circle` | disc in a red close to `red_circle`'s | 0.030 |
//! | 13 | `azure_square` | square in a blue close to `blue_square`'s | 0.025 |
//! | 14 | `dotted_triangle` | `green_triangle` with a small white dot | 0.020 |
//! | 15 | `dotted_ring` | `purple_ring` with a filled centre dot | 0.015 |
//!
//! The four rare labels (12–15, the 4 = ⌈0.2·16⌉ least frequent, so exactly the privileged set
//! under the default partition) are each 4–8 % as frequent as the commonest label and visually
//! confusable with a common one (close colour, or a small mark), so a plain BCE model tends to
//! predict the common look-alike and scores poorly on the privileged group.
//!
//! Layout written under `out`: `annotations/instances_train2014.json`,
//! `annotations/instances_val2014.json` (images, one annotation per object with its bbox,
//! categories), `train2014/COCO_train2014_<id>.png`, `val2014/COCO_val2014_<id>.png`. PNG keeps
//! the close colours exact. Everything is a function of the seed: the same options give
//! byte-identical files.
//!
//! # Stand-ins of the real sets
//!
//! [`LabelSet::Coco`] and [`LabelSet::NusWide`] draw the same kind of scenes with MS-COCO's 80
//! category names and ids (COCO layout) or NUS-WIDE's 81 concepts (NUS-WIDE's official layout,
//! `Train`/`Test` splits), for rehearsing the real-data path at the real label counts: label `k`
//! is one of 84 distinct shape-and-colour pairs, with frequencies falling as `0.25·(k+1)^-0.8`.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{DataError, Result};
use crate::preprocess::RgbImage;
use crate::real_labels::{COCO_CATEGORIES, NUS_CONCEPTS};
use crate::split::mix;

/// Shapes the demo draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Circle,
    Square,
    Triangle,
    Cross,
    Ring,
    Diamond,
    Bar,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Cross => "cross",
            Shape::Ring => "ring",
            Shape::Diamond => "diamond",
            Shape::Bar => "bar",
        }
    }
}

/// A small mark that distinguishes a rare label from its look-alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    None,
    /// A white dot at the shape's centroid.
    WhiteDot,
    /// A dot in the shape's own colour at the centre.
    SameColourDot,
}

/// One label of the demo set.
#[derive(Clone, Copy, Debug)]
struct DemoLabel {
    name: &'static str,
    shape: Shape,
    colour: [u8; 3],
    mark: Mark,
    probability: f64,
}

const LABELS: [DemoLabel; 16] = [
    DemoLabel {
        name: "red_circle",
        shape: Shape::Circle,
        colour: [215, 45, 45],
        mark: Mark::None,
        probability: 0.36,
    },
    DemoLabel {
        name: "blue_square",
        shape: Shape::Square,
        colour: [45, 85, 215],
        mark: Mark::None,
        probability: 0.30,
    },
    DemoLabel {
        name: "green_triangle",
        shape: Shape::Triangle,
        colour: [50, 165, 65],
        mark: Mark::None,
        probability: 0.26,
    },
    DemoLabel {
        name: "yellow_cross",
        shape: Shape::Cross,
        colour: [225, 205, 50],
        mark: Mark::None,
        probability: 0.22,
    },
    DemoLabel {
        name: "purple_ring",
        shape: Shape::Ring,
        colour: [150, 70, 200],
        mark: Mark::None,
        probability: 0.18,
    },
    DemoLabel {
        name: "cyan_diamond",
        shape: Shape::Diamond,
        colour: [50, 195, 205],
        mark: Mark::None,
        probability: 0.15,
    },
    DemoLabel {
        name: "orange_bar",
        shape: Shape::Bar,
        colour: [235, 140, 40],
        mark: Mark::None,
        probability: 0.13,
    },
    DemoLabel {
        name: "white_triangle",
        shape: Shape::Triangle,
        colour: [230, 230, 230],
        mark: Mark::None,
        probability: 0.11,
    },
    DemoLabel {
        name: "pink_square",
        shape: Shape::Square,
        colour: [235, 125, 175],
        mark: Mark::None,
        probability: 0.09,
    },
    DemoLabel {
        name: "brown_circle",
        shape: Shape::Circle,
        colour: [135, 85, 45],
        mark: Mark::None,
        probability: 0.08,
    },
    DemoLabel {
        name: "gray_cross",
        shape: Shape::Cross,
        colour: [170, 170, 170],
        mark: Mark::None,
        probability: 0.07,
    },
    DemoLabel {
        name: "olive_diamond",
        shape: Shape::Diamond,
        colour: [130, 130, 40],
        mark: Mark::None,
        probability: 0.06,
    },
    DemoLabel {
        name: "crimson_circle",
        shape: Shape::Circle,
        colour: [200, 40, 95],
        mark: Mark::None,
        probability: 0.030,
    },
    DemoLabel {
        name: "azure_square",
        shape: Shape::Square,
        colour: [45, 125, 225],
        mark: Mark::None,
        probability: 0.025,
    },
    DemoLabel {
        name: "dotted_triangle",
        shape: Shape::Triangle,
        colour: [50, 165, 65],
        mark: Mark::WhiteDot,
        probability: 0.020,
    },
    DemoLabel {
        name: "dotted_ring",
        shape: Shape::Ring,
        colour: [150, 70, 200],
        mark: Mark::SameColourDot,
        probability: 0.015,
    },
];

/// Label names of the demo set, in category order.
pub fn demo_label_names() -> Vec<String> {
    LABELS.iter().map(|l| l.name.to_string()).collect()
}

/// The per-image probability of each demo label (before the 1–4 objects constraint).
pub fn demo_label_probabilities() -> Vec<f64> {
    LABELS.iter().map(|l| l.probability).collect()
}

/// COCO category id of label `i`: ids skip every fifth number, so they have gaps like COCO's.
fn category_id(i: usize) -> u64 {
    (i + 1 + i / 4) as u64
}

/// The label vocabulary of a generated set, and with it the layout written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LabelSet {
    /// The demo's 16 coloured shapes (module docs), COCO 2014 layout.
    #[default]
    Shapes,
    /// MS-COCO 2014's 80 category names and ids, COCO 2014 layout: a stand-in of the real set's
    /// shape for rehearsals (label `k` is a shape-and-colour pair, all 80 distinct; frequencies
    /// fall as `0.25·(k+1)^-0.8`, so the rarest are 3 % as common as `person`).
    Coco,
    /// NUS-WIDE's 81 concept names, NUS-WIDE's official layout (`ImageList/`,
    /// `Groundtruth/TrainTestLabels/`, `Concepts81.txt`, images under `Flickr/`); frequencies
    /// as for `Coco`.
    NusWide,
}

impl LabelSet {
    /// The labels, in label order.
    fn table(self) -> &'static [DemoLabel] {
        static COCO: LazyLock<Vec<DemoLabel>> =
            LazyLock::new(|| generated_table(COCO_CATEGORIES.iter().map(|c| c.1)));
        static NUS: LazyLock<Vec<DemoLabel>> =
            LazyLock::new(|| generated_table(NUS_CONCEPTS.iter().copied()));
        match self {
            LabelSet::Shapes => &LABELS,
            LabelSet::Coco => &COCO,
            LabelSet::NusWide => &NUS,
        }
    }

    /// COCO category id of label `i`.
    fn category_id(self, i: usize) -> u64 {
        match self {
            LabelSet::Coco => COCO_CATEGORIES[i].0,
            _ => category_id(i),
        }
    }

    fn description(self) -> &'static str {
        match self {
            LabelSet::Shapes => "shape labels",
            LabelSet::Coco => "labels named as MS-COCO's",
            LabelSet::NusWide => "labels named as NUS-WIDE's",
        }
    }

    /// The label names, in label order.
    pub fn names(self) -> Vec<String> {
        self.table().iter().map(|l| l.name.to_string()).collect()
    }
}

/// A table for real label names: label `k` gets shape `k mod 7` in colour `k div 7` of a
/// 12-colour palette (every pair distinct for up to 84 labels), no mark, and probability
/// `0.25·(k+1)^-0.8` (about two objects per image).
fn generated_table(names: impl Iterator<Item = &'static str>) -> Vec<DemoLabel> {
    const SHAPES: [Shape; 7] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Cross,
        Shape::Ring,
        Shape::Diamond,
        Shape::Bar,
    ];
    const PALETTE: [[u8; 3]; 12] = [
        [215, 45, 45],
        [45, 85, 215],
        [50, 165, 65],
        [225, 205, 50],
        [150, 70, 200],
        [40, 200, 210],
        [240, 140, 30],
        [245, 245, 245],
        [240, 120, 180],
        [130, 80, 40],
        [20, 20, 20],
        [120, 130, 40],
    ];
    names
        .enumerate()
        .map(|(k, name)| DemoLabel {
            name,
            shape: SHAPES[k % SHAPES.len()],
            colour: PALETTE[(k / SHAPES.len()) % PALETTE.len()],
            mark: Mark::None,
            probability: 0.25 * ((k + 1) as f64).powf(-0.8),
        })
        .collect()
}

/// Options of [`generate_demo`].
#[derive(Clone, Debug, PartialEq)]
pub struct DemoOptions {
    /// Seed of everything (default 0).
    pub seed: u64,
    /// Total images; 80 % go to `train2014`, the rest to `val2014` (default 5000).
    pub images: usize,
    /// Image side in pixels (default 32).
    pub size: usize,
    /// The label vocabulary, and with it the layout written (default: the 16 shapes, COCO
    /// layout).
    pub labels: LabelSet,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            seed: 0,
            images: 5000,
            size: 32,
            labels: LabelSet::Shapes,
        }
    }
}

/// What [`generate_demo`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoSummary {
    /// The output folder.
    pub out: PathBuf,
    /// Images in train2014.
    pub train_images: usize,
    /// Images in val2014.
    pub val_images: usize,
    /// Training images per label.
    pub train_counts: Vec<u64>,
    /// Seconds taken.
    pub seconds: f64,
}

/// One drawn object.
#[derive(Clone, Copy, Debug)]
struct Object {
    label: usize,
    cx: f64,
    cy: f64,
    r: f64,
    colour: [u8; 3],
}

/// A generated image: pixels and objects.
struct Scene {
    image: RgbImage,
    objects: Vec<Object>,
}

/// Chooses the labels of one image: independent draws, redrawn until 1–4 objects (an empty
/// draw is kept with probability 0.05, so a few images are empty), plus an occasional second
/// instance of a drawn label.
fn draw_labels(table: &[DemoLabel], rng: &mut ChaCha8Rng) -> Vec<usize> {
    loop {
        let mut labels: Vec<usize> = (0..table.len())
            .filter(|&i| rng.random_bool(table[i].probability))
            .collect();
        if labels.is_empty() && !rng.random_bool(0.05) {
            continue;
        }
        if labels.len() > 4 {
            continue;
        }
        if !labels.is_empty() && labels.len() < 4 && rng.random_bool(0.1) {
            let again = labels[rng.random_range(0..labels.len())];
            labels.push(again);
        }
        return labels;
    }
}

/// Is (dx, dy), relative to the centre, inside the shape of radius r?
fn inside(shape: Shape, dx: f64, dy: f64, r: f64) -> bool {
    let d2 = dx * dx + dy * dy;
    match shape {
        Shape::Circle => d2 <= r * r,
        Shape::Square => dx.abs() <= 0.8 * r && dy.abs() <= 0.8 * r,
        Shape::Triangle => dy >= -r && dy <= 0.7 * r && dx.abs() <= r * (dy + r) / (1.7 * r),
        Shape::Cross => {
            (dx.abs() <= 0.3 * r && dy.abs() <= r) || (dy.abs() <= 0.3 * r && dx.abs() <= r)
        }
        Shape::Ring => d2 <= r * r && d2 >= (0.55 * r) * (0.55 * r),
        Shape::Diamond => dx.abs() + dy.abs() <= r,
        Shape::Bar => dx.abs() <= r && dy.abs() <= 0.4 * r,
    }
}

/// Colour of the mark at (dx, dy), if the mark covers it.
fn mark_colour(label: &DemoLabel, colour: [u8; 3], dx: f64, dy: f64, r: f64) -> Option<[u8; 3]> {
    match label.mark {
        Mark::None => None,
        Mark::WhiteDot => {
            // Centroid of the triangle (apex −r, base +0.7r).
            let cy = 0.133 * r;
            let d2 = dx * dx + (dy - cy) * (dy - cy);
            (d2 <= (0.3 * r) * (0.3 * r)).then_some([250, 250, 250])
        }
        Mark::SameColourDot => (dx * dx + dy * dy <= (0.28 * r) * (0.28 * r)).then_some(colour),
    }
}

/// Renders objects on a noisy grey background with 3×3 supersampling.
fn render(
    table: &[DemoLabel],
    width: usize,
    height: usize,
    objects: &[Object],
    rng: &mut ChaCha8Rng,
) -> RgbImage {
    let base = rng.random_range(55.0..100.0);
    let tint: [f64; 3] = [
        rng.random_range(-6.0..6.0),
        rng.random_range(-6.0..6.0),
        rng.random_range(-6.0..6.0),
    ];
    let mut data = vec![0u8; width * height * 3];
    const SS: usize = 3;
    for y in 0..height {
        for x in 0..width {
            let noise = rng.random_range(-8.0..8.0);
            let bg = [
                base + tint[0] + noise,
                base + tint[1] + noise,
                base + tint[2] + noise,
            ];
            let mut acc = [0f64; 3];
            for sy in 0..SS {
                for sx in 0..SS {
                    let px = x as f64 + (sx as f64 + 0.5) / SS as f64;
                    let py = y as f64 + (sy as f64 + 0.5) / SS as f64;
                    let mut c = bg;
                    for o in objects {
                        let l = &table[o.label];
                        let (dx, dy) = (px - o.cx, py - o.cy);
                        if inside(l.shape, dx, dy, o.r) {
                            let col = mark_colour(l, o.colour, dx, dy, o.r).unwrap_or(o.colour);
                            c = [f64::from(col[0]), f64::from(col[1]), f64::from(col[2])];
                        } else if let Some(col) = mark_colour(l, o.colour, dx, dy, o.r) {
                            // The ring's centre dot lies in its hole.
                            c = [f64::from(col[0]), f64::from(col[1]), f64::from(col[2])];
                        }
                    }
                    for k in 0..3 {
                        acc[k] += c[k];
                    }
                }
            }
            for k in 0..3 {
                data[(y * width + x) * 3 + k] =
                    (acc[k] / (SS * SS) as f64).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    RgbImage {
        width,
        height,
        data,
    }
}

/// Places objects for `labels` without heavy overlap (so marks stay visible).
fn place(
    table: &[DemoLabel],
    labels: &[usize],
    width: usize,
    height: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<Object> {
    let side = width.min(height) as f64;
    'layout: for _attempt in 0..50 {
        let mut objects: Vec<Object> = Vec::with_capacity(labels.len());
        for &label in labels {
            let r = side * rng.random_range(0.13..0.20);
            let jitter = |v: u8, rng: &mut ChaCha8Rng| {
                (f64::from(v) + rng.random_range(-10.0..=10.0)).clamp(0.0, 255.0) as u8
            };
            let c = table[label].colour;
            let colour = [jitter(c[0], rng), jitter(c[1], rng), jitter(c[2], rng)];
            let mut placed = false;
            for _ in 0..60 {
                let cx = rng.random_range(r..(width as f64 - r));
                let cy = rng.random_range(r..(height as f64 - r));
                if objects.iter().all(|o| {
                    let d = ((o.cx - cx).powi(2) + (o.cy - cy).powi(2)).sqrt();
                    d >= 0.95 * (o.r + r)
                }) {
                    objects.push(Object {
                        label,
                        cx,
                        cy,
                        r,
                        colour,
                    });
                    placed = true;
                    break;
                }
            }
            if !placed {
                continue 'layout;
            }
        }
        return objects;
    }
    // Crowded image: allow overlap rather than loop forever (rare at the default sizes).
    labels
        .iter()
        .map(|&label| {
            let r = side * 0.13;
            Object {
                label,
                cx: rng.random_range(r..(width as f64 - r)),
                cy: rng.random_range(r..(height as f64 - r)),
                r,
                colour: table[label].colour,
            }
        })
        .collect()
}

fn scene(table: &[DemoLabel], seed: u64, index: u64, width: usize, height: usize) -> Scene {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, index));
    let labels = draw_labels(table, &mut rng);
    let objects = place(table, &labels, width, height, &mut rng);
    let image = render(table, width, height, &objects, &mut rng);
    Scene { image, objects }
}

/// Renders demo scene `index` for `seed` at any size (the benchmark uses 640×480 scenes).
pub fn render_scene(seed: u64, index: u64, width: usize, height: usize) -> RgbImage {
    scene(&LABELS, seed, index, width, height).image
}

#[derive(Serialize)]
struct CocoInfo {
    description: String,
    version: String,
    year: u32,
}

#[derive(Serialize)]
struct CocoImage {
    id: u64,
    file_name: String,
    width: usize,
    height: usize,
}

#[derive(Serialize)]
struct CocoAnnotation {
    id: u64,
    image_id: u64,
    category_id: u64,
    bbox: [f64; 4],
    area: f64,
    iscrowd: u8,
    segmentation: Vec<Vec<f64>>,
}

#[derive(Serialize)]
struct CocoCategory {
    id: u64,
    name: String,
    supercategory: String,
}

#[derive(Serialize)]
struct CocoFile {
    info: CocoInfo,
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
    categories: Vec<CocoCategory>,
}

fn encode_png(img: &RgbImage) -> Result<Vec<u8>> {
    use image::ImageEncoder;
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(
            &img.data,
            img.width as u32,
            img.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| DataError::Config(format!("PNG encoding failed: {e}")))?;
    Ok(bytes)
}

/// One generated image as written: its id, file (relative to the split's image folder) and
/// objects.
struct Written {
    id: u64,
    file_name: String,
    objects: Vec<Object>,
}

/// Renders and writes the images `range` of one split into `dir`, in parallel.
fn write_images(
    table: &[DemoLabel],
    opts: &DemoOptions,
    dir: &Path,
    name: impl Fn(u64) -> String + Sync,
    range: std::ops::Range<usize>,
) -> Result<Vec<Written>> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let size = opts.size;
    range
        .into_par_iter()
        .map(|i| {
            let id = i as u64 + 1;
            let s = scene(table, opts.seed, i as u64, size, size);
            let file_name = name(id);
            let path = dir.join(&file_name);
            let bytes = encode_png(&s.image)?;
            std::fs::write(&path, bytes).map_err(|e| DataError::io(&path, e))?;
            Ok(Written {
                id,
                file_name,
                objects: s.objects,
            })
        })
        .collect()
}

/// Which labels an image of `written` holds (each once).
fn label_row(written: &Written, labels: usize) -> Vec<bool> {
    let mut row = vec![false; labels];
    for o in &written.objects {
        row[o.label] = true;
    }
    row
}

/// `annotations/instances_<split>.json` in COCO's format: one annotation per object.
fn write_coco_annotations(
    out: &Path,
    split: &str,
    opts: &DemoOptions,
    written: Vec<Written>,
) -> Result<()> {
    let table = opts.labels.table();
    let size = opts.size;
    let mut images = Vec::with_capacity(written.len());
    let mut annotations = Vec::new();
    for w in written {
        for o in &w.objects {
            let x0 = (o.cx - o.r).max(0.0);
            let y0 = (o.cy - o.r).max(0.0);
            let bw = (2.0 * o.r).min(size as f64 - x0);
            let bh = (2.0 * o.r).min(size as f64 - y0);
            let round2 = |v: f64| (v * 100.0).round() / 100.0;
            annotations.push(CocoAnnotation {
                id: annotations.len() as u64 + 1,
                image_id: w.id,
                category_id: opts.labels.category_id(o.label),
                bbox: [round2(x0), round2(y0), round2(bw), round2(bh)],
                area: round2(bw * bh),
                iscrowd: 0,
                segmentation: Vec::new(),
            });
        }
        images.push(CocoImage {
            id: w.id,
            file_name: w.file_name,
            width: size,
            height: size,
        });
    }
    let file = CocoFile {
        info: CocoInfo {
            description: format!(
                "fairpo generated demo set: seed {}, {} images of {}x{} px, {} {}",
                opts.seed,
                opts.images,
                size,
                size,
                table.len(),
                opts.labels.description()
            ),
            version: "1".into(),
            year: 2014,
        },
        images,
        annotations,
        categories: table
            .iter()
            .enumerate()
            .map(|(i, l)| CocoCategory {
                id: opts.labels.category_id(i),
                name: l.name.to_string(),
                supercategory: l.shape.name().to_string(),
            })
            .collect(),
    };
    let ann_dir = out.join("annotations");
    std::fs::create_dir_all(&ann_dir).map_err(|e| DataError::io(&ann_dir, e))?;
    fairpo_io::write_json_atomic(ann_dir.join(format!("instances_{split}.json")), &file)?;
    Ok(())
}

/// NUS-WIDE's official files for one split (`Train` or `Test`): the image list (backslash
/// paths relative to `Flickr/`) and one 0/1 file per concept, lines aligned with the list.
fn write_nus_lists(out: &Path, word: &str, table: &[DemoLabel], written: &[Written]) -> Result<()> {
    let list: String = written
        .iter()
        .map(|w| format!("{NUS_IMAGE_FOLDER}\\{}\r\n", w.file_name))
        .collect();
    let list_dir = out.join("ImageList");
    std::fs::create_dir_all(&list_dir).map_err(|e| DataError::io(&list_dir, e))?;
    fairpo_io::atomic_write(
        list_dir.join(format!("{word}Imagelist.txt")),
        list.as_bytes(),
    )?;
    let gt = out.join("Groundtruth").join("TrainTestLabels");
    std::fs::create_dir_all(&gt).map_err(|e| DataError::io(&gt, e))?;
    let rows: Vec<Vec<bool>> = written.iter().map(|w| label_row(w, table.len())).collect();
    for (t, label) in table.iter().enumerate() {
        let text: String = rows
            .iter()
            .map(|r| if r[t] { "1\r\n" } else { "0\r\n" })
            .collect();
        fairpo_io::atomic_write(
            gt.join(format!("Labels_{}_{word}.txt", label.name)),
            text.as_bytes(),
        )?;
    }
    if word == "Train" {
        let names: String = table.iter().map(|l| format!("{}\n", l.name)).collect();
        fairpo_io::atomic_write(out.join("Concepts81.txt"), names.as_bytes())?;
    }
    Ok(())
}

/// The folder under `Flickr/` that generated NUS-WIDE images go to.
const NUS_IMAGE_FOLDER: &str = "generated";

/// Writes the demo set under `out` (see the module docs) and returns what was written.
pub fn generate_demo(out: &Path, opts: &DemoOptions) -> Result<DemoSummary> {
    if opts.images < 2 {
        return Err(DataError::Config(format!(
            "demo needs at least 2 images, got {}",
            opts.images
        )));
    }
    if !(8..=1024).contains(&opts.size) {
        return Err(DataError::Config(format!(
            "demo image size must be 8..=1024 px, got {}",
            opts.size
        )));
    }
    let start = Instant::now();
    let table = opts.labels.table();
    let n_train = ((opts.images as f64) * 0.8).round() as usize;
    let mut train_counts = vec![0u64; table.len()];
    let nus = opts.labels == LabelSet::NusWide;
    for (train, range) in [(true, 0..n_train), (false, n_train..opts.images)] {
        // The split's name in file names: NUS-WIDE's Train/Test, COCO 2014's train/val folders.
        let split = match (nus, train) {
            (true, true) => "Train",
            (true, false) => "Test",
            (false, true) => "train2014",
            (false, false) => "val2014",
        };
        let written = if nus {
            let dir = out.join("Flickr").join(NUS_IMAGE_FOLDER);
            write_images(
                table,
                opts,
                &dir,
                |id| format!("{split}_{id:06}.png"),
                range,
            )?
        } else {
            let name = |id| format!("COCO_{split}_{id:012}.png");
            write_images(table, opts, &out.join(split), name, range)?
        };
        if train {
            for w in &written {
                for (t, has) in label_row(w, table.len()).into_iter().enumerate() {
                    train_counts[t] += u64::from(has);
                }
            }
        }
        if nus {
            write_nus_lists(out, split, table, &written)?
        } else {
            write_coco_annotations(out, split, opts, written)?
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    tracing::info!(
        out = %out.display(),
        "generated {} demo images ({} train, {} val) in {:.1} s ({:.0} images/s)",
        opts.images,
        n_train,
        opts.images - n_train,
        seconds,
        opts.images as f64 / seconds.max(1e-9)
    );
    Ok(DemoSummary {
        out: out.to_path_buf(),
        train_images: n_train,
        val_images: opts.images - n_train,
        train_counts,
        seconds,
    })
}

/// Writes a PNG showing the labels and sample images: the first row has one tile per label
/// (label order, each shape drawn alone), the next `rows` rows are random demo images for `seed`;
/// tiles are `size` px, magnified `scale` times.
pub fn write_demo_grid(
    path: &Path,
    seed: u64,
    size: usize,
    rows: usize,
    scale: usize,
) -> Result<()> {
    let cols = LABELS.len();
    let gap = 2;
    let tile = size * scale;
    let width = cols * (tile + gap) + gap;
    let height = (rows + 1) * (tile + gap) + gap + gap * 2;
    let mut canvas = vec![255u8; width * height * 3];
    let mut blit = |img: &RgbImage, col: usize, row: usize| {
        let extra = if row > 0 { gap * 2 } else { 0 };
        let x0 = gap + col * (tile + gap);
        let y0 = gap + row * (tile + gap) + extra;
        for y in 0..tile {
            for x in 0..tile {
                let s = ((y / scale) * img.width + x / scale) * 3;
                let d = ((y0 + y) * width + x0 + x) * 3;
                canvas[d..d + 3].copy_from_slice(&img.data[s..s + 3]);
            }
        }
    };
    for (i, l) in LABELS.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, 1_000_000 + i as u64));
        let r = size as f64 * 0.3;
        let obj = Object {
            label: i,
            cx: size as f64 / 2.0,
            cy: size as f64 / 2.0,
            r,
            colour: l.colour,
        };
        blit(&render(&LABELS, size, size, &[obj], &mut rng), i, 0);
    }
    for row in 0..rows {
        for col in 0..cols {
            let img = render_scene(seed, (row * cols + col) as u64, size, size);
            blit(&img, col, row + 1);
        }
    }
    let png = encode_png(&RgbImage {
        width,
        height,
        data: canvas,
    })?;
    fairpo_io::atomic_write(path, &png)?;
    Ok(())
}
