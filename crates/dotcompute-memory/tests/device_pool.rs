//! The device caching allocator through the public API, on the simulated device (which counts
//! every backend allocation and enforces a capacity).

use dotcompute_memory::*;
use std::sync::Arc;

fn quiet() -> ManagerOptions {
    ManagerOptions { maintenance_interval: None, ..Default::default() }
}

fn device_buffer(mm: &MemoryManager, bytes: usize) -> UnifiedBuffer<u8> {
    let mut b = mm.allocate_device::<u8>(bytes).unwrap();
    b.ensure_on_device().unwrap();
    b
}

#[test]
fn small_buffers_are_carved_from_one_segment_and_coalesce() {
    let sim = Arc::new(SimBackend::new(SimOptions::default()));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    // 100 buffers of 10 KB..20 KB in different size classes: one 2 MiB segment serves all.
    let bufs: Vec<_> = (0..100).map(|i| device_buffer(&mm, 10_000 + i * 100)).collect();
    let s = mm.statistics();
    assert_eq!(s.device_segments, 1, "{s:#?}");
    assert_eq!(s.backend_allocations, 1);
    assert_eq!(sim.used(), 2 << 20);
    drop(bufs);
    // Everything is free again: trimming returns the whole segment.
    assert!(mm.trim_excess().unwrap() >= 2 << 20);
    let s = mm.statistics();
    assert_eq!((s.device_segments, s.reserved_bytes, s.cached_bytes), (0, 0, 0), "{s:#?}");
    assert_eq!(sim.used(), 0);
}

#[test]
fn freed_neighbours_merge_so_a_large_request_fits() {
    let sim = Arc::new(SimBackend::new(SimOptions::default()));
    // Keep one segment's worth cached, so trimming coalesces without returning the segment.
    let opts = ManagerOptions { min_pool_bytes: 2 << 20, ..quiet() };
    let mm = MemoryManager::with_shared_backend(sim.clone(), opts).unwrap();
    let quarter = (512 << 10) - 512; // four of these fill one 2 MiB segment but for 2 KiB
    let parts: Vec<_> = (0..4).map(|_| device_buffer(&mm, quarter)).collect();
    assert_eq!(mm.statistics().backend_allocations, 1);
    drop(parts);
    mm.trim_excess().unwrap();
    assert_eq!(mm.statistics().device_segments, 1, "the segment stays (min_pool_bytes)");
    // Only the merged free block can hold 1 MiB: no new segment.
    let big = device_buffer(&mm, 1 << 20);
    let s = mm.statistics();
    assert_eq!((s.backend_allocations, s.device_segments), (1, 1), "{s:#?}");
    drop(big);
}

#[test]
fn out_of_memory_releases_the_cache_retries_and_then_reports() {
    let sim = Arc::new(SimBackend::new(SimOptions { capacity: 24 << 20, ..Default::default() }));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    // A 2 MiB segment of small buffers stays cached after they are dropped.
    drop((0..8).map(|_| device_buffer(&mm, 100_000)).collect::<Vec<_>>());
    assert!(mm.statistics().cached_bytes > 0);
    // 24 MiB does not fit beside the cached 2 MiB segment: the pool frees it and retries.
    let big = device_buffer(&mm, 24 << 20);
    assert_eq!(sim.used(), 24 << 20);
    // Now nothing more fits: a clear error with the numbers, and nothing changed.
    let mut other = mm.allocate_from(&[1u8; 4 << 20]).unwrap();
    let err = other.ensure_on_device().unwrap_err();
    match err {
        Error::OutOfMemory { requested, free, largest_free_block, .. } => {
            assert_eq!(requested, 4 << 20);
            assert_eq!(free, 0);
            assert!(largest_free_block < requested);
        }
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    assert_eq!(other.state(), BufferState::HostOnly);
    assert_eq!(other.to_vec().unwrap(), vec![1u8; 4 << 20]);
    drop(big);
    other.ensure_on_device().unwrap();
}

/// Out of memory reports the bytes the caller asked for, not their size class: 3,000,001
/// bytes (class 3 MiB) on a device with 3,100,672 bytes free.
#[test]
fn out_of_memory_reports_the_bytes_asked_for() {
    let sim = Arc::new(SimBackend::new(SimOptions { capacity: 3_100_672, ..Default::default() }));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    let mut b = mm.allocate_from(&vec![4u8; 3_000_001]).unwrap();
    let err = b.ensure_on_device().unwrap_err();
    assert!(
        matches!(err, Error::OutOfMemory { requested: 3_000_001, rounded: 3_145_728, free: 3_100_672, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("requested 3000001 bytes (3145728 bytes after rounding"), "{err}");
    assert_eq!(b.state(), BufferState::HostOnly);
    assert_eq!(sim.used(), 0);
}

#[test]
fn oversize_buffers_get_their_own_segment_and_are_reused_whole() {
    let sim = Arc::new(SimBackend::new(SimOptions { capacity: 512 << 20, ..Default::default() }));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    let big = device_buffer(&mm, 100 << 20);
    assert_eq!(mm.statistics().device_segments, 1);
    drop(big);
    let again = device_buffer(&mm, 100 << 20);
    assert_eq!(mm.statistics().backend_allocations, 1, "reused from the cache");
    drop(again);
    // Much smaller requests do not split an oversize segment.
    let small = device_buffer(&mm, 10 << 20);
    assert_eq!(mm.statistics().device_segments, 2);
    drop(small);
}

#[test]
fn maintenance_releases_idle_memory_down_to_the_minimum() {
    let sim = Arc::new(SimBackend::new(SimOptions::default()));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    drop(device_buffer(&mm, 30 << 20));
    drop(device_buffer(&mm, 100_000));
    assert!(sim.used() > 0);
    // The first pass only ages the cache; the second releases what stayed idle through it.
    mm.run_maintenance();
    mm.run_maintenance();
    assert_eq!(sim.used(), 0, "{:#?}", mm.statistics());
    let s = mm.statistics();
    assert!(s.evictions >= 2, "two segments (30 MiB oversize and a 2 MiB small one) evicted: {s:#?}");
}
