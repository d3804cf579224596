//! The device caching allocator through the public API, on the simulated device (which counts
//! every backend allocation and enforces a capacity): segments carved and coalesced, oversize
//! segments, out of memory, maintenance, and the pool across threads (buffers freed on another
//! thread than the one that made them, threads exiting with regions cached, exact statistics
//! with per-thread counters).

use crate::support::managers::quiet;
use dotcompute_memory::*;
use std::sync::Arc;
use std::thread;

fn device_buffer(mm: &MemoryManager, bytes: usize) -> UnifiedBuffer<u8> {
    let mut b = mm.allocate_device::<u8>(bytes).unwrap();
    b.ensure_on_device().unwrap();
    b
}

fn sim_manager() -> (Arc<SimBackend>, MemoryManager) {
    let sim = Arc::new(SimBackend::new(SimOptions::default()));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    (sim, mm)
}

/// Nothing in use: everything reserved is cached, and trimming releases all of it.
fn assert_idle_and_trim(mm: &MemoryManager, sim: &SimBackend) {
    let s = mm.statistics();
    assert_eq!((s.active_allocations, s.active_bytes), (0, 0), "{s:#?}");
    assert_eq!(s.buffers_allocated, s.buffers_freed, "{s:#?}");
    assert_eq!(s.total_bytes_allocated, s.total_bytes_freed, "{s:#?}");
    assert_eq!(s.block_requests, s.pool_hits + s.backend_allocations, "{s:#?}");
    assert_eq!(s.reserved_bytes, s.cached_bytes, "{s:#?}");
    let released = mm.trim_excess().unwrap();
    assert_eq!(released, s.cached_bytes);
    let s = mm.statistics();
    assert_eq!((s.cached_bytes, s.reserved_bytes, s.device_segments), (0, 0, 0), "{s:#?}");
    assert_eq!(sim.used(), 0, "trimming returned every segment to the device");
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
    let opts = quiet().with_min_pool_bytes(2 << 20);
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
    let sim = Arc::new(SimBackend::new(SimOptions::default().with_capacity(24 << 20)));
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
    let sim = Arc::new(SimBackend::new(SimOptions::default().with_capacity(3_100_672)));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    let mut b = mm.allocate_from(&vec![4u8; 3_000_001]).unwrap();
    let err = b.ensure_on_device().unwrap_err();
    assert!(
        matches!(err, Error::OutOfMemory { requested: 3_000_001, rounded: 3_145_728, free: 3_100_672, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("requested 3000001 bytes (2.9 MiB); 3145728 bytes (3.0 MiB) after rounding"),
        "{err}"
    );
    assert_eq!(b.state(), BufferState::HostOnly);
    assert_eq!(sim.used(), 0);
}

#[test]
fn oversize_buffers_get_their_own_segment_and_are_reused_whole() {
    let sim = Arc::new(SimBackend::new(SimOptions::default().with_capacity(512 << 20)));
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
fn before_the_pool_grows_a_request_takes_a_cached_region_up_to_twice_its_size() {
    let (sim, mm) = sim_manager();
    // A 20 MiB buffer fills its own 20 MiB segment; dropped, its region is cached whole.
    drop(device_buffer(&mm, 20 << 20));
    // 16 MiB and 10.5 MiB round to classes within a factor of two below it: both get the
    // cached region, one after the other, and the device is not asked again.
    for bytes in [16 << 20, (10 << 20) + (512 << 10)] {
        let b = device_buffer(&mm, bytes);
        let s = mm.statistics();
        assert_eq!((s.backend_allocations, s.device_segments), (1, 1), "{bytes} bytes: {s:#?}");
        assert_eq!(sim.used(), 20 << 20);
        drop(b);
    }
    // 8 MiB rounds to a class more than a factor of two below: a segment of its own.
    let small = device_buffer(&mm, 8 << 20);
    assert_eq!(mm.statistics().backend_allocations, 2);
    drop(small);
    assert_idle_and_trim(&mm, &sim);
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

// ---- across threads ----

#[test]
fn a_buffer_allocated_on_one_thread_is_dropped_on_another() {
    let (sim, mm) = sim_manager();
    // Warm the pool so the buffers below come from cached regions.
    drop(device_buffer(&mm, 4096));
    let buffers: Vec<_> = (0..16).map(|i| device_buffer(&mm, 256 << (i % 8))).collect();
    let s = mm.statistics();
    assert_eq!(s.active_allocations, 16);
    // The other thread frees them.
    thread::spawn(move || drop(buffers)).join().unwrap();
    let s = mm.statistics();
    assert_eq!(s.active_allocations, 0, "{s:#?}");
    assert!(s.cached_bytes > 0);
    // The regions freed by the other thread serve this one again: the device does not grow.
    let used = sim.used();
    let again: Vec<_> = (0..16).map(|i| device_buffer(&mm, 256 << (i % 8))).collect();
    assert_eq!(sim.used(), used, "the freed regions are reused, no new segment");
    drop(again);
    assert_idle_and_trim(&mm, &sim);
}

#[test]
fn a_thread_exits_with_cached_regions_then_trim_releases_them() {
    let (sim, mm) = sim_manager();
    let mm2 = mm.clone();
    thread::spawn(move || {
        for bytes in [256, 512, 4096, 40_000, 65536] {
            drop(device_buffer(&mm2, bytes));
        }
    })
    .join()
    .unwrap();
    let s = mm.statistics();
    assert!(s.cached_bytes >= 256 + 512 + 4096 + 40_000 + 65536, "{s:#?}");
    assert!(sim.used() > 0);
    assert_idle_and_trim(&mm, &sim);
}

#[test]
fn a_thread_exits_with_cached_regions_then_the_manager_drops() {
    let (sim, mm) = sim_manager();
    let mm2 = mm.clone();
    thread::spawn(move || {
        let held: Vec<_> = (0..8).map(|_| device_buffer(&mm2, 1024)).collect();
        drop(held);
        drop(device_buffer(&mm2, 65536));
    })
    .join()
    .unwrap();
    assert!(mm.statistics().cached_bytes >= 8 * 1024 + 65536);
    assert!(sim.used() > 0);
    drop(mm);
    assert_eq!(sim.used(), 0, "dropping the manager returned every segment");
}

#[test]
fn maintenance_releases_regions_freed_on_this_thread() {
    let (sim, mm) = sim_manager();
    drop(device_buffer(&mm, 4096));
    assert!(mm.statistics().cached_bytes > 0);
    // The first pass only ages what is cached; the second releases what stayed idle.
    mm.run_maintenance();
    mm.run_maintenance();
    let s = mm.statistics();
    assert_eq!((s.cached_bytes, s.reserved_bytes), (0, 0), "{s:#?}");
    assert_eq!(sim.used(), 0);
}

#[test]
fn statistics_are_exact_across_threads() {
    for cpu in [true, false] {
        let sim = Arc::new(SimBackend::new(SimOptions::default()));
        let mm = if cpu {
            MemoryManager::with_backend(CpuBackend::new(), quiet()).unwrap()
        } else {
            MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap()
        };
        let threads = 4u64;
        let per_thread = 300u64;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mm = mm.clone();
                thread::spawn(move || {
                    let mut bytes_total = 0u64;
                    let mut keep = Vec::new();
                    for i in 0..per_thread {
                        let bytes = 256usize << ((i + t) % 9); // 256 B ..= 64 KiB
                        bytes_total += bytes as u64;
                        let mut b = mm.allocate::<u8>(bytes).unwrap();
                        b.ensure_on_device().unwrap();
                        // Keep some alive a while so several regions per class are live at once.
                        if i % 3 == 0 {
                            keep.push(b);
                        }
                        if keep.len() > 12 {
                            keep.clear();
                        }
                    }
                    bytes_total
                })
            })
            .collect();
        let bytes: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let s = mm.statistics();
        assert_eq!(s.buffers_allocated, threads * per_thread, "{s:#?}");
        assert_eq!(s.buffers_freed, threads * per_thread, "{s:#?}");
        assert_eq!(s.total_bytes_allocated, bytes, "{s:#?}");
        assert!(s.peak_bytes > 0 && s.peak_bytes <= bytes, "{s:#?}");
        assert!(s.pool_hits > 0, "{s:#?}");
        if cpu {
            let s = mm.statistics();
            assert_eq!(s.reserved_bytes, s.cached_bytes, "{s:#?}");
            assert_eq!(mm.trim_excess().unwrap(), s.cached_bytes);
            assert_eq!(mm.statistics().reserved_bytes, 0);
        } else {
            assert_idle_and_trim(&mm, &sim);
        }
    }
}
