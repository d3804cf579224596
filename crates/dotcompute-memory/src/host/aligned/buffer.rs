//! `HostBuffer<T>`: host memory holding initialised `T`s, with the pages it got (`PageInfo`,
//! `PageKind`), its alignment and NUMA node; freed on drop as its `Storage` says.

use crate::element::Element;
#[cfg(all(unix, not(miri)))]
use crate::host::mmap;
#[cfg(all(target_os = "linux", not(miri)))]
use crate::host::os;
use crate::host::storage::Storage;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// What kind of pages back a [`HostBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PageKind {
    /// Memory from the global allocator (ordinary pages, possibly shared with other heap data).
    Heap,
    /// A private anonymous mapping of base pages.
    Base,
    /// A private anonymous mapping advised with `MADV_HUGEPAGE`: the kernel backs it with
    /// transparent huge pages when it can (see [`HostBuffer::resident_huge_page_bytes`]).
    TransparentHuge,
    /// A `MAP_HUGETLB` mapping from the reserved hugetlbfs pool: huge pages guaranteed.
    HugeTlb,
    /// Memory wrapped with [`HostBuffer::from_raw_parts`]; its pages are the owner's business.
    Foreign,
}

/// The pages a buffer got, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PageInfo {
    /// Kind of pages.
    pub kind: PageKind,
    /// Page size in bytes (the huge page size for `TransparentHuge` and `HugeTlb`).
    pub size: usize,
    /// Why these pages: what was asked, what was tried, what failed.
    pub reason: String,
}

/// Host memory holding `len` initialised `T`s, with known alignment, pages and NUMA node.
///
/// Dereferences to `[T]`. Made by [`HostAlloc::allocate`](super::HostAlloc::allocate) or, for
/// memory from elsewhere, [`HostBuffer::from_raw_parts`]. Dropping it frees the memory it owns.
pub struct HostBuffer<T> {
    pub(crate) ptr: NonNull<T>,
    pub(crate) len: usize,
    pub(crate) storage: Storage<T>,
    pub(crate) page: PageInfo,
    pub(crate) numa_node: Option<u32>,
    pub(crate) alignment: usize,
    /// The manager whose statistics count this buffer, if any.
    pub(crate) stats: Option<std::sync::Arc<crate::stats::StatCounters>>,
}

// SAFETY: a HostBuffer owns (or, for borrowed memory, has exclusive use of, by the
// from_raw_parts contract) its elements like a Box<[T]>; moving it moves that. The deleter of
// owned foreign memory is `Send`.
unsafe impl<T: Send> Send for HostBuffer<T> {}
// SAFETY: `&HostBuffer` only gives out `&[T]`; mutation and the deleter need `&mut`/ownership.
unsafe impl<T: Sync> Sync for HostBuffer<T> {}

impl<T> HostBuffer<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Start address.
    pub fn as_ptr(&self) -> *const T {
        self.ptr.as_ptr()
    }

    /// Start address for writing; valid while no slice borrowed from the buffer is alive.
    pub fn as_mut_ptr(&mut self) -> *mut T {
        self.ptr.as_ptr()
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: ptr is aligned and valid for `len` initialised elements for as long as self
        // lives (allocation zeroed it, or the from_raw_parts contract says so); mutation
        // requires &mut self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The elements, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`, and &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Size in bytes of the elements (not of the mapping, which may be rounded up).
    pub fn size_bytes(&self) -> usize {
        std::mem::size_of_val(self.as_slice())
    }

    /// The alignment the buffer was allocated with (for wrapped memory: the element's).
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// The size of the pages that back the buffer.
    pub fn page_size(&self) -> usize {
        self.page.size
    }

    /// The kind of pages that back the buffer.
    pub fn page_kind(&self) -> PageKind {
        self.page.kind
    }

    /// Kind, size and the reason for them.
    pub fn page_info(&self) -> &PageInfo {
        &self.page
    }

    /// The NUMA node the buffer was allocated for (`None`: no placement was asked).
    pub fn numa_node(&self) -> Option<u32> {
        self.numa_node
    }

    /// Bytes of the buffer's mapping that the kernel currently backs with transparent huge
    /// pages (`AnonHugePages` in `/proc/self/smaps`). Pages are only backed once touched.
    /// `None` where this cannot be asked (not Linux, Miri, no procfs). When the kernel has
    /// merged the mapping with a neighbouring one, the figure covers the merged area.
    pub fn resident_huge_page_bytes(&self) -> Option<u64> {
        #[cfg(all(target_os = "linux", not(miri)))]
        {
            os::smaps_bytes(self.ptr.as_ptr() as usize, self.size_bytes(), "AnonHugePages")
        }
        #[cfg(not(all(target_os = "linux", not(miri))))]
        {
            None
        }
    }

    /// The NUMA node the kernel placed the buffer's first page on (touching it if it was not
    /// yet), from `get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)`. `None` for empty buffers and
    /// where this cannot be asked.
    pub fn resident_numa_node(&self) -> Option<u32> {
        #[cfg(all(target_os = "linux", not(miri)))]
        {
            if self.size_bytes() == 0 {
                return None;
            }
            os::numa_node_of(self.ptr.as_ptr().cast::<u8>())
        }
        #[cfg(not(all(target_os = "linux", not(miri))))]
        {
            None
        }
    }
}

impl<T: Element> HostBuffer<T> {
    pub(crate) fn with_stats(mut self, stats: std::sync::Arc<crate::stats::StatCounters>) -> Self {
        stats.buffer_created(self.size_bytes());
        self.stats = Some(stats);
        self
    }

    /// The elements as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self.as_slice())
    }

    /// The elements as bytes, mutably.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(self.as_mut_slice())
    }
}

impl<T> Deref for HostBuffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T> DerefMut for HostBuffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

impl<T> AsRef<[T]> for HostBuffer<T> {
    fn as_ref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T> AsMut<[T]> for HostBuffer<T> {
    fn as_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

impl<T> fmt::Debug for HostBuffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let storage = self.storage.kind();
        f.debug_struct("HostBuffer")
            .field("type", &std::any::type_name::<T>())
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("alignment", &self.alignment)
            .field("storage", &storage)
            .field("page", &self.page)
            .field("numa_node", &self.numa_node)
            .finish()
    }
}

impl<T> Drop for HostBuffer<T> {
    fn drop(&mut self) {
        if let Some(stats) = &self.stats {
            stats.buffer_dropped(self.size_bytes());
        }
        match &mut self.storage {
            Storage::Empty | Storage::Borrowed => {}
            Storage::Heap(layout) => {
                // SAFETY: allocated by alloc_zeroed with exactly this layout.
                unsafe { std::alloc::dealloc(self.ptr.as_ptr().cast(), *layout) }
            }
            #[cfg(all(unix, not(miri)))]
            Storage::Mapped { base, len } => {
                // SAFETY: the mapping [base, base + len) is ours alone (made by
                // Region::anonymous/hugetlb and released from its guard); nothing borrows
                // from it once the buffer is being dropped.
                unsafe { mmap::unmap(*base, *len) };
            }
            Storage::Owned(deleter) => {
                if let Some(deleter) = deleter.take() {
                    deleter(self.ptr.as_ptr(), self.len);
                }
            }
        }
    }
}

crate::buffer_trait::slice_backed_buffer!(HostBuffer);
