//! CUDA access to device views (feature `cuda`): the device pointer, length and stream a
//! kernel needs, and the two calls that order kernels on the caller's own streams.
//!
//! ```text
//!   let mut view = y.device_view_mut(Access::ReadWrite)?;
//!   let m = view.cuda().expect("a CUDA buffer");   // ptr (offset included), byte_len, stream
//!   launch the kernel on m.stream with m.ptr       // or on your stream:
//!                                                  //   view.cuda_stream_wait(&stream)?;
//!                                                  //   launch on `stream`, record `done`;
//!                                                  //   view.cuda_kernel_done(&done)?;
//!   drop(view)                                     // event recorded on m.stream; the buffer
//!                                                  // waits for it before its next use
//! ```

use super::{DeviceView, DeviceViewMut, Window, VIEW_QUEUE};
use crate::backend::cuda::cudarc::driver::{sys, CudaEvent, CudaStream};
use crate::backend::cuda::CudaBackend;
use crate::buffer::raw::RawBuffer;
use crate::element::Element;
use crate::error::{Error, Result};

/// A view's device memory on the CUDA backend, for a kernel launch.
///
/// `ptr` addresses the view's first element (the buffer's place in its pool segment and the
/// slice's offset included) and `byte_len` bytes from there belong to the view; `ptr` is 0 for
/// a zero-byte buffer, which has no device memory. `stream` is the stream to launch on: the
/// buffer orders its later uses after the work enqueued there by the time the view drops.
/// Valid while the view lives; a kernel of a read view must not write through `ptr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaMemory {
    /// Device address of the view's first element.
    pub ptr: sys::CUdeviceptr,
    /// Bytes in the view.
    pub byte_len: usize,
    /// The stream a kernel on the view runs on (the backend's queue 0).
    pub stream: sys::CUstream,
}

/// The buffer's backend as the CUDA backend, if it is.
fn backend(raw: &RawBuffer) -> Option<&CudaBackend> {
    raw.manager().backend().downcast_ref::<CudaBackend>()
}

fn memory<T: Element>(raw: &RawBuffer, window: &Window) -> Option<CudaMemory> {
    let cuda = backend(raw)?;
    let byte_len = window.len * std::mem::size_of::<T>();
    let ptr = match raw.device_location() {
        Some((memory, _)) => cuda.device_ptr(memory, window.byte_offset::<T>(raw), byte_len).ok()?,
        // Only a zero-byte buffer has a view without device memory.
        None if byte_len == 0 => 0,
        None => return None,
    };
    Some(CudaMemory { ptr, byte_len, stream: cuda.cu_stream(VIEW_QUEUE) })
}

fn not_cuda(operation: &'static str) -> Error {
    Error::Unsupported { operation, reason: "the buffer's backend is not the CUDA backend" }
}

fn stream_wait(raw: &RawBuffer, stream: &CudaStream, operation: &'static str) -> Result<()> {
    backend(raw).ok_or_else(|| not_cuda(operation))?.stream_wait_for_queue(stream, VIEW_QUEUE)
}

fn kernel_done(raw: &RawBuffer, event: &CudaEvent, operation: &'static str) -> Result<()> {
    backend(raw).ok_or_else(|| not_cuda(operation))?.queue_wait_for_event(VIEW_QUEUE, event)
}

impl<T: Element> DeviceView<'_, T> {
    /// The view's device pointer (offset included), byte length and stream, for a CUDA kernel;
    /// `None` when the buffer is not on the CUDA backend.
    pub fn cuda(&self) -> Option<CudaMemory> {
        memory::<T>(self.raw, &self.window)
    }

    /// For a kernel on the caller's own `stream` rather than [`CudaMemory::stream`]: makes the
    /// work enqueued on `stream` from now on wait until the view's memory is ready (the work
    /// enqueued on the view's stream so far has finished). [`Error::Unsupported`] when the
    /// buffer is not on the CUDA backend.
    pub fn cuda_stream_wait(&self, stream: &CudaStream) -> Result<()> {
        stream_wait(self.raw, stream, "DeviceView::cuda_stream_wait")
    }

    /// Hands the view the completion of a kernel on the caller's own stream: `event`, already
    /// recorded after the kernel. The view's stream waits for it, so the event recorded there
    /// when the view drops, and with it the buffer's next use, comes after the kernel.
    /// [`Error::Unsupported`] when the buffer is not on the CUDA backend.
    pub fn cuda_kernel_done(&self, event: &CudaEvent) -> Result<()> {
        kernel_done(self.raw, event, "DeviceView::cuda_kernel_done")
    }
}

impl<T: Element> DeviceViewMut<'_, T> {
    /// As [`DeviceView::cuda`].
    pub fn cuda(&self) -> Option<CudaMemory> {
        memory::<T>(self.raw, &self.window)
    }

    /// As [`DeviceView::cuda_stream_wait`].
    pub fn cuda_stream_wait(&self, stream: &CudaStream) -> Result<()> {
        stream_wait(self.raw, stream, "DeviceViewMut::cuda_stream_wait")
    }

    /// As [`DeviceView::cuda_kernel_done`].
    pub fn cuda_kernel_done(&self, event: &CudaEvent) -> Result<()> {
        kernel_done(self.raw, event, "DeviceViewMut::cuda_kernel_done")
    }
}
