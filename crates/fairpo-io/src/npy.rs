//! NumPy `.npy` arrays: scores and features (float), targets (0/1 in many dtypes).
//!
//! Reading goes through the maintained `npyz` crate; this module adds the checks
//! the tools need (2-D shape, accepted dtypes, 0/1 targets) with errors that
//! name the file. Both C and Fortran order files are accepted; the result is
//! always row-major. Big-endian files are byte-swapped by `npyz`.

use std::path::Path;

use npyz::{DType, NpyFile, Order, TypeChar, WriteOptions, WriterBuilder};

use crate::{atomic_write_with, IoError, Matrix};

/// The scalar dtypes this module understands, parsed from the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scalar {
    Bool,
    Int(u64),
    Uint(u64),
    Float(u64),
}

/// A parsed `.npy` file held in memory: header facts plus the raw bytes.
struct RawNpy {
    path: std::path::PathBuf,
    bytes: Vec<u8>,
    dtype_text: String,
    scalar: Option<Scalar>,
    shape: Vec<u64>,
    order: Order,
}

const MAGIC: &[u8] = b"\x93NUMPY";

fn open(path: &Path) -> Result<RawNpy, IoError> {
    let bytes = std::fs::read(path).map_err(|error| IoError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let not_npy = |reason: String| IoError::NotNpy {
        path: path.to_path_buf(),
        reason,
    };
    if !bytes.starts_with(MAGIC) {
        return Err(not_npy("bad magic".into()));
    }
    let npy = NpyFile::new(&bytes[..]).map_err(|e| not_npy(format!("malformed header: {e}")))?;
    let dtype = npy.dtype();
    let (dtype_text, scalar) = match &dtype {
        DType::Plain(ts) => {
            let size = ts.size_field();
            let scalar = match ts.type_char() {
                TypeChar::Bool => Some(Scalar::Bool),
                TypeChar::Int => Some(Scalar::Int(size)),
                TypeChar::Uint => Some(Scalar::Uint(size)),
                TypeChar::Float => Some(Scalar::Float(size)),
                _ => None,
            };
            (ts.to_string(), scalar)
        }
        other => (other.descr(), None),
    };
    let shape = npy.shape().to_vec();
    let order = npy.order();
    Ok(RawNpy {
        path: path.to_path_buf(),
        bytes,
        dtype_text,
        scalar,
        shape,
        order,
    })
}

impl RawNpy {
    fn dtype_error(&self, what: &'static str, expected: &'static str) -> IoError {
        IoError::Dtype {
            path: self.path.clone(),
            found: self.dtype_text.clone(),
            what,
            expected,
        }
    }

    /// Checks the array is 2-D and returns `(rows, cols)`.
    fn shape_2d(
        &self,
        what: &'static str,
        expected: &'static str,
    ) -> Result<(usize, usize), IoError> {
        match self.shape[..] {
            [r, c] => Ok((r as usize, c as usize)),
            _ => Err(IoError::Shape {
                path: self.path.clone(),
                found: self.shape.clone(),
                what,
                expected,
            }),
        }
    }

    /// Decodes all values as `T` (which must match the file's dtype) in row-major order.
    fn values<T: npyz::Deserialize + Copy>(
        &self,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<T>, IoError> {
        let npy = NpyFile::new(&self.bytes[..]).map_err(|e| IoError::NotNpy {
            path: self.path.clone(),
            reason: format!("malformed header: {e}"),
        })?;
        let flat: Vec<T> = npy.into_vec().map_err(|e| IoError::NotNpy {
            path: self.path.clone(),
            reason: format!("data section: {e}"),
        })?;
        if flat.len() != rows * cols {
            return Err(IoError::NotNpy {
                path: self.path.clone(),
                reason: format!("expected {} values, found {}", rows * cols, flat.len()),
            });
        }
        Ok(match self.order {
            Order::C => flat,
            // Fortran order stores column after column: (r, c) sits at c * rows + r.
            Order::Fortran => {
                let mut out = Vec::with_capacity(flat.len());
                for r in 0..rows {
                    for c in 0..cols {
                        out.push(flat[c * rows + r]);
                    }
                }
                out
            }
        })
    }

    /// f32 or f64 values, converted to f32.
    fn float_matrix(
        &self,
        what: &'static str,
        expected_shape: &'static str,
    ) -> Result<Matrix<f32>, IoError> {
        const EXPECTED: &str = "f32 or f64";
        let scalar = self
            .scalar
            .ok_or_else(|| self.dtype_error(what, EXPECTED))?;
        let (rows, cols) = self.shape_2d(what, expected_shape)?;
        let data = match scalar {
            Scalar::Float(4) => self.values::<f32>(rows, cols)?,
            Scalar::Float(8) => self
                .values::<f64>(rows, cols)?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
            _ => return Err(self.dtype_error(what, EXPECTED)),
        };
        Ok(Matrix::new(rows, cols, data))
    }
}

/// Reads a score matrix `[N, T]` (probabilities) stored as f32 or f64; f64 is rounded to f32.
///
/// Only the format is checked here; whether the values are finite probabilities is up to the caller.
pub fn read_npy_scores(path: impl AsRef<Path>) -> Result<Matrix<f32>, IoError> {
    open(path.as_ref())?.float_matrix("scores", "[N, T]")
}

/// Reads a feature matrix `[N, D]` stored as f32 or f64; f64 is rounded to f32.
pub fn read_npy_f32(path: impl AsRef<Path>) -> Result<Matrix<f32>, IoError> {
    open(path.as_ref())?.float_matrix("features", "[N, D]")
}

/// Reads a 0/1 target matrix `[N, T]`.
///
/// Accepted dtypes: bool, unsigned and signed integers of any width (u8 and i64 are the
/// common ones), f32 and f64. Every value must be exactly 0 or 1; the first other value is
/// reported with its row and column.
pub fn read_npy_targets(path: impl AsRef<Path>) -> Result<Matrix<u8>, IoError> {
    const WHAT: &str = "targets";
    const EXPECTED: &str = "bool, an integer type, f32 or f64 holding 0/1";
    let raw = open(path.as_ref())?;
    let scalar = raw.scalar.ok_or_else(|| raw.dtype_error(WHAT, EXPECTED))?;
    let (rows, cols) = raw.shape_2d(WHAT, "[N, T]")?;
    // Each arm maps a value to Some(0|1) or None (invalid) and a printable form for errors.
    fn convert<T: Copy + std::fmt::Display>(
        raw: &RawNpy,
        cols: usize,
        values: Vec<T>,
        to01: impl Fn(T) -> Option<u8>,
    ) -> Result<Vec<u8>, IoError> {
        let mut out = Vec::with_capacity(values.len());
        for (i, v) in values.into_iter().enumerate() {
            match to01(v) {
                Some(b) => out.push(b),
                None => {
                    return Err(IoError::Value {
                        path: raw.path.clone(),
                        what: WHAT,
                        value: v.to_string(),
                        row: i / cols.max(1),
                        col: i % cols.max(1),
                        expected: "0 or 1",
                    })
                }
            }
        }
        Ok(out)
    }
    fn int01<T: Into<i128>>(v: T) -> Option<u8> {
        match v.into() {
            0 => Some(0),
            1 => Some(1),
            _ => None,
        }
    }
    fn float01(v: f64) -> Option<u8> {
        if v == 0.0 {
            Some(0)
        } else if v == 1.0 {
            Some(1)
        } else {
            None
        }
    }
    let data = match scalar {
        Scalar::Bool => raw
            .values::<bool>(rows, cols)?
            .into_iter()
            .map(u8::from)
            .collect(),
        Scalar::Uint(1) => convert(&raw, cols, raw.values::<u8>(rows, cols)?, int01)?,
        Scalar::Uint(2) => convert(&raw, cols, raw.values::<u16>(rows, cols)?, int01)?,
        Scalar::Uint(4) => convert(&raw, cols, raw.values::<u32>(rows, cols)?, int01)?,
        Scalar::Uint(8) => convert(&raw, cols, raw.values::<u64>(rows, cols)?, int01)?,
        Scalar::Int(1) => convert(&raw, cols, raw.values::<i8>(rows, cols)?, int01)?,
        Scalar::Int(2) => convert(&raw, cols, raw.values::<i16>(rows, cols)?, int01)?,
        Scalar::Int(4) => convert(&raw, cols, raw.values::<i32>(rows, cols)?, int01)?,
        Scalar::Int(8) => convert(&raw, cols, raw.values::<i64>(rows, cols)?, int01)?,
        Scalar::Float(4) => convert(&raw, cols, raw.values::<f32>(rows, cols)?, |v| {
            float01(v as f64)
        })?,
        Scalar::Float(8) => convert(&raw, cols, raw.values::<f64>(rows, cols)?, float01)?,
        _ => return Err(raw.dtype_error(WHAT, EXPECTED)),
    };
    Ok(Matrix::new(rows, cols, data))
}

fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, m: &Matrix<T>) -> Result<(), IoError> {
    assert_eq!(m.data.len(), m.rows * m.cols, "inconsistent Matrix");
    atomic_write_with(path, |w| {
        let mut writer = WriteOptions::new()
            .default_dtype()
            .shape(&[m.rows as u64, m.cols as u64])
            .writer(w)
            .begin_nd()?;
        writer.extend(m.data.iter().copied())?;
        writer.finish()
    })
}

/// Atomically writes a little-endian f32 `.npy` of shape `[rows, cols]`.
pub fn write_npy_f32(path: impl AsRef<Path>, m: &Matrix<f32>) -> Result<(), IoError> {
    write_npy(path.as_ref(), m)
}

/// Atomically writes a u8 `.npy` of shape `[rows, cols]` (targets).
pub fn write_npy_u8(path: impl AsRef<Path>, m: &Matrix<u8>) -> Result<(), IoError> {
    write_npy(path.as_ref(), m)
}

/// The bytes of a `.npy` file (format 1.0) holding `data`, the raw element bytes of an array
/// of numpy dtype `descr` (e.g. `"<f8"`, `">f4"`, `"<U3"`) and `shape`, laid out as numpy
/// writes it; built by hand, independently of npyz's writer, so the readers can be tested on
/// dtypes and orders fairpo-io never writes.
pub fn npy_bytes(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let shape_txt = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape_txt}, }}",
        if fortran { "True" } else { "False" }
    );
    // Pad so that magic(6) + version(2) + len(2) + header is a multiple of 64, ending in '\n'.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn le_f64(v: &[f64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn f32_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.npy");
        let m = Matrix::new(2, 3, vec![0.0, 0.25, 0.5, 0.75, 1.0, 0.125f32]);
        write_npy_f32(&p, &m).unwrap();
        assert_eq!(read_npy_scores(&p).unwrap(), m);
        assert_eq!(read_npy_f32(&p).unwrap(), m);
        // The header is what numpy expects.
        let bytes = std::fs::read(&p).unwrap();
        let text = String::from_utf8_lossy(&bytes[10..80]);
        assert!(text.contains("'descr': '<f4'"), "{text}");
        assert!(text.contains("'shape': (2, 3"), "{text}");
    }

    #[test]
    fn u8_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("y.npy");
        let m = Matrix::new(3, 2, vec![0, 1, 1, 0, 0, 0u8]);
        write_npy_u8(&p, &m).unwrap();
        assert_eq!(read_npy_targets(&p).unwrap(), m);
    }

    #[test]
    fn f64_scores_and_fortran_order() {
        let dir = tempfile::tempdir().unwrap();
        // [[1, 2, 3], [4, 5, 6]] stored column-major: 1 4 2 5 3 6.
        let data = le_f64(&[0.1, 0.4, 0.2, 0.5, 0.3, 0.6]);
        let p = write(&dir, "f.npy", &npy_bytes("<f8", true, &[2, 3], &data));
        let m = read_npy_scores(&p).unwrap();
        assert_eq!(m.shape(), (2, 3));
        assert_eq!(m.data, vec![0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6]);
    }

    #[test]
    fn big_endian_is_swapped() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = [0.5f32, 1.0].iter().flat_map(|x| x.to_be_bytes()).collect();
        let p = write(&dir, "be.npy", &npy_bytes(">f4", false, &[1, 2], &data));
        assert_eq!(read_npy_scores(&p).unwrap().data, vec![0.5, 1.0]);
    }

    #[test]
    fn targets_in_every_accepted_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let want = vec![1u8, 0, 0, 1];
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("|b1", vec![1, 0, 0, 1]),
            ("|u1", vec![1, 0, 0, 1]),
            ("|i1", vec![1, 0, 0, 1]),
            (
                "<i4",
                [1i32, 0, 0, 1]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
            (
                "<i8",
                [1i64, 0, 0, 1]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
            (
                "<f4",
                [1f32, 0., 0., 1.]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
            ("<f8", le_f64(&[1., 0., 0., 1.])),
        ];
        for (descr, data) in cases {
            let p = write(&dir, "t.npy", &npy_bytes(descr, false, &[2, 2], &data));
            assert_eq!(read_npy_targets(&p).unwrap().data, want, "dtype {descr}");
        }
    }

    #[test]
    fn target_not_zero_one_names_position() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = [0i64, 1, 2, 0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let p = write(&dir, "Y.npy", &npy_bytes("<i8", false, &[2, 2], &data));
        let e = read_npy_targets(&p).unwrap_err().to_string();
        assert!(
            e.contains("Y.npy") && e.contains("value 2 at row 1, column 0"),
            "{e}"
        );
        let p = write(
            &dir,
            "Yf.npy",
            &npy_bytes("<f8", false, &[1, 2], &le_f64(&[0.0, 0.5])),
        );
        let e = read_npy_targets(&p).unwrap_err().to_string();
        assert!(
            e.contains("Yf.npy") && e.contains("0.5") && e.contains("0 or 1"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_file_and_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.npy");
        let e = read_npy_scores(&missing).unwrap_err().to_string();
        assert!(
            e.contains("missing.npy") && e.contains("cannot read"),
            "{e}"
        );

        let p = write(&dir, "S.npy", b"a,b\n1,2\n");
        let e = read_npy_scores(&p).unwrap_err().to_string();
        assert_eq!(e, format!("{}: not a .npy file (bad magic)", p.display()));

        let p = write(
            &dir,
            "S4.npy",
            &npy_bytes("<i4", false, &[1, 1], &[0, 0, 0, 0]),
        );
        let e = read_npy_scores(&p).unwrap_err().to_string();
        assert!(
            e.ends_with("S4.npy: dtype <i4 not supported for scores; expected f32 or f64"),
            "{e}"
        );

        let p = write(&dir, "S1.npy", &npy_bytes("<f4", false, &[2], &[0; 8]));
        let e = read_npy_scores(&p).unwrap_err().to_string();
        assert!(
            e.contains("S1.npy") && e.contains("shape [2]") && e.contains("2-D"),
            "{e}"
        );

        let p = write(&dir, "Tr.npy", &npy_bytes("<f4", false, &[2, 2], &[0; 8]));
        let e = read_npy_scores(&p).unwrap_err().to_string();
        assert!(e.contains("Tr.npy") && e.contains("not a .npy file"), "{e}");

        let p = write(&dir, "Ys.npy", &npy_bytes("<U3", false, &[1, 1], &[0; 12]));
        let e = read_npy_targets(&p).unwrap_err().to_string();
        assert!(e.contains("Ys.npy") && e.contains("dtype <U3"), "{e}");

        let mut broken = npy_bytes("<f4", false, &[1, 1], &[0; 4]);
        broken[12] = b'!';
        let p = write(&dir, "H.npy", &broken);
        let e = read_npy_scores(&p).unwrap_err().to_string();
        assert!(e.contains("H.npy") && e.contains("malformed header"), "{e}");
    }

    #[test]
    fn empty_arrays_read_fine() {
        // Emptiness is a policy question for the caller (e.g. `fairpo metrics` rejects it).
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "e.npy", &npy_bytes("<f4", false, &[0, 5], &[]));
        let m = read_npy_scores(&p).unwrap();
        assert_eq!(m.shape(), (0, 5));
        assert!(m.is_empty());
    }
}
