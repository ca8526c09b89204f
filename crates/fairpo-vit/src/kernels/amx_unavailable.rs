//! The AMX kernel's interface on CPUs other than x86-64: never available, so the bf16 trunk
//! falls back to f32 there (`kernels/amx.rs` is the kernel).

use burn::tensor::bf16;

pub(crate) fn available() -> bool {
    false
}

pub(crate) fn unavailable_reason() -> &'static str {
    "the AMX tile unit exists only on x86-64 CPUs"
}

pub(crate) fn supports(_n: usize, _k: usize) -> bool {
    false
}

pub(crate) fn bf16_bits(x: f32) -> u16 {
    bf16::from_f32(x).to_bits()
}

/// Never built: [`available`] is false.
pub(crate) struct PackedTokens;

impl PackedTokens {
    pub(crate) fn new(_x: &[f32], _m: usize, _k: usize) -> Self {
        unreachable!("AMX is never available on this CPU")
    }
}

pub(crate) fn dense(
    _x: &PackedTokens,
    _w: &[bf16],
    _n: usize,
    _out: &mut [f32],
    _out_rs: usize,
    _accumulate: bool,
    _scale: f32,
) {
    unreachable!("AMX is never available on this CPU")
}
