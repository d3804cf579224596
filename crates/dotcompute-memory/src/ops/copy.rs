//! The large-copy routine: cached stores for small copies, non-temporal stores for large ones.
//!
//! A copy through ordinary stores reads each destination line into the cache before writing
//! it (read-for-ownership) and evicts useful data; non-temporal ("streaming") stores write
//! whole lines straight to memory. glibc switches to them only above its non-temporal
//! threshold, derived from the L3 size the CPU reports (often hundreds of MiB on VMs), so
//! between 2 MiB and that threshold this module streams by itself:
//!
//! ```text
//!   len < NT_THRESHOLD (2 MiB)  ──► dst.copy_from_slice(src)          (glibc memcpy)
//!   len ≥ glibc's own threshold ──► dst.copy_from_slice(src)          (glibc streams by itself
//!                                   there, with a loop that measured ~10% faster at 256 MiB)
//!   otherwise, x86-64           ──► head: memcpy up to 32-byte alignment of dst
//!                                   body: unaligned 32-byte loads (AVX2, else 16-byte SSE2),
//!                                         aligned streaming stores, 4 lanes per iteration,
//!                                         PREFETCHT1 of the source 4 KiB ahead
//!                                   tail: SFENCE; then memcpy
//!   other architectures, Miri   ──► copy_from_slice
//! ```
//!
//! The body is one sequential stream, four lanes per iteration, with an L2 prefetch of the
//! source one page ahead: a core's read bandwidth is bounded by its line fill buffers, which
//! the streaming stores also occupy, and an L2 prefetch brings the next lines in without
//! holding them. The variants measured against it are listed in `docs/PERFORMANCE.md`.
//!
//! AVX2 is detected at run time (`is_x86_feature_detected!`, cached by std); SSE2 is part of
//! the x86-64 baseline. After a streaming copy the destination is not in cache: code that
//! reads it back immediately is better served by a cached copy ([`CopyKind::Cached`]).
//! The head/body/tail arithmetic is shared with a portable lane copy that Miri checks
//! (Miri cannot run the streaming-store intrinsics, which are inline assembly).

use crate::element::Element;
use crate::error::{Error, Result};

/// Copies of at least this many bytes use non-temporal stores under [`CopyKind::Auto`].
///
/// 2 MiB, the per-core L2 of the project's VMs. Measured there (interleaved medians, the
/// prefetching streaming copy against `copy_from_slice`): at 1 MiB, where source and
/// destination fit in L2 together, streaming is ~17% slower when both are already in cache;
/// from 1.5 MiB up it wins in cache (~1.18× at 1.5 MiB, ~1.3× at 2 MiB, ~1.2× at 3–4 MiB)
/// and more out of it (~1.6–1.9×). 4 MiB (the earlier value) gave up those wins at 2–4 MiB.
pub const NT_THRESHOLD: usize = 2 << 20;

/// Where glibc's `memcpy` starts using non-temporal stores by itself: ¾ of the L3 size it
/// reports (`sysconf(_SC_LEVEL3_CACHE_SIZE)`, the rule glibc uses for its default
/// `x86_non_temporal_threshold`); `usize::MAX` where that cannot be known (other C
/// libraries, Miri). [`CopyKind::Auto`] streams only below this size.
pub fn libc_streaming_threshold() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static CACHED: AtomicUsize = AtomicUsize::new(0);
    let cached = CACHED.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu", not(miri)))]
    // SAFETY: sysconf has no preconditions.
    let l3 = unsafe { libc::sysconf(libc::_SC_LEVEL3_CACHE_SIZE) };
    #[cfg(not(all(target_os = "linux", target_env = "gnu", not(miri))))]
    let l3: i64 = 0;
    let threshold = if l3 > 0 { (l3 as usize / 4 * 3).max(2 * NT_THRESHOLD) } else { usize::MAX };
    CACHED.store(threshold, Ordering::Relaxed);
    threshold
}

/// Which stores a copy should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CopyKind {
    /// Non-temporal from [`NT_THRESHOLD`] up to [`libc_streaming_threshold`] where the CPU
    /// has them; `copy_from_slice` outside that range.
    #[default]
    Auto,
    /// Always `copy_from_slice` (the destination stays in cache).
    Cached,
    /// Non-temporal stores at every size where the CPU has them (for measurements and for
    /// callers who know the destination will not be read soon).
    NonTemporal,
}

/// The stores a copy actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreKind {
    /// `copy_from_slice` (glibc `memcpy` or the compiler's inline copy).
    Cached,
    /// 32-byte AVX2 streaming stores (`vmovntdq`).
    NonTemporalAvx2,
    /// 16-byte SSE2 streaming stores (`movntdq`).
    NonTemporalSse2,
    /// The portable lane copy that stands in for streaming stores under Miri.
    PortableChunked,
}

/// Copies `src` into `dst`, choosing the store kind by size ([`CopyKind::Auto`]).
///
/// ```
/// let src = vec![7u8; 10_000_000];
/// let mut dst = vec![0u8; 10_000_000];
/// dotcompute_memory::ops::copy_bytes(&mut dst, &src)?;
/// assert!(dst == src);
/// assert!(dotcompute_memory::ops::copy_bytes(&mut dst[..3], &src[..4]).is_err());
/// # Ok::<(), dotcompute_memory::Error>(())
/// ```
///
/// Errors: [`Error::LengthMismatch`] when the lengths differ (nothing is copied).
#[inline]
pub fn copy_bytes(dst: &mut [u8], src: &[u8]) -> Result<()> {
    copy_bytes_with(dst, src, CopyKind::Auto).map(drop)
}

/// Copies `src` into `dst` with the given store policy; returns the stores used.
#[inline]
pub fn copy_bytes_with(dst: &mut [u8], src: &[u8], kind: CopyKind) -> Result<StoreKind> {
    if dst.len() != src.len() {
        return Err(Error::LengthMismatch { operation: "ops::copy_bytes", expected: dst.len(), actual: src.len() });
    }
    let streaming = match kind {
        CopyKind::Auto => dst.len() >= NT_THRESHOLD && dst.len() < libc_streaming_threshold(),
        CopyKind::Cached => false,
        CopyKind::NonTemporal => true,
    };
    if streaming {
        if let Some(used) = copy_streaming(dst, src) {
            return Ok(used);
        }
    }
    dst.copy_from_slice(src);
    Ok(StoreKind::Cached)
}

/// Typed [`copy_bytes`]: copies `src` into `dst` (same length in elements).
///
/// Errors: [`Error::LengthMismatch`] (element counts) when the lengths differ.
#[inline]
pub fn copy<T: Element>(dst: &mut [T], src: &[T]) -> Result<()> {
    if dst.len() != src.len() {
        return Err(Error::LengthMismatch { operation: "ops::copy", expected: dst.len(), actual: src.len() });
    }
    copy_bytes(bytemuck::cast_slice_mut(dst), bytemuck::cast_slice(src))
}

/// Streaming copy of equal-length slices, or `None` where streaming stores are unavailable.
#[allow(unreachable_code)]
#[inline(never)]
fn copy_streaming(dst: &mut [u8], src: &[u8]) -> Option<StoreKind> {
    debug_assert_eq!(dst.len(), src.len());
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected; the slices have equal lengths and cannot
            // overlap (one is &mut).
            unsafe { x86::copy_nt_avx2(dst.as_mut_ptr(), src.as_ptr(), dst.len()) };
            return Some(StoreKind::NonTemporalAvx2);
        }
        // SAFETY: SSE2 is part of the x86-64 baseline; lengths equal, no overlap.
        unsafe { x86::copy_nt_sse2(dst.as_mut_ptr(), src.as_ptr(), dst.len()) };
        return Some(StoreKind::NonTemporalSse2);
    }
    #[cfg(miri)]
    {
        // SAFETY: lengths equal, no overlap.
        unsafe { portable::copy_chunked(dst.as_mut_ptr(), src.as_ptr(), dst.len()) };
        return Some(StoreKind::PortableChunked);
    }
    None
}

/// The head / body / tail structure of the streaming copy, with the lane copy as a block.
///
/// Expands inside an `unsafe fn(dst: *mut u8, src: *const u8, len: usize)` whose callers
/// guarantee `dst` valid for `len` writes, `src` for `len` reads, and no overlap.
#[cfg_attr(not(any(target_arch = "x86_64", miri, test)), allow(unused_macros))]
macro_rules! lane_copy {
    ($dst:ident, $src:ident, $len:ident, $lane:expr, |$d:ident, $s:ident| $copy_lane:block,
     |$p:ident| $prefetch:block, $fence:block) => {{
        const LANE: usize = $lane;
        let head = ($dst as usize).wrapping_neg() & (LANE - 1);
        let head = if head > $len { $len } else { head };
        // SAFETY: head <= len bytes of two valid, non-overlapping ranges (caller contract).
        unsafe { core::ptr::copy_nonoverlapping($src, $dst, head) };
        let mut off = head;
        while off + 4 * LANE <= $len {
            // The address to prefetch from may lie past the end of `src`: it is only formed
            // with wrapping arithmetic and handed to a prefetch hint, never dereferenced.
            let $p = $src.wrapping_add(off + PREFETCH_DISTANCE);
            $prefetch
            let mut k = 0;
            while k < 4 {
                // SAFETY: off + (k + 1) * LANE <= len, so both lane pointers stay in range;
                // dst + off is LANE-aligned (head made it so and we advance by LANE).
                let ($d, $s) = unsafe { ($dst.add(off + k * LANE), $src.add(off + k * LANE)) };
                $copy_lane
                k += 1;
            }
            off += 4 * LANE;
        }
        while off + LANE <= $len {
            // SAFETY: off + LANE <= len, in range and LANE-aligned as above.
            let ($d, $s) = unsafe { ($dst.add(off), $src.add(off)) };
            $copy_lane
            off += LANE;
        }
        $fence
        // SAFETY: the remaining len - off < LANE bytes are in range of both.
        unsafe { core::ptr::copy_nonoverlapping($src.add(off), $dst.add(off), $len - off) };
    }};
}

/// How far ahead of the loads the streaming copy prefetches the source into L2 (bytes).
#[cfg_attr(not(any(target_arch = "x86_64", miri, test)), allow(dead_code))]
const PREFETCH_DISTANCE: usize = 4096;

#[cfg(all(target_arch = "x86_64", not(miri)))]
mod x86 {
    use super::PREFETCH_DISTANCE;
    use core::arch::x86_64::*;

    /// # Safety
    ///
    /// AVX2 must be available; `dst` valid for `len` byte writes, `src` for `len` byte reads,
    /// and the ranges must not overlap.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn copy_nt_avx2(dst: *mut u8, src: *const u8, len: usize) {
        lane_copy!(
            dst,
            src,
            len,
            32,
            |d, s| {
                // SAFETY: s is readable for 32 bytes (unaligned load); d is 32-byte aligned
                // and writable for 32 bytes (the macro's bounds).
                unsafe { _mm256_stream_si256(d.cast::<__m256i>(), _mm256_loadu_si256(s.cast::<__m256i>())) }
            },
            |p| {
                // Two 64-byte lines per 128-byte step, one page ahead, into L2.
                // (`_mm_prefetch` is a safe fn from Rust 1.87 on; older compilers need the block.)
                #[allow(unused_unsafe)]
                // SAFETY: PREFETCHT1 is a hint: it never faults and never reads into Rust-visible
                // memory, so any address (here possibly past the end of src) is fine.
                unsafe {
                    _mm_prefetch::<_MM_HINT_T1>(p.cast::<i8>());
                    _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(64).cast::<i8>());
                }
            },
            {
                // Streaming stores are weakly ordered: fence before anyone may read dst.
                // (`_mm_sfence` is a safe fn from Rust 1.87 on; older compilers need the block.)
                #[allow(unused_unsafe)]
                // SAFETY: SFENCE has no preconditions; SSE is implied by AVX2.
                unsafe {
                    _mm_sfence()
                };
            }
        )
    }

    /// # Safety
    ///
    /// `dst` valid for `len` byte writes, `src` for `len` byte reads, no overlap.
    #[target_feature(enable = "sse2")]
    pub(super) unsafe fn copy_nt_sse2(dst: *mut u8, src: *const u8, len: usize) {
        lane_copy!(
            dst,
            src,
            len,
            16,
            |d, s| {
                // SAFETY: s readable for 16 bytes (unaligned load); d 16-byte aligned and
                // writable for 16 bytes (the macro's bounds).
                unsafe { _mm_stream_si128(d.cast::<__m128i>(), _mm_loadu_si128(s.cast::<__m128i>())) }
            },
            |p| {
                // One 64-byte line per 64-byte step, one page ahead, into L2.
                #[allow(unused_unsafe)]
                // SAFETY: a prefetch hint never faults and reads nothing visible to Rust.
                unsafe {
                    _mm_prefetch::<_MM_HINT_T1>(p.cast::<i8>())
                };
            },
            {
                #[allow(unused_unsafe)]
                // SAFETY: SFENCE has no preconditions; SSE is implied by SSE2.
                unsafe {
                    _mm_sfence()
                };
            }
        )
    }
}

/// The same structure with plain 32-byte lane copies: what Miri runs in place of the
/// intrinsics, so the pointer arithmetic of the streaming path is checked there.
#[cfg(any(miri, test))]
mod portable {
    use super::PREFETCH_DISTANCE;
    /// # Safety
    ///
    /// `dst` valid for `len` byte writes, `src` for `len` byte reads, no overlap.
    pub(super) unsafe fn copy_chunked(dst: *mut u8, src: *const u8, len: usize) {
        lane_copy!(
            dst,
            src,
            len,
            32,
            |d, s| {
                // SAFETY: 32 bytes in range of both (the macro's bounds), no overlap.
                unsafe { core::ptr::copy_nonoverlapping(s, d, 32) }
            },
            |p| {
                // No prefetch here; still form the address as the real path does.
                core::hint::black_box(p);
            },
            {}
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length 0..=300 at every source/destination misalignment 0..8, through the
    /// streaming path (or its Miri stand-in) and through the portable lane copy.
    #[test]
    fn streaming_copy_matches_copy_from_slice_at_every_length_and_offset() {
        let max = if cfg!(miri) { 140 } else { 300 };
        let src_buf: Vec<u8> = (0..max + 8).map(|i| (i * 31 + 7) as u8).collect();
        for len in 0..=max {
            let step = if cfg!(miri) { 3 } else { 1 };
            for so in (0..8).step_by(step) {
                for dof in (0..8).step_by(step) {
                    let src = &src_buf[so..so + len];
                    let mut dst_buf = vec![0xAAu8; max + 16];
                    let kind = copy_bytes_with(&mut dst_buf[dof..dof + len], src, CopyKind::NonTemporal).unwrap();
                    assert_ne!(kind, StoreKind::Cached);
                    assert_eq!(&dst_buf[dof..dof + len], src, "len {len} src+{so} dst+{dof}");
                    assert!(dst_buf[..dof].iter().chain(&dst_buf[dof + len..]).all(|&b| b == 0xAA), "wrote outside");

                    let mut dst_buf = vec![0x55u8; max + 16];
                    // SAFETY: equal lengths, distinct buffers.
                    unsafe { portable::copy_chunked(dst_buf[dof..].as_mut_ptr(), src.as_ptr(), len) };
                    assert_eq!(&dst_buf[dof..dof + len], src);
                    assert!(dst_buf[..dof].iter().chain(&dst_buf[dof + len..]).all(|&b| b == 0x55));
                }
            }
        }
    }

    /// Large lengths at odd offsets, through the streaming path and the portable copy.
    #[test]
    fn large_lengths() {
        let sizes: &[usize] =
            if cfg!(miri) { &[4 * 1024 + 37] } else { &[16 * 1024, 16 * 1024 + 37, 50_001, 65_536 + 4095] };
        for &len in sizes {
            let src_buf: Vec<u8> = (0..len + 8).map(|i| (i * 7 + (i >> 8)) as u8).collect();
            for (so, dof) in [(0usize, 0usize), (3, 5)] {
                let src = &src_buf[so..so + len];
                let mut dst = vec![0u8; len + 8];
                copy_bytes_with(&mut dst[dof..dof + len], src, CopyKind::NonTemporal).unwrap();
                assert!(&dst[dof..dof + len] == src, "len {len}");
                let mut dst = vec![0u8; len + 8];
                // SAFETY: equal lengths, distinct buffers.
                unsafe { portable::copy_chunked(dst[dof..].as_mut_ptr(), src.as_ptr(), len) };
                assert!(&dst[dof..dof + len] == src, "portable len {len}");
                assert!(dst[..dof].iter().chain(&dst[dof + len..]).all(|&b| b == 0));
            }
        }
    }

    #[test]
    fn libc_threshold_is_above_ours() {
        assert!(libc_streaming_threshold() >= 2 * NT_THRESHOLD);
        assert_eq!(libc_streaming_threshold(), libc_streaming_threshold());
    }

    #[test]
    fn auto_picks_by_size() {
        let src = vec![3u8; 1000];
        let mut dst = vec![0u8; 1000];
        assert_eq!(copy_bytes_with(&mut dst, &src, CopyKind::Auto).unwrap(), StoreKind::Cached);
        assert_eq!(dst, src);
        if !cfg!(miri) {
            let src = vec![9u8; NT_THRESHOLD + 3];
            let mut dst = vec![0u8; NT_THRESHOLD + 3];
            let used = copy_bytes_with(&mut dst, &src, CopyKind::Auto).unwrap();
            if cfg!(target_arch = "x86_64") {
                assert!(matches!(used, StoreKind::NonTemporalAvx2 | StoreKind::NonTemporalSse2), "{used:?}");
            }
            assert!(dst == src);
        }
        let mut d2 = vec![0u8; 64];
        assert_eq!(copy_bytes_with(&mut d2, &[1u8; 64], CopyKind::Cached).unwrap(), StoreKind::Cached);
    }

    #[test]
    fn length_mismatch_changes_nothing() {
        let mut dst = vec![1u8; 10];
        let err = copy_bytes(&mut dst, &[2u8; 11]).unwrap_err();
        assert!(matches!(err, Error::LengthMismatch { expected: 10, actual: 11, .. }), "{err:?}");
        assert_eq!(dst, vec![1u8; 10]);
        let mut dst = vec![1.0f64; 4];
        let err = copy(&mut dst, &[2.0f64; 3]).unwrap_err();
        assert!(matches!(err, Error::LengthMismatch { operation: "ops::copy", expected: 4, actual: 3 }), "{err:?}");
        assert_eq!(dst, vec![1.0; 4]);
    }

    #[test]
    fn typed_copy() {
        let src: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        let mut dst = vec![0f32; 1000];
        copy(&mut dst, &src).unwrap();
        assert_eq!(dst, src);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: if cfg!(miri) { 12 } else { 256 },
            failure_persistence: None,
            ..Default::default()
        })]
        /// Any length, any alignment of either side, any policy: same bytes as
        /// `copy_from_slice`, nothing outside the destination touched.
        #[test]
        fn any_copy_matches_copy_from_slice(
            len in 0usize..(if cfg!(miri) { 300 } else { 20_000 }),
            so in 0usize..64,
            dof in 0usize..64,
            seed in proptest::prelude::any::<u8>(),
            policy in 0u8..3,
        ) {
            let kind = [CopyKind::Auto, CopyKind::Cached, CopyKind::NonTemporal][policy as usize];
            let src_buf: Vec<u8> = (0..len + so).map(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed)).collect();
            let src = &src_buf[so..];
            let mut expected = vec![0xEEu8; len + dof + 40];
            expected[dof..dof + len].copy_from_slice(src);
            let mut dst = vec![0xEEu8; len + dof + 40];
            copy_bytes_with(&mut dst[dof..dof + len], src, kind).unwrap();
            proptest::prop_assert!(dst == expected);
        }
    }
}
