//! Atomic file writes: write a temporary sibling, fsync it, rename it over the target.
//!
//! The temporary file lives in the destination's directory so the final rename
//! never crosses file systems (and is therefore atomic on POSIX). A crash or an
//! error before the rename leaves the previous file, if any, untouched; the
//! temporary file is removed on error.

use std::io::{BufWriter, Write};
use std::path::Path;

use serde::Serialize;

use crate::IoError;

/// Atomically replaces `path` with `bytes`.
///
/// The parent directory must exist.
pub fn atomic_write(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), IoError> {
    atomic_write_with(path, |w| w.write_all(bytes))
}

/// Atomically replaces `path` with whatever `write` produces.
///
/// `write` receives a buffered writer onto a temporary file in the same
/// directory; when it returns `Ok`, the data is flushed, fsynced and renamed
/// onto `path`. When it returns `Err`, `path` is left as it was.
pub fn atomic_write_with<F>(path: impl AsRef<Path>, write: F) -> Result<(), IoError>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    let path = path.as_ref();
    let err = |error| IoError::Write {
        path: path.to_path_buf(),
        error,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "path has no file name",
            ))
        })?
        .to_string_lossy()
        .into_owned();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(err)?;
    {
        let mut buffered = BufWriter::new(tmp.as_file());
        write(&mut buffered).map_err(err)?;
        buffered.flush().map_err(err)?;
    }
    if crate::fault::fires(&format!("write:{name}")) {
        // Crash tests: die with half the bytes on disk and the rename not done.
        let len = tmp.as_file().metadata().map_or(0, |m| m.len());
        let _ = tmp.as_file().set_len(len / 2);
        let _ = tmp.as_file().sync_all();
        crate::fault::kill_self();
    }
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    // Make the rename itself durable; not all platforms can open a directory, so best effort.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Atomically writes `value` as pretty-printed JSON (with a trailing newline) to `path`.
pub fn write_json_atomic<T: Serialize + ?Sized>(
    path: impl AsRef<Path>,
    value: &T,
) -> Result<(), IoError> {
    let path = path.as_ref();
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|error| IoError::Json {
        path: path.to_path_buf(),
        error,
    })?;
    bytes.push(b'\n');
    atomic_write(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_existing_file_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        atomic_write(&p, b"first").unwrap();
        atomic_write(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "temporary file left behind");
    }

    #[test]
    fn failed_writer_keeps_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keep.txt");
        atomic_write(&p, b"old").unwrap();
        let e = atomic_write_with(&p, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("keep.txt"), "{e}");
        assert!(e.to_string().contains("boom"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_directory_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no/such/dir/x.json");
        let e = write_json_atomic(&p, &[1, 2, 3]).unwrap_err();
        assert!(e.to_string().contains("no/such/dir/x.json"), "{e}");
    }

    #[test]
    fn json_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.json");
        write_json_atomic(&p, &vec![("a", 1.5)]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.ends_with('\n'));
        let back: Vec<(String, f64)> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, vec![("a".to_string(), 1.5)]);
    }
}
