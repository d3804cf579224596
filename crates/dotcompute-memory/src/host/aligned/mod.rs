//! `HostAlloc` and `HostBuffer<T>`: host memory with a chosen alignment, huge pages and NUMA
//! placement.
//!
//! ```text
//!   HostAlloc::new().alignment(64).huge_pages(true).numa_node(0).allocate::<f32>(n)?
//!        │
//!        ├─ plain request ───────────────► global allocator (alloc_zeroed, Layout(bytes, align))
//!        └─ huge pages / hugetlb / NUMA ─► anonymous mmap, over-mapped and trimmed so the start
//!             │                            is aligned (to 2 MiB for huge pages), then:
//!             ├─ hugetlb(true): MAP_HUGETLB first; when the hugetlbfs pool is empty (ENOMEM)
//!             │                 fall back to the next step and remember why
//!             ├─ huge_pages(true): madvise(MADV_HUGEPAGE) (transparent huge pages)
//!             └─ numa_node(n): mbind(MPOL_BIND, {n}) before the first touch
//! ```
//!
//! The buffer records what it actually got ([`HostBuffer::page_info`]): the page kind, its
//! size and a sentence saying why, so a request for huge pages on a machine that has none
//! still succeeds and says so instead of failing or pretending. Transparent huge pages are a
//! request to the kernel, not a guarantee; [`HostBuffer::resident_huge_page_bytes`] asks the
//! kernel (`/proc/self/smaps`) how much of the buffer is backed by huge pages right now.
//!
//! Contents are always initialised: fresh pages are zero, and heap memory comes from
//! `alloc_zeroed`. Under Miri and on platforms without `mmap`, every request takes the
//! global-allocator path and reports that huge pages were unavailable.

mod alloc;
mod buffer;

pub use alloc::{HostAlloc, DEFAULT_ALIGNMENT, MAX_ALIGNMENT};
pub use buffer::{HostBuffer, PageInfo, PageKind};
