//! The trunk-output store: the frozen trunk's output for each image, on disk, shared by every
//! run (and every process) with the same trunk.
//!
//! A store is a folder `<train.cache_dir>/<key>/`. The key hashes everything the outputs
//! depend on except the image: the trunk's parameter values and split point, the resolved
//! preprocessing, the trunk precision, the kept tokens and the stored number format
//! (`manifest.json` beside the entries says which). Inside, an image's entry is
//! `<h[0..2]>/<h>.bin`, where `h` is the SHA-256 of the image file's bytes: a moved or
//! renamed image keeps its entry, an edited one gets a new entry, and two splits or data sets
//! holding the same image share one.
//!
//! An entry is a 24-byte header (magic `FPTS`, format version, number format, tokens, width,
//! CRC-32 of the payload, all little-endian u32) and `tokens · width` values (f32 or f16).
//! A truncated, corrupt or mis-shaped entry is detected on every read and recomputed, never
//! used. Entries are written to a temporary file in the same folder and renamed into place,
//! so concurrent runs filling one store only ever see whole entries (two writers of one
//! entry write the same values; the last rename wins). Entries are not fsynced: after a crash
//! a damaged entry fails its checksum and is recomputed.
//!
//! A frozen reference model's logits on those outputs are a store of their own (the manifest
//! names the reference's parameter hash), so a FairPO step that reads them runs no reference
//! forward.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use half::f16;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::features::{hex, FeatureMeta};

/// How stored values are kept on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreDtype {
    /// 4 bytes a value; a stored output is the computed one exactly.
    #[default]
    F32,
    /// 2 bytes a value (IEEE half, round to nearest even): half the disk, a relative
    /// rounding error of at most 2^-11 per value.
    F16,
}

impl StoreDtype {
    fn code(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
        }
    }

    /// Bytes per stored value.
    pub(crate) fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 => 2,
        }
    }

    /// The name in configs and logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }
}

const MAGIC: &[u8; 4] = b"FPTS";
/// The entry and manifest format version.
pub(crate) const VERSION: u32 = 1;
const HEADER: usize = 24;

/// What a store holds, written once as `manifest.json` (informational: the folder's key
/// already commits to it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoreManifest {
    /// Entry format version.
    pub format_version: u32,
    /// The trunk and preprocessing (image fields unused).
    pub trunk: FeatureMeta,
    /// How the trunk computed and on which backend, e.g. `f32 on flex` or
    /// `bf16-amx-11 on flex`: two ways of computing "bf16" give different outputs.
    pub compute: String,
    /// Kept tokens per image and their width.
    pub tokens: usize,
    /// Width of one token.
    pub dim: usize,
    /// Number format of the values.
    pub dtype: StoreDtype,
    /// Set when the entries are a frozen reference model's logits (`tokens` 1, `dim` the
    /// label count) on the trunk outputs this manifest's `trunk` describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceOutputs>,
}

/// Which reference model a store of logits holds the outputs of.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ReferenceOutputs {
    /// SHA-256 of the reference tail's and heads' parameter values.
    pub sha256: String,
    /// The number format of the trunk outputs it ran on.
    pub trunk_dtype: StoreDtype,
}

/// The content key of one image: the SHA-256 of its file's bytes, in hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ImageKey(String);

/// An image's key and its file's size and modification time when it was hashed: an entry
/// is only stored while the file still has them, so an image edited during a run never
/// files its new output under its old content's key.
#[derive(Clone, Debug)]
pub(crate) struct HashedImage {
    /// The content key.
    pub key: ImageKey,
    stamp: (u64, Option<std::time::SystemTime>),
}

impl HashedImage {
    /// Whether `path` still has the size and modification time it had when hashed.
    pub(crate) fn unchanged(&self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| (m.len(), m.modified().ok()) == self.stamp)
    }
}

/// The content keys of `paths`, hashed in parallel. An unreadable file is an error naming
/// it, or, with `skip_unreadable` (`data.skip_corrupt`), `None` with a warning.
pub(crate) fn image_keys(
    paths: &[PathBuf],
    skip_unreadable: bool,
) -> Result<Vec<Option<HashedImage>>> {
    paths
        .par_iter()
        .map(|p| {
            let read = std::fs::metadata(p).and_then(|m| Ok((m, std::fs::read(p)?)));
            match read {
                Ok((meta, bytes)) => Ok(Some(HashedImage {
                    key: ImageKey(hex(&Sha256::digest(&bytes))),
                    stamp: (meta.len(), meta.modified().ok()),
                })),
                Err(e) if skip_unreadable => {
                    tracing::warn!(
                        "trunk store: cannot read {} ({e}); skipping it",
                        p.display()
                    );
                    Ok(None)
                }
                Err(e) => Err(anyhow::Error::new(e)
                    .context(format!("trunk store: reading image {}", p.display()))),
            }
        })
        .collect()
}

/// Why an entry could not be used.
#[derive(Debug)]
pub(crate) enum Miss {
    /// Not in the store.
    Absent,
    /// Present but unusable (reason), so recomputed.
    Damaged(String),
}

/// One store folder.
#[derive(Debug)]
pub(crate) struct TrunkStore {
    dir: PathBuf,
    manifest: StoreManifest,
}

impl TrunkStore {
    /// Opens (creating) the store of `manifest` under `root`.
    pub(crate) fn open(root: &Path, manifest: StoreManifest) -> Result<Self> {
        let key = {
            let mut h = Sha256::new();
            h.update(serde_json::to_vec(&manifest)?);
            hex(&h.finalize()[..16])
        };
        let dir = root.join(key);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the trunk store {}", dir.display()))?;
        let path = dir.join("manifest.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                // The folder's name already commits to the manifest; what entries are read
                // with (format, shape, number format) must agree. Floats are not compared:
                // a JSON round trip need not give them back bit for bit.
                let on_disk: StoreManifest = serde_json::from_str(&text)
                    .with_context(|| format!("{}: not a trunk-store manifest", path.display()))?;
                let shape = |m: &StoreManifest| (m.format_version, m.tokens, m.dim, m.dtype);
                if shape(&on_disk) != shape(&manifest) {
                    bail!(
                        "{}: entries of format {}, {} x {} {} values, but this run stores format {}, {} x {} {} values; delete the folder {}",
                        path.display(),
                        on_disk.format_version,
                        on_disk.tokens,
                        on_disk.dim,
                        on_disk.dtype.name(),
                        manifest.format_version,
                        manifest.tokens,
                        manifest.dim,
                        manifest.dtype.name(),
                        dir.display()
                    );
                }
            }
            Err(_) => fairpo_io::write_json_atomic(&path, &manifest)?,
        }
        Ok(Self { dir, manifest })
    }

    /// What the store holds.
    pub(crate) fn manifest(&self) -> &StoreManifest {
        &self.manifest
    }

    /// The store's folder.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Values per entry.
    pub(crate) fn row(&self) -> usize {
        self.manifest.tokens * self.manifest.dim
    }

    /// Kept tokens and their width.
    pub(crate) fn token_shape(&self) -> [usize; 2] {
        [self.manifest.tokens, self.manifest.dim]
    }

    /// The stored number format's name.
    pub(crate) fn dtype_name(&self) -> &'static str {
        self.manifest.dtype.name()
    }

    /// Bytes of one entry on disk.
    pub(crate) fn entry_bytes(&self) -> u64 {
        (HEADER + self.row() * self.manifest.dtype.bytes()) as u64
    }

    fn entry_path(&self, image: &ImageKey) -> PathBuf {
        self.dir
            .join(&image.0[..2])
            .join(format!("{}.bin", image.0))
    }

    /// Whether `image` has an entry (not checked until read).
    pub(crate) fn contains(&self, image: &ImageKey) -> bool {
        self.entry_path(image).is_file()
    }

    /// The stored output of `image`, appended to `out`.
    pub(crate) fn read_into(&self, image: &ImageKey, out: &mut Vec<f32>) -> Result<(), Miss> {
        let bytes = match std::fs::read(self.entry_path(image)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Absent),
            Err(e) => return Err(Miss::Damaged(e.to_string())),
        };
        let m = &self.manifest;
        let want = self.entry_bytes() as usize;
        if bytes.len() != want {
            return Err(Miss::Damaged(format!(
                "{} bytes, expected {want}",
                bytes.len()
            )));
        }
        let word = |i: usize| u32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
        let header = [word(1), word(2), word(3), word(4)];
        if &bytes[..4] != MAGIC
            || header != [VERSION, m.dtype.code(), m.tokens as u32, m.dim as u32]
        {
            return Err(Miss::Damaged("header does not match the store".into()));
        }
        let payload = &bytes[HEADER..];
        if crc32fast::hash(payload) != word(5) {
            return Err(Miss::Damaged("checksum mismatch".into()));
        }
        match m.dtype {
            StoreDtype::F32 => out.extend(
                payload
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap())),
            ),
            StoreDtype::F16 => out.extend(
                payload
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes(c.try_into().unwrap()).to_f32()),
            ),
        }
        Ok(())
    }

    /// Stores the output of `image` (`row()` values).
    pub(crate) fn write(&self, image: &ImageKey, values: &[f32]) -> Result<()> {
        anyhow::ensure!(
            values.len() == self.row(),
            "trunk store: an output of {} values, expected {}",
            values.len(),
            self.row()
        );
        let mut payload = Vec::with_capacity(values.len() * self.manifest.dtype.bytes());
        match self.manifest.dtype {
            StoreDtype::F32 => values
                .iter()
                .for_each(|v| payload.extend_from_slice(&v.to_le_bytes())),
            StoreDtype::F16 => values
                .iter()
                .for_each(|v| payload.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        }
        let m = &self.manifest;
        let mut entry = Vec::with_capacity(HEADER + payload.len());
        entry.extend_from_slice(MAGIC);
        for w in [
            VERSION,
            m.dtype.code(),
            m.tokens as u32,
            m.dim as u32,
            crc32fast::hash(&payload),
        ] {
            entry.extend_from_slice(&w.to_le_bytes());
        }
        entry.extend_from_slice(&payload);
        let path = self.entry_path(image);
        let folder = path.parent().expect("entries live in a subfolder");
        std::fs::create_dir_all(folder)
            .with_context(|| format!("creating {}", folder.display()))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".entry.")
            .suffix(".tmp")
            .tempfile_in(folder)
            .with_context(|| format!("creating a temporary file in {}", folder.display()))?;
        tmp.write_all(&entry)
            .with_context(|| format!("writing {}", tmp.path().display()))?;
        tmp.persist(&path)
            .map_err(|e| e.error)
            .with_context(|| format!("renaming onto {}", path.display()))?;
        Ok(())
    }

    /// Bytes the store's entries take now (a walk of its folder).
    pub(crate) fn size_on_disk(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .filter_map(|e| e.ok())
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.dir)
    }
}

/// Free bytes for an unprivileged user on the file system holding `dir`.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `s` is written by statvfs on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: rc == 0, so statvfs filled `s`.
    let s = unsafe { s.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Some(s.f_bavail as u64 * s.f_frsize as u64)
}

/// Free bytes are not probed on this platform.
#[cfg(not(unix))]
pub(crate) fn available_bytes(_dir: &Path) -> Option<u64> {
    None
}

/// `bytes` for people: "73.2 MB", "36.9 GB".
pub(crate) fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dtype: StoreDtype) -> StoreManifest {
        StoreManifest {
            format_version: VERSION,
            trunk: FeatureMeta {
                format_version: 1,
                weights_sha256: "w".into(),
                weights_path: PathBuf::new(),
                config: crate::checkpoint::model_file::test_vit_config(),
                preprocess: Default::default(),
                layer: crate::features::FeatureLayer::After(1),
                num_images: 0,
                tokens: 0,
                dim: 0,
                images_sha256: String::new(),
                trunk_precision: Default::default(),
            },
            compute: "f32 on test".into(),
            tokens: 2,
            dim: 3,
            dtype,
            reference: None,
        }
    }

    #[test]
    fn entries_round_trip_and_damage_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TrunkStore::open(tmp.path(), manifest(StoreDtype::F32)).unwrap();
        let key = ImageKey("ab".repeat(32));
        let mut out = Vec::new();
        assert!(matches!(store.read_into(&key, &mut out), Err(Miss::Absent)));
        let v = [1.0, -2.5, 3.25e-7, f32::MAX, 0.0, -0.0];
        store.write(&key, &v).unwrap();
        store.read_into(&key, &mut out).unwrap();
        assert_eq!(out, v, "f32 entries are exact");
        assert_eq!(
            std::fs::metadata(store.entry_path(&key)).unwrap().len(),
            store.entry_bytes()
        );

        // One flipped payload bit, a truncation and a foreign header are all refused.
        let path = store.entry_path(&key);
        let good = std::fs::read(&path).unwrap();
        let mut flipped = good.clone();
        flipped[HEADER + 5] ^= 0x10;
        for (bad, why) in [
            (flipped, "checksum"),
            (good[..good.len() - 1].to_vec(), "bytes"),
            ([b"XXXX", &good[4..]].concat(), "header"),
        ] {
            std::fs::write(&path, bad).unwrap();
            match store.read_into(&key, &mut Vec::new()) {
                Err(Miss::Damaged(reason)) => assert!(reason.contains(why), "{reason}"),
                other => panic!("{why}: {other:?}"),
            }
        }
        assert!(
            store.write(&key, &v[..5]).is_err(),
            "a short output is refused"
        );
    }

    #[test]
    fn f16_entries_round_to_half_precision() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TrunkStore::open(tmp.path(), manifest(StoreDtype::F16)).unwrap();
        let key = ImageKey("cd".repeat(32));
        // 1 + 2^-11 is halfway between two halves: ties go to even (1.0); 1 + 3·2^-11 goes up.
        let v = [
            1.0 + 2f32.powi(-11),
            1.0 + 3.0 * 2f32.powi(-11),
            -6.5,
            1e-3,
            0.0,
            2.0,
        ];
        store.write(&key, &v).unwrap();
        let mut out = Vec::new();
        store.read_into(&key, &mut out).unwrap();
        assert_eq!(out[0], 1.0);
        assert_eq!(out[1], 1.0 + 4.0 * 2f32.powi(-11));
        assert_eq!(out[2], -6.5);
        assert!((out[3] - 1e-3).abs() <= 1e-3 * 2f32.powi(-11));
        assert_eq!(store.entry_bytes(), (HEADER + 6 * 2) as u64);
        // Another number format is another store.
        let other = TrunkStore::open(tmp.path(), manifest(StoreDtype::F32)).unwrap();
        assert_ne!(other.dir(), store.dir());
    }

    #[test]
    fn image_keys_follow_content_not_path() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            tmp.path().join("a.png"),
            tmp.path().join("b.png"),
            tmp.path().join("c.png"),
        );
        std::fs::write(&a, b"same").unwrap();
        std::fs::write(&b, b"same").unwrap();
        std::fs::write(&c, b"other").unwrap();
        let k: Vec<HashedImage> = image_keys(&[a.clone(), b, c], false)
            .unwrap()
            .into_iter()
            .map(Option::unwrap)
            .collect();
        assert_eq!(k[0].key, k[1].key);
        assert_ne!(k[0].key, k[2].key);
        // SHA-256("same"), from coreutils' sha256sum.
        assert_eq!(
            k[0].key.0,
            "0967115f2813a3541eaef77de9d9d5773f1c0c04314b0bbfe4ff3b3b1c55b5d5"
        );
        assert!(k[0].unchanged(&a));
        std::fs::write(&a, b"edited").unwrap();
        assert!(
            !k[0].unchanged(&a),
            "a file of another size is not the hashed one"
        );
        let missing = tmp.path().join("missing.png");
        let err = image_keys(std::slice::from_ref(&missing), false).unwrap_err();
        assert!(format!("{err:#}").contains("missing.png"), "{err:#}");
        assert!(image_keys(&[missing], true).unwrap()[0].is_none());
    }
}
