//! The `Backend` trait: what a device must offer for buffers, pools and transfers to work on it.
//!
//! A backend owns device memory and queues. Everything above it (buffers, pools, the transfer
//! engine, the manager) is backend-agnostic and talks to it through `Arc<dyn Backend>`.
//!
//! # Memory handles
//!
//! Device memory is named by a [`DeviceMemory`] handle: an opaque number chosen by the backend
//! (a pointer on the CPU, an id in the simulator, a `cl_mem` slot, a `CUdeviceptr`), its size,
//! and the id of the backend instance that made it. Handles are move-only and can only be made
//! with the `unsafe` [`DeviceMemory::from_raw`], so safe code can neither forge one nor free one
//! twice. Every method that takes a handle checks that it belongs to the backend
//! ([`Error::InvalidHandle`] otherwise) and that offsets lie inside it.
//!
//! # Queues and events
//!
//! A backend has `queue_count()` in-order queues (OpenCL command queues, CUDA streams). The
//! `*_async` methods enqueue a copy and return an [`Event`] that completes when the copy has
//! finished; they are `unsafe` because the host memory they read or write must stay valid until
//! then, which the type system cannot see. Events report completion by polling
//! ([`DeviceEvent::is_complete`]), by blocking ([`DeviceEvent::wait`]) or by waking a
//! `Waker` ([`DeviceEvent::on_complete`]), so futures built on them work
//! with any async runtime.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "opencl")]
pub mod opencl;
pub mod region;
mod required;
pub mod sim;

pub use required::{required, variable as required_variable};

use crate::error::{Error, Result};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Waker;

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
    /// value is the allocation's only owner until it is passed to [`Backend::free`].
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

    /// Checks that `offset..offset + len` lies inside this allocation of `backend`.
    pub fn check(&self, backend: &dyn Backend, offset: usize, len: usize) -> Result<()> {
        if self.owner != backend.id() {
            return Err(Error::InvalidHandle {
                backend: backend.name(),
                reason: format!(
                    "handle {:#x} belongs to backend instance {}, not {}",
                    self.handle,
                    self.owner.get(),
                    backend.id().get()
                ),
            });
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::OutOfRange { start: offset, end: offset.saturating_add(len), len: self.size }),
        }
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

/// Page-locked host memory that a backend can transfer to and from directly (DMA), without
/// the intermediate copy a driver makes for pageable memory. Made by
/// [`Backend::allocate_pinned`]; freed (unpinned) on drop.
pub trait PinnedHost: Send + Sync {
    /// The bytes.
    fn bytes(&self) -> &[u8];
    /// The bytes, mutably.
    fn bytes_mut(&mut self) -> &mut [u8];
}

impl std::fmt::Debug for dyn PinnedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedHost").field("len", &self.bytes().len()).finish()
    }
}

/// One host-to-device copy of a [`Backend::write_batch_async`] submission.
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

/// Completion of enqueued work.
pub trait DeviceEvent: Send + Sync {
    /// True once the work has finished; an error if it failed.
    fn is_complete(&self) -> Result<bool>;
    /// Blocks until the work has finished.
    fn wait(&self) -> Result<()>;
    /// Arranges for `waker` to be woken once the work has finished (possibly immediately).
    fn on_complete(&self, waker: Waker);
}

/// A boxed event as returned by the `*_async` methods.
pub type Event = Box<dyn DeviceEvent>;

/// An event that is complete from the start, for backends whose copies finish inline.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadyEvent;

impl DeviceEvent for ReadyEvent {
    fn is_complete(&self) -> Result<bool> {
        Ok(true)
    }
    fn wait(&self) -> Result<()> {
        Ok(())
    }
    fn on_complete(&self, waker: Waker) {
        waker.wake();
    }
}

/// Waits for every event, returning the first error among them.
fn wait_all(events: &[Event]) -> Result<()> {
    let mut first = Ok(());
    for event in events {
        if let Err(e) = event.wait() {
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}

/// Several events as one: complete when all are, failed with the first failure (reported only
/// once every event has finished, so a caller that sees the error may reuse the memory). Used
/// for the copies of one batch and for a kernel's marker together with the completion events
/// a user handed over; the events may be of different queues.
struct EventSet(Vec<Event>);

/// `events` as one event (see `EventSet`); `None` when there are none.
pub(crate) fn all_of(mut events: Vec<Event>) -> Option<Event> {
    match events.len() {
        0 => None,
        1 => events.pop(),
        _ => Some(Box::new(EventSet(events))),
    }
}

impl DeviceEvent for EventSet {
    fn is_complete(&self) -> Result<bool> {
        let mut first = Ok(true);
        for event in &self.0 {
            match event.is_complete() {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                Err(e) => {
                    if first.is_ok() {
                        first = Err(e);
                    }
                }
            }
        }
        first
    }

    fn wait(&self) -> Result<()> {
        wait_all(&self.0)
    }

    fn on_complete(&self, waker: Waker) {
        // Registered with the first event still running: when it wakes the task, polling asks
        // again and registers with the next one, so no ordering between the events is assumed
        // (on one in-order queue the first running event is usually the only one left).
        match self.0.iter().find(|e| !matches!(e.is_complete(), Ok(true))) {
            Some(event) => event.on_complete(waker),
            None => waker.wake(),
        }
    }
}

/// A compute device's memory system.
///
/// Implementations must be thread-safe: the manager calls them from any thread.
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

/// The names `MemoryManager::from_env` accepts, in the order `dcmem info` lists them.
pub const BACKEND_NAMES: &[&str] = &["cpu", "sim", "opencl", "cuda", "metal"];

/// Why a backend that is not compiled in cannot be used.
#[cfg_attr(all(feature = "opencl", feature = "cuda"), allow(dead_code))]
pub(crate) fn not_compiled(name: &str, feature: &str) -> Error {
    Error::BackendUnavailable {
        backend: name.to_string(),
        reason: format!("this build does not include it; rebuild with `--features {feature}` (or `--all-features`)"),
    }
}

/// Opens the backend called `name` with its default settings.
///
/// Unknown names are [`Error::UnknownBackend`] (listing the valid ones); known backends that
/// are compiled out or have no driver/device are [`Error::BackendUnavailable`] with the reason.
pub fn open(name: &str) -> Result<std::sync::Arc<dyn Backend>> {
    let lower = name.trim().to_ascii_lowercase();
    match lower.as_str() {
        "cpu" => Ok(std::sync::Arc::new(cpu::CpuBackend::new())),
        "sim" => Ok(std::sync::Arc::new(sim::SimBackend::new(sim::SimOptions::default()))),
        #[cfg(feature = "opencl")]
        "opencl" => Ok(std::sync::Arc::new(opencl::OpenClBackend::new()?)),
        #[cfg(not(feature = "opencl"))]
        "opencl" => Err(not_compiled("opencl", "opencl")),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(std::sync::Arc::new(cuda::CudaBackend::from_env()?)),
        #[cfg(not(feature = "cuda"))]
        "cuda" => Err(not_compiled("cuda", "cuda")),
        "metal" => Err(Error::BackendUnavailable {
            backend: "metal".into(),
            reason: if cfg!(target_os = "macos") {
                "the Metal backend is not implemented yet".into()
            } else {
                "Metal exists only on Apple platforms".into()
            },
        }),
        _ => Err(Error::UnknownBackend { name: name.to_string(), valid: BACKEND_NAMES.join(", ") }),
    }
}

/// One line per known backend: its name and either its description or why it is unavailable.
pub fn probe_all() -> Vec<(&'static str, Result<String>)> {
    BACKEND_NAMES.iter().map(|&n| (n, open(n).map(|b| b.description()))).collect()
}

#[cfg(test)]
mod tests {
    use super::sim::{FaultPlan, SimBackend, SimOptions};
    use super::*;
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
