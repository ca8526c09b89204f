//! bf16 matrix products on Intel AMX (Sapphire Rapids and later): the frozen trunk's dense
//! layers when the trunk runs in bf16 ([`crate::TrunkPrecision::Bf16`]).
//!
//! Both operands are rounded to bf16 (to nearest, ties to even); the tile unit accumulates
//! their products in f32, and the result is written as f32. Everything around the products
//! (biases, norms, attention, GELU, the residual stream) stays f32.
//!
//! The tile instructions are inline assembly: Rust's AMX intrinsics are not stable. Linux
//! gives a process the tile registers only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`);
//! [`available`] asks once and says no when the CPU or the kernel does.
//!
//! Roles: the weight `W` `[n, k]` (out × in, k contiguous, as Hugging Face stores it) is the
//! tile unit's left operand as it is; the activations `X` `[m, k]` are packed per call into
//! its right-operand layout (pairs of k side by side, 16 tokens to a row), so the unit
//! computes `W · Xᵀ` in 32 × 32 blocks, written back transposed.

#![allow(unsafe_code)]

use std::sync::OnceLock;

use burn::tensor::bf16;
use half::slice::HalfFloatSliceExt as _;
use rayon::prelude::*;

/// Rows and columns of the output block one task of the micro-kernel computes.
const BLOCK: usize = 32;
/// Output blocks per task: token blocks × feature blocks (256 × 256 outputs). A task runs
/// its token blocks in the outer loop: a block of tokens is reused by every feature block
/// (measured faster than the other order).
const TASK_TOKEN_BLOCKS: usize = 8;
const TASK_FEATURE_BLOCKS: usize = 8;

/// Whether this process can run the AMX-BF16 tile instructions (asked once). Setting
/// `FAIRPO_NO_AMX` (any value) makes it say no, to exercise or choose the fallback.
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| std::env::var_os("FAIRPO_NO_AMX").is_none() && detect())
}

/// Why [`available`] says no, for the log line of the f32 fallback.
pub(crate) fn unavailable_reason() -> &'static str {
    if std::env::var_os("FAIRPO_NO_AMX").is_some() {
        "FAIRPO_NO_AMX is set"
    } else if !cpu_has_amx_bf16() {
        "this CPU has no AMX-BF16 tile unit"
    } else {
        "the operating system refused the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM)"
    }
}

fn cpu_has_amx_bf16() -> bool {
    use std::arch::x86_64::__cpuid_count;
    if __cpuid_count(0, 0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    // CPUID.(EAX=7, ECX=0):EDX bit 22 is AMX-BF16, bit 24 AMX-TILE. The output is written
    // with AVX-512F, which every AMX CPU has.
    (edx >> 22) & 1 == 1 && (edx >> 24) & 1 == 1 && std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(target_os = "linux")]
fn detect() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: this arch_prctl only asks the kernel to allow the tile state for the process.
    cpu_has_amx_bf16()
        && unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        } == 0
}

#[cfg(not(target_os = "linux"))]
fn detect() -> bool {
    false
}

/// Whether [`dense`] takes a weight of `n` outputs and `k` inputs (whole tiles only).
pub(crate) fn supports(n: usize, k: usize) -> bool {
    n > 0 && k > 0 && n.is_multiple_of(BLOCK) && k.is_multiple_of(BLOCK)
}

/// `x` rounded to bf16 (to nearest, ties to even), as its bit pattern.
pub(crate) fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
    // A NaN stays a (quiet) NaN: rounding could carry it into an infinity. A select, not a
    // branch, so that conversion loops vectorise.
    if x.is_nan() {
        ((bits >> 16) | 0x40) as u16
    } else {
        rounded
    }
}

/// The f32 value of a bf16 bit pattern.
#[cfg(test)]
pub(crate) fn bf16_value(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// Activations `x` `[m, k]` rounded to bf16, in the tile unit's right-operand layout:
/// tokens in groups of 16 (an even number of groups, padded with zeros), each group `k/2`
/// rows of 16 tokens × 2 adjacent values of k (64 bytes). Packed once, used by every
/// product that reads the same activations.
pub(crate) struct PackedTokens {
    /// Pairs of bf16 `(x[t, 2r], x[t, 2r + 1])` as one little-endian u32 each.
    data: Vec<u32>,
    m: usize,
    k: usize,
}

impl PackedTokens {
    /// # Panics
    /// If `x` is shorter than `m · k` or `k` is not a multiple of 32.
    pub(crate) fn new(x: &[f32], m: usize, k: usize) -> Self {
        assert!(
            x.len() >= m * k && k.is_multiple_of(BLOCK),
            "PackedTokens: bad shape"
        );
        let group_len = 8 * k;
        let mut data = vec![0u32; m.div_ceil(BLOCK) * 2 * group_len];
        data.par_chunks_mut(group_len)
            .enumerate()
            .for_each(|(g, group)| {
                let tokens = 16.min(m.saturating_sub(g * 16));
                // 16 tokens × 16 pairs at a time: convert rows (vectorisable), then
                // transpose into the group's lines of 16 tokens.
                for (block, lines) in group.chunks_exact_mut(256).enumerate() {
                    let mut tile = [[0u32; 16]; 16];
                    for (t, pairs) in tile.iter_mut().enumerate().take(tokens) {
                        let start = (g * 16 + t) * k + block * 32;
                        let row = &x[start..start + 32];
                        for (p, v) in pairs.iter_mut().zip(row.chunks_exact(2)) {
                            *p = u32::from(bf16_bits(v[0])) | (u32::from(bf16_bits(v[1])) << 16);
                        }
                    }
                    for (i, line) in lines.chunks_exact_mut(16).enumerate() {
                        for (value, pairs) in line.iter_mut().zip(&tile) {
                            *value = pairs[i];
                        }
                    }
                }
            });
        Self { data, m, k }
    }
}

/// `out[t, f] (+)= scale · Σ_j x[t, j] · w[f, j]` for t < m, f < n, with `x` and `w` in
/// bf16 and f32 accumulation; row t of `out` starts at `t · out_rs`, and `accumulate`
/// keeps what `out` holds.
///
/// # Shapes
/// - x: `[m, k]` (packed)
/// - w: `[n, k]` row-major
/// - out: `m` rows of at least `n` values, `out_rs` apart
///
/// # Panics
/// If [`available`] is false, the shape is not [`supports`]ed or an operand is too short.
pub(crate) fn dense(
    x: &PackedTokens,
    w: &[bf16],
    n: usize,
    out: &mut [f32],
    out_rs: usize,
    accumulate: bool,
    scale: f32,
) {
    let (m, k) = (x.m, x.k);
    assert!(available(), "amx::dense without AMX");
    assert!(supports(n, k), "amx::dense: [{n}, {k}] is not whole tiles");
    assert!(w.len() >= n * k, "amx::dense: weight too short");
    assert!(out_rs >= n, "amx::dense: output rows overlap");
    if m == 0 {
        return;
    }
    assert!(
        (m - 1) * out_rs + n <= out.len(),
        "amx::dense: output too short"
    );
    let token_blocks = m.div_ceil(BLOCK);
    let feature_blocks = n / BLOCK;
    let token_tasks = token_blocks.div_ceil(TASK_TOKEN_BLOCKS);
    let feature_tasks = feature_blocks.div_ceil(TASK_FEATURE_BLOCKS);
    let dst = SendPtr(out.as_mut_ptr());
    // bf16 is a u16 bit pattern (`repr(transparent)`); the tile unit reads the bits.
    let w: &[u16] = w.reinterpret_cast();
    (0..token_tasks * feature_tasks)
        .into_par_iter()
        .for_each(|task| {
            let (tt, ft) = (task / feature_tasks, task % feature_tasks);
            let tokens = tt * TASK_TOKEN_BLOCKS..((tt + 1) * TASK_TOKEN_BLOCKS).min(token_blocks);
            let features =
                ft * TASK_FEATURE_BLOCKS..((ft + 1) * TASK_FEATURE_BLOCKS).min(feature_blocks);
            let task = Task {
                packed: &x.data,
                w,
                m,
                k,
                dst,
                out_rs,
                accumulate,
                scale,
            };
            // SAFETY: AMX is available (asserted); tasks write disjoint (token, feature)
            // rectangles of `out`, each inside it (asserted above), and `out` is borrowed
            // mutably for the whole call.
            unsafe { task.run(tokens, features) };
        });
}

/// A pointer to the output, shared by the tasks of one [`dense`] call.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: every task writes only its own rectangle of the output (see `dense`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// What every task of one [`dense`] call reads.
struct Task<'a> {
    packed: &'a [u32],
    w: &'a [u16],
    m: usize,
    k: usize,
    dst: SendPtr,
    out_rs: usize,
    accumulate: bool,
    scale: f32,
}

/// The tile configuration: palette 1, tiles 0–7 each 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn sixteen_by_64() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
        }
        Self(c)
    }
}

impl Task<'_> {
    /// Computes output blocks `tokens × features` (in units of [`BLOCK`]), each over the
    /// whole of k with its four accumulators in tiles, then written out.
    ///
    /// # Safety
    /// AMX must be available, and no other thread may touch these blocks of the output.
    unsafe fn run(&self, tokens: std::ops::Range<usize>, features: std::ops::Range<usize>) {
        let config = TileConfig::sixteen_by_64();
        let mut block = [0f32; BLOCK * BLOCK];
        // SAFETY: the configuration is valid for palette 1.
        unsafe { std::arch::asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack)) };
        for tb in tokens {
            for fb in features.clone() {
                // SAFETY: the caller's promise; the product reads inside its operands and
                // the write stays in this task's rectangle.
                unsafe {
                    self.block_product(fb, tb, &mut block);
                    self.write_block(fb, tb, &block);
                }
            }
        }
        // SAFETY: releases this thread's tile state.
        unsafe { std::arch::asm!("tilerelease", options(nostack)) };
    }

    /// `block` := the products of weight rows `32·fb..` with tokens `32·tb..`, as four
    /// 16 × 16 quarters (features × tokens): (f0, t0), (f0, t1), (f1, t0), (f1, t1).
    ///
    /// # Safety
    /// AMX must be available and its tiles configured by [`Task::run`].
    unsafe fn block_product(&self, fb: usize, tb: usize, block: &mut [f32; BLOCK * BLOCK]) {
        let k = self.k;
        let w_rows = self.w[fb * BLOCK * k..(fb + 1) * BLOCK * k].as_ptr();
        let w_stride = 2 * k;
        let x0 = self.packed[2 * tb * 8 * k..(2 * tb + 2) * 8 * k].as_ptr();
        let sums = block.as_mut_ptr();
        // SAFETY (all below): loads stay inside the slices just taken: weight rows
        // `[32, k]` and two token groups of `8·k` pairs, read in k-blocks of 32; the stores
        // fill the 4 KiB of `block`.
        unsafe {
            let w1 = w_rows.add(16 * k);
            let x1 = x0.add(8 * k);
            std::arch::asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack)
            );
            for kb in 0..k / BLOCK {
                std::arch::asm!(
                    "tileloadd tmm4, [{w0} + {ws}*1]",
                    "tileloadd tmm6, [{x0} + {xs}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm7, [{x1} + {xs}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tileloadd tmm5, [{w1} + {ws}*1]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    w0 = in(reg) w_rows.add(kb * BLOCK),
                    w1 = in(reg) w1.add(kb * BLOCK),
                    x0 = in(reg) x0.add(kb * 16 * 16),
                    x1 = in(reg) x1.add(kb * 16 * 16),
                    ws = in(reg) w_stride,
                    xs = in(reg) 64usize,
                    options(nostack, readonly)
                );
            }
            std::arch::asm!(
                "tilestored [{q0} + {s}*1], tmm0",
                "tilestored [{q1} + {s}*1], tmm1",
                "tilestored [{q2} + {s}*1], tmm2",
                "tilestored [{q3} + {s}*1], tmm3",
                q0 = in(reg) sums,
                q1 = in(reg) sums.add(256),
                q2 = in(reg) sums.add(512),
                q3 = in(reg) sums.add(768),
                s = in(reg) 64usize,
                options(nostack)
            );
        }
    }

    /// Adds (or writes) `scale · block` into the output at tokens `32·tb..`, features
    /// `32·fb..`, skipping padding tokens: each token's 16 values of a quarter are one
    /// column of it, gathered into one vector.
    ///
    /// # Safety
    /// AVX-512F must be available (every AMX CPU has it), and no other thread may touch
    /// this block of the output.
    #[target_feature(enable = "avx512f")]
    unsafe fn write_block(&self, fb: usize, tb: usize, block: &[f32; BLOCK * BLOCK]) {
        use std::arch::x86_64::*;
        let column = _mm512_setr_epi32(
            0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240,
        );
        let scale = _mm512_set1_ps(self.scale);
        for (quarter, values) in block.chunks_exact(256).enumerate() {
            let f0 = fb * BLOCK + (quarter / 2) * 16;
            let t0 = tb * BLOCK + (quarter % 2) * 16;
            for t in 0..16.min(self.m.saturating_sub(t0)) {
                // SAFETY: column t of the quarter is inside `values`; row t0 + t < m of the
                // output, features f0..f0+16 < n, is inside the output (checked in `dense`)
                // and in this task's rectangle only.
                unsafe {
                    let v = _mm512_i32gather_ps::<4>(column, values.as_ptr().add(t));
                    let dst = self.dst.0.add((t0 + t) * self.out_rs + f0);
                    let v = if self.accumulate {
                        _mm512_fmadd_ps(v, scale, _mm512_loadu_ps(dst))
                    } else {
                        _mm512_mul_ps(v, scale)
                    };
                    _mm512_storeu_ps(dst, v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of values, some large, some tiny, some negative.
    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32 - 0.5) * 4.0
            })
            .collect()
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        // 1 + 2^-8 is halfway between 1 and the next bf16 (1 + 2^-7): ties go to even (1).
        assert_eq!(bf16_value(bf16_bits(1.0 + 2f32.powi(-8))), 1.0);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties go to the even one.
        assert_eq!(
            bf16_value(bf16_bits(1.0 + 3.0 * 2f32.powi(-8))),
            1.0 + 2f32.powi(-6)
        );
        assert_eq!(
            bf16_value(bf16_bits(1.0 + 2f32.powi(-8) + 2f32.powi(-20))),
            1.0 + 2f32.powi(-7)
        );
        assert_eq!(bf16_value(bf16_bits(-2.5)), -2.5);
        assert_eq!(bf16_value(bf16_bits(f32::INFINITY)), f32::INFINITY);
        assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
        // The largest f32 rounds up to infinity, as in IEEE round-to-nearest.
        assert_eq!(bf16_value(bf16_bits(f32::MAX)), f32::INFINITY);
    }

    /// Against the product of the bf16-rounded operands computed in f64: only the f32
    /// accumulation differs. Ragged token counts, accumulate and scale included.
    #[test]
    fn matches_the_rounded_product() {
        if !available() {
            eprintln!("skipped: {}", unavailable_reason());
            return;
        }
        for (m, n, k) in [
            (1, 32, 32),
            (17, 64, 96),
            (33, 32, 64),
            (300, 288, 768),
            (70, 96, 3072),
        ] {
            let x = values(m * k, 1);
            let w: Vec<bf16> = values(n * k, 2)
                .into_iter()
                .map(|v| bf16::from_bits(bf16_bits(v)))
                .collect();
            let out_rs = n + 5;
            let before = values(m * out_rs, 3);
            for (accumulate, scale) in [(false, 1.0), (true, 0.125)] {
                let mut out = before.clone();
                dense(
                    &PackedTokens::new(&x, m, k),
                    &w,
                    n,
                    &mut out,
                    out_rs,
                    accumulate,
                    scale,
                );
                let mut worst = 0f64;
                for t in 0..m {
                    for f in 0..n {
                        let terms = (0..k).map(|j| {
                            f64::from(bf16_value(bf16_bits(x[t * k + j])))
                                * f64::from(w[f * k + j].to_f32())
                        });
                        let (dot, size) = terms.fold((0.0, 0.0), |(s, a), v| (s + v, a + v.abs()));
                        let base = if accumulate {
                            f64::from(before[t * out_rs + f])
                        } else {
                            0.0
                        };
                        let want = base + f64::from(scale) * dot;
                        let err = (f64::from(out[t * out_rs + f]) - want).abs();
                        // f32 accumulation: error relative to the size of the summed terms.
                        worst = worst.max(err / (1.0 + base.abs() + f64::from(scale) * size));
                    }
                    // The padding between rows is untouched.
                    for f in n..out_rs {
                        assert_eq!(out[t * out_rs + f], before[t * out_rs + f]);
                    }
                }
                assert!(
                    worst < 1e-6,
                    "[{m}, {n}, {k}] accumulate {accumulate}: {worst:e}"
                );
            }
        }
    }

    #[test]
    fn ragged_shapes_are_refused() {
        assert!(supports(768, 3072) && supports(64, 64));
        assert!(!supports(24, 32) && !supports(32, 40) && !supports(0, 32));
    }
}
