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
    ///
    /// The state is `HostOnly`. On a discrete device only the host part is made here; device
    /// memory is taken when first needed ([`UnifiedBuffer::ensure_on_device`], a device view,
    /// a transfer), so a buffer larger than the device is allocated without error and fails
    /// there with [`Error::OutOfMemory`](crate::Error::OutOfMemory) (or
    /// [`Error::MemoryLimitExceeded`](crate::Error::MemoryLimitExceeded)). To get that error
    /// here, use [`MemoryManager::allocate_on_device`]. On unified memory (cpu) the buffer's
    /// memory is device memory, so it fails here either way.
    // Always inlined: a program calls it from many places, and left to the compiler it then
    // stays out of line, a measurable share of a small pooled allocate + drop.
    #[track_caller]
    #[inline(always)]
    pub fn allocate<T: Element>(&self, len: usize) -> Result<UnifiedBuffer<T>> {
        let location = std::panic::Location::caller();
        let bytes = byte_len::<T>(len)?;
        UnifiedBuffer::new(&self.shared, len, bytes, location)
    }

    /// Allocates a buffer that exists only on the device, for scratch data that kernels fill;
    /// its host part is made on first host access. Contents are unspecified. Device memory is
    /// taken now, so a device that is too small fails here.
    ///
    /// The state is `DeviceOnly`.
    #[track_caller]
    pub fn allocate_device<T: Element>(&self, len: usize) -> Result<UnifiedBuffer<T>> {
        let location = std::panic::Location::caller();
        let bytes = byte_len::<T>(len)?;
        UnifiedBuffer::new_device_only(&self.shared, len, bytes, location)
    }

    /// Allocates a buffer of `len` elements with its host and its device part made now, so that
    /// a device too small for it fails here rather than at the first
    /// [`UnifiedBuffer::ensure_on_device`]. Contents are unspecified, as with
    /// [`MemoryManager::allocate`].
    ///
    /// The state is `Synchronized`: both parts exist and, their contents being unspecified
    /// until written, nothing is copied between them. A later host write and
    /// `ensure_on_device` upload into the device part made here, taking no new device memory.
    /// (`upload` and whole-buffer device copies still fill a fresh block, which replaces the
    /// device part only once they succeed.)
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`](crate::Error::OutOfMemory) or
    /// [`Error::MemoryLimitExceeded`](crate::Error::MemoryLimitExceeded) when either part cannot
    /// be had; nothing stays allocated and no buffer is counted.
    /// [`Error::LengthOverflow`](crate::Error::LengthOverflow) and the element-type errors of
    /// [`MemoryManager::allocate`].
    ///
    /// ```
    /// use dotcompute_memory::*;
    ///
    /// let mm = MemoryManager::sim(SimOptions::default().with_capacity(1 << 20));
    /// // Lazily, a buffer larger than the device is allocated; its upload fails.
    /// let mut lazy = mm.allocate::<u8>(2 << 20)?;
    /// assert!(matches!(lazy.ensure_on_device(), Err(Error::OutOfMemory { .. })));
    /// drop(lazy);
    /// // Eagerly, the allocation itself fails, and nothing is left allocated.
    /// assert!(matches!(mm.allocate_on_device::<u8>(2 << 20), Err(Error::OutOfMemory { .. })));
    /// assert_eq!(mm.statistics().active_allocations, 0);
    ///
    /// let mut buf = mm.allocate_on_device::<u8>(4096)?;
    /// assert_eq!(buf.state(), BufferState::Synchronized);
    /// buf.fill(7)?;
    /// buf.ensure_on_device()?; // into the device part made at allocation
    /// assert_eq!(buf.state(), BufferState::Synchronized);
    /// # Ok::<(), Error>(())
    /// ```
    #[track_caller]
    pub fn allocate_on_device<T: Element>(&self, len: usize) -> Result<UnifiedBuffer<T>> {
        let location = std::panic::Location::caller();
        let bytes = byte_len::<T>(len)?;
        UnifiedBuffer::new_on_device(&self.shared, len, bytes, location)
    }

    /// Allocates a buffer of `len` elements placed for how it will be used: [`AccessHint::Host`]
    /// as [`MemoryManager::allocate`] (host part now, device part on first device use),
    /// [`AccessHint::Device`] as [`MemoryManager::allocate_device`] (device part only: no host
    /// memory is taken, for data that kernels produce and consume), [`AccessHint::HostAndDevice`]
    /// as [`MemoryManager::allocate_on_device`] (both parts now). Contents are unspecified.
    ///
    /// ```
    /// use dotcompute_memory::*;
    ///
    /// let mm = MemoryManager::sim(SimOptions::default());
    /// let scratch = mm.allocate_for::<f32>(1 << 16, AccessHint::Device)?;
    /// assert_eq!(scratch.state(), BufferState::DeviceOnly);
    /// assert_eq!(mm.statistics().host_to_device.count, 0, "nothing was uploaded");
    /// # Ok::<(), Error>(())
    /// ```
    #[track_caller]
    pub fn allocate_for<T: Element>(&self, len: usize, hint: AccessHint) -> Result<UnifiedBuffer<T>> {
        let location = std::panic::Location::caller();
        let bytes = byte_len::<T>(len)?;
        match hint {
            AccessHint::Host => UnifiedBuffer::new(&self.shared, len, bytes, location),
            AccessHint::Device => UnifiedBuffer::new_device_only(&self.shared, len, bytes, location),
            AccessHint::HostAndDevice => UnifiedBuffer::new_on_device(&self.shared, len, bytes, location),
        }
    }

    /// Allocates a buffer of `len` zeroed elements (a host write, like
    /// [`UnifiedBuffer::fill`]).
    ///
    /// The state is `HostOnly`.
    #[track_caller]
    pub fn allocate_zeroed<T: Element>(&self, len: usize) -> Result<UnifiedBuffer<T>> {
        let mut buf = self.allocate::<T>(len)?;
        buf.fill(T::zeroed())?;
        Ok(buf)
    }

    /// Allocates a buffer and copies `data` into it (a host write, like
    /// [`UnifiedBuffer::copy_from`]).
    ///
    /// The state is `HostOnly`.
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
    /// Errors: [`Error::SharedName`](crate::Error::SharedName) (empty, `/`, too long), [`Error::SharedExists`](crate::Error::SharedExists),
    /// [`Error::LengthOverflow`](crate::Error::LengthOverflow), [`Error::Os`](crate::Error::Os), [`Error::Unsupported`](crate::Error::Unsupported).
    pub fn allocate_shared<T: Element>(&self, name: &str, len: usize) -> Result<crate::host::SharedBuffer<T>> {
        Ok(crate::host::SharedBuffer::<T>::create(name, len)?.with_stats(self.shared.stats.clone()))
    }

    /// Opens the named buffer `name` created by [`MemoryManager::allocate_shared`] (in any
    /// process), after validating its header. A process holds at most one handle to a segment.
    ///
    /// Errors: [`Error::SharedName`](crate::Error::SharedName), [`Error::SharedNotFound`](crate::Error::SharedNotFound),
    /// [`Error::SharedTypeMismatch`](crate::Error::SharedTypeMismatch) (element type or size differ), [`Error::SharedCorrupt`](crate::Error::SharedCorrupt)
    /// (not our header, damaged, or truncated), [`Error::SharedAlreadyOpen`](crate::Error::SharedAlreadyOpen) (this process
    /// has a handle to it: the creator's or an earlier open's), [`Error::Os`](crate::Error::Os),
    /// [`Error::Unsupported`](crate::Error::Unsupported).
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

/// Where a buffer will be used, for [`MemoryManager::allocate_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AccessHint {
    /// Mostly by the host; the device part is made on first device use (the default).
    #[default]
    Host,
    /// Only by the device (kernels): no host part until a host access asks for one.
    Device,
    /// By both: both parts are made now.
    HostAndDevice,
}
