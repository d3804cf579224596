//! Raw OpenCL handles that give their reference back on drop without panicking, the table
//! entry of one allocation, and decoding of handles returned by info queries.

use opencl3::command_queue::release_command_queue;
use opencl3::context::context::release_context;
use opencl3::device::release_device;
use opencl3::event::release_event;
use opencl3::memory::release_mem_object;
use opencl3::types::{cl_command_queue, cl_context, cl_device_id, cl_event, cl_mem};
use std::ptr;

macro_rules! raw_handle {
    ($(#[$doc:meta])* $name:ident, $raw:ty, $release:path) => {
        $(#[$doc])*
        pub(super) struct $name(pub(super) $raw);

        // SAFETY: OpenCL objects are reference-counted by the driver, and every OpenCL API
        // call except clSetKernelArg is thread-safe (OpenCL 1.1+, spec section A.2), so the
        // handle may be used and released from any thread.
        unsafe impl Send for $name {}
        // SAFETY: as above; shared use only passes the handle to thread-safe API calls.
        unsafe impl Sync for $name {}

        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: this wrapper holds one reference to a live object, made when it was
                // created, and gives it back exactly once. A failure leaks the object.
                let _ = unsafe { $release(self.0) };
            }
        }
    };
}

raw_handle!(
    /// One reference to a `cl_context`.
    RawContext,
    cl_context,
    release_context
);
raw_handle!(
    /// One reference to a `cl_command_queue`.
    RawQueue,
    cl_command_queue,
    release_command_queue
);
raw_handle!(
    /// One reference to a `cl_mem`.
    RawMem,
    cl_mem,
    release_mem_object
);
raw_handle!(
    /// One reference to a `cl_event`.
    RawEvent,
    cl_event,
    release_event
);
raw_handle!(
    /// One reference to a `cl_device_id` (`clRetainDevice` counts only for sub-devices; on a
    /// root device retaining and releasing do nothing).
    RawDevice,
    cl_device_id,
    release_device
);

/// One allocation in the handle table.
pub(super) struct Mem {
    pub(super) raw: RawMem,
    /// Bytes held on the device (at least 1: OpenCL has no empty buffers).
    pub(super) bytes: usize,
}

/// Handles an OpenCL info query returned as an array of pointers (`CL_CONTEXT_DEVICES`).
pub(super) fn handles<T>(bytes: &[u8]) -> Vec<*mut T> {
    bytes
        .chunks_exact(std::mem::size_of::<usize>())
        .filter_map(|c| c.try_into().ok())
        .map(|c| usize::from_ne_bytes(c) as *mut T)
        .collect()
}

/// The single handle an OpenCL info query returned (`CL_QUEUE_CONTEXT`, `CL_EVENT_CONTEXT`).
pub(super) fn handle<T>(bytes: &[u8]) -> *mut T {
    handles(bytes).first().copied().unwrap_or(ptr::null_mut())
}
