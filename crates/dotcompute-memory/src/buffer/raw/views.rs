//! The hooks of device views: preparing the device part for a kernel, where its memory is, and
//! ordering the buffer's later work after the kernel.

use super::parts::{Parts, Replacement};
use super::pending::Pending;
use super::RawBuffer;
use crate::backend::Event;
use crate::error::Result;
use std::ptr::NonNull;
use std::time::Instant;

impl RawBuffer {
    /// Makes the device part hold the data a kernel will see: uploads when the host part is
    /// newer, except for a kernel that overwrites the whole buffer (`upload` false), which only
    /// needs the device part to exist.
    pub(crate) fn prepare_device(&self, upload: bool) -> Result<()> {
        if upload {
            return self.push();
        }
        self.settle()?;
        self.ensure_device_part().map(drop)
    }

    /// Host address of the device part's first byte, where the host can address device memory
    /// (unified memory, the simulator); `None` on a real discrete device or without a device
    /// part. Valid while the device part is not replaced or freed.
    pub(crate) fn device_ptr_on_host(&self) -> Option<NonNull<u8>> {
        match &self.parts {
            Parts::Unified { ptr, .. } => Some(*ptr),
            Parts::Discrete { device, .. } => device.get()?.device_ptr_on_host(),
        }
    }

    /// The device allocation holding the device part and the part's offset in it (`None`
    /// without a device part, or for a zero-byte buffer).
    pub(crate) fn device_location(&self) -> Option<(&crate::backend::DeviceMemory, usize)> {
        let region = match &self.parts {
            Parts::Unified { memory, .. } => memory.as_ref(),
            Parts::Discrete { device, .. } => device.get(),
        }?;
        Some((region.memory(), region.offset()))
    }

    /// A kernel on `queue` wrote the device part: the device part becomes the newest, and the
    /// buffer waits for the queue's work, and for `completions` (events of kernels the user ran
    /// elsewhere on this memory), before its next use of this memory.
    pub(crate) fn end_device_write(&mut self, queue: usize, completions: Vec<Event>) {
        self.device_written();
        self.order_after_kernel(queue, completions);
    }

    /// A kernel on `queue` read the device part: no state changes, but the buffer waits for
    /// the queue's work, and for `completions`, before its memory is written or reused.
    pub(crate) fn end_device_read(&self, queue: usize, completions: Vec<Event>) {
        self.order_after_kernel(queue, completions);
    }

    fn order_after_kernel(&self, queue: usize, mut completions: Vec<Event>) {
        let backend = self.mm.backend();
        match backend.enqueue_marker(queue) {
            Ok(None) => {}
            Ok(Some(event)) => completions.push(event),
            // Without a marker, wait for everything the device has queued.
            Err(_) => {
                let _ = backend.synchronize();
            }
        }
        let Some(event) = crate::backend::all_of(completions) else { return };
        // An earlier view's marker or completion events may still be pending (several read
        // views can end one after the other); settle them so their outcome is not lost.
        let _ = self.settle();
        self.set_pending(Pending {
            event,
            direction: None,
            bytes: 0,
            started: Instant::now(),
            host: Replacement::none(),
            device: Replacement::none(),
            epochs_after: self.epochs.get(),
            hint: false,
        });
    }
}
