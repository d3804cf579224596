//! Views into a buffer that share its memory: `BufferSlice` (read) and `BufferSliceMut`.
//!
//! A view is a range plus a borrow of its buffer. Host access goes through the buffer's
//! coherence (a read may pull the whole buffer from the device; a partial write pulls first, so
//! the rest of the buffer stays correct). Bounds given to a view are the view's own.

use super::unified::UnifiedBuffer;
use super::view::{Access, DeviceView, DeviceViewMut};
use crate::element::Element;
use crate::error::{check_len, check_range, Result};
use std::ops::RangeBounds;

/// Anything that can be read as a range of a buffer: a buffer or one of its views.
pub trait AsBufferView<T: Element> {
    /// The whole of `self` as a read-only view.
    fn view(&self) -> BufferSlice<'_, T>;
}

/// A read-only window `[offset, offset + len)` into a [`UnifiedBuffer`].
#[derive(Clone, Copy)]
pub struct BufferSlice<'a, T: Element> {
    buf: &'a UnifiedBuffer<T>,
    start: usize,
    len: usize,
}

impl<T: Element> std::fmt::Debug for BufferSlice<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferSlice")
            .field("offset", &self.start)
            .field("len", &self.len)
            .field("buffer", self.buf)
            .finish()
    }
}

impl<'a, T: Element> BufferSlice<'a, T> {
    pub(crate) fn new(buf: &'a UnifiedBuffer<T>, start: usize, len: usize) -> Self {
        BufferSlice { buf, start, len }
    }

    pub(crate) fn buffer(&self) -> &'a UnifiedBuffer<T> {
        self.buf
    }

    /// Number of elements in the view.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty view.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Index of the view's first element in the whole buffer.
    pub fn offset(&self) -> usize {
        self.start
    }

    /// A sub-view; `range` is relative to this view.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Result<BufferSlice<'a, T>> {
        let (s, e) = check_range(range, self.len)?;
        Ok(BufferSlice { buf: self.buf, start: self.start + s, len: e - s })
    }

    /// Copies the view into `out` (same length), from whichever part is current.
    pub fn copy_to(&self, out: &mut [T]) -> Result<()> {
        check_len("copy_to", self.len, out.len())?;
        self.buf.read_range(self.start, out)
    }

    /// The view's contents as a new `Vec`.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let mut v = vec![T::zeroed(); self.len];
        self.copy_to(&mut v)?;
        Ok(v)
    }

    /// Read access to the view's device memory for a kernel (see
    /// [`UnifiedBuffer::device_view`]); its `byte_offset` includes the view's offset.
    ///
    /// After this call the buffer's state is as after [`UnifiedBuffer::ensure_on_device`].
    pub fn device_view(&self) -> Result<DeviceView<'a, T>> {
        self.buf.device_view_range(self.start, self.len)
    }

    /// Zero-copy host access (pulls the buffer from the device first when needed).
    ///
    /// After this call the buffer's state is as after [`UnifiedBuffer::ensure_on_host`].
    pub fn as_slice(&self) -> Result<&'a [T]> {
        self.buf.host_range(self.start, self.len)
    }
}

impl<T: Element> AsBufferView<T> for BufferSlice<'_, T> {
    fn view(&self) -> BufferSlice<'_, T> {
        *self
    }
}

/// A mutable window `[offset, offset + len)` into a [`UnifiedBuffer`].
pub struct BufferSliceMut<'a, T: Element> {
    buf: &'a mut UnifiedBuffer<T>,
    start: usize,
    len: usize,
}

impl<T: Element> std::fmt::Debug for BufferSliceMut<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferSliceMut")
            .field("offset", &self.start)
            .field("len", &self.len)
            .field("buffer", &*self.buf)
            .finish()
    }
}

impl<'a, T: Element> BufferSliceMut<'a, T> {
    pub(crate) fn new(buf: &'a mut UnifiedBuffer<T>, start: usize, len: usize) -> Self {
        BufferSliceMut { buf, start, len }
    }

    /// Number of elements in the view.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty view.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Index of the view's first element in the whole buffer.
    pub fn offset(&self) -> usize {
        self.start
    }

    /// A read-only sub-view; `range` is relative to this view.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Result<BufferSlice<'_, T>> {
        let (s, e) = check_range(range, self.len)?;
        Ok(BufferSlice::new(self.buf, self.start + s, e - s))
    }

    /// A mutable sub-view; `range` is relative to this view.
    pub fn slice_mut(&mut self, range: impl RangeBounds<usize>) -> Result<BufferSliceMut<'_, T>> {
        let (s, e) = check_range(range, self.len)?;
        Ok(BufferSliceMut { buf: self.buf, start: self.start + s, len: e - s })
    }

    /// Copies `src` (same length) into the view: a host write (the rest of the buffer is
    /// pulled first when the device part is newer).
    ///
    /// After this call the buffer's state is `HostDirty`, or `HostOnly` when it has no device
    /// part (an empty view of a non-empty buffer changes nothing).
    pub fn copy_from(&mut self, src: &[T]) -> Result<()> {
        check_len("copy_from", self.len, src.len())?;
        self.buf.write_range(self.start, src)
    }

    /// Copies the view into `out` (same length).
    pub fn copy_to(&self, out: &mut [T]) -> Result<()> {
        check_len("copy_to", self.len, out.len())?;
        self.buf.read_range(self.start, out)
    }

    /// Sets every element of the view to `value` (a host write, as
    /// [`BufferSliceMut::copy_from`]).
    ///
    /// After this call the buffer's state is `HostDirty`, or `HostOnly` when it has no device
    /// part (an empty view of a non-empty buffer changes nothing).
    pub fn fill(&mut self, value: T) -> Result<()> {
        self.buf.fill_range(self.start, self.len, value)
    }

    /// Zero-copy host access.
    ///
    /// After this call the buffer's state is as after [`UnifiedBuffer::ensure_on_host`].
    pub fn as_slice(&self) -> Result<&[T]> {
        self.buf.host_range(self.start, self.len)
    }

    /// Read access to the view's device memory for a kernel (see
    /// [`UnifiedBuffer::device_view`]); its `byte_offset` includes the view's offset.
    ///
    /// After this call the buffer's state is as after [`UnifiedBuffer::ensure_on_device`].
    pub fn device_view(&self) -> Result<DeviceView<'_, T>> {
        self.buf.device_view_range(self.start, self.len)
    }

    /// Access to the view's device memory for a kernel (see
    /// [`UnifiedBuffer::device_view_mut`]). `Overwrite` of a view that does not cover the
    /// whole buffer uploads first, as `ReadWrite` does: the rest of the buffer stays correct.
    ///
    /// After the view ends the buffer's state is as after the view of
    /// [`UnifiedBuffer::device_view_mut`] ends.
    pub fn device_view_mut(&mut self, access: Access) -> Result<DeviceViewMut<'_, T>> {
        self.buf.device_view_mut_range(self.start, self.len, access)
    }

    /// Runs `kernel` on [`BufferSliceMut::device_view_mut`] and ends the view when it returns.
    ///
    /// After this call the buffer's state is as after that view ends.
    pub fn with_device_mut<R>(
        &mut self,
        access: Access,
        kernel: impl FnOnce(&mut DeviceViewMut<'_, T>) -> R,
    ) -> Result<R> {
        let mut view = self.device_view_mut(access)?;
        Ok(kernel(&mut view))
    }

    /// Zero-copy mutable host access; pulls first when needed and marks the host part written.
    ///
    /// After this call the buffer's state is `HostDirty`, or `HostOnly` when it has no device
    /// part.
    pub fn as_mut_slice(&mut self) -> Result<&mut [T]> {
        self.buf.host_range_mut(self.start, self.len)
    }

    /// Device-to-device copy of `src` (same length, same manager) into this view (the rest of
    /// the buffer is uploaded first when the host part is newer).
    ///
    /// After this call the buffer's state is `DeviceDirty`, or `DeviceOnly` when it has no host
    /// part (an empty view of a non-empty buffer changes nothing).
    pub fn copy_from_buffer<S: AsBufferView<T> + ?Sized>(&mut self, src: &S) -> Result<()> {
        let view = src.view();
        self.buf.copy_range_from(self.start, self.len, &view)
    }
}

impl<T: Element> AsBufferView<T> for BufferSliceMut<'_, T> {
    fn view(&self) -> BufferSlice<'_, T> {
        BufferSlice::new(self.buf, self.start, self.len)
    }
}
