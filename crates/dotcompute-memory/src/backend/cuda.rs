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
//! Device selection: `DCMEM_CUDA_DEVICE` (ordinal, default 0).

use super::{Backend, BackendId, DeviceEvent, DeviceMemory, Event, MemoryInfo};
use crate::error::{Error, Result};
use cudarc::driver::result::{self as cu, DriverError};
use cudarc::driver::sys;
use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::task::Waker;

/// Streams per device.
const STREAMS: usize = 2;

/// A CUDA device's memory and streams.
pub struct CudaBackend {
    id: BackendId,
    ordinal: usize,
    device: sys::CUdevice,
    ctx: sys::CUcontext,
    streams: Vec<sys::CUstream>,
    name: String,
    total: usize,
    driver_version: i32,
    /// Live allocations (device pointer -> size), to reject handles we did not make.
    live: Mutex<HashMap<u64, usize>>,
}

// SAFETY: CUDA driver handles (context, streams) may be used from any thread; every call binds
// the context to the calling thread first (`bind`). The allocation table is behind a Mutex.
unsafe impl Send for CudaBackend {}
// SAFETY: as above; no method relies on thread-local state other than the bound context.
unsafe impl Sync for CudaBackend {}

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
        let ordinal = match std::env::var("DCMEM_CUDA_DEVICE") {
            Ok(v) if !v.trim().is_empty() => v.trim().parse::<usize>().map_err(|_| Error::InvalidArgument {
                option: "DCMEM_CUDA_DEVICE",
                value: v.clone(),
                reason: "must be a device ordinal such as 0",
            })?,
            _ => 0,
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
        // SAFETY: `ctx` is the live primary context just retained.
        unsafe { cu::ctx::set_current(ctx) }.map_err(|e| driver("cuCtxSetCurrent", e))?;
        let mut streams = Vec::with_capacity(STREAMS);
        for _ in 0..STREAMS {
            match cu::stream::create(cu::stream::StreamKind::NonBlocking) {
                Ok(s) => streams.push(s),
                Err(e) => {
                    for s in streams {
                        // SAFETY: streams created above on the current context.
                        let _ = unsafe { cu::stream::destroy(s) };
                    }
                    // SAFETY: retained above.
                    let _ = unsafe { cu::primary_ctx::release(device) };
                    return Err(driver("cuStreamCreate", e));
                }
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
            device,
            ctx,
            streams,
            name,
            total,
            driver_version,
            live: Mutex::new(HashMap::new()),
        })
    }

    /// Binds this device's context to the calling thread.
    fn bind(&self) -> Result<()> {
        // SAFETY: `ctx` is the primary context retained in `new` and released only in Drop.
        unsafe { cu::ctx::set_current(self.ctx) }.map_err(|e| driver("cuCtxSetCurrent", e))
    }

    fn ptr(&self, memory: &DeviceMemory, offset: usize, len: usize) -> Result<sys::CUdeviceptr> {
        memory.check(self, offset, len)?;
        Ok(memory.handle() + offset as u64)
    }

    fn stream(&self, queue: usize) -> sys::CUstream {
        self.streams[queue % self.streams.len()]
    }

    fn record(&self, queue: usize) -> Result<Event> {
        let stream = self.stream(queue);
        let event =
            cu::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING).map_err(|e| driver("cuEventCreate", e))?;
        // SAFETY: `event` was just created, `stream` is one of ours.
        if let Err(e) = unsafe { cu::event::record(event, stream) } {
            // SAFETY: created above, never recorded.
            let _ = unsafe { cu::event::destroy(event) };
            return Err(driver("cuEventRecord", e));
        }
        Ok(Box::new(CudaEvent { event, stream, ctx: self.ctx }))
    }

    /// Driver version as reported by `cuDriverGetVersion` (e.g. 12080).
    pub fn driver_version(&self) -> i32 {
        self.driver_version
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        let _ = self.bind();
        for &s in &self.streams {
            // SAFETY: our streams; all work on them is complete once destroy returns.
            let _ = unsafe { cu::stream::destroy(s) };
        }
        // SAFETY: balanced with the retain in `new`.
        let _ = unsafe { cu::primary_ctx::release(self.device) };
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
        let (free, total) = self.bind().ok().and_then(|()| cu::mem_get_info().ok()).unwrap_or((0, self.total));
        MemoryInfo { total: total as u64, free: free as u64, max_allocation: total as u64 }
    }

    fn allocate(&self, size: usize, _align: usize) -> Result<DeviceMemory> {
        self.bind()?;
        // cuMemAlloc aligns to at least 256 bytes, which covers every alignment we ask for.
        // SAFETY: plain allocation; the pointer is owned by the returned handle.
        let ptr = match unsafe { cu::malloc_sync(size.max(1)) } {
            Ok(p) => p,
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                let free = cu::mem_get_info().map(|(f, _)| f as u64).unwrap_or(0);
                return Err(Error::OutOfMemory {
                    backend: "cuda",
                    requested: size as u64,
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
        self.bind()?;
        // SAFETY: the pointer came from cuMemAlloc and was live (removed from the table just now,
        // so it cannot be freed twice); callers wait for work on it before freeing.
        unsafe { cu::free_sync(memory.handle()) }.map_err(|e| driver("cuMemFree", e))
    }

    fn allocate_pinned(&self, size: usize) -> Result<Box<dyn super::PinnedHost>> {
        self.bind()?;
        // Flag 0 (not CU_MEMHOSTALLOC_WRITECOMBINED, which makes host reads slow).
        // SAFETY: a plain page-locked allocation; freed in CudaPinned::drop.
        let ptr = unsafe { cu::malloc_host(size.max(1), 0) }.map_err(|e| match e.0 {
            sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => Error::OutOfMemory {
                backend: "cuda",
                requested: size as u64,
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
        Ok(Box::new(CudaPinned { ptr, len: size, ctx: self.ctx }))
    }

    fn host_ptr(&self, _memory: &DeviceMemory) -> Option<NonNull<u8>> {
        None
    }

    fn write(&self, dst: &DeviceMemory, dst_offset: usize, src: &[u8]) -> Result<()> {
        let p = self.ptr(dst, dst_offset, src.len())?;
        self.bind()?;
        // SAFETY: the range lies inside a live allocation (checked); synchronous copy.
        unsafe { cu::memcpy_htod_sync(p, src) }.map_err(|e| driver("cuMemcpyHtoD", e))
    }

    fn read(&self, src: &DeviceMemory, src_offset: usize, dst: &mut [u8]) -> Result<()> {
        let p = self.ptr(src, src_offset, dst.len())?;
        self.bind()?;
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
        self.bind()?;
        // SAFETY: both ranges lie inside live allocations (checked); synchronous copy.
        unsafe { cu::memcpy_dtod_sync(d, s, len) }.map_err(|e| driver("cuMemcpyDtoD", e))
    }

    fn fill(&self, dst: &DeviceMemory, offset: usize, len: usize, value: u8) -> Result<()> {
        let d = self.ptr(dst, offset, len)?;
        self.bind()?;
        // SAFETY: the range lies inside a live allocation (checked); synchronous memset.
        unsafe { cu::memset_d8_sync(d, value, len) }.map_err(|e| driver("cuMemsetD8", e))
    }

    fn queue_count(&self) -> usize {
        self.streams.len()
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
        self.bind()?;
        // SAFETY: the caller keeps `src` valid and unwritten for `len` bytes until the event
        // completes; the device range was checked.
        unsafe { sys::cuMemcpyHtoDAsync_v2(p, src as *const c_void, len, self.stream(queue)) }
            .result()
            .map_err(|e| driver("cuMemcpyHtoDAsync", e))?;
        self.record(queue)
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
        self.bind()?;
        // SAFETY: the caller keeps `dst` valid and exclusively ours for `len` bytes until the
        // event completes; the device range was checked.
        unsafe { sys::cuMemcpyDtoHAsync_v2(dst as *mut c_void, p, len, self.stream(queue)) }
            .result()
            .map_err(|e| driver("cuMemcpyDtoHAsync", e))?;
        self.record(queue)
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
        self.bind()?;
        // SAFETY: both ranges lie inside live allocations (checked); callers wait for the event
        // before freeing either.
        unsafe { cu::memcpy_dtod_async(d, s, len, self.stream(queue)) }.map_err(|e| driver("cuMemcpyDtoDAsync", e))?;
        self.record(queue)
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        cu::ctx::synchronize().map_err(|e| driver("cuCtxSynchronize", e))
    }
}

/// Page-locked host memory from `cuMemHostAlloc`.
struct CudaPinned {
    ptr: NonNull<u8>,
    len: usize,
    ctx: sys::CUcontext,
}

// SAFETY: owned host memory; the CUDA context handle may be used from any thread.
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
        // SAFETY: binding our context; then freeing the allocation made in allocate_pinned once.
        unsafe {
            let _ = cu::ctx::set_current(self.ctx);
            let _ = cu::free_host(self.ptr.as_ptr().cast());
        }
    }
}

/// A recorded CUDA event and the stream it was recorded on.
struct CudaEvent {
    event: sys::CUevent,
    stream: sys::CUstream,
    ctx: sys::CUcontext,
}

// SAFETY: CUDA events and streams may be queried, synchronised and destroyed from any thread.
unsafe impl Send for CudaEvent {}
// SAFETY: as above; all methods take &self and the driver serialises internally.
unsafe impl Sync for CudaEvent {}

impl CudaEvent {
    fn bind(&self) {
        // SAFETY: the context outlives its backend's events only if the backend is alive; a
        // failed bind makes the next call report an error rather than misbehave.
        let _ = unsafe { cu::ctx::set_current(self.ctx) };
    }
}

/// Host function run by the stream after the copy: wakes the boxed waker.
unsafe extern "C" fn wake_boxed(arg: *mut c_void) {
    // SAFETY: `arg` is the Box<Waker> leaked in `on_complete`, handed to exactly one call.
    let waker = unsafe { Box::from_raw(arg as *mut Waker) };
    waker.wake();
}

impl DeviceEvent for CudaEvent {
    fn is_complete(&self) -> Result<bool> {
        self.bind();
        // SAFETY: our live event.
        match unsafe { cu::event::query(self.event) } {
            Ok(()) => Ok(true),
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_NOT_READY => Ok(false),
            Err(e) => Err(driver("cuEventQuery", e)),
        }
    }

    fn wait(&self) -> Result<()> {
        self.bind();
        // SAFETY: our live event.
        unsafe { cu::event::synchronize(self.event) }.map_err(|e| driver("cuEventSynchronize", e))
    }

    fn on_complete(&self, waker: Waker) {
        if let Ok(true) = self.is_complete() {
            waker.wake();
            return;
        }
        let arg = Box::into_raw(Box::new(waker)) as *mut c_void;
        // SAFETY: the host function runs once, after all work enqueued so far on the stream
        // (including this event's copy), and takes ownership of `arg`.
        if unsafe { cu::stream::launch_host_function(self.stream, wake_boxed, arg) }.is_err() {
            // SAFETY: the launch failed, so the box was not handed over; take it back.
            let waker = unsafe { Box::from_raw(arg as *mut Waker) };
            waker.wake();
        }
    }
}

impl Drop for CudaEvent {
    fn drop(&mut self) {
        self.bind();
        // SAFETY: our event; destroying an incomplete event releases it once it completes.
        let _ = unsafe { cu::event::destroy(self.event) };
    }
}
