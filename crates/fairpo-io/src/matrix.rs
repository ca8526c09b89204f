//! A dense row-major 2-D array, the exchange type between crates that do not depend on burn.

/// A dense row-major matrix: element `(r, c)` is `data[r * cols + c]`.
///
/// The fields are public so that crates can move the buffer in and out without
/// copies; [`Matrix::new`] checks that `data.len() == rows * cols`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Matrix<T> {
    /// Number of rows (samples).
    pub rows: usize,
    /// Number of columns (labels or feature dimensions).
    pub cols: usize,
    /// Row-major values, `rows * cols` of them.
    pub data: Vec<T>,
}

impl<T> Matrix<T> {
    /// Wraps a row-major buffer.
    ///
    /// # Panics
    /// If `data.len() != rows * cols` (a programming error, not an input error).
    pub fn new(rows: usize, cols: usize, data: Vec<T>) -> Self {
        assert_eq!(
            data.len(),
            rows * cols,
            "Matrix::new: {} values do not fill a {rows}x{cols} matrix",
            data.len()
        );
        Self { rows, cols, data }
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// True when the matrix holds no values (zero rows or zero columns).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Row `r` as a slice of `cols` values.
    ///
    /// # Panics
    /// If `r >= rows`.
    pub fn row(&self, r: usize) -> &[T] {
        assert!(r < self.rows, "row {r} out of range for {} rows", self.rows);
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Iterator over the rows, each a slice of `cols` values.
    pub fn rows_iter(&self) -> impl Iterator<Item = &[T]> {
        // `chunks_exact(0)` panics, and a matrix with no columns has empty rows.
        let cols = self.cols.max(1);
        let n = if self.cols == 0 { 0 } else { self.rows };
        self.data.chunks_exact(cols).take(n)
    }
}

impl<T: Copy> Matrix<T> {
    /// A `rows x cols` matrix filled with `value`.
    pub fn filled(rows: usize, cols: usize, value: T) -> Self {
        Self::new(rows, cols, vec![value; rows * cols])
    }

    /// Element `(r, c)`.
    ///
    /// # Panics
    /// If the index is out of range.
    pub fn get(&self, r: usize, c: usize) -> T {
        assert!(
            r < self.rows && c < self.cols,
            "index ({r}, {c}) out of range"
        );
        self.data[r * self.cols + c]
    }

    /// The rows listed in `indices`, in that order, as a new matrix.
    pub fn select_rows(&self, indices: &[usize]) -> Self {
        let mut data = Vec::with_capacity(indices.len() * self.cols);
        for &r in indices {
            data.extend_from_slice(self.row(r));
        }
        Self::new(indices.len(), self.cols, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_row_major() {
        let m = Matrix::new(2, 3, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(m.row(1), &[4, 5, 6]);
        assert_eq!(m.get(0, 2), 3);
        assert_eq!(m.rows_iter().count(), 2);
        assert_eq!(m.select_rows(&[1, 0]).data, vec![4, 5, 6, 1, 2, 3]);
    }

    #[test]
    #[should_panic(expected = "do not fill")]
    fn new_checks_length() {
        let _ = Matrix::new(2, 2, vec![1.0f32; 3]);
    }

    #[test]
    fn zero_columns_has_no_rows_to_iterate() {
        let m: Matrix<u8> = Matrix::new(3, 0, vec![]);
        assert!(m.is_empty());
        assert_eq!(m.rows_iter().count(), 0);
    }
}
