//! The `Backend` trait: what a device must offer for buffers, pools and transfers to work on
//! it, with the default forms of its asynchronous and batched methods.

use super::event::{all_of, wait_all, Event, ReadyEvent};
use super::memory::{BackendId, BatchWrite, DeviceMemory, MemoryInfo};
use crate::error::{Error, Result};
use crate::host::PinnedHost;
use std::ptr::NonNull;

// The check lives with the trait because it asks the backend for its id and name.
impl DeviceMemory {
    /// Checks that `offset..offset + len` lies inside this allocation of `backend`.
    pub fn check(&self, backend: &dyn Backend, offset: usize, len: usize) -> Result<()> {
        if self.owner() != backend.id() {
            return Err(Error::InvalidHandle {
                backend: backend.name(),
                reason: format!(
                    "handle {:#x} belongs to backend instance {}, not {}",
                    self.handle(),
                    self.owner().get(),
                    backend.id().get()
                ),
            });
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(Error::OutOfRange { start: offset, end: offset.saturating_add(len), len: self.size() }),
        }
    }
}

/// A compute device's memory system.
///
/// Implementations must be thread-safe: the manager calls them from any thread.
///
/// # Example
///
/// Device memory through the trait object, as buffers and pools use it:
///
/// ```
/// use dotcompute_memory::{Backend, CpuBackend, Error};
/// use std::sync::Arc;
///
/// # fn main() -> dotcompute_memory::Result<()> {
/// let backend: Arc<dyn Backend> = Arc::new(CpuBackend::new());
/// let memory = backend.allocate(16, 8)?;             // 16 zeroed bytes
/// backend.write(&memory, 4, &[1, 2, 3, 4])?;
/// let mut back = [0xff; 8];
/// backend.read(&memory, 0, &mut back)?;
/// assert_eq!(back, [0, 0, 0, 0, 1, 2, 3, 4]);
///
/// // Ranges are checked against the allocation: an error, never a stray write.
/// let err = backend.write(&memory, 14, &[0; 4]).unwrap_err();
/// assert!(matches!(err, Error::OutOfRange { start: 14, end: 18, len: 16 }));
///
/// backend.free(memory)?;                             // consumes the handle
/// # Ok(())
/// # }
/// ```
///
/// # Safety
///
/// Buffers build safe references on what a backend reports, so an implementation promises:
/// - `allocate` returns handles (made with [`DeviceMemory::from_raw`]) to live allocations of
///   at least the requested size, and `free` releases only what it allocated, no earlier than
///   the work this backend queued on it has finished;
/// - when `is_unified()` is true, `host_ptr` returns, for each live allocation of this backend,
///   a pointer valid for reads and writes of the allocation's whole size, initialised, not
///   aliased by any other allocation, and valid until that allocation is freed; when it is
///   false, `host_ptr` returns `None`;
/// - `write`/`read`/`copy`/`fill` touch only the ranges given, and the `*_async` forms honour
///   the contracts written on them; an event reports completion only after its work is done;
/// - [`PinnedHost`] values it returns expose exactly their own memory.
pub unsafe trait Backend: Send + Sync + 'static {
    /// Short name: `cpu`, `sim`, `opencl`, `cuda`, `metal`.
    fn name(&self) -> &'static str;

    /// This instance's id; every handle it makes carries it.
    fn id(&self) -> BackendId;

    /// A line describing the device, for `dcmem info` and bench output.
    fn description(&self) -> String {
        self.name().to_string()
    }

    /// A short name for this device among others (`sim:1`, `cuda:0`), for reports of copies
    /// between devices. The default is the backend's name and instance id (`cpu#3`).
    fn device_label(&self) -> String {
        format!("{}#{}", self.name(), self.id().get())
    }

    /// True when host and device share one memory, so the host can read and write device
    /// allocations directly ([`Backend::host_ptr`]) and no transfer ever copies.
    fn is_unified(&self) -> bool;

    /// Total, free and largest-allocation figures.
    fn memory_info(&self) -> MemoryInfo;

    /// Allocates `size` bytes aligned to `align` (a power of two). Contents are zeroed when
    /// the memory is fresh from the system. Out of memory is [`Error::OutOfMemory`].
    fn allocate(&self, size: usize, align: usize) -> Result<DeviceMemory>;

    /// Releases an allocation, ordered after the work this backend queued on it: copies that
    /// use it may still be in flight (their events incomplete or dropped), and the memory is
    /// not reused before they have finished. What each backend does:
    /// - cpu and sim: every copy is done before the call that enqueued it returns (sim events
    ///   only model the time), so nothing can still use the memory;
    /// - OpenCL: each event holds a reference to the buffers its command uses, and the driver
    ///   deletes a released buffer only once the commands queued on it have finished (OpenCL
    ///   specification, `clReleaseMemObject`);
    /// - CUDA: waits for every stream of the backend (`cuStreamSynchronize`), then `cuMemFree`;
    ///   if waiting fails, the allocation is leaked and the error returned.
    fn free(&self, memory: DeviceMemory) -> Result<()>;

    /// Host address of a unified allocation, valid until it is freed; `None` on discrete
    /// devices.
    fn host_ptr(&self, memory: &DeviceMemory) -> Option<NonNull<u8>>;

    /// Where the host can read and write a device allocation directly: the allocation itself on
    /// a unified backend, or the simulator's stand-in for device memory; `None` on a real
    /// discrete device. Kernels written as host closures run on this memory.
    ///
    /// Implementations promise (as part of the trait's safety contract) that the pointer is
    /// valid for reads and writes of the allocation's whole size until it is freed, and that
    /// the backend itself touches a range of it only inside calls made with that allocation's
    /// handle.
    fn device_ptr_on_host(&self, memory: &DeviceMemory) -> Option<NonNull<u8>> {
        self.host_ptr(memory)
    }

    /// An event that completes once all work enqueued on `queue` so far (by us or by the
    /// user's kernels) has completed: a buffer waits for it after a kernel used its memory.
    /// `Ok(None)` where nothing can still be running when a call returns (cpu, sim).
    fn enqueue_marker(&self, queue: usize) -> Result<Option<Event>> {
        let _ = queue;
        Ok(None)
    }

    /// The backend itself as [`Any`](std::any::Any), for code that knows a concrete backend
    /// type and needs what only that type offers (the OpenCL view accessors reach
    /// `OpenClBackend`'s `cl_mem` objects and queues this way); `None` (the default) where a
    /// backend offers nothing beyond the trait.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// True when this backend can copy directly from allocations of `src`, another device:
    /// CUDA devices with peer access, OpenCL backends on one context, simulated devices of one
    /// group. Where it cannot (the
    /// default), a copy between the two is staged through host memory.
    fn can_copy_from_peer(&self, src: &dyn Backend) -> bool {
        let _ = src;
        false
    }

    /// Copies `len` bytes from `src` (an allocation of `src_backend`, a peer for which
    /// [`Backend::can_copy_from_peer`] is true) at `src_offset` into `dst` at `dst_offset`,
    /// returning when done. Both ranges are checked against their allocations.
    fn copy_from_peer(
        &self,
        src_backend: &dyn Backend,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        let _ = (src_backend, src, src_offset, dst, dst_offset, len);
        Err(Error::Unsupported {
            operation: "Backend::copy_from_peer",
            reason: "this backend cannot reach another device's memory; copy through host memory",
        })
    }

    /// The granularity, in bytes, of [`Backend::map_memory`], where the backend can reserve
    /// address space and back parts of it with memory (CUDA's virtual memory management, the
    /// cpu's `mmap`, the simulator); `None` (the default) where it cannot. Expandable segments
    /// ([`ManagerOptions::expandable_segments`](crate::ManagerOptions::expandable_segments)) need it.
    fn virtual_memory_granularity(&self) -> Option<usize> {
        None
    }

    /// Reserves `size` bytes of address space (a multiple of the granularity) with no memory
    /// behind it. The handle names the whole range; only its mapped parts may be read or written
    /// (the promises of the trait's safety section hold for those parts), and `free` releases
    /// the range with whatever is still mapped in it.
    fn reserve_address_space(&self, size: usize) -> Result<DeviceMemory> {
        let _ = size;
        Err(Error::Unsupported {
            operation: "Backend::reserve_address_space",
            reason: "this backend has no virtual memory",
        })
    }

    /// Backs `offset..offset + len` of a reservation (multiples of the granularity, not mapped
    /// yet) with memory, whose contents are unspecified. Out of memory is [`Error::OutOfMemory`].
    fn map_memory(&self, reservation: &DeviceMemory, offset: usize, len: usize) -> Result<()> {
        let _ = (reservation, offset, len);
        Err(Error::Unsupported { operation: "Backend::map_memory", reason: "this backend has no virtual memory" })
    }

    /// Releases the memory behind `offset..offset + len` of a reservation (a mapped range, that
    /// no queued work still uses); the range stays reserved.
    fn unmap_memory(&self, reservation: &DeviceMemory, offset: usize, len: usize) -> Result<()> {
        let _ = (reservation, offset, len);
        Err(Error::Unsupported { operation: "Backend::unmap_memory", reason: "this backend has no virtual memory" })
    }

    /// Page-locked host memory of `size` bytes for staging transfers, or
    /// [`Error::Unsupported`] where the backend has none (the transfer engine then stages
    /// through pageable memory).
    fn allocate_pinned(&self, size: usize) -> Result<Box<dyn PinnedHost>> {
        let _ = size;
        Err(Error::Unsupported {
            operation: "Backend::allocate_pinned",
            reason: "this backend has no page-locked host memory",
        })
    }

    /// Copies `src` into `dst` at `dst_offset`, returning when done.
    fn write(&self, dst: &DeviceMemory, dst_offset: usize, src: &[u8]) -> Result<()>;

    /// Copies `dst.len()` bytes from `src` at `src_offset` into `dst`, returning when done.
    fn read(&self, src: &DeviceMemory, src_offset: usize, dst: &mut [u8]) -> Result<()>;

    /// Copies `len` bytes between two allocations of this backend (they may be the same
    /// allocation if the ranges do not overlap), returning when done.
    fn copy(
        &self,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<()>;

    /// Sets every byte of `dst[offset..offset + len]` to `value`.
    fn fill(&self, dst: &DeviceMemory, offset: usize, len: usize, value: u8) -> Result<()>;

    /// Number of independent in-order queues (streams). At least 1.
    fn queue_count(&self) -> usize {
        1
    }

    /// Enqueues a host-to-device copy on `queue` (taken modulo `queue_count()`).
    ///
    /// # Safety
    ///
    /// `src` must be valid for reads of `len` bytes, and must not be written, until the
    /// returned event has completed (or this call returned an error). `dst` must not be freed
    /// before then.
    unsafe fn write_async(
        &self,
        queue: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        src: *const u8,
        len: usize,
    ) -> Result<Event> {
        let _ = queue;
        // SAFETY: the caller guarantees `src` is valid for `len` bytes of reads.
        let bytes = unsafe { std::slice::from_raw_parts(src, len) };
        self.write(dst, dst_offset, bytes)?;
        Ok(Box::new(ReadyEvent))
    }

    /// Enqueues a device-to-host copy on `queue`.
    ///
    /// # Safety
    ///
    /// `dst` must be valid for writes of `len` bytes, and must be neither read nor written by
    /// anyone else, until the returned event has completed (or this call returned an error).
    /// `src` must not be freed before then.
    unsafe fn read_async(
        &self,
        queue: usize,
        src: &DeviceMemory,
        src_offset: usize,
        dst: *mut u8,
        len: usize,
    ) -> Result<Event> {
        let _ = queue;
        // SAFETY: the caller guarantees `dst` is valid for `len` bytes of exclusive writes.
        let bytes = unsafe { std::slice::from_raw_parts_mut(dst, len) };
        self.read(src, src_offset, bytes)?;
        Ok(Box::new(ReadyEvent))
    }

    /// Enqueues several host-to-device copies on `queue` as one submission where the backend
    /// can (the default submits them one by one); the returned event completes when all have,
    /// and reports the first failure among them.
    ///
    /// When this returns an error, none of the copies is still running: the default waits for
    /// the copies it already enqueued before it returns the first error in submission order
    /// (an earlier copy's failure, else the failed enqueue).
    ///
    /// # Safety
    ///
    /// As [`Backend::write_async`], for every entry of `writes`.
    unsafe fn write_batch_async(&self, queue: usize, writes: &[BatchWrite<'_>]) -> Result<Event> {
        let mut events = Vec::with_capacity(writes.len());
        for w in writes {
            // SAFETY: forwarded from this function's contract.
            match unsafe { self.write_async(queue, w.dst, w.dst_offset, w.src, w.len) } {
                Ok(event) => events.push(event),
                Err(e) => return Err(wait_all(&events).err().unwrap_or(e)),
            }
        }
        Ok(all_of(events).unwrap_or_else(|| Box::new(ReadyEvent)))
    }

    /// Enqueues a device-to-device copy on `queue`. Safe: both sides are handles the backend
    /// checks, and handles cannot be freed while borrowed here; the caller must still wait for
    /// the event before freeing either allocation.
    fn copy_async(
        &self,
        queue: usize,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<Event> {
        let _ = queue;
        self.copy(src, src_offset, dst, dst_offset, len)?;
        Ok(Box::new(ReadyEvent))
    }

    /// Blocks until all queued work on every queue has finished.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

impl dyn Backend {
    /// This backend as the concrete type `B` (for example `OpenClBackend` or `CudaBackend`,
    /// to reach what only that backend offers), or `None` when it is another backend.
    pub fn downcast_ref<B: Backend>(&self) -> Option<&B> {
        self.as_any()?.downcast_ref::<B>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::sim::{FaultPlan, SimBackend, SimOptions};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// The simulator with the trait's default `write_batch_async` (as OpenCL and CUDA use),
    /// and optionally its own enqueue failure at the `fail_write`-th `write_async` (1-based).
    struct OneByOne {
        sim: SimBackend,
        fail_write: Option<u64>,
        writes: AtomicU64,
    }

    // SAFETY: every method forwards to the simulator, which keeps the trait's promises.
    unsafe impl Backend for OneByOne {
        fn name(&self) -> &'static str {
            self.sim.name()
        }
        fn id(&self) -> BackendId {
            self.sim.id()
        }
        fn is_unified(&self) -> bool {
            self.sim.is_unified()
        }
        fn memory_info(&self) -> MemoryInfo {
            self.sim.memory_info()
        }
        fn allocate(&self, size: usize, align: usize) -> Result<DeviceMemory> {
            self.sim.allocate(size, align)
        }
        fn free(&self, memory: DeviceMemory) -> Result<()> {
            self.sim.free(memory)
        }
        fn host_ptr(&self, memory: &DeviceMemory) -> Option<NonNull<u8>> {
            self.sim.host_ptr(memory)
        }
        fn write(&self, dst: &DeviceMemory, dst_offset: usize, src: &[u8]) -> Result<()> {
            self.sim.write(dst, dst_offset, src)
        }
        fn read(&self, src: &DeviceMemory, src_offset: usize, dst: &mut [u8]) -> Result<()> {
            self.sim.read(src, src_offset, dst)
        }
        fn copy(&self, src: &DeviceMemory, so: usize, dst: &DeviceMemory, d: usize, len: usize) -> Result<()> {
            self.sim.copy(src, so, dst, d, len)
        }
        fn fill(&self, dst: &DeviceMemory, offset: usize, len: usize, value: u8) -> Result<()> {
            self.sim.fill(dst, offset, len, value)
        }
        unsafe fn write_async(
            &self,
            queue: usize,
            dst: &DeviceMemory,
            dst_offset: usize,
            src: *const u8,
            len: usize,
        ) -> Result<Event> {
            let n = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
            if self.fail_write == Some(n) {
                return Err(Error::Unsupported { operation: "write_async", reason: "injected by the test" });
            }
            // SAFETY: forwarded from this function's contract.
            unsafe { self.sim.write_async(queue, dst, dst_offset, src, len) }
        }
    }

    /// A simulator whose copies take 30 ms each.
    fn one_by_one(faults: FaultPlan, fail_write: Option<u64>) -> OneByOne {
        let options = SimOptions { latency: Duration::from_millis(30), faults, ..Default::default() };
        OneByOne { sim: SimBackend::new(options), fail_write, writes: AtomicU64::new(0) }
    }

    /// Four 8-byte writes to `mem` (at 0, 8, 16, 24) from `src`.
    fn batch<'a>(mem: &'a DeviceMemory, src: &[u8; 32]) -> Vec<BatchWrite<'a>> {
        (0..4).map(|i| BatchWrite { dst: mem, dst_offset: i * 8, src: src[i * 8..].as_ptr(), len: 8 }).collect()
    }

    #[test]
    fn a_failed_enqueue_in_a_default_batch_returns_after_the_earlier_copies_finished() {
        // Operation 1 is the allocation; the third write of the batch (operation 4) fails.
        let b = one_by_one(FaultPlan { fail_nth: Some(4), transient: false, ..Default::default() }, None);
        let mem = b.allocate(32, 8).unwrap();
        let src = [7u8; 32];
        // SAFETY: `src` outlives the call, which returns with nothing in flight.
        let err = unsafe { b.write_batch_async(0, &batch(&mem, &src)) }.err().expect("the batch fails");
        assert!(matches!(err, Error::Backend { backend: "sim", operation: "write_async", code: -2, .. }), "{err:?}");
        assert!(b.sim.is_idle(), "the two enqueued copies must be complete when the error returns");
        b.free(mem).unwrap();
    }

    #[test]
    fn a_copy_failing_at_completion_fails_the_default_batch_event() {
        // The second write (operation 3) fails when it completes; the last one succeeds.
        let b = one_by_one(
            FaultPlan { fail_nth: Some(3), on_completion: true, transient: false, ..Default::default() },
            None,
        );
        let mem = b.allocate(32, 8).unwrap();
        let src = [7u8; 32];
        // SAFETY: `src` outlives the event, which is waited for below.
        let event = unsafe { b.write_batch_async(0, &batch(&mem, &src)) }.unwrap();
        assert!(!event.is_complete().unwrap(), "four copies of 30 ms each are still running");
        let err = event.wait().unwrap_err();
        assert!(matches!(err, Error::Backend { operation: "write_async", code: -2, .. }), "{err:?}");
        assert!(b.sim.is_idle(), "the error is reported once the last copy finished");
        assert!(matches!(event.is_complete(), Err(Error::Backend { code: -2, .. })));
        b.free(mem).unwrap();
    }

    #[test]
    fn a_failed_enqueue_after_a_failed_copy_returns_the_copy_error() {
        // The second write fails at completion (sim operation 3), the fourth at enqueue.
        let faults = FaultPlan { fail_nth: Some(3), on_completion: true, transient: false, ..Default::default() };
        let b = one_by_one(faults, Some(4));
        let mem = b.allocate(32, 8).unwrap();
        let src = [7u8; 32];
        // SAFETY: `src` outlives the call, which returns with nothing in flight.
        let err = unsafe { b.write_batch_async(0, &batch(&mem, &src)) }.err().expect("the batch fails");
        assert!(matches!(err, Error::Backend { operation: "write_async", code: -2, .. }), "{err:?}");
        assert!(b.sim.is_idle());
        b.free(mem).unwrap();
    }
}
