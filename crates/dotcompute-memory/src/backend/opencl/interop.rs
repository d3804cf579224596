//! What kernels on a buffer's device memory need beyond the raw handles: markers that order a
//! buffer after them, adopted completion events, and sub-buffers.

use super::backend::OpenClBackend;
use super::discovery::device_u64;
use super::error::{cl_error, BACKEND};
use super::event::OpenClEvent;
use super::handles::{handle, handles, RawEvent, RawMem};
use crate::error::{Error, Result};
use opencl3::command_queue::{enqueue_barrier_with_wait_list, enqueue_marker_with_wait_list};
use opencl3::context::context::{get_context_data, CL_CONTEXT_DEVICES};
use opencl3::device::CL_DEVICE_MEM_BASE_ADDR_ALIGN;
use opencl3::event::{get_event_data, retain_event, CL_EVENT_CONTEXT};
use opencl3::memory::{create_sub_buffer, get_mem_object_data, CL_BUFFER_CREATE_TYPE_REGION, CL_MEM_CONTEXT};
use opencl3::types::{cl_buffer_region, cl_event, cl_mem};
use std::ffi::c_void;
use std::ptr;

impl OpenClBackend {
    /// Enqueues a marker on queue `queue` (taken modulo the queue count) and flushes the queue:
    /// the event completes once everything enqueued on that queue before it has completed, by
    /// this backend or by anyone else's kernels. It is `clEnqueueMarkerWithWaitList` on an
    /// in-order queue, and `clEnqueueBarrierWithWaitList` on an out-of-order one, so commands
    /// enqueued after it there also wait for it.
    pub fn marker(&self, queue: usize) -> Result<OpenClEvent> {
        let index = queue % self.queues.len();
        let q = self.queues[index].0;
        let (ev, operation) = if self.is_out_of_order(index) {
            // SAFETY: a live queue of this backend; no wait list.
            (unsafe { enqueue_barrier_with_wait_list(q, 0, ptr::null()) }, "clEnqueueBarrierWithWaitList")
        } else {
            // SAFETY: as above.
            (unsafe { enqueue_marker_with_wait_list(q, 0, ptr::null()) }, "clEnqueueMarkerWithWaitList")
        };
        let ev = ev.map(RawEvent).map_err(|code| cl_error(operation, code))?;
        Ok(OpenClEvent::new(ev, operation, q, Vec::new()))
    }

    /// Takes a reference of its own to a completion event of the caller's (a kernel on a queue
    /// of the caller's), so a buffer can wait for it. The event must belong to this backend's
    /// context: [`Error::ForeignContext`] otherwise.
    ///
    /// # Safety
    ///
    /// `event` must be a live `cl_event` on which the caller holds a reference for the
    /// duration of this call.
    pub unsafe fn adopt_event(&self, event: cl_event) -> Result<OpenClEvent> {
        if event.is_null() {
            return Err(Error::NullHandle { backend: BACKEND, what: "cl_event" });
        }
        let found = get_event_data(event, CL_EVENT_CONTEXT)
            .map(|b| handle::<c_void>(&b))
            .map_err(|code| cl_error("clGetEventInfo", code))?;
        if found != self.context.0 {
            return Err(Error::ForeignContext {
                backend: BACKEND,
                what: "completion event",
                handle: format!("{event:p}"),
                expected: format!("{:p}", self.context.0),
                found: format!("{found:p}"),
            });
        }
        // SAFETY: the caller guarantees a live event; the wrapper releases this reference.
        unsafe { retain_event(event) }.map_err(|code| cl_error("clRetainEvent", code))?;
        Ok(OpenClEvent::adopt(RawEvent(event), "the caller's command"))
    }
}

/// A sub-buffer of an allocation (`clCreateSubBuffer`): a `cl_mem` of its own that starts at
/// the parent's `origin`, for kernels that take a buffer without an offset. It holds one
/// reference, given back on drop (a failed release leaks it; nothing panics); OpenCL keeps the
/// parent alive while it exists. Made by a device view (`DeviceView::opencl_sub_buffer`),
/// whose life bounds `'a`: after the view ends, the memory may hold another buffer's data.
pub struct OpenClSubBuffer<'a> {
    mem: RawMem,
    origin: usize,
    len: usize,
    _view: std::marker::PhantomData<&'a ()>,
}

impl std::fmt::Debug for OpenClSubBuffer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenClSubBuffer")
            .field("mem", &self.mem.0)
            .field("origin", &self.origin)
            .field("len", &self.len)
            .finish()
    }
}

impl OpenClSubBuffer<'_> {
    /// The sub-buffer's `cl_mem`, valid while `self` lives.
    pub fn as_raw(&self) -> cl_mem {
        self.mem.0
    }

    /// Where it starts in its parent, in bytes.
    pub fn origin(&self) -> usize {
        self.origin
    }

    /// Its size in bytes.
    pub fn byte_len(&self) -> usize {
        self.len
    }
}

/// The sub-buffer alignment `parent`'s context requires, in bits: the largest
/// `CL_DEVICE_MEM_BASE_ADDR_ALIGN` among the context's devices.
fn sub_buffer_alignment_bits(parent: cl_mem) -> Result<u64> {
    let context = get_mem_object_data(parent, CL_MEM_CONTEXT)
        .map(|b| handle::<c_void>(&b))
        .map_err(|code| cl_error("clGetMemObjectInfo", code))?;
    let devices = get_context_data(context, CL_CONTEXT_DEVICES)
        .map(|b| handles::<c_void>(&b))
        .map_err(|code| cl_error("clGetContextInfo", code))?;
    let mut bits = 8;
    for device in devices {
        bits = bits
            .max(device_u64(device, CL_DEVICE_MEM_BASE_ADDR_ALIGN).map_err(|code| cl_error("clGetDeviceInfo", code))?);
    }
    Ok(bits)
}

/// A sub-buffer of `parent` covering `len` bytes from `origin`, with the parent's flags.
///
/// Errors, checked before anything is created: [`Error::InvalidArgument`] for `len == 0`
/// (OpenCL has no empty buffers); [`Error::MisalignedSubBuffer`] when `origin` is not a
/// multiple of `CL_DEVICE_MEM_BASE_ADDR_ALIGN` (converted from bits to bytes; the largest over
/// the devices of the parent's context). A driver failure is [`Error::Backend`]
/// (`clCreateSubBuffer`).
///
/// # Safety
///
/// `parent` must be a live buffer `cl_mem` with at least `origin + len` bytes, and the memory
/// must be the caller's to hand out for `'a`.
pub unsafe fn sub_buffer<'a>(parent: cl_mem, origin: usize, len: usize) -> Result<OpenClSubBuffer<'a>> {
    if len == 0 {
        return Err(Error::InvalidArgument {
            option: "OpenCL sub-buffer length",
            value: format!("0 bytes at byte offset {origin}"),
            reason: "OpenCL has no empty buffers; an empty view has no sub-buffer",
        });
    }
    let alignment_bits = sub_buffer_alignment_bits(parent)?;
    let alignment = (alignment_bits / 8).max(1) as usize;
    if !origin.is_multiple_of(alignment) {
        return Err(Error::MisalignedSubBuffer { byte_offset: origin, alignment, alignment_bits });
    }
    let region = cl_buffer_region { origin, size: len };
    // SAFETY: the caller guarantees a live parent covering the region; flags 0 inherit the
    // parent's; `region` outlives the call.
    let mem =
        unsafe { create_sub_buffer(parent, 0, CL_BUFFER_CREATE_TYPE_REGION, (&raw const region).cast::<c_void>()) }
            .map(RawMem)
            .map_err(|code| cl_error("clCreateSubBuffer", code))?;
    Ok(OpenClSubBuffer { mem, origin, len, _view: std::marker::PhantomData })
}
