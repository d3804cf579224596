//! Page-locked host memory from `cuMemHostAlloc`, for staging transfers.

use super::*;

/// Page-locked host memory from `cuMemHostAlloc`; keeps the context it was allocated in.
pub(super) struct CudaPinned {
    pub(super) ptr: NonNull<u8>,
    pub(super) len: usize,
    pub(super) context: Arc<Context>,
}

// SAFETY: owned host memory, like a Box<[u8]>; the context is thread-safe (see `Context`).
unsafe impl Send for CudaPinned {}
// SAFETY: shared access only reads; mutation needs &mut self.
unsafe impl Sync for CudaPinned {}

impl crate::host::PinnedHost for CudaPinned {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes at `ptr`, zeroed at allocation, live until Drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and &mut self excludes other references.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for CudaPinned {
    fn drop(&mut self) {
        let _bound = self.context.bind();
        // SAFETY: the allocation made in allocate_pinned, freed once, in its own context (kept
        // alive by `self.context`).
        let _ = unsafe { cu::free_host(self.ptr.as_ptr().cast()) };
    }
}
