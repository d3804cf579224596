//! Pinned host memory for staging: `OpenClBackend::allocate_pinned` and the mapped
//! `CL_MEM_ALLOC_HOST_PTR` buffer it returns.

use super::backend::OpenClBackend;
use super::error::{cl_error, BACKEND};
use super::event::wait_raw;
use super::handles::{RawEvent, RawMem, RawQueue};
#[cfg(doc)]
use crate::backend::Backend;
use crate::backend::PinnedHost;
use crate::error::{Error, Result};
use opencl3::command_queue::{enqueue_map_buffer, enqueue_unmap_mem_object, retain_command_queue};
use opencl3::event::wait_for_events;
use opencl3::memory::{create_buffer, CL_MAP_READ, CL_MAP_WRITE, CL_MEM_ALLOC_HOST_PTR, CL_MEM_READ_WRITE};
use opencl3::types::{cl_mem, CL_BLOCKING};
use std::ffi::c_void;
use std::ptr::{self, NonNull};

impl OpenClBackend {
    /// Page-locked host memory for staging: a `CL_MEM_ALLOC_HOST_PTR` buffer of `len` bytes,
    /// mapped for host reads and writes until dropped, zeroed.
    ///
    /// Its bytes are ordinary host memory to this backend's transfer methods (pass
    /// [`PinnedHostBuffer::as_ptr`] to [`Backend::write_async`] / [`Backend::read_async`]);
    /// on discrete GPUs, drivers move data from such memory by DMA without an extra staging
    /// copy. It does not count towards [`OpenClBackend::used`]. Errors: `len` above the max
    /// allocation is [`Error::InvalidArgument`]; driver failures are [`Error::Backend`]
    /// (`clCreateBuffer`, `clEnqueueMapBuffer`).
    pub fn allocate_pinned(&self, len: usize) -> Result<PinnedHostBuffer> {
        let bytes = len.max(1);
        if bytes as u64 > self.summary.max_alloc {
            return Err(Error::InvalidArgument {
                option: "pinned allocation size",
                value: format!(
                    "{len} bytes, above this device's largest single allocation of {} bytes (CL_DEVICE_MAX_MEM_ALLOC_SIZE)",
                    self.summary.max_alloc
                ),
                reason: "one OpenCL buffer cannot exceed CL_DEVICE_MAX_MEM_ALLOC_SIZE",
            });
        }
        // SAFETY: a valid context, no host pointer; ALLOC_HOST_PTR asks the driver for
        // host-accessible (pinned) memory.
        let mem =
            unsafe { create_buffer(self.context.0, CL_MEM_READ_WRITE | CL_MEM_ALLOC_HOST_PTR, bytes, ptr::null_mut()) }
                .map(RawMem)
                .map_err(|code| cl_error("clCreateBuffer", code))?;
        let q = self.queue_at(0);
        // SAFETY: `q` is a live queue of this backend; the wrapper takes its own reference so the
        // pinned buffer can outlive the backend.
        unsafe { retain_command_queue(q) }.map_err(|code| cl_error("clRetainCommandQueue", code))?;
        let queue = RawQueue(q);
        let mut mapped: cl_mem = ptr::null_mut();
        // SAFETY: `mem` is live and `bytes` long; the blocking map returns once `mapped` is valid.
        let ev = unsafe {
            enqueue_map_buffer(q, mem.0, CL_BLOCKING, CL_MAP_READ | CL_MAP_WRITE, 0, bytes, &mut mapped, 0, ptr::null())
        }
        .map(RawEvent)
        .map_err(|code| cl_error("clEnqueueMapBuffer", code))?;
        wait_raw(&ev, "clEnqueueMapBuffer")?;
        let ptr = NonNull::new(mapped.cast::<u8>()).ok_or_else(|| Error::Backend {
            backend: BACKEND,
            operation: "clEnqueueMapBuffer",
            code: 0,
            message: "the driver mapped the buffer at a null address".into(),
            transient: false,
        })?;
        // SAFETY: the mapping is valid for `bytes` bytes of reads and writes until unmapped; the
        // driver's contents are unspecified, so they are initialised here before any `&[u8]`.
        unsafe { ptr::write_bytes(ptr.as_ptr(), 0, bytes) };
        Ok(PinnedHostBuffer { ptr, len, mem, queue })
    }
}

/// Pinned host memory from [`OpenClBackend::allocate_pinned`]: a mapped
/// `CL_MEM_ALLOC_HOST_PTR` buffer. Unmapped and released on drop (it keeps its own references
/// to the buffer and a queue, so it may outlive the backend).
pub struct PinnedHostBuffer {
    ptr: NonNull<u8>,
    len: usize,
    // Drop order: unmap (in Drop), then the buffer, then the queue.
    mem: RawMem,
    queue: RawQueue,
}

// SAFETY: the buffer owns its mapping exclusively (like a Box<[u8]>); the OpenCL handles are
// thread-safe (see `raw_handle!`).
unsafe impl Send for PinnedHostBuffer {}
// SAFETY: shared access only hands out `&[u8]`; mutation needs `&mut self`.
unsafe impl Sync for PinnedHostBuffer {}

impl std::fmt::Debug for PinnedHostBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedHostBuffer").field("ptr", &self.ptr).field("len", &self.len).finish()
    }
}

impl PinnedHostBuffer {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length buffer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Start of the mapped bytes (valid for `len()` bytes while `self` lives). Writing through
    /// it (e.g. as the destination of [`Backend::read_async`]) is allowed only while no slice
    /// from [`PinnedHostBuffer::as_slice`] is alive; prefer `as_mut_slice().as_mut_ptr()`.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is valid and initialised for `len` bytes while self lives (zeroed
        // at creation); mutation needs &mut self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and &mut self excludes every other reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl PinnedHost for PinnedHostBuffer {
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl Drop for PinnedHostBuffer {
    fn drop(&mut self) {
        let (queue, mem, mapped) = (self.queue.0, self.mem.0, self.ptr.as_ptr().cast::<c_void>());
        // SAFETY: `mapped` is the live mapping of `mem` made on `queue`; nothing uses it after this.
        let unmapped = unsafe { enqueue_unmap_mem_object(queue, mem, mapped, 0, ptr::null()) };
        if let Ok(ev) = unmapped {
            let _ = wait_for_events(&[ev]);
            drop(RawEvent(ev));
        }
    }
}
