//! Allocation through the manager: unified buffers, named cross-process buffers, and host
//! buffers with chosen alignment, pages and NUMA node.

use super::MemoryManager;
use crate::buffer::UnifiedBuffer;
use crate::element::Element;
use crate::error::{byte_len, Result};

/// Unified buffers (see [`UnifiedBuffer`]).
impl MemoryManager {
    /// Allocates a buffer of `len` elements. Its contents are unspecified (zero when the memory
    /// is fresh, earlier data when it comes from the pool; use [`MemoryManager::allocate_zeroed`]
    /// or [`UnifiedBuffer::fill`]). Length 0 is a valid empty buffer.
    // Always inlined: a program calls it from many places, and left to the compiler it then
    // stays out of line, a measurable share of a small pooled allocate + drop.
    #[track_caller]
    #[inline(always)]
    pub fn allocate<T: Element>(&self, len: usize) -> Result<UnifiedBuffer<T>> {
        let location = std::panic::Location::caller();
        let bytes = byte_len::<T>(len)?;
        UnifiedBuffer::new(&self.shared, len, bytes, location)
    }

    /// Allocates a buffer that exists only on the device (`DeviceOnly`), for scratch data that
    /// kernels fill; its host part is made on first host access. Contents are unspecified.
    #[track_caller]
    pub fn allocate_device<T: Element>(&self, len: usize) -> Result<UnifiedBuffer<T>> {
        let location = std::panic::Location::caller();
        let bytes = byte_len::<T>(len)?;
        UnifiedBuffer::new_device_only(&self.shared, len, bytes, location)
    }

    /// Allocates a buffer of `len` zeroed elements.
    #[track_caller]
    pub fn allocate_zeroed<T: Element>(&self, len: usize) -> Result<UnifiedBuffer<T>> {
        let mut buf = self.allocate::<T>(len)?;
        buf.fill(T::zeroed())?;
        Ok(buf)
    }

    /// Allocates a buffer and copies `data` into it.
    #[track_caller]
    pub fn allocate_from<T: Element>(&self, data: &[T]) -> Result<UnifiedBuffer<T>> {
        let mut buf = self.allocate::<T>(data.len())?;
        buf.copy_from(data)?;
        Ok(buf)
    }
}

/// Named cross-process buffers (see [`crate::host::SharedBuffer`]).
impl MemoryManager {
    /// Creates a named buffer of `len` zeroed elements in POSIX shared memory (mode 0600,
    /// created exclusively), which other processes open with [`MemoryManager::open_shared`].
    /// The name is removed when the returned handle drops (unless it is
    /// [`persist`](crate::host::SharedBuffer::persist)ed). Counted in this manager's
    /// statistics while it lives.
    ///
    /// ```
    /// # use dotcompute_memory::*;
    /// # fn main() -> Result<()> {
    /// # if cfg!(miri) || !cfg!(unix) { return Ok(()); }
    /// let mm = MemoryManager::cpu();
    /// let name = format!("dcmem-doc-{}", std::process::id());
    /// let mut shared = mm.allocate_shared::<f32>(&name, 4)?;
    /// shared[0] = 1.5;
    /// // Another process opens it with `mm.open_shared::<f32>(&name)?`. This one has it open
    /// // already, and a second handle would alias `shared`'s `&mut` access:
    /// assert!(matches!(mm.open_shared::<f32>(&name), Err(Error::SharedAlreadyOpen { .. })));
    /// assert!(matches!(mm.open_shared::<u32>(&name), Err(Error::SharedTypeMismatch { .. })));
    /// shared.persist(); // closes the handle, keeps the name
    /// let other = mm.open_shared::<f32>(&name)?;
    /// assert_eq!(other[0], 1.5);
    /// # drop(other);
    /// # SharedBuffer::remove(&name)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Errors: [`Error::SharedName`] (empty, `/`, too long), [`Error::SharedExists`],
    /// [`Error::LengthOverflow`], [`Error::Os`], [`Error::Unsupported`].
    pub fn allocate_shared<T: Element>(&self, name: &str, len: usize) -> Result<crate::host::SharedBuffer<T>> {
        Ok(crate::host::SharedBuffer::<T>::create(name, len)?.with_stats(self.shared.stats.clone()))
    }

    /// Opens the named buffer `name` created by [`MemoryManager::allocate_shared`] (in any
    /// process), after validating its header. A process holds at most one handle to a segment.
    ///
    /// Errors: [`Error::SharedName`], [`Error::SharedNotFound`],
    /// [`Error::SharedTypeMismatch`] (element type or size differ), [`Error::SharedCorrupt`]
    /// (not our header, damaged, or truncated), [`Error::SharedAlreadyOpen`] (this process
    /// has a handle to it: the creator's or an earlier open's), [`Error::Os`],
    /// [`Error::Unsupported`].
    pub fn open_shared<T: Element>(&self, name: &str) -> Result<crate::host::SharedBuffer<T>> {
        Ok(crate::host::SharedBuffer::<T>::open(name)?.with_stats(self.shared.stats.clone()))
    }
}

/// Host buffers with chosen alignment, pages and NUMA node (see [`crate::host::HostAlloc`]).
impl MemoryManager {
    /// Allocates `len` zeroed elements as `alloc` says, counted in this manager's statistics
    /// (active allocations and bytes, peak) until the buffer drops.
    ///
    /// ```
    /// # use dotcompute_memory::*;
    /// # fn main() -> Result<()> {
    /// let mm = MemoryManager::cpu();
    /// let buf = mm.allocate_host::<f32>(&HostAlloc::new().alignment(4096).huge_pages(true), 1 << 20)?;
    /// assert_eq!(mm.statistics().active_allocations, 1);
    /// # drop(buf);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Errors: as [`crate::host::HostAlloc::allocate`].
    pub fn allocate_host<T: Element>(
        &self,
        alloc: &crate::host::HostAlloc,
        len: usize,
    ) -> Result<crate::host::HostBuffer<T>> {
        Ok(alloc.allocate::<T>(len)?.with_stats(self.shared.stats.clone()))
    }
}
