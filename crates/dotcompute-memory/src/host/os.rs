//! Small operating-system helpers shared by the host-memory modules: errno conversion, the
//! page size, and what the kernel reports about a mapping (`/proc/self/smaps`, sysfs).
//!
//! Everything here that touches the OS is compiled out under Miri (which cannot make these
//! calls); callers take their portable path there.

use crate::error::Error;

/// The base page size (4096 where it cannot be asked).
pub(crate) fn page_size() -> usize {
    #[cfg(all(unix, not(miri)))]
    {
        rustix::param::page_size()
    }
    #[cfg(not(all(unix, not(miri))))]
    {
        4096
    }
}

/// `Error::Os` from a rustix errno.
#[cfg(unix)]
#[cfg_attr(miri, allow(dead_code))]
pub(crate) fn os_error(operation: &'static str, target: impl Into<String>, errno: rustix::io::Errno) -> Error {
    Error::Os { operation, target: target.into(), errno: errno.raw_os_error(), message: errno.to_string() }
}

/// Rounds `value` up to a multiple of the power of two `to`; `None` on overflow.
pub(crate) fn round_up(value: usize, to: usize) -> Option<usize> {
    debug_assert!(to.is_power_of_two());
    value.checked_add(to - 1).map(|v| v & !(to - 1))
}

/// The bracketed choice in a sysfs "a [b] c" file, e.g. `madvise` for THP `enabled`.
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) fn sysfs_choice(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_string())
}

/// A number from a sysfs file.
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) fn sysfs_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A `/proc/meminfo` field, in the file's unit (kB for sizes, a count for `HugePages_*`).
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) fn meminfo_field(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Sum of a `/proc/self/smaps` size field (in bytes) over every mapping that overlaps
/// `addr..addr + len`. `None` when smaps cannot be read.
///
/// Adjacent mappings with identical flags may have been merged by the kernel into one
/// area, in which case the figure covers the whole merged area.
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) fn smaps_bytes(addr: usize, len: usize, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let end_addr = addr.checked_add(len.max(1))?;
    let mut inside = false;
    let mut total = 0u64;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16)) {
                inside = lo < end_addr && addr < hi;
                continue;
            }
        }
        if inside {
            if let Some(rest) = line.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
                let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
                total += kb * 1024;
            }
        }
    }
    Some(total)
}

/// The NUMA nodes the kernel lists as online, as text (`0`, `0-3`, `0,2`), and a membership
/// test. `None` when the kernel exposes no NUMA information (then only node 0 exists).
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) fn online_numa_nodes() -> Option<String> {
    std::fs::read_to_string("/sys/devices/system/node/online").ok().map(|s| s.trim().to_string())
}

/// The NUMA node the kernel placed the page at `addr` on (faulting it in if it was not yet),
/// from `get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)`; `None` when the kernel does not say.
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) fn numa_node_of(addr: *const u8) -> Option<u32> {
    let mut node: libc::c_int = -1;
    const MPOL_F_NODE: libc::c_ulong = 1;
    const MPOL_F_ADDR: libc::c_ulong = 2;
    // SAFETY: get_mempolicy writes one int through `node`, reads no node mask (null,
    // maxnode 0) and only inspects the address, which callers take from a live mapping of
    // theirs (an unmapped one is EFAULT, not a memory access).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            &mut node as *mut libc::c_int,
            std::ptr::null_mut::<libc::c_ulong>(),
            0 as libc::c_ulong,
            addr.cast_mut().cast::<libc::c_void>(),
            MPOL_F_NODE | MPOL_F_ADDR,
        )
    };
    (rc == 0 && node >= 0).then_some(node as u32)
}

/// Whether `node` is in a kernel node list such as `0-3,5`.
#[cfg_attr(not(all(target_os = "linux", not(miri))), allow(dead_code))]
pub(crate) fn node_list_contains(list: &str, node: u32) -> bool {
    list.split(',').filter(|part| !part.trim().is_empty()).any(|part| match part.trim().split_once('-') {
        Some((lo, hi)) => match (lo.parse::<u32>(), hi.parse::<u32>()) {
            (Ok(lo), Ok(hi)) => (lo..=hi).contains(&node),
            _ => false,
        },
        None => part.trim().parse::<u32>() == Ok(node),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists_parse() {
        assert!(node_list_contains("0", 0));
        assert!(!node_list_contains("0", 1));
        assert!(node_list_contains("0-3,5", 2));
        assert!(node_list_contains("0-3,5", 5));
        assert!(!node_list_contains("0-3,5", 4));
        assert!(!node_list_contains("", 0));
        assert!(!node_list_contains("x-y", 0));
    }

    #[test]
    fn rounding() {
        assert_eq!(round_up(0, 4096), Some(0));
        assert_eq!(round_up(1, 4096), Some(4096));
        assert_eq!(round_up(4096, 4096), Some(4096));
        assert_eq!(round_up(usize::MAX - 5, 4096), None);
    }
}
