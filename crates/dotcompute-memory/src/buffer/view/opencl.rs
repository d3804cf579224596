//! OpenCL access to device views (feature `opencl`).
//!
//! ```text
//!   let mut view = buf.device_view_mut(Access::ReadWrite)?;
//!   let m = view.opencl().expect("an OpenCL buffer");   cl_mem of the pool segment, the view's
//!                                                       byte offset and length, our queue 0
//!   kernel(m.mem, m.element_offset::<f32>(), n) on m.queue
//!   drop(view)                                          a marker on m.queue: the buffer's next
//!                                                       host access waits for the kernel
//! ```
//!
//! A kernel enqueued on `m.queue` needs nothing more: the marker enqueued when the view ends
//! follows it on that queue. A kernel on a queue of the caller's (same context) waits for the
//! view's data with [`DeviceView::opencl_ready_event`] as its wait list, and hands its
//! completion event back with [`DeviceView::opencl_completed_by`], so the buffer waits for it
//! before the memory is next read, written, reused or freed.
//!
//! The `cl_mem` is the whole device allocation (a pool segment holds many buffers), so kernels
//! add `byte_offset`. Where a kernel must take a buffer of its own, `opencl_sub_buffer` makes a
//! sub-buffer, which OpenCL allows only at offsets aligned to `CL_DEVICE_MEM_BASE_ADDR_ALIGN`.

use super::{DeviceView, DeviceViewMut, Window, VIEW_QUEUE};
use crate::backend::opencl::{self as backend, OpenClBackend, OpenClEvent, OpenClSubBuffer};
use crate::buffer::raw::RawBuffer;
use crate::element::Element;
use crate::error::{Error, Result};
use opencl3::types::{cl_command_queue, cl_event, cl_mem};

/// Where a device view's elements are in OpenCL terms, from [`DeviceView::opencl`] /
/// [`DeviceViewMut::opencl`]. The handles are borrowed from the buffer's backend: valid while
/// the view lives, and to be used only then (once the view ends, the buffer may copy from or
/// into this memory, or the pool may give it to another buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenClMemory {
    /// The device allocation holding the view: a pool segment shared with other buffers.
    pub mem: cl_mem,
    /// Bytes from the start of `mem` to the view's first element.
    pub byte_offset: usize,
    /// Bytes in the view.
    pub byte_len: usize,
    /// The backend's queue 0: a kernel enqueued here is ordered before the buffer's next use
    /// without anything more.
    pub queue: cl_command_queue,
}

impl OpenClMemory {
    /// `byte_offset` in elements of `T`, for a kernel that takes a `__global T*` and an element
    /// offset; `None` when the offset is not a multiple of `size_of::<T>()` (possible for
    /// element sizes that are not powers of two: then pass the byte offset).
    pub fn element_offset<T>(&self) -> Option<usize> {
        let size = std::mem::size_of::<T>();
        (size != 0 && self.byte_offset.is_multiple_of(size)).then(|| self.byte_offset / size)
    }

    /// A sub-buffer covering exactly the view (see [`DeviceView::opencl_sub_buffer`], the safe
    /// form).
    ///
    /// # Safety
    ///
    /// `mem` must be a live buffer of at least `byte_offset + byte_len` bytes, as in the value
    /// a live view returned, and the returned sub-buffer may be used only while that view
    /// lives (the caller chooses `'a`).
    pub unsafe fn sub_buffer<'a>(&self) -> Result<OpenClSubBuffer<'a>> {
        // SAFETY: forwarded from this function's contract.
        unsafe { backend::sub_buffer(self.mem, self.byte_offset, self.byte_len) }
    }
}

/// The OpenCL backend of `raw`'s manager, if that is its backend.
fn opencl_backend(raw: &RawBuffer) -> Option<&OpenClBackend> {
    raw.manager().backend().downcast_ref::<OpenClBackend>()
}

fn not_opencl(operation: &'static str) -> Error {
    Error::Unsupported { operation, reason: "the buffer's backend is not OpenCL" }
}

fn memory<T: Element>(raw: &RawBuffer, window: &Window) -> Option<OpenClMemory> {
    let backend = opencl_backend(raw)?;
    let (device, _) = raw.device_location()?;
    Some(OpenClMemory {
        mem: backend.cl_mem(device).ok()?,
        byte_offset: window.byte_offset::<T>(raw),
        byte_len: window.len * std::mem::size_of::<T>(),
        queue: backend.queue(VIEW_QUEUE)?,
    })
}

fn sub_buffer<'v, T: Element>(
    raw: &RawBuffer,
    window: &Window,
    operation: &'static str,
) -> Result<OpenClSubBuffer<'v>> {
    if opencl_backend(raw).is_none() {
        return Err(not_opencl(operation));
    }
    let len = window.len * std::mem::size_of::<T>();
    let Some(m) = memory::<T>(raw, window) else {
        // An OpenCL buffer without a device allocation is a zero-byte one.
        return Err(Error::InvalidArgument {
            option: "OpenCL sub-buffer length",
            value: format!("{len} bytes (a zero-byte buffer has no device allocation)"),
            reason: "OpenCL has no empty buffers; an empty view has no sub-buffer",
        });
    };
    // SAFETY: `m` comes from a live view whose buffer holds its device part (and so the
    // segment) for the view's life, which bounds `'v` at the callers.
    unsafe { m.sub_buffer() }
}

fn ready_event(raw: &RawBuffer, operation: &'static str) -> Result<OpenClEvent> {
    opencl_backend(raw).ok_or_else(|| not_opencl(operation))?.marker(VIEW_QUEUE)
}

/// # Safety
///
/// As [`OpenClBackend::adopt_event`].
unsafe fn adopt(raw: &RawBuffer, event: cl_event, operation: &'static str) -> Result<crate::backend::Event> {
    let backend = opencl_backend(raw).ok_or_else(|| not_opencl(operation))?;
    // SAFETY: forwarded from this function's contract.
    Ok(Box::new(unsafe { backend.adopt_event(event) }?))
}

macro_rules! opencl_accessors {
    ($view:ident) => {
        impl<T: Element> $view<'_, T> {
            /// The view in OpenCL terms: the device allocation's `cl_mem`, the view's byte
            /// offset and length in it, and the queue to enqueue kernels on. `None` when the
            /// buffer's backend is not OpenCL, or for a zero-byte buffer (no device allocation).
            pub fn opencl(&self) -> Option<OpenClMemory> {
                memory::<T>(self.raw, &self.window)
            }

            /// A sub-buffer covering exactly the view, for kernels that take a buffer without an
            /// offset; it may be used while the view lives.
            ///
            /// Errors: [`Error::MisalignedSubBuffer`] (naming the offset and the alignment) when
            /// [`byte_offset`](Self::byte_offset) is not a multiple of the device's
            /// `CL_DEVICE_MEM_BASE_ADDR_ALIGN` (a whole buffer always is; a slice from an
            /// arbitrary element may not be); [`Error::InvalidArgument`] for an empty view;
            /// [`Error::Unsupported`] when the backend is not OpenCL.
            pub fn opencl_sub_buffer(&self) -> Result<OpenClSubBuffer<'_>> {
                sub_buffer::<T>(self.raw, &self.window, concat!(stringify!($view), "::opencl_sub_buffer"))
            }

            /// An event that completes once the view's data is on the device: a marker on
            /// [`OpenClMemory::queue`] after everything enqueued there. A kernel on a queue of
            /// the caller's (in the backend's context) waits for it through its wait list
            /// ([`OpenClEvent::wait_list`]). Not needed for kernels enqueued on
            /// `OpenClMemory::queue` itself.
            ///
            /// Errors: [`Error::Unsupported`] when the backend is not OpenCL; [`Error::Backend`]
            /// when enqueuing the marker fails.
            pub fn opencl_ready_event(&self) -> Result<OpenClEvent> {
                ready_event(self.raw, concat!(stringify!($view), "::opencl_ready_event"))
            }

            /// Hands over the completion event of a kernel the caller enqueued on this memory
            /// (typically on a queue of its own): the view keeps a reference to it, and when
            /// the view ends the buffer waits for it, as for the view's own queue, before its
            /// memory is next read, written, reused or freed.
            ///
            /// Errors, with the view unchanged: [`Error::ForeignContext`] when the event belongs
            /// to another context than the backend's (`CL_EVENT_CONTEXT`); [`Error::Unsupported`]
            /// when the backend is not OpenCL; [`Error::Backend`] when a query fails.
            pub fn opencl_completed_by(&mut self, event: &opencl3::event::Event) -> Result<()> {
                // SAFETY: an `opencl3` `Event` holds a reference to a live event while it lives.
                unsafe { self.opencl_completed_by_raw(event.get()) }
            }

            /// [`opencl_completed_by`](Self::opencl_completed_by) for a raw `cl_event`.
            ///
            /// # Safety
            ///
            /// `event` must be null (an [`Error::NullHandle`]) or a live `cl_event` on which the
            /// caller holds a reference for the duration of this call.
            pub unsafe fn opencl_completed_by_raw(&mut self, event: cl_event) -> Result<()> {
                let operation = concat!(stringify!($view), "::opencl_completed_by");
                // SAFETY: forwarded from this function's contract.
                let event = unsafe { adopt(self.raw, event, operation) }?;
                self.completions.push(event);
                Ok(())
            }
        }
    };
}

opencl_accessors!(DeviceView);
opencl_accessors!(DeviceViewMut);
