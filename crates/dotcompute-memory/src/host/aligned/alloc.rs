//! `HostAlloc`: the builder that allocates aligned host memory, from the global allocator or
//! from an anonymous mapping with huge pages and NUMA placement (see the `aligned` docs).

use super::buffer::{HostBuffer, PageInfo, PageKind};
use crate::element::Element;
use crate::error::{byte_len, Error, Result};
#[cfg(all(unix, not(miri)))]
use crate::host::mmap;
use crate::host::os;
use crate::host::storage::Storage;
use std::alloc::Layout;
use std::ptr::NonNull;

/// Largest alignment [`HostAlloc::alignment`] accepts (1 GiB, the largest huge page size).
pub const MAX_ALIGNMENT: usize = 1 << 30;

/// Default alignment when none is set: a cache line (or the element's own, if larger).
pub const DEFAULT_ALIGNMENT: usize = 64;

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
        let mut got: Option<(mmap::Region, PageInfo)> = None;

        if self.hugetlb {
            match mmap::hugetlb(bytes, alignment) {
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
            match mmap::thp_size() {
                Err(why) => notes.push(why),
                Ok(huge) if bytes < huge => notes.push(format!(
                    "the request ({bytes} bytes) is smaller than one {huge}-byte huge page, so base pages are used"
                )),
                Ok(huge) => {
                    let map_len = os::round_up(bytes, huge).ok_or_else(overflow)?;
                    let region = mmap::Region::anonymous(map_len, alignment.max(huge))?;
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
                let region = mmap::Region::anonymous(map_len, alignment.max(page))?;
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
