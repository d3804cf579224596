//! Device views: a kernel's access to a buffer's device memory.
//!
//! A view is made for one access ([`Access`]) and holds the buffer borrowed while it lives, so
//! no host access can race the kernel:
//!
//! ```text
//!   buf.device_view_mut(Access::ReadWrite)?   uploads first if the host part is newer
//!      │  view.device_slice_mut()              cpu, sim: the device memory as &mut [T]
//!      │  view.opencl() / cuda() / metal()     the native handle + offset, for your kernel
//!      │  view.opencl_completed_by(&event)     a kernel on a queue of yours: we wait for it too
//!   drop(view)                                 device part now the newest (DeviceDirty); the
//!                                              buffer waits for the view's queue before its
//!                                              memory is next read, written, reused or freed
//! ```
//!
//! As Tpetra's `getDeviceView(Access::…)`: `Read` changes no state, `ReadWrite` makes the
//! device side current when the view ends, and `Overwrite` skips the upload because the kernel
//! writes every element (on a slice that does not cover the whole buffer, the rest of the
//! buffer must stay correct, so it uploads like `ReadWrite`).

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(all(feature = "metal", target_os = "macos"))]
pub mod metal;
#[cfg(feature = "opencl")]
pub mod opencl;

use super::raw::RawBuffer;
use crate::backend::Event;
use crate::element::Element;
use std::marker::PhantomData;
use std::ptr::NonNull;

/// What a kernel does with a view's elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reads only: the buffer's state does not change.
    Read,
    /// Reads and writes: the device side is the current one once the view ends.
    ReadWrite,
    /// Writes every element without reading: nothing is uploaded first.
    Overwrite,
}

impl Access {
    pub(crate) fn writes(self) -> bool {
        self != Access::Read
    }
}

/// The queue (OpenCL command queue, CUDA stream) views hand to kernels: the backend's first.
pub(crate) const VIEW_QUEUE: usize = 0;

/// Where a view's elements are, shared by both view kinds.
struct Window {
    /// First element of the view in the buffer.
    start: usize,
    /// Elements in the view.
    len: usize,
}

impl Window {
    fn byte_offset<T: Element>(&self, raw: &RawBuffer) -> usize {
        raw.device_location().map_or(0, |(_, at)| at) + self.start * std::mem::size_of::<T>()
    }

    /// The view's first element in host-addressable device memory, if the backend has such
    /// memory and the address suits `T`.
    fn host_ptr<T: Element>(&self, raw: &RawBuffer) -> Option<NonNull<T>> {
        let base = raw.device_ptr_on_host()?;
        let ptr = base.as_ptr().wrapping_add(self.start * std::mem::size_of::<T>());
        if !(ptr as usize).is_multiple_of(std::mem::align_of::<T>()) {
            return None;
        }
        NonNull::new(ptr.cast::<T>())
    }
}

/// Read access to a range of a buffer's device memory, for a kernel; made by `device_view`.
#[must_use = "a view orders kernels only while it lives: enqueue the kernel before dropping it"]
pub struct DeviceView<'a, T: Element> {
    raw: &'a RawBuffer,
    window: Window,
    /// Completion events of the user's kernels on this memory (`opencl_completed_by`): the
    /// buffer waits for them too once the view ends.
    completions: Vec<Event>,
    _element: PhantomData<&'a [T]>,
}

/// Read-write access to a range of a buffer's device memory, for a kernel; made by
/// `device_view_mut`. Dropping it makes the device side current (unless the access was
/// [`Access::Read`]).
#[must_use = "a view orders kernels only while it lives: enqueue the kernel before dropping it"]
pub struct DeviceViewMut<'a, T: Element> {
    raw: &'a mut RawBuffer,
    window: Window,
    access: Access,
    /// As in [`DeviceView`].
    completions: Vec<Event>,
    _element: PhantomData<&'a mut [T]>,
}

/// The methods both view kinds share: they read only the window and the borrowed buffer.
macro_rules! shared_view_methods {
    () => {
        /// Elements in the view.
        pub fn len(&self) -> usize {
            self.window.len
        }

        /// True for an empty view.
        pub fn is_empty(&self) -> bool {
            self.window.len == 0
        }

        /// Bytes from the start of the device allocation (a pool segment) to the view's first
        /// element: what a kernel adds to the allocation's base handle.
        pub fn byte_offset(&self) -> usize {
            self.window.byte_offset::<T>(&*self.raw)
        }

        /// Bytes in the view.
        pub fn byte_len(&self) -> usize {
            self.window.len * std::mem::size_of::<T>()
        }

        /// The device memory as a slice where the host can address it (cpu: the buffer's one
        /// allocation; sim: the simulated device memory), so a kernel can be a plain closure;
        /// `None` on a real discrete device.
        pub fn device_slice(&self) -> Option<&[T]> {
            let ptr = self.window.host_ptr::<T>(&*self.raw)?;
            // SAFETY: the pointer addresses the view's `len` elements inside the device part
            // (`device_ptr_on_host`'s contract: valid for the allocation's size until freed),
            // which the borrowed buffer keeps alive; nothing writes them while this `&self`
            // borrow lives (a shared view's buffer is only read, and a mutable view's
            // `device_slice_mut` needs `&mut self`); alignment was checked, and every byte
            // pattern is a valid `T` (Pod).
            Some(unsafe { std::slice::from_raw_parts(ptr.as_ptr(), self.window.len) })
        }
    };
}

impl<'a, T: Element> DeviceView<'a, T> {
    pub(crate) fn new(raw: &'a RawBuffer, start: usize, len: usize) -> Self {
        DeviceView { raw, window: Window { start, len }, completions: Vec::new(), _element: PhantomData }
    }

    shared_view_methods!();
}

impl<T: Element> Drop for DeviceView<'_, T> {
    fn drop(&mut self) {
        self.raw.end_device_read(VIEW_QUEUE, std::mem::take(&mut self.completions));
    }
}

impl<'a, T: Element> DeviceViewMut<'a, T> {
    pub(crate) fn new(raw: &'a mut RawBuffer, start: usize, len: usize, access: Access) -> Self {
        DeviceViewMut { raw, window: Window { start, len }, access, completions: Vec::new(), _element: PhantomData }
    }

    shared_view_methods!();

    /// The access the view was made for.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The device memory as a mutable slice where the host can address it (cpu, sim), so a
    /// kernel can be a plain closure; `None` on a real discrete device.
    pub fn device_slice_mut(&mut self) -> Option<&mut [T]> {
        let ptr = self.window.host_ptr::<T>(self.raw)?;
        // SAFETY: as in `device_slice`; the view holds the buffer mutably borrowed, so nothing
        // else reads or writes these elements while the returned slice (borrowing `self`)
        // lives.
        Some(unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), self.window.len) })
    }
}

impl<T: Element> Drop for DeviceViewMut<'_, T> {
    fn drop(&mut self) {
        let completions = std::mem::take(&mut self.completions);
        if self.access.writes() {
            self.raw.end_device_write(VIEW_QUEUE, completions);
        } else {
            self.raw.end_device_read(VIEW_QUEUE, completions);
        }
    }
}

impl<T: Element> std::fmt::Debug for DeviceView<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceView")
            .field("start", &self.window.start)
            .field("len", &self.window.len)
            .field("byte_offset", &self.byte_offset())
            .finish()
    }
}

impl<T: Element> std::fmt::Debug for DeviceViewMut<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceViewMut")
            .field("start", &self.window.start)
            .field("len", &self.window.len)
            .field("access", &self.access)
            .field("byte_offset", &self.byte_offset())
            .finish()
    }
}
