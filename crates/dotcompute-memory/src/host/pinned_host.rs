//! `PinnedHost`: page-locked host memory that a backend can copy to and from directly. The
//! host layer's pinned buffers implement it; backends hand out their own kinds through it.

/// Page-locked host memory that a backend can transfer to and from directly (DMA), without
/// the intermediate copy a driver makes for pageable memory. Made by
/// [`Backend::allocate_pinned`](crate::backend::Backend::allocate_pinned); freed (unpinned) on drop.
pub trait PinnedHost: Send + Sync {
    /// The bytes.
    fn bytes(&self) -> &[u8];
    /// The bytes, mutably.
    fn bytes_mut(&mut self) -> &mut [u8];
}

impl std::fmt::Debug for dyn PinnedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedHost").field("len", &self.bytes().len()).finish()
    }
}
