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

use super::os;
use crate::element::Element;
use crate::error::{byte_len, Error, Result};
use std::alloc::Layout;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Largest alignment [`HostAlloc::alignment`] accepts (1 GiB, the largest huge page size).
pub const MAX_ALIGNMENT: usize = 1 << 30;

/// Default alignment when none is set: a cache line (or the element's own, if larger).
pub const DEFAULT_ALIGNMENT: usize = 64;

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

/// Builder for aligned, huge-page and NUMA-placed host allocations.
///
/// ```
/// use dotcompute_memory::*;
/// # fn main() -> Result<()> {
/// let buf = HostAlloc::new().alignment(4096).allocate::<f32>(1000)?;
/// assert_eq!(buf.as_ptr() as usize % 4096, 0);
/// assert_eq!(buf.len(), 1000);
/// assert!(buf.iter().all(|&x| x == 0.0));
///
/// // Mistakes are errors naming the value.
/// let err = HostAlloc::new().alignment(3).allocate::<f32>(10).unwrap_err();
/// assert!(matches!(err, Error::InvalidAlignment { alignment: 3, .. }));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAlloc {
    alignment: Option<usize>,
    huge_pages: bool,
    hugetlb: bool,
    numa_node: Option<u32>,
    zeroed: bool,
    /// Always take the mmap path (the buffer then owns whole pages: needed for mlock).
    mapped: bool,
}

impl Default for HostAlloc {
    fn default() -> Self {
        Self::new()
    }
}

impl HostAlloc {
    /// Defaults: cache-line alignment, base pages, no NUMA binding, zeroed.
    pub fn new() -> Self {
        HostAlloc { alignment: None, huge_pages: false, hugetlb: false, numa_node: None, zeroed: true, mapped: false }
    }

    /// Start address alignment in bytes: a power of two, at least `align_of::<T>()`, at most
    /// [`MAX_ALIGNMENT`]. Checked by [`HostAlloc::allocate`], which returns
    /// [`Error::InvalidAlignment`] naming the value otherwise.
    pub fn alignment(mut self, bytes: usize) -> Self {
        self.alignment = Some(bytes);
        self
    }

    /// Ask for transparent huge pages: the buffer is mapped on a huge-page boundary, rounded
    /// up to whole huge pages, and advised with `madvise(MADV_HUGEPAGE)`. Requests smaller
    /// than one huge page, kernels with THP disabled, Miri and non-Linux systems get base
    /// pages; the buffer's [`PageInfo`] says which and why. Never an error by itself.
    pub fn huge_pages(mut self, on: bool) -> Self {
        self.huge_pages = on;
        self
    }

    /// Try explicit hugetlbfs pages (`MAP_HUGETLB`) first. They exist only when an
    /// administrator reserved some (`/proc/sys/vm/nr_hugepages`); when the pool is empty the
    /// allocation falls back to transparent huge pages (as with `huge_pages(true)`) and the
    /// buffer's [`PageInfo::reason`] records the `MAP_HUGETLB` failure.
    pub fn hugetlb(mut self, on: bool) -> Self {
        self.hugetlb = on;
        self
    }

    /// Bind the memory to NUMA node `node` (`mbind(MPOL_BIND)` before first touch). A node
    /// the machine does not have is [`Error::NumaNodeUnavailable`]; on a machine (or
    /// platform) without NUMA, node 0 is accepted and means all memory.
    pub fn numa_node(mut self, node: u32) -> Self {
        self.numa_node = Some(node);
        self
    }

    /// Whether the caller relies on zeroed contents (default true).
    ///
    /// Memory handed out as `&[T]` must be initialised, and fresh pages are zero anyway, so
    /// every buffer from [`HostAlloc::allocate`] is zeroed today; `zeroed(false)` only
    /// declares that the caller will overwrite the contents (recycling allocators such as
    /// the pinned pool may then skip clearing).
    pub fn zeroed(mut self, on: bool) -> Self {
        self.zeroed = on;
        self
    }

    /// Always map whole pages of our own (unix, not Miri), even without huge pages or NUMA.
    pub(crate) fn mapped(mut self, on: bool) -> Self {
        self.mapped = on;
        self
    }

    /// The alignment that `allocate::<T>` would use, or the error it would return.
    pub fn effective_alignment<T: Element>(&self) -> Result<usize> {
        let element_align = std::mem::align_of::<T>();
        let Some(alignment) = self.alignment else {
            return Ok(DEFAULT_ALIGNMENT.max(element_align));
        };
        let bad = |reason| Error::InvalidAlignment {
            alignment,
            type_name: std::any::type_name::<T>(),
            element_align,
            reason,
        };
        if alignment == 0 {
            return Err(bad("alignment must be a power of two, and 0 is not"));
        }
        if !alignment.is_power_of_two() {
            return Err(bad("alignment must be a power of two"));
        }
        if alignment < element_align {
            return Err(bad("alignment must be at least the element type's own alignment"));
        }
        if alignment > MAX_ALIGNMENT {
            return Err(bad("alignment must be at most 1 GiB"));
        }
        Ok(alignment)
    }

    /// Allocates `len` zeroed elements as configured.
    ///
    /// Errors: [`Error::InvalidAlignment`], [`Error::NumaNodeUnavailable`],
    /// [`Error::LengthOverflow`] when `len * size_of::<T>()` does not fit, and
    /// [`Error::OutOfMemory`] / [`Error::Os`] when the system refuses. Length 0 is a valid
    /// empty buffer (no memory is allocated).
    pub fn allocate<T: Element>(&self, len: usize) -> Result<HostBuffer<T>> {
        let bytes = byte_len::<T>(len)?;
        let alignment = self.effective_alignment::<T>()?;
        let numa_bound = match self.numa_node {
            Some(node) => Some(check_numa_node(node)?),
            None => None,
        };
        if bytes == 0 {
            // Dangling but aligned: never dereferenced for more than 0 bytes.
            let ptr = NonNull::new(std::ptr::without_provenance_mut::<T>(alignment)).expect("alignment is non-zero");
            return Ok(HostBuffer {
                ptr,
                len,
                storage: Storage::Empty,
                page: PageInfo {
                    kind: PageKind::Heap,
                    size: os::page_size(),
                    reason: "empty buffer: no memory allocated".into(),
                },
                numa_node: self.numa_node,
                alignment,
                stats: None,
            });
        }
        #[cfg(all(unix, not(miri)))]
        if self.huge_pages || self.hugetlb || self.numa_node.is_some() || self.mapped {
            return self.allocate_mapped(len, bytes, alignment, numa_bound);
        }
        let _ = numa_bound;
        self.allocate_heap(len, bytes, alignment)
    }

    /// Allocates a buffer as configured and copies `data` into it.
    pub fn allocate_from<T: Element>(&self, data: &[T]) -> Result<HostBuffer<T>> {
        let mut buf = self.allocate::<T>(data.len())?;
        buf.copy_from_slice(data);
        Ok(buf)
    }

    fn allocate_heap<T: Element>(&self, len: usize, bytes: usize, alignment: usize) -> Result<HostBuffer<T>> {
        let layout = Layout::from_size_align(bytes, alignment).map_err(|_| Error::LengthOverflow {
            len,
            element_size: std::mem::size_of::<T>(),
            type_name: std::any::type_name::<T>(),
        })?;
        // SAFETY: bytes > 0 (the caller handled 0), so the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw.cast::<T>()).ok_or(Error::allocator_out_of_memory("host", bytes as u64, 0))?;
        let why = if self.huge_pages || self.hugetlb {
            if cfg!(miri) {
                "huge pages were requested but Miri cannot map memory; using the global allocator"
            } else {
                "huge pages were requested but this platform has no anonymous mmap; using the global allocator"
            }
        } else {
            "global allocator (no huge pages or NUMA binding requested)"
        };
        Ok(HostBuffer {
            ptr,
            len,
            storage: Storage::Heap(layout),
            page: PageInfo { kind: PageKind::Heap, size: os::page_size(), reason: why.into() },
            numa_node: self.numa_node,
            alignment,
            stats: None,
        })
    }

    #[cfg(all(unix, not(miri)))]
    fn allocate_mapped<T: Element>(
        &self,
        len: usize,
        bytes: usize,
        alignment: usize,
        numa_bound: Option<bool>,
    ) -> Result<HostBuffer<T>> {
        let overflow = || Error::LengthOverflow {
            len,
            element_size: std::mem::size_of::<T>(),
            type_name: std::any::type_name::<T>(),
        };
        let page = os::page_size();
        let mut notes: Vec<String> = Vec::new();
        let mut got: Option<(map::Region, PageInfo)> = None;

        if self.hugetlb {
            match map::hugetlb(bytes, alignment) {
                Ok((region, size)) => {
                    got = Some((
                        region,
                        PageInfo {
                            kind: PageKind::HugeTlb,
                            size,
                            reason: format!("MAP_HUGETLB: {size}-byte pages from the reserved hugetlbfs pool"),
                        },
                    ))
                }
                Err(why) => notes.push(why),
            }
        }
        if got.is_none() && (self.huge_pages || self.hugetlb) {
            match map::thp_size() {
                Err(why) => notes.push(why),
                Ok(huge) if bytes < huge => notes.push(format!(
                    "the request ({bytes} bytes) is smaller than one {huge}-byte huge page, so base pages are used"
                )),
                Ok(huge) => {
                    let map_len = os::round_up(bytes, huge).ok_or_else(overflow)?;
                    let region = map::Region::anonymous(map_len, alignment.max(huge))?;
                    let info = match region.advise_huge() {
                        Ok(()) => PageInfo {
                            kind: PageKind::TransparentHuge,
                            size: huge,
                            reason: "madvise(MADV_HUGEPAGE) on a huge-page-aligned region: the kernel backs \
                                     it with transparent huge pages when it can (see resident_huge_page_bytes)"
                                .into(),
                        },
                        Err(e) => PageInfo {
                            kind: PageKind::Base,
                            size: page,
                            reason: format!("madvise(MADV_HUGEPAGE) failed ({e}), so base pages are used"),
                        },
                    };
                    got = Some((region, info));
                }
            }
        }
        let (region, mut info) = match got {
            Some(g) => g,
            None => {
                let map_len = os::round_up(bytes, page).ok_or_else(overflow)?;
                let region = map::Region::anonymous(map_len, alignment.max(page))?;
                let reason =
                    if notes.is_empty() { "anonymous mapping of base pages".to_string() } else { String::new() };
                (region, PageInfo { kind: PageKind::Base, size: page, reason })
            }
        };
        if !notes.is_empty() {
            let tail = std::mem::take(&mut info.reason);
            info.reason = notes.join("; ");
            if !tail.is_empty() {
                info.reason.push_str("; fell back to ");
                info.reason.push_str(&tail);
            }
        }
        if let (Some(node), Some(true)) = (self.numa_node, numa_bound) {
            region.bind_to_node(node)?;
        }
        let (base, map_len) = region.into_raw();
        Ok(HostBuffer {
            ptr: base.cast(),
            len,
            storage: Storage::Mapped { base, len: map_len },
            page: info,
            numa_node: self.numa_node,
            alignment,
            stats: None,
        })
    }
}

/// Validates a NUMA node; `Ok(true)` when the kernel should be asked to bind to it,
/// `Ok(false)` when the machine has no NUMA (node 0 then means all memory).
fn check_numa_node(node: u32) -> Result<bool> {
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        match os::online_numa_nodes() {
            Some(online) if os::node_list_contains(&online, node) => Ok(true),
            Some(online) => Err(Error::NumaNodeUnavailable { node, online }),
            None if node == 0 => Ok(false),
            None => Err(Error::NumaNodeUnavailable { node, online: "0 (the kernel exposes no NUMA nodes)".into() }),
        }
    }
    #[cfg(not(all(target_os = "linux", not(miri))))]
    {
        if node == 0 {
            Ok(false)
        } else {
            Err(Error::NumaNodeUnavailable { node, online: "0 (no NUMA placement on this platform)".into() })
        }
    }
}

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
    Owned(Option<super::external::Deleter<T>>),
}

/// Host memory holding `len` initialised `T`s, with known alignment, pages and NUMA node.
///
/// Dereferences to `[T]`. Made by [`HostAlloc::allocate`] or, for memory from elsewhere,
/// [`HostBuffer::from_raw_parts`]. Dropping it frees the memory it owns.
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
            let mut node: libc::c_int = -1;
            const MPOL_F_NODE: libc::c_ulong = 1;
            const MPOL_F_ADDR: libc::c_ulong = 2;
            // SAFETY: get_mempolicy writes one int through `node`, reads no node mask (null,
            // maxnode 0) and only inspects the address, which lies in our live mapping.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_get_mempolicy,
                    &mut node as *mut libc::c_int,
                    std::ptr::null_mut::<libc::c_ulong>(),
                    0 as libc::c_ulong,
                    self.ptr.as_ptr() as *mut libc::c_void,
                    MPOL_F_NODE | MPOL_F_ADDR,
                )
            };
            (rc == 0 && node >= 0).then_some(node as u32)
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
        let storage = match &self.storage {
            Storage::Empty => "empty",
            Storage::Heap(_) => "heap",
            #[cfg(all(unix, not(miri)))]
            Storage::Mapped { .. } => "mapped",
            Storage::Borrowed => "borrowed",
            Storage::Owned(_) => "owned foreign",
        };
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
                let _ = unsafe { rustix::mm::munmap(base.as_ptr().cast(), *len) };
            }
            Storage::Owned(deleter) => {
                if let Some(deleter) = deleter.take() {
                    deleter(self.ptr.as_ptr(), self.len);
                }
            }
        }
    }
}

/// Anonymous mappings (unix, not Miri).
#[cfg(all(unix, not(miri)))]
mod map {
    use super::super::os;
    use crate::error::{Error, Result};
    use rustix::mm::{MapFlags, ProtFlags};
    use std::ptr::NonNull;

    /// A private anonymous read-write mapping, unmapped on drop unless released.
    pub(super) struct Region {
        base: NonNull<u8>,
        len: usize,
    }

    fn mmap_error(bytes: usize, e: rustix::io::Errno) -> Error {
        if e == rustix::io::Errno::NOMEM {
            Error::allocator_out_of_memory("host", bytes as u64, 0)
        } else {
            os::os_error("mmap", format!("{bytes} bytes"), e)
        }
    }

    impl Region {
        /// `len` bytes (a multiple of the page size) starting at a multiple of `align` (a
        /// power of two, at least the page size): over-map by `align - page` and trim.
        pub(super) fn anonymous(len: usize, align: usize) -> Result<Region> {
            let page = os::page_size();
            let total = len.checked_add(align - page).ok_or(Error::allocator_out_of_memory("host", len as u64, 0))?;
            // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing
            // aliases nothing.
            let raw = unsafe {
                rustix::mm::mmap_anonymous(
                    std::ptr::null_mut(),
                    total,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::PRIVATE,
                )
            }
            .map_err(|e| mmap_error(len, e))?;
            let raw_addr = raw as usize;
            let start = (raw_addr + align - 1) & !(align - 1);
            let head = start - raw_addr;
            let tail = total - head - len;
            if head > 0 {
                // SAFETY: [raw, raw + head) is the unused front of our own fresh mapping.
                let _ = unsafe { rustix::mm::munmap(raw, head) };
            }
            if tail > 0 {
                // SAFETY: [start + len, start + len + tail) is the unused back of our mapping.
                let _ = unsafe { rustix::mm::munmap(raw.cast::<u8>().add(head + len).cast(), tail) };
            }
            // `raw.add(head)` keeps the mapping's provenance.
            // SAFETY: head < total, so the pointer stays inside the original mapping.
            let base = unsafe { raw.cast::<u8>().add(head) };
            Ok(Region { base: NonNull::new(base).expect("mmap never returns null on success"), len })
        }

        /// `advice = MADV_HUGEPAGE` for the whole region.
        pub(super) fn advise_huge(&self) -> std::result::Result<(), String> {
            #[cfg(target_os = "linux")]
            {
                // SAFETY: the range is exactly our mapping; the advice changes no contents.
                unsafe { rustix::mm::madvise(self.base.as_ptr().cast(), self.len, rustix::mm::Advice::LinuxHugepage) }
                    .map_err(|e| e.to_string())
            }
            #[cfg(not(target_os = "linux"))]
            {
                Err("MADV_HUGEPAGE is Linux-only".into())
            }
        }

        /// `mbind(MPOL_BIND, {node})` for the whole region (before anything touches it).
        pub(super) fn bind_to_node(&self, node: u32) -> Result<()> {
            #[cfg(target_os = "linux")]
            {
                const MPOL_BIND: libc::c_int = 2;
                const BITS: usize = libc::c_ulong::BITS as usize;
                let node = node as usize;
                let mut mask = vec![0 as libc::c_ulong; node / BITS + 1];
                mask[node / BITS] |= 1 << (node % BITS);
                // The kernel reads `maxnode - 1` bits.
                let maxnode = (mask.len() * BITS + 1) as libc::c_ulong;
                // SAFETY: mbind reads `mask.len()` words of the live `mask` and changes the
                // policy of our own mapping only; no memory contents change.
                let rc = unsafe {
                    libc::syscall(
                        libc::SYS_mbind,
                        self.base.as_ptr() as *mut libc::c_void,
                        self.len as libc::c_ulong,
                        MPOL_BIND,
                        mask.as_ptr(),
                        maxnode,
                        0 as libc::c_uint,
                    )
                };
                if rc != 0 {
                    let err = std::io::Error::last_os_error();
                    if err.raw_os_error() == Some(libc::EINVAL) {
                        return Err(Error::NumaNodeUnavailable {
                            node: node as u32,
                            online: os::online_numa_nodes().unwrap_or_else(|| "unknown".into()),
                        });
                    }
                    return Err(os::io_error("mbind", format!("{} bytes to NUMA node {node}", self.len), &err));
                }
                Ok(())
            }
            #[cfg(not(target_os = "linux"))]
            {
                let _ = node;
                Ok(())
            }
        }

        /// Gives up the guard: the caller now owns `[base, base + len)` and must unmap it.
        pub(super) fn into_raw(self) -> (NonNull<u8>, usize) {
            let parts = (self.base, self.len);
            std::mem::forget(self);
            parts
        }
    }

    impl Drop for Region {
        fn drop(&mut self) {
            // SAFETY: the guard still owns the mapping, and nothing else refers to it.
            let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) };
        }
    }

    /// The transparent huge page size, or why THP cannot be used.
    pub(super) fn thp_size() -> std::result::Result<usize, String> {
        #[cfg(target_os = "linux")]
        {
            let path = "/sys/kernel/mm/transparent_hugepage/enabled";
            match os::sysfs_choice(path) {
                None => return Err(format!("transparent huge pages are not available ({path} is unreadable)")),
                Some(mode) if mode == "never" => {
                    return Err(format!("transparent huge pages are disabled ({path} is `never`)"))
                }
                Some(_) => {}
            }
            let size = os::sysfs_number("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size").unwrap_or(2 << 20);
            Ok(usize::try_from(size).unwrap_or(2 << 20))
        }
        #[cfg(not(target_os = "linux"))]
        {
            Err("transparent huge pages are Linux-only".into())
        }
    }

    /// A `MAP_HUGETLB` mapping of at least `bytes`, or why not.
    pub(super) fn hugetlb(bytes: usize, align: usize) -> std::result::Result<(Region, usize), String> {
        #[cfg(target_os = "linux")]
        {
            let huge = os::meminfo_field("Hugepagesize").map(|kb| kb as usize * 1024).unwrap_or(2 << 20);
            if !huge.is_power_of_two() || align > huge {
                return Err(format!("MAP_HUGETLB not tried: alignment {align} exceeds the huge page size {huge}"));
            }
            let len = os::round_up(bytes, huge).ok_or("MAP_HUGETLB not tried: size overflows")?;
            // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing
            // aliases nothing.
            match unsafe {
                rustix::mm::mmap_anonymous(
                    std::ptr::null_mut(),
                    len,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::PRIVATE | MapFlags::HUGETLB,
                )
            } {
                Ok(raw) => {
                    let base = NonNull::new(raw.cast::<u8>()).ok_or("mmap returned null")?;
                    Ok((Region { base, len }, huge))
                }
                Err(e) => {
                    let free = os::meminfo_field("HugePages_Free");
                    let hint = match free {
                        Some(0) => {
                            " (HugePages_Free is 0: no hugetlbfs pages are reserved, see /proc/sys/vm/nr_hugepages)"
                                .to_string()
                        }
                        Some(n) => format!(" (HugePages_Free is {n})"),
                        None => String::new(),
                    };
                    Err(format!("MAP_HUGETLB failed: {e}{hint}"))
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (bytes, align);
            Err("MAP_HUGETLB is Linux-only".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_alignment_and_zeroed() {
        let mut b = HostAlloc::new().allocate::<u16>(1000).unwrap();
        assert_eq!(b.as_ptr() as usize % DEFAULT_ALIGNMENT, 0);
        assert_eq!(b.alignment(), 64);
        assert!(b.iter().all(|&x| x == 0));
        b[999] = 7;
        assert_eq!(b.as_slice()[999], 7);
        assert_eq!(b.size_bytes(), 2000);
        assert_eq!(b.page_kind(), PageKind::Heap);
    }

    #[test]
    fn explicit_alignments() {
        for &align in &[4usize, 8, 64, 256, 4096, 1 << 16] {
            let b = HostAlloc::new().alignment(align).allocate::<f32>(33).unwrap();
            assert_eq!(b.as_ptr() as usize % align, 0, "align {align}");
            assert_eq!(b.len(), 33);
        }
    }

    #[test]
    fn bad_alignments_name_the_value() {
        for &(align, fragment) in &[(0usize, "0 is not"), (3, "power of two"), (2, "element type"), (1 << 31, "1 GiB")]
        {
            let err = HostAlloc::new().alignment(align).allocate::<u32>(4).unwrap_err();
            match &err {
                Error::InvalidAlignment { alignment, element_align: 4, .. } => assert_eq!(*alignment, align),
                other => panic!("unexpected {other:?}"),
            }
            let msg = err.to_string();
            assert!(msg.contains(&align.to_string()) && msg.contains(fragment), "{msg}");
        }
    }

    #[test]
    fn overflow_is_an_error() {
        let err = HostAlloc::new().allocate::<u64>(usize::MAX / 4).unwrap_err();
        assert!(matches!(err, Error::LengthOverflow { element_size: 8, .. }), "{err:?}");
        // Fits usize but not Layout once rounded to the alignment.
        let err = HostAlloc::new().alignment(1 << 20).allocate::<u8>(isize::MAX as usize).unwrap_err();
        assert!(matches!(err, Error::LengthOverflow { .. }), "{err:?}");
    }

    #[test]
    fn empty_buffers() {
        let b = HostAlloc::new().alignment(128).allocate::<f64>(0).unwrap();
        assert!(b.is_empty());
        assert_eq!(b.as_ptr() as usize % 128, 0);
        assert_eq!(&*b, &[] as &[f64]);
    }

    #[test]
    fn allocate_from_copies() {
        let data: Vec<i32> = (0..100).collect();
        let b = HostAlloc::new().allocate_from(&data).unwrap();
        assert_eq!(&*b, &data[..]);
        assert_eq!(b.as_bytes().len(), 400);
    }

    #[test]
    fn numa_node_zero_works_and_others_do_not() {
        let b = HostAlloc::new().numa_node(0).allocate::<u8>(10_000).unwrap();
        assert_eq!(b.numa_node(), Some(0));
        assert!(b.iter().all(|&x| x == 0));
        let err = HostAlloc::new().numa_node(4096).allocate::<u8>(10).unwrap_err();
        assert!(matches!(err, Error::NumaNodeUnavailable { node: 4096, .. }), "{err:?}");
        assert!(err.to_string().contains("4096"));
    }

    #[test]
    fn huge_page_request_always_succeeds_and_says_why() {
        let n = if cfg!(miri) { 5000 } else { 3 << 20 };
        let mut b = HostAlloc::new().huge_pages(true).allocate::<u8>(n).unwrap();
        assert!(!b.page_info().reason.is_empty());
        b[n - 1] = 1;
        assert_eq!(b.iter().map(|&x| x as u32).sum::<u32>(), 1);
        if cfg!(miri) {
            assert_eq!(b.page_kind(), PageKind::Heap);
            assert!(b.page_info().reason.contains("Miri"));
        }
    }
}
