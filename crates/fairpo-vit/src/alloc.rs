//! Allocator tuning for the programs that use mimalloc as their global allocator.

// One FFI call into mimalloc's options; there is no safe wrapper for it.
#![allow(unsafe_code)]

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`, the same in v2 and v3).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc to keep freed memory instead of handing it back to the OS after its
/// default delay, unless `MIMALLOC_PURGE_DELAY` is set (which then wins).
///
/// Why: a training step frees and re-allocates the same few hundred MB of activations;
/// pages handed back page-fault again on reuse (`cargo xtask bench train` shows the cost).
/// Cost: the process keeps its peak footprint until it exits. Harmless when mimalloc is not
/// the global allocator (it then sets an option of an allocator nobody uses).
pub fn mimalloc_keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: `mi_option_set` takes plain integers and may be called at any time.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) };
    }
}
