//! `OpenClBackend`: the backend's state (context, device, queues, allocation table), opening a
//! device chosen by options, and the internal enqueue helpers the other files build on.

use super::discovery::{select, DeviceSummary, OpenClOptions};
use super::error::{cl_error, BACKEND};
use super::event::OpenClEvent;
use super::handles::{Mem, RawContext, RawDevice, RawEvent, RawMem, RawQueue};
use crate::backend::{BackendId, DeviceMemory};
use crate::error::{Error, Result};
use opencl3::command_queue::{
    create_command_queue, create_command_queue_with_properties, enqueue_copy_buffer, enqueue_fill_buffer, finish,
};
use opencl3::context::context::create_context;
use opencl3::device::retain_device;
use opencl3::event::wait_for_events;
use opencl3::memory::{create_buffer, CL_MEM_READ_WRITE};
use opencl3::types::{cl_command_queue, cl_int};
use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr;
use std::sync::{Arc, Mutex};

/// The live allocations by id, the next id, and the bytes they hold on the device.
pub(super) struct Table {
    pub(super) mems: HashMap<u64, Arc<Mem>>,
    pub(super) next: u64,
    pub(super) used: u64,
}

/// A device reached through OpenCL. See the [module docs](super).
///
/// Opening fails with a clear [`Error::BackendUnavailable`](crate::Error::BackendUnavailable)
/// where no OpenCL driver or device exists, so a program can fall back:
///
/// ```
/// use dotcompute_memory::{ManagerOptions, MemoryManager, OpenClBackend};
///
/// # fn main() -> dotcompute_memory::Result<()> {
/// let mm = match OpenClBackend::new() {
///     Ok(backend) => MemoryManager::with_backend(backend, ManagerOptions::default())?,
///     Err(e) => {
///         eprintln!("{e}; using the CPU");
///         MemoryManager::cpu()
///     }
/// };
/// let mut buf = mm.allocate_from(&[1.0f32; 1024])?;
/// buf.ensure_on_device()?;
/// assert_eq!(buf.to_vec()?, vec![1.0f32; 1024]);
/// # Ok(())
/// # }
/// ```
pub struct OpenClBackend {
    pub(super) id: BackendId,
    // Field order is drop order: buffers, then queues, then the device and the context.
    pub(super) table: Mutex<Table>,
    pub(super) queues: Vec<RawQueue>,
    /// Per queue: made with `CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE` (only a queue passed to
    /// `from_raw` can be).
    pub(super) out_of_order: Vec<bool>,
    pub(super) device: RawDevice,
    pub(super) context: RawContext,
    /// True for objects passed to `from_raw`: the user's queue is not finished on drop.
    pub(super) borrowed: bool,
    pub(super) summary: DeviceSummary,
    pub(super) base_align_bits: u64,
    pub(super) options: OpenClOptions,
}

// SAFETY: the raw fields are OpenCL handles (thread-safe API, see `raw_handle!`); everything
// else is Send + Sync.
unsafe impl Send for OpenClBackend {}
// SAFETY: as above; all mutable state is behind the Mutex.
unsafe impl Sync for OpenClBackend {}

impl std::fmt::Debug for OpenClBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenClBackend")
            .field("id", &self.id)
            .field("device", &self.summary)
            .field("queues", &self.queues.len())
            .finish()
    }
}

impl OpenClBackend {
    /// Opens the device chosen by `DCMEM_OPENCL_PLATFORM` / `DCMEM_OPENCL_DEVICE` (see
    /// [`OpenClOptions::from_env`]).
    pub fn new() -> Result<Self> {
        Self::with_options(OpenClOptions::from_env()?)
    }

    /// Opens the device chosen by `options`.
    pub fn with_options(options: OpenClOptions) -> Result<Self> {
        let found = select(&options)?;
        let device = found.device;
        let context = create_context(&[device], ptr::null(), None, ptr::null_mut())
            .map_err(|code| cl_error("clCreateContext", code))?;
        let context = RawContext(context);
        let n = options.queues.max(1);
        let mut queues = Vec::with_capacity(n);
        for _ in 0..n {
            // SAFETY: `device` belongs to `context` (the context was made from it).
            let q = unsafe { create_command_queue_with_properties(context.0, device, ptr::null()) }.or_else(|_| {
                // OpenCL 1.x platforms lack the 2.0 entry point; the 1.0 one exists everywhere.
                // SAFETY: as above.
                unsafe { create_command_queue(context.0, device, 0) }
            });
            queues.push(RawQueue(q.map_err(|code| cl_error("clCreateCommandQueue", code))?));
        }
        // SAFETY: `device` is a live device id (just listed by the driver); the wrapper gives
        // the reference back on drop.
        unsafe { retain_device(device) }.map_err(|code| cl_error("clRetainDevice", code))?;
        let device = RawDevice(device);
        Ok(OpenClBackend {
            id: BackendId::next(),
            table: Mutex::new(Table { mems: HashMap::new(), next: 1, used: 0 }),
            out_of_order: vec![false; queues.len()],
            queues,
            device,
            context,
            borrowed: false,
            summary: found.summary,
            base_align_bits: found.base_align_bits,
            options,
        })
    }

    /// The device this backend uses.
    pub fn device(&self) -> &DeviceSummary {
        &self.summary
    }

    /// The options it was opened with.
    pub fn options(&self) -> &OpenClOptions {
        &self.options
    }

    /// `CL_DEVICE_MEM_BASE_ADDR_ALIGN` in bytes: the alignment of every buffer's start, and the
    /// origin alignment a sub-buffer needs.
    pub fn base_address_alignment(&self) -> u64 {
        self.base_align_bits / 8
    }

    /// Bytes currently allocated through this backend instance.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn queue_at(&self, index: usize) -> cl_command_queue {
        self.queues[index % self.queues.len()].0
    }

    /// Checks ownership and bounds of `memory`, then returns its `cl_mem` (kept alive by the
    /// returned `Arc` even if the handle is freed meanwhile).
    pub(super) fn mem(&self, memory: &DeviceMemory, offset: usize, len: usize) -> Result<Arc<Mem>> {
        memory.check(self, offset, len)?;
        self.lock().mems.get(&memory.handle()).cloned().ok_or_else(|| Error::InvalidHandle {
            backend: BACKEND,
            reason: format!("no live OpenCL allocation with id {} (already freed?)", memory.handle()),
        })
    }

    pub(super) fn create_mem(&self, bytes: usize) -> std::result::Result<RawMem, cl_int> {
        // SAFETY: a valid context, no host pointer and no host-pointer flags.
        unsafe { create_buffer(self.context.0, CL_MEM_READ_WRITE, bytes, ptr::null_mut()) }.map(RawMem)
    }

    /// Enqueues a device-to-device copy on `queue`; overlapping ranges of one allocation go
    /// through a temporary buffer so the result is that of `memmove`.
    pub(super) fn enqueue_copy(
        &self,
        queue: usize,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<Option<OpenClEvent>> {
        let s = self.mem(src, src_offset, len)?;
        let d = self.mem(dst, dst_offset, len)?;
        if len == 0 {
            return Ok(None);
        }
        let q = self.queue_at(queue);
        let overlap = src.handle() == dst.handle() && src_offset < dst_offset + len && dst_offset < src_offset + len;
        if overlap {
            let tmp = Arc::new(Mem {
                raw: self.create_mem(len).map_err(|code| cl_error("clCreateBuffer", code))?,
                bytes: len,
            });
            // SAFETY: both buffers are live (held by Arcs) and the ranges were checked.
            let first = unsafe { enqueue_copy_buffer(q, s.raw.0, tmp.raw.0, src_offset, 0, len, 0, ptr::null()) }
                .map(RawEvent)
                .map_err(|code| cl_error("clEnqueueCopyBuffer", code))?;
            // The second copy waits for the first through its wait list (a queue passed to
            // `from_raw` may execute out of order).
            // SAFETY: as above; the wait list is the one live event `first`.
            let second = unsafe { enqueue_copy_buffer(q, tmp.raw.0, d.raw.0, 0, dst_offset, len, 1, &first.0) }
                .map(RawEvent)
                .map_err(|code| cl_error("clEnqueueCopyBuffer", code));
            let second = match second {
                Ok(e) => e,
                Err(e) => {
                    // Nothing observable was written yet; let the first copy finish before the
                    // temporary goes away (refcounting would keep it anyway).
                    let _ = wait_for_events(&[first.0]);
                    return Err(e);
                }
            };
            drop(first);
            return Ok(Some(OpenClEvent::new(second, "clEnqueueCopyBuffer", q, vec![s, d, tmp])));
        }
        // SAFETY: both buffers are live (held by Arcs) and the ranges were checked above.
        let ev = unsafe { enqueue_copy_buffer(q, s.raw.0, d.raw.0, src_offset, dst_offset, len, 0, ptr::null()) }
            .map(RawEvent)
            .map_err(|code| cl_error("clEnqueueCopyBuffer", code))?;
        Ok(Some(OpenClEvent::new(ev, "clEnqueueCopyBuffer", q, vec![s, d])))
    }

    pub(super) fn enqueue_fill(
        &self,
        queue: usize,
        mem: &Mem,
        offset: usize,
        len: usize,
        value: u8,
    ) -> Result<RawEvent> {
        let pattern = value;
        // SAFETY: the buffer is live, offset..offset+len lies inside it (checked by callers);
        // the one-byte pattern is copied by the driver before the call returns.
        unsafe {
            enqueue_fill_buffer(
                self.queue_at(queue),
                mem.raw.0,
                (&raw const pattern).cast::<c_void>(),
                1,
                offset,
                len,
                0,
                ptr::null(),
            )
        }
        .map(RawEvent)
        .map_err(|code| cl_error("clEnqueueFillBuffer", code))
    }
}

impl Drop for OpenClBackend {
    fn drop(&mut self) {
        // Let queued work finish before its buffers are released (the driver would keep them
        // alive anyway; this keeps teardown orderly). A queue passed to `from_raw` is the
        // caller's, with work of the caller's on it: it is not waited for.
        if !self.borrowed {
            for q in &self.queues {
                let _ = finish(q.0);
            }
        }
    }
}
