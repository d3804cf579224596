//! Metal access to device views (feature `metal`, macOS): the `MTLBuffer`, the view's byte
//! offset and length in it, and the queue to commit a kernel's compute pass on.
//!
//! ```text
//!   let mut view = buf.device_view_mut(Access::ReadWrite)?;
//!   let m = view.metal().expect("a Metal buffer");    MTLBuffer of the pool segment, the view's
//!                                                     byte offset and length, our queue 0
//!   encoder.setBuffer_offset_atIndex(Some(&m.buffer), m.byte_offset, 0) in a command buffer
//!   of m.queue; dispatch; commit
//!   drop(view)                                        an empty command buffer on m.queue: the
//!                                                     buffer's next use waits for the kernel
//! ```
//!
//! The buffer is the whole device allocation (a pool segment holds many buffers), so a slice
//! of a buffer is the same `MTLBuffer` with a larger offset. With shared storage the view's
//! [`device_slice`](super::DeviceView::device_slice) is the same memory as seen by the CPU.

use super::{DeviceView, DeviceViewMut, Window, VIEW_QUEUE};
use crate::backend::metal::objc2::rc::Retained;
use crate::backend::metal::objc2::runtime::ProtocolObject;
use crate::backend::metal::objc2::Message;
use crate::backend::metal::objc2_metal::{MTLBuffer, MTLCommandQueue};
use crate::backend::metal::MetalBackend;
use crate::buffer::raw::RawBuffer;
use crate::element::Element;

/// Where a device view's elements are in Metal terms, from [`DeviceView::metal`] /
/// [`DeviceViewMut::metal`]. The references are the backend's: use them for kernels only while
/// the view lives (once it ends, the buffer may copy from or into this memory, or the pool may
/// give it to another buffer). A kernel of a read view must not write the range.
#[derive(Debug, Clone)]
pub struct MetalMemory {
    /// The buffer holding the view: a pool segment shared with other buffers. Its `contents`
    /// is a CPU address only with shared storage (a private buffer has none).
    pub buffer: Retained<ProtocolObject<dyn MTLBuffer>>,
    /// Bytes from the start of `buffer` to the view's first element (what
    /// `setBuffer:offset:atIndex:` takes).
    pub byte_offset: usize,
    /// Bytes in the view.
    pub byte_len: usize,
    /// The backend's queue 0: a command buffer of this queue committed while the view lives is
    /// ordered before the buffer's next use without anything more.
    pub queue: Retained<ProtocolObject<dyn MTLCommandQueue>>,
}

impl MetalMemory {
    /// `byte_offset` in elements of `T`, for a kernel that takes a `device T*` and an element
    /// offset; `None` when the offset is not a multiple of `size_of::<T>()`.
    pub fn element_offset<T>(&self) -> Option<usize> {
        let size = std::mem::size_of::<T>();
        (size != 0 && self.byte_offset.is_multiple_of(size)).then(|| self.byte_offset / size)
    }
}

fn memory<T: Element>(raw: &RawBuffer, window: &Window) -> Option<MetalMemory> {
    let backend = raw.manager().backend().downcast_ref::<MetalBackend>()?;
    let (device, _) = raw.device_location()?;
    let (buffer, base) = backend.buffer(device).ok()?;
    Some(MetalMemory {
        buffer,
        byte_offset: base + window.byte_offset::<T>(raw),
        byte_len: window.len * std::mem::size_of::<T>(),
        queue: backend.queue(VIEW_QUEUE)?.retain(),
    })
}

macro_rules! metal_accessors {
    ($view:ident) => {
        impl<T: Element> $view<'_, T> {
            /// The view in Metal terms: the device allocation's `MTLBuffer`, the view's byte
            /// offset and length in it, and the queue to commit kernels on. `None` when the
            /// buffer's backend is not Metal, or for a zero-byte buffer (no device allocation).
            pub fn metal(&self) -> Option<MetalMemory> {
                memory::<T>(self.raw, &self.window)
            }
        }
    };
}

metal_accessors!(DeviceView);
metal_accessors!(DeviceViewMut);
