//! How a `HostBuffer`'s memory is released: the `Storage` kinds and the `Deleter` of foreign
//! memory, shared by the allocator (`aligned`) and the wrapper of foreign memory (`external`).

use std::alloc::Layout;
#[cfg(all(unix, not(miri)))]
use std::ptr::NonNull;

/// Frees foreign memory: called once with the pointer and element count given to
/// [`HostBuffer::from_raw_parts`](super::HostBuffer::from_raw_parts).
pub type Deleter<T> = Box<dyn FnOnce(*mut T, usize) + Send + 'static>;

/// How a buffer's memory is released.
pub(crate) enum Storage<T> {
    /// Zero bytes: nothing to release.
    Empty,
    /// From the global allocator with this layout.
    Heap(Layout),
    /// An anonymous mapping of `len` bytes at `base`.
    #[cfg(all(unix, not(miri)))]
    Mapped { base: NonNull<u8>, len: usize },
    /// Someone else's memory that we never free.
    Borrowed,
    /// Someone else's memory; call the deleter (once) on drop.
    Owned(Option<Deleter<T>>),
}

impl<T> Storage<T> {
    /// A word for `Debug` output.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Storage::Empty => "empty",
            Storage::Heap(_) => "heap",
            #[cfg(all(unix, not(miri)))]
            Storage::Mapped { .. } => "mapped",
            Storage::Borrowed => "borrowed",
            Storage::Owned(_) => "owned foreign",
        }
    }

    /// True for memory wrapped from elsewhere (`HostBuffer::from_raw_parts`).
    pub(crate) fn is_foreign(&self) -> bool {
        matches!(self, Storage::Borrowed | Storage::Owned(_))
    }
}
