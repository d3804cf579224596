//! Copies between two backends on one OpenCL context (for example two `from_raw` backends on the
//! caller's context, one per device or queue): a buffer of a context is usable by every queue of
//! it, so the copy is one `clEnqueueCopyBuffer`. Backends on different contexts cannot reach each
//! other; copies between them are staged through host memory by the buffers.

use super::backend::OpenClBackend;
use super::error::cl_error;
use super::event::wait_raw;
use super::handles::RawEvent;
use crate::backend::{Backend, DeviceMemory};
use crate::error::{Error, Result};
use opencl3::command_queue::enqueue_copy_buffer;
use std::ptr;

impl OpenClBackend {
    /// True when `peer` is another backend on this backend's context.
    pub(super) fn shares_context_with(&self, peer: &OpenClBackend) -> bool {
        peer.context.0 == self.context.0
    }

    /// `Backend::copy_from_peer`: waits for the source backend's queued work, then copies on
    /// this backend's first queue and waits for it.
    pub(super) fn copy_from_context_peer(
        &self,
        src_backend: &dyn Backend,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        let peer = src_backend.downcast_ref::<OpenClBackend>().filter(|p| self.shares_context_with(p)).ok_or(
            Error::Unsupported {
                operation: "OpenClBackend::copy_from_peer",
                reason: "the source is not an OpenCL backend on this backend's context; copy through host memory",
            },
        )?;
        let s = peer.mem(src, src_offset, len)?;
        let d = self.mem(dst, dst_offset, len)?;
        if len == 0 {
            return Ok(());
        }
        peer.synchronize()?;
        // SAFETY: both buffers are live (held by the `Arc`s until the copy has been waited for),
        // belong to this queue's context, and the ranges were checked against them.
        let event = unsafe {
            enqueue_copy_buffer(self.queue_at(0), s.raw.0, d.raw.0, src_offset, dst_offset, len, 0, ptr::null())
        }
        .map(RawEvent)
        .map_err(|code| cl_error("clEnqueueCopyBuffer", code))?;
        wait_raw(&event, "clEnqueueCopyBuffer")
    }
}
