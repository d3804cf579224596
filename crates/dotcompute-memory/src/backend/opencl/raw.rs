//! Bringing your own OpenCL objects (`OpenClBackend::from_raw`) and reaching the backend's:
//! its context, device, queues and the `cl_mem` behind an allocation.

use super::backend::{OpenClBackend, Table};
use super::discovery::{find_device, OpenClOptions};
use super::error::{cl_error, BACKEND};
use super::handles::{handle, handles, RawContext, RawDevice, RawQueue};
#[cfg(doc)]
use crate::backend::Backend;
use crate::backend::{BackendId, DeviceMemory};
use crate::error::{Error, Result};
use opencl3::command_queue::{
    get_command_queue_data, retain_command_queue, CL_QUEUE_CONTEXT, CL_QUEUE_DEVICE,
    CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE, CL_QUEUE_PROPERTIES,
};
use opencl3::context::context::{get_context_data, retain_context, CL_CONTEXT_DEVICES};
use opencl3::device::retain_device;
use opencl3::types::{cl_command_queue, cl_context, cl_device_id, cl_mem};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;

impl OpenClBackend {
    /// A backend on objects the caller made: its allocations are buffers of `context`, its one
    /// queue is `queue` (queue 0, the queue device views hand to kernels), on `device_id`.
    ///
    /// The backend takes a reference of its own to each object (`clRetainContext`,
    /// `clRetainDevice`, `clRetainCommandQueue`) and gives back only those when it is dropped;
    /// it never releases the caller's references, so the caller may drop its own wrappers
    /// (e.g. `opencl3`'s `Context` and `CommandQueue`) before or after the backend. Dropping
    /// the backend does not wait for the queue (the caller's work on it is the caller's).
    ///
    /// An out-of-order queue is accepted: the backend waits for each of its own commands
    /// through that command's event, and the marker that ends a device view is a barrier there
    /// (see [`OpenClBackend::marker`]).
    ///
    /// Errors, each before anything is retained:
    /// - [`Error::NullHandle`] naming the null handle;
    /// - [`Error::DeviceNotInContext`] when `device_id` is not among `CL_CONTEXT_DEVICES`;
    /// - [`Error::ForeignContext`] when `CL_QUEUE_CONTEXT` is not `context`;
    /// - [`Error::InvalidArgument`] when `CL_QUEUE_DEVICE` is not `device_id`;
    /// - [`Error::Backend`] when a query or a retain fails.
    ///
    /// # Safety
    ///
    /// Each handle must be null or a live object of its type (a `cl_context`, a `cl_device_id`,
    /// a `cl_command_queue`) on which the caller holds a reference for the duration of this
    /// call. OpenCL cannot tell a dangling handle from a live one; passing one is undefined
    /// behaviour in the driver.
    pub unsafe fn from_raw(context: cl_context, device_id: cl_device_id, queue: cl_command_queue) -> Result<Self> {
        for (what, null) in [
            ("cl_context", context.is_null()),
            ("cl_device_id", device_id.is_null()),
            ("cl_command_queue", queue.is_null()),
        ] {
            if null {
                return Err(Error::NullHandle { backend: BACKEND, what });
            }
        }
        let devices = get_context_data(context, CL_CONTEXT_DEVICES)
            .map(|b| handles::<c_void>(&b))
            .map_err(|code| cl_error("clGetContextInfo", code))?;
        if !devices.contains(&device_id) {
            return Err(Error::DeviceNotInContext {
                backend: BACKEND,
                device: format!("{device_id:p}"),
                context: format!("{context:p}"),
                devices: devices.iter().map(|&d| format!("{d:p}")).collect::<Vec<_>>().join(", "),
            });
        }
        let queue_context = get_command_queue_data(queue, CL_QUEUE_CONTEXT)
            .map(|b| handle::<c_void>(&b))
            .map_err(|code| cl_error("clGetCommandQueueInfo", code))?;
        if queue_context != context {
            return Err(Error::ForeignContext {
                backend: BACKEND,
                what: "command queue",
                handle: format!("{queue:p}"),
                expected: format!("{context:p}"),
                found: format!("{queue_context:p}"),
            });
        }
        let queue_device = get_command_queue_data(queue, CL_QUEUE_DEVICE)
            .map(|b| handle::<c_void>(&b))
            .map_err(|code| cl_error("clGetCommandQueueInfo", code))?;
        if queue_device != device_id {
            return Err(Error::InvalidArgument {
                option: "OpenClBackend::from_raw queue",
                value: format!("queue {queue:p} of device {queue_device:p}, given device {device_id:p}"),
                reason: "the queue must be a queue of the device passed as device_id",
            });
        }
        let out_of_order = queue_properties(queue)? & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE != 0;
        let found = find_device(device_id);
        // Each wrapper is made right after its retain succeeds, so a later failure gives back
        // exactly the references taken so far.
        // SAFETY: the caller guarantees a live context; the wrapper releases this reference.
        unsafe { retain_context(context) }.map_err(|code| cl_error("clRetainContext", code))?;
        let context = RawContext(context);
        // SAFETY: as above, for the device.
        unsafe { retain_device(device_id) }.map_err(|code| cl_error("clRetainDevice", code))?;
        let device = RawDevice(device_id);
        // SAFETY: as above, for the queue.
        unsafe { retain_command_queue(queue) }.map_err(|code| cl_error("clRetainCommandQueue", code))?;
        let queue = RawQueue(queue);
        Ok(OpenClBackend {
            id: BackendId::next(),
            table: Mutex::new(Table { mems: HashMap::new(), next: 1, used: 0 }),
            queues: vec![queue],
            out_of_order: vec![out_of_order],
            device,
            context,
            borrowed: true,
            summary: found.summary,
            base_align_bits: found.base_align_bits,
            options: OpenClOptions { queues: 1, ..OpenClOptions::default() },
        })
    }

    /// The backend's context, for building programs and making queues on it. The handle stays
    /// valid while the backend lives; to keep it longer take a reference of your own
    /// (`clRetainContext`).
    pub fn context(&self) -> cl_context {
        self.context.0
    }

    /// The backend's device.
    pub fn device_id(&self) -> cl_device_id {
        self.device.0
    }

    /// The backend's queue `index` (`None` from [`Backend::queue_count`] on). Queue 0 is the one
    /// device views hand to kernels. Valid while the backend lives.
    pub fn queue(&self, index: usize) -> Option<cl_command_queue> {
        self.queues.get(index).map(|q| q.0)
    }

    /// True when queue `index` executes out of order (only a queue passed to
    /// [`OpenClBackend::from_raw`] can).
    pub fn is_out_of_order(&self, index: usize) -> bool {
        self.out_of_order.get(index).copied().unwrap_or(false)
    }

    /// The `cl_mem` behind `memory` (a whole allocation: for a pool segment, the segment). It
    /// stays valid while `memory` is not freed.
    ///
    /// Errors: [`Error::InvalidHandle`] when `memory` is not a live allocation of this backend.
    pub fn cl_mem(&self, memory: &DeviceMemory) -> Result<cl_mem> {
        Ok(self.mem(memory, 0, 0)?.raw.0)
    }
}

/// `CL_QUEUE_PROPERTIES` of `queue`.
fn queue_properties(queue: cl_command_queue) -> Result<u64> {
    let b =
        get_command_queue_data(queue, CL_QUEUE_PROPERTIES).map_err(|code| cl_error("clGetCommandQueueInfo", code))?;
    Ok(b.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes).unwrap_or(0))
}
