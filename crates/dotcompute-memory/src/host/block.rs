//! `HostBlock`: one aligned, zero-initialised heap allocation with a safe byte view.

use crate::error::{Error, Result};
use std::alloc::Layout;
use std::ptr::NonNull;

/// An owned, aligned block of host memory whose bytes are always initialised.
///
/// Fresh blocks are zeroed. Blocks of `MAP_THRESHOLD` (1 MiB) or more come straight from an
/// anonymous `mmap`, whose zero pages are materialised lazily, so the first touch pays the page
/// faults and the allocation itself is O(1) (the system allocator, asked for page alignment,
/// would allocate and then `memset` the whole block). Reused blocks keep whatever was last
/// written, which is fine for `Pod` data.
pub struct HostBlock {
    ptr: NonNull<u8>,
    size: usize,
    /// log2 of the alignment (a power of two), so the block stays three words.
    align_log2: u8,
    mapped: bool,
}

/// Blocks at least this large are mapped directly (on Unix, outside Miri).
pub const MAP_THRESHOLD: usize = 1 << 20;

/// A fresh anonymous mapping of `size` bytes, or `None` (the caller then takes the heap) when
/// `align` exceeds a page or the kernel refuses.
#[cfg(all(unix, not(miri)))]
fn map_zeroed(size: usize, align: usize) -> Option<NonNull<u8>> {
    let page = super::os::page_size();
    if align > page {
        return None;
    }
    let (base, _) = super::mmap::Region::anonymous(size, page).ok()?.into_raw();
    Some(base)
}

#[cfg(not(all(unix, not(miri))))]
fn map_zeroed(_size: usize, _align: usize) -> Option<NonNull<u8>> {
    None
}

// SAFETY: a HostBlock uniquely owns its allocation (like Box<[u8]>); moving it to another
// thread moves that ownership.
unsafe impl Send for HostBlock {}
// SAFETY: shared access only hands out `&[u8]`, which is Sync; mutation needs `&mut self`.
unsafe impl Sync for HostBlock {}

impl HostBlock {
    /// Allocates `size` zeroed bytes aligned to `align`.
    ///
    /// `align` must be a power of two; `size` 0 allocates nothing.
    pub fn allocate_zeroed(size: usize, align: usize) -> Result<Self> {
        let layout = Layout::from_size_align(size, align).map_err(|_| Error::InvalidArgument {
            option: "alignment",
            value: format!("{align} (size {size})"),
            reason: "alignment must be a power of two and size rounded up to it must not exceed isize::MAX",
        })?;
        if size == 0 {
            // A dangling, aligned pointer: never dereferenced for more than 0 bytes.
            let ptr =
                NonNull::new(std::ptr::without_provenance_mut::<u8>(align)).ok_or_else(|| Error::InvalidArgument {
                    option: "alignment",
                    value: "0".into(),
                    reason: "alignment must be at least 1",
                })?;
            return Ok(HostBlock { ptr, size, align_log2: align.trailing_zeros() as u8, mapped: false });
        }
        if size >= MAP_THRESHOLD {
            if let Some(ptr) = map_zeroed(size, align) {
                return Ok(HostBlock { ptr, size, align_log2: align.trailing_zeros() as u8, mapped: true });
            }
        }
        // SAFETY: layout has non-zero size (checked above).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or(Error::allocator_out_of_memory("host", size as u64, 0))?;
        Ok(HostBlock { ptr, size, align_log2: align.trailing_zeros() as u8, mapped: false })
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Alignment in bytes.
    pub fn align(&self) -> usize {
        1 << self.align_log2
    }

    /// Start address. Writing through it is allowed only while no `&[u8]` from
    /// [`HostBlock::bytes`] is alive.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: ptr is valid for `size` initialised bytes (zeroed at allocation, only ever
        // written with initialised bytes) for as long as self lives; mutation needs &mut self
        // or the documented `as_ptr` rule.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.size) }
    }

    /// The bytes, mutably.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.size) }
    }
}

impl Drop for HostBlock {
    fn drop(&mut self) {
        if self.mapped {
            #[cfg(all(unix, not(miri)))]
            // SAFETY: the mapping of exactly `size` bytes at `ptr` made in `map_zeroed`, unmapped
            // once, here.
            unsafe {
                super::mmap::unmap(self.ptr, self.size);
            }
            return;
        }
        if self.size != 0 {
            // SAFETY: allocated in `allocate_zeroed` with exactly this size and alignment, which
            // were validated by Layout::from_size_align there.
            unsafe {
                std::alloc::dealloc(self.ptr.as_ptr(), Layout::from_size_align_unchecked(self.size, self.align()))
            }
        }
    }
}

impl std::fmt::Debug for HostBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostBlock")
            .field("ptr", &self.ptr)
            .field("size", &self.size)
            .field("align", &self.align())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_blocks_are_zeroed_and_aligned() {
        // The mapped path (1 MiB and up) is outside Miri; there a smaller set keeps the run short.
        let big = if cfg!(miri) { 5000 } else { MAP_THRESHOLD + 3 };
        for &(size, align) in &[(1usize, 1usize), (100, 64), (4096, 4096), (70_000, 64), (big, 4096)] {
            let mut b = HostBlock::allocate_zeroed(size, align).unwrap();
            assert_eq!(b.as_ptr() as usize % align, 0);
            assert!(b.bytes().iter().all(|&x| x == 0));
            b.bytes_mut()[size - 1] = 7;
            assert_eq!(b.bytes()[size - 1], 7);
        }
    }

    #[test]
    fn zero_size_and_bad_alignment() {
        let b = HostBlock::allocate_zeroed(0, 64).unwrap();
        assert!(b.bytes().is_empty());
        let err = HostBlock::allocate_zeroed(16, 3).unwrap_err();
        assert!(err.to_string().contains('3'), "{err}");
    }

    #[test]
    fn impossible_size_is_an_error() {
        assert!(HostBlock::allocate_zeroed(usize::MAX - 10, 64).is_err());
    }
}
