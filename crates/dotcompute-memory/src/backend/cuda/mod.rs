//! The CUDA backend (feature `cuda`), on the driver API through `cudarc` with dynamic loading.
//!
//! `libcuda` is loaded at run time, so the crate builds and its tests run on machines without
//! CUDA; there `CudaBackend::new` returns [`Error::BackendUnavailable`] with the loader's
//! reason. cudarc's safe `CudaContext::new` panics when the library is missing, so this module
//! checks `is_culib_present()` first and otherwise uses only the `result`/`sys` layers.
//!
//! Device memory comes from `cuMemAlloc` (the manager's caching allocator keeps it for reuse);
//! each queue is a non-blocking stream; asynchronous copies record an event on their stream,
//! and wakers are woken by a host function enqueued on the same stream, so nothing polls.
//!
//! The synchronous operations (`write`, `read`, `copy`, `fill`) are enqueued on the first
//! stream, the one device views hand to kernels, and waited for: so they run after the kernels
//! enqueued there before them, and have finished, device side included, when they return.
//!
//! The primary context and the streams live in one [`Arc`]'d `Context` shared by the backend
//! and every event and pinned buffer it made, so those may outlive the backend: the last of
//! them to drop waits for the streams, destroys them and releases the context. A backend made
//! by [`CudaBackend::from_stream`] uses the caller's context and stream instead: it holds the
//! caller's `Arc<CudaStream>` (which holds its context) and destroys neither. Every driver
//! call makes the context current on the calling thread for its duration only, and then makes
//! the thread's previous context current again.
//!
//! Kernels: a device view's [`cuda`](crate::DeviceView::cuda) gives the device pointer (offset
//! included), its length and the stream to launch on; when the view drops,
//! [`Backend::enqueue_marker`] records an event on that stream, and the buffer waits for it
//! before its memory is next used. Kernels on the caller's own streams are ordered with
//! [`DeviceView::cuda_stream_wait`](crate::DeviceView::cuda_stream_wait) and
//! [`DeviceView::cuda_kernel_done`](crate::DeviceView::cuda_kernel_done).
//!
//! Device selection: `DCMEM_CUDA_DEVICE` (ordinal, default 0).

use super::{Backend, BackendId, DeviceEvent, DeviceMemory, Event, MemoryInfo};
use crate::error::{Error, Result};
use cudarc::driver::result::{self as cu, DriverError};
use cudarc::driver::sys;
use cudarc::driver::{CudaEvent as CallerEvent, CudaStream};
use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::task::Waker;

mod context;
mod event;
mod peer;
mod pinned;
mod virtual_memory;

use context::{Bound, Context};
use event::CudaEvent;
use pinned::CudaPinned;

/// The `cudarc` crate this backend is built on, for callers' contexts, streams, events and
/// kernel launches ([`CudaBackend::from_stream`], the views' CUDA accessors) of the same version.
pub use cudarc;

/// Streams per device.
const STREAMS: usize = 2;

/// A CUDA device's memory and streams.
///
/// The driver is loaded when the backend opens, so a program built with the `cuda` feature
/// runs anywhere and falls back where there is no GPU:
///
/// ```
/// use dotcompute_memory::{CudaBackend, ManagerOptions, MemoryManager};
///
/// # fn main() -> dotcompute_memory::Result<()> {
/// let mm = match CudaBackend::new(0) {
///     Ok(backend) => MemoryManager::with_backend(backend, ManagerOptions::default())?,
///     Err(e) => {
///         eprintln!("{e}; using the CPU");
///         MemoryManager::cpu()
///     }
/// };
/// let mut buf = mm.allocate_from(&[7u8; 4096])?;
/// buf.ensure_on_device()?;
/// assert_eq!(buf.to_vec()?, vec![7u8; 4096]);
/// # Ok(())
/// # }
/// ```
pub struct CudaBackend {
    id: BackendId,
    ordinal: usize,
    context: Arc<Context>,
    name: String,
    total: usize,
    driver_version: i32,
    /// Live allocations (device pointer -> size), to reject handles we did not make.
    live: Mutex<HashMap<u64, usize>>,
    /// Whether this device reaches each other device directly, once asked (see `peer.rs`).
    peers: Mutex<HashMap<sys::CUdevice, bool>>,
    /// Reserved address ranges by base address (see `virtual_memory.rs`).
    reservations: Mutex<HashMap<u64, virtual_memory::Reservation>>,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend").field("ordinal", &self.ordinal).field("name", &self.name).finish()
    }
}

fn unavailable(reason: impl Into<String>) -> Error {
    Error::BackendUnavailable { backend: "cuda".into(), reason: reason.into() }
}

/// Maps a driver error to `Error::Backend` with the CUresult's name.
fn driver(operation: &'static str, e: DriverError) -> Error {
    let name = e.error_name().map(|c| c.to_string_lossy().into_owned()).unwrap_or_else(|_| format!("{:?}", e.0));
    let transient = matches!(e.0, sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY | sys::CUresult::CUDA_ERROR_LAUNCH_TIMEOUT);
    Error::Backend { backend: "cuda", operation, code: e.0 as i64, message: name, transient }
}

impl CudaBackend {
    /// Opens the device named by `DCMEM_CUDA_DEVICE` (default 0).
    pub fn from_env() -> Result<Self> {
        const EXPECTED: &str = "must be a device ordinal such as 0";
        let ordinal = match crate::environment::var("DCMEM_CUDA_DEVICE", EXPECTED)? {
            Some(v) => v.trim().parse::<usize>().map_err(|_| Error::InvalidArgument {
                option: "DCMEM_CUDA_DEVICE",
                value: v.clone(),
                reason: EXPECTED,
            })?,
            None => 0,
        };
        Self::new(ordinal)
    }

    /// Opens device `ordinal`.
    pub fn new(ordinal: usize) -> Result<Self> {
        let count = Self::device_count()?;
        if count == 0 {
            return Err(unavailable("the driver reports no CUDA devices"));
        }
        if ordinal >= count {
            return Err(Error::InvalidArgument {
                option: "DCMEM_CUDA_DEVICE",
                value: format!("{ordinal} (this machine has {count} CUDA device(s): 0..{})", count - 1),
                reason: "device ordinal out of range",
            });
        }
        let device = cu::device::get(ordinal as i32).map_err(|e| driver("cuDeviceGet", e))?;
        // SAFETY: `device` came from cuDeviceGet.
        let ctx = unsafe { cu::primary_ctx::retain(device) }.map_err(|e| driver("cuDevicePrimaryCtxRetain", e))?;
        // From here on an early return drops `context`, which destroys the streams made so far
        // and releases the context.
        let mut context = Context { device, ctx, streams: Vec::with_capacity(STREAMS), caller: None };
        {
            let _bound = context.bind()?;
            for _ in 0..STREAMS {
                let stream =
                    cu::stream::create(cu::stream::StreamKind::NonBlocking).map_err(|e| driver("cuStreamCreate", e))?;
                context.streams.push(stream);
            }
        }
        Ok(Self::with_context(ordinal, context))
    }

    /// A backend on the caller's `cudarc` stream and its context (for `CudaContext::new`, the
    /// device's primary context, which [`CudaBackend::new`] uses too): its one queue is that
    /// stream, so kernels the caller enqueues there are ordered with this backend's copies
    /// without further calls. The backend, and the events and pinned buffers it makes, hold
    /// `stream` (an `Arc`, which holds the context) while they live and never destroy the
    /// stream or the context. Like every call of this backend, this one leaves the calling
    /// thread's current context as it found it; it fails with the driver's error if the
    /// context cannot be made current.
    pub fn from_stream(stream: Arc<CudaStream>) -> Result<Self> {
        let caller = stream.context();
        let (device, ctx, ordinal) = (caller.cu_device(), caller.cu_ctx(), caller.ordinal());
        let context = Context { device, ctx, streams: vec![stream.cu_stream()], caller: Some(stream) };
        drop(context.bind()?);
        Ok(Self::with_context(ordinal, context))
    }

    fn with_context(ordinal: usize, context: Context) -> Self {
        let device = context.device;
        let name = cu::device::get_name(device).unwrap_or_else(|_| "unknown CUDA device".into());
        // SAFETY: `device` came from cuDeviceGet or from a live cudarc context.
        let total = unsafe { cu::device::total_mem(device) }.unwrap_or(0);
        let mut driver_version = 0i32;
        // SAFETY: writes one int.
        let _ = unsafe { sys::cuDriverGetVersion(&mut driver_version) };
        CudaBackend {
            id: BackendId::next(),
            ordinal,
            context: Arc::new(context),
            name,
            total,
            driver_version,
            live: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            reservations: Mutex::new(HashMap::new()),
        }
    }

    /// The device address of `offset..offset + len` in `memory`, which must be an allocation
    /// of this backend ([`Error::InvalidHandle`] otherwise) holding that range
    /// ([`Error::OutOfRange`] otherwise).
    pub fn device_ptr(&self, memory: &DeviceMemory, offset: usize, len: usize) -> Result<sys::CUdeviceptr> {
        memory.check(self, offset, len)?;
        Ok(memory.handle() + offset as u64)
    }

    fn stream(&self, queue: usize) -> sys::CUstream {
        let streams = &self.context.streams;
        streams[queue % streams.len()]
    }

    /// The stream of `queue` (taken modulo [`Backend::queue_count`]); queue 0's is the one
    /// device views hand to kernels. It stays valid while the backend, or an event or pinned
    /// buffer it made, lives.
    pub fn cu_stream(&self, queue: usize) -> sys::CUstream {
        self.stream(queue)
    }

    /// The context the backend's memory and streams belong to: the device's primary context,
    /// or the caller's for [`CudaBackend::from_stream`].
    pub fn cu_context(&self) -> sys::CUcontext {
        self.context.ctx
    }

    /// The device's ordinal, as `CudaContext::new` takes it.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Driver version as reported by `cuDriverGetVersion` (e.g. 12080).
    pub fn driver_version(&self) -> i32 {
        self.driver_version
    }

    /// Whether `queue`'s stream is being captured into a graph (or a capture on it was
    /// invalidated): work enqueued there now is recorded, not run, so there is nothing to wait
    /// for, and an event recorded there could not be queried.
    fn capturing(&self, queue: usize, _bound: &Bound) -> Result<bool> {
        // SAFETY: one of the backend's streams, live while `self.context` is; `_bound` shows
        // that its context is current.
        let status =
            unsafe { cu::stream::is_capturing(self.stream(queue)) }.map_err(|e| driver("cuStreamIsCapturing", e))?;
        Ok(status != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE)
    }

    /// Records an event on `queue`'s stream after the work enqueued there so far; `_bound`
    /// shows that the context is current.
    fn record(&self, queue: usize, _bound: &Bound) -> Result<Event> {
        let stream = self.stream(queue);
        let event =
            cu::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING).map_err(|e| driver("cuEventCreate", e))?;
        // SAFETY: `event` was just created, `stream` is one of ours.
        if let Err(e) = unsafe { cu::event::record(event, stream) } {
            // SAFETY: created above, never recorded.
            let _ = unsafe { cu::event::destroy(event) };
            return Err(driver("cuEventRecord", e));
        }
        Ok(Box::new(CudaEvent { event, stream, context: self.context.clone() }))
    }

    /// Makes work enqueued on `stream` from now on wait until the work enqueued on `queue`'s
    /// stream so far has finished (`cuEventRecord` there, `cuStreamWaitEvent` on `stream`).
    /// Nothing is recorded while `queue`'s stream is being captured into a graph: its work
    /// does not run now, and waiting on it would pull `stream` into the capture.
    pub fn stream_wait_for_queue(&self, stream: &CudaStream, queue: usize) -> Result<()> {
        // SAFETY: the borrow keeps the caller's stream alive for the call.
        unsafe { self.raw_stream_wait_for_queue(stream.cu_stream(), queue) }
    }

    /// [`CudaBackend::stream_wait_for_queue`] for a raw `CUstream`, such as a DLPack
    /// consumer's (the special handles `CU_STREAM_LEGACY` (1) and `CU_STREAM_PER_THREAD` (2)
    /// included).
    ///
    /// # Safety
    ///
    /// `stream` must be a live stream, or one of the special handles, for the whole call.
    pub unsafe fn raw_stream_wait_for_queue(&self, stream: sys::CUstream, queue: usize) -> Result<()> {
        let bound = self.context.bind()?;
        if self.capturing(queue, &bound)? {
            return Ok(());
        }
        let event =
            cu::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING).map_err(|e| driver("cuEventCreate", e))?;
        // SAFETY: `event` was just created, the stream is one of ours, and the caller's stream
        // is live (this function's contract); an event may be waited on from another context.
        // Destroying the event right after is allowed: the driver releases it once it has
        // completed, and the wait enqueued on it stays in effect.
        let result = unsafe {
            cu::event::record(event, self.stream(queue)).map_err(|e| driver("cuEventRecord", e)).and_then(|()| {
                cu::stream::wait_event(stream, event, sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT)
                    .map_err(|e| driver("cuStreamWaitEvent", e))
            })
        };
        // SAFETY: created above and destroyed once; see above for destroying it while in use.
        let _ = unsafe { cu::event::destroy(event) };
        result
    }

    /// Makes work enqueued on `queue`'s stream from now on wait for the work recorded in the
    /// caller's `event` (`cuStreamWaitEvent`): for a kernel on the caller's stream, so what
    /// this backend enqueues or records on `queue` afterwards comes after it.
    pub fn queue_wait_for_event(&self, queue: usize, event: &CallerEvent) -> Result<()> {
        let _bound = self.context.bind()?;
        // SAFETY: our stream, and the caller's event kept alive by the borrow; an event may be
        // waited on from another context.
        unsafe {
            cu::stream::wait_event(self.stream(queue), event.cu_event(), sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT)
        }
        .map_err(|e| driver("cuStreamWaitEvent", e))
    }

    /// Runs `op` on queue 0's stream (the one kernels on device views use) and waits for that
    /// stream, so the operation runs after the work enqueued there before it and has finished,
    /// device side included, when this returns. Refused while the stream is being captured.
    /// Waits for every stream of this backend (its context must be current).
    fn synchronize_streams(&self) -> Result<()> {
        for &s in &self.context.streams {
            // SAFETY: one of our streams, live as long as `self.context`.
            unsafe { cu::stream::synchronize(s) }.map_err(|e| driver("cuStreamSynchronize", e))?;
        }
        Ok(())
    }

    fn on_first_stream(
        &self,
        operation: &'static str,
        op: impl FnOnce(sys::CUstream) -> std::result::Result<(), DriverError>,
    ) -> Result<()> {
        let bound = self.context.bind()?;
        let stream = self.copy_stream(0, operation, &bound)?;
        op(stream).map_err(|e| driver(operation, e))?;
        // SAFETY: one of the backend's streams, live while `self.context` is.
        unsafe { cu::stream::synchronize(stream) }.map_err(|e| driver("cuStreamSynchronize", e))
    }

    /// `queue`'s stream, for a copy: refused ([`Error::Unsupported`]) while the stream is being
    /// captured into a graph, where the copy would not run now but be recorded into the
    /// caller's graph with host addresses that are not the caller's to keep.
    fn copy_stream(&self, queue: usize, operation: &'static str, bound: &Bound) -> Result<sys::CUstream> {
        if self.capturing(queue, bound)? {
            return Err(Error::Unsupported {
                operation,
                reason: "the backend's CUDA stream is being captured into a graph; end the capture first",
            });
        }
        Ok(self.stream(queue))
    }
}

// SAFETY: allocations are tracked per instance and checked on every call; `host_ptr` and
// events follow the trait's contract (see the module docs and each method).
unsafe impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn id(&self) -> BackendId {
        self.id
    }

    fn device_label(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }

    fn virtual_memory_granularity(&self) -> Option<usize> {
        self.mapping_granularity()
    }

    fn reserve_address_space(&self, size: usize) -> Result<DeviceMemory> {
        self.reserve_range(size)
    }

    fn map_memory(&self, reservation: &DeviceMemory, offset: usize, len: usize) -> Result<()> {
        self.map_range(reservation, offset, len)
    }

    fn unmap_memory(&self, reservation: &DeviceMemory, offset: usize, len: usize) -> Result<()> {
        self.unmap_range(reservation, offset, len)
    }

    fn can_copy_from_peer(&self, src: &dyn Backend) -> bool {
        src.downcast_ref::<CudaBackend>().is_some_and(|peer| self.reaches(peer))
    }

    fn copy_from_peer(
        &self,
        src_backend: &dyn Backend,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        self.copy_from_peer_device(src_backend, src, src_offset, dst, dst_offset, len)
    }

    fn description(&self) -> String {
        format!(
            "{} (device {}), {:.1} GiB, driver {}.{}",
            self.name,
            self.ordinal,
            self.total as f64 / (1u64 << 30) as f64,
            self.driver_version / 1000,
            (self.driver_version % 1000) / 10
        )
    }

    fn is_unified(&self) -> bool {
        false
    }

    fn memory_info(&self) -> MemoryInfo {
        let info = match self.context.bind() {
            Ok(_bound) => cu::mem_get_info().ok(),
            Err(_) => None,
        };
        let (free, total) = info.unwrap_or((0, self.total));
        MemoryInfo { total: total as u64, free: free as u64, max_allocation: total as u64 }
    }

    fn allocate(&self, size: usize, _align: usize) -> Result<DeviceMemory> {
        let _bound = self.context.bind()?;
        // cuMemAlloc aligns to at least 256 bytes, which covers every alignment we ask for.
        // SAFETY: plain allocation; the pointer is owned by the returned handle.
        let ptr = match unsafe { cu::malloc_sync(size.max(1)) } {
            Ok(p) => p,
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                let free = cu::mem_get_info().map(|(f, _)| f as u64).unwrap_or(0);
                return Err(Error::allocator_out_of_memory("cuda", size as u64, free));
            }
            Err(e) => return Err(driver("cuMemAlloc", e)),
        };
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(ptr, size);
        // SAFETY: `ptr` is a live allocation of at least `size` bytes on this device, returned
        // once, so the handle is its only owner.
        Ok(unsafe { DeviceMemory::from_raw(self.id, ptr, size) })
    }

    fn free(&self, memory: DeviceMemory) -> Result<()> {
        memory.check(self, 0, 0)?;
        if let Some(r) = self.free_reservation(&memory) {
            return r;
        }
        if self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(&memory.handle()).is_none() {
            return Err(Error::InvalidHandle {
                backend: "cuda",
                reason: format!("no live allocation at {:#x}", memory.handle()),
            });
        }
        let _bound = self.context.bind()?;
        // Stream-ordered: copies still queued on our streams may use the allocation, so wait for
        // them. If waiting fails the allocation is leaked rather than freed under a copy.
        self.synchronize_streams()?;
        // SAFETY: the pointer came from cuMemAlloc and was live (removed from the table just now,
        // so it cannot be freed twice), and nothing queued by this backend uses it any more.
        unsafe { cu::free_sync(memory.handle()) }.map_err(|e| driver("cuMemFree", e))
    }

    fn allocate_pinned(&self, size: usize) -> Result<Box<dyn super::PinnedHost>> {
        let _bound = self.context.bind()?;
        // Flag 0 (not CU_MEMHOSTALLOC_WRITECOMBINED, which makes host reads slow).
        // SAFETY: a plain page-locked allocation; freed in CudaPinned::drop.
        let ptr = unsafe { cu::malloc_host(size.max(1), 0) }.map_err(|e| match e.0 {
            sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => Error::allocator_out_of_memory("cuda", size as u64, 0),
            _ => driver("cuMemHostAlloc", e),
        })?;
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| driver("cuMemHostAlloc", DriverError(sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY)))?;
        // SAFETY: cuMemHostAlloc returns uninitialised memory; zero it once so every byte is
        // initialised before it is exposed as &[u8].
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, size) };
        Ok(Box::new(CudaPinned { ptr, len: size, context: self.context.clone() }))
    }

    fn host_ptr(&self, _memory: &DeviceMemory) -> Option<NonNull<u8>> {
        None
    }

    fn write(&self, dst: &DeviceMemory, dst_offset: usize, src: &[u8]) -> Result<()> {
        let p = self.device_ptr(dst, dst_offset, src.len())?;
        // SAFETY: the range lies inside a live allocation (checked), and `src` outlives the
        // copy: `on_first_stream` returns only after waiting for the stream (an error from that
        // wait leaves a failed context, in which nothing runs any more).
        self.on_first_stream("cuMemcpyHtoDAsync", |s| unsafe { cu::memcpy_htod_async(p, src, s) })
    }

    fn read(&self, src: &DeviceMemory, src_offset: usize, dst: &mut [u8]) -> Result<()> {
        let p = self.device_ptr(src, src_offset, dst.len())?;
        // SAFETY: the range lies inside a live allocation (checked), and `dst` is borrowed
        // exclusively until `on_first_stream` has waited for the stream (see `write`).
        self.on_first_stream("cuMemcpyDtoHAsync", |s| unsafe { cu::memcpy_dtoh_async(dst, p, s) })
    }

    fn copy(
        &self,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        let s = self.device_ptr(src, src_offset, len)?;
        let d = self.device_ptr(dst, dst_offset, len)?;
        // SAFETY: both ranges lie inside live allocations (checked), borrowed until
        // `on_first_stream` has waited for the stream (see `write`).
        self.on_first_stream("cuMemcpyDtoDAsync", |q| unsafe { cu::memcpy_dtod_async(d, s, len, q) })
    }

    fn fill(&self, dst: &DeviceMemory, offset: usize, len: usize, value: u8) -> Result<()> {
        let d = self.device_ptr(dst, offset, len)?;
        // SAFETY: the range lies inside a live allocation (checked), borrowed until
        // `on_first_stream` has waited for the stream (see `write`).
        self.on_first_stream("cuMemsetD8Async", |q| unsafe { cu::memset_d8_async(d, value, len, q) })
    }

    fn queue_count(&self) -> usize {
        self.context.streams.len()
    }

    /// Records an event on `queue`'s stream (`cuEventRecord`), which completes once the work
    /// enqueued there so far, kernels included, has. While the stream is being captured into a
    /// graph nothing runs now and an event recorded there could not be waited for, so this
    /// returns `Ok(None)`: ordering the graph's launches is the caller's, e.g. through
    /// [`DeviceView::cuda_kernel_done`](crate::DeviceView::cuda_kernel_done) or by
    /// synchronising before the buffer's next use.
    fn enqueue_marker(&self, queue: usize) -> Result<Option<Event>> {
        let bound = self.context.bind()?;
        if self.capturing(queue, &bound)? {
            return Ok(None);
        }
        self.record(queue, &bound).map(Some)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    unsafe fn write_async(
        &self,
        queue: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        src: *const u8,
        len: usize,
    ) -> Result<Event> {
        let p = self.device_ptr(dst, dst_offset, len)?;
        let bound = self.context.bind()?;
        let stream = self.copy_stream(queue, "cuMemcpyHtoDAsync", &bound)?;
        // SAFETY: the caller keeps `src` valid and unwritten for `len` bytes until the event
        // completes; the device range was checked.
        unsafe { sys::cuMemcpyHtoDAsync_v2(p, src as *const c_void, len, stream) }
            .result()
            .map_err(|e| driver("cuMemcpyHtoDAsync", e))?;
        self.record(queue, &bound)
    }

    unsafe fn read_async(
        &self,
        queue: usize,
        src: &DeviceMemory,
        src_offset: usize,
        dst: *mut u8,
        len: usize,
    ) -> Result<Event> {
        let p = self.device_ptr(src, src_offset, len)?;
        let bound = self.context.bind()?;
        let stream = self.copy_stream(queue, "cuMemcpyDtoHAsync", &bound)?;
        // SAFETY: the caller keeps `dst` valid and exclusively ours for `len` bytes until the
        // event completes; the device range was checked.
        unsafe { sys::cuMemcpyDtoHAsync_v2(dst as *mut c_void, p, len, stream) }
            .result()
            .map_err(|e| driver("cuMemcpyDtoHAsync", e))?;
        self.record(queue, &bound)
    }

    fn copy_async(
        &self,
        queue: usize,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<Event> {
        let s = self.device_ptr(src, src_offset, len)?;
        let d = self.device_ptr(dst, dst_offset, len)?;
        let bound = self.context.bind()?;
        let stream = self.copy_stream(queue, "cuMemcpyDtoDAsync", &bound)?;
        // SAFETY: both ranges lie inside live allocations (checked); callers wait for the event
        // before freeing either.
        unsafe { cu::memcpy_dtod_async(d, s, len, stream) }.map_err(|e| driver("cuMemcpyDtoDAsync", e))?;
        self.record(queue, &bound)
    }

    fn synchronize(&self) -> Result<()> {
        let _bound = self.context.bind()?;
        cu::ctx::synchronize().map_err(|e| driver("cuCtxSynchronize", e))
    }
}
