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
//! The primary context and the streams live in one [`Arc`]'d `Context` shared by the backend
//! and every event and pinned buffer it made, so those may outlive the backend: the last of
//! them to drop waits for the streams, destroys them and releases the context. Every driver
//! call makes the context current on the calling thread for its duration only, and then makes
//! the thread's previous context current again.
//!
//! Device selection: `DCMEM_CUDA_DEVICE` (ordinal, default 0).

use super::{Backend, BackendId, DeviceEvent, DeviceMemory, Event, MemoryInfo};
use crate::error::{Error, Result};
use cudarc::driver::result::{self as cu, DriverError};
use cudarc::driver::sys;
use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::task::Waker;

/// Streams per device.
const STREAMS: usize = 2;

/// The retained primary context of a device and the backend's streams on it, shared by the
/// backend and everything it made that uses them; the last owner to drop tears them down.
struct Context {
    device: sys::CUdevice,
    ctx: sys::CUcontext,
    streams: Vec<sys::CUstream>,
}

// SAFETY: CUDA driver handles may be used from any thread (the driver API is thread-safe);
// every call makes the context current on the calling thread first (`bind`).
unsafe impl Send for Context {}
// SAFETY: as above; the handles are never changed after construction, only passed to the driver.
unsafe impl Sync for Context {}

impl Context {
    /// Makes this context current on the calling thread until the returned guard drops.
    fn bind(&self) -> Result<Bound> {
        let current = cu::ctx::get_current().map_err(|e| driver("cuCtxGetCurrent", e))?;
        if current == Some(self.ctx) {
            return Ok(Bound { previous: None });
        }
        // SAFETY: `ctx` is the primary context retained in `CudaBackend::new` and released only
        // when this `Context` drops, so it is live here.
        unsafe { cu::ctx::set_current(self.ctx) }.map_err(|e| driver("cuCtxSetCurrent", e))?;
        Ok(Bound { previous: Some(current.unwrap_or(std::ptr::null_mut())) })
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Ok(_bound) = self.bind() {
            for &s in &self.streams {
                // SAFETY: our streams, destroyed only here. Waiting first means no copy or host
                // function enqueued on a stream is left when it is destroyed.
                unsafe {
                    let _ = cu::stream::synchronize(s);
                    let _ = cu::stream::destroy(s);
                }
            }
        }
        // SAFETY: balanced with the retain in `CudaBackend::new`; this was the context's last
        // owner, so nothing uses it any more.
        let _ = unsafe { cu::primary_ctx::release(self.device) };
    }
}

/// Keeps a context current on the calling thread; on drop the thread's previous context (or
/// none) is current again. Not `Send`: it restores the state of the thread that made it.
struct Bound {
    /// What to make current again (null: no context), or `None` when nothing was changed.
    previous: Option<sys::CUcontext>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(previous) = self.previous {
            // SAFETY: `previous` was current on this thread when the guard was made (null
            // unbinds); only this module's driver calls on its own context ran since.
            let _ = unsafe { cu::ctx::set_current(previous) };
        }
    }
}

/// A CUDA device's memory and streams.
pub struct CudaBackend {
    id: BackendId,
    ordinal: usize,
    context: Arc<Context>,
    name: String,
    total: usize,
    driver_version: i32,
    /// Live allocations (device pointer -> size), to reject handles we did not make.
    live: Mutex<HashMap<u64, usize>>,
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
        // SAFETY: only tries to dlopen the driver library by its usual names.
        if !unsafe { sys::is_culib_present() } {
            return Err(unavailable(
                "the NVIDIA driver library (libcuda.so) was not found: install the NVIDIA driver on a machine with an NVIDIA GPU",
            ));
        }
        cu::init().map_err(|e| {
            unavailable(format!("cuInit failed ({e:?}): the driver is present but no usable GPU was found"))
        })?;
        let count = cu::device::get_count().map_err(|e| driver("cuDeviceGetCount", e))?;
        if count <= 0 {
            return Err(unavailable("the driver reports no CUDA devices"));
        }
        if ordinal >= count as usize {
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
        let mut context = Context { device, ctx, streams: Vec::with_capacity(STREAMS) };
        {
            let _bound = context.bind()?;
            for _ in 0..STREAMS {
                let stream =
                    cu::stream::create(cu::stream::StreamKind::NonBlocking).map_err(|e| driver("cuStreamCreate", e))?;
                context.streams.push(stream);
            }
        }
        let name = cu::device::get_name(device).unwrap_or_else(|_| "unknown CUDA device".into());
        // SAFETY: `device` came from cuDeviceGet.
        let total = unsafe { cu::device::total_mem(device) }.unwrap_or(0);
        let mut driver_version = 0i32;
        // SAFETY: writes one int.
        let _ = unsafe { sys::cuDriverGetVersion(&mut driver_version) };
        Ok(CudaBackend {
            id: BackendId::next(),
            ordinal,
            context: Arc::new(context),
            name,
            total,
            driver_version,
            live: Mutex::new(HashMap::new()),
        })
    }

    fn ptr(&self, memory: &DeviceMemory, offset: usize, len: usize) -> Result<sys::CUdeviceptr> {
        memory.check(self, offset, len)?;
        Ok(memory.handle() + offset as u64)
    }

    fn stream(&self, queue: usize) -> sys::CUstream {
        let streams = &self.context.streams;
        streams[queue % streams.len()]
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

    /// Driver version as reported by `cuDriverGetVersion` (e.g. 12080).
    pub fn driver_version(&self) -> i32 {
        self.driver_version
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
                return Err(Error::OutOfMemory {
                    backend: "cuda",
                    requested: size as u64,
                    rounded: size as u64,
                    free,
                    cached: 0,
                    largest_free_block: 0,
                });
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
        if self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(&memory.handle()).is_none() {
            return Err(Error::InvalidHandle {
                backend: "cuda",
                reason: format!("no live allocation at {:#x}", memory.handle()),
            });
        }
        let _bound = self.context.bind()?;
        // Stream-ordered: copies still queued on our streams may use the allocation, so wait for
        // them. If waiting fails the allocation is leaked rather than freed under a copy.
        for &s in &self.context.streams {
            // SAFETY: one of our streams, live as long as `self.context`.
            unsafe { cu::stream::synchronize(s) }.map_err(|e| driver("cuStreamSynchronize", e))?;
        }
        // SAFETY: the pointer came from cuMemAlloc and was live (removed from the table just now,
        // so it cannot be freed twice), and nothing queued by this backend uses it any more.
        unsafe { cu::free_sync(memory.handle()) }.map_err(|e| driver("cuMemFree", e))
    }

    fn allocate_pinned(&self, size: usize) -> Result<Box<dyn super::PinnedHost>> {
        let _bound = self.context.bind()?;
        // Flag 0 (not CU_MEMHOSTALLOC_WRITECOMBINED, which makes host reads slow).
        // SAFETY: a plain page-locked allocation; freed in CudaPinned::drop.
        let ptr = unsafe { cu::malloc_host(size.max(1), 0) }.map_err(|e| match e.0 {
            sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => Error::OutOfMemory {
                backend: "cuda",
                requested: size as u64,
                rounded: size as u64,
                free: 0,
                cached: 0,
                largest_free_block: 0,
            },
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
        let p = self.ptr(dst, dst_offset, src.len())?;
        let _bound = self.context.bind()?;
        // SAFETY: the range lies inside a live allocation (checked); synchronous copy.
        unsafe { cu::memcpy_htod_sync(p, src) }.map_err(|e| driver("cuMemcpyHtoD", e))
    }

    fn read(&self, src: &DeviceMemory, src_offset: usize, dst: &mut [u8]) -> Result<()> {
        let p = self.ptr(src, src_offset, dst.len())?;
        let _bound = self.context.bind()?;
        // SAFETY: the range lies inside a live allocation (checked); synchronous copy.
        unsafe { cu::memcpy_dtoh_sync(dst, p) }.map_err(|e| driver("cuMemcpyDtoH", e))
    }

    fn copy(
        &self,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        let s = self.ptr(src, src_offset, len)?;
        let d = self.ptr(dst, dst_offset, len)?;
        let _bound = self.context.bind()?;
        // SAFETY: both ranges lie inside live allocations (checked); synchronous copy.
        unsafe { cu::memcpy_dtod_sync(d, s, len) }.map_err(|e| driver("cuMemcpyDtoD", e))
    }

    fn fill(&self, dst: &DeviceMemory, offset: usize, len: usize, value: u8) -> Result<()> {
        let d = self.ptr(dst, offset, len)?;
        let _bound = self.context.bind()?;
        // SAFETY: the range lies inside a live allocation (checked); synchronous memset.
        unsafe { cu::memset_d8_sync(d, value, len) }.map_err(|e| driver("cuMemsetD8", e))
    }

    fn queue_count(&self) -> usize {
        self.context.streams.len()
    }

    unsafe fn write_async(
        &self,
        queue: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        src: *const u8,
        len: usize,
    ) -> Result<Event> {
        let p = self.ptr(dst, dst_offset, len)?;
        let bound = self.context.bind()?;
        // SAFETY: the caller keeps `src` valid and unwritten for `len` bytes until the event
        // completes; the device range was checked.
        unsafe { sys::cuMemcpyHtoDAsync_v2(p, src as *const c_void, len, self.stream(queue)) }
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
        let p = self.ptr(src, src_offset, len)?;
        let bound = self.context.bind()?;
        // SAFETY: the caller keeps `dst` valid and exclusively ours for `len` bytes until the
        // event completes; the device range was checked.
        unsafe { sys::cuMemcpyDtoHAsync_v2(dst as *mut c_void, p, len, self.stream(queue)) }
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
        let s = self.ptr(src, src_offset, len)?;
        let d = self.ptr(dst, dst_offset, len)?;
        let bound = self.context.bind()?;
        // SAFETY: both ranges lie inside live allocations (checked); callers wait for the event
        // before freeing either.
        unsafe { cu::memcpy_dtod_async(d, s, len, self.stream(queue)) }.map_err(|e| driver("cuMemcpyDtoDAsync", e))?;
        self.record(queue, &bound)
    }

    fn synchronize(&self) -> Result<()> {
        let _bound = self.context.bind()?;
        cu::ctx::synchronize().map_err(|e| driver("cuCtxSynchronize", e))
    }
}

/// Page-locked host memory from `cuMemHostAlloc`; keeps the context it was allocated in.
struct CudaPinned {
    ptr: NonNull<u8>,
    len: usize,
    context: Arc<Context>,
}

// SAFETY: owned host memory, like a Box<[u8]>; the context is thread-safe (see `Context`).
unsafe impl Send for CudaPinned {}
// SAFETY: shared access only reads; mutation needs &mut self.
unsafe impl Sync for CudaPinned {}

impl super::PinnedHost for CudaPinned {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes at `ptr`, zeroed at allocation, live until Drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and &mut self excludes other references.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for CudaPinned {
    fn drop(&mut self) {
        let _bound = self.context.bind();
        // SAFETY: the allocation made in allocate_pinned, freed once, in its own context (kept
        // alive by `self.context`).
        let _ = unsafe { cu::free_host(self.ptr.as_ptr().cast()) };
    }
}

/// A recorded CUDA event, the stream it was recorded on, and the context both belong to.
struct CudaEvent {
    event: sys::CUevent,
    stream: sys::CUstream,
    context: Arc<Context>,
}

// SAFETY: CUDA events and streams may be queried, synchronised and destroyed from any thread;
// the stream and context stay alive while `context` is held.
unsafe impl Send for CudaEvent {}
// SAFETY: as above; all methods take &self and the driver serialises internally.
unsafe impl Sync for CudaEvent {}

/// Host function run by the stream after the copy: wakes the boxed waker.
unsafe extern "C" fn wake_boxed(arg: *mut c_void) {
    // SAFETY: `arg` is the Box<Waker> leaked in `on_complete`, handed to exactly one call.
    let waker = unsafe { Box::from_raw(arg as *mut Waker) };
    waker.wake();
}

impl DeviceEvent for CudaEvent {
    fn is_complete(&self) -> Result<bool> {
        let _bound = self.context.bind()?;
        // SAFETY: our live event.
        match unsafe { cu::event::query(self.event) } {
            Ok(()) => Ok(true),
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_NOT_READY => Ok(false),
            Err(e) => Err(driver("cuEventQuery", e)),
        }
    }

    fn wait(&self) -> Result<()> {
        let _bound = self.context.bind()?;
        // SAFETY: our live event.
        unsafe { cu::event::synchronize(self.event) }.map_err(|e| driver("cuEventSynchronize", e))
    }

    fn on_complete(&self, waker: Waker) {
        if let Ok(true) = self.is_complete() {
            waker.wake();
            return;
        }
        // Without the context, wake now: the poller's `is_complete` then reports the error.
        let Ok(_bound) = self.context.bind() else {
            waker.wake();
            return;
        };
        let arg = Box::into_raw(Box::new(waker)) as *mut c_void;
        // SAFETY: the stream is alive while `self.context` is (its last owner waits for the
        // stream before destroying it, so the host function runs); the host function runs once,
        // after all work enqueued so far on the stream (including this event's copy), and takes
        // ownership of `arg`.
        if unsafe { cu::stream::launch_host_function(self.stream, wake_boxed, arg) }.is_err() {
            // SAFETY: the launch failed, so the box was not handed over; take it back.
            let waker = unsafe { Box::from_raw(arg as *mut Waker) };
            waker.wake();
        }
    }
}

impl Drop for CudaEvent {
    fn drop(&mut self) {
        let _bound = self.context.bind();
        // SAFETY: our event, destroyed once; destroying an incomplete event releases it once it
        // completes. The context outlives this call (`self.context` drops afterwards).
        let _ = unsafe { cu::event::destroy(self.event) };
    }
}
