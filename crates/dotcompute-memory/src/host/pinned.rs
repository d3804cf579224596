//! Page-locked ("pinned") host memory: [`PinnedBuffer<T>`] and a small [`PinnedPool`].
//!
//! A pinned buffer is an anonymous mapping of whole pages of its own (never heap memory,
//! whose pages other allocations share: `munlock` does not nest, so unlocking one heap block
//! could unlock its neighbour) locked with `mlock`, which also faults every page in. Locked
//! pages are never swapped, so DMA engines can read them directly, which is what the transfer
//! engine's staging buffers want.
//!
//! Locking is limited by `RLIMIT_MEMLOCK` (`ulimit -l`, 8 MiB by default on Linux) unless the
//! process holds `CAP_IPC_LOCK`. Hitting the limit is [`Error::MemoryLockLimit`], which names
//! `RLIMIT_MEMLOCK`, its values and the amount asked. Locking faults in and pins every page,
//! which takes milliseconds per tens of MiB, so the pool keeps released buffers for reuse.

use super::aligned::{HostAlloc, HostBuffer};
use crate::element::Element;
use crate::error::{byte_len, Error, Result};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

/// Host memory locked into RAM with `mlock`; unlocked and freed on drop.
///
/// ```
/// # use dotcompute_memory::*;
/// # fn main() -> Result<()> {
/// # if cfg!(miri) || !cfg!(unix) { return Ok(()); }
/// let mut staging = PinnedBuffer::<u8>::new(1 << 20)?;   // within the default 8 MiB limit
/// staging[0] = 1;
/// assert_eq!(staging.as_ptr() as usize % 4096, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PinnedBuffer<T> {
    buf: HostBuffer<T>,
    locked_len: usize,
}

impl<T: Element> PinnedBuffer<T> {
    /// `len` zeroed elements, page-aligned, locked.
    ///
    /// Errors: [`Error::MemoryLockLimit`] when `RLIMIT_MEMLOCK` does not allow it,
    /// [`Error::LengthOverflow`], [`Error::OutOfMemory`], [`Error::Os`], and
    /// [`Error::Unsupported`] where `mlock` is unavailable (non-unix, Miri).
    pub fn new(len: usize) -> Result<Self> {
        Self::with_options(&HostAlloc::new(), len)
    }

    /// Like [`PinnedBuffer::new`] with the alignment, huge-page and NUMA choices of `alloc`
    /// (the start is always at least page-aligned).
    pub fn with_options(alloc: &HostAlloc, len: usize) -> Result<Self> {
        let bytes = byte_len::<T>(len)?;
        if cfg!(any(miri, not(unix))) {
            return Err(Error::Unsupported {
                operation: "pinned host memory",
                reason: if cfg!(miri) { "Miri cannot call mlock" } else { "mlock is only implemented on unix" },
            });
        }
        let align = alloc.effective_alignment::<T>()?.max(super::os::page_size());
        let buf = alloc.clone().alignment(align).mapped(true).allocate::<T>(len)?;
        if bytes == 0 {
            return Ok(PinnedBuffer { buf, locked_len: 0 });
        }
        // Lock whole pages of the mapping, which is ours alone.
        let locked_len = super::os::round_up(bytes, super::os::page_size()).expect("fits: the mapping exists");
        sys::lock(buf.as_ptr().cast::<u8>().cast_mut(), locked_len, bytes)?;
        Ok(PinnedBuffer { buf, locked_len })
    }
}

impl<T> PinnedBuffer<T> {
    /// The underlying host buffer (alignment, page kind, NUMA node).
    pub fn host(&self) -> &HostBuffer<T> {
        &self.buf
    }

    /// Bytes locked (the buffer's size rounded up to whole pages).
    pub fn locked_len(&self) -> usize {
        self.locked_len
    }

    /// Bytes of the buffer's mapping the kernel reports as locked (`Locked` in
    /// `/proc/self/smaps`); `None` where this cannot be asked.
    pub fn resident_locked_bytes(&self) -> Option<u64> {
        #[cfg(all(target_os = "linux", not(miri)))]
        {
            super::os::smaps_bytes(self.buf.as_ptr() as usize, self.locked_len, "Locked")
        }
        #[cfg(not(all(target_os = "linux", not(miri))))]
        {
            None
        }
    }
}

impl<T> Deref for PinnedBuffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf
    }
}

impl<T> DerefMut for PinnedBuffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf
    }
}

impl super::PinnedHost for PinnedBuffer<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl<T> Drop for PinnedBuffer<T> {
    fn drop(&mut self) {
        if self.locked_len > 0 {
            sys::unlock(self.buf.as_ptr().cast::<u8>().cast_mut(), self.locked_len);
        }
        // `buf` then unmaps the pages.
    }
}

#[cfg(all(unix, not(miri)))]
mod sys {
    pub(super) use crate::host::mmap::{lock, unlock};
}

#[cfg(not(all(unix, not(miri))))]
mod sys {
    use crate::error::Result;
    pub(super) fn lock(_: *mut u8, _: usize, _: usize) -> Result<()> {
        unreachable!("PinnedBuffer::with_options returns Unsupported first")
    }
    pub(super) fn unlock(_: *mut u8, _: usize) {}
}

/// A cache of pinned byte buffers, so that staging memory is locked once and reused.
///
/// Requests are rounded up to a power of two (at least one page); released buffers wait in
/// per-size free lists up to `max_cached_bytes` in total, beyond which they are unlocked and
/// freed. Reused buffers keep their old contents.
///
/// ```
/// # use dotcompute_memory::*;
/// # fn main() -> Result<()> {
/// # if cfg!(miri) || !cfg!(unix) { return Ok(()); }
/// let pool = PinnedPool::new(4 << 20);
/// let a = pool.rent(10_000)?;            // a 16 KiB pinned buffer
/// assert!(a.len() >= 10_000);
/// drop(a);                               // back to the pool, still locked
/// let b = pool.rent(12_000)?;            // same size class: reused, no mlock
/// assert_eq!(pool.hits(), 1);
/// # drop(b);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PinnedPool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    max_cached_bytes: usize,
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    free: std::collections::BTreeMap<usize, Vec<PinnedBuffer<u8>>>,
    cached_bytes: usize,
    hits: u64,
    misses: u64,
}

impl PinnedPool {
    /// A pool that keeps at most `max_cached_bytes` of released buffers.
    pub fn new(max_cached_bytes: usize) -> Self {
        PinnedPool { inner: Arc::new(PoolInner { max_cached_bytes, state: Mutex::new(PoolState::default()) }) }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pinned buffer of at least `bytes` bytes (its `len` is the size class).
    ///
    /// Errors: as [`PinnedBuffer::new`]; [`Error::LengthOverflow`] when no size class fits.
    pub fn rent(&self, bytes: usize) -> Result<PooledPinned> {
        let class = bytes.max(super::os::page_size()).checked_next_power_of_two().ok_or({
            Error::LengthOverflow { len: bytes, element_size: 1, type_name: "u8 (rounded to a pinned size class)" }
        })?;
        {
            let mut st = self.lock_state();
            if let Some(buf) = st.free.get_mut(&class).and_then(Vec::pop) {
                st.cached_bytes -= class;
                st.hits += 1;
                return Ok(PooledPinned { buf: Some(buf), pool: self.clone() });
            }
        }
        // A miss is counted once the memory is locked: a failed rent changes no counter.
        let buf = PinnedBuffer::<u8>::new(class)?;
        self.lock_state().misses += 1;
        Ok(PooledPinned { buf: Some(buf), pool: self.clone() })
    }

    /// Rents served from the cache.
    pub fn hits(&self) -> u64 {
        self.lock_state().hits
    }

    /// Rents that had to lock new memory.
    pub fn misses(&self) -> u64 {
        self.lock_state().misses
    }

    /// Bytes held in the cache.
    pub fn cached_bytes(&self) -> usize {
        self.lock_state().cached_bytes
    }

    /// Unlocks and frees every cached buffer; returns the bytes released.
    pub fn trim(&self) -> usize {
        let free = {
            let mut st = self.lock_state();
            st.cached_bytes = 0;
            std::mem::take(&mut st.free)
        };
        free.into_iter().map(|(class, list)| class * list.len()).sum()
    }

    fn give_back(&self, buf: PinnedBuffer<u8>) {
        let class = buf.len();
        let rejected = {
            let mut st = self.lock_state();
            if st.cached_bytes + class <= self.inner.max_cached_bytes {
                st.cached_bytes += class;
                st.free.entry(class).or_default().push(buf);
                None
            } else {
                Some(buf)
            }
        };
        drop(rejected); // unlocked and unmapped outside the lock
    }
}

/// A pinned buffer rented from a [`PinnedPool`]; goes back to it on drop.
#[derive(Debug)]
pub struct PooledPinned {
    buf: Option<PinnedBuffer<u8>>,
    pool: PinnedPool,
}

impl PooledPinned {
    /// The pinned buffer.
    pub fn buffer(&self) -> &PinnedBuffer<u8> {
        self.buf.as_ref().expect("present until drop")
    }
}

impl Deref for PooledPinned {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.as_deref().expect("present until drop")
    }
}

impl DerefMut for PooledPinned {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.buf.as_deref_mut().expect("present until drop")
    }
}

impl Drop for PooledPinned {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.give_back(buf);
        }
    }
}

crate::buffer_trait::slice_backed_buffer!(PinnedBuffer);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(miri)]
    fn miri_reports_unsupported() {
        assert!(matches!(PinnedBuffer::<u8>::new(10), Err(Error::Unsupported { .. })));
    }

    #[test]
    #[cfg(not(miri))]
    fn overflow_is_checked_before_anything() {
        assert!(matches!(PinnedBuffer::<u64>::new(usize::MAX / 2), Err(Error::LengthOverflow { .. })));
        assert!(matches!(PinnedPool::new(0).rent(usize::MAX), Err(Error::LengthOverflow { .. })));
    }
}
