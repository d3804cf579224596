//! Pinned host memory: a shared-storage `MTLBuffer` (memory the GPU reaches directly), and the
//! registry through which a private-storage transfer from or into one blits it in place
//! instead of staging.

use super::backend::MetalBackend;
use super::handles::{round_up_to_word, Buffer, WORD};
use crate::backend::PinnedHost;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The live pinned buffers of one backend, by the address of their first byte.
#[derive(Default)]
pub(super) struct PinnedRegistry(Mutex<BTreeMap<usize, (usize, Buffer)>>);

impl PinnedRegistry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<usize, (usize, Buffer)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pinned buffer that holds `addr..addr + len`, and `addr`'s offset in it, when that
    /// offset is one a blit may use (a multiple of [`WORD`]).
    pub(super) fn find(&self, addr: *const u8, len: usize) -> Option<(Buffer, usize)> {
        let addr = addr as usize;
        let table = self.lock();
        let (&start, (size, buffer)) = table.range(..=addr).next_back()?;
        let offset = addr - start;
        (offset.checked_add(len)? <= *size && offset.is_multiple_of(WORD)).then(|| (buffer.clone(), offset))
    }
}

/// Pinned host memory from [`MetalBackend`]'s `allocate_pinned`: a shared-storage buffer,
/// zeroed. It keeps its own reference to the buffer, so it may outlive the backend.
pub(super) struct MetalPinned {
    buffer: Buffer,
    len: usize,
    registry: Arc<PinnedRegistry>,
}

impl MetalBackend {
    /// `len` bytes of shared-storage memory for staging transfers, registered so that the
    /// backend's private-storage copies blit it directly.
    pub(super) fn pinned(&self, len: usize) -> Result<MetalPinned> {
        let bytes =
            round_up_to_word(len.max(1)).filter(|&b| b <= self.max_buffer).ok_or_else(|| Error::InvalidArgument {
                option: "pinned allocation size",
                value: format!(
                    "{len} bytes, above this device's largest buffer of {} bytes (maxBufferLength)",
                    self.max_buffer
                ),
                reason: "one Metal buffer cannot exceed maxBufferLength",
            })?;
        let buffer = self.new_buffer(bytes, true).ok_or_else(|| self.out_of_memory(len))?;
        // SAFETY: a fresh shared buffer of `bytes` bytes that nothing else references yet; it is
        // initialised here before any slice over it exists.
        unsafe { std::ptr::write_bytes(buffer.contents(), 0, bytes) };
        self.pinned.lock().insert(buffer.contents() as usize, (bytes, buffer.clone()));
        Ok(MetalPinned { buffer, len, registry: Arc::clone(&self.pinned) })
    }
}

impl PinnedHost for MetalPinned {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes of the buffer's CPU memory, zeroed at creation and alive while
        // `self` holds the buffer; mutation needs `&mut self`. The GPU writes them only during a
        // read whose contract keeps the caller off these bytes until it has completed.
        unsafe { std::slice::from_raw_parts(self.buffer.contents(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` excludes every other reference.
        unsafe { std::slice::from_raw_parts_mut(self.buffer.contents(), self.len) }
    }
}

impl Drop for MetalPinned {
    fn drop(&mut self) {
        self.registry.lock().remove(&(self.buffer.contents() as usize));
    }
}
