//! HostAlloc on the real OS paths: mmap + madvise huge pages, the MAP_HUGETLB fallback, NUMA
//! binding, alignment of mapped memory.

#[cfg(target_os = "linux")]
use crate::support::child::{in_child, test_name};
use dotcompute_memory::*;
#[cfg(target_os = "linux")]
use std::io::Write;

const MIB: usize = 1 << 20;

#[cfg(target_os = "linux")]
fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[cfg(target_os = "linux")]
fn hugepages_free() -> Option<u64> {
    read("/proc/meminfo").lines().find_map(|l| l.strip_prefix("HugePages_Free:").and_then(|r| r.trim().parse().ok()))
}

#[test]
#[cfg(target_os = "linux")]
fn transparent_huge_pages_are_advised_and_aligned_when_enabled() {
    let thp = read("/sys/kernel/mm/transparent_hugepage/enabled");
    let mut b = HostAlloc::new().huge_pages(true).allocate::<u8>(8 * MIB).unwrap();
    let info = b.page_info().clone();
    if thp.contains("[never]") || thp.is_empty() {
        assert_eq!(info.kind, PageKind::Base, "{info:?}");
        assert!(info.reason.contains("transparent huge pages"), "{info:?}");
        return;
    }
    assert_eq!(info.kind, PageKind::TransparentHuge, "{info:?}");
    assert_eq!(info.size, 2 * MIB);
    assert_eq!(b.page_size(), 2 * MIB);
    assert_eq!(b.as_ptr() as usize % (2 * MIB), 0, "huge-page regions start on a huge-page boundary");
    assert!(info.reason.contains("MADV_HUGEPAGE"), "{info:?}");
    assert!(b.iter().all(|&x| x == 0));
    // Touch every page; the kernel then backs (at least part of) it with huge pages.
    for i in (0..b.len()).step_by(4096) {
        b[i] = 1;
    }
    // Whether the kernel backs the region with huge pages right away depends on its free
    // memory and khugepaged, not on us: the figure is reported, not asserted.
    let huge = b.resident_huge_page_bytes().expect("smaps readable on Linux");
    let _ =
        writeln!(std::io::stderr(), "transparent huge pages: {huge} of 8 MiB resident as huge pages after first touch");
    assert_eq!(b.iter().map(|&x| x as usize).sum::<usize>(), 8 * MIB / 4096);
}

#[test]
#[cfg(target_os = "linux")]
fn small_huge_page_requests_get_base_pages_and_say_why() {
    let b = HostAlloc::new().huge_pages(true).allocate::<u32>(1000).unwrap();
    assert_eq!(b.page_kind(), PageKind::Base);
    assert_eq!(b.page_size(), 4096);
    assert!(b.page_info().reason.contains("smaller than one"), "{:?}", b.page_info());
    assert_eq!(b.as_ptr() as usize % 64, 0);
}

#[test]
#[cfg(target_os = "linux")]
fn hugetlb_falls_back_when_no_pages_are_reserved() {
    let mut b = HostAlloc::new().hugetlb(true).allocate::<f64>(MIB / 2).unwrap(); // 4 MiB
    let info = b.page_info().clone();
    match hugepages_free() {
        Some(0) => {
            // The machine has no hugetlbfs pages (as on the project's build VMs): the fallback.
            assert_ne!(info.kind, PageKind::HugeTlb, "{info:?}");
            assert!(info.reason.contains("MAP_HUGETLB failed"), "{info:?}");
            assert!(info.reason.contains("HugePages_Free is 0"), "{info:?}");
            assert!(info.reason.contains("fell back"), "{info:?}");
        }
        _ => assert!(
            info.kind == PageKind::HugeTlb || info.reason.contains("MAP_HUGETLB failed"),
            "with reserved pages we either get them or say why not: {info:?}"
        ),
    }
    // Whatever it got, it works.
    b.iter_mut().enumerate().for_each(|(i, x)| *x = i as f64);
    assert_eq!(b[12345], 12345.0);
}

#[test]
#[cfg(target_os = "linux")]
fn numa_node_zero_is_bound_and_resident_there() {
    let mut b = HostAlloc::new().numa_node(0).allocate::<u64>(100_000).unwrap();
    assert_eq!(b.numa_node(), Some(0));
    assert_eq!(b.page_kind(), PageKind::Base);
    b[0] = 42;
    if std::path::Path::new("/sys/devices/system/node/online").exists() {
        assert_eq!(b.resident_numa_node(), Some(0));
    }
    let online = read("/sys/devices/system/node/online");
    let err = HostAlloc::new().numa_node(999).allocate::<u64>(10).unwrap_err();
    match err {
        Error::NumaNodeUnavailable { node: 999, online: listed } => {
            if !online.is_empty() {
                assert_eq!(listed, online.trim());
            }
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn numa_and_huge_pages_combine() {
    let b = HostAlloc::new().alignment(64).huge_pages(true).numa_node(0).allocate::<f32>(MIB).unwrap();
    assert_eq!(b.len(), MIB);
    assert_eq!(b.numa_node(), Some(0));
    assert!(b.iter().all(|&x| x == 0.0));
    assert_eq!(b.as_ptr() as usize % 64, 0);
}

#[test]
fn mapped_memory_honours_large_alignments() {
    for &align in &[8 * 1024usize, 4 * MIB] {
        let mut b = HostAlloc::new().alignment(align).numa_node(0).allocate::<u8>(10_000).unwrap();
        assert_eq!(b.as_ptr() as usize % align, 0, "alignment {align}");
        b[9_999] = 9;
        assert_eq!(b[9_999], 9);
    }
}

/// Runs in a child process: the address space is the whole process's, and tests running in
/// parallel here (new threads, their allocator arenas) would grow it too.
#[test]
#[cfg(target_os = "linux")]
fn many_mapped_buffers_are_released() {
    fn vm_size_kb() -> u64 {
        read("/proc/self/status")
            .lines()
            .find_map(|l| l.strip_prefix("VmSize:").and_then(|r| r.split_whitespace().next()?.parse().ok()))
            .unwrap()
    }
    in_child(test_name!(many_mapped_buffers_are_released), || {
        drop(HostAlloc::new().huge_pages(true).allocate::<u8>(8 * MIB).unwrap());
        let before = vm_size_kb();
        // 200 × 8 MiB = 1.6 GiB of mappings made and dropped in turn: leaked mappings would
        // grow the address space by that much.
        for _ in 0..200 {
            let mut b = HostAlloc::new().huge_pages(true).allocate::<u8>(8 * MIB).unwrap();
            b[0] = 1;
        }
        let grown = vm_size_kb().saturating_sub(before);
        assert!(grown < 400_000, "address space grew by {grown} kB: mappings leak");
    });
}

#[test]
fn manager_host_allocations_feed_statistics() {
    let mm = MemoryManager::cpu();
    let before = mm.statistics();
    let a = mm.allocate_host::<f64>(&HostAlloc::new().alignment(256), 1000).unwrap();
    let b = mm.allocate_host::<u8>(&HostAlloc::new().huge_pages(true), 4 * MIB).unwrap();
    let during = mm.statistics();
    assert_eq!(during.active_allocations, before.active_allocations + 2);
    assert_eq!(during.total_bytes_allocated, before.total_bytes_allocated + 8000 + 4 * MIB as u64);
    assert!(during.peak_bytes >= 8000 + 4 * MIB as u64);
    assert_eq!(a.as_ptr() as usize % 256, 0);
    drop(a);
    drop(b);
    assert_eq!(mm.statistics().active_allocations, before.active_allocations);
    // Errors allocate nothing and count nothing.
    assert!(mm.allocate_host::<u32>(&HostAlloc::new().alignment(3), 10).is_err());
    assert_eq!(mm.statistics().total_bytes_allocated, during.total_bytes_allocated);
}
