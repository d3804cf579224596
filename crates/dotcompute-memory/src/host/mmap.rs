//! Every memory-mapping call of the host layer: anonymous mappings aligned by over-mapping and
//! trimming (advised for huge pages, from the hugetlbfs pool, bound to a NUMA node), shared
//! mappings of a file, unmapping, and page locking. Unix only, and not under Miri.

use super::os;
use crate::error::{Error, Result};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};
use std::fs::File;
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
    /// `len` bytes starting at a multiple of `align` (a power of two, at least the page size):
    /// over-map by `align - page` and trim. When `align` exceeds the page size, `len` must be
    /// a multiple of it (the trimmed tail starts at `len`); at page alignment nothing is trimmed.
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
                return Err(Error::from_io("mbind", format!("{} bytes to NUMA node {node}", self.len), &err));
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
                    Some(0) => " (HugePages_Free is 0: no hugetlbfs pages are reserved, see /proc/sys/vm/nr_hugepages)"
                        .to_string(),
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

/// Maps `len` bytes of `file` shared read-write.
pub(super) fn shared(file: &File, len: usize) -> std::result::Result<NonNull<u8>, rustix::io::Errno> {
    // SAFETY: a fresh shared mapping of an open file at an address of the kernel's choosing
    // aliases nothing in this process.
    let raw = unsafe {
        rustix::mm::mmap(std::ptr::null_mut(), len, ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED, file, 0)
    }?;
    Ok(NonNull::new(raw.cast::<u8>()).expect("mmap never returns null on success"))
}

/// Unmaps `[base, base + len)`; a failure (which only a wrong range can cause) is ignored.
///
/// # Safety
///
/// The range must be a mapping (or the whole pages of one) that the caller owns, and nothing
/// may refer to it afterwards.
pub(super) unsafe fn unmap(base: NonNull<u8>, len: usize) {
    // SAFETY: forwarded contract.
    let _ = unsafe { rustix::mm::munmap(base.as_ptr().cast(), len) };
}

/// `mlock` of a whole-page range; hitting `RLIMIT_MEMLOCK` is [`Error::MemoryLockLimit`]
/// naming the `requested` bytes and the limits.
pub(super) fn lock(ptr: *mut u8, len: usize, requested: usize) -> Result<()> {
    // SAFETY: [ptr, ptr + len) is a whole-page mapping owned by the caller's buffer;
    // mlock changes no contents.
    match unsafe { rustix::mm::mlock(ptr.cast(), len) } {
        Ok(()) => Ok(()),
        Err(e) => {
            let rl = rustix::process::getrlimit(rustix::process::Resource::Memlock);
            // rustix reports RLIM_INFINITY as None.
            let (soft, hard) = (rl.current, rl.maximum);
            if (e == Errno::NOMEM || e == Errno::PERM || e == Errno::AGAIN) && soft.is_some() {
                Err(Error::MemoryLockLimit { requested, soft_limit: soft, hard_limit: hard, errno: e.raw_os_error() })
            } else {
                Err(os::os_error("mlock", format!("{requested} bytes (RLIMIT_MEMLOCK unlimited)"), e))
            }
        }
    }
}

/// `munlock` of a range `lock` locked; a failure is ignored (the pages stay locked until
/// they are unmapped).
pub(super) fn unlock(ptr: *mut u8, len: usize) {
    // SAFETY: the range was locked by `lock` and is still mapped by its buffer.
    let _ = unsafe { rustix::mm::munlock(ptr.cast(), len) };
}
