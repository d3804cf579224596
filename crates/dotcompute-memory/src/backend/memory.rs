//! Device memory handles: the backend instance id, the move-only `DeviceMemory` handle,
//! memory figures, and one entry of a batched write.

use std::sync::atomic::{AtomicU64, Ordering};

/// Unique id of one backend instance; handles remember which instance made them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendId(u64);

impl BackendId {
    /// A fresh id, distinct from every other in this process.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        BackendId(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The raw number, for messages.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A device allocation owned by one backend instance.
///
/// Move-only: freeing consumes it, so a freed handle cannot be used again.
#[derive(Debug)]
pub struct DeviceMemory {
    owner: BackendId,
    handle: u64,
    size: usize,
}

impl DeviceMemory {
    /// Wraps a backend's raw handle.
    ///
    /// # Safety
    ///
    /// `handle` must denote a live allocation of at least `size` bytes made by the backend
    /// instance `owner`, and no other `DeviceMemory` may name the same allocation: the returned
    /// value is the allocation's only owner until it is passed to [`Backend::free`](super::Backend::free).
    pub unsafe fn from_raw(owner: BackendId, handle: u64, size: usize) -> Self {
        DeviceMemory { owner, handle, size }
    }

    /// The backend's raw handle.
    pub fn handle(&self) -> u64 {
        self.handle
    }

    /// Size of the allocation in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The backend instance that made this allocation.
    pub fn owner(&self) -> BackendId {
        self.owner
    }
}

/// Device memory figures, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemoryInfo {
    /// Total device memory.
    pub total: u64,
    /// Memory currently free on the device.
    pub free: u64,
    /// Largest single allocation the device accepts.
    pub max_allocation: u64,
}

/// One host-to-device copy of a [`Backend::write_batch_async`](super::Backend::write_batch_async) submission.
#[derive(Debug, Clone, Copy)]
pub struct BatchWrite<'a> {
    /// Destination allocation.
    pub dst: &'a DeviceMemory,
    /// Offset in the destination.
    pub dst_offset: usize,
    /// Source host memory (see the method's safety contract).
    pub src: *const u8,
    /// Bytes to copy.
    pub len: usize,
}
