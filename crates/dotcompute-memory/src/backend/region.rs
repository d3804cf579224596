//! `DeviceRegion`: a range of a backend allocation (a segment), as handed out by the device
//! pool, with forwarding methods that add the region's offset to every backend call.
//!
//! Regions keep their segment alive (`Arc`), so a segment can only be returned to the backend
//! once no region of it exists.

use super::{Backend, DeviceMemory, Event};
use crate::error::Result;
use std::ptr::NonNull;
use std::sync::Arc;

/// One backend allocation owned by the device pool.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) memory: DeviceMemory,
    pub(crate) id: u64,
    /// Where the host addresses this allocation (`Backend::device_ptr_on_host`, asked once when
    /// the segment is made; valid until it is freed); `None` where it cannot.
    pub(crate) device_on_host: Option<NonNull<u8>>,
    /// In the pool's small pool (segments for requests up to 1 MiB).
    pub(crate) small_pool: bool,
}

// SAFETY: a segment never reads or writes through `device_on_host`; it only hands the address
// to the owner of a region of it, who uses it under the same rules as any other access to
// that region. The other fields are plain data.
unsafe impl Send for Segment {}
// SAFETY: as above; `&Segment` gives nothing but the address itself.
unsafe impl Sync for Segment {}

/// `size` bytes at `offset` of a segment.
#[derive(Debug)]
pub(crate) struct DeviceRegion {
    pub(crate) segment: Arc<Segment>,
    pub(crate) offset: usize,
    pub(crate) size: usize,
    /// Size class the region was made for (the pool's front cache is indexed by it).
    pub(crate) class: usize,
}

impl DeviceRegion {
    /// Bytes in the region.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Offset of the region in its segment.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The backend allocation the region lies in.
    pub fn memory(&self) -> &DeviceMemory {
        &self.segment.memory
    }

    fn at(&self, offset: usize, len: usize) -> Result<usize> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(self.offset + offset),
            _ => {
                Err(crate::error::Error::OutOfRange { start: offset, end: offset.saturating_add(len), len: self.size })
            }
        }
    }

    /// The region's first byte where the host can address it (unified memory, the simulator).
    pub(crate) fn device_ptr_on_host(&self) -> Option<NonNull<u8>> {
        let base = self.segment.device_on_host?;
        // The offset lies inside the allocation, so this stays in bounds of it.
        NonNull::new(base.as_ptr().wrapping_add(self.offset))
    }

    pub(crate) fn host_ptr(&self, backend: &dyn Backend) -> Option<NonNull<u8>> {
        let base = backend.host_ptr(self.memory())?;
        // The offset lies inside the allocation, so this stays in bounds of it.
        NonNull::new(base.as_ptr().wrapping_add(self.offset))
    }

    pub(crate) fn write(&self, backend: &dyn Backend, offset: usize, src: &[u8]) -> Result<()> {
        backend.write(self.memory(), self.at(offset, src.len())?, src)
    }

    pub(crate) fn read(&self, backend: &dyn Backend, offset: usize, dst: &mut [u8]) -> Result<()> {
        backend.read(self.memory(), self.at(offset, dst.len())?, dst)
    }

    pub(crate) fn copy_from(
        &self,
        backend: &dyn Backend,
        offset: usize,
        src: &DeviceRegion,
        src_offset: usize,
        len: usize,
    ) -> Result<()> {
        backend.copy(src.memory(), src.at(src_offset, len)?, self.memory(), self.at(offset, len)?, len)
    }

    /// Copies `len` bytes from `src`, a region of `src_backend` (a peer device `backend` can
    /// reach), into this region of `backend`.
    pub(crate) fn copy_from_peer(
        &self,
        backend: &dyn Backend,
        offset: usize,
        src_backend: &dyn Backend,
        src: &DeviceRegion,
        src_offset: usize,
        len: usize,
    ) -> Result<()> {
        let (from, to) = (src.at(src_offset, len)?, self.at(offset, len)?);
        backend.copy_from_peer(src_backend, src.memory(), from, self.memory(), to, len)
    }

    pub(crate) fn copy_from_async(
        &self,
        backend: &dyn Backend,
        queue: usize,
        offset: usize,
        src: &DeviceRegion,
        src_offset: usize,
        len: usize,
    ) -> Result<Event> {
        backend.copy_async(queue, src.memory(), src.at(src_offset, len)?, self.memory(), self.at(offset, len)?, len)
    }

    /// # Safety
    ///
    /// As [`Backend::write_async`]: `src` must stay valid for reads of `len` bytes, and
    /// unwritten, until the returned event has completed.
    pub(crate) unsafe fn write_async(
        &self,
        backend: &dyn Backend,
        queue: usize,
        offset: usize,
        src: *const u8,
        len: usize,
    ) -> Result<Event> {
        let at = self.at(offset, len)?;
        // SAFETY: forwarded contract; the range was checked against the region.
        unsafe { backend.write_async(queue, self.memory(), at, src, len) }
    }

    /// # Safety
    ///
    /// As [`Backend::read_async`]: `dst` must stay valid for exclusive writes of `len` bytes
    /// until the returned event has completed.
    pub(crate) unsafe fn read_async(
        &self,
        backend: &dyn Backend,
        queue: usize,
        offset: usize,
        dst: *mut u8,
        len: usize,
    ) -> Result<Event> {
        let at = self.at(offset, len)?;
        // SAFETY: forwarded contract; the range was checked against the region.
        unsafe { backend.read_async(queue, self.memory(), at, dst, len) }
    }
}
