//! Every `unsafe` of the host kernels (besides the allocator option in `alloc.rs`): the calls
//! into `gemm`, whose API takes raw pointers and strides, and [`HeadBlocks`], which hands
//! parallel tasks the disjoint per-(image, head) blocks of one buffer. Everything here is
//! safe to call: operands are bounds-checked before each call and a block can only be had
//! once per task.

#![allow(unsafe_code)]

use std::marker::PhantomData;

use gemm::Parallelism;
use rayon::prelude::*;

/// A matrix operand of [`gemm_into`]: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct In<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl<'a> In<'a> {
    /// Row-major with `width` values per row.
    pub(crate) fn rows(data: &'a [f32], width: usize) -> Self {
        Self {
            data,
            rs: width,
            cs: 1,
        }
    }

    /// The transpose of `self`.
    pub(crate) fn t(self) -> Self {
        Self {
            data: self.data,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Whether an `[m, n]` matrix fits.
    fn fits(&self, m: usize, n: usize) -> bool {
        m == 0 || n == 0 || (m - 1) * self.rs + (n - 1) * self.cs < self.data.len()
    }
}

/// The destination of [`gemm_into`]: rows `rs` apart, columns contiguous.
pub(crate) struct Out<'a> {
    data: &'a mut [f32],
    rs: usize,
}

impl<'a> Out<'a> {
    pub(crate) fn new(data: &'a mut [f32], rs: usize) -> Self {
        Self { data, rs }
    }
}

/// `out[m, n] (+)= scale · a[m, k] · b[k, n]`, keeping what `out` holds when `accumulate`.
///
/// # Panics
/// If an operand is too short for its shape.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    out: Out<'_>,
    accumulate: bool,
    a: In<'_>,
    b: In<'_>,
    scale: f32,
) {
    assert!(
        m == 0 || n == 0 || (m - 1) * out.rs + n <= out.data.len(),
        "gemm_into: destination too short for [{m}, {n}]"
    );
    if m == 0 || n == 0 {
        return;
    }
    let parallelism = if m * n * k >= 1 << 16 {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    let dst = out.data.as_mut_ptr();
    // SAFETY: `out` holds every element written (checked above) and is a unique borrow, so it
    // overlaps neither input and no other thread touches it.
    unsafe { gemm_raw(m, n, k, dst, out.rs, accumulate, a, b, scale, parallelism) };
}

/// `dst[m, n] (+)= scale · a[m, k] · b[k, n]`, rows of `dst` `dst_rs` apart: the one call
/// into gemm, for [`gemm_into`], [`gemm_serial`] and [`HeadBlock::gemm`].
///
/// # Safety
/// `dst` must be valid for reads and writes at `i·dst_rs + j` for i < m, j < n, and no other
/// thread may touch those elements meanwhile.
///
/// # Panics
/// If an input is too short for its shape.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    a: In<'_>,
    b: In<'_>,
    scale: f32,
    parallelism: Parallelism,
) {
    assert!(
        a.fits(m, k) && b.fits(k, n),
        "gemm: operand too short for [{m}, {k}] x [{k}, {n}]"
    );
    // SAFETY: the inputs were checked above; `dst` is the caller's promise.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// [`gemm_into`] on the calling thread (for work that is already one of many parallel tasks).
pub(crate) fn gemm_serial(m: usize, n: usize, k: usize, out: Out<'_>, a: In<'_>, b: In<'_>) {
    assert!(
        m == 0 || n == 0 || (m - 1) * out.rs + n <= out.data.len(),
        "gemm_serial: destination too short for [{m}, {n}]"
    );
    if m == 0 || n == 0 {
        return;
    }
    let dst = out.data.as_mut_ptr();
    // SAFETY: as in `gemm_into`.
    unsafe { gemm_raw(m, n, k, dst, out.rs, false, a, b, 1.0, Parallelism::None) };
}

/// A `[images·seq, groups·heads·hd]` row-major buffer seen as one block per (image, head):
/// block (b, h) is the `seq` rows of image b and, in each column group g, the `hd` columns
/// `g·heads·hd + h·hd ..`. Blocks of different tasks are disjoint, so parallel tasks may
/// write them at once.
pub(crate) struct HeadBlocks<'a> {
    data: *mut f32,
    images: usize,
    seq: usize,
    heads: usize,
    hd: usize,
    groups: usize,
    _buffer: PhantomData<&'a mut [f32]>,
}

impl<'a> HeadBlocks<'a> {
    /// # Panics
    /// If `data` is not `images·seq` whole rows of `groups·heads·hd`.
    pub(crate) fn new(
        data: &'a mut [f32],
        seq: usize,
        heads: usize,
        hd: usize,
        groups: usize,
    ) -> Self {
        let row = groups * heads * hd;
        assert!(row > 0 && seq > 0 && data.len().is_multiple_of(seq * row));
        Self {
            images: data.len() / (seq * row),
            data: data.as_mut_ptr(),
            seq,
            heads,
            hd,
            groups,
            _buffer: PhantomData,
        }
    }

    /// Each task's block, task = image·heads + head, in task order: every block exactly once.
    pub(crate) fn into_par_iter(self) -> impl IndexedParallelIterator<Item = HeadBlock<'a>> {
        let base = SendPtr(self.data);
        let (seq, heads, hd, groups) = (self.seq, self.heads, self.hd, self.groups);
        (0..self.images * heads).into_par_iter().map(move |task| {
            let (image, head) = (task / heads, task % heads);
            let width = groups * heads * hd;
            let start = image * seq * width + head * hd;
            HeadBlock {
                // SAFETY: `start` is inside the buffer (image < images, head·hd < width).
                start: SendPtr(unsafe { base.get().add(start) }),
                task,
                image,
                head,
                seq,
                hd,
                width,
                group_width: heads * hd,
                _buffer: PhantomData,
            }
        })
    }
}

/// One task's block of a [`HeadBlocks`] buffer: only its elements can be written through it.
pub(crate) struct HeadBlock<'a> {
    start: SendPtr,
    pub(crate) task: usize,
    pub(crate) image: usize,
    pub(crate) head: usize,
    seq: usize,
    hd: usize,
    width: usize,
    group_width: usize,
    _buffer: PhantomData<&'a mut [f32]>,
}

impl HeadBlock<'_> {
    /// `block[group] = a[seq, k] · b[k, hd]`, on the calling thread.
    pub(crate) fn gemm(&mut self, group: usize, k: usize, a: In<'_>, b: In<'_>) {
        assert!(group * self.group_width < self.width);
        // SAFETY: the destination is this block's `seq × hd` elements of `group`, inside the
        // buffer (checked in `HeadBlocks::new` and above) and written by no other block; the
        // block borrows the buffer mutably, so the inputs cannot alias it.
        unsafe {
            let dst = self.start.get().add(group * self.group_width);
            let (m, n) = (self.seq, self.hd);
            gemm_raw(
                m,
                n,
                k,
                dst,
                self.width,
                false,
                a,
                b,
                1.0,
                Parallelism::None,
            );
        }
    }

    /// Row i of `block[group]` times `scales[i]`.
    pub(crate) fn scale_rows(&mut self, group: usize, scales: &[f32]) {
        assert!(group * self.group_width < self.width && scales.len() == self.seq);
        for (i, s) in scales.iter().enumerate() {
            // SAFETY: as in `gemm`: row i of this block's `group` columns.
            let row = unsafe {
                let p = self
                    .start
                    .get()
                    .add(i * self.width + group * self.group_width);
                std::slice::from_raw_parts_mut(p, self.hd)
            };
            row.iter_mut().for_each(|v| *v *= s);
        }
    }
}

/// A pointer sent to rayon's threads; what it points to is [`HeadBlock`]'s to guard.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: each `HeadBlock` writes only its own disjoint elements through it.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}
